//! Hot reload (PRODUCT.md §3.8), from outside: `POST /admin/reload` and the
//! file watcher swap a new config in under traffic without losing a request
//! or a stream, keep runtime shares and unchanged probes, re-read env-var
//! secrets, and keep the running config when the new one is invalid.

#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed assertion"
)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use reqwest::Method;
use turnout::app::Env;
use turnout::mock::{MockServer, MockSettings};

fn no_env() -> Env {
    Arc::new(|_: &str| None)
}

fn three_upstreams(
    a: &MockServer,
    b: &MockServer,
    c: &MockServer,
    a_health: &str,
    split: &str,
) -> String {
    config(
        &[
            upstream("a", a, a_health),
            upstream("b", b, ""),
            upstream("c", c, ""),
        ],
        &format!("{{name: chat, models: ['*'], primary: a, fallbacks: [b], split: {split}}}"),
    )
}

async fn reload(h: &Harness) -> (u16, serde_json::Value) {
    let rsp = h.admin(Method::POST, "/admin/reload").send().await.unwrap();
    (rsp.status().as_u16(), rsp.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_under_traffic_and_open_streams_lose_nothing() {
    let slow = MockSettings {
        name: "a".into(),
        chunks: 10,
        chunk_delay: Duration::from_millis(40),
        ..MockSettings::default()
    };
    let (a, b, c) = (mock_with(slow).await, mock("b").await, mock("c").await);
    let yaml = |i: u32| {
        let health = format!("health: {{interval: {}ms, timeout: 50ms}}", 500 + i);
        three_upstreams(
            &a,
            &b,
            &c,
            &health,
            &format!("{{target: b, percentage: {}}}", 10 + i),
        )
    };
    let (h, file) = start_file(&yaml(0), secrets(), no_env()).await;
    let h = Arc::new(h);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, streams) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let mut traffic = Vec::new();
    for t in 0..4 {
        let (h, stop, ok, failed, streams) = (
            h.clone(),
            stop.clone(),
            ok.clone(),
            failed.clone(),
            streams.clone(),
        );
        traffic.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let user = format!("user-{t}-{n}");
                let good = if t % 2 == 0 {
                    let rsp = h.chat_stream(&user).await;
                    let status = rsp.status();
                    let body = rsp.text().await.unwrap_or_default();
                    streams.fetch_add(1, Ordering::Relaxed);
                    status == 200
                        && body.trim_end().ends_with("data: [DONE]")
                        && !body.contains("\"error\"")
                } else {
                    h.chat(&user).await.status() == 200
                };
                let counter = if good { &ok } else { &failed };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for i in 1..=20 {
        // Each reload lands while streams are open and requests keep coming.
        let seen = streams.load(Ordering::Relaxed);
        eventually(
            "a stream ends between two reloads",
            Duration::from_secs(20),
            || async { streams.load(Ordering::Relaxed) > seen },
        )
        .await;
        rewrite(&file, &h, &yaml(i));
        let (status, body) = reload(&h).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["probes_restarted"], serde_json::json!(["a"]), "{body}");
        let split = &h.status().await["routes"][0]["split"];
        assert_eq!(split["configured_percentage"], f64::from(10 + i), "{split}");
    }
    stop.store(true, Ordering::Relaxed);
    for t in traffic {
        t.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "{failed} failed requests ({ok} ok)");
    assert!(
        ok > 40 && streams.load(Ordering::Relaxed) >= 20,
        "too little traffic: {ok}"
    );
    let m = h.metrics().await;
    assert_eq!(
        metric_sum(&m, "turnout_config_reloads_total", &["result=\"ok\""]),
        20.0
    );
}

#[tokio::test]
async fn an_invalid_config_is_refused_naming_the_key_and_the_old_one_keeps_serving() {
    let (a, b, c) = (mock("a").await, mock("b").await, mock("c").await);
    let good = three_upstreams(&a, &b, &c, "", "{target: b, percentage: 10}");
    let (h, file) = start_file(&good, secrets(), no_env()).await;
    let bad = three_upstreams(
        &a,
        &b,
        &c,
        "health: {interval: 5x}",
        "{target: b, percentage: 10}",
    );
    rewrite(&file, &h, &bad);
    let (status, body) = reload(&h).await;
    assert_eq!(status, 400, "{body}");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("upstreams[0].health.interval"), "{msg}");
    assert_eq!(body["error"]["code"], "invalid_config");
    rewrite(&file, &h, &good.replace("primary: a", "primary: nobody"));
    let (status, body) = reload(&h).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("routes[0].primary"),
        "{body}"
    );
    assert_eq!(h.chat("u").await.status(), 200);
    let m = h.metrics().await;
    assert_eq!(
        metric_sum(&m, "turnout_config_reloads_total", &["result=\"error\""]),
        2.0
    );
    assert_eq!(
        metric_sum(&m, "turnout_config_reloads_total", &["result=\"ok\""]),
        0.0
    );
}

