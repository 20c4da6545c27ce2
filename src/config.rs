//! YAML → typed config, validation, and secrets resolved from env vars.
//!
//! Every struct denies unknown fields, so a misspelled key is an error at start
//! (with its line) instead of a silently ignored setting. Every optional field
//! has a documented default in the README's config reference.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

mod defaults;
mod secrets;

pub use secrets::{resolve_env, EnvLookup, Secret, Secrets};

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
    /// Browser origins allowed by CORS on the public listener. Default none (CORS off).
    #[serde(default)]
    pub cors_allow_origins: Vec<String>,
}

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

/// One provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Unique name, used in routes, headers and metrics.
    pub name: String,
    /// e.g. `https://api.openai.com/v1`. Optional only with `simulate`.
    pub base_url: Option<String>,
    /// Env var holding this upstream's key; absent = no `Authorization` sent.
    pub api_key_env: Option<String>,
    /// Client model name → this upstream's model name.
    #[serde(default)]
    pub model_map: BTreeMap<String, String>,
    /// Active health probe.
    #[serde(default)]
    pub health: HealthConfig,
    /// Per-upstream timeouts.
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    /// USD per 1M tokens by upstream model name (`*` = any other model).
    #[serde(default)]
    pub pricing: BTreeMap<String, PriceConfig>,
    /// Serve this upstream from a built-in simulated provider inside the process.
    pub simulate: Option<SimulateConfig>,
}

/// Price of one model, USD per 1M tokens.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    /// Prompt tokens.
    pub input: f64,
    /// Completion tokens.
    pub output: f64,
}

/// Settings of a built-in simulated upstream (see `turnout mock --help`).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SimulateConfig {
    /// Delay before response headers. Default 0.
    #[serde(default, with = "duration_opt")]
    pub latency: Option<Duration>,
    /// Delay before the first streamed chunk. Default 0.
    #[serde(default, with = "duration_opt")]
    pub ttft: Option<Duration>,
    /// Chunks per streamed answer. Default 8.
    pub chunks: Option<u32>,
    /// Delay between chunks. Default 0.
    #[serde(default, with = "duration_opt")]
    pub chunk_delay: Option<Duration>,
    /// Fraction (0–1) of requests answered with a 500. Default 0.
    pub fail_rate: Option<f64>,
    /// Model names it lists on `/models`. Default a few well-known names.
    pub models: Option<Vec<String>>,
}

/// Active probe of an upstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Probe at all. Default true.
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// Relative to `base_url`. Default `/models`.
    #[serde(default = "defaults::health_path")]
    pub path: String,
    /// Default 5s.
    #[serde(default = "defaults::health_interval", with = "duration")]
    pub interval: Duration,
    /// Default 2s; must not exceed `interval`.
    #[serde(default = "defaults::health_timeout", with = "duration")]
    pub timeout: Duration,
    /// Consecutive failed probes that make it unhealthy. Default 3.
    #[serde(default = "defaults::unhealthy_threshold")]
    pub unhealthy_threshold: u32,
    /// Consecutive good probes that make it healthy again. Default 2.
    #[serde(default = "defaults::healthy_threshold")]
    pub healthy_threshold: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            path: defaults::health_path(),
            interval: defaults::health_interval(),
            timeout: defaults::health_timeout(),
            unhealthy_threshold: defaults::unhealthy_threshold(),
            healthy_threshold: defaults::healthy_threshold(),
        }
    }
}

/// Timeouts of calls to one upstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsConfig {
    /// TCP + TLS connect. Default 5s.
    #[serde(default = "defaults::connect", with = "duration")]
    pub connect: Duration,
    /// Non-streaming: until response headers, i.e. the whole generation. Default 5m.
    #[serde(default = "defaults::headers", with = "duration")]
    pub headers: Duration,
    /// Streaming: until the first SSE event. Default 30s.
    #[serde(default = "defaults::first_token", with = "duration")]
    pub first_token: Duration,
    /// Streaming: longest silence between chunks. Default 60s.
    #[serde(default = "defaults::idle", with = "duration")]
    pub idle: Duration,
    /// Whole exchange, body included. Default 10m.
    #[serde(default = "defaults::total", with = "duration")]
    pub total: Duration,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        Self {
            connect: defaults::connect(),
            headers: defaults::headers(),
            first_token: defaults::first_token(),
            idle: defaults::idle(),
            total: defaults::total(),
        }
    }
}

/// A model pattern list and its chain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Unique name (admin API path, metrics label).
    pub name: String,
    /// Glob patterns (`*`, `?`) on the client's model name.
    pub models: Vec<String>,
    /// Upstream tried first.
    pub primary: String,
    /// Upstreams tried next, in order.
    #[serde(default)]
    pub fallbacks: Vec<String>,
    /// Share of users sent to another upstream first.
    pub split: Option<SplitConfig>,
}

