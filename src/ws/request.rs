//! One chat request of a socket, as its own task: route, split, failover
//! (the same `Failover::run` as HTTP, so a stream fails over until its first
//! event), then the upstream's SSE turned into `delta` messages, ending in
//! exactly one `done` or `error`, and one `Accounting::record` with
//! transport `ws`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Message;
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::events::{EventSplitter, Piece};
use super::outcome::{End, Fail, Progress};
use super::protocol;
use super::Conn;
use crate::error::ApiError;
use crate::failover::{ProxyCall, Served};
use crate::openai::{RequestFacts, Usage};

/// How long a finished stream may take to reach EOF, so its upstream
/// connection goes back to the pool instead of being dropped.
const DRAIN: Duration = Duration::from_secs(1);

/// A request ready to go upstream.
pub(crate) struct Job {
    /// The client's id (or the server's), echoed in every reply.
    pub id: Value,
    /// Client model name.
    pub model: String,
    /// Upstream body: `stream: true`, `stream_options.include_usage: true`.
    pub body: Bytes,
    /// What routing reads from it.
    pub facts: RequestFacts,
    /// Keep the answer's text (conversation turns).
    pub collect: bool,
}

impl Job {
    /// Forces `stream: true` and `stream_options.include_usage: true` (so
    /// `done` can carry `usage`), then reads the routing facts.
    pub fn new(
        id: Value,
        mut body: Map<String, Value>,
        collect: bool,
    ) -> Result<Self, (Value, ApiError)> {
        body.insert("stream".into(), Value::Bool(true));
        match body.get_mut("stream_options") {
            Some(Value::Object(o)) => {
                o.insert("include_usage".into(), Value::Bool(true));
            }
            _ => {
                body.insert("stream_options".into(), json!({"include_usage": true}));
            }
        }
        let bytes = Bytes::from(Value::Object(body).to_string());
        let facts = match crate::openai::peek(&bytes) {
            Ok(f) => f,
            Err(e) => return Err((id, e)),
        };
        Ok(Self {
            id,
            model: facts.model.clone().unwrap_or_default(),
            body: bytes,
            facts,
            collect,
        })
    }
}

/// What the connection learns when a request task ends.
pub(crate) struct Ended {
    /// The answer's text, when the request completed and `collect` was set.
    pub answer: Option<String>,
}

/// Runs one request to its end; `cancel` stops it at any await point.
pub(crate) async fn run(
    conn: Arc<Conn>,
    out: mpsc::Sender<Message>,
    job: Job,
    cancel: CancellationToken,
) -> Ended {
    let started = Instant::now();
    let mut p = Progress::default();
    let end = serve(&conn, &out, &job, &cancel, &mut p).await;
    // The upstream response (if any) is dropped by now: the provider has seen
    // the disconnect before the client sees `done` with `cancelled`.
    let answer = super::outcome::finish(&conn, &out, &job, p, end, started).await;
    Ended { answer }
}

/// `None` when cancelled first.
async fn or_cancel<F: std::future::Future>(c: &CancellationToken, f: F) -> Option<F::Output> {
    tokio::select! {
        biased;
        () = c.cancelled() => None,
        v = f => Some(v),
    }
}

