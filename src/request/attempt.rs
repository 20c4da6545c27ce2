//! One try on one upstream, as a tower `Service`: the leaf of the stack that
//! failover wraps. It sends the request with this upstream's key and model
//! name, applies the per-upstream timeouts, and says whether the answer is
//! final (`Served`) or a reason to move on (`AttemptError`, with its typed
//! [`Outcome`]). For streams it answers only at the protocol's commit point
//! (PRODUCT.md §3.7, [`super::protocol`]): events before it are held
//! (bounded); an in-band failure, an empty answer, EOF or the first-token
//! timeout before it fail the attempt. A whole 2xx answer is judged by the
//! protocol too (an error object is a failed attempt). A pass-through answer
//! is never read: it is final as soon as its head arrives (for an idempotent
//! request, a 408/429/5xx head moves on).

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{HeaderMap, Method, StatusCode};
use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use http_body_util::BodyExt;
use hyper::body::Body;
use tokio::time::Instant;

use super::protocol::{Protocol, Stop, StreamScan};
use crate::headers::names_json;
use crate::openai::{self, Usage};
use crate::outcome::Outcome;
use crate::routing::{Snapshot, UpstreamId};
use crate::upstream::{visible_headers, whole, BodyStream, ResponseBody, Upstream, UpstreamBody};

/// Largest non-streaming upstream body read into memory.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// Largest prefix of a stream held while waiting for its commit point.
const MAX_PREFETCH: usize = 1024 * 1024;

/// One try: which upstream (of the request's snapshot), and the request as
/// the client sent it.
#[derive(Clone)]
pub struct Attempt {
    /// The request's snapshot (its upstream clients).
    pub snap: Arc<Snapshot>,
    /// Who to try.
    pub upstream: UpstreamId,
    /// Which of its endpoints (0 for a plain `base_url`).
    pub endpoint: usize,
    /// Client path after `/v1`, with its query.
    pub suffix: Arc<str>,
    /// Allowlisted client headers.
    pub headers: Arc<HeaderMap>,
    /// The client's body (cheap to clone per attempt).
    pub body: Bytes,
    /// The client's model name and the byte span of its value, for `model_map`.
    pub model: Option<(Arc<str>, (usize, usize))>,
    /// The body is a multipart form (its model value is bare text).
    pub form: bool,
    /// The client asked for a stream.
    pub stream: bool,
    /// The request's method (`POST` for every routed request).
    pub method: Method,
    /// How the answer is read.
    pub protocol: Protocol,
    /// Chat: the client asked for the usage chunk (`stream_options.include_usage`).
    pub want_usage: bool,
}

/// What an upstream answered, ready for the client.
pub enum Served {
    /// A whole body (non-streaming, or a final non-success answer).
    Complete {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
        usage: Option<Usage>,
    },
    /// An SSE stream at its commit point: `first` is what was held until
    /// then, `scan` the protocol rules that read it, to go on with `rest`.
    Stream {
        status: StatusCode,
        headers: HeaderMap,
        first: Bytes,
        rest: BodyStream,
        scan: StreamScan,
    },
    /// A pass-through answer: its head, and its body to stream unread.
    Raw {
        status: StatusCode,
        headers: HeaderMap,
        body: BodyStream,
    },
}

impl Served {
    /// The upstream's status.
    pub fn status(&self) -> StatusCode {
        match self {
            Served::Complete { status, .. }
            | Served::Stream { status, .. }
            | Served::Raw { status, .. } => *status,
        }
    }
}

/// Why an attempt moved on.
#[derive(Debug)]
pub struct AttemptError {
    /// What happened.
    pub outcome: Outcome,
    /// The upstream's `Retry-After`, if any.
    pub retry_after: Option<Duration>,
    /// The upstream's status, when it answered.
    pub status: Option<u16>,
    /// What went wrong underneath, when there is more to say than the reason
    /// (the transport error's chain); logged at debug, never sent to clients.
    pub detail: Option<String>,
    /// The upstream's own answer, when it is the one to give the client if no
    /// other upstream serves the request (a `400 context_length_exceeded`).
    pub held: Option<Held>,
}

/// An answer kept in case the walk finds nothing better.
pub struct Held(pub Served);

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Held(..)")
    }
}

impl AttemptError {
    /// An error without status.
    pub fn new(outcome: Outcome) -> Self {
        Self {
            outcome,
            retry_after: None,
            status: None,
            detail: None,
            held: None,
        }
    }
}

/// The leaf service: sends an [`Attempt`] to its upstream.
#[derive(Clone, Copy, Default)]
pub struct UpstreamService;

// === impl UpstreamService ===

