//! The operator's page (`GET /admin/`, PRODUCT.md §3.11) in a real browser:
//! headless Chromium loads it from the admin listener, is given the token,
//! reads both upstreams and the share, moves the share (confirming), rolls
//! back, and the results are checked through the JSON admin API. Screenshots
//! at 1280 and 375 px wide are written under the target dir.
#![expect(clippy::expect_used, reason = "a failed step is a failed test")]

mod browser;
mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use browser::Browser;
use common::*;
use serde_json::json;

fn split_config(a: &turnout::mock::MockServer, b: &turnout::mock::MockServer) -> String {
    config(
        &[upstream("openai", a, ""), upstream("relay", b, "")],
        r#"{name: chat, models: ["*"], primary: openai, fallbacks: [relay], split: {target: relay, percentage: 10}}"#,
    )
}

/// Chat requests at a modest pace until `stop` (at most 3,000), so the
/// page has live rates to show.
fn background_traffic(h: &Harness, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    let (http, url) = (h.http.clone(), format!("{}/v1/chat/completions", h.url));
    tokio::spawn(async move {
        for i in 0..3000u32 {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let body = json!({"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]});
            let _ = http
                .post(&url)
                .header("x-user-id", format!("user-{}", i % 50))
                .json(&body)
                .send()
                .await;
            // Pacing, not synchronisation: about 30 requests a second.
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    })
}

async fn share(h: &Harness) -> f64 {
    h.status().await["routes"][0]["split"]["percentage"]
        .as_f64()
        .expect("percentage")
}

/// Where the screenshots go (printed by the test).
fn artifacts() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("admin-page")
}

#[tokio::test]
async fn page_and_assets_are_served_without_token_under_a_strict_csp() {
    let (a, b) = (mock("openai").await, mock("relay").await);
    let h = start(&split_config(&a, &b)).await;
    for (path, ty) in [
        ("/admin/", "text/html"),
        ("/admin/assets/app.js", "text/javascript"),
        ("/admin/assets/app.css", "text/css"),
    ] {
        let rsp = h
            .http
            .get(format!("{}{path}", h.admin_url))
            .send()
            .await
            .expect("get");
        assert_eq!(rsp.status(), 200, "{path}");
        let hd = rsp.headers();
        assert!(hd["content-type"].to_str().unwrap_or("").starts_with(ty));
        let csp = hd["content-security-policy"].to_str().unwrap_or("");
        assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
        assert_eq!(hd["x-content-type-options"], "nosniff");
    }
    // `/admin` sends the browser to the page, so its relative links resolve.
    let rsp = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .expect("client")
        .get(format!("{}/admin", h.admin_url))
        .send()
        .await
        .expect("get");
    assert_eq!(rsp.status(), 308);
    assert_eq!(rsp.headers()["location"], "/admin/");
    // The data behind the page still needs the token.
    let rsp = h
        .http
        .get(format!("{}/admin/traffic", h.admin_url))
        .send()
        .await
        .expect("get");
    assert_eq!(rsp.status(), 401);
}

#[tokio::test]
async fn traffic_counts_requests_and_errors_per_upstream() {
    let (a, b) = (mock("openai").await, mock("relay").await);
    let h = start(&split_config(&a, &b)).await;
    h.admin(reqwest::Method::PUT, "/admin/routes/chat/split")
        .json(&json!({"percentage": 0}))
        .send()
        .await
        .expect("put");
    for i in 0..3 {
        assert_eq!(h.chat(&format!("u{i}")).await.status(), 200);
    }
    let rsp = h
        .http
        .post(format!("{}/v1/chat/completions", h.url))
        .header("x-mock-fault", "status=500")
        .json(&json!({"model": "m", "messages": []}))
        .send()
        .await
        .expect("post");
    assert!(rsp.status().is_server_error());
    let t: serde_json::Value = h
        .admin(reqwest::Method::GET, "/admin/traffic")
        .send()
        .await
        .expect("traffic")
        .json()
        .await
        .expect("json");
    assert_eq!(t["requests"], 4);
    assert_eq!(t["errors"], 1);
    let per = |up: &str, k: &str| t["upstreams"][up][k].as_u64().unwrap_or(0);
    assert_eq!(per("openai", "requests") + per("relay", "requests"), 4);
    // The failing request is counted on the last upstream it tried.
    assert_eq!(per("openai", "errors") + per("relay", "errors"), 1);
    // The failed request's attempts (how many depends on the retry budget).
    for up in ["openai", "relay"] {
        assert!(
            t["upstreams"][up]["failed_attempts"].as_u64() >= Some(1),
            "{t}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_moves_the_share_and_rolls_back_in_a_real_browser() {
    let Some(mut browser) = Browser::launch("operator page browser test").await else {
        return;
    };
    let (a, b) = (mock("openai").await, mock("relay").await);
    let probes = "health: {interval: 1s, timeout: 500ms}";
    let h = start(&config(
        &[upstream("openai", &a, probes), upstream("relay", &b, probes)],
        r#"{name: chat, models: ["*"], primary: openai, fallbacks: [relay], split: {target: relay, percentage: 10}}"#,
    ))
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = background_traffic(&h, stop.clone());
    let mut page = browser.page().await;
    page.viewport(1280, 900, false).await;
    page.navigate(&format!("{}/admin/", h.admin_url)).await;
    page.wait_for(
        "document.body.dataset.ready === 'true' && !document.getElementById('login-view').hidden",
        "the token form",
    )
    .await;

    // A wrong token is refused and the form stays.
    page.type_into("#token", "not-the-token").await;
    page.click("#login-submit").await;
    page.wait_for(
        "document.getElementById('login-error').textContent.includes('refused')",
        "the refusal",
    )
    .await;
    assert_eq!(
        page.eval("sessionStorage.getItem('turnout.adminToken')")
            .await,
        json!(null)
    );

    // The right one opens the dashboard: both upstreams and the share.
    page.type_into("#token", ADMIN_TOKEN).await;
    page.click("#login-submit").await;
    page.wait_for("document.body.dataset.loaded === 'true'", "the dashboard")
        .await;
    let upstreams = page
        .eval(
            "[...document.querySelectorAll('[data-upstream]')].map(e => \
             [e.dataset.upstream, e.querySelector('[data-field=state]').textContent])",
        )
        .await;
    assert_eq!(
        upstreams,
        json!([["openai", "healthy"], ["relay", "healthy"]])
    );
    let pct = "document.querySelector('[data-route=chat] [data-field=percentage]').textContent";
    assert_eq!(page.eval(pct).await, json!("10%"));
    let chain = "document.querySelector('[data-route=chat] [data-field=chain]').textContent";
    assert_eq!(page.eval(chain).await, json!("openai → relay"));

    // Kept for the tab: a reload does not ask again.
    page.cdp.call("Page.reload", json!({})).await;
    page.wait_for(
        "document.body.dataset.loaded === 'true'",
        "the dashboard after a reload",
    )
    .await;
    // Live rates appear from the second poll on.
    page.wait_for(
        "document.getElementById('rate-requests').textContent !== '–'",
        "a request rate",
    )
    .await;

    // Moving the share asks first; cancelling changes nothing.
    page.type_into("[data-route=chat] .share-input", "30").await;
    page.click("[data-route=chat] .set-share").await;
    page.wait_for(
        "document.getElementById('confirm').open",
        "the confirmation",
    )
    .await;
    let question = page
        .eval("document.getElementById('confirm-text').textContent")
        .await;
    let question = question.as_str().unwrap_or("");
    assert!(
        question.contains("10%") && question.contains("30%"),
        "{question}"
    );
    page.click("#confirm-cancel").await;
    page.wait_for(
        "!document.getElementById('confirm').open",
        "the dialog to close",
    )
    .await;
    assert_eq!(share(&h).await, 10.0);

    // Confirmed, it takes: the JSON API and the page both say 30 %.
    page.click("[data-route=chat] .set-share").await;
    page.wait_for(
        "document.getElementById('confirm').open",
        "the confirmation",
    )
    .await;
    page.click("#confirm-ok").await;
    page.wait_for(&format!("{pct} === '30%'"), "the page to show 30 %")
        .await;
    eventually("the share at 30 %", Duration::from_secs(20), || async {
        share(&h).await == 30.0
    })
    .await;
    page.wait_for(
        "document.getElementById('toast').textContent.includes('10% → 30%')",
        "the change to be reported",
    )
    .await;
    // Live figures for the pictures: rates over a few polls, probe latencies.
    page.wait_for(
        "document.getElementById('spark-line').getAttribute('points').split(' ').length >= 3 \
         && !['0', '–'].includes(document.getElementById('rate-requests').textContent) \
         && document.querySelector('[data-upstream=relay] [data-field=probe_latency_ms]').textContent !== '–'",
        "live rates and probe latencies",
    )
    .await;
    let dir = artifacts();
    page.screenshot(&dir.join("admin-1280.png")).await;

    // A phone: one column, nothing wider than the screen.
    page.viewport(375, 812, true).await;
    page.wait_for(
        "document.documentElement.scrollWidth <= window.innerWidth \
         && getComputedStyle(document.getElementById('toast')).opacity === '0'",
        "no horizontal scrolling at 375 px (and the note gone)",
    )
    .await;
    page.screenshot(&dir.join("admin-375.png")).await;

    // Roll back, confirmed: 0 % through the API, and on the page.
    page.click("[data-route=chat] .rollback").await;
    page.wait_for(
        "document.getElementById('confirm').open",
        "the confirmation",
    )
    .await;
    page.click("#confirm-ok").await;
    eventually("the share at 0 %", Duration::from_secs(20), || async {
        share(&h).await == 0.0
    })
    .await;
    page.wait_for(&format!("{pct} === '0%'"), "the page to show 0 %")
        .await;
    let m = h.metrics().await;
    assert_eq!(
        metric_sum(
            &m,
            "turnout_rollbacks_total",
            &["route=\"chat\"", "trigger=\"manual\""]
        ),
        1.0
    );

    stop.store(true, Ordering::Relaxed);
    load.await.expect("traffic task");
    let problems = page.problems();
    assert!(
        problems.is_empty(),
        "script errors or CSP violations: {problems:?}"
    );
    println!("screenshots: {}", dir.display());
    browser.close().await;
}
