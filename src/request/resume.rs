//! Mid-stream resume (PRODUCT.md §4, opt-in per route with `resume.enabled`):
//! a chat completions or Anthropic Messages stream that breaks after its
//! commit point is continued by the next upstream of the chain that declares
//! `prefill: true`. The text the client already has is sent to it as a
//! trailing assistant turn, and its continuation is spliced into the same
//! stream so the client reads one answer: for chat, chunk ids, `created` and
//! `model` rewritten to what the client already saw and its role-only opening
//! dropped; for Messages, its `message_start` dropped, its first text block
//! merged into the block the client has open, block indexes renumbered.
//!
//! Only text answers resume: a stream with a tool call, one that already
//! gave a `finish_reason`, one that broke inside an event (its half event
//! cannot be taken back), and one whose upstream sent its own error event are
//! ended with the error event as before. One continuation is tried, once.
//! Reading what the client was sent costs a JSON parse per event, so only
//! routes that opt in pay it.

use std::sync::Arc;

use axum::http::{HeaderMap, Method};
use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tokio::time::Instant;
use tower::ServiceExt;

use super::attempt::{Attempt, Served, UpstreamService};
use super::plan::Plan;
use super::protocol::Protocol;
use super::reader::StreamReader;
use super::sse::{blank_line, Event, Framer};
use crate::openai::Usage;
use crate::outcome::Outcome;
use crate::routing::UpstreamId;

/// Most text kept to replay as the prefill; a longer answer is not resumed.
const MAX_TEXT: usize = 1024 * 1024;
/// Longest continuation event rewritten; a longer one ends the stream.
const MAX_EVENT: usize = 1024 * 1024;

/// What a resumable request needs: its own body and headers to ask again,
/// and what its client has been sent so far.
pub struct Resume {
    protocol: Protocol,
    body: Bytes,
    suffix: Arc<str>,
    headers: Arc<HeaderMap>,
    want_usage: bool,
    seen: Transcript,
}

/// The text and chunk identity the client has read.
#[derive(Default)]
struct Transcript {
    framer: Framer,
    text: String,
    id: Option<String>,
    model: Option<String>,
    created: Option<u64>,
    /// A tool call, a `finish_reason`, or more text than [`MAX_TEXT`]: not resumable.
    closed: bool,
    /// Messages: the text block the client has open, and the next free index.
    open_block: Option<u64>,
    next_block: u64,
}

/// The fields of a Messages event that resume reads.
#[derive(Deserialize)]
struct MessagesEvent<'a> {
    #[serde(borrow, rename = "type")]
    kind: &'a str,
    #[serde(default)]
    index: Option<u64>,
    #[serde(borrow, default)]
    content_block: Option<Typed<'a>>,
    #[serde(borrow, default)]
    delta: Option<MessagesDelta<'a>>,
}

#[derive(Deserialize)]
struct Typed<'a> {
    #[serde(borrow, rename = "type")]
    kind: &'a str,
}

#[derive(Deserialize)]
struct MessagesDelta<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Option<&'a str>,
    #[serde(default)]
    text: Option<String>,
    #[serde(borrow, default)]
    stop_reason: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(borrow, default)]
    id: Option<&'a str>,
    #[serde(borrow, default)]
    model: Option<&'a str>,
    #[serde(default)]
    created: Option<u64>,
    #[serde(borrow, default)]
    choices: Vec<Choice<'a>>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(borrow, default)]
    delta: Option<Delta<'a>>,
    #[serde(borrow, default)]
    finish_reason: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(default)]
    content: Option<String>,
    #[serde(borrow, default)]
    tool_calls: Option<&'a RawValue>,
    #[serde(borrow, default)]
    function_call: Option<&'a RawValue>,
}

