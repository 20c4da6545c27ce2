//! Shared state for a fleet of replicas, in Redis (PRODUCT.md §3.8).
//!
//! What is shared: split shares and rollbacks ([`store`], one hash, each
//! route's latest change stamped with its time, so the later change wins),
//! per-key rate limits ([`limits`], one token bucket per key, from which
//! each replica leases a local allowance), per-key usage ([`usage`]), and
//! the automatic-rollback windows ([`windows`]).
//! Health, the retry budget and connection pools stay local.
//!
//! Nothing on the request path talks to Redis: one background task
//! ([`sync`]) reads the fleet's shares into the control task and refills the
//! leases every `redis.sync_interval`. When Redis is unreachable every
//! replica serves on what it last knew, rate limits fall back to
//! `rpm / replicas last seen`, `turnout_shared_state_up` is 0 and an alert
//! goes out; admin changes apply locally and are written when Redis returns.

pub mod limits;
pub mod store;
pub mod sync;
pub mod usage;
pub mod windows;

use std::future::Future;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::alerts::{Alert, Alerts};
use crate::config::{RedisConfig, Secret};
use crate::metrics::Metrics;

pub use store::RedisStore;

/// Reachability as last seen: not yet known, up, down.
const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// The connection to Redis and its reachability.
pub struct Link {
    conn: ConnectionManager,
    prefix: String,
    timeout: Duration,
    /// Describes the server without its password, for logs.
    describe: String,
    state: AtomicU8,
    metrics: Metrics,
    alerts: Alerts,
}

impl Link {
    /// Parses the URL and prepares a connection (made on first use, and
    /// remade after a failure). The error names the variable, never the URL,
    /// which may carry a password.
    pub fn new(
        cfg: &RedisConfig,
        url: &Secret,
        metrics: Metrics,
        alerts: Alerts,
    ) -> Result<Self, String> {
        crate::upstream::install_crypto();
        let bad = |e: redis::RedisError| {
            format!(
                "redis.url_env: the URL in {} is not usable ({:?}); expected e.g. redis://host:6379/0",
                cfg.url_env,
                e.kind()
            )
        };
        let client = redis::Client::open(url.0.as_str()).map_err(bad)?;
        let describe = format!("{}", client.get_connection_info().addr());
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.timeout))
            .set_response_timeout(Some(cfg.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(bad)?;
        metrics
            .expose_shared_state()
            .map_err(|e| format!("metrics: {e}"))?;
        Ok(Self {
            conn,
            prefix: cfg.key_prefix.clone(),
            timeout: cfg.timeout,
            describe,
            state: AtomicU8::new(UNKNOWN),
            metrics,
            alerts,
        })
    }

    /// `key_prefix` + `name`.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Runs one exchange with Redis under the timeout, and records whether
    /// Redis answered (a flip is logged, counted and alerted once).
    pub async fn run<T, F, Fut>(&self, f: F) -> Option<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let result = tokio::time::timeout(self.timeout, f(self.conn.clone())).await;
        let err = match result {
            Ok(Ok(v)) => {
                self.mark(true, "");
                return Some(v);
            }
            Ok(Err(e)) if !is_unreachable(&e) => {
                // Redis answered with an error: it is up, the command is wrong.
                self.mark(true, "");
                tracing::error!(redis = %self.describe, "redis command failed: {e}");
                return None;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {:?}", self.timeout),
        };
        self.mark(false, &err);
        None
    }

    fn mark(&self, up: bool, why: &str) {
        let new = if up { UP } else { DOWN };
        let old = self.state.swap(new, Ordering::Relaxed);
        self.metrics.shared_state_up.set(i64::from(up));
        if old == new || (old == UNKNOWN && up) {
            return;
        }
        let (event, text) = if up {
            (
                "shared_state_up",
                format!("Turnout: shared state (Redis at {}) reachable again; local changes written back", self.describe),
            )
        } else {
            (
                "shared_state_down",
                format!(
                    "Turnout: shared state (Redis at {}) unreachable ({why}); serving on the last known state, rate limits local",
                    self.describe
                ),
            )
        };
        self.alerts.send(Alert::new(
            event,
            text,
            None,
            None,
            if up { "up" } else { "down" },
        ));
    }
}

/// A connection-level failure (as opposed to Redis refusing a command).
fn is_unreachable(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
}

/// Milliseconds since the Unix epoch.
pub(crate) fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
