//! What the control task publishes about a split's progressive delivery
//! (PRODUCT.md §3.9), for `/admin/status`: the ramp, the gates' figures and
//! the shadow comparison. Values only; the state machines live in `control`.

use std::time::SystemTime;

/// A route's ramp, gates and shadow, as last published.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// The ramp, when configured.
    pub ramp: Option<RampView>,
    /// The gates' verdict and figures, when configured.
    pub gates: Option<GateView>,
    /// The shadow comparison, when configured.
    pub shadow: Option<ShadowView>,
}

/// `routes[].split.ramp`.
#[derive(Debug, Clone)]
pub struct RampView {
    /// The steps, percent.
    pub steps: Vec<f64>,
    /// The current step's percentage (none before the ramp started).
    pub step: Option<f64>,
    /// `idle`, `running`, `paused`, `done` or `rolled_back`.
    pub state: &'static str,
    /// When the next step is due (running only).
    pub next_at: Option<SystemTime>,
}

/// `routes[].split.gates`.
#[derive(Debug, Clone)]
pub struct GateView {
    /// `pass`, `fail` or `insufficient`.
    pub verdict: &'static str,
    /// The target's cohort.
    pub target: CohortView,
    /// Users outside the share, served by the primary.
    pub control: CohortView,
}

/// One cohort over the gate window.
#[derive(Debug, Clone, Copy, Default)]
pub struct CohortView {
    /// Requests in the window.
    pub requests: u32,
    /// Failed share (0–1).
    pub error_rate: f64,
    /// p95 latency (streams: time to first token), ms.
    pub latency_p95_ms: Option<f64>,
}

/// `routes[].split.shadow`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShadowView {
    /// Pairs compared.
    pub pairs: u64,
    /// Shadows that failed.
    pub target_errors: u64,
    /// Primaries that failed.
    pub primary_errors: u64,
    /// Median of target latency / primary latency.
    pub latency_ratio_p50: Option<f64>,
    /// 95th percentile of the same ratio.
    pub latency_ratio_p95: Option<f64>,
    /// Share of pairs with the same shape (both succeeded, same finish reason, same tool calls).
    pub same_shape_rate: Option<f64>,
    /// Shadow cost / primary cost over the pairs priced on both sides.
    pub cost_ratio: Option<f64>,
}
