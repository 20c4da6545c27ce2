//! One provider: address, key, model names, probes, timeouts, prices, simulation.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::{defaults, duration, duration_opt};

/// One provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Unique name, used in routes, headers and metrics.
    pub name: String,
    /// e.g. `https://api.openai.com/v1`. Optional only with `simulate` or `endpoints`.
    pub base_url: Option<String>,
    /// Several equivalent entry points of this provider (same key, same
    /// models), instead of `base_url`: each request picks one by measured
    /// latency (PRODUCT.md §3.10).
    pub endpoints: Option<Vec<EndpointConfig>>,
    /// An endpoint back from ejection (or from failing probes) gets its share
    /// of traffic gradually over this long. Default 30s.
    #[serde(default = "defaults::slow_start", with = "duration")]
    pub slow_start: Duration,
    /// Env var holding this upstream's key; absent = no key sent.
    pub api_key_env: Option<String>,
    /// How the key is sent: `authorization` (`Authorization: Bearer KEY`,
    /// the default) or `x-api-key` (Anthropic-style).
    #[serde(default)]
    pub auth_header: AuthHeader,
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
    /// It continues a trailing assistant turn (assistant prefill), so it can
    /// finish a stream another upstream broke (`routes[].resume`). Default false.
    #[serde(default)]
    pub prefill: bool,
}

/// The header that carries an upstream's key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum AuthHeader {
    /// `Authorization: Bearer KEY`.
    #[default]
    #[serde(rename = "authorization")]
    Authorization,
    /// `x-api-key: KEY`.
    #[serde(rename = "x-api-key")]
    XApiKey,
}

/// One entry point of an upstream with several (`upstreams[].endpoints`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// Unique within the upstream (the `endpoint` metric label, `/admin/status`).
    pub name: String,
    /// e.g. `https://sg.relay.example/v1`.
    pub base_url: String,
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
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
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
