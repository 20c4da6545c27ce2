//! What the control task hears about: probe results, live outcomes, admin
//! changes. Requests only ever `try_send` (they never wait on the task).

use std::time::Duration;

use tokio::sync::oneshot;

use super::shadow::ShadowPair;
use crate::outcome::Outcome;
use crate::routing::{RouteId, SplitView, UpstreamId};

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
}

/// Something the control task must take into account.
#[derive(Debug)]
pub enum Event {
    /// An active probe finished.
    Probe {
        upstream: UpstreamId,
        /// Which of its endpoints (0 for a plain `base_url`).
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
}
