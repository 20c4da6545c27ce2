//! The public listener's service: the tower stack of `app` (request id,
//! CORS, gate) around a dispatch that sends proxied `/v1/*` requests
//! straight to the request core, and everything else (Turnout's own few
//! endpoints and their 404/405 answers) to an axum `Router`.
//!
//! Why not one `Router` for all: a proxied request is nearly every request,
//! and going through axum's routing for it cost two route matches (the
//! WebSocket router, then the API router), URL-parameter extensions, the
//! handler's extractor machinery and a boxed route future each time (~9,000
//! instructions per request under callgrind). The paths that are not proxied
//! are a handful of fixed ones, so a comparison of strings decides; the
//! `Router` keeps serving them exactly as before.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::response::Response;
use axum::Router;
use futures_util::future::Either;
use tower::Service;

use crate::headers::REQUEST_ID_HEADER;
use crate::state::AppState;

/// The WebSocket chat path: served by its own router, outside the stack (its
/// auth is its own, and its URI may carry a `?token=` key).
const WS_PATH: &str = "/v1/ws/chat";

/// Proxied `/v1/` paths that Turnout answers itself for some methods: the
/// router decides (e.g. `GET /v1/models` is Turnout's list, `POST` passes through).
const OWN_V1_PATHS: [&str; 2] = ["/v1/models", "/v1/account"];

/// True for a request the request core serves (anything under `/v1/` but
/// Turnout's own paths), which then skips axum's routing.
fn proxied(path: &str) -> bool {
    path.len() > "/v1/".len() && path.starts_with("/v1/") && !OWN_V1_PATHS.contains(&path)
}

/// The outermost service: the WebSocket route, or the stack.
#[derive(Clone)]
pub struct Public<S> {
    ws: Router,
    stack: S,
}

impl<S> Public<S> {
    /// `ws` serves `/v1/ws/chat`; `stack` every other path.
    pub fn new(ws: Router, stack: S) -> Self {
        Self { ws, stack }
    }
}

impl<S> Service<Request> for Public<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<<Router as Service<Request>>::Future, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The router is always ready; the stack's readiness is the answer.
        self.stack.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        if req.uri().path() == WS_PATH {
            Either::Left(self.ws.call(req))
        } else {
            Either::Right(self.stack.call(req))
        }
    }
}

/// The innermost service, inside the gate: the request core for proxied
/// requests, the router for the rest.
#[derive(Clone)]
pub struct Dispatch {
    app: Arc<AppState>,
    router: Router,
}

impl Dispatch {
    /// `router` serves what is not proxied (health, readiness, models, 404s).
    pub fn new(app: Arc<AppState>, router: Router) -> Self {
        Self { app, router }
    }
}

/// The request core's answer (its future is one allocation, as axum's would be).
type CoreFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl Service<Request> for Dispatch {
    type Response = Response;
    type Error = Infallible;
    type Future = Either<CoreFuture, <Router as Service<Request>>::Future>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        if proxied(req.uri().path()) {
            let app = self.app.clone();
            Either::Left(Box::pin(async move {
                Ok(crate::request::http::handle(State(app), req).await)
            }))
        } else {
            Either::Right(self.router.call(req))
        }
    }
}

/// Wraps a service in [`RequestId`].
#[derive(Clone, Copy, Default)]
pub struct RequestIdLayer;

impl<S> tower::Layer<S> for RequestIdLayer {
    type Service = RequestId<S>;

    fn layer(&self, inner: S) -> RequestId<S> {
        RequestId { inner }
    }
}

/// `x-request-id`: the client's, or 16 random hex digits; echoed on the
/// answer. One header insert and one copy, where tower-http's pair of layers
/// formatted the id through `format!`, stored it as an extension (a map
/// allocated per request) and read it back for the answer.
#[derive(Clone)]
pub struct RequestId<S> {
    inner: S,
}

impl<S> Service<Request> for RequestId<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = WithId<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let id = match req.headers().get(&REQUEST_ID_HEADER) {
            Some(v) => v.clone(),
            None => {
                let v = random_id();
                req.headers_mut()
                    .insert(REQUEST_ID_HEADER.clone(), v.clone());
                v
            }
        };
        WithId {
            inner: self.inner.call(req),
            id: Some(id),
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner answer, with the request's id unless it carries one already.
    pub struct WithId<F> {
        #[pin]
        inner: F,
        id: Option<HeaderValue>,
    }
}

impl<F> Future for WithId<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(mut rsp) = std::task::ready!(this.inner.poll(cx));
        if let Some(id) = this.id.take() {
            if !rsp.headers().contains_key(&REQUEST_ID_HEADER) {
                rsp.headers_mut().insert(REQUEST_ID_HEADER.clone(), id);
            }
        }
        Poll::Ready(Ok(rsp))
    }
}

/// 16 lowercase hex digits of a random `u64`.
fn random_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n = fastrand::u64(..);
    let mut buf = [0u8; 16];
    for (i, b) in buf.iter_mut().enumerate() {
        *b = HEX[((n >> (60 - 4 * i)) & 0xf) as usize];
    }
    // Hex digits are always a valid header value.
    HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_other_v1_paths_are_proxied() {
        assert!(proxied("/v1/chat/completions"));
        assert!(proxied("/v1/models/gpt-4o"));
        assert!(proxied("/v1/files"));
        assert!(!proxied("/v1/models"));
        assert!(!proxied("/v1/account"));
        assert!(!proxied("/v1/"));
        assert!(!proxied("/v1"));
        assert!(!proxied("/health"));
        assert!(!proxied("/v2/chat/completions"));
    }

    #[test]
    fn random_ids_are_16_hex_digits() {
        for _ in 0..100 {
            let v = random_id();
            let s = v.to_str().unwrap();
            assert_eq!(s.len(), 16);
            assert!(s
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        }
    }
}
