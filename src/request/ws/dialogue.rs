//! Orders a socket's conversation frames: while one `message` is being
//! answered, later `message` and `clear` frames wait in a queue, so every
//! turn is asked with the answers before it and a `clear` takes effect
//! exactly where it was sent. Pure bookkeeping; the connection runs the tasks.

use std::collections::VecDeque;

use serde_json::{Map, Value};

use super::conversation::Conversation;

/// A user turn to ask.
pub(crate) struct Turn {
    pub id: Value,
    pub key: String,
    pub content: Value,
    pub model: String,
}

enum Op {
    Ask(Turn),
    Clear,
}

/// The conversation plus the turn being answered and what waits behind it.
pub(crate) struct Dialogue {
    conv: Conversation,
    busy: Option<String>,
    queue: VecDeque<Op>,
}

impl Dialogue {
    /// An empty dialogue with the conversation's bounds.
    pub fn new(max_turns: usize, max_bytes: usize) -> Self {
        Self {
            conv: Conversation::new(max_turns, max_bytes),
            busy: None,
            queue: VecDeque::new(),
        }
    }

    /// The turn back if it may be asked now; `None` when it was queued.
    pub fn offer(&mut self, turn: Turn) -> Option<Turn> {
        if self.busy.is_some() {
            self.queue.push_back(Op::Ask(turn));
            None
        } else {
            Some(turn)
        }
    }

    /// Clears now, or after the turns already waiting.
    pub fn clear(&mut self) {
        if self.busy.is_none() {
            self.conv.clear();
        } else if !matches!(self.queue.back(), Some(Op::Clear)) {
            // Two clears in a row are one: the queue stays bounded by the turns.
            self.queue.push_back(Op::Clear);
        }
    }

    /// Appends the user's turn and returns the request body (model, messages).
    pub fn begin(&mut self, turn: Turn) -> (Value, String, Map<String, Value>) {
        self.conv.push_user(turn.content);
        let mut body = Map::new();
        body.insert("model".into(), Value::String(turn.model));
        body.insert("messages".into(), self.conv.messages());
        self.busy = Some(turn.key.clone());
        (turn.id, turn.key, body)
    }

    /// Removes a waiting turn; true if it was there.
    pub fn cancel_queued(&mut self, key: &str) -> bool {
        let before = self.queue.len();
        self.queue
            .retain(|op| !matches!(op, Op::Ask(t) if t.key == key));
        self.queue.len() != before
    }

    /// The request `key` ended with `answer` (`None`: failed or cancelled,
    /// so its question is dropped too). Returns the next turn to ask, if any.
    pub fn ended(&mut self, key: &str, answer: Option<String>) -> Option<Turn> {
        if self.busy.as_deref() != Some(key) {
            return None;
        }
        self.busy = None;
        match answer {
            Some(text) => self.conv.push_assistant(text),
            None => self.conv.drop_unanswered(),
        }
        while let Some(op) = self.queue.pop_front() {
            match op {
                Op::Clear => self.conv.clear(),
                Op::Ask(t) => return Some(t),
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn turn(key: &str) -> Turn {
        Turn {
            id: json!(key),
            key: key.into(),
            content: json!(key),
            model: "m".into(),
        }
    }

    #[test]
    fn turns_wait_for_the_running_one_and_clear_keeps_its_place() {
        let mut d = Dialogue::new(50, 1000);
        let t = d.offer(turn("a")).unwrap();
        let (_, _, body) = d.begin(t);
        assert_eq!(body["messages"], json!([{"role": "user", "content": "a"}]));
        assert!(d.offer(turn("b")).is_none());
        d.clear();
        d.clear();
        assert!(d.offer(turn("c")).is_none());
        assert!(d.cancel_queued("b"));
        let next = d.ended("a", Some("A".into())).unwrap();
        assert_eq!(next.key, "c");
        let (_, _, body) = d.begin(next);
        assert_eq!(body["messages"], json!([{"role": "user", "content": "c"}]));
        assert!(d.ended("c", None).is_none());
        let (_, _, body) = d.begin(turn("d"));
        assert_eq!(body["messages"], json!([{"role": "user", "content": "d"}]));
    }
}
