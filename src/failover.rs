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
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

pub use crate::attempt::{Attempt, AttemptError, Served, UpstreamService};
use crate::budget::{backoff, RetryBudget};
use crate::config::FailoverConfig;
use crate::control::{ControlHandle, Event};
use crate::error::ApiError;
use crate::health::Verdict;
use crate::metrics::Metrics;
use crate::openai::RequestFacts;
use crate::routing::RoutingTableHandle;
use crate::split::Chain;
use crate::upstream::Upstream;

/// One client request, ready to be sent along its chain.
pub struct ProxyCall {
    /// Route index.
    pub route: usize,
    /// Upstreams in order.
    pub chain: Chain,
    /// In the split target's share.
    pub in_split: bool,
    /// Client path after `/v1`, with its query.
    pub suffix: Arc<str>,
    /// Allowlisted client headers.
    pub headers: Arc<HeaderMap>,
    /// The client's body.
    pub body: Bytes,
    /// What was read from it.
    pub facts: RequestFacts,
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

/// What every request's walk shares: the table, the budget, the policy.
struct Shared {
    table: RoutingTableHandle,
    upstreams: Arc<[Upstream]>,
    budget: RetryBudget,
    cfg: FailoverConfig,
    control: ControlHandle,
    metrics: Metrics,
}

/// Wraps an attempt service (normally [`UpstreamService`]) into [`Failover`].
pub struct FailoverLayer {
    shared: Arc<Shared>,
}

impl FailoverLayer {
    /// One retry budget for the whole process.
    pub fn new(
        table: RoutingTableHandle,
        upstreams: Arc<[Upstream]>,
        cfg: FailoverConfig,
        control: ControlHandle,
        metrics: Metrics,
    ) -> Self {
        let budget = RetryBudget::new(cfg.budget_ratio, cfg.budget_min_per_second);
        let shared = Shared {
            table,
            upstreams,
            budget,
            cfg,
            control,
            metrics,
        };
        Self {
            shared: Arc::new(shared),
        }
    }
}

impl<S> Layer<S> for FailoverLayer {
    type Service = Failover<S>;

    fn layer(&self, inner: S) -> Failover<S> {
        Failover {
            shared: self.shared.clone(),
            inner,
        }
    }
}

/// The one layer that retries: walks a [`ProxyCall`]'s chain through its inner
/// attempt service. Cheap to clone (one `Arc` and the inner service).
#[derive(Clone)]
pub struct Failover<S = UpstreamService> {
    shared: Arc<Shared>,
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
    /// The routing table handle (one lock-free `load()` per request).
    pub fn table(&self) -> &RoutingTableHandle {
        &self.shared.table
    }

    /// The upstream clients, by index.
    pub fn upstreams(&self) -> &Arc<[Upstream]> {
        &self.shared.upstreams
    }

    /// Sends the request along its chain until one upstream serves it.
    pub async fn run(&self, call: ProxyCall) -> Result<Success, Failure> {
        let sh = &*self.shared;
        sh.budget.deposit();
        let attempt = Attempt {
            upstream: 0,
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
        };
        let table = sh.table.load();
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
        let max = self.shared.cfg.max_attempts as usize;
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
                // A user moved by the split whose request failed on the target goes
                // back to the primary for free: a migration must not cost users
                // errors, and this retry only returns load to where it was.
                let split_fallback =
                    call.in_split && attempts == 1 && tried.first() == call.chain.get(0).as_ref();
                if !split_fallback && !self.shared.budget.try_withdraw() {
                    budget_spent = true;
                    self.shared
                        .metrics
                        .budget_exhausted
                        .with_label_values(&[&route_name])
                        .inc();
                    break;
                }
                self.shared
                    .metrics
                    .retries
                    .with_label_values(&[&route_name])
                    .inc();
                if let Some((prev, e)) = errors.last() {
                    self.shared
                        .metrics
                        .failovers
                        .with_label_values(&[
                            &route_name,
                            &self.shared.upstreams[*prev].name,
                            &self.shared.upstreams[up].name,
                            e.reason,
                        ])
                        .inc();
                }
                let visits = tried.iter().filter(|&&t| t == up).count() as u32;
                if visits > 0 {
                    tokio::time::sleep(backoff(
                        visits,
                        self.shared.cfg.backoff_base,
                        self.shared.cfg.backoff_max,
                    ))
                    .await;
                }
            }
            attempts += 1;
            tried.push(up);
            let start = Instant::now();
            let result = self
                .inner
                .clone()
                .oneshot(Attempt {
                    upstream: up,
                    ..attempt.clone()
                })
                .await;
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
                                e.retry_after
                                    .map(|d| d.min(self.shared.cfg.retry_after_max)),
                            )
                        }
                        _ => Verdict::Fail,
                    };
                    self.outcome(up, &call, verdict, Some(ttfb), e.reason);
                    tracing::debug!(
                        upstream = %self.shared.upstreams[up].name,
                        reason = e.reason,
                        detail = e.detail.as_deref().unwrap_or(""),
                        "attempt failed"
                    );
                    errors.push((up, e));
                }
            }
        }
        Err(self.failure(errors, attempts, budget_spent))
    }

    fn outcome(
        &self,
        up: usize,
        call: &ProxyCall,
        verdict: Verdict,
        ttfb: Option<Duration>,
        label: &'static str,
    ) {
        self.shared
            .metrics
            .attempts
            .with_label_values(&[&self.shared.upstreams[up].name, label])
            .inc();
        self.shared.control.report(Event::Outcome {
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
                Some(s) => format!("{}: HTTP {s}", self.shared.upstreams[*u].name),
                None => format!("{}: {}", self.shared.upstreams[*u].name, e.reason),
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

#[cfg(test)]
mod tests {
    use super::*;

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
