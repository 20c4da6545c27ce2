//! The protocol of a routed path (PRODUCT.md §3.7), decided once per request
//! from its path: when its stream commits (the client's response starts),
//! when it ended well, what is an in-band failure, where its usage is, and
//! the shape of the error event that ends a broken stream.
//!
//! | protocol | commit point | clean end | in-band failure |
//! |---|---|---|---|
//! | [`Chat`](Protocol::Chat) (`/chat/completions`, `/completions`) | content, tool call, refusal, reasoning, `text`, or a `finish_reason` | `[DONE]`, or EOF after a `finish_reason` (and the usage chunk when asked) | `data:` with a top-level `error` |
//! | [`Responses`](Protocol::Responses) | output text/refusal delta, an output item (message or tool call), a terminal event | `response.completed` / `response.incomplete` | `response.failed`, `error` |
//! | [`Messages`](Protocol::Messages) | `content_block_start` / `_delta` | `message_stop` | `error` |
//! | [`Other`](Protocol::Other) SSE | the first event | EOF | — |
//!
//! Before the commit point an in-band failure, or a clean end with nothing
//! in it (an empty answer), fails the attempt. Hot path: after the commit
//! point each event costs a few `memchr` searches or a look at its `event:`
//! line; JSON is parsed only before the commit point and for the rare events
//! that carry an error or usage.

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::sse::{find, Event, Framer};
use crate::openai::{usage_in, Usage, UsageFields};
use crate::outcome::Outcome;

/// How the answer of one request path is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `/chat/completions` and the legacy `/completions`.
    Chat,
    /// `/responses` (OpenAI Responses).
    Responses,
    /// `/messages` (Anthropic Messages, as relays serve it).
    Messages,
    /// Any other routed endpoint (embeddings, audio, images, ...).
    Other,
    /// Not routed: passed through unread (PRODUCT.md §3.3).
    Passthrough,
}

impl Protocol {
    /// The protocol of a routed path (the client's path after `/v1`, no query).
    pub fn for_path(path: &str) -> Self {
        match path.trim_end_matches('/') {
            "/chat/completions" | "/completions" => Self::Chat,
            "/responses" => Self::Responses,
            "/messages" => Self::Messages,
            _ => Self::Other,
        }
    }

    /// Judges a whole 2xx answer: its usage, or why it is a failed attempt.
    /// An empty body, or one that neither claims nor is JSON, passes as sent.
    pub fn judge(self, body: &[u8], declared_json: bool) -> Result<Option<Usage>, Outcome> {
        if self == Self::Passthrough || body.is_empty() {
            return Ok(None);
        }
        match crate::openai::read_answer(body) {
            Err(_) if declared_json => Err(Outcome::InvalidResponse),
            Err(_) => Ok(None),
            Ok(a) if a.error || (self == Self::Responses && a.failed) => {
                Err(Outcome::UpstreamError)
            }
            Ok(a) => Ok(a.usage),
        }
    }

    /// The event that ends a stream broken after its commit point, in this
    /// protocol's own shape. `mid_event`: the stream stopped inside an event,
    /// so a blank line first ends that one.
    pub fn error_event(self, message: &str, mid_event: bool) -> Bytes {
        let body = match self {
            Self::Responses => serde_json::json!({
                "type": "error", "code": "stream_interrupted", "message": message, "param": null,
            }),
            Self::Messages => serde_json::json!({
                "type": "error", "error": {"type": "api_error", "message": message},
            }),
            _ => serde_json::json!({"error": {
                "message": message, "type": "upstream_error", "code": "stream_interrupted", "param": null,
            }}),
        }
        .to_string();
        let mut out = BytesMut::with_capacity(body.len() + 24);
        if mid_event {
            out.extend_from_slice(b"\n\n");
        }
        if matches!(self, Self::Responses | Self::Messages) {
            out.extend_from_slice(b"event: error\n");
        }
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(body.as_bytes());
        out.extend_from_slice(b"\n\n");
        out.freeze()
    }
}

/// How a stream stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The protocol's clean end.
    Clean,
    /// A failure: in-band (`UpstreamError`), an empty answer, or EOF before the clean end.
    Failed(Outcome),
}

