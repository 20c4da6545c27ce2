//! `turnout bench` (PRODUCT.md §3.11): measures each configured upstream
//! directly (each endpoint of an upstream with several): time to first token
//! p50/p95/p99, tokens per second, total latency p50/p95/p99, error rate by
//! kind. A progress bar on a terminal; a table, or JSON with `--json`.
//!
//! Requests to a provider may be billed: unless every upstream measured is
//! simulated (`simulate:`), it says how many requests and tokens it would
//! spend and refuses without `--yes`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use serde_json::{json, Value};

use super::shot::{Sample, Shot};
use super::stats::percentile;
use crate::config::{AuthHeader, Config, UpstreamConfig};
use crate::mock::{MockServer, MockSettings};
use crate::outcome::Outcome;

/// The prompt every request sends (short: a benchmark measures latency, not essays).
const PROMPT: &str = "Say hello in one short sentence.";
/// Prompt tokens a request is counted for in the estimate (prompt, role, framing).
const PROMPT_TOKENS_ESTIMATE: u64 = 16;

/// `turnout bench` options.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Measure only this upstream (repeatable; default: every upstream).
    #[arg(long = "upstream", value_name = "NAME")]
    pub upstreams: Vec<String>,
    /// Client model name (mapped by each upstream's `model_map`); default:
    /// the first literal model name in `routes`.
    #[arg(long)]
    pub model: Option<String>,
    /// Requests per upstream endpoint.
    #[arg(short = 'n', long = "requests", default_value_t = 20)]
    pub requests: usize,
    /// Requests in flight at once per endpoint.
    #[arg(short = 'c', long = "concurrency", default_value_t = 4)]
    pub concurrency: usize,
    /// Streaming requests (time to first token is then the first event).
    #[arg(long)]
    pub stream: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Send requests to upstreams that are not simulated (they may bill).
    #[arg(long)]
    pub yes: bool,
    /// `max_tokens` of each request.
    #[arg(long, default_value_t = 32)]
    pub max_tokens: u32,
}

/// One endpoint to measure.
struct Target {
    upstream: String,
    endpoint: Option<String>,
    base_url: String,
    simulated: bool,
    key: Option<String>,
    /// How the key is sent (`upstreams[].auth_header`).
    auth: AuthHeader,
    model: String,
    timeout: Duration,
}

/// What `run` produced: the text for stdout (a table or JSON).
pub type Report = String;

/// Runs the benchmark on `cfg`; `env` reads the upstreams' key variables.
/// `Err` carries the message for stderr (a refusal included).
pub async fn run(
    cfg: &Config,
    args: &BenchArgs,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Result<Report, String> {
    if args.requests == 0 || args.concurrency == 0 {
        return Err("-n and -c must be at least 1".into());
    }
    let model = match &args.model {
        Some(m) => m.clone(),
        None => default_model(cfg)
            .ok_or("no literal model name in `routes`; pass --model NAME".to_string())?,
    };
    let chosen = select(cfg, &args.upstreams)?;
    let mut mocks = Vec::new();
    let mut targets = Vec::new();
    for u in chosen {
        targets.extend(targets_of(u, &model, env, &mut mocks).await?);
    }
    let billed: Vec<&Target> = targets.iter().filter(|t| !t.simulated).collect();
    let per = args.requests as u64;
    let tokens = per * (PROMPT_TOKENS_ESTIMATE + u64::from(args.max_tokens));
    let plan = format!(
        "turnout bench: {} request(s) to each of {} endpoint(s), up to about {} tokens each \
         (≈{PROMPT_TOKENS_ESTIMATE} prompt + ≤{} completion per request)",
        per,
        targets.len(),
        tokens,
        args.max_tokens
    );
    if !billed.is_empty() && !args.yes {
        let names: Vec<String> = billed.iter().map(|t| label(t)).collect();
        return Err(format!(
            "{plan}.\nNot simulated, so possibly billed: {} — {} request(s), about {} tokens in all.\n\
             Nothing was sent. Re-run with --yes to send them.",
            names.join(", "),
            per * billed.len() as u64,
            tokens * billed.len() as u64
        ));
    }
    eprintln!("{plan}.");
    let progress = progress_bar((per as usize * targets.len()) as u64);
    let mut rows = Vec::with_capacity(targets.len());
    for t in &targets {
        progress.set_message(label(t));
        let samples = measure(t, args, &progress).await?;
        rows.push(row(t, &samples, args.stream));
    }
    progress.finish_and_clear();
    drop(mocks);
    Ok(if args.json {
        let v = json!({
            "model": model,
            "stream": args.stream,
            "requests": args.requests,
            "concurrency": args.concurrency,
            "max_tokens": args.max_tokens,
            "results": rows,
        });
        format!("{v:#}\n")
    } else {
        table(&rows)
    })
}

/// The first literal (not glob) model name of the routes.
fn default_model(cfg: &Config) -> Option<String> {
    cfg.routes
        .iter()
        .flat_map(|r| r.models.iter())
        .find(|m| !m.contains(['*', '?']))
        .cloned()
}

fn select<'a>(cfg: &'a Config, names: &[String]) -> Result<Vec<&'a UpstreamConfig>, String> {
    if names.is_empty() {
        return Ok(cfg.upstreams.iter().collect());
    }
    names
        .iter()
        .map(|n| {
            cfg.upstreams.iter().find(|u| &u.name == n).ok_or_else(|| {
                let known: Vec<&str> = cfg.upstreams.iter().map(|u| u.name.as_str()).collect();
                format!(
                    "--upstream {n}: no such upstream (known: {})",
                    known.join(", ")
                )
            })
        })
        .collect()
}

