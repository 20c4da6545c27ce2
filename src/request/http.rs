//! The HTTP edge of the request core, every `/v1/*` request that Turnout
//! does not answer itself: a `POST` that names a model (a JSON body's
//! `model`, or a multipart form's `model` field) is routed — route → split
//! key → chain in [`plan`](super::plan), the walk in
//! [`failover`](super::failover), the stream in [`relay`](super::relay), the
//! end in [`finish`](super::finish); everything else is a pass-through
//! ([`passthrough`](super::passthrough), PRODUCT.md §3.3). Both answer here.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::time::Instant;

use super::failover::{FailoverLayer, Failure, ProxyCall, Served, Success, UpstreamService};
use super::finish::{Ending, Finish};
use super::passthrough::{self, PassBody};
use super::plan::{plan, split_key, Plan};
use super::protocol::{Protocol, StreamScan};
use super::reader::StreamReader;
use super::relay::{Answered, SseRelay};
use super::resume::Resume;
use super::walk::AttemptRecord;
use crate::accounting::Transport;
use crate::auth::ClientIdentity;
use crate::error::ApiError;
use crate::headers::{decorate, names_json, REQUEST_ID_HEADER};
use crate::openai::{self, form, RequestFacts};
use crate::routing::Snapshot;
use crate::state::AppState;

/// Every `/v1/*` request the router does not answer itself.
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
    fin.trace_request(&parts.headers, parts.method.as_str(), parts.uri.path());
    let path = parts.uri.path();
    let route_path = path.strip_prefix("/v1").unwrap_or(path);
    let suffix: Arc<str> = match parts.uri.query() {
        Some(q) => format!("{route_path}?{q}").into(),
        None => route_path.into(),
    };
    let protocol = Protocol::for_path(route_path);
    let limit = snap.cfg().max_body_bytes;
    if parts.method != Method::POST || passthrough::stateful(route_path) {
        let body = if passthrough::idempotent(&parts.method) {
            match read_body(body, &parts.headers, limit).await {
                Ok(b) => PassBody::Whole(b),
                Err(e) => return reject(&fin, e, ""),
            }
        } else {
            PassBody::Stream(body)
        };
        return pass(fin, snap, &parts, suffix, body).await;
    }
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let (body, facts) = if let Some(boundary) = form::boundary(content_type) {
        match read_form(body, limit, boundary).await {
            Err(e) => return reject(&fin, e, ""),
            Ok(Form::Routed(body, facts)) => (body, facts),
            Ok(Form::Pass(body)) => return pass(fin, snap, &parts, suffix, body).await,
        }
    } else if content_type.is_empty() || names_json(content_type) {
        let body = match read_body(body, &parts.headers, limit).await {
            Ok(b) => b,
            Err(e) => return reject(&fin, e, ""),
        };
        if body.is_empty() {
            return pass(fin, snap, &parts, suffix, PassBody::Whole(body)).await;
        }
        let facts = match openai::peek(&body) {
            Ok(f) => f,
            Err(e) => return reject(&fin, e, ""),
        };
        if facts.model.is_none() {
            return pass(fin, snap, &parts, suffix, PassBody::Whole(body)).await;
        }
        (body, facts)
    } else {
        return pass(fin, snap, &parts, suffix, PassBody::Stream(body)).await;
    };
    let Some(model) = facts.model.clone() else {
        return reject(&fin, ApiError::internal("routed without a model"), "");
    };
    let header_user = parts.headers.get("x-user-id").and_then(|v| v.to_str().ok());
    let key = split_key(header_user, facts.user.as_deref(), identity.as_ref());
    let plan = match plan(snap, &model, key) {
        Ok(p) => p,
        Err(e) => return reject(&fin, e, &model),
    };
    fin.trace_planned(&model, &plan);
    let stream = facts.stream;
    let shadow = super::shadow::pick(&app, &plan, key);
    let headers = Arc::new(crate::upstream::forward_headers(&parts.headers, true));
    let resumes = plan.snap.cfg().routes[plan.route.index()].resume.enabled;
    let resume = if resumes && facts.stream {
        let (b, s, h) = (body.clone(), suffix.clone(), headers.clone());
        Resume::new(protocol, b, s, h, facts.include_usage)
    } else {
        None
    };
    let call = ProxyCall {
        plan: plan.clone(),
        suffix,
        headers,
        body,
        facts,
        method: Method::POST,
        protocol,
        trace: fin.trace_parent(),
    };
    // The shadow copy (if any) goes in the background; the client never waits for it.
    let peer = shadow.map(|s| s.launch(&app, &call, fin.request_id()));
    let fin = fin.with_shadow(peer);
    // 6 failover (walks the chain; the one layer that retries) · leaf: one
    // attempt on one upstream.
    let failover = tower::Layer::layer(&FailoverLayer::new(app), UpstreamService);
    match tower::ServiceExt::oneshot(failover, call).await {
        Err(f) => failed(&fin, &plan, &model, stream, f),
        Ok(s) => served(
            fin,
            plan,
            model,
            s,
            Tail {
                head: false,
                resume,
            },
        ),
    }
}

