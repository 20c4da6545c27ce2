//! A simulated OpenAI-compatible provider.
//!
//! Three users share it: the proxy's integration tests (in-process, with
//! faults injected per request or per instance), the shipped demo config
//! (simulated upstreams run inside the proxy so a fresh checkout works with
//! no network and no keys) and `turnout mock` for benchmarks. It is therefore
//! cheap per request: bodies are built by string formatting from text
//! precomputed at start, with no per-request allocation beyond the body.

mod body;
pub mod cli;
mod fault;
mod prelude;
mod routes;
mod server;
mod state;
mod stream;

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub use server::{MockHandle, MockServer};

/// How a simulated provider behaves when no fault is injected.
///
/// Every knob exists so that tests and benchmarks can model a real
/// provider's timing (slow first token, slow chunks) and flakiness.
#[derive(Clone, Debug)]
pub struct MockSettings {
    /// Delay before response headers (non-stream) or before the SSE headers.
    pub latency: Duration,
    /// Streaming: delay after the headers and before the first chunk.
    pub ttft: Duration,
    /// Streamed content chunks; also the completion token count.
    pub chunks: u32,
    /// Streaming: delay between two content chunks.
    pub chunk_delay: Duration,
    /// Fraction (0..=1) of inference requests (chat, embeddings,
    /// completions, responses, messages, audio) answered 500; never files.
    pub fail_rate: f64,
    /// Model ids listed by `GET /v1/models`.
    pub models: Vec<String>,
    /// Shown in `system_fingerprint`, the `x-mock-name` header and the
    /// generated text, so tests can tell which instance answered.
    pub name: String,
    /// Answer a chat whose last message is the assistant's (a prefill to
    /// continue) with a 400, as models without prefill support do.
    pub reject_prefill: bool,
}

impl Default for MockSettings {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            ttft: Duration::ZERO,
            chunks: 8,
            chunk_delay: Duration::ZERO,
            fail_rate: 0.0,
            models: [
                "gpt-4.1",
                "gpt-4o-mini",
                "claude-sonnet-4.5",
                "text-embedding-3-small",
            ]
            .map(String::from)
            .to_vec(),
            name: "mock".to_owned(),
            reject_prefill: false,
        }
    }
}

/// A misbehaviour to simulate, so the proxy's failover paths can be tested.
///
/// Set per request with the `x-mock-fault` header (`status=503`,
/// `status=429;retry-after=2`, `hang`, `truncate=3`, `reset=3`, `junk`,
/// `stall=2`, `error=2`, `empty`, `context_length`) or per instance with
/// [`MockHandle::set_fault`] (for the next N requests only:
/// [`MockHandle::set_fault_times`]) / `PUT /mock/fault` (JSON, externally
/// tagged: `"hang"`, `{"status":{"code":503,"retry_after":2}}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Answer with this status and an OpenAI-shaped error body, plus
    /// `Retry-After` when set.
    Status {
        /// HTTP status code.
        code: u16,
        /// Seconds for the `Retry-After` header.
        #[serde(default)]
        retry_after: Option<u64>,
    },
    /// Accept the request and never send headers, until the client gives up.
    Hang,
    /// Stream: send `after` events then end the body cleanly without
    /// `data: [DONE]`. Non-stream: send half of the JSON body.
    Truncate {
        /// Events sent before the end.
        after: u32,
    },
    /// Stream: send `after` events then abort the connection mid-body.
    /// Non-stream: send half of the JSON body, then abort.
    Reset {
        /// Events sent before the abort.
        after: u32,
    },
    /// 200 with `content-type: application/json` and a non-JSON body.
    Junk,
    /// Stream: send `after` events then go silent forever (idle timeouts).
    /// Non-stream: send the headers and half of the body, then go silent.
    Stall {
        /// Events sent before the silence.
        after: u32,
    },
    /// `400` with `code: context_length_exceeded`, as a provider answers a
    /// request longer than its model's context.
    ContextLength,
    /// Stream: send `after` events then the protocol's in-band error
    /// (chat `data: {"error":..}`, Responses `response.failed`, Messages
    /// `event: error`), then end. Non-stream: a 200 whose body is that error.
    Error {
        /// Events sent before the error.
        after: u32,
    },
    /// Stream: the protocol's preamble (a role-only delta, `response.created`,
    /// `message_start`) then its clean end, with no content: an empty answer.
    Empty,
}

/// Which requests an instance-wide fault applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultScope {
    /// Every API request (models, chat, embeddings, completions).
    #[default]
    All,
    /// Chat, embeddings, completions, responses, messages, audio (the inference paths).
    Chat,
    /// Only `GET /v1/models`, the health-probe path.
    Models,
}

/// Counters of one instance, so tests can assert what the proxy did upstream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MockStats {
    /// Every HTTP request, including unknown paths and control endpoints.
    pub requests: u64,
    /// `POST /v1/chat/completions` requests.
    pub chat: u64,
    /// `POST /v1/embeddings` requests.
    pub embeddings: u64,
    /// `POST /v1/responses` requests.
    pub responses: u64,
    /// `POST /v1/messages` requests.
    pub messages: u64,
    /// Requests to `/v1/files` and below.
    pub files: u64,
    /// `POST /v1/audio/transcriptions` requests.
    pub audio: u64,
    /// `GET /v1/models` requests.
    pub models: u64,
    /// API responses abandoned by the client before they were fully sent.
    pub disconnects: u64,
    /// API responses fully sent (including error and fault responses).
    pub completed: u64,
}

/// The most recent POST, so tests can check what the proxy forwarded
/// (rewritten model, stripped or injected headers).
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// Request path, e.g. `/v1/chat/completions`.
    pub path: String,
    /// Request headers as received.
    pub headers: axum::http::HeaderMap,
    /// Raw request body.
    pub body: Bytes,
}