/// The protocol rules applied to one upstream stream, from its first byte to
/// its end (the attempt's prefetch hands it to the stream reader).
#[derive(Debug)]
pub struct StreamScan {
    protocol: Protocol,
    framer: Framer,
    committed: bool,
    /// Chat: the client asked for the usage chunk.
    want_usage: bool,
    /// Chat: a `finish_reason` was seen.
    finished: bool,
    usage: UsageFields,
    stop: Option<Stop>,
}

impl StreamScan {
    /// Rules for one stream; `want_usage`: chat's `stream_options.include_usage`.
    pub fn new(protocol: Protocol, want_usage: bool) -> Self {
        Self {
            protocol,
            framer: Framer::default(),
            committed: protocol == Protocol::Passthrough,
            want_usage,
            finished: false,
            usage: UsageFields::default(),
            stop: None,
        }
    }

    /// The protocol read.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The commit point has passed.
    pub fn committed(&self) -> bool {
        self.committed
    }

    /// How the stream stopped, once it did.
    pub fn stop(&self) -> Option<Stop> {
        self.stop
    }

    /// The usage reported so far.
    pub fn usage(&self) -> Option<Usage> {
        self.usage.usage()
    }

    /// Bytes of memory held between chunks.
    pub fn held(&self) -> usize {
        self.framer.held()
    }

    /// True while an event is partly read.
    pub fn mid_event(&self) -> bool {
        self.framer.mid_event()
    }

    /// Reads one chunk. `Some(n)`: the stream stopped (see [`Self::stop`])
    /// with the event ending at byte `n` of the chunk; what follows is not
    /// the client's.
    pub fn feed(&mut self, chunk: &[u8]) -> Option<usize> {
        if self.stop.is_some() || self.protocol == Protocol::Passthrough {
            return None;
        }
        let mut framer = std::mem::take(&mut self.framer);
        let at = framer.feed(chunk, &mut |ev| self.event(ev));
        self.framer = framer;
        at
    }

    /// The body ended: the last partial event is read, then the verdict
    /// (EOF before the clean end, committed or not, is a failure).
    pub fn finish(&mut self) -> Stop {
        if self.stop.is_none() {
            let mut framer = std::mem::take(&mut self.framer);
            framer.flush(&mut |ev| self.event(ev));
        }
        if let Some(stop) = self.stop {
            return stop;
        }
        let clean = match self.protocol {
            Protocol::Chat => self.finished && (!self.want_usage || self.usage.usage().is_some()),
            Protocol::Other | Protocol::Passthrough => self.committed,
            Protocol::Responses | Protocol::Messages => false,
        };
        let stop = if clean {
            Stop::Clean
        } else {
            Stop::Failed(Outcome::EofWithoutDone)
        };
        self.stop = Some(stop);
        stop
    }

    /// Applies one event; true when the stream stopped.
    fn event(&mut self, ev: &Event<'_>) -> bool {
        let stop = match self.protocol {
            Protocol::Chat => self.chat(ev),
            Protocol::Responses => self.responses(ev),
            Protocol::Messages => self.messages(ev),
            Protocol::Other | Protocol::Passthrough => {
                self.committed = true;
                None
            }
        };
        let Some(stop) = stop else { return false };
        self.stop = Some(match stop {
            Stop::Clean if !self.committed => Stop::Failed(Outcome::EmptyAnswer),
            s => s,
        });
        true
    }

    fn take_usage(&mut self, json: &[u8]) {
        if let Some(u) = usage_in(json) {
            self.usage.merge(u);
        }
    }

