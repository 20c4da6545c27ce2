//! Per-key request rate limits (`auth.keys[].rpm`), with governor's GCRA:
//! one limiter per configured key, so memory is bounded by the config.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{Quota, RateLimiter};

use crate::config::Config;

type Limiter = RateLimiter<governor::state::NotKeyed, governor::state::InMemoryState, DefaultClock>;

/// Limiters by client key index (`None` = unlimited).
pub struct Limits {
    limiters: Vec<Option<Limiter>>,
    clock: DefaultClock,
}

impl Limits {
    /// One limiter per key with an `rpm`; the burst is the per-minute figure.
    pub fn new(cfg: &Config) -> Self {
        let limiters = cfg
            .auth
            .iter()
            .flat_map(|a| a.keys.iter())
            .map(|k| {
                k.rpm
                    .and_then(NonZeroU32::new)
                    .map(|n| RateLimiter::direct(Quota::per_minute(n)))
            })
            .collect();
        Self {
            limiters,
            clock: DefaultClock::default(),
        }
    }

    /// `Err(wait)` when the key is over its limit.
    pub fn check(&self, key: usize) -> Result<(), Duration> {
        match self.limiters.get(key).and_then(Option::as_ref) {
            None => Ok(()),
            Some(l) => l
                .check()
                .map_err(|not_until| not_until.wait_time_from(self.clock.now())),
        }
    }
}

/// Shadow traffic's `max_rps` per route with a `split.shadow` (PRODUCT.md
/// §3.9), per replica: governor's lock-free GCRA, a burst of one second.
pub struct ShadowLimits {
    limiters: Vec<Option<Limiter>>,
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
        Self { limiters }
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

    #[test]
    fn refuses_beyond_rpm() {
        let cfg = Config::from_yaml(
            "listen: 127.0.0.1:0\nauth: {keys: [{name: a, key_env: A, rpm: 2}, {name: b, key_env: B}]}\nupstreams: [{name: u, base_url: 'http://127.0.0.1:1/v1'}]\nroutes: [{name: r, models: ['*'], primary: u}]\n",
        )
        .unwrap();
        let l = Limits::new(&cfg);
        assert!(l.check(0).is_ok() && l.check(0).is_ok());
        let wait = l.check(0).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(30));
        for _ in 0..100 {
            assert!(l.check(1).is_ok());
        }
    }
}
