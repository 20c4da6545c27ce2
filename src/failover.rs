//! Failover: walks a request's chain of upstreams. The one layer that retries.
//!
//! Rules (PRODUCT.md §4): connection errors, timeouts before the response
//! starts, 408, 429, 5xx, garbage, and an upstream's own 401/403/404 move on to
//! the next upstream; any other answer (a client's 400/413/415/422, a success)
//! is final. Unusable upstreams are skipped unless all are (panic mode). Every
//! retry needs a token from the retry budget; a second try on the same
//! upstream waits a jittered backoff; an upstream that said 429 is not tried
//! again by this request. Streams commit only once the first SSE event arrived.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use bytes::{Bytes, BytesMut};
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use tokio::time::Instant;

use crate::budget::{backoff, RetryBudget};
use crate::config::FailoverConfig;
use crate::control::{ControlHandle, Event};
use crate::error::ApiError;
use crate::health::Verdict;
use crate::metrics::Metrics;
use crate::openai::{self, RequestFacts, Usage};
use crate::routing::RoutingTableHandle;
use crate::split::Chain;
use crate::upstream::Upstream;

/// Largest non-streaming upstream body read into memory.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// Largest prefix of a stream buffered while waiting for its first event.
const MAX_PREFETCH: usize = 1024 * 1024;

/// One request, ready to be sent along its chain.
pub struct Call<'a> {
    /// Route index.
    pub route: usize,
    /// Upstreams in order.
    pub chain: Chain,
    /// In the split target's share.
    pub in_split: bool,
    /// Client path after `/v1`, with its query.
    pub suffix: &'a str,
    /// Allowlisted client headers.
    pub headers: &'a HeaderMap,
    /// The client's body.
    pub body: &'a Bytes,
    /// What was read from it.
    pub facts: &'a RequestFacts,
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
        rest: BoxStream<'static, Result<Bytes, reqwest::Error>>,
    },
}

/// A served request.
pub struct Success {
    /// Upstream index that answered.
    pub upstream: usize,
    /// Attempts made (≥ 1).
    pub attempts: u32,
    /// Time to first byte (headers for JSON, first event for streams).
    pub ttfb: Duration,
    /// The answer.
    pub served: Served,
}

/// A request no upstream could serve.
pub struct Failure {
    /// What the client gets.
    pub error: ApiError,
    /// Last upstream tried.
    pub upstream: Option<usize>,
    /// Attempts made.
    pub attempts: u32,
}

/// Why an attempt moved on.
#[derive(Debug, Clone)]
struct AttemptError {
    reason: &'static str,
    retry_after: Option<Duration>,
    status: Option<u16>,
}

impl AttemptError {
    fn new(reason: &'static str) -> Self {
        Self {
            reason,
            retry_after: None,
            status: None,
        }
    }
}

/// Walks chains. Shared by every request.
pub struct Failover {
    /// Routing snapshot.
    pub table: RoutingTableHandle,
    /// Upstream clients, by index.
    pub upstreams: Arc<[Upstream]>,
    budget: RetryBudget,
    cfg: FailoverConfig,
    control: ControlHandle,
    metrics: Metrics,
}

impl Failover {
    /// Builds the walker.
    pub fn new(
        table: RoutingTableHandle,
        upstreams: Arc<[Upstream]>,
        cfg: FailoverConfig,
        control: ControlHandle,
        metrics: Metrics,
    ) -> Self {
        Self {
            budget: RetryBudget::new(cfg.budget_ratio, cfg.budget_min_per_second),
            table,
            upstreams,
            cfg,
            control,
            metrics,
        }
    }