impl tower::Service<Attempt> for UpstreamService {
    type Response = Served;
    type Error = AttemptError;
    type Future = BoxFuture<'static, Result<Served, AttemptError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), AttemptError>> {
        // The pooled HTTP client has no readiness to wait for.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, a: Attempt) -> Self::Future {
        Box::pin(async move {
            let snap = a.snap.clone();
            let _in_flight = snap.counters(a.upstream).start();
            // An upstream with several endpoints: count this one's load and
            // measure its latency to the commit point (the balancer's input).
            let Some(ep) = snap.endpoint_counters(a.upstream, a.endpoint) else {
                return send(snap.upstream(a.upstream), a).await;
            };
            let _ep_in_flight = ep.start();
            let start = Instant::now();
            let result = send(snap.upstream(a.upstream), a).await;
            let now = Instant::now();
            let clock = snap.base().clock;
            ep.observe(now - start, result.is_ok(), clock.ns(now));
            result
        })
    }
}

async fn send(up: &Upstream, a: Attempt) -> Result<Served, AttemptError> {
    if a.protocol == Protocol::Passthrough {
        // Only idempotent requests are replayed, so only they come here.
        let ep = a.endpoint;
        return passthrough(up, ep, a.method, &a.suffix, &a.headers, whole(a.body), true).await;
    }
    let body = match &a.model {
        Some((m, span)) if up.model_map.contains_key(&**m) => {
            openai::with_model(&a.body, *span, up.map_model(m), a.form)
        }
        _ => a.body,
    };
    let start = Instant::now();
    let req = match up.request(
        a.endpoint,
        a.method,
        &a.suffix,
        Some(&a.headers),
        whole(body),
    ) {
        Ok(r) => r,
        Err(_) => return Err(AttemptError::new(Outcome::InvalidUrl)),
    };
    let limit = if a.stream {
        up.timeouts.first_token
    } else {
        up.timeouts.headers
    };
    let deadline = start + up.timeouts.total;
    let rsp = response_head(req, start + limit.min(up.timeouts.total)).await?;
    let status = rsp.status();
    if let Some(e) = classify(status, rsp.headers()) {
        return Err(e);
    }
    let content_type = rsp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if status.is_success() && content_type.starts_with("text/event-stream") {
        // The first-token limit runs once, from the attempt's start to the
        // commit point (headers included).
        let commit_by = deadline.min(start + limit);
        let (parts, body) = rsp.into_parts();
        let headers = visible_headers(parts.headers, false);
        let scan = StreamScan::new(a.protocol, a.want_usage);
        return prefetch(status, headers, body, scan, commit_by).await;
    }
    // A body declared (or defaulting to) JSON must be JSON; other types (audio,
    // text) pass through unchecked.
    let json = content_type.is_empty() || names_json(content_type);
    let (parts, body) = rsp.into_parts();
    let headers = visible_headers(parts.headers, false);
    let body = match tokio::time::timeout_at(deadline, read_body(body)).await {
        Err(_) => return Err(AttemptError::new(Outcome::Timeout)),
        Ok(Err(outcome)) => return Err(AttemptError::new(outcome)),
        Ok(Ok(b)) => b,
    };
    if status == StatusCode::BAD_REQUEST && json && openai::is_context_length_error(&body) {
        // Too long for this upstream; one with a longer context may serve it.
        let mut e = AttemptError::new(Outcome::ContextLengthExceeded);
        e.status = Some(400);
        e.held = Some(Held(Served::Complete {
            status,
            headers,
            body,
            usage: None,
        }));
        return Err(e);
    }
    let mut usage = None;
    if status.is_success() {
        match a.protocol.judge(&body, json) {
            Ok(u) => usage = u,
            Err(outcome) => {
                let mut e = AttemptError::new(outcome);
                e.status = Some(status.as_u16());
                return Err(e);
            }
        }
    }
    Ok(Served::Complete {
        status,
        headers,
        body,
        usage,
    })
}

/// A pass-through attempt: the request as the client sent it (its body
/// whole, or streamed as it arrives), the answer's head, its body unread.
/// `retryable` (an idempotent request): a 408, 429 or 5xx head moves on;
/// otherwise every head is final and passed to the client as sent.
pub async fn passthrough(
    up: &Upstream,
    endpoint: usize,
    method: Method,
    suffix: &str,
    headers: &HeaderMap,
    body: UpstreamBody,
    retryable: bool,
) -> Result<Served, AttemptError> {
    let req = match up.request(endpoint, method, suffix, Some(headers), body) {
        Ok(r) => r,
        Err(_) => return Err(AttemptError::new(Outcome::InvalidUrl)),
    };
    let by = Instant::now() + up.timeouts.headers.min(up.timeouts.total);
    let rsp = response_head(req, by).await?;
    let status = rsp.status();
    if retryable && matches!(status.as_u16(), 408 | 429 | 500..=599) {
        if let Some(e) = classify(status, rsp.headers()) {
            return Err(e);
        }
    }
    let (parts, body) = rsp.into_parts();
    Ok(Served::Raw {
        status,
        headers: visible_headers(parts.headers, true),
        body: body.into_data_stream().boxed(),
    })
}

