//! The bounded queue between requests and the audit writer.
//!
//! Not a channel: a channel wakes its receiver on every line, and on a
//! busy proxy that is a futex call and a context switch per request (on a
//! single core, the request path pays for both). Here the writer takes the
//! whole queue at once and then pauses for an interval before looking
//! again; only a writer that found the queue empty waits on the condvar,
//! and only the line that ends that wait notifies it. While requests keep
//! coming, a line costs an uncontended lock and a push.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::AuditLine;

pub(super) struct Queue {
    pending: Mutex<Pending>,
    wake: Condvar,
    cap: usize,
}

struct Pending {
    lines: Vec<AuditLine>,
    /// The writer waits for a line (it found the queue empty).
    waiting: bool,
    /// No line is taken any more; the writer writes what it holds and ends.
    closed: bool,
}

impl Queue {
    pub(super) fn new(cap: usize) -> Self {
        Self {
            pending: Mutex::new(Pending {
                lines: Vec::new(),
                waiting: false,
                closed: false,
            }),
            wake: Condvar::new(),
            cap,
        }
    }

    /// A poisoned lock only means a thread panicked holding it; the lines
    /// are still whole (a push or a swap), so the queue goes on.
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a line; false when the queue is full or closed (the caller
    /// counts the drop). Never blocks on the writer: it holds the lock only
    /// to swap the queue out.
    pub(super) fn push(&self, line: AuditLine) -> bool {
        let mut p = self.lock();
        if p.closed || p.lines.len() >= self.cap {
            return false;
        }
        p.lines.push(line);
        let wake = std::mem::take(&mut p.waiting);
        drop(p);
        if wake {
            self.wake.notify_one();
        }
        true
    }

    /// The writer's side: waits until there is a line or the queue is
    /// closed, then swaps every queued line into `into` (empty; its
    /// capacity becomes the queue's, so a steady load allocates nothing).
    /// True once closed: what `into` holds is the last of it.
    pub(super) fn take(&self, into: &mut Vec<AuditLine>) -> bool {
        let mut p = self.lock();
        while p.lines.is_empty() && !p.closed {
            p.waiting = true;
            p = self.wake.wait(p).unwrap_or_else(PoisonError::into_inner);
        }
        p.waiting = false;
        std::mem::swap(&mut p.lines, into);
        p.closed
    }

    /// The writer's pause between batches: lines queued meanwhile wake no
    /// one; [`Queue::close`] ends it early.
    pub(super) fn pause(&self, interval: Duration) {
        let p = self.lock();
        let _ = self
            .wake
            .wait_timeout_while(p, interval, |p| !p.closed)
            .unwrap_or_else(PoisonError::into_inner);
    }

    /// Refuses further lines and wakes the writer, which writes what is
    /// queued and ends.
    pub(super) fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_all();
    }
}