impl Transcript {
    fn event(&mut self, protocol: Protocol, ev: &Event<'_>) {
        if !ev.whole() {
            // Too long to read: its text is unknown, so it cannot be replayed.
            self.closed = true;
            return;
        }
        if protocol == Protocol::Messages {
            return self.messages_event(ev);
        }
        let Ok(c) = serde_json::from_slice::<Chunk<'_>>(&ev.data) else {
            return;
        };
        if self.id.is_none() {
            self.id = c.id.map(str::to_owned);
            self.model = c.model.map(str::to_owned);
            self.created = c.created;
        }
        for choice in c.choices {
            let not_null = |v: Option<&RawValue>| v.is_some_and(|v| v.get() != "null");
            if not_null(choice.finish_reason) {
                self.closed = true;
            }
            if let Some(d) = choice.delta {
                if not_null(d.tool_calls) || not_null(d.function_call) {
                    self.closed = true;
                }
                if let Some(t) = d.content {
                    self.text.push_str(&t);
                }
            }
        }
        self.bound();
    }

    /// Anthropic Messages: text deltas of text blocks; any other block (a
    /// tool call, thinking) or a `stop_reason` closes the transcript.
    fn messages_event(&mut self, ev: &Event<'_>) {
        let Ok(m) = serde_json::from_slice::<MessagesEvent<'_>>(&ev.data) else {
            return;
        };
        match m.kind {
            "content_block_start" => {
                let index = m.index.unwrap_or(self.next_block);
                self.next_block = self.next_block.max(index + 1);
                if m.content_block.is_some_and(|b| b.kind == "text") {
                    self.open_block = Some(index);
                } else {
                    self.closed = true;
                }
            }
            "content_block_delta" => match m.delta {
                Some(MessagesDelta {
                    kind: Some("text_delta"),
                    text: Some(t),
                    ..
                }) => self.text.push_str(&t),
                _ => self.closed = true,
            },
            "content_block_stop" => self.open_block = None,
            "message_delta" => {
                let stop = m.delta.and_then(|d| d.stop_reason);
                if stop.is_some_and(|r| r.get() != "null") {
                    self.closed = true;
                }
            }
            _ => {}
        }
        self.bound();
    }

    fn bound(&mut self) {
        if self.text.len() > MAX_TEXT {
            self.closed = true;
            self.text = String::new();
        }
    }
}

impl Resume {
    /// For a streamed chat or Messages request on a route with
    /// `resume.enabled`; `None` for another protocol.
    pub fn new(
        protocol: Protocol,
        body: Bytes,
        suffix: Arc<str>,
        headers: Arc<HeaderMap>,
        want_usage: bool,
    ) -> Option<Self> {
        if !matches!(protocol, Protocol::Chat | Protocol::Messages) {
            return None;
        }
        Some(Self {
            protocol,
            body,
            suffix,
            headers,
            want_usage,
            seen: Transcript::default(),
        })
    }

    /// Reads a chunk the client is sent.
    pub fn observe(&mut self, chunk: &[u8]) {
        if self.seen.closed {
            return;
        }
        let (seen, protocol) = (&mut self.seen, self.protocol);
        let mut framer = std::mem::take(&mut seen.framer);
        framer.feed(chunk, &mut |ev| {
            seen.event(protocol, ev);
            false
        });
        seen.framer = framer;
    }

    /// Whether a stream that broke with `outcome` (at an event boundary or
    /// not: `mid_event`) can be continued.
    pub fn resumable(&self, outcome: Outcome, mid_event: bool) -> bool {
        let broke = matches!(
            outcome,
            Outcome::Reset | Outcome::IdleTimeout | Outcome::EofWithoutDone
        );
        broke && !mid_event && !self.seen.closed
    }

