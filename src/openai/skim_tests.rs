//! The skims behind [`peek`] and [`read_answer`] against serde_json alone
//! ([`serde_peek`], [`serde_answer`]): on generated JSON-ish bodies (the read
//! keys in any order, repeated, escaped, wrongly typed, hidden in nested
//! decoys, with any whitespace, numbers and strings of every shape) and on
//! byte-level mutations of them, both give the same answer, error messages
//! included.

use proptest::prelude::*;

use super::skim::MAX_DEPTH;
use super::*;

/// A JSON-ish value, rendered with chosen whitespace.
#[derive(Debug, Clone)]
enum J {
    /// Raw string content between the quotes (escapes written out).
    Str(Vec<u8>),
    /// Raw number text (valid or not).
    Num(&'static str),
    /// A literal (valid or not).
    Lit(&'static str),
    Arr(Vec<J>),
    Obj(Vec<(Vec<u8>, J)>),
    /// `n` nested arrays (or objects), around the skim's depth limit and
    /// serde_json's recursion limit.
    Deep(usize, bool),
}

/// Whitespace between tokens: mostly JSON's, sometimes a byte serde_json
/// does not accept as whitespace.
const SPACES: &[&str] = &[
    "", "", "", "", " ", "  ", "\n", "\t", "\r\n", " \n\t\r ", "\u{c}", "\u{a0}",
];

/// Pieces of string content that are valid JSON.
const PIECES: &[&[u8]] = &[
    b"gpt-4.1",
    b"",
    b"bench-fast",
    b"a\\u0062c",
    b"\\\"",
    b"\\\\",
    b"\\/",
    b"\\n\\r\\t\\b\\f",
    b"\\u00e9",
    b"\\u00E9",
    b"\\ud83d\\ude00",
    "é".as_bytes(),
    "😀".as_bytes(),
    "模型".as_bytes(),
    b"\x7f",
    b"model",
    b"\\\"model\\\":",
    b"failed",
    b"null",
    b" ",
    b"Say hello and tell me one short fact about railway turnouts, please.",
];

/// Pieces that are not valid (or that serde_json skips but will not decode).
const ODD_PIECES: &[&[u8]] = &[
    b"\\ud800",
    b"\\udfff",
    b"\\ud800\\u0041",
    b"\\u12",
    b"\\u12g4",
    b"\\x",
    b"\\",
    b"\x01",
    b"\x1f",
    b"\t",
    b"\xff",
    b"\xc3",
    b"\xed\xa0\x80",
];

const NUMS: &[&str] = &[
    "0",
    "1",
    "3",
    "64",
    "-1",
    "-0",
    "0.2",
    "1.5",
    "1e5",
    "1E+2",
    "2.5e-3",
    "18446744073709551615",
    "18446744073709551616",
    "123456789012345678901234567890",
    "1.0e2",
    "0e0",
    "-0.0E-0",
];

const ODD_NUMS: &[&str] = &["01", "1.", "-", ".5", "1e", "+1", "00", "-01", "1e+", "0x1"];

const LITS: &[&str] = &["true", "false", "null"];

const ODD_LITS: &[&str] = &["nul", "tru", "nulll", "True", "NULL", "fals"];

const STATUSES: &[&[u8]] = &[
    b"failed",
    b"completed",
    b"f\\u0061iled",
    b"failed ",
    b"\xff",
];

const KEYS: &[&[u8]] = &[
    b"model",
    b"stream",
    b"user",
    b"stream_options",
    b"include_usage",
    b"error",
    b"status",
    b"usage",
    b"messages",
    b"choices",
    b"content",
    b"id",
    b"prompt_tokens",
    b"completion_tokens",
    b"input_tokens",
    b"output_tokens",
    b"cache_creation_input_tokens",
    b"cache_read_input_tokens",
    b"total_tokens",
    b"mod\\u0065l",
    b"\\u0075sage",
    b"model ",
    b"Model",
    b"",
    "é".as_bytes(),
    b"\xff",
    b"mo\x01del",
];

fn string() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        8 => proptest::sample::select(PIECES),
        1 => proptest::sample::select(ODD_PIECES),
    ];
    proptest::collection::vec(piece, 0..4).prop_map(|p| p.concat())
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => proptest::sample::select(KEYS).prop_map(<[u8]>::to_vec),
        1 => string(),
    ]
}

fn leaf() -> impl Strategy<Value = J> {
    prop_oneof![
        8 => string().prop_map(J::Str),
        6 => proptest::sample::select(NUMS).prop_map(J::Num),
        1 => proptest::sample::select(ODD_NUMS).prop_map(J::Num),
        6 => proptest::sample::select(LITS).prop_map(J::Lit),
        1 => proptest::sample::select(ODD_LITS).prop_map(J::Lit),
        1 => (prop_oneof![1..4usize, (MAX_DEPTH as usize - 2)..(MAX_DEPTH as usize + 3), 125..131usize], any::<bool>())
            .prop_map(|(n, o)| J::Deep(n, o)),
    ]
}

