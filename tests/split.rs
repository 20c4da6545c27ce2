//! Gradual migration, from outside: sticky shares, admin changes, persisted
//! rollbacks, automatic rollback and the operator scripts.

#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed assertion"
)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use reqwest::Method;
use turnout::mock::MockServer;

fn split_config(a: &MockServer, b: &MockServer, pct: f64, rollback: &str) -> String {
    let route = format!("{{name: chat, models: ['*'], primary: a, split: {{target: b, percentage: {pct}{rollback}}}}}");
    config(&[upstream("a", a, ""), upstream("b", b, "")], &route)
}

/// Which upstream served each user (32 requests in flight).
async fn placement(h: &Harness, users: usize) -> HashMap<String, String> {
    use futures_util::StreamExt;
    futures_util::stream::iter(0..users)
        .map(|i| async move {
            let u = format!("user-{i}");
            let rsp = h.chat(&u).await;
            assert_eq!(rsp.status(), 200);
            let up = rsp.headers()["x-turnout-upstream"]
                .to_str()
                .unwrap()
                .to_owned();
            (u, up)
        })
        .buffer_unordered(32)
        .collect()
        .await
}

fn share(p: &HashMap<String, String>) -> f64 {
    p.values().filter(|v| *v == "b").count() as f64 * 100.0 / p.len() as f64
}

