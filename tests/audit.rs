//! The audit log (PRODUCT.md §3.11), from outside: one well-formed line per
//! finished request (HTTP, streamed or not, refused, WebSocket), the walk's
//! attempts, and nothing secret; `turnout report` totals over it.

#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed assertion"
)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::Value;
use turnout::config::{Secret, Secrets};
use turnout::mock::MockSettings;

const PROMPT: &str = "tell-nobody-this-prompt";
const CLIENT_KEY: &str = "sk-client-very-secret";
const UPSTREAM_KEY: &str = "sk-upstream-very-secret";

fn audit_path() -> PathBuf {
    std::env::temp_dir().join(format!(
        "turnout-audit-{}-{}.jsonl",
        std::process::id(),
        fastrand::u64(..)
    ))
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn until_lines(path: &Path, n: usize) -> Vec<Value> {
    eventually("audit lines written", Duration::from_secs(20), || async {
        lines(path).len() >= n
    })
    .await;
    lines(path)
}

/// A failing primary `a` (every answer 500) with fallback `b`, priced; one
/// client key; the audit log at `path`.
async fn start_audited(path: &Path) -> (Harness, Vec<turnout::mock::MockServer>) {
    let a = mock_with(MockSettings {
        name: "a".into(),
        fail_rate: 1.0,
        ..Default::default()
    })
    .await;
    let b = mock("b").await;
    let ups = [
        format!(
            "  - {{name: a, base_url: {:?}, api_key_env: UP_KEY, health: {{enabled: false}}, pricing: {{'*': {{input: 2.0, output: 8.0}}}}}}\n",
            a.base_url()
        ),
        format!(
            "  - {{name: b, base_url: {:?}, health: {{enabled: false}}, pricing: {{'*': {{input: 1.0, output: 2.0}}}}}}\n",
            b.base_url()
        ),
    ];
    let yaml = config(&ups, "{name: chat, models: ['*'], primary: a, fallbacks: [b]}")
        .replace(
            "auth: {disabled: true}",
            "auth: {keys: [{name: team-a, key_env: CLIENT_KEY}]}",
        )
        + &format!("audit: {{path: {:?}, max_bytes: 10MB, keep: 2}}\n", path.display().to_string())
        + "outlier: {consecutive_failures: 1000, error_rate: 1.0}\nfailover: {budget_min_per_second: 1000, same_upstream_retries: 0}\n";
    let secrets = Secrets {
        client_keys: vec![Secret(CLIENT_KEY.into())],
        upstream_keys: vec![Some(Secret(UPSTREAM_KEY.into())), None],
        ..secrets()
    };
    let h = start_with(&yaml, secrets, temp_state()).await;
    (h, vec![a, b])
}

async fn send(h: &Harness, stream: bool) -> reqwest::Response {
    h.http
        .post(format!("{}/v1/chat/completions", h.url))
        .bearer_auth(CLIENT_KEY)
        .header("x-user-id", "user-1")
        .json(&serde_json::json!({
            "model": "gpt-4.1", "stream": stream,
            "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": PROMPT}]
        }))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn one_line_per_request_with_both_attempts_and_no_secret() {
    let path = audit_path();
    let (h, _mocks) = start_audited(&path).await;
    for stream in [false, true, false, true] {
        let rsp = send(&h, stream).await;
        assert_eq!(rsp.status(), 200);
        let body = rsp.text().await.unwrap();
        assert!(!body.is_empty());
    }
    // Refused before any upstream: unknown key.
    let rsp = h
        .http
        .post(format!("{}/v1/chat/completions", h.url))
        .bearer_auth("sk-wrong")
        .json(&serde_json::json!({"model": "gpt-4.1", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 401);

    let got = until_lines(&path, 4).await;
    // The 401 is refused by the gate, before any request is routed: not audited.
    assert_eq!(got.len(), 4, "{got:#?}");
    for (i, l) in got.iter().enumerate() {
        let stream = i % 2 == 1;
        for f in [
            "ts",
            "request_id",
            "key",
            "route",
            "model",
            "upstream_model",
            "upstream",
            "endpoint",
            "cohort",
            "status",
            "stream",
            "attempts",
            "ttft_ms",
            "latency_ms",
            "prompt_tokens",
            "completion_tokens",
            "cost_usd",
            "error",
            "shadow",
        ] {
            assert!(l.get(f).is_some(), "field {f} missing in {l}");
        }
        assert_eq!(l["key"], "team-a");
        assert_eq!(l["route"], "chat");
        assert_eq!(l["model"], "gpt-4.1");
        assert_eq!(l["upstream"], "b");
        assert_eq!(l["status"], 200);
        assert_eq!(l["stream"], stream);
        assert_eq!(l["shadow"], false);
        assert_eq!(l["cohort"], Value::Null, "no split on this route");
        assert!(l["error"].is_null());
        let attempts = l["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 2, "failover lists both attempts: {l}");
        assert_eq!(attempts[0]["upstream"], "a");
        assert_eq!(attempts[0]["outcome"], "http_5xx");
        assert_eq!(attempts[0]["status"], 500);
        assert_eq!(attempts[1]["upstream"], "b");
        assert_eq!(attempts[1]["outcome"], "ok");
        let pt = l["prompt_tokens"].as_u64().unwrap();
        let ct = l["completion_tokens"].as_u64().unwrap();
        assert!(pt > 0 && ct > 0);
        let cost = l["cost_usd"].as_f64().unwrap();
        let want = (pt as f64 + 2.0 * ct as f64) / 1e6;
        assert!((cost - want).abs() < 1e-12, "{cost} vs {want}");
        assert!(humantime::parse_rfc3339(l["ts"].as_str().unwrap()).is_ok());
    }
    let text = std::fs::read_to_string(&path).unwrap();
    for secret in [PROMPT, CLIENT_KEY, UPSTREAM_KEY, "Bearer", "authorization"] {
        assert!(!text.contains(secret), "{secret} leaked into the audit log");
    }
    h.proxy.shutdown().await;
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn a_request_no_upstream_served_is_one_line_with_its_error() {
    let path = audit_path();
    let a = mock_with(MockSettings {
        name: "a".into(),
        fail_rate: 1.0,
        ..Default::default()
    })
    .await;
    let yaml = config(
        &[upstream("a", &a, "")],
        "{name: chat, models: ['*'], primary: a}",
    ) + &format!("audit: {{path: {:?}}}\n", path.display().to_string());
    let h = start(&yaml).await;
    let rsp = h.chat("u").await;
    assert_eq!(rsp.status(), 502);
    let got = until_lines(&path, 1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["status"], 502);
    assert_eq!(got[0]["error"], "upstream_error");
    assert_eq!(got[0]["upstream"], "a");
    assert!(got[0]["key"].is_null());
    assert!(!got[0]["attempts"].as_array().unwrap().is_empty());
    h.proxy.shutdown().await;
    let _ = std::fs::remove_file(&path);
}

/// `turnout report` over the audit file: totals equal the requests and
/// tokens sent, and the same tokens are priced on every priced upstream.
#[tokio::test]
async fn report_totals_equal_what_was_sent() {
    let path = audit_path();
    let (h, _mocks) = start_audited(&path).await;
    let (mut prompt, mut completion) = (0, 0);
    let n = 6;
    for _ in 0..n {
        let rsp = send(&h, false).await;
        assert_eq!(rsp.status(), 200);
        let v: Value = rsp.json().await.unwrap();
        prompt += v["usage"]["prompt_tokens"].as_u64().unwrap();
        completion += v["usage"]["completion_tokens"].as_u64().unwrap();
    }
    until_lines(&path, n).await;
    let cfg = std::env::temp_dir().join(format!("turnout-report-{}.yaml", fastrand::u64(..)));
    std::fs::write(&cfg, &h.yaml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_turnout"))
        .args([
            "report", "--json", "--by", "key", "--since", "1h", "--config",
        ])
        .arg(&cfg)
        .arg("--audit")
        .arg(&path)
        .env_remove("TURNOUT_CONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["total"]["requests"], n as u64);
    assert_eq!(r["total"]["errors"], 0);
    assert_eq!(r["total"]["prompt_tokens"], prompt);
    assert_eq!(r["total"]["completion_tokens"], completion);
    assert_eq!(r["groups"][0]["name"], "team-a");
    assert_eq!(r["groups"][0]["requests"], n as u64);
    let what_if = r["what_if"].as_array().unwrap();
    assert_eq!(what_if.len(), 2, "{r}");
    // b served at (1, 2) per million; a would have charged (2, 8).
    let on_a = (prompt as f64 * 2.0 + completion as f64 * 8.0) / 1e6;
    assert!(
        (what_if[0]["cost_usd"].as_f64().unwrap() - on_a).abs() < 1e-9,
        "{r}"
    );
    let actual = (prompt as f64 + completion as f64 * 2.0) / 1e6;
    assert!((r["total"]["cost_usd"].as_f64().unwrap() - actual).abs() < 1e-9);

    // The table names the same totals.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_turnout"))
        .args(["report", "--by", "day", "--config"])
        .arg(&cfg)
        .arg("--audit")
        .arg(&path)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        table.contains("total") && table.contains(&prompt.to_string()),
        "{table}"
    );
    h.proxy.shutdown().await;
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(&cfg);
}

/// A WebSocket request is audited like an HTTP one (a stream, its attempts).
#[tokio::test]
async fn a_websocket_request_is_one_line_too() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let path = audit_path();
    let a = mock("a").await;
    let yaml = config(
        &[upstream("a", &a, "")],
        "{name: chat, models: ['*'], primary: a}",
    ) + &format!("audit: {{path: {:?}}}\n", path.display().to_string());
    let h = start(&yaml).await;
    let url = format!("ws://{}/v1/ws/chat?user=u1", h.proxy.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let req = serde_json::json!({"id": "r1", "model": "gpt-4.1", "messages": [{"role": "user", "content": PROMPT}]});
    ws.send(Message::text(req.to_string())).await.unwrap();
    loop {
        let m = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Text(t) = m {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["type"] == "done" || v["type"] == "error" {
                assert_eq!(v["type"], "done", "{v}");
                break;
            }
        }
    }
    let got = until_lines(&path, 1).await;
    assert_eq!(got.len(), 1);
    let l = &got[0];
    assert_eq!(l["status"], 200);
    assert_eq!(l["stream"], true);
    assert_eq!(l["upstream"], "a");
    assert_eq!(l["attempts"].as_array().unwrap().len(), 1);
    assert!(l["completion_tokens"].as_u64().unwrap() > 0);
    assert!(!std::fs::read_to_string(&path).unwrap().contains(PROMPT));
    h.proxy.shutdown().await;
    let _ = std::fs::remove_file(&path);
}
