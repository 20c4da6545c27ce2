//! What the control task hears about: probe results, live outcomes, admin
//! changes. Requests only ever `try_send` (they never wait on the task).

use std::time::Duration;

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::oneshot;

use super::overrides::Overrides;
use super::shadow::ShadowPair;
use crate::outcome::Outcome;
use crate::routing::{Base, RouteId, SplitView, UpstreamId};

/// Who changed a split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// `PUT /admin/routes/{route}/split`.
    Set,
    /// `POST /admin/routes/{route}/rollback`.
    Manual,
    /// Automatic rollback (a threshold of `auto_rollback`, or a failed gate).
    Auto,
    /// The ramp moved to its next step.
    Ramp,
}

impl Trigger {
    /// Label value (`turnout_rollbacks_total{trigger}`, the state file, alerts).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Set => "set",
            Self::Manual => "manual",
            Self::Auto => "auto",
            Self::Ramp => "ramp",
        }
    }
}

/// What the operator asks (`POST /admin/routes/{route}/ramp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RampAction {
    /// From the current share's step (or the first), running.
    Start,
    /// Hold at the current step.
    Pause,
    /// Continue a paused ramp (the bake left when it was paused).
    Resume,
}

impl RampAction {
    /// `start`, `pause`, `resume`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "start" => Some(Self::Start),
            "pause" => Some(Self::Pause),
            "resume" => Some(Self::Resume),
            _ => None,
        }
    }
}

/// A split change as the admin API reports it.
#[derive(Debug, Clone, Copy)]
pub struct SplitChange {
    /// The route's split after the change.
    pub view: SplitView,
    /// Whether the change reached the split store (it is in force either way).
    pub persisted: bool,
    /// Whether that store is shared by the fleet (Redis).
    pub shared_store: bool,
}

/// What a reload changed, as the control task saw it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadReport {
    /// Upstreams whose probe (re)started: new, or settings, address or key changed.
    pub probes_restarted: Vec<String>,
    /// Routes whose runtime share was dropped because their split target changed.
    pub splits_reset: Vec<String>,
}

/// Something the control task must take into account.
#[derive(Debug)]
pub enum Event {
    /// An active probe finished (`probe` names the loop; a loop stopped by
    /// a reload is ignored).
    Probe {
        probe: u64,
        /// Which of its upstream's endpoints (0 for a plain `base_url`).
        endpoint: usize,
        ok: bool,
        latency: Duration,
        models: Option<Vec<String>>,
    },
    /// A live attempt (or a stream after its commit point) finished.
    Outcome {
        upstream: UpstreamId,
        /// Which of its endpoints (0 for a plain `base_url`).
        endpoint: usize,
        route: RouteId,
        outcome: Outcome,
        /// The upstream's `Retry-After`, for a 429.
        retry_after: Option<Duration>,
        ttfb: Option<Duration>,
        /// The request was in the split target's share.
        in_split: bool,
    },
    /// One finished request of a split route's cohort, for its gates.
    Cohort {
        route: RouteId,
        /// In the target's share (else the control cohort).
        target: bool,
        /// The first attempt, on the cohort's own upstream, served.
        ok: bool,
        /// Whole request (JSON) or time to first token (stream).
        latency: Option<Duration>,
    },
    /// A primary/shadow pair compared (PRODUCT.md §3.9).
    ShadowPair { route: RouteId, pair: ShadowPair },
    /// `POST /admin/routes/{route}/ramp`; replies once applied (and
    /// published), or with why it does not apply.
    Ramp {
        route: RouteId,
        action: RampAction,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// An admin change of share; replies once the change is persisted (or
    /// could not be), with the new split.
    SetSplit {
        route: RouteId,
        percentage: f64,
        trigger: Trigger,
        reply: oneshot::Sender<Option<SplitChange>>,
    },
    /// A reloaded config: swap it in and republish.
    Reload {
        base: Arc<Base>,
        reply: oneshot::Sender<ReloadReport>,
    },
    /// The fleet's shares as last read from the shared store.
    Shared(Overrides),
    /// A route's automatic-rollback window across the fleet: per second,
    /// the target's requests and failures (`None`: Redis unreachable, judge
    /// this replica's own window).
    FleetWindow {
        route: String,
        buckets: Option<Vec<(u64, u64, u64)>>,
    },
}