async fn set_split(h: &Harness, pct: serde_json::Value) -> reqwest::Response {
    h.admin(Method::PUT, "/admin/routes/chat/split")
        .json(&serde_json::json!({"percentage": pct}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn sticky_split_raise_rollback_and_restart() {
    let (a, b) = (mock("a").await, mock("b").await);
    let h = start(&split_config(&a, &b, 10.0, "")).await;
    let first = placement(&h, 2000).await;
    let s = share(&first);
    assert!((7.5..=12.5).contains(&s), "share {s}");
    // Sticky: same answer on a second pass.
    assert_eq!(placement(&h, 2000).await, first);

    // Raise to 30 %: nobody on the target leaves it.
    let rsp = set_split(&h, 30.into()).await;
    assert_eq!(rsp.status(), 200);
    let v: serde_json::Value = rsp.json().await.unwrap();
    assert_eq!(
        (v["percentage"].as_f64(), v["target"].as_str()),
        (Some(30.0), Some("b"))
    );
    let raised = placement(&h, 2000).await;
    assert!(first
        .iter()
        .filter(|(_, up)| *up == "b")
        .all(|(u, _)| raised[u] == "b"));
    assert!((25.0..=35.0).contains(&share(&raised)));

    // Restart keeps the override and the placement.
    let h = h.restart().await;
    assert_eq!(placement(&h, 2000).await, raised);
    let st = h.status().await;
    assert_eq!(st["routes"][0]["split"]["percentage"], 30.0);
    assert_eq!(st["routes"][0]["split"]["configured_percentage"], 10.0);

    // Rollback: from the next request on, nobody reaches the target; it survives a restart.
    let rsp = h
        .admin(Method::POST, "/admin/routes/chat/rollback")
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    let before = b.stats().chat;
    placement(&h, 500).await;
    assert_eq!(b.stats().chat, before);
    let m = h.metrics().await;
    assert_eq!(
        metric_sum(&m, "turnout_rollbacks_total", &["trigger=\"manual\""]),
        1.0
    );
    assert_eq!(
        metric_sum(&m, "turnout_split_percentage", &["route=\"chat\""]),
        0.0
    );
    let h = h.restart().await;
    assert_eq!(h.status().await["routes"][0]["split"]["percentage"], 0.0);
    placement(&h, 500).await;
    assert_eq!(b.stats().chat, before);
}

#[tokio::test]
async fn admin_api_checks_token_and_input() {
    let (a, b) = (mock("a").await, mock("b").await);
    let h = start(&split_config(&a, &b, 10.0, "")).await;
    let no_token = h
        .http
        .get(format!("{}/admin/status", h.admin_url))
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), 401);
    let v: serde_json::Value = no_token.json().await.unwrap();
    assert!(v["error"]["message"].is_string());
    let wrong = h
        .http
        .post(format!("{}/admin/routes/chat/rollback", h.admin_url))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    for bad in [
        serde_json::json!(150),
        serde_json::json!(-1),
        serde_json::json!("30"),
        serde_json::Value::Null,
    ] {
        let rsp = set_split(&h, bad.clone()).await;
        assert_eq!(rsp.status(), 400, "{bad}");
        let v: serde_json::Value = rsp.json().await.unwrap();
        assert!(v["error"]["code"].is_string());
    }
    let rsp = h
        .admin(Method::PUT, "/admin/routes/nope/split")
        .json(&serde_json::json!({"percentage": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 404);
    let rsp = set_split(&h, serde_json::json!(12.345)).await;
    assert_eq!(
        rsp.json::<serde_json::Value>().await.unwrap()["percentage"],
        12.35
    );
    // Metrics need no token.
    assert_eq!(
        h.http
            .get(format!("{}/metrics", h.admin_url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Status shape.
    let st = h.status().await;
    let up = &st["upstreams"][0];
    for k in [
        "name",
        "state",
        "probe_latency_ms",
        "error_rate",
        "ejected_until",
    ] {
        assert!(up.get(k).is_some(), "missing {k} in {up}");
    }
    assert_eq!(st["routes"][0]["primary"], "a");
    assert_eq!(st["routes"][0]["fallbacks"], serde_json::json!([]));
}

#[tokio::test]
async fn admin_api_is_forbidden_without_a_configured_token() {
    let (a, b) = (mock("a").await, mock("b").await);
    let h = start_with(
        &split_config(&a, &b, 10.0, ""),
        Default::default(),
        temp_state(),
    )
    .await;
    let rsp = h
        .http
        .get(format!("{}/admin/status", h.admin_url))
        .bearer_auth("anything")
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 403);
    assert_eq!(
        h.http
            .get(format!("{}/metrics", h.admin_url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn a_failing_target_is_rolled_back_automatically_without_client_errors() {
    let (hook, alerts) = webhook().await;

    let a = mock("a").await;
    let b = mock_with(turnout::mock::MockSettings {
        name: "b".into(),
        fail_rate: 0.5,
        ..Default::default()
    })
    .await;
    let rb = ", auto_rollback: {window: 30s, min_requests: 10, max_error_rate: 0.2}";
    let route = format!("{{name: chat, models: ['*'], primary: a, fallbacks: [b], split: {{target: b, percentage: 50{rb}}}}}");
    let yaml = format!(
        "alerts: {{webhook_url: {hook:?}}}\n{}",
        config(&[upstream("a", &a, ""), upstream("b", &b, "")], &route)
    );
    let h = start(&yaml).await;
    let mut i = 0;
    eventually("automatic rollback", Duration::from_secs(20), || {
        i += 1;
        let user = format!("user-{i}");
        let h = &h;
        async move {
            let rsp = h.chat(&user).await;
            assert_eq!(rsp.status(), 200, "a client saw an error");
            h.status().await["routes"][0]["split"]["percentage"] == 0.0
        }
    })
    .await;
    let m = h.metrics().await;
    assert_eq!(
        metric_sum(&m, "turnout_rollbacks_total", &["trigger=\"auto\""]),
        1.0,
        "{m}"
    );
    eventually("rollback alert", Duration::from_secs(5), || async {
        alerts
            .lock()
            .unwrap()
            .iter()
            .any(|a| a["event"] == "rollback")
    })
    .await;
    let before = b.stats().chat;
    for i in 0..50 {
        assert_eq!(h.chat(&format!("after-{i}")).await.status(), 200);
    }
    assert_eq!(b.stats().chat, before);
    let rollbacks = alerts
        .lock()
        .unwrap()
        .iter()
        .filter(|a| a["event"] == "rollback")
        .count();
    assert_eq!(rollbacks, 1);
}

fn run_script(script: &str, args: &[&str], url: &str, token: &str) -> std::process::Output {
    std::process::Command::new("sh")
        .arg(format!("{}/scripts/{script}", env!("CARGO_MANIFEST_DIR")))
        .args(args)
        .env("TURNOUT_ADMIN_URL", url)
        .env("TURNOUT_ADMIN_TOKEN", token)
        .output()
        .unwrap()
}

#[tokio::test]
async fn operator_scripts_change_and_roll_back_shares() {
    let (a, b) = (mock("a").await, mock("b").await);
    let h = start(&split_config(&a, &b, 10.0, "")).await;
    let h2 = start(&split_config(&a, &b, 10.0, "")).await;
    let both = format!("{} {}", h.admin_url, h2.admin_url);
    let (url, token) = (both.clone(), ADMIN_TOKEN.to_string());
    let out = tokio::task::spawn_blocking(move || {
        run_script("traffic.sh", &["chat", "25"], &url, &token)
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.matches("chat: 10% -> 25%").count(), 2, "{text}");

    let (url, token) = (both.clone(), ADMIN_TOKEN.to_string());
    let out = tokio::task::spawn_blocking(move || run_script("rollback.sh", &[], &url, &token))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.matches("chat: 25% -> 0%").count(), 2, "{text}");
    assert_eq!(h2.status().await["routes"][0]["split"]["percentage"], 0.0);

    let url = h.admin_url.clone();
    let out =
        tokio::task::spawn_blocking(move || run_script("rollback.sh", &["chat"], &url, "wrong"))
            .await
            .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("401"));
    // An unreachable replica fails the run too.
    let url = format!("{} http://127.0.0.1:9", h.admin_url);
    let out = tokio::task::spawn_blocking(move || {
        run_script("rollback.sh", &["chat"], &url, ADMIN_TOKEN)
    })
    .await
    .unwrap();
    assert!(!out.status.success());
}

#[tokio::test]
async fn a_corrupt_state_file_starts_on_config_values_and_is_kept() {
    let (a, b) = (mock("a").await, mock("b").await);
    let state = temp_state();
    std::fs::write(&state, b"{ not json").unwrap();
    let h = start_with(&split_config(&a, &b, 10.0, ""), secrets(), state.clone()).await;
    assert_eq!(h.status().await["routes"][0]["split"]["percentage"], 10.0);
    let mut kept = state.clone().into_os_string();
    kept.push(".corrupt");
    assert_eq!(std::fs::read(&kept).unwrap(), b"{ not json");
    // The next change writes a valid file again.
    assert_eq!(set_split(&h, 20.into()).await.status(), 200);
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!(v["routes"]["chat"]["percentage"], 20.0);
}

#[tokio::test]
async fn a_change_that_cannot_be_persisted_says_so() {
    let (a, b) = (mock("a").await, mock("b").await);
    let h = start(&split_config(&a, &b, 10.0, "")).await;
    let ok: serde_json::Value = set_split(&h, 20.into()).await.json().await.unwrap();
    assert_eq!(ok["persisted"], true);
    let dir = std::env::temp_dir().join(format!("turnout-missing-{}", fastrand::u64(..)));
    let h = start_with(
        &split_config(&a, &b, 10.0, ""),
        secrets(),
        dir.join("state.json"),
    )
    .await;
    let rsp = set_split(&h, 20.into()).await;
    assert_eq!(rsp.status(), 200);
    let v: serde_json::Value = rsp.json().await.unwrap();
    assert_eq!(
        (v["percentage"].as_f64(), v["persisted"].as_bool()),
        (Some(20.0), Some(false))
    );
}
