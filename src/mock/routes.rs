//! HTTP surface: the OpenAI endpoints, the control endpoints used by
//! `turnout mock`, and per-request overrides from `x-mock-*` headers.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;

use super::body::{self, Head};
use super::fault::{error_response, json_with_fault};
use super::prelude::{prelude, script_for, Overrides};
use super::state::{Flight, Kind, Shared};
use super::stream::{sse_body, Plan};
use super::{Fault, FaultScope};

/// The mock's router; state is the instance's [`Shared`].
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/completions", post(completions))
        .route("/mock/stats", get(stats))
        .route("/mock/fault", put(set_fault))
        .fallback(|| async { error_response(StatusCode::NOT_FOUND, "mock: unknown path") })
        .method_not_allowed_fallback(|| async {
            error_response(StatusCode::METHOD_NOT_ALLOWED, "mock: method not allowed")
        })
        .with_state(shared)
}

/// A 400 for a body that does not parse.
fn bad_body(flight: &mut Flight, err: &serde_json::Error) -> Response {
    flight.finish();
    error_response(
        StatusCode::BAD_REQUEST,
        &format!("mock: bad JSON body: {err}"),
    )
}

/// Characters of text in a message `content` (string or array of parts).
fn content_chars(v: &Value) -> usize {
    match v {
        Value::String(s) => s.chars().count(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .map(|t| t.chars().count())
            .sum(),
        _ => 0,
    }
}

/// Texts of an `input` or `prompt` field (string, array of strings, tokens).
fn texts(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) if items.iter().all(Value::is_number) => vec![v.to_string()],
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ChatRequest {
    model: String,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    messages: Vec<Message>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct StreamOptions {
    include_usage: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Message {
    content: Value,
}

/// The common opening of an inference request: record it, apply the
/// per-request overrides and faults, parse its JSON body.
async fn begin<T: serde::de::DeserializeOwned>(
    s: &Arc<Shared>,
    path: &str,
    h: &HeaderMap,
    raw: &Bytes,
) -> Result<(Flight, Overrides, T), Response> {
    s.record(path, h, raw);
    let mut flight = Flight::new(s);
    let ov = prelude(s, h, Kind::Inference, &mut flight).await?;
    match serde_json::from_slice(raw) {
        Ok(req) => Ok((flight, ov, req)),
        Err(e) => Err(bad_body(&mut flight, &e)),
    }
}

async fn chat(State(s): State<Arc<Shared>>, h: HeaderMap, raw: Bytes) -> Response {
    s.counters.chat.fetch_add(1, Relaxed);
    let (flight, ov, req) = match begin::<ChatRequest>(&s, "/v1/chat/completions", &h, &raw).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let chars: usize = req.messages.iter().map(|m| content_chars(&m.content)).sum();
    let prompt = body::tokens_for(chars);
    let script = script_for(&s, &ov);
    let model = body::json_str(&req.model);
    let head = Head {
        id: s.next_id(),
        created: body::now_secs(),
        model: &model,
        fp: &s.fingerprint,
    };
    if req.stream.unwrap_or(false) {
        let include = req
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        let plan = Plan {
            head,
            script: &script,
            usage: include.then_some(prompt),
            ttft: ov.ttft,
            chunk_delay: ov.chunk_delay,
        };
        let mut resp = sse_body(&plan, ov.fault.as_ref(), flight).into_response();
        let hs = resp.headers_mut();
        hs.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        hs.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        return resp;
    }
    let json = body::chat_completion(&head, &script, prompt);
    json_with_fault(ov.fault.as_ref(), Bytes::from(json), flight)
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct InputRequest {
    model: String,
    input: Value,
    prompt: Value,
    stream: Option<bool>,
}

async fn embeddings(State(s): State<Arc<Shared>>, h: HeaderMap, raw: Bytes) -> Response {
    s.counters.embeddings.fetch_add(1, Relaxed);
    let (mut flight, ov, req) = match begin::<InputRequest>(&s, "/v1/embeddings", &h, &raw).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let inputs = texts(&req.input);
    if inputs.is_empty() {
        flight.finish();
        return error_response(StatusCode::BAD_REQUEST, "mock: `input` is required");
    }
    let json = body::embeddings(&body::json_str(&req.model), &inputs);
    json_with_fault(ov.fault.as_ref(), Bytes::from(json), flight)
}

async fn completions(State(s): State<Arc<Shared>>, h: HeaderMap, raw: Bytes) -> Response {
    let (mut flight, ov, req) = match begin::<InputRequest>(&s, "/v1/completions", &h, &raw).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    if req.stream.unwrap_or(false) {
        flight.finish();
        let msg = "mock: streaming is only simulated for chat completions";
        return error_response(StatusCode::BAD_REQUEST, msg);
    }
    let chars = texts(&req.prompt).iter().map(|t| t.chars().count()).sum();
    let script = script_for(&s, &ov);
    let model = body::json_str(&req.model);
    let head = Head {
        id: s.next_id(),
        created: body::now_secs(),
        model: &model,
        fp: &s.fingerprint,
    };
    let json = body::text_completion(&head, &script, body::tokens_for(chars));
    json_with_fault(ov.fault.as_ref(), Bytes::from(json), flight)
}

async fn models(State(s): State<Arc<Shared>>, h: HeaderMap) -> Response {
    s.counters.models.fetch_add(1, Relaxed);
    let mut flight = Flight::new(&s);
    let ov = match prelude(&s, &h, Kind::Models, &mut flight).await {
        Ok(ov) => ov,
        Err(resp) => return resp,
    };
    json_with_fault(ov.fault.as_ref(), s.models_body.clone(), flight)
}

async fn stats(State(s): State<Arc<Shared>>) -> Response {
    Json(s.stats()).into_response()
}

/// Body of `PUT /mock/fault`.
#[derive(Deserialize)]
struct FaultRequest {
    #[serde(default)]
    scope: FaultScope,
    fault: Option<Fault>,
    /// For the next `times` requests only ("one 500, then success").
    #[serde(default)]
    times: Option<u32>,
}

async fn set_fault(State(s): State<Arc<Shared>>, Json(req): Json<FaultRequest>) -> StatusCode {
    s.set_fault_times(req.scope, req.fault, req.times);
    StatusCode::NO_CONTENT
}