    /// Asks the next upstream of the chain after `failed` that declares
    /// `prefill: true` to continue the answer. `Some` once its continuation
    /// has begun (its commit point); `None` when no upstream can, or it
    /// failed before it began.
    pub fn continuation(
        &self,
        plan: Plan,
        failed: UpstreamId,
    ) -> impl std::future::Future<Output = Option<Continued>> + Send + 'static {
        let body = self.prefilled_body();
        let (suffix, headers, want_usage) =
            (self.suffix.clone(), self.headers.clone(), self.want_usage);
        let protocol = self.protocol;
        let splice = Splice {
            protocol,
            buf: BytesMut::new(),
            id: self.seen.id.clone(),
            model: self.seen.model.clone(),
            created: self.seen.created,
            blocks: Vec::new(),
            merge_into: self.seen.open_block,
            next_block: self.seen.next_block,
        };
        async move {
            let up = next_prefill(&plan, failed)?;
            let body = body?;
            let facts = crate::openai::peek(&body).ok()?;
            let attempt = Attempt {
                snap: plan.snap.clone(),
                upstream: up,
                suffix,
                headers,
                model: facts
                    .model
                    .as_deref()
                    .zip(facts.model_span)
                    .map(|(m, s)| (Arc::from(m), s)),
                body,
                form: false,
                stream: true,
                method: Method::POST,
                protocol,
                want_usage,
            };
            let started = Instant::now();
            let served = UpstreamService.oneshot(attempt).await.ok()?;
            let Served::Stream {
                first, rest, scan, ..
            } = served
            else {
                return None;
            };
            let timeouts = &plan.snap.upstream(up).timeouts;
            let deadline = started + timeouts.total;
            let reader = StreamReader::new(first, rest, scan, timeouts.idle, deadline);
            Some(Continued {
                upstream: up,
                reader,
                splice,
            })
        }
    }

    /// The client's body with the text sent so far as a trailing assistant turn.
    fn prefilled_body(&self) -> Option<Bytes> {
        let mut body: Map<String, Value> = serde_json::from_slice(&self.body).ok()?;
        let Some(Value::Array(messages)) = body.get_mut("messages") else {
            return None;
        };
        // Nothing said yet (a Messages stream commits at its block's start):
        // the continuation is the whole answer.
        if !self.seen.text.is_empty() {
            messages.push(serde_json::json!({"role": "assistant", "content": self.seen.text}));
        }
        body.insert("stream".into(), Value::Bool(true));
        serde_json::to_vec(&body).ok().map(Bytes::from)
    }
}

/// The next upstream of the chain after `failed` (wrapping round) that
/// declares `prefill: true` and is usable now.
fn next_prefill(plan: &Plan, failed: UpstreamId) -> Option<UpstreamId> {
    let ids: Vec<UpstreamId> = plan.chain.ids().collect();
    let at = ids.iter().position(|&u| u == failed).unwrap_or(0);
    let now = Instant::now();
    let cfg = plan.snap.cfg();
    (1..ids.len())
        .map(|i| ids[(at + i) % ids.len()])
        .filter(|&u| u != failed)
        .find(|&u| cfg.upstreams[u.index()].prefill && plan.snap.table.upstream(u).usable(now))
}

/// A continuation that has begun.
pub struct Continued {
    /// Who continues.
    pub upstream: UpstreamId,
    /// Its stream, after its commit point.
    pub reader: StreamReader,
    /// Rewrites its events into the client's stream.
    pub splice: Splice,
}

/// Rewrites a continuation's events so that they read as the same stream:
/// the first stream's chunk `id`, `created` and `model`; role-only chunks
/// dropped. `[DONE]` and anything that is not a chunk pass unchanged.
pub struct Splice {
    protocol: Protocol,
    buf: BytesMut,
    id: Option<String>,
    model: Option<String>,
    created: Option<u64>,
    /// Messages: the continuation's block index → the client's.
    blocks: Vec<(u64, u64)>,
    /// Messages: the client's open text block, which the continuation's
    /// first text block continues.
    merge_into: Option<u64>,
    next_block: u64,
}

