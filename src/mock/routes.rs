//! HTTP surface: the OpenAI endpoints, the control endpoints used by
//! `turnout mock`, and per-request overrides from `x-mock-*` headers.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;

use super::body::{self, Head};
use super::fault::{error_response, json_response, json_with_fault};
use super::prelude::{prelude, script_for, Overrides};
use super::state::{Flight, Kind, Shared, StoredFile};
use super::stream::{sse_body, Plan, Wire};
use super::{Fault, FaultScope};

/// The mock's router; state is the instance's [`Shared`].
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/completions", post(completions))
        .route("/v1/responses", post(responses))
        .route("/v1/messages", post(messages))
        .route("/v1/audio/transcriptions", post(transcription))
        .route("/v1/files", post(upload).get(list_files))
        .route("/v1/files/{id}", get(file).delete(delete_file))
        .route("/v1/files/{id}/content", get(file_content))
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
    role: String,
    content: Value,
}

/// A model without prefill support (`reject_prefill`) refuses a request
/// whose last message is the assistant's, as such providers answer.
fn refuse_prefill(s: &Shared, messages: &[Message], flight: &mut Flight) -> Option<Response> {
    let prefill = messages.last().is_some_and(|m| m.role == "assistant");
    if !(prefill && s.settings.reject_prefill) {
        return None;
    }
    flight.finish();
    let msg = "mock: this model cannot continue a trailing assistant message";
    Some(error_response(StatusCode::BAD_REQUEST, msg))
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
    let (mut flight, ov, req) =
        match begin::<ChatRequest>(&s, "/v1/chat/completions", &h, &raw).await {
            Ok(v) => v,
            Err(resp) => return resp,
        };
    if let Some(refused) = refuse_prefill(&s, &req.messages, &mut flight) {
        return refused;
    }
    let chars: usize = req.messages.iter().map(|m| content_chars(&m.content)).sum();
    let include = req
        .stream_options
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    let answer = Answer {
        wire: Wire::Chat,
        model: &req.model,
        prompt: body::tokens_for(chars),
        stream: req.stream.unwrap_or(false),
        include_usage: include,
    };
    answer.respond(&s, ov, flight)
}

/// One inference answer in a protocol, streamed or whole, with its faults.
struct Answer<'a> {
    wire: Wire,
    model: &'a str,
    prompt: u64,
    stream: bool,
    include_usage: bool,
}