    /// Sends the request along its chain until one upstream serves it.
    pub async fn run(&self, call: Call<'_>) -> Result<Success, Failure> {
        self.budget.deposit();
        let table = self.table.load();
        let route_name = table.routes[call.route].name.clone();
        let now = Instant::now();
        let mut candidates: Vec<usize> = call
            .chain
            .iter()
            .filter(|&u| table.upstreams[u].usable(now))
            .collect();
        if candidates.is_empty() {
            // Panic mode: everything looks down, so try everything rather than fail fast.
            candidates = call.chain.iter().collect();
        }
        drop(table);
        let max = self.cfg.max_attempts as usize;
        let mut errors: Vec<(usize, AttemptError)> = Vec::with_capacity(max.min(4));
        let mut tried: Vec<usize> = Vec::with_capacity(max.min(4));
        let mut throttled: Vec<usize> = Vec::new();
        let mut budget_spent = false;
        let mut attempts = 0u32;
        let mut next = 0usize;
        while (attempts as usize) < max {
            let Some(up) = pick(&candidates, &mut next, &throttled) else {
                break;
            };
            if attempts > 0 {
                if !self.budget.try_withdraw() {
                    budget_spent = true;
                    self.metrics
                        .budget_exhausted
                        .with_label_values(&[&route_name])
                        .inc();
                    break;
                }
                self.metrics.retries.with_label_values(&[&route_name]).inc();
                if let Some((prev, e)) = errors.last() {
                    self.metrics
                        .failovers
                        .with_label_values(&[
                            &route_name,
                            &self.upstreams[*prev].name,
                            &self.upstreams[up].name,
                            e.reason,
                        ])
                        .inc();
                }
                let visits = tried.iter().filter(|&&t| t == up).count() as u32;
                if visits > 0 {
                    tokio::time::sleep(backoff(
                        visits,
                        self.cfg.backoff_base,
                        self.cfg.backoff_max,
                    ))
                    .await;
                }
            }
            attempts += 1;
            tried.push(up);
            let start = Instant::now();
            let result = self.attempt(&self.upstreams[up], &call).await;
            let ttfb = start.elapsed();
            match result {
                Ok(served) => {
                    self.outcome(up, &call, Verdict::Ok, Some(ttfb), "ok");
                    return Ok(Success {
                        upstream: up,
                        attempts,
                        ttfb,
                        served,
                    });
                }
                Err(e) => {
                    let verdict = match e.status {
                        Some(429) => {
                            throttled.push(up);
                            Verdict::Throttled(
                                e.retry_after.map(|d| d.min(self.cfg.retry_after_max)),
                            )
                        }
                        _ => Verdict::Fail,
                    };
                    self.outcome(up, &call, verdict, Some(ttfb), e.reason);
                    tracing::debug!(upstream = %self.upstreams[up].name, reason = e.reason, "attempt failed");
                    errors.push((up, e));
                }
            }
        }
        Err(self.failure(errors, attempts, budget_spent))
    }

    fn outcome(
        &self,
        up: usize,
        call: &Call<'_>,
        verdict: Verdict,
        ttfb: Option<Duration>,
        label: &'static str,
    ) {
        self.metrics
            .attempts
            .with_label_values(&[&self.upstreams[up].name, label])
            .inc();
        self.control.report(Event::Outcome {
            upstream: up,
            route: call.route,
            verdict,
            ttfb,
            in_split: call.in_split,
        });
    }

    fn failure(
        &self,
        errors: Vec<(usize, AttemptError)>,
        attempts: u32,
        budget_spent: bool,
    ) -> Failure {
        let last = errors.last().map(|(u, _)| *u);
        let summary: Vec<String> = errors
            .iter()
            .map(|(u, e)| match e.status {
                Some(s) => format!("{}: HTTP {s}", self.upstreams[*u].name),
                None => format!("{}: {}", self.upstreams[*u].name, e.reason),
            })
            .collect();
        let detail = if summary.is_empty() {
            "no upstream could be tried".to_string()
        } else {
            summary.join("; ")
        };
        let all_429 = !errors.is_empty() && errors.iter().all(|(_, e)| e.status == Some(429));
        let error = if all_429 {
            let wait = errors
                .iter()
                .filter_map(|(_, e)| e.retry_after)
                .min()
                .unwrap_or(Duration::from_secs(1));
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "rate_limit_exceeded",
                format!("Every upstream is rate limiting ({detail}); retry after the Retry-After delay."),
            );
            e.retry_after = Some(wait.as_secs_f64().ceil().max(1.0) as u64);
            e
        } else if budget_spent || errors.is_empty() {
            let mut e = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "upstreams_unavailable",
                format!(
                    "No upstream could serve the request and the retry budget is spent ({detail})."
                ),
            );
            e.retry_after = Some(1);
            e
        } else if errors.last().is_some_and(|(_, e)| e.reason == "timeout") {
            ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "server_error",
                "upstream_timeout",
                format!("The upstream timed out ({detail})."),
            )
        } else {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "server_error",
                "upstream_error",
                format!("Every upstream failed ({detail})."),
            )
        };
        Failure {
            error,
            upstream: last,
            attempts,
        }
    }

    async fn attempt(&self, up: &Upstream, call: &Call<'_>) -> Result<Served, AttemptError> {
        let body = match (&call.facts.model, call.facts.model_span) {
            (Some(m), Some(span)) if up.model_map.contains_key(m) => {
                openai::with_model(call.body, span, up.map_model(m))
            }
            _ => call.body.clone(),
        };
        let req = up.post(call.suffix, call.headers, body);
        let limit = if call.facts.stream {
            up.timeouts.first_token
        } else {
            up.timeouts.headers
        };
        let deadline = Instant::now() + up.timeouts.total;
        let rsp = match tokio::time::timeout(limit.min(up.timeouts.total), req.send()).await {
            Err(_) => return Err(AttemptError::new("timeout")),
            Ok(Err(e)) if e.is_timeout() => return Err(AttemptError::new("timeout")),
            Ok(Err(e)) if e.is_connect() => return Err(AttemptError::new("connect_error")),
            Ok(Err(_)) => return Err(AttemptError::new("connection_error")),
            Ok(Ok(r)) => r,
        };
        let status = rsp.status();
        if let Some(e) = classify(status, rsp.headers()) {
            return Err(e);
        }
        let headers = visible_headers(rsp.headers());
        let is_sse = rsp
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if status.is_success() && is_sse {
            let first_deadline = Instant::now().max(deadline.min(Instant::now() + limit));
            return prefetch(status, headers, rsp, first_deadline).await;
        }
        let body = match tokio::time::timeout_at(deadline, read_body(rsp)).await {
            Err(_) => return Err(AttemptError::new("timeout")),
            Ok(Err(reason)) => return Err(AttemptError::new(reason)),
            Ok(Ok(b)) => b,
        };
        let mut usage = None;
        if status.is_success() {
            match openai::response_usage(&body) {
                Ok(u) => usage = u,
                Err(openai::NotJson) => return Err(AttemptError::new("invalid_response")),
            }
        }
        Ok(Served::Complete {
            status,
            headers,
            body,
            usage,
        })
    }
}

