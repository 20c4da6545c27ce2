//! The SSE body of a streamed chat completion, with its timing (time to
//! first token, delay between chunks) and its stream faults (truncate,
//! reset, stall). All events are formatted into one buffer up front and sent
//! as zero-copy slices of it.

use std::io;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;

use super::body::{self, Head, Script};
use super::state::Flight;
use super::Fault;

/// How a stream ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// Normally, with `data: [DONE]`.
    Done,
    /// Clean end of body without `[DONE]`.
    Truncate,
    /// Body error: hyper aborts the connection mid-body.
    Reset,
    /// Never ends; the client has to give up.
    Stall,
}

/// What to stream for one request.
pub(crate) struct Plan<'a> {
    pub head: Head<'a>,
    pub script: &'a Script,
    /// `Some(prompt_tokens)` when `stream_options.include_usage` is set.
    pub usage: Option<u64>,
    pub ttft: Duration,
    pub chunk_delay: Duration,
}

/// Builds the SSE body; `flight` is counted when the body ends or is dropped.
pub(crate) fn sse_body(plan: &Plan, fault: Option<&Fault>, flight: Flight) -> Body {
    let (end, limit) = match fault {
        Some(Fault::Truncate { after }) => (End::Truncate, Some(*after as usize)),
        Some(Fault::Reset { after }) => (End::Reset, Some(*after as usize)),
        Some(Fault::Stall { after }) => (End::Stall, Some(*after as usize)),
        _ => (End::Done, None),
    };
    let h = &plan.head;
    let mut out = String::with_capacity(256 * (plan.script.deltas.len() + 3));
    let mut bounds = Vec::with_capacity(plan.script.deltas.len() + 3);
    for delta in &plan.script.deltas {
        body::push_chunk(&mut out, h, delta, "null");
        bounds.push(out.len());
    }
    body::push_chunk(&mut out, h, "{}", "\"stop\"");
    bounds.push(out.len());
    if let Some(prompt) = plan.usage {
        let usage = body::usage(prompt, u64::from(plan.script.chunks));
        body::push_usage_chunk(&mut out, h, &usage);
        bounds.push(out.len());
    }
    if end == End::Done {
        out.push_str("data: [DONE]\n\n");
        bounds.push(out.len());
    }
    if let Some(limit) = limit {
        bounds.truncate(limit);
        out.truncate(bounds.last().copied().unwrap_or(0));
    }
    let content = plan.script.deltas.len();
    let timed = !(plan.ttft.is_zero() && plan.chunk_delay.is_zero());
    if !timed && !bounds.is_empty() {
        // Nothing to wait for between events: one write is cheapest.
        bounds = vec![out.len()];
    }
    let state = Sse {
        buf: Bytes::from(out),
        bounds,
        idx: 0,
        start: 0,
        content,
        ttft: plan.ttft,
        chunk_delay: plan.chunk_delay,
        end,
        flight,
        errored: false,
    };
    Body::from_stream(futures_util::stream::unfold(state, next_event))
}

/// Progress of one SSE body.
struct Sse {
    buf: Bytes,
    /// End offset of each event in `buf`.
    bounds: Vec<usize>,
    idx: usize,
    start: usize,
    /// Number of content events (only these are spaced by `chunk_delay`).
    content: usize,
    ttft: Duration,
    chunk_delay: Duration,
    end: End,
    flight: Flight,
    errored: bool,
}

/// Produces the next event after its delay, then the end the plan asks for.
async fn next_event(mut st: Sse) -> Option<(io::Result<Bytes>, Sse)> {
    if let Some(&stop) = st.bounds.get(st.idx) {
        let wait = match st.idx {
            0 => st.ttft,
            i if i < st.content => st.chunk_delay,
            _ => Duration::ZERO,
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let event = st.buf.slice(st.start..stop);
        st.idx += 1;
        st.start = stop;
        return Some((Ok(event), st));
    }
    match st.end {
        End::Done | End::Truncate => {
            st.flight.finish();
            None
        }
        End::Reset if !st.errored => {
            // Let hyper flush what was sent before the abort.
            tokio::task::yield_now().await;
            st.flight.finish();
            st.errored = true;
            let err = io::Error::new(io::ErrorKind::ConnectionReset, "mock reset");
            Some((Err(err), st))
        }
        End::Reset => None,
        End::Stall => std::future::pending().await,
    }
}
