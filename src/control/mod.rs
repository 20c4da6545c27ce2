//! The control task: the single writer of the live snapshot's routing table.
//!
//! Probe results, live outcomes and admin changes arrive as [`Event`]s on one
//! bounded channel; the task updates health ([`health`]), split shares and
//! automatic rollbacks ([`splits`], [`rollback`]), and publishes a whole new
//! snapshot whenever something routing-relevant changed ([`publish`]). Split
//! changes are persisted by the [`store`] writer, off this loop; [`alerts`]
//! go out from their own queue. No request ever waits on it: outcomes are
//! sent with `try_send`.
//!
//! A fleet shares its shares through Redis ([`shared`]: the store, and a sync
//! task that brings the other replicas' changes in as [`Event::Shared`]). A
//! hot reload ([`reload`]) builds a new base and hands it over as
//! [`Event::Reload`] ([`swap`]).

pub mod alerts;
pub mod events;
pub mod gates;
pub mod health;
pub mod overrides;
mod progressive;
mod publish;
pub mod ramp;
pub mod reload;
pub mod rollback;
pub mod shadow;
pub mod shared;
pub mod simulated;
mod splits;
pub mod store;
mod swap;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

pub use events::{Event, ReloadReport, SplitChange, Trigger};
pub use ramp::RampAction;

use alerts::Alerts;
use health::prober::Probes;
use health::{EndpointsHealth, Verdict};
use shared::windows::Tally;
use splits::Splits;
use store::{Overrides, SplitStore, StoreWriter};

use crate::metrics::Metrics;
use crate::routing::{Base, HealthState, Live, RouteId, UpstreamId};

/// Events queued beyond this are dropped (outcomes only; they are statistics).
const QUEUE: usize = 8192;
/// Events applied after the one that woke the task, before it publishes and
/// lets other tasks run (a bounded share of the worker under a flood).
const MAX_BATCH: usize = 256;

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

    /// Changes a route's share; answers once the new snapshot is published
    /// and the change persisted (or not: `persisted` says).
    pub async fn set_split(
        &self,
        route: RouteId,
        percentage: f64,
        trigger: Trigger,
    ) -> Option<SplitChange> {
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

    /// Swaps in a reloaded config; answers once the new snapshot is published.
    pub async fn reload(&self, base: Arc<Base>) -> Option<ReloadReport> {
        let (reply, rx) = oneshot::channel();
        self.send(Event::Reload { base, reply }).await;
        rx.await.ok()
    }

    /// Starts, pauses or resumes a route's ramp; answers once the change
    /// is published, or with why it does not apply.
    pub async fn ramp(&self, route: RouteId, action: RampAction) -> Result<(), String> {
        let (reply, rx) = oneshot::channel();
        self.send(Event::Ramp {
            route,
            action,
            reply,
        })
        .await;
        rx.await
            .unwrap_or_else(|_| Err("the control task is not running".into()))
    }
}

/// State owned by the control task.
pub struct Control {
    base: Arc<Base>,
    live: Live,
    health: Vec<EndpointsHealth>,
    models: Vec<Arc<Vec<String>>>,
    splits: Splits,
    store: StoreWriter,
    metrics: Metrics,
    alerts: Alerts,
    rx: mpsc::Receiver<Event>,
    /// Its own handle, for the probe loops it starts.
    me: ControlHandle,
    probes: Probes,
    /// A fleet: the target outcomes the sync task adds to the fleet's window.
    tally: Option<Arc<Tally>>,
    wall_offset: (Instant, SystemTime),
}

