//! A session's outbound queue: bounded, many producers, one reader at a time.
//!
//! A `VecDeque` under a std mutex with the reader's waker beside it. It replaces a tokio
//! `mpsc` channel, which allocates a block of 32 slots and a cache-padded channel state with
//! every session (about 1.8 KiB, most of an idle client's memory after its socket buffers) and
//! took a semaphore permit, a list slot and a send lock per frame. Here a session that never
//! had anything queued holds no buffer at all, a send takes one uncontended lock for all its
//! frames (so a packet's binary attachments stay contiguous), and the lock is never held
//! across an await.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

use super::packet::Frame;

/// Frames kept allocated once the queue is empty again: what a burst left beyond this is
/// given back, so a client that once fell behind does not hold its peak while idle.
const KEEP_WHEN_EMPTY: usize = 16;

pub(crate) struct Queue {
    bound: usize,
    inner: Mutex<Inner>,
}

struct Inner {
    frames: VecDeque<Frame>,
    /// The reader waiting for a frame, woken by the next push.
    reader: Option<Waker>,
}

/// The queue could not take the frames: `bound` would be exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Full;

impl Queue {
    /// A queue of at most `bound` frames (at least 1).
    pub(crate) fn new(bound: usize) -> Self {
        Self { bound: bound.max(1), inner: Mutex::new(Inner { frames: VecDeque::new(), reader: None }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `frames` contiguously, all or none.
    pub(crate) fn push_all(&self, frames: &[Frame]) -> Result<(), Full> {
        let reader = {
            let mut inner = self.lock();
            if self.bound - inner.frames.len() < frames.len() {
                return Err(Full);
            }
            inner.frames.extend(frames.iter().cloned());
            inner.reader.take()
        };
        if let Some(reader) = reader {
            reader.wake();
        }
        Ok(())
    }

    /// The oldest frame, if any.
    pub(crate) fn try_recv(&self) -> Option<Frame> {
        Self::pop(&mut self.lock())
    }

    /// Waits for the oldest frame. One reader at a time (the session's `reader` lock): a
    /// second one would take the first one's wake.
    pub(crate) async fn recv(&self) -> Frame {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Frame> {
        let mut inner = self.lock();
        if let Some(frame) = Self::pop(&mut inner) {
            return Poll::Ready(frame);
        }
        match &mut inner.reader {
            Some(waker) => waker.clone_from(cx.waker()),
            none => *none = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    fn pop(inner: &mut Inner) -> Option<Frame> {
        let frame = inner.frames.pop_front();
        if inner.frames.is_empty() && inner.frames.capacity() > KEEP_WHEN_EMPTY {
            inner.frames.shrink_to(KEEP_WHEN_EMPTY);
        }
        frame
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// Counts the wakes of the task that polls.
    use crate::engineio::WakeCount as Count;

    #[test]
    fn bounded_all_or_none_in_order() {
        let q = Queue::new(3);
        q.push_all(&[Frame::message("a"), Frame::message("b")]).unwrap();
        assert_eq!(q.push_all(&[Frame::message("c"), Frame::message("d")]), Err(Full));
        q.push_all(&[Frame::message("c")]).unwrap();
        assert_eq!(q.push_all(&[Frame::message("d")]), Err(Full));
        let got: Vec<_> = std::iter::from_fn(|| q.try_recv()).collect();
        assert_eq!(got, [Frame::message("a"), Frame::message("b"), Frame::message("c")]);
    }

    #[test]
    fn a_waiting_reader_is_woken_once_by_a_push() {
        let q = Queue::new(8);
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(q.poll_recv(&mut cx).is_pending());
        q.push_all(&[Frame::message("a")]).unwrap();
        q.push_all(&[Frame::message("b")]).unwrap();
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
        assert_eq!(q.poll_recv(&mut cx), Poll::Ready(Frame::message("a")));
        assert_eq!(q.poll_recv(&mut cx), Poll::Ready(Frame::message("b")));
    }

    #[test]
    fn an_emptied_queue_gives_back_its_burst() {
        let q = Queue::new(1024);
        let burst: Vec<_> = (0..500).map(|i| Frame::message(&i.to_string())).collect();
        q.push_all(&burst).unwrap();
        while q.try_recv().is_some() {}
        assert!(q.lock().frames.capacity() <= KEEP_WHEN_EMPTY);
    }
}
