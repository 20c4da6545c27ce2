//! Health of one upstream: active probe streaks, passive ejection, Retry-After cooling.
//!
//! Pure state, driven by the control task; every method that can flip the
//! state returns whether it did, so the caller logs, counts and alerts once.

use std::time::Duration;

use tokio::time::Instant;

use super::window::OutcomeWindow;
use crate::config::{HealthConfig, OutlierConfig};
use crate::outcome::Outcome;
use crate::routing::HealthState;

/// Why a live request counted as a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The upstream served the request.
    Ok,
    /// The upstream failed it (5xx, timeout, connection, garbage, its own 401/403/404).
    Fail,
    /// 429: not a health failure, but it cools the upstream down.
    Throttled(Option<Duration>),
}

impl Verdict {
    /// What an attempt's outcome says about health; a 429's `Retry-After` is
    /// honoured up to `retry_after_max`.
    pub fn of(outcome: Outcome, retry_after: Option<Duration>, retry_after_max: Duration) -> Self {
        if outcome.is_healthy() {
            Self::Ok
        } else if outcome.is_throttled() {
            Self::Throttled(retry_after.map(|d| d.min(retry_after_max)))
        } else {
            Self::Fail
        }
    }
}

/// Health of one upstream.
#[derive(Debug, Clone)]
pub struct UpstreamHealth {
    probes_enabled: bool,
    probe_healthy: bool,
    probe_streak: u32,
    /// Last probe latency.
    pub probe_latency: Option<Duration>,
    consecutive_failures: u32,
    /// Live outcomes over the outlier window.
    pub window: OutcomeWindow,
    ejections: u32,
    ejected_until: Option<Instant>,
    /// Set while a 429's Retry-After keeps it out of rotation.
    pub cooling_until: Option<Instant>,
    /// EWMA of time to response headers, seconds.
    pub ewma_ttfb: Option<f64>,
}

impl UpstreamHealth {
    /// Starts healthy: traffic flows until evidence says otherwise.
    pub fn new(health: &HealthConfig, outlier: &OutlierConfig, now: Instant) -> Self {
        Self {
            probes_enabled: health.enabled,
            probe_healthy: true,
            probe_streak: 0,
            probe_latency: None,
            consecutive_failures: 0,
            window: OutcomeWindow::new(outlier.window, now),
            ejections: 0,
            ejected_until: None,
            cooling_until: None,
            ewma_ttfb: None,
        }
    }

    /// The state shown in status and used by routing.
    pub fn state(&self) -> HealthState {
        if self.ejected_until.is_some() {
            HealthState::Ejected
        } else if !self.probe_healthy {
            HealthState::Unhealthy
        } else {
            HealthState::Healthy
        }
    }

    /// Deadline of the current ejection.
    pub fn ejected_until(&self) -> Option<Instant> {
        self.ejected_until
    }

    /// An active probe result. An expired ejection ends on the first good probe.
    pub fn on_probe(
        &mut self,
        ok: bool,
        latency: Duration,
        cfg: &HealthConfig,
        now: Instant,
    ) -> bool {
        let before = self.state();
        self.probe_latency = Some(latency);
        if ok == self.probe_healthy {
            self.probe_streak = 0;
        } else {
            self.probe_streak += 1;
            let needed = if ok {
                cfg.healthy_threshold
            } else {
                cfg.unhealthy_threshold
            };
            if self.probe_streak >= needed {
                self.probe_healthy = ok;
                self.probe_streak = 0;
            }
        }
        if ok && self.ejected_until.is_some_and(|t| now >= t) {
            self.end_ejection();
        }
        before != self.state()
    }

    /// Time passing: without probes, an ejection simply expires.
    pub fn on_tick(&mut self, now: Instant) -> bool {
        if !self.probes_enabled && self.ejected_until.is_some_and(|t| now >= t) {
            self.end_ejection();
            return true;
        }
        if self.cooling_until.is_some_and(|t| now >= t) {
            self.cooling_until = None;
        }
        false
    }

    fn end_ejection(&mut self) {
        self.ejected_until = None;
        self.consecutive_failures = 0;
        self.window.clear();
    }

    /// A live outcome. Returns true when it ejected the upstream.
    pub fn on_outcome(
        &mut self,
        verdict: Verdict,
        ttfb: Option<Duration>,
        cfg: &OutlierConfig,
        now: Instant,
    ) -> bool {
        if let Some(t) = ttfb {
            let s = t.as_secs_f64();
            self.ewma_ttfb = Some(self.ewma_ttfb.map_or(s, |e| e * 0.8 + s * 0.2));
        }
        match verdict {
            Verdict::Ok => {
                self.consecutive_failures = 0;
                self.window.record(true, ttfb, now);
                false
            }
            Verdict::Throttled(retry_after) => {
                let until = now + retry_after.unwrap_or(Duration::from_secs(1));
                self.cooling_until = Some(self.cooling_until.map_or(until, |t| t.max(until)));
                false
            }
            Verdict::Fail => {
                self.consecutive_failures += 1;
                self.window.record(false, ttfb, now);
                let (total, _) = self.window.counts(now);
                let by_streak = self.consecutive_failures >= cfg.consecutive_failures;
                let by_rate =
                    total >= cfg.min_requests && self.window.error_rate(now) >= cfg.error_rate;
                if (by_streak || by_rate) && self.ejected_until.is_none() {
                    self.eject(cfg, now);
                    return true;
                }
                false
            }
        }
    }

