//! Builds the process: the first snapshot (upstream clients, keys, limits),
//! the control task, probes, alerts, and the two listeners with their tower
//! stacks. With `redis`, the shared state is read (or declared unreachable)
//! and the rate-limit leases filled before anything is served, then the sync
//! task keeps them current; the reloader and its file watcher swap configs;
//! [`Running::shutdown_gracefully`] drains (PRODUCT.md §3.8).
//!
//! Public stack, outermost first (extensions a layer adds, in brackets):
//! 0. the public service (`public.rs`): `/v1/ws/chat` to the WebSocket edge, the rest to the stack
//! 1. (no trace layer: each request's line is written at its end by
//!    `request/finish.rs`, and spans, when wanted, are OpenTelemetry's; the
//!    tower-http layer cost ~1,500 instructions per request and boxed every body)
//! 2. request id (`public.rs`; `x-request-id`: kept from the client or generated; echoed back)
//! 3. CORS (only for `cors_allow_origins`)
//! 4. gate (`request/gate.rs`, `/v1/` paths): loads the request's snapshot
//!    [`Arc<Snapshot>`], auth (client key [`ClientIdentity`]; 401 otherwise),
//!    the key's rate limit (`rpm`; 429 + `Retry-After`), and
//!    `x-turnout-attempts` on every answer, errors included
//! 5. dispatch (`public.rs`): proxied `/v1/` paths to the edge, the rest to
//!    an axum router (health, readiness, `/v1/models`, `/v1/account`, 404/405)
//!    edge (`request/http.rs`; WebSocket: `request/ws/`): body limit (413) →
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
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderValue, Method};
use axum::routing::{any, get};
use axum::Router;
use sha2::{Digest, Sha256};
use std::convert::Infallible;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tower::util::BoxCloneSyncService;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::accounting::Accounting;
use crate::audit::AuditLog;
use crate::budget::RetryBudget;
use crate::config::{Config, Secrets};
use crate::control::alerts::Alerts;
/// Where env-var secrets are read (tests pass a map).
pub use crate::control::reload::Env;
use crate::control::reload::{build_base, Reloader, ReloaderParts};
use crate::control::shared::limits::Refill;
use crate::control::shared::windows::Tally;
use crate::control::shared::{Link, RedisStore};
use crate::control::simulated::Simulated;
use crate::control::store::{FileStore, SplitStore};
use crate::control::Control;
use crate::error::ApiError;
use crate::headers::{ATTEMPTS_HEADER, TURNOUT_REQUEST_ID_HEADER, UPSTREAM_HEADER};
use crate::metrics::Metrics;
use crate::otel::Otel;
use crate::public::{Dispatch, Public, RequestIdLayer};
use crate::request::gate::GateLayer;
pub use crate::state::AppState;
use crate::state::Lifecycle;
use tower::ServiceBuilder;

/// A running Turnout: its addresses and the means to stop it.
pub struct Running {
    /// Public listener address.
    pub addr: SocketAddr,
    /// Admin listener address.
    pub admin_addr: SocketAddr,
    /// Shared state (tests read metrics and the table through it).
    pub state: Arc<AppState>,
    /// Stops the accept loops (they then drain what is in flight).
    accepting: watch::Sender<bool>,
    /// Stops the control task, probes, the Redis sync and the file watcher.
    background: watch::Sender<bool>,
    tasks: CancellationToken,
    servers: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Graceful shutdown (SIGTERM, PRODUCT.md §3.8): `/ready` turns 503 at
    /// once, the listeners keep accepting for `shutdown.grace` so that load
    /// balancers notice, then [`Running::shutdown`].
    pub async fn shutdown_gracefully(self) {
        let grace = self.state.live.load().cfg().shutdown.grace;
        self.state.lifecycle.start_draining();
        tracing::info!(grace = ?grace, "draining: /ready answers 503; still accepting during the grace");
        tokio::time::sleep(grace).await;
        self.shutdown().await;
    }

    /// Stops accepting; requests, streams and WebSockets in flight get up to
    /// `shutdown.drain` to finish (sockets then close with 1001); then the
    /// background tasks stop, the span exporter sends its last batch and the
    /// audit writer writes the lines queued so far.
    pub async fn shutdown(self) {
        let drain = self.state.live.load().cfg().shutdown.drain;
        let deadline = tokio::time::Instant::now() + drain;
        self.state.lifecycle.close();
        let _ = self.accepting.send(true);
        for s in self.servers {
            let _ = s.await;
        }
        // Upgraded connections live outside the accept loops.
        while self.state.metrics.ws_connections.get() > 0 && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let _ = self.background.send(true);
        self.tasks.cancel();
        let state = self.state.clone();
        // The exporter's shutdown blocks until its last batch is sent; the
        // audit writer's until the lines queued so far are on disk.
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(o) = &state.otel {
                o.shutdown();
            }
            if let Some(a) = &state.audit {
                a.close();
            }
        })
        .await;
    }

    /// Resolves when a shutdown was asked for (Ctrl-C handling lives in main).
    pub fn shutdown_sender(&self) -> watch::Sender<bool> {
        self.accepting.clone()
    }
}

/// How a process is started beyond its config: the file it came from (for
/// hot reloads) and where env-var secrets are read (again at each reload).
pub struct StartOptions {
    /// The config file; `None`: `POST /admin/reload` answers an error.
    pub config_path: Option<PathBuf>,
    /// Env var lookup.
    pub env: Env,
}

impl Default for StartOptions {
    fn default() -> Self {
        Self {
            config_path: None,
            env: Arc::new(crate::config::resolve_env),
        }
    }
}

