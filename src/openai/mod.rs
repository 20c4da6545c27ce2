//! The few facts the proxy reads from an OpenAI request body, without re-serializing it.
//!
//! The body stays the client's bytes; only the `model` value is spliced when a
//! `model_map` renames it, so unknown fields pass through untouched.

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::ApiError;

pub mod form;
mod skim;
#[cfg(test)]
mod skim_tests;
mod usage;

pub use usage::{usage_in, usage_of, Usage, UsageFields};

/// What routing needs from a request body.
#[derive(Debug, Clone, Default)]
pub struct RequestFacts {
    /// The client's model name.
    pub model: Option<String>,
    /// Byte range of the `model` JSON value (quotes included) in the body.
    pub model_span: Option<(usize, usize)>,
    /// `stream: true`.
    pub stream: bool,
    /// The body's `user` field (a split key).
    pub user: Option<String>,
    /// `stream_options.include_usage`.
    pub include_usage: bool,
    /// Read from a multipart form: `model_span` is the bare value, not a JSON string.
    pub form: bool,
}

#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(default)]
    stream: Option<serde_json::Value>,
    #[serde(borrow, default)]
    user: Option<&'a RawValue>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// Parses the body once (validating UTF-8 and JSON) and returns the routing facts.
///
/// A skim of the top-level keys answers almost every body; whatever it
/// gives up on (an error, an escaped key, a duplicate, deep nesting) is
/// parsed by serde_json as before, so the answer and every error message
/// stay serde_json's.
pub fn peek(body: &[u8]) -> Result<RequestFacts, ApiError> {
    match skim_peek(body) {
        Some(facts) => Ok(facts),
        None => serde_peek(body),
    }
}

/// The routing facts when the skim is sure of them: the whole body is one
/// valid JSON object in UTF-8, and each read key appears once with a value
/// of the type [`Peek`] wants (serde_json rejects a repeated field).
fn skim_peek(body: &[u8]) -> Option<RequestFacts> {
    let mut s = skim::Skim::object(body, true)?;
    let mut facts = RequestFacts::default();
    let mut seen = Seen::default();
    let mut first = true;
    while let Some(key) = s.key(&mut first)? {
        match key {
            b"model" => {
                seen.once(0)?;
                if !s.null() {
                    let (span, model) = s.text()?;
                    facts.model_span = Some(span);
                    facts.model = Some(model);
                }
            }
            b"stream" => {
                seen.once(1)?;
                facts.stream = s.flag()?.unwrap_or(false);
            }
            b"user" => {
                seen.once(2)?;
                if !s.null() {
                    facts.user = Some(s.text()?.1).filter(|u| !u.is_empty());
                }
            }
            b"stream_options" => {
                seen.once(3)?;
                if !s.null() {
                    facts.include_usage = skim_stream_options(&mut s)?;
                }
            }
            _ => {
                s.value()?;
            }
        }
    }
    s.finish()?;
    Some(facts)
}

/// `stream_options` as an object (serde_json would also take a list).
fn skim_stream_options(s: &mut skim::Skim<'_>) -> Option<bool> {
    s.open()?;
    let mut include = None;
    let mut seen = Seen::default();
    let mut first = true;
    while let Some(key) = s.key(&mut first)? {
        if key == b"include_usage" {
            seen.once(0)?;
            include = s.flag()?;
        } else {
            s.value()?;
        }
    }
    Some(include.unwrap_or(false))
}

/// The struct fields a skim has read, to give up on a repeated one.
#[derive(Default)]
struct Seen(u8);

impl Seen {
    /// `None` when field `bit` was read before.
    fn once(&mut self, bit: u8) -> Option<()> {
        let mask = 1 << bit;
        if self.0 & mask != 0 {
            return None;
        }
        self.0 |= mask;
        Some(())
    }
}

