//! OpenAI-shaped JSON bodies, built by string formatting from pieces that
//! are JSON-escaped once, so a request costs a few small writes and no
//! serde tree.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// Filler words of the generated answer after the greeting.
const WORDS: [&str; 16] = [
    "the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "turnout",
    "routes", "every", "request", "to", "safety",
];

/// Seconds since the Unix epoch, for `created`.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `s` as a quoted JSON string.
pub(crate) fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// Deterministic token estimate for `chars` characters of input.
pub(crate) fn tokens_for(chars: usize) -> u64 {
    chars as u64 / 4 + 1
}

/// Text of content chunk `i`: a greeting naming the instance, then words.
pub(crate) fn piece(name: &str, i: u32) -> String {
    if i == 0 {
        format!("Hello from {name}. ")
    } else {
        format!("{} ", WORDS[(i as usize - 1) % WORDS.len()])
    }
}

/// The generated answer for one chunk count, escaped once and reused.
pub(crate) struct Script {
    /// One JSON `delta` object per streamed chat content event.
    pub deltas: Vec<String>,
    /// Each piece of the answer as a JSON string (Responses and Messages deltas).
    pub pieces: Vec<String>,
    /// The whole answer (concatenation of the pieces), JSON-quoted.
    pub full: String,
    /// Completion token count.
    pub chunks: u32,
}

