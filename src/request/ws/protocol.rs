//! The JSON messages of `/v1/ws/chat` (PRODUCT.md §3.5): client frames in,
//! `delta` / `done` / `error` out. Every reply carries its request's `id`,
//! echoed as the client wrote it (a string or a number).

use serde_json::{json, Map, Value};

/// Longest client `id` accepted (ids end up in log lines).
const MAX_ID_BYTES: usize = 256;

/// A client frame, validated.
#[derive(Debug, PartialEq)]
pub(crate) enum Frame {
    /// A chat-completions request; `body` is every field but `id` and `type`.
    Chat {
        id: Option<Value>,
        body: Map<String, Value>,
    },
    /// A user turn for the connection's conversation.
    Message {
        id: Option<Value>,
        content: Value,
        model: Option<String>,
    },
    /// Forget the conversation.
    Clear,
    /// Stop one running request.
    Cancel { id: Value },
}

/// A frame that cannot be served; answered with an `error` message.
#[derive(Debug, PartialEq)]
pub(crate) struct BadFrame {
    /// The frame's `id` when it could be read.
    pub id: Option<Value>,
    /// What is wrong, for a human.
    pub message: String,
    /// `error.code`.
    pub code: &'static str,
    /// `error.param`: the offending field, when there is one.
    pub param: Option<&'static str>,
}

fn bad(id: Option<Value>, code: &'static str, param: Option<&'static str>, msg: &str) -> BadFrame {
    BadFrame {
        id,
        message: msg.to_owned(),
        code,
        param,
    }
}

/// Parses one text frame.
pub(crate) fn parse(text: &str) -> Result<Frame, BadFrame> {
    let Ok(Value::Object(mut obj)) = serde_json::from_str::<Value>(text) else {
        return Err(bad(
            None,
            "invalid_json",
            None,
            "Frames must be JSON objects.",
        ));
    };
    let id = match obj.remove("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.len() > MAX_ID_BYTES => {
            let msg = format!("`id` is longer than {MAX_ID_BYTES} bytes.");
            return Err(bad(None, "invalid_request", Some("id"), &msg));
        }
        Some(v @ (Value::String(_) | Value::Number(_))) => Some(v),
        Some(_) => {
            let msg = "`id` must be a string or a number.";
            return Err(bad(None, "invalid_request", Some("id"), msg));
        }
    };
    let kind = match obj.remove("type") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            let msg = "`type` must be a string.";
            return Err(bad(id, "invalid_request", Some("type"), msg));
        }
    };
    match kind.as_deref() {
        None | Some("chat") => chat(id, obj),
        Some("message") => message(id, obj),
        Some("clear") => Ok(Frame::Clear),
        Some("cancel") => match id {
            Some(id) => Ok(Frame::Cancel { id }),
            None => Err(bad(
                None,
                "invalid_request",
                Some("id"),
                "`cancel` needs the `id` to stop.",
            )),
        },
        Some(other) => {
            let shown: String = other.chars().take(64).collect();
            let msg = format!(
                "Unknown frame type `{shown}`; expected a chat request or `message`, `clear`, `cancel`."
            );
            Err(bad(id, "unknown_type", Some("type"), &msg))
        }
    }
}

fn chat(id: Option<Value>, body: Map<String, Value>) -> Result<Frame, BadFrame> {
    if !matches!(body.get("messages"), Some(Value::Array(_))) {
        let msg = "A chat request needs `messages` (an array).";
        return Err(bad(id, "invalid_request", Some("messages"), msg));
    }
    if !matches!(body.get("model"), None | Some(Value::String(_))) {
        return Err(bad(
            id,
            "invalid_request",
            Some("model"),
            "`model` must be a string.",
        ));
    }
    Ok(Frame::Chat { id, body })
}

fn message(id: Option<Value>, mut obj: Map<String, Value>) -> Result<Frame, BadFrame> {
    let content = match obj.remove("content") {
        Some(c @ (Value::String(_) | Value::Array(_))) => c,
        _ => {
            let msg = "`message` needs `content` (a string or an array of parts).";
            return Err(bad(id, "invalid_request", Some("content"), msg));
        }
    };
    let model = match obj.remove("model") {
        None | Some(Value::Null) => None,
        Some(Value::String(m)) => Some(m),
        Some(_) => {
            return Err(bad(
                id,
                "invalid_request",
                Some("model"),
                "`model` must be a string.",
            ))
        }
    };
    Ok(Frame::Message { id, content, model })
}