/// A migration share (§3.2).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitConfig {
    /// Upstream that receives the share.
    pub target: String,
    /// 0–100, two decimals.
    pub percentage: f64,
    /// Automatic rollback of this share.
    #[serde(default)]
    pub auto_rollback: AutoRollbackConfig,
}

/// When the target misbehaves, the share goes back to 0 by itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoRollbackConfig {
    /// Default true.
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// Sliding window of the target's outcomes. Default 60s.
    #[serde(default = "defaults::rollback_window", with = "duration")]
    pub window: Duration,
    /// Fewest target requests in the window before judging. Default 20.
    #[serde(default = "defaults::rollback_min_requests")]
    pub min_requests: u32,
    /// Error rate (0–1) beyond which the share is rolled back. Default 0.2.
    #[serde(default = "defaults::rollback_error_rate")]
    pub max_error_rate: f64,
    /// p95 time to first byte beyond which the share is rolled back. Default none.
    #[serde(default, with = "duration_opt")]
    pub max_p95_ttfb: Option<Duration>,
}

impl Default for AutoRollbackConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window: defaults::rollback_window(),
            min_requests: defaults::rollback_min_requests(),
            max_error_rate: defaults::rollback_error_rate(),
            max_p95_ttfb: None,
        }
    }
}

/// How a request walks its chain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailoverConfig {
    /// Most upstream attempts for one request. Default 3.
    #[serde(default = "defaults::max_attempts")]
    pub max_attempts: u32,
    /// Retries allowed as a fraction of recent requests. Default 0.1.
    #[serde(default = "defaults::budget_ratio")]
    pub budget_ratio: f64,
    /// Retries allowed per second whatever the traffic. Default 2.
    #[serde(default = "defaults::budget_min_per_second")]
    pub budget_min_per_second: u32,
    /// First backoff before a second try on the same upstream. Default 50ms.
    #[serde(default = "defaults::backoff_base", with = "duration")]
    pub backoff_base: Duration,
    /// Longest backoff. Default 2s.
    #[serde(default = "defaults::backoff_max", with = "duration")]
    pub backoff_max: Duration,
    /// Longest `Retry-After` honoured. Default 60s.
    #[serde(default = "defaults::retry_after_max", with = "duration")]
    pub retry_after_max: Duration,
}

impl Default for FailoverConfig {
    fn default() -> Self {
        Self {
            max_attempts: defaults::max_attempts(),
            budget_ratio: defaults::budget_ratio(),
            budget_min_per_second: defaults::budget_min_per_second(),
            backoff_base: defaults::backoff_base(),
            backoff_max: defaults::backoff_max(),
            retry_after_max: defaults::retry_after_max(),
        }
    }
}

/// Passive health from live traffic.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierConfig {
    /// Consecutive failures that eject. Default 5.
    #[serde(default = "defaults::consecutive_failures")]
    pub consecutive_failures: u32,
    /// Ejection time × number of ejections. Default 30s.
    #[serde(default = "defaults::base_ejection", with = "duration")]
    pub base_ejection: Duration,
    /// Cap of the ejection time. Default 5m.
    #[serde(default = "defaults::max_ejection", with = "duration")]
    pub max_ejection: Duration,
    /// Error rate (0–1) over the window that ejects. Default 0.5.
    #[serde(default = "defaults::outlier_error_rate")]
    pub error_rate: f64,
    /// Sliding window for the error rate. Default 30s.
    #[serde(default = "defaults::outlier_window", with = "duration")]
    pub window: Duration,
    /// Fewest requests in the window before the rate counts. Default 20.
    #[serde(default = "defaults::outlier_min_requests")]
    pub min_requests: u32,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: defaults::consecutive_failures(),
            base_ejection: defaults::base_ejection(),
            max_ejection: defaults::max_ejection(),
            error_rate: defaults::outlier_error_rate(),
            window: defaults::outlier_window(),
            min_requests: defaults::outlier_min_requests(),
        }
    }
}

/// Alert webhook.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Slack-compatible webhook; absent = no alerts sent (still logged and counted).
    pub webhook_url: Option<String>,
    /// Per POST. Default 5s.
    #[serde(default = "defaults::alert_timeout", with = "duration")]
    pub timeout: Duration,
    /// Alerts waiting to be sent; beyond it they are dropped and counted. Default 256.
    #[serde(default = "defaults::alert_queue")]
    pub queue: usize,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            webhook_url: None,
            timeout: defaults::alert_timeout(),
            queue: defaults::alert_queue(),
        }
    }
}

