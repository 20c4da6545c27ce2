//! Choosing one endpoint of an upstream that has several (PRODUCT.md §3.10):
//! power of two choices over a peak-EWMA of latency weighted by requests in
//! flight, as tower's `p2c::Balance` over `PeakEwma` does (linkerd's
//! balancer): pick two at random, take the one with the lower
//! `latency × (in flight + 1)`.
//!
//! The counters are atomics the request path updates without a lock (a lost
//! update between two racing requests only blurs a statistic). The latency
//! estimate jumps to a slower sample at once (the peak) and moves towards
//! faster ones, and towards zero, only with time (`DECAY`), so an endpoint
//! that was slow a while ago is tried again eventually. An endpoint back from
//! ejection starts afresh and is admitted as a candidate with a probability
//! that grows over `slow_start`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// How fast the latency estimate forgets (time constant of the decay).
pub const DECAY: Duration = Duration::from_secs(10);
/// Estimate of an endpoint that has not answered yet (or is back from ejection).
pub const DEFAULT_RTT: Duration = Duration::from_millis(50);
/// A failed attempt counts as at least this slow (a refused connection is
/// fast, and must not make a dead endpoint look attractive).
pub const FAILURE_PENALTY: Duration = Duration::from_secs(1);
/// Smallest share of a slow-starting endpoint's chances (so it is tried at once).
const MIN_SLOW_START_WEIGHT: f64 = 0.1;

/// Live counters of one endpoint (lock-free).
#[derive(Debug)]
pub struct EndpointCounters {
    in_flight: AtomicU64,
    /// The estimate in nanoseconds, as `f64` bits.
    rtt_ns: AtomicU64,
    /// When the estimate was last set, nanoseconds since the clock's origin.
    stamp_ns: AtomicU64,
}

impl Default for EndpointCounters {
    fn default() -> Self {
        Self {
            in_flight: AtomicU64::new(0),
            rtt_ns: AtomicU64::new((DEFAULT_RTT.as_nanos() as f64).to_bits()),
            stamp_ns: AtomicU64::new(0),
        }
    }
}

impl EndpointCounters {
    /// Attempts running on this endpoint right now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts one attempt for as long as the guard lives.
    pub fn start(&self) -> EndpointFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        EndpointFlight(self)
    }

    /// The latency estimate at `now_ns`, decayed towards zero since it was set.
    pub fn estimate_ns(&self, now_ns: u64) -> f64 {
        let rtt = f64::from_bits(self.rtt_ns.load(Ordering::Relaxed));
        let stamp = self.stamp_ns.load(Ordering::Relaxed);
        rtt * decay(now_ns.saturating_sub(stamp))
    }

    /// What choosing it costs now: latency × (requests in flight + 1).
    pub fn cost(&self, now_ns: u64) -> f64 {
        self.estimate_ns(now_ns) * (self.in_flight() as f64 + 1.0)
    }

    /// One attempt's time to its answer (a failure counts as at least
    /// [`FAILURE_PENALTY`] and twice the current estimate).
    pub fn observe(&self, rtt: Duration, ok: bool, now_ns: u64) {
        let stored = f64::from_bits(self.rtt_ns.load(Ordering::Relaxed));
        let elapsed = now_ns.saturating_sub(self.stamp_ns.load(Ordering::Relaxed));
        let mut sample = rtt.as_nanos() as f64;
        if !ok {
            let floor = FAILURE_PENALTY.as_nanos() as f64;
            sample = sample.max(floor).max(2.0 * stored * decay(elapsed));
        }
        let next = if sample > stored {
            sample
        } else {
            let w = decay(elapsed);
            stored * w + sample * (1.0 - w)
        };
        self.rtt_ns.store(next.to_bits(), Ordering::Relaxed);
        self.stamp_ns.store(now_ns, Ordering::Relaxed);
    }

    /// Forgets the past: an endpoint back from ejection starts afresh.
    pub fn reset(&self, now_ns: u64) {
        self.rtt_ns
            .store((DEFAULT_RTT.as_nanos() as f64).to_bits(), Ordering::Relaxed);
        self.stamp_ns.store(now_ns, Ordering::Relaxed);
    }
}

/// Share of an estimate left after `elapsed_ns`.
fn decay(elapsed_ns: u64) -> f64 {
    (-(elapsed_ns as f64) / DECAY.as_nanos() as f64).exp()
}

/// One attempt in flight on an endpoint; dropping it ends the count.
pub struct EndpointFlight<'a>(&'a EndpointCounters);

impl Drop for EndpointFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The clock the counters' timestamps are read on (nanoseconds since start).
#[derive(Debug, Clone, Copy)]
pub struct Clock(Instant);

impl Clock {
    /// Starts at `origin`.
    pub fn new(origin: Instant) -> Self {
        Self(origin)
    }

    /// Nanoseconds since the origin at `now`.
    pub fn ns(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.0).as_nanos() as u64
    }
}

