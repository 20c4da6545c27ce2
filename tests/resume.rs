//! Mid-stream resume (PRODUCT.md §4): with `routes[].resume.enabled`, a chat
//! stream cut after it began is finished by the next upstream that declares
//! `prefill: true`, in the same stream; without it, or when no upstream can
//! continue, the stream ends with the error event as before.

#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed assertion"
)]

mod common;

use common::*;
use serde_json::Value;
use turnout::mock::{Fault, FaultScope, MockServer, MockSettings};

const BODY: &str = r#"{"model":"gpt-4.1","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#;

/// `a` cuts every chat stream after 3 events; `b` may continue (`prefill`).
async fn setup(
    resume: bool,
    b_rejects: bool,
    b_prefill: bool,
) -> (Harness, MockServer, MockServer) {
    let a = mock("a").await;
    a.set_fault(FaultScope::Chat, Some(Fault::Reset { after: 3 }));
    let b = mock_with(MockSettings {
        name: "b".into(),
        reject_prefill: b_rejects,
        ..Default::default()
    })
    .await;
    let b_extra = format!("health: {{enabled: false}}, prefill: {b_prefill}");
    let route = format!(
        "{{name: chat, models: ['*'], primary: a, fallbacks: [b], resume: {{enabled: {resume}}}}}"
    );
    let yaml = config(
        &[upstream("a", &a, ""), upstream("b", &b, &b_extra)],
        &route,
    );
    (start(&yaml).await, a, b)
}

/// The `data:` payloads of an SSE body, parsed where they are JSON.
fn events(body: &str) -> Vec<Value> {
    sse_data(body)
        .iter()
        .map(|d| serde_json::from_str(d).unwrap_or(Value::String(d.clone())))
        .collect()
}

fn text(events: &[Value]) -> String {
    events
        .iter()
        .filter_map(|e| e.pointer("/choices/0/delta/content")?.as_str())
        .collect()
}

/// A stream straight from a mock (no Turnout), its events.
async fn direct(m: &MockServer, body: &str) -> Vec<Value> {
    let rsp = reqwest::Client::new()
        .post(format!("{}/chat/completions", m.base_url()))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    // A cut stream is an error at the end of the body: keep what arrived.
    let mut out = Vec::new();
    let mut rsp = rsp;
    while let Ok(Some(chunk)) = rsp.chunk().await {
        out.extend_from_slice(&chunk);
    }
    events(&String::from_utf8_lossy(&out))
}

async fn chat_stream(h: &Harness) -> (reqwest::header::HeaderMap, String) {
    let rsp = h.post("/v1/chat/completions", BODY).await;
    assert_eq!(rsp.status(), 200);
    let headers = rsp.headers().clone();
    (headers, rsp.text().await.unwrap())
}

#[tokio::test]
async fn a_cut_stream_is_finished_by_the_prefill_upstream_as_one_answer() {
    let (h, a, b) = setup(true, false, true).await;
    let started = std::time::Instant::now();
    let (headers, body) = chat_stream(&h).await;
    let took = started.elapsed();
    let got = events(&body);
    assert_eq!(got.last(), Some(&Value::String("[DONE]".into())), "{body}");
    assert!(
        got.iter().all(|e| e.get("error").is_none()),
        "no error event: {body}"
    );
    // What a sent before the cut, then b's continuation of it.
    let from_a = text(&direct(&a, BODY).await);
    assert!(!from_a.is_empty());
    let prefilled = serde_json::json!({
        "model": "gpt-4.1", "stream": true,
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": from_a}],
    });
    let from_b = text(&direct(&b, &prefilled.to_string()).await);
    assert_eq!(text(&got), format!("{from_a}{from_b}"), "{body}");
    // One stream: every chunk has the first stream's id and model.
    let chunks: Vec<&Value> = got.iter().filter(|e| e.get("choices").is_some()).collect();
    let first = chunks[0];
    for c in &chunks {
        assert_eq!(
            (&c["id"], &c["model"]),
            (&first["id"], &first["model"]),
            "{body}"
        );
    }
    // The usage chunk is the continuation's (the cut stream reported none).
    let usage = got
        .iter()
        .rev()
        .find_map(|e| e.get("usage").filter(|u| !u.is_null()));
    assert!(usage.is_some(), "{body}");
    assert_eq!(headers["x-turnout-upstream"], "a", "the answer began on a");
    // What b received: the client's turn and a's text as the assistant's.
    let sent: Value = serde_json::from_slice(&b.last_request().unwrap().body).unwrap();
    assert_eq!(sent["messages"][1]["role"], "assistant");
    assert_eq!(sent["messages"][1]["content"], from_a.as_str());
    let m = h.metrics().await;
    let resumed = metric_sum(&m, "turnout_stream_resumes_total", &["outcome=\"resumed\""]);
    assert_eq!(resumed, 1.0, "{m}");
    assert_eq!(metric_sum(&m, "turnout_stream_errors_total", &[]), 0.0);
    let requests = metric_sum(
        &m,
        "turnout_requests_total",
        &["upstream=\"b\"", "code=\"200\""],
    );
    assert_eq!(requests, 1.0, "recorded once, served by b in the end");
    println!(
        "cut after 3 chunks, resumed on b: {} chunks, clean end, after {took:?}",
        chunks.len()
    );
}

