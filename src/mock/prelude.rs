//! Per-request overrides (`x-mock-*` headers) and the steps every API
//! endpoint takes before building its body: latency, status and hang faults,
//! random failures.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;

use super::body::Script;
use super::fault::{context_length_fault, error_response, parse_fault, status_fault};
use super::state::{Flight, Kind, Shared};
use super::Fault;

/// Per-request settings: headers override the instance settings.
pub(crate) struct Overrides {
    pub fault: Option<Fault>,
    pub ttft: Duration,
    pub chunk_delay: Duration,
    pub chunks: Option<u32>,
}

/// Reads a humantime `x-mock-*` header, or `default` when absent.
fn duration_header(h: &HeaderMap, name: &str, default: Duration) -> Result<Duration, String> {
    match h.get(name).map(HeaderValue::to_str) {
        None => Ok(default),
        Some(Ok(v)) => humantime::parse_duration(v.trim()).map_err(|e| format!("{name}: {e}")),
        Some(Err(_)) => Err(format!("{name}: not text")),
    }
}

/// Everything every API endpoint does before building its body: overrides,
/// latency, then `Status`/`Hang` faults and the random failure rate.
/// `Err` is the finished answer.
pub(crate) async fn prelude(
    s: &Shared,
    h: &HeaderMap,
    kind: Kind,
    flight: &mut Flight,
) -> Result<Overrides, Response> {
    let parsed = (|| {
        let fault = match h.get("x-mock-fault").map(HeaderValue::to_str) {
            None => None,
            Some(Ok(v)) => Some(parse_fault(v)?),
            Some(Err(_)) => return Err("x-mock-fault: not text".to_owned()),
        };
        let chunks = match h.get("x-mock-chunks").map(HeaderValue::to_str) {
            None => None,
            Some(v) => Some(
                v.ok()
                    .and_then(|v| v.trim().parse().ok())
                    .ok_or("x-mock-chunks: not a number")?,
            ),
        };
        let st = &s.settings;
        let latency = duration_header(h, "x-mock-latency", st.latency)?;
        let ov = Overrides {
            fault,
            ttft: duration_header(h, "x-mock-ttft", st.ttft)?,
            chunk_delay: duration_header(h, "x-mock-chunk-delay", st.chunk_delay)?,
            chunks,
        };
        Ok::<_, String>((latency, ov))
    })();
    let (latency, mut ov) = parsed.map_err(|msg| {
        flight.finish();
        error_response(StatusCode::BAD_REQUEST, &format!("mock: {msg}"))
    })?;
    if ov.fault.is_none() {
        ov.fault = s.fault_for(kind);
    }
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match ov.fault {
        Some(Fault::Hang) => std::future::pending().await,
        Some(Fault::Status { code, retry_after }) => {
            flight.finish();
            Err(status_fault(code, retry_after))
        }
        Some(Fault::ContextLength) => {
            flight.finish();
            Err(context_length_fault())
        }
        None if matches!(kind, Kind::Inference)
            && s.settings.fail_rate > 0.0
            && fastrand::f64() < s.settings.fail_rate =>
        {
            flight.finish();
            let msg = "mock: random failure (fail_rate)";
            Err(error_response(StatusCode::INTERNAL_SERVER_ERROR, msg))
        }
        _ => Ok(ov),
    }
}

/// The script for this request's chunk count (the precomputed one if unchanged).
pub(crate) fn script_for(s: &Shared, ov: &Overrides) -> Arc<Script> {
    match ov.chunks {
        Some(n) if n != s.settings.chunks => Arc::new(Script::new(&s.settings.name, n)),
        _ => Arc::clone(&s.script),
    }
}
