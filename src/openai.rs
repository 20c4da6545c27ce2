//! The few facts the proxy reads from an OpenAI request body, without re-serializing it.
//!
//! The body stays the client's bytes; only the `model` value is spliced when a
//! `model_map` renames it, so unknown fields pass through untouched.

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::ApiError;

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
pub fn peek(body: &[u8]) -> Result<RequestFacts, ApiError> {
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

/// The body with its `model` value replaced; other bytes unchanged.
pub fn with_model(body: &Bytes, span: (usize, usize), model: &str) -> Bytes {
    let quoted = serde_json::Value::String(model.to_owned()).to_string();
    let mut out = BytesMut::with_capacity(body.len() + quoted.len());
    out.extend_from_slice(&body[..span.0]);
    out.extend_from_slice(quoted.as_bytes());
    out.extend_from_slice(&body[span.1..]);
    out.freeze()
}

/// Token counts reported by an upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Usage {
    /// Prompt (input) tokens.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Completion (output) tokens.
    #[serde(default)]
    pub completion_tokens: u64,
}

#[derive(Deserialize)]
struct UsageOnly {
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct ModelOnly<'a> {
    #[serde(default, borrow)]
    model: Option<std::borrow::Cow<'a, str>>,
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
    let m = serde_json::from_slice::<ModelOnly<'_>>(json).ok()?.model?;
    Some(m.into_owned())
}

/// An upstream body that should have been JSON and was not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotJson;

/// Validates a JSON response body and reads its `usage`; `Err` when it is not JSON.
pub fn response_usage(body: &[u8]) -> Result<Option<Usage>, NotJson> {
    serde_json::from_slice::<UsageOnly>(body)
        .map(|u| u.usage)
        .map_err(|_| NotJson)
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
        let out = with_model(&body, f.model_span.unwrap(), "new\"name");
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
    fn usage_from_json() {
        let u = response_usage(
            br#"{"id":"x","usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#,
        )
        .unwrap();
        assert_eq!(
            u,
            Some(Usage {
                prompt_tokens: 3,
                completion_tokens: 4
            })
        );
        assert!(response_usage(b"garbage").is_err());
    }
}
