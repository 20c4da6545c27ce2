//! The walk along a chain, as a small state machine: which upstream to try
//! next, whether the retry budget allows it, how long to back off, and one
//! [`AttemptRecord`] per attempt. It performs no I/O: a driver (the
//! sequential [`Failover`](super::failover::Failover) today; a hedging one
//! can be added) asks [`Walk::next`], makes the attempt, and hands back its
//! record with [`Walk::record`].
//!
//! Rules (PRODUCT.md §4): unusable upstreams are skipped unless all are
//! (panic mode); every retry needs a token from the budget, except the one
//! that brings a split user from the failing target back to the primary; a
//! 5xx or a connection error is retried on the same upstream
//! (`failover.same_upstream_retries` times, default 1) before moving on,
//! while a timeout moves on at once; a second visit to the same upstream
//! waits a jittered backoff; a 429 whose `Retry-After` is at most
//! `failover.retry_after_wait_max` is waited out once on the same upstream,
//! otherwise an upstream that said 429 is not tried again by this request.

use std::time::Duration;

use axum::http::StatusCode;
use tokio::time::Instant;

use super::plan::Plan;
use crate::budget::{backoff, RetryBudget};
use crate::config::FailoverConfig;
use crate::error::ApiError;
use crate::outcome::Outcome;
use crate::routing::split::Chain;
use crate::routing::{Snapshot, UpstreamId};

/// One attempt on one upstream, as audit, shadow and health read it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttemptRecord {
    /// Who was tried.
    pub upstream: UpstreamId,
    /// How it ended.
    pub outcome: Outcome,
    /// The upstream's status, when it answered.
    pub status: Option<u16>,
    /// From the attempt's start to its answer (headers, or a stream's first event).
    pub latency: Duration,
    /// The upstream's `Retry-After`, when it sent one.
    pub retry_after: Option<Duration>,
}

/// What the driver should do next.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step {
    /// Try `upstream`, after sleeping `backoff` (a second visit).
    Try {
        upstream: UpstreamId,
        backoff: Option<Duration>,
        /// The failed attempt this one follows (a failover), if any.
        after: Option<AttemptRecord>,
    },
    /// Nothing more to try.
    Stop,
}

/// The state of one request's walk.
pub struct Walk {
    candidates: Chain,
    first: Option<usize>,
    in_split: bool,
    next: usize,
    max: usize,
    same_retries: u32,
    retry_after_wait_max: Duration,
    backoff_base: Duration,
    backoff_max: Duration,
    records: Vec<AttemptRecord>,
    free_used: bool,
    budget_spent: bool,
}

impl Walk {
    /// A walk over the plan's chain, skipping upstreams unusable at `now`
    /// (all of them tried if none is usable).
    pub fn new(plan: &Plan, policy: &FailoverConfig, now: Instant) -> Self {
        let table = &plan.snap.table;
        let usable = plan.chain.filtered(|u| table.upstreams[u].usable(now));
        // Panic mode: everything looks down, so try everything rather than fail fast.
        let candidates = if usable.is_empty() {
            plan.chain
        } else {
            usable
        };
        let max = policy.max_attempts as usize;
        Self {
            candidates,
            first: plan.chain.get(0),
            in_split: plan.in_split,
            next: 0,
            max,
            same_retries: policy.same_upstream_retries,
            retry_after_wait_max: policy.retry_after_wait_max,
            backoff_base: policy.backoff_base,
            backoff_max: policy.backoff_max,
            records: Vec::with_capacity(max.min(4)),
            free_used: false,
            budget_spent: false,
        }
    }

