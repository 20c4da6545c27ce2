//! The control task: the single writer of the routing table.
//!
//! Probe results, live outcomes and admin changes arrive as events on one
//! bounded channel; the task updates health, splits and rollback watches, and
//! publishes a whole new table whenever something routing-relevant changed.
//! No request ever waits on it: outcomes are sent with `try_send`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::alerts::{Alert, Alerts};
use crate::config::Config;
use crate::health::{UpstreamHealth, Verdict};
use crate::metrics::Metrics;
use crate::overrides::{Overrides, RouteOverride};
use crate::rollback::RollbackWatch;
use crate::routing::{
    HealthState, ModelMatcher, RouteView, RoutingTable, RoutingTableHandle, SplitView, UpstreamView,
};

/// Events queued beyond this are dropped (outcomes only; they are statistics).
const QUEUE: usize = 8192;

/// Who changed a split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// `PUT /admin/routes/{route}/split`.
    Set,
    /// `POST /admin/routes/{route}/rollback`.
    Manual,
    /// Automatic rollback.
    Auto,
}

impl Trigger {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Set => "set",
            Self::Manual => "manual",
            Self::Auto => "auto",
        }
    }
}

/// Something the control task must take into account.
#[derive(Debug)]
pub enum Event {
    /// An active probe finished.
    Probe {
        upstream: usize,
        ok: bool,
        latency: Duration,
        models: Option<Vec<String>>,
    },
    /// A live attempt finished.
    Outcome {
        upstream: usize,
        route: usize,
        verdict: Verdict,
        ttfb: Option<Duration>,
        in_split: bool,
    },
    /// An admin change of share; replies with the new split.
    SetSplit {
        route: usize,
        percentage: f64,
        trigger: Trigger,
        reply: oneshot::Sender<Option<(SplitView, bool)>>,
    },
}

/// Cheap handle used by requests, probes and the admin API.
#[derive(Clone)]
pub struct ControlHandle {
    tx: mpsc::Sender<Event>,
}

impl ControlHandle {
    /// Queues without waiting; a full queue drops the event.
    pub fn report(&self, ev: Event) {
        let _ = self.tx.try_send(ev);
    }

    /// Queues, waiting for room (probes and admin changes must not be lost).
    pub async fn send(&self, ev: Event) {
        let _ = self.tx.send(ev).await;
    }

    /// Changes a route's share and waits until the new table is published.
    pub async fn set_split(
        &self,
        route: usize,
        percentage: f64,
        trigger: Trigger,
    ) -> Option<(SplitView, bool)> {
        let (reply, rx) = oneshot::channel();
        self.send(Event::SetSplit {
            route,
            percentage,
            trigger,
            reply,
        })
        .await;
        rx.await.ok().flatten()
    }
}

/// State owned by the control task.
pub struct Control {
    cfg: Arc<Config>,
    table: RoutingTableHandle,
    matcher: Arc<ModelMatcher>,
    names: Vec<Arc<str>>,
    route_names: Vec<Arc<str>>,
    health: Vec<UpstreamHealth>,
    models: Vec<Arc<Vec<String>>>,
    shares: Vec<Option<f64>>,
    watches: Vec<Option<RollbackWatch>>,
    overrides: Overrides,
    metrics: Metrics,
    alerts: Alerts,
    rx: mpsc::Receiver<Event>,
    wall_offset: (Instant, SystemTime),
    /// Whether the last override was written to `state_path`.
    persisted: bool,
}

impl Control {
    /// Loads persisted overrides, builds and publishes the first table.
    pub fn new(
        cfg: Arc<Config>,
        metrics: Metrics,
        alerts: Alerts,
    ) -> (Self, ControlHandle, RoutingTableHandle) {
        let now = Instant::now();
        let overrides = Overrides::load(&cfg.state_path);
        let shares = cfg
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
        let watches = cfg
            .routes
            .iter()
            .map(|r| {
                r.split
                    .as_ref()
                    .map(|s| RollbackWatch::new(s.auto_rollback.clone(), now))
            })
            .collect();
        let (tx, rx) = mpsc::channel(QUEUE);
        let c = Self {
            matcher: Arc::new(ModelMatcher::new(&cfg)),
            names: cfg
                .upstreams
                .iter()
                .map(|u| Arc::from(u.name.as_str()))
                .collect(),
            route_names: cfg
                .routes
                .iter()
                .map(|r| Arc::from(r.name.as_str()))
                .collect(),
            health: cfg
                .upstreams
                .iter()
                .map(|u| UpstreamHealth::new(&u.health, &cfg.outlier, now))
                .collect(),
            models: cfg.upstreams.iter().map(|_| Arc::new(Vec::new())).collect(),
            shares,
            watches,
            overrides,
            metrics,
            alerts,
            rx,
            wall_offset: (now, SystemTime::now()),
            persisted: true,
            table: RoutingTableHandle::new(RoutingTable {
                routes: vec![],
                upstreams: vec![],
                matcher: Arc::default(),
            }),
            cfg,
        };
        c.init_metrics();
        c.publish();
        let table = c.table.clone();
        (c, ControlHandle { tx }, table)
    }

