//! Load generator of `scripts/bench.sh` (not a test, not run by CI).
//!
//! Saturation throughput is wrk's job; this tool does what wrk cannot:
//! - `rate`: open-loop requests at a fixed rate; each latency is measured from
//!   the moment the request was *due*, so a stalled target cannot hide its
//!   queueing (no coordinated omission).
//! - `streams`: N concurrent streaming requests in a closed loop; time to the
//!   first SSE event and to the end of the stream.
//! - `hold`: opens N slow streams, waits until each has its first event, prints
//!   one JSON line, then holds them open for a while (the script reads the
//!   target's RSS meanwhile).
//!
//! The request and the measure of an answer (time to first event, `[DONE]`)
//! and the percentiles are the library's (`turnout::bench`), shared
//! with `turnout bench`.
//!
//! Every mode prints one JSON object on stdout. Only 127.0.0.1 targets are used
//! by the bench script.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use tokio::time::Instant;
use turnout::bench::{summary, Shot};

#[derive(Parser)]
#[command(about = "Load generator for scripts/bench.sh")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Fixed-rate open-loop requests.
    Rate {
        #[command(flatten)]
        target: Target,
        /// Requests per second.
        #[arg(long)]
        rate: u32,
        /// How long to send.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
        duration: Duration,
        /// Requests in flight beyond this are not sent (counted as `skipped`).
        #[arg(long, default_value_t = 2000)]
        max_in_flight: u64,
    },
    /// Closed-loop concurrent streams: time to first event and to the end.
    Streams {
        #[command(flatten)]
        target: Target,
        /// Concurrent streams.
        #[arg(long)]
        concurrency: usize,
        /// How long to keep starting streams.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
        duration: Duration,
    },
    /// Opens N slow streams and holds them.
    Hold {
        #[command(flatten)]
        target: Target,
        /// Streams to open.
        #[arg(long)]
        count: usize,
        /// New streams started per second.
        #[arg(long, default_value_t = 2000)]
        ramp: u32,
        /// Give up waiting for the streams to open after this long.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
        open_timeout: Duration,
        /// Keep them open this long after the report line.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
        hold: Duration,
    },
}