impl Answer<'_> {
    fn respond(&self, s: &Shared, ov: Overrides, mut flight: Flight) -> Response {
        let script = script_for(s, &ov);
        let model = body::json_str(self.model);
        let head = Head {
            id: s.next_id(),
            created: body::now_secs(),
            model: &model,
            fp: &s.fingerprint,
        };
        if self.stream {
            let plan = Plan {
                wire: self.wire,
                head,
                script: &script,
                prompt: self.prompt,
                include_usage: self.include_usage,
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
        if let Some(Fault::Error { .. }) = ov.fault {
            // A 200 whose body is an error, in the protocol's shape.
            flight.finish();
            let msg = "mock fault: error in a 200";
            let json = match self.wire {
                Wire::Chat => body::error(msg, "server_error", "server_error"),
                Wire::Responses => body::response_object(&head, "failed", "[]", "null").replacen(
                    r#""error":null"#,
                    r#""error":{"code":"server_error","message":"mock fault: error in a 200"}"#,
                    1,
                ),
                Wire::Messages => format!(
                    r#"{{"type":"error","error":{{"type":"api_error","message":"{msg}"}}}}"#
                ),
            };
            return json_response(Bytes::from(json));
        }
        let json = match self.wire {
            Wire::Chat => body::chat_completion(&head, &script, self.prompt),
            Wire::Responses => body::response(&head, &script, self.prompt),
            Wire::Messages => body::messages(&head, &script, self.prompt),
        };
        json_with_fault(ov.fault.as_ref(), Bytes::from(json), flight)
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ProtocolRequest {
    model: String,
    stream: Option<bool>,
    /// Responses.
    input: Value,
    /// Messages.
    messages: Vec<Message>,
    system: Value,
}

async fn responses(State(s): State<Arc<Shared>>, h: HeaderMap, raw: Bytes) -> Response {
    s.counters.responses.fetch_add(1, Relaxed);
    let (flight, ov, req) = match begin::<ProtocolRequest>(&s, "/v1/responses", &h, &raw).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let chars = match &req.input {
        Value::Array(items) => items
            .iter()
            .map(|i| content_chars(i.get("content").unwrap_or(i)))
            .sum(),
        other => content_chars(other),
    };
    let answer = Answer {
        wire: Wire::Responses,
        model: &req.model,
        prompt: body::tokens_for(chars),
        stream: req.stream.unwrap_or(false),
        include_usage: true,
    };
    answer.respond(&s, ov, flight)
}

async fn messages(State(s): State<Arc<Shared>>, h: HeaderMap, raw: Bytes) -> Response {
    s.counters.messages.fetch_add(1, Relaxed);
    let (mut flight, ov, req) = match begin::<ProtocolRequest>(&s, "/v1/messages", &h, &raw).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    if let Some(refused) = refuse_prefill(&s, &req.messages, &mut flight) {
        return refused;
    }
    let chars = req
        .messages
        .iter()
        .map(|m| content_chars(&m.content))
        .sum::<usize>()
        + content_chars(&req.system);
    let answer = Answer {
        wire: Wire::Messages,
        model: &req.model,
        prompt: body::tokens_for(chars),
        stream: req.stream.unwrap_or(false),
        include_usage: true,
    };
    answer.respond(&s, ov, flight)
}

/// The parts of a multipart body: `(name, filename, content)`.
fn form_parts<'a>(h: &HeaderMap, raw: &'a [u8]) -> Vec<(&'a str, Option<&'a str>, &'a [u8])> {
    let ct = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(boundary) = crate::openai::form::boundary(ct) else {
        return Vec::new();
    };
    crate::openai::form::parts(raw, boundary)
        .into_iter()
        .map(|p| (p.name, p.filename, &raw[p.span.0..p.span.1]))
        .collect()
}

fn field<'a>(parts: &[(&str, Option<&str>, &'a [u8])], name: &str) -> Option<&'a [u8]> {
    parts.iter().find(|p| p.0 == name).map(|p| p.2)
}

/// `POST /v1/audio/transcriptions`: a form with `model` and `file`.
async fn transcription(State(s): State<Arc<Shared>>, h: HeaderMap, raw: Bytes) -> Response {
    s.counters.audio.fetch_add(1, Relaxed);
    s.record("/v1/audio/transcriptions", &h, &raw);
    let mut flight = Flight::new(&s);
    if let Err(resp) = prelude(&s, &h, Kind::Inference, &mut flight).await {
        return resp;
    }
    flight.finish();
    let parts = form_parts(&h, &raw);
    let (Some(_), Some(file)) = (field(&parts, "model"), field(&parts, "file")) else {
        let msg = "mock: a transcription needs `model` and `file` form fields";
        return error_response(StatusCode::BAD_REQUEST, msg);
    };
    let text = format!(
        "Hello from {}. I heard {} bytes.",
        s.settings.name,
        file.len()
    );
    if field(&parts, "response_format") == Some(b"text") {
        return ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response();
    }
    let json = format!(
        r#"{{"text":{},"usage":{{"type":"duration","seconds":1}}}}"#,
        body::json_str(&text)
    );
    json_response(Bytes::from(json))
}

/// Files kept by one instance: the oldest go first.
const MAX_FILES: usize = 256;

