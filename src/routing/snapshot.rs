//! The live snapshot: everything a request reads, behind one `ArcSwap`.
//!
//! A [`Snapshot`] is the config-derived [`Base`] (upstream clients, client
//! keys, limits, policy, resolved routes) plus the [`RoutingTable`] the
//! control task last published (health, effective shares). A request loads it
//! once and carries it to its end, so it sees one config and one routing state
//! from its first step to its last, never a mix; a new config or a new table
//! is a new snapshot, prepared fallibly and installed in one store.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::ids::{upstream_ids, RouteId, UpstreamId, MAX_IDS};
use super::table::{HealthState, ModelMatcher, RouteView, RoutingTable, SplitView, UpstreamView};
use crate::auth::ClientKeys;
use crate::config::{Config, FailoverConfig, Secrets};
use crate::limit::{Limits, ShadowLimits};
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
    /// Per upstream, a digest of everything its client and probe depend on
    /// (settings, resolved address, key): a reload restarts the probe of an
    /// upstream only when it changed.
    pub fingerprints: Vec<u64>,
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
    /// Resolves every name to an id and builds the clients. `base_urls[i]` is
    /// upstream `i`'s address (a simulated one is known only once started).
    pub fn build(
        cfg: Arc<Config>,
        secrets: &Secrets,
        base_urls: &[String],
    ) -> Result<Self, String> {
        if cfg.upstreams.len() > MAX_IDS || cfg.routes.len() > MAX_IDS {
            return Err(format!("at most {MAX_IDS} upstreams and routes"));
        }
        let mut upstreams = Vec::with_capacity(cfg.upstreams.len());
        let mut fingerprints = Vec::with_capacity(cfg.upstreams.len());
        for (i, u) in cfg.upstreams.iter().enumerate() {
            let base = base_urls
                .get(i)
                .ok_or_else(|| format!("upstreams[{i}].base_url: missing"))?;
            let key = secrets.upstream_keys.get(i).and_then(Option::as_ref);
            upstreams.push(Upstream::new(u, base, key)?);
            let digest = format!("{u:?}\n{base}\n{}", key.map_or("", |k| k.0.as_str()));
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
            upstreams: upstreams.into(),
            keys: ClientKeys::new(&cfg, secrets),
            limits: Limits::new(&cfg),
            shadow_limits: ShadowLimits::new(&cfg),
            matcher: Arc::new(ModelMatcher::new(&cfg)),
            routes,
            fingerprints,
            cfg,
        })
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
