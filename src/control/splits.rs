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
    /// Persisted shares win over the config's, per route, unless they were
    /// stored for another split target.
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
                        .filter(|o| o.target.as_deref().is_none_or(|t| t == s.target))
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

    /// The overrides as they stand (a reload rebuilds from them).
    pub(super) fn overrides(&self) -> &Overrides {
        &self.overrides
    }

    /// Route `i`'s rollback watch, taken (a reload keeps an unchanged one).
    pub(super) fn take_watch(&mut self, i: usize) -> Option<RollbackWatch> {
        self.watches.get_mut(i).and_then(Option::take)
    }

    /// Every route's error rate is judged on the fleet's totals from now on.
    pub(super) fn judge_on_fleet(&mut self) {
        for w in &mut self.watches {
            if let Some(watch) = w.take() {
                *w = Some(watch.for_fleet());
            }
        }
    }

    /// Puts back a watch kept across a reload.
    pub(super) fn put_watch(&mut self, i: usize, w: RollbackWatch) {
        if let Some(slot) = self.watches.get_mut(i) {
            *slot = Some(w);
        }
    }
}

/// Milliseconds since the Unix epoch (the order of changes across replicas).
pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
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
        now: Instant,
    ) -> bool {
        let i = route.index();
        let is_target = self.base.routes[i]
            .split
            .is_some_and(|s| s.target == upstream);
        if !is_target || self.splits.share(i).unwrap_or(0.0) <= 0.0 {
            return false;
        }
        if let Some(t) = &self.tally {
            t.record(&self.base.routes[i].name, ok);
        }
        let reason = self.splits.watches[i]
            .as_mut()
            .and_then(|w| w.observe(ok, ttfb, now));
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
        let target_name = self.upstream_name(split.target).to_owned();
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
                target: Some(target_name.clone()),
                // Strictly later than what this replica knows for the route,
                // so that a change always supersedes the one it replaces.
                ts: now_ms().max(
                    self.splits
                        .overrides
                        .routes
                        .get(&*name)
                        .map_or(0, |o| o.ts + 1),
                ),
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
            let target = target_name;
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

impl Control {
    /// Takes in the fleet's shares as read from the shared store: a route's
    /// share changes when the store holds a later change for its current
    /// target than the one in force here. Not counted nor alerted again: the
    /// replica that made the change did that.
    pub(super) fn apply_shared(&mut self, remote: &Overrides) -> bool {
        let mut changed = false;
        for route in self.base.route_ids() {
            let i = route.index();
            let Some(split) = self.base.routes[i].split else {
                continue;
            };
            let name = self.base.routes[i].name.clone();
            let Some(o) = remote.routes.get(&*name) else {
                continue;
            };
            if o.target.as_deref() != Some(self.upstream_name(split.target)) {
                continue;
            }
            let local = self.splits.overrides.routes.get(&*name).map_or(0, |l| l.ts);
            if o.ts <= local {
                continue;
            }
            let before = self.splits.share(i).unwrap_or(split.percentage);
            let after = crate::routing::split::round_percentage(o.percentage.clamp(0.0, 100.0));
            self.splits.shares[i] = Some(after);
            if let Some(w) = self.splits.watches[i].as_mut() {
                w.reset();
            }
            self.splits
                .overrides
                .routes
                .insert(name.to_string(), o.clone());
            tracing::info!(route = %name, before, after, trigger = %o.trigger, "split changed by another replica");
            changed = true;
        }
        changed
    }
}

impl Control {
    /// Judges a route's automatic-rollback window on the fleet's totals
    /// (`None`: Redis unreachable, this replica's own window). Outcomes from
    /// before the route's last share change do not count.
    pub(super) fn apply_fleet_window(
        &mut self,
        route: &str,
        buckets: Option<Vec<(u64, u64, u64)>>,
    ) -> bool {
        let Some(id) = self
            .base
            .route_ids()
            .find(|r| &*self.base.routes[r.index()].name == route)
        else {
            return false;
        };
        let i = id.index();
        if self.splits.share(i).unwrap_or(0.0) <= 0.0 {
            return false;
        }
        let Some(watch) = self.splits.watches[i].as_ref() else {
            return false;
        };
        let since = self.splits.overrides.routes.get(route).map_or(0, |o| o.ts);
        let verdict = match buckets {
            Some(b) => {
                let (t, f) = b
                    .iter()
                    .filter(|(sec, _, _)| sec.saturating_mul(1000) > since)
                    .fold((0, 0), |(t, f), (_, bt, bf)| (t + bt, f + bf));
                watch.judge_totals(t, f, "fleet")
            }
            None => {
                let (t, f) = watch.local_counts(Instant::now());
                watch.judge_totals(t, f, "this replica's (shared state unreachable)")
            }
        };
        match verdict {
            Some(reason) => {
                self.set_share(id, 0.0, Trigger::Auto, Some(reason), None);
                true
            }
            None => false,
        }
    }
}
