//! criterion benchmarks of the pure hot paths of a proxied request.
//!
//! `cargo bench --bench hot_paths` (not run by CI; CI only compiles them
//! through clippy). End-to-end overhead is `scripts/bench.sh`'s job.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use turnout::config::{Config, Secrets};
use turnout::routing::{Base, Snapshot};

/// A realistic chat request (~300 bytes), as the end-to-end benchmark sends.
const CHAT: &[u8] = br#"{"model":"gpt-4.1","messages":[{"role":"system","content":"You are a helpful assistant that answers briefly."},{"role":"user","content":"Say hello and tell me one short fact about railway turnouts, please. Keep it under twenty words."}],"temperature":0.2,"max_tokens":64,"user":"user-1234"}"#;

const CONFIG: &str = r#"
listen: "127.0.0.1:8080"
admin: { listen: "127.0.0.1:9090" }
auth: { disabled: true }
upstreams:
  - { name: official, base_url: "http://127.0.0.1:1/v1" }
  - { name: relay, base_url: "http://127.0.0.1:2/v1" }
  - { name: local, base_url: "http://127.0.0.1:3/v1" }
routes:
  - { name: embed, models: ["text-embedding-*"], primary: local }
  - { name: claude, models: ["claude-3.5-sonnet", "claude-*"], primary: relay, fallbacks: [official] }
  - { name: chat, models: ["*"], primary: official, fallbacks: [relay, local], split: { target: relay, percentage: 10 } }
"#;

/// The snapshot the request path would load: names resolved, clients built,
/// every upstream healthy.
fn snapshot() -> Arc<Snapshot> {
    turnout::upstream::install_crypto();
    let cfg = match Config::from_yaml(CONFIG) {
        Ok(c) => c,
        Err(e) => panic!("bench config: {}", e.0),
    };
    let urls: Vec<String> = cfg
        .upstreams
        .iter()
        .filter_map(|u| u.base_url.clone())
        .collect();
    let base = match Base::build(Arc::new(cfg), &Secrets::default(), &urls) {
        Ok(b) => Arc::new(b),
        Err(e) => panic!("bench snapshot: {e}"),
    };
    let table = base.initial_table();
    Arc::new(Snapshot::new(base, table))
}

/// A streamed answer: 20 content events, the finish event, usage, `[DONE]`.
fn sse_stream() -> Vec<Vec<u8>> {
    let head = r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4.1","system_fingerprint":"fp","choices":[{"index":0,"delta":"#;
    let mut events: Vec<Vec<u8>> = (0..20)
        .map(|i| {
            format!("data: {head}{{\"content\":\"word{i} \"}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n")
                .into_bytes()
        })
        .collect();
    events.push(
        format!("data: {head}{{}},\"logprobs\":null,\"finish_reason\":\"stop\"}}]}}\n\n")
            .into_bytes(),
    );
    events.push(
        br#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":37,"completion_tokens":20,"total_tokens":57}}"#
            .iter()
            .chain(b"\n\n")
            .copied()
            .collect(),
    );
    events.push(b"data: [DONE]\n\n".to_vec());
    events
}

fn split(c: &mut Criterion) {
    let mut g = c.benchmark_group("split");
    g.bench_function("bucket", |b| {
        b.iter(|| turnout::routing::split::bucket(black_box("chat"), black_box("user-1234")))
    });
    g.bench_function("in_target_10pct", |b| {
        b.iter(|| {
            turnout::routing::split::in_target(
                black_box("chat"),
                black_box(Some("user-1234")),
                10.0,
            )
        })
    });
    g.finish();
}

fn routing(c: &mut Criterion) {
    let snap = snapshot();
    let t = &snap.table;
    let mut g = c.benchmark_group("routing");
    g.bench_function("route_for_glob", |b| {
        b.iter(|| t.matcher.route_for(black_box("gpt-4.1")))
    });
    g.bench_function("route_for_literal", |b| {
        b.iter(|| t.matcher.route_for(black_box("claude-3.5-sonnet")))
    });
    // What the request path does: model → route → split → chain (the plan),
    // then the walk's usable candidates.
    let now = tokio::time::Instant::now();
    g.bench_function("chain_from_table", |b| {
        b.iter(|| {
            let plan = turnout::request::plan::plan(
                snap.clone(),
                black_box("gpt-4.1"),
                black_box(Some("user-1234")),
            );
            plan.map(|p| {
                let usable = p.chain.filtered(|u| p.snap.table.upstreams[u].usable(now));
                (usable.len(), p.in_split)
            })
        })
    });
    g.finish();
}

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("request");
    g.throughput(Throughput::Bytes(CHAT.len() as u64));
    g.bench_function("peek_chat_300b", |b| {
        b.iter(|| turnout::openai::peek(black_box(CHAT)).map(|f| f.stream))
    });
    let body = bytes::Bytes::from_static(CHAT);
    let span = turnout::openai::peek(CHAT)
        .ok()
        .and_then(|f| f.model_span)
        .unwrap_or((0, 0));
    g.bench_function("with_model_rewrite", |b| {
        b.iter(|| {
            turnout::openai::with_model(black_box(&body), span, black_box("gpt-4.1-mini"), false)
        })
    });
    let response = br#"{"id":"chatcmpl-mock-1","object":"chat.completion","created":1795309792,"model":"gpt-4.1","system_fingerprint":"mock","choices":[{"index":0,"message":{"role":"assistant","content":"Hello from mock. the quick brown fox jumps over a lazy dog while turnout routes every request to safety the quick brown "},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":24,"completion_tokens":20,"total_tokens":44}}"#;
    g.bench_function("read_answer_415b", |b| {
        b.iter(|| turnout::openai::read_answer(black_box(response)))
    });
    g.finish();
}

fn sse(c: &mut Criterion) {
    let events = sse_stream();
    let whole: Vec<u8> = events.concat();
    let mut g = c.benchmark_group("sse");
    g.throughput(Throughput::Bytes(whole.len() as u64));
    // One chunk per event, as a provider usually flushes; the first event is
    // the commit point, as after prefetch.
    use turnout::request::protocol::{Protocol, StreamScan};
    g.bench_function("scan_per_event", |b| {
        b.iter(|| {
            let mut s = StreamScan::new(Protocol::Chat, true);
            for e in &events {
                s.feed(black_box(e));
            }
            (s.stop(), s.usage())
        })
    });
    // Events split across chunk boundaries (a relay that re-chunks).
    g.bench_function("scan_split_97b", |b| {
        b.iter(|| {
            let mut s = StreamScan::new(Protocol::Chat, true);
            for c in whole.chunks(97) {
                s.feed(black_box(c));
            }
            (s.stop(), s.usage())
        })
    });
    g.bench_function("commit_point", |b| {
        b.iter(|| {
            let mut s = StreamScan::new(Protocol::Chat, true);
            s.feed(black_box(&events[0]));
            s.committed()
        })
    });
    g.finish();
}

criterion_group!(benches, split, routing, parse, sse);
criterion_main!(benches);