#[tokio::test]
async fn runtime_shares_survive_a_reload_unless_the_target_changes() {
    let (a, b, c) = (mock("a").await, mock("b").await, mock("c").await);
    let with = |split: &str| three_upstreams(&a, &b, &c, "", split);
    let (h, file) = start_file(&with("{target: b, percentage: 10}"), secrets(), no_env()).await;
    let rsp = h
        .admin(Method::PUT, "/admin/routes/chat/split")
        .json(&serde_json::json!({"percentage": 40}))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    rewrite(&file, &h, &with("{target: b, percentage: 20}"));
    let (status, body) = reload(&h).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["splits_reset"], serde_json::json!([]));
    let split = h.status().await["routes"][0]["split"].clone();
    assert_eq!(split["percentage"], 40.0, "{split}");
    assert_eq!(split["configured_percentage"], 20.0, "{split}");
    rewrite(&file, &h, &with("{target: c, percentage: 20}"));
    let (status, body) = reload(&h).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["splits_reset"], serde_json::json!(["chat"]));
    let split = h.status().await["routes"][0]["split"].clone();
    assert_eq!(
        (split["target"].as_str(), split["percentage"].as_f64()),
        (Some("c"), Some(20.0))
    );
}

#[tokio::test]
async fn env_var_secrets_are_read_again() {
    let a = mock("a").await;
    let vars: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    vars.lock()
        .unwrap()
        .insert("UP_KEY".into(), "sk-one".into());
    let lookup = vars.clone();
    let env: Env = Arc::new(move |name: &str| lookup.lock().unwrap().get(name).cloned());
    let yaml = config(
        &[upstream(
            "a",
            &a,
            "api_key_env: UP_KEY, health: {enabled: false}",
        )],
        "{name: chat, models: ['*'], primary: a}",
    );
    let secrets = turnout::config::Secrets {
        upstream_keys: vec![Some(turnout::config::Secret("sk-one".into()))],
        ..secrets()
    };
    let (h, _file) = start_file(&yaml, secrets, env).await;
    let auth = |a: &MockServer| a.last_request().unwrap().headers["authorization"].clone();
    assert_eq!(h.chat("u").await.status(), 200);
    assert_eq!(auth(&a), "Bearer sk-one");
    vars.lock()
        .unwrap()
        .insert("UP_KEY".into(), "sk-two".into());
    assert_eq!(reload(&h).await.0, 200);
    assert_eq!(h.chat("u").await.status(), 200);
    assert_eq!(auth(&a), "Bearer sk-two");
    vars.lock().unwrap().remove("UP_KEY");
    let (status, body) = reload(&h).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("UP_KEY"),
        "{body}"
    );
    assert!(!body.to_string().contains("sk-two"));
}

