//! The `turnout` binary under signals (PRODUCT.md §3.8): SIGTERM with open
//! streams and a WebSocket (`/ready` 503 at once, streams complete, the socket
//! closes with 1001, exit 0), and SIGHUP reloading the config file.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed unwrap is a failed assertion"
)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

/// Stops the child by its PID even when an assertion fails.
struct Turnout {
    child: Child,
    addr: String,
    admin: String,
    /// Its stderr after the listening line, line by line.
    lines: std::sync::mpsc::Receiver<String>,
}

impl Drop for Turnout {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Turnout {
    fn start(config: &std::path::Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_turnout"))
            .arg("--config")
            .arg(config)
            .env_remove("TURNOUT_CONFIG")
            .env_remove("RUST_LOG")
            .env("TURNOUT_ADMIN_TOKEN", "admin-secret")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let line = lines
            .by_ref()
            .map_while(Result::ok)
            .find(|l| l.starts_with("turnout listening on http://"))
            .expect("listening line");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let mut words = line.split("http://").skip(1);
        let addr = words.next().unwrap().split(' ').next().unwrap().to_owned();
        let admin = words.next().unwrap().trim_end_matches(')').to_owned();
        Self {
            child,
            addr,
            admin,
            lines: rx,
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }

    /// Waits for the exit (polled, with a deadline).
    fn exit_status(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "turnout did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Access lines (`request request_id=...`) among what it has written
    /// so far, waiting up to `within` for at least `want` of them.
    fn access_lines(&self, want: usize, within: Duration, seen: &mut usize) {
        let deadline = Instant::now() + within;
        while *seen < want {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains("INFO turnout::accounting: request request_id=") => *seen += 1,
                Ok(_) => {}
                Err(_) => panic!("{} access lines of {want} within {within:?}", *seen),
            }
        }
    }
}

fn config_file(yaml: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("turnout-sig-{}.yaml", fastrand::u64(..)));
    let state = p.with_extension("json");
    std::fs::write(
        &p,
        format!("state_path: {:?}\n{yaml}", state.display().to_string()),
    )
    .unwrap();
    p
}

const SLOW: &str = "listen: 127.0.0.1:0\nadmin: {listen: 127.0.0.1:0}\nauth: {disabled: true}\nshutdown: {grace: 1s, drain: 20s}\nupstreams:\n  - {name: sim, simulate: {ttft: 50ms, chunks: 12, chunk_delay: 250ms}}\nroutes:\n  - {name: chat, models: ['*'], primary: sim}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_ready_off_at_once_lets_streams_finish_and_exits_0() {
    turnout::upstream::install_crypto();
    let path = config_file(SLOW);
    let mut t = Turnout::start(&path);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("http://{}", t.addr);
    assert_eq!(
        http.get(format!("{url}/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let mut streams = Vec::new();
    for i in 0..3 {
        let rsp = http
            .post(format!("{url}/v1/chat/completions"))
            .json(
                &serde_json::json!({"model": "gpt-4.1", "stream": true, "user": format!("u{i}"),
                "messages": [{"role": "user", "content": "hi"}]}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(rsp.status(), 200);
        streams.push(tokio::spawn(
            async move { rsp.text().await.unwrap_or_default() },
        ));
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/v1/ws/chat", t.addr))
        .await
        .unwrap();
    t.signal("TERM");
    let t0 = Instant::now();
    loop {
        let r = http.get(format!("{url}/ready")).send().await.unwrap();
        if r.status() == 503 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_millis(900),
            "/ready still {} after SIGTERM",
            r.status()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Still accepting during the grace.
    assert_eq!(
        http.get(format!("{url}/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    for s in streams {
        let body = s.await.unwrap();
        assert!(
            body.trim_end().ends_with("data: [DONE]"),
            "stream cut short: {body}"
        );
    }
    let close = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Close(f) = m {
                return f.map(|f| u16::from(f.code));
            }
        }
        None
    })
    .await
    .unwrap();
    assert_eq!(close, Some(1001));
    let status = tokio::task::spawn_blocking(move || t.exit_status(Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_config_file() {
    turnout::upstream::install_crypto();
    let path = config_file(SLOW);
    let t = Turnout::start(&path);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        format!("{text}  - {{name: extra, models: ['x-*'], primary: sim}}\n"),
    )
    .unwrap();
    t.signal("HUP");
    let admin = format!("http://{}", t.admin);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status: serde_json::Value = http
            .get(format!("{admin}/admin/status"))
            .bearer_auth("admin-secret")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if status["routes"].as_array().unwrap().len() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "SIGHUP did not reload: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The new snapshot is in force before the reloader counts it: poll.
    loop {
        let m = http
            .get(format!("{admin}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if m.contains("turnout_config_reloads_total{result=\"ok\"} 1") {
            break;
        }
        assert!(Instant::now() < deadline, "reload not counted: {m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const QUICK: &str = "listen: 127.0.0.1:0\nadmin: {listen: 127.0.0.1:0}\nauth: {disabled: true}\nupstreams:\n  - {name: sim, simulate: {ttft: 1ms, chunks: 2, chunk_delay: 1ms}}\nroutes:\n  - {name: chat, models: ['*'], primary: sim}\n";

/// Access lines wait per worker thread while it is busy (one write for a
/// batch): an idle server still writes every line at once, and one stopped
/// by SIGTERM writes all it held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_lines_are_written_when_idle_and_at_exit() {
    turnout::upstream::install_crypto();
    let path = config_file(QUICK);
    let mut t = Turnout::start(&path);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("http://{}/v1/chat/completions", t.addr);
    let burst = |n: usize| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let sends = (0..n).map(|i| {
                http.post(&url)
                    .json(
                        &serde_json::json!({"model": "gpt-4.1", "user": format!("u{i}"),
                        "messages": [{"role": "user", "content": "hi"}]}),
                    )
                    .send()
            });
            for r in futures_util::future::join_all(sends).await {
                assert_eq!(r.unwrap().status(), 200);
            }
        }
    };
    let mut seen = 0;
    burst(40).await;
    // No more traffic: the lines of all 40 arrive by themselves.
    t.access_lines(40, Duration::from_secs(10), &mut seen);
    burst(40).await;
    t.signal("TERM");
    assert!(t.exit_status(Duration::from_secs(20)).success());
    t.access_lines(80, Duration::from_secs(5), &mut seen);
    let _ = std::fs::remove_file(&path);
}
