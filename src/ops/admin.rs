//! The admin listener: `/metrics`, `/admin/status`, `/admin/traffic`, split
//! changes, rollbacks, and the operator's page (`/admin/`, [`super::page`]).
//!
//! Bearer token from the env var named by `admin.token_env`, compared in
//! constant time. Variable unset: the admin API answers 403 (metrics stay up).

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use bytes::Bytes;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::control::RampAction;
use crate::control::Trigger;
use crate::error::ApiError;
use crate::routing::{
    CohortView, Progress, RouteId, RoutingTable, Snapshot, SplitView, UpstreamView,
};
use crate::state::AppState;

/// The admin router.
pub fn router(app: Arc<AppState>) -> Router {
    let admin = Router::new()
        .route("/admin/status", get(status))
        .route("/admin/traffic", get(traffic))
        .route("/admin/routes/{route}/split", put(set_split))
        .route("/admin/routes/{route}/rollback", post(rollback))
        .route("/admin/reload", post(reload))
        .route("/admin/routes/{route}/ramp", post(ramp))
        .route_layer(axum::middleware::from_fn_with_state(
            app.clone(),
            require_token,
        ));
    let metrics = Router::new().route("/metrics", get(metrics)).route_layer(
        axum::middleware::from_fn_with_state(app.clone(), metrics_token),
    );
    admin
        .merge(metrics)
        .merge(super::page::routes())
        .fallback(|req: Request| async move { ApiError::not_found(req.uri().path()) })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .with_state(app)
}

fn token_ok(app: &AppState, req: &Request) -> Result<(), ApiError> {
    let Some(expected) = &app.admin_token else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            "admin_disabled",
            "The admin API is disabled: its token env var is not set.",
        ));
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let a: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    if bool::from(a.ct_eq(expected)) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "invalid_admin_token",
            "Missing or wrong admin token. Send `Authorization: Bearer <token>`.",
        ))
    }
}

async fn require_token(State(app): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    match token_ok(&app, &req) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

async fn metrics_token(State(app): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if !app.live.load().cfg().admin.metrics_require_token {
        return next.run(req).await;
    }
    match token_ok(&app, &req) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    let mut rsp = app.metrics.render().into_response();
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    rsp
}

/// `/admin/status` body.
pub fn status_json(snap: &Snapshot) -> Value {
    let t = &snap.table;
    let upstreams: Vec<Value> = t
        .upstreams
        .iter()
        .zip(snap.base().counters.iter())
        .enumerate()
        .map(|(i, (u, c))| {
            let mut v = json!({
                "name": &*u.name,
                "state": u.state.as_str(),
                "probe_latency_ms": u.probe_latency_ms.map(|v| (v * 100.0).round() / 100.0),
                "error_rate": (u.error_rate * 10_000.0).round() / 10_000.0,
                "ejected_until": u.ejected_until.map(|t| humantime::format_rfc3339_millis(t).to_string()),
                "models": u.models.len(),
                "ttfb_ewma_ms": u.ttfb_ewma_ms.map(|v| (v * 100.0).round() / 100.0),
                "in_flight": c.in_flight(),
            });
            if u.endpoints.len() > 1 {
                v["endpoints"] = endpoints_json(snap, i, u);
            }
            v
        })
        .collect();
    let routes: Vec<Value> = t
        .routes
        .iter()
        .map(|r| {
            json!({
                "name": &*r.name,
                "primary": &*t.upstream(r.primary).name,
                "fallbacks": r.fallbacks.iter().map(|&f| &*t.upstream(f).name).collect::<Vec<_>>(),
                "split": r.split.map(|s| {
                    let mut v = split_json(t, &s);
                    progress_json(&mut v, &r.progress);
                    v
                }),
            })
        })
        .collect();
    json!({ "upstreams": upstreams, "routes": routes })
}

/// The endpoints of an upstream with several: health, latency estimate, load.
fn endpoints_json(snap: &Snapshot, i: usize, u: &UpstreamView) -> Value {
    let base = snap.base();
    let now = base.clock.ns(tokio::time::Instant::now());
    let counters = base.endpoint_counters.get(i);
    let list: Vec<Value> = u
        .endpoints
        .iter()
        .enumerate()
        .map(|(e, ep)| {
            let c = counters.and_then(|c| c.get(e));
            json!({
                "name": &*ep.name,
                "state": ep.state.as_str(),
                "probe_latency_ms": ep.probe_latency_ms.map(|v| (v * 100.0).round() / 100.0),
                "error_rate": (ep.error_rate * 10_000.0).round() / 10_000.0,
                "ejected_until": ep.ejected_until.map(|t| humantime::format_rfc3339_millis(t).to_string()),
                "slow_start": ep.slow_start_since.is_some(),
                "latency_ewma_ms": c.map(|c| (c.estimate_ns(now) / 1e4).round() / 100.0),
                "in_flight": c.map(|c| c.in_flight()),
            })
        })
        .collect();
    Value::Array(list)
}

fn split_json(t: &RoutingTable, s: &SplitView) -> Value {
    json!({
        "target": &*t.upstream(s.target).name,
        "percentage": s.percentage,
        "configured_percentage": s.configured_percentage,
    })
}

/// `split.ramp`, `split.gates`, `split.shadow` (PRODUCT.md §3.9), each only when configured.
fn progress_json(v: &mut Value, p: &Progress) {
    let round = |x: f64, d: f64| (x * d).round() / d;
    if let Some(r) = &p.ramp {
        v["ramp"] = json!({
            "steps": r.steps,
            "step": r.step,
            "state": r.state,
            "next_at": r.next_at.map(|t| humantime::format_rfc3339_millis(t).to_string()),
        });
    }
    if let Some(g) = &p.gates {
        let cohort = |c: &CohortView| {
            json!({
                "requests": c.requests,
                "error_rate": round(c.error_rate, 10_000.0),
                "latency_p95_ms": c.latency_p95_ms.map(|x| round(x, 100.0)),
            })
        };
        v["gates"] = json!({
            "verdict": g.verdict,
            "target": cohort(&g.target),
            "control": cohort(&g.control),
        });
    }
    if let Some(s) = &p.shadow {
        let r = |x: Option<f64>| x.map(|x| round(x, 10_000.0));
        v["shadow"] = json!({
            "pairs": s.pairs,
            "target_errors": s.target_errors,
            "primary_errors": s.primary_errors,
            "latency_ratio_p50": r(s.latency_ratio_p50),
            "latency_ratio_p95": r(s.latency_ratio_p95),
            "same_shape_rate": r(s.same_shape_rate),
            "cost_ratio": r(s.cost_ratio),
        });
    }
}

async fn status(State(app): State<Arc<AppState>>) -> Response {
    axum::Json(status_json(&app.live.load())).into_response()
}

async fn traffic(State(app): State<Arc<AppState>>) -> Response {
    axum::Json(super::traffic::traffic(&app.metrics)).into_response()
}

fn route_with_split(app: &AppState, route: &str) -> Result<(RouteId, f64), ApiError> {
    let snap = app.live.load();
    let t = &snap.table;
    let idx = t.route_index(route).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "route_not_found",
            format!("No route named {route:?}."),
        )
    })?;
    let split = t.route(idx).split.ok_or_else(|| {
        ApiError::bad_request(format!(
            "Route {route:?} has no split configured (add `split:` to it in the config)."
        ))
    })?;
    Ok((idx, split.percentage))
}

