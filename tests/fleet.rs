//! A fleet sharing state through a real `redis-server` (PRODUCT.md §3.8):
//! three replicas started in-process, Redis started by the test on a free
//! loopback port. Skipped (with a one-line reason) when `redis-server` is not
//! installed, unless `TURNOUT_REQUIRE_EXTERNAL=1`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed unwrap is a failed assertion"
)]

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use reqwest::Method;
use turnout::config::{Secret, Secrets};
use turnout::mock::MockServer;

/// A `redis-server` child process, stopped by its PID on drop.
struct Redis {
    child: Option<Child>,
    port: u16,
    dir: std::path::PathBuf,
}

impl Redis {
    /// Starts one, or explains why not (`None`: skip the test).
    fn start() -> Option<Self> {
        let found = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok();
        if !found {
            if std::env::var("TURNOUT_REQUIRE_EXTERNAL").as_deref() == Ok("1") {
                panic!("redis-server is required (TURNOUT_REQUIRE_EXTERNAL=1) but not installed");
            }
            eprintln!("skipped: redis-server is not installed (apt-get install redis-server)");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("turnout-redis-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = Self {
            child: None,
            port,
            dir,
        };
        r.restart();
        Some(r)
    }

    /// (Re)starts the server on the same port, with no data.
    fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Fleet {
    replicas: Vec<Harness>,
    prefix: String,
    yaml: String,
    secrets: Secrets,
}

impl Fleet {
    async fn start(redis: &Redis, body: &str, n: usize, secrets: Secrets) -> Self {
        let prefix = format!("t{:x}:", fastrand::u64(..));
        let yaml = format!(
            "redis: {{url_env: TURNOUT_REDIS_URL, key_prefix: {prefix:?}, sync_interval: 100ms, timeout: 300ms}}\n{body}"
        );
        let secrets = Secrets {
            redis_url: Some(Secret(redis.url())),
            ..secrets
        };
        let mut fleet = Self {
            replicas: Vec::new(),
            prefix: prefix.clone(),
            yaml,
            secrets,
        };
        for _ in 0..n {
            fleet.add().await;
        }
        fleet
    }

    async fn add(&mut self) -> &Harness {
        let h = start_with(&self.yaml, self.secrets.clone(), temp_state()).await;
        self.replicas.push(h);
        self.replicas.last().unwrap()
    }
}

fn split_route(a: &MockServer, b: &MockServer) -> String {
    config(
        &[upstream("a", a, ""), upstream("b", b, "")],
        "{name: chat, models: ['*'], primary: a, fallbacks: [b], split: {target: b, percentage: 0}}",
    )
}

async fn share(h: &Harness) -> f64 {
    h.status().await["routes"][0]["split"]["percentage"]
        .as_f64()
        .unwrap()
}

async fn set(h: &Harness, pct: f64) -> serde_json::Value {
    let rsp = h
        .admin(Method::PUT, "/admin/routes/chat/split")
        .json(&serde_json::json!({"percentage": pct}))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    rsp.json().await.unwrap()
}

async fn rollback(h: &Harness) -> serde_json::Value {
    let rsp = h
        .admin(Method::POST, "/admin/routes/chat/rollback")
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    rsp.json().await.unwrap()
}

async fn served_by(h: &Harness, user: &str) -> String {
    let rsp = h.chat(user).await;
    assert_eq!(rsp.status(), 200);
    rsp.headers()["x-turnout-upstream"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// Time until every replica has `pct` in force (and, with `expect`, serves
/// a request from that upstream).
async fn propagation(fleet: &Fleet, pct: f64, expect: Option<&str>) -> Duration {
    let t0 = Instant::now();
    for h in &fleet.replicas {
        eventually(
            "the change reaches every replica",
            Duration::from_secs(10),
            || async {
                share(h).await == pct
                    && match expect {
                        Some(up) => served_by(h, "someone").await == up,
                        None => true,
                    }
            },
        )
        .await;
    }
    t0.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_change_and_a_rollback_are_in_force_on_every_replica_within_a_second() {
    let Some(redis) = Redis::start() else { return };
    let (a, b) = (mock("a").await, mock("b").await);
    let fleet = Fleet::start(&redis, &split_route(&a, &b), 3, secrets()).await;
    let answer = set(&fleet.replicas[0], 100.0).await;
    assert_eq!(answer["shared"], true, "{answer}");
    let raised = propagation(&fleet, 100.0, Some("b")).await;
    let answer = rollback(&fleet.replicas[1]).await;
    assert_eq!(answer["shared"], true, "{answer}");
    let rolled_back = propagation(&fleet, 0.0, Some("a")).await;
    eprintln!("propagation: raise {raised:?}, rollback {rolled_back:?}");
    assert!(raised < Duration::from_secs(1), "raise took {raised:?}");
    assert!(
        rolled_back < Duration::from_secs(1),
        "rollback took {rolled_back:?}"
    );
    let m = fleet.replicas[1].metrics().await;
    assert_eq!(metric_sum(&m, "turnout_shared_state_up", &[]), 1.0);
    assert_eq!(
        metric_sum(&m, "turnout_rollbacks_total", &["trigger=\"manual\""]),
        1.0
    );
    // Counted once, by the replica that rolled back.
    let m0 = fleet.replicas[0].metrics().await;
    assert_eq!(
        metric_sum(&m0, "turnout_rollbacks_total", &["trigger=\"manual\""]),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_started_later_serves_the_shared_share_from_its_first_request() {
    let Some(redis) = Redis::start() else { return };
    let (a, b) = (mock("a").await, mock("b").await);
    let mut fleet = Fleet::start(&redis, &split_route(&a, &b), 1, secrets()).await;
    set(&fleet.replicas[0], 100.0).await;
    let late = fleet.add().await;
    let ready = late
        .http
        .get(format!("{}/ready", late.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(served_by(late, "first-user").await, "b");
    assert_eq!(share(late).await, 100.0);
    // Without shared state the same config would have started at 0 %.
    let m = late.metrics().await;
    assert_eq!(metric_sum(&m, "turnout_split_percentage", &[]), 100.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_rpm_holds_across_three_replicas_within_five_percent() {
    let Some(redis) = Redis::start() else { return };
    let a = mock("a").await;
    let body = format!(
        "listen: 127.0.0.1:0\nadmin: {{listen: 127.0.0.1:0}}\nauth: {{keys: [{{name: k, key_env: K, rpm: 600}}]}}\nupstreams:\n{}routes:\n  - {{name: chat, models: ['*'], primary: a}}\n",
        upstream("a", &a, "")
    );
    let secrets = Secrets {
        client_keys: vec![Secret("k-secret".into())],
        ..secrets()
    };
    let fleet = Fleet::start(&redis, &body, 3, secrets).await;
    let counting = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let admitted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for h in &fleet.replicas {
        let (url, http) = (h.url.clone(), h.http.clone());
        let (counting, stop, admitted, refused) = (
            counting.clone(),
            stop.clone(),
            admitted.clone(),
            refused.clone(),
        );
        load.push(tokio::spawn(async move {
            // About 60 requests a second per replica: 18x the key's 10/s.
            let mut tick = tokio::time::interval(Duration::from_millis(16));
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let rsp = http
                    .post(format!("{url}/v1/chat/completions"))
                    .bearer_auth("k-secret")
                    .json(&serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
                    .send()
                    .await
                    .unwrap();
                let status = rsp.status().as_u16();
                assert!(status == 200 || status == 429, "{status}");
                if status == 429 {
                    assert!(rsp.headers().contains_key("retry-after"));
                }
                if counting.load(Ordering::Relaxed) {
                    let c = if status == 200 { &admitted } else { &refused };
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // The burst (one minute's worth, held in Redis) first: wait for a second
    // in which the fleet admits about the steady rate; then measure.
    counting.store(true, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let before = admitted.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(1)).await;
        if admitted.load(Ordering::Relaxed) - before <= 15 {
            break;
        }
        assert!(Instant::now() < deadline, "the burst was never spent");
    }
    counting.store(false, Ordering::Relaxed);
    admitted.store(0, Ordering::Relaxed);
    refused.store(0, Ordering::Relaxed);
    let window = Duration::from_secs(20);
    counting.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    counting.store(false, Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let got = admitted.load(Ordering::Relaxed) as f64;
    let expected = 600.0 / 60.0 * elapsed;
    eprintln!(
        "fleet admitted {got} in {elapsed:.1} s (expected {expected:.0}), refused {}",
        refused.load(Ordering::Relaxed)
    );
    assert!(refused.load(Ordering::Relaxed) > 0);
    assert!(
        (got - expected).abs() <= 0.05 * expected,
        "fleet admitted {got}, expected {expected:.0} ± 5 %"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_under_traffic_loses_no_request_and_no_rollback() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let (a, b) = (mock("a").await, mock("b").await);
    let (hook, alerts) = webhook().await;
    let body = format!("alerts: {{webhook_url: {hook:?}}}\n{}", split_route(&a, &b));
    let fleet = Fleet::start(&redis, &body, 3, secrets()).await;
    // A raise made before the outage, shared.
    set(&fleet.replicas[1], 50.0).await;
    propagation(&fleet, 50.0, None).await;
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let served = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for (i, h) in fleet.replicas.iter().enumerate() {
        let (url, http) = (h.url.clone(), h.http.clone());
        let (stop, failed, served) = (stop.clone(), failed.clone(), served.clone());
        load.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let ok = http
                    .post(format!("{url}/v1/chat/completions"))
                    .header("x-user-id", format!("u{i}-{n}"))
                    .json(&serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200);
                let c = if ok { &served } else { &failed };
                c.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }
    redis.kill();
    for h in &fleet.replicas {
        eventually(
            "every replica sees Redis gone",
            Duration::from_secs(10),
            || async { metric_sum(&h.metrics().await, "turnout_shared_state_up", &[]) == 0.0 },
        )
        .await;
        let ready = h.http.get(format!("{}/ready", h.url)).send().await.unwrap();
        assert_eq!(ready.status(), 200, "/ready stays 200 without Redis");
    }
    let answer = rollback(&fleet.replicas[0]).await;
    assert_eq!(answer["shared"], false, "{answer}");
    assert_eq!(
        share(&fleet.replicas[0]).await,
        0.0,
        "in force locally at once"
    );
    redis.restart();
    let back = propagation(&fleet, 0.0, Some("a")).await;
    eprintln!("rollback in force everywhere {back:?} after Redis came back");
    for h in &fleet.replicas {
        eventually(
            "every replica sees Redis back",
            Duration::from_secs(10),
            || async { metric_sum(&h.metrics().await, "turnout_shared_state_up", &[]) == 1.0 },
        )
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during the outage"
    );
    assert!(served.load(Ordering::Relaxed) > 10);
    eventually(
        "alerts for the loss and the return",
        Duration::from_secs(10),
        || {
            let alerts = alerts.clone();
            async move {
                let got = alerts.lock().unwrap();
                let has = |e: &str| got.iter().any(|a| a["event"] == e);
                has("shared_state_down") && has("shared_state_up")
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_automatic_rollback_is_decided_on_the_fleets_traffic() {
    let Some(redis) = Redis::start() else { return };
    let (a, b) = (mock("a").await, mock("b").await);
    b.set_fault(
        turnout::mock::FaultScope::Chat,
        Some(turnout::mock::Fault::Status {
            code: 500,
            retry_after: None,
        }),
    );
    // No ejection (it would roll back on its own): only the window decides.
    let body = format!(
        "outlier: {{consecutive_failures: 1000, error_rate: 1.0, min_requests: 1000}}\n{}",
        config(
            &[upstream("a", &a, ""), upstream("b", &b, "")],
            "{name: chat, models: ['*'], primary: a, fallbacks: [b], split: {target: b, percentage: 100, auto_rollback: {min_requests: 30, max_error_rate: 0.5, window: 60s}}}",
        )
    );
    let fleet = Fleet::start(&redis, &body, 3, secrets()).await;
    // 12 requests per replica: fewer than min_requests on any one of them,
    // 36 across the fleet. Each fails on b and is served by a.
    for (i, h) in fleet.replicas.iter().enumerate() {
        for n in 0..12 {
            assert_eq!(served_by(h, &format!("u{i}-{n}")).await, "a");
        }
    }
    let t = propagation(&fleet, 0.0, None).await;
    eprintln!("fleet-wide automatic rollback in force everywhere after {t:?}");
    let mut auto = 0.0;
    for h in &fleet.replicas {
        auto += metric_sum(
            &h.metrics().await,
            "turnout_rollbacks_total",
            &["trigger=\"auto\""],
        );
    }
    assert!(auto >= 1.0, "an automatic rollback was counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_starts_and_serves_with_redis_down_and_joins_when_it_comes_up() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    redis.kill();
    let (a, b) = (mock("a").await, mock("b").await);
    let fleet = Fleet::start(&redis, &split_route(&a, &b), 2, secrets()).await;
    for h in &fleet.replicas {
        let ready = h.http.get(format!("{}/ready", h.url)).send().await.unwrap();
        assert_eq!(ready.status(), 200, "Redis declared unreachable: ready");
        assert_eq!(served_by(h, "someone").await, "a");
        let m = h.metrics().await;
        assert_eq!(metric_sum(&m, "turnout_shared_state_up", &[]), 0.0);
    }
    redis.restart();
    for h in &fleet.replicas {
        eventually("Redis seen up", Duration::from_secs(10), || async {
            metric_sum(&h.metrics().await, "turnout_shared_state_up", &[]) == 1.0
        })
        .await;
    }
    let answer = set(&fleet.replicas[0], 100.0).await;
    assert_eq!(answer["shared"], true, "{answer}");
    propagation(&fleet, 100.0, Some("b")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_starts_picks_up_the_ramp_state_from_redis() {
    let Some(redis) = Redis::start() else { return };
    let (a, b) = (mock("a").await, mock("b").await);
    let body = config(
        &[upstream("a", &a, ""), upstream("b", &b, "")],
        "{name: chat, models: ['*'], primary: a, fallbacks: [b], split: {target: b, percentage: 1, ramp: {steps: [1, 5, 25], bake: 30m}}}",
    );
    let mut fleet = Fleet::start(&redis, &body, 1, secrets()).await;
    let ramp = |v: serde_json::Value| v["routes"][0]["split"]["ramp"]["state"].clone();
    assert_eq!(ramp(fleet.replicas[0].status().await), "running");
    let rsp = fleet.replicas[0]
        .admin(Method::POST, "/admin/routes/chat/ramp")
        .json(&serde_json::json!({"action": "pause"}))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    // The admin answer comes once the pause is in force; its write follows.
    let client = redis::Client::open(redis.url()).unwrap();
    let conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("{}ramps", fleet.prefix);
    eventually(
        "the paused ramp is in Redis",
        Duration::from_secs(10),
        || {
            let (mut conn, key) = (conn.clone(), key.clone());
            async move {
                let v: Option<String> = redis::cmd("HGET")
                    .arg(&key)
                    .arg("chat")
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                v.is_some_and(|v| v.contains("paused"))
            }
        },
    )
    .await;
    drop(conn);
    let late = fleet.add().await;
    // Not started anew: the paused ramp was read from Redis.
    assert_eq!(ramp(late.status().await), "paused");
}
