//! What every handler shares, in one place that imports none of them: the
//! live snapshot, metrics, accounting, the control task's handle and the
//! process-wide retry budget. The request path and the operator endpoints
//! import this; it imports only what sits below them.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::accounting::Accounting;
use crate::audit::AuditLog;
use crate::budget::RetryBudget;
use crate::control::reload::Reloader;
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
    /// Metrics, cost and per-key usage of finished requests (shared with
    /// the fleet's usage sync).
    pub accounting: Arc<Accounting>,
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
    /// Re-reads the config file (`POST /admin/reload`, SIGHUP, the watcher).
    pub reloader: Reloader,
    /// Serving, draining or closing (graceful shutdown, PRODUCT.md §3.8).
    pub lifecycle: Lifecycle,
}

/// Where the process is in a graceful shutdown. `/ready` reads it; WebSocket
/// connections wait on [`Lifecycle::closing`] to close with 1001.
#[derive(Debug, Default)]
pub struct Lifecycle {
    draining: CancellationToken,
    closing: CancellationToken,
}

impl Lifecycle {
    /// True from SIGTERM on: `/ready` answers 503 so load balancers move away.
    pub fn is_draining(&self) -> bool {
        self.draining.is_cancelled()
    }

    /// SIGTERM received: readiness off, listeners still accepting.
    pub fn start_draining(&self) {
        self.draining.cancel();
    }

    /// The grace is over: listeners stop accepting, sockets wind down.
    pub fn close(&self) {
        self.draining.cancel();
        self.closing.cancel();
    }

    /// Resolves once [`Lifecycle::close`] was called.
    pub async fn closing(&self) {
        self.closing.cancelled().await
    }
}
