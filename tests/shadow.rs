//! Shadow traffic (PRODUCT.md §3.9), from outside: copies reach the target
//! in the background without adding to the client's latency, are capped by
//! `max_rps`, never surface their errors, count their tokens apart, and are
//! compared pair by pair in `/admin/status`.

#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed assertion"
)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;
use tokio::time::Instant;
use turnout::mock::{MockServer, MockSettings};

fn shadow_config(a: &MockServer, b: &MockServer, shadow: &str, extra: &str) -> String {
    let price = "pricing: {'*': {input: 1.0, output: 2.0}}";
    let ups = [
        format!(
            "  - {{name: a, base_url: {:?}, health: {{enabled: false}}, {price}}}\n",
            a.base_url()
        ),
        format!(
            "  - {{name: b, base_url: {:?}, health: {{enabled: false}}, {price}}}\n",
            b.base_url()
        ),
    ];
    let route = format!(
        "{{name: chat, models: ['*'], primary: a, split: {{target: b, percentage: 0, shadow: {shadow}}}}}"
    );
    config(&ups, &route) + extra
}

async fn shadow_status(h: &Harness) -> Value {
    h.status().await["routes"][0]["split"]["shadow"].clone()
}

#[tokio::test]
async fn copies_reach_the_target_off_the_clients_path_capped_and_compared() {
    let a = mock("a").await;
    let b = mock_with(MockSettings {
        name: "b".into(),
        latency: Duration::from_secs(2),
        ttft: Duration::from_secs(2),
        ..Default::default()
    })
    .await;
    let audit = std::env::temp_dir().join(format!("turnout-shadow-{}.jsonl", fastrand::u64(..)));
    let yaml = shadow_config(
        &a,
        &b,
        "{percentage: 100, max_rps: 2}",
        &format!("audit: {{path: {:?}}}\n", audit.display().to_string()),
    );
    let h = start(&yaml).await;
    let burst = Instant::now();
    for i in 0..10 {
        let t = Instant::now();
        let rsp = if i % 2 == 0 {
            h.chat(&format!("u{i}")).await
        } else {
            h.chat_stream(&format!("u{i}")).await
        };
        assert_eq!(rsp.status(), 200);
        assert_eq!(rsp.headers()["x-turnout-upstream"], "a");
        let _ = rsp.bytes().await.unwrap();
        // The target answers after 2 s; a client that waited for it would
        // take at least that long.
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "request {i} took {:?}: the client waited for its shadow",
            t.elapsed()
        );
    }
    let elapsed = burst.elapsed().as_secs_f64();
    let m = h.metrics().await;
    let dropped = metric_sum(
        &m,
        "turnout_shadow_requests_total",
        &["outcome=\"dropped\""],
    );
    let sent = 10.0 - dropped;
    // Burst of 2, then one more every 500 ms.
    let cap = 2.0 + (elapsed * 2.0).ceil();
    assert!(
        sent >= 1.0 && sent <= cap,
        "{sent} shadows in {elapsed:.2}s (cap {cap})"
    );

    eventually("every shadow compared", Duration::from_secs(30), || async {
        shadow_status(&h).await["pairs"].as_f64() == Some(sent)
    })
    .await;
    assert_eq!(
        b.stats().chat as f64,
        sent,
        "each shadow reached the target once"
    );
    let s = shadow_status(&h).await;
    assert_eq!(s["target_errors"], 0);
    assert_eq!(s["primary_errors"], 0);
    assert_eq!(s["same_shape_rate"], 1.0, "{s}");
    assert!(s["latency_ratio_p50"].as_f64().unwrap() > 1.0, "{s}");
    assert!(s["latency_ratio_p95"].as_f64().is_some());
    assert!(s["cost_ratio"].as_f64().is_some(), "{s}");

    let m = h.metrics().await;
    assert_eq!(
        metric_sum(&m, "turnout_shadow_requests_total", &["outcome=\"ok\""]),
        sent
    );
    assert!(metric_sum(&m, "turnout_shadow_tokens_total", &["upstream=\"b\""]) > 0.0);
    // Counted apart: b served no client.
    assert_eq!(
        metric_sum(&m, "turnout_tokens_total", &["upstream=\"b\""]),
        0.0
    );
    assert_eq!(
        metric_sum(&m, "turnout_requests_total", &["upstream=\"b\""]),
        0.0
    );
    assert_eq!(
        metric_sum(&m, "turnout_shadow_pairs_total", &["shape=\"same\""]),
        sent
    );

    eventually("audit lines", Duration::from_secs(10), || async {
        let text = std::fs::read_to_string(&audit).unwrap_or_default();
        text.lines().count() as f64 == 10.0 + sent
    })
    .await;
    let text = std::fs::read_to_string(&audit).unwrap();
    let marked = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["shadow"] == true && l["upstream"] == "b" && l["cohort"] == "control")
        .count();
    assert_eq!(marked as f64, sent);
    h.proxy.shutdown().await;
    let _ = std::fs::remove_file(&audit);
}

#[tokio::test]
async fn a_failing_target_never_reaches_the_client() {
    let a = mock("a").await;
    let b = mock_with(MockSettings {
        name: "b".into(),
        fail_rate: 1.0,
        ..Default::default()
    })
    .await;
    let h = start(&shadow_config(
        &a,
        &b,
        "{percentage: 100, max_rps: 1000}",
        "",
    ))
    .await;
    for i in 0..5 {
        let rsp = h.chat(&format!("u{i}")).await;
        assert_eq!(rsp.status(), 200);
        assert_eq!(rsp.headers()["x-turnout-attempts"], "1");
    }
    eventually("five pairs", Duration::from_secs(20), || async {
        shadow_status(&h).await["pairs"] == 5
    })
    .await;
    let s = shadow_status(&h).await;
    assert_eq!(s["target_errors"], 5);
    assert_eq!(s["same_shape_rate"], 0.0);
    assert_eq!(b.stats().chat, 5, "never retried");
    let m = h.metrics().await;
    assert_eq!(
        metric_sum(&m, "turnout_shadow_requests_total", &["outcome=\"error\""]),
        5.0
    );
    h.proxy.shutdown().await;
}
