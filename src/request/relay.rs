//! The HTTP body of a relayed stream: the [`StreamReader`]'s chunks as they
//! arrive, unchanged, and, when the upstream breaks after the commit point,
//! one error event in the protocol's own shape (PRODUCT.md §3.7) and no clean
//! end; an upstream's own in-band error event is already the last thing sent.
//! A pass-through body that breaks is aborted instead (its bytes are not ours
//! to add to). Its end (clean, broken, or the client gone) is recorded once,
//! by [`Finish`].

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};

use super::finish::{ActiveStream, Ending, Finish};
use super::plan::Plan;
use super::protocol::Protocol;
use super::reader::StreamReader;
use super::walk::AttemptRecord;
use crate::outcome::Outcome;
use crate::routing::UpstreamId;

/// The client's side of a relayed stream.
pub struct SseRelay {
    reader: StreamReader,
    end: Option<End>,
    /// The status given to the client (recorded at the end).
    status: u16,
}

/// Who answered the stream, as the walk found it.
#[derive(Debug, Clone, Copy)]
pub struct Answered {
    /// The serving upstream.
    pub upstream: UpstreamId,
    /// Attempts made.
    pub attempts: u32,
    /// Time to the commit point (a pass-through: to the answer's head).
    pub ttfb: Duration,
    /// The status given to the client.
    pub status: u16,
}

/// What the relay needs once, when the stream ends.
struct End {
    fin: Finish,
    plan: Plan,
    model: String,
    upstream: UpstreamId,
    attempts: u32,
    ttfb: Duration,
    records: Vec<AttemptRecord>,
    /// The answer so far, kept only when a shadow compares it.
    kept: Option<BytesMut>,
    _active: ActiveStream,
}

impl SseRelay {
    /// Relays `reader` for the request that `fin` finishes.
    pub fn new(reader: StreamReader, fin: Finish, plan: Plan, model: String, s: Answered) -> Self {
        let kept = fin.shadowed().then(BytesMut::new);
        let end = End {
            _active: fin.stream_opened(),
            fin,
            plan,
            model,
            upstream: s.upstream,
            attempts: s.attempts,
            ttfb: s.ttfb,
            records: Vec::new(),
            kept,
        };
        Self {
            reader,
            end: Some(end),
            status: s.status,
        }
    }

    /// The walk's attempts, for the request's record.
    pub fn with_records(mut self, records: Vec<AttemptRecord>) -> Self {
        if let Some(e) = self.end.as_mut() {
            e.records = records;
        }
        self
    }

    /// Records the end (once); `status` 499 when the client left first.
    fn finish(&mut self, status: u16, broke: Option<Outcome>) {
        if let Some(e) = self.end.take() {
            let ending = Ending {
                status,
                upstream: Some(e.upstream),
                attempts: e.attempts,
                ttft: Some(e.ttfb),
                usage: self.reader.usage(),
                broke,
                records: e.records,
                stream: self.reader.protocol() != Protocol::Passthrough,
                error: None,
                answer: e.kept.map(BytesMut::freeze),
            };
            e.fin.record(Some(&e.plan), &e.model, ending);
        }
    }

    /// The error event that ends a broken stream, in its protocol's shape;
    /// none when the upstream's own error event was the last thing sent.
    fn error_event(&self, outcome: Outcome) -> Option<Bytes> {
        if outcome == Outcome::UpstreamError {
            return None;
        }
        let name = self
            .end
            .as_ref()
            .map_or("?", |e| &*e.plan.snap.upstream(e.upstream).name);
        let message = format!(
            "upstream {name} failed mid-stream: {}",
            outcome.stream_detail()
        );
        let protocol = self.reader.protocol();
        Some(protocol.error_event(&message, self.reader.mid_event()))
    }
}

impl Stream for SseRelay {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.end.is_none() {
            return Poll::Ready(None);
        }
        match this.reader.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                if let Some(e) = this.end.as_mut().filter(|e| e.kept.is_some()) {
                    super::shadow::keep(&mut e.kept, &chunk);
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(outcome))) => {
                if this.reader.protocol() == Protocol::Passthrough {
                    this.finish(this.status, Some(outcome));
                    let e = std::io::Error::other(outcome.stream_detail());
                    return Poll::Ready(Some(Err(e)));
                }
                let event = this.error_event(outcome);
                this.finish(this.status, Some(outcome));
                Poll::Ready(event.map(Ok))
            }
            Poll::Ready(None) => {
                this.finish(this.status, None);
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
