//! The routing table: routes with their effective split shares, each
//! upstream's usability, and the model matcher. Part of the live
//! [`Snapshot`](super::Snapshot); the control task builds a new one on every
//! change, a request reads the one its snapshot carries.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use tokio::time::Instant;

use super::ids::{RouteId, UpstreamId};
use super::split::{self, Chain};
use crate::config::Config;

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
    /// The target.
    pub target: UpstreamId,
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
    /// The primary.
    pub primary: UpstreamId,
    /// The fallbacks, in order.
    pub fallbacks: Vec<UpstreamId>,
    /// The split, if the route has one.
    pub split: Option<SplitView>,
    /// Ramp, gates and shadow figures (PRODUCT.md §3.9), for status.
    pub progress: super::Progress,
    /// The two possible chains, computed once: `[outside the share, in it]`.
    chains: [Chain; 2],
}

impl RouteView {
    /// A route; its chains are computed here, not per request.
    pub fn new(
        name: Arc<str>,
        primary: UpstreamId,
        fallbacks: Vec<UpstreamId>,
        split: Option<SplitView>,
    ) -> Self {
        let fb: Vec<usize> = fallbacks.iter().map(|f| f.index()).collect();
        let target = split.map(|s| s.target.index());
        let chains = [false, true].map(|moved| split::chain(primary.index(), &fb, target, moved));
        Self {
            name,
            primary,
            fallbacks,
            split,
            progress: super::Progress::default(),
            chains,
        }
    }

    /// Primary then fallbacks: the chain of everyone outside the share.
    pub fn unsplit_chain(&self) -> Chain {
        self.chains[0]
    }

    /// The same route with another effective share.
    pub fn with_percentage(&self, percentage: f64) -> Self {
        let mut r = self.clone();
        if let Some(s) = r.split.as_mut() {
            s.percentage = percentage;
        }
        r
    }
}

/// Model name → route, from the config's literal names and glob patterns.
#[derive(Debug, Default)]
pub struct ModelMatcher {
    literals: HashMap<String, RouteId>,
    globs: Vec<(String, RouteId)>,
}

impl ModelMatcher {
    /// Builds from routes in order; the first route that matches wins.
    pub fn new(cfg: &Config) -> Self {
        let mut m = Self::default();
        for (i, r) in cfg.routes.iter().enumerate() {
            let Some(i) = RouteId::new(i) else { break };
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
    pub fn route_for(&self, model: &str) -> Option<RouteId> {
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

/// The routing part of a snapshot.
#[derive(Debug, Clone)]
pub struct RoutingTable {
    /// Routes in config order (by [`RouteId`]).
    pub routes: Vec<RouteView>,
    /// Upstreams in config order (by [`UpstreamId`]).
    pub upstreams: Vec<UpstreamView>,
    /// Model → route.
    pub matcher: Arc<ModelMatcher>,
}

impl RoutingTable {
    /// The order in which a request tries upstreams, and whether the user is
    /// in the split target's share.
    pub fn chain(&self, route: RouteId, split_key: Option<&str>) -> (Chain, bool) {
        let r = self.route(route);
        let moved = r
            .split
            .is_some_and(|s| split::in_target(&r.name, split_key, s.percentage));
        (r.chains[usize::from(moved)], moved)
    }

    /// A route by id.
    pub fn route(&self, id: RouteId) -> &RouteView {
        &self.routes[id.index()]
    }

    /// An upstream's routing view by id.
    pub fn upstream(&self, id: UpstreamId) -> &UpstreamView {
        &self.upstreams[id.index()]
    }

    /// True while at least one upstream is usable (`/health/upstreams`).
    pub fn any_usable(&self) -> bool {
        let now = Instant::now();
        self.upstreams.iter().any(|u| u.usable(now))
    }

    /// Route id by name.
    pub fn route_index(&self, name: &str) -> Option<RouteId> {
        self.routes
            .iter()
            .position(|r| &*r.name == name)
            .and_then(RouteId::new)
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