    /// The next step; a retry withdraws from `budget` (and stops the walk when
    /// it is spent).
    pub fn next(&mut self, budget: &RetryBudget) -> Step {
        if self.records.len() >= self.max || self.budget_spent {
            return Step::Stop;
        }
        let after = self.records.last().copied();
        if let Some((up, wait)) = after.and_then(|prev| self.stay(prev)) {
            // A retry here must leave the token that moving on needs: under a
            // lasting failure the budget then buys failovers, not repeats.
            let reserve = i64::from(self.candidates.len() > 1);
            if budget.try_withdraw_keeping(reserve) {
                return Step::Try {
                    upstream: up,
                    backoff: wait.or_else(|| Some(self.backoff_for(up))),
                    after,
                };
            }
        }
        let Some(up) = self.pick() else {
            return Step::Stop;
        };
        if let Some(prev) = after {
            // A user moved by the split whose request failed on the target goes
            // back to the primary for free: a migration must not cost users
            // errors, and this retry only returns load to where it was.
            let split_fallback = self.in_split
                && !self.free_used
                && Some(prev.upstream.index()) == self.first
                && Some(up.index()) != self.first;
            // Too long for one upstream is routing, not a failure to retry:
            // it multiplies nothing (the attempt cap still bounds it).
            let rerouted = prev.outcome == Outcome::ContextLengthExceeded;
            if split_fallback {
                self.free_used = true;
            } else if !rerouted && !budget.try_withdraw() {
                self.budget_spent = true;
                return Step::Stop;
            }
        }
        let visited = self.records.iter().any(|r| r.upstream == up);
        Step::Try {
            upstream: up,
            backoff: visited.then(|| self.backoff_for(up)),
            after,
        }
    }

    /// The jittered backoff before another visit to `up`.
    fn backoff_for(&self, up: UpstreamId) -> Duration {
        let visits = self.records.iter().filter(|r| r.upstream == up).count() as u32;
        backoff(visits.max(1), self.backoff_base, self.backoff_max)
    }

    /// Whether the last attempt's upstream gets another try right away, and
    /// how long to wait first (`None`: the usual backoff).
    fn stay(&self, prev: AttemptRecord) -> Option<(UpstreamId, Option<Duration>)> {
        let on_it = self.records.iter().filter(|r| r.upstream == prev.upstream);
        if prev.outcome.retries_same_upstream() {
            // Attempts on it in a row, the last one included.
            let streak = self
                .records
                .iter()
                .rev()
                .take_while(|r| r.upstream == prev.upstream)
                .count() as u32;
            return (streak <= self.same_retries).then_some((prev.upstream, None));
        }
        if prev.outcome.is_throttled() {
            let wait = prev.retry_after?;
            let waited_before = on_it.filter(|r| r.outcome.is_throttled()).count() > 1;
            let short = !self.retry_after_wait_max.is_zero() && wait <= self.retry_after_wait_max;
            return (short && !waited_before).then_some((prev.upstream, Some(wait)));
        }
        None
    }

    /// Next candidate in round-robin order, skipping upstreams that said 429
    /// (and were not waited out) or whose context is too short, and, when
    /// another is left, the one just tried (it had its same-upstream retries).
    fn pick(&mut self) -> Option<UpstreamId> {
        let n = self.candidates.len();
        let last = self.records.last().map(|r| r.upstream.index());
        for allow_last in [false, true] {
            for i in 0..n {
                let u = self.candidates.get((self.next + i) % n)?;
                let excluded = self
                    .records
                    .iter()
                    .any(|r| r.upstream.index() == u && r.outcome.excludes_upstream());
                if excluded || (!allow_last && Some(u) == last) {
                    continue;
                }
                self.next += i + 1;
                return UpstreamId::new(u);
            }
        }
        None
    }

    /// Takes the record of the attempt the last [`Step::Try`] asked for.
    pub fn record(&mut self, r: AttemptRecord) {
        self.records.push(r);
    }

    /// Attempts made so far.
    pub fn attempts(&self) -> u32 {
        self.records.len() as u32
    }

    /// True when the last step stopped because the retry budget was spent.
    pub fn budget_spent(&self) -> bool {
        self.budget_spent
    }

    /// Every attempt, in order.
    pub fn into_records(self) -> Vec<AttemptRecord> {
        self.records
    }

