//! `/v1/ws/chat` with a real WebSocket client against an in-process proxy
//! and mock providers (PRODUCT.md §3.5).

mod ws_support;

use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use turnout::mock::{Fault, FaultScope, MockSettings};
use ws_support::*;

fn chat(id: &str, text: &str) -> serde_json::Value {
    json!({"id": id, "model": "gpt-4.1", "messages": [{"role": "user", "content": text}]})
}

#[tokio::test]
async fn a_request_gets_deltas_then_done_with_its_id_and_the_full_text() {
    let h = Harness::start(Opts::default()).await;
    let mut ws = h.connect("", &[]).await;
    let mut req = chat("r1", "Giải thích WebSocket streaming là gì?");
    req["temperature"] = json!(0.2);
    send(&mut ws, req).await;
    let r = reply(&mut ws, "r1").await;
    assert_eq!(r.text, answer("primary", 8));
    assert!(r.deltas > 1, "{r:?}");
    assert_eq!(r.last["type"], "done");
    assert_eq!(r.last["finish_reason"], "stop");
    assert_eq!(r.last["usage"]["completion_tokens"], 8);
    let sent = last_body(&h.primary);
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["stream_options"]["include_usage"], true);
    assert_eq!(sent["temperature"], 0.2);
    assert!(sent.get("id").is_none() && sent.get("type").is_none());
    let m = h.metrics();
    assert!(
        m.contains(
            r#"turnout_requests_total{code="200",route="chat",transport="ws",upstream="primary"} 1"#
        ),
        "{m}"
    );
}

