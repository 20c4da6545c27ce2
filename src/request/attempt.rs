//! One try on one upstream, as a tower `Service`: the leaf of the stack that
//! failover wraps. It sends the request with this upstream's key and model
//! name, applies the per-upstream timeouts, and says whether the answer is
//! final (`Served`) or a reason to move on (`AttemptError`, with its typed
//! [`Outcome`]). For streams it answers only once the first SSE event has
//! arrived (the commit point).

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use http_body_util::BodyExt;
use hyper::body::Body;
use tokio::time::Instant;

use crate::openai::{self, Usage};
use crate::outcome::Outcome;
use crate::routing::{Snapshot, UpstreamId};
use crate::upstream::{BodyStream, Incoming, Upstream};

/// Largest non-streaming upstream body read into memory.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// Largest prefix of a stream buffered while waiting for its first event.
const MAX_PREFETCH: usize = 1024 * 1024;

/// One try: which upstream (of the request's snapshot), and the request as
/// the client sent it.
#[derive(Clone)]
pub struct Attempt {
    /// The request's snapshot (its upstream clients).
    pub snap: Arc<Snapshot>,
    /// Who to try.
    pub upstream: UpstreamId,
    /// Client path after `/v1`, with its query.
    pub suffix: Arc<str>,
    /// Allowlisted client headers.
    pub headers: Arc<HeaderMap>,
    /// The client's body (cheap to clone per attempt).
    pub body: Bytes,
    /// The client's model name and the byte span of its value, for `model_map`.
    pub model: Option<(Arc<str>, (usize, usize))>,
    /// The client asked for a stream.
    pub stream: bool,
}

/// What an upstream answered, ready for the client.
pub enum Served {
    /// A whole body (non-streaming, or a final non-success answer).
    Complete {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
        usage: Option<Usage>,
    },
    /// An SSE stream whose first event has arrived.
    Stream {
        status: StatusCode,
        headers: HeaderMap,
        first: Bytes,
        rest: BodyStream,
    },
}

impl Served {
    /// The upstream's status.
    pub fn status(&self) -> StatusCode {
        match self {
            Served::Complete { status, .. } | Served::Stream { status, .. } => *status,
        }
    }
}

/// Why an attempt moved on.
#[derive(Debug, Clone)]
pub struct AttemptError {
    /// What happened.
    pub outcome: Outcome,
    /// The upstream's `Retry-After`, if any.
    pub retry_after: Option<Duration>,
    /// The upstream's status, when it answered.
    pub status: Option<u16>,
    /// What went wrong underneath, when there is more to say than the reason
    /// (the transport error's chain); logged at debug, never sent to clients.
    pub detail: Option<String>,
}

impl AttemptError {
    /// An error without status.
    pub fn new(outcome: Outcome) -> Self {
        Self {
            outcome,
            retry_after: None,
            status: None,
            detail: None,
        }
    }
}

/// The leaf service: sends an [`Attempt`] to its upstream.
#[derive(Clone, Copy, Default)]
pub struct UpstreamService;

// === impl UpstreamService ===

impl tower::Service<Attempt> for UpstreamService {
    type Response = Served;
    type Error = AttemptError;
    type Future = BoxFuture<'static, Result<Served, AttemptError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), AttemptError>> {
        // The pooled HTTP client has no readiness to wait for.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, a: Attempt) -> Self::Future {
        Box::pin(async move {
            let snap = a.snap.clone();
            let _in_flight = snap.counters(a.upstream).start();
            send(snap.upstream(a.upstream), a).await
        })
    }
}

async fn send(up: &Upstream, a: Attempt) -> Result<Served, AttemptError> {
    let body = match &a.model {
        Some((m, span)) if up.model_map.contains_key(&**m) => {
            openai::with_model(&a.body, *span, up.map_model(m))
        }
        _ => a.body,
    };
    let req = match up.post(&a.suffix, &a.headers, body) {
        Ok(r) => r,
        Err(_) => return Err(AttemptError::new(Outcome::InvalidUrl)),
    };
    let limit = if a.stream {
        up.timeouts.first_token
    } else {
        up.timeouts.headers
    };
    let deadline = Instant::now() + up.timeouts.total;
    let rsp = match tokio::time::timeout(limit.min(up.timeouts.total), req).await {
        Err(_) => return Err(AttemptError::new(Outcome::Timeout)),
        Ok(Err(e)) => {
            let mut err = AttemptError::new(crate::upstream::send_error_outcome(&e));
            err.detail = Some(crate::upstream::describe(&e));
            return Err(err);
        }
        Ok(Ok(r)) => r,
    };
    let status = rsp.status();
    if let Some(e) = classify(status, rsp.headers()) {
        return Err(e);
    }
    let headers = visible_headers(rsp.headers());
    let content_type = rsp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // A body declared (or defaulting to) JSON must be JSON; other types (audio,
    // text) pass through unchecked.
    let json = content_type.is_empty() || content_type.contains("json");
    if status.is_success() && content_type.starts_with("text/event-stream") {
        let first_deadline = Instant::now().max(deadline.min(Instant::now() + limit));
        return prefetch(status, headers, rsp.into_body(), first_deadline).await;
    }
    let body = match tokio::time::timeout_at(deadline, read_body(rsp.into_body())).await {
        Err(_) => return Err(AttemptError::new(Outcome::Timeout)),
        Ok(Err(outcome)) => return Err(AttemptError::new(outcome)),
        Ok(Ok(b)) => b,
    };
    let mut usage = None;
    if status.is_success() && json {
        match openai::response_usage(&body) {
            Ok(u) => usage = u,
            Err(openai::NotJson) => return Err(AttemptError::new(Outcome::InvalidResponse)),
        }
    }
    Ok(Served::Complete {
        status,
        headers,
        body,
        usage,
    })
}

