//! The one finish of a request, HTTP or WebSocket: metrics, cost, per-key
//! usage and the log line (through [`Accounting`]), the health report of a
//! stream that broke after its commit point, the cohort's outcome for the
//! split's gates, the audit line (queued, never waited on), and (tracing
//! on) the end of the request's spans.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use prometheus::IntGauge;
use tokio::time::Instant;

use super::plan::Plan;
use super::shadow::{PrimarySide, ShadowPeer};
use super::spans::{RequestTrace, TraceParent};
use super::walk::AttemptRecord;
use crate::accounting::{Finished, Transport};
use crate::audit::{AuditAttempt, AuditLine};
use crate::control::Event;
use crate::metrics::Metrics;
use crate::openai::Usage;
use crate::outcome::Outcome;
use crate::routing::UpstreamId;
use crate::state::AppState;

/// Who finishes a request: what is known from its first moment.
pub struct Finish {
    app: Arc<AppState>,
    transport: Transport,
    request_id: String,
    started: Instant,
    client_key: Option<usize>,
    /// Boxed: a held stream carries its `Finish`, and tracing off must not
    /// make it bigger than a pointer.
    trace: Option<Box<RequestTrace>>,
    shadow: Option<ShadowPeer>,
}

/// How a request ended.
#[derive(Default)]
pub struct Ending {
    /// Status given to the client (499: the client left first).
    pub status: u16,
    /// Serving (or last tried) upstream.
    pub upstream: Option<UpstreamId>,
    /// Which of its endpoints served (0 for a plain `base_url`).
    pub endpoint: usize,
    /// Upstream attempts made.
    pub attempts: u32,
    /// Time to first token, when an answer started.
    pub ttft: Option<Duration>,
    /// Tokens reported by the upstream.
    pub usage: Option<Usage>,
    /// How a stream broke after its commit point.
    pub broke: Option<Outcome>,
    /// Every upstream attempt, in order (the serving one last).
    pub records: Vec<AttemptRecord>,
    /// The answer was (to be) streamed.
    pub stream: bool,
    /// The error code the client got, if any.
    pub error: Option<&'static str>,
    /// The answer's bytes, kept only when a shadow compares it.
    pub answer: Option<Bytes>,
}

impl Finish {
    /// Starts the clock of a request.
    pub fn new(
        app: Arc<AppState>,
        transport: Transport,
        request_id: String,
        started: Instant,
        client_key: Option<usize>,
    ) -> Self {
        Self {
            app,
            transport,
            request_id,
            started,
            client_key,
            trace: None,
            shadow: None,
        }
    }

    /// With tracing on, starts the request's span (continuing the client's
    /// `traceparent`); with it off, does nothing.
    pub fn trace_request(&mut self, headers: &axum::http::HeaderMap, method: &str, path: &str) {
        if let Some(otel) = &self.app.otel {
            self.trace = Some(Box::new(RequestTrace::start(otel, headers, method, path)));
        }
    }

    /// The route is decided (names the span).
    pub fn trace_planned(&self, model: &str, plan: &Plan) {
        if let Some(t) = &self.trace {
            t.planned(model, plan.route_name());
        }
    }

    /// The parent of the attempts' spans, when tracing.
    pub fn trace_parent(&self) -> Option<TraceParent> {
        self.trace.as_ref().map(|t| t.parent())
    }

    /// An upstream answered: its attempt's span (ended with the request) and
    /// the model its `answer` (body, or a stream's first event) names.
    pub fn trace_served(&self, attempt: Option<opentelemetry::Context>, answer: &[u8]) {
        if let Some(t) = &self.trace {
            t.served(attempt, crate::openai::response_model(answer));
        }
    }

    /// Pairs this request with its shadow copy (PRODUCT.md §3.9), which
    /// hears how the primary's answer ended.
    pub fn with_shadow(mut self, peer: Option<ShadowPeer>) -> Self {
        self.shadow = peer;
        self
    }

    /// A shadow copy waits for this request's answer.
    pub fn shadowed(&self) -> bool {
        self.shadow.is_some()
    }

    /// When the request started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The request's log id.
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// Shared state (metrics, control).
    pub fn app(&self) -> &Arc<AppState> {
        &self.app
    }

