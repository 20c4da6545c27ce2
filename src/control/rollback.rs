//! Automatic rollback: watches the split target's outcomes on a route and
//! says when its error rate or p95 time to first byte crosses the thresholds.

use std::time::Duration;

use tokio::time::Instant;

use super::health::window::OutcomeWindow;
use crate::config::AutoRollbackConfig;

/// The target's recent outcomes on one route.
#[derive(Debug, Clone)]
pub struct RollbackWatch {
    cfg: AutoRollbackConfig,
    window: OutcomeWindow,
    /// A fleet judges the error rate on the fleet's totals
    /// ([`RollbackWatch::judge_totals`]); only the latency stays local.
    fleet: bool,
}

impl RollbackWatch {
    /// A watch with the route's thresholds.
    pub fn new(cfg: AutoRollbackConfig, now: Instant) -> Self {
        let window = OutcomeWindow::new(cfg.window, now);
        Self {
            cfg,
            window,
            fleet: false,
        }
    }

    /// The same watch, its error rate judged on the fleet's totals.
    pub fn for_fleet(mut self) -> Self {
        self.fleet = true;
        self
    }

    /// Outcomes of the target over the window (`scope` says whose, for the
    /// reason): the reason when the share must go to 0.
    pub fn judge_totals(&self, total: u64, failed: u64, scope: &str) -> Option<String> {
        if !self.cfg.enabled || total < u64::from(self.cfg.min_requests) || failed == 0 {
            return None;
        }
        let rate = failed as f64 / total as f64;
        (rate >= self.cfg.max_error_rate).then(|| {
            format!(
                "{scope} error rate {:.0}% over {total} requests >= {:.0}%",
                rate * 100.0,
                self.cfg.max_error_rate * 100.0
            )
        })
    }

    /// This replica's own outcomes in the window: (requests, failures).
    pub fn local_counts(&self, now: Instant) -> (u64, u64) {
        let (total, failed) = self.window.counts(now);
        (u64::from(total), u64::from(failed))
    }

    /// Records one outcome of the target; returns the reason when the share must go to 0.
    pub fn observe(&mut self, ok: bool, ttfb: Option<Duration>, now: Instant) -> Option<String> {
        if !self.cfg.enabled {
            return None;
        }
        self.window.record(ok, ttfb, now);
        let (total, failed) = self.window.counts(now);
        if total < self.cfg.min_requests {
            return None;
        }
        let rate = f64::from(failed) / f64::from(total);
        if !self.fleet && rate >= self.cfg.max_error_rate && failed > 0 {
            return Some(format!(
                "error rate {:.0}% over {total} requests >= {:.0}%",
                rate * 100.0,
                self.cfg.max_error_rate * 100.0
            ));
        }
        if let (Some(max), Some(p95)) = (self.cfg.max_p95_ttfb, self.window.p95(now)) {
            if p95 > max {
                return Some(format!("p95 time to first byte {p95:?} > {max:?}"));
            }
        }
        None
    }

    /// Forgets the window (after a change of share).
    pub fn reset(&mut self) {
        self.window.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn fires_on_error_rate_after_min_requests() {
        let cfg = AutoRollbackConfig {
            min_requests: 10,
            max_error_rate: 0.3,
            ..Default::default()
        };
        let mut w = RollbackWatch::new(cfg, Instant::now());
        let mut fired = None;
        for i in 0..10 {
            fired = w.observe(i % 2 == 0, None, Instant::now());
            if i < 9 {
                assert!(fired.is_none());
            }
        }
        assert!(fired.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn fires_on_slow_target() {
        let cfg = AutoRollbackConfig {
            min_requests: 5,
            max_p95_ttfb: Some(Duration::from_millis(500)),
            ..Default::default()
        };
        let mut w = RollbackWatch::new(cfg, Instant::now());
        let mut fired = None;
        for _ in 0..5 {
            fired = w.observe(true, Some(Duration::from_secs(1)), Instant::now());
        }
        assert!(fired.unwrap().contains("p95"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_fleet_judges_the_error_rate_on_its_totals() {
        let cfg = AutoRollbackConfig {
            min_requests: 10,
            max_error_rate: 0.3,
            ..Default::default()
        };
        let mut w = RollbackWatch::new(cfg, Instant::now()).for_fleet();
        for _ in 0..20 {
            assert!(w.observe(false, None, Instant::now()).is_none());
        }
        assert!(w.judge_totals(9, 9, "fleet").is_none(), "too few requests");
        assert!(w.judge_totals(30, 6, "fleet").is_none(), "20 % < 30 %");
        let why = w.judge_totals(30, 9, "fleet").unwrap();
        assert!(why.contains("fleet error rate 30%"), "{why}");
        assert_eq!(w.local_counts(Instant::now()), (20, 20));
    }
}
