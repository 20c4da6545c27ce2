//! The one place where a finished request becomes metrics, token and cost
//! counters, per-key usage (`/v1/account`) and its log line — for HTTP and
//! WebSocket alike.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use serde::Serialize;

use crate::config::Config;
use crate::logfmt;
use crate::metrics::{Metrics, RequestSeries, UsageSeries};
use crate::openai::Usage;
use crate::outcome::Outcome;
use crate::upstream::Upstream;

/// How the client reached Turnout (the `transport` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// HTTP (JSON or SSE).
    Http,
    /// WebSocket chat.
    Ws,
}

impl Transport {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Ws => "ws",
        }
    }
}

/// Usage of one client key since the process started (and, in a fleet, the
/// fleet's totals as last read from the shared store).
#[derive(Debug, Default)]
pub struct KeyUsage {
    requests: AtomicU64,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    cost_nano_usd: AtomicU64,
    /// What has already been added to the fleet's totals, same order as
    /// [`KeyUsage::counters`].
    pushed: [AtomicU64; 4],
    fleet: ArcSwapOption<KeyUsageView>,
}

/// A snapshot of [`KeyUsage`].
#[derive(Debug, Clone, Serialize)]
pub struct KeyUsageView {
    /// Requests answered.
    pub requests: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// USD at the serving upstreams' prices.
    pub cost_usd: f64,
}

impl KeyUsage {
    fn counters(&self) -> [&AtomicU64; 4] {
        [
            &self.requests,
            &self.prompt_tokens,
            &self.completion_tokens,
            &self.cost_nano_usd,
        ]
    }

    /// What this replica counted that the fleet's totals do not have yet
    /// (requests, prompt tokens, completion tokens, nano-USD).
    pub fn unpushed(&self) -> [u64; 4] {
        let c = self.counters();
        std::array::from_fn(|i| {
            c[i].load(Ordering::Relaxed)
                .saturating_sub(self.pushed[i].load(Ordering::Relaxed))
        })
    }

    /// `delta` (from [`KeyUsage::unpushed`]) reached the fleet's totals.
    pub fn pushed(&self, delta: [u64; 4]) {
        for (p, d) in self.pushed.iter().zip(delta) {
            p.fetch_add(d, Ordering::Relaxed);
        }
    }

    /// The fleet's totals (same order as [`KeyUsage::unpushed`]), as read
    /// back from the shared store.
    pub fn set_fleet(&self, totals: [u64; 4]) {
        self.fleet.store(Some(std::sync::Arc::new(KeyUsageView {
            requests: totals[0],
            prompt_tokens: totals[1],
            completion_tokens: totals[2],
            cost_usd: totals[3] as f64 / 1e9,
        })));
    }

    /// The fleet's totals, when shared.
    pub fn fleet_view(&self) -> Option<KeyUsageView> {
        self.fleet.load().as_deref().cloned()
    }

    /// Current values.
    pub fn view(&self) -> KeyUsageView {
        KeyUsageView {
            requests: self.requests.load(Ordering::Relaxed),
            prompt_tokens: self.prompt_tokens.load(Ordering::Relaxed),
            completion_tokens: self.completion_tokens.load(Ordering::Relaxed),
            cost_usd: self.cost_nano_usd.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

/// Everything known about a request once it is over.
pub struct Finished<'a> {
    /// Request id (also in `x-request-id`).
    pub request_id: &'a str,
    /// Route name, or `none` when no route matched.
    pub route: &'a str,
    /// Serving (or last tried) upstream.
    pub upstream: Option<&'a Upstream>,
    /// Which of its endpoints (0 for a plain `base_url`).
    pub endpoint: usize,
    /// The route's primary (prices the savings baseline).
    pub primary: Option<&'a Upstream>,
    /// Client model name.
    pub model: &'a str,
    /// HTTP status given to the client.
    pub status: u16,
    /// Upstream attempts made.
    pub attempts: u32,
    /// HTTP or WebSocket.
    pub transport: Transport,
    /// Whole duration.
    pub duration: Duration,
    /// Time to first token, when an answer started.
    pub ttft: Option<Duration>,
    /// Tokens reported by the upstream.
    pub usage: Option<Usage>,
    /// Client key index.
    pub client_key: Option<usize>,
    /// How a stream broke after the first byte.
    pub stream_error: Option<Outcome>,
    /// The resolved series of this (route, upstream, endpoint, transport),
    /// when the snapshot has a slot for it; else the series are looked up by labels.
    pub series: Option<&'a OnceLock<RequestSeries>>,
}

/// Shared by every request.
pub struct Accounting {
    metrics: Metrics,
    known_models: HashSet<String>,
    keys: Vec<KeyUsage>,
}

impl Accounting {
    /// Known model names (bounded label set) come from the config.
    pub fn new(cfg: &Config, metrics: Metrics) -> Self {
        let mut known = HashSet::new();
        for r in &cfg.routes {
            known.extend(r.models.iter().filter(|m| !m.contains(['*', '?'])).cloned());
        }
        for u in &cfg.upstreams {
            known.extend(u.model_map.keys().cloned());
            known.extend(u.model_map.values().cloned());
            known.extend(u.pricing.keys().filter(|k| *k != "*").cloned());
        }
        let n = cfg.auth.as_ref().map_or(0, |a| a.keys.len());
        Self {
            metrics,
            known_models: known,
            keys: (0..n).map(|_| KeyUsage::default()).collect(),
        }
    }

    /// The metric label for a model name: itself when the config names it, else `other`.
    pub fn model_label<'a>(&self, model: &'a str) -> &'a str {
        if self.known_models.contains(model) {
            model
        } else {
            "other"
        }
    }

