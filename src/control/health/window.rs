//! A sliding window of outcomes in fixed time slices: bounded memory whatever the traffic.

use std::time::Duration;

use tokio::time::Instant;

const SLICES: usize = 10;
const MAX_SAMPLES: usize = 512;

/// Counts of successes and failures over the last `window`, plus recent latency samples.
#[derive(Debug, Clone)]
pub struct OutcomeWindow {
    slice: Duration,
    origin: Instant,
    slices: [(u64, u32, u32); SLICES],
    samples: std::collections::VecDeque<(Instant, Duration)>,
    window: Duration,
}

impl OutcomeWindow {
    /// A window of the given length, split in ten slices.
    pub fn new(window: Duration, now: Instant) -> Self {
        let slice = (window / SLICES as u32).max(Duration::from_millis(1));
        Self {
            slice,
            origin: now,
            slices: [(u64::MAX, 0, 0); SLICES],
            samples: Default::default(),
            window,
        }
    }

    fn epoch(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.origin).as_nanos() / self.slice.as_nanos().max(1))
            as u64
    }

    /// Records one outcome, with a latency sample when there is one.
    pub fn record(&mut self, ok: bool, latency: Option<Duration>, now: Instant) {
        let e = self.epoch(now);
        let s = &mut self.slices[(e % SLICES as u64) as usize];
        if s.0 != e {
            *s = (e, 0, 0);
        }
        if ok {
            s.1 += 1;
        } else {
            s.2 += 1;
        }
        if let Some(l) = latency {
            if self.samples.len() == MAX_SAMPLES {
                self.samples.pop_front();
            }
            self.samples.push_back((now, l));
        }
    }

    /// (total, failures) within the window.
    pub fn counts(&self, now: Instant) -> (u32, u32) {
        let e = self.epoch(now);
        self.slices
            .iter()
            .filter(|s| s.0 != u64::MAX && s.0 + (SLICES as u64) > e && s.0 <= e)
            .fold((0, 0), |(t, f), s| (t + s.1 + s.2, f + s.2))
    }

    /// Failure share in the window (0 when empty).
    pub fn error_rate(&self, now: Instant) -> f64 {
        let (t, f) = self.counts(now);
        if t == 0 {
            0.0
        } else {
            f64::from(f) / f64::from(t)
        }
    }

    /// 95th percentile of the latency samples in the window.
    pub fn p95(&self, now: Instant) -> Option<Duration> {
        let mut v: Vec<Duration> = self
            .samples
            .iter()
            .filter(|(t, _)| now.saturating_duration_since(*t) <= self.window)
            .map(|(_, d)| *d)
            .collect();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let idx = ((v.len() as f64) * 0.95).ceil() as usize;
        v.get(idx.saturating_sub(1).min(v.len() - 1)).copied()
    }

    /// Forgets everything (after a rollback or recovery).
    pub fn clear(&mut self) {
        self.slices = [(u64::MAX, 0, 0); SLICES];
        self.samples.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn old_outcomes_leave_the_window() {
        let now = Instant::now();
        let mut w = OutcomeWindow::new(Duration::from_secs(10), now);
        for _ in 0..4 {
            w.record(false, Some(Duration::from_millis(100)), now);
        }
        w.record(true, None, now);
        assert_eq!(w.counts(now), (5, 4));
        tokio::time::advance(Duration::from_secs(5)).await;
        w.record(true, None, Instant::now());
        assert_eq!(w.counts(Instant::now()), (6, 4));
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(w.counts(Instant::now()), (1, 0));
        assert_eq!(w.p95(Instant::now()), None);
    }
}