/// [`peek`] by serde_json alone: the fallback, and the reference the skim is
/// tested against.
fn serde_peek(body: &[u8]) -> Result<RequestFacts, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("Request body is not valid UTF-8."))?;
    if text.trim().is_empty() {
        return Err(ApiError::bad_request(
            "Request body is empty; expected a JSON object.",
        ));
    }
    let p: Peek<'_> = serde_json::from_str(text).map_err(|e| {
        ApiError::bad_request(format!("Request body is not a valid JSON object: {e}"))
    })?;
    let mut facts = RequestFacts::default();
    if let Some(raw) = p.model {
        let model: String =
            serde_json::from_str(raw.get()).map_err(|_| param_error("model", "a string"))?;
        facts.model_span = span_of(text, raw.get());
        facts.model = Some(model);
    }
    facts.stream = match p.stream {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::Bool(b)) => b,
        Some(_) => return Err(param_error("stream", "a boolean")),
    };
    if let Some(raw) = p.user {
        if raw.get() != "null" {
            let user: String =
                serde_json::from_str(raw.get()).map_err(|_| param_error("user", "a string"))?;
            facts.user = Some(user).filter(|u| !u.is_empty());
        }
    }
    facts.include_usage = p
        .stream_options
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    Ok(facts)
}

fn param_error(param: &str, expected: &str) -> ApiError {
    ApiError::bad_request(format!("Invalid type for `{param}`: expected {expected}."))
}

/// Byte offsets of `inner` (a sub-slice of `outer`) inside `outer`.
fn span_of(outer: &str, inner: &str) -> Option<(usize, usize)> {
    let start = (inner.as_ptr() as usize).checked_sub(outer.as_ptr() as usize)?;
    let end = start + inner.len();
    (end <= outer.len()).then_some((start, end))
}

/// The body with its `model` value replaced; other bytes unchanged. `form`:
/// the value is a multipart field's bare text, not a JSON string.
pub fn with_model(body: &Bytes, span: (usize, usize), model: &str, form: bool) -> Bytes {
    let quoted = if form {
        model.to_owned()
    } else {
        serde_json::Value::String(model.to_owned()).to_string()
    };
    let mut out = BytesMut::with_capacity(body.len() + quoted.len());
    out.extend_from_slice(&body[..span.0]);
    out.extend_from_slice(quoted.as_bytes());
    out.extend_from_slice(&body[span.1..]);
    out.freeze()
}

/// What a whole (non-streamed) JSON answer says about itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Answer {
    /// A top-level `error` that is not `null` (an error object sent with a 2xx).
    pub error: bool,
    /// A top-level `"status": "failed"` (a failed Responses object).
    pub failed: bool,
    /// Its `usage`, in any protocol's spelling.
    pub usage: Option<Usage>,
}

#[derive(Deserialize)]
struct AnswerPeek<'a> {
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
    #[serde(borrow, default)]
    status: Option<&'a RawValue>,
    #[serde(default)]
    usage: Option<UsageFields>,
}

#[derive(Deserialize)]
struct ModelOnly<'a> {
    #[serde(default, borrow)]
    model: Option<std::borrow::Cow<'a, str>>,
    /// A Responses stream's first event wraps the response.
    #[serde(default, borrow)]
    response: Option<Box<ModelOnly<'a>>>,
    /// A Messages stream's `message_start` wraps the message.
    #[serde(default, borrow)]
    message: Option<Box<ModelOnly<'a>>>,
}

/// The `model` an answer names: a JSON body's, or the first `data:` event's
/// of an SSE stream. Read only for tracing (`gen_ai.response.model`).
pub fn response_model(answer: &[u8]) -> Option<String> {
    let json = match answer.iter().position(|b| !b.is_ascii_whitespace()) {
        Some(i) if answer[i] == b'{' => &answer[i..],
        _ => {
            let start = memchr::memmem::find(answer, b"data:")? + 5;
            let rest = &answer[start..];
            rest[..memchr::memchr(b'\n', rest).unwrap_or(rest.len())].trim_ascii()
        }
    };
    let top = serde_json::from_slice::<ModelOnly<'_>>(json).ok()?;
    let m = top
        .model
        .or_else(|| top.response.and_then(|r| r.model))
        .or_else(|| top.message.and_then(|r| r.model))?;
    Some(m.into_owned())
}

/// An upstream body that should have been JSON and was not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotJson;

