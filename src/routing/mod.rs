//! Routing: what a request is matched against and which upstreams it may try.
//!
//! - [`ids`]: config names resolved to typed ids, once per config;
//! - [`split`]: the pure `(route, key, percentage)` → chain order function;
//! - [`table`]: routes, effective shares, upstream usability, model matcher;
//! - [`snapshot`]: the one live [`Snapshot`] behind an `ArcSwap` ([`Live`]).

pub mod ids;
pub mod progress;
pub mod snapshot;
pub mod split;
pub mod table;

pub use ids::{RouteId, UpstreamId};
pub use progress::{CohortView, GateView, Progress, RampView, ShadowView};
pub use snapshot::{Base, Live, Snapshot, UpstreamCounters};
pub use table::{
    glob_match, HealthState, ModelMatcher, RouteView, RoutingTable, SplitView, UpstreamView,
};
