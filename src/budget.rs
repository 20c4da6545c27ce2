//! The retry budget: retries stay a small fraction of recent traffic, so an
//! outage never multiplies upstream load or cost.
//!
//! Every request deposits `ratio` of a token; every retry withdraws one. A floor
//! of `min_per_second` tokens per second lets a quiet proxy still retry. The
//! balance is capped at `CAP` tokens so that a long healthy period cannot store
//! up a retry storm. Lock-free: two atomics, in milli-tokens.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Most tokens the budget can hold.
pub const CAP: i64 = 10;
const MILLI: i64 = 1000;

/// Shared by every request of the process.
#[derive(Debug)]
pub struct RetryBudget {
    deposit: i64,
    floor_per_sec: i64,
    balance: AtomicI64,
    origin: Instant,
    last_refill_ms: AtomicU64,
}

impl RetryBudget {
    /// `ratio` of requests may be retried, plus `min_per_second` retries per second.
    pub fn new(ratio: f64, min_per_second: u32) -> Self {
        let floor = i64::from(min_per_second) * MILLI;
        Self {
            deposit: (ratio * MILLI as f64).round() as i64,
            floor_per_sec: floor,
            balance: AtomicI64::new(floor.min(CAP * MILLI)),
            origin: Instant::now(),
            last_refill_ms: AtomicU64::new(0),
        }
    }

    fn add(&self, milli: i64) {
        let _ = self
            .balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some((b + milli).min(CAP * MILLI))
            });
    }

    /// Called once per client request.
    pub fn deposit(&self) {
        self.add(self.deposit);
    }

    fn refill(&self) {
        let now_ms = self.origin.elapsed().as_millis() as u64;
        let last = self.last_refill_ms.load(Ordering::Relaxed);
        if now_ms <= last {
            return;
        }
        if self
            .last_refill_ms
            .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            let earned = (now_ms - last) as i64 * self.floor_per_sec / 1000;
            self.add(earned.min(self.floor_per_sec));
        }
    }

    /// Takes one retry token; false when the budget is spent.
    pub fn try_withdraw(&self) -> bool {
        self.try_withdraw_keeping(0)
    }

    /// Takes one retry token only if `reserve` more stay after it (a retry
    /// on the same upstream must not spend the token that moving on needs).
    pub fn try_withdraw_keeping(&self, reserve: i64) -> bool {
        self.refill();
        let need = (1 + reserve.max(0)) * MILLI;
        self.balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                (b >= need).then_some(b - MILLI)
            })
            .is_ok()
    }

    /// Whole tokens available now (for tests and status).
    pub fn available(&self) -> i64 {
        self.refill();
        self.balance.load(Ordering::Relaxed) / MILLI
    }
}

/// Exponential backoff with full jitter before the `n`th try (n ≥ 1) on an upstream already tried.
pub fn backoff(n: u32, base: Duration, max: Duration) -> Duration {
    let exp = base
        .saturating_mul(1u32 << n.saturating_sub(1).min(16))
        .min(max);
    exp.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retries_are_a_fraction_of_requests() {
        let b = RetryBudget::new(0.2, 0);
        let mut retries = 0;
        for _ in 0..1000 {
            b.deposit();
            if b.try_withdraw() {
                retries += 1;
            }
        }
        assert_eq!(retries, 200);
    }

    #[tokio::test(start_paused = true)]
    async fn floor_refills_over_time_and_is_capped() {
        let b = RetryBudget::new(0.0, 2);
        assert!(b.try_withdraw() && b.try_withdraw());
        assert!(!b.try_withdraw());
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(b.try_withdraw());
        assert!(!b.try_withdraw());
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(b.available() <= CAP);
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_grows_then_caps_in_paused_time() {
        let (base, max) = (Duration::from_millis(50), Duration::from_secs(2));
        for n in 1..12 {
            let start = Instant::now();
            tokio::time::sleep(backoff(n, base, max)).await;
            let waited = start.elapsed();
            let ceiling = base.saturating_mul(1 << (n - 1)).min(max);
            assert!(
                waited <= ceiling + Duration::from_millis(1),
                "try {n}: {waited:?} > {ceiling:?}"
            );
        }
    }

    #[test]
    fn backoff_is_bounded() {
        for n in 1..40 {
            let d = backoff(n, Duration::from_millis(50), Duration::from_secs(2));
            assert!(d <= Duration::from_secs(2));
        }
    }
}
