//! Routes: model patterns, chains, and the migration split with its automatic rollback.

use std::time::Duration;

use serde::Deserialize;

use super::{defaults, duration, duration_opt};

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
    /// Mid-stream resume of broken streams (opt-in).
    #[serde(default)]
    pub resume: ResumeConfig,
}

/// Mid-stream resume (PRODUCT.md §4): a chat stream that breaks after it began
/// is continued by the next upstream of the chain that declares `prefill: true`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResumeConfig {
    /// Off by default.
    #[serde(default)]
    pub enabled: bool,
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
#[derive(Debug, Clone, Deserialize, PartialEq)]
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
