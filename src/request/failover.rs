//! Failover: the driver of a [`Walk`] and the one layer that retries, as a
//! tower `Layer` + `Service` over the leaf attempt service.
//!
//! What moves on (PRODUCT.md §4): connection errors, timeouts before the
//! response starts, 408, 429, 5xx, garbage, and an upstream's own
//! 401/403/404; any other answer (a client's 400/413/415/422, a success) is
//! final. Which upstream comes next, the retry budget and the backoff are the
//! walk's; this driver makes the attempts one after the other, reports each
//! outcome to health and metrics, and returns every attempt's record.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{HeaderMap, Method};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

pub use super::attempt::{Attempt, AttemptError, Served, UpstreamService};
use super::plan::Plan;
use super::protocol::Protocol;
use super::spans::{AttemptSpan, TraceParent};
use super::walk::{AttemptRecord, Step, Walk};
use crate::control::Event;
use crate::error::ApiError;
use crate::openai::RequestFacts;
use crate::outcome::Outcome;
use crate::routing::UpstreamId;
use crate::state::AppState;

/// One client request, ready to be sent along its chain.
pub struct ProxyCall {
    /// Route, chain and the snapshot they were decided on.
    pub plan: Plan,
    /// Client path after `/v1`, with its query.
    pub suffix: Arc<str>,
    /// Allowlisted client headers.
    pub headers: Arc<HeaderMap>,
    /// The client's body.
    pub body: Bytes,
    /// What was read from it.
    pub facts: RequestFacts,
    /// The request's span (tracing on only): each attempt gets a child span
    /// and sends its `traceparent` upstream.
    pub trace: Option<TraceParent>,
    /// Its method (`POST` for every routed request).
    pub method: Method,
    /// How the answer is read (from the path).
    pub protocol: Protocol,
}

/// A served request.
pub struct Success {
    /// Who answered.
    pub upstream: UpstreamId,
    /// Which of its endpoints (0 for a plain `base_url`).
    pub endpoint: usize,
    /// Attempts made (≥ 1).
    pub attempts: u32,
    /// Time to first byte (headers for JSON, first event for streams).
    pub ttfb: Duration,
    /// The answer.
    pub served: Served,
    /// Every attempt, the serving one last.
    pub records: Vec<AttemptRecord>,
    /// The serving attempt's span (tracing on only), to end with the answer.
    pub span: Option<opentelemetry::Context>,
}

/// A request no upstream could serve.
pub struct Failure {
    /// What the client gets.
    pub error: ApiError,
    /// Last upstream tried.
    pub upstream: Option<UpstreamId>,
    /// Attempts made.
    pub attempts: u32,
    /// Every attempt.
    pub records: Vec<AttemptRecord>,
}

/// The attempt every step of a call starts from (its upstream and endpoint
/// are set per step).
pub(super) fn template(call: &ProxyCall) -> Attempt {
    Attempt {
        snap: call.plan.snap.clone(),
        upstream: call.plan.primary(),
        endpoint: 0,
        suffix: call.suffix.clone(),
        headers: call.headers.clone(),
        body: call.body.clone(),
        model: call
            .facts
            .model
            .as_deref()
            .zip(call.facts.model_span)
            .map(|(m, s)| (Arc::from(m), s)),
        stream: call.facts.stream,
        form: call.facts.form,
        method: call.method.clone(),
        protocol: call.protocol,
        want_usage: call.facts.include_usage,
    }
}

/// A final answer kept while the walk looks for a better one (see `run`).
pub(super) struct HeldAnswer {
    upstream: UpstreamId,
    endpoint: usize,
    served: Served,
    ttfb: Duration,
}

/// Keeps the final answer a failed attempt carries (a 400 saying the request
/// is too long for that upstream), taking it out of the error.
pub(super) fn keep_held(
    held: &mut Option<HeldAnswer>,
    record: &AttemptRecord,
    result: &mut Result<Served, AttemptError>,
) {
    if let Err(e) = result.as_mut() {
        if let Some(h) = e.held.take() {
            *held = Some(HeldAnswer {
                upstream: record.upstream,
                endpoint: record.endpoint,
                served: h.0,
                ttfb: record.latency,
            });
        }
    }
}

/// Wraps an attempt service (normally [`UpstreamService`]) into [`Failover`].
#[derive(Clone)]
pub struct FailoverLayer {
    app: Arc<AppState>,
}

