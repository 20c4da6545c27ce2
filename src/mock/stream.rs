//! The SSE body of a streamed answer in each protocol (chat completions,
//! Responses, Anthropic Messages), with its timing (time to first token,
//! delay between content events) and its stream faults (truncate, reset,
//! stall, an in-band error, an empty answer). All events are formatted into
//! one buffer up front and sent as zero-copy slices of it.

use std::fmt::Write as _;
use std::io;
use std::ops::Range;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;

use super::body::{self, Head, Script};
use super::state::Flight;
use super::Fault;

/// Which protocol's stream to play.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wire {
    /// `chat.completion.chunk` events, `data: [DONE]`.
    Chat,
    /// Responses events, `response.completed`.
    Responses,
    /// Anthropic Messages events, `message_stop`.
    Messages,
}

/// How a stream ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// Normally (the events include the protocol's clean end), or cut
    /// cleanly where the fault says.
    Eof,
    /// Body error: hyper aborts the connection mid-body.
    Reset,
    /// Never ends; the client has to give up.
    Stall,
}

/// What to stream for one request.
pub(crate) struct Plan<'a> {
    pub wire: Wire,
    pub head: Head<'a>,
    pub script: &'a Script,
    /// Prompt tokens; chat sends its usage chunk only when `include_usage`.
    pub prompt: u64,
    pub include_usage: bool,
    pub ttft: Duration,
    pub chunk_delay: Duration,
}

/// Formatted events: the buffer, each event's end offset, which events are
/// content (spaced by `chunk_delay`), and how many trailing events are the
/// protocol's clean end (dropped by `truncate`).
struct Events {
    buf: String,
    bounds: Vec<usize>,
    content: Range<usize>,
    clean_end: usize,
}

impl Events {
    fn new(n: usize) -> Self {
        Self {
            buf: String::with_capacity(256 * (n + 8)),
            bounds: Vec::with_capacity(n + 8),
            content: 0..0,
            clean_end: 0,
        }
    }

    /// Appends one `event:` (when named) + `data:` event.
    fn push(&mut self, name: Option<&str>, data: &str) {
        if let Some(n) = name {
            let _ = writeln!(self.buf, "event: {n}");
        }
        let _ = write!(self.buf, "data: {data}\n\n");
        self.bounds.push(self.buf.len());
    }

    /// Keeps the first `n` events.
    fn cut(&mut self, n: usize) {
        self.bounds.truncate(n);
        self.buf.truncate(self.bounds.last().copied().unwrap_or(0));
    }
}

/// Builds the SSE body; `flight` is counted when the body ends or is dropped.
pub(crate) fn sse_body(plan: &Plan, fault: Option<&Fault>, flight: Flight) -> Body {
    let mut ev = match fault {
        Some(Fault::Empty) => empty(plan),
        _ => events(plan),
    };
    let (end, limit) = match fault {
        Some(Fault::Truncate { after }) => {
            let whole = ev.bounds.len() - ev.clean_end;
            (End::Eof, Some((*after as usize).min(whole)))
        }
        Some(Fault::Reset { after }) => (End::Reset, Some(*after as usize)),
        Some(Fault::Stall { after }) => (End::Stall, Some(*after as usize)),
        Some(Fault::Error { after }) => {
            ev.cut(*after as usize);
            in_band_error(plan, &mut ev);
            (End::Eof, None)
        }
        _ => (End::Eof, None),
    };
    if let Some(limit) = limit {
        ev.cut(limit);
    }
    let timed = !(plan.ttft.is_zero() && plan.chunk_delay.is_zero());
    if !timed && !ev.bounds.is_empty() {
        // Nothing to wait for between events: one write is cheapest.
        ev.bounds = vec![ev.buf.len()];
    }
    let state = Sse {
        buf: Bytes::from(ev.buf),
        bounds: ev.bounds,
        idx: 0,
        start: 0,
        content: ev.content,
        ttft: plan.ttft,
        chunk_delay: plan.chunk_delay,
        end,
        flight,
        errored: false,
    };
    Body::from_stream(futures_util::stream::unfold(state, next_event))
}

