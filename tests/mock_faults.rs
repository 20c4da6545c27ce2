//! The simulated provider's faults, disconnect counting and kill.
//! Synchronisation is by polling with a deadline, never by bare sleeps.

mod mock_common;

use mock_common::{client, json_of, BoxErr, JsonBody};
use std::time::Duration;

use serde_json::{json, Value};
use turnout::mock::{Fault, FaultScope, MockServer, MockSettings, MockStats};

type Res = Result<(), BoxErr>;

async fn mock() -> std::io::Result<MockServer> {
    MockServer::start(MockSettings::default()).await
}

/// Waits (up to 5 s) until `pred` holds for the stats.
async fn wait_stats(m: &MockServer, pred: impl Fn(&MockStats) -> bool) -> Res {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let st = m.stats();
        if pred(&st) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("stats never matched: {st:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn chat(c: &reqwest::Client, m: &MockServer, stream: bool, fault: &str) -> reqwest::RequestBuilder {
    let req = c
        .post(format!("{}/chat/completions", m.base_url()))
        .json_body(&json!({"model": "m", "stream": stream, "messages": []}));
    if fault.is_empty() {
        req
    } else {
        req.header("x-mock-fault", fault)
    }
}

/// Reads body chunks until `n` SSE events arrived; `Err` if the body ends first.
async fn read_events(resp: &mut reqwest::Response, n: usize) -> Result<String, BoxErr> {
    let mut text = String::new();
    while text.matches("\n\n").count() < n {
        let chunk = resp.chunk().await?.ok_or("body ended early")?;
        text.push_str(std::str::from_utf8(&chunk)?);
    }
    Ok(text)
}

#[tokio::test]
async fn status_fault_with_retry_after() -> Res {
    let m = mock().await?;
    let resp = chat(&client()?, &m, false, "status=429;retry-after=2")
        .send()
        .await?;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "2");
    let v: Value = json_of(resp).await?;
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    Ok(())
}

#[tokio::test]
async fn hang_counts_a_disconnect_when_the_client_gives_up() -> Res {
    let m = mock().await?;
    let c = client()?;
    let err = chat(&c, &m, false, "hang")
        .timeout(Duration::from_millis(100))
        .send()
        .await;
    assert!(err.is_err_and(|e| e.is_timeout()));
    wait_stats(&m, |s| s.disconnects == 1).await?;
    assert_eq!(m.stats().completed, 0);
    Ok(())
}

#[tokio::test]
async fn latency_delays_headers() -> Res {
    let m = mock().await?;
    let req = chat(&client()?, &m, false, "").header("x-mock-latency", "10s");
    let err = req.timeout(Duration::from_millis(100)).send().await;
    assert!(err.is_err_and(|e| e.is_timeout()));
    wait_stats(&m, |s| s.disconnects == 1).await
}

#[tokio::test]
async fn truncate_ends_cleanly_without_done() -> Res {
    let m = mock().await?;
    let c = client()?;
    let text = chat(&c, &m, true, "truncate=3")
        .send()
        .await?
        .text()
        .await?;
    assert_eq!(text.matches("\n\n").count(), 3, "{text}");
    assert!(!text.contains("[DONE]"));
    let half = chat(&c, &m, false, "truncate=0")
        .send()
        .await?
        .bytes()
        .await?;
    assert!(!half.is_empty());
    assert!(serde_json::from_slice::<Value>(&half).is_err());
    Ok(())
}

#[tokio::test]
async fn reset_is_a_body_error_after_some_events() -> Res {
    let m = mock().await?;
    let c = client()?;
    let mut resp = chat(&c, &m, true, "reset=2").send().await?;
    assert_eq!(resp.status(), 200);
    let mut text = String::new();
    let err = loop {
        match resp.chunk().await {
            Ok(Some(b)) => text.push_str(std::str::from_utf8(&b)?),
            Ok(None) => return Err("reset ended cleanly".into()),
            Err(e) => break e,
        }
    };
    assert!(err.is_body() || err.is_decode(), "{err:?}");
    assert_eq!(text.matches("\n\n").count(), 2, "{text}");
    let plain = chat(&c, &m, false, "reset=0").send().await?.bytes().await;
    assert!(plain.is_err(), "non-stream reset must fail the body");
    Ok(())
}