    /// Records the request: `plan` is `None` when it was refused before a
    /// route was found; `model` is the client's model name.
    pub fn record(&self, plan: Option<&Plan>, model: &str, mut end: Ending) {
        let upstream = plan.zip(end.upstream);
        if let Some(t) = &self.trace {
            let provider = upstream.map(|(p, u)| &*p.snap.upstream(u).name);
            t.finish(provider, end.status, end.attempts, end.usage, end.broke);
        }
        if let (Some((plan, up)), Some(outcome)) = (upstream, end.broke) {
            // Broke after the commit point: evidence against the upstream.
            self.app.control.report(Event::Outcome {
                upstream: up,
                endpoint: end.endpoint,
                route: plan.route,
                outcome,
                retry_after: None,
                ttfb: None,
                in_split: plan.in_split,
            });
        }
        let duration = self.started.elapsed();
        let cost = self.app.accounting.record(&Finished {
            request_id: &self.request_id,
            route: plan.map_or("none", |p| p.route_name()),
            upstream: upstream.map(|(p, u)| p.snap.upstream(u)),
            endpoint: end.endpoint,
            primary: plan.map(|p| p.snap.upstream(p.primary())),
            model,
            status: end.status,
            attempts: end.attempts,
            transport: self.transport,
            duration,
            ttft: end.ttft,
            usage: end.usage,
            client_key: self.client_key,
            stream_error: end.broke,
            series: upstream.and_then(|(p, u)| {
                p.snap
                    .base()
                    .series(p.route, u, end.endpoint, self.transport)
            }),
        });
        // A pass-through request (no model) is never split: no cohort.
        if let Some(plan) = plan.filter(|_| !model.is_empty()) {
            self.report_cohort(plan, &end, duration);
        }
        if let Some(peer) = &self.shadow {
            peer.primary_done(PrimarySide {
                ok: (200..300).contains(&end.status) && end.broke.is_none(),
                latency: duration,
                cost,
                answer: end.answer.take(),
                stream: end.stream,
            });
        }
        if let Some(audit) = &self.app.audit {
            audit.send(self.audit_line(plan, model, &end, duration, cost));
        }
    }

    /// Feeds the split's gates (PRODUCT.md §3.9): the first attempt, when it
    /// went to the cohort's own upstream (target inside the share, primary
    /// outside), counts — a target failure failover hid still counts against
    /// the target. Latency: the whole request for a JSON answer, the time to
    /// first token for a stream. A 429 is no evidence either way.
    fn report_cohort(&self, plan: &Plan, end: &Ending, duration: Duration) {
        let route = plan.snap.table.route(plan.route);
        let gated = plan.snap.cfg().routes[plan.route.index()]
            .split
            .as_ref()
            .is_some_and(|s| s.gates.is_some());
        if !gated || route.split.is_none_or(|s| s.percentage <= 0.0) {
            return;
        }
        let Some(first) = end.records.first() else {
            return;
        };
        if plan.chain.get(0) != Some(first.upstream.index()) || first.outcome.is_throttled() {
            return;
        }
        let served_alone = end.records.len() == 1;
        let ok = first.outcome.is_ok() && !(served_alone && end.broke.is_some());
        let latency = if served_alone && !end.stream {
            duration
        } else {
            first.latency
        };
        self.app.control.report(Event::Cohort {
            route: plan.route,
            target: plan.in_split,
            ok,
            latency: Some(latency),
        });
    }

    /// The request's audit line: names, counts and times, nothing it said.
    fn audit_line(
        &self,
        plan: Option<&Plan>,
        model: &str,
        end: &Ending,
        duration: Duration,
        cost: Option<f64>,
    ) -> AuditLine {
        let snap = plan.map_or_else(|| self.app.live.load(), |p| p.snap.clone());
        let key = self.client_key.and_then(|i| {
            let keys = &snap.cfg().auth.as_ref()?.keys;
            keys.get(i).map(|k| k.name.clone())
        });
        let serving = end.upstream.map(|u| snap.upstream(u));
        let ms = |d: Duration| d.as_millis() as u64;
        AuditLine {
            ts: SystemTime::now(),
            request_id: self.request_id.clone(),
            key,
            route: plan.map(|p| p.route_name().clone()),
            model: (!model.is_empty()).then(|| model.to_owned()),
            upstream_model: serving
                .filter(|_| !model.is_empty())
                .map(|u| u.map_model(model).to_owned()),
            upstream: serving.map(|u| u.name.clone()),
            endpoint: serving
                .filter(|u| u.has_endpoints())
                .and_then(|u| u.endpoints.get(end.endpoint))
                .map(|e| e.name.clone()),
            cohort: plan.filter(|_| !model.is_empty()).and_then(Plan::cohort),
            status: end.status,
            stream: end.stream,
            attempts: end
                .records
                .iter()
                .map(|r| AuditAttempt {
                    upstream: snap.upstream(r.upstream).name.clone(),
                    outcome: r.outcome.label(),
                    status: r.status,
                    latency_ms: ms(r.latency),
                })
                .collect(),
            ttft_ms: end.ttft.map(ms),
            latency_ms: ms(duration),
            prompt_tokens: end.usage.map(|u| u.prompt_tokens),
            completion_tokens: end.usage.map(|u| u.completion_tokens),
            cost_usd: cost,
            error: end.error.or(end.broke.map(Outcome::label)),
            shadow: false,
        }
    }

    /// Counts an open stream for as long as the guard lives.
    pub fn stream_opened(&self) -> ActiveStream {
        ActiveStream::new(&self.app.metrics, self.transport)
    }
}

/// `turnout_active_streams{transport}` for as long as it lives.
pub struct ActiveStream(IntGauge);

impl ActiveStream {
    fn new(m: &Metrics, t: Transport) -> Self {
        let g = m.active_streams.with_label_values(&[t.as_str()]);
        g.inc();
        Self(g)
    }
}

impl Drop for ActiveStream {
    fn drop(&mut self) {
        self.0.dec();
    }
}