/// The weight of an endpoint in slow start (`since` it came back, over
/// `window`): from 0.1 up to 1.
pub fn slow_start_weight(since: Option<Instant>, window: Duration, now: Instant) -> f64 {
    match since {
        Some(t) if !window.is_zero() => {
            let f = now.saturating_duration_since(t).as_secs_f64() / window.as_secs_f64();
            f.clamp(MIN_SLOW_START_WEIGHT, 1.0)
        }
        _ => 1.0,
    }
}

/// Power of two choices among the endpoints in `candidates` (a bit set, not
/// empty): two distinct ones at random, each admitted with its slow-start
/// `weight`; the admitted one with the lower `cost` wins (the lower cost
/// when neither is admitted).
pub fn choose(
    candidates: u64,
    cost: impl Fn(usize) -> f64,
    weight: impl Fn(usize) -> f64,
    rng: &mut fastrand::Rng,
) -> usize {
    let k = candidates.count_ones();
    if k <= 1 {
        return candidates.trailing_zeros().min(63) as usize;
    }
    let a = rng.u32(0..k);
    let mut b = rng.u32(0..k - 1);
    if b >= a {
        b += 1;
    }
    let (a, b) = (nth_bit(candidates, a), nth_bit(candidates, b));
    let mut admitted = |i: usize| {
        let w = weight(i);
        w >= 1.0 || rng.f64() < w
    };
    let (in_a, in_b) = (admitted(a), admitted(b));
    let cheaper = if cost(b) < cost(a) { b } else { a };
    match (in_a, in_b) {
        (true, false) => a,
        (false, true) => b,
        _ => cheaper,
    }
}

/// Position of the `n`-th set bit of `mask`.
fn nth_bit(mut mask: u64, n: u32) -> usize {
    for _ in 0..n {
        mask &= mask - 1;
    }
    mask.trailing_zeros() as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn the_peak_is_taken_at_once_and_forgotten_with_time() {
        let c = EndpointCounters::default();
        c.observe(Duration::from_millis(300), true, 0);
        assert!((c.estimate_ns(0) - 300.0 * MS as f64).abs() < 1.0);
        // A fast answer right after barely moves it (decay is by time).
        c.observe(Duration::from_millis(1), true, MS);
        assert!(c.estimate_ns(MS) > 250.0 * MS as f64);
        // Ten seconds later, a third of it is left.
        let later = 10_000 * MS;
        let left = c.estimate_ns(MS + later) / c.estimate_ns(MS);
        assert!((left - (-1.0f64).exp()).abs() < 1e-6, "{left}");
    }

    #[test]
    fn a_failure_is_never_cheap_and_in_flight_weighs() {
        let c = EndpointCounters::default();
        c.observe(Duration::from_micros(50), false, 0);
        assert!(c.estimate_ns(0) >= FAILURE_PENALTY.as_nanos() as f64);
        let before = c.cost(0);
        let _g = c.start();
        assert_eq!(c.in_flight(), 1);
        assert!((c.cost(0) - 2.0 * before).abs() < 1.0);
        c.reset(0);
        assert!((c.estimate_ns(0) - DEFAULT_RTT.as_nanos() as f64).abs() < 1.0);
    }

    #[test]
    fn two_choices_prefer_the_cheaper_one() {
        let mut rng = fastrand::Rng::with_seed(7);
        let costs = [5.0, 1.0, 9.0];
        let mut hits = [0u32; 3];
        for _ in 0..3000 {
            hits[choose(0b111, |i| costs[i], |_| 1.0, &mut rng)] += 1;
        }
        // The cheapest wins every pair it is in (2 of 3 pairs), the dearest never.
        assert_eq!(hits[2], 0, "{hits:?}");
        assert!(hits[1] > 1800 && hits[1] < 2200, "{hits:?}");
        // Only one candidate: no choice.
        assert_eq!(choose(0b100, |i| costs[i], |_| 1.0, &mut rng), 2);
    }

    #[test]
    fn slow_start_admits_gradually() {
        let mut rng = fastrand::Rng::with_seed(3);
        // Endpoint 0 is cheaper but slow-starting at weight w: its share is about w.
        for (w, lo, hi) in [(0.1, 50, 160), (0.5, 420, 580), (1.0, 1000, 1000)] {
            let n = (0..1000)
                .filter(|_| {
                    choose(
                        0b11,
                        |i| i as f64,
                        |i| if i == 0 { w } else { 1.0 },
                        &mut rng,
                    ) == 0
                })
                .count();
            assert!(n >= lo && n <= hi, "weight {w}: {n} of 1000");
        }
        let t0 = Instant::now();
        let window = Duration::from_secs(30);
        assert_eq!(slow_start_weight(Some(t0), window, t0), 0.1);
        let half = slow_start_weight(Some(t0), window, t0 + Duration::from_secs(15));
        assert!((half - 0.5).abs() < 1e-9);
        assert_eq!(slow_start_weight(None, window, t0), 1.0);
    }
}
