//! The shape of an answer, for the shadow comparison (PRODUCT.md §3.9): its
//! `finish_reason` (chat) or `stop_reason` (Messages) or `status`
//! (Responses), and the names of the tools it called — read from a whole
//! JSON body or from a stream's SSE events, in the shadow's own task.

use serde_json::Value;

/// What two answers must share to count as the same shape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shape {
    /// Why the answer stopped.
    pub finish_reason: Option<String>,
    /// Tool-call names, in order.
    pub tools: Vec<String>,
}

impl Shape {
    /// From a whole JSON answer.
    pub fn of_json(body: &[u8]) -> Option<Self> {
        let v: Value = serde_json::from_slice(body).ok()?;
        let mut s = Self::default();
        s.read(&v);
        Some(s)
    }

    /// From a stream's bytes (its `data:` events).
    pub fn of_sse(body: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(body).ok()?;
        let mut s = Self::default();
        for line in text.lines() {
            let Some(data) = line.strip_prefix("data:") else {
                continue;
            };
            if let Ok(v) = serde_json::from_str::<Value>(data.trim()) {
                s.read(&v);
            }
        }
        Some(s)
    }

    /// Reads one answer object or stream event, in any protocol's spelling.
    fn read(&mut self, v: &Value) {
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
        if let Some(c) = v.pointer("/choices/0") {
            if let Some(r) = text(c.get("finish_reason")) {
                self.finish_reason = Some(r);
            }
            for calls in [
                c.pointer("/message/tool_calls"),
                c.pointer("/delta/tool_calls"),
            ] {
                for call in calls.and_then(Value::as_array).into_iter().flatten() {
                    if let Some(n) = text(call.pointer("/function/name")) {
                        self.tools.push(n);
                    }
                }
            }
        }
        // Anthropic Messages: `stop_reason` (whole, or in `message_delta`), `tool_use` blocks.
        for r in [v.get("stop_reason"), v.pointer("/delta/stop_reason")] {
            if let Some(r) = text(r) {
                self.finish_reason = Some(r);
            }
        }
        let blocks = v.get("content").and_then(Value::as_array);
        let started = v.get("content_block").map(std::slice::from_ref);
        for b in blocks
            .map(Vec::as_slice)
            .into_iter()
            .chain(started)
            .flatten()
        {
            if b.get("type").and_then(Value::as_str) == Some("tool_use") {
                if let Some(n) = text(b.get("name")) {
                    self.tools.push(n);
                }
            }
        }
        // Responses: the response's `status` and its `function_call` items.
        let resp = v.get("response").unwrap_or(v);
        if v.get("object").and_then(Value::as_str) == Some("response")
            || v.get("response").is_some()
        {
            if let Some(st) = text(resp.get("status")) {
                self.finish_reason = Some(st);
            }
            if v.get("type").and_then(Value::as_str) != Some("response.completed")
                && v.get("response").is_some()
            {
                return;
            }
            for item in resp
                .get("output")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if item.get("type").and_then(Value::as_str) == Some("function_call") {
                    if let Some(n) = text(item.get("name")) {
                        self.tools.push(n);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_json_and_sse_read_alike() {
        let whole = br#"{"choices":[{"message":{"tool_calls":[{"function":{"name":"get_weather"}}]},"finish_reason":"tool_calls"}]}"#;
        let sse = b"data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"function\":{\"name\":\"get_weather\"}}]},\"finish_reason\":null}]}\n\ndata: {\"choices\":[{\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\ndata: [DONE]\n\n";
        let a = Shape::of_json(whole).unwrap_or_default();
        assert_eq!(a.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(a.tools, ["get_weather"]);
        assert_eq!(Shape::of_sse(sse), Some(a));
        let msg = br#"{"content":[{"type":"text"},{"type":"tool_use","name":"f"}],"stop_reason":"tool_use"}"#;
        let m = Shape::of_json(msg).unwrap_or_default();
        assert_eq!(
            (m.finish_reason.as_deref(), m.tools.len()),
            (Some("tool_use"), 1)
        );
    }
}