    fn chat(&mut self, ev: &Event<'_>) -> Option<Stop> {
        let data = ev.data.trim_ascii();
        if data == b"[DONE]" {
            return Some(Stop::Clean);
        }
        if !self.committed && ev.whole() {
            // Before the commit point: few events, each parsed.
            let c: ChatChunk<'_> = serde_json::from_slice(data).ok()?;
            if c.error.is_some_and(|e| e.get() != "null") {
                return Some(Stop::Failed(Outcome::UpstreamError));
            }
            for choice in &c.choices {
                let finish = present(choice.finish_reason);
                self.finished |= finish;
                self.committed |= finish || choice.carries_content();
            }
            self.take_usage(data);
            return None;
        }
        if starts_error(data)
            || (ev.whole() && find(data, b"\"error\"").is_some() && chat_error(data))
        {
            return Some(Stop::Failed(Outcome::UpstreamError));
        }
        // A long event before the commit point is content.
        self.committed = true;
        let end = ev.end();
        if !self.finished {
            self.finished = finish_reason(end);
        }
        if find(end, b"\"usage\"").is_some() {
            self.take_usage(end);
        }
        None
    }

    fn responses(&mut self, ev: &Event<'_>) -> Option<Stop> {
        let kind = event_type(ev)?;
        match kind {
            b"response.completed" | b"response.incomplete" => {
                self.take_usage(ev.end());
                if !self.committed {
                    self.committed = !ev.whole() || !empty_output(&ev.data);
                }
                Some(Stop::Clean)
            }
            b"response.failed" | b"error" => Some(Stop::Failed(Outcome::UpstreamError)),
            _ if self.committed => None,
            b"response.output_text.delta"
            | b"response.refusal.delta"
            | b"response.reasoning_summary_text.delta" => {
                self.committed = true;
                None
            }
            b"response.output_item.added" => {
                self.committed = !ev.whole() || answer_item(&ev.data);
                None
            }
            _ => None,
        }
    }

    fn messages(&mut self, ev: &Event<'_>) -> Option<Stop> {
        match event_type(ev)? {
            b"content_block_delta" | b"content_block_start" => {
                self.committed = true;
                None
            }
            b"message_start" | b"message_delta" => {
                self.take_usage(ev.end());
                None
            }
            b"message_stop" => Some(Stop::Clean),
            b"error" => Some(Stop::Failed(Outcome::UpstreamError)),
            _ => None,
        }
    }
}

/// An event's type: its `event:` line, else the data's leading
/// `{"type":"..."` (how every provider writes it), else (a relay that
/// reorders keys) the parsed `type`.
fn event_type<'a>(ev: &'a Event<'_>) -> Option<&'a [u8]> {
    if let Some(name) = ev.name.filter(|n| !n.is_empty()) {
        return Some(name.trim_ascii());
    }
    if let Some(t) = leading_type(&ev.data) {
        return Some(t);
    }
    #[derive(Deserialize)]
    struct Typed<'a> {
        #[serde(rename = "type", borrow)]
        kind: &'a str,
    }
    let t: Typed<'_> = serde_json::from_slice(&ev.data).ok()?;
    Some(t.kind.as_bytes())
}

/// The value of a leading `{"type": "X"` in JSON, without parsing the rest.
fn leading_type(data: &[u8]) -> Option<&[u8]> {
    let rest = data
        .trim_ascii_start()
        .strip_prefix(b"{")?
        .trim_ascii_start();
    let rest = rest.strip_prefix(b"\"type\"")?.trim_ascii_start();
    let rest = rest
        .strip_prefix(b":")?
        .trim_ascii_start()
        .strip_prefix(b"\"")?;
    let end = memchr::memchr2(b'"', b'\\', rest)?;
    (rest[end] == b'"').then(|| &rest[..end])
}

/// A chat chunk as the commit point reads it.
#[derive(Deserialize)]
struct ChatChunk<'a> {
    #[serde(default, borrow)]
    choices: Vec<ChatChoice<'a>>,
    #[serde(default, borrow)]
    error: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ChatChoice<'a> {
    #[serde(default, borrow)]
    delta: Option<ChatDelta<'a>>,
    #[serde(default, borrow)]
    text: Option<&'a RawValue>,
    #[serde(default, borrow)]
    finish_reason: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ChatDelta<'a> {
    #[serde(default, borrow)]
    content: Option<&'a RawValue>,
    #[serde(default, borrow)]
    tool_calls: Option<&'a RawValue>,
    #[serde(default, borrow)]
    function_call: Option<&'a RawValue>,
    #[serde(default, borrow)]
    refusal: Option<&'a RawValue>,
    #[serde(default, borrow)]
    reasoning_content: Option<&'a RawValue>,
    #[serde(default, borrow)]
    reasoning: Option<&'a RawValue>,
    #[serde(default, borrow)]
    audio: Option<&'a RawValue>,
}