async fn change(app: &AppState, route: &str, pct: f64, trigger: Trigger) -> Response {
    let (idx, before) = match route_with_split(app, route) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    match app.control.set_split(idx, pct, trigger).await {
        Some(change) => {
            let snap = app.live.load();
            let mut v = split_json(&snap.table, &change.view);
            v["route"] = json!(route);
            v["previous_percentage"] = json!(before);
            // In force either way; `false` means it will not survive a restart.
            v["persisted"] = json!(change.persisted);
            if change.shared_store {
                // `false`: Redis is unreachable; in force here, written when it returns.
                v["shared"] = json!(change.persisted);
            }
            axum::Json(v).into_response()
        }
        None => ApiError::internal("The control task is not running.").into_response(),
    }
}

async fn set_split(
    State(app): State<Arc<AppState>>,
    Path(route): Path<String>,
    body: Bytes,
) -> Response {
    let pct = match serde_json::from_slice::<Value>(&body) {
        Ok(v) => v.get("percentage").and_then(Value::as_f64),
        Err(_) => {
            return ApiError::bad_request("Body must be JSON like {\"percentage\": 30}.")
                .into_response()
        }
    };
    match pct {
        Some(p) if (0.0..=100.0).contains(&p) => change(&app, &route, p, Trigger::Set).await,
        _ => ApiError::bad_request("`percentage` must be a JSON number from 0 to 100.")
            .into_response(),
    }
}

async fn rollback(State(app): State<Arc<AppState>>, Path(route): Path<String>) -> Response {
    change(&app, &route, 0.0, Trigger::Manual).await
}

/// `POST /admin/reload`: 200 with a summary, or 400 naming the bad key (the
/// running config stays).
async fn reload(State(app): State<Arc<AppState>>) -> Response {
    match app.reloader.reload().await {
        Ok(summary) => axum::Json(summary).into_response(),
        Err(e) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_config",
            format!("Config not reloaded (the running config stays): {e}"),
        )
        .into_response(),
    }
}

/// `POST /admin/routes/{route}/ramp` with `{"action": "start" | "pause" |
/// "resume"}`: answers the route's split (ramp included) once in force;
/// 409 when the action does not apply to the ramp's state.
async fn ramp(
    State(app): State<Arc<AppState>>,
    Path(route): Path<String>,
    body: Bytes,
) -> Response {
    let action = serde_json::from_slice::<Value>(&body).ok().and_then(|v| {
        v.get("action")
            .and_then(Value::as_str)
            .and_then(RampAction::parse)
    });
    let Some(action) = action else {
        return ApiError::bad_request(
            "Body must be JSON like {\"action\": \"start\"} (start, pause or resume).",
        )
        .into_response();
    };
    let (idx, _) = match route_with_split(&app, &route) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let has_ramp = app.live.load().cfg().routes[idx.index()]
        .split
        .as_ref()
        .is_some_and(|s| s.ramp.is_some());
    if !has_ramp {
        return ApiError::bad_request(format!(
            "Route {route:?} has no ramp configured (add `split.ramp` to it in the config)."
        ))
        .into_response();
    }
    if let Err(why) = app.control.ramp(idx, action).await {
        return ApiError::new(
            StatusCode::CONFLICT,
            "invalid_request_error",
            "ramp_conflict",
            why,
        )
        .into_response();
    }
    let snap = app.live.load();
    let r = snap.table.route(idx);
    let Some(s) = r.split else {
        return ApiError::internal("The split disappeared.").into_response();
    };
    let mut v = split_json(&snap.table, &s);
    progress_json(&mut v, &r.progress);
    v["route"] = json!(route);
    axum::Json(v).into_response()
}