#[tokio::test]
async fn a_fallback_that_rejects_prefill_leaves_the_error_event() {
    let (h, _a, b) = setup(true, true, true).await;
    let (_, body) = chat_stream(&h).await;
    let got = events(&body);
    let last = got.last().unwrap();
    assert_eq!(last["error"]["code"], "stream_interrupted", "{body}");
    assert!(!body.contains("[DONE]"), "{body}");
    assert_eq!(b.stats().chat, 1, "the continuation was asked for once");
    let m = h.metrics().await;
    let labels = ["outcome=\"unavailable\""];
    assert_eq!(metric_sum(&m, "turnout_stream_resumes_total", &labels), 1.0);
}

#[tokio::test]
async fn without_a_prefill_upstream_nothing_is_asked() {
    let (h, _a, b) = setup(true, false, false).await;
    let (_, body) = chat_stream(&h).await;
    let got = events(&body);
    assert_eq!(got.last().unwrap()["error"]["code"], "stream_interrupted");
    assert_eq!(b.stats().chat, 0);
}

#[tokio::test]
async fn with_resume_off_nothing_changes() {
    let (h, _a, b) = setup(false, false, true).await;
    let (_, body) = chat_stream(&h).await;
    let got = events(&body);
    assert_eq!(
        got.last().unwrap()["error"]["code"],
        "stream_interrupted",
        "{body}"
    );
    assert!(!body.contains("[DONE]"));
    assert_eq!(b.stats().chat, 0, "the fallback never heard of it");
    let m = h.metrics().await;
    assert_eq!(metric_sum(&m, "turnout_stream_resumes_total", &[]), 0.0);
}

const MESSAGES: &str = r#"{"model":"claude-sonnet-4.5","stream":true,"max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#;

/// Text of a Messages stream's text deltas.
fn messages_text(body: &str) -> String {
    events(body)
        .iter()
        .filter(|e| e["type"] == "content_block_delta")
        .filter_map(|e| e.pointer("/delta/text")?.as_str())
        .collect()
}

async fn direct_messages(m: &MockServer, body: &str) -> String {
    let mut rsp = reqwest::Client::new()
        .post(format!("{}/messages", m.base_url()))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let mut out = Vec::new();
    while let Ok(Some(chunk)) = rsp.chunk().await {
        out.extend_from_slice(&chunk);
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_cut_messages_stream_is_finished_in_the_same_text_block() {
    let (h, a, b) = setup(true, false, true).await;
    // message_start, content_block_start, ping, then two text deltas.
    a.set_fault(FaultScope::Chat, Some(Fault::Reset { after: 5 }));
    let rsp = h.post("/v1/messages", MESSAGES).await;
    assert_eq!(rsp.status(), 200);
    let body = rsp.text().await.unwrap();
    let got = events(&body);
    let kinds: Vec<&str> = got.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "message_start").count(),
        1,
        "{body}"
    );
    assert_eq!(kinds.last(), Some(&"message_stop"), "{body}");
    assert!(!kinds.contains(&"error"), "{body}");
    let starts = got
        .iter()
        .filter(|e| e["type"] == "content_block_start")
        .count();
    assert_eq!(starts, 1, "one text block: {body}");
    assert!(
        got.iter().filter_map(|e| e.get("index")).all(|i| i == 0),
        "every block event at index 0: {body}"
    );
    let from_a = messages_text(&direct_messages(&a, MESSAGES).await);
    assert!(!from_a.is_empty());
    let prefilled = serde_json::json!({
        "model": "claude-sonnet-4.5", "stream": true, "max_tokens": 64,
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": from_a}],
    });
    let from_b = messages_text(&direct_messages(&b, &prefilled.to_string()).await);
    assert_eq!(messages_text(&body), format!("{from_a}{from_b}"), "{body}");
    let m = h.metrics().await;
    let resumed = metric_sum(&m, "turnout_stream_resumes_total", &["outcome=\"resumed\""]);
    assert_eq!(resumed, 1.0, "{m}");
}
