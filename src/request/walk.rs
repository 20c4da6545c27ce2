//! The walk along a chain, as a small state machine: which upstream to try
//! next, whether the retry budget allows it, how long to back off, and one
//! [`AttemptRecord`] per attempt. It performs no I/O: a driver (the
//! sequential [`Failover`](super::failover::Failover), or the hedging one in
//! [`hedge`](super::hedge)) asks [`Walk::next`] (or [`Walk::hedge`] for a
//! hedge while an attempt is in flight), makes the attempt, and hands back
//! its record with [`Walk::record`].
//!
//! Rules (PRODUCT.md §4): unusable upstreams are skipped unless all are
//! (panic mode); every retry needs a token from the budget, except the one
//! that brings a split user from the failing target back to the primary; a
//! second visit to the same upstream waits a jittered backoff; an upstream
//! that said 429 is not tried again by this request. An upstream with several
//! endpoints (§3.10): after a failure that may be the endpoint's alone, another
//! usable endpoint it has not tried yet comes before the next upstream (a
//! retry, without backoff); each step says which endpoints to avoid.

use std::time::Duration;

use axum::http::StatusCode;
use tokio::time::Instant;

use super::plan::Plan;
use crate::budget::{backoff, RetryBudget};
use crate::config::FailoverConfig;
use crate::error::ApiError;
use crate::outcome::Outcome;
use crate::routing::split::{Chain, MAX_CHAIN};
use crate::routing::{Snapshot, UpstreamId};