impl Splice {
    /// The client's bytes for this chunk of the continuation (complete
    /// events only; a partial one waits for the next chunk). `Err` when an
    /// event is too long to rewrite.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Bytes, Outcome> {
        self.buf.extend_from_slice(chunk);
        let mut out = BytesMut::new();
        while let Some((start, sep)) = blank_line(&self.buf) {
            let ev = self.buf.split_to(start + sep);
            self.rewrite(&ev[..start], &mut out);
        }
        if self.buf.len() > MAX_EVENT {
            return Err(Outcome::InvalidResponse);
        }
        Ok(out.freeze())
    }

    fn rewrite(&mut self, ev: &[u8], out: &mut BytesMut) {
        let mut name = None;
        let mut data = None;
        for line in ev.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if let Some(v) = line.strip_prefix(b"data:") {
                data = Some(v.trim_ascii());
            } else if let Some(v) = line.strip_prefix(b"event:") {
                name = Some(v.trim_ascii());
            }
        }
        let Some(data) = data else {
            return; // comments and keep-alives are not the client's
        };
        let Ok(Value::Object(mut obj)) = serde_json::from_slice::<Value>(data) else {
            push_event(out, name, data);
            return;
        };
        let keep = match self.protocol {
            Protocol::Messages => self.messages(&mut obj),
            _ => self.chat(&mut obj),
        };
        if keep {
            push_event(out, name, Value::Object(obj).to_string().as_bytes());
        }
    }

    /// A chat chunk as the first stream's; false to drop it.
    fn chat(&self, chunk: &mut Map<String, Value>) -> bool {
        if !chunk.contains_key("choices") {
            return true;
        }
        if role_only(chunk) {
            return false;
        }
        if let Some(id) = &self.id {
            chunk.insert("id".into(), Value::String(id.clone()));
        }
        if let Some(m) = &self.model {
            chunk.insert("model".into(), Value::String(m.clone()));
        }
        if let Some(c) = self.created {
            chunk.insert("created".into(), Value::from(c));
        }
        true
    }

    /// A Messages event in the client's numbering; false to drop it.
    fn messages(&mut self, ev: &mut Map<String, Value>) -> bool {
        let kind = ev.get("type").and_then(Value::as_str).unwrap_or("");
        let index = ev.get("index").and_then(Value::as_u64);
        match (kind, index) {
            // The client has its message already.
            ("message_start", _) => false,
            ("content_block_start", Some(i)) => {
                let block = ev.get("content_block").and_then(|b| b.get("type"));
                let text = block.and_then(Value::as_str) == Some("text");
                match self.merge_into.take() {
                    Some(open) if text => {
                        self.blocks.push((i, open));
                        false
                    }
                    _ => {
                        let mine = self.next_block;
                        self.next_block += 1;
                        self.blocks.push((i, mine));
                        ev.insert("index".into(), Value::from(mine));
                        true
                    }
                }
            }
            (_, Some(i)) => {
                if let Some(&(_, mine)) = self.blocks.iter().find(|(theirs, _)| *theirs == i) {
                    ev.insert("index".into(), Value::from(mine));
                }
                true
            }
            _ => true,
        }
    }
}

