//! PRODUCT.md §3.7, every row and every column, from outside: for chat
//! completions, Responses and Anthropic Messages, a primary `a` that
//! misbehaves in one way and a fallback `b`, each answer as a client sees it.

#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed assertion"
)]

mod common;

use common::*;
use serde_json::{json, Value};
use turnout::mock::{Fault, FaultScope, MockServer};

#[derive(Clone, Copy, Debug)]
enum P {
    Chat,
    Responses,
    Messages,
}

const ALL: [P; 3] = [P::Chat, P::Responses, P::Messages];

impl P {
    fn path(self) -> &'static str {
        match self {
            P::Chat => "/v1/chat/completions",
            P::Responses => "/v1/responses",
            P::Messages => "/v1/messages",
        }
    }

    fn body(self, stream: bool) -> Value {
        match self {
            P::Chat => json!({"model": "gpt-4.1", "stream": stream,
                "stream_options": if stream { json!({"include_usage": true}) } else { Value::Null },
                "messages": [{"role": "user", "content": "hello there"}]}),
            P::Responses => json!({"model": "gpt-4.1", "stream": stream, "input": "hello there"}),
            P::Messages => json!({"model": "claude-sonnet-4.5", "stream": stream, "max_tokens": 64,
                "messages": [{"role": "user", "content": "hello there"}]}),
        }
    }

    /// Events the mock sends before the commit point.
    fn preamble(self) -> u32 {
        match self {
            P::Chat => 1,      // the role-only delta
            P::Responses => 2, // created, in_progress (output_item.added commits)
            P::Messages => 1,  // message_start
        }
    }

    /// Events the mock sends up to its second piece of text (committed, with content).
    fn with_content(self) -> u32 {
        match self {
            P::Chat => 1 + 2,
            P::Responses => 4 + 2, // + output_item.added, content_part.added
            P::Messages => 3 + 2,  // + content_block_start, ping
        }
    }

    /// True when `body` ends with the protocol's clean end.
    fn clean_end(self, body: &str) -> bool {
        let last = body.trim_end().rsplit("\n\n").next().unwrap_or("");
        match self {
            P::Chat => last.trim() == "data: [DONE]",
            P::Responses => last.starts_with("event: response.completed"),
            P::Messages => last.starts_with("event: message_stop"),
        }
    }

    /// The error event that ends a stream broken after its commit point.
    fn assert_error_shape(self, body: &str) {
        let last = body.trim_end().rsplit("\n\n").next().unwrap_or("");
        let data: Value = serde_json::from_str(
            last.lines()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap_or("null"),
        )
        .unwrap();
        match self {
            P::Chat => assert_eq!(data["error"]["code"], "stream_interrupted", "{body}"),
            P::Responses => {
                assert!(last.starts_with("event: error\n"), "{body}");
                assert_eq!(data["type"], "error");
                assert_eq!(data["code"], "stream_interrupted");
                assert!(data["message"].as_str().is_some_and(|m| !m.is_empty()));
            }
            P::Messages => {
                assert!(last.starts_with("event: error\n"), "{body}");
                assert_eq!(data["type"], "error");
                assert_eq!(data["error"]["type"], "api_error");
            }
        }
    }
}

async fn pair(a_fault: Option<Fault>) -> (MockServer, MockServer, Harness) {
    let (a, b) = (mock("a").await, mock("b").await);
    a.set_fault(FaultScope::Chat, a_fault);
    let yaml = config(
        &[
            upstream(
                "a",
                &a,
                "health: {enabled: false}, timeouts: {first_token: 400ms, idle: 400ms}",
            ),
            upstream("b", &b, ""),
        ],
        "{name: chat, models: ['*'], primary: a, fallbacks: [b]}",
    );
    let h = start(&yaml).await;
    (a, b, h)
}

