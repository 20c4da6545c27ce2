//! Readiness and the upstream view (PRODUCT.md §3.3).
//!
//! `/ready` says whether this replica can serve: it is up once the listeners,
//! the config and the shared state (read, or declared unreachable) are, and
//! turns 503 when a shutdown begins. It does **not** depend on upstream
//! health: in a provider-wide outage every replica stays in the load balancer
//! and answers 503 with `Retry-After` itself, rather than vanishing.
//! `/health/upstreams` is the upstream view: 200 while at least one upstream
//! is usable, 503 otherwise, with each upstream's state.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::time::Instant;

use crate::state::AppState;

/// `GET /ready`.
pub async fn ready(State(app): State<Arc<AppState>>) -> Response {
    if app.lifecycle.is_draining() {
        let body = json!({"status": "draining", "reason": "shutting down"});
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    }
    axum::Json(json!({"status": "ready"})).into_response()
}

/// `GET /health/upstreams`.
pub async fn upstreams(State(app): State<Arc<AppState>>) -> Response {
    let snap = app.live.load();
    let now = Instant::now();
    let list: Vec<_> = snap
        .table
        .upstreams
        .iter()
        .map(|u| {
            json!({
                "name": &*u.name,
                "state": u.state.as_str(),
                "usable": u.usable(now),
            })
        })
        .collect();
    let any = snap.table.upstreams.iter().any(|u| u.usable(now));
    let (code, status) = if any {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    };
    (
        code,
        axum::Json(json!({"status": status, "upstreams": list})),
    )
        .into_response()
}
