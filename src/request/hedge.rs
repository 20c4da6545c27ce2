//! Hedged requests (PRODUCT.md §3.10, `routes[].hedge`): the second driver
//! of the [`Walk`]. It makes the walk's attempts like the sequential driver,
//! but when the attempt in flight has not reached its commit point after
//! `after` (a fixed delay, or the upstream's current p95 time to the commit
//! point, at least 200 ms), the same request also starts on the next
//! upstream of the chain. The first attempt to commit wins; the others are
//! dropped at once, which closes their connections, so their providers stop
//! generating. Each hedge is paid from the retry budget and counted in
//! `turnout_hedges_total{route,outcome}`: `won` (it committed first), `lost`
//! (cancelled, or failed), `skipped` (due, but no upstream or no budget).
//!
//! Only routes with `hedge` come here; the default path never does.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::time::Instant;
use tower::Service;

use super::failover::{
    keep_held, template, Attempt, AttemptError, Failover, Failure, HeldAnswer, ProxyCall, Served,
    Success,
};
use super::plan::Plan;
use super::walk::{AttemptRecord, Step, Walk};
use crate::config::{HedgeAfter, HedgeConfig};
use crate::routing::UpstreamId;

/// `after: p95` never hedges sooner than this.
pub const MIN_P95_DELAY: Duration = Duration::from_millis(200);
/// `after: p95` before the upstream has any latency sample.
pub const P95_UNKNOWN_DELAY: Duration = Duration::from_secs(2);

/// How an attempt in flight ended: whether it was a hedge, its record, its
/// result, and (tracing on) the span of a served attempt.
type Landed = (
    bool,
    AttemptRecord,
    Result<Served, AttemptError>,
    Option<opentelemetry::Context>,
);

/// An attempt in flight.
type Flight<'a> = Pin<Box<dyn Future<Output = Landed> + Send + 'a>>;

/// How long the attempt on `up` may run uncommitted before a hedge starts.
pub fn delay(cfg: &HedgeConfig, plan: &Plan, up: UpstreamId) -> Duration {
    delay_after(cfg.after, plan.snap.table.upstream(up).ttfb_p95)
}

/// `after`, given the upstream's current p95 time to the commit point.
pub fn delay_after(after: HedgeAfter, p95: Option<Duration>) -> Duration {
    match after {
        HedgeAfter::Fixed(d) => d,
        HedgeAfter::P95 => p95.unwrap_or(P95_UNKNOWN_DELAY).max(MIN_P95_DELAY),
    }
}

/// Counts of one request's hedges, for `turnout_hedges_total`.
#[derive(Default)]
struct Tally {
    launched: u32,
    won: bool,
    skipped: u32,
}

impl<S> Failover<S>
where
    S: Service<Attempt, Response = Served, Error = AttemptError> + Clone + Send + Sync + 'static,
    S::Future: Send,
{
    /// Walks the chain with hedges (see the module doc).
    pub(super) async fn run_hedged(
        &self,
        call: ProxyCall,
        cfg: &HedgeConfig,
    ) -> Result<Success, Failure> {
        let app = &*self.app;
        let plan = &call.plan;
        app.budget.deposit();
        let mut walk = Walk::new(plan, plan.snap.failover(), Instant::now());
        let template = template(&call);
        let mut tally = Tally::default();
        let mut flying: FuturesUnordered<Flight<'_>> = FuturesUnordered::new();
        let mut hedge_at: Option<Instant> = None;
        let mut held: Option<HeldAnswer> = None;
        let outcome = loop {
            if flying.is_empty() {
                let Step::Try {
                    upstream,
                    avoid,
                    backoff,
                    after,
                } = walk.next(&app.budget)
                else {
                    break None;
                };
                if let Some(prev) = after {
                    self.count_retry(plan, prev, upstream);
                }
                if let Some(wait) = backoff {
                    tokio::time::sleep(wait).await;
                }
                let n = walk.attempts() + flying.len() as u32 + 1;
                flying.push(self.flight(&call, &template, (upstream, avoid), n, false));
                hedge_at =
                    (tally.launched < cfg.max).then(|| Instant::now() + delay(cfg, plan, upstream));
            }
            let due = hedge_at;
            let timer = async move {
                match due {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some((hedge, record, mut result, span)) = flying.next() => {
                    keep_held(&mut held, &record, &mut result);
                    walk.record(record);
                    if let Ok(served) = result {
                        tally.won = hedge;
                        break Some((record, served, span));
                    }
                }
                () = timer => {
                    hedge_at = None;
                    match walk.hedge(&app.budget) {
                        Step::Try { upstream, avoid, .. } => {
                            tally.launched += 1;
                            let n = walk.attempts() + flying.len() as u32 + 1;
                            flying.push(self.flight(&call, &template, (upstream, avoid), n, true));
                            if tally.launched < cfg.max {
                                hedge_at = Some(Instant::now() + delay(cfg, plan, upstream));
                            }
                        }
                        Step::Stop => tally.skipped += 1,
                    }
                }
            }
        };
        // The losers: dropping their futures closes their connections.
        let cancelled = flying.len() as u32;
        drop(flying);
        self.count_hedges(plan, &tally);
        match outcome {
            Some((record, served, span)) => {
                let mut s = self.success(walk, record, served, span);
                s.attempts += cancelled;
                Ok(s)
            }
            None => self.unserved(plan, walk, held),
        }
    }

    /// One attempt as a future the race can poll (and drop).
    fn flight<'a>(
        &'a self,
        call: &'a ProxyCall,
        template: &'a Attempt,
        target: (UpstreamId, u64),
        n: u32,
        hedge: bool,
    ) -> Flight<'a> {
        Box::pin(async move {
            let (record, result, span) = self.attempt(call, template, target, n).await;
            (hedge, record, result, span)
        })
    }

    fn count_hedges(&self, plan: &Plan, t: &Tally) {
        let m = &self.app.metrics;
        let route = plan.route_name();
        let won = u64::from(t.won);
        if won > 0 {
            m.hedges.with_label_values(&[route, "won"]).inc();
        }
        let lost = u64::from(t.launched) - won;
        if lost > 0 {
            m.hedges.with_label_values(&[route, "lost"]).inc_by(lost);
        }
        if t.skipped > 0 {
            m.hedges
                .with_label_values(&[route, "skipped"])
                .inc_by(u64::from(t.skipped));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p95_is_at_least_200ms_and_2s_before_any_sample() {
        let ms = Duration::from_millis;
        assert_eq!(
            delay_after(HedgeAfter::Fixed(ms(300)), Some(ms(5))),
            ms(300)
        );
        assert_eq!(delay_after(HedgeAfter::P95, Some(ms(50))), ms(200));
        assert_eq!(delay_after(HedgeAfter::P95, Some(ms(900))), ms(900));
        assert_eq!(delay_after(HedgeAfter::P95, None), Duration::from_secs(2));
    }
}
