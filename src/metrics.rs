//! Prometheus metrics, registered into a registry that is passed in (no global).
//!
//! Every label value comes from a bounded set: config names (route, upstream,
//! client key, priced model names), fixed words, or status codes. Never a user
//! id, a key or free text; a model name not named in the config is `other`.

use std::sync::OnceLock;

use prometheus::{
    exponential_buckets, Counter, CounterVec, Encoder, Gauge, GaugeVec, Histogram, HistogramOpts,
    HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Buckets for LLM latencies: 5 ms to ~10 minutes.
fn latency_buckets() -> Vec<f64> {
    // 0.005 × 2^n for n in 0..18 → 0.005 … 655 s.
    exponential_buckets(0.005, 2.0, 18).unwrap_or_default()
}

/// All metric families of the process.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Client requests by route, upstream (`none` when none was tried),
    /// endpoint (empty, so absent, unless the upstream has several), status code, transport.
    pub requests: IntCounterVec,
    /// Whole request time as the client sees it.
    pub request_duration: HistogramVec,
    /// Time to first token (first SSE event; whole body when not streaming).
    pub ttft: HistogramVec,
    /// A request moved on from `from` to `to` because of `reason`.
    pub failovers: IntCounterVec,
    /// 1 when the upstream is usable for routing, else 0.
    pub upstream_healthy: IntGaugeVec,
    /// Health state as a one-hot gauge: healthy, unhealthy, ejected.
    pub upstream_state: IntGaugeVec,
    /// Effective split share per route, in percent.
    pub split_percentage: GaugeVec,
    /// The current ramp step's percentage, per route with a ramp.
    pub ramp_step: GaugeVec,
    /// Requests of each gate cohort (`target`, `control`) in the gate window.
    pub gate_requests: GaugeVec,
    /// Error rate (0–1) of each gate cohort over the gate window.
    pub gate_error_rate: GaugeVec,
    /// p95 latency of each gate cohort over the gate window (NaN without samples).
    pub gate_latency_p95: GaugeVec,
    /// The gate's verdict, one-hot: `pass`, `fail`, `insufficient`.
    pub gate_verdict: IntGaugeVec,
    /// Split rollbacks by trigger (`manual`, `auto`).
    pub rollbacks: IntCounterVec,
    /// Tokens by upstream, model and type (`prompt`, `completion`).
    pub tokens: IntCounterVec,
    /// USD spent, at the serving upstream's prices.
    pub cost_usd: CounterVec,
    /// The same tokens priced at the route primary's prices: what it would have cost.
    pub baseline_cost_usd: CounterVec,
    /// Upstream attempts by endpoint (empty for a single `base_url`) and outcome: the labels of `outcome::Outcome` (`ok`, `http_5xx`, `http_429`, `timeout`, ...).
    pub attempts: IntCounterVec,
    /// Active probe latency, by upstream and endpoint.
    pub probe_duration: HistogramVec,
    /// Probes by result (`ok`, `fail`).
    pub probes: IntCounterVec,
    /// Streams open right now, by transport.
    pub active_streams: IntGaugeVec,
    /// Retries (second and later attempts) by route.
    pub retries: IntCounterVec,
    /// Retries refused because the retry budget was spent, by route.
    pub budget_exhausted: IntCounterVec,
    /// Health state changes by upstream and new state.
    pub health_transitions: IntCounterVec,
    /// Passive ejections by upstream.
    pub ejections: IntCounterVec,
    /// Alerts by result (`sent`, `failed`, `dropped`).
    pub alerts: IntCounterVec,
    /// Requests refused by a client key's own rate limit.
    pub rate_limited: IntCounterVec,
    /// Streams that ended with an error event after the first byte.
    pub stream_errors: IntCounterVec,
    /// Hedged requests by route and outcome (`won`, `lost`, `skipped`).
    pub hedges: IntCounterVec,
    /// Broken streams continued by another upstream (`resumed`), whose
    /// continuation broke too (`failed`), or that none could continue (`unavailable`).
    pub stream_resumes: IntCounterVec,
    /// Open WebSocket connections.
    pub ws_connections: IntGauge,
    /// Shadow requests by route and outcome (`ok`, `error`, `dropped` by `max_rps`).
    pub shadow_requests: IntCounterVec,
    /// Shadow tokens by route, upstream and type, apart from `turnout_tokens_total`.
    pub shadow_tokens: IntCounterVec,
    /// Shadow USD by route and upstream, apart from `turnout_cost_usd_total`.
    pub shadow_cost_usd: CounterVec,
    /// Shadow pairs compared, by route and shape (`same`, `different`).
    pub shadow_pairs: IntCounterVec,
    /// Shadow latency / primary latency of each pair.
    pub shadow_latency_ratio: HistogramVec,
    /// Audit lines dropped because the writer's queue was full.
    pub audit_dropped: IntCounter,
    /// Process start, unix seconds.
    pub start_time: Gauge,
    /// Always 1; carries the version.
    pub build_info: IntGaugeVec,
    /// `turnout_config_reloads_total{result}`: `ok` or `error`.
    pub config_reloads: IntCounterVec,
    /// `turnout_shared_state_up`: registered only when Redis is configured
    /// ([`Metrics::expose_shared_state`]), so it is absent without Redis.
    pub shared_state_up: IntGauge,
}

