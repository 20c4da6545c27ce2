//! The HTTP edge of the request core, `POST /v1/*`: read the body, then the
//! shared steps (route → split key → chain in [`plan`](super::plan), the walk
//! in [`failover`](super::failover), the stream in [`relay`](super::relay),
//! the end in [`finish`](super::finish)), answering in HTTP.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::time::Instant;

use super::failover::{FailoverLayer, Failure, ProxyCall, Served, Success, UpstreamService};
use super::finish::{Ending, Finish};
use super::plan::{plan, split_key, Plan};
use super::reader::StreamReader;
use super::relay::{Answered, SseRelay};
use crate::accounting::Transport;
use crate::auth::ClientIdentity;
use crate::error::ApiError;
use crate::headers::{decorate, REQUEST_ID_HEADER};
use crate::openai;
use crate::routing::Snapshot;
use crate::state::AppState;

/// `POST /v1/*`: chat completions (streaming or not) and every other JSON endpoint.
pub async fn handle(State(app): State<Arc<AppState>>, req: Request) -> Response {
    let started = Instant::now();
    let (mut parts, body) = req.into_parts();
    let snap = match parts.extensions.remove::<Arc<Snapshot>>() {
        Some(s) => s,
        None => app.live.load(),
    };
    let identity = parts.extensions.remove::<ClientIdentity>();
    let request_id = parts
        .headers
        .get(&REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let mut fin = Finish::new(
        app.clone(),
        Transport::Http,
        request_id,
        started,
        identity.as_ref().map(|i| i.index),
    );
    fin.trace_request(&parts.headers, parts.uri.path());
    let body = match read_body(body, &parts.headers, snap.cfg().max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return reject(&fin, e, ""),
    };
    let facts = match openai::peek(&body) {
        Ok(f) => f,
        Err(e) => return reject(&fin, e, ""),
    };
    let Some(model) = facts.model.clone() else {
        let e = ApiError::bad_request("Missing required parameter: `model`.");
        return reject(&fin, e, "");
    };
    let header_user = parts.headers.get("x-user-id").and_then(|v| v.to_str().ok());
    let key = split_key(header_user, facts.user.as_deref(), identity.as_ref());
    let plan = match plan(snap, &model, key) {
        Ok(p) => p,
        Err(e) => return reject(&fin, e, &model),
    };
    fin.trace_planned(&model, &plan);
    let path = parts.uri.path();
    let suffix = match parts.uri.query() {
        Some(q) => format!("{}?{q}", path.strip_prefix("/v1").unwrap_or(path)),
        None => path.strip_prefix("/v1").unwrap_or(path).to_owned(),
    };
    let call = ProxyCall {
        plan: plan.clone(),
        suffix: suffix.into(),
        headers: Arc::new(crate::upstream::forward_headers(&parts.headers)),
        body,
        facts,
        trace: fin.trace_parent(),
    };
    // 6 failover (walks the chain; the one layer that retries) · leaf: one
    // attempt on one upstream.
    let failover = tower::Layer::layer(&FailoverLayer::new(app), UpstreamService);
    match tower::ServiceExt::oneshot(failover, call).await {
        Err(f) => failed(&fin, &plan, &model, f),
        Ok(s) => served(fin, plan, model, s),
    }
}

/// Refused before any upstream was tried.
fn reject(fin: &Finish, e: ApiError, model: &str) -> Response {
    let end = Ending {
        status: e.status.as_u16(),
        ..Ending::default()
    };
    fin.record(None, model, end);
    let mut rsp = e.into_response();
    decorate(rsp.headers_mut(), None, 0);
    rsp
}

/// No upstream served it: the walk's error, named after the last upstream tried.
fn failed(fin: &Finish, plan: &Plan, model: &str, f: Failure) -> Response {
    let end = Ending {
        status: f.error.status.as_u16(),
        upstream: f.upstream,
        attempts: f.attempts,
        ..Ending::default()
    };
    fin.record(Some(plan), model, end);
    let mut rsp = f.error.into_response();
    let name = f.upstream.map(|u| &*plan.snap.upstream(u).name);
    decorate(rsp.headers_mut(), name, f.attempts);
    rsp
}

fn served(fin: Finish, plan: Plan, model: String, s: Success) -> Response {
    let name = plan.snap.upstream(s.upstream).name.clone();
    let span = s.span;
    let mut rsp = match s.served {
        Served::Complete {
            status,
            headers,
            body,
            usage,
        } => {
            fin.trace_served(span, &body);
            let end = Ending {
                status: status.as_u16(),
                upstream: Some(s.upstream),
                attempts: s.attempts,
                ttft: Some(s.ttfb),
                usage,
                broke: None,
            };
            fin.record(Some(&plan), &model, end);
            let mut rsp = (status, body).into_response();
            *rsp.headers_mut() = headers;
            rsp
        }
        Served::Stream {
            status,
            headers,
            first,
            rest,
        } => {
            fin.trace_served(span, &first);
            let timeouts = &plan.snap.upstream(s.upstream).timeouts;
            let deadline = fin.started() + timeouts.total;
            let reader = StreamReader::new(first, rest, timeouts.idle, deadline);
            let answered = Answered {
                upstream: s.upstream,
                attempts: s.attempts,
                ttfb: s.ttfb,
            };
            let relay = SseRelay::new(reader, fin, plan, model, answered);
            let mut rsp = Response::new(Body::from_stream(relay));
            *rsp.status_mut() = status;
            *rsp.headers_mut() = headers;
            rsp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            rsp.headers_mut().insert(
                HeaderName::from_static("x-accel-buffering"),
                HeaderValue::from_static("no"),
            );
            rsp
        }
    };
    decorate(rsp.headers_mut(), Some(&name), s.attempts);
    rsp
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
