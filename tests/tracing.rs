//! Request tracing (PRODUCT.md §3.11): spans arrive as OTLP/HTTP protobuf at
//! a loopback collector, with the client's trace continued, attempts as
//! children of the request, the GenAI attributes, and `traceparent` sent to
//! the upstream; with tracing off, nothing of the client's trace goes
//! upstream.
#![expect(clippy::expect_used, reason = "a failed step is a failed test")]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::json;
use turnout::mock::{Fault, FaultScope};

const CLIENT_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CLIENT_SPAN: &str = "b7ad6b7169203331";

type Spans = Arc<Mutex<Vec<Span>>>;

/// A loopback OTLP/HTTP collector: `POST /v1/traces` with a protobuf body.
async fn collector() -> (String, Spans) {
    let got: Spans = Default::default();
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let sink = sink.clone();
                async move {
                    assert_eq!(headers["content-type"], "application/x-protobuf");
                    let req = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                    for rs in req.resource_spans {
                        let service = rs
                            .resource
                            .iter()
                            .flat_map(|r| &r.attributes)
                            .find(|a| a.key == "service.name")
                            .and_then(|a| a.value.clone());
                        assert!(matches!(
                            service.and_then(|v| v.value),
                            Some(AnyValue::StringValue(s)) if s == "turnout"
                        ));
                        for ss in rs.scope_spans {
                            sink.lock().expect("lock").extend(ss.spans);
                        }
                    }
                    (
                        [("content-type", "application/x-protobuf")],
                        ExportTraceServiceResponse::default().encode_to_vec(),
                    )
                }
            },
        ),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", l.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(l, app).await });
    (url, got)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn attrs(s: &Span) -> HashMap<String, serde_json::Value> {
    s.attributes
        .iter()
        .filter_map(|kv| {
            let v = match kv.value.as_ref()?.value.as_ref()? {
                AnyValue::StringValue(s) => json!(s),
                AnyValue::IntValue(i) => json!(i),
                AnyValue::BoolValue(b) => json!(b),
                AnyValue::DoubleValue(d) => json!(d),
                _ => return None,
            };
            Some((kv.key.clone(), v))
        })
        .collect()
}

