//! Process-wide policies: failover, outlier ejection, alerts, logs, WebSocket limits, tracing.

use std::time::Duration;

use serde::Deserialize;

use super::{defaults, duration};

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
    /// Retries on the same upstream after a 5xx or a connection error before
    /// the response starts, before moving on (timeouts move on at once). Default 1.
    #[serde(default = "defaults::same_upstream_retries")]
    pub same_upstream_retries: u32,
    /// A 429 whose `Retry-After` is at most this is waited out and retried on
    /// the same upstream; a longer one moves on at once. Default 0 (never wait).
    #[serde(default, with = "duration")]
    pub retry_after_wait_max: Duration,
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
            same_upstream_retries: defaults::same_upstream_retries(),
            retry_after_wait_max: Duration::ZERO,
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
    /// Model of a request that names none, on a socket opened without
    /// `?model=`. Default none (such a request gets an `error`).
    #[serde(default)]
    pub default_model: Option<String>,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: defaults::ws_max_message(),
            max_in_flight: defaults::ws_max_in_flight(),
            max_turns: defaults::ws_max_turns(),
            max_conversation_bytes: defaults::ws_max_conversation_bytes(),
            ping_interval: defaults::ws_ping(),
            default_model: None,
        }
    }
}

/// Request tracing with OpenTelemetry (PRODUCT.md §3.11). The section's
/// absence, or its endpoint variable unset, leaves tracing off.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtelConfig {
    /// Env var holding the OTLP/HTTP endpoint (`http://collector:4318`;
    /// `/v1/traces` is appended). Default `OTEL_EXPORTER_OTLP_ENDPOINT`.
    #[serde(default = "defaults::otel_endpoint_env")]
    pub endpoint_env: String,
    /// Share (0–1) of new traces recorded; a client's own sampling decision
    /// (its `traceparent`) is kept. Default 1.0.
    #[serde(default = "defaults::otel_sample_ratio")]
    pub sample_ratio: f64,
    /// The spans' `service.name`. Default `turnout`.
    #[serde(default = "defaults::otel_service_name")]
    pub service_name: String,
}

/// The audit log (PRODUCT.md §3.11): one JSON line per finished request,
/// rotated by size. Off unless the `audit:` key is present.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The file written. Default `turnout-audit.jsonl`.
    #[serde(default = "defaults::audit_path")]
    pub path: std::path::PathBuf,
    /// Size beyond which the file is rotated (`path.1`, `path.2`, ...). Default 100MB.
    #[serde(default = "defaults::audit_max_bytes", with = "super::byte_size")]
    pub max_bytes: u64,
    /// Rotated files kept. Default 5.
    #[serde(default = "defaults::audit_keep")]
    pub keep: usize,
    /// Lines waiting for the writer; beyond it a line is dropped and counted
    /// in `turnout_audit_dropped_total`. Default 10000: the writer takes the
    /// queue every `audit::BATCH_INTERVAL` (50 ms) under load, and 10,000
    /// lines are 100 ms of 100,000 requests a second.
    #[serde(default = "defaults::audit_queue")]
    pub queue: usize,
}