#[tokio::test]
async fn the_watcher_follows_a_configmap_symlink_swap() {
    let (a, b) = (mock("a").await, mock("b").await);
    let state = temp_state();
    let route = |models: &str| {
        format!(
            "state_path: {:?}\nreload: {{watch: true, interval: 50ms}}\n{}",
            state.display().to_string(),
            config(
                &[upstream("a", &a, ""), upstream("b", &b, "")],
                &format!("{{name: chat, models: [{models}], primary: a, fallbacks: [b]}}"),
            )
        )
    };
    // The layout kubelet gives a mounted ConfigMap.
    let dir = state.with_extension("d");
    std::fs::create_dir_all(dir.join("v1")).unwrap();
    std::fs::create_dir_all(dir.join("v2")).unwrap();
    std::fs::write(dir.join("v1/config.yaml"), route("'gpt-*'")).unwrap();
    std::fs::write(dir.join("v2/config.yaml"), route("'gpt-*', 'claude-*'")).unwrap();
    std::os::unix::fs::symlink("v1", dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/config.yaml", dir.join("config.yaml")).unwrap();
    let path = dir.join("config.yaml");
    let cfg = turnout::config::Config::load(&path).unwrap();
    let public = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let opts = turnout::app::StartOptions {
        config_path: Some(path),
        env: no_env(),
    };
    let proxy = turnout::app::start_with(cfg, secrets(), public, admin, opts)
        .await
        .unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("http://{}/v1/chat/completions", proxy.addr);
    let claude = || {
        http.post(&url)
            .json(&serde_json::json!({"model": "claude-x", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    assert_eq!(claude().await.unwrap().status(), 404);
    std::os::unix::fs::symlink("v2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    eventually(
        "the swapped config is in force",
        Duration::from_secs(10),
        || async { claude().await.unwrap().status() == 200 },
    )
    .await;
    proxy.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_reload_restarts_the_probes_of_an_upstream_whose_endpoints_changed_only() {
    let (e1, e2, e3, b) = (
        mock("e1").await,
        mock("e2").await,
        mock("e3").await,
        mock("b").await,
    );
    let yaml = |eps: &[(&str, &MockServer)], b_health: &str| {
        let list: Vec<String> = eps
            .iter()
            .map(|(n, m)| format!("{{name: {n}, base_url: {:?}}}", m.base_url()))
            .collect();
        let relay = format!(
            "  - {{name: relay, endpoints: [{}], health: {{interval: 50ms, timeout: 40ms}}}}\n",
            list.join(", ")
        );
        config(
            &[relay, upstream("b", &b, b_health)],
            "{name: chat, models: ['*'], primary: relay, fallbacks: [b]}",
        )
    };
    let two = [("e1", &e1), ("e2", &e2)];
    let (h, file) = start_file(
        &yaml(&two, "health: {interval: 50ms, timeout: 40ms}"),
        secrets(),
        no_env(),
    )
    .await;
    // Another upstream's probe settings change: the relay's loops stay.
    rewrite(
        &file,
        &h,
        &yaml(&two, "health: {interval: 60ms, timeout: 40ms}"),
    );
    let (status, body) = reload(&h).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["probes_restarted"], serde_json::json!(["b"]), "{body}");
    // An endpoint is added: the relay's loops restart, one per endpoint.
    let three = [("e1", &e1), ("e2", &e2), ("e3", &e3)];
    rewrite(
        &file,
        &h,
        &yaml(&three, "health: {interval: 60ms, timeout: 40ms}"),
    );
    let (status, body) = reload(&h).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["probes_restarted"],
        serde_json::json!(["relay"]),
        "{body}"
    );
    let st = h.status().await;
    let eps = st["upstreams"][0]["endpoints"].as_array().unwrap().clone();
    assert_eq!(eps.len(), 3, "{st}");
    eventually(
        "the new endpoint is probed",
        Duration::from_secs(10),
        || async {
            let m = h.metrics().await;
            metric_sum(
                &m,
                "turnout_probes_total",
                &["endpoint=\"e3\"", "result=\"ok\""],
            ) > 0.0
        },
    )
    .await;
    // Nothing unchanged: no loop restarts.
    let (status, body) = reload(&h).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["probes_restarted"], serde_json::json!([]), "{body}");
    assert_eq!(h.chat("u").await.status(), 200);
}
