//! PRODUCT.md §3.3 pass-through, from outside: every `/v1/` request that is
//! not routed by a model reaches the primary of `passthrough_route`, any
//! method, with or without a body, bytes unchanged both ways, never split,
//! the upstream's key injected; only GET/HEAD/DELETE fail over. Response
//! headers pass through; a routed endpoint's empty answer and an all-404
//! walk are passed on as the upstreams said.

#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed assertion"
)]

mod common;

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use common::*;
use turnout::config::{Secret, Secrets};

/// What an upstream received.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// Binary bytes that are not UTF-8, to prove nothing is re-encoded.
const BINARY: &[u8] = b"\x00\xff\xfe\x80binary\r\n\r\ndata: not sse\n\n\x01";

/// An upstream that records every request and answers by path; `fail`:
/// every request gets that status.
async fn recorder(name: &'static str, fail: Option<u16>) -> (String, Log) {
    let log: Log = Arc::default();
    let seen = log.clone();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let seen = seen.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
            let path = parts.uri.path().to_owned();
            seen.lock().unwrap().push(Seen {
                method: parts.method.clone(),
                path: path.clone(),
                headers: parts.headers.clone(),
                body: body.clone(),
            });
            answer(name, fail, &parts.method, &path, body.len())
        }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    (format!("http://{addr}/v1"), log)
}

