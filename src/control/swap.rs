//! A reloaded config, swapped in by the control task: health and learned
//! models carry over for every upstream whose client is unchanged, runtime
//! shares survive unless the route's split target changed, rollback windows
//! survive unless their thresholds changed, and only the probes of changed
//! upstreams restart. Requests in flight keep the snapshot they loaded.

use std::sync::Arc;

use tokio::time::Instant;

use super::events::ReloadReport;
use super::health::EndpointsHealth;
use super::splits::Splits;
use super::Control;
use crate::routing::Base;

impl Control {
    /// Swaps `base` in and publishes it; says what changed.
    pub(super) fn swap(&mut self, base: Arc<Base>) -> ReloadReport {
        let now = Instant::now();
        let old = std::mem::replace(&mut self.base, base);
        let new = self.base.clone();
        let mut health = Vec::with_capacity(new.upstreams.len());
        let mut models = Vec::with_capacity(new.upstreams.len());
        for (i, u) in new.upstreams.iter().enumerate() {
            let same = old
                .upstreams
                .iter()
                .position(|o| o.name == u.name)
                .filter(|&j| old.fingerprints.get(j) == new.fingerprints.get(i));
            match same {
                Some(j) => {
                    health.push(self.health[j].clone());
                    models.push(self.models[j].clone());
                }
                None => {
                    let cfg = &new.cfg.upstreams[i].health;
                    health.push(EndpointsHealth::new(
                        u.endpoints.len(),
                        cfg,
                        &new.cfg.outlier,
                        now,
                    ));
                    models.push(Arc::default());
                }
            }
        }
        self.health = health;
        self.models = models;
        let mut report = ReloadReport {
            splits_reset: self.rebase_splits(&old, &new, now),
            ..ReloadReport::default()
        };
        report.probes_restarted = self.probes.update(&new, &self.me, &self.metrics);
        self.init_metrics();
        self.publish();
        report
    }

    /// New shares for `new`; returns the routes whose runtime share was
    /// dropped because their split target changed.
    fn rebase_splits(&mut self, old: &Base, new: &Base, now: Instant) -> Vec<String> {
        let mut overrides = self.splits.overrides().clone();
        let old_target = |route: &str| {
            old.cfg
                .routes
                .iter()
                .find(|r| r.name == route)
                .and_then(|r| r.split.as_ref())
                .map(|s| s.target.clone())
        };
        // An override from an older state file names no target: it was made
        // for the target of the config it was made under.
        for (route, o) in overrides.routes.iter_mut() {
            if o.target.is_none() {
                o.target = old_target(route);
            }
        }
        let mut reset = Vec::new();
        for r in &new.cfg.routes {
            let Some(s) = &r.split else { continue };
            let had = overrides.routes.get(&r.name).and_then(|o| o.target.clone());
            if had.is_some_and(|t| t != s.target) {
                reset.push(r.name.clone());
            }
        }
        let mut splits = Splits::new(new, overrides, now);
        for (i, r) in new.cfg.routes.iter().enumerate() {
            let Some(s) = &r.split else { continue };
            let Some(j) = old.cfg.routes.iter().position(|o| o.name == r.name) else {
                continue;
            };
            let unchanged = old.cfg.routes[j]
                .split
                .as_ref()
                .is_some_and(|o| o.target == s.target && o.auto_rollback == s.auto_rollback);
            if let (true, Some(w)) = (unchanged, self.splits.take_watch(j)) {
                splits.put_watch(i, w);
            }
        }
        if self.tally.is_some() {
            splits.judge_on_fleet();
        }
        self.splits = splits;
        reset
    }
}