impl ChatChoice<'_> {
    fn carries_content(&self) -> bool {
        present(self.text)
            || self.delta.as_ref().is_some_and(|d| {
                [
                    d.content,
                    d.tool_calls,
                    d.function_call,
                    d.refusal,
                    d.reasoning_content,
                    d.reasoning,
                    d.audio,
                ]
                .into_iter()
                .any(present)
            })
    }
}

/// A JSON value that says something: not absent, `null`, `""`, `[]` or `{}`.
fn present(v: Option<&RawValue>) -> bool {
    v.is_some_and(|v| !matches!(v.get().trim(), "null" | "\"\"" | "[]" | "{}"))
}

/// `{"error": ...` (how providers send an in-band error).
fn starts_error(data: &[u8]) -> bool {
    let rest = data
        .trim_ascii_start()
        .strip_prefix(b"{")
        .map(<[u8]>::trim_ascii_start);
    rest.is_some_and(|r| r.starts_with(b"\"error\""))
}

/// A chunk that mentions `"error"` somewhere: is it a top-level error? (rare: parsed)
fn chat_error(data: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct E<'a> {
        #[serde(default, borrow)]
        error: Option<&'a RawValue>,
    }
    serde_json::from_slice::<E<'_>>(data).is_ok_and(|e| e.error.is_some_and(|e| e.get() != "null"))
}

/// A `"finish_reason"` with a value other than `null`, anywhere in `json`.
fn finish_reason(json: &[u8]) -> bool {
    let mut rest = json;
    while let Some(i) = find(rest, b"\"finish_reason\"") {
        rest = &rest[i + 15..];
        let v = rest.trim_ascii_start();
        if let Some(v) = v.strip_prefix(b":") {
            if v.trim_ascii_start().starts_with(b"\"") {
                return true;
            }
        }
    }
    false
}

/// A terminal Responses event whose `response.output` is empty.
fn empty_output(data: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Terminal<'a> {
        #[serde(default, borrow)]
        response: Option<Resp<'a>>,
    }
    #[derive(Deserialize)]
    struct Resp<'a> {
        #[serde(default, borrow)]
        output: Option<&'a RawValue>,
    }
    match serde_json::from_slice::<Terminal<'_>>(data) {
        Ok(t) => !present(t.response.and_then(|r| r.output)),
        Err(_) => false,
    }
}

