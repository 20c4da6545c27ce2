//! Equivalent endpoints of one upstream (PRODUCT.md §3.10): the faster one
//! takes the traffic, a dead one costs no client an error, and one back from
//! ejection gets its share gradually (slow start).

mod common;

use std::time::Duration;

use common::*;
use turnout::mock::{Fault, FaultScope, MockServer, MockSettings};

/// A config whose one route's primary is `relay`, made of the given endpoints.
fn relay_config(eps: &[(&str, &MockServer)], relay_extra: &str, tail: &str) -> String {
    let list: Vec<String> = eps
        .iter()
        .map(|(n, m)| format!("{{name: {n}, base_url: {:?}}}", m.base_url()))
        .collect();
    format!(
        "listen: 127.0.0.1:0\nadmin: {{listen: 127.0.0.1:0}}\nauth: {{disabled: true}}\n\
         upstreams:\n  - {{name: relay, endpoints: [{}], {relay_extra}}}\n\
         routes:\n  - {{name: chat, models: ['*'], primary: relay}}\n{tail}",
        list.join(", ")
    )
}

async fn slow(name: &str, latency: Duration) -> MockServer {
    mock_with(MockSettings {
        name: name.into(),
        latency,
        ..Default::default()
    })
    .await
}

fn endpoint_state(status: &serde_json::Value, name: &str) -> String {
    status["upstreams"][0]["endpoints"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["name"] == name))
        .and_then(|e| e["state"].as_str())
        .unwrap_or("?")
        .to_owned()
}

#[tokio::test]
async fn the_fast_endpoint_takes_most_requests_after_warm_up() {
    let fast = mock("fast").await;
    let slow = slow("slow", Duration::from_millis(300)).await;
    let audit = temp_state().with_extension("audit.jsonl");
    let h = start(&relay_config(
        &[("sg", &slow), ("hk", &fast)],
        "health: {enabled: false}",
        &format!("audit: {{path: {:?}}}\n", audit.display().to_string()),
    ))
    .await;
    for i in 0..6 {
        assert_eq!(h.chat(&format!("warm-{i}")).await.status(), 200);
    }
    let (f0, s0) = (fast.stats().chat, slow.stats().chat);
    for i in 0..30 {
        let r = h.chat(&format!("user-{i}")).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-turnout-upstream"], "relay");
    }
    let (f, s) = (fast.stats().chat - f0, slow.stats().chat - s0);
    assert_eq!(f + s, 30);
    assert!(
        f >= 24,
        "fast {f}, slow {s}: at least 80 % should go to the fast endpoint"
    );

    // Status lists the endpoints; metrics carry the endpoint label.
    let st = h.status().await;
    let eps = st["upstreams"][0]["endpoints"].as_array().unwrap();
    assert_eq!(eps.len(), 2);
    assert_eq!(eps[0]["name"], "sg");
    assert_eq!(eps[1]["state"], "healthy");
    assert!(
        eps[1]["latency_ewma_ms"].as_f64().unwrap() < eps[0]["latency_ewma_ms"].as_f64().unwrap()
    );
    let m = h.metrics().await;
    let hk = metric_sum(
        &m,
        "turnout_upstream_attempts_total",
        &["upstream=\"relay\"", "endpoint=\"hk\"", "outcome=\"ok\""],
    );
    assert_eq!(hk as u64, fast.stats().chat);
    let served = metric_sum(
        &m,
        "turnout_requests_total",
        &["upstream=\"relay\"", "endpoint=\"hk\"", "code=\"200\""],
    );
    assert_eq!(served as u64, fast.stats().chat);
    // The audit line names the endpoint that served.
    eventually("audit lines written", Duration::from_secs(10), || async {
        std::fs::read_to_string(&audit).is_ok_and(|t| t.lines().count() >= 36)
    })
    .await;
    let text = std::fs::read_to_string(&audit).unwrap_or_default();
    let hk_lines = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["upstream"] == "relay" && v["endpoint"] == "hk")
        .count();
    assert_eq!(hk_lines as u64, fast.stats().chat);
    let _ = std::fs::remove_file(&audit);
    h.proxy.shutdown().await;
}

