//! The proxy core, from outside: pass-through, model_map, header hygiene,
//! OpenAI-shaped errors, limits and cancellation.

#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed assertion"
)]

mod common;

use std::time::Duration;

use common::*;
use turnout::config::{Secret, Secrets};

async fn json(rsp: reqwest::Response) -> serde_json::Value {
    serde_json::from_slice(&rsp.bytes().await.unwrap()).unwrap()
}

fn assert_openai_error(v: &serde_json::Value, code: &str) {
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
    assert!(v["error"]["type"].is_string(), "{v}");
    assert!(v["error"]["param"].is_null(), "{v}");
}

/// A tiny upstream that answers fixed bytes, to prove the proxy changes none of them.
async fn fixed_upstream(content_type: &'static str, body: &'static [u8]) -> String {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        post(move || async move { ([("content-type", content_type)], body) }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    format!("http://{addr}/v1")
}

#[tokio::test]
async fn json_and_sse_bodies_pass_through_byte_for_byte() {
    const JSON: &[u8] = b"{ \"id\":\"x\",  \"model\":\"upstream-model-7\",\"odd_field\":[1,2.50,\"\\u00e9\"],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n";
    const SSE: &[u8] = b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"x\":  1}\n\n: comment\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\ndata: [DONE]\n\n";
    for (ct, body, stream) in [
        ("application/json", JSON, false),
        ("text/event-stream", SSE, true),
        // Not JSON and not declared as JSON (e.g. audio): passed through unchecked.
        ("audio/mpeg", b"\xff\xfb\x90\x00ID3-binary", false),
    ] {
        let base = fixed_upstream(ct, body).await;
        let yaml = format!(
            "listen: 127.0.0.1:0\nadmin: {{listen: 127.0.0.1:0}}\nauth: {{disabled: true}}\nupstreams:\n  - {{name: fixed, base_url: {base:?}, health: {{enabled: false}}}}\nroutes:\n  - {{name: chat, models: ['*'], primary: fixed}}\n"
        );
        let h = start(&yaml).await;
        let rsp = h
            .post(
                "/v1/chat/completions",
                format!(r#"{{"model":"gpt-4.1","stream":{stream},"messages":[]}}"#),
            )
            .await;
        assert_eq!(rsp.status(), 200);
        assert_eq!(rsp.headers()["x-turnout-upstream"], "fixed");
        assert_eq!(rsp.headers()["x-turnout-attempts"], "1");
        assert!(rsp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with(ct));
        assert_eq!(&rsp.bytes().await.unwrap()[..], body);
        h.proxy.shutdown().await;
    }
}

#[tokio::test]
async fn streams_from_the_simulated_provider_end_with_done_and_usage() {
    let a = mock("a").await;
    let h = start(&config(
        &[upstream("a", &a, "")],
        "{name: chat, models: ['*'], primary: a}",
    ))
    .await;
    let rsp = h.chat_stream("u1").await;
    assert_eq!(rsp.status(), 200);
    let body = rsp.text().await.unwrap();
    let data = sse_data(&body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    assert!(data.iter().any(|d| d.contains("\"usage\"")));
    let m = h.metrics().await;
    assert!(
        metric_sum(
            &m,
            "turnout_tokens_total",
            &["upstream=\"a\"", "type=\"completion\""]
        ) >= 1.0,
        "{m}"
    );
}

#[tokio::test]
async fn model_map_rewrites_only_the_model_and_unknown_fields_survive() {
    let a = mock("a").await;
    let up = format!("  - {{name: a, base_url: {:?}, health: {{enabled: false}}, model_map: {{\"claude-3.5-sonnet\": \"claude-sonnet-4.5\"}}}}\n", a.base_url());
    let h = start(&config(
        &[up],
        "{name: chat, models: ['claude-*', 'gpt-4.1'], primary: a}",
    ))
    .await;
    let body = r#"{"model":"claude-3.5-sonnet","messages":[{"role":"user","content":"hi","model":"keep"}],"custom_field":{"deep":[1,2]}}"#;
    let rsp = h.post("/v1/chat/completions", body).await;
    assert_eq!(rsp.status(), 200);
    let v = json(rsp).await;
    assert_eq!(
        v["model"], "claude-sonnet-4.5",
        "the response's model is the upstream's"
    );
    let seen = a.last_request().unwrap();
    assert_eq!(
        std::str::from_utf8(&seen.body).unwrap(),
        body.replace("\"claude-3.5-sonnet\"", "\"claude-sonnet-4.5\"")
    );
    // Unknown model: 404 without any upstream call.
    let before = a.stats().chat;
    let rsp = h
        .post(
            "/v1/chat/completions",
            r#"{"model":"llama-3","messages":[]}"#,
        )
        .await;
    assert_eq!(rsp.status(), 404);
    assert_eq!(rsp.headers()["x-turnout-attempts"], "0");
    assert_openai_error(&json(rsp).await, "model_not_found");
    assert_eq!(a.stats().chat, before);
}

#[tokio::test]
async fn upstream_sees_its_own_key_and_never_the_clients() {
    let a = mock("a").await;
    let up = format!(
        "  - {{name: a, base_url: {:?}, api_key_env: UP_KEY, health: {{enabled: false}}}}\n",
        a.base_url()
    );
    let yaml = config(&[up], "{name: chat, models: ['*'], primary: a}").replace(
        "auth: {disabled: true}",
        "auth: {keys: [{name: team-a, key_env: CLIENT_KEY}]}",
    );
    let secrets = Secrets {
        client_keys: vec![Secret("client-secret".into())],
        upstream_keys: vec![Some(Secret("upstream-secret".into()))],
        ..secrets()
    };
    let h = start_with(&yaml, secrets, temp_state()).await;
    let rsp = h
        .http
        .post(format!("{}/v1/chat/completions", h.url))
        .bearer_auth("client-secret")
        .header("x-api-key", "client-secret")
        .header("cookie", "session=1")
        .header("openai-beta", "x")
        .body(r#"{"model":"gpt-4.1","messages":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    let seen = a.last_request().unwrap();
    assert_eq!(seen.headers["authorization"], "Bearer upstream-secret");
    for (k, v) in &seen.headers {
        assert!(
            !v.as_bytes().windows(13).any(|w| w == b"client-secret"),
            "client key leaked in {k}"
        );
    }
    assert!(seen.headers.get("cookie").is_none() && seen.headers.get("x-api-key").is_none());
    assert_eq!(seen.headers["openai-beta"], "x");

    // Wrong or missing key: 401, OpenAI-shaped.
    for auth in [Some("nope"), None] {
        let mut rb = h
            .http
            .post(format!("{}/v1/chat/completions", h.url))
            .body(r#"{"model":"gpt-4.1"}"#);
        if let Some(k) = auth {
            rb = rb.bearer_auth(k);
        }
        let rsp = rb.send().await.unwrap();
        assert_eq!(rsp.status(), 401);
        assert_eq!(rsp.headers()["x-turnout-attempts"], "0");
        assert_openai_error(&json(rsp).await, "invalid_api_key");
    }
}

#[tokio::test]
async fn bad_requests_get_openai_shaped_errors_and_the_server_keeps_serving() {
    let a = mock("a").await;
    let yaml = config(
        &[upstream("a", &a, "")],
        "{name: chat, models: ['*'], primary: a}",
    )
    .replace(
        "listen: 127.0.0.1:0\n",
        "listen: 127.0.0.1:0\nmax_body_bytes: 1000\n",
    );
    let h = start(&yaml).await;
    let cases: Vec<(reqwest::Body, u16, &str)> = vec![
        ("{not json".into(), 400, "invalid_request"),
        (
            vec![b'{', b'"', 0xff, 0xfe, b'"', b'}'].into(),
            400,
            "invalid_request",
        ),
        (r#"{"model":42}"#.into(), 400, "invalid_request"),
        (
            format!(r#"{{"model":"gpt-4.1","pad":"{}"}}"#, "x".repeat(2000)).into(),
            413,
            "request_too_large",
        ),
    ];
    for (body, status, code) in cases {
        let rsp = h.post("/v1/chat/completions", body).await;
        assert_eq!(rsp.status().as_u16(), status);
        assert!(rsp.headers().contains_key("x-turnout-attempts"));
        assert_openai_error(&json(rsp).await, code);
    }
    // Unknown path and wrong method are OpenAI-shaped too.
    let rsp = h.http.get(format!("{}/nope", h.url)).send().await.unwrap();
    assert_eq!(rsp.status(), 404);
    assert_openai_error(&json(rsp).await, "not_found");
    assert_eq!(a.stats().chat, 0, "no bad request reached the upstream");
    assert_eq!(h.chat("u").await.status(), 200);
}

#[tokio::test]
async fn client_rate_limit_gives_429_with_retry_after() {
    let a = mock("a").await;
    let yaml = config(
        &[upstream("a", &a, "")],
        "{name: chat, models: ['*'], primary: a}",
    )
    .replace(
        "auth: {disabled: true}",
        "auth: {keys: [{name: small, key_env: K, rpm: 2}]}",
    );
    let secrets = Secrets {
        client_keys: vec![Secret("k1".into())],
        upstream_keys: vec![None],
        ..secrets()
    };
    let h = start_with(&yaml, secrets, temp_state()).await;
    let send = || {
        h.http
            .post(format!("{}/v1/chat/completions", h.url))
            .bearer_auth("k1")
            .body(r#"{"model":"gpt-4.1","messages":[]}"#)
            .send()
    };
    assert_eq!(send().await.unwrap().status(), 200);
    assert_eq!(send().await.unwrap().status(), 200);
    let rsp = send().await.unwrap();
    assert_eq!(rsp.status(), 429);
    let secs: u64 = rsp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(secs >= 1);
    assert_openai_error(&json(rsp).await, "rate_limit_exceeded");
    let acct: serde_json::Value = h
        .http
        .get(format!("{}/v1/account", h.url))
        .bearer_auth("k1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(acct["name"], "small");
    assert_eq!(acct["usage"]["requests"], 2);
}

#[tokio::test]
async fn client_hang_up_drops_the_upstream_request() {
    let a = mock("a").await;
    let h = start(&config(
        &[upstream("a", &a, "")],
        "{name: chat, models: ['*'], primary: a}",
    ))
    .await;
    // Non-streaming: the upstream is still "generating" (10 s latency) when the client leaves.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let r = client
        .post(format!("{}/v1/chat/completions", h.url))
        .header("x-mock-latency", "10s")
        .body(r#"{"model":"gpt-4.1","messages":[]}"#)
        .send()
        .await;
    assert!(r.is_err());
    eventually(
        "upstream saw the non-stream disconnect",
        Duration::from_secs(5),
        || async { a.stats().disconnects >= 1 },
    )
    .await;
    // Streaming: the client reads the first event and hangs up mid-stream.
    let mut rsp = h
        .http
        .post(format!("{}/v1/chat/completions", h.url))
        .header("x-mock-chunk-delay", "200ms")
        .header("x-mock-chunks", "50")
        .body(r#"{"model":"gpt-4.1","stream":true,"messages":[]}"#)
        .send()
        .await
        .unwrap();
    assert!(rsp.chunk().await.unwrap().is_some());
    drop(rsp);
    eventually(
        "upstream saw the stream disconnect",
        Duration::from_secs(5),
        || async { a.stats().disconnects >= 2 },
    )
    .await;
}

#[tokio::test]
async fn models_health_and_ready() {
    let a = mock("a").await;
    let up = format!("  - {{name: a, base_url: {:?}, health: {{interval: 100ms, timeout: 100ms}}, model_map: {{\"my-alias\": \"gpt-4.1\"}}}}\n", a.base_url());
    let h = start(&config(
        &[up],
        "{name: chat, models: ['gpt-*', 'literal-model'], primary: a}",
    ))
    .await;
    eventually(
        "models learned from the upstream",
        Duration::from_secs(5),
        || async {
            let v: serde_json::Value = h
                .http
                .get(format!("{}/v1/models", h.url))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let ids: Vec<&str> = v["data"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|m| m["id"].as_str())
                .collect();
            v["object"] == "list"
                && ids.contains(&"gpt-4.1")
                && ids.contains(&"gpt-4o-mini")
                && ids.contains(&"literal-model")
                && ids.contains(&"my-alias")
                && !ids.contains(&"claude-sonnet-4.5")
        },
    )
    .await;
    assert_eq!(
        h.http
            .get(format!("{}/health", h.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        h.http
            .get(format!("{}/ready", h.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn embeddings_are_proxied_like_chat() {
    let a = mock("a").await;
    let h = start(&config(
        &[upstream("a", &a, "")],
        "{name: all, models: ['*'], primary: a}",
    ))
    .await;
    let rsp = h
        .post(
            "/v1/embeddings",
            r#"{"model":"text-embedding-3-small","input":["a","b"]}"#,
        )
        .await;
    assert_eq!(rsp.status(), 200);
    assert_eq!(rsp.headers()["x-turnout-upstream"], "a");
    let v = json(rsp).await;
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(a.last_request().unwrap().path, "/v1/embeddings");
}