/// A pass-through request, answered.
async fn pass(
    fin: Finish,
    snap: Arc<Snapshot>,
    parts: &axum::http::request::Parts,
    suffix: Arc<str>,
    body: PassBody,
) -> Response {
    let head = parts.method == Method::HEAD;
    let (plan, result) = passthrough::call(fin.app(), snap, parts, suffix, body).await;
    match result {
        Err(f) => failed(&fin, &plan, "", false, f),
        Ok(s) => served(fin, plan, String::new(), s, Tail { head, resume: None }),
    }
}

/// Refused before any upstream was tried.
fn reject(fin: &Finish, e: ApiError, model: &str) -> Response {
    let end = Ending {
        status: e.status.as_u16(),
        error: Some(e.code),
        ..Ending::default()
    };
    fin.record(None, model, end);
    let mut rsp = e.into_response();
    decorate(rsp.headers_mut(), None, 0, fin.request_id());
    rsp
}

/// No upstream served it: the walk's error, named after the last upstream tried.
fn failed(fin: &Finish, plan: &Plan, model: &str, stream: bool, f: Failure) -> Response {
    let end = Ending {
        status: f.error.status.as_u16(),
        upstream: f.upstream,
        endpoint: f.records.last().map_or(0, |r| r.endpoint),
        attempts: f.attempts,
        records: f.records,
        stream,
        error: Some(f.error.code),
        ..Ending::default()
    };
    fin.record(Some(plan), model, end);
    let mut rsp = f.error.into_response();
    let name = f.upstream.map(|u| &*plan.snap.upstream(u).name);
    decorate(rsp.headers_mut(), name, f.attempts, fin.request_id());
    rsp
}

/// What the answer's body depends on beyond the walk's result.
struct Tail {
    /// The answer to a HEAD request (a head without a body).
    head: bool,
    /// Mid-stream resume, when the route resumes this stream.
    resume: Option<Resume>,
}

fn served(fin: Finish, plan: Plan, model: String, s: Success, tail: Tail) -> Response {
    let Tail { head, resume } = tail;
    let name = plan.snap.upstream(s.upstream).name.clone();
    let request_id = fin.request_id().to_owned();
    let span = s.span;
    let answered = |status: StatusCode| Answered {
        upstream: s.upstream,
        endpoint: s.endpoint,
        attempts: s.attempts,
        ttfb: s.ttfb,
        status: status.as_u16(),
    };
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
                endpoint: s.endpoint,
                attempts: s.attempts,
                ttft: Some(s.ttfb),
                usage,
                broke: None,
                records: s.records,
                stream: false,
                error: None,
                answer: fin.shadowed().then(|| body.clone()),
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
            scan,
        } => {
            fin.trace_served(span, &first);
            let a = answered(status);
            let body = (first, rest, scan);
            let a = (a, s.records);
            let mut rsp = streamed(fin, plan, model, a, headers, body, (None, resume));
            let h = rsp.headers_mut();
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            h.insert(
                HeaderName::from_static("x-accel-buffering"),
                HeaderValue::from_static("no"),
            );
            rsp
        }
        Served::Raw {
            status,
            headers,
            body,
        } => {
            fin.trace_served(span, &[]);
            let scan = StreamScan::new(Protocol::Passthrough, false);
            let a = answered(status);
            let length =
                if head || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
                    Some(0)
                } else {
                    headers
                        .get(header::CONTENT_LENGTH)
                        .and_then(|v| v.to_str().ok()?.parse().ok())
                };
            streamed(
                fin,
                plan,
                model,
                (a, s.records),
                headers,
                (Bytes::new(), body, scan),
                (length, None),
            )
        }
    };
    decorate(rsp.headers_mut(), Some(&name), s.attempts, &request_id);
    rsp
}

