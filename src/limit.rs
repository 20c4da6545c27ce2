//! Per-key request rate limits (`auth.keys[].rpm`).
//!
//! One process: governor's GCRA, one limiter per configured key, so memory is
//! bounded by the config. A fleet (Redis configured): each key has a
//! [`Lease`], a local allowance that requests take from with one atomic
//! operation; a background task (`control::shared::limits`) refills it from
//! the fleet-wide bucket in Redis, or, while Redis is unreachable, at
//! `rpm / replicas last seen`. No request ever waits on the network.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{Quota, RateLimiter};
use prometheus::IntCounter;

use crate::config::Config;

type Limiter = RateLimiter<governor::state::NotKeyed, governor::state::InMemoryState, DefaultClock>;

/// Limiters by client key index (`None` = unlimited).
pub struct Limits {
    limiters: Vec<Option<Limiter>>,
    clock: DefaultClock,
    /// Fleet mode: the keys' leases, by key index.
    leases: Option<Vec<Option<Arc<Lease>>>>,
}

impl Limits {
    /// One limiter per key with an `rpm`; the burst is the per-minute figure.
    pub fn new(cfg: &Config) -> Self {
        let limiters = keys(cfg)
            .map(|(_, rpm)| {
                rpm.and_then(NonZeroU32::new)
                    .map(|n| RateLimiter::direct(Quota::per_minute(n)))
            })
            .collect();
        Self {
            limiters,
            clock: DefaultClock::default(),
            leases: None,
        }
    }

    /// Fleet mode: one lease per key with an `rpm`. A key of `previous` with
    /// the same name and `rpm` keeps its lease (and the allowance it holds),
    /// so a reload does not refuse requests until the next refill.
    pub fn fleet(cfg: &Config, previous: Option<&Limits>) -> Self {
        let old = previous.map(|p| p.leases().cloned().collect::<Vec<_>>());
        let leases = keys(cfg)
            .map(|(name, rpm)| {
                let rpm = rpm.filter(|&n| n > 0)?;
                let kept = old
                    .iter()
                    .flatten()
                    .find(|l| &*l.name == name && l.rpm == rpm);
                Some(
                    kept.cloned()
                        .unwrap_or_else(|| Arc::new(Lease::new(name, rpm))),
                )
            })
            .collect();
        Self {
            limiters: Vec::new(),
            clock: DefaultClock::default(),
            leases: Some(leases),
        }
    }

    /// The leases of a fleet (none in one-process mode).
    pub fn leases(&self) -> impl Iterator<Item = &Arc<Lease>> {
        self.leases.iter().flatten().flatten()
    }

    /// `Err(wait)` when the key is over its limit.
    pub fn check(&self, key: usize) -> Result<(), Duration> {
        if let Some(leases) = &self.leases {
            return match leases.get(key).and_then(Option::as_ref) {
                None => Ok(()),
                Some(l) if l.take() => Ok(()),
                Some(l) => Err(Duration::from_secs_f64(60.0 / f64::from(l.rpm))),
            };
        }
        match self.limiters.get(key).and_then(Option::as_ref) {
            None => Ok(()),
            Some(l) => l
                .check()
                .map_err(|not_until| not_until.wait_time_from(self.clock.now())),
        }
    }
}

fn keys(cfg: &Config) -> impl Iterator<Item = (&str, Option<u32>)> {
    cfg.auth
        .iter()
        .flat_map(|a| a.keys.iter())
        .map(|k| (k.name.as_str(), k.rpm))
}

/// One key's local allowance in a fleet: what this replica may admit before
/// the background task refills it.
#[derive(Debug)]
pub struct Lease {
    /// The key's configured name (the fleet-wide bucket is named after it).
    pub name: Arc<str>,
    /// Requests per minute across the fleet.
    pub rpm: u32,
    tokens: AtomicI64,
    used: AtomicU64,
    refused: AtomicU64,
}

impl Lease {
    /// An empty lease (the first refill fills it).
    pub fn new(name: &str, rpm: u32) -> Self {
        Self {
            name: name.into(),
            rpm,
            tokens: AtomicI64::new(0),
            used: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// Takes one request's allowance; false when none is left.
    fn take(&self) -> bool {
        let took = self
            .tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                (t > 0).then_some(t - 1)
            })
            .is_ok();
        let counter = if took { &self.used } else { &self.refused };
        counter.fetch_add(1, Ordering::Relaxed);
        took
    }

