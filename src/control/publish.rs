//! Building the routing table from the control task's state, publishing it
//! as a new snapshot, and the gauges and alerts that follow a change.

use std::sync::Arc;

use tokio::time::Instant;

use super::alerts::Alert;
use super::Control;
use crate::outcome::Outcome;
use crate::routing::{GateView, HealthState, RoutingTable, Snapshot, UpstreamId, UpstreamView};

const STATES: [HealthState; 3] = [
    HealthState::Healthy,
    HealthState::Unhealthy,
    HealthState::Ejected,
];

impl Control {
    /// Exposes every known label set at 0 from the start, so dashboards show 0
    /// rather than "no data" and `increase()` sees the first event.
    pub(super) fn init_metrics(&self) {
        let m = &self.metrics;
        for (r, rc) in self.base.routes.iter().zip(&self.base.cfg.routes) {
            for t in ["manual", "auto"] {
                m.rollbacks.with_label_values(&[&r.name, t]);
            }
            m.budget_exhausted.with_label_values(&[&r.name]);
            if rc.split.as_ref().is_some_and(|s| s.shadow.is_some()) {
                for o in ["ok", "error", "dropped"] {
                    m.shadow_requests.with_label_values(&[&r.name, o]);
                }
                for sh in ["same", "different"] {
                    m.shadow_pairs.with_label_values(&[&r.name, sh]);
                }
            }
            m.retries.with_label_values(&[&r.name]);
        }
        for u in self.base.upstreams.iter() {
            m.ejections.with_label_values(&[&u.name]);
            for s in STATES {
                m.health_transitions
                    .with_label_values(&[&u.name, s.as_str()]);
            }
        }
        for r in ["sent", "failed", "dropped"] {
            m.alerts.with_label_values(&[r]);
        }
        for t in ["http", "ws"] {
            m.active_streams.with_label_values(&[t]);
        }
    }

    /// The routing table of the current state.
    fn build_table(&self) -> RoutingTable {
        let now = Instant::now();
        let upstreams = self
            .health
            .iter()
            .enumerate()
            .map(|(i, h)| UpstreamView {
                name: self.base.upstreams[i].name.clone(),
                state: h.state(),
                probe_latency_ms: h.probe_latency.map(|d| d.as_secs_f64() * 1000.0),
                error_rate: h.window.error_rate(now),
                ttfb_ewma_ms: h.ewma_ttfb.map(|s| s * 1000.0),
                ejected_until: h.ejected_until().map(|t| self.wall(t)),
                cooling_until: h.cooling_until,
                models: self.models[i].clone(),
            })
            .collect();
        let routes = self
            .base
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let mut r = match self.splits.share(i) {
                    Some(p) => r.with_percentage(p),
                    None => r.clone(),
                };
                if r.split.is_some() {
                    r.progress = self.progress(i, now);
                }
                r
            })
            .collect();
        RoutingTable {
            routes,
            upstreams,
            matcher: self.base.matcher.clone(),
        }
    }

    /// Publishes a new snapshot (same base, new table) and updates the gauges.
    pub(super) fn publish(&self) {
        let t = self.build_table();
        for u in &t.upstreams {
            let healthy = i64::from(u.state == HealthState::Healthy);
            self.metrics
                .upstream_healthy
                .with_label_values(&[&u.name])
                .set(healthy);
            for s in STATES {
                self.metrics
                    .upstream_state
                    .with_label_values(&[&u.name, s.as_str()])
                    .set(i64::from(u.state == s));
            }
        }
        for r in &t.routes {
            if let Some(s) = r.split {
                self.metrics
                    .split_percentage
                    .with_label_values(&[&r.name])
                    .set(s.percentage);
                if let Some(g) = &r.progress.gates {
                    self.gate_metrics(&r.name, g);
                }
                if let Some(ramp) = &r.progress.ramp {
                    self.metrics
                        .ramp_step
                        .with_label_values(&[&r.name])
                        .set(ramp.step.unwrap_or(0.0));
                }
            }
        }
        self.live.publish(Snapshot::new(Arc::clone(&self.base), t));
    }

    /// The gate's figures as gauges (the migration dashboard's target vs control).
    fn gate_metrics(&self, route: &str, g: &GateView) {
        let m = &self.metrics;
        for (cohort, c) in [("target", &g.target), ("control", &g.control)] {
            let l = [route, cohort];
            m.gate_requests
                .with_label_values(&l)
                .set(f64::from(c.requests));
            m.gate_error_rate.with_label_values(&l).set(c.error_rate);
            m.gate_latency_p95
                .with_label_values(&l)
                .set(c.latency_p95_ms.map_or(f64::NAN, |ms| ms / 1000.0));
        }
        for v in ["pass", "fail", "insufficient"] {
            m.gate_verdict
                .with_label_values(&[route, v])
                .set(i64::from(g.verdict == v));
        }
    }

    /// Logs, counts and alerts a change of health state (nothing if none).
    pub(super) fn note_flip(&self, upstream: UpstreamId, before: HealthState) {
        self.note_change(upstream, before, None);
    }

    /// A flip caused by live traffic: the alert names the last outcome.
    pub(super) fn note_ejection(&self, upstream: UpstreamId, before: HealthState, last: Outcome) {
        self.note_change(upstream, before, Some(last));
    }

    fn note_change(&self, upstream: UpstreamId, before: HealthState, last: Option<Outcome>) {
        let after = self.health[upstream.index()].state();
        if before == after {
            return;
        }
        let name = self.upstream_name(upstream);
        self.metrics
            .health_transitions
            .with_label_values(&[name, after.as_str()])
            .inc();
        let last_label = last.map_or("", Outcome::label);
        tracing::warn!(upstream = %name, from = before.as_str(), to = after.as_str(), last_outcome = last_label, "upstream health changed");
        let event = match after {
            HealthState::Ejected => "ejected",
            HealthState::Healthy => "recovered",
            HealthState::Unhealthy => "health_changed",
        };
        let why = last.map_or(String::new(), |o| format!("; last live outcome: {o}"));
        self.alerts.send(Alert::new(
            event,
            format!(
                "Turnout: upstream {name} is now {} (was {}{why})",
                after.as_str(),
                before.as_str()
            ),
            Some(name),
            None,
            after.as_str(),
        ));
    }
}
