//! The live snapshot: everything a request reads, behind one `ArcSwap`.
//!
//! A [`Snapshot`] is the config-derived [`Base`] (upstream clients, client
//! keys, limits, policy, resolved routes) plus the [`RoutingTable`] the
//! control task last published (health, effective shares). A request loads it
//! once and carries it to its end, so it sees one config and one routing state
//! from its first step to its last, never a mix; a new config or a new table
//! is a new snapshot, prepared fallibly and installed in one store.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;

use tokio::time::Instant;

use super::balance::{self, Clock, EndpointCounters};
use super::ids::{upstream_ids, RouteId, UpstreamId, MAX_IDS};
use super::table::{
    EndpointView, HealthState, ModelMatcher, RouteView, RoutingTable, SplitView, UpstreamView,
};
use prometheus::IntCounter;

use crate::accounting::Transport;
use crate::auth::ClientKeys;
use crate::config::{Config, FailoverConfig, Secrets};
use crate::limit::{Limits, ShadowLimits};
use crate::metrics::RequestSeries;
use crate::upstream::Upstream;

/// Counters of one upstream that requests update as they go (lock-free).
#[derive(Debug, Default)]
pub struct UpstreamCounters {
    in_flight: AtomicU64,
}

impl UpstreamCounters {
    /// Attempts running on this upstream right now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts one attempt for as long as the guard lives.
    pub fn start(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }
}

/// One attempt in flight; dropping it ends the count.
pub struct InFlight<'a>(&'a UpstreamCounters);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What changes only with the config: built once per config, shared by every
/// snapshot published on it.
pub struct Base {
    /// The config it was built from.
    pub cfg: Arc<Config>,
    /// HTTP clients, by [`UpstreamId`].
    pub upstreams: Arc<[Upstream]>,
    /// Live counters, by [`UpstreamId`].
    pub counters: Box<[UpstreamCounters]>,
    /// Live counters of each endpoint (latency estimate, in flight), by
    /// [`UpstreamId`] then endpoint; empty for an upstream with one endpoint.
    pub endpoint_counters: Box<[Box<[EndpointCounters]>]>,
    /// The clock of the endpoint counters.
    pub clock: Clock,
    /// Client keys.
    pub keys: ClientKeys,
    /// Per-key rate limits.
    pub limits: Limits,
    /// Shadow traffic's `max_rps`, per route.
    pub shadow_limits: ShadowLimits,
    /// Model → route.
    pub matcher: Arc<ModelMatcher>,
    /// Routes with their names resolved to ids, at their configured shares.
    pub routes: Vec<RouteView>,
    /// The route of pass-through requests (`passthrough_route`, else the first).
    pub passthrough: RouteId,
    /// Metric series of finished requests, resolved on first use (see
    /// [`RequestSeries`]): per route, per upstream it can reach.
    pub series: Box<[RouteSeries]>,
    /// `turnout_upstream_attempts_total{outcome="ok"}`, per upstream and
    /// endpoint, resolved on first use (every served request counts one).
    pub ok_attempts: Box<[Box<[OnceLock<IntCounter>]>]>,
    /// Per upstream, a digest of everything its client and probe depend on
    /// (settings, resolved address, key): a reload restarts the probe of an
    /// upstream only when it changed.
    pub fingerprints: Vec<u64>,
}

/// A route's metric series slots: for each upstream it can reach (primary,
/// fallbacks, split target), one per endpoint and transport.
pub struct RouteSeries {
    by_upstream: Box<[(UpstreamId, SeriesSlots)]>,
}

/// One upstream's slots: endpoint × transport.
type SeriesSlots = Box<[OnceLock<RequestSeries>]>;

impl RouteSeries {
    fn new(r: &RouteView, upstreams: &[Upstream]) -> Self {
        let mut ids = vec![r.primary];
        ids.extend(r.fallbacks.iter().copied());
        ids.extend(r.split.map(|s| s.target));
        let mut by_upstream: Vec<(UpstreamId, SeriesSlots)> = Vec::new();
        for id in ids {
            if by_upstream.iter().any(|(u, _)| *u == id) {
                continue;
            }
            let n = upstreams.get(id.index()).map_or(1, |u| u.endpoints.len()) * 2;
            by_upstream.push((id, (0..n).map(|_| OnceLock::new()).collect()));
        }
        Self {
            by_upstream: by_upstream.into(),
        }
    }

    /// The slots of `up` (a handful of candidates: a linear search).
    fn of(&self, up: UpstreamId) -> Option<&[OnceLock<RequestSeries>]> {
        self.by_upstream
            .iter()
            .find(|(u, _)| *u == up)
            .map(|(_, s)| &**s)
    }
}