fn push_event(out: &mut BytesMut, name: Option<&[u8]>, data: &[u8]) {
    if let Some(n) = name {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(n);
        out.extend_from_slice(b"\n");
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
}

/// A chunk that only opens the assistant's turn (the client already has it).
fn role_only(chunk: &Map<String, Value>) -> bool {
    if chunk.get("usage").is_some_and(|u| !u.is_null()) {
        return false;
    }
    let Some(Value::Array(choices)) = chunk.get("choices") else {
        return false;
    };
    choices.iter().all(|c| {
        let finish = c.get("finish_reason").is_some_and(|f| !f.is_null());
        let delta = c.get("delta").and_then(Value::as_object);
        let says = delta.is_some_and(|d| {
            d.iter()
                .any(|(k, v)| k != "role" && !v.is_null() && v.as_str() != Some(""))
        });
        !finish && !says
    })
}

/// Usage of both attempts, as the finished request counts it.
pub fn sum_usage(a: Option<Usage>, b: Option<Usage>) -> Option<Usage> {
    match (a, b) {
        (Some(a), Some(b)) => Some(Usage {
            prompt_tokens: a.prompt_tokens + b.prompt_tokens,
            completion_tokens: a.completion_tokens + b.completion_tokens,
        }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resume() -> Resume {
        let body = Bytes::from_static(
            br#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        );
        Resume::new(
            Protocol::Chat,
            body,
            "/chat/completions".into(),
            Arc::default(),
            false,
        )
        .unwrap()
    }

    const ROLE: &[u8] = b"data: {\"id\":\"c1\",\"created\":7,\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n";

    fn text(t: &str) -> String {
        format!("data: {{\"id\":\"c1\",\"created\":7,\"model\":\"gpt\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{t}\"}},\"finish_reason\":null}}]}}\n\n")
    }

    #[test]
    fn the_text_sent_becomes_the_prefill() {
        let mut r = resume();
        r.observe(ROLE);
        let two = text("Hello, ") + &text("wor");
        // Split anywhere: the transcript is the same.
        let (a, b) = two.as_bytes().split_at(30);
        r.observe(a);
        r.observe(b);
        assert!(r.resumable(Outcome::Reset, false));
        assert!(!r.resumable(Outcome::Reset, true), "broke inside an event");
        assert!(!r.resumable(Outcome::UpstreamError, false));
        assert!(!r.resumable(Outcome::TotalTimeout, false));
        let body: Value = serde_json::from_slice(&r.prefilled_body().unwrap()).unwrap();
        assert_eq!(
            body["messages"][1],
            serde_json::json!({"role": "assistant", "content": "Hello, wor"})
        );
        assert_eq!(body["model"], "m");
    }

    #[test]
    fn tool_calls_and_finished_answers_are_never_resumed() {
        let mut r = resume();
        r.observe(text("x").as_bytes());
        r.observe(b"data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"t\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]}}]}\n\n");
        assert!(!r.resumable(Outcome::Reset, false));
        let mut r = resume();
        r.observe(text("x").as_bytes());
        r.observe(b"data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n");
        assert!(!r.resumable(Outcome::EofWithoutDone, false));
    }

    #[test]
    fn the_continuation_reads_as_the_same_stream() {
        let mut s = Splice {
            protocol: Protocol::Chat,
            buf: BytesMut::new(),
            id: Some("c1".into()),
            model: Some("gpt".into()),
            created: Some(7),
            blocks: Vec::new(),
            merge_into: None,
            next_block: 0,
        };
        let cont = "data: {\"id\":\"other\",\"created\":9,\"model\":\"claude\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"},\"finish_reason\":null}]}\n\n\
                    : keep-alive\n\n\
                    data: {\"id\":\"other\",\"created\":9,\"model\":\"claude\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ld\"},\"finish_reason\":null}]}\n\n\
                    data: [DONE]\n\n";
        let (a, b) = cont.as_bytes().split_at(100);
        let mut out = s.feed(a).unwrap().to_vec();
        out.extend_from_slice(&s.feed(b).unwrap());
        let out = String::from_utf8(out).unwrap();
        let events: Vec<&str> = out.split("\n\n").filter(|e| !e.is_empty()).collect();
        assert_eq!(events.len(), 2, "{out}");
        let v: Value = serde_json::from_str(events[0].trim_start_matches("data: ")).unwrap();
        assert_eq!(
            (v["id"].as_str(), v["model"].as_str()),
            (Some("c1"), Some("gpt"))
        );
        assert_eq!(v["created"], 7);
        assert_eq!(v["choices"][0]["delta"]["content"], "ld");
        assert_eq!(events[1], "data: [DONE]");
    }

    #[test]
    fn a_messages_continuation_goes_on_in_the_open_text_block() {
        let mut r = Resume::new(
            Protocol::Messages,
            Bytes::from_static(br#"{"model":"m","stream":true,"max_tokens":9,"messages":[{"role":"user","content":"hi"}]}"#),
            "/messages".into(),
            Arc::default(),
            false,
        )
        .unwrap();
        r.observe(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\"}}\n\n");
        r.observe(b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
        r.observe(b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hel\"}}\n\n");
        assert!(r.resumable(Outcome::Reset, false));
        let body: Value = serde_json::from_slice(&r.prefilled_body().unwrap()).unwrap();
        assert_eq!(body["messages"][1]["content"], "Hel");
        let mut s = Splice {
            protocol: Protocol::Messages,
            buf: BytesMut::new(),
            id: None,
            model: None,
            created: None,
            blocks: Vec::new(),
            merge_into: r.seen.open_block,
            next_block: r.seen.next_block,
        };
        let cont = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_2\"}}\n\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"lo\"}}\n\n\
event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        let out = String::from_utf8(s.feed(cont).unwrap().to_vec()).unwrap();
        assert!(!out.contains("message_start"), "{out}");
        assert!(
            !out.contains("content_block_start"),
            "merged into the open block: {out}"
        );
        assert!(out.contains("\"text\":\"lo\""), "{out}");
        assert!(out.starts_with("event: content_block_delta\n"), "{out}");
        assert!(out.contains("event: message_stop\n"), "{out}");
        // A tool-use block closes the transcript.
        r.observe(b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"f\",\"input\":{}}}\n\n");
        assert!(!r.resumable(Outcome::Reset, false));
    }

    #[test]
    fn usage_is_the_sum_of_both_attempts() {
        let u = |p, c| Usage {
            prompt_tokens: p,
            completion_tokens: c,
        };
        assert_eq!(sum_usage(Some(u(1, 2)), Some(u(3, 4))), Some(u(4, 6)));
        assert_eq!(sum_usage(None, Some(u(3, 4))), Some(u(3, 4)));
        assert_eq!(sum_usage(None, None), None);
    }
}
