//! Hedged requests (PRODUCT.md §3.10, `routes[].hedge`): a stalled primary is
//! raced by the next upstream; the first to commit wins and the loser's
//! connection is closed. Without `hedge`, no second request is ever sent.

mod common;

use std::time::Duration;

use common::*;
use tokio::time::Instant;
use turnout::mock::{MockServer, MockSettings};

async fn stalled(name: &str, latency: Duration, ttft: Duration) -> MockServer {
    mock_with(MockSettings {
        name: name.into(),
        latency,
        ttft,
        ..Default::default()
    })
    .await
}

fn two(a: &MockServer, b: &MockServer, route_extra: &str) -> String {
    config(
        &[upstream("a", a, ""), upstream("b", b, "")],
        &format!("{{name: chat, models: ['*'], primary: a, fallbacks: [b]{route_extra}}}"),
    )
}

#[tokio::test]
async fn a_stalled_primary_is_raced_and_the_fallback_answers() {
    let a = stalled("a", Duration::from_secs(3), Duration::ZERO).await;
    let b = mock("b").await;
    let h = start(&two(&a, &b, ", hedge: {after: 300ms}")).await;
    let t0 = Instant::now();
    let r = h.chat("u1").await;
    let took = t0.elapsed();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-turnout-upstream"], "b");
    assert_eq!(r.headers()["x-turnout-attempts"], "2");
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["choices"][0]["message"]["content"].is_string());
    assert!(took < Duration::from_millis(1500), "answered in {took:?}");
    // The loser's connection is closed at once: the primary sees the client
    // leave long before its 3 s were up.
    eventually(
        "the primary saw its connection close",
        Duration::from_millis(2400),
        || async { a.stats().disconnects >= 1 },
    )
    .await;
    assert_eq!((a.stats().chat, b.stats().chat), (1, 1));
    assert_eq!(a.stats().completed, 0);
    let m = h.metrics().await;
    assert_eq!(
        metric_sum(
            &m,
            "turnout_hedges_total",
            &["route=\"chat\"", "outcome=\"won\""]
        ),
        1.0
    );
    assert_eq!(
        metric_sum(&m, "turnout_hedges_total", &["outcome=\"lost\""]),
        0.0
    );
    h.proxy.shutdown().await;
}

#[tokio::test]
async fn a_stream_is_hedged_up_to_its_commit_point() {
    // Headers at once, first token only after 3 s.
    let a = stalled("a", Duration::ZERO, Duration::from_secs(3)).await;
    let b = mock("b").await;
    let h = start(&two(&a, &b, ", hedge: {after: 300ms, max: 1}")).await;
    let t0 = Instant::now();
    let r = h.chat_stream("u1").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-turnout-upstream"], "b");
    let text = r.text().await.unwrap();
    assert!(
        t0.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t0.elapsed()
    );
    let data = sse_data(&text);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    eventually(
        "the primary saw its stream close",
        Duration::from_millis(2400),
        || async { a.stats().disconnects >= 1 },
    )
    .await;
    h.proxy.shutdown().await;
}

#[tokio::test]
async fn the_primary_that_commits_first_wins_and_the_hedge_is_cancelled() {
    // The primary answers after 800 ms; the hedge (after 200 ms) stalls 5 s.
    let a = stalled("a", Duration::from_millis(800), Duration::ZERO).await;
    let b = stalled("b", Duration::from_secs(5), Duration::ZERO).await;
    let h = start(&two(&a, &b, ", hedge: {after: 200ms}")).await;
    let r = h.chat("u1").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-turnout-upstream"], "a");
    eventually(
        "the hedge was cancelled",
        Duration::from_secs(3),
        || async { b.stats().disconnects >= 1 },
    )
    .await;
    let m = h.metrics().await;
    assert_eq!(
        metric_sum(&m, "turnout_hedges_total", &["outcome=\"lost\""]),
        1.0
    );
    assert_eq!(
        metric_sum(&m, "turnout_hedges_total", &["outcome=\"won\""]),
        0.0
    );
    h.proxy.shutdown().await;
}

#[tokio::test]
async fn without_hedge_no_second_request_is_ever_sent() {
    let a = stalled("a", Duration::from_millis(700), Duration::ZERO).await;
    let b = mock("b").await;
    let h = start(&two(&a, &b, "")).await;
    for i in 0..3 {
        let r = h.chat(&format!("u{i}")).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-turnout-upstream"], "a");
        assert_eq!(r.headers()["x-turnout-attempts"], "1");
    }
    assert_eq!((a.stats().chat, b.stats().chat), (3, 0));
    assert_eq!(a.stats().disconnects, 0);
    let m = h.metrics().await;
    assert!(!m.contains("turnout_hedges_total{"));
    // Upstreams with one base_url: no endpoint label anywhere.
    assert!(!m.contains("endpoint="), "{m}");
    h.proxy.shutdown().await;
}

#[tokio::test]
async fn a_hedge_with_nowhere_to_go_is_skipped() {
    let a = stalled("a", Duration::from_millis(500), Duration::ZERO).await;
    let h = start(&config(
        &[upstream("a", &a, "")],
        "{name: chat, models: ['*'], primary: a, hedge: {after: p95}}",
    ))
    .await;
    let r = h.chat("u1").await;
    assert_eq!(r.status(), 200);
    assert_eq!(a.stats().chat, 1);
    // `p95` with no latency sample yet waits 2 s: nothing was due.
    let m = h.metrics().await;
    assert_eq!(
        metric_sum(&m, "turnout_hedges_total", &["outcome=\"skipped\""]),
        0.0
    );
    h.proxy.shutdown().await;

    let h = start(&config(
        &[upstream("a", &a, "")],
        "{name: chat, models: ['*'], primary: a, hedge: {after: 100ms}}",
    ))
    .await;
    assert_eq!(h.chat("u2").await.status(), 200);
    let m = h.metrics().await;
    assert_eq!(
        metric_sum(&m, "turnout_hedges_total", &["outcome=\"skipped\""]),
        1.0
    );
    h.proxy.shutdown().await;
}

#[test]
fn hedge_settings_are_checked() {
    let cfg = |hedge: &str| {
        turnout::config::Config::from_yaml(&format!(
            "auth: {{disabled: true}}\nupstreams: [{{name: a, base_url: 'http://127.0.0.1:1/v1'}}]\n\
             routes: [{{name: r, models: ['*'], primary: a, hedge: {hedge}}}]\n"
        ))
    };
    assert!(cfg("{after: 2s}").is_ok());
    assert!(cfg("{after: p95, max: 2}").is_ok());
    assert!(cfg("{after: 1.5}").is_ok());
    let e = cfg("{after: soon}").err().unwrap().0;
    assert!(e.contains("hedge.after") || e.contains("soon"), "{e}");
    let e = cfg("{after: 2s, max: 0}").err().unwrap().0;
    assert!(e.contains("routes[0].hedge.max"), "{e}");
}