/// Each endpoint of `u` (a simulated upstream's provider is started here).
async fn targets_of(
    u: &UpstreamConfig,
    model: &str,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
    mocks: &mut Vec<MockServer>,
) -> Result<Vec<Target>, String> {
    let key = match &u.api_key_env {
        Some(var) => Some(env(var).ok_or_else(|| {
            format!(
                "upstream {}: env var {var} (its api_key_env) is not set",
                u.name
            )
        })?),
        None => None,
    };
    let mut urls: Vec<(Option<String>, String)> = Vec::new();
    let simulated = u.base_url.is_none() && u.endpoints.is_none() && u.simulate.is_some();
    if let Some(b) = &u.base_url {
        urls.push((None, b.clone()));
    } else if let Some(eps) = &u.endpoints {
        urls.extend(
            eps.iter()
                .map(|e| (Some(e.name.clone()), e.base_url.clone())),
        );
    } else if let Some(sim) = &u.simulate {
        let mut settings = MockSettings {
            name: u.name.clone(),
            ..MockSettings::default()
        };
        settings.latency = sim.latency.unwrap_or(settings.latency);
        settings.ttft = sim.ttft.unwrap_or(settings.ttft);
        settings.chunks = sim.chunks.unwrap_or(settings.chunks);
        settings.chunk_delay = sim.chunk_delay.unwrap_or(settings.chunk_delay);
        settings.fail_rate = sim.fail_rate.unwrap_or(settings.fail_rate);
        if let Some(m) = &sim.models {
            settings.models = m.clone();
        }
        let m = MockServer::start(settings)
            .await
            .map_err(|e| format!("upstream {}: cannot start its simulator: {e}", u.name))?;
        urls.push((None, m.base_url()));
        mocks.push(m);
    }
    let mapped = u.model_map.get(model).map_or(model, String::as_str);
    Ok(urls
        .into_iter()
        .map(|(endpoint, base_url)| Target {
            upstream: u.name.clone(),
            endpoint,
            base_url,
            simulated,
            key: key.clone(),
            auth: u.auth_header,
            model: mapped.to_owned(),
            timeout: u.timeouts.total,
        })
        .collect())
}

fn label(t: &Target) -> String {
    match &t.endpoint {
        Some(e) => format!("{}/{e}", t.upstream),
        None => t.upstream.clone(),
    }
}

fn progress_bar(total: u64) -> indicatif::ProgressBar {
    // Drawn on stderr, and only on a terminal (hidden otherwise).
    let pb = indicatif::ProgressBar::new(total);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} requests  {msg}")
    {
        pb.set_style(style);
    }
    pb
}

/// `n` requests to one endpoint, `c` at a time.
async fn measure(
    t: &Target,
    args: &BenchArgs,
    progress: &indicatif::ProgressBar,
) -> Result<Vec<Sample>, String> {
    let mut body = json!({
        "model": t.model,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": args.max_tokens,
    });
    if args.stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(k) = &t.key {
        let (name, text) = match t.auth {
            AuthHeader::Authorization => (reqwest::header::AUTHORIZATION, format!("Bearer {k}")),
            AuthHeader::XApiKey => (
                reqwest::header::HeaderName::from_static("x-api-key"),
                k.clone(),
            ),
        };
        let mut v = reqwest::header::HeaderValue::from_str(&text).map_err(|_| {
            format!(
                "upstream {}: its key is not a valid header value",
                t.upstream
            )
        })?;
        v.set_sensitive(true);
        headers.insert(name, v);
    }
    let url = format!("{}/chat/completions", t.base_url.trim_end_matches('/'));
    let shot = Arc::new(Shot::new(
        &url,
        Bytes::from(body.to_string()),
        headers,
        t.timeout,
        args.concurrency,
    )?);
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::with_capacity(args.concurrency);
    for _ in 0..args.concurrency.min(args.requests) {
        let (shot, next, progress, n, stream) = (
            shot.clone(),
            next.clone(),
            progress.clone(),
            args.requests,
            args.stream,
        );
        workers.push(tokio::spawn(async move {
            let mut out = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < n {
                out.push(shot.measure(stream).await);
                progress.inc(1);
            }
            out
        }));
    }
    let mut samples = Vec::with_capacity(args.requests);
    for w in workers {
        samples.extend(
            w.await
                .map_err(|e| format!("a benchmark task failed: {e}"))?,
        );
    }
    Ok(samples)
}

