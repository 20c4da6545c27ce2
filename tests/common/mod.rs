//! Shared test harness: a proxy started in-process on 127.0.0.1:0 in front of
//! simulated providers, and helpers that talk to it like a client would.
#![allow(dead_code, reason = "each test file uses a different subset")]
#![expect(
    clippy::expect_used,
    reason = "a broken harness should fail the test loudly"
)]

use std::path::PathBuf;
use std::time::Duration;

use turnout::app::Running;
use turnout::config::{Config, Secret, Secrets};
use turnout::mock::{MockServer, MockSettings};

/// Admin token used by every harness.
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// A running proxy plus a client.
pub struct Harness {
    pub proxy: Running,
    pub url: String,
    pub admin_url: String,
    pub http: reqwest::Client,
    pub state_path: PathBuf,
    pub yaml: String,
    pub secrets: Secrets,
}

/// A fresh state file path in the temp dir.
pub fn temp_state() -> PathBuf {
    std::env::temp_dir().join(format!(
        "turnout-test-{}-{}.json",
        std::process::id(),
        fastrand::u64(..)
    ))
}

/// Starts a mock provider with a name and default settings.
pub async fn mock(name: &str) -> MockServer {
    mock_with(MockSettings {
        name: name.into(),
        ..Default::default()
    })
    .await
}

/// Starts a mock provider with settings.
pub async fn mock_with(settings: MockSettings) -> MockServer {
    MockServer::start(settings).await.expect("mock starts")
}

/// Default secrets: admin token only.
pub fn secrets() -> Secrets {
    Secrets {
        admin_token: Some(Secret(ADMIN_TOKEN.into())),
        ..Default::default()
    }
}

/// Starts the proxy on `yaml` (its `state_path` is replaced by a temp file).
pub async fn start(yaml: &str) -> Harness {
    start_with(yaml, secrets(), temp_state()).await
}

/// Starts the proxy with explicit secrets and state file.
pub async fn start_with(yaml: &str, secrets: Secrets, state_path: PathBuf) -> Harness {
    let full = format!("state_path: {:?}\n{yaml}", state_path.display().to_string());
    let cfg = Config::from_yaml(&full).expect("valid test config");
    let public = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let proxy = turnout::app::start(cfg, secrets.clone(), public, admin)
        .await
        .expect("proxy starts");
    Harness {
        url: format!("http://{}", proxy.addr),
        admin_url: format!("http://{}", proxy.admin_addr),
        proxy,
        http: reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client"),
        state_path,
        yaml: yaml.to_owned(),
        secrets,
    }
}

/// Starts the proxy from a config file (written from `yaml`, its
/// `state_path` replaced by a temp file), so that it can be reloaded; env-var
/// secrets come from `env`.
pub async fn start_file(
    yaml: &str,
    secrets: Secrets,
    env: turnout::app::Env,
) -> (Harness, PathBuf) {
    let state_path = temp_state();
    let full = format!("state_path: {:?}\n{yaml}", state_path.display().to_string());
    let file = state_path.with_extension("yaml");
    std::fs::write(&file, &full).expect("write config");
    let cfg = Config::from_yaml(&full).expect("valid test config");
    let public = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let opts = turnout::app::StartOptions {
        config_path: Some(file.clone()),
        env,
    };
    let proxy = turnout::app::start_with(cfg, secrets.clone(), public, admin, opts)
        .await
        .expect("proxy starts");
    let h = Harness {
        url: format!("http://{}", proxy.addr),
        admin_url: format!("http://{}", proxy.admin_addr),
        proxy,
        http: reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client"),
        state_path,
        yaml: yaml.to_owned(),
        secrets,
    };
    (h, file)
}

/// Rewrites a config file started with [`start_file`] (same `state_path`).
pub fn rewrite(file: &std::path::Path, h: &Harness, yaml: &str) {
    let full = format!(
        "state_path: {:?}\n{yaml}",
        h.state_path.display().to_string()
    );
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, full).expect("write config");
    std::fs::rename(&tmp, file).expect("replace config");
}

impl Harness {
    /// Stops this proxy and starts a new one on the same config and state file.
    pub async fn restart(self) -> Harness {
        let (yaml, secrets, state) = (
            self.yaml.clone(),
            self.secrets.clone(),
            self.state_path.clone(),
        );
        self.proxy.shutdown().await;
        start_with(&yaml, secrets, state).await
    }

    /// POSTs a JSON body to a `/v1` path.
    pub async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request sent")
    }

    /// A small non-streaming chat for a user.
    pub async fn chat(&self, user: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/chat/completions", self.url))
            .header("x-user-id", user)
            .json(&serde_json::json!({"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .expect("request sent")
    }

    /// A streaming chat.
    pub async fn chat_stream(&self, user: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/chat/completions", self.url))
            .header("x-user-id", user)
            .json(&serde_json::json!({
                "model": "gpt-4.1", "stream": true, "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": "hi"}]
            }))
            .send()
            .await
            .expect("request sent")
    }

    /// An admin call with the right token.
    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.admin_url))
            .bearer_auth(ADMIN_TOKEN)
    }

    /// `/admin/status` as JSON.
    pub async fn status(&self) -> serde_json::Value {
        self.admin(reqwest::Method::GET, "/admin/status")
            .send()
            .await
            .expect("status")
            .json()
            .await
            .expect("json")
    }

    /// `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.admin_url))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }
}

/// Sum of a metric's samples whose line contains every one of `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| {
            l.starts_with(name)
                && (l.as_bytes().get(name.len()) == Some(&b'{')
                    || l.as_bytes().get(name.len()) == Some(&b' '))
        })
        .filter(|l| labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Polls `check` until it holds or the deadline passes (then panics with `what`).
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Upstream YAML entry for a mock, probes off unless `health` is given.
pub fn upstream(name: &str, m: &MockServer, extra: &str) -> String {
    let extra = if extra.is_empty() {
        "health: {enabled: false}".to_string()
    } else {
        extra.to_string()
    };
    format!(
        "  - {{name: {name}, base_url: {:?}, {extra}}}\n",
        m.base_url()
    )
}

/// A config with the given upstream lines and one catch-all route.
pub fn config(upstreams: &[String], route: &str) -> String {
    format!(
        "listen: 127.0.0.1:0\nadmin: {{listen: 127.0.0.1:0}}\nauth: {{disabled: true}}\nupstreams:\n{}routes:\n  - {route}\n",
        upstreams.concat()
    )
}

/// Parses an SSE body into its `data:` payloads.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|ev| {
            ev.lines()
                .find_map(|l| l.strip_prefix("data:").map(|d| d.trim().to_owned()))
        })
        .collect()
}

/// Alerts received by a [`webhook`] receiver.
pub type Received = std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>;

/// A local alert webhook receiver: its URL and what it received.
pub async fn webhook() -> (String, Received) {
    let got: Received = Default::default();
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let sink = sink.clone();
            async move {
                let v = serde_json::from_slice(&body).expect("alert is JSON");
                sink.lock().expect("lock").push(v);
                "ok"
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", l.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(l, app).await });
    (url, got)
}