#[tokio::test]
async fn junk_is_not_json() -> Res {
    let m = mock().await?;
    let resp = chat(&client()?, &m, false, "junk").send().await?;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert!(serde_json::from_slice::<Value>(&resp.bytes().await?).is_err());
    Ok(())
}

#[tokio::test]
async fn stall_goes_silent_and_counts_a_disconnect() -> Res {
    let m = mock().await?;
    let mut resp = chat(&client()?, &m, true, "stall=2").send().await?;
    let text = read_events(&mut resp, 2).await?;
    assert_eq!(text.matches("\n\n").count(), 2);
    let next = tokio::time::timeout(Duration::from_millis(100), resp.chunk()).await;
    assert!(next.is_err(), "stall must send nothing more");
    drop(resp);
    wait_stats(&m, |s| s.disconnects == 1).await
}

#[tokio::test]
async fn instance_fault_scopes() -> Res {
    let m = mock().await?;
    let c = client()?;
    let models = || c.get(format!("{}/models", m.base_url())).send();
    m.set_fault(
        FaultScope::Models,
        Some(Fault::Status {
            code: 503,
            retry_after: None,
        }),
    );
    assert_eq!(models().await?.status(), 503);
    assert_eq!(chat(&c, &m, false, "").send().await?.status(), 200);
    m.set_fault(FaultScope::Models, None);
    m.handle().set_fault(
        FaultScope::Chat,
        Some(Fault::Status {
            code: 502,
            retry_after: None,
        }),
    );
    assert_eq!(models().await?.status(), 200);
    assert_eq!(chat(&c, &m, false, "").send().await?.status(), 502);
    assert_eq!(
        chat(&c, &m, false, "status=504").send().await?.status(),
        504,
        "header wins"
    );
    m.set_fault(FaultScope::Chat, None);
    m.set_fault(
        FaultScope::All,
        Some(Fault::Status {
            code: 500,
            retry_after: None,
        }),
    );
    assert_eq!(models().await?.status(), 500);
    assert_eq!(chat(&c, &m, false, "").send().await?.status(), 500);
    m.set_fault(FaultScope::All, None);
    assert_eq!(chat(&c, &m, false, "").send().await?.status(), 200);
    Ok(())
}

#[tokio::test]
async fn fail_rate_spares_models() -> Res {
    let settings = MockSettings {
        fail_rate: 1.0,
        ..MockSettings::default()
    };
    let m = MockServer::start(settings).await?;
    let c = client()?;
    assert_eq!(chat(&c, &m, false, "").send().await?.status(), 500);
    let resp = c.get(format!("{}/models", m.base_url())).send().await?;
    assert_eq!(resp.status(), 200);
    Ok(())
}

#[tokio::test]
async fn kill_breaks_streams_and_refuses_connections() -> Res {
    let m = mock().await?;
    let c = client()?;
    let req = chat(&c, &m, true, "").header("x-mock-chunks", "1000");
    let mut resp = req.header("x-mock-chunk-delay", "10ms").send().await?;
    read_events(&mut resp, 1).await?;
    m.kill();
    let rest = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match resp.chunk().await {
                Ok(Some(_)) => continue,
                other => return other.map(|_| ()),
            }
        }
    });
    assert!(rest.await?.is_err(), "in-flight stream must fail");
    wait_stats(&m, |s| s.disconnects == 1).await?;
    let again = chat(&c, &m, false, "").send().await;
    assert!(again.is_err_and(|e| e.is_connect() || e.is_request()));
    let fresh = chat(&client()?, &m, false, "").send().await;
    assert!(
        fresh.is_err_and(|e| e.is_connect()),
        "new connections are refused"
    );
    Ok(())
}

#[tokio::test]
async fn dropping_the_last_handle_kills() -> Res {
    let m = mock().await?;
    let url = format!("{}/models", m.base_url());
    let c = client()?;
    let h = m.handle();
    drop(m);
    assert_eq!(
        c.get(&url).send().await?.status(),
        200,
        "a handle keeps it alive"
    );
    drop(h);
    let err = client()?.get(&url).send().await;
    assert!(err.is_err_and(|e| e.is_connect()));
    Ok(())
}
