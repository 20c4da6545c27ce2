//! The one upstream stream reader, for HTTP and WebSocket alike: an upstream
//! SSE body after its commit point, under the idle timeout and the total
//! deadline, scanned for its clean end and its usage.
//!
//! It yields the upstream's chunks unchanged, then either ends (a clean end)
//! or yields one `Err(outcome)` saying how the stream broke, and ends. This
//! is where per-protocol rules of what "began" and "ended well" mean plug in.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::time::{Instant, Sleep};

use super::sse::SseScanner;
use crate::openai::Usage;
use crate::outcome::Outcome;
use crate::upstream::BodyStream;

/// An upstream stream whose first event has arrived.
pub struct StreamReader {
    first: Option<Bytes>,
    rest: BodyStream,
    idle: Duration,
    deadline: Instant,
    timer: Pin<Box<Sleep>>,
    scanner: SseScanner,
    ended: bool,
}

impl StreamReader {
    /// Reads `first` (the prefetched bytes) then `rest`, with at most `idle`
    /// between chunks and nothing past `deadline` (the request's start plus
    /// the upstream's `timeouts.total`).
    pub fn new(first: Bytes, rest: BodyStream, idle: Duration, deadline: Instant) -> Self {
        let mut scanner = SseScanner::default();
        scanner.feed(&first);
        Self {
            first: Some(first),
            rest,
            idle,
            deadline,
            timer: Box::pin(tokio::time::sleep_until(
                (Instant::now() + idle).min(deadline),
            )),
            scanner,
            ended: false,
        }
    }

    /// The last usage the upstream reported so far.
    pub fn usage(&self) -> Option<Usage> {
        self.scanner.usage
    }

    /// The rest of the body, to drain after a clean end (keeps the connection
    /// for the pool); `None` after a failure.
    pub fn into_rest(self) -> BodyStream {
        self.rest
    }

    fn fail(&mut self, outcome: Outcome) -> Poll<Option<Result<Bytes, Outcome>>> {
        self.ended = true;
        Poll::Ready(Some(Err(outcome)))
    }
}

impl Stream for StreamReader {
    type Item = Result<Bytes, Outcome>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        match this.rest.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.scanner.feed(&chunk);
                let next = (Instant::now() + this.idle).min(this.deadline);
                this.timer.as_mut().reset(next);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(_))) => this.fail(Outcome::Reset),
            Poll::Ready(None) => {
                if this.scanner.done {
                    this.ended = true;
                    Poll::Ready(None)
                } else {
                    this.fail(Outcome::EofWithoutDone)
                }
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) if Instant::now() >= this.deadline => {
                    this.fail(Outcome::TotalTimeout)
                }
                Poll::Ready(()) => this.fail(Outcome::IdleTimeout),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}
