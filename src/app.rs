//! Builds the process: the first snapshot (upstream clients, keys, limits),
//! the control task, probes, alerts, and the two listeners with their tower
//! stacks.
//!
//! Public stack, outermost first (extensions a layer adds, in brackets):
//! 1. trace (a span per request, at debug level)
//! 2. request id (`x-request-id`: kept from the client or generated; echoed back) [`RequestId`]
//! 3. CORS (only for `cors_allow_origins`)
//! 4. gate (`request/gate.rs`, `/v1/` paths): loads the request's snapshot
//!    [`Arc<Snapshot>`], auth (client key [`ClientIdentity`]; 401 otherwise),
//!    the key's rate limit (`rpm`; 429 + `Retry-After`), and
//!    `x-turnout-attempts` on every answer, errors included
//! 5. edge (`request/http.rs`; WebSocket: `request/ws/`): body limit (413) →
//!    parse (400) → plan: route (404), split key, chain (`request/plan.rs`);
//!    a request that names no model is a pass-through (`request/passthrough.rs`)
//! 6. `FailoverLayer` → `Failover` (`request/failover.rs`): drives the walk
//!    (`request/walk.rs`); the one layer that retries (on a route with
//!    `hedge`, its hedging driver `request/hedge.rs` races attempts)
//! 7. leaf `UpstreamService`: one attempt on one upstream (`request/attempt.rs`)
//! 8. after the commit point: the stream reader (`request/reader.rs`), then
//!    the one finish (`request/finish.rs`)
//!
//! Request timeouts are per upstream (connect, headers, first token, idle,
//! total), because a single proxy-wide timeout cannot tell a slow stream from
//! a stuck one.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;

use crate::accounting::Accounting;
use crate::audit::AuditLog;
use crate::budget::RetryBudget;
use crate::config::{Config, Secrets};
use crate::control::alerts::Alerts;
use crate::control::store::FileStore;
use crate::control::Control;
use crate::error::ApiError;
use crate::headers::{
    ATTEMPTS_HEADER, REQUEST_ID_HEADER, TURNOUT_REQUEST_ID_HEADER, UPSTREAM_HEADER,
};
use crate::metrics::Metrics;
use crate::mock::{MockServer, MockSettings};
use crate::otel::Otel;
use crate::request::gate::GateLayer;
use crate::routing::Base;
pub use crate::state::AppState;
use tower::ServiceBuilder;

/// A running Turnout: its addresses and the means to stop it.
pub struct Running {
    /// Public listener address.
    pub addr: SocketAddr,
    /// Admin listener address.
    pub admin_addr: SocketAddr,
    /// Shared state (tests read metrics and the table through it).
    pub state: Arc<AppState>,
    shutdown: watch::Sender<bool>,
    servers: Vec<tokio::task::JoinHandle<()>>,
    _mocks: Vec<MockServer>,
}

