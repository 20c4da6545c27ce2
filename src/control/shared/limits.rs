//! Fleet-wide rate limits: one token bucket per client key in Redis
//! (`{prefix}rl:{key}`, refilled at `rpm` per minute, holding at most `rpm`),
//! from which each replica takes a local allowance ([`Lease`]) sized on its
//! own recent demand. Requests spend the allowance with one atomic operation;
//! only this background refill talks to Redis. The fleet can admit no more
//! than the bucket gives out, and a busy replica asks for what it used, so
//! at steady load the fleet's total stays within a few requests of `rpm`.
//!
//! While Redis is unreachable each replica refills its own allowance at
//! `rpm / replicas last seen` (replicas announce themselves in
//! `{prefix}replicas` every second; one seen in the last 10 s counts).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{wall_ms, Link};
use crate::limit::{Lease, Limits};

/// Takes up to `want` tokens from each bucket; answers what it granted.
const TAKE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i, key in ipairs(KEYS) do
  local rpm = tonumber(ARGV[2 * i - 1])
  local want = tonumber(ARGV[2 * i])
  local b = redis.call('HMGET', key, 'tokens', 'ts')
  local tokens, ts = tonumber(b[1]), tonumber(b[2])
  if tokens == nil or ts == nil then tokens, ts = rpm, now end
  if now > ts then tokens = math.min(rpm, tokens + (now - ts) * rpm / 60000) end
  local grant = math.max(0, math.min(want, math.floor(tokens)))
  tokens = tokens - grant
  redis.call('HSET', key, 'tokens', tostring(tokens), 'ts', tostring(now))
  redis.call('PEXPIRE', key, 120000)
  out[i] = grant
end
return out
";

/// How long a replica counts as alive after its last announcement.
const REPLICA_TTL_MS: u64 = 10_000;
/// How often a replica announces itself.
const ANNOUNCE_EVERY: Duration = Duration::from_secs(1);

/// The refill's own state, kept across ticks.
pub struct Refill {
    script: redis::Script,
    id: String,
    replicas: u32,
    last: Instant,
    announced: Option<Instant>,
    /// Fractions of a request owed by the local fallback, per key.
    carry: HashMap<Arc<str>, f64>,
}

impl Default for Refill {
    fn default() -> Self {
        Self {
            script: redis::Script::new(TAKE),
            id: format!("{:016x}", fastrand::u64(..)),
            replicas: 1,
            last: Instant::now(),
            announced: None,
            carry: HashMap::new(),
        }
    }
}

impl Refill {
    /// One refill of every lease of `limits`; `interval` is how often it runs.
    pub async fn tick(&mut self, link: &Link, limits: &Limits, interval: Duration) {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        if self.announced.is_none_or(|t| now >= t + ANNOUNCE_EVERY) {
            self.announce(link).await;
            self.announced = Some(now);
        }
        let leases: Vec<&Arc<Lease>> = limits.leases().collect();
        if leases.is_empty() {
            return;
        }
        let wants: Vec<i64> = leases.iter().map(|l| want(l, interval)).collect();
        let granted = self.take(link, &leases, &wants).await;
        match granted {
            Some(g) => {
                for (lease, n) in leases.iter().zip(g) {
                    lease.grant(n.max(0));
                }
                self.carry.clear();
            }
            None => self.local(&leases, elapsed),
        }
    }

    async fn take(&self, link: &Link, leases: &[&Arc<Lease>], wants: &[i64]) -> Option<Vec<i64>> {
        let mut inv = self.script.prepare_invoke();
        for (lease, want) in leases.iter().zip(wants) {
            inv.key(link.key(&format!("rl:{}", lease.name)));
            inv.arg(lease.rpm).arg(*want);
        }
        let inv = &inv;
        link.run(|mut c| async move { inv.invoke_async(&mut c).await })
            .await
    }

    /// The fallback while Redis is unreachable: `rpm / replicas` locally.
    fn local(&mut self, leases: &[&Arc<Lease>], elapsed: Duration) {
        let replicas = f64::from(self.replicas.max(1));
        for lease in leases {
            let _ = lease.demand();
            let share = f64::from(lease.rpm) / replicas;
            let carry = self.carry.entry(lease.name.clone()).or_insert(0.0);
            *carry += share / 60.0 * elapsed.as_secs_f64();
            let whole = carry.floor();
            *carry -= whole;
            lease.grant(whole as i64);
            lease.cap((share.floor() as i64).max(1));
        }
    }

    /// Announces this replica and counts the live ones.
    async fn announce(&mut self, link: &Link) {
        let key = link.key("replicas");
        let now = wall_ms();
        let id = self.id.clone();
        let counted: Option<(i64, i64, i64)> = link
            .run(|mut c| async move {
                redis::pipe()
                    .cmd("ZADD")
                    .arg(&key)
                    .arg(now)
                    .arg(&id)
                    .cmd("ZREMRANGEBYSCORE")
                    .arg(&key)
                    .arg("-inf")
                    .arg(now.saturating_sub(REPLICA_TTL_MS))
                    .cmd("ZCARD")
                    .arg(&key)
                    .query_async(&mut c)
                    .await
            })
            .await;
        if let Some((_, _, n)) = counted {
            self.replicas = u32::try_from(n).unwrap_or(1).max(1);
        }
    }
}

/// What a lease asks for: what it was asked for during the last interval
/// (admitted and refused), at least a small reserve so that the first
/// requests after a quiet spell are not refused, minus what it still holds.
fn want(lease: &Lease, interval: Duration) -> i64 {
    let (used, refused) = lease.demand();
    let per_interval = f64::from(lease.rpm) / 60.0 * interval.as_secs_f64();
    let reserve = per_interval.ceil() as i64 + 1;
    let demand = i64::try_from(used + refused).unwrap_or(i64::MAX);
    (demand.max(reserve) - lease.held()).max(0)
}