/// Whether an error body says the request is too long for the model
/// (`context_length_exceeded`, as OpenAI and most relays spell it, in
/// `error.code` or `error.type`; or the message's "maximum context length").
pub fn is_context_length_error(body: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Body<'a> {
        #[serde(borrow)]
        error: Option<Inner<'a>>,
    }
    #[derive(Deserialize)]
    struct Inner<'a> {
        #[serde(borrow, default)]
        code: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow, default, rename = "type")]
        kind: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow, default)]
        message: Option<std::borrow::Cow<'a, str>>,
    }
    const CODE: &str = "context_length_exceeded";
    // Cheap test first: most 400s are something else.
    let mentions = memchr::memmem::find(body, CODE.as_bytes()).is_some()
        || memchr::memmem::find(body, b"maximum context length").is_some();
    if !mentions {
        return false;
    }
    let Ok(Body { error: Some(e) }) = serde_json::from_slice::<Body<'_>>(body) else {
        return false;
    };
    e.code.as_deref() == Some(CODE)
        || e.kind.as_deref() == Some(CODE)
        || e.message
            .as_deref()
            .is_some_and(|m| m.contains("maximum context length"))
}

/// Validates a JSON answer and reads what judging it needs (one pass, no tree).
///
/// A skim of the top-level keys answers almost every body; whatever it
/// gives up on is parsed by serde_json as before (the answer stays its).
pub fn read_answer(body: &[u8]) -> Result<Answer, NotJson> {
    match skim_answer(body) {
        Some(answer) => Ok(answer),
        None => serde_answer(body),
    }
}

/// The answer's verdict when the skim is sure of it. serde_json reads bytes
/// here: a string it only skips need not be UTF-8, but a key it maps and a
/// raw value it keeps (`error`, `status`) must be; `usage` is read as its
/// [`UsageFields`] derive reads it.
fn skim_answer(body: &[u8]) -> Option<Answer> {
    let mut s = skim::Skim::object(body, false)?;
    let mut answer = Answer::default();
    let mut seen = Seen::default();
    let mut first = true;
    while let Some(key) = s.key(&mut first)? {
        match key {
            b"error" => {
                seen.once(0)?;
                if !s.null() {
                    raw_utf8(body, s.value()?)?;
                    answer.error = true;
                }
            }
            b"status" => {
                seen.once(1)?;
                if !s.null() {
                    answer.failed = raw_utf8(body, s.value()?)? == "\"failed\"";
                }
            }
            b"usage" => {
                seen.once(2)?;
                if !s.null() {
                    answer.usage = skim_usage(&mut s)?.usage();
                }
            }
            _ => {
                s.value()?;
            }
        }
    }
    s.finish()?;
    Some(answer)
}

/// `usage` as an object of token counts (serde_json would also take a list;
/// any count that is not a number or `null` is its type error).
fn skim_usage(s: &mut skim::Skim<'_>) -> Option<UsageFields> {
    s.open()?;
    let mut usage = UsageFields::default();
    let mut seen = Seen::default();
    let mut first = true;
    while let Some(key) = s.key(&mut first)? {
        let (bit, field) = match key {
            b"prompt_tokens" => (0, &mut usage.prompt_tokens),
            b"completion_tokens" => (1, &mut usage.completion_tokens),
            b"input_tokens" => (2, &mut usage.input_tokens),
            b"output_tokens" => (3, &mut usage.output_tokens),
            b"cache_creation_input_tokens" => (4, &mut usage.cache_creation_input_tokens),
            b"cache_read_input_tokens" => (5, &mut usage.cache_read_input_tokens),
            _ => {
                s.value()?;
                continue;
            }
        };
        seen.once(bit)?;
        *field = s.count()?;
    }
    Some(usage)
}

/// A raw value's text, as serde_json checks it before keeping it.
fn raw_utf8(body: &[u8], (start, end): (usize, usize)) -> Option<&str> {
    std::str::from_utf8(body.get(start..end)?).ok()
}