/// Logs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`. Default text.
    #[serde(default)]
    pub format: LogFormat,
    /// `RUST_LOG`-style filter, overridden by `RUST_LOG`. Default `info`.
    #[serde(default = "defaults::log_level")]
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: defaults::log_level(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// WebSocket chat limits (§3.5).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSocketConfig {
    /// Largest frame/message. Default 1 MiB; beyond it the socket closes with 1009.
    #[serde(default = "defaults::ws_max_message")]
    pub max_message_bytes: usize,
    /// Requests running at once on one socket. Default 8.
    #[serde(default = "defaults::ws_max_in_flight")]
    pub max_in_flight: usize,
    /// Turns kept in a conversation. Default 50.
    #[serde(default = "defaults::ws_max_turns")]
    pub max_turns: usize,
    /// Bytes of content kept in a conversation. Default 256 KiB.
    #[serde(default = "defaults::ws_max_conversation_bytes")]
    pub max_conversation_bytes: usize,
    /// Ping period. Default 25s.
    #[serde(default = "defaults::ws_ping", with = "duration")]
    pub ping_interval: Duration,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: defaults::ws_max_message(),
            max_in_flight: defaults::ws_max_in_flight(),
            max_turns: defaults::ws_max_turns(),
            max_conversation_bytes: defaults::ws_max_conversation_bytes(),
            ping_interval: defaults::ws_ping(),
        }
    }
}

/// `"250ms"`, `"5s"`, `"2m"` (humantime), or a bare number of seconds.
pub mod duration {
    use super::*;

    /// serde `with` entry point.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Secs(f64),
        }
        match Raw::deserialize(d)? {
            Raw::Text(s) => humantime::parse_duration(s.trim()).map_err(|e| {
                serde::de::Error::custom(format!(
                    "invalid duration {s:?} ({e}); expected e.g. \"250ms\", \"5s\", \"2m\""
                ))
            }),
            Raw::Secs(n) if n >= 0.0 && n.is_finite() => Ok(Duration::from_secs_f64(n)),
            Raw::Secs(n) => Err(serde::de::Error::custom(format!(
                "invalid duration {n}; expected e.g. \"250ms\", \"5s\", \"2m\""
            ))),
        }
    }
}

/// Optional duration.
pub mod duration_opt {
    use super::*;

    /// serde `with` entry point.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::duration::deserialize(d).map(Some)
    }
}

