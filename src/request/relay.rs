//! The HTTP body of a relayed stream: the [`StreamReader`]'s chunks as they
//! arrive, unchanged, and, when the upstream breaks after the commit point,
//! one error event in the protocol's own shape (PRODUCT.md §3.7) and no clean
//! end; an upstream's own in-band error event is already the last thing sent.
//! A pass-through body that breaks is aborted instead (its bytes are not ours
//! to add to). On a route with `resume`, a chat stream that breaks is first
//! offered to another upstream to finish ([`super::resume`]). Its end
//! (clean, broken, or the client gone) is recorded once, by [`Finish`].

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use futures_util::{Stream, StreamExt};

use super::finish::{ActiveStream, Ending, Finish};
use super::plan::Plan;
use super::protocol::Protocol;
use super::reader::StreamReader;
use super::resume::{sum_usage, Continued, Resume, Splice};
use super::walk::AttemptRecord;
use crate::control::Event;
use crate::openai::Usage;
use crate::outcome::Outcome;
use crate::routing::UpstreamId;

/// The client's side of a relayed stream.
pub struct SseRelay {
    reader: StreamReader,
    end: Option<End>,
    /// The status given to the client (recorded at the end).
    status: u16,
    /// Bytes still to come when the length is known (a pass-through with
    /// `content-length`): the server stops polling once they are sent, so
    /// the end is recorded when the last one goes out.
    remaining: Option<u64>,
    /// Mid-stream resume, on routes that opt in.
    resume: Option<Box<Resuming>>,
}