/// Any value: leaves, and arrays and objects of them (decoys: nested keys
/// named like the read ones).
fn value() -> impl Strategy<Value = J> {
    leaf().prop_recursive(4, 24, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(J::Arr),
            proptest::collection::vec((key(), inner), 0..5).prop_map(J::Obj),
        ]
    })
}

fn member(k: &'static [u8], v: impl Strategy<Value = J>) -> impl Strategy<Value = (Vec<u8>, J)> {
    v.prop_map(move |v| (k.to_vec(), v))
}

fn null() -> J {
    J::Lit("null")
}

fn flag() -> impl Strategy<Value = J> {
    proptest::sample::select(&["true", "false", "null"][..]).prop_map(J::Lit)
}

fn count() -> impl Strategy<Value = J> {
    prop_oneof![
        6 => proptest::sample::select(&["0", "7", "123", "18446744073709551615", "18446744073709551616", "-3", "1.5", "2e3"][..]).prop_map(J::Num),
        1 => Just(null()),
        1 => value(),
    ]
}

/// A member of a request body, mostly with the type `peek` wants.
fn request_member() -> impl Strategy<Value = (Vec<u8>, J)> {
    let options = proptest::collection::vec(
        prop_oneof![
            3 => member(b"include_usage", flag()),
            1 => (key(), value()),
        ],
        0..4,
    )
    .prop_map(J::Obj);
    prop_oneof![
        4 => member(b"model", prop_oneof![6 => string().prop_map(J::Str), 1 => Just(null()), 1 => value()]),
        2 => member(b"stream", prop_oneof![4 => flag(), 1 => value()]),
        2 => member(b"user", prop_oneof![4 => string().prop_map(J::Str), 1 => Just(null()), 1 => value()]),
        2 => member(b"stream_options", prop_oneof![4 => options, 1 => Just(null()), 1 => value()]),
        4 => (key(), value()),
    ]
}

/// A member of an answer, mostly with the type `read_answer` wants.
fn answer_member() -> impl Strategy<Value = (Vec<u8>, J)> {
    let usage = proptest::collection::vec(
        prop_oneof![
            6 => (proptest::sample::select(&KEYS[12..19]).prop_map(<[u8]>::to_vec), count()),
            1 => (key(), value()),
        ],
        0..5,
    )
    .prop_map(J::Obj);
    let status = proptest::sample::select(STATUSES).prop_map(|s| J::Str(s.to_vec()));
    prop_oneof![
        2 => member(b"error", prop_oneof![2 => Just(null()), 2 => value()]),
        2 => member(b"status", prop_oneof![3 => status, 1 => Just(null()), 1 => value()]),
        3 => member(b"usage", prop_oneof![4 => usage, 1 => Just(null()), 1 => proptest::collection::vec(count(), 0..7).prop_map(J::Arr), 1 => value()]),
        4 => (key(), value()),
    ]
}

/// Whitespace choices, taken in turn.
struct Spaces<'a> {
    picks: &'a [usize],
    next: usize,
}

impl Spaces<'_> {
    fn put(&mut self, out: &mut Vec<u8>) {
        if self.picks.is_empty() {
            return;
        }
        let pick = self.picks[self.next % self.picks.len()];
        self.next += 1;
        out.extend_from_slice(SPACES[pick % SPACES.len()].as_bytes());
    }
}

fn render(j: &J, ws: &mut Spaces<'_>, out: &mut Vec<u8>) {
    match j {
        J::Str(s) => {
            out.push(b'"');
            out.extend_from_slice(s);
            out.push(b'"');
        }
        J::Num(n) => out.extend_from_slice(n.as_bytes()),
        J::Lit(l) => out.extend_from_slice(l.as_bytes()),
        J::Arr(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                ws.put(out);
                if i > 0 {
                    out.push(b',');
                    ws.put(out);
                }
                render(item, ws, out);
            }
            ws.put(out);
            out.push(b']');
        }
        J::Obj(members) => render_object(members, ws, out),
        J::Deep(n, object) => {
            for _ in 0..*n {
                out.extend_from_slice(if *object { b"{\"model\":" } else { b"[" });
            }
            out.push(b'1');
            for _ in 0..*n {
                out.push(if *object { b'}' } else { b']' });
            }
        }
    }
}

