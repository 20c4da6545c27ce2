//! The bounded queue between requests and the audit writer: lines already
//! formatted, appended to one byte buffer.
//!
//! Not a channel: a channel wakes its receiver on every line, and on a
//! busy proxy that is a futex call and a context switch per request (on a
//! single core, the request path pays for both). Here the writer takes the
//! whole buffer at once and then pauses for an interval before looking
//! again; only a writer that found the queue empty waits on the condvar,
//! and only the line that ends that wait notifies it. While requests keep
//! coming, a line costs an uncontended lock and a copy of its bytes.
//!
//! Lines arrive formatted (by the request's own thread, into a buffer of
//! that thread's): nothing allocated for a line is freed on the writer's
//! thread, and the writer only copies bytes to the file.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

pub(super) struct Queue {
    pending: Mutex<Pending>,
    wake: Condvar,
    cap: usize,
}

struct Pending {
    /// Whole lines, each ending in `\n`.
    bytes: Vec<u8>,
    /// How many lines `bytes` holds (the cap counts lines).
    lines: usize,
    /// The writer waits for a line (it found the queue empty).
    waiting: bool,
    /// No line is taken any more; the writer writes what it holds and ends.
    closed: bool,
}

impl Queue {
    pub(super) fn new(cap: usize) -> Self {
        Self {
            pending: Mutex::new(Pending {
                bytes: Vec::new(),
                lines: 0,
                waiting: false,
                closed: false,
            }),
            wake: Condvar::new(),
            cap,
        }
    }

    /// A poisoned lock only means a thread panicked holding it; the bytes
    /// are still whole lines (an append or a swap), so the queue goes on.
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues one line (its bytes, `\n` included); false when the queue is
    /// full or closed (the caller counts the drop). Never blocks on the
    /// writer: it holds the lock only to swap the buffer out.
    pub(super) fn push(&self, line: &[u8]) -> bool {
        let mut p = self.lock();
        if p.closed || p.lines >= self.cap {
            return false;
        }
        p.bytes.extend_from_slice(line);
        p.lines += 1;
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
    pub(super) fn take(&self, into: &mut Vec<u8>) -> bool {
        let mut p = self.lock();
        while p.lines == 0 && !p.closed {
            p.waiting = true;
            p = self.wake.wait(p).unwrap_or_else(PoisonError::into_inner);
        }
        p.waiting = false;
        p.lines = 0;
        std::mem::swap(&mut p.bytes, into);
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