macro_rules! reg {
    ($registry:expr, $metric:expr) => {{
        let m = $metric?;
        $registry.register(Box::new(m.clone()))?;
        m
    }};
}

impl Metrics {
    /// Creates every family and registers it into `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let hist =
            |name: &str, help: &str| HistogramOpts::new(name, help).buckets(latency_buckets());
        Ok(Self {
            registry: registry.clone(),
            requests: reg!(registry, IntCounterVec::new(
                Opts::new("turnout_requests_total", "Client requests by route, upstream and HTTP status code."),
                &["route", "upstream", "endpoint", "code", "transport"])),
            request_duration: reg!(registry, HistogramVec::new(
                hist("turnout_request_duration_seconds", "Request duration as seen by the client."),
                &["route", "upstream", "endpoint", "transport"])),
            ttft: reg!(registry, HistogramVec::new(
                hist("turnout_time_to_first_token_seconds", "Time to the first token (first SSE event, or the whole body when not streaming)."),
                &["route", "upstream", "endpoint", "transport"])),
            failovers: reg!(registry, IntCounterVec::new(
                Opts::new("turnout_failovers_total", "Requests moved on from one upstream to the next."),
                &["route", "from", "to", "reason"])),
            upstream_healthy: reg!(registry, IntGaugeVec::new(
                Opts::new("turnout_upstream_healthy", "1 when the upstream is usable for routing."),
                &["upstream"])),
            upstream_state: reg!(registry, IntGaugeVec::new(
                Opts::new("turnout_upstream_state", "Health state of the upstream (one-hot)."),
                &["upstream", "state"])),
            split_percentage: reg!(registry, GaugeVec::new(
                Opts::new("turnout_split_percentage", "Effective share of users sent to the split target, in percent."),
                &["route"])),
            ramp_step: reg!(registry, GaugeVec::new(
                Opts::new("turnout_ramp_step", "The current ramp step's percentage (0 before the ramp started)."),
                &["route"])),
            gate_requests: reg!(registry, GaugeVec::new(
                Opts::new("turnout_gate_requests", "Requests of each gate cohort (target, control) in the gate window."),
                &["route", "cohort"])),
            gate_error_rate: reg!(registry, GaugeVec::new(
                Opts::new("turnout_gate_error_rate", "Error rate (0-1) of each gate cohort over the gate window."),
                &["route", "cohort"])),
            gate_latency_p95: reg!(registry, GaugeVec::new(
                Opts::new("turnout_gate_latency_p95_seconds", "p95 latency (streams: time to first token) of each gate cohort over the gate window."),
                &["route", "cohort"])),
            gate_verdict: reg!(registry, IntGaugeVec::new(
                Opts::new("turnout_gate_verdict", "The gate's verdict, one-hot (pass, fail, insufficient)."),
                &["route", "verdict"])),
            rollbacks: reg!(registry, IntCounterVec::new(
                Opts::new("turnout_rollbacks_total", "Split rollbacks by trigger (manual, auto)."),
                &["route", "trigger"])),
            tokens: reg!(registry, IntCounterVec::new(
                Opts::new("turnout_tokens_total", "Tokens by upstream, model and type (prompt, completion)."),
                &["upstream", "model", "type"])),
            cost_usd: reg!(registry, CounterVec::new(
                Opts::new("turnout_cost_usd_total", "USD spent at the serving upstream's prices."),
                &["route", "upstream", "model"])),
            baseline_cost_usd: reg!(registry, CounterVec::new(
                Opts::new("turnout_baseline_cost_usd_total", "The same tokens priced at the route primary's prices."),
                &["route", "upstream", "model"])),
            attempts: reg!(registry, IntCounterVec::new(
                Opts::new("turnout_upstream_attempts_total", "Upstream attempts by outcome."),
                &["upstream", "endpoint", "outcome"])),
            probe_duration: reg!(registry, HistogramVec::new(
                hist("turnout_probe_duration_seconds", "Active health probe latency."),
                &["upstream", "endpoint"])),
            probes: reg!(registry, IntCounterVec::new(
                Opts::new("turnout_probes_total", "Active health probes by result (ok, fail)."),
                &["upstream", "endpoint", "result"])),
            active_streams: reg!(registry, IntGaugeVec::new(
                Opts::new("turnout_active_streams", "Streams open right now."),
                &["transport"])),
            retries: reg!(registry, IntCounterVec::new(
                Opts::new("turnout_retries_total", "Second and later upstream attempts."),
                &["route"])),
            budget_exhausted: reg!(registry, IntCounterVec::new(
                Opts::new("turnout_retry_budget_exhausted_total", "Retries refused because the retry budget was spent."),
                &["route"])),
            health_transitions: reg!(registry, IntCounterVec::new(
                Opts::new("turnout_health_transitions_total", "Upstream health state changes by new state."),
                &["upstream", "state"])),
            ejections: reg!(registry, IntCounterVec::new(
                Opts::new("turnout_ejections_total", "Upstreams ejected after failing live traffic."),
                &["upstream"])),
            alerts: reg!(registry, IntCounterVec::new(
                Opts::new("turnout_alerts_total", "Webhook alerts by result (sent, failed, dropped)."),
                &["result"])),
            rate_limited: reg!(registry, IntCounterVec::new(
                Opts::new("turnout_rate_limited_total", "Requests refused by a client key's rate limit."),
                &["key"])),
            stream_resumes: reg!(registry, IntCounterVec::new(
                Opts::new("turnout_stream_resumes_total", "Streams broken after they began, by what mid-stream resume made of them (resumed, failed, unavailable)."),
                &["route", "outcome"])),
            stream_errors: reg!(registry, IntCounterVec::new(
                Opts::new("turnout_stream_errors_total", "Streams ended with an error event after the first byte."),
                &["route", "upstream", "endpoint", "reason"])),
            hedges: reg!(registry, IntCounterVec::new(
                Opts::new("turnout_hedges_total", "Hedged attempts by outcome: won (committed first), lost (cancelled or failed), skipped (due but not sent)."),
                &["route", "outcome"])),
            ws_connections: reg!(registry, IntGauge::new(
                "turnout_websocket_connections", "Open WebSocket connections.")),
            shadow_requests: reg!(registry, IntCounterVec::new(
                Opts::new("turnout_shadow_requests_total", "Shadow requests by outcome (ok, error, dropped by max_rps)."),
                &["route", "outcome"])),
            shadow_tokens: reg!(registry, IntCounterVec::new(
                Opts::new("turnout_shadow_tokens_total", "Tokens of shadow requests (not in turnout_tokens_total)."),
                &["route", "upstream", "type"])),
            shadow_cost_usd: reg!(registry, CounterVec::new(
                Opts::new("turnout_shadow_cost_usd_total", "USD of shadow requests (not in turnout_cost_usd_total)."),
                &["route", "upstream"])),
            shadow_pairs: reg!(registry, IntCounterVec::new(
                Opts::new("turnout_shadow_pairs_total", "Primary/shadow pairs compared, by shape (same, different)."),
                &["route", "shape"])),
            shadow_latency_ratio: reg!(registry, HistogramVec::new(
                HistogramOpts::new("turnout_shadow_latency_ratio", "Shadow latency over the primary's, per pair.")
                    .buckets(vec![0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0]),
                &["route"])),
            audit_dropped: reg!(registry, IntCounter::new(
                "turnout_audit_dropped_total", "Audit lines dropped because the writer's queue was full.")),
            start_time: reg!(registry, Gauge::new(
                "turnout_start_time_seconds", "Process start time, unix seconds.")),
            build_info: reg!(registry, IntGaugeVec::new(
                Opts::new("turnout_build_info", "Always 1; labelled with the version."),
                &["version"])),
            config_reloads: reg!(registry, IntCounterVec::new(
                Opts::new("turnout_config_reloads_total", "Config reloads by result (ok, error)."),
                &["result"])),
            shared_state_up: IntGauge::new(
                "turnout_shared_state_up", "1 while the shared store (Redis) is reachable.")?,
        })
    }

    /// The series of one (route, upstream, endpoint, transport), resolved
    /// once (see [`RequestSeries`]).
    pub fn request_series(
        &self,
        route: &str,
        up: &str,
        ep: &str,
        transport: &str,
    ) -> RequestSeries {
        RequestSeries {
            ok: self
                .requests
                .with_label_values(&[route, up, ep, "200", transport]),
            duration: self
                .request_duration
                .with_label_values(&[route, up, ep, transport]),
            ttft: self.ttft.with_label_values(&[route, up, ep, transport]),
            usage: OnceLock::new(),
        }
    }

    /// The token series of one (upstream, model label), resolved once.
    pub fn usage_series(&self, up: &str, model: &str) -> UsageSeries {
        UsageSeries {
            model: model.into(),
            prompt: self.tokens.with_label_values(&[up, model, "prompt"]),
            completion: self.tokens.with_label_values(&[up, model, "completion"]),
            cost: OnceLock::new(),
            baseline: OnceLock::new(),
        }
    }

    /// Registers `turnout_shared_state_up` (a fleet with Redis only).
    pub fn expose_shared_state(&self) -> prometheus::Result<()> {
        self.registry
            .register(Box::new(self.shared_state_up.clone()))
    }

    /// Prometheus text exposition of the whole registry.
    ///
    /// A label whose value is empty is left out: the `endpoint` label is
    /// empty for an upstream with a single `base_url`, so its series read as
    /// before (PRODUCT.md §3.6: the label exists where an upstream has several).
    pub fn render(&self) -> String {
        let mut buf = Vec::with_capacity(16 * 1024);
        let mut families = self.registry.gather();
        for f in &mut families {
            for m in f.mut_metric() {
                if m.get_label().iter().any(|l| l.value().is_empty()) {
                    let kept = m
                        .take_label()
                        .into_iter()
                        .filter(|l| !l.value().is_empty())
                        .collect();
                    m.set_label(kept);
                }
            }
        }
        let _ = TextEncoder::new().encode(&families, &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// The series every finished request of one (route, upstream, endpoint,
/// transport) writes, resolved on its first request and then used directly:
/// `with_label_values` hashes every label value and takes the family's read
/// lock, and a request's end wrote seven such series (callgrind: ~2,500
/// instructions per request). The routing snapshot's base holds one slot per
/// key (`routing::Base::series`), so a reload starts afresh.
pub struct RequestSeries {
    /// `turnout_requests_total{code="200"}` (other codes are looked up).
    pub ok: IntCounter,
    /// `turnout_request_duration_seconds`.
    pub duration: Histogram,
    /// `turnout_ttft_seconds`.
    pub ttft: Histogram,
    /// Tokens and cost of the first model label served under this key (a
    /// route usually serves one model; other labels are looked up).
    pub usage: OnceLock<UsageSeries>,
}

/// Token and cost series of one model label (see [`RequestSeries::usage`]).
pub struct UsageSeries {
    /// The model label these series carry.
    pub model: Box<str>,
    /// `turnout_tokens_total{type="prompt"}`.
    pub prompt: IntCounter,
    /// `turnout_tokens_total{type="completion"}`.
    pub completion: IntCounter,
    /// `turnout_cost_usd_total`, once the model is priced.
    pub cost: OnceLock<Counter>,
    /// `turnout_baseline_cost_usd_total`, once the primary prices it.
    pub baseline: OnceLock<Counter>,
}