/// One endpoint's figures.
fn row(t: &Target, samples: &[Sample], stream: bool) -> Value {
    let ok: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.outcome == Outcome::Ok)
        .collect();
    let mut errors: BTreeMap<&str, u64> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.outcome != Outcome::Ok) {
        *errors.entry(s.outcome.label()).or_default() += 1;
    }
    let mut ttft: Vec<Duration> = ok.iter().filter_map(|s| s.ttft).collect();
    let mut total: Vec<Duration> = ok.iter().map(|s| s.total).collect();
    ttft.sort_unstable();
    total.sort_unstable();
    let pcts = |v: &[Duration]| {
        let ms = |q| percentile(v, q).map(|d| (d.as_secs_f64() * 100_000.0).round() / 100.0);
        json!({"p50": ms(0.50), "p95": ms(0.95), "p99": ms(0.99)})
    };
    let completion: u64 = ok
        .iter()
        .filter_map(|s| s.usage)
        .map(|u| u.completion_tokens)
        .sum();
    let prompt: u64 = ok
        .iter()
        .filter_map(|s| s.usage)
        .map(|u| u.prompt_tokens)
        .sum();
    // Generation time: after the first token for a stream, the whole answer otherwise.
    let gen: f64 = ok
        .iter()
        .map(|s| match (stream, s.ttft) {
            (true, Some(f)) => s.total.saturating_sub(f).as_secs_f64(),
            _ => s.total.as_secs_f64(),
        })
        .sum();
    let tps =
        (gen > 0.0 && completion > 0).then(|| (completion as f64 / gen * 10.0).round() / 10.0);
    let n = samples.len();
    json!({
        "upstream": t.upstream,
        "endpoint": t.endpoint,
        "simulated": t.simulated,
        "requests": n,
        "ok": ok.len(),
        "errors": errors,
        "error_rate": if n == 0 { 0.0 } else { ((n - ok.len()) as f64 / n as f64 * 10_000.0).round() / 10_000.0 },
        "ttft_ms": pcts(&ttft),
        "total_ms": pcts(&total),
        "tokens_per_second": tps,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
    })
}

/// The rows as an aligned text table.
fn table(rows: &[Value]) -> String {
    let head = [
        "upstream",
        "requests",
        "ok",
        "errors",
        "TTFT p50",
        "p95",
        "p99",
        "total p50",
        "p95",
        "p99",
        "tok/s",
    ];
    let ms = |v: &Value| v.as_f64().map_or("–".to_string(), |x| format!("{x:.1}"));
    let mut lines: Vec<Vec<String>> = vec![head.iter().map(|s| s.to_string()).collect()];
    for r in rows {
        let name = match r["endpoint"].as_str() {
            Some(e) => format!("{}/{e}", r["upstream"].as_str().unwrap_or("?")),
            None => r["upstream"].as_str().unwrap_or("?").to_string(),
        };
        let errors = match r["errors"].as_object() {
            Some(m) if !m.is_empty() => m
                .iter()
                .map(|(k, v)| format!("{k}:{v}"))
                .collect::<Vec<_>>()
                .join(" "),
            _ => "0".to_string(),
        };
        lines.push(vec![
            name,
            r["requests"].to_string(),
            r["ok"].to_string(),
            errors,
            ms(&r["ttft_ms"]["p50"]),
            ms(&r["ttft_ms"]["p95"]),
            ms(&r["ttft_ms"]["p99"]),
            ms(&r["total_ms"]["p50"]),
            ms(&r["total_ms"]["p95"]),
            ms(&r["total_ms"]["p99"]),
            ms(&r["tokens_per_second"]),
        ]);
    }
    let widths: Vec<usize> = (0..head.len())
        .map(|i| {
            lines
                .iter()
                .map(|l| l[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (j, l) in lines.iter().enumerate() {
        let cells: Vec<String> = l
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, w))| {
                if i == 0 || i == 3 {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
        if j == 0 {
            let _ = writeln!(
                out,
                "{}",
                "-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1))
            );
        }
    }
    out.push_str(
        "(milliseconds; TTFT: first streamed event, or the whole answer when not streaming)\n",
    );
    out
}