#[tokio::test]
async fn a_request_without_id_gets_one_from_the_server() {
    let h = Harness::start(Opts::default()).await;
    let mut ws = h.connect("", &[]).await;
    // As the seed articles' clients send it.
    send(&mut ws, json!({"model": "gpt-4.1", "messages": [{"role": "user", "content": "Hello AI!"}], "stream": true})).await;
    let first = next_json(&mut ws).await;
    let id = first["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("ws-"), "{first}");
    let r = reply(&mut ws, &id).await;
    assert_eq!(r.last["type"], "done");
    assert_eq!(r.last["done"], true);
}

#[tokio::test]
async fn a_bad_or_missing_key_is_closed_with_4001_and_a_good_one_is_served() {
    let h = Harness::start(Opts {
        keyed: true,
        ..Opts::default()
    })
    .await;
    let mut ws = h.connect("", &[]).await;
    assert_eq!(close_code(&mut ws).await, 4001);
    let mut ws = h.connect("token=wrong", &[]).await;
    assert_eq!(close_code(&mut ws).await, 4001);
    let mut ws = h.connect("", &[("authorization", "Bearer wrong")]).await;
    assert_eq!(close_code(&mut ws).await, 4001);
    assert_eq!(h.primary.stats().chat, 0);

    let mut ws = h.connect(&format!("token={KEY}"), &[]).await;
    send(&mut ws, chat("q", "hi")).await;
    assert_eq!(reply(&mut ws, "q").await.last["type"], "done");
    let mut ws = h.connect("", &[("authorization", "Bearer k")]).await;
    send(&mut ws, chat("h", "hi")).await;
    assert_eq!(reply(&mut ws, "h").await.last["type"], "done");
    // The client's key never reaches the upstream.
    let auth = h
        .primary
        .last_request()
        .unwrap()
        .headers
        .get("authorization")
        .cloned();
    assert!(auth.is_none(), "{auth:?}");
}

#[tokio::test]
async fn two_interleaved_ids_on_one_socket_both_complete() {
    let h = Harness::start(Opts::default()).await;
    let mut ws = h.connect("", &[("x-mock-chunk-delay", "20ms")]).await;
    send(&mut ws, chat("a", "one")).await;
    send(&mut ws, chat("b", "two")).await;
    let (mut text, mut order) = (std::collections::HashMap::new(), Vec::new());
    let mut done = 0;
    while done < 2 {
        let m = next_json(&mut ws).await;
        let id = m["id"].as_str().unwrap().to_owned();
        order.push(id.clone());
        match m["type"].as_str().unwrap() {
            "delta" => text
                .entry(id)
                .or_insert_with(String::new)
                .push_str(m["content"].as_str().unwrap()),
            "done" => done += 1,
            other => panic!("unexpected {other}: {m}"),
        }
    }
    assert_eq!(text["a"], answer("primary", 8));
    assert_eq!(text["b"], answer("primary", 8));
    let last_a = order.iter().rposition(|i| i == "a").unwrap();
    let first_b = order.iter().position(|i| i == "b").unwrap();
    assert!(first_b < last_a, "not interleaved: {order:?}");
}

#[tokio::test]
async fn messages_keep_the_conversation_and_clear_resets_it() {
    let h = Harness::start(Opts::default()).await;
    let mut ws = h.connect("model=gpt-4.1", &[]).await;
    send(
        &mut ws,
        json!({"type": "message", "content": "Xin chào", "id": "m1"}),
    )
    .await;
    let first = reply(&mut ws, "m1").await;
    assert_eq!(first.last["type"], "done");
    send(
        &mut ws,
        json!({"type": "message", "content": "Tiếp tục", "id": "m2"}),
    )
    .await;
    reply(&mut ws, "m2").await;
    let sent = last_body(&h.primary);
    assert_eq!(sent["model"], "gpt-4.1");
    assert_eq!(
        sent["messages"],
        json!([
            {"role": "user", "content": "Xin chào"},
            {"role": "assistant", "content": first.text},
            {"role": "user", "content": "Tiếp tục"},
        ])
    );
    send(&mut ws, json!({"type": "clear"})).await;
    send(
        &mut ws,
        json!({"type": "message", "content": "Lại từ đầu", "id": "m3"}),
    )
    .await;
    reply(&mut ws, "m3").await;
    assert_eq!(
        last_body(&h.primary)["messages"],
        json!([{"role": "user", "content": "Lại từ đầu"}])
    );
}

#[tokio::test]
async fn cancel_drops_the_upstream_request_and_ends_with_cancelled() {
    let primary = MockSettings {
        chunks: 400,
        chunk_delay: std::time::Duration::from_millis(20),
        ..mock("primary")
    };
    let h = Harness::start(Opts {
        primary,
        ..Opts::default()
    })
    .await;
    let mut ws = h.connect("", &[]).await;
    send(&mut ws, chat("long", "write a novel")).await;
    assert_eq!(next_json(&mut ws).await["type"], "delta");
    send(&mut ws, json!({"type": "cancel", "id": "long"})).await;
    let r = reply(&mut ws, "long").await;
    assert_eq!(
        (r.last["type"].as_str(), r.last["finish_reason"].as_str()),
        (Some("done"), Some("cancelled"))
    );
    eventually("the upstream to see the disconnect", || {
        h.primary.stats().disconnects == 1
    })
    .await;
    // The socket goes on serving.
    send(
        &mut ws,
        json!({"id": "next", "model": "gpt-4.1", "messages": [], "max_tokens": 5}),
    )
    .await;
    let m = next_json(&mut ws).await;
    assert_eq!(m["id"], "next");
    send(&mut ws, json!({"type": "cancel", "id": "next"})).await;
    assert_eq!(
        reply(&mut ws, "next").await.last["finish_reason"],
        "cancelled"
    );
}

#[tokio::test]
async fn closing_the_socket_cancels_its_upstream_requests() {
    let primary = MockSettings {
        chunks: 400,
        chunk_delay: std::time::Duration::from_millis(20),
        ..mock("primary")
    };
    let h = Harness::start(Opts {
        primary,
        ..Opts::default()
    })
    .await;
    let mut ws = h.connect("", &[]).await;
    send(&mut ws, chat("x", "long")).await;
    assert_eq!(next_json(&mut ws).await["type"], "delta");
    ws.close(None).await.unwrap();
    eventually("the upstream to see the disconnect", || {
        h.primary.stats().disconnects == 1
    })
    .await;
    eventually("the connection gauge to drop", || {
        h.proxy.state.metrics.ws_connections.get() == 0
    })
    .await;
}

#[tokio::test]
async fn an_upstream_failing_before_the_first_delta_is_replaced_invisibly() {
    // One attempt each: the retry on the same upstream (default 1) has its
    // own test in tests/rescue.rs.
    let h = Harness::start(Opts {
        failover: "{same_upstream_retries: 0}",
        ..Opts::default()
    })
    .await;
    h.primary.set_fault(
        FaultScope::Chat,
        Some(Fault::Status {
            code: 503,
            retry_after: None,
        }),
    );
    let mut ws = h.connect("", &[]).await;
    send(&mut ws, chat("r", "hi")).await;
    let r = reply(&mut ws, "r").await;
    assert_eq!(r.last["type"], "done", "{r:?}");
    assert_eq!(r.text, answer("fallback", 8));
    assert_eq!((h.primary.stats().chat, h.fallback.stats().chat), (1, 1));
}

#[tokio::test]
async fn a_failure_after_the_first_delta_ends_with_an_error_never_a_done() {
    let h = Harness::start(Opts::default()).await;
    let mut ws = h.connect("", &[("x-mock-fault", "reset=3")]).await;
    send(&mut ws, chat("r", "hi")).await;
    let r = reply(&mut ws, "r").await;
    assert!(r.deltas >= 1, "{r:?}");
    assert_eq!(r.last["type"], "error");
    assert_eq!(r.last["error"]["code"], "stream_interrupted");
    assert_eq!(
        h.fallback.stats().chat,
        0,
        "no failover after the first delta"
    );
    // Nothing follows for that id: the next reply belongs to the next request.
    send(&mut ws, json!({"id": "after", "messages": []})).await;
    let m = next_json(&mut ws).await;
    assert_eq!(
        (m["id"].as_str(), m["error"]["param"].as_str()),
        (Some("after"), Some("model"))
    );
}

#[tokio::test]
async fn a_stream_longer_than_the_total_timeout_ends_with_an_error() {
    // Chunks come every 50 ms, far inside `idle` (10 s), but the whole answer
    // takes about 6 s, far past `total` (500 ms): only `total` can end it.
    let (chunks, gap) = (120, std::time::Duration::from_millis(50));
    let natural = gap * chunks;
    let primary = MockSettings {
        chunks,
        chunk_delay: gap,
        ..mock("primary")
    };
    let h = Harness::start(Opts {
        primary,
        timeouts: "{total: 500ms, idle: 10s}",
        ..Opts::default()
    })
    .await;
    let mut ws = h.connect("", &[]).await;
    let started = std::time::Instant::now();
    send(&mut ws, chat("long", "write a novel")).await;
    let r = reply(&mut ws, "long").await;
    let took = started.elapsed();
    let seen = format!("after {took:?} and {} deltas: {}", r.deltas, r.last);
    assert_eq!(r.last["type"], "error", "{seen}");
    assert_eq!(r.last["error"]["code"], "stream_interrupted", "{seen}");
    let msg = r.last["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("total timeout"), "{seen}");
    assert!(r.deltas >= 1, "the stream had not committed: {seen}");
    // Not a speed check: a stream left to its natural end would take `natural`.
    assert!(
        took < natural / 2,
        "not cut short ({natural:?} in full): {seen}"
    );
    assert_eq!(
        h.fallback.stats().chat,
        0,
        "no failover after the first delta"
    );
    eventually("the upstream to see the disconnect", || {
        h.primary.stats().disconnects == 1
    })
    .await;
    eventually("a total_timeout stream error for primary", || {
        let labels = [r#"reason="total_timeout""#, r#"upstream="primary""#];
        metric_sum(&h.metrics(), "turnout_stream_errors_total", &labels) == 1.0
    })
    .await;
    // Exactly one final message: the next reply belongs to the next request.
    send(&mut ws, json!({"id": "after", "messages": []})).await;
    let m = next_json(&mut ws).await;
    assert_eq!(
        (m["id"].as_str(), m["error"]["param"].as_str()),
        (Some("after"), Some("model"))
    );
}

#[tokio::test]
async fn an_oversized_frame_closes_with_1009() {
    let h = Harness::start(Opts {
        websocket: "{max_message_bytes: 65536}",
        ..Opts::default()
    })
    .await;
    let mut ws = h.connect("", &[]).await;
    let big = chat("big", &"x".repeat(100_000));
    let _ = ws.send(Message::text(big.to_string())).await;
    assert_eq!(close_code(&mut ws).await, 1009);
    assert_eq!(h.primary.stats().chat, 0);
    // The default limit is 1 MiB.
    let h = Harness::start(Opts::default()).await;
    let mut ws = h.connect("", &[]).await;
    let _ = ws.send(Message::text("x".repeat(1024 * 1024 + 1))).await;
    assert_eq!(close_code(&mut ws).await, 1009);
}

#[tokio::test]
async fn a_bad_frame_gets_an_error_and_the_socket_still_answers() {
    let h = Harness::start(Opts::default()).await;
    let mut ws = h.connect("", &[]).await;
    ws.send(Message::text("this is not json")).await.unwrap();
    let e = next_json(&mut ws).await;
    assert_eq!(
        (e["type"].as_str(), e["error"]["code"].as_str()),
        (Some("error"), Some("invalid_json"))
    );
    assert!(e["id"].is_string(), "{e}");
    send(&mut ws, json!({"type": "dance", "id": "d"})).await;
    let e = next_json(&mut ws).await;
    assert_eq!(
        (e["id"].as_str(), e["error"]["code"].as_str()),
        (Some("d"), Some("unknown_type"))
    );
    send(&mut ws, json!({"id": "m", "model": "gpt-4.1"})).await;
    assert_eq!(next_json(&mut ws).await["error"]["param"], "messages");
    send(&mut ws, json!({"type": "message", "id": "c"})).await;
    assert_eq!(next_json(&mut ws).await["error"]["param"], "content");
    send(&mut ws, chat("ok", "still there?")).await;
    assert_eq!(reply(&mut ws, "ok").await.last["type"], "done");
}

#[tokio::test]
async fn requests_beyond_max_in_flight_get_an_error() {
    let primary = MockSettings {
        chunks: 400,
        chunk_delay: std::time::Duration::from_millis(20),
        ..mock("primary")
    };
    let h = Harness::start(Opts {
        primary,
        websocket: "{max_in_flight: 1}",
        ..Opts::default()
    })
    .await;
    let mut ws = h.connect("", &[]).await;
    send(&mut ws, chat("a", "long")).await;
    send(&mut ws, chat("b", "refused")).await;
    loop {
        let m = next_json(&mut ws).await;
        if m["id"] == "b" {
            assert_eq!(m["error"]["code"], "too_many_in_flight");
            break;
        }
        assert_eq!(
            (m["id"].as_str(), m["type"].as_str()),
            (Some("a"), Some("delta"))
        );
    }
    send(&mut ws, json!({"type": "cancel", "id": "a"})).await;
    assert_eq!(reply(&mut ws, "a").await.last["finish_reason"], "cancelled");
}

#[tokio::test]
async fn a_peer_that_never_answers_pings_is_closed() {
    let h = Harness::start(Opts {
        websocket: "{ping_interval: 100ms}",
        ..Opts::default()
    })
    .await;
    // The client is never polled, so it never answers the server's pings.
    let mut ws = h.connect("", &[]).await;
    eventually("the socket to be served", || {
        h.proxy.state.metrics.ws_connections.get() == 1
    })
    .await;
    eventually("the server to drop the peer", || {
        h.proxy.state.metrics.ws_connections.get() == 0
    })
    .await;
    // Pings then a 1001 close were sent; the client, answering a ping on a
    // socket closed at the other end, may hit a broken pipe before the close.
    let mut pings = 0;
    let code = loop {
        match tokio::time::timeout(DEADLINE, futures_util::StreamExt::next(&mut ws))
            .await
            .unwrap()
        {
            Some(Ok(Message::Ping(_))) => pings += 1,
            Some(Ok(Message::Close(Some(f)))) => break Some(u16::from(f.code)),
            Some(Err(_)) | None => break None,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(
        pings >= 1 && matches!(code, None | Some(1001)),
        "{pings} pings, close {code:?}"
    );
}

#[tokio::test]
async fn plain_http_on_the_socket_path_gets_an_openai_shaped_error() {
    let h = Harness::start(Opts::default()).await;
    let url = format!("http://{}/v1/ws/chat", h.proxy.addr);
    let client = reqwest::Client::new();
    for rsp in [
        client.get(&url).send().await.unwrap(),
        client.post(&url).send().await.unwrap(),
    ] {
        assert!(rsp.status().is_client_error(), "{}", rsp.status());
        let body: serde_json::Value = serde_json::from_slice(&rsp.bytes().await.unwrap()).unwrap();
        assert!(body["error"]["code"].is_string(), "{body}");
    }
}

#[tokio::test]
async fn a_browser_message_without_model_uses_the_configured_default_model() {
    let h = Harness::start(Opts {
        websocket: "{default_model: claude-sonnet-4.5}",
        ..Opts::default()
    })
    .await;
    let mut ws = h.connect("", &[]).await;
    send(
        &mut ws,
        json!({"type": "message", "content": "hi", "id": "m1"}),
    )
    .await;
    let r = reply(&mut ws, "m1").await;
    assert_eq!(r.last["type"], "done", "{:?}", r.last);
    assert_eq!(last_body(&h.primary)["model"], "claude-sonnet-4.5");
    // `?model=` wins over the config's default.
    let mut ws = h.connect("model=gpt-4.1", &[]).await;
    send(
        &mut ws,
        json!({"type": "message", "content": "hi", "id": "m2"}),
    )
    .await;
    reply(&mut ws, "m2").await;
    assert_eq!(last_body(&h.primary)["model"], "gpt-4.1");
}
