//! One chat request of a socket, as its own task, on the same request core
//! as HTTP: [`plan`] (route → split key → chain), the [`Failover`] walk (so a
//! stream fails over until its first event), the [`StreamReader`] (idle and
//! total deadlines), and the one [`Finish`]; only the edge differs: the
//! upstream's SSE becomes `delta` messages, ending in exactly one `done` or
//! `error`.

use std::sync::Arc;

use axum::extract::ws::Message;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::events::{EventSplitter, Piece};
use super::job::Job;
use super::outcome::{End, Fail, Progress};
use super::protocol;
use super::Conn;
use crate::accounting::Transport;
use crate::outcome::Outcome;
use crate::request::failover::{FailoverLayer, ProxyCall, Served, UpstreamService};
use crate::request::finish::Finish;
use crate::request::gate::rate_limit;
use crate::request::plan::{plan, split_key};
use crate::request::protocol::Protocol;
use crate::request::reader::{StreamReader, DRAIN};

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
    let mut fin = Finish::new(
        conn.app.clone(),
        Transport::Ws,
        conn.request_id(&job.id),
        Instant::now(),
        conn.identity.as_ref().map(|i| i.index),
    );
    // A new trace per chat request (the socket's headers carry none).
    fin.trace_request(&conn.headers, "POST", "/v1/chat/completions");
    let mut p = Progress::default();
    let end = serve(&conn, &fin, &out, &job, &cancel, &mut p).await;
    // The upstream response (if any) is dropped by now: the provider has seen
    // the disconnect before the client sees `done` with `cancelled`.
    let answer = super::outcome::finish(&fin, &out, &job, p, end).await;
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
    fin: &Finish,
    out: &mpsc::Sender<Message>,
    job: &Job,
    cancel: &CancellationToken,
    p: &mut Progress,
) -> End {
    let app = &conn.app;
    let snap = app.live.load();
    if let Some(id) = &conn.identity {
        if let Err(e) = rate_limit(&app.metrics, &snap, id) {
            return End::Failed(Fail::api(&e));
        }
    }
    let key = split_key(
        conn.split_key.as_deref(),
        job.facts.user.as_deref(),
        conn.identity.as_ref(),
    );
    let plan = match plan(snap, &job.model, key) {
        Ok(p) => p,
        Err(e) => return End::Failed(Fail::api(&e)),
    };
    fin.trace_planned(&job.model, &plan);
    p.plan = Some(plan.clone());
    let call = ProxyCall {
        plan: plan.clone(),
        suffix: "/chat/completions".into(),
        headers: conn.headers.clone(),
        body: job.body.clone(),
        facts: job.facts.clone(),
        trace: fin.trace_parent(),
        method: axum::http::Method::POST,
        protocol: Protocol::Chat,
    };
    let failover = tower::Layer::layer(&FailoverLayer::new(app.clone()), UpstreamService);
    let walk = tower::ServiceExt::oneshot(failover, call);
    let Some(result) = or_cancel(cancel, walk).await else {
        return End::Cancelled;
    };
    let mut s = match result {
        Err(f) => {
            p.upstream = f.upstream;
            p.endpoint = f.records.last().map_or(0, |r| r.endpoint);
            p.attempts = f.attempts;
            p.records = f.records;
            return End::Failed(Fail::api(&f.error));
        }
        Ok(s) => s,
    };
    p.upstream = Some(s.upstream);
    p.endpoint = s.endpoint;
    p.attempts = s.attempts;
    p.records = std::mem::take(&mut s.records);
    p.ttft = Some(s.ttfb);
    let span = s.span;
    match s.served {
        Served::Complete { status, body, .. } => {
            fin.trace_served(span, &body);
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
        // Chat requests are never passed through.
        Served::Raw { .. } => End::Failed(Fail::api(&crate::error::ApiError::internal(
            "unexpected pass-through answer",
        ))),
        Served::Stream {
            first, rest, scan, ..
        } => {
            fin.trace_served(span, &first);
            let timeouts = &plan.snap.upstream(s.upstream).timeouts;
            let deadline = fin.started() + timeouts.total;
            let reader = StreamReader::new(first, rest, scan, timeouts.idle, deadline);
            let _active = fin.stream_opened();
            relay(out, job, cancel, p, reader).await
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

/// The upstream's SSE → `delta` messages until `[DONE]`, a failure, or a cancel.
async fn relay(
    out: &mpsc::Sender<Message>,
    job: &Job,
    cancel: &CancellationToken,
    p: &mut Progress,
    mut reader: StreamReader,
) -> End {
    let mut events = EventSplitter::default();
    loop {
        let chunk = match or_cancel(cancel, reader.next()).await {
            None => return End::Cancelled,
            Some(Some(Err(outcome))) => return p.broke(outcome),
            // The reader saw the clean end before the splitter did.
            Some(None) => return End::Done,
            Some(Some(Ok(b))) => b,
        };
        let Ok(pieces) = events.feed(&chunk) else {
            return p.broke(Outcome::InvalidResponse);
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
                p.usage = crate::openai::usage_of(&u);
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
                drain(reader);
                return End::Done;
            }
        }
    }
}

/// Lets the reader finish a cleanly ended stream in the background (its own
/// brief drain to EOF), so the upstream connection goes back to the pool
/// instead of being dropped; bounded by [`DRAIN`] whatever the upstream does.
fn drain(mut reader: StreamReader) {
    tokio::spawn(async move {
        let _ = tokio::time::timeout(DRAIN, async { while reader.next().await.is_some() {} }).await;
    });
}