impl FailoverLayer {
    /// Over the process's retry budget, control handle and metrics.
    pub fn new(app: Arc<AppState>) -> Self {
        Self { app }
    }
}

impl<S> Layer<S> for FailoverLayer {
    type Service = Failover<S>;

    fn layer(&self, inner: S) -> Failover<S> {
        Failover {
            app: self.app.clone(),
            inner,
        }
    }
}

/// The one layer that retries: walks a [`ProxyCall`]'s chain through its inner
/// attempt service. Cheap to build per request (one `Arc` and the inner service).
#[derive(Clone)]
pub struct Failover<S = UpstreamService> {
    pub(super) app: Arc<AppState>,
    inner: S,
}

// === impl Failover ===

impl<S> Service<ProxyCall> for Failover<S>
where
    S: Service<Attempt, Response = Served, Error = AttemptError> + Clone + Send + Sync + 'static,
    S::Future: Send,
{
    type Response = Success;
    type Error = Failure;
    type Future = BoxFuture<'static, Result<Success, Failure>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Failure>> {
        // Readiness is per upstream and decided inside the walk.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: ProxyCall) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.run(call).await })
    }
}

impl<S> Failover<S>
where
    S: Service<Attempt, Response = Served, Error = AttemptError> + Clone + Send + Sync + 'static,
    S::Future: Send,
{
    /// Sends the request along its chain until one upstream serves it.
    pub async fn run(&self, call: ProxyCall) -> Result<Success, Failure> {
        let snap = &call.plan.snap;
        if let Some(h) = &snap.cfg().routes[call.plan.route.index()].hedge {
            // Hedging routes only (off by default): see `hedge.rs`.
            let h = h.clone();
            return self.run_hedged(call, &h).await;
        }
        let app = &*self.app;
        let plan = &call.plan;
        app.budget.deposit();
        let mut walk = Walk::new(plan, plan.snap.failover(), Instant::now());
        let template = template(&call);
        // A final answer kept in case nothing better comes (a 400 saying the
        // request is too long for that upstream: the next may take it).
        let mut held: Option<HeldAnswer> = None;
        loop {
            let (up, avoid, backoff, after) = match walk.next(&app.budget) {
                Step::Stop => break,
                Step::Try {
                    upstream,
                    avoid,
                    backoff,
                    after,
                } => (upstream, avoid, backoff, after),
            };
            if let Some(prev) = after {
                self.count_retry(plan, prev, up);
            }
            if let Some(wait) = backoff {
                tokio::time::sleep(wait).await;
            }
            let n = walk.attempts() + 1;
            let (record, mut result, span) = self.attempt(&call, &template, (up, avoid), n).await;
            keep_held(&mut held, &record, &mut result);
            walk.record(record);
            if let Ok(served) = result {
                return Ok(self.success(walk, record, served, span));
            }
        }
        self.unserved(plan, walk, held)
    }

    /// Attempt number `n` on `up` (an endpoint not in `avoid` when it has
    /// several): its record, reported to metrics and health, its result, and
    /// (tracing on) the span of a served attempt.
    pub(super) async fn attempt(
        &self,
        call: &ProxyCall,
        template: &Attempt,
        (up, avoid): (UpstreamId, u64),
        n: u32,
    ) -> (
        AttemptRecord,
        Result<Served, AttemptError>,
        Option<opentelemetry::Context>,
    ) {
        let plan = &call.plan;
        let start = Instant::now();
        let endpoint = plan.snap.pick_endpoint(up, avoid, start);
        let mut attempt = Attempt {
            upstream: up,
            endpoint,
            ..template.clone()
        };
        let span = self.attempt_span(call, &mut attempt, n);
        let result = self.inner.clone().oneshot(attempt).await;
        let latency = start.elapsed();
        let record = match &result {
            Ok(_) => AttemptRecord {
                upstream: up,
                endpoint,
                outcome: Outcome::Ok,
                status: None,
                latency,
                retry_after: None,
            },
            Err(e) => AttemptRecord {
                upstream: up,
                endpoint,
                outcome: e.outcome,
                status: e.status,
                latency,
                retry_after: e.retry_after,
            },
        };
        self.report(plan, &record);
        let span = span.and_then(|s| match &result {
            Ok(served) => Some(s.served(served.status().as_u16())),
            Err(e) => {
                s.failed(e.outcome, e.status);
                None
            }
        });
        if let Err(e) = &result {
            tracing::debug!(
                upstream = %plan.snap.upstream(up).name,
                endpoint = plan.snap.upstream(up).endpoint_label(endpoint),
                reason = e.outcome.label(),
                detail = e.detail.as_deref().unwrap_or(""),
                "attempt failed"
            );
        }
        (record, result, span)
    }

    /// The walk ended on `record`'s answer.
    pub(super) fn success(
        &self,
        walk: Walk,
        record: AttemptRecord,
        served: Served,
        span: Option<opentelemetry::Context>,
    ) -> Success {
        Success {
            upstream: record.upstream,
            endpoint: record.endpoint,
            attempts: walk.attempts(),
            ttfb: record.latency,
            served,
            records: walk.into_records(),
            span,
        }
    }

    /// The walk ended with nothing served: the held final answer, if one
    /// was kept, else the walk's error.
    pub(super) fn unserved(
        &self,
        plan: &Plan,
        walk: Walk,
        held: Option<HeldAnswer>,
    ) -> Result<Success, Failure> {
        if walk.budget_spent() {
            self.app
                .metrics
                .budget_exhausted
                .with_label_values(&[plan.route_name()])
                .inc();
        }
        let attempts = walk.attempts();
        if let Some(h) = held {
            return Ok(Success {
                upstream: h.upstream,
                endpoint: h.endpoint,
                attempts,
                ttfb: h.ttfb,
                served: h.served,
                records: walk.into_records(),
                // Its attempt's span ended with the attempt (a failure held back).
                span: None,
            });
        }
        let (error, records) = walk.failure(&plan.snap);
        Err(Failure {
            error,
            upstream: records.last().map(|r| r.upstream),
            attempts,
            records,
        })
    }

    /// With tracing on, the attempt's span, whose `traceparent` the attempt
    /// carries upstream; with it off, nothing (and nothing allocated).
    fn attempt_span(&self, call: &ProxyCall, attempt: &mut Attempt, n: u32) -> Option<AttemptSpan> {
        let (otel, parent) = self.app.otel.as_ref().zip(call.trace.as_ref())?;
        let up = call.plan.snap.upstream(attempt.upstream);
        let model = attempt.model.as_ref().map(|(m, _)| up.map_model(m));
        let span = AttemptSpan::start(otel, parent, &up.name, model, n);
        attempt.headers = span.headers(otel, &call.headers);
        Some(span)
    }

    /// A second or later attempt: `turnout_retries_total` and the failover
    /// from the previous upstream.
    pub(super) fn count_retry(&self, plan: &Plan, prev: AttemptRecord, to: UpstreamId) {
        let m = &self.app.metrics;
        let route = plan.route_name();
        m.retries.with_label_values(&[route]).inc();
        m.failovers
            .with_label_values(&[
                route,
                &plan.snap.upstream(prev.upstream).name,
                &plan.snap.upstream(to).name,
                prev.outcome.label(),
            ])
            .inc();
    }

    /// Every attempt counts for metrics and, through the control task, health.
    fn report(&self, plan: &Plan, r: &AttemptRecord) {
        report(&self.app, plan, r);
    }
}

/// Counts an attempt (`turnout_upstream_attempts_total`) and reports it to
/// health: for every attempt of a walk, and for the single attempt of a
/// pass-through request that is never replayed.
pub fn report(app: &AppState, plan: &Plan, r: &AttemptRecord) {
    let up = plan.snap.upstream(r.upstream);
    let lookup = || {
        app.metrics.attempts.with_label_values(&[
            &up.name,
            up.endpoint_label(r.endpoint),
            r.outcome.label(),
        ])
    };
    // Most attempts succeed: their series is resolved once per snapshot.
    match plan.snap.base().ok_attempts(r.upstream, r.endpoint) {
        Some(slot) if r.outcome == Outcome::Ok => slot.get_or_init(lookup).inc(),
        _ => lookup().inc(),
    }
    app.control.report(Event::Outcome {
        upstream: r.upstream,
        endpoint: r.endpoint,
        route: plan.route,
        outcome: r.outcome,
        retry_after: r.retry_after,
        ttfb: Some(r.latency),
        in_split: plan.in_split,
    });
}