async fn call(h: &Harness, p: P, stream: bool) -> (u16, String, String, String) {
    let rsp = h
        .http
        .post(format!("{}{}", h.url, p.path()))
        .json(&p.body(stream))
        .send()
        .await
        .unwrap();
    let status = rsp.status().as_u16();
    let up = rsp.headers()["x-turnout-upstream"]
        .to_str()
        .unwrap()
        .to_owned();
    let attempts = rsp.headers()["x-turnout-attempts"]
        .to_str()
        .unwrap()
        .to_owned();
    (status, up, attempts, rsp.text().await.unwrap())
}

fn tokens(m: &str, upstream: &str, kind: &str) -> f64 {
    metric_sum(
        m,
        "turnout_tokens_total",
        &[
            &format!("upstream=\"{upstream}\""),
            &format!("type=\"{kind}\""),
        ],
    )
}

#[tokio::test]
async fn clean_ends_pass_unchanged_and_usage_is_counted() {
    for p in ALL {
        let (a, _b, h) = pair(None).await;
        for stream in [true, false] {
            let (status, up, attempts, body) = call(&h, p, stream).await;
            assert_eq!(
                (status, up.as_str(), attempts.as_str()),
                (200, "a", "1"),
                "{p:?}"
            );
            if stream {
                assert!(p.clean_end(&body), "{p:?}: {body}");
                assert!(!body.contains("stream_interrupted"), "{p:?}: {body}");
                assert!(body.contains("Hello from a."), "{p:?}");
            } else {
                let v: Value = serde_json::from_str(&body).unwrap();
                assert!(v.to_string().contains("Hello from a."), "{p:?}: {v}");
            }
        }
        let m = h.metrics().await;
        // 8 completion tokens per answer, streamed and not.
        assert_eq!(tokens(&m, "a", "completion"), 16.0, "{p:?}\n{m}");
        assert!(tokens(&m, "a", "prompt") >= 2.0, "{p:?}");
        assert_eq!(
            metric_sum(&m, "turnout_stream_errors_total", &[]),
            0.0,
            "{p:?}"
        );
        assert_eq!(a.stats().completed, 2);
        h.proxy.shutdown().await;
    }
}

#[tokio::test]
async fn a_chat_stream_without_done_ends_cleanly_after_its_finish_reason_and_usage() {
    // Everything but `data: [DONE]`, as some relays send it.
    let (_a, b, h) = pair(Some(Fault::Truncate { after: 100 })).await;
    let (status, up, _, body) = call(&h, P::Chat, true).await;
    assert_eq!((status, up.as_str()), (200, "a"));
    assert!(
        !body.contains("[DONE]") && !body.contains("error"),
        "{body}"
    );
    let data = sse_data(&body);
    assert!(data.last().unwrap().contains("\"usage\""), "{body}");
    let m = h.metrics().await;
    assert_eq!(metric_sum(&m, "turnout_stream_errors_total", &[]), 0.0);
    assert_eq!(tokens(&m, "a", "completion"), 8.0);
    assert_eq!(b.stats().chat, 0);
}

#[tokio::test]
async fn events_before_the_commit_point_are_held_and_a_silent_upstream_fails_over() {
    for p in ALL {
        // The preamble, then silence until the first-token timeout.
        let (_a, _b, h) = pair(Some(Fault::Stall {
            after: p.preamble(),
        }))
        .await;
        let (status, up, attempts, body) = call(&h, p, true).await;
        assert_eq!(
            (status, up.as_str(), attempts.as_str()),
            (200, "b", "2"),
            "{p:?}"
        );
        assert!(!body.contains("from a"), "{p:?}");
        assert!(p.clean_end(&body), "{p:?}: {body}");
        // The fallback's preamble appears once: a's was held, never sent.
        let starts = match p {
            P::Chat => body.matches("\"role\":\"assistant\"").count(),
            P::Responses => body.matches("event: response.created").count(),
            P::Messages => body.matches("event: message_start").count(),
        };
        assert_eq!(starts, 1, "{p:?}: {body}");
        h.proxy.shutdown().await;
    }
}