    /// Ejects for base × number of ejections (capped); a deadline only grows.
    fn eject(&mut self, cfg: &OutlierConfig, now: Instant) {
        self.ejections = self.ejections.saturating_add(1);
        let time = cfg
            .base_ejection
            .saturating_mul(self.ejections)
            .min(cfg.max_ejection);
        let until = now + time;
        self.ejected_until = Some(self.ejected_until.map_or(until, |t| t.max(until)));
        self.consecutive_failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfgs() -> (HealthConfig, OutlierConfig) {
        let h = HealthConfig {
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            ..Default::default()
        };
        let o = OutlierConfig {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(25),
            ..Default::default()
        };
        (h, o)
    }

    #[tokio::test(start_paused = true)]
    async fn probes_flip_after_thresholds() {
        let (h, o) = cfgs();
        let mut s = UpstreamHealth::new(&h, &o, Instant::now());
        let ms = Duration::from_millis(3);
        assert!(!s.on_probe(false, ms, &h, Instant::now()));
        assert!(!s.on_probe(false, ms, &h, Instant::now()));
        assert!(s.on_probe(false, ms, &h, Instant::now()));
        assert_eq!(s.state(), HealthState::Unhealthy);
        assert!(!s.on_probe(true, ms, &h, Instant::now()));
        assert!(s.on_probe(true, ms, &h, Instant::now()));
        assert_eq!(s.state(), HealthState::Healthy);
    }

    #[tokio::test(start_paused = true)]
    async fn ejection_grows_and_needs_a_probe_to_end() {
        let (h, o) = cfgs();
        let mut s = UpstreamHealth::new(&h, &o, Instant::now());
        let fail = |s: &mut UpstreamHealth| s.on_outcome(Verdict::Fail, None, &o, Instant::now());
        assert!(!fail(&mut s));
        assert!(!fail(&mut s));
        assert!(fail(&mut s));
        let first = s.ejected_until().unwrap() - Instant::now();
        assert_eq!(first, Duration::from_secs(10));
        // A good probe before the deadline does not end it.
        tokio::time::advance(Duration::from_secs(5)).await;
        s.on_probe(true, Duration::ZERO, &h, Instant::now());
        assert_eq!(s.state(), HealthState::Ejected);
        // After the deadline, time alone does not end it either (probes are on).
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(!s.on_tick(Instant::now()));
        assert_eq!(s.state(), HealthState::Ejected);
        assert!(s.on_probe(true, Duration::ZERO, &h, Instant::now()));
        assert_eq!(s.state(), HealthState::Healthy);
        // Second ejection lasts twice as long; the third is capped.
        for _ in 0..3 {
            fail(&mut s);
        }
        assert_eq!(
            s.ejected_until().unwrap() - Instant::now(),
            Duration::from_secs(20)
        );
        tokio::time::advance(Duration::from_secs(21)).await;
        s.on_probe(true, Duration::ZERO, &h, Instant::now());
        for _ in 0..3 {
            fail(&mut s);
        }
        assert_eq!(
            s.ejected_until().unwrap() - Instant::now(),
            Duration::from_secs(25)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn error_rate_ejects_with_enough_requests() {
        let (h, mut o) = cfgs();
        o.consecutive_failures = 100;
        o.min_requests = 10;
        o.error_rate = 0.5;
        let mut s = UpstreamHealth::new(&h, &o, Instant::now());
        let mut ejected = false;
        for i in 0..10 {
            let v = if i % 2 == 1 {
                Verdict::Fail
            } else {
                Verdict::Ok
            };
            ejected |= s.on_outcome(v, None, &o, Instant::now());
        }
        assert!(ejected);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_cools_down() {
        let (h, o) = cfgs();
        let mut s = UpstreamHealth::new(&h, &o, Instant::now());
        s.on_outcome(
            Verdict::Throttled(Some(Duration::from_secs(2))),
            None,
            &o,
            Instant::now(),
        );
        assert!(s.cooling_until.is_some());
        assert_eq!(s.state(), HealthState::Healthy);
        tokio::time::advance(Duration::from_secs(3)).await;
        s.on_tick(Instant::now());
        assert!(s.cooling_until.is_none());
    }
}