    /// Requests admitted and refused since the last call (the demand the
    /// next refill is sized on).
    pub fn demand(&self) -> (u64, u64) {
        (
            self.used.swap(0, Ordering::Relaxed),
            self.refused.swap(0, Ordering::Relaxed),
        )
    }

    /// Allowance held right now.
    pub fn held(&self) -> i64 {
        self.tokens.load(Ordering::Acquire)
    }

    /// Adds `n` to the allowance.
    pub fn grant(&self, n: i64) {
        self.tokens.fetch_add(n, Ordering::AcqRel);
    }

    /// Lowers the allowance to at most `max` (the local fallback's burst).
    pub fn cap(&self, max: i64) {
        let _ = self
            .tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                (t > max).then_some(max)
            });
    }
}

/// Shadow traffic's `max_rps` per route with a `split.shadow` (PRODUCT.md
/// §3.9), per replica: governor's lock-free GCRA, a burst of one second.
pub struct ShadowLimits {
    limiters: Vec<Option<Limiter>>,
    /// Each route's `dropped` counter, resolved at its first refusal: at
    /// `percentage: 100` nearly every request of a busy route is refused,
    /// and a label lookup per request was a measurable share of it.
    dropped: Vec<OnceLock<IntCounter>>,
}

impl ShadowLimits {
    /// One limiter per route with a shadow.
    pub fn new(cfg: &Config) -> Self {
        let limiters = cfg
            .routes
            .iter()
            .map(|r| {
                let rps = r.split.as_ref()?.shadow.as_ref()?.max_rps;
                NonZeroU32::new(rps).map(|n| RateLimiter::direct(Quota::per_second(n)))
            })
            .collect();
        Self {
            limiters,
            dropped: cfg.routes.iter().map(|_| OnceLock::new()).collect(),
        }
    }

    /// Counts a refusal on route `i`; `counter` resolves its series once.
    pub fn count_dropped(&self, route: usize, counter: impl FnOnce() -> IntCounter) {
        if let Some(c) = self.dropped.get(route) {
            c.get_or_init(counter).inc();
        }
    }

    /// Whether route `i` may send one more shadow now (false without a
    /// shadow, or with `max_rps: 0`).
    pub fn allow(&self, route: usize) -> bool {
        self.limiters
            .get(route)
            .and_then(Option::as_ref)
            .is_some_and(|l| l.check().is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: &str = "listen: 127.0.0.1:0\nauth: {keys: [{name: a, key_env: A, rpm: 2}, {name: b, key_env: B}]}\nupstreams: [{name: u, base_url: 'http://127.0.0.1:1/v1'}]\nroutes: [{name: r, models: ['*'], primary: u}]\n";

    #[test]
    fn refuses_beyond_rpm() {
        let cfg = Config::from_yaml(CFG).unwrap();
        let l = Limits::new(&cfg);
        assert!(l.check(0).is_ok() && l.check(0).is_ok());
        let wait = l.check(0).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(30));
        for _ in 0..100 {
            assert!(l.check(1).is_ok());
        }
    }

    #[test]
    fn a_lease_admits_what_it_was_granted_and_survives_a_reload() {
        let cfg = Config::from_yaml(CFG).unwrap();
        let l = Limits::fleet(&cfg, None);
        assert!(l.check(0).is_err(), "an empty lease refuses");
        assert!(l.check(1).is_ok(), "a key without rpm is unlimited");
        let lease = l.leases().next().unwrap().clone();
        lease.grant(2);
        assert!(l.check(0).is_ok() && l.check(0).is_ok());
        assert_eq!(l.check(0).unwrap_err(), Duration::from_secs(30));
        assert_eq!(lease.demand(), (2, 2));
        assert_eq!(lease.demand(), (0, 0));
        lease.grant(5);
        lease.cap(3);
        assert_eq!(lease.held(), 3);
        let again = Limits::fleet(&cfg, Some(&l));
        assert!(Arc::ptr_eq(again.leases().next().unwrap(), &lease));
        let changed = Config::from_yaml(&CFG.replace("rpm: 2", "rpm: 3")).unwrap();
        let other = Limits::fleet(&changed, Some(&l));
        assert!(!Arc::ptr_eq(other.leases().next().unwrap(), &lease));
    }
}