fn render_object(members: &[(Vec<u8>, J)], ws: &mut Spaces<'_>, out: &mut Vec<u8>) {
    out.push(b'{');
    for (i, (k, v)) in members.iter().enumerate() {
        ws.put(out);
        if i > 0 {
            out.push(b',');
            ws.put(out);
        }
        render(&J::Str(k.clone()), ws, out);
        ws.put(out);
        out.push(b':');
        ws.put(out);
        render(v, ws, out);
    }
    ws.put(out);
    out.push(b'}');
}

/// One byte-level change: `(where, byte, how)`.
type Mutation = (usize, u8, u8);

/// Bytes that matter to a JSON scanner, for inserted and replaced bytes.
const SHARP: &[u8] = b"\"\\{}[],: \x00\xff\xc30ae-";

fn mutate(body: &mut Vec<u8>, mutations: &[Mutation]) {
    for &(at, byte, how) in mutations {
        let at = if body.is_empty() {
            0
        } else {
            at % (body.len() + 1)
        };
        let sharp = SHARP[usize::from(byte) % SHARP.len()];
        match how % 6 {
            0 if at < body.len() => body[at] = byte,
            1 if at < body.len() => body[at] = sharp,
            2 => body.insert(at, sharp),
            3 => body.insert(at, byte),
            4 if at < body.len() => {
                body.remove(at);
            }
            5 => body.truncate(at),
            _ => {}
        }
    }
}

/// A body: an object of `members`, surrounded by chosen whitespace and an
/// optional trailer, then mutated.
fn body(
    members: &[(Vec<u8>, J)],
    spaces: &[usize],
    trailer: &str,
    mutations: &[Mutation],
) -> Vec<u8> {
    let mut ws = Spaces {
        picks: spaces,
        next: 0,
    };
    let mut out = Vec::new();
    ws.put(&mut out);
    render_object(members, &mut ws, &mut out);
    ws.put(&mut out);
    out.extend_from_slice(trailer.as_bytes());
    mutate(&mut out, mutations);
    out
}

const TRAILERS: &[&str] = &["", "", "", " ", "\n", "x", "}", " {}", "\u{a0}", ",", "\0"];

/// `peek`'s result, comparable: the facts, or the whole client error.
fn facts_of(r: Result<RequestFacts, ApiError>) -> Result<String, String> {
    r.map(|f| format!("{f:?}")).map_err(|e| {
        format!(
            "{} {} {} {} {:?}",
            e.status, e.kind, e.code, e.message, e.retry_after
        )
    })
}

fn same_peek(body: &[u8]) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        facts_of(peek(body)),
        facts_of(serde_peek(body)),
        "body: {:?}",
        String::from_utf8_lossy(body)
    );
    Ok(())
}

fn same_answer(body: &[u8]) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        read_answer(body),
        serde_answer(body),
        "body: {:?}",
        String::from_utf8_lossy(body)
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

    #[test]
    fn peek_is_serde_json_on_request_bodies(
        members in proptest::collection::vec(request_member(), 0..7),
        spaces in proptest::collection::vec(0..SPACES.len() * 4, 0..12),
        trailer in proptest::sample::select(TRAILERS),
        mutations in prop_oneof![
            2 => Just(Vec::new()),
            1 => proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..4),
        ],
    ) {
        same_peek(&body(&members, &spaces, trailer, &mutations))?;
    }

    #[test]
    fn read_answer_is_serde_json_on_answers(
        members in proptest::collection::vec(answer_member(), 0..7),
        spaces in proptest::collection::vec(0..SPACES.len() * 4, 0..12),
        trailer in proptest::sample::select(TRAILERS),
        mutations in prop_oneof![
            2 => Just(Vec::new()),
            1 => proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..4),
        ],
    ) {
        let b = body(&members, &spaces, trailer, &mutations);
        same_answer(&b)?;
        // The same bytes as a request, and the request as an answer.
        same_peek(&b)?;
    }

    #[test]
    fn both_are_serde_json_on_any_value_and_raw_bytes(
        v in value(),
        spaces in proptest::collection::vec(0..SPACES.len() * 4, 0..12),
        raw in proptest::collection::vec(any::<u8>(), 0..64),
        mutations in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 0..3),
    ) {
        let mut ws = Spaces { picks: &spaces, next: 0 };
        let mut b = Vec::new();
        render(&v, &mut ws, &mut b);
        mutate(&mut b, &mutations);
        same_peek(&b)?;
        same_answer(&b)?;
        same_peek(&raw)?;
        same_answer(&raw)?;
    }
}

