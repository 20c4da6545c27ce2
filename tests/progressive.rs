//! Progressive delivery (PRODUCT.md §3.9), from outside, with short windows:
//! a ramp climbs to 100 % over healthy providers; a gate that compares the
//! target's cohort with the control cohort rolls back a target that fails
//! more or is slower (clients still see only 200s), but not a slowdown that
//! hits both; pause, resume and a manual change behave as specified and
//! survive a restart.

#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed assertion"
)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use turnout::mock::{MockServer, MockSettings};

async fn mock_ms(name: &str, latency_ms: u64, fail_rate: f64) -> MockServer {
    mock_with(MockSettings {
        name: name.into(),
        latency: Duration::from_millis(latency_ms),
        fail_rate,
        ..Default::default()
    })
    .await
}

/// Primary `a`, target `b`; `split` is the inside of `split: {...}`.
/// Automatic rollback and ejection are off, so only the gates judge.
fn progressive_config(a: &MockServer, b: &MockServer, split: &str, extra: &str) -> String {
    let route = format!(
        "{{name: chat, models: ['*'], primary: a, split: {{target: b, auto_rollback: {{enabled: false}}, {split}}}}}"
    );
    config(&[upstream("a", a, ""), upstream("b", b, "")], &route)
        + "outlier: {consecutive_failures: 100000, error_rate: 1.0}\n"
        + extra
}

/// Clients sending chats from many users until stopped; counts non-200s.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    bad: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(h: &Harness, workers: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let bad = Arc::new(AtomicU64::new(0));
        let tasks = (0..workers)
            .map(|w| {
                let (stop, sent, bad) = (stop.clone(), sent.clone(), bad.clone());
                let (http, url) = (h.http.clone(), h.url.clone());
                tokio::spawn(async move {
                    let mut i = w;
                    while !stop.load(Ordering::Relaxed) {
                        let rsp = http
                            .post(format!("{url}/v1/chat/completions"))
                            .header("x-user-id", format!("user-{}", i % 500))
                            .json(&json!({"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]}))
                            .send()
                            .await;
                        sent.fetch_add(1, Ordering::Relaxed);
                        if !rsp.is_ok_and(|r| r.status() == 200) {
                            bad.fetch_add(1, Ordering::Relaxed);
                        }
                        i += workers;
                    }
                })
            })
            .collect();
        Self {
            stop,
            sent,
            bad,
            tasks,
        }
    }

    /// Stops and returns (sent, non-200).
    async fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        (
            self.sent.load(Ordering::Relaxed),
            self.bad.load(Ordering::Relaxed),
        )
    }
}

async fn split(h: &Harness) -> Value {
    h.status().await["routes"][0]["split"].clone()
}

async fn until_ramp(h: &Harness, state: &str, timeout: Duration) -> Value {
    eventually(&format!("ramp {state}"), timeout, || async {
        split(h).await["ramp"]["state"] == state
    })
    .await;
    split(h).await
}

async fn ramp(h: &Harness, action: &str) -> reqwest::Response {
    h.admin(Method::POST, "/admin/routes/chat/ramp")
        .json(&json!({ "action": action }))
        .send()
        .await
        .unwrap()
}

/// Short windows; 20 requests per cohort keep the p95 from being one
/// scheduler hiccup on a loaded machine.
const GATES: &str =
    "gates: {window: 3s, min_requests: 20, max_error_rate_increase: 0.1, max_latency_ratio: 2.5}";
/// The same with a latency gate that tolerates a loaded machine's noise on
/// fast providers (the healthy ramp is not about latency).
const LOOSE_GATES: &str =
    "gates: {window: 3s, min_requests: 20, max_error_rate_increase: 0.1, max_latency_ratio: 4}";