impl Config {
    /// Parses YAML text and validates it; errors name the key and line.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let cfg: Config = serde_yaml::from_str(text).map_err(|e| err(describe_yaml_error(&e)))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| err(format!("cannot read config {}: {e}", path.display())))?;
        Self::from_yaml(&text).map_err(|e| err(format!("{}: {e}", path.display())))
    }

    /// Cross-field rules that serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_auth()?;
        let names = self.validate_upstreams()?;
        self.validate_routes(&names)?;
        if self.failover.max_attempts == 0 {
            return Err(err("failover.max_attempts: expected at least 1"));
        }
        if !(0.0..=1.0).contains(&self.failover.budget_ratio) {
            return Err(err("failover.budget_ratio: expected a number from 0 to 1"));
        }
        if !(0.0..=1.0).contains(&self.outlier.error_rate) {
            return Err(err("outlier.error_rate: expected a number from 0 to 1"));
        }
        if self.outlier.consecutive_failures == 0 {
            return Err(err("outlier.consecutive_failures: expected at least 1"));
        }
        if let Some(url) = &self.alerts.webhook_url {
            check_url("alerts.webhook_url", url)?;
        }
        if self.max_body_bytes == 0 {
            return Err(err("max_body_bytes: expected a positive number of bytes"));
        }
        Ok(())
    }

    fn validate_auth(&self) -> Result<(), ConfigError> {
        let Some(auth) = &self.auth else {
            return Err(err(
                "auth: missing; list client keys under auth.keys, or write `auth: {disabled: true}` \
                 (loopback listeners only)",
            ));
        };
        if auth.disabled && !auth.keys.is_empty() {
            return Err(err("auth: `disabled: true` with keys listed; choose one"));
        }
        if !auth.disabled && auth.keys.is_empty() {
            return Err(err(
                "auth.keys: expected at least one key (or `auth: {disabled: true}`)",
            ));
        }
        if auth.disabled && !self.listen.ip().is_loopback() {
            return Err(err(format!(
                "listen: {} is not a loopback address, and auth is disabled: \
                 refusing to run an open proxy (add auth.keys or bind 127.0.0.1)",
                self.listen
            )));
        }
        let mut seen = HashSet::new();
        for (i, k) in auth.keys.iter().enumerate() {
            if !seen.insert(k.name.as_str()) {
                return Err(err(format!(
                    "auth.keys[{i}].name: duplicate name {:?}",
                    k.name
                )));
            }
            if k.rpm == Some(0) {
                return Err(err(format!(
                    "auth.keys[{i}].rpm: expected a positive number (omit it for no limit)"
                )));
            }
        }
        Ok(())
    }

    fn validate_upstreams(&self) -> Result<HashSet<&str>, ConfigError> {
        if self.upstreams.is_empty() {
            return Err(err("upstreams: expected at least one upstream"));
        }
        let mut names = HashSet::new();
        for (i, u) in self.upstreams.iter().enumerate() {
            let at = format!("upstreams[{i}]");
            if u.name.is_empty() || !names.insert(u.name.as_str()) {
                return Err(err(format!(
                    "{at}.name: expected a unique, non-empty name (got {:?})",
                    u.name
                )));
            }
            match (&u.base_url, &u.simulate) {
                (Some(url), _) => check_url(&format!("{at}.base_url"), url)?,
                (None, Some(_)) => {}
                (None, None) => {
                    return Err(err(format!(
                        "{at}.base_url: missing (required unless `simulate` is set)"
                    )))
                }
            }
            if u.health.timeout > u.health.interval {
                return Err(err(format!(
                    "{at}.health.timeout: {:?} exceeds health.interval {:?}; expected timeout <= interval",
                    u.health.timeout, u.health.interval
                )));
            }
            if u.health.interval.is_zero() || u.health.timeout.is_zero() {
                return Err(err(format!(
                    "{at}.health: interval and timeout must be positive"
                )));
            }
            if u.health.unhealthy_threshold == 0 || u.health.healthy_threshold == 0 {
                return Err(err(format!("{at}.health: thresholds must be at least 1")));
            }
            if let Some(sim) = &u.simulate {
                if let Some(r) = sim.fail_rate {
                    if !(0.0..=1.0).contains(&r) {
                        return Err(err(format!(
                            "{at}.simulate.fail_rate: expected a number from 0 to 1"
                        )));
                    }
                }
            }
            for (model, p) in &u.pricing {
                if p.input < 0.0 || p.output < 0.0 || !p.input.is_finite() || !p.output.is_finite()
                {
                    return Err(err(format!(
                        "{at}.pricing.{model}: expected non-negative USD per 1M tokens"
                    )));
                }
            }
        }
        Ok(names)
    }

    fn validate_routes(&self, upstreams: &HashSet<&str>) -> Result<(), ConfigError> {
        if self.routes.is_empty() {
            return Err(err("routes: expected at least one route"));
        }
        let mut names = HashSet::new();
        let known = |at: String, name: &str| {
            if upstreams.contains(name) {
                Ok(())
            } else {
                Err(err(format!(
                    "{at}: unknown upstream {name:?}; expected one of the names under `upstreams`"
                )))
            }
        };
        for (i, r) in self.routes.iter().enumerate() {
            let at = format!("routes[{i}]");
            if r.name.is_empty() || !names.insert(r.name.as_str()) {
                return Err(err(format!(
                    "{at}.name: expected a unique, non-empty name (got {:?})",
                    r.name
                )));
            }
            if r.models.is_empty() {
                return Err(err(format!("{at}.models: expected at least one pattern")));
            }
            known(format!("{at}.primary"), &r.primary)?;
            let mut chain = HashSet::from([r.primary.as_str()]);
            for (j, f) in r.fallbacks.iter().enumerate() {
                known(format!("{at}.fallbacks[{j}]"), f)?;
                if !chain.insert(f.as_str()) {
                    return Err(err(format!(
                        "{at}.fallbacks[{j}]: {f:?} appears twice in the chain"
                    )));
                }
            }
            if let Some(s) = &r.split {
                known(format!("{at}.split.target"), &s.target)?;
                if !(0.0..=100.0).contains(&s.percentage) {
                    return Err(err(format!(
                        "{at}.split.percentage: expected a number from 0 to 100"
                    )));
                }
                if s.target == r.primary {
                    return Err(err(format!(
                        "{at}.split.target: the target must differ from the primary"
                    )));
                }
                if !(0.0..=1.0).contains(&s.auto_rollback.max_error_rate) {
                    return Err(err(format!(
                        "{at}.split.auto_rollback.max_error_rate: expected a number from 0 to 1"
                    )));
                }
            }
        }
        Ok(())
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
        out
    }
}

fn check_url(key: &str, url: &str) -> Result<(), ConfigError> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        _ => Err(err(format!(
            "{key}: {url:?} is not an http(s) URL; expected e.g. \"https://api.openai.com/v1\""
        ))),
    }
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