/// A whole answer in the plan's protocol.
fn events(plan: &Plan) -> Events {
    let s = plan.script;
    let h = &plan.head;
    let mut ev = Events::new(s.pieces.len());
    let completion = u64::from(s.chunks);
    match plan.wire {
        Wire::Chat => {
            chat_chunk(&mut ev, h, r#"{"role":"assistant","content":""}"#, "null");
            let first = ev.bounds.len();
            for d in &s.deltas {
                chat_chunk(&mut ev, h, d, "null");
            }
            ev.content = first..ev.bounds.len();
            chat_chunk(&mut ev, h, "{}", "\"stop\"");
            if plan.include_usage {
                let usage = body::usage(plan.prompt, completion);
                let mut line = String::new();
                body::push_usage_chunk(&mut line, h, &usage);
                ev.buf.push_str(&line);
                ev.bounds.push(ev.buf.len());
            }
            ev.push(None, "[DONE]");
            ev.clean_end = 1;
        }
        Wire::Responses => {
            let mut seq = 0;
            let mut next = || {
                seq += 1;
                seq - 1
            };
            let created = body::response_object(h, "in_progress", "[]", "null");
            for kind in ["response.created", "response.in_progress"] {
                let data = format!(
                    r#"{{"type":"{kind}","sequence_number":{},"response":{created}}}"#,
                    next()
                );
                ev.push(Some(kind), &data);
            }
            let item = body::response_message(h, "in_progress", None);
            let data = format!(
                r#"{{"type":"response.output_item.added","sequence_number":{},"output_index":0,"item":{item}}}"#,
                next()
            );
            ev.push(Some("response.output_item.added"), &data);
            let at = format!(
                r#""item_id":"msg_mock_{}","output_index":0,"content_index":0"#,
                h.id
            );
            let data = format!(
                r#"{{"type":"response.content_part.added","sequence_number":{},{at},"part":{{"type":"output_text","text":"","annotations":[]}}}}"#,
                next()
            );
            ev.push(Some("response.content_part.added"), &data);
            let first = ev.bounds.len();
            for p in &s.pieces {
                let data = format!(
                    r#"{{"type":"response.output_text.delta","sequence_number":{},{at},"delta":{p},"logprobs":[]}}"#,
                    next()
                );
                ev.push(Some("response.output_text.delta"), &data);
            }
            ev.content = first..ev.bounds.len();
            let full = &s.full;
            let data = format!(
                r#"{{"type":"response.output_text.done","sequence_number":{},{at},"text":{full},"logprobs":[]}}"#,
                next()
            );
            ev.push(Some("response.output_text.done"), &data);
            let data = format!(
                r#"{{"type":"response.content_part.done","sequence_number":{},{at},"part":{{"type":"output_text","text":{full},"annotations":[]}}}}"#,
                next()
            );
            ev.push(Some("response.content_part.done"), &data);
            let item = body::response_message(h, "completed", Some(full));
            let data = format!(
                r#"{{"type":"response.output_item.done","sequence_number":{},"output_index":0,"item":{item}}}"#,
                next()
            );
            ev.push(Some("response.output_item.done"), &data);
            let usage = body::response_usage(plan.prompt, completion);
            let done = body::response_object(h, "completed", &format!("[{item}]"), &usage);
            let data = format!(
                r#"{{"type":"response.completed","sequence_number":{},"response":{done}}}"#,
                next()
            );
            ev.push(Some("response.completed"), &data);
            ev.clean_end = 1;
        }
        Wire::Messages => {
            message_start(&mut ev, plan);
            ev.push(
                Some("content_block_start"),
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            );
            ev.push(Some("ping"), r#"{"type": "ping"}"#);
            let first = ev.bounds.len();
            for p in &s.pieces {
                let data = format!(
                    r#"{{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":{p}}}}}"#
                );
                ev.push(Some("content_block_delta"), &data);
            }
            ev.content = first..ev.bounds.len();
            ev.push(
                Some("content_block_stop"),
                r#"{"type":"content_block_stop","index":0}"#,
            );
            message_end(&mut ev, completion);
            ev.clean_end = 1;
        }
    }
    ev
}

/// An empty answer that ends cleanly: the preamble, then the clean end.
fn empty(plan: &Plan) -> Events {
    let h = &plan.head;
    let mut ev = Events::new(0);
    match plan.wire {
        Wire::Chat => {
            chat_chunk(&mut ev, h, r#"{"role":"assistant","content":""}"#, "null");
            ev.push(None, "[DONE]");
        }
        Wire::Responses => {
            let created = body::response_object(h, "in_progress", "[]", "null");
            let data = format!(
                r#"{{"type":"response.created","sequence_number":0,"response":{created}}}"#
            );
            ev.push(Some("response.created"), &data);
            let usage = body::response_usage(plan.prompt, 0);
            let done = body::response_object(h, "completed", "[]", &usage);
            let data =
                format!(r#"{{"type":"response.completed","sequence_number":1,"response":{done}}}"#);
            ev.push(Some("response.completed"), &data);
        }
        Wire::Messages => {
            message_start(&mut ev, plan);
            message_end(&mut ev, 0);
        }
    }
    ev.clean_end = 1;
    ev
}

/// The protocol's in-band error event.
fn in_band_error(plan: &Plan, ev: &mut Events) {
    match plan.wire {
        Wire::Chat => ev.push(
            None,
            &body::error("mock fault: in-band error", "server_error", "server_error"),
        ),
        Wire::Responses => {
            let failed = body::response_object(&plan.head, "failed", "[]", "null").replacen(
                r#""error":null"#,
                r#""error":{"code":"server_error","message":"mock fault: in-band error"}"#,
                1,
            );
            let data = format!(r#"{{"type":"response.failed","sequence_number":99,"response":{failed}}}"#);
            ev.push(Some("response.failed"), &data);
        }
        Wire::Messages => ev.push(
            Some("error"),
            r#"{"type":"error","error":{"type":"overloaded_error","message":"mock fault: in-band error"}}"#,
        ),
    }
}

fn chat_chunk(ev: &mut Events, h: &Head, delta: &str, finish: &str) {
    body::push_chunk(&mut ev.buf, h, delta, finish);
    ev.bounds.push(ev.buf.len());
}

fn message_start(ev: &mut Events, plan: &Plan) {
    let msg = body::message(&plan.head, "[]", "null", plan.prompt, 1);
    let data = format!(r#"{{"type":"message_start","message":{msg}}}"#);
    ev.push(Some("message_start"), &data);
}

fn message_end(ev: &mut Events, completion: u64) {
    let data = format!(
        r#"{{"type":"message_delta","delta":{{"stop_reason":"end_turn","stop_sequence":null}},"usage":{{"output_tokens":{completion}}}}}"#
    );
    ev.push(Some("message_delta"), &data);
    ev.push(Some("message_stop"), r#"{"type":"message_stop"}"#);
}

/// Progress of one SSE body.
struct Sse {
    buf: Bytes,
    /// End offset of each event in `buf`.
    bounds: Vec<usize>,
    idx: usize,
    start: usize,
    /// Content events (spaced by `chunk_delay`).
    content: Range<usize>,
    ttft: Duration,
    chunk_delay: Duration,
    end: End,
    flight: Flight,
    errored: bool,
}

/// Produces the next event after its delay, then the end the plan asks for.
async fn next_event(mut st: Sse) -> Option<(io::Result<Bytes>, Sse)> {
    if let Some(&stop) = st.bounds.get(st.idx) {
        let wait = match st.idx {
            0 => st.ttft,
            i if i > st.content.start && i < st.content.end => st.chunk_delay,
            _ => Duration::ZERO,
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let event = st.buf.slice(st.start..stop);
        st.idx += 1;
        st.start = stop;
        return Some((Ok(event), st));
    }
    match st.end {
        End::Eof => {
            st.flight.finish();
            None
        }
        End::Reset if !st.errored => {
            // Let hyper flush what was sent before the abort.
            tokio::task::yield_now().await;
            st.flight.finish();
            st.errored = true;
            let err = io::Error::new(io::ErrorKind::ConnectionReset, "mock reset");
            Some((Err(err), st))
        }
        End::Reset => None,
        End::Stall => std::future::pending().await,
    }
}