impl Control {
    /// Applies the shares read from `store` (`overrides`), then builds and
    /// publishes the first snapshot of `base`. Probes start with [`Control::run`].
    pub fn new(
        base: Arc<Base>,
        overrides: Overrides,
        store: Arc<dyn SplitStore>,
        metrics: Metrics,
        alerts: Alerts,
    ) -> (Self, ControlHandle, Live) {
        let now = Instant::now();
        let splits = Splits::new(&base, overrides, now);
        let (tx, rx) = mpsc::channel(QUEUE);
        let me = ControlHandle { tx };
        let live = Live::new(crate::routing::Snapshot::new(
            base.clone(),
            base.initial_table(),
        ));
        let mut c = Self {
            health: base
                .cfg
                .upstreams
                .iter()
                .zip(base.upstreams.iter())
                .map(|(u, c)| {
                    EndpointsHealth::new(c.endpoints.len(), &u.health, &base.cfg.outlier, now)
                })
                .collect(),
            models: base.upstreams.iter().map(|_| Arc::default()).collect(),
            splits,
            store: StoreWriter::start(store),
            metrics,
            alerts,
            rx,
            me: me.clone(),
            probes: Probes::default(),
            tally: None,
            wall_offset: (now, SystemTime::now()),
            live: live.clone(),
            base,
        };
        c.autostart_ramps();
        c.init_metrics();
        c.publish();
        (c, me, live)
    }

    /// A fleet: automatic rollbacks are judged on the fleet's outcomes,
    /// which this replica contributes to through `tally`.
    pub fn share_windows(&mut self, tally: Arc<Tally>) {
        self.tally = Some(tally);
        self.splits.judge_on_fleet();
    }