/// `Some` when the status means "move on"; `None` when the answer is final.
fn classify(status: StatusCode, headers: &HeaderMap) -> Option<AttemptError> {
    let code = status.as_u16();
    let outcome = match code {
        429 => Outcome::Http429,
        408 => Outcome::Timeout,
        401 | 403 | 404 => Outcome::Http4xx,
        500..=599 => Outcome::Http5xx,
        _ => return None,
    };
    let retry_after = headers
        .get(axum::http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64);
    Some(AttemptError {
        outcome,
        retry_after,
        status: Some(code),
        detail: None,
    })
}

fn visible_headers(h: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(4);
    for (k, v) in h {
        if crate::upstream::client_visible(k) {
            out.append(k.clone(), v.clone());
        }
    }
    out
}

async fn read_body(mut rsp: Incoming) -> Result<Bytes, Outcome> {
    let cap = rsp
        .size_hint()
        .exact()
        .map_or(16 * 1024, |n| n.min(MAX_RESPONSE_BYTES as u64) as usize);
    let mut first: Option<Bytes> = None;
    let mut buf = BytesMut::new();
    loop {
        match rsp.frame().await.transpose() {
            Ok(Some(frame)) => {
                // Trailers (HTTP/2) carry nothing a client of this API reads.
                let Ok(c) = frame.into_data() else { continue };
                if first.is_none() && buf.is_empty() {
                    first = Some(c);
                    continue;
                }
                if buf.is_empty() {
                    buf.reserve(cap);
                    if let Some(f) = first.take() {
                        buf.extend_from_slice(&f);
                    }
                }
                if buf.len() + c.len() > MAX_RESPONSE_BYTES {
                    return Err(Outcome::ResponseTooLarge);
                }
                buf.extend_from_slice(&c);
            }
            Ok(None) => return Ok(first.unwrap_or_else(|| buf.freeze())),
            Err(_) => return Err(Outcome::Reset),
        }
    }
}

async fn prefetch(
    status: StatusCode,
    headers: HeaderMap,
    rsp: Incoming,
    deadline: Instant,
) -> Result<Served, AttemptError> {
    let mut stream: BodyStream = rsp.into_data_stream().boxed();
    let mut buf = BytesMut::new();
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => return Err(AttemptError::new(Outcome::Timeout)),
            Ok(None) => return Err(AttemptError::new(Outcome::Reset)),
            Ok(Some(Err(_))) => return Err(AttemptError::new(Outcome::Reset)),
            Ok(Some(Ok(chunk))) => {
                buf.extend_from_slice(&chunk);
                if super::sse::has_first_event(&buf) {
                    return Ok(Served::Stream {
                        status,
                        headers,
                        first: buf.freeze(),
                        rest: stream,
                    });
                }
                if buf.len() > MAX_PREFETCH {
                    return Err(AttemptError::new(Outcome::InvalidResponse));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let h = HeaderMap::new();
        for c in [400u16, 413, 415, 422, 200] {
            assert!(
                classify(StatusCode::from_u16(c).unwrap(), &h).is_none(),
                "{c}"
            );
        }
        for c in [401u16, 403, 404, 408, 429, 500, 502, 503, 504] {
            assert!(
                classify(StatusCode::from_u16(c).unwrap(), &h).is_some(),
                "{c}"
            );
        }
        let mut h = HeaderMap::new();
        h.insert("retry-after", "2".parse().unwrap());
        assert_eq!(
            classify(StatusCode::TOO_MANY_REQUESTS, &h)
                .unwrap()
                .retry_after,
            Some(Duration::from_secs(2))
        );
    }
}
