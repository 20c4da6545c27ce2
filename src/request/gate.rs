//! The admission layer of the `/v1/` API: loads the request's snapshot (the
//! one it carries to its end, as a request extension), then the client key
//! (401), the key's rate limit (429 + `Retry-After`), and `x-turnout-attempts`
//! on every answer, errors included.
//!
//! One hand-written tower layer around the whole router rather than axum
//! `from_fn` / `map_response` route layers: axum wraps each route in every
//! route layer and clones (and boxes) the chain of wrappers on each request,
//! which with the five layers of the public stack was ~30 allocations per
//! request (callgrind). This one allocates nothing and boxes no future.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::{HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use futures_util::future::{Either, FutureExt, Map, Ready};

use crate::auth::ClientIdentity;
use crate::error::ApiError;
use crate::headers::{ATTEMPTS_HEADER, REQUEST_ID_HEADER, TURNOUT_REQUEST_ID_HEADER};
use crate::metrics::Metrics;
use crate::routing::Snapshot;
use crate::state::AppState;

/// Wraps a service in [`Gate`].
#[derive(Clone)]
pub struct GateLayer {
    app: Arc<AppState>,
}

impl GateLayer {
    /// Over the shared keys, limits and metrics.
    pub fn new(app: Arc<AppState>) -> Self {
        Self { app }
    }
}

impl<S> tower::Layer<S> for GateLayer {
    type Service = Gate<S>;

    fn layer(&self, inner: S) -> Gate<S> {
        Gate {
            inner,
            app: self.app.clone(),
        }
    }
}

/// Admits `/v1/` requests (other paths pass untouched).
#[derive(Clone)]
pub struct Gate<S> {
    inner: S,
    app: Arc<AppState>,
}

type Finish = fn(Result<Response, Infallible>) -> Result<Response, Infallible>;

impl<S> tower::Service<Request> for Gate<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response, Infallible>>, Map<S::Future, Finish>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        if !req.uri().path().starts_with("/v1/") {
            return Either::Right(self.inner.call(req).map(unchanged as Finish));
        }
        if let Some(mut rejected) = refusal(&self.app, &mut req) {
            if let Some(id) = req.headers().get(&REQUEST_ID_HEADER) {
                rejected
                    .headers_mut()
                    .insert(TURNOUT_REQUEST_ID_HEADER.clone(), id.clone());
            }
            return Either::Left(futures_util::future::ready(with_attempts(Ok(rejected))));
        }
        Either::Right(self.inner.call(req).map(with_attempts as Finish))
    }
}

fn unchanged(r: Result<Response, Infallible>) -> Result<Response, Infallible> {
    r
}

/// Answers that never reached an upstream say so: `x-turnout-attempts: 0`.
fn with_attempts(r: Result<Response, Infallible>) -> Result<Response, Infallible> {
    let Ok(mut rsp) = r;
    if !rsp.headers().contains_key(&ATTEMPTS_HEADER) {
        rsp.headers_mut()
            .insert(ATTEMPTS_HEADER.clone(), HeaderValue::from_static("0"));
    }
    Ok(rsp)
}

/// Auth, then the key's rate limit: the answer that refuses the request, if
/// any. An admitted request carries its snapshot and identity as extensions.
fn refusal(app: &AppState, req: &mut Request) -> Option<Response> {
    let snap = app.live.load();
    let refused = admit(app, &snap, req);
    req.extensions_mut().insert(snap);
    refused
}

fn admit(app: &AppState, snap: &Snapshot, req: &mut Request) -> Option<Response> {
    if snap.keys().disabled() {
        return None;
    }
    let Some(id) = snap.keys().authenticate(req.headers()) else {
        count_refusal(&app.metrics, "401", "http");
        return Some(ApiError::invalid_api_key().into_response());
    };
    // Only POSTs (model calls, pass-through creations) count against `rpm`;
    // reads (`/v1/models`, `/v1/account`, pass-through GETs) are free.
    if req.method() == Method::POST {
        if let Err(e) = rate_limit(&app.metrics, snap, &id) {
            count_refusal(&app.metrics, "429", "http");
            return Some(e.into_response());
        }
    }
    req.extensions_mut().insert(id);
    None
}

/// The key's `rpm`, for HTTP and WebSocket alike: `429` + `Retry-After` when over it.
pub fn rate_limit(metrics: &Metrics, snap: &Snapshot, id: &ClientIdentity) -> Result<(), ApiError> {
    match snap.limits().check(id.index) {
        Ok(()) => Ok(()),
        Err(wait) => {
            metrics.rate_limited.with_label_values(&[&id.name]).inc();
            Err(ApiError::rate_limited(wait.as_secs_f64().ceil() as u64))
        }
    }
}

/// A request refused before it had a route: `turnout_requests_total{route="none"}`.
pub fn count_refusal(metrics: &Metrics, code: &str, transport: &str) {
    metrics
        .requests
        .with_label_values(&["none", "none", code, transport])
        .inc();
}
