//! Gates (PRODUCT.md §3.9): the target's cohort against the control cohort
//! (users outside the share, served by the primary) over the same sliding
//! window. Each cohort's outcome is the first attempt on its own upstream
//! (a target failure that failover hid from the client still counts), its
//! latency the whole request for a JSON answer, the time to first token for
//! a stream.

use std::time::Duration;

use tokio::time::Instant;

use super::health::window::OutcomeWindow;
use crate::config::GatesConfig;
use crate::routing::{CohortView, GateView};

/// A gate's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Both cohorts have `min_requests` and the target is within bounds.
    Pass,
    /// The target is worse than the control by more than allowed.
    Fail,
    /// Too few requests in one cohort to judge.
    Insufficient,
}

impl Verdict {
    /// The word in `/admin/status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "fail",
            Self::Insufficient => "insufficient",
        }
    }
}

/// Both cohorts of one route.
#[derive(Debug, Clone)]
pub struct GateWatch {
    cfg: GatesConfig,
    target: OutcomeWindow,
    control: OutcomeWindow,
}

impl GateWatch {
    /// Empty windows.
    pub fn new(cfg: GatesConfig, now: Instant) -> Self {
        Self {
            target: OutcomeWindow::new(cfg.window, now),
            control: OutcomeWindow::new(cfg.window, now),
            cfg,
        }
    }

    /// One request of a cohort.
    pub fn record(&mut self, target: bool, ok: bool, latency: Option<Duration>, now: Instant) {
        let w = if target {
            &mut self.target
        } else {
            &mut self.control
        };
        w.record(ok, latency.filter(|_| ok), now);
    }

    /// Forgets both windows (after a change of share: new cohorts).
    pub fn reset(&mut self) {
        self.target.clear();
        self.control.clear();
    }

    /// The verdict and the figures behind it.
    pub fn judge(&self, now: Instant) -> GateView {
        let figures = |w: &OutcomeWindow| CohortView {
            requests: w.counts(now).0,
            error_rate: w.error_rate(now),
            latency_p95_ms: w.p95(now).map(|d| d.as_secs_f64() * 1000.0),
        };
        let (t, c) = (figures(&self.target), figures(&self.control));
        let min = self.cfg.min_requests.max(1);
        let verdict = if t.requests < min || c.requests < min {
            Verdict::Insufficient
        } else if t.error_rate - c.error_rate > self.cfg.max_error_rate_increase {
            Verdict::Fail
        } else {
            match (t.latency_p95_ms, c.latency_p95_ms) {
                (Some(tp), Some(cp)) if cp > 0.0 && tp / cp > self.cfg.max_latency_ratio => {
                    Verdict::Fail
                }
                _ => Verdict::Pass,
            }
        };
        GateView {
            verdict: verdict.as_str(),
            target: t,
            control: c,
        }
    }

    /// Why a failed gate failed, with its figures (for the alert).
    pub fn explain(&self, v: &GateView) -> String {
        let ms = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.0} ms"));
        format!(
            "gate failed: target error rate {:.1}% vs control {:.1}% (max increase {:.1} points), \
             target p95 {} vs control p95 {} (max ratio {}), over {} target and {} control requests",
            v.target.error_rate * 100.0,
            v.control.error_rate * 100.0,
            self.cfg.max_error_rate_increase * 100.0,
            ms(v.target.latency_p95_ms),
            ms(v.control.latency_p95_ms),
            self.cfg.max_latency_ratio,
            v.target.requests,
            v.control.requests,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> GatesConfig {
        GatesConfig {
            window: Duration::from_secs(60),
            min_requests: 10,
            max_error_rate_increase: 0.05,
            max_latency_ratio: 1.5,
        }
    }

    fn feed(g: &mut GateWatch, target: bool, n: u32, fail_every: u32, ms: u64) {
        for i in 0..n {
            let ok = fail_every == 0 || i % fail_every != 0;
            g.record(target, ok, Some(Duration::from_millis(ms)), Instant::now());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn compares_cohorts_not_absolutes() {
        let mut g = GateWatch::new(cfg(), Instant::now());
        feed(&mut g, true, 9, 0, 100);
        feed(&mut g, false, 50, 0, 100);
        assert_eq!(g.judge(Instant::now()).verdict, "insufficient");
        // Both slow and both failing 10%: alike, so it passes.
        feed(&mut g, true, 20, 10, 900);
        feed(&mut g, false, 50, 10, 900);
        assert_eq!(g.judge(Instant::now()).verdict, "pass");
        g.reset();
        feed(&mut g, true, 20, 3, 100);
        feed(&mut g, false, 20, 0, 100);
        let v = g.judge(Instant::now());
        assert_eq!(v.verdict, "fail", "{v:?}");
        assert!(g.explain(&v).contains("error rate"));
        g.reset();
        feed(&mut g, true, 20, 0, 500);
        feed(&mut g, false, 20, 0, 100);
        assert_eq!(g.judge(Instant::now()).verdict, "fail", "5x slower");
    }
}