#[tokio::test]
async fn a_ramp_over_healthy_providers_reaches_100() {
    let (a, b) = (mock_ms("a", 50, 0.0).await, mock_ms("b", 50, 0.0).await);
    let (hook, alerts) = webhook().await;
    let yaml = progressive_config(
        &a,
        &b,
        &format!("percentage: 0, ramp: {{steps: [10, 50, 100], bake: 2s}}, {LOOSE_GATES}"),
        &format!("alerts: {{webhook_url: {hook:?}}}\n"),
    );
    let h = start(&yaml).await;
    // Configured and never paused: started at start-up, on the first step.
    let s = split(&h).await;
    assert_eq!(s["ramp"]["state"], "running", "{s}");
    assert_eq!(s["ramp"]["step"], 10.0);
    assert_eq!(s["percentage"], 10.0);
    assert!(s["ramp"]["next_at"].is_string());
    assert_eq!(s["ramp"]["steps"], json!([10.0, 50.0, 100.0]));
    let load = Load::start(&h, 8);
    let s = until_ramp(&h, "done", Duration::from_secs(90)).await;
    let (sent, bad) = load.stop().await;
    assert_eq!(bad, 0, "{bad} of {sent} requests failed");
    assert_eq!(s["percentage"], 100.0);
    assert_eq!(s["ramp"]["step"], 100.0);
    assert!(s["ramp"]["next_at"].is_null());
    let m = h.metrics().await;
    assert_eq!(
        metric_sum(&m, "turnout_ramp_step", &["route=\"chat\""]),
        100.0
    );
    assert_eq!(metric_sum(&m, "turnout_rollbacks_total", &[]), 0.0);
    eventually("ramp alerts", Duration::from_secs(10), || async {
        let got = alerts.lock().unwrap();
        got.iter().any(|a| a["event"] == "ramp_step")
            && got.iter().any(|a| a["event"] == "ramp_done")
    })
    .await;
    h.proxy.shutdown().await;
}

/// A target failing 30 % (the control: 0 %) is rolled back by the gate
/// with `trigger="auto"`; the ramp stops; every client got a 200.
#[tokio::test]
async fn a_gate_rolls_back_a_target_that_fails_more() {
    let (a, b) = (mock_ms("a", 5, 0.0).await, mock_ms("b", 5, 0.3).await);
    let (hook, alerts) = webhook().await;
    let yaml = progressive_config(
        &a,
        &b,
        &format!("percentage: 0, ramp: {{steps: [50, 100], bake: 2s}}, {GATES}"),
        &format!("alerts: {{webhook_url: {hook:?}}}\nfailover: {{budget_min_per_second: 1000}}\n"),
    );
    let h = start(&yaml).await;
    let load = Load::start(&h, 6);
    let s = until_ramp(&h, "rolled_back", Duration::from_secs(60)).await;
    let (sent, bad) = load.stop().await;
    assert_eq!(
        bad, 0,
        "{bad} of {sent} requests failed: clients must see only 200s"
    );
    assert_eq!(s["percentage"], 0.0);
    let gates = &s["gates"];
    assert!(gates["target"]["requests"].as_u64().is_some(), "{s}");
    let m = h.metrics().await;
    assert_eq!(
        metric_sum(
            &m,
            "turnout_rollbacks_total",
            &["route=\"chat\"", "trigger=\"auto\""]
        ),
        1.0
    );
    assert_eq!(
        metric_sum(&m, "turnout_split_percentage", &["route=\"chat\""]),
        0.0
    );
    eventually(
        "rollback alert with figures",
        Duration::from_secs(10),
        || async {
            alerts.lock().unwrap().iter().any(|a| {
                a["event"] == "rollback"
                    && a["detail"] == "auto"
                    && a["text"].as_str().unwrap().contains("error rate")
            })
        },
    )
    .await;
    h.proxy.shutdown().await;
}

/// A target 5× slower than the primary is rolled back by the latency gate,
/// although it never fails.
#[tokio::test]
async fn a_gate_rolls_back_a_target_five_times_slower() {
    let (a, b) = (mock_ms("a", 40, 0.0).await, mock_ms("b", 200, 0.0).await);
    let yaml = progressive_config(&a, &b, &format!("percentage: 50, {GATES}"), "");
    let h = start(&yaml).await;
    let load = Load::start(&h, 8);
    eventually(
        "rolled back by the latency gate",
        Duration::from_secs(60),
        || async { split(&h).await["percentage"] == 0.0 },
    )
    .await;
    let (sent, bad) = load.stop().await;
    assert_eq!(bad, 0, "{bad} of {sent} requests failed");
    let m = h.metrics().await;
    assert_eq!(
        metric_sum(
            &m,
            "turnout_rollbacks_total",
            &["route=\"chat\"", "trigger=\"auto\""]
        ),
        1.0
    );
    h.proxy.shutdown().await;
}