fn file_object(f: &StoredFile) -> String {
    format!(
        r#"{{"id":"{}","object":"file","bytes":{},"created_at":{},"filename":{},"purpose":{},"status":"processed","status_details":null}}"#,
        f.id,
        f.content.len(),
        f.created_at,
        body::json_str(&f.filename),
        body::json_str(&f.purpose)
    )
}

/// The opening of a files request: counted, faults of scope `all` applied.
async fn files_prelude(s: &Arc<Shared>, h: &HeaderMap) -> Result<Flight, Response> {
    s.counters.files.fetch_add(1, Relaxed);
    let mut flight = Flight::new(s);
    prelude(s, h, Kind::Resource, &mut flight).await?;
    flight.finish();
    Ok(flight)
}

async fn upload(State(s): State<Arc<Shared>>, h: HeaderMap, raw: Bytes) -> Response {
    s.record("/v1/files", &h, &raw);
    if let Err(resp) = files_prelude(&s, &h).await {
        return resp;
    }
    let parts = form_parts(&h, &raw);
    let file = parts.iter().find(|p| p.0 == "file" && p.1.is_some());
    let (Some(purpose), Some(&(_, filename, content))) = (field(&parts, "purpose"), file) else {
        let msg = "mock: an upload needs `purpose` and a `file` form fields";
        return error_response(StatusCode::BAD_REQUEST, msg);
    };
    let f = StoredFile {
        id: format!("file-mock-{}", s.next_id()),
        filename: filename.unwrap_or("file").to_owned(),
        purpose: String::from_utf8_lossy(purpose).into_owned(),
        created_at: body::now_secs(),
        content: raw.slice_ref(content),
    };
    let json = file_object(&f);
    let mut files = s.files.lock().unwrap_or_else(|e| e.into_inner());
    if files.len() >= MAX_FILES {
        files.pop_front();
    }
    files.push_back(f);
    json_response(Bytes::from(json))
}

async fn list_files(State(s): State<Arc<Shared>>, h: HeaderMap) -> Response {
    if let Err(resp) = files_prelude(&s, &h).await {
        return resp;
    }
    let files = s.files.lock().unwrap_or_else(|e| e.into_inner());
    let items: Vec<String> = files.iter().map(file_object).collect();
    json_response(Bytes::from(format!(
        r#"{{"object":"list","data":[{}],"has_more":false}}"#,
        items.join(",")
    )))
}

/// Runs `f` on the stored file `id`, or answers 404.
fn with_file(s: &Shared, id: &str, f: impl FnOnce(&StoredFile) -> Response) -> Response {
    let files = s.files.lock().unwrap_or_else(|e| e.into_inner());
    match files.iter().find(|x| x.id == id) {
        Some(file) => f(file),
        None => error_response(StatusCode::NOT_FOUND, &format!("No such File object: {id}")),
    }
}

async fn file(State(s): State<Arc<Shared>>, Path(id): Path<String>, h: HeaderMap) -> Response {
    if let Err(resp) = files_prelude(&s, &h).await {
        return resp;
    }
    with_file(&s, &id, |f| json_response(Bytes::from(file_object(f))))
}

async fn file_content(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    h: HeaderMap,
) -> Response {
    if let Err(resp) = files_prelude(&s, &h).await {
        return resp;
    }
    with_file(&s, &id, |f| {
        let ct = [(header::CONTENT_TYPE, "application/octet-stream")];
        (ct, f.content.clone()).into_response()
    })
}

async fn delete_file(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    h: HeaderMap,
) -> Response {
    if let Err(resp) = files_prelude(&s, &h).await {
        return resp;
    }
    let mut files = s.files.lock().unwrap_or_else(|e| e.into_inner());
    let before = files.len();
    files.retain(|f| f.id != id);
    if files.len() == before {
        return error_response(StatusCode::NOT_FOUND, &format!("No such File object: {id}"));
    }
    json_response(Bytes::from(format!(
        r#"{{"id":"{id}","object":"file","deleted":true}}"#
    )))
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
