//! Route → split key → chain: the routing decision of one request, taken on
//! one snapshot that the [`Plan`] carries to the request's end. HTTP and
//! WebSocket both call [`plan`] and [`split_key`].

use std::sync::Arc;

use crate::auth::ClientIdentity;
use crate::error::ApiError;
use crate::routing::split::Chain;
use crate::routing::{RouteId, Snapshot, UpstreamId};

/// Where one request goes, decided once.
#[derive(Clone)]
pub struct Plan {
    /// The snapshot the decision was taken on (the request's config and table).
    pub snap: Arc<Snapshot>,
    /// The route that serves the model.
    pub route: RouteId,
    /// Upstreams in the order the walk tries them.
    pub chain: Chain,
    /// The user is in the split target's share.
    pub in_split: bool,
}

impl Plan {
    /// The route's name (metric label, log field).
    pub fn route_name(&self) -> &Arc<str> {
        &self.snap.table.route(self.route).name
    }

    /// The user's cohort on a route with a split (PRODUCT.md §3.11):
    /// `target` inside the share, `control` outside it; none without a split.
    pub fn cohort(&self) -> Option<&'static str> {
        let split = self.snap.table.route(self.route).split;
        split.map(|_| if self.in_split { "target" } else { "control" })
    }

    /// The route's primary (prices the savings baseline).
    pub fn primary(&self) -> UpstreamId {
        self.snap.table.route(self.route).primary
    }
}

/// The split key, in order: the `x-user-id` header (or the WebSocket's
/// `?user=`), the body's `user`, the client key's name; `None` places the
/// request at random.
pub fn split_key<'a>(
    header_user: Option<&'a str>,
    body_user: Option<&'a str>,
    identity: Option<&'a ClientIdentity>,
) -> Option<&'a str> {
    header_user
        .filter(|v| !v.is_empty())
        .or(body_user)
        .or(identity.map(|i| &*i.name))
}

/// Finds the model's route and the user's chain; `404 model_not_found` when
/// no route serves the model (no upstream is called).
pub fn plan(snap: Arc<Snapshot>, model: &str, split_key: Option<&str>) -> Result<Plan, ApiError> {
    let Some(route) = snap.table.matcher.route_for(model) else {
        return Err(ApiError::model_not_found(model));
    };
    let (chain, in_split) = snap.table.chain(route, split_key);
    Ok(Plan {
        snap,
        route,
        chain,
        in_split,
    })
}

/// The plan of a pass-through request (PRODUCT.md §3.3): the primary of
/// `passthrough_route`, then its fallbacks, never split (a stored resource
/// lives on one provider).
pub fn passthrough(snap: Arc<Snapshot>) -> Plan {
    let route = snap.base().passthrough;
    let chain = snap.table.route(route).unsplit_chain();
    Plan {
        snap,
        route,
        chain,
        in_split: false,
    }
}
