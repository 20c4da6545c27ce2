//! Pass-through (PRODUCT.md §3.3): every `/v1/` request that is not routed
//! by a model — files, batches, uploads, vector stores, assistants and
//! threads, stored responses, fine-tuning, any method, any content type, with
//! or without a body — goes to the primary of `passthrough_route`, never
//! split (a stored resource lives on one provider), with the upstream's key
//! and never the client's. The answer comes back as sent, streamed.
//!
//! Only idempotent methods (GET, HEAD, DELETE) fail over, before a response
//! starts: their (small) bodies are read whole so the walk can replay them.
//! Any other request is sent once, its body streamed as it arrives.

use std::sync::Arc;

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::Method;
use bytes::Bytes;
use tokio::time::Instant;

use super::attempt;
use super::failover::{report, FailoverLayer, Failure, ProxyCall, Success, UpstreamService};
use super::plan::{self, Plan};
use super::protocol::Protocol;
use super::walk::{AttemptRecord, Walk};
use crate::openai::RequestFacts;
use crate::outcome::Outcome;
use crate::routing::Snapshot;
use crate::state::AppState;
use crate::upstream::{forward_headers, whole, UpstreamBody};

/// A pass-through request's body.
pub enum PassBody {
    /// Read whole (an idempotent request, a small JSON body, a form within the limit).
    Whole(Bytes),
    /// Streamed to the upstream as the client sends it.
    Stream(Body),
}

/// Methods that are replayed on another upstream when the first fails before answering.
pub fn idempotent(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::DELETE)
}

/// Paths of resources stored on one provider: passed through even when
/// their body names a model (creating an assistant, a fine-tuning job or a
/// batch must happen on the provider that will later be asked about it).
pub fn stateful(path: &str) -> bool {
    const PREFIXES: [&str; 13] = [
        "/assistants",
        "/threads",
        "/fine_tuning",
        "/files",
        "/uploads",
        "/batches",
        "/vector_stores",
        "/conversations",
        "/organization",
        "/evals",
        "/containers",
        "/videos",
        "/realtime/calls",
    ];
    PREFIXES.iter().any(|p| {
        path.strip_prefix(p)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

/// Sends a pass-through request: through the walk (idempotent, whole body)
/// or once. Returns the plan it was sent on, for the answer.
pub async fn call(
    app: &Arc<AppState>,
    snap: Arc<Snapshot>,
    parts: &Parts,
    suffix: Arc<str>,
    body: PassBody,
) -> (Plan, Result<Success, Failure>) {
    let plan = plan::passthrough(snap);
    let headers = forward_headers(&parts.headers, false);
    let method = parts.method.clone();
    let result = match body {
        PassBody::Whole(bytes) if idempotent(&method) => {
            let call = ProxyCall {
                plan: plan.clone(),
                suffix,
                headers: Arc::new(headers),
                body: bytes,
                facts: RequestFacts::default(),
                method,
                protocol: Protocol::Passthrough,
                // Pass-through requests have the request's span only.
                trace: None,
            };
            let failover = tower::Layer::layer(&FailoverLayer::new(app.clone()), UpstreamService);
            tower::ServiceExt::oneshot(failover, call).await
        }
        PassBody::Whole(bytes) => once(app, &plan, method, &suffix, &headers, whole(bytes)).await,
        PassBody::Stream(b) => {
            once(
                app,
                &plan,
                method,
                &suffix,
                &headers,
                UpstreamBody::Right(b),
            )
            .await
        }
    };
    (plan, result)
}

/// The single attempt of a request that is never replayed: on the primary,
/// whatever it answers is the answer.
async fn once(
    app: &AppState,
    plan: &Plan,
    method: Method,
    suffix: &str,
    headers: &axum::http::HeaderMap,
    body: UpstreamBody,
) -> Result<Success, Failure> {
    let up = plan.primary();
    let start = Instant::now();
    let result = {
        let _in_flight = plan.snap.counters(up).start();
        attempt::passthrough(plan.snap.upstream(up), method, suffix, headers, body, false).await
    };
    let latency = start.elapsed();
    let record = AttemptRecord {
        upstream: up,
        outcome: result.as_ref().map_or_else(|e| e.outcome, |_| Outcome::Ok),
        status: result.as_ref().err().and_then(|e| e.status),
        latency,
        retry_after: result.as_ref().err().and_then(|e| e.retry_after),
    };
    report(app, plan, &record);
    match result {
        Ok(served) => Ok(Success {
            upstream: up,
            attempts: 1,
            ttfb: latency,
            served,
            records: vec![record],
            span: None,
        }),
        Err(_) => {
            // The walk's own words for what went wrong (no retry was asked for).
            let mut walk = Walk::new(plan, plan.snap.failover(), start);
            walk.record(record);
            let (error, records) = walk.failure(&plan.snap);
            Err(Failure {
                error,
                upstream: Some(up),
                attempts: 1,
                records,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stateful_paths_and_idempotent_methods() {
        assert!(stateful("/files"));
        assert!(stateful("/files/file-1/content"));
        assert!(stateful("/fine_tuning/jobs"));
        assert!(!stateful("/filesystem"));
        assert!(!stateful("/chat/completions"));
        assert!(!stateful("/responses"));
        assert!(
            idempotent(&Method::DELETE) && !idempotent(&Method::POST) && !idempotent(&Method::PUT)
        );
    }
}
