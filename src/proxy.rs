//! The public request path after the tower layers: read the body, find the
//! route, choose the chain (split), walk it (failover), answer.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::time::Instant;

use crate::accounting::Finished;
use crate::app::AppState;
use crate::auth::ClientIdentity;
use crate::error::ApiError;
use crate::failover::{ProxyCall, Served};
use crate::openai;
use crate::stream::{SseRelay, StreamEnd};

/// `x-turnout-upstream`.
pub static UPSTREAM_HEADER: HeaderName = HeaderName::from_static("x-turnout-upstream");
/// `x-turnout-attempts`.
pub static ATTEMPTS_HEADER: HeaderName = HeaderName::from_static("x-turnout-attempts");

/// `POST /v1/*`: chat completions (streaming or not) and every other JSON endpoint.
pub async fn handle(State(app): State<Arc<AppState>>, req: Request) -> Response {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let identity = parts.extensions.get::<ClientIdentity>().cloned();
    let request_id = parts
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let ctx = Ctx {
        app: &app,
        request_id: &request_id,
        started,
        client_key: identity.as_ref().map(|i| i.index),
    };

    let body = match read_body(body, &parts.headers, app.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return ctx.reject(e, "none", ""),
    };
    let facts = match openai::peek(&body) {
        Ok(f) => f,
        Err(e) => return ctx.reject(e, "none", ""),
    };
    let Some(model) = facts.model.clone() else {
        return ctx.reject(
            ApiError::bad_request("Missing required parameter: `model`."),
            "none",
            "",
        );
    };
    let table = app.failover.table().load();
    let Some(route) = table.matcher.route_for(&model) else {
        return ctx.reject(ApiError::model_not_found(&model), "none", &model);
    };
    let split_key = parts
        .headers
        .get("x-user-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .or(facts.user.as_deref())
        .or(identity.as_ref().map(|i| &*i.name));
    let (chain, in_split) = table.chain(route, split_key);
    let route_name = table.routes[route].name.clone();
    let primary = table.routes[route].primary;
    drop(table);

    let path = parts.uri.path();
    let suffix = match parts.uri.query() {
        Some(q) => format!("{}?{q}", path.strip_prefix("/v1").unwrap_or(path)),
        None => path.strip_prefix("/v1").unwrap_or(path).to_owned(),
    };
    let headers = crate::upstream::forward_headers(&parts.headers);
    let call = ProxyCall {
        route,
        chain,
        in_split,
        suffix: suffix.into(),
        headers: Arc::new(headers),
        body,
        facts,
    };
    let result = tower::ServiceExt::oneshot(app.failover.clone(), call).await;
    let ups = &app.failover.upstreams();
    match result {
        Err(f) => {
            let up = f.upstream.map(|u| &ups[u]);
            ctx.finish(
                &route_name,
                up,
                Some(&ups[primary]),
                &model,
                f.error.status.as_u16(),
                f.attempts,
                None,
                None,
                None,
            );
            let mut rsp = f.error.into_response();
            decorate(rsp.headers_mut(), up.map(|u| &*u.name), f.attempts);
            rsp
        }
        Ok(s) => {
            let up = &ups[s.upstream];
            match s.served {
                Served::Complete {
                    status,
                    headers,
                    body,
                    usage,
                } => {
                    ctx.finish(
                        &route_name,
                        Some(up),
                        Some(&ups[primary]),
                        &model,
                        status.as_u16(),
                        s.attempts,
                        Some(s.ttfb),
                        usage,
                        None,
                    );
                    let mut rsp = (status, body).into_response();
                    *rsp.headers_mut() = headers;
                    decorate(rsp.headers_mut(), Some(&up.name), s.attempts);
                    rsp
                }
                Served::Stream {
                    status,
                    headers,
                    first,
                    rest,
                } => {
                    let app2 = app.clone();
                    let (rid, attempts, ttfb, up_idx) =
                        (request_id.clone(), s.attempts, s.ttfb, s.upstream);
                    let m = model.clone();
                    let rn = route_name.clone();
                    app.metrics
                        .active_streams
                        .with_label_values(&["http"])
                        .inc();
                    let on_end = Box::new(move |end: StreamEnd, usage| {
                        app2.metrics
                            .active_streams
                            .with_label_values(&["http"])
                            .dec();
                        let ctx = Ctx {
                            app: &app2,
                            request_id: &rid,
                            started,
                            client_key: ctx_key(identity.as_ref()),
                        };
                        let ups = &app2.failover.upstreams();
                        let (code, err) = match end {
                            StreamEnd::Completed => (200, None),
                            StreamEnd::ClientGone => (499, None),
                            StreamEnd::UpstreamFailed(r) => (200, Some(r)),
                        };
                        if let StreamEnd::UpstreamFailed(_) = end {
                            app2.control.report(crate::control::Event::Outcome {
                                upstream: up_idx,
                                route,
                                verdict: crate::health::Verdict::Fail,
                                ttfb: None,
                                in_split,
                            });
                        }
                        ctx.finish(
                            &rn,
                            Some(&ups[up_idx]),
                            Some(&ups[primary]),
                            &m,
                            code,
                            attempts,
                            Some(ttfb),
                            usage,
                            err,
                        );
                    });
                    let relay = SseRelay::new(
                        first,
                        rest,
                        up.timeouts.idle,
                        started + up.timeouts.total,
                        up.name.clone(),
                        on_end,
                    );
                    let mut rsp = Response::new(Body::from_stream(relay));
                    *rsp.status_mut() = status;
                    *rsp.headers_mut() = headers;
                    rsp.headers_mut()
                        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                    rsp.headers_mut().insert(
                        HeaderName::from_static("x-accel-buffering"),
                        HeaderValue::from_static("no"),
                    );
                    decorate(rsp.headers_mut(), Some(&up.name), attempts);
                    rsp
                }
            }
        }
    }
}

fn ctx_key(identity: Option<&ClientIdentity>) -> Option<usize> {
    identity.map(|i| i.index)
}

/// Adds the `x-turnout-*` headers.
pub fn decorate(h: &mut HeaderMap, upstream: Option<&str>, attempts: u32) {
    if let Some(name) = upstream.and_then(|n| HeaderValue::from_str(n).ok()) {
        h.insert(UPSTREAM_HEADER.clone(), name);
    }
    h.insert(ATTEMPTS_HEADER.clone(), HeaderValue::from(attempts));
}

struct Ctx<'a> {
    app: &'a AppState,
    request_id: &'a str,
    started: Instant,
    client_key: Option<usize>,
}