impl std::fmt::Debug for Base {
    /// Names only: clients and keys stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Base")
            .field("upstreams", &self.upstreams.len())
            .field("routes", &self.routes.len())
            .finish_non_exhaustive()
    }
}

impl Base {
    /// Resolves every name to an id and builds the clients. `endpoints[i]` is
    /// upstream `i`'s `(name, base_url)` list (a simulated one is known only
    /// once started).
    pub fn build(
        cfg: Arc<Config>,
        secrets: &Secrets,
        endpoints: &[Vec<(String, String)>],
    ) -> Result<Self, String> {
        if cfg.upstreams.len() > MAX_IDS || cfg.routes.len() > MAX_IDS {
            return Err(format!("at most {MAX_IDS} upstreams and routes"));
        }
        let mut upstreams = Vec::with_capacity(cfg.upstreams.len());
        let mut fingerprints = Vec::with_capacity(cfg.upstreams.len());
        for (i, u) in cfg.upstreams.iter().enumerate() {
            let base = endpoints
                .get(i)
                .ok_or_else(|| format!("upstreams[{i}].base_url: missing"))?;
            let key = secrets.upstream_keys.get(i).and_then(Option::as_ref);
            upstreams.push(Upstream::new(u, base, key)?);
            let digest = format!("{u:?}\n{base:?}\n{}", key.map_or("", |k| k.0.as_str()));
            fingerprints.push(xxhash_rust::xxh3::xxh3_64(digest.as_bytes()));
        }
        let id = |name: &str, key: String| -> Result<UpstreamId, String> {
            cfg.upstreams
                .iter()
                .position(|u| u.name == name)
                .and_then(UpstreamId::new)
                .ok_or_else(|| format!("{key}: no upstream named {name:?}"))
        };
        let mut routes = Vec::with_capacity(cfg.routes.len());
        for (i, r) in cfg.routes.iter().enumerate() {
            let primary = id(&r.primary, format!("routes[{i}].primary"))?;
            let fallbacks = r
                .fallbacks
                .iter()
                .map(|f| id(f, format!("routes[{i}].fallbacks")))
                .collect::<Result<Vec<_>, _>>()?;
            let split = match &r.split {
                Some(s) => Some(SplitView {
                    target: id(&s.target, format!("routes[{i}].split.target"))?,
                    percentage: s.percentage,
                    configured_percentage: s.percentage,
                }),
                None => None,
            };
            routes.push(RouteView::new(
                r.name.as_str().into(),
                primary,
                fallbacks,
                split,
            ));
        }
        let endpoint_counters = upstreams
            .iter()
            .map(|u| {
                let n = if u.has_endpoints() {
                    u.endpoints.len()
                } else {
                    0
                };
                (0..n).map(|_| EndpointCounters::default()).collect()
            })
            .collect();
        let series = routes
            .iter()
            .map(|r| RouteSeries::new(r, &upstreams))
            .collect();
        let ok_attempts = upstreams
            .iter()
            .map(|u| u.endpoints.iter().map(|_| OnceLock::new()).collect())
            .collect();
        let passthrough = cfg
            .passthrough_route
            .as_deref()
            .map_or(Some(0), |name| {
                cfg.routes.iter().position(|r| r.name == name)
            })
            .and_then(RouteId::new)
            .ok_or("passthrough_route: no such route")?;
        Ok(Self {
            passthrough,
            counters: cfg.upstreams.iter().map(|_| Default::default()).collect(),
            endpoint_counters,
            clock: Clock::new(Instant::now()),
            upstreams: upstreams.into(),
            keys: ClientKeys::new(&cfg, secrets),
            limits: Limits::new(&cfg),
            shadow_limits: ShadowLimits::new(&cfg),
            matcher: Arc::new(ModelMatcher::new(&cfg)),
            routes,
            series,
            ok_attempts,
            fingerprints,
            cfg,
        })
    }

    /// The slot of a finished request's metric series (`None` for an
    /// upstream the route cannot reach, which is then looked up by labels).
    pub fn series(
        &self,
        route: RouteId,
        up: UpstreamId,
        endpoint: usize,
        transport: Transport,
    ) -> Option<&OnceLock<RequestSeries>> {
        let slots = self.series.get(route.index())?.of(up)?;
        let t = match transport {
            Transport::Http => 0,
            Transport::Ws => 1,
        };
        slots.get(endpoint * 2 + t)
    }

    /// The slot of an upstream endpoint's `ok` attempts counter.
    pub fn ok_attempts(&self, up: UpstreamId, endpoint: usize) -> Option<&OnceLock<IntCounter>> {
        self.ok_attempts.get(up.index())?.get(endpoint)
    }

