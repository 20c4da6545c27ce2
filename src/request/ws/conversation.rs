//! The conversation a socket keeps for `{"type":"message"}` frames, bounded
//! in turns and in bytes: when a bound is passed the oldest turns go first
//! (and an assistant turn left at the front goes with its question), but the
//! newest turn is always kept, so a request never loses its own question.

use std::collections::VecDeque;

use serde_json::{json, Value};

/// One message of the conversation.
#[derive(Debug)]
struct Turn {
    role: &'static str,
    content: Value,
    bytes: usize,
}

/// Turns in order, with the bounds of `websocket.max_turns` and
/// `websocket.max_conversation_bytes`.
#[derive(Debug)]
pub(crate) struct Conversation {
    turns: VecDeque<Turn>,
    bytes: usize,
    max_turns: usize,
    max_bytes: usize,
}

/// Bytes a content value weighs: its text, or its JSON for arrays of parts.
fn weight(content: &Value) -> usize {
    match content {
        Value::String(s) => s.len(),
        other => other.to_string().len(),
    }
}

impl Conversation {
    /// An empty conversation with its bounds (each at least 1).
    pub fn new(max_turns: usize, max_bytes: usize) -> Self {
        Self {
            turns: VecDeque::new(),
            bytes: 0,
            max_turns: max_turns.max(1),
            max_bytes: max_bytes.max(1),
        }
    }

    /// Appends the user's turn.
    pub fn push_user(&mut self, content: Value) {
        self.push("user", content);
    }

    /// Appends the assistant's answer, cut to the byte bound.
    pub fn push_assistant(&mut self, mut text: String) {
        if text.len() > self.max_bytes {
            let mut cut = self.max_bytes;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        self.push("assistant", Value::String(text));
    }

    /// Removes the last turn if it is an unanswered user turn (its request
    /// failed or was cancelled), so the conversation stays question/answer.
    pub fn drop_unanswered(&mut self) {
        if self.turns.back().is_some_and(|t| t.role == "user") {
            if let Some(t) = self.turns.pop_back() {
                self.bytes -= t.bytes;
            }
        }
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.turns.clear();
        self.bytes = 0;
    }

    /// The `messages` array of the next request.
    pub fn messages(&self) -> Value {
        Value::Array(
            self.turns
                .iter()
                .map(|t| json!({"role": t.role, "content": t.content}))
                .collect(),
        )
    }

    fn push(&mut self, role: &'static str, content: Value) {
        let bytes = weight(&content);
        self.turns.push_back(Turn {
            role,
            content,
            bytes,
        });
        self.bytes += bytes;
        while self.turns.len() > 1
            && (self.turns.len() > self.max_turns || self.bytes > self.max_bytes)
        {
            self.pop_front();
            if self.turns.len() > 1 && self.turns.front().is_some_and(|t| t.role == "assistant") {
                self.pop_front();
            }
        }
    }

    fn pop_front(&mut self) {
        if let Some(t) = self.turns.pop_front() {
            self.bytes -= t.bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles(c: &Conversation) -> Vec<String> {
        c.messages()
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                format!(
                    "{}:{}",
                    m["role"].as_str().unwrap(),
                    m["content"].as_str().unwrap()
                )
            })
            .collect()
    }

    #[test]
    fn keeps_turns_in_order_and_drops_the_oldest_pair() {
        let mut c = Conversation::new(4, 1000);
        for i in 0..3 {
            c.push_user(json!(format!("q{i}")));
            c.push_assistant(format!("a{i}"));
        }
        assert_eq!(
            roles(&c),
            ["user:q1", "assistant:a1", "user:q2", "assistant:a2"]
        );
        c.push_user(json!("q3"));
        assert_eq!(roles(&c), ["user:q2", "assistant:a2", "user:q3"]);
        c.drop_unanswered();
        assert_eq!(roles(&c), ["user:q2", "assistant:a2"]);
        c.clear();
        assert!(c.messages().as_array().unwrap().is_empty());
    }

    #[test]
    fn byte_bound_keeps_the_newest_turn() {
        let mut c = Conversation::new(50, 10);
        c.push_user(json!("12345"));
        c.push_assistant("12345".into());
        c.push_user(json!("this one is long"));
        assert_eq!(roles(&c), ["user:this one is long"]);
        c.push_assistant("é".repeat(20));
        assert_eq!(roles(&c), [format!("assistant:{}", "é".repeat(5))]);
    }
}
