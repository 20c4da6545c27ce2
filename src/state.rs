//! What every handler shares, in one place that imports none of them: the
//! live snapshot, metrics, accounting, the control task's handle and the
//! process-wide retry budget. The request path and the operator endpoints
//! import this; it imports only what sits below them.

use crate::accounting::Accounting;
use crate::audit::AuditLog;
use crate::budget::RetryBudget;
use crate::control::ControlHandle;
use crate::metrics::Metrics;
use crate::otel::Otel;
use crate::routing::Live;

/// Shared by every request of both listeners (held in an `Arc`).
pub struct AppState {
    /// The live snapshot: load it once per request and carry it.
    pub live: Live,
    /// Metric families.
    pub metrics: Metrics,
    /// Metrics, cost and per-key usage of finished requests.
    pub accounting: Accounting,
    /// The control task (outcomes, split changes).
    pub control: ControlHandle,
    /// Retries allowed across all requests of this process (not per config:
    /// a reload must not refill it).
    pub budget: RetryBudget,
    /// The audit log's queue, when `audit:` is configured.
    pub audit: Option<AuditLog>,
    /// SHA-256 of the admin token; `None` = admin API disabled.
    pub admin_token: Option<[u8; 32]>,
    /// The span exporter; `None` = tracing off (the request path then makes
    /// no span at all).
    pub otel: Option<Otel>,
}