/// A resumable stream's state.
struct Resuming {
    resume: Resume,
    /// The continuation being asked for, and why the first stream broke.
    pending: Option<(BoxFuture<'static, Option<Continued>>, Outcome)>,
    /// Rewrites the continuation's events, once it runs.
    splice: Option<Splice>,
    /// The first stream's usage, when a continuation took over.
    first_usage: Option<Usage>,
    tried: bool,
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
    /// Relays `reader` for the request that `fin` finishes (`records`: the
    /// walk's attempts, for its record); `length`: the
    /// body's declared length (0 for an answer to HEAD), if known.
    pub fn new(
        reader: StreamReader,
        fin: Finish,
        plan: Plan,
        model: String,
        (s, records): (Answered, Vec<AttemptRecord>),
        length: Option<u64>,
    ) -> Self {
        let kept = fin.shadowed().then(BytesMut::new);
        let end = End {
            _active: fin.stream_opened(),
            fin,
            plan,
            model,
            upstream: s.upstream,
            attempts: s.attempts,
            ttfb: s.ttfb,
            records,
            kept,
        };
        let mut relay = Self {
            reader,
            end: Some(end),
            status: s.status,
            remaining: length,
            resume: None,
        };
        if length == Some(0) {
            relay.finish(s.status, None);
        }
        relay
    }

    /// Lets another upstream continue the stream if it breaks (`routes[].resume`).
    pub fn with_resume(mut self, resume: Resume) -> Self {
        self.resume = Some(Box::new(Resuming {
            resume,
            pending: None,
            splice: None,
            first_usage: None,
            tried: false,
        }));
        self
    }

    /// Records the end (once); `status` 499 when the client left first.
    fn finish(&mut self, status: u16, broke: Option<Outcome>) {
        if let Some(e) = self.end.take() {
            let first = self.resume.as_ref().and_then(|r| r.first_usage);
            let ending = Ending {
                status,
                upstream: Some(e.upstream),
                attempts: e.attempts,
                ttft: Some(e.ttfb),
                usage: sum_usage(first, self.reader.usage()),
                broke,
                records: e.records,
                stream: self.reader.protocol() != Protocol::Passthrough,
                error: None,
                answer: e.kept.map(BytesMut::freeze),
            };
            if let Some(r) = self.resume.as_ref().filter(|r| r.tried) {
                let outcome = match (r.splice.is_some(), broke) {
                    (false, _) => "unavailable",
                    (true, None) => "resumed",
                    (true, Some(_)) => "failed",
                };
                if status != 499 || r.splice.is_some() {
                    e.fin
                        .app()
                        .metrics
                        .stream_resumes
                        .with_label_values(&[e.plan.route_name(), outcome])
                        .inc();
                }
            }
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

impl SseRelay {
    /// The stream broke with `outcome`: start a continuation when this route
    /// resumes and the stream can be continued; true when one was started.
    fn try_resume(&mut self, outcome: Outcome) -> bool {
        let mid_event = self.reader.mid_event();
        let (Some(r), Some(e)) = (self.resume.as_mut(), self.end.as_ref()) else {
            return false;
        };
        if r.tried || !r.resume.resumable(outcome, mid_event) {
            return false;
        }
        r.tried = true;
        // The broken upstream failed live traffic: health hears of it now.
        e.fin.app().control.report(Event::Outcome {
            upstream: e.upstream,
            route: e.plan.route,
            outcome,
            retry_after: None,
            ttfb: None,
            in_split: e.plan.in_split,
        });
        tracing::info!(
            request_id = e.fin.request_id(),
            upstream = %e.plan.snap.upstream(e.upstream).name,
            reason = outcome.label(),
            "stream broke: asking the next prefill upstream to continue it"
        );
        let fut = r.resume.continuation(e.plan.clone(), e.upstream);
        r.pending = Some((Box::pin(fut), outcome));
        true
    }

    /// Polls the continuation being asked for: `Ready(Some(item))` ends the
    /// stream with its error event (nobody could continue), `Ready(None)`
    /// means go on reading (the continuation's reader is in place).
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<Option<Option<Bytes>>> {
        let Some(r) = self.resume.as_mut() else {
            return Poll::Ready(None);
        };
        let Some((fut, outcome)) = r.pending.as_mut() else {
            return Poll::Ready(None);
        };
        let outcome = *outcome;
        let Poll::Ready(continued) = fut.as_mut().poll(cx) else {
            return Poll::Pending;
        };
        r.pending = None;
        match continued {
            Some(c) => {
                r.first_usage = self.reader.usage();
                r.splice = Some(c.splice);
                // The broken stream's connection closes here.
                self.reader = c.reader;
                if let Some(e) = self.end.as_mut() {
                    e.upstream = c.upstream;
                    e.attempts += 1;
                }
                Poll::Ready(None)
            }
            None => {
                let event = self.error_event(outcome);
                self.finish(self.status, Some(outcome));
                Poll::Ready(Some(event))
            }
        }
    }

    /// A continuation's chunk, rewritten; `None` when it is not spliced.
    fn spliced(&mut self, chunk: &[u8]) -> Option<Result<Bytes, Outcome>> {
        let r = self.resume.as_mut()?;
        match r.splice.as_mut() {
            Some(s) => Some(s.feed(chunk)),
            None => {
                r.resume.observe(chunk);
                None
            }
        }
    }

    /// The stream broke with `outcome` (and no continuation takes over).
    fn broke(&mut self, outcome: Outcome) -> Poll<Option<Result<Bytes, std::io::Error>>> {
        if self.reader.protocol() == Protocol::Passthrough {
            self.finish(self.status, Some(outcome));
            let e = std::io::Error::other(outcome.stream_detail());
            return Poll::Ready(Some(Err(e)));
        }
        let event = self.error_event(outcome);
        self.finish(self.status, Some(outcome));
        Poll::Ready(event.map(Ok))
    }

    /// A chunk as it goes out: counted against a known length.
    fn sent(&mut self, chunk: Bytes) -> Poll<Option<Result<Bytes, std::io::Error>>> {
        if let Some(e) = self.end.as_mut().filter(|e| e.kept.is_some()) {
            super::shadow::keep(&mut e.kept, &chunk);
        }
        if let Some(left) = self.remaining.as_mut() {
            *left = left.saturating_sub(chunk.len() as u64);
            if *left == 0 {
                self.finish(self.status, None);
            }
        }
        Poll::Ready(Some(Ok(chunk)))
    }
}

impl Stream for SseRelay {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.end.is_none() {
                return Poll::Ready(None);
            }
            match this.poll_pending(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(event)) => return Poll::Ready(event.map(Ok)),
                Poll::Ready(None) => {}
            }
            match this.reader.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(chunk))) => match this.spliced(&chunk) {
                    None => return this.sent(chunk),
                    Some(Ok(out)) if out.is_empty() => continue,
                    Some(Ok(out)) => return this.sent(out),
                    Some(Err(outcome)) => return this.broke(outcome),
                },
                Poll::Ready(Some(Err(outcome))) => {
                    if this.try_resume(outcome) {
                        continue;
                    }
                    return this.broke(outcome);
                }
                Poll::Ready(None) => {
                    this.finish(this.status, None);
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for SseRelay {
    fn drop(&mut self) {
        self.finish(499, None);
    }
}
