//! One audit line (PRODUCT.md §3.11): what a finished request did, never
//! what it said — no prompt, answer, key or header value, only names from
//! the config, counts, times and status codes.

use std::sync::Arc;
use std::time::SystemTime;

use serde::{Serialize, Serializer};

/// One finished request, as written (field names are the contract of §3.11).
#[derive(Debug, Clone, Serialize)]
pub struct AuditLine {
    /// When it finished (RFC 3339, milliseconds, UTC).
    #[serde(serialize_with = "rfc3339")]
    pub ts: SystemTime,
    /// The request id (`x-request-id`).
    pub request_id: String,
    /// The client key's name (never the key).
    pub key: Option<String>,
    /// Route name.
    pub route: Option<Arc<str>>,
    /// The client's model name.
    pub model: Option<String>,
    /// The model name sent to the serving upstream.
    pub upstream_model: Option<String>,
    /// The serving (or last tried) upstream.
    pub upstream: Option<Arc<str>>,
    /// The upstream's endpoint, when it has several (none yet: one per upstream).
    pub endpoint: Option<Arc<str>>,
    /// `target`, `control` or none (route without a split).
    pub cohort: Option<&'static str>,
    /// Status given to the client (499: it left first).
    pub status: u16,
    /// A streamed answer.
    pub stream: bool,
    /// Every upstream attempt, in order.
    pub attempts: Vec<AuditAttempt>,
    /// Time to first token.
    pub ttft_ms: Option<u64>,
    /// Whole duration.
    pub latency_ms: u64,
    /// Prompt tokens reported by the upstream.
    pub prompt_tokens: Option<u64>,
    /// Completion tokens reported by the upstream.
    pub completion_tokens: Option<u64>,
    /// At the serving upstream's prices.
    pub cost_usd: Option<f64>,
    /// An error code (the client's error, or how a stream broke).
    pub error: Option<&'static str>,
    /// A shadow copy (PRODUCT.md §3.9), never seen by a client.
    pub shadow: bool,
}

/// One attempt of the walk.
#[derive(Debug, Clone, Serialize)]
pub struct AuditAttempt {
    /// Who was tried.
    pub upstream: Arc<str>,
    /// The outcome label (`ok`, `http_5xx`, `timeout`, ...).
    pub outcome: &'static str,
    /// The upstream's status, when it answered.
    pub status: Option<u16>,
    /// From the attempt's start to its answer.
    pub latency_ms: u64,
}

fn rfc3339<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*t))
}