async fn traced(
    collector_url: &str,
) -> (
    Harness,
    turnout::mock::MockServer,
    turnout::mock::MockServer,
) {
    let (a, b) = (mock("openai").await, mock("relay").await);
    let yaml = format!(
        "{}otel: {{endpoint_env: TEST_OTLP_ENDPOINT, sample_ratio: 1.0}}\n",
        config(
            &[
                upstream("openai", &a, ""),
                upstream(
                    "relay",
                    &b,
                    "health: {enabled: false}, model_map: {gpt-4.1: relay-4.1}"
                ),
            ],
            r#"{name: chat, models: ["*"], primary: openai, fallbacks: [relay]}"#,
        )
    );
    let mut secrets = secrets();
    secrets.otel_endpoint = Some(turnout::config::Secret(collector_url.to_owned()));
    let h = start_with(&yaml, secrets, temp_state()).await;
    (h, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_over_request_is_one_trace_with_a_span_per_attempt() {
    let (url, spans) = collector().await;
    let (h, a, b) = traced(&url).await;
    a.set_fault(
        FaultScope::Chat,
        Some(Fault::Status {
            code: 503,
            retry_after: None,
        }),
    );
    let rsp = h
        .http
        .post(format!("{}/v1/chat/completions", h.url))
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
        .json(&json!({"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("request");
    assert_eq!(rsp.status(), 200);
    assert_eq!(rsp.headers()["x-turnout-upstream"], "relay");
    // Failed tries of the primary (how many is the walk's business), then the relay.
    let tries: usize = rsp.headers()["x-turnout-attempts"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("a number");
    assert!(tries >= 2);
    // The upstream got this trace, with the serving attempt as parent.
    let sent = b.last_request().expect("relay was called");
    let tp = sent.headers["traceparent"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(
        (parts[0], parts[1], parts[3]),
        ("00", CLIENT_TRACE, "01"),
        "{tp}"
    );

    h.proxy.shutdown().await; // flushes the exporter
    eventually(
        "a span per attempt and the request's",
        Duration::from_secs(20),
        || async { spans.lock().expect("lock").len() > tries },
    )
    .await;
    let spans = spans.lock().expect("lock").clone();
    assert_eq!(spans.len(), tries + 1, "{spans:#?}");
    for s in &spans {
        assert_eq!(hex(&s.trace_id), CLIENT_TRACE, "one trace, the client's");
    }
    let server: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Server as i32)
        .collect();
    assert_eq!(server.len(), 1);
    let req = server[0];
    assert_eq!(
        hex(&req.parent_span_id),
        CLIENT_SPAN,
        "continues the client's span"
    );
    assert_eq!(req.name, "chat gpt-4.1");
    let ra = attrs(req);
    assert_eq!(ra["gen_ai.operation.name"], "chat");
    assert_eq!(ra["gen_ai.provider.name"], "relay");
    assert_eq!(ra["gen_ai.request.model"], "gpt-4.1");
    assert_eq!(ra["gen_ai.response.model"], "relay-4.1");
    assert!(ra["gen_ai.usage.input_tokens"].as_i64() > Some(0), "{ra:?}");
    assert!(
        ra["gen_ai.usage.output_tokens"].as_i64() > Some(0),
        "{ra:?}"
    );
    assert_eq!(ra["http.response.status_code"], 200);
    assert_eq!(ra["turnout.attempts"], tries);

    let mut attempts: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Client as i32)
        .collect();
    attempts.sort_by_key(|s| s.start_time_unix_nano);
    assert_eq!(attempts.len(), spans.len() - 1);
    for s in &attempts {
        assert_eq!(
            s.parent_span_id, req.span_id,
            "an attempt is the request's child"
        );
    }
    let (failed, serving) = attempts.split_at(attempts.len() - 1);
    for (i, f) in failed.iter().enumerate() {
        let a = attrs(f);
        assert_eq!(a["gen_ai.provider.name"], "openai");
        assert_eq!(a["gen_ai.request.model"], "gpt-4.1");
        assert_eq!(a["error.type"], "http_5xx");
        assert_eq!(a["http.response.status_code"], 503);
        assert_eq!(a["turnout.attempt"], i + 1);
        assert_eq!(f.status.as_ref().map(|s| s.code), Some(2), "error status");
    }
    let second = attrs(serving[0]);
    assert_eq!(second["gen_ai.provider.name"], "relay");
    assert_eq!(
        second["gen_ai.request.model"], "relay-4.1",
        "the name the upstream was asked for"
    );
    assert_eq!(second["gen_ai.response.model"], "relay-4.1");
    assert_eq!(
        second["gen_ai.usage.input_tokens"],
        ra["gen_ai.usage.input_tokens"]
    );
    assert!(!second.contains_key("error.type"));
    // The upstream's traceparent names the serving attempt's span.
    assert_eq!(parts[2], hex(&serving[0].span_id));
    // Nothing of the conversation is in a span.
    let all = format!("{spans:?}");
    assert!(!all.contains("\"hi\"") && !all.contains("Hello from"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_without_client_trace_starts_one_and_counts_its_tokens() {
    let (url, spans) = collector().await;
    let (h, a, _b) = traced(&url).await;
    let rsp = h.chat_stream("u1").await;
    assert_eq!(rsp.status(), 200);
    let body = rsp.text().await.expect("body");
    assert!(body.contains("[DONE]"));
    let tp = a.last_request().expect("called").headers["traceparent"]
        .to_str()
        .expect("ascii")
        .to_owned();
    h.proxy.shutdown().await;
    eventually("two spans exported", Duration::from_secs(20), || async {
        spans.lock().expect("lock").len() >= 2
    })
    .await;
    let spans = spans.lock().expect("lock").clone();
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let req = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .expect("server span");
    let att = spans
        .iter()
        .find(|s| s.kind == SpanKind::Client as i32)
        .expect("client span");
    assert!(req.parent_span_id.is_empty(), "a new trace");
    assert_eq!(att.parent_span_id, req.span_id);
    assert_eq!(att.trace_id, req.trace_id);
    assert_eq!(
        tp,
        format!("00-{}-{}-01", hex(&req.trace_id), hex(&att.span_id))
    );
    let (ra, aa) = (attrs(req), attrs(att));
    assert_eq!(ra["gen_ai.provider.name"], "openai");
    assert_eq!(ra["gen_ai.response.model"], "gpt-4.1");
    assert!(
        aa["gen_ai.usage.output_tokens"].as_i64() > Some(0),
        "{aa:?}"
    );
    // The attempt of a stream lasts until the stream's end, within the request.
    assert!(att.end_time_unix_nano <= req.end_time_unix_nano);
    assert!(att.end_time_unix_nano > att.start_time_unix_nano);
}

#[tokio::test]
async fn with_tracing_off_no_trace_header_reaches_an_upstream() {
    let a = mock("openai").await;
    let h = start(&config(
        &[upstream("openai", &a, "")],
        r#"{name: chat, models: ["*"], primary: openai}"#,
    ))
    .await;
    let rsp = h
        .http
        .post(format!("{}/v1/chat/completions", h.url))
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
        .header("tracestate", "vendor=x")
        .json(&json!({"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("request");
    assert_eq!(rsp.status(), 200);
    let sent = a.last_request().expect("called");
    assert!(sent.headers.get("traceparent").is_none());
    assert!(sent.headers.get("tracestate").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_chat_request_is_traced_like_an_http_one() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (url, spans) = collector().await;
    let (h, _a, _b) = traced(&url).await;
    let ws_url = format!("ws://{}/v1/ws/chat", h.proxy.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url)
        .await
        .expect("connect");
    let req =
        json!({"id": "r1", "model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]});
    ws.send(Message::text(req.to_string())).await.expect("send");
    let done = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(Ok(m)) = ws.next().await {
            let Message::Text(t) = m else { continue };
            let v: serde_json::Value = serde_json::from_str(t.as_str()).expect("json");
            if v["type"] == "done" || v["type"] == "error" {
                return v;
            }
        }
        panic!("socket closed before done");
    })
    .await
    .expect("done in time");
    assert_eq!(done["type"], "done", "{done}");
    drop(ws);
    h.proxy.shutdown().await;
    eventually("two spans exported", Duration::from_secs(20), || async {
        spans.lock().expect("lock").len() >= 2
    })
    .await;
    let spans = spans.lock().expect("lock").clone();
    let req = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .expect("server span");
    let att = spans
        .iter()
        .find(|s| s.kind == SpanKind::Client as i32)
        .expect("client span");
    assert_eq!(att.parent_span_id, req.span_id);
    assert_eq!(req.name, "chat gpt-4.1");
    assert_eq!(attrs(req)["gen_ai.provider.name"], "openai");
    assert_eq!(attrs(att)["gen_ai.provider.name"], "openai");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_collector_never_fails_a_request_nor_holds_up_shutdown() {
    let closed = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        format!("http://{}", l.local_addr().expect("addr"))
    }; // dropped: connections to it are refused
    let (h, _a, _b) = traced(&closed).await;
    for i in 0..5 {
        assert_eq!(h.chat(&format!("u{i}")).await.status(), 200);
    }
    tokio::time::timeout(Duration::from_secs(60), h.proxy.shutdown())
        .await
        .expect("shutdown does not wait on the collector for long");
}