/// Waits (until `by` at the latest) for a response head.
async fn response_head(
    req: crate::upstream::ResponseFuture,
    by: Instant,
) -> Result<axum::http::Response<ResponseBody>, AttemptError> {
    match tokio::time::timeout_at(by, req).await {
        Err(_) => Err(AttemptError::new(Outcome::Timeout)),
        Ok(Err(e)) => {
            let mut err = AttemptError::new(crate::upstream::send_error_outcome(&e));
            err.detail = Some(crate::upstream::describe(&e));
            Err(err)
        }
        Ok(Ok(r)) => Ok(r),
    }
}

/// `Some` when the status means "move on"; `None` when the answer is final.
fn classify(status: StatusCode, headers: &HeaderMap) -> Option<AttemptError> {
    let code = status.as_u16();
    let outcome = match code {
        429 => Outcome::Http429,
        408 => Outcome::Timeout,
        401 | 403 | 404 => Outcome::Http4xx,
        500..=599 => Outcome::Http5xx,
        _ => return None,
    };
    let retry_after = headers
        .get(axum::http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64);
    Some(AttemptError {
        outcome,
        retry_after,
        status: Some(code),
        detail: None,
        held: None,
    })
}

async fn read_body(mut rsp: ResponseBody) -> Result<Bytes, Outcome> {
    let cap = rsp
        .size_hint()
        .exact()
        .map_or(16 * 1024, |n| n.min(MAX_RESPONSE_BYTES as u64) as usize);
    let mut first: Option<Bytes> = None;
    let mut buf = BytesMut::new();
    loop {
        match rsp.frame().await.transpose() {
            Ok(Some(frame)) => {
                // Trailers (HTTP/2) carry nothing a client of this API reads.
                let Ok(c) = frame.into_data() else { continue };
                if first.is_none() && buf.is_empty() {
                    first = Some(c);
                    continue;
                }
                if buf.is_empty() {
                    buf.reserve(cap);
                    if let Some(f) = first.take() {
                        buf.extend_from_slice(&f);
                    }
                }
                if buf.len() + c.len() > MAX_RESPONSE_BYTES {
                    return Err(Outcome::ResponseTooLarge);
                }
                buf.extend_from_slice(&c);
            }
            Ok(None) => return Ok(first.unwrap_or_else(|| buf.freeze())),
            Err(_) => return Err(Outcome::Reset),
        }
    }
}

/// Reads a stream up to its commit point, holding what comes before it.
async fn prefetch(
    status: StatusCode,
    headers: HeaderMap,
    rsp: ResponseBody,
    mut scan: StreamScan,
    commit_by: Instant,
) -> Result<Served, AttemptError> {
    let mut stream: BodyStream = rsp.into_data_stream().boxed();
    let mut buf = BytesMut::new();
    loop {
        let chunk = match tokio::time::timeout_at(commit_by, stream.next()).await {
            Err(_) => return Err(AttemptError::new(Outcome::Timeout)),
            Ok(Some(Err(_))) => return Err(AttemptError::new(Outcome::Reset)),
            Ok(Some(Ok(chunk))) => chunk,
            Ok(None) => {
                return match scan.finish() {
                    // A whole stream that ended well before the client saw any of it.
                    Stop::Clean if scan.committed() => Ok(Served::Stream {
                        status,
                        headers,
                        first: buf.freeze(),
                        rest: futures_util::stream::empty().boxed(),
                        scan,
                    }),
                    Stop::Clean => Err(AttemptError::new(Outcome::EmptyAnswer)),
                    Stop::Failed(outcome) => Err(AttemptError::new(outcome)),
                };
            }
        };
        let held = buf.len();
        buf.extend_from_slice(&chunk);
        if let Some(at) = scan.feed(&chunk) {
            if !scan.committed() {
                let outcome = match scan.stop() {
                    Some(Stop::Failed(o)) => o,
                    _ => Outcome::EmptyAnswer,
                };
                return Err(AttemptError::new(outcome));
            }
            buf.truncate(held + at);
        }
        if scan.committed() {
            return Ok(Served::Stream {
                status,
                headers,
                first: buf.freeze(),
                rest: stream,
                scan,
            });
        }
        if buf.len() > MAX_PREFETCH {
            return Err(AttemptError::new(Outcome::InvalidResponse));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let h = HeaderMap::new();
        for c in [400u16, 413, 415, 422, 200] {
            assert!(
                classify(StatusCode::from_u16(c).unwrap(), &h).is_none(),
                "{c}"
            );
        }
        for c in [401u16, 403, 404, 408, 429, 500, 502, 503, 504] {
            assert!(
                classify(StatusCode::from_u16(c).unwrap(), &h).is_some(),
                "{c}"
            );
        }
        let mut h = HeaderMap::new();
        h.insert("retry-after", "2".parse().unwrap());
        assert_eq!(
            classify(StatusCode::TOO_MANY_REQUESTS, &h)
                .unwrap()
                .retry_after,
            Some(Duration::from_secs(2))
        );
    }
}