#[tokio::test]
async fn a_killed_endpoint_costs_no_client_an_error() {
    let a = mock("a").await;
    let b = mock("b").await;
    let h = start(&relay_config(
        &[("a", &a), ("b", &b)],
        "health: {interval: 200ms, timeout: 200ms}",
        "",
    ))
    .await;
    for i in 0..6 {
        assert_eq!(h.chat(&format!("warm-{i}")).await.status(), 200);
    }
    a.kill();
    for i in 0..20 {
        let r = h.chat(&format!("user-{i}")).await;
        assert_eq!(r.status(), 200, "request {i} after the kill");
    }
    // Concurrent requests too.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (http, url) = (h.http.clone(), h.url.clone());
        tasks.push(tokio::spawn(async move {
            http.post(format!("{url}/v1/chat/completions"))
                .json(
                    &serde_json::json!({"model": "gpt-4.1", "user": format!("c{i}"),
                    "messages": [{"role": "user", "content": "hi"}]}),
                )
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 200);
    }
    // The dead endpoint is taken out of rotation; the upstream stays usable.
    eventually(
        "endpoint a leaves rotation",
        Duration::from_secs(20),
        || async {
            let st = h.status().await;
            endpoint_state(&st, "a") != "healthy" && st["upstreams"][0]["state"] == "healthy"
        },
    )
    .await;
    h.proxy.shutdown().await;
}

#[tokio::test]
async fn an_endpoint_back_from_ejection_gets_traffic_gradually() {
    let quick = mock("quick").await;
    let steady = slow("steady", Duration::from_millis(100)).await;
    let h = start(&relay_config(
        &[("quick", &quick), ("steady", &steady)],
        "slow_start: 10s, health: {interval: 300ms, timeout: 300ms, healthy_threshold: 1}",
        "outlier: {consecutive_failures: 1, base_ejection: 1s}\n",
    ))
    .await;
    for i in 0..6 {
        assert_eq!(h.chat(&format!("warm-{i}")).await.status(), 200);
    }
    // The quick endpoint fails live traffic (its probes still pass): ejected,
    // with no client error (the request moves to the other endpoint).
    quick.set_fault(
        FaultScope::Chat,
        Some(Fault::Status {
            code: 503,
            retry_after: None,
        }),
    );
    let mut i = 0;
    eventually("quick is ejected", Duration::from_secs(20), || {
        i += 1;
        let h = &h;
        async move {
            assert_eq!(h.chat(&format!("eject-{i}")).await.status(), 200);
            endpoint_state(&h.status().await, "quick") == "ejected"
        }
    })
    .await;
    quick.set_fault(FaultScope::Chat, None);
    eventually("quick is back", Duration::from_secs(20), || async {
        endpoint_state(&h.status().await, "quick") == "healthy"
    })
    .await;
    let back = tokio::time::Instant::now();
    let served_by_quick = |before: u64| quick.stats().chat > before;
    // The first dozen requests after the comeback (a second or two: the
    // endpoint's weight is still ≤ 0.3 of 1 over the 10 s slow start).
    let mut early = 0;
    for _ in 0..12 {
        let before = quick.stats().chat;
        assert_eq!(h.chat("u").await.status(), 200);
        early += u32::from(served_by_quick(before));
    }
    tokio::time::sleep_until(back + Duration::from_millis(10_500)).await;
    let (mut late, mut n) = (0u32, 0u32);
    while back.elapsed() < Duration::from_millis(12_500) || n < 5 {
        let before = quick.stats().chat;
        assert_eq!(h.chat("u").await.status(), 200);
        late += u32::from(served_by_quick(before));
        n += 1;
    }
    // Without slow start the quick, freshly reset endpoint would take nearly
    // every request at once; with it, its share grows to nearly all.
    assert!(early <= 6, "quick served {early} of the first 12 requests");
    assert!(
        f64::from(late) >= 0.7 * f64::from(n),
        "quick served {late} of {n} late requests"
    );
    h.proxy.shutdown().await;
}

#[tokio::test]
async fn endpoints_and_base_url_are_exclusive_and_names_unique() {
    let bad = [
        ("upstreams: [{name: u, base_url: 'http://127.0.0.1:1/v1', endpoints: [{name: a, base_url: 'http://127.0.0.1:2/v1'}]}]", "upstreams[0].endpoints"),
        ("upstreams: [{name: u, endpoints: [{name: a, base_url: 'http://127.0.0.1:2/v1'}, {name: a, base_url: 'http://127.0.0.1:3/v1'}]}]", "upstreams[0].endpoints[1].name"),
        ("upstreams: [{name: u, endpoints: [{name: a, base_url: 'nope'}]}]", "upstreams[0].endpoints[0].base_url"),
        ("upstreams: [{name: u, endpoints: []}]", "upstreams[0].endpoints"),
    ];
    for (ups, key) in bad {
        let yaml = format!(
            "auth: {{disabled: true}}\n{ups}\nroutes: [{{name: r, models: ['*'], primary: u}}]\n"
        );
        let err = turnout::config::Config::from_yaml(&yaml).err().unwrap().0;
        assert!(err.contains(key), "{err} should name {key}");
    }
}
