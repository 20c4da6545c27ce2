//! Tokens and cost move by exactly what the upstream reported, for JSON and streams.

#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed assertion"
)]

mod common;

use common::*;

const PRICED: &str = "pricing: {\"gpt-4.1\": {input: 2.0, output: 8.0}}";

async fn harness() -> (
    Harness,
    turnout::mock::MockServer,
    turnout::mock::MockServer,
) {
    let (a, b) = (mock("a").await, mock("b").await);
    let ups = [
        format!("  - {{name: a, base_url: {:?}, health: {{enabled: false}}, pricing: {{\"gpt-4.1\": {{input: 10.0, output: 30.0}}}}}}\n", a.base_url()),
        format!("  - {{name: b, base_url: {:?}, health: {{enabled: false}}, {PRICED}}}\n", b.base_url()),
    ];
    // Everyone is in the split's share, so b serves and a (the primary) prices the baseline.
    let h = start(&config(
        &ups,
        "{name: chat, models: ['gpt-4.1'], primary: a, split: {target: b, percentage: 100}}",
    ))
    .await;
    (h, a, b)
}

fn usage_of(v: &serde_json::Value) -> (f64, f64) {
    (
        v["usage"]["prompt_tokens"].as_f64().unwrap(),
        v["usage"]["completion_tokens"].as_f64().unwrap(),
    )
}

fn counters(m: &str) -> [f64; 4] {
    [
        metric_sum(
            m,
            "turnout_tokens_total",
            &["upstream=\"b\"", "model=\"gpt-4.1\"", "type=\"prompt\""],
        ),
        metric_sum(
            m,
            "turnout_tokens_total",
            &["upstream=\"b\"", "model=\"gpt-4.1\"", "type=\"completion\""],
        ),
        metric_sum(
            m,
            "turnout_cost_usd_total",
            &["upstream=\"b\"", "model=\"gpt-4.1\""],
        ),
        metric_sum(
            m,
            "turnout_baseline_cost_usd_total",
            &["upstream=\"b\"", "model=\"gpt-4.1\""],
        ),
    ]
}

fn assert_moved(before: [f64; 4], after: [f64; 4], (p, c): (f64, f64)) {
    assert!(p > 0.0 && c > 0.0);
    assert_eq!(after[0] - before[0], p);
    assert_eq!(after[1] - before[1], c);
    let cost = (p * 2.0 + c * 8.0) / 1e6;
    let baseline = (p * 10.0 + c * 30.0) / 1e6;
    assert!(
        (after[2] - before[2] - cost).abs() < 1e-12,
        "cost {} vs {cost}",
        after[2] - before[2]
    );
    assert!(
        (after[3] - before[3] - baseline).abs() < 1e-12,
        "baseline {} vs {baseline}",
        after[3] - before[3]
    );
}

#[tokio::test]
async fn json_usage_moves_tokens_and_cost_exactly() {
    let (h, _a, _b) = harness().await;
    let before = counters(&h.metrics().await);
    let rsp = h.chat("u").await;
    assert_eq!(rsp.headers()["x-turnout-upstream"], "b");
    let v: serde_json::Value = rsp.json().await.unwrap();
    assert_moved(before, counters(&h.metrics().await), usage_of(&v));
}

#[tokio::test]
async fn stream_usage_chunk_moves_tokens_and_cost_exactly() {
    let (h, _a, _b) = harness().await;
    let before = counters(&h.metrics().await);
    let body = h.chat_stream("u").await.text().await.unwrap();
    let usage = sse_data(&body)
        .iter()
        .filter(|d| d.contains("\"usage\""))
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .find(|v| v["usage"].is_object())
        .map(|v| usage_of(&v))
        .expect("usage chunk");
    // The counters move when the relay sees the upstream's end, just before the client does.
    eventually(
        "stream accounted",
        std::time::Duration::from_secs(5),
        || async { counters(&h.metrics().await)[1] > before[1] },
    )
    .await;
    let after = counters(&h.metrics().await);
    assert_moved(before, after, usage);
}
