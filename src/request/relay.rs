//! The HTTP body of a relayed stream: the [`StreamReader`]'s chunks as they
//! arrive, unchanged, and, when the upstream breaks after the commit point,
//! one error event (`data: {"error":...}`) and no clean end. Its end (clean,
//! broken, or the client gone) is recorded once, by [`Finish`].

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};

use super::finish::{ActiveStream, Ending, Finish};
use super::plan::Plan;
use super::reader::StreamReader;
use crate::outcome::Outcome;
use crate::routing::UpstreamId;

/// The client's side of a relayed SSE stream.
pub struct SseRelay {
    reader: StreamReader,
    end: Option<End>,
}

/// Who answered the stream, as the walk found it.
#[derive(Debug, Clone, Copy)]
pub struct Answered {
    /// The serving upstream.
    pub upstream: UpstreamId,
    /// Which of its endpoints.
    pub endpoint: usize,
    /// Attempts made.
    pub attempts: u32,
    /// Time to the first event.
    pub ttfb: Duration,
}

/// What the relay needs once, when the stream ends.
struct End {
    fin: Finish,
    plan: Plan,
    model: String,
    upstream: UpstreamId,
    endpoint: usize,
    attempts: u32,
    ttfb: Duration,
    _active: ActiveStream,
}

impl SseRelay {
    /// Relays `reader` for the request that `fin` finishes.
    pub fn new(reader: StreamReader, fin: Finish, plan: Plan, model: String, s: Answered) -> Self {
        let end = End {
            _active: fin.stream_opened(),
            fin,
            plan,
            model,
            upstream: s.upstream,
            endpoint: s.endpoint,
            attempts: s.attempts,
            ttfb: s.ttfb,
        };
        Self {
            reader,
            end: Some(end),
        }
    }

    /// Records the end (once); `status` 499 when the client left first.
    fn finish(&mut self, status: u16, broke: Option<Outcome>) {
        if let Some(e) = self.end.take() {
            let ending = Ending {
                status,
                upstream: Some(e.upstream),
                endpoint: e.endpoint,
                attempts: e.attempts,
                ttft: Some(e.ttfb),
                usage: self.reader.usage(),
                broke,
            };
            e.fin.record(Some(&e.plan), &e.model, ending);
        }
    }

    /// The error event that ends a broken stream.
    fn error_event(&self, outcome: Outcome) -> Bytes {
        let name = self
            .end
            .as_ref()
            .map_or("?", |e| &*e.plan.snap.upstream(e.upstream).name);
        let body = crate::error::error_body(
            &format!(
                "upstream {name} failed mid-stream: {}",
                outcome.stream_detail()
            ),
            "upstream_error",
            "stream_interrupted",
        );
        let mut out = BytesMut::with_capacity(body.len() + 10);
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&body);
        out.extend_from_slice(b"\n\n");
        out.freeze()
    }
}

impl Stream for SseRelay {
    type Item = Result<Bytes, std::convert::Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.end.is_none() {
            return Poll::Ready(None);
        }
        match this.reader.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(chunk))) => Poll::Ready(Some(Ok(chunk))),
            Poll::Ready(Some(Err(outcome))) => {
                let event = this.error_event(outcome);
                this.finish(200, Some(outcome));
                Poll::Ready(Some(Ok(event)))
            }
            Poll::Ready(None) => {
                this.finish(200, None);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for SseRelay {
    fn drop(&mut self) {
        self.finish(499, None);
    }
}
