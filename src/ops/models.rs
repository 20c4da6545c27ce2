//! `GET /v1/models` (client-facing names) and `GET /v1/account` (the caller's usage).

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::auth::ClientIdentity;
use crate::error::ApiError;
use crate::routing::{glob_match, Snapshot};
use crate::state::AppState;

/// Every literal name in `routes[].models`, every `model_map` key, and the
/// upstreams' own models (learned from their `/models`) that match a glob of a
/// route they serve.
pub fn client_model_names(snap: &Snapshot) -> BTreeSet<String> {
    let t = &snap.table;
    let mut names: BTreeSet<String> = t.matcher.literals().map(str::to_owned).collect();
    for u in snap.cfg().upstreams.iter() {
        names.extend(u.model_map.keys().cloned());
    }
    for (ri, r) in snap.cfg().routes.iter().enumerate() {
        let view = &t.routes[ri];
        let members = std::iter::once(view.primary)
            .chain(view.fallbacks.iter().copied())
            .chain(view.split.map(|s| s.target));
        for u in members {
            for m in t.upstream(u).models.iter() {
                if r.models
                    .iter()
                    .any(|p| p.contains(['*', '?']) && glob_match(p, m))
                {
                    names.insert(m.clone());
                }
            }
        }
    }
    names
}

/// `GET /v1/models`.
pub async fn list(State(app): State<Arc<AppState>>, req: Request) -> Response {
    let snap = request_snapshot(&app, &req);
    let data: Vec<_> = client_model_names(&snap)
        .into_iter()
        .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "turnout"}))
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

/// `GET /v1/account`: the calling key's name, limit and usage since the process started.
pub async fn account(State(app): State<Arc<AppState>>, req: Request) -> Response {
    let Some(id) = req.extensions().get::<ClientIdentity>() else {
        return ApiError::bad_request(
            "Authentication is disabled, so there is no account to show.",
        )
        .into_response();
    };
    let snap = request_snapshot(&app, &req);
    let rpm = snap
        .cfg()
        .auth
        .as_ref()
        .and_then(|a| a.keys.get(id.index))
        .and_then(|k| k.rpm);
    let key = app.accounting.key_usage(id.index);
    // A fleet shows the fleet's totals (kept in Redis), else this process's.
    let (usage, since) = match key.and_then(|u| u.fleet_view()) {
        Some(fleet) => (Some(fleet), "fleet (shared state)"),
        None => (key.map(|u| u.view()), "process start"),
    };
    axum::Json(json!({
        "name": &*id.name,
        "limits": {"rpm": rpm},
        "usage": usage,
        "since": since,
    }))
    .into_response()
}

/// The snapshot the admission layer loaded for this request.
fn request_snapshot(app: &AppState, req: &Request) -> Arc<Snapshot> {
    match req.extensions().get::<Arc<Snapshot>>() {
        Some(s) => s.clone(),
        None => app.live.load(),
    }
}
