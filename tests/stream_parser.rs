//! Property tests of the stream parser (PRODUCT.md §3.7 rules over SSE
//! framing): whatever the chunking, line endings, comments, `event:` lines,
//! multi-line `data:`, very large events or garbage, the verdict (commit
//! point, how and where the stream stopped, usage) is the one the whole
//! stream gets in a single chunk; nothing panics; memory stays bounded.

#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed assertion"
)]

use proptest::prelude::*;
use turnout::openai::Usage;
use turnout::request::protocol::{Protocol, Stop, StreamScan};
use turnout::request::sse::{HEAD, TAIL, WHOLE_EVENT};

/// Everything the rules decide about a stream.
#[derive(Debug, PartialEq)]
struct Verdict {
    committed: bool,
    stop: Stop,
    /// Absolute offset just past the event that stopped the stream, if one did.
    cut: Option<usize>,
    usage: Option<Usage>,
}

/// Most memory the parser may hold between chunks.
const BOUND: usize = 2 * WHOLE_EVENT + 4 * (HEAD + TAIL);

fn verdict(p: Protocol, stream: &[u8], cuts: &[usize]) -> Verdict {
    let mut s = StreamScan::new(p, true);
    let mut at = 0;
    let mut cut = None;
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    bounds.push(stream.len());
    bounds.sort_unstable();
    for end in bounds {
        if end < at {
            continue;
        }
        let chunk = &stream[at..end];
        if let Some(off) = s.feed(chunk) {
            cut = Some(at + off);
            break;
        }
        assert!(s.held() <= BOUND, "held {} bytes", s.held());
        at = end;
    }
    let stop = match s.stop() {
        Some(stop) => stop,
        None => s.finish(),
    };
    Verdict {
        committed: s.committed(),
        stop,
        cut,
        usage: s.usage(),
    }
}

/// One SSE block, as providers and relays write them.
fn block(p: Protocol) -> impl Strategy<Value = String> {
    let chat = prop_oneof![
        Just(r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#.to_owned()),
        "[a-z \"\\\\]{0,12}".prop_map(|t| format!(
            r#"{{"choices":[{{"index":0,"delta":{{"content":{}}},"finish_reason":null}}]}}"#,
            serde_json::Value::String(t)
        )),
        Just(r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#.to_owned()),
        (0u64..1000, 0u64..1000).prop_map(|(a, b)| format!(
            r#"{{"choices":[],"usage":{{"prompt_tokens":{a},"completion_tokens":{b}}}}}"#
        )),
        Just(r#"{"error":{"message":"boom"}}"#.to_owned()),
        Just("[DONE]".to_owned()),
    ];
    let typed = |kinds: &'static [&'static str]| {
        (proptest::sample::select(kinds), 0u64..1000).prop_map(|(k, n)| {
            format!(r#"{{"type":"{k}","response":{{"output":[{{"type":"message"}}],"usage":{{"input_tokens":{n},"output_tokens":{n}}}}},"message":{{"usage":{{"input_tokens":{n}}}}},"usage":{{"output_tokens":{n}}},"item":{{"type":"message"}}}}"#)
        })
    };
    let data = match p {
        Protocol::Chat => chat.boxed(),
        Protocol::Responses => typed(&[
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.output_text.delta",
            "response.completed",
            "response.incomplete",
            "response.failed",
            "error",
        ])
        .boxed(),
        _ => typed(&[
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "message_delta",
            "message_stop",
            "error",
        ])
        .boxed(),
    };
    let named = any::<bool>();
    let split = 0usize..4;
    prop_oneof![
        8 => (data, named, split).prop_map(|(d, named, split)| {
            let mut out = String::new();
            if named {
                if let Some(t) = d.strip_prefix(r#"{"type":""#).and_then(|r| r.split('"').next()) {
                    out.push_str(&format!("event: {t}\n"));
                }
            }
            // Multi-line data: the JSON split over several `data:` lines.
            let cut = if split > 0 && d.len() > 8 { d.len() / (split + 1) } else { 0 };
            if cut > 0 && d.is_char_boundary(cut) {
                out.push_str(&format!("data: {}\ndata:{}\n", &d[..cut], &d[cut..]));
            } else {
                out.push_str(&format!("data: {d}\n"));
            }
            out
        }),
        1 => Just(": keep-alive\n".to_owned()),
        1 => Just("id: 7\nretry: 100\n".to_owned()),
        // A very large event (beyond the whole-event limit).
        1 => (60_000usize..140_000).prop_map(|n| format!(
            "data: {{\"choices\":[{{\"delta\":{{\"content\":\"{}\"}},\"finish_reason\":\"stop\"}}],\"usage\":{{\"prompt_tokens\":1,\"completion_tokens\":2}}}}\n",
            "x".repeat(n)
        )),
        1 => "[ -~]{0,40}".prop_map(|g| format!("{g}\n")),
    ]
}

fn stream(p: Protocol) -> impl Strategy<Value = (Vec<u8>, Vec<usize>)> {
    (
        proptest::collection::vec(block(p), 0..12),
        any::<bool>(),
        proptest::collection::vec(any::<usize>(), 0..24),
        any::<bool>(),
    )
        .prop_map(|(blocks, crlf, cuts, trailing)| {
            let mut s = blocks.join("\n") + if trailing { "\n" } else { "" };
            if crlf {
                s = s.replace('\n', "\r\n");
            }
            (s.into_bytes(), cuts)
        })
}

fn same_verdict_however_split(p: Protocol, bytes: &[u8], cuts: &[usize]) {
    let whole = verdict(p, bytes, &[]);
    let split = verdict(p, bytes, cuts);
    assert_eq!(split, whole, "cuts {cuts:?}");
    let bytewise: Vec<usize> = (0..bytes.len().min(3000)).collect();
    assert_eq!(verdict(p, bytes, &bytewise), whole, "byte by byte");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn chat_verdict_is_independent_of_chunking((bytes, cuts) in stream(Protocol::Chat)) {
        same_verdict_however_split(Protocol::Chat, &bytes, &cuts);
    }

    #[test]
    fn responses_verdict_is_independent_of_chunking((bytes, cuts) in stream(Protocol::Responses)) {
        same_verdict_however_split(Protocol::Responses, &bytes, &cuts);
    }

    #[test]
    fn messages_verdict_is_independent_of_chunking((bytes, cuts) in stream(Protocol::Messages)) {
        same_verdict_however_split(Protocol::Messages, &bytes, &cuts);
    }

    #[test]
    fn garbage_never_panics_and_stays_bounded(
        bytes in proptest::collection::vec(any::<u8>(), 0..4096),
        cuts in proptest::collection::vec(any::<usize>(), 0..16),
    ) {
        for p in [Protocol::Chat, Protocol::Responses, Protocol::Messages, Protocol::Other] {
            same_verdict_however_split(p, &bytes, &cuts);
        }
    }

    #[test]
    fn a_stream_without_blank_lines_is_held_in_bounded_memory(n in 100_000usize..400_000) {
        let mut s = StreamScan::new(Protocol::Chat, false);
        let junk = vec![b'a'; 8192];
        let mut fed = 0;
        while fed < n {
            prop_assert!(s.feed(&junk).is_none());
            prop_assert!(s.held() <= BOUND);
            fed += junk.len();
        }
        let stop = s.finish();
        prop_assert!(matches!(stop, Stop::Failed(o) if o.to_string() == "eof_without_done"), "{:?}", stop);
    }
}