impl Ctx<'_> {
    fn reject(&self, e: ApiError, route: &str, model: &str) -> Response {
        self.finish(
            route,
            None,
            None,
            model,
            e.status.as_u16(),
            0,
            None,
            None,
            None,
        );
        let mut rsp = e.into_response();
        decorate(rsp.headers_mut(), None, 0);
        rsp
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one call site per outcome; a struct would only rename them"
    )]
    fn finish(
        &self,
        route: &str,
        upstream: Option<&crate::upstream::Upstream>,
        primary: Option<&crate::upstream::Upstream>,
        model: &str,
        status: u16,
        attempts: u32,
        ttft: Option<Duration>,
        usage: Option<openai::Usage>,
        stream_error: Option<&'static str>,
    ) {
        self.app.accounting.record(&Finished {
            request_id: self.request_id,
            route,
            upstream,
            primary,
            model,
            status,
            attempts,
            transport: "http",
            duration: self.started.elapsed(),
            ttft,
            usage,
            client_key: self.client_key,
            stream_error,
        });
    }
}

/// Longest time a client may take to send its request body.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Reads the whole body, refusing a declared or actual size over the limit (413).
pub async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, ApiError> {
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > limit as u64 {
            return Err(ApiError::too_large(limit));
        }
    }
    let read = tokio::time::timeout(BODY_READ_TIMEOUT, axum::body::to_bytes(body, limit));
    match read.await {
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            "request_timeout",
            "The request body did not arrive in time.",
        )),
        Ok(Ok(b)) => Ok(b),
        Ok(Err(e)) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                || e.to_string().contains("length limit");
            if too_large {
                Err(ApiError::too_large(limit))
            } else {
                Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "invalid_body",
                    "Could not read the request body.",
                ))
            }
        }
    }
}