/// One attempt on one upstream, as audit, shadow and health read it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttemptRecord {
    /// Who was tried.
    pub upstream: UpstreamId,
    /// Which of its endpoints (0 for a plain `base_url`).
    pub endpoint: usize,
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
        /// Its endpoints this request already tried (a bit set): choose another.
        avoid: u64,
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
    backoff_base: Duration,
    backoff_max: Duration,
    records: Vec<AttemptRecord>,
    budget_spent: bool,
    /// Usable endpoints of each candidate with several (by candidate
    /// position; 0 for a plain `base_url`).
    endpoints: [u64; MAX_CHAIN],
    /// Candidates with an attempt in flight (bit = position): a hedge goes
    /// elsewhere.
    flying: u8,
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
        let mut endpoints = [0; MAX_CHAIN];
        for (slot, u) in endpoints.iter_mut().zip(candidates.iter()) {
            let view = &table.upstreams[u];
            if view.endpoints.len() > 1 {
                *slot = view.usable_endpoints();
            }
        }
        Self {
            candidates,
            first: plan.chain.get(0),
            in_split: plan.in_split,
            next: 0,
            max,
            backoff_base: policy.backoff_base,
            backoff_max: policy.backoff_max,
            records: Vec::with_capacity(max.min(4)),
            budget_spent: false,
            endpoints,
            flying: 0,
        }
    }

    /// The next step; a retry withdraws from `budget` (and stops the walk when
    /// it is spent).
    pub fn next(&mut self, budget: &RetryBudget) -> Step {
        if self.launched() >= self.max || self.budget_spent {
            return Step::Stop;
        }
        let other_endpoint = self.other_endpoint();
        let Some(up) = other_endpoint.or_else(|| self.pick()) else {
            return Step::Stop;
        };
        let after = self.records.last().copied();
        if after.is_some() {
            // A user moved by the split whose request failed on the target goes
            // back to the primary for free: a migration must not cost users
            // errors, and this retry only returns load to where it was.
            // (Another endpoint of the target is no way back: it pays.)
            let split_fallback = self.in_split
                && Some(up.index()) != self.first
                && self
                    .records
                    .iter()
                    .all(|r| Some(r.upstream.index()) == self.first);
            // Another endpoint after a refused connection is free too: the
            // request never reached the provider (no load, no cost to it).
            let unreached = other_endpoint.is_some()
                && self
                    .records
                    .last()
                    .is_some_and(|r| r.outcome == Outcome::ConnectError);
            if !split_fallback && !unreached && !budget.try_withdraw() {
                self.budget_spent = true;
                return Step::Stop;
            }
        }
        let visits = self.records.iter().filter(|r| r.upstream == up).count() as u32;
        let backoff = (visits > 0 && other_endpoint.is_none())
            .then(|| backoff(visits, self.backoff_base, self.backoff_max));
        self.set_flying(up, true);
        Step::Try {
            upstream: up,
            avoid: self.tried_endpoints(up),
            backoff,
            after,
        }
    }

    /// A hedge (§3.10) while other attempts are in flight: the next upstream
    /// of the chain that has no attempt in flight, within the attempt cap,
    /// always paid from the retry budget. `Stop` means the hedge is skipped
    /// (the walk itself goes on: a refused hedge does not spend the budget
    /// of the request's own retries).
    pub fn hedge(&mut self, budget: &RetryBudget) -> Step {
        if self.launched() >= self.max || self.budget_spent {
            return Step::Stop;
        }
        let mark = self.next;
        let Some(up) = self.pick() else {
            return Step::Stop;
        };
        if !budget.try_withdraw() {
            self.next = mark;
            return Step::Stop;
        }
        self.set_flying(up, true);
        Step::Try {
            upstream: up,
            avoid: self.tried_endpoints(up),
            backoff: None,
            after: None,
        }
    }

    /// Attempts finished plus attempts in flight.
    fn launched(&self) -> usize {
        self.records.len() + self.flying.count_ones() as usize
    }

    fn set_flying(&mut self, up: UpstreamId, on: bool) {
        if let Some(p) = self.candidates.iter().position(|u| u == up.index()) {
            let bit = 1u8.checked_shl(p as u32).unwrap_or(0);
            if on {
                self.flying |= bit;
            } else {
                self.flying &= !bit;
            }
        }
    }

    /// An attempt that was cancelled (a hedge lost the race): no longer in
    /// flight, and no record.
    pub fn cancelled(&mut self, up: UpstreamId) {
        self.set_flying(up, false);
    }

    /// The upstream of the last attempt again, when that attempt failed in a
    /// way that may be its endpoint's alone and a usable endpoint of it is
    /// left untried.
    fn other_endpoint(&self) -> Option<UpstreamId> {
        let last = self.records.last()?;
        if !last.outcome.is_endpoint_specific() {
            return None;
        }
        let pos = self
            .candidates
            .iter()
            .position(|u| u == last.upstream.index())?;
        let left = self.endpoints.get(pos)? & !self.tried_endpoints(last.upstream);
        (left != 0).then_some(last.upstream)
    }

    /// The endpoints of `up` this request has tried, as a bit set.
    fn tried_endpoints(&self, up: UpstreamId) -> u64 {
        self.records
            .iter()
            .filter(|r| r.upstream == up)
            .fold(0, |m, r| {
                m | 1u64.checked_shl(r.endpoint as u32).unwrap_or(0)
            })
    }

    /// Next candidate in round-robin order, skipping upstreams that said 429.
    fn pick(&mut self) -> Option<UpstreamId> {
        let n = self.candidates.len();
        for _ in 0..n {
            let pos = self.next % n;
            let u = self.candidates.get(pos)?;
            self.next += 1;
            if self.flying & 1u8.checked_shl(pos as u32).unwrap_or(0) != 0 {
                continue;
            }
            let throttled = self
                .records
                .iter()
                .any(|r| r.upstream.index() == u && r.outcome.is_throttled());
            if !throttled {
                return UpstreamId::new(u);
            }
        }
        None
    }

    /// Takes the record of the attempt the last [`Step::Try`] asked for.
    pub fn record(&mut self, r: AttemptRecord) {
        self.set_flying(r.upstream, false);
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
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            records: Vec::new(),
            budget_spent: false,
            endpoints: [0; MAX_CHAIN],
            flying: 0,
        }
    }

    fn id(i: usize) -> UpstreamId {
        UpstreamId::new(i).unwrap_or_else(|| unreachable!())
    }

    fn failed(w: &mut Walk, up: UpstreamId, outcome: Outcome) {
        w.record(AttemptRecord {
            upstream: up,
            endpoint: 0,
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
            ..
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

    #[tokio::test(start_paused = true)]
    async fn a_429_is_not_tried_again_and_all_429_answers_429() {
        let budget = RetryBudget::new(1.0, 10);
        let mut w = walk(&[0, 1], false, 5);
        for up in [0, 1] {
            assert_eq!(tried(w.next(&budget)), id(up));
            w.record(AttemptRecord {
                upstream: id(up),
                endpoint: 0,
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

    #[tokio::test(start_paused = true)]
    async fn another_endpoint_of_the_same_upstream_comes_first() {
        let budget = RetryBudget::new(1.0, 10);
        let mut w = walk(&[0, 1], false, 5);
        w.endpoints[0] = 0b111;
        let at = |w: &mut Walk, ep: usize, outcome: Outcome| {
            w.record(AttemptRecord {
                upstream: id(0),
                endpoint: ep,
                outcome,
                status: None,
                latency: Duration::ZERO,
                retry_after: None,
            })
        };
        assert_eq!(tried(w.next(&budget)), id(0));
        at(&mut w, 1, Outcome::ConnectError);
        let Step::Try {
            upstream,
            avoid,
            backoff,
            ..
        } = w.next(&budget)
        else {
            panic!("stopped")
        };
        assert_eq!((upstream, avoid, backoff), (id(0), 0b010, None));
        at(&mut w, 0, Outcome::Http5xx);
        let Step::Try {
            upstream, avoid, ..
        } = w.next(&budget)
        else {
            panic!("stopped")
        };
        assert_eq!((upstream, avoid), (id(0), 0b011));
        // A 429 concerns the account: on to the next upstream.
        at(&mut w, 2, Outcome::Http429);
        assert_eq!(tried(w.next(&budget)), id(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hedge_goes_to_the_next_upstream_not_in_flight() {
        let budget = RetryBudget::new(0.0, 1);
        let mut w = walk(&[0, 1, 2], false, 3);
        assert_eq!(tried(w.next(&budget)), id(0));
        // Upstream 0 is in flight: the hedge goes to 1, paid from the budget.
        assert_eq!(tried(w.hedge(&budget)), id(1));
        // Budget spent (1 token): the next hedge is skipped, the walk goes on.
        assert_eq!(w.hedge(&budget), Step::Stop);
        assert!(!w.budget_spent());
        w.cancelled(id(1));
        failed(&mut w, id(0), Outcome::Http5xx);
        assert_eq!(w.attempts(), 1);
        // Nothing in flight now: a cancelled hedge left no record.
        assert_eq!(w.launched(), 1);
    }
}
