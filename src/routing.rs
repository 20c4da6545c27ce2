//! The immutable routing table and its `ArcSwap` handle.
//!
//! One snapshot holds everything a request needs to route: routes, effective
//! split shares, and each upstream's usability. The control task is its only
//! writer and publishes a whole new table on every change; the request path
//! does one `load()` and takes no lock, so it sees the old table or the new
//! one, never a mix.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::time::Instant;

use crate::config::Config;
use crate::split::{self, Chain};

/// Health state names of PRODUCT.md §3.4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthState {
    /// Usable.
    Healthy,
    /// Active probes failing.
    Unhealthy,
    /// Removed for a while after failing live traffic.
    Ejected,
}

impl HealthState {
    /// Lower-case name, as in `/admin/status` and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
            Self::Ejected => "ejected",
        }
    }
}

/// One upstream as routing sees it.
#[derive(Debug, Clone)]
pub struct UpstreamView {
    /// Config name.
    pub name: Arc<str>,
    /// Health state.
    pub state: HealthState,
    /// Last probe latency.
    pub probe_latency_ms: Option<f64>,
    /// Live error rate over the outlier window (0–1).
    pub error_rate: f64,
    /// EWMA of live time to first byte, milliseconds.
    pub ttfb_ewma_ms: Option<f64>,
    /// End of the current ejection (wall clock), if ejected.
    pub ejected_until: Option<SystemTime>,
    /// A 429's `Retry-After` keeps it out of rotation until then.
    pub cooling_until: Option<Instant>,
    /// Models learned from its `/models`.
    pub models: Arc<Vec<String>>,
}

impl UpstreamView {
    /// Whether routing should try it now (outside panic mode).
    pub fn usable(&self, now: Instant) -> bool {
        self.state == HealthState::Healthy && self.cooling_until.is_none_or(|t| now >= t)
    }
}

/// A route's effective split.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SplitView {
    /// Upstream index of the target.
    pub target: usize,
    /// Effective share (percent).
    pub percentage: f64,
    /// Share in the config file.
    pub configured_percentage: f64,
}

/// One route.
#[derive(Debug, Clone)]
pub struct RouteView {
    /// Config name.
    pub name: Arc<str>,
    /// Upstream index of the primary.
    pub primary: usize,
    /// Upstream indices of the fallbacks.
    pub fallbacks: Vec<usize>,
    /// The split, if the route has one.
    pub split: Option<SplitView>,
}

/// Model name → route, from the config's literal names and glob patterns.
#[derive(Debug, Default)]
pub struct ModelMatcher {
    literals: HashMap<String, usize>,
    globs: Vec<(String, usize)>,
}

impl ModelMatcher {
    /// Builds from routes in order; the first route that matches wins.
    pub fn new(cfg: &Config) -> Self {
        let mut m = Self::default();
        for (i, r) in cfg.routes.iter().enumerate() {
            for p in &r.models {
                if p.contains(['*', '?']) {
                    m.globs.push((p.clone(), i));
                } else {
                    m.literals.entry(p.clone()).or_insert(i);
                }
            }
        }
        m
    }

    /// The route index for a model name. A literal beats an earlier glob only
    /// when it comes from an earlier or the same route.
    pub fn route_for(&self, model: &str) -> Option<usize> {
        let lit = self.literals.get(model).copied();
        let glob = self
            .globs
            .iter()
            .find(|(p, _)| glob_match(p, model))
            .map(|(_, i)| *i);
        match (lit, glob) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Literal names, for `/v1/models`.
    pub fn literals(&self) -> impl Iterator<Item = &str> {
        self.literals.keys().map(String::as_str)
    }

    /// Glob patterns.
    pub fn globs(&self) -> impl Iterator<Item = &str> {
        self.globs.iter().map(|(p, _)| p.as_str())
    }
}

/// `*` matches any run of bytes, `?` one byte; everything else is literal.
/// Works on bytes so that it allocates nothing on the request path.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// The whole routing snapshot.
#[derive(Debug, Clone)]
pub struct RoutingTable {
    /// Routes in config order.
    pub routes: Vec<RouteView>,
    /// Upstreams in config order.
    pub upstreams: Vec<UpstreamView>,
    /// Model → route.
    pub matcher: Arc<ModelMatcher>,
}

impl RoutingTable {
    /// The order in which a request tries upstreams.
    pub fn chain(&self, route: usize, split_key: Option<&str>) -> (Chain, bool) {
        let r = &self.routes[route];
        let (target, moved) = match r.split {
            Some(s) => (
                Some(s.target),
                split::in_target(&r.name, split_key, s.percentage),
            ),
            None => (None, false),
        };
        (split::chain(r.primary, &r.fallbacks, target, moved), moved)
    }

    /// True while at least one upstream is usable (`/ready`).
    pub fn any_usable(&self) -> bool {
        let now = Instant::now();
        self.upstreams.iter().any(|u| u.usable(now))
    }

    /// Route index by name.
    pub fn route_index(&self, name: &str) -> Option<usize> {
        self.routes.iter().position(|r| &*r.name == name)
    }
}

/// Shared handle: lock-free reads, whole-table publishes.
#[derive(Clone)]
pub struct RoutingTableHandle(Arc<ArcSwap<RoutingTable>>);

impl RoutingTableHandle {
    /// Wraps the first table.
    pub fn new(t: RoutingTable) -> Self {
        Self(Arc::new(ArcSwap::from_pointee(t)))
    }
    /// The current snapshot.
    pub fn load(&self) -> Arc<RoutingTable> {
        self.0.load_full()
    }
    /// Readers see the old table or the new one, never a mix.
    pub fn publish(&self, t: RoutingTable) {
        self.0.store(Arc::new(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*", "anything"));
        assert!(glob_match("gpt-*", "gpt-4.1"));
        assert!(!glob_match("gpt-*", "claude"));
        assert!(glob_match("claude-?.5*", "claude-3.5-sonnet"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
        assert!(glob_match("exact", "exact"));
    }
}
