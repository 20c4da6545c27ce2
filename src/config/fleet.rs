//! Running as a fleet (PRODUCT.md §3.8): the shared store, hot reload, and
//! graceful shutdown.

use std::time::Duration;

use serde::Deserialize;

use super::{defaults, duration};

/// Shared state in Redis; absent = one process, state in `state_path`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// Env var holding the URL (`redis://host:6379/0`, `rediss://` for TLS,
    /// `unix:///path/redis.sock`). Default `TURNOUT_REDIS_URL`.
    #[serde(default = "defaults::redis_url_env")]
    pub url_env: String,
    /// Prefix of every key Turnout writes. Default `turnout:`.
    #[serde(default = "defaults::redis_key_prefix")]
    pub key_prefix: String,
    /// How often a replica reads the shared shares and refills its rate-limit
    /// allowances. Default 100ms.
    #[serde(default = "defaults::redis_sync_interval", with = "duration")]
    pub sync_interval: Duration,
    /// Longest wait for one Redis command (connects included). Default 1s.
    #[serde(default = "defaults::redis_timeout", with = "duration")]
    pub timeout: Duration,
}

/// Hot reload of the config file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadConfig {
    /// Poll the config file and reload when its content changes. Default false.
    #[serde(default)]
    pub watch: bool,
    /// How often the file is read when `watch` is on. Default 2s.
    #[serde(default = "defaults::reload_interval", with = "duration")]
    pub interval: Duration,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        Self {
            watch: false,
            interval: defaults::reload_interval(),
        }
    }
}

/// What SIGTERM / SIGINT do.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// `/ready` is 503 while the listeners keep accepting, so that load
    /// balancers notice. Default 5s.
    #[serde(default = "defaults::shutdown_grace", with = "duration")]
    pub grace: Duration,
    /// Longest wait for requests and streams in flight. Default 30s.
    #[serde(default = "defaults::shutdown_drain", with = "duration")]
    pub drain: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            grace: defaults::shutdown_grace(),
            drain: defaults::shutdown_drain(),
        }
    }
}