impl Script {
    /// Builds the answer of `chunks` pieces for instance `name`.
    pub fn new(name: &str, chunks: u32) -> Self {
        let mut full = String::new();
        let mut deltas = Vec::with_capacity(chunks as usize);
        let mut pieces = Vec::with_capacity(chunks as usize);
        for i in 0..chunks {
            let p = piece(name, i);
            let quoted = json_str(&p);
            deltas.push(format!(r#"{{"content":{quoted}}}"#));
            pieces.push(quoted);
            full.push_str(&p);
        }
        Self {
            deltas,
            pieces,
            full: json_str(&full),
            chunks,
        }
    }
}

/// `usage` object.
pub(crate) fn usage(prompt: u64, completion: u64) -> String {
    format!(
        r#"{{"prompt_tokens":{prompt},"completion_tokens":{completion},"total_tokens":{}}}"#,
        prompt + completion
    )
}

/// Fields common to every chat body and chunk; `model` and `fp` are JSON-quoted.
pub(crate) struct Head<'a> {
    pub id: u64,
    pub created: u64,
    pub model: &'a str,
    pub fp: &'a str,
}

/// Non-streaming `chat.completion` body.
pub(crate) fn chat_completion(h: &Head, script: &Script, prompt: u64) -> String {
    format!(
        concat!(
            r#"{{"id":"chatcmpl-mock-{}","object":"chat.completion","created":{},"model":{},"#,
            r#""system_fingerprint":{},"choices":[{{"index":0,"message":{{"role":"assistant","#,
            r#""content":{}}},"logprobs":null,"finish_reason":"stop"}}],"usage":{}}}"#
        ),
        h.id,
        h.created,
        h.model,
        h.fp,
        script.full,
        usage(prompt, u64::from(script.chunks))
    )
}

/// Appends one `chat.completion.chunk` SSE event to `out`.
pub(crate) fn push_chunk(out: &mut String, h: &Head, delta: &str, finish: &str) {
    let _ = write!(
        out,
        concat!(
            r#"data: {{"id":"chatcmpl-mock-{}","object":"chat.completion.chunk","created":{},"#,
            r#""model":{},"system_fingerprint":{},"choices":[{{"index":0,"delta":{},"#,
            r#""logprobs":null,"finish_reason":{}}}]}}"#,
            "\n\n"
        ),
        h.id, h.created, h.model, h.fp, delta, finish
    );
}

/// Appends the usage-only chunk (`choices: []`) sent for `include_usage`.
pub(crate) fn push_usage_chunk(out: &mut String, h: &Head, usage: &str) {
    let _ = write!(
        out,
        concat!(
            r#"data: {{"id":"chatcmpl-mock-{}","object":"chat.completion.chunk","created":{},"#,
            r#""model":{},"system_fingerprint":{},"choices":[],"usage":{}}}"#,
            "\n\n"
        ),
        h.id, h.created, h.model, h.fp, usage
    );
}

/// Legacy `text_completion` body.
pub(crate) fn text_completion(h: &Head, script: &Script, prompt: u64) -> String {
    format!(
        concat!(
            r#"{{"id":"cmpl-mock-{}","object":"text_completion","created":{},"model":{},"#,
            r#""system_fingerprint":{},"choices":[{{"text":{},"index":0,"logprobs":null,"#,
            r#""finish_reason":"stop"}}],"usage":{}}}"#
        ),
        h.id,
        h.created,
        h.model,
        h.fp,
        script.full,
        usage(prompt, u64::from(script.chunks))
    )
}

/// Embedding list: an 8-dimension vector per input, seeded by its text.
pub(crate) fn embeddings(model: &str, inputs: &[String]) -> String {
    let mut out = String::from(r#"{"object":"list","data":["#);
    let mut chars = 0;
    for (i, input) in inputs.iter().enumerate() {
        chars += input.chars().count();
        let seed = xxhash_rust::xxh3::xxh3_64(input.as_bytes());
        let mut rng = fastrand::Rng::with_seed(seed);
        let sep = if i == 0 { "" } else { "," };
        let _ = write!(
            out,
            r#"{sep}{{"object":"embedding","index":{i},"embedding":["#
        );
        for d in 0..8 {
            let v = rng.f64() * 2.0 - 1.0;
            let _ = write!(out, "{}{v:.6}", if d == 0 { "" } else { "," });
        }
        out.push_str("]}");
    }
    let p = tokens_for(chars);
    let _ = write!(
        out,
        r#"],"model":{model},"usage":{{"prompt_tokens":{p},"total_tokens":{p}}}}}"#
    );
    out
}

/// `GET /v1/models` body.
pub(crate) fn models_list(models: &[String], created: u64) -> String {
    let mut out = String::from(r#"{"object":"list","data":["#);
    for (i, m) in models.iter().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        let _ = write!(
            out,
            r#"{sep}{{"id":{},"object":"model","created":{created},"owned_by":"turnout-mock"}}"#,
            json_str(m)
        );
    }
    out.push_str("]}");
    out
}

/// A Responses `response` object; `output` and `usage` are JSON.
pub(crate) fn response_object(h: &Head, status: &str, output: &str, usage: &str) -> String {
    format!(
        concat!(
            r#"{{"id":"resp_mock_{}","object":"response","created_at":{},"status":"{}","#,
            r#""error":null,"incomplete_details":null,"instructions":null,"max_output_tokens":null,"#,
            r#""model":{},"output":{},"parallel_tool_calls":true,"previous_response_id":null,"#,
            r#""reasoning":{{"effort":null,"summary":null}},"store":true,"temperature":1.0,"#,
            r#""text":{{"format":{{"type":"text"}}}},"tool_choice":"auto","tools":[],"top_p":1.0,"#,
            r#""truncation":"disabled","usage":{},"user":null,"metadata":{{}}}}"#
        ),
        h.id, h.created, status, h.model, output, usage
    )
}

/// A Responses output message holding `text` (JSON-quoted).
pub(crate) fn response_message(h: &Head, status: &str, text: Option<&str>) -> String {
    let content = match text {
        Some(t) => format!(r#"[{{"type":"output_text","text":{t},"annotations":[]}}]"#),
        None => "[]".to_owned(),
    };
    format!(
        r#"{{"id":"msg_mock_{}","type":"message","status":"{status}","role":"assistant","content":{content}}}"#,
        h.id
    )
}

/// Responses `usage`.
pub(crate) fn response_usage(prompt: u64, completion: u64) -> String {
    format!(
        concat!(
            r#"{{"input_tokens":{},"input_tokens_details":{{"cached_tokens":0}},"#,
            r#""output_tokens":{},"output_tokens_details":{{"reasoning_tokens":0}},"total_tokens":{}}}"#
        ),
        prompt,
        completion,
        prompt + completion
    )
}

/// Non-streaming Responses body.
pub(crate) fn response(h: &Head, script: &Script, prompt: u64) -> String {
    let msg = response_message(h, "completed", Some(&script.full));
    let usage = response_usage(prompt, u64::from(script.chunks));
    response_object(h, "completed", &format!("[{msg}]"), &usage)
}

/// Anthropic Messages `message` object; `content` is a JSON array.
pub(crate) fn message(h: &Head, content: &str, stop: &str, prompt: u64, completion: u64) -> String {
    format!(
        concat!(
            r#"{{"id":"msg_mock_{}","type":"message","role":"assistant","model":{},"content":{},"#,
            r#""stop_reason":{},"stop_sequence":null,"usage":{{"input_tokens":{},"output_tokens":{}}}}}"#
        ),
        h.id, h.model, content, stop, prompt, completion
    )
}

/// Non-streaming Messages body.
pub(crate) fn messages(h: &Head, script: &Script, prompt: u64) -> String {
    let content = format!(r#"[{{"type":"text","text":{}}}]"#, script.full);
    message(
        h,
        &content,
        "\"end_turn\"",
        prompt,
        u64::from(script.chunks),
    )
}

/// OpenAI error envelope.
pub(crate) fn error(message: &str, kind: &str, code: &str) -> String {
    format!(
        r#"{{"error":{{"message":{},"type":{},"code":{},"param":null}}}}"#,
        json_str(message),
        json_str(kind),
        json_str(code)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn parse(s: &str) -> Value {
        serde_json::from_str(s).unwrap_or(Value::Null)
    }

    #[test]
    fn script_deltas_concatenate_to_full() {
        let s = Script::new("a\"b", 5);
        let mut joined = String::new();
        for d in &s.deltas {
            joined.push_str(parse(d)["content"].as_str().unwrap_or("?"));
        }
        assert_eq!(Value::String(joined.clone()), parse(&s.full));
        assert!(joined.starts_with("Hello from a\"b. "));
        assert_eq!(parse(&s.pieces[1]), parse(&s.deltas[1])["content"]);
    }

    #[test]
    fn bodies_are_valid_json() {
        let s = Script::new("x", 3);
        let h = Head {
            id: 7,
            created: 1,
            model: "\"m\"",
            fp: "\"x\"",
        };
        let c = parse(&chat_completion(&h, &s, 4));
        assert_eq!(c["usage"]["total_tokens"], 7);
        assert_eq!(c["id"], "chatcmpl-mock-7");
        let t = parse(&text_completion(&h, &s, 4));
        assert_eq!(t["object"], "text_completion");
        let e = parse(&embeddings("\"m\"", &["a".into(), "b".into()]));
        assert_eq!(e["data"][1]["embedding"].as_array().map(Vec::len), Some(8));
        let r = parse(&response(&h, &s, 4));
        assert_eq!(r["output"][0]["content"][0]["text"], parse(&s.full));
        assert_eq!(r["usage"]["output_tokens"], 3);
        let msg = parse(&messages(&h, &s, 4));
        assert_eq!(msg["content"][0]["text"], parse(&s.full));
        assert_eq!(msg["usage"]["input_tokens"], 4);
        let m = parse(&models_list(&["a".into()], 3));
        assert_eq!(m["data"][0]["owned_by"], "turnout-mock");
        assert_eq!(parse(&error("no", "t", "c"))["error"]["param"], Value::Null);
    }

    #[test]
    fn chunk_events_are_sse_json() {
        let h = Head {
            id: 1,
            created: 1,
            model: "\"m\"",
            fp: "\"x\"",
        };
        let mut out = String::new();
        push_chunk(&mut out, &h, "{}", "\"stop\"");
        push_usage_chunk(&mut out, &h, &usage(1, 2));
        let events: Vec<_> = out.split("\n\n").filter(|e| !e.is_empty()).collect();
        assert_eq!(events.len(), 2);
        let last = parse(events[1].trim_start_matches("data: "));
        assert_eq!(last["usage"]["completion_tokens"], 2);
    }
}
