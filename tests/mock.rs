//! The simulated provider over real HTTP: endpoints and normal answers.
//! Faults, kill and disconnect counting are in `mock_faults.rs`.

mod mock_common;

use mock_common::{client, json_of, BoxErr, JsonBody};

use serde_json::{json, Value};
use turnout::mock::{MockServer, MockSettings};

type Res = Result<(), BoxErr>;

async fn mock(name: &str) -> std::io::Result<MockServer> {
    let settings = MockSettings {
        name: name.to_owned(),
        ..MockSettings::default()
    };
    MockServer::start(settings).await
}

/// The `data:` payloads of an SSE body.
fn events(text: &str) -> Vec<&str> {
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .collect()
}

#[tokio::test]
async fn lists_models_and_names_itself() -> Res {
    let m = mock("alpha").await?;
    let resp = client()?
        .get(format!("{}/models", m.base_url()))
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-mock-name"], "alpha");
    let v: Value = json_of(resp).await?;
    assert_eq!(v["object"], "list");
    let ids: Vec<_> = v["data"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| m["id"].clone())
        .collect();
    assert_eq!(
        ids,
        [
            "gpt-4.1",
            "gpt-4o-mini",
            "claude-sonnet-4.5",
            "text-embedding-3-small"
        ]
    );
    assert_eq!(v["data"][0]["owned_by"], "turnout-mock");
    assert_eq!(m.stats().models, 1);
    Ok(())
}

#[tokio::test]
async fn chat_non_stream_shape_usage_and_recording() -> Res {
    let m = mock("alpha").await?;
    let body = json!({"model": "gpt-x", "messages": [{"role": "user", "content": "abcdefgh"}]});
    let url = format!("{}/chat/completions", m.base_url());
    let resp = client()?
        .post(&url)
        .header("x-trace", "t1")
        .json_body(&body)
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    let v: Value = json_of(resp).await?;
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "gpt-x");
    assert_eq!(v["system_fingerprint"], "alpha");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let content = v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default();
    assert!(content.starts_with("Hello from alpha. "), "{content}");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 3, "completion_tokens": 8, "total_tokens": 11})
    );
    let rec = m.last_request().ok_or("no recorded request")?;
    assert_eq!(rec.path, "/v1/chat/completions");
    assert_eq!(rec.headers["x-trace"], "t1");
    assert_eq!(serde_json::from_slice::<Value>(&rec.body)?, body);
    let st = m.stats();
    assert_eq!(
        (st.requests, st.chat, st.completed, st.disconnects),
        (1, 1, 1, 0)
    );
    Ok(())
}

async fn stream_text(
    m: &MockServer,
    extra: &[(&str, &str)],
    usage: bool,
) -> Result<String, BoxErr> {
    let body = json!({"model": "m1", "stream": true, "stream_options": {"include_usage": usage},
        "messages": [{"role": "user", "content": [{"type": "text", "text": "abcd"}]}]});
    let mut req = client()?
        .post(format!("{}/chat/completions", m.base_url()))
        .json_body(&body);
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let resp = req.send().await?;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    Ok(resp.text().await?)
}

#[tokio::test]
async fn chat_stream_chunks_usage_and_done() -> Res {
    let m = mock("beta").await?;
    let plain = client()?
        .post(format!("{}/chat/completions", m.base_url()))
        .json_body(&json!({"model": "m1", "messages": []}))
        .send()
        .await?;
    let plain = json_of(plain).await?;
    // Timed (one event per write) and untimed (one write) must agree.
    for extra in [
        &[][..],
        &[("x-mock-chunk-delay", "1ms"), ("x-mock-ttft", "2ms")][..],
    ] {
        let text = stream_text(&m, extra, true).await?;
        let ev = events(&text);
        // A role-only preamble, 8 content chunks, the finish, usage, [DONE].
        assert_eq!(ev.len(), 1 + 8 + 3, "{text}");
        assert_eq!(ev[11], "[DONE]");
        let chunks: Vec<Value> = ev[..11]
            .iter()
            .map(|e| serde_json::from_str(e))
            .collect::<Result<_, _>>()?;
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(chunks[0]["choices"][0]["delta"]["content"], "");
        assert_eq!(chunks[0]["object"], "chat.completion.chunk");
        assert_eq!(chunks[0]["model"], "m1");
        let joined: String = chunks[1..9]
            .iter()
            .map(|c| {
                c["choices"][0]["delta"]["content"]
                    .as_str()
                    .unwrap_or("?")
                    .to_owned()
            })
            .collect();
        assert_eq!(
            Value::String(joined),
            plain["choices"][0]["message"]["content"]
        );
        assert_eq!(chunks[9]["choices"][0]["finish_reason"], "stop");
        assert_eq!(chunks[9]["choices"][0]["delta"], json!({}));
        assert_eq!(chunks[10]["choices"], json!([]));
        assert_eq!(
            chunks[10]["usage"],
            json!({"prompt_tokens": 2, "completion_tokens": 8, "total_tokens": 10})
        );
    }
    let text = stream_text(&m, &[("x-mock-chunks", "2")], false).await?;
    assert_eq!(
        events(&text).len(),
        1 + 2 + 2,
        "no usage chunk without include_usage"
    );
    assert_eq!(m.stats().completed, 4);
    Ok(())
}

