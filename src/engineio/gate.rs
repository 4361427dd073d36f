//! Polling a future or stream only after it asked to be polled.
//!
//! A WebSocket's pump waits on three things in one task: its outbound queue, the socket's
//! read half and the session's close. The task wakes once per queued frame, and a plain
//! `select!` then polls all three again, although only the queue woke it. Polling the read
//! half is not free (tungstenite zero-fills its read buffer before every read attempt, tokio
//! re-checks the socket's readiness, the split stream takes its lock) and neither is polling the
//! close (the token takes a lock). A [`Gate`] hands the inner poll a waker of its own and
//! skips the poll until that waker has fired: one atomic swap when nothing happened.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// Whether the inner poll was woken, and the task to wake when it is.
struct Woken {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// Guards one inner poll (see the module doc). Starts open: the first poll always goes through.
pub(crate) struct Gate {
    state: Arc<Woken>,
    waker: Waker,
}

impl Gate {
    pub(crate) fn new() -> Self {
        let state = Arc::new(Woken { woken: AtomicBool::new(true), task: AtomicWaker::new() });
        Self { waker: Waker::from(state.clone()), state }
    }

    /// Runs `inner` with the gate's waker if it was woken since it last returned `Pending`;
    /// otherwise returns `Pending` (the task is woken when the gate's waker fires). After a
    /// `Ready` the gate stays open: the inner future or stream may have more at once.
    pub(crate) fn poll<T>(&self, cx: &mut Context<'_>, inner: impl FnOnce(&mut Context<'_>) -> Poll<T>) -> Poll<T> {
        // Registered before the check, so a wake between the two is not lost.
        self.state.task.register(cx.waker());
        if !self.state.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let poll = inner(&mut Context::from_waker(&self.waker));
        if poll.is_ready() {
            self.state.woken.store(true, Ordering::Release);
        }
        poll
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts the wakes of the task that polls.
    use crate::engineio::WakeCount as Count;

    #[test]
    fn polls_only_after_its_own_wake() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let task = Waker::from(count.clone());
        let mut cx = Context::from_waker(&task);
        let gate = Gate::new();
        let polls = std::cell::Cell::new(0);
        let inner_waker = std::cell::RefCell::new(None);
        let poll = |cx: &mut Context<'_>| {
            polls.set(polls.get() + 1);
            *inner_waker.borrow_mut() = Some(cx.waker().clone());
            Poll::<()>::Pending
        };
        assert!(gate.poll(&mut cx, poll).is_pending());
        assert!(gate.poll(&mut cx, poll).is_pending());
        assert_eq!(polls.get(), 1, "not polled again before its waker fired");
        inner_waker.borrow_mut().take().unwrap().wake();
        assert_eq!(count.0.load(Ordering::Relaxed), 1, "the task is woken");
        assert!(gate.poll(&mut cx, poll).is_pending());
        assert_eq!(polls.get(), 2);
        assert!(gate.poll(&mut cx, |_| Poll::Ready(())).is_pending(), "still closed: no wake since");
    }

    #[test]
    fn stays_open_after_ready() {
        let task = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        let mut cx = Context::from_waker(&task);
        let gate = Gate::new();
        assert_eq!(gate.poll(&mut cx, |_| Poll::Ready(1)), Poll::Ready(1));
        assert_eq!(gate.poll(&mut cx, |_| Poll::Ready(2)), Poll::Ready(2));
    }
}