impl Running {
    /// Stops the listeners and background tasks; open requests finish first,
    /// then the spans still queued are exported.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for s in self.servers {
            let _ = s.await;
        }
        let state = self.state.clone();
        // The exporter's shutdown blocks until its last batch is sent.
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(o) = &state.otel {
                o.shutdown();
            }
        })
        .await;
    }

    /// Resolves when a shutdown was asked for (Ctrl-C handling lives in main).
    pub fn shutdown_sender(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// Starts simulated upstreams, then everything else, on the given listeners.
pub async fn start(
    cfg: Config,
    secrets: Secrets,
    public: TcpListener,
    admin: TcpListener,
) -> Result<Running, String> {
    let cfg = Arc::new(cfg);
    let registry = prometheus::Registry::new();
    let metrics = Metrics::register(&registry).map_err(|e| format!("metrics: {e}"))?;
    metrics
        .build_info
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
    metrics.start_time.set(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
    );
    let (mocks, base_urls) = resolve_base_urls(&cfg).await?;
    let base = Arc::new(Base::build(cfg.clone(), &secrets, &base_urls)?);
    let alerts = Alerts::start(&cfg.alerts, metrics.clone());
    let store = Arc::new(FileStore::new(cfg.state_path.clone()));
    let (control, handle, live) = Control::new(base.clone(), store, metrics.clone(), alerts);
    let (shutdown, shutdown_rx) = watch::channel(false);
    tokio::spawn(control.run(shutdown_rx.clone()));
    crate::control::health::prober::spawn_all(
        base,
        handle.clone(),
        metrics.clone(),
        shutdown_rx.clone(),
    );
    let otel = start_otel(&cfg, &secrets)?;
    let audit = match &cfg.audit {
        Some(a) => Some(
            AuditLog::start(a, metrics.audit_dropped.clone())
                .map_err(|e| format!("audit: cannot start the writer: {e}"))?,
        ),
        None => None,
    };
    let state = Arc::new(AppState {
        audit,
        live,
        accounting: Accounting::new(&cfg, metrics.clone()),
        budget: RetryBudget::new(
            cfg.failover.budget_ratio,
            cfg.failover.budget_min_per_second,
        ),
        metrics,
        control: handle,
        admin_token: secrets
            .admin_token
            .as_ref()
            .map(|t| Sha256::digest(t.0.as_bytes()).into()),
        otel,
    });
    let addr = public.local_addr().map_err(|e| e.to_string())?;
    let admin_addr = admin.local_addr().map_err(|e| e.to_string())?;
    let servers = vec![
        spawn_server(
            public,
            public_router(state.clone(), &cfg),
            shutdown_rx.clone(),
        ),
        spawn_server(admin, crate::ops::admin::router(state.clone()), shutdown_rx),
    ];
    tracing::info!(%addr, %admin_addr, upstreams = cfg.upstreams.len(), routes = cfg.routes.len(), "turnout serving");
    Ok(Running {
        addr,
        admin_addr,
        state,
        shutdown,
        servers,
        _mocks: mocks,
    })
}

/// The span exporter when `otel` is configured and its endpoint variable set.
fn start_otel(cfg: &Config, secrets: &Secrets) -> Result<Option<Otel>, String> {
    let Some(o) = &cfg.otel else {
        return Ok(None);
    };
    let Some(endpoint) = &secrets.otel_endpoint else {
        tracing::warn!(var = %o.endpoint_env, "otel: tracing off, its endpoint variable is not set");
        return Ok(None);
    };
    let otel = Otel::start(o, &endpoint.0)?;
    tracing::info!(
        sample_ratio = o.sample_ratio,
        "otel: exporting spans (OTLP over HTTP)"
    );
    Ok(Some(otel))
}

/// Each upstream's endpoints as `(name, address)`: its `base_url` (named
/// after the upstream), its `endpoints`, or the address of the simulated
/// provider started for it.
async fn resolve_base_urls(
    cfg: &Config,
) -> Result<(Vec<MockServer>, Vec<Vec<(String, String)>>), String> {
    let mut mocks = Vec::new();
    let mut urls = Vec::new();
    for (i, u) in cfg.upstreams.iter().enumerate() {
        let eps = match (&u.base_url, &u.endpoints, &u.simulate) {
            (Some(b), _, _) => vec![(u.name.clone(), b.clone())],
            (None, Some(eps), _) => eps
                .iter()
                .map(|e| (e.name.clone(), e.base_url.clone()))
                .collect(),
            (None, None, Some(sim)) => {
                let settings = simulated(u.name.as_str(), sim);
                let m = MockServer::start(settings)
                    .await
                    .map_err(|e| format!("upstreams[{i}].simulate: {e}"))?;
                let b = m.base_url();
                tracing::info!(upstream = %u.name, base_url = %b, "simulated upstream started");
                mocks.push(m);
                vec![(u.name.clone(), b)]
            }
            (None, None, None) => return Err(format!("upstreams[{i}].base_url: missing")),
        };
        urls.push(eps);
    }
    Ok((mocks, urls))
}

fn simulated(name: &str, s: &crate::config::SimulateConfig) -> MockSettings {
    let mut m = MockSettings {
        name: name.to_owned(),
        ..MockSettings::default()
    };
    if let Some(v) = s.latency {
        m.latency = v;
    }
    if let Some(v) = s.ttft {
        m.ttft = v;
    }
    if let Some(v) = s.chunks {
        m.chunks = v;
    }
    if let Some(v) = s.chunk_delay {
        m.chunk_delay = v;
    }
    if let Some(v) = s.fail_rate {
        m.fail_rate = v;
    }
    if let Some(v) = &s.models {
        m.models = v.clone();
    }
    m
}

fn spawn_server(
    listener: TcpListener,
    router: Router,
    shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(crate::serve::serve(listener, router, shutdown))
}

/// Request ids: 16 random hex digits.
#[derive(Clone, Copy)]
struct RandomId;

impl MakeRequestId for RandomId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&format!("{:016x}", fastrand::u64(..)))
            .ok()
            .map(RequestId::new)
    }
}

/// The public router with its tower stack (see the module doc for the order).
///
/// The layers wrap the router once (`fallback_service`), not each route:
/// `Router::layer` wraps every route and clones the whole chain of wrappers on
/// each request. The WebSocket route sits outside the stack on purpose: its
/// auth is its own (close 4001), and the trace span records the URI, where
/// `?token=` may carry a key.
pub fn public_router(state: Arc<AppState>, cfg: &Config) -> Router {
    let routes = Router::new()
        .route(
            "/health",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/ready", get(ready))
        // Other methods on Turnout's own `/v1/` paths pass through too.
        .route(
            "/v1/models",
            get(crate::ops::models::list).fallback(crate::request::http::handle),
        )
        .route("/v1/account", get(crate::ops::models::account))
        .route("/v1/{*rest}", any(crate::request::http::handle))
        .fallback(|req: Request| async move { ApiError::not_found(req.uri().path()) })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .with_state(state.clone());
    let ws = crate::request::ws::router(state.clone());
    let x_request_id = REQUEST_ID_HEADER.clone();
    let outer = ServiceBuilder::new()
        .layer(TraceLayer::new_for_http())
        .layer(SetRequestIdLayer::new(x_request_id.clone(), RandomId))
        .layer(PropagateRequestIdLayer::new(x_request_id));
    let gate = GateLayer::new(state.clone());
    // Two concrete stacks rather than `option_layer`, whose `Either` turns the
    // error type into `BoxError`, which a router cannot serve.
    if cfg.cors_allow_origins.is_empty() {
        ws.fallback_service(outer.layer(gate).service(routes))
    } else {
        let origins: Vec<HeaderValue> = cfg
            .cors_allow_origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        let cors = CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::DELETE,
                Method::PUT,
                Method::PATCH,
                Method::HEAD,
            ])
            .allow_headers(tower_http::cors::Any)
            .expose_headers([
                UPSTREAM_HEADER.clone(),
                ATTEMPTS_HEADER.clone(),
                TURNOUT_REQUEST_ID_HEADER.clone(),
            ]);
        ws.fallback_service(outer.layer(cors).layer(gate).service(routes))
    }
}

async fn ready(State(app): State<Arc<AppState>>) -> Response {
    if app.live.load().table.any_usable() {
        axum::Json(serde_json::json!({"status": "ready"})).into_response()
    } else {
        let mut r = axum::Json(
            serde_json::json!({"status": "unavailable", "reason": "no upstream is usable"}),
        )
        .into_response();
        *r.status_mut() = axum::http::StatusCode::SERVICE_UNAVAILABLE;
        r
    }
}
