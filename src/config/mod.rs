//! YAML → typed config, validation, and secrets resolved from env vars.
//!
//! Every struct denies unknown fields, so a misspelled key is an error at start
//! (with its line) instead of a silently ignored setting. Every optional field
//! has a documented default in the README's config reference.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

mod admin;
mod defaults;
mod durations;
mod fleet;
mod policy;
mod route;
mod secrets;
mod upstream;
mod validate;

pub use admin::{AdminConfig, AuthConfig, ClientKeyConfig};
pub use durations::{byte_size, duration, duration_opt};
pub use fleet::{RedisConfig, ReloadConfig, ShutdownConfig};
pub use policy::{
    AlertsConfig, AuditConfig, FailoverConfig, LogConfig, LogFormat, OtelConfig, OutlierConfig,
    WebSocketConfig,
};
pub use route::{
    AutoRollbackConfig, GatesConfig, HedgeAfter, HedgeConfig, RampConfig, ResumeConfig,
    RouteConfig, ShadowConfig, SplitConfig,
};
pub use secrets::{resolve_env, EnvLookup, Secret, Secrets};
pub use upstream::{
    AuthHeader, EndpointConfig, HealthConfig, PriceConfig, SimulateConfig, TimeoutsConfig,
    UpstreamConfig,
};
pub use validate::{MAX_ENDPOINTS, MAX_HEDGES};

/// A config problem that names the key (and line when known) and what is expected.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn err(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

/// The whole file. Field names are the contract of PRODUCT.md §3.2.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Public listener. Default `127.0.0.1:8080`.
    #[serde(default = "defaults::listen")]
    pub listen: SocketAddr,
    /// Admin listener and its token. Default: `127.0.0.1:9090`, token from `TURNOUT_ADMIN_TOKEN`.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Where runtime overrides (split %, rollbacks) are persisted. Default `turnout-state.json`.
    #[serde(default = "defaults::state_path")]
    pub state_path: PathBuf,
    /// Client keys. Required unless `disabled: true`.
    pub auth: Option<AuthConfig>,
    /// Largest accepted request body. Default 32 MiB.
    #[serde(default = "defaults::max_body_bytes")]
    pub max_body_bytes: usize,
    /// The providers.
    pub upstreams: Vec<UpstreamConfig>,
    /// Model patterns → chains of upstreams.
    pub routes: Vec<RouteConfig>,
    /// The route whose primary (and, for GET/HEAD/DELETE, fallbacks) serve
    /// pass-through requests (PRODUCT.md §3.3). Default: the first route.
    #[serde(default)]
    pub passthrough_route: Option<String>,
    /// How a request walks its chain.
    #[serde(default)]
    pub failover: FailoverConfig,
    /// Passive health: when live traffic ejects an upstream.
    #[serde(default)]
    pub outlier: OutlierConfig,
    /// Optional alert webhook.
    #[serde(default)]
    pub alerts: AlertsConfig,
    /// Log format and filter.
    #[serde(default)]
    pub log: LogConfig,
    /// WebSocket chat limits.
    #[serde(default)]
    pub websocket: WebSocketConfig,
    /// The audit log (PRODUCT.md §3.11): one JSON line per finished request. Default off.
    #[serde(default)]
    pub audit: Option<AuditConfig>,
    /// Browser origins allowed by CORS on the public listener. Default none (CORS off).
    #[serde(default)]
    pub cors_allow_origins: Vec<String>,
    /// Shared state for a fleet of replicas. Default none (one process).
    pub redis: Option<RedisConfig>,
    /// Hot reload of this file.
    #[serde(default)]
    pub reload: ReloadConfig,
    /// Graceful shutdown.
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    /// Request tracing (OpenTelemetry). Default none (off).
    #[serde(default)]
    pub otel: Option<OtelConfig>,
}

impl Config {
    /// Parses YAML text and validates it; errors name the key and line.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let de = serde_yaml::Deserializer::from_str(text);
        let cfg: Config =
            serde_path_to_error::deserialize(de).map_err(|e| err(describe_path_error(&e)))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| err(format!("cannot read config {}: {e}", path.display())))?;
        Self::from_yaml(&text).map_err(|e| err(format!("{}: {e}", path.display())))
    }

    /// Every env var the config names, with the key that names it.
    pub fn env_vars(&self) -> Vec<(String, String)> {
        let mut out = vec![("admin.token_env".to_string(), self.admin.token_env.clone())];
        if let Some(auth) = &self.auth {
            for (i, k) in auth.keys.iter().enumerate() {
                out.push((format!("auth.keys[{i}].key_env"), k.key_env.clone()));
            }
        }
        for (i, u) in self.upstreams.iter().enumerate() {
            if let Some(v) = &u.api_key_env {
                out.push((format!("upstreams[{i}].api_key_env"), v.clone()));
            }
        }
        if let Some(r) = &self.redis {
            out.push(("redis.url_env".to_string(), r.url_env.clone()));
        }
        if let Some(o) = &self.otel {
            out.push(("otel.endpoint_env".to_string(), o.endpoint_env.clone()));
        }
        out
    }
}

/// Names the full key (`upstreams[0].health.interval`), which serde_yaml
/// alone stops one level short of for a value its own deserializer rejects.
fn describe_path_error(e: &serde_path_to_error::Error<serde_yaml::Error>) -> String {
    let msg = describe_yaml_error(e.inner());
    let path = e.path().to_string();
    if path.is_empty() || path == "." {
        return msg;
    }
    // serde_yaml prefixes the part of the path it knows ("upstreams[0].health: ...").
    let rest = match msg.split_once(": ") {
        Some((prefix, rest)) if path.starts_with(prefix) => rest,
        _ => msg.as_str(),
    };
    format!("{path}: {rest}")
}

/// Turns serde_yaml's message into "KEY: problem (line L, column C)".
fn describe_yaml_error(e: &serde_yaml::Error) -> String {
    let msg = e.to_string();
    match e.location() {
        Some(loc) if !msg.contains("line") => {
            format!("{msg} (line {}, column {})", loc.line(), loc.column())
        }
        _ => msg,
    }
}

#[cfg(test)]
mod tests;
