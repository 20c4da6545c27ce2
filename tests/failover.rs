//! Failover and health, from outside: faults on the primary never reach the
//! client while the fallback can answer; outages don't multiply load.

#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed assertion"
)]

mod common;

use std::time::Duration;

use common::*;
use turnout::mock::{Fault, FaultScope, MockServer};

const ROUTE: &str = "{name: chat, models: ['*'], primary: a, fallbacks: [b]}";

async fn pair() -> (MockServer, MockServer) {
    (mock("a").await, mock("b").await)
}

fn pair_config(a: &MockServer, b: &MockServer, a_extra: &str) -> String {
    config(&[upstream("a", a, a_extra), upstream("b", b, "")], ROUTE)
}

async fn assert_served_by_fallback(h: &Harness) {
    let rsp = h.chat("u1").await;
    assert_eq!(rsp.status(), 200);
    assert_eq!(rsp.headers()["x-turnout-upstream"], "b");
    let attempts: u32 = rsp.headers()["x-turnout-attempts"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(attempts >= 2, "attempts {attempts}");
    let v: serde_json::Value = rsp.json().await.unwrap();
    assert!(v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .contains("from b"));
}

#[tokio::test]
async fn primary_errors_fail_over_to_the_fallback() {
    for fault in [
        Fault::Status {
            code: 500,
            retry_after: None,
        },
        Fault::Status {
            code: 503,
            retry_after: None,
        },
        Fault::Status {
            code: 429,
            retry_after: Some(2),
        },
        Fault::Status {
            code: 401,
            retry_after: None,
        },
        Fault::Junk,
        Fault::Reset { after: 0 },
    ] {
        let (a, b) = pair().await;
        a.set_fault(FaultScope::Chat, Some(fault.clone()));
        // One attempt each: the retry on the same upstream (default 1) has
        // its own test in tests/rescue.rs.
        let no_retry = "failover: {same_upstream_retries: 0}\n";
        let h = start(&format!("{no_retry}{}", pair_config(&a, &b, ""))).await;
        assert_served_by_fallback(&h).await;
        assert_eq!(a.stats().chat, 1, "{fault:?}");
        let m = h.metrics().await;
        assert_eq!(
            metric_sum(&m, "turnout_failovers_total", &["from=\"a\"", "to=\"b\""]),
            1.0,
            "{fault:?}\n{m}"
        );
        h.proxy.shutdown().await;
    }
}

#[tokio::test]
async fn primary_hanging_before_headers_fails_over_after_its_timeout() {
    let (a, b) = pair().await;
    a.set_fault(FaultScope::Chat, Some(Fault::Hang));
    let h = start(&pair_config(
        &a,
        &b,
        "health: {enabled: false}, timeouts: {headers: 300ms}",
    ))
    .await;
    assert_served_by_fallback(&h).await;
    eventually(
        "the hung request was dropped",
        Duration::from_secs(5),
        || async { a.stats().disconnects >= 1 },
    )
    .await;
}

#[tokio::test]
async fn refused_connections_and_a_killed_primary_fail_over() {
    let (a, b) = pair().await;
    let h = start(&pair_config(&a, &b, "")).await;
    assert_eq!(h.chat("u").await.headers()["x-turnout-upstream"], "a");
    a.kill();
    assert_served_by_fallback(&h).await;
    assert_served_by_fallback(&h).await;
}

#[tokio::test]
async fn a_clients_bad_request_is_not_failed_over() {
    let (a, b) = pair().await;
    let h = start(&pair_config(&a, &b, "")).await;
    for code in [400, 413, 422] {
        let rsp = h
            .http
            .post(format!("{}/v1/chat/completions", h.url))
            .header("x-mock-fault", format!("status={code}"))
            .body(r#"{"model":"gpt-4.1","messages":[]}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(rsp.status().as_u16(), code);
        assert_eq!(rsp.headers()["x-turnout-upstream"], "a");
        assert_eq!(rsp.headers()["x-turnout-attempts"], "1");
    }
    assert_eq!(b.stats().chat, 0, "the fallback received nothing");
}

#[tokio::test]
async fn failing_health_probes_take_the_primary_out_and_back() {
    let (a, b) = pair().await;
    let probes =
        "health: {interval: 50ms, timeout: 50ms, unhealthy_threshold: 2, healthy_threshold: 2}";
    let h = start(&pair_config(&a, &b, probes)).await;
    eventually("a probed healthy", Duration::from_secs(5), || async {
        a.stats().models >= 1
    })
    .await;
    a.set_fault(
        FaultScope::Models,
        Some(Fault::Status {
            code: 503,
            retry_after: None,
        }),
    );
    eventually("a unhealthy in status", Duration::from_secs(5), || async {
        h.status().await["upstreams"][0]["state"] == "unhealthy"
    })
    .await;
    let before = a.stats().chat;
    for i in 0..20 {
        let rsp = h.chat(&format!("u{i}")).await;
        assert_eq!(rsp.headers()["x-turnout-upstream"], "b");
        assert_eq!(rsp.headers()["x-turnout-attempts"], "1");
    }
    assert_eq!(
        a.stats().chat,
        before,
        "no live request reached the unhealthy primary"
    );
    let m = h.metrics().await;
    assert_eq!(
        metric_sum(&m, "turnout_upstream_healthy", &["upstream=\"a\""]),
        0.0
    );
    a.set_fault(FaultScope::Models, None);
    eventually("traffic returns to a", Duration::from_secs(5), || async {
        h.chat("u").await.headers()["x-turnout-upstream"] == "a"
    })
    .await;
}

#[tokio::test]
async fn total_outage_gives_openai_errors_without_multiplying_load() {
    let (a, b) = pair().await;
    a.set_fault(
        FaultScope::Chat,
        Some(Fault::Status {
            code: 503,
            retry_after: None,
        }),
    );
    b.set_fault(
        FaultScope::Chat,
        Some(Fault::Status {
            code: 500,
            retry_after: None,
        }),
    );
    let h = start(&pair_config(&a, &b, "")).await;
    let n = 200;
    for i in 0..n {
        let rsp = h.chat(&format!("u{i}")).await;
        assert!(
            matches!(rsp.status().as_u16(), 502 | 503),
            "{}",
            rsp.status()
        );
        assert!(rsp.headers().contains_key("x-turnout-attempts"));
        let v: serde_json::Value = rsp.json().await.unwrap();
        assert!(
            v["error"]["message"].as_str().unwrap().contains("a:")
                || v["error"]["message"].as_str().unwrap().contains("b:"),
            "{v}"
        );
    }
    let upstream_attempts = a.stats().chat + b.stats().chat;
    assert!(
        upstream_attempts as f64 <= 1.2 * n as f64,
        "{upstream_attempts} attempts for {n} requests"
    );
    let status = h.status().await;
    assert!(
        status["upstreams"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["state"] == "ejected"),
        "{status}"
    );
    // PRODUCT.md §3.3: the upstream view says so; readiness does not
    // depend on upstream health (the replica stays in the load balancer).
    assert_eq!(
        h.http
            .get(format!("{}/health/upstreams", h.url))
            .send()
            .await
            .unwrap()
            .status(),
        503
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
async fn every_upstream_rate_limiting_gives_429_with_retry_after() {
    let (a, b) = pair().await;
    a.set_fault(
        FaultScope::Chat,
        Some(Fault::Status {
            code: 429,
            retry_after: Some(7),
        }),
    );
    b.set_fault(
        FaultScope::Chat,
        Some(Fault::Status {
            code: 429,
            retry_after: Some(3),
        }),
    );
    let h = start(&pair_config(&a, &b, "")).await;
    let rsp = h.chat("u").await;
    assert_eq!(rsp.status(), 429);
    assert_eq!(rsp.headers()["retry-after"], "3");
    assert_eq!(rsp.headers()["x-turnout-attempts"], "2");
    let v: serde_json::Value = rsp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    // Both are now cooling down: the next request does not hammer them.
    let before = a.stats().chat + b.stats().chat;
    let rsp = h.chat("u").await;
    assert!(rsp.status().is_client_error() || rsp.status().is_server_error());
    assert!(a.stats().chat + b.stats().chat <= before + 2);
}

#[tokio::test]
async fn a_stream_that_hangs_before_its_first_chunk_is_served_by_the_fallback() {
    let (a, b) = pair().await;
    a.set_fault(FaultScope::Chat, Some(Fault::Stall { after: 0 }));
    let h = start(&pair_config(
        &a,
        &b,
        "health: {enabled: false}, timeouts: {first_token: 300ms}",
    ))
    .await;
    let rsp = h.chat_stream("u").await;
    assert_eq!(rsp.status(), 200);
    assert_eq!(rsp.headers()["x-turnout-upstream"], "b");
    let body = rsp.text().await.unwrap();
    assert!(!body.contains("\"error\""), "{body}");
    assert_eq!(sse_data(&body).last().map(String::as_str), Some("[DONE]"));
}

#[tokio::test]
async fn a_stream_reset_mid_way_ends_with_an_error_event_after_one_attempt() {
    let (a, b) = pair().await;
    a.set_fault(FaultScope::Chat, Some(Fault::Reset { after: 3 }));
    let h = start(&pair_config(&a, &b, "")).await;
    let rsp = h.chat_stream("u").await;
    assert_eq!(rsp.status(), 200);
    assert_eq!(rsp.headers()["x-turnout-attempts"], "1");
    let body = rsp.text().await.unwrap();
    let data = sse_data(&body);
    assert!(data.last().unwrap().starts_with("{\"error\""), "{body}");
    assert!(!data.iter().any(|d| d == "[DONE]"));
    assert_eq!((a.stats().chat, b.stats().chat), (1, 0));
    // Truncation (clean EOF without [DONE]) and an idle upstream end the same way.
    for (fault, extra) in [
        (Fault::Truncate { after: 2 }, ""),
        (
            Fault::Stall { after: 2 },
            "health: {enabled: false}, timeouts: {idle: 300ms}",
        ),
    ] {
        let (a, b) = pair().await;
        a.set_fault(FaultScope::Chat, Some(fault));
        let h = start(&pair_config(&a, &b, extra)).await;
        let body = h.chat_stream("u").await.text().await.unwrap();
        let data = sse_data(&body);
        assert!(
            data.last().unwrap().contains("stream_interrupted"),
            "{body}"
        );
        assert!(!data.iter().any(|d| d == "[DONE]"));
        assert_eq!(b.stats().chat, 0);
    }
}

#[tokio::test]
async fn health_flips_are_alerted_once_each() {
    let (hook, got) = webhook().await;

    let (a, b) = pair().await;
    let probes =
        "health: {interval: 50ms, timeout: 50ms, unhealthy_threshold: 2, healthy_threshold: 2}";
    let yaml = format!(
        "alerts: {{webhook_url: {hook:?}}}\n{}",
        pair_config(&a, &b, probes)
    );
    let h = start(&yaml).await;
    a.set_fault(
        FaultScope::Models,
        Some(Fault::Status {
            code: 500,
            retry_after: None,
        }),
    );
    eventually("down alert", Duration::from_secs(5), || async {
        !got.lock().unwrap().is_empty()
    })
    .await;
    a.set_fault(FaultScope::Models, None);
    eventually("recovery alert", Duration::from_secs(5), || async {
        got.lock().unwrap().len() >= 2
    })
    .await;
    // Stable again: no more alerts arrive (probes keep running meanwhile).
    let probes_now = a.stats().models;
    eventually("more probes", Duration::from_secs(5), || async {
        a.stats().models >= probes_now + 5
    })
    .await;
    let alerts = got.lock().unwrap().clone();
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    assert_eq!(alerts[0]["upstream"], "a");
    assert_eq!(alerts[0]["detail"], "unhealthy");
    assert_eq!(alerts[1]["detail"], "healthy");
    assert!(alerts[0]["text"].as_str().unwrap().contains("unhealthy"));
    drop(h);
}

#[tokio::test]
async fn a_stream_longer_than_the_total_timeout_ends_with_an_error_event() {
    let (a, b) = pair().await;
    let h = start(&pair_config(
        &a,
        &b,
        "health: {enabled: false}, timeouts: {total: 400ms}",
    ))
    .await;
    let body = h
        .http
        .post(format!("{}/v1/chat/completions", h.url))
        .header("x-mock-chunks", "100")
        .header("x-mock-chunk-delay", "50ms")
        .body(r#"{"model":"gpt-4.1","stream":true,"messages":[]}"#)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let data = sse_data(&body);
    assert!(data.len() > 2, "{body}");
    assert!(data.last().unwrap().contains("total timeout"), "{body}");
    assert!(!data.iter().any(|d| d == "[DONE]"));
}