#[tokio::test]
async fn embeddings_and_completions() -> Res {
    let m = mock("gamma").await?;
    let c = client()?;
    let url = format!("{}/embeddings", m.base_url());
    let one: Value = json_of(
        c.post(&url)
            .json_body(&json!({"model": "e", "input": "hi"}))
            .send()
            .await?,
    )
    .await?;
    let two: Value = json_of(
        c.post(&url)
            .json_body(&json!({"model": "e", "input": ["hi", "yo"]}))
            .send()
            .await?,
    )
    .await?;
    assert_eq!(one["object"], "list");
    assert_eq!(one["model"], "e");
    assert_eq!(
        one["data"][0]["embedding"], two["data"][0]["embedding"],
        "deterministic"
    );
    assert_ne!(two["data"][0]["embedding"], two["data"][1]["embedding"]);
    assert_eq!(two["data"][1]["index"], 1);
    assert!(two["usage"]["prompt_tokens"].as_u64() > Some(0));
    let url = format!("{}/completions", m.base_url());
    let t: Value = json_of(
        c.post(&url)
            .json_body(&json!({"model": "t", "prompt": "hi"}))
            .send()
            .await?,
    )
    .await?;
    assert_eq!(t["object"], "text_completion");
    assert!(t["choices"][0]["text"]
        .as_str()
        .is_some_and(|s| s.starts_with("Hello from gamma")));
    assert_eq!(m.stats().embeddings, 2);
    Ok(())
}

#[tokio::test]
async fn unknown_path_and_bad_input_are_openai_errors() -> Res {
    let m = mock("delta").await?;
    let c = client()?;
    let resp = c.get(format!("{}/nope", m.base_url())).send().await?;
    assert_eq!(resp.status(), 404);
    let v: Value = json_of(resp).await?;
    assert_eq!(v["error"]["code"], "not_found");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["param"], Value::Null);
    let url = format!("{}/chat/completions", m.base_url());
    let resp = c.post(&url).body("{not json").send().await?;
    assert_eq!(resp.status(), 400);
    let resp = c
        .post(&url)
        .header("x-mock-fault", "explode")
        .body("{}")
        .send()
        .await?;
    assert_eq!(resp.status(), 400);
    let resp = c
        .post(&url)
        .header("x-mock-latency", "soon")
        .body("{}")
        .send()
        .await?;
    assert_eq!(resp.status(), 400);
    Ok(())
}

#[tokio::test]
async fn control_endpoints() -> Res {
    let m = mock("eps").await?;
    let c = client()?;
    let root = format!("http://{}", m.addr());
    let put = |body: Value| c.put(format!("{root}/mock/fault")).json_body(&body).send();
    let resp =
        put(json!({"scope": "models", "fault": {"status": {"code": 503, "retry_after": 2}}}))
            .await?;
    assert_eq!(resp.status(), 204);
    let resp = c.get(format!("{}/models", m.base_url())).send().await?;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "2");
    assert_eq!(
        put(json!({"scope": "models", "fault": null}))
            .await?
            .status(),
        204
    );
    assert_eq!(
        c.get(format!("{}/models", m.base_url()))
            .send()
            .await?
            .status(),
        200
    );
    let st = json_of(c.get(format!("{root}/mock/stats")).send().await?).await?;
    assert_eq!(st["models"], 2);
    assert_eq!(st["requests"], 5, "stats counts itself");
    Ok(())
}
