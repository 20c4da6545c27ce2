//! Split shares: the effective percentage of each route, changed by the admin
//! API or by an automatic rollback (the target's live outcomes, or its
//! ejection), persisted through the split store.

use std::time::{Duration, SystemTime};

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::alerts::Alert;
use super::events::{SplitChange, Trigger};
use super::gates::GateWatch;
use super::ramp::Ramp;
use super::rollback::RollbackWatch;
use super::shadow::ShadowStats;
use super::store::{Overrides, RouteOverride};
use super::Control;
use crate::routing::{Base, RouteId, SplitView, UpstreamId};

/// The effective shares and the rollback watch of every route with a split.
pub(super) struct Splits {
    pub(super) shares: Vec<Option<f64>>,
    watches: Vec<Option<RollbackWatch>>,
    pub(super) overrides: Overrides,
    /// Each route's ramp, when configured.
    pub(super) ramps: Vec<Option<Ramp>>,
    /// Each route's gates, when configured.
    pub(super) gates: Vec<Option<GateWatch>>,
    /// Each route's shadow comparison, when configured.
    pub(super) shadows: Vec<Option<ShadowStats>>,
}

impl Splits {
    /// Persisted shares win over the config's, per route.
    pub(super) fn new(base: &Base, overrides: Overrides, now: Instant) -> Self {
        let shares = base
            .cfg
            .routes
            .iter()
            .map(|r| {
                r.split.as_ref().map(|s| {
                    overrides
                        .routes
                        .get(&r.name)
                        .map_or(s.percentage, |o| o.percentage.clamp(0.0, 100.0))
                })
            })
            .collect();
        let watches = base
            .cfg
            .routes
            .iter()
            .map(|r| {
                r.split
                    .as_ref()
                    .map(|s| RollbackWatch::new(s.auto_rollback.clone(), now))
            })
            .collect();
        let ramps = base
            .cfg
            .routes
            .iter()
            .map(|r| {
                let ramp = r.split.as_ref()?.ramp.clone()?;
                Some(Ramp::new(ramp, overrides.ramps.get(&r.name), now))
            })
            .collect();
        let gates = base
            .cfg
            .routes
            .iter()
            .map(|r| Some(GateWatch::new(r.split.as_ref()?.gates.clone()?, now)))
            .collect();
        let shadows = base
            .cfg
            .routes
            .iter()
            .map(|r| {
                r.split
                    .as_ref()?
                    .shadow
                    .as_ref()
                    .map(|_| ShadowStats::default())
            })
            .collect();
        Self {
            shares,
            watches,
            overrides,
            ramps,
            gates,
            shadows,
        }
    }

    /// The effective share of route `i`, if it has a split.
    pub(super) fn share(&self, i: usize) -> Option<f64> {
        self.shares.get(i).copied().flatten()
    }
}

impl Control {
    /// A split target ejected for failing live traffic is rolled back too: its
    /// users are already being served by the primary, and the ejection would
    /// otherwise hide the evidence from the rollback watch.
    pub(super) fn roll_back_routes_targeting(&mut self, upstream: UpstreamId) -> bool {
        let mut changed = false;
        for route in self.base.route_ids() {
            let r = &self.base.routes[route.index()];
            let Some(split) = r.split else { continue };
            let auto = self.base.cfg.routes[route.index()]
                .split
                .as_ref()
                .is_some_and(|s| s.auto_rollback.enabled);
            if auto
                && split.target == upstream
                && self.splits.share(route.index()).unwrap_or(0.0) > 0.0
            {
                let why = "target ejected after failing live traffic";
                self.set_share(route, 0.0, Trigger::Auto, Some(why.into()), None);
                changed = true;
            }
        }
        changed
    }

    /// Feeds the rollback watch of `route` when `upstream` is its target.
    pub(super) fn watch_target(
        &mut self,
        route: RouteId,
        upstream: UpstreamId,
        ok: bool,
        ttfb: Option<Duration>,
    ) -> bool {
        let i = route.index();
        let is_target = self.base.routes[i]
            .split
            .is_some_and(|s| s.target == upstream);
        if !is_target || self.splits.share(i).unwrap_or(0.0) <= 0.0 {
            return false;
        }
        let reason = self.splits.watches[i]
            .as_mut()
            .and_then(|w| w.observe(ok, ttfb, Instant::now()));
        match reason {
            Some(reason) => {
                self.set_share(route, 0.0, Trigger::Auto, Some(reason), None);
                true
            }
            None => false,
        }
    }

    /// Sets a share, hands the overrides to the store writer (which answers
    /// `reply` once they are written), and counts and alerts a rollback.
    pub(super) fn set_share(
        &mut self,
        route: RouteId,
        percentage: f64,
        trigger: Trigger,
        reason: Option<String>,
        reply: Option<oneshot::Sender<Option<SplitChange>>>,
    ) {
        let i = route.index();
        let Some(split) = self.base.routes[i].split else {
            if let Some(r) = reply {
                let _ = r.send(None);
            }
            return;
        };
        let name = self.base.routes[i].name.clone();
        let before = self.splits.share(i).unwrap_or(split.percentage);
        let after = crate::routing::split::round_percentage(percentage.clamp(0.0, 100.0));
        self.splits.shares[i] = Some(after);
        if let Some(w) = self.splits.watches[i].as_mut() {
            w.reset();
        }
        self.ramp_follows(route, trigger, reason.as_deref());
        self.splits.overrides.routes.insert(
            name.to_string(),
            RouteOverride {
                percentage: after,
                trigger: trigger.as_str().into(),
                updated_at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            },
        );
        self.save_ramp(route);
        let view = SplitView {
            percentage: after,
            ..split
        };
        // In force before anyone hears of it: published first, then persisted
        // off this loop, and the admin's answer comes once it is written.
        self.publish();
        self.store
            .save(self.splits.overrides.clone(), reply.map(|r| (r, view)));
        tracing::info!(route = %name, before, after, trigger = trigger.as_str(), "split changed");
        if matches!(trigger, Trigger::Manual | Trigger::Auto) {
            self.metrics
                .rollbacks
                .with_label_values(&[&name, trigger.as_str()])
                .inc();
            let why = reason.unwrap_or_else(|| "operator request".into());
            let target = self.upstream_name(split.target).to_owned();
            self.alerts.send(Alert::new(
                "rollback",
                format!(
                    "Turnout: route {name} rolled back {before}% -> {after}% ({}: {why})",
                    trigger.as_str()
                ),
                Some(&target),
                Some(&name),
                trigger.as_str(),
            ));
        }
    }
}