    /// Usage of a client key.
    pub fn key_usage(&self, key: usize) -> Option<&KeyUsage> {
        self.keys.get(key)
    }

    /// Usage of every client key, by key index.
    pub fn keys(&self) -> &[KeyUsage] {
        &self.keys
    }

    /// Records metrics, cost, per-key usage and the log line; returns the
    /// cost in USD when the serving upstream prices the model.
    pub fn record(&self, f: &Finished<'_>) -> Option<f64> {
        let m = &self.metrics;
        let up = f.upstream.map_or("none", |u| &*u.name);
        // Empty (left out of the exposition) unless the upstream has several endpoints.
        let ep = f.upstream.map_or("", |u| u.endpoint_label(f.endpoint));
        let code = status_label(f.status);
        let transport = f.transport.as_str();
        let series = f
            .series
            .map(|s| s.get_or_init(|| m.request_series(f.route, up, ep, transport)));
        match series {
            Some(s) if f.status == 200 => s.ok.inc(),
            _ => m
                .requests
                .with_label_values(&[f.route, up, ep, code, transport])
                .inc(),
        }
        let secs = f.duration.as_secs_f64();
        match series {
            Some(s) => s.duration.observe(secs),
            None => m
                .request_duration
                .with_label_values(&[f.route, up, ep, transport])
                .observe(secs),
        }
        if let Some(t) = f.ttft {
            match series {
                Some(s) => s.ttft.observe(t.as_secs_f64()),
                None => m
                    .ttft
                    .with_label_values(&[f.route, up, ep, transport])
                    .observe(t.as_secs_f64()),
            }
        }
        if let Some(reason) = f.stream_error {
            m.stream_errors
                .with_label_values(&[f.route, up, ep, reason.label()])
                .inc();
        }
        let mut cost = 0.0;
        let mut priced = false;
        if let (Some(u), Some(serving)) = (f.usage, f.upstream) {
            let sent = serving.map_model(f.model);
            let label = self.model_label(sent);
            let cached = series
                .map(|s| s.usage.get_or_init(|| m.usage_series(up, label)))
                .filter(|c| &*c.model == label);
            let tokens = |c: Option<&UsageSeries>| match c {
                Some(c) => {
                    c.prompt.inc_by(u.prompt_tokens);
                    c.completion.inc_by(u.completion_tokens);
                }
                None => {
                    m.tokens
                        .with_label_values(&[up, label, "prompt"])
                        .inc_by(u.prompt_tokens);
                    m.tokens
                        .with_label_values(&[up, label, "completion"])
                        .inc_by(u.completion_tokens);
                }
            };
            tokens(cached);
            if let Some(p) = serving.price(sent) {
                cost = price(u, p.input, p.output);
                priced = true;
                let c = || m.cost_usd.with_label_values(&[f.route, up, label]);
                match cached {
                    Some(s) => s.cost.get_or_init(c).inc_by(cost),
                    None => c().inc_by(cost),
                }
            }
            if let Some(primary) = f.primary {
                if let Some(p) = primary.price(primary.map_model(f.model)) {
                    let b = || m.baseline_cost_usd.with_label_values(&[f.route, up, label]);
                    let v = price(u, p.input, p.output);
                    match cached {
                        Some(s) => s.baseline.get_or_init(b).inc_by(v),
                        None => b().inc_by(v),
                    }
                }
            }
        }
        if let Some(k) = f.client_key.and_then(|k| self.keys.get(k)) {
            k.requests.fetch_add(1, Ordering::Relaxed);
            if let Some(u) = f.usage {
                k.prompt_tokens
                    .fetch_add(u.prompt_tokens, Ordering::Relaxed);
                k.completion_tokens
                    .fetch_add(u.completion_tokens, Ordering::Relaxed);
                k.cost_nano_usd
                    .fetch_add((cost * 1e9) as u64, Ordering::Relaxed);
            }
        }
        let (pt, ct) = f
            .usage
            .map_or((0, 0), |u| (u.prompt_tokens, u.completion_tokens));
        let line = logfmt::AccessLine {
            request_id: f.request_id,
            route: f.route,
            upstream: up,
            attempts: f.attempts,
            status: f.status,
            latency_ms: f.duration.as_millis() as u64,
            prompt_tokens: pt,
            completion_tokens: ct,
            transport,
            stream_error: f.stream_error.map_or("", Outcome::label),
        };
        if logfmt::access_lines_direct() {
            if tracing::enabled!(tracing::Level::INFO) {
                logfmt::write_access_line(module_path!(), &line);
            }
        } else {
            tracing::info!(
                request_id = line.request_id,
                route = line.route,
                upstream = line.upstream,
                attempts = line.attempts,
                status = line.status,
                latency_ms = line.latency_ms,
                prompt_tokens = line.prompt_tokens,
                completion_tokens = line.completion_tokens,
                transport = line.transport,
                stream_error = line.stream_error,
                "request"
            );
        }
        priced.then_some(cost)
    }
}

fn price(u: Usage, input: f64, output: f64) -> f64 {
    (u.prompt_tokens as f64 * input + u.completion_tokens as f64 * output) / 1_000_000.0
}

/// Status code as a static label (no allocation for common codes).
pub fn status_label(code: u16) -> &'static str {
    match code {
        200 => "200",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        408 => "408",
        413 => "413",
        415 => "415",
        422 => "422",
        429 => "429",
        499 => "499",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        c if c < 300 => "2xx",
        c if c < 400 => "3xx",
        c if c < 500 => "4xx",
        _ => "5xx",
    }
}