fn answer(name: &str, fail: Option<u16>, method: &Method, path: &str, len: usize) -> Response {
    let headers = [
        ("x-request-id", format!("req_{name}")),
        ("x-ratelimit-remaining-requests", "7".to_owned()),
        ("openai-organization", "org-1".to_owned()),
    ];
    if let Some(code) = fail {
        let status = StatusCode::from_u16(code).unwrap();
        let body = format!(
            r#"{{"error":{{"message":"{name} says {code}","type":"x","code":"x","param":null}}}}"#
        );
        return (
            status,
            headers,
            [("content-type", "application/json")],
            body,
        )
            .into_response();
    }
    match path {
        "/v1/files/f1/content" => {
            ([("content-type", "application/octet-stream")], BINARY).into_response()
        }
        "/v1/realtime/calls/c1/accept" | "/v1/empty" => StatusCode::OK.into_response(),
        "/v1/nothing" => (StatusCode::NOT_FOUND, r#"{"error":{"message":"no"}}"#).into_response(),
        _ => {
            let body = format!(
                r#"{{"upstream":"{name}","method":"{method}","path":"{path}","bytes":{len}}}"#
            );
            (headers, [("content-type", "application/json")], body).into_response()
        }
    }
}

/// `a` (primary) and `b` (fallback, and a 100 % split target: pass-through
/// is never split), each with its key; client auth on.
async fn harness(a_fail: Option<u16>, extra: &str) -> (Harness, Log, Log) {
    let (a, log_a) = recorder("a", a_fail).await;
    let (b, log_b) = recorder("b", None).await;
    let yaml = format!(
        "listen: 127.0.0.1:0\nadmin: {{listen: 127.0.0.1:0}}\nmax_body_bytes: 1000\n{extra}\
         auth: {{keys: [{{name: team, key_env: CLIENT_KEY}}]}}\nupstreams:\n\
         - {{name: a, base_url: {a:?}, api_key_env: KA, health: {{enabled: false}}}}\n\
         - {{name: b, base_url: {b:?}, api_key_env: KB, auth_header: x-api-key, health: {{enabled: false}}}}\n\
         routes:\n  - {{name: chat, models: ['*'], primary: a, fallbacks: [b], split: {{target: b, percentage: 100}}}}\n"
    );
    let secrets = Secrets {
        client_keys: vec![Secret("client-key".into())],
        upstream_keys: vec![Some(Secret("ka".into())), Some(Secret("kb".into()))],
        ..secrets()
    };
    (start_with(&yaml, secrets, temp_state()).await, log_a, log_b)
}

fn send(h: &Harness, method: Method, path: &str) -> reqwest::RequestBuilder {
    h.http
        .request(method, format!("{}{path}", h.url))
        .bearer_auth("client-key")
        .header("x-user-id", "alice")
}

fn last(log: &Log) -> Seen {
    log.lock().unwrap().last().cloned().unwrap()
}

#[tokio::test]
async fn every_method_with_or_without_a_body_reaches_the_primary_unsplit_with_its_key() {
    let (h, a, b) = harness(None, "").await;
    let cases = [
        (Method::GET, "/v1/files?purpose=batch", None),
        (Method::DELETE, "/v1/files/f9", None),
        (Method::POST, "/v1/responses/r1/cancel", None),
        (
            Method::POST,
            "/v1/chat/completions",
            Some(r#"{"messages":[]}"#),
        ),
        (
            Method::POST,
            "/v1/fine_tuning/jobs",
            Some(r#"{"model":"gpt-4.1","training_file":"f"}"#),
        ),
        (Method::PUT, "/v1/things/1", Some("plain text body")),
        (Method::PATCH, "/v1/things/1", Some(r#"{"a":1}"#)),
        (Method::GET, "/v1/models/gpt-4.1", None),
        (Method::DELETE, "/v1/models", None),
    ];
    for (method, path, body) in cases {
        let mut rb = send(&h, method.clone(), path)
            .header("openai-beta", "assistants=v2")
            .header("anthropic-version", "2023-06-01")
            .header("anthropic-beta", "tools-2024-04-04");
        if let Some(b) = body {
            rb = rb.body(b);
        }
        let rsp = rb.send().await.unwrap();
        assert_eq!(rsp.status(), 200, "{method} {path}");
        let hd = rsp.headers().clone();
        assert_eq!(
            hd["x-turnout-upstream"], "a",
            "{method} {path}: never split"
        );
        assert_eq!(hd["x-turnout-attempts"], "1");
        // The provider's headers pass; its request id is kept, Turnout's travels beside it.
        assert_eq!(hd["x-request-id"], "req_a");
        assert_eq!(hd["x-ratelimit-remaining-requests"], "7");
        assert_eq!(hd["openai-organization"], "org-1");
        assert_eq!(hd["x-turnout-request-id"].len(), 16);
        let v: serde_json::Value = rsp.json().await.unwrap();
        let seen = last(&a);
        assert_eq!(
            (&seen.method, v["method"].as_str()),
            (&method, Some(method.as_str()))
        );
        assert_eq!(seen.path, path.split('?').next().unwrap());
        assert_eq!(seen.body, body.unwrap_or("").as_bytes(), "{method} {path}");
        assert_eq!(seen.headers["authorization"], "Bearer ka");
        assert_eq!(seen.headers["openai-beta"], "assistants=v2");
        assert_eq!(seen.headers["anthropic-version"], "2023-06-01");
        assert_eq!(seen.headers["anthropic-beta"], "tools-2024-04-04");
        for (k, v) in &seen.headers {
            assert!(
                !v.as_bytes().windows(10).any(|w| w == b"client-key"),
                "client key leaked in {k}"
            );
        }
    }
    assert!(b.lock().unwrap().is_empty(), "the split target saw nothing");
    let m = h.metrics().await;
    assert_eq!(
        metric_sum(
            &m,
            "turnout_requests_total",
            &["route=\"chat\"", "upstream=\"a\"", "code=\"200\""]
        ),
        9.0,
        "{m}"
    );
}

#[tokio::test]
async fn bodies_stream_both_ways_unchanged_and_head_keeps_its_length() {
    let (h, a, _b) = harness(None, "").await;
    // Binary answer bytes, as sent.
    let rsp = send(&h, Method::GET, "/v1/files/f1/content")
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.headers()["content-type"], "application/octet-stream");
    assert_eq!(&rsp.bytes().await.unwrap()[..], BINARY);
    // A body beyond max_body_bytes (1000) that is only passed through is streamed, not refused.
    let big: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    let rsp = send(&h, Method::POST, "/v1/uploads/u1/parts")
        .header("content-type", "application/octet-stream")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    assert_eq!(last(&a).body, big);
    // HEAD: the head of the GET, no body.
    let get = send(&h, Method::GET, "/v1/files/f2").send().await.unwrap();
    let len: usize = get.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let head = send(&h, Method::HEAD, "/v1/files/f2").send().await.unwrap();
    assert_eq!(head.status(), 200);
    // The echo says "HEAD" where the GET's said "GET".
    assert_eq!(
        head.headers()["content-length"],
        (len + 1).to_string().as_str()
    );
    assert_eq!(last(&a).method, Method::HEAD);
    assert!(head.bytes().await.unwrap().is_empty());
}

fn form(fields: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let mut body = Vec::new();
    for (name, filename, value) in fields {
        body.extend_from_slice(b"--BOUNDARY\r\n");
        match filename {
            Some(f) => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
            ),
            None => body.extend_from_slice(format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes()),
        }
        body.extend_from_slice(value);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"--BOUNDARY--\r\n");
    ("multipart/form-data; boundary=BOUNDARY".to_owned(), body)
}

#[tokio::test]
async fn multipart_with_a_model_is_routed_and_without_one_passed_through() {
    let (h, a, b) = harness(None, "").await;
    // With `model`: routed like JSON (split: alice is in b's 100 %).
    let (ct, body) = form(&[
        ("file", Some("a.wav"), BINARY),
        ("model", None, b"whisper-1"),
    ]);
    let rsp = send(&h, Method::POST, "/v1/audio/transcriptions")
        .header("content-type", ct.clone())
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    assert_eq!(rsp.headers()["x-turnout-upstream"], "b", "routed and split");
    let seen = last(&b);
    assert_eq!(
        seen.body, body,
        "the form reaches the upstream byte for byte"
    );
    assert_eq!(seen.headers["x-api-key"], "kb");
    assert!(seen.headers.get("authorization").is_none());
    // Without: passed through to the primary, unsplit.
    let (ct, body) = form(&[
        ("purpose", None, b"batch"),
        ("file", Some("x.jsonl"), BINARY),
    ]);
    let rsp = send(&h, Method::POST, "/v1/files")
        .header("content-type", ct)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.headers()["x-turnout-upstream"], "a");
    assert_eq!(last(&a).body, body);
    // A routed form over max_body_bytes is refused; a passed-through one streams on.
    let large = vec![b'x'; 5000];
    let (ct, body) = form(&[
        ("model", None, b"whisper-1"),
        ("file", Some("a.wav"), &large),
    ]);
    let rsp = send(&h, Method::POST, "/v1/audio/transcriptions")
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 413);
    let (ct, body) = form(&[("purpose", None, b"batch"), ("file", Some("x"), &large)]);
    let rsp = send(&h, Method::POST, "/v1/files")
        .header("content-type", ct)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    assert_eq!(last(&a).body, body);
}

#[tokio::test]
async fn only_idempotent_methods_fail_over_and_others_get_the_providers_answer() {
    let (h, a, b) = harness(Some(503), "failover: {budget_min_per_second: 100}\n").await;
    for method in [Method::GET, Method::DELETE, Method::HEAD] {
        let rsp = send(&h, method.clone(), "/v1/files/f3")
            .send()
            .await
            .unwrap();
        assert_eq!(rsp.status(), 200, "{method}");
        assert_eq!(rsp.headers()["x-turnout-upstream"], "b", "{method}");
        assert_eq!(last(&b).headers["x-api-key"], "kb");
    }
    let before = b.lock().unwrap().len();
    let rsp = send(&h, Method::POST, "/v1/batches")
        .body(r#"{"input_file_id":"f"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 503, "the provider's answer, as sent");
    assert_eq!(rsp.headers()["x-turnout-attempts"], "1");
    assert_eq!(rsp.headers()["x-request-id"], "req_a");
    assert!(rsp.text().await.unwrap().contains("a says 503"));
    assert_eq!(b.lock().unwrap().len(), before, "never replayed");
    assert_eq!(a.lock().unwrap().last().unwrap().method, Method::POST);
}

#[tokio::test]
async fn empty_answers_pass_and_an_all_404_walk_answers_404() {
    let (h, a, b) = harness(None, "").await;
    // Pass-through (a stored call) and a routed endpoint: an empty 200 is the answer.
    for (path, body) in [
        ("/v1/realtime/calls/c1/accept", r#"{"type":"realtime"}"#),
        ("/v1/empty", r#"{"model":"gpt-4.1"}"#),
    ] {
        let rsp = send(&h, Method::POST, path)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(rsp.status(), 200, "{path}");
        assert_eq!(rsp.headers()["x-turnout-attempts"], "1", "{path}");
        assert!(rsp.bytes().await.unwrap().is_empty());
    }
    let rsp = send(&h, Method::POST, "/v1/nothing")
        .body(r#"{"model":"gpt-4.1"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(
        rsp.status(),
        404,
        "every upstream said 404: so does Turnout"
    );
    let v: serde_json::Value = rsp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "not_found");
    assert_eq!(
        (
            a.lock()
                .unwrap()
                .iter()
                .filter(|s| s.path == "/v1/nothing")
                .count()
                > 0,
            b.lock()
                .unwrap()
                .iter()
                .filter(|s| s.path == "/v1/nothing")
                .count()
                > 0
        ),
        (true, true)
    );
}

#[tokio::test]
async fn passthrough_route_picks_the_primary() {
    let (bu, log_b) = recorder("b", None).await;
    let (au, log_a) = recorder("a", None).await;
    let yaml = format!(
        "listen: 127.0.0.1:0\nadmin: {{listen: 127.0.0.1:0}}\nauth: {{disabled: true}}\npassthrough_route: files\n\
         upstreams:\n  - {{name: a, base_url: {au:?}, health: {{enabled: false}}}}\n  - {{name: b, base_url: {bu:?}, health: {{enabled: false}}}}\n\
         routes:\n  - {{name: chat, models: ['*'], primary: a}}\n  - {{name: files, models: ['none'], primary: b}}\n"
    );
    let h = start(&yaml).await;
    let rsp = h
        .http
        .get(format!("{}/v1/files", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.headers()["x-turnout-upstream"], "b");
    assert_eq!(log_b.lock().unwrap().len(), 1);
    assert!(log_a.lock().unwrap().is_empty());
}
