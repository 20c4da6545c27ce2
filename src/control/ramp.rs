//! The ramp (PRODUCT.md §3.9): a split's share climbs its steps by itself,
//! one step after `bake` with the gates passing. A pure state machine over
//! [`Instant`]s; the control task drives it (`progressive.rs`) and persists
//! it through the split store.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

pub use super::events::RampAction;
use super::store::RampOverride;
use crate::config::RampConfig;
use crate::routing::RampView;

/// Where a ramp is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RampState {
    /// Not started.
    Idle,
    /// Climbing: the next step is due at `next_at`.
    Running,
    /// Held by the operator (or by a manual change of share).
    Paused,
    /// At the last step.
    Done,
    /// Stopped by an automatic rollback.
    RolledBack,
}

impl RampState {
    /// The word in `/admin/status` and the state file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Done => "done",
            Self::RolledBack => "rolled_back",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            Self::Idle,
            Self::Running,
            Self::Paused,
            Self::Done,
            Self::RolledBack,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
}

/// One route's ramp.
#[derive(Debug, Clone)]
pub struct Ramp {
    cfg: RampConfig,
    step: Option<usize>,
    state: RampState,
    next_at: Option<Instant>,
    /// Bake left when paused.
    remaining: Option<Duration>,
}

impl Ramp {
    /// A ramp restored from the store, else idle.
    pub fn new(cfg: RampConfig, saved: Option<&RampOverride>, now: Instant) -> Self {
        let mut r = Self {
            cfg,
            step: None,
            state: RampState::Idle,
            next_at: None,
            remaining: None,
        };
        if let Some(s) = saved {
            r.state = RampState::parse(&s.state).unwrap_or(RampState::Idle);
            r.step = s.step.filter(|&i| i < r.cfg.steps.len());
            let left = s
                .next_at
                .as_deref()
                .and_then(|t| humantime::parse_rfc3339(t).ok())
                .map(|t| t.duration_since(SystemTime::now()).unwrap_or_default());
            match r.state {
                RampState::Running => r.next_at = Some(now + left.unwrap_or(r.cfg.bake)),
                RampState::Paused => {
                    r.remaining = s.remaining_ms.map(Duration::from_millis);
                }
                _ => {}
            }
        }
        r
    }

    /// Current state.
    pub fn state(&self) -> RampState {
        self.state
    }

    /// The current step's percentage.
    pub fn step_percentage(&self) -> Option<f64> {
        self.step.and_then(|i| self.cfg.steps.get(i).copied())
    }

