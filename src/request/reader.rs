//! The one upstream stream reader, for HTTP and WebSocket alike: an upstream
//! body after its commit point, under the idle timeout and the total
//! deadline, read by its protocol's rules ([`StreamScan`]) for the clean end,
//! an in-band failure and the usage.
//!
//! It yields the upstream's chunks unchanged (the last one cut just after
//! the event that ended the stream, so nothing after a clean end or an
//! in-band error reaches the client), then either ends (a clean end) or
//! yields one `Err(outcome)` saying how the stream broke, and ends.
//! `Outcome::UpstreamError` means the upstream's own error event was the
//! last thing yielded. After a clean end the rest of the body is read (and
//! dropped) briefly, so the connection goes back to the pool.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::time::{Instant, Sleep};

use super::protocol::{Protocol, Stop, StreamScan};
use crate::openai::Usage;
use crate::outcome::Outcome;
use crate::upstream::BodyStream;

/// How long the rest of a cleanly ended stream is read, for the connection pool.
pub const DRAIN: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Reading,
    /// After a clean end: reading the rest, dropping it.
    Draining,
    Ended,
}

/// An upstream stream at its commit point.
pub struct StreamReader {
    first: Option<Bytes>,
    rest: BodyStream,
    idle: Duration,
    deadline: Instant,
    timer: Pin<Box<Sleep>>,
    scan: StreamScan,
    state: State,
}

impl StreamReader {
    /// Reads `first` (held until the commit point, already read by `scan`)
    /// then `rest`, with at most `idle` between chunks and nothing past
    /// `deadline` (the request's start plus the upstream's `timeouts.total`).
    pub fn new(
        first: Bytes,
        rest: BodyStream,
        scan: StreamScan,
        idle: Duration,
        deadline: Instant,
    ) -> Self {
        Self {
            first: Some(first).filter(|f| !f.is_empty()),
            rest,
            idle,
            deadline,
            timer: Box::pin(tokio::time::sleep_until(
                (Instant::now() + idle).min(deadline),
            )),
            scan,
            state: State::Reading,
        }
    }

    /// The protocol being read (the shape of its error event).
    pub fn protocol(&self) -> Protocol {
        self.scan.protocol()
    }

    /// True when the stream stopped inside an event.
    pub fn mid_event(&self) -> bool {
        self.scan.mid_event()
    }

    /// The usage the upstream reported so far.
    pub fn usage(&self) -> Option<Usage> {
        self.scan.usage()
    }

    fn fail(&mut self, outcome: Outcome) -> Poll<Option<Result<Bytes, Outcome>>> {
        self.state = State::Ended;
        Poll::Ready(Some(Err(outcome)))
    }

    /// What the scan decided, once the bytes before it were yielded.
    fn stopped(
        &mut self,
        stop: Stop,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Outcome>>> {
        match stop {
            Stop::Failed(outcome) => self.fail(outcome),
            Stop::Clean => {
                self.state = State::Draining;
                let grace = (Instant::now() + DRAIN).min(self.deadline);
                self.timer.as_mut().reset(grace);
                self.drain(cx)
            }
        }
    }

    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Outcome>>> {
        loop {
            match self.rest.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(_))) => continue,
                Poll::Ready(_) => break,
                Poll::Pending if self.timer.as_mut().poll(cx).is_pending() => return Poll::Pending,
                Poll::Pending => break,
            }
        }
        self.state = State::Ended;
        Poll::Ready(None)
    }
}

impl Stream for StreamReader {
    type Item = Result<Bytes, Outcome>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match this.state {
            State::Ended => return Poll::Ready(None),
            State::Draining => return this.drain(cx),
            State::Reading => {}
        }
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        if let Some(stop) = this.scan.stop() {
            return this.stopped(stop, cx);
        }
        match this.rest.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                let next = (Instant::now() + this.idle).min(this.deadline);
                this.timer.as_mut().reset(next);
                match this.scan.feed(&chunk) {
                    Some(at) => Poll::Ready(Some(Ok(chunk.slice(..at)))),
                    None => Poll::Ready(Some(Ok(chunk))),
                }
            }
            Poll::Ready(Some(Err(_))) => this.fail(Outcome::Reset),
            Poll::Ready(None) => match this.scan.finish() {
                Stop::Clean => {
                    this.state = State::Ended;
                    Poll::Ready(None)
                }
                Stop::Failed(outcome) => this.fail(outcome),
            },
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
