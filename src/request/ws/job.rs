//! One chat request of a socket, as read from its frame: the upstream body
//! (streaming forced, with usage) and the facts routing reads from it.

use bytes::Bytes;
use serde_json::{json, Map, Value};

use crate::error::ApiError;
use crate::openai::RequestFacts;

/// A request ready to go upstream.
pub(crate) struct Job {
    /// The client's id (or the server's), echoed in every reply.
    pub id: Value,
    /// Client model name.
    pub model: String,
    /// Upstream body: `stream: true`, `stream_options.include_usage: true`.
    pub body: Bytes,
    /// What routing reads from it.
    pub facts: RequestFacts,
    /// Keep the answer's text (conversation turns).
    pub collect: bool,
}

impl Job {
    /// Forces `stream: true` and `stream_options.include_usage: true` (so
    /// `done` can carry `usage`), then reads the routing facts.
    pub fn new(
        id: Value,
        mut body: Map<String, Value>,
        collect: bool,
    ) -> Result<Self, (Value, ApiError)> {
        body.insert("stream".into(), Value::Bool(true));
        match body.get_mut("stream_options") {
            Some(Value::Object(o)) => {
                o.insert("include_usage".into(), Value::Bool(true));
            }
            _ => {
                body.insert("stream_options".into(), json!({"include_usage": true}));
            }
        }
        let bytes = Bytes::from(Value::Object(body).to_string());
        let facts = match crate::openai::peek(&bytes) {
            Ok(f) => f,
            Err(e) => return Err((id, e)),
        };
        Ok(Self {
            id,
            model: facts.model.clone().unwrap_or_default(),
            body: bytes,
            facts,
            collect,
        })
    }
}