/// A streamed answer: the upstream's body through the stream reader and
/// the relay, which records the request's end.
fn streamed(
    fin: Finish,
    plan: Plan,
    model: String,
    (a, records): (Answered, Vec<AttemptRecord>),
    headers: HeaderMap,
    (first, rest, scan): (Bytes, crate::upstream::BodyStream, StreamScan),
    (length, resume): (Option<u64>, Option<Resume>),
) -> Response {
    let timeouts = &plan.snap.upstream(a.upstream).timeouts;
    let deadline = fin.started() + timeouts.total;
    let reader = StreamReader::new(first, rest, scan, timeouts.idle, deadline);
    let status = StatusCode::from_u16(a.status).unwrap_or(StatusCode::OK);
    let mut relay = SseRelay::new(reader, fin, plan, model, (a, records), length);
    if let Some(r) = resume {
        relay = relay.with_resume(r);
    }
    let mut rsp = Response::new(Body::from_stream(relay));
    *rsp.status_mut() = status;
    *rsp.headers_mut() = headers;
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
        Err(_) => Err(body_timeout()),
        Ok(Ok(b)) => Ok(b),
        Ok(Err(e)) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                || e.to_string().contains("length limit");
            if too_large {
                Err(ApiError::too_large(limit))
            } else {
                Err(unreadable_body())
            }
        }
    }
}

/// A multipart body, read: routed (it names a model) or passed through.
enum Form {
    Routed(Bytes, RequestFacts),
    Pass(PassBody),
}

/// Reads a multipart form while looking for its `model` field. With one it
/// is routed like JSON (whole, up to `limit`, for replay); without, it is
/// passed through: whole if it ended within `limit`, else the bytes read so
/// far followed by the rest as it arrives (a file upload is never held whole
/// beyond the limit).
async fn read_form(body: Body, limit: usize, boundary: &str) -> Result<Form, ApiError> {
    let mut scan = form::FormScan::new(boundary);
    let mut buf = BytesMut::new();
    let mut stream = body.into_data_stream();
    let deadline = Instant::now() + BODY_READ_TIMEOUT;
    loop {
        let chunk = match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => return Err(body_timeout()),
            Ok(None) => break,
            Ok(Some(Err(_))) => return Err(unreadable_body()),
            Ok(Some(Ok(c))) => c,
        };
        buf.extend_from_slice(&chunk);
        scan.scan(&buf);
        if buf.len() > limit {
            if scan.model.is_some() {
                return Err(ApiError::too_large(limit));
            }
            let head = futures_util::stream::once(async move { Ok(buf.freeze()) });
            let body = Body::from_stream(head.chain(stream));
            return Ok(Form::Pass(PassBody::Stream(body)));
        }
    }
    let body = buf.freeze();
    Ok(match scan.model {
        Some((model, span)) => Form::Routed(
            body,
            RequestFacts {
                model: Some(model),
                model_span: Some(span),
                stream: scan.stream,
                user: scan.user,
                include_usage: false,
                form: true,
            },
        ),
        None => Form::Pass(PassBody::Whole(body)),
    })
}

fn body_timeout() -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "invalid_request_error",
        "request_timeout",
        "The request body did not arrive in time.",
    )
}

fn unreadable_body() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        "invalid_body",
        "Could not read the request body.",
    )
}
