//! Failover that rescues more (PRODUCT.md §4 "What moves on, and when"): a
//! single 5xx is retried on the same upstream, a short `Retry-After` can be
//! waited out, a request too long for one upstream moves on to one with a
//! longer context, and the first-token limit runs once to the commit point.

#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed assertion"
)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use turnout::mock::{Fault, FaultScope, MockServer, MockSettings};

const ROUTE: &str = "{name: chat, models: ['*'], primary: a, fallbacks: [b]}";

async fn pair() -> (MockServer, MockServer) {
    (mock("a").await, mock("b").await)
}

/// A pair behind one route, with `failover` settings (flow YAML) and extra
/// settings of `a`.
fn pair_config(a: &MockServer, b: &MockServer, failover: &str, a_extra: &str) -> String {
    let cfg = config(&[upstream("a", a, a_extra), upstream("b", b, "")], ROUTE);
    format!("failover: {failover}\n{cfg}")
}

fn served_by(rsp: &reqwest::Response) -> (String, u32) {
    let h = rsp.headers();
    let up = h["x-turnout-upstream"].to_str().unwrap().to_owned();
    let attempts = h["x-turnout-attempts"].to_str().unwrap().parse().unwrap();
    (up, attempts)
}

fn status_500() -> Fault {
    Fault::Status {
        code: 500,
        retry_after: None,
    }
}

#[tokio::test]
async fn a_single_500_is_retried_on_the_same_upstream_by_default() {
    let (a, b) = pair().await;
    let h = start(&pair_config(&a, &b, "{}", "")).await;
    a.set_fault_times(FaultScope::Chat, status_500(), 1);
    let started = Instant::now();
    let rsp = h.chat("u1").await;
    let took = started.elapsed();
    assert_eq!(rsp.status(), 200);
    assert_eq!(served_by(&rsp), ("a".into(), 2), "the user stays on a");
    assert_eq!((a.stats().chat, b.stats().chat), (2, 0));
    println!("one 500 then success: 200 from a after {took:?}, 2 attempts");
    let m = h.metrics().await;
    let ok = metric_sum(&m, "turnout_upstream_attempts_total", &["outcome=\"ok\""]);
    let failed = metric_sum(
        &m,
        "turnout_upstream_attempts_total",
        &["upstream=\"a\"", "outcome=\"http_5xx\""],
    );
    assert_eq!((ok, failed), (1.0, 1.0));
}

#[tokio::test]
async fn a_lasting_500_moves_on_after_the_one_retry() {
    let (a, b) = pair().await;
    // Budget enough for both retries (the walk's unit tests cover a tight one).
    let h = start(&pair_config(&a, &b, "{budget_min_per_second: 10}", "")).await;
    a.set_fault(FaultScope::Chat, Some(status_500()));
    let rsp = h.chat("u1").await;
    assert_eq!(served_by(&rsp), ("b".into(), 3));
    assert_eq!((a.stats().chat, b.stats().chat), (2, 1));
}

#[tokio::test]
async fn with_no_same_upstream_retry_a_500_moves_on_at_once() {
    let (a, b) = pair().await;
    let h = start(&pair_config(&a, &b, "{same_upstream_retries: 0}", "")).await;
    a.set_fault_times(FaultScope::Chat, status_500(), 1);
    let rsp = h.chat("u1").await;
    assert_eq!(served_by(&rsp), ("b".into(), 2));
    assert_eq!((a.stats().chat, b.stats().chat), (1, 1));
}

#[tokio::test]
async fn a_timeout_moves_on_at_once() {
    let (a, b) = pair().await;
    let extra = "health: {enabled: false}, timeouts: {headers: 300ms}";
    let h = start(&pair_config(&a, &b, "{}", extra)).await;
    a.set_fault(FaultScope::Chat, Some(Fault::Hang));
    let rsp = h.chat("u1").await;
    assert_eq!(served_by(&rsp), ("b".into(), 2));
    assert_eq!(a.stats().chat, 1, "no retry of a hanging upstream");
}

#[tokio::test]
async fn context_length_exceeded_moves_on_and_is_no_health_failure() {
    let (a, b) = pair().await;
    let h = start(&pair_config(&a, &b, "{}", "")).await;
    a.set_fault(FaultScope::Chat, Some(Fault::ContextLength));
    // More than `outlier.consecutive_failures` (5) such answers in a row.
    for _ in 0..8 {
        let rsp = h.chat("u1").await;
        assert_eq!(rsp.status(), 200);
        assert_eq!(served_by(&rsp), ("b".into(), 2), "a once, then b");
    }
    assert_eq!(a.stats().chat, 8, "never retried on the same upstream");
    let status = h.status().await;
    assert_eq!(status["upstreams"][0]["state"], "healthy", "{status}");
    let m = h.metrics().await;
    let labels = ["upstream=\"a\"", "outcome=\"context_length_exceeded\""];
    assert_eq!(
        metric_sum(&m, "turnout_upstream_attempts_total", &labels),
        8.0
    );
    assert_eq!(metric_sum(&m, "turnout_ejections_total", &[]), 0.0);
}

