//! Progressive delivery in the control task (PRODUCT.md §3.9): the ramp's
//! steps, the gates' verdicts, and how they meet split changes. A failed
//! gate rolls the share back (`trigger="auto"`) and stops the ramp; a manual
//! change of share pauses it. Ramp states are persisted with the split
//! overrides, through the split store.

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::alerts::Alert;
use super::events::Trigger;
use super::ramp::{RampAction, RampState};
use super::shadow::ShadowStats;
use super::Control;
use crate::routing::{Progress, RouteId};

impl Control {
    /// One request of a cohort, for the route's gates.
    pub(super) fn on_cohort(
        &mut self,
        route: RouteId,
        target: bool,
        ok: bool,
        latency: Option<std::time::Duration>,
    ) {
        if let Some(g) = self
            .splits
            .gates
            .get_mut(route.index())
            .and_then(Option::as_mut)
        {
            g.record(target, ok, latency, Instant::now());
        }
    }

    /// An operator's ramp action; the reply goes out once it is published.
    pub(super) fn on_ramp(
        &mut self,
        route: RouteId,
        action: RampAction,
        reply: oneshot::Sender<Result<(), String>>,
    ) {
        let i = route.index();
        let now = Instant::now();
        let share = self.splits.share(i).unwrap_or(0.0);
        let Some(ramp) = self.splits.ramps.get_mut(i).and_then(Option::as_mut) else {
            let _ = reply.send(Err(
                "this route has no ramp configured (add `split.ramp` to it in the config)".into(),
            ));
            return;
        };
        match ramp.act(action, share, now) {
            Err(e) => {
                let _ = reply.send(Err(e.into()));
            }
            Ok(new_share) => {
                let state = ramp.state().as_str();
                let name = self.base.routes[i].name.clone();
                tracing::info!(route = %name, ?action, state, "ramp");
                match new_share {
                    Some(p) => self.set_share(route, p, Trigger::Ramp, None, None),
                    None => {
                        self.save_ramp(route);
                        self.publish();
                        self.store.save(self.splits.overrides.clone(), None);
                    }
                }
                let _ = reply.send(Ok(()));
            }
        }
    }

    /// Gates and ramps, once a second: a failed gate rolls back; a ramp
    /// whose bake is over moves on when its gates pass. True when some route
    /// has either (their figures are republished).
    pub(super) fn progressive_tick(&mut self, now: Instant) -> bool {
        let mut any = false;
        for route in self.base.route_ids() {
            let i = route.index();
            let share = self.splits.share(i).unwrap_or(0.0);
            let mut verdict = None;
            if let Some(g) = self.splits.gates[i].as_ref() {
                any = true;
                let v = g.judge(now);
                if v.verdict == "fail" && share > 0.0 {
                    let why = g.explain(&v);
                    self.set_share(route, 0.0, Trigger::Auto, Some(why), None);
                    continue;
                }
                verdict = Some(v.verdict);
            }
            any |= self.splits.shadows[i].is_some();
            let Some(ramp) = self.splits.ramps[i].as_mut() else {
                continue;
            };
            any = true;
            // Without gates the bake alone decides; with them, they must pass.
            if !ramp.due(now) || verdict.is_some_and(|v| v != "pass") {
                continue;
            }
            let Some((p, done)) = ramp.advance(now) else {
                continue;
            };
            self.set_share(route, p, Trigger::Ramp, None, None);
            let name = self.base.routes[i].name.clone();
            let (event, text) = if done {
                (
                    "ramp_done",
                    format!("Turnout: route {name} ramp done at {p}%"),
                )
            } else {
                (
                    "ramp_step",
                    format!("Turnout: route {name} ramp moved to {p}%"),
                )
            };
            self.alerts
                .send(Alert::new(event, text, None, Some(&name), &p.to_string()));
        }
        any
    }

    /// How the ramp follows a change of share: a manual one pauses it, an
    /// automatic rollback stops it (alerted). Either way the gates start over.
    pub(super) fn ramp_follows(&mut self, route: RouteId, trigger: Trigger, why: Option<&str>) {
        let i = route.index();
        let now = Instant::now();
        if let Some(g) = self.splits.gates[i].as_mut() {
            g.reset();
        }
        let Some(ramp) = self.splits.ramps[i].as_mut() else {
            return;
        };
        let name = self.base.routes[i].name.clone();
        match trigger {
            Trigger::Set | Trigger::Manual => {
                if ramp.pause(now) {
                    tracing::info!(route = %name, "ramp paused by a manual change of share");
                }
            }
            Trigger::Auto => {
                if ramp.roll_back() {
                    let why = why.unwrap_or("automatic rollback");
                    self.alerts.send(Alert::new(
                        "ramp_rolled_back",
                        format!("Turnout: route {name} ramp stopped ({why})"),
                        None,
                        Some(&name),
                        RampState::RolledBack.as_str(),
                    ));
                }
            }
            Trigger::Ramp => {}
        }
    }

    /// Copies the route's ramp into the overrides the store persists.
    pub(super) fn save_ramp(&mut self, route: RouteId) {
        let i = route.index();
        let now = Instant::now();
        let Some(ramp) = self.splits.ramps[i].as_ref() else {
            return;
        };
        let saved = ramp.saved(|t| self.wall(t), now);
        let name = self.base.routes[i].name.to_string();
        self.splits.overrides.ramps.insert(name, saved);
    }

    /// The ramp's step, the gates' figures (and the shadow comparison) of route `i`.
    pub(super) fn progress(&self, i: usize, now: Instant) -> Progress {
        Progress {
            ramp: self.splits.ramps[i]
                .as_ref()
                .map(|r| r.view(|t| self.wall(t))),
            gates: self.splits.gates[i].as_ref().map(|g| g.judge(now)),
            shadow: self.splits.shadows[i].as_ref().map(ShadowStats::view),
        }
    }

    /// Starts the ramps configured without a saved state (PRODUCT.md §3.9:
    /// at start-up when configured and not paused); persists what it started.
    pub(super) fn autostart_ramps(&mut self) {
        let now = Instant::now();
        let mut started = false;
        for route in self.base.route_ids() {
            let i = route.index();
            let name = &self.base.routes[i].name;
            if self.splits.overrides.ramps.contains_key(&**name) {
                continue;
            }
            let share = self.splits.share(i).unwrap_or(0.0);
            let Some(ramp) = self.splits.ramps[i].as_mut() else {
                continue;
            };
            if let Ok(Some(p)) = ramp.act(RampAction::Start, share, now) {
                self.splits.shares[i] = Some(p);
                self.save_ramp(route);
                started = true;
            }
        }
        if started {
            self.store.save(self.splits.overrides.clone(), None);
        }
    }
}