/// The generators reach the skim's own answers (not only its fallbacks):
/// without this the equality above could hold vacuously.
#[test]
fn the_generators_reach_the_skims() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut peeks, mut answers, mut models, mut usages) = (0, 0, 0, 0);
    let members = proptest::collection::vec(request_member(), 0..7);
    let answer_members = proptest::collection::vec(answer_member(), 0..7);
    for _ in 0..2_000 {
        let Ok(tree) = members.new_tree(&mut runner) else {
            continue;
        };
        let b = body(&tree.current(), &[0, 4, 6], "", &[]);
        if let Some(f) = skim_peek(&b) {
            peeks += 1;
            models += usize::from(f.model.is_some());
        }
        let Ok(tree) = answer_members.new_tree(&mut runner) else {
            continue;
        };
        let b = body(&tree.current(), &[0, 4, 6], "", &[]);
        if let Some(a) = skim_answer(&b) {
            answers += 1;
            usages += usize::from(a.usage.is_some());
        }
    }
    println!("skim answers of 2000 each: {peeks} requests ({models} with a model), {answers} answers ({usages} with usage)");
    assert!(peeks > 500 && models > 100, "{peeks} {models}");
    assert!(answers > 500 && usages > 15, "{answers} {usages}");
}

/// The request and answer the benchmark sends are read by the skim.
#[test]
fn benchmark_bodies_take_the_skim() {
    let request = br#"{"model":"bench-fast","messages":[{"role":"system","content":"You are a helpful assistant that answers briefly."},{"role":"user","content":"Say hello and tell me one short fact about railway turnouts, please. Keep it under twenty words."}],"temperature":0.2,"max_tokens":64,"user":"user-1234"}"#;
    let f = skim_peek(request).map(|f| (f.model, f.model_span, f.user));
    assert_eq!(
        f,
        Some((
            Some("bench-fast".to_owned()),
            Some((9, 21)),
            Some("user-1234".to_owned())
        ))
    );
    let answer = br#"{"id":"chatcmpl-mock-1","object":"chat.completion","created":1,"model":"bench-fast","system_fingerprint":"fp","choices":[{"index":0,"message":{"role":"assistant","content":"word word"},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":37,"completion_tokens":20,"total_tokens":57}}"#;
    assert_eq!(
        skim_answer(answer).and_then(|a| a.usage),
        Some(Usage {
            prompt_tokens: 37,
            completion_tokens: 20
        })
    );
}

/// The cases the brief names, each checked against serde_json and, where
/// the skim must give up, that it does.
#[test]
fn named_edge_cases() {
    let requests: &[&[u8]] = &[
        br#"{"mod\u0065l":"x"}"#,
        br#"{"model":"a","model":"b"}"#,
        br#"{"model":null,"model":"b"}"#,
        br#"{"stream_options":{"include_usage":true,"include_usage":false}}"#,
        br#"{"stream_options":[true]}"#,
        br#"{"messages":[{"model":"x"}],"model":"y"}"#,
        br#"{"model":5}"#,
        br#"{"model":"a"} x"#,
        br#"{"model":"a"}  "#,
        br#" {"model":"a"}"#,
        b"{\"model\":\"a\xff\"}",
        b"{\"x\":\"\xff\",\"model\":\"a\"}",
        b"{\"model\":\"a\x01\"}",
        br#"{"model":"\ud800"}"#,
        br#"{"model":"\ud83d\ude00"}"#,
        br#"{"temperature":01,"model":"a"}"#,
        br#"{"model":"a",}"#,
        br#"["gpt-4"]"#,
        br#"{"user":""}"#,
        br#"{"stream":null,"user":null,"stream_options":null}"#,
    ];
    for b in requests {
        assert_eq!(facts_of(peek(b)), facts_of(serde_peek(b)), "{b:?}");
    }
    assert!(skim_peek(br#"{"mod\u0065l":"x"}"#).is_none());
    assert!(skim_peek(br#"{"model":"a","model":"b"}"#).is_none());
    let deep = format!("{{\"x\":{}1{}}}", "[".repeat(200), "]".repeat(200));
    assert!(skim_peek(deep.as_bytes()).is_none());
    assert_eq!(
        facts_of(peek(deep.as_bytes())),
        facts_of(serde_peek(deep.as_bytes()))
    );

    let answers: &[&[u8]] = &[
        b"{\"choices\":[{\"text\":\"\xff\"}],\"usage\":{\"prompt_tokens\":1}}",
        b"{\"\xff\":1}",
        b"{\"error\":\"\xff\"}",
        br#"{"error":null,"error":null}"#,
        br#"{"status":"f\u0061iled"}"#,
        br#"{"usage":[1,2]}"#,
        br#"{"usage":{"prompt_tokens":1.5,"completion_tokens":2}}"#,
        br#"{"usage":{"prompt_tokens":1,"prompt_tokens":2}}"#,
        b"{\"usage\":{\"\xff\":1}}",
        b"{\"usage\":{\"x\":\"\xff\"}}",
    ];
    for b in answers {
        assert_eq!(read_answer(b), serde_answer(b), "{b:?}");
    }
}
