//! How a socket's request ends: what was learnt on the way ([`Progress`]),
//! the one final message (`done` or `error`, never both), and the request
//! core's one [`Finish`] (metrics, cost, log line, and the health report of a
//! stream that broke).

use std::time::Duration;

use axum::extract::ws::Message;
use axum::http::StatusCode;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::job::Job;
use super::protocol::{self, error_obj};
use super::Conn;
use crate::accounting::Transport;
use crate::error::ApiError;
use crate::openai::Usage;
use crate::outcome::Outcome;
use crate::request::finish::{Ending, Finish};
use crate::request::plan::Plan;
use crate::request::walk::AttemptRecord;
use crate::routing::UpstreamId;

/// What a request learnt before it ended.
#[derive(Default)]
pub(crate) struct Progress {
    /// Route, chain and snapshot, once routed.
    pub plan: Option<Plan>,
    /// Serving (or last tried) upstream.
    pub upstream: Option<UpstreamId>,
    /// Upstream attempts.
    pub attempts: u32,
    /// Time to the first event.
    pub ttft: Option<Duration>,
    /// Tokens for the metrics, and the upstream's `usage` object for `done`.
    pub usage: Option<Usage>,
    pub usage_raw: Option<Value>,
    /// Every upstream attempt, in order.
    pub records: Vec<AttemptRecord>,
    /// Last `finish_reason` seen.
    pub finish_reason: Option<String>,
    /// The answer's text, when kept.
    pub text: Option<String>,
}

/// Why a request ended.
pub(crate) enum End {
    /// `[DONE]` (or a whole JSON answer).
    Done,
    /// A `cancel` frame, or the socket closed.
    Cancelled,
    /// The socket's writer is gone: nobody to answer.
    ClientGone,
    /// An `error` message ends it.
    Failed(Fail),
}

/// An error reply and how it is counted.
pub(crate) struct Fail {
    /// Status for the metrics (what HTTP would have answered).
    pub status: u16,
    /// The OpenAI-shaped error object.
    pub error: Value,
    /// How the stream broke after its first event.
    pub stream_error: Option<Outcome>,
    /// The error's code, for the audit line.
    pub code: &'static str,
}

impl Fail {
    /// A proxy error, as HTTP would answer it.
    pub fn api(e: &ApiError) -> Self {
        let mut error = error_obj(&e.message, e.kind, e.code, None);
        if let (Some(secs), Value::Object(o)) = (e.retry_after, &mut error) {
            o.insert("retry_after".into(), secs.into());
        }
        Self {
            status: e.status.as_u16(),
            error,
            stream_error: None,
            code: e.code,
        }
    }
}

impl Progress {
    /// The stream broke after its first event: an `error`, never a `done`.
    pub fn broke(&self, outcome: Outcome) -> End {
        let name = match (&self.plan, self.upstream) {
            (Some(plan), Some(up)) => &*plan.snap.upstream(up).name,
            _ => "?",
        };
        let msg = format!(
            "upstream {name} failed mid-stream: {}",
            outcome.stream_detail()
        );
        End::Failed(Fail {
            status: 200,
            error: error_obj(&msg, "upstream_error", "stream_interrupted", None),
            stream_error: Some(outcome),
            code: "stream_interrupted",
        })
    }

    /// The upstream sent an error event inside its stream.
    pub fn broke_with(&self, error: Value) -> End {
        match error {
            e @ Value::Object(_) => End::Failed(Fail {
                status: 200,
                error: e,
                stream_error: Some(Outcome::UpstreamError),
                code: "upstream_error",
            }),
            _ => self.broke(Outcome::UpstreamError),
        }
    }
}

/// Reads a whole (non-streamed) upstream answer: an error, or the text to send.
pub(crate) fn complete(status: StatusCode, body: &[u8], p: &mut Progress) -> End {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if !status.is_success() {
        let code = status.as_u16();
        let error = v.get("error").filter(|e| e.is_object()).cloned();
        let error = error.unwrap_or_else(|| {
            let msg = format!("The upstream answered HTTP {code}.");
            error_obj(&msg, "upstream_error", "upstream_error", None)
        });
        return End::Failed(Fail {
            status: code,
            error,
            stream_error: None,
            code: "upstream_error",
        });
    }
    let choice = v.pointer("/choices/0");
    let text = choice.and_then(|c| c.pointer("/message/content"));
    p.text = text.and_then(Value::as_str).map(str::to_owned);
    let finish = choice.and_then(|c| c.get("finish_reason"));
    p.finish_reason = finish.and_then(Value::as_str).map(str::to_owned);
    if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
        p.usage = crate::openai::usage_of(u);
        p.usage_raw = Some(u.clone());
    }
    End::Done
}

/// Records a request refused before it reached a route (bad frame, limit).
pub(crate) fn refused(conn: &Conn, id: &Value, status: u16) {
    let fin = Finish::new(
        conn.app.clone(),
        Transport::Ws,
        conn.request_id(id),
        Instant::now(),
        conn.identity.as_ref().map(|i| i.index),
    );
    let end = Ending {
        status,
        ..Ending::default()
    };
    fin.record(None, "", end);
}

/// Records the request, sends its last message, and returns the answer's
/// text for the conversation (only for a completed `collect` request).
pub(crate) async fn finish(
    fin: &Finish,
    out: &mpsc::Sender<Message>,
    job: &Job,
    mut p: Progress,
    end: End,
) -> Option<String> {
    let usage = p.usage_raw.as_ref();
    let (status, stream_error, reply, code) = match &end {
        End::Done => {
            let reason = p.finish_reason.as_deref().unwrap_or("stop");
            (
                200,
                None,
                Some(protocol::done(&job.id, reason, usage)),
                None,
            )
        }
        End::Cancelled => (
            499,
            None,
            Some(protocol::done(&job.id, "cancelled", usage)),
            Some("cancelled"),
        ),
        End::ClientGone => (499, None, None, Some("client_gone")),
        End::Failed(f) => (
            f.status,
            f.stream_error,
            Some(protocol::error(&job.id, &f.error)),
            Some(f.code),
        ),
    };
    let ending = Ending {
        status,
        upstream: p.upstream,
        attempts: p.attempts,
        ttft: p.ttft,
        usage: p.usage,
        broke: stream_error,
        records: std::mem::take(&mut p.records),
        stream: true,
        error: code,
        answer: None,
    };
    fin.record(p.plan.as_ref(), &job.model, ending);
    if let Some(r) = reply {
        let _ = out.send(Message::Text(r.into())).await;
    }
    match end {
        End::Done if job.collect => Some(p.text.take().unwrap_or_default()),
        _ => None,
    }
}
