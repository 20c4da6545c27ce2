//! `turnout bench` (PRODUCT.md §3.11) against mock upstreams: a table, JSON
//! whose counts match what the mocks saw, and the `--yes` rule.
#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::process::Output;

use common::*;
use turnout::mock::MockServer;

async fn bench(config: &str, args: &[&str]) -> Output {
    let path = std::env::temp_dir().join(format!("turnout-bench-{}.yaml", fastrand::u64(..)));
    std::fs::write(&path, config).unwrap();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let p = path.clone();
    // The mocks serve on this runtime while the command runs on a blocking thread.
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_turnout"))
            .arg("bench")
            .arg("--config")
            .arg(&p)
            .args(&args)
            .env_remove("RUST_LOG")
            .env("TURNOUT_BENCH_TEST_KEY", "sk-test-not-a-secret")
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    let _ = std::fs::remove_file(&path);
    out
}

fn two(a: &MockServer, b: &MockServer) -> String {
    format!(
        "auth: {{disabled: true}}\nupstreams:\n  - {{name: a, base_url: {:?}, api_key_env: TURNOUT_BENCH_TEST_KEY}}\n  - {{name: b, base_url: {:?}}}\nroutes:\n  - {{name: chat, models: [gpt-4.1], primary: a, fallbacks: [b]}}\n",
        a.base_url(),
        b.base_url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_counts_match_what_the_mocks_saw() {
    let (a, b) = (mock("a").await, mock("b").await);
    let out = bench(&two(&a, &b), &["-n", "7", "-c", "3", "--json", "--yes"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = v["results"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for (row, m) in rows.iter().zip([&a, &b]) {
        assert_eq!(row["requests"], 7);
        assert_eq!(row["ok"].as_u64().unwrap(), m.stats().chat);
        assert_eq!(row["error_rate"], 0.0);
        assert!(row["ttft_ms"]["p50"].as_f64().unwrap() >= 0.0);
        assert!(
            row["total_ms"]["p99"].as_f64().unwrap() >= row["total_ms"]["p50"].as_f64().unwrap()
        );
        assert!(row["completion_tokens"].as_u64().unwrap() > 0);
    }
    assert_eq!((a.stats().chat, b.stats().chat), (7, 7));
    // The upstream's key went to the upstream.
    let auth = a.last_request().unwrap().headers["authorization"].clone();
    assert_eq!(auth, "Bearer sk-test-not-a-secret");
    // The plan was said first (stderr), with requests and tokens.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("7 request(s)") && err.contains("tokens"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_print_a_table_with_errors_by_kind() {
    let (a, b) = (mock("a").await, mock("b").await);
    b.set_fault(
        turnout::mock::FaultScope::Chat,
        Some(turnout::mock::Fault::Status {
            code: 503,
            retry_after: None,
        }),
    );
    let out = bench(
        &two(&a, &b),
        &[
            "-n",
            "4",
            "--stream",
            "--yes",
            "--upstream",
            "a",
            "--upstream",
            "b",
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("TTFT p50") && text.contains("tok/s"),
        "{text}"
    );
    let line_b = text.lines().find(|l| l.starts_with("b ")).unwrap();
    assert!(line_b.contains("http_5xx:4"), "{text}");
    assert_eq!((a.stats().chat, b.stats().chat), (4, 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_a_non_simulated_upstream_without_yes() {
    let (a, b) = (mock("a").await, mock("b").await);
    let out = bench(&two(&a, &b), &["-n", "5"]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--yes") && err.contains("10 request(s)") && err.contains("tokens"),
        "{err}"
    );
    assert_eq!((a.stats().chat, b.stats().chat), (0, 0), "nothing sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_upstreams_need_no_yes() {
    let cfg = "auth: {disabled: true}\nupstreams:\n  - {name: sim, simulate: {chunks: 3}}\nroutes:\n  - {name: chat, models: ['*'], primary: sim}\n";
    let out = bench(cfg, &["-n", "3", "--json", "--model", "gpt-4.1"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["results"][0]["ok"], 3);
    assert_eq!(v["results"][0]["simulated"], true);
}