/// A fresh id for a request that came without one.
pub(crate) fn new_id() -> Value {
    Value::String(format!("ws-{:016x}", fastrand::u64(..)))
}

/// `{"type":"delta","id","content"}`.
pub(crate) fn delta(id: &Value, content: &str) -> String {
    json!({"type": "delta", "id": id, "content": content}).to_string()
}

/// `{"type":"done","id","finish_reason","usage"}`; `done: true` too, for clients
/// that test `msg.done` (as the seed articles' clients do).
pub(crate) fn done(id: &Value, finish_reason: &str, usage: Option<&Value>) -> String {
    json!({
        "type": "done", "id": id, "finish_reason": finish_reason,
        "usage": usage, "done": true,
    })
    .to_string()
}

/// `{"type":"error","id","error":{...}}`, with an object from [`error_obj`]
/// or an upstream's own error object.
pub(crate) fn error(id: &Value, error: &Value) -> String {
    json!({"type": "error", "id": id, "error": error}).to_string()
}

/// `{"message","type","code","param"}`, the OpenAI error shape.
pub(crate) fn error_obj(message: &str, kind: &str, code: &str, param: Option<&str>) -> Value {
    json!({"message": message, "type": kind, "code": code, "param": param})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_frames() {
        let f = parse(r#"{"id":"r1","model":"m","messages":[],"temperature":0.2}"#).unwrap();
        let Frame::Chat { id, body } = f else {
            panic!()
        };
        assert_eq!(id, Some(json!("r1")));
        assert!(!body.contains_key("id") && body["temperature"] == 0.2);
        let f = parse(r#"{"type":"message","content":"hi","id":7}"#).unwrap();
        assert_eq!(
            f,
            Frame::Message {
                id: Some(json!(7)),
                content: json!("hi"),
                model: None
            }
        );
        assert_eq!(parse(r#"{"type":"clear"}"#).unwrap(), Frame::Clear);
        assert_eq!(
            parse(r#"{"type":"cancel","id":"r1"}"#).unwrap(),
            Frame::Cancel { id: json!("r1") }
        );
    }

    #[test]
    fn bad_frames_say_what_is_wrong() {
        assert_eq!(parse("hello").unwrap_err().code, "invalid_json");
        assert_eq!(parse("[1]").unwrap_err().code, "invalid_json");
        let e = parse(r#"{"id":"x","type":"dance"}"#).unwrap_err();
        assert_eq!((e.code, e.id), ("unknown_type", Some(json!("x"))));
        assert_eq!(
            parse(r#"{"model":"m"}"#).unwrap_err().param,
            Some("messages")
        );
        assert_eq!(
            parse(r#"{"type":"message"}"#).unwrap_err().param,
            Some("content")
        );
        assert_eq!(parse(r#"{"type":"cancel"}"#).unwrap_err().param, Some("id"));
        assert_eq!(
            parse(r#"{"id":{},"messages":[]}"#).unwrap_err().param,
            Some("id")
        );
        let long = format!(r#"{{"id":"{}","messages":[]}}"#, "x".repeat(300));
        assert_eq!(parse(&long).unwrap_err().param, Some("id"));
    }

    #[test]
    fn replies_carry_the_id_as_sent() {
        let d: Value = serde_json::from_str(&delta(&json!(5), "a\"b")).unwrap();
        assert_eq!(
            (d["id"].clone(), d["content"].clone()),
            (json!(5), json!("a\"b"))
        );
        let d: Value = serde_json::from_str(&done(&json!("r"), "stop", None)).unwrap();
        assert!(d["usage"].is_null() && d["done"] == true);
        let obj = error_obj("m", "t", "c", None);
        let e: Value = serde_json::from_str(&error(&json!("r"), &obj)).unwrap();
        assert!(e["error"]["param"].is_null() && e["error"]["code"] == "c");
    }
}