async fn serve(
    conn: &Conn,
    out: &mpsc::Sender<Message>,
    job: &Job,
    cancel: &CancellationToken,
    p: &mut Progress,
) -> End {
    let app = &conn.app;
    if let Some(id) = &conn.identity {
        if let Err(wait) = app.limits.check(id.index) {
            app.metrics
                .rate_limited
                .with_label_values(&[&id.name])
                .inc();
            let secs = wait.as_secs_f64().ceil() as u64;
            return End::Failed(Fail::api(&ApiError::rate_limited(secs)));
        }
    }
    let table = app.failover.table().load();
    let Some(route) = table.matcher.route_for(&job.model) else {
        return End::Failed(Fail::api(&ApiError::model_not_found(&job.model)));
    };
    let split_key = conn
        .split_key
        .as_deref()
        .or(job.facts.user.as_deref())
        .or(conn.identity.as_ref().map(|i| &*i.name));
    let (chain, in_split) = table.chain(route, split_key);
    p.route = Some((route, table.routes[route].name.clone()));
    p.primary = Some(table.routes[route].primary);
    p.in_split = in_split;
    drop(table);
    let call = ProxyCall {
        route,
        chain,
        in_split,
        suffix: "/chat/completions".into(),
        headers: conn.headers.clone(),
        body: job.body.clone(),
        facts: job.facts.clone(),
    };
    let walk = tower::ServiceExt::oneshot(app.failover.clone(), call);
    let Some(result) = or_cancel(cancel, walk).await else {
        return End::Cancelled;
    };
    let s = match result {
        Err(f) => {
            p.upstream = f.upstream;
            p.attempts = f.attempts;
            return End::Failed(Fail::api(&f.error));
        }
        Ok(s) => s,
    };
    p.upstream = Some(s.upstream);
    p.upstream_name = Some(app.failover.upstreams()[s.upstream].name.clone());
    p.attempts = s.attempts;
    p.ttft = Some(s.ttfb);
    match s.served {
        Served::Complete { status, body, .. } => {
            let end = super::outcome::complete(status, &body, p);
            if let Some(text) = p.text.take().filter(|t| !t.is_empty()) {
                let sent = send(out, cancel, protocol::delta(&job.id, &text)).await;
                p.text = job.collect.then_some(text);
                if let Err(e) = sent {
                    return e;
                }
            }
            end
        }
        Served::Stream { first, rest, .. } => {
            let idle = app.failover.upstreams()[s.upstream].timeouts.idle;
            let _active = ActiveStream::new(conn);
            relay(out, job, cancel, p, first, rest, idle).await
        }
    }
}

/// Sends one message; `Err` is how the request ends if it cannot.
async fn send(
    out: &mpsc::Sender<Message>,
    cancel: &CancellationToken,
    msg: String,
) -> Result<(), End> {
    match or_cancel(cancel, out.send(Message::Text(msg.into()))).await {
        None => Err(End::Cancelled),
        Some(Err(_)) => Err(End::ClientGone),
        Some(Ok(())) => Ok(()),
    }
}

type Upstream = crate::upstream::BodyStream;

/// Upstream SSE → `delta` messages until `[DONE]`, a failure, or a cancel.
async fn relay(
    out: &mpsc::Sender<Message>,
    job: &Job,
    cancel: &CancellationToken,
    p: &mut Progress,
    first: Bytes,
    mut rest: Upstream,
    idle: Duration,
) -> End {
    let mut events = EventSplitter::default();
    let mut next = Some(first);
    loop {
        let chunk = match next.take() {
            Some(b) => b,
            None => match or_cancel(cancel, tokio::time::timeout(idle, rest.next())).await {
                None => return End::Cancelled,
                Some(Err(_)) => return p.broke("idle_timeout", "no data within the idle timeout"),
                Some(Ok(None)) => {
                    return p.broke("eof_without_done", "stream ended without [DONE]")
                }
                Some(Ok(Some(Err(_)))) => return p.broke("reset", "connection error"),
                Some(Ok(Some(Ok(b)))) => b,
            },
        };
        let Ok(pieces) = events.feed(&chunk) else {
            return p.broke(
                "invalid_response",
                "the upstream sent something that is not SSE JSON",
            );
        };
        for piece in pieces {
            let Piece {
                content,
                finish_reason,
                usage,
                error,
                done,
            } = piece;
            if let Some(u) = usage {
                p.usage = serde_json::from_value::<Usage>(u.clone()).ok();
                p.usage_raw = Some(u);
            }
            if let Some(e) = error {
                return p.broke_with(e);
            }
            if finish_reason.is_some() {
                p.finish_reason = finish_reason;
            }
            if let Some(text) = content {
                if job.collect {
                    p.text.get_or_insert_with(String::new).push_str(&text);
                }
                if let Err(end) = send(out, cancel, protocol::delta(&job.id, &text)).await {
                    return end;
                }
            }
            if done {
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(DRAIN, async {
                        while let Some(Ok(_)) = rest.next().await {}
                    })
                    .await;
                });
                return End::Done;
            }
        }
    }
}

/// `turnout_active_streams{transport="ws"}` for as long as it lives.
struct ActiveStream(crate::metrics::Metrics);

impl ActiveStream {
    fn new(conn: &Conn) -> Self {
        let m = conn.app.metrics.clone();
        m.active_streams.with_label_values(&["ws"]).inc();
        Self(m)
    }
}

impl Drop for ActiveStream {
    fn drop(&mut self) {
        self.0.active_streams.with_label_values(&["ws"]).dec();
    }
}