/// Starts simulated upstreams, then everything else, on the given listeners.
pub async fn start(
    cfg: Config,
    secrets: Secrets,
    public: TcpListener,
    admin: TcpListener,
) -> Result<Running, String> {
    start_with(cfg, secrets, public, admin, StartOptions::default()).await
}

/// [`start`] with a config file to reload from.
pub async fn start_with(
    cfg: Config,
    secrets: Secrets,
    public: TcpListener,
    admin: TcpListener,
    opts: StartOptions,
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
    let sims = Simulated::default();
    let (base_urls, _) = sims.resolve(&cfg).await?;
    let alerts = Alerts::start(&cfg.alerts, metrics.clone());
    let redis = shared_store(&cfg, &secrets, &metrics, &alerts)?;
    let store: Arc<dyn SplitStore> = match &redis {
        Some(r) => r.clone(),
        None => Arc::new(FileStore::new(cfg.state_path.clone())),
    };
    // The shared state is read before anything is served (`/ready`).
    let overrides = store.load().await;
    let base = build_base(cfg.clone(), &secrets, &base_urls, redis.is_some(), None)?;
    let (mut control, handle, live) =
        Control::new(Arc::new(base), overrides, store, metrics.clone(), alerts);
    let tally = Arc::new(Tally::default());
    if redis.is_some() {
        control.share_windows(tally.clone());
    }
    let (background, background_rx) = watch::channel(false);
    let (accepting, accepting_rx) = watch::channel(false);
    let tasks = CancellationToken::new();
    let accounting = Arc::new(Accounting::new(&cfg, metrics.clone()));
    tokio::spawn(control.run(background_rx));
    if let (Some(store), Some(r)) = (&redis, &cfg.redis) {
        let mut refill = Refill::default();
        refill
            .tick(store.link(), live.load().limits(), r.sync_interval)
            .await;
        let sync = crate::control::shared::sync::Sync {
            store: store.clone(),
            live: live.clone(),
            control: handle.clone(),
            interval: r.sync_interval,
            refill,
            accounting: accounting.clone(),
            tally,
        };
        tokio::spawn(crate::control::shared::sync::run(sync, tasks.clone()));
    }
    let reloader = Reloader::new(ReloaderParts {
        path: opts.config_path,
        env: opts.env,
        sims,
        control: handle.clone(),
        metrics: metrics.clone(),
        live: live.clone(),
        fleet: redis.is_some(),
    });
    reloader.spawn_watch(tasks.clone());
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
        accounting,
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
        reloader,
        lifecycle: Lifecycle::default(),
        otel,
    });
    let addr = public.local_addr().map_err(|e| e.to_string())?;
    let admin_addr = admin.local_addr().map_err(|e| e.to_string())?;
    let limits = crate::serve::Limits {
        drain: cfg.shutdown.drain,
        ..crate::serve::Limits::default()
    };
    let servers = vec![
        spawn_server(
            public,
            public_service(state.clone(), &cfg),
            accepting_rx.clone(),
            limits,
        ),
        spawn_server(
            admin,
            crate::ops::admin::router(state.clone()),
            accepting_rx,
            limits,
        ),
    ];
    tracing::info!(%addr, %admin_addr, upstreams = cfg.upstreams.len(), routes = cfg.routes.len(), shared = redis.is_some(), "turnout serving");
    Ok(Running {
        addr,
        admin_addr,
        state,
        accepting,
        background,
        tasks,
        servers,
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

/// The Redis split store when `redis` is configured.
fn shared_store(
    cfg: &Config,
    secrets: &Secrets,
    metrics: &Metrics,
    alerts: &Alerts,
) -> Result<Option<Arc<RedisStore>>, String> {
    let Some(r) = &cfg.redis else {
        return Ok(None);
    };
    let url = secrets
        .redis_url
        .as_ref()
        .ok_or_else(|| format!("redis.url_env: env var {} is not set", r.url_env))?;
    let link = Link::new(r, url, metrics.clone(), alerts.clone())?;
    Ok(Some(Arc::new(RedisStore::new(Arc::new(link)))))
}

fn spawn_server<S>(
    listener: TcpListener,
    svc: S,
    shutdown: watch::Receiver<bool>,
    limits: crate::serve::Limits,
) -> tokio::task::JoinHandle<()>
where
    S: crate::serve::HttpService,
{
    tokio::spawn(crate::serve::serve_with(listener, svc, shutdown, limits))
}

/// The public listener's service (`public.rs`): WebSocket route or the stack.
pub type PublicService = Public<BoxCloneSyncService<Request, axum::response::Response, Infallible>>;

/// The public service with its tower stack (see the module doc for the order).
///
/// The layers wrap the dispatch once, not each route: `Router::layer` wraps
/// every route and clones the whole chain of wrappers on each request. The
/// WebSocket route sits outside the stack on purpose: its auth is its own
/// (close 4001), and nothing of its URI, where `?token=` may carry a key, is
/// recorded.
pub fn public_service(state: Arc<AppState>, cfg: &Config) -> PublicService {
    let routes = Router::new()
        .route(
            "/health",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/ready", get(crate::ops::health::ready))
        .route("/health/upstreams", get(crate::ops::health::upstreams))
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
    let routes = Dispatch::new(state.clone(), routes);
    let outer = ServiceBuilder::new().layer(RequestIdLayer);
    let gate = GateLayer::new(state.clone());
    // Two concrete stacks behind one box rather than `option_layer`, whose
    // `Either` turns the error type into `BoxError` (one allocation per request).
    if cfg.cors_allow_origins.is_empty() {
        Public::new(
            ws,
            BoxCloneSyncService::new(outer.layer(gate).service(routes)),
        )
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
        let stack = outer.layer(cors).layer(gate).service(routes);
        Public::new(ws, BoxCloneSyncService::new(stack))
    }
}