    /// The same base with other rate limits (a fleet's leases).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Every upstream id.
    pub fn upstream_ids(&self) -> impl Iterator<Item = UpstreamId> {
        upstream_ids(self.upstreams.len())
    }

    /// Every route id.
    pub fn route_ids(&self) -> impl Iterator<Item = RouteId> {
        (0..self.routes.len()).filter_map(RouteId::new)
    }

    /// The routing table before any health or share is known: everything
    /// healthy, every share as configured.
    pub fn initial_table(&self) -> RoutingTable {
        RoutingTable {
            routes: self.routes.clone(),
            upstreams: self
                .upstreams
                .iter()
                .map(|u| UpstreamView {
                    name: u.name.clone(),
                    state: HealthState::Healthy,
                    probe_latency_ms: None,
                    error_rate: 0.0,
                    ttfb_ewma_ms: None,
                    ejected_until: None,
                    cooling_until: None,
                    models: Arc::default(),
                    ttfb_p95: None,
                    endpoints: u
                        .endpoints
                        .iter()
                        .map(|e| EndpointView::fresh(e.name.clone()))
                        .collect(),
                })
                .collect(),
            matcher: self.matcher.clone(),
        }
    }
}

/// Everything one request reads: loaded once, carried to its end.
pub struct Snapshot {
    base: Arc<Base>,
    /// Routes, shares and upstream health as last published.
    pub table: RoutingTable,
}

impl Snapshot {
    /// A snapshot of `base` with a routing table built for it.
    pub fn new(base: Arc<Base>, table: RoutingTable) -> Self {
        Self { base, table }
    }

    /// The config-derived part.
    pub fn base(&self) -> &Arc<Base> {
        &self.base
    }

    /// The config this snapshot was built from.
    pub fn cfg(&self) -> &Config {
        &self.base.cfg
    }

    /// An upstream's client.
    pub fn upstream(&self, id: UpstreamId) -> &Upstream {
        &self.base.upstreams[id.index()]
    }

    /// An upstream's live counters.
    pub fn counters(&self, id: UpstreamId) -> &UpstreamCounters {
        &self.base.counters[id.index()]
    }

    /// The live counters of an upstream's endpoint (`None` for an upstream
    /// with a single endpoint: nothing to choose, nothing to measure).
    pub fn endpoint_counters(&self, id: UpstreamId, endpoint: usize) -> Option<&EndpointCounters> {
        self.base.endpoint_counters.get(id.index())?.get(endpoint)
    }

    /// Which endpoint of `id` an attempt goes to: power of two choices over
    /// the usable endpoints not in `avoid` (those this request already
    /// tried), falling back to any not tried, then to any usable, then to all.
    pub fn pick_endpoint(&self, id: UpstreamId, avoid: u64, now: Instant) -> usize {
        let Some(counters) = self.base.endpoint_counters.get(id.index()) else {
            return 0;
        };
        let n = counters.len().min(64);
        if n <= 1 {
            return 0;
        }
        let view = self.table.upstream(id);
        let all = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
        let usable = view.usable_endpoints() & all;
        let candidates = [usable & !avoid, all & !avoid, usable, all]
            .into_iter()
            .find(|m| *m != 0)
            .unwrap_or(all);
        let t = self.base.clock.ns(now);
        let slow_start = self.base.cfg.upstreams[id.index()].slow_start;
        let mut rng = fastrand::Rng::new();
        balance::choose(
            candidates,
            |i| counters[i].cost(t),
            |i| {
                let since = view.endpoints.get(i).and_then(|e| e.slow_start_since);
                balance::slow_start_weight(since, slow_start, now)
            },
            &mut rng,
        )
    }

    /// Client keys.
    pub fn keys(&self) -> &ClientKeys {
        &self.base.keys
    }

    /// Per-key rate limits.
    pub fn limits(&self) -> &Limits {
        &self.base.limits
    }

    /// How a request walks its chain.
    pub fn failover(&self) -> &FailoverConfig {
        &self.base.cfg.failover
    }
}

/// The shared handle: lock-free loads, whole-snapshot publishes.
#[derive(Clone)]
pub struct Live(Arc<ArcSwap<Snapshot>>);

impl Live {
    /// Starts with `first`.
    pub fn new(first: Snapshot) -> Self {
        Self(Arc::new(ArcSwap::from_pointee(first)))
    }

    /// The current snapshot (no lock; one atomic reference count).
    pub fn load(&self) -> Arc<Snapshot> {
        self.0.load_full()
    }

    /// Readers see the old snapshot or the new one, never a mix.
    pub fn publish(&self, s: Snapshot) {
        self.0.store(Arc::new(s))
    }
}