/// Next candidate in round-robin order, skipping upstreams that said 429.
fn pick(candidates: &[usize], next: &mut usize, throttled: &[usize]) -> Option<usize> {
    for _ in 0..candidates.len() {
        let u = candidates[*next % candidates.len()];
        *next += 1;
        if !throttled.contains(&u) {
            return Some(u);
        }
    }
    None
}

/// `Some` when the status means "move on"; `None` when the answer is final.
fn classify(status: StatusCode, headers: &HeaderMap) -> Option<AttemptError> {
    let code = status.as_u16();
    let reason = match code {
        429 => "http_429",
        408 => "timeout",
        401 | 403 | 404 => "http_4xx",
        500..=599 => "http_5xx",
        _ => return None,
    };
    let retry_after = headers
        .get(axum::http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64);
    Some(AttemptError {
        reason,
        retry_after,
        status: Some(code),
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

async fn read_body(mut rsp: reqwest::Response) -> Result<Bytes, &'static str> {
    let cap = rsp
        .content_length()
        .map_or(16 * 1024, |n| n.min(MAX_RESPONSE_BYTES as u64) as usize);
    let mut first: Option<Bytes> = None;
    let mut buf = BytesMut::new();
    loop {
        match rsp.chunk().await {
            Ok(Some(c)) => {
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
                    return Err("response_too_large");
                }
                buf.extend_from_slice(&c);
            }
            Ok(None) => return Ok(first.unwrap_or_else(|| buf.freeze())),
            Err(_) => return Err("reset"),
        }
    }
}

async fn prefetch(
    status: StatusCode,
    headers: HeaderMap,
    rsp: reqwest::Response,
    deadline: Instant,
) -> Result<Served, AttemptError> {
    let mut stream = rsp.bytes_stream().boxed();
    let mut buf = BytesMut::new();
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => return Err(AttemptError::new("timeout")),
            Ok(None) => return Err(AttemptError::new("reset")),
            Ok(Some(Err(_))) => return Err(AttemptError::new("reset")),
            Ok(Some(Ok(chunk))) => {
                buf.extend_from_slice(&chunk);
                if crate::stream::has_first_event(&buf) {
                    return Ok(Served::Stream {
                        status,
                        headers,
                        first: buf.freeze(),
                        rest: stream,
                    });
                }
                if buf.len() > MAX_PREFETCH {
                    return Err(AttemptError::new("invalid_response"));
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

    #[test]
    fn pick_cycles_and_skips_throttled() {
        let mut n = 0;
        let c = [3, 5];
        assert_eq!(pick(&c, &mut n, &[]), Some(3));
        assert_eq!(pick(&c, &mut n, &[]), Some(5));
        assert_eq!(pick(&c, &mut n, &[5]), Some(3));
        assert_eq!(pick(&c, &mut n, &[3, 5]), None);
    }
}