    /// Applies an operator's action; the new share when it changes it, or
    /// the reason it does not apply.
    pub fn act(
        &mut self,
        action: RampAction,
        share: f64,
        now: Instant,
    ) -> Result<Option<f64>, &'static str> {
        match action {
            RampAction::Start => {
                if self.state == RampState::Running {
                    return Err("the ramp is already running");
                }
                let i = self
                    .cfg
                    .steps
                    .iter()
                    .rposition(|&p| p <= share)
                    .unwrap_or(0);
                self.step = Some(i);
                self.enter_step(now);
                Ok(Some(self.cfg.steps[i]))
            }
            RampAction::Pause => {
                if self.state != RampState::Running {
                    return Err("only a running ramp can be paused");
                }
                self.pause(now);
                Ok(None)
            }
            RampAction::Resume => {
                if self.state != RampState::Paused || self.step.is_none() {
                    return Err("only a paused ramp can be resumed");
                }
                self.state = RampState::Running;
                self.next_at = Some(now + self.remaining.take().unwrap_or(self.cfg.bake));
                Ok(None)
            }
        }
    }

    /// Holds a running ramp (a manual change of share does this too).
    pub fn pause(&mut self, now: Instant) -> bool {
        if self.state != RampState::Running {
            return false;
        }
        self.state = RampState::Paused;
        self.remaining = self.next_at.map(|t| t.saturating_duration_since(now));
        self.next_at = None;
        true
    }

    /// An automatic rollback stops it.
    pub fn roll_back(&mut self) -> bool {
        if matches!(self.state, RampState::Idle | RampState::RolledBack) {
            return false;
        }
        self.state = RampState::RolledBack;
        self.next_at = None;
        self.remaining = None;
        true
    }

    /// The bake at the current step is over.
    pub fn due(&self, now: Instant) -> bool {
        self.state == RampState::Running && self.next_at.is_some_and(|t| now >= t)
    }

    /// Moves to the next step; returns its percentage and whether it is the last.
    pub fn advance(&mut self, now: Instant) -> Option<(f64, bool)> {
        let next = self.step.map_or(0, |i| i + 1);
        let p = *self.cfg.steps.get(next)?;
        self.step = Some(next);
        self.enter_step(now);
        Some((p, self.state == RampState::Done))
    }

    fn enter_step(&mut self, now: Instant) {
        let last = self.step == Some(self.cfg.steps.len() - 1);
        self.remaining = None;
        if last {
            self.state = RampState::Done;
            self.next_at = None;
        } else {
            self.state = RampState::Running;
            self.next_at = Some(now + self.cfg.bake);
        }
    }

    /// For `/admin/status`; `wall` turns an instant into wall-clock time.
    pub fn view(&self, wall: impl Fn(Instant) -> SystemTime) -> RampView {
        RampView {
            steps: self.cfg.steps.clone(),
            step: self.step_percentage(),
            state: self.state.as_str(),
            next_at: self.next_at.map(wall),
        }
    }

    /// What the split store keeps.
    pub fn saved(&self, wall: impl Fn(Instant) -> SystemTime, now: Instant) -> RampOverride {
        RampOverride {
            state: self.state.as_str().into(),
            step: self.step,
            next_at: self
                .next_at
                .map(|t| humantime::format_rfc3339_millis(wall(t)).to_string()),
            remaining_ms: self
                .remaining
                .or_else(|| self.next_at.map(|t| t.saturating_duration_since(now)))
                .map(|d| d.as_millis() as u64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp() -> Ramp {
        let cfg = RampConfig {
            steps: vec![1.0, 5.0, 25.0, 100.0],
            bake: Duration::from_secs(10),
        };
        Ramp::new(cfg, None, Instant::now())
    }

    #[tokio::test(start_paused = true)]
    async fn climbs_after_bake_pauses_resumes_and_ends_done() {
        let mut r = ramp();
        assert_eq!(r.state(), RampState::Idle);
        assert_eq!(r.act(RampAction::Start, 0.0, Instant::now()), Ok(Some(1.0)));
        assert!(!r.due(Instant::now()));
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(r.pause(Instant::now()));
        tokio::time::advance(Duration::from_secs(100)).await;
        assert!(!r.due(Instant::now()), "a paused ramp never moves");
        assert_eq!(r.act(RampAction::Resume, 1.0, Instant::now()), Ok(None));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!r.due(Instant::now()), "6 s of bake left after the pause");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(r.due(Instant::now()));
        assert_eq!(r.advance(Instant::now()), Some((5.0, false)));
        assert_eq!(r.advance(Instant::now()), Some((25.0, false)));
        assert_eq!(r.advance(Instant::now()), Some((100.0, true)));
        assert_eq!(r.state(), RampState::Done);
        assert!(r.act(RampAction::Pause, 100.0, Instant::now()).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn start_picks_the_current_shares_step_and_survives_a_restart() {
        let mut r = ramp();
        assert_eq!(r.act(RampAction::Start, 7.0, Instant::now()), Ok(Some(5.0)));
        let saved = r.saved(
            |_| SystemTime::now() + Duration::from_secs(10),
            Instant::now(),
        );
        let back = Ramp::new(r.cfg.clone(), Some(&saved), Instant::now());
        assert_eq!(back.state(), RampState::Running);
        assert_eq!(back.step_percentage(), Some(5.0));
        assert!(r.roll_back());
        assert_eq!(r.state(), RampState::RolledBack);
        assert!(r.act(RampAction::Resume, 0.0, Instant::now()).is_err());
        assert_eq!(r.act(RampAction::Start, 0.0, Instant::now()), Ok(Some(1.0)));
    }
}
