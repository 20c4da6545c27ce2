//! Helpers of the WebSocket tests: an in-process proxy in front of two mock
//! providers, a real WebSocket client, and reads under a deadline.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a failed step is a failed test"
)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use turnout::app::Running;
use turnout::config::{Config, Secret, Secrets};
use turnout::mock::{MockServer, MockSettings};

/// Longest wait for anything; far above what a loaded 2-core machine needs.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// The client key of keyed harnesses.
pub const KEY: &str = "k";

/// A client socket.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What a harness is made of.
pub struct Opts {
    /// `auth.keys: [{name: team, key_env: WS_KEY}]` instead of `disabled: true`.
    pub keyed: bool,
    /// YAML of the `websocket` section (flow style), e.g. `{max_in_flight: 1}`.
    pub websocket: &'static str,
    /// YAML of both upstreams' `timeouts` (flow style), e.g. `{total: 500ms}`.
    pub timeouts: &'static str,
    /// YAML of the `failover` section (flow style), e.g. `{same_upstream_retries: 0}`.
    pub failover: &'static str,
    pub primary: MockSettings,
    pub fallback: MockSettings,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            keyed: false,
            websocket: "{}",
            timeouts: "{}",
            failover: "{}",
            primary: mock("primary"),
            fallback: mock("fallback"),
        }
    }
}

/// Mock settings with a name (its answers say `Hello from NAME.`).
pub fn mock(name: &str) -> MockSettings {
    MockSettings {
        name: name.to_owned(),
        ..MockSettings::default()
    }
}

/// The text a mock of `name` streams with `chunks` pieces.
pub fn answer(name: &str, chunks: usize) -> String {
    let words = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy"];
    let mut s = format!("Hello from {name}. ");
    for w in words.iter().cycle().take(chunks.saturating_sub(1)) {
        s.push_str(w);
        s.push(' ');
    }
    s
}

/// A proxy whose route `chat` (every model) is `primary`, then `fallback`.
pub struct Harness {
    pub proxy: Running,
    pub primary: MockServer,
    pub fallback: MockServer,
    state: std::path::PathBuf,
}

impl Harness {
    pub async fn start(o: Opts) -> Self {
        let primary = MockServer::start(o.primary).await.unwrap();
        let fallback = MockServer::start(o.fallback).await.unwrap();
        let state =
            std::env::temp_dir().join(format!("turnout-ws-{:016x}.json", fastrand::u64(..)));
        let auth = if o.keyed {
            "{keys: [{name: team, key_env: WS_KEY}]}"
        } else {
            "{disabled: true}"
        };
        let yaml = format!(
            "listen: 127.0.0.1:0\nstate_path: {state:?}\nauth: {auth}\nwebsocket: {ws}\nfailover: {fo}\n\
             upstreams:\n  - {{name: primary, base_url: '{p}', timeouts: {t}}}\n  - {{name: fallback, base_url: '{f}', timeouts: {t}}}\n\
             routes:\n  - {{name: chat, models: ['*'], primary: primary, fallbacks: [fallback]}}\n",
            ws = o.websocket,
            t = o.timeouts,
            fo = o.failover,
            p = primary.base_url(),
            f = fallback.base_url(),
        );
        let cfg = Config::from_yaml(&yaml).unwrap();
        let secrets = Secrets {
            client_keys: if o.keyed {
                vec![Secret(KEY.into())]
            } else {
                vec![]
            },
            ..Default::default()
        };
        let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = turnout::app::start(cfg, secrets, public, admin)
            .await
            .unwrap();
        Self {
            proxy,
            primary,
            fallback,
            state,
        }
    }

    /// `ws://…/v1/ws/chat?QUERY`.
    pub fn url(&self, query: &str) -> String {
        format!("ws://{}/v1/ws/chat?{query}", self.proxy.addr)
    }

    /// Connects with extra handshake headers.
    pub async fn connect(&self, query: &str, headers: &[(&'static str, &str)]) -> Ws {
        let mut req = self.url(query).into_client_request().unwrap();
        for (k, v) in headers {
            req.headers_mut().insert(*k, v.parse().unwrap());
        }
        let (ws, _) = tokio::time::timeout(DEADLINE, tokio_tungstenite::connect_async(req))
            .await
            .expect("connect timed out")
            .expect("connect failed");
        ws
    }

    /// The proxy's metrics text.
    pub fn metrics(&self) -> String {
        self.proxy.state.metrics.render()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.state);
    }
}

/// Sends one JSON text frame.
pub async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

/// The next frame other than ping/pong, under the deadline; `None` at the end.
pub async fn next_frame(ws: &mut Ws) -> Option<Message> {
    loop {
        let m = tokio::time::timeout(DEADLINE, ws.next())
            .await
            .expect("no frame before the deadline");
        match m {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(m)) => return Some(m),
            Some(Err(_)) | None => return None,
        }
    }
}

/// The next JSON message (panics on a close or the end).
pub async fn next_json(ws: &mut Ws) -> Value {
    match next_frame(ws).await {
        Some(Message::Text(t)) => serde_json::from_str(t.as_str()).unwrap(),
        other => panic!("expected a JSON text frame, got {other:?}"),
    }
}

/// The close code the server sent (panics if another message comes first).
pub async fn close_code(ws: &mut Ws) -> u16 {
    match next_frame(ws).await {
        Some(Message::Close(Some(f))) => u16::from(f.code),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

/// One request's replies: its deltas' text and its last message.
#[derive(Debug)]
pub struct Reply {
    pub text: String,
    pub deltas: usize,
    pub last: Value,
}

/// Reads until the `done` or `error` of `id`; messages of other ids are an error.
pub async fn reply(ws: &mut Ws, id: &str) -> Reply {
    let mut r = Reply {
        text: String::new(),
        deltas: 0,
        last: Value::Null,
    };
    loop {
        let m = next_json(ws).await;
        assert_eq!(m["id"], id, "unexpected message {m}");
        match m["type"].as_str() {
            Some("delta") => {
                r.text.push_str(m["content"].as_str().unwrap());
                r.deltas += 1;
            }
            Some("done" | "error") => {
                r.last = m;
                return r;
            }
            _ => panic!("unexpected message {m}"),
        }
    }
}

/// Polls `f` until it holds, or panics at the deadline.
pub async fn eventually(what: &str, f: impl Fn() -> bool) {
    let end = tokio::time::Instant::now() + DEADLINE;
    while !f() {
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The JSON body of the mock's last request.
pub fn last_body(m: &MockServer) -> Value {
    serde_json::from_slice(&m.last_request().unwrap().body).unwrap()
}

/// Sum of a metric's samples whose line holds every one of `labels`
/// (e.g. `reason="total_timeout"`).
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter_map(|l| l.strip_prefix(name))
        .filter(|rest| rest.starts_with('{') || rest.starts_with(' '))
        .filter(|rest| labels.iter().all(|x| rest.contains(x)))
        .filter_map(|rest| rest.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
