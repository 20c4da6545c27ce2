//! Admin listener and client authentication settings.

use std::net::SocketAddr;

use serde::Deserialize;

use super::defaults;

/// Admin API listener (§3.4).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Default `127.0.0.1:9090`.
    #[serde(default = "defaults::admin_listen")]
    pub listen: SocketAddr,
    /// Env var holding the bearer token; unset variable = admin API answers 403.
    #[serde(default = "defaults::admin_token_env")]
    pub token_env: String,
    /// Ask for the token on `/metrics` too. Default false.
    #[serde(default)]
    pub metrics_require_token: bool,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: defaults::admin_listen(),
            token_env: defaults::admin_token_env(),
            metrics_require_token: false,
        }
    }
}

/// Client authentication.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Must be written out to run without client keys (loopback only).
    #[serde(default)]
    pub disabled: bool,
    /// The client keys.
    #[serde(default)]
    pub keys: Vec<ClientKeyConfig>,
}

/// One client key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientKeyConfig {
    /// Shown in logs, metrics and `/v1/account`; also the split key of last resort.
    pub name: String,
    /// Env var holding the key itself.
    pub key_env: String,
    /// Requests per minute; absent = unlimited.
    pub rpm: Option<u32>,
}
