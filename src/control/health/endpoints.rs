//! Health of an upstream made of its endpoints' health (PRODUCT.md §3.10):
//! each endpoint has its own probes and ejection; the upstream is usable
//! while one endpoint is. An upstream with a plain `base_url` has one
//! endpoint, and then this is exactly that endpoint's health.

use std::time::Duration;

use tokio::time::Instant;

use super::state::UpstreamHealth;
use crate::config::{HealthConfig, OutlierConfig};
use crate::routing::HealthState;

/// The health of one upstream's endpoints.
#[derive(Debug, Clone)]
pub struct EndpointsHealth {
    /// One per endpoint, in config order.
    pub each: Vec<UpstreamHealth>,
    /// When each endpoint last came back to healthy (slow start).
    back_since: Vec<Option<Instant>>,
}

impl EndpointsHealth {
    /// `n` endpoints (at least one), all healthy.
    pub fn new(n: usize, health: &HealthConfig, outlier: &OutlierConfig, now: Instant) -> Self {
        let n = n.max(1);
        Self {
            each: (0..n)
                .map(|_| UpstreamHealth::new(health, outlier, now))
                .collect(),
            back_since: vec![None; n],
        }
    }

    /// The upstream's state: healthy while one endpoint is; else unhealthy
    /// while one is only failing probes; else ejected.
    pub fn state(&self) -> HealthState {
        let any = |s: HealthState| self.each.iter().any(|h| h.state() == s);
        if any(HealthState::Healthy) {
            HealthState::Healthy
        } else if any(HealthState::Unhealthy) {
            HealthState::Unhealthy
        } else {
            HealthState::Ejected
        }
    }

    /// When the upstream is ejected: the first of its endpoints' deadlines.
    pub fn ejected_until(&self) -> Option<Instant> {
        if self.state() != HealthState::Ejected {
            return None;
        }
        self.each.iter().filter_map(|h| h.ejected_until()).min()
    }

    /// A 429 cools the whole upstream (one key, one account): the latest deadline.
    pub fn cooling_until(&self) -> Option<Instant> {
        self.each.iter().filter_map(|h| h.cooling_until).max()
    }

    /// The best last probe latency.
    pub fn probe_latency(&self) -> Option<Duration> {
        self.each.iter().filter_map(|h| h.probe_latency).min()
    }

    /// Live error rate over all endpoints.
    pub fn error_rate(&self, now: Instant) -> f64 {
        let (t, f) = self.counts(now);
        if t == 0 {
            0.0
        } else {
            f64::from(f) / f64::from(t)
        }
    }

    /// (total, failures) within the outlier window, over all endpoints.
    pub fn counts(&self, now: Instant) -> (u32, u32) {
        self.each.iter().fold((0, 0), |(t, f), h| {
            let (a, b) = h.window.counts(now);
            (t + a, f + b)
        })
    }

    /// EWMA of time to first byte, seconds: the best endpoint's.
    pub fn ewma_ttfb(&self) -> Option<f64> {
        self.each
            .iter()
            .filter_map(|h| h.ewma_ttfb)
            .min_by(|a, b| a.total_cmp(b))
    }

    /// p95 time to the commit point: the best endpoint's (requests mostly go there).
    pub fn p95(&self, now: Instant) -> Option<Duration> {
        self.each.iter().filter_map(|h| h.window.p95(now)).min()
    }

    /// Remembers a flip of endpoint `e` from `before`; true when it just came
    /// back to healthy (its slow start begins).
    pub fn note_flip(&mut self, e: usize, before: HealthState, now: Instant) -> bool {
        let back = before != HealthState::Healthy
            && self
                .each
                .get(e)
                .is_some_and(|h| h.state() == HealthState::Healthy);
        if let Some(slot) = self.back_since.get_mut(e) {
            *slot = if back { Some(now) } else { None };
        }
        back
    }

    /// When endpoint `e` came back, while still within `window`.
    pub fn slow_start_since(&self, e: usize, window: Duration, now: Instant) -> Option<Instant> {
        self.back_since
            .get(e)
            .copied()
            .flatten()
            .filter(|t| now.saturating_duration_since(*t) < window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::health::Verdict;

    #[tokio::test(start_paused = true)]
    async fn the_upstream_is_healthy_while_one_endpoint_is() {
        let o = OutlierConfig {
            consecutive_failures: 1,
            ..Default::default()
        };
        let h = HealthConfig::default();
        let now = Instant::now();
        let mut s = EndpointsHealth::new(2, &h, &o, now);
        assert!(s.each[0].on_outcome(Verdict::Fail, None, &o, now));
        assert_eq!(s.each[0].state(), HealthState::Ejected);
        assert_eq!(s.state(), HealthState::Healthy);
        assert_eq!(s.ejected_until(), None);
        assert!(s.each[1].on_outcome(Verdict::Fail, None, &o, now));
        assert_eq!(s.state(), HealthState::Ejected);
        assert!(s.ejected_until().is_some());
        assert_eq!(s.counts(now), (2, 2));
        // Back from ejection: slow start from then, for the window only.
        tokio::time::advance(o.base_ejection + Duration::from_secs(1)).await;
        let now = Instant::now();
        s.each[0].on_probe(true, Duration::ZERO, &h, now);
        assert!(s.note_flip(0, HealthState::Ejected, now));
        let w = Duration::from_secs(30);
        assert_eq!(s.slow_start_since(0, w, now), Some(now));
        assert_eq!(s.slow_start_since(0, w, now + w), None);
        assert_eq!(s.state(), HealthState::Healthy);
    }
}