#[tokio::test]
async fn an_in_band_error_before_the_commit_point_fails_over() {
    for p in ALL {
        let (_a, _b, h) = pair(Some(Fault::Error {
            after: p.preamble(),
        }))
        .await;
        let (status, up, attempts, body) = call(&h, p, true).await;
        assert_eq!(
            (status, up.as_str(), attempts.as_str()),
            (200, "b", "2"),
            "{p:?}"
        );
        assert!(!body.contains("mock fault"), "{p:?}: {body}");
        assert!(p.clean_end(&body), "{p:?}");
        let m = h.metrics().await;
        assert_eq!(
            metric_sum(
                &m,
                "turnout_failovers_total",
                &["reason=\"upstream_error\""]
            ),
            1.0,
            "{p:?}\n{m}"
        );
        h.proxy.shutdown().await;
    }
}

#[tokio::test]
async fn an_empty_answer_fails_over() {
    for p in ALL {
        let (_a, _b, h) = pair(Some(Fault::Empty)).await;
        let (status, up, _, body) = call(&h, p, true).await;
        assert_eq!((status, up.as_str()), (200, "b"), "{p:?}: {body}");
        assert!(body.contains("Hello from b."), "{p:?}");
        let m = h.metrics().await;
        assert_eq!(
            metric_sum(&m, "turnout_failovers_total", &["reason=\"empty_answer\""]),
            1.0,
            "{p:?}\n{m}"
        );
        h.proxy.shutdown().await;
    }
}

#[tokio::test]
async fn a_failure_after_the_commit_point_ends_with_the_protocols_error_and_no_clean_end() {
    for p in ALL {
        for fault in [
            Fault::Reset {
                after: p.with_content(),
            },
            Fault::Truncate {
                after: p.with_content(),
            },
            Fault::Stall {
                after: p.with_content(),
            },
        ] {
            let (_a, b, h) = pair(Some(fault.clone())).await;
            let (status, up, attempts, body) = call(&h, p, true).await;
            assert_eq!(
                (status, up.as_str(), attempts.as_str()),
                (200, "a", "1"),
                "{p:?} {fault:?}"
            );
            assert!(body.contains("Hello from a."), "{p:?} {fault:?}: {body}");
            assert!(!p.clean_end(&body), "{p:?} {fault:?}: {body}");
            p.assert_error_shape(&body);
            assert_eq!(b.stats().completed, 0);
            h.proxy.shutdown().await;
        }
    }
}

#[tokio::test]
async fn an_in_band_error_after_the_commit_point_is_passed_once_and_ends_the_stream() {
    for p in ALL {
        let (_a, _b, h) = pair(Some(Fault::Error {
            after: p.with_content(),
        }))
        .await;
        let (status, up, _, body) = call(&h, p, true).await;
        assert_eq!((status, up.as_str()), (200, "a"), "{p:?}");
        // The upstream's own error event, in its shape, is the last thing sent.
        assert_eq!(
            body.matches("mock fault: in-band error").count(),
            1,
            "{p:?}: {body}"
        );
        assert!(body.trim_end().ends_with('}'), "{p:?}: {body}");
        assert!(
            !body.contains("stream_interrupted") && !p.clean_end(&body),
            "{p:?}"
        );
        let m = h.metrics().await;
        assert_eq!(
            metric_sum(
                &m,
                "turnout_stream_errors_total",
                &["reason=\"upstream_error\""]
            ),
            1.0,
            "{p:?}\n{m}"
        );
        h.proxy.shutdown().await;
    }
}

#[tokio::test]
async fn a_non_streaming_error_in_a_200_fails_over() {
    for p in ALL {
        let (_a, _b, h) = pair(Some(Fault::Error { after: 0 })).await;
        let (status, up, attempts, body) = call(&h, p, false).await;
        assert_eq!(
            (status, up.as_str(), attempts.as_str()),
            (200, "b", "2"),
            "{p:?}: {body}"
        );
        assert!(body.contains("Hello from b."), "{p:?}");
        h.proxy.shutdown().await;
    }
}
