//! A future that is polled again at once when it wakes itself during its
//! own poll, instead of through the scheduler.
//!
//! Why: a server connection, its request and the upstream connection run as
//! one task, and parts of it signal each other with wakes: the request asks
//! for its body (hyper's body channel wakes the connection), a response head
//! or body chunk lands in a channel the request then reads. Each such wake
//! marked the task to run again, so tokio polled the whole connection once
//! more after the work was already done (~0.8 extra polls per proxied
//! request, each walking the whole future tree; docs/benchmarks.md). Here a
//! wake that arrives while the future is being polled only notes that it
//! must be polled again, which happens before the poll returns; a wake from
//! outside (a socket, a timer, another task) wakes the task as usual.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;
use pin_project_lite::pin_project;

/// Not being polled: a wake goes to the task.
const IDLE: u8 = 0;
/// Being polled: a wake is noted.
const POLLING: u8 = 1;
/// Being polled, and woken meanwhile: it is polled again.
const WOKEN: u8 = 2;

/// Polls in a row before the task yields to the scheduler anyway (a future
/// that keeps waking itself gets no more than its share of the worker).
const MAX_TURNS: usize = 4;

pin_project! {
    /// `inner`, whose own wakes during its poll are handled in place.
    pub struct InPlace<F> {
        #[pin]
        inner: F,
        gate: Arc<Gate>,
        waker: Waker,
    }
}

/// Where `inner`'s wakes arrive.
struct Gate {
    state: AtomicU8,
    task: AtomicWaker,
}

impl Wake for Gate {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        match self
            .state
            .compare_exchange(POLLING, WOKEN, Ordering::AcqRel, Ordering::Acquire)
        {
            // Noted: the running poll goes round once more.
            Ok(_) | Err(WOKEN) => {}
            Err(_) => self.task.wake(),
        }
    }
}

impl<F> InPlace<F> {
    /// Wraps `inner`.
    pub fn new(inner: F) -> Self {
        let gate = Arc::new(Gate {
            state: AtomicU8::new(IDLE),
            task: AtomicWaker::new(),
        });
        Self {
            inner,
            waker: Waker::from(gate.clone()),
            gate,
        }
    }

    /// The wrapped future.
    pub fn inner(self: Pin<&mut Self>) -> Pin<&mut F> {
        self.project().inner
    }
}

impl<F: Future> Future for InPlace<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let mut this = self.project();
        this.gate.task.register(cx.waker());
        let mut inner_cx = Context::from_waker(this.waker);
        for _ in 0..MAX_TURNS {
            this.gate.state.store(POLLING, Ordering::Release);
            let polled = this.inner.as_mut().poll(&mut inner_cx);
            // A wake after this swap finds IDLE and wakes the task.
            let woken = this.gate.state.swap(IDLE, Ordering::AcqRel) == WOKEN;
            if polled.is_ready() || !woken {
                return polled;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// Wakes itself `wakes` times during its polls, then finishes.
    struct SelfWaking {
        wakes: usize,
        polls: Arc<AtomicUsize>,
    }

    impl Future for SelfWaking {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            if self.wakes == 0 {
                return Poll::Ready(());
            }
            self.wakes -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn own_wakes_are_polled_in_place_and_bounded() {
        let polls = Arc::new(AtomicUsize::new(0));
        let mut f = Box::pin(InPlace::new(SelfWaking {
            wakes: 2,
            polls: polls.clone(),
        }));
        // Woken twice during its own polls: done within one outer poll.
        let done = std::future::poll_fn(|cx| Poll::Ready(f.as_mut().poll(cx).is_ready())).await;
        assert!(done);
        assert_eq!(polls.load(Ordering::SeqCst), 3);
        // One that never stops waking itself yields after MAX_TURNS, and
        // still finishes when awaited.
        let polls = Arc::new(AtomicUsize::new(0));
        InPlace::new(SelfWaking {
            wakes: 10,
            polls: polls.clone(),
        })
        .await;
        assert_eq!(polls.load(Ordering::SeqCst), 11);
    }

    #[tokio::test]
    async fn a_wake_from_outside_wakes_the_task() {
        let (tx, rx) = tokio::sync::oneshot::channel::<u8>();
        let task = tokio::spawn(InPlace::new(rx));
        tokio::task::yield_now().await;
        tx.send(7).unwrap();
        assert_eq!(task.await.unwrap().unwrap(), 7);
    }
}