    /// The answer of a walk that found no upstream to serve it: names each
    /// upstream tried and why (never a key).
    pub fn failure(self, snap: &Snapshot) -> (ApiError, Vec<AttemptRecord>) {
        let records = self.records;
        let summary: Vec<String> = records
            .iter()
            .map(|r| {
                let name = &snap.upstream(r.upstream).name;
                match r.status {
                    Some(s) => format!("{name}: HTTP {s}"),
                    None => format!("{name}: {}", r.outcome),
                }
            })
            .collect();
        let detail = if summary.is_empty() {
            "no upstream could be tried".to_string()
        } else {
            summary.join("; ")
        };
        let all_429 = !records.is_empty() && records.iter().all(|r| r.outcome.is_throttled());
        let error = if all_429 {
            let wait = records
                .iter()
                .filter_map(|r| r.retry_after)
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
        } else if self.budget_spent || records.is_empty() {
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
        } else if records.iter().all(|r| r.status == Some(404)) {
            // Nobody has it: the client's answer, not the proxy's failure
            // (a 404 is not retried by SDKs; a 502 would be).
            ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "not_found",
                format!("Every upstream answered 404 ({detail})."),
            )
        } else if records.last().is_some_and(|r| r.outcome.is_timeout()) {
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
        (error, records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::split;

    fn walk(chain: &[usize], in_split: bool, max: usize) -> Walk {
        let c = split::chain(chain[0], &chain[1..], None, false);
        Walk {
            candidates: c,
            first: c.get(0),
            in_split,
            next: 0,
            max,
            same_retries: 0,
            retry_after_wait_max: Duration::ZERO,
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            records: Vec::new(),
            free_used: false,
            budget_spent: false,
        }
    }

    fn id(i: usize) -> UpstreamId {
        UpstreamId::new(i).unwrap_or_else(|| unreachable!())
    }

    fn failed(w: &mut Walk, up: UpstreamId, outcome: Outcome) {
        w.record(AttemptRecord {
            upstream: up,
            outcome,
            status: None,
            latency: Duration::ZERO,
            retry_after: None,
        });
    }

    fn tried(step: Step) -> UpstreamId {
        match step {
            Step::Try { upstream, .. } => upstream,
            Step::Stop => panic!("walk stopped"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn cycles_the_chain_and_backs_off_on_a_second_visit() {
        let budget = RetryBudget::new(1.0, 10);
        let mut w = walk(&[3, 5], false, 3);
        assert_eq!(tried(w.next(&budget)), id(3));
        failed(&mut w, id(3), Outcome::Http5xx);
        let Step::Try {
            upstream,
            backoff,
            after,
        } = w.next(&budget)
        else {
            panic!("stopped")
        };
        assert_eq!((upstream, backoff), (id(5), None));
        assert_eq!(after.map(|a| a.upstream), Some(id(3)));
        failed(&mut w, id(5), Outcome::Timeout);
        let Step::Try {
            upstream, backoff, ..
        } = w.next(&budget)
        else {
            panic!("stopped")
        };
        assert_eq!(upstream, id(3));
        assert!(backoff.is_some_and(|b| b > Duration::ZERO));
        failed(&mut w, id(3), Outcome::Http5xx);
        assert_eq!(w.next(&budget), Step::Stop, "attempt cap");
        assert_eq!(w.attempts(), 3);
    }

    /// The old `pick` test, on the walk: round robin over the candidates,
    /// skipping those that said 429, `Stop` when every one did.
    #[tokio::test(start_paused = true)]
    async fn pick_cycles_and_skips_throttled() {
        let budget = RetryBudget::new(1.0, 10);
        let mut w = walk(&[3, 5], false, 10);
        assert_eq!(tried(w.next(&budget)), id(3));
        failed(&mut w, id(3), Outcome::Http5xx);
        assert_eq!(tried(w.next(&budget)), id(5));
        failed(&mut w, id(5), Outcome::Http429);
        assert_eq!(tried(w.next(&budget)), id(3));
        failed(&mut w, id(3), Outcome::Http429);
        assert_eq!(w.next(&budget), Step::Stop);
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_is_not_tried_again_and_all_429_answers_429() {
        let budget = RetryBudget::new(1.0, 10);
        let mut w = walk(&[0, 1], false, 5);
        for up in [0, 1] {
            assert_eq!(tried(w.next(&budget)), id(up));
            w.record(AttemptRecord {
                upstream: id(up),
                outcome: Outcome::Http429,
                status: Some(429),
                latency: Duration::ZERO,
                retry_after: Some(Duration::from_secs(up as u64 + 2)),
            });
        }
        assert_eq!(w.next(&budget), Step::Stop, "both said 429");
        assert_eq!(w.attempts(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_5xx_or_connection_error_is_retried_on_the_same_upstream_first() {
        let budget = RetryBudget::new(1.0, 10);
        let mut w = walk(&[0, 1], false, 5);
        w.same_retries = 1;
        assert_eq!(tried(w.next(&budget)), id(0));
        failed(&mut w, id(0), Outcome::Http5xx);
        let Step::Try {
            upstream, backoff, ..
        } = w.next(&budget)
        else {
            panic!("stopped")
        };
        assert_eq!(upstream, id(0), "one retry on the same upstream");
        assert!(
            backoff.is_some_and(|b| b > Duration::ZERO),
            "with a backoff"
        );
        failed(&mut w, id(0), Outcome::ConnectionError);
        assert_eq!(tried(w.next(&budget)), id(1), "then the next upstream");
        failed(&mut w, id(1), Outcome::Timeout);
        assert_eq!(tried(w.next(&budget)), id(0), "a timeout moves on at once");
        failed(&mut w, id(0), Outcome::ConnectError);
        assert_eq!(tried(w.next(&budget)), id(1), "so does a refused connect");
    }

    #[tokio::test(start_paused = true)]
    async fn a_same_upstream_retry_never_spends_the_token_moving_on_needs() {
        // One token: enough to move on, not to retry here and then move on.
        let budget = RetryBudget::new(0.0, 1);
        let mut w = walk(&[0, 1], false, 5);
        w.same_retries = 1;
        assert_eq!(tried(w.next(&budget)), id(0));
        failed(&mut w, id(0), Outcome::Http5xx);
        assert_eq!(tried(w.next(&budget)), id(1), "straight to the fallback");
        // A chain of one has nothing to move on to: the retry may take it.
        let budget = RetryBudget::new(0.0, 1);
        let mut w = walk(&[0], false, 5);
        w.same_retries = 1;
        assert_eq!(tried(w.next(&budget)), id(0));
        failed(&mut w, id(0), Outcome::Http5xx);
        assert_eq!(tried(w.next(&budget)), id(0));
    }

    #[tokio::test(start_paused = true)]
    async fn moving_on_from_a_context_too_short_is_free() {
        let budget = RetryBudget::new(0.0, 0);
        let mut w = walk(&[0, 1], false, 5);
        assert_eq!(tried(w.next(&budget)), id(0));
        failed(&mut w, id(0), Outcome::ContextLengthExceeded);
        assert_eq!(tried(w.next(&budget)), id(1), "no token needed");
        failed(&mut w, id(1), Outcome::ContextLengthExceeded);
        assert_eq!(w.next(&budget), Step::Stop, "neither is tried again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_retry_after_is_waited_out_once_on_the_same_upstream() {
        let budget = RetryBudget::new(1.0, 10);
        let throttled = |w: &mut Walk, up: usize, secs: u64| {
            w.record(AttemptRecord {
                upstream: id(up),
                outcome: Outcome::Http429,
                status: Some(429),
                latency: Duration::ZERO,
                retry_after: Some(Duration::from_secs(secs)),
            })
        };
        let mut w = walk(&[0, 1], false, 5);
        w.retry_after_wait_max = Duration::from_secs(2);
        assert_eq!(tried(w.next(&budget)), id(0));
        throttled(&mut w, 0, 2);
        assert_eq!(
            w.next(&budget),
            Step::Try {
                upstream: id(0),
                backoff: Some(Duration::from_secs(2)),
                after: w.records.last().copied(),
            },
            "waits out its Retry-After"
        );
        throttled(&mut w, 0, 2);
        assert_eq!(tried(w.next(&budget)), id(1), "only once");
        // A longer Retry-After moves on at once; so does any without the setting.
        let mut w = walk(&[0, 1], false, 5);
        w.retry_after_wait_max = Duration::from_secs(2);
        assert_eq!(tried(w.next(&budget)), id(0));
        throttled(&mut w, 0, 3);
        assert_eq!(tried(w.next(&budget)), id(1));
        let mut w = walk(&[0, 1], false, 5);
        assert_eq!(tried(w.next(&budget)), id(0));
        throttled(&mut w, 0, 1);
        assert_eq!(tried(w.next(&budget)), id(1));
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_stops_retries_but_not_the_split_users_way_back() {
        let budget = RetryBudget::new(0.0, 0);
        let mut w = walk(&[2, 0], true, 3);
        assert_eq!(tried(w.next(&budget)), id(2));
        failed(&mut w, id(2), Outcome::Http5xx);
        assert_eq!(
            tried(w.next(&budget)),
            id(0),
            "free way back to the primary"
        );
        failed(&mut w, id(0), Outcome::Http5xx);
        assert_eq!(w.next(&budget), Step::Stop);
        assert!(w.budget_spent());
    }
}