/// A slowdown that hits both cohorts alike is not the target's fault: the
/// gates pass and the ramp still reaches 100 %.
#[tokio::test]
async fn a_slowdown_on_both_cohorts_does_not_roll_back() {
    let (a, b) = (mock_ms("a", 250, 0.0).await, mock_ms("b", 250, 0.0).await);
    let yaml = progressive_config(
        &a,
        &b,
        &format!("percentage: 0, ramp: {{steps: [50, 100], bake: 2s}}, {GATES}"),
        "",
    );
    let h = start(&yaml).await;
    let load = Load::start(&h, 12);
    let s = until_ramp(&h, "done", Duration::from_secs(90)).await;
    let (sent, bad) = load.stop().await;
    assert_eq!(bad, 0, "{bad} of {sent} requests failed");
    assert_eq!(s["percentage"], 100.0);
    let m = h.metrics().await;
    assert_eq!(metric_sum(&m, "turnout_rollbacks_total", &[]), 0.0);
    h.proxy.shutdown().await;
}

#[tokio::test]
async fn pause_resume_manual_change_and_restart() {
    let (a, b) = (mock("a").await, mock("b").await);
    let yaml = progressive_config(
        &a,
        &b,
        "percentage: 0, ramp: {steps: [10, 20, 30, 100], bake: 2s}",
        "",
    );
    let h = start(&yaml).await;
    assert_eq!(split(&h).await["ramp"]["state"], "running");
    // Bad input.
    let rsp = h
        .admin(Method::POST, "/admin/routes/chat/ramp")
        .json(&json!({"action": "faster"}))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 400);
    assert_eq!(ramp(&h, "start").await.status(), 409, "already running");
    let rsp = h
        .admin(Method::POST, "/admin/routes/nope/ramp")
        .json(&json!({"action": "pause"}))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 404);

    let rsp = ramp(&h, "pause").await;
    assert_eq!(rsp.status(), 200);
    let v: Value = rsp.json().await.unwrap();
    assert_eq!(v["ramp"]["state"], "paused");
    assert!(v["ramp"]["next_at"].is_null());
    let at = v["percentage"].clone();
    // Held: longer than a bake passes and the share does not move (the
    // absence of a change can only be seen by waiting).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let s = split(&h).await;
    assert_eq!(s["ramp"]["state"], "paused");
    assert_eq!(s["percentage"], at);
    assert_eq!(ramp(&h, "pause").await.status(), 409, "not running");

    assert_eq!(ramp(&h, "resume").await.status(), 200);
    eventually(
        "the next step after resume",
        Duration::from_secs(20),
        || async { split(&h).await["ramp"]["step"] == 20.0 },
    )
    .await;

    // A manual change pauses the ramp and keeps the operator's share.
    let rsp = h
        .admin(Method::PUT, "/admin/routes/chat/split")
        .json(&json!({"percentage": 25}))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    let s = split(&h).await;
    assert_eq!(s["ramp"]["state"], "paused");
    assert_eq!(s["percentage"], 25.0);

    // Persisted like a split override.
    let h = h.restart().await;
    let s = split(&h).await;
    assert_eq!(s["ramp"]["state"], "paused", "{s}");
    assert_eq!(s["percentage"], 25.0);

    // Start again: from the step at or below the share (20), then on.
    let v: Value = ramp(&h, "start").await.json().await.unwrap();
    assert_eq!(v["ramp"]["state"], "running", "{v}");
    assert_eq!(v["percentage"], 20.0);
    let s = until_ramp(&h, "done", Duration::from_secs(30)).await;
    assert_eq!(s["percentage"], 100.0);
    h.proxy.shutdown().await;
}
