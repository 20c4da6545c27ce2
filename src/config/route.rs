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
    /// Hedged requests (off when absent).
    pub hedge: Option<HedgeConfig>,
    /// Mid-stream resume of broken streams (opt-in).
    #[serde(default)]
    pub resume: ResumeConfig,
}

/// `routes[].hedge` (§3.10): when the first attempt has not committed after
/// `after`, the same request also starts on the next upstream of the chain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HedgeConfig {
    /// A duration (`2s`), or `p95`: the upstream's current p95 time to the
    /// commit point (at least 200 ms).
    pub after: HedgeAfter,
    /// Most hedges per request. Default 1.
    #[serde(default = "defaults::hedge_max")]
    pub max: u32,
}

/// When a hedge starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HedgeAfter {
    /// A fixed delay.
    Fixed(Duration),
    /// The upstream's current p95 time to the commit point.
    P95,
}

impl<'de> Deserialize<'de> for HedgeAfter {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Secs(f64),
        }
        let bad = |what: String| {
            serde::de::Error::custom(format!(
                "invalid hedge.after {what}; expected a duration like \"2s\" or \"p95\""
            ))
        };
        match Raw::deserialize(d)? {
            Raw::Text(s) if s.trim().eq_ignore_ascii_case("p95") => Ok(Self::P95),
            Raw::Text(s) => humantime::parse_duration(s.trim())
                .map(Self::Fixed)
                .map_err(|_| bad(format!("{s:?}"))),
            Raw::Secs(n) if n >= 0.0 && n.is_finite() => {
                Ok(Self::Fixed(Duration::from_secs_f64(n)))
            }
            Raw::Secs(n) => Err(bad(n.to_string())),
        }
    }
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
    /// Steps the share climbs by itself (PRODUCT.md §3.9). Default none.
    #[serde(default)]
    pub ramp: Option<RampConfig>,
    /// The target's cohort compared with the control cohort. Default none.
    #[serde(default)]
    pub gates: Option<GatesConfig>,
    /// Copies of control requests sent to the target in the background. Default none.
    #[serde(default)]
    pub shadow: Option<ShadowConfig>,
}

/// The ramp: the share moves up one step after `bake` with the gates passing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RampConfig {
    /// Shares in percent, rising, the last usually 100.
    pub steps: Vec<f64>,
    /// Time at each step before the next. Default 30m.
    #[serde(default = "defaults::ramp_bake", with = "duration")]
    pub bake: Duration,
}

/// Gates: the target's cohort against the control cohort over the same window.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatesConfig {
    /// Sliding window of both cohorts' outcomes. Default 5m.
    #[serde(default = "defaults::gates_window", with = "duration")]
    pub window: Duration,
    /// Fewest requests of each cohort in the window before judging. Default 100.
    #[serde(default = "defaults::gates_min_requests")]
    pub min_requests: u32,
    /// Target error rate minus control error rate beyond which the gate fails. Default 0.02.
    #[serde(default = "defaults::gates_error_increase")]
    pub max_error_rate_increase: f64,
    /// Target p95 / control p95 beyond which the gate fails (streams: time to first token). Default 1.5.
    #[serde(default = "defaults::gates_latency_ratio")]
    pub max_latency_ratio: f64,
}

/// Shadow traffic: a share of the control cohort also sent to the target.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowConfig {
    /// Share of the control cohort's users copied (sticky), 0–100.
    pub percentage: f64,
    /// Most shadow requests per second from this replica. Default 5.
    #[serde(default = "defaults::shadow_max_rps")]
    pub max_rps: u32,
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