#[tokio::test]
async fn too_long_for_every_upstream_answers_the_providers_400() {
    let (a, b) = pair().await;
    let h = start(&pair_config(&a, &b, "{}", "")).await;
    for m in [&a, &b] {
        m.set_fault(FaultScope::Chat, Some(Fault::ContextLength));
    }
    let rsp = h.chat("u1").await;
    assert_eq!(rsp.status(), 400);
    assert_eq!(served_by(&rsp), ("b".into(), 2));
    let v: serde_json::Value = rsp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "context_length_exceeded", "{v}");
    assert_eq!((a.stats().chat, b.stats().chat), (1, 1));
}

#[tokio::test]
async fn other_400s_stay_final() {
    let (a, b) = pair().await;
    let h = start(&pair_config(&a, &b, "{}", "")).await;
    a.set_fault(
        FaultScope::Chat,
        Some(Fault::Status {
            code: 400,
            retry_after: None,
        }),
    );
    let rsp = h.chat("u1").await;
    assert_eq!(rsp.status(), 400);
    assert_eq!(served_by(&rsp), ("a".into(), 1));
    assert_eq!(b.stats().chat, 0);
}

fn throttled(secs: u64) -> Fault {
    Fault::Status {
        code: 429,
        retry_after: Some(secs),
    }
}

#[tokio::test]
async fn a_short_retry_after_is_waited_out_on_the_same_upstream() {
    let (a, b) = pair().await;
    let h = start(&pair_config(&a, &b, "{retry_after_wait_max: 2s}", "")).await;
    a.set_fault_times(FaultScope::Chat, throttled(1), 1);
    let started = Instant::now();
    let rsp = h.chat("u1").await;
    let took = started.elapsed();
    assert_eq!(rsp.status(), 200);
    assert_eq!(served_by(&rsp), ("a".into(), 2));
    assert_eq!(b.stats().chat, 0);
    // It did wait (a lower bound: the behaviour, not a speed check).
    assert!(
        took >= Duration::from_millis(900),
        "answered after {took:?}"
    );
    println!("429 with Retry-After: 1 waited out: 200 from a after {took:?}, 2 attempts");

    // A Retry-After longer than the setting moves on at once.
    a.set_fault_times(FaultScope::Chat, throttled(3), 1);
    let rsp = h.chat("u2").await;
    assert_eq!(served_by(&rsp), ("b".into(), 2));
}

#[tokio::test]
async fn by_default_a_429_moves_on_at_once() {
    let (a, b) = pair().await;
    let h = start(&pair_config(&a, &b, "{}", "")).await;
    a.set_fault_times(FaultScope::Chat, throttled(2), 1);
    let started = Instant::now();
    let rsp = h.chat("u1").await;
    let took = started.elapsed();
    assert_eq!(served_by(&rsp), ("b".into(), 2));
    assert!(took < Duration::from_secs(2), "did not wait: {took:?}");
}

#[tokio::test]
async fn the_first_token_limit_runs_once_from_the_attempts_start() {
    // Headers at 600 ms, first event 600 ms later: each gap is under the 1 s
    // limit, the whole is not. The stream must not be relayed from a.
    let a = mock_with(MockSettings {
        name: "a".into(),
        latency: Duration::from_millis(600),
        ttft: Duration::from_millis(600),
        ..Default::default()
    })
    .await;
    let b = mock("b").await;
    let extra = "health: {enabled: false}, timeouts: {first_token: 1s}";
    let h = start(&pair_config(&a, &b, "{}", extra)).await;
    let started = Instant::now();
    let rsp = h.chat_stream("u1").await;
    let (up, attempts) = served_by(&rsp);
    let body = rsp.text().await.unwrap();
    let took = started.elapsed();
    assert_eq!((up.as_str(), attempts), ("b", 2), "{body}");
    assert!(body.contains("[DONE]"), "{body}");
    println!("late headers then late first event: served by b after {took:?}");
}

#[tokio::test]
async fn a_complete_chat_stream_without_done_ends_cleanly_and_is_no_failure() {
    let (a, b) = pair().await;
    let h = start(&pair_config(&a, &b, "{}", "")).await;
    // Every event of the answer (content, the finish_reason chunk, the usage
    // chunk), then the body ends: no `data: [DONE]`, as some relays do.
    for _ in 0..12 {
        let rsp = h
            .http
            .post(format!("{}/v1/chat/completions", h.url))
            .header("x-mock-fault", "truncate=999")
            .json(&serde_json::json!({
                "model": "gpt-4.1", "stream": true, "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": "hi"}]
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(served_by(&rsp), ("a".into(), 1));
        let body = rsp.text().await.unwrap();
        assert!(!body.contains("[DONE]"), "{body}");
        assert!(
            !body.contains("\"error\""),
            "no error event appended: {body}"
        );
        assert!(body.contains("\"finish_reason\":\"stop\""), "{body}");
    }
    let m = h.metrics().await;
    assert_eq!(
        metric_sum(&m, "turnout_stream_errors_total", &[]),
        0.0,
        "{m}"
    );
    let ok = ["route=\"chat\"", "upstream=\"a\"", "code=\"200\""];
    assert_eq!(metric_sum(&m, "turnout_requests_total", &ok), 12.0);
    let tokens = metric_sum(&m, "turnout_tokens_total", &["upstream=\"a\""]);
    assert!(tokens > 0.0, "usage counted: {m}");
    let status = h.status().await;
    assert_eq!(status["upstreams"][0]["state"], "healthy", "{status}");
    assert_eq!(b.stats().chat, 0);
}