/// [`read_answer`] by serde_json alone: the fallback, and the reference the
/// skim is tested against.
fn serde_answer(body: &[u8]) -> Result<Answer, NotJson> {
    let p: AnswerPeek<'_> = serde_json::from_slice(body).map_err(|_| NotJson)?;
    Ok(Answer {
        error: p.error.is_some_and(|e| e.get() != "null"),
        failed: p.status.is_some_and(|s| s.get() == "\"failed\""),
        usage: p.usage.and_then(|u| u.usage()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_model_from_json_or_first_event() {
        let body = br#" {"id":"x","choices":[{"message":{"model":"no"}}],"model":"gpt-4.1-2025"}"#;
        assert_eq!(response_model(body).as_deref(), Some("gpt-4.1-2025"));
        let sse = b"data: {\"model\":\"m\",\"choices\":[]}\r\n\r\ndata: [DONE]\n\n";
        assert_eq!(response_model(sse).as_deref(), Some("m"));
        assert_eq!(response_model(b"data: [DONE]\n\n"), None);
        assert_eq!(response_model(b"{}"), None);
        let responses = b"event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"model\":\"r\"}}\n\n";
        assert_eq!(response_model(responses).as_deref(), Some("r"));
        let messages = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"c\"}}\n\n";
        assert_eq!(response_model(messages).as_deref(), Some("c"));
    }

    #[test]
    fn context_length_errors_are_recognised() {
        let yes = [
            r#"{"error":{"message":"This model's maximum context length is 8192 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#,
            r#"{"error":{"message":"too long","type":"context_length_exceeded"}}"#,
            r#"{"error":{"message":"This model's maximum context length is 4097 tokens","code":null}}"#,
        ];
        for b in yes {
            assert!(is_context_length_error(b.as_bytes()), "{b}");
        }
        let no = [
            r#"{"error":{"message":"bad","code":"invalid_request"}}"#,
            r#"{"error":{"message":"content_policy","code":"content_policy_violation"}}"#,
            r#"not json context_length_exceeded"#,
            r#"{"detail":"context_length_exceeded"}"#,
        ];
        for b in no {
            assert!(!is_context_length_error(b.as_bytes()), "{b}");
        }
    }

    #[test]
    fn reads_facts_and_ignores_nested_model() {
        let body = br#"{"messages":[{"model":"x"}],"model":"gpt-4.1","stream":true,"user":"u1","stream_options":{"include_usage":true}}"#;
        let f = peek(body).unwrap();
        assert_eq!(f.model.as_deref(), Some("gpt-4.1"));
        assert!(f.stream && f.include_usage);
        assert_eq!(f.user.as_deref(), Some("u1"));
        let (s, e) = f.model_span.unwrap();
        assert_eq!(&body[s..e], br#""gpt-4.1""#);
    }

    #[test]
    fn rewrites_only_the_model_value() {
        let body = Bytes::from_static(br#"{"model" : "a\u0062c", "extra":{"model":"keep"}}"#);
        let f = peek(&body).unwrap();
        assert_eq!(f.model.as_deref(), Some("abc"));
        let out = with_model(&body, f.model_span.unwrap(), "new\"name", false);
        assert_eq!(
            &out[..],
            br#"{"model" : "new\"name", "extra":{"model":"keep"}}"#
        );
    }

    #[test]
    fn rejects_bad_input() {
        assert!(peek(b"{not json").is_err());
        assert!(peek(b"[1,2]").is_err());
        assert!(peek(&[b'{', 0xff, b'}']).is_err());
        assert!(peek(b"").is_err());
        assert!(peek(br#"{"model":5}"#).is_err());
        assert!(peek(br#"{"model":"a","stream":"yes"}"#).is_err());
    }

    #[test]
    fn answers_are_judged_in_one_pass() {
        let a = read_answer(
            br#"{"id":"x","usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#,
        )
        .unwrap();
        assert_eq!(
            a.usage,
            Some(Usage {
                prompt_tokens: 3,
                completion_tokens: 4
            })
        );
        assert!(!a.error && !a.failed);
        let r = read_answer(br#"{"object":"response","status":"failed","error":{"code":"server_error"},"usage":null}"#).unwrap();
        assert!(r.error && r.failed && r.usage.is_none());
        let ok = read_answer(br#"{"object":"response","status":"completed","error":null,"usage":{"input_tokens":1,"output_tokens":2}}"#).unwrap();
        assert!(!ok.error && !ok.failed);
        assert_eq!(ok.usage.map(|u| u.completion_tokens), Some(2));
        assert!(read_answer(b"garbage").is_err());
    }
}