    /// Starts the probes, then runs until shutdown (the probes stop with it).
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        self.probes.update(&self.base, &self.me, &self.metrics);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            let changed = tokio::select! {
                _ = shutdown.changed() => return,
                ev = self.rx.recv() => match ev {
                    Some(ev) => self.apply_batch(ev),
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
        for up in self.base.upstream_ids() {
            let i = up.index();
            let before = self.health[i].state();
            for e in 0..self.health[i].each.len() {
                let before_ep = self.health[i].each[e].state();
                if self.health[i].each[e].on_tick(now) {
                    self.endpoint_flipped(up, e, before_ep, now);
                    changed = true;
                }
            }
            self.note_flip(up, before);
        }
        changed |= self.progressive_tick(now);
        // Error rates shown in status age out even without traffic.
        changed || self.health.iter().any(|h| h.counts(now).0 > 0)
    }

    /// Applies `first` and the events queued behind it (at most
    /// [`MAX_BATCH`]): under load one wake of this task takes many requests'
    /// outcomes, and the snapshot is published once for all of them, not
    /// once per request. True when the snapshot must be republished.
    /// The batch shares one reading of the clock: its events were queued
    /// within the same wake.
    fn apply_batch(&mut self, first: Event) -> bool {
        let now = Instant::now();
        let mut changed = self.apply(first, now);
        for _ in 0..MAX_BATCH {
            match self.rx.try_recv() {
                Ok(ev) => changed |= self.apply(ev, now),
                Err(_) => break,
            }
        }
        changed
    }

    /// Applies one event at `now`; true when the snapshot must be
    /// republished.
    fn apply(&mut self, ev: Event, now: Instant) -> bool {
        match ev {
            Event::Probe {
                probe,
                endpoint,
                ok,
                latency,
                models,
            } => {
                // A loop stopped by a reload, or not this endpoint's loop.
                let Some((upstream, probed)) = self.probes.target_of(probe) else {
                    return false;
                };
                let i = upstream.index();
                if probed != endpoint || endpoint >= self.health[i].each.len() {
                    return false;
                }
                let before = self.health[i].state();
                let before_ep = self.health[i].each[endpoint].state();
                let cfg = &self.base.cfg.upstreams[i].health;
                let flipped = self.health[i].each[endpoint].on_probe(ok, latency, cfg, now);
                if flipped {
                    self.endpoint_flipped(upstream, endpoint, before_ep, now);
                    self.note_flip(upstream, before);
                }
                if let Some(m) = models {
                    if *self.models[i] != m {
                        self.models[i] = Arc::new(m);
                        return true;
                    }
                }
                flipped
            }
            ev @ Event::Outcome { .. } => self.on_outcome(ev, now),
            Event::Cohort {
                route,
                target,
                ok,
                latency,
            } => {
                self.on_cohort(route, target, ok, latency);
                false
            }
            Event::ShadowPair { route, pair } => {
                if let Some(s) = self
                    .splits
                    .shadows
                    .get_mut(route.index())
                    .and_then(Option::as_mut)
                {
                    s.add(pair);
                }
                false
            }
            Event::Ramp {
                route,
                action,
                reply,
            } => {
                // Publishes by itself, before the answer goes out.
                self.on_ramp(route, action, reply);
                false
            }
            Event::SetSplit {
                route,
                percentage,
                trigger,
                reply,
            } => {
                // Publishes by itself, before the answer goes out.
                self.set_share(route, percentage, trigger, None, Some(reply));
                false
            }
            Event::Reload { base, reply } => {
                let report = self.swap(base);
                let _ = reply.send(report);
                false
            }
            Event::Shared(remote) => self.apply_shared(&remote),
            Event::FleetWindow { route, buckets } => self.apply_fleet_window(&route, buckets),
        }
    }

    /// A live outcome: the endpoint's health (a 429 cools every endpoint:
    /// one key, one account), the upstream's, and the split target's watch.
    fn on_outcome(&mut self, ev: Event, now: Instant) -> bool {
        let Event::Outcome {
            upstream,
            endpoint,
            route,
            outcome,
            retry_after,
            ttfb,
            in_split,
        } = ev
        else {
            return false;
        };
        let i = upstream.index();
        let verdict = Verdict::of(outcome, retry_after, self.base.cfg.failover.retry_after_max);
        let before = self.health[i].state();
        let was_cooling = self.health[i].cooling_until();
        let outlier = &self.base.cfg.outlier;
        let mut ejected = false;
        if let Verdict::Throttled(_) = verdict {
            for h in &mut self.health[i].each {
                h.on_outcome(verdict, ttfb, outlier, now);
            }
        } else if let Some(h) = self.health[i].each.get_mut(endpoint) {
            let before_ep = h.state();
            ejected = h.on_outcome(verdict, ttfb, outlier, now);
            if ejected {
                self.endpoint_flipped(upstream, endpoint, before_ep, now);
            }
        }
        if ejected {
            self.metrics
                .ejections
                .with_label_values(&[&self.base.upstreams[i].name])
                .inc();
            self.note_ejection(upstream, before, outcome);
        }
        let up_ejected =
            before != HealthState::Ejected && self.health[i].state() == HealthState::Ejected;
        let mut changed = ejected || was_cooling != self.health[i].cooling_until();
        if up_ejected {
            changed |= self.roll_back_routes_targeting(upstream);
        }
        if in_split && !outcome.excludes_upstream() {
            changed |= self.watch_target(route, upstream, outcome.is_ok(), ttfb, now);
        }
        changed
    }

    /// An endpoint of an upstream with several changed state: logged and
    /// alerted once; back to healthy, its latency estimate starts afresh and
    /// its slow start begins.
    fn endpoint_flipped(
        &mut self,
        upstream: UpstreamId,
        e: usize,
        before: HealthState,
        now: Instant,
    ) {
        let i = upstream.index();
        let back = self.health[i].note_flip(e, before, now);
        let up = &self.base.upstreams[i];
        if !up.has_endpoints() {
            return;
        }
        if back {
            if let Some(c) = self.base.endpoint_counters.get(i).and_then(|c| c.get(e)) {
                c.reset(self.base.clock.ns(now));
            }
        }
        let after = self.health[i].each[e].state();
        let name = up.endpoints.get(e).map_or("", |x| &*x.name);
        tracing::warn!(upstream = %up.name, endpoint = name, from = before.as_str(), to = after.as_str(), "endpoint health changed");
        self.alerts.send(alerts::Alert::new(
            "endpoint_health_changed",
            format!(
                "Turnout: endpoint {name} of upstream {} is now {} (was {})",
                up.name,
                after.as_str(),
                before.as_str()
            ),
            Some(&up.name),
            None,
            after.as_str(),
        ));
    }

    fn wall(&self, t: Instant) -> SystemTime {
        let (i0, w0) = self.wall_offset;
        w0 + t.saturating_duration_since(i0)
    }

    fn upstream_name(&self, id: UpstreamId) -> &str {
        &self.base.upstreams[id.index()].name
    }
}
