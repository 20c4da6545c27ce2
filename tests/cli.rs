//! The `turnout` binary: `check` names bad keys, `serve` serves the shipped config.

#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed assertion"
)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn turnout() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_turnout"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("TURNOUT_CONFIG")
        .env_remove("RUST_LOG");
    c
}

fn temp_file(text: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("turnout-cli-{}.yaml", fastrand::u64(..)));
    std::fs::write(&p, text).unwrap();
    p
}

const GOOD: &str = "listen: 127.0.0.1:0\nadmin: {listen: 127.0.0.1:0}\nauth: {disabled: true}\nupstreams:\n  - {name: a, base_url: 'http://127.0.0.1:9/v1', api_key_env: TURNOUT_TEST_UNSET_KEY}\nroutes:\n  - {name: chat, models: ['*'], primary: a}\n";

#[test]
fn check_accepts_the_shipped_config() {
    let out = turnout()
        .args(["check", "--config", "config.yaml"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
}

#[test]
fn check_names_a_misspelled_key_and_its_line() {
    let p = temp_file(&GOOD.replace("primary: a", "primery: a"));
    let out = turnout()
        .arg("check")
        .arg("--config")
        .arg(&p)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("primery") && err.contains("line 7"), "{err}");
}

#[test]
fn check_warns_about_unset_env_vars_and_strict_fails() {
    let p = temp_file(GOOD);
    let out = turnout()
        .arg("check")
        .arg("--config")
        .arg(&p)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("TURNOUT_TEST_UNSET_KEY"));
    let out = turnout()
        .args(["check", "--strict", "--config"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn serve_refuses_a_missing_upstream_key_naming_the_variable() {
    let p = temp_file(GOOD);
    let out = turnout()
        .arg("serve")
        .arg("--config")
        .arg(&p)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("TURNOUT_TEST_UNSET_KEY"));
}

#[test]
fn serve_runs_the_simulated_demo_and_answers() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.yaml"))
        .unwrap()
        .replace("127.0.0.1:8080", "127.0.0.1:0")
        .replace("127.0.0.1:9090", "127.0.0.1:0")
        .replace(
            "state_path: turnout-state.json",
            &format!(
                "state_path: {:?}",
                std::env::temp_dir().join(format!("t-{}.json", fastrand::u64(..)))
            ),
        );
    let p = temp_file(&text);
    turnout::upstream::install_crypto();
    let mut child = KillOnDrop(
        turnout()
            .arg("--config")
            .arg(&p)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = child.0.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let addr = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            l.strip_prefix("turnout listening on http://")
                .map(|r| r.split(' ').next().unwrap().to_owned())
        })
        .expect("listening line");
    std::thread::spawn(move || for _ in lines {});
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = rt.block_on(async {
        reqwest::Client::new()
            .post(format!("http://{addr}/v1/chat/completions"))
            .body(r#"{"model":"gpt-4.1","messages":[{"role":"user","content":"hi"}]}"#)
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 200);
}

/// Stops the child by its PID even when an assertion fails.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