/// `response.output_item.added` for a message or a tool call (not reasoning).
fn answer_item(data: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Added<'a> {
        #[serde(borrow)]
        item: Item<'a>,
    }
    #[derive(Deserialize)]
    struct Item<'a> {
        #[serde(rename = "type", borrow)]
        kind: &'a str,
    }
    serde_json::from_slice::<Added<'_>>(data)
        .is_ok_and(|a| a.item.kind == "message" || a.item.kind.ends_with("_call"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(p: Protocol, want_usage: bool, stream: &[u8]) -> (bool, Stop, Option<Usage>) {
        let mut s = StreamScan::new(p, want_usage);
        s.feed(stream);
        let stop = match s.stop() {
            Some(stop) => stop,
            None => s.finish(),
        };
        (s.committed(), stop, s.usage())
    }

    const ROLE: &str = "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n";
    const HI: &str = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"},\"finish_reason\":null}]}\n\n";
    const STOP: &str =
        "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n";
    const USAGE: &str =
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\n";

    fn u(p: u64, c: u64) -> Option<Usage> {
        Some(Usage {
            prompt_tokens: p,
            completion_tokens: c,
        })
    }

    #[test]
    fn chat() {
        let ok = format!("{ROLE}{HI}{STOP}{USAGE}data: [DONE]\n\n");
        assert_eq!(
            run(Protocol::Chat, true, ok.as_bytes()),
            (true, Stop::Clean, u(3, 4))
        );
        // No [DONE]: clean after a finish_reason (and the usage chunk when asked).
        let no_done = format!("{ROLE}{HI}{STOP}{USAGE}");
        assert_eq!(run(Protocol::Chat, true, no_done.as_bytes()).1, Stop::Clean);
        let no_usage = format!("{ROLE}{HI}{STOP}");
        assert_eq!(
            run(Protocol::Chat, false, no_usage.as_bytes()).1,
            Stop::Clean
        );
        assert_eq!(
            run(Protocol::Chat, true, no_usage.as_bytes()).1,
            Stop::Failed(Outcome::EofWithoutDone)
        );
        let cut = format!("{ROLE}{HI}");
        assert_eq!(
            run(Protocol::Chat, false, cut.as_bytes()),
            (true, Stop::Failed(Outcome::EofWithoutDone), None)
        );
        // Role only: held; then [DONE] is an empty answer, EOF a failed attempt.
        let empty = format!("{ROLE}data: [DONE]\n\n");
        assert_eq!(
            run(Protocol::Chat, false, empty.as_bytes()),
            (false, Stop::Failed(Outcome::EmptyAnswer), None)
        );
        assert!(!run(Protocol::Chat, false, ROLE.as_bytes()).0);
        let err = format!("{ROLE}data: {{\"error\":{{\"message\":\"boom\"}}}}\n\ndata: [DONE]\n\n");
        assert_eq!(
            run(Protocol::Chat, false, err.as_bytes()),
            (false, Stop::Failed(Outcome::UpstreamError), None)
        );
        let late = format!(
            "{HI}data: {{\"id\":1, \"error\" : {{\"message\":\"boom\"}}}}\n\ndata: [DONE]\n\n"
        );
        assert_eq!(
            run(Protocol::Chat, false, late.as_bytes()).1,
            Stop::Failed(Outcome::UpstreamError)
        );
        // The text "error" in content is content, not an error.
        let text = "data: {\"choices\":[{\"delta\":{\"content\":\"\\\"error\\\": x\"},\"finish_reason\":null}]}\n\ndata: [DONE]\n\n";
        assert_eq!(run(Protocol::Chat, false, text.as_bytes()).1, Stop::Clean);
        let tools = "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0}]}}]}\n\n";
        assert!(run(Protocol::Chat, false, tools.as_bytes()).0);
        let legacy = "data: {\"choices\":[{\"text\":\"x\",\"finish_reason\":null}]}\n\n";
        assert!(run(Protocol::Chat, false, legacy.as_bytes()).0);
    }

    fn ev(kind: &str, data: &str) -> String {
        format!("event: {kind}\ndata: {data}\n\n")
    }

    #[test]
    fn responses() {
        let created = ev(
            "response.created",
            r#"{"type":"response.created","response":{"output":[]}}"#,
        );
        let reasoning = ev(
            "response.output_item.added",
            r#"{"type":"response.output_item.added","item":{"type":"reasoning"}}"#,
        );
        let message = ev(
            "response.output_item.added",
            r#"{"type":"response.output_item.added","item":{"type":"message"}}"#,
        );
        let delta = ev(
            "response.output_text.delta",
            r#"{"type":"response.output_text.delta","delta":"hi"}"#,
        );
        let done = ev(
            "response.completed",
            r#"{"type":"response.completed","response":{"output":[{"type":"message"}],"usage":{"input_tokens":5,"output_tokens":6}}}"#,
        );
        let empty = ev(
            "response.completed",
            r#"{"type":"response.completed","response":{"output":[],"usage":{"input_tokens":5,"output_tokens":0}}}"#,
        );
        let failed = ev(
            "response.failed",
            r#"{"type":"response.failed","response":{"status":"failed"}}"#,
        );
        let p = Protocol::Responses;
        assert_eq!(
            run(
                p,
                false,
                format!("{created}{message}{delta}{done}").as_bytes()
            ),
            (true, Stop::Clean, u(5, 6))
        );
        assert!(!run(p, false, format!("{created}{reasoning}").as_bytes()).0);
        assert_eq!(
            run(p, false, format!("{created}{reasoning}{empty}").as_bytes()).1,
            Stop::Failed(Outcome::EmptyAnswer)
        );
        assert_eq!(
            run(p, false, format!("{created}{failed}").as_bytes()),
            (false, Stop::Failed(Outcome::UpstreamError), None)
        );
        assert_eq!(
            run(p, false, format!("{created}{delta}").as_bytes()).1,
            Stop::Failed(Outcome::EofWithoutDone)
        );
        assert_eq!(
            run(p, false, format!("{created}{delta}{failed}").as_bytes()).1,
            Stop::Failed(Outcome::UpstreamError)
        );
        // Without `event:` lines, and with the type not first (a relay that sorts keys).
        let bare = "data: {\"type\":\"response.output_text.delta\"}\n\ndata: {\"response\":{\"usage\":{\"input_tokens\":1}},\"type\":\"response.completed\"}\n\n";
        assert_eq!(run(p, false, bare.as_bytes()), (true, Stop::Clean, u(1, 0)));
    }

    #[test]
    fn messages() {
        let start = ev(
            "message_start",
            r#"{"type":"message_start","message":{"usage":{"input_tokens":9,"output_tokens":1}}}"#,
        );
        let block = ev(
            "content_block_start",
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        );
        let ping = "event: ping\ndata: {\"type\": \"ping\"}\n\n";
        let delta = ev(
            "message_delta",
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":12}}"#,
        );
        let stop = ev("message_stop", r#"{"type":"message_stop"}"#);
        let error = ev(
            "error",
            r#"{"type":"error","error":{"type":"overloaded_error","message":"x"}}"#,
        );
        let p = Protocol::Messages;
        assert_eq!(
            run(
                p,
                false,
                format!("{start}{ping}{block}{delta}{stop}").as_bytes()
            ),
            (true, Stop::Clean, u(9, 12))
        );
        assert_eq!(
            run(p, false, format!("{start}{ping}{delta}{stop}").as_bytes()).1,
            Stop::Failed(Outcome::EmptyAnswer)
        );
        assert_eq!(
            run(p, false, format!("{start}{error}").as_bytes()),
            (false, Stop::Failed(Outcome::UpstreamError), u(9, 1))
        );
        assert_eq!(
            run(p, false, format!("{start}{block}").as_bytes()).1,
            Stop::Failed(Outcome::EofWithoutDone)
        );
    }

    #[test]
    fn other_sse_and_judging() {
        assert_eq!(
            run(Protocol::Other, false, b": hi\n\n").1,
            Stop::Failed(Outcome::EofWithoutDone)
        );
        assert_eq!(
            run(Protocol::Other, false, b"data: x\n\n"),
            (true, Stop::Clean, None)
        );
        let p = Protocol::Chat;
        assert_eq!(p.judge(b"", true), Ok(None));
        assert_eq!(p.judge(b"<html>", true), Err(Outcome::InvalidResponse));
        assert_eq!(p.judge(b"plain text", false), Ok(None));
        assert_eq!(
            p.judge(br#"{"error":{"message":"x"}}"#, true),
            Err(Outcome::UpstreamError)
        );
        assert_eq!(
            Protocol::Responses.judge(br#"{"status":"failed","error":null}"#, true),
            Err(Outcome::UpstreamError)
        );
        assert_eq!(
            Protocol::Other.judge(br#"{"status":"failed"}"#, true),
            Ok(None)
        );
        assert_eq!(Protocol::for_path("/responses"), Protocol::Responses);
        assert_eq!(Protocol::for_path("/completions"), Protocol::Chat);
        assert_eq!(Protocol::for_path("/embeddings"), Protocol::Other);
    }

    #[test]
    fn error_events_in_each_shape() {
        let e = Protocol::Responses.error_event("m", false);
        assert!(e.starts_with(b"event: error\ndata: {") && e.ends_with(b"\n\n"));
        let m = String::from_utf8_lossy(&Protocol::Messages.error_event("m", true)).into_owned();
        assert!(m.starts_with("\n\nevent: error\n"), "{m}");
        let data: serde_json::Value =
            serde_json::from_str(m.trim().trim_start_matches("event: error\ndata: "))
                .unwrap_or_default();
        assert_eq!(data["error"]["type"], "api_error");
        let c = Protocol::Chat.error_event("m", false);
        assert!(c.starts_with(b"data: {\"error\":"));
    }
}
