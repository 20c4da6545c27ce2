//! The one finish of a request, HTTP or WebSocket: metrics, cost, per-key
//! usage and the log line (through [`Accounting`]), the health report of
//! a stream that broke after its commit point, and (tracing on) the end of
//! the request's spans.

use std::sync::Arc;
use std::time::Duration;

use prometheus::IntGauge;
use tokio::time::Instant;

use super::plan::Plan;
use super::spans::{RequestTrace, TraceParent};
use crate::accounting::{Finished, Transport};
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
}

/// How a request ended.
#[derive(Default)]
pub struct Ending {
    /// Status given to the client (499: the client left first).
    pub status: u16,
    /// Serving (or last tried) upstream.
    pub upstream: Option<UpstreamId>,
    /// Upstream attempts made.
    pub attempts: u32,
    /// Time to first token, when an answer started.
    pub ttft: Option<Duration>,
    /// Tokens reported by the upstream.
    pub usage: Option<Usage>,
    /// How a stream broke after its commit point.
    pub broke: Option<Outcome>,
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
    pub fn record(&self, plan: Option<&Plan>, model: &str, end: Ending) {
        let upstream = plan.zip(end.upstream);
        if let Some(t) = &self.trace {
            let provider = upstream.map(|(p, u)| &*p.snap.upstream(u).name);
            t.finish(provider, end.status, end.attempts, end.usage, end.broke);
        }
        if let (Some((plan, up)), Some(outcome)) = (upstream, end.broke) {
            // Broke after the commit point: evidence against the upstream.
            self.app.control.report(Event::Outcome {
                upstream: up,
                route: plan.route,
                outcome,
                retry_after: None,
                ttfb: None,
                in_split: plan.in_split,
            });
        }
        self.app.accounting.record(&Finished {
            request_id: &self.request_id,
            route: plan.map_or("none", |p| p.route_name()),
            upstream: upstream.map(|(p, u)| p.snap.upstream(u)),
            primary: plan.map(|p| p.snap.upstream(p.primary())),
            model,
            status: end.status,
            attempts: end.attempts,
            transport: self.transport,
            duration: self.started.elapsed(),
            ttft: end.ttft,
            usage: end.usage,
            client_key: self.client_key,
            stream_error: end.broke,
        });
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