    /// Exposes every known label set at 0 from the start, so dashboards show 0
    /// rather than "no data" and `increase()` sees the first event.
    fn init_metrics(&self) {
        let m = &self.metrics;
        for r in &self.route_names {
            for t in ["manual", "auto"] {
                m.rollbacks.with_label_values(&[r, t]);
            }
            m.budget_exhausted.with_label_values(&[r]);
            m.retries.with_label_values(&[r]);
        }
        for u in &self.names {
            m.ejections.with_label_values(&[u]);
            for s in [
                HealthState::Healthy,
                HealthState::Unhealthy,
                HealthState::Ejected,
            ] {
                m.health_transitions.with_label_values(&[u, s.as_str()]);
            }
        }
        for r in ["sent", "failed", "dropped"] {
            m.alerts.with_label_values(&[r]);
        }
        for t in ["http", "ws"] {
            m.active_streams.with_label_values(&[t]);
        }
    }

    fn upstream_index(&self, name: &str) -> usize {
        self.names.iter().position(|n| &**n == name).unwrap_or(0)
    }

    fn wall(&self, t: Instant) -> SystemTime {
        let (i0, w0) = self.wall_offset;
        w0 + t.saturating_duration_since(i0)
    }

    /// Builds the snapshot from the current state.
    fn build(&self) -> RoutingTable {
        let upstreams = self
            .health
            .iter()
            .enumerate()
            .map(|(i, h)| UpstreamView {
                name: self.names[i].clone(),
                state: h.state(),
                probe_latency_ms: h.probe_latency.map(|d| d.as_secs_f64() * 1000.0),
                error_rate: h.window.error_rate(Instant::now()),
                ttfb_ewma_ms: h.ewma_ttfb.map(|s| s * 1000.0),
                ejected_until: h.ejected_until().map(|t| self.wall(t)),
                cooling_until: h.cooling_until,
                models: self.models[i].clone(),
            })
            .collect();
        let routes = self
            .cfg
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| RouteView {
                name: self.route_names[i].clone(),
                primary: self.upstream_index(&r.primary),
                fallbacks: r.fallbacks.iter().map(|f| self.upstream_index(f)).collect(),
                split: r.split.as_ref().map(|s| SplitView {
                    target: self.upstream_index(&s.target),
                    percentage: self.shares[i].unwrap_or(s.percentage),
                    configured_percentage: s.percentage,
                }),
            })
            .collect();
        RoutingTable {
            routes,
            upstreams,
            matcher: self.matcher.clone(),
        }
    }

    fn publish(&self) {
        let t = self.build();
        for u in &t.upstreams {
            let healthy = i64::from(u.state == HealthState::Healthy);
            self.metrics
                .upstream_healthy
                .with_label_values(&[&u.name])
                .set(healthy);
            for s in [
                HealthState::Healthy,
                HealthState::Unhealthy,
                HealthState::Ejected,
            ] {
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
            }
        }
        self.table.publish(t);
    }

    /// Runs until shutdown.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            let changed = tokio::select! {
                _ = shutdown.changed() => return,
                ev = self.rx.recv() => match ev {
                    Some(ev) => self.apply(ev),
                    None => return,
                },
                _ = tick.tick() => self.on_tick(),
            };
            if changed {
                self.publish();
            }
        }
    }

    fn on_tick(&mut self) -> bool {
        let now = Instant::now();
        let mut changed = false;
        for i in 0..self.health.len() {
            let before = self.health[i].state();
            if self.health[i].on_tick(now) {
                self.note_flip(i, before);
                changed = true;
            }
        }
        // Error rates shown in status age out even without traffic.
        changed || self.health.iter().any(|h| h.window.counts(now).0 > 0)
    }

    /// Applies one event; true when the table must be republished.
    pub fn apply(&mut self, ev: Event) -> bool {
        let now = Instant::now();
        match ev {
            Event::Probe {
                upstream,
                ok,
                latency,
                models,
            } => {
                let before = self.health[upstream].state();
                let cfg = &self.cfg.upstreams[upstream].health;
                let flipped = self.health[upstream].on_probe(ok, latency, cfg, now);
                if flipped {
                    self.note_flip(upstream, before);
                }
                if let Some(m) = models {
                    if *self.models[upstream] != m {
                        self.models[upstream] = Arc::new(m);
                        return true;
                    }
                }
                flipped
            }
            Event::Outcome {
                upstream,
                route,
                verdict,
                ttfb,
                in_split,
            } => {
                let before = self.health[upstream].state();
                let was_cooling = self.health[upstream].cooling_until;
                let ejected =
                    self.health[upstream].on_outcome(verdict, ttfb, &self.cfg.outlier, now);
                if ejected {
                    self.metrics
                        .ejections
                        .with_label_values(&[&self.names[upstream]])
                        .inc();
                    self.note_flip(upstream, before);
                }
                let mut changed = ejected || was_cooling != self.health[upstream].cooling_until;
                if ejected {
                    self.roll_back_routes_targeting(upstream);
                }
                if in_split && !matches!(verdict, Verdict::Throttled(_)) {
                    changed |= self.watch_target(route, upstream, verdict == Verdict::Ok, ttfb);
                }
                changed
            }
            Event::SetSplit {
                route,
                percentage,
                trigger,
                reply,
            } => {
                let view = self.set_share(route, percentage, trigger, None);
                let view = view.map(|v| (v, self.persisted));
                let _ = reply.send(view);
                true
            }
        }
    }

    /// A split target ejected for failing live traffic is rolled back too: its
    /// users are already being served by the primary, and the ejection would
    /// otherwise hide the evidence from the rollback watch.
    fn roll_back_routes_targeting(&mut self, upstream: usize) {
        for route in 0..self.cfg.routes.len() {
            let Some(s) = self.cfg.routes[route].split.as_ref() else {
                continue;
            };
            let auto = s.auto_rollback.enabled;
            if auto
                && self.upstream_index(&s.target) == upstream
                && self.shares[route].unwrap_or(0.0) > 0.0
            {
                self.set_share(
                    route,
                    0.0,
                    Trigger::Auto,
                    Some("target ejected after failing live traffic".into()),
                );
            }
        }
    }

    fn watch_target(
        &mut self,
        route: usize,
        upstream: usize,
        ok: bool,
        ttfb: Option<Duration>,
    ) -> bool {
        let is_target = self.cfg.routes[route]
            .split
            .as_ref()
            .is_some_and(|s| self.upstream_index(&s.target) == upstream);
        if !is_target || self.shares[route].unwrap_or(0.0) <= 0.0 {
            return false;
        }
        let reason = self.watches[route]
            .as_mut()
            .and_then(|w| w.observe(ok, ttfb, Instant::now()));
        match reason {
            Some(reason) => {
                self.set_share(route, 0.0, Trigger::Auto, Some(reason));
                true
            }
            None => false,
        }
    }

    fn set_share(
        &mut self,
        route: usize,
        percentage: f64,
        trigger: Trigger,
        reason: Option<String>,
    ) -> Option<SplitView> {
        let split = self.cfg.routes[route].split.as_ref()?;
        let before = self.shares[route].unwrap_or(split.percentage);
        let after = crate::split::round_percentage(percentage.clamp(0.0, 100.0));
        self.shares[route] = Some(after);
        if let Some(w) = self.watches[route].as_mut() {
            w.reset();
        }
        let name = self.route_names[route].clone();
        self.overrides.routes.insert(
            name.to_string(),
            RouteOverride {
                percentage: after,
                trigger: trigger.as_str().into(),
                updated_at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            },
        );
        self.persisted = match self.overrides.save(&self.cfg.state_path) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(path = %self.cfg.state_path.display(), "cannot persist split override: {e}");
                false
            }
        };
        tracing::info!(route = %name, before, after, trigger = trigger.as_str(), "split changed");
        if matches!(trigger, Trigger::Manual | Trigger::Auto) {
            self.metrics
                .rollbacks
                .with_label_values(&[&name, trigger.as_str()])
                .inc();
            let why = reason.unwrap_or_else(|| "operator request".into());
            self.alerts.send(Alert::new(
                "rollback",
                format!(
                    "Turnout: route {name} rolled back {before}% -> {after}% ({}: {why})",
                    trigger.as_str()
                ),
                Some(&split.target),
                Some(&name),
                trigger.as_str(),
            ));
        }
        Some(SplitView {
            target: self.upstream_index(&split.target),
            percentage: after,
            configured_percentage: split.percentage,
        })
    }

    fn note_flip(&self, upstream: usize, before: HealthState) {
        let after = self.health[upstream].state();
        if before == after {
            return;
        }
        let name = &self.names[upstream];
        self.metrics
            .health_transitions
            .with_label_values(&[name, after.as_str()])
            .inc();
        tracing::warn!(upstream = %name, from = before.as_str(), to = after.as_str(), "upstream health changed");
        let event = match after {
            HealthState::Ejected => "ejected",
            HealthState::Healthy => "recovered",
            HealthState::Unhealthy => "health_changed",
        };
        self.alerts.send(Alert::new(
            event,
            format!(
                "Turnout: upstream {name} is now {} (was {})",
                after.as_str(),
                before.as_str()
            ),
            Some(name),
            None,
            after.as_str(),
        ));
    }
}