#[derive(Args, Clone)]
struct Target {
    /// Full URL of the endpoint.
    #[arg(long)]
    url: String,
    /// File holding the JSON request body.
    #[arg(long)]
    body: std::path::PathBuf,
    /// Per-request timeout.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    timeout: Duration,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.mode {
            Mode::Rate {
                target,
                rate,
                duration,
                max_in_flight,
            } => rate_mode(target, rate, duration, max_in_flight).await,
            Mode::Streams {
                target,
                concurrency,
                duration,
            } => streams_mode(target, concurrency, duration).await,
            Mode::Hold {
                target,
                count,
                ramp,
                open_timeout,
                hold,
            } => hold_mode(target, count, ramp, open_timeout, hold).await,
        }
    });
    match result {
        Ok(v) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The target's body, sent by the library's [`Shot`] (shared with `turnout bench`).
fn shot(t: &Target, pool: usize) -> Result<Arc<Shot>, String> {
    let body = std::fs::read(&t.body).map_err(|e| format!("{}: {e}", t.body.display()))?;
    let headers = reqwest::header::HeaderMap::new();
    Shot::new(&t.url, Bytes::from(body), headers, t.timeout, pool).map(Arc::new)
}

async fn rate_mode(
    t: Target,
    rate: u32,
    duration: Duration,
    max_in_flight: u64,
) -> Result<serde_json::Value, String> {
    let shot = shot(&t, 4096)?;
    let period = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let total = (duration.as_secs_f64() * f64::from(rate)).round() as u64;
    let in_flight = Arc::new(AtomicU64::new(0));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Option<Duration>>();
    let start = Instant::now();
    let mut skipped = 0u64;
    for i in 0..total {
        let due = start + period.mul_f64(i as f64);
        tokio::time::sleep_until(due).await;
        if in_flight.load(Ordering::Relaxed) >= max_in_flight {
            skipped += 1;
            continue;
        }
        in_flight.fetch_add(1, Ordering::Relaxed);
        let (shot, tx, in_flight) = (shot.clone(), tx.clone(), in_flight.clone());
        tokio::spawn(async move {
            let ok = match shot.send().send().await {
                Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                _ => false,
            };
            in_flight.fetch_sub(1, Ordering::Relaxed);
            let _ = tx.send(ok.then(|| due.elapsed()));
        });
    }
    drop(tx);
    let sent_for = start.elapsed();
    let mut lat = Vec::with_capacity(total as usize);
    let mut errors = 0u64;
    while let Some(r) = rx.recv().await {
        match r {
            Some(d) => lat.push(d),
            None => errors += 1,
        }
    }
    let elapsed = start.elapsed();
    Ok(serde_json::json!({
        "mode": "rate",
        "rate": rate,
        "scheduled": total,
        "skipped": skipped,
        "errors": errors,
        "ok": lat.len(),
        "send_seconds": sent_for.as_secs_f64(),
        "achieved_rps": lat.len() as f64 / elapsed.as_secs_f64(),
        "latency": summary(lat),
    }))
}

/// Sends one streaming request; returns (time to first event, total time)
/// of a stream that ended with `[DONE]`.
async fn one_stream(shot: &Shot) -> Option<(Duration, Duration)> {
    let s = shot.measure(true).await;
    s.is_ok().then_some((s.ttft?, s.total))
}

async fn streams_mode(
    t: Target,
    concurrency: usize,
    duration: Duration,
) -> Result<serde_json::Value, String> {
    let shot = shot(&t, concurrency)?;
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let shot = shot.clone();
        tasks.push(tokio::spawn(async move {
            let (mut ttfb, mut total, mut errors) = (Vec::new(), Vec::new(), 0u64);
            while Instant::now() < deadline {
                match one_stream(&shot).await {
                    Some((f, a)) => {
                        ttfb.push(f);
                        total.push(a);
                    }
                    None => {
                        errors += 1;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            (ttfb, total, errors)
        }));
    }
    let (mut ttfb, mut total, mut errors) = (Vec::new(), Vec::new(), 0u64);
    for t in tasks {
        if let Ok((f, a, e)) = t.await {
            ttfb.extend(f);
            total.extend(a);
            errors += e;
        }
    }
    Ok(serde_json::json!({
        "mode": "streams",
        "concurrency": concurrency,
        "errors": errors,
        "ttfb": summary(ttfb),
        "total": summary(total),
    }))
}

async fn hold_mode(
    t: Target,
    count: usize,
    ramp: u32,
    open_timeout: Duration,
    hold: Duration,
) -> Result<serde_json::Value, String> {
    let shot = shot(&t, count)?;
    let opened = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let period = Duration::from_secs_f64(1.0 / f64::from(ramp.max(1)));
    let start = Instant::now();
    let mut held = Vec::with_capacity(count);
    for i in 0..count {
        tokio::time::sleep_until(start + period.mul_f64(i as f64)).await;
        let (shot, opened, failed) = (shot.clone(), opened.clone(), failed.clone());
        held.push(tokio::spawn(async move {
            let mut rsp = match shot.send().send().await {
                Ok(r) if r.status().is_success() => r,
                _ => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            let mut counted = false;
            // Keep reading (the stream stays open) until it ends or is dropped.
            while let Ok(Some(_)) = rsp.chunk().await {
                if !counted {
                    counted = true;
                    opened.fetch_add(1, Ordering::Relaxed);
                }
            }
            if counted {
                opened.fetch_sub(1, Ordering::Relaxed);
            }
            failed.fetch_add(1, Ordering::Relaxed);
        }));
    }
    let deadline = start + open_timeout;
    let mut stable_since = Instant::now();
    let mut last = 0;
    loop {
        let o = opened.load(Ordering::Relaxed);
        let f = failed.load(Ordering::Relaxed);
        if o as usize + f as usize >= count || Instant::now() >= deadline {
            break;
        }
        if o != last {
            last = o;
            stable_since = Instant::now();
        } else if stable_since.elapsed() > Duration::from_secs(10) && o > 0 {
            // No progress for 10 s: the target holds no more.
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let report = serde_json::json!({
        "mode": "hold",
        "requested": count,
        "open": opened.load(Ordering::Relaxed),
        "failed": failed.load(Ordering::Relaxed),
        "seconds_to_open": start.elapsed().as_secs_f64(),
    });
    // The report goes out now; the streams stay open while the script measures.
    println!("{report}");
    tokio::time::sleep(hold).await;
    let still = opened.load(Ordering::Relaxed);
    for h in held {
        h.abort();
    }
    Ok(serde_json::json!({"mode": "hold_end", "open_at_end": still}))
}
