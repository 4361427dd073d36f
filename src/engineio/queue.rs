//! A session's outbound queue: bounded, many producers, one reader at a time.
//!
//! A `VecDeque` under a std mutex with the reader's waker beside it. It replaces a tokio
//! `mpsc` channel, which allocates a block of 32 slots and a cache-padded channel state with
//! every session (about 1.8 KiB, most of an idle client's memory after its socket buffers) and
//! took a semaphore permit, a list slot and a send lock per frame. Here a session that never
//! had anything queued holds no buffer at all, a send takes one uncontended lock for all its
//! frames (so a packet's binary attachments stay contiguous), and the lock is never held
//! across an await.
//!
//! A WebSocket's queue may also write: while its pump is idle (see [`Queue::set_idle`]), a
//! push of one text frame to an empty queue writes it straight to the socket (`direct`), under
//! the lock, and wakes nobody. What the socket does not take is kept as `rest`, which the
//! pump writes before anything else.
//!
//! On a busy worker thread (see `batch`) such a push appends the frame to `pending` instead, and
//! the thread's batch writes each socket's `pending` once, at the end of a worker turn: a
//! saturated node makes one write for several frames of a member again.

mod batch;

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::IoSlice;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

pub use batch::on_worker_park;

use super::direct::{text_header, write_text, Direct, DirectSocket, Written};
use super::packet::Frame;

/// Frames kept allocated once the queue is empty again: what a burst left beyond this is
/// given back, so a client that once fell behind does not hold its peak while idle.
const KEEP_WHEN_EMPTY: usize = 16;

/// Bytes of whole frames a socket's `pending` holds at most: past this they are written at once.
const PENDING_MAX: usize = 16 * 1024;

/// `pending`'s allocation kept once written, for the next batch.
const KEEP_PENDING: usize = 2 * 1024;

/// Bytes of frames a queue holds at most, whatever its bound in frames: a client that does
/// not read (a long-poll never sent, a WebSocket that takes nothing) costs at most this much,
/// even when what it is sent is large (`room users` lists, room history). One frame alone is
/// always taken, whatever its size (it is bounded by what the server sends). Not counted: the
/// bytes a WebSocket push wrote in part or appended for a batch (`rest`, `pending`), at most a
/// frame and [`PENDING_MAX`] more.
pub(crate) const MAX_QUEUED_BYTES: u32 = 8 * 1024 * 1024;

/// A handle: clones are the same queue (a frequent sender keeps one beside its own hot state,
/// see `Session::outbox`).
#[derive(Clone)]
pub(crate) struct Queue {
    /// Shared with the batch that is to write `pending` (see `batch`).
    inner: Arc<Mutex<Inner>>,
}

/// `repr(C)`: what a push reads (the flags, the socket, the queue's length, `pending`) first,
/// next to the lock and the `Arc`'s counts: about 100 bytes, two cache lines or three (the
/// allocation is 16-byte aligned), where the compiler's order spread them over more.
#[repr(C)]
struct Inner {
    /// Frames queued at most.
    bound: u32,
    /// Bytes of the frames queued (at most [`MAX_QUEUED_BYTES`], or one frame's).
    bytes: u32,
    /// The session closed: pushes are refused.
    closed: bool,
    /// The pump waits with nothing written in part (its own buffer flushed, no `rest`, nothing
    /// queued): a push may write to `direct` itself. Cleared by whatever the pump takes.
    idle: bool,
    /// A batch holds this queue and will write `pending`.
    listed: bool,
    /// The socket of the WebSocket pump reading this queue, while it runs.
    direct: Option<Direct>,
    frames: VecDeque<Frame>,
    /// Whole frames pushes appended, while the pump was idle, for a batch to write (see
    /// `batch`). Only while `idle`: whatever ends that hands them to the pump as `rest` first.
    pending: Vec<u8>,
    /// The end of a frame a push wrote in part: the pump writes it first.
    rest: Option<Bytes>,
    /// The reader waiting for a frame, woken by the next push.
    reader: Option<Waker>,
}

fn lock(inner: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    /// The pump is no longer idle: what was appended for a batch goes to it first, as `rest`.
    fn unidle(&mut self) {
        self.idle = false;
        if !self.pending.is_empty() {
            let pending = Bytes::from(std::mem::take(&mut self.pending));
            self.rest = Some(match self.rest.take() {
                Some(rest) => [&rest[..], &pending[..]].concat().into(),
                None => pending,
            });
        }
    }

    /// Writes one text frame to the socket, as far as it takes it now.
    fn write_now(&self, payload: &Bytes) -> Written {
        match &self.direct {
            Some(direct) => write_text(direct, payload),
            None => Written::None,
        }
    }

    /// What a push left half-written (with what waited for a batch behind it), if anything,
    /// with its socket, taken.
    fn take_rest(&mut self) -> Option<(Bytes, Arc<dyn DirectSocket>)> {
        let direct = self.direct.as_ref().filter(|_| self.rest.is_some())?.socket().clone();
        self.rest.take().map(|rest| (rest, direct))
    }

    /// Writes `pending` to the socket, as far as it takes it now; what it does not take goes to
    /// the pump (as `rest`), which is then to be woken: returned.
    fn write_pending(&mut self) -> Option<Waker> {
        if self.pending.is_empty() {
            return None;
        }
        let written = match &self.direct {
            Some(direct) => direct.write_now(&[IoSlice::new(&self.pending)]).unwrap_or(0),
            None => 0,
        };
        if written >= self.pending.len() {
            self.pending.clear();
            if self.pending.capacity() > KEEP_PENDING {
                self.pending = Vec::new();
            }
            return None;
        }
        // A full socket (or an error): the pump writes the rest, as it waits for room (or meets
        // the error).
        self.pending.drain(..written);
        self.unidle();
        self.reader.take()
    }
}

/// What the WebSocket pump takes from its queue.
pub(crate) enum Pumped {
    Frame(Frame),
    /// The unwritten end of a frame already begun on the socket: raw bytes, for that socket.
    Rest(Bytes, Arc<dyn DirectSocket>),
}

/// Why the queue did not take the frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// `bound`, or [`MAX_QUEUED_BYTES`], would be exceeded.
    Full,
    /// The queue was closed (see [`Queue::close`]).
    Closed,
}

impl Queue {
    /// A queue of at most `bound` frames (at least 1) and [`MAX_QUEUED_BYTES`].
    pub(crate) fn new(bound: usize) -> Self {
        let inner = Inner {
            bound: bound.clamp(1, u32::MAX as usize) as u32,
            bytes: 0,
            closed: false,
            frames: VecDeque::new(),
            reader: None,
            direct: None,
            idle: false,
            rest: None,
            pending: Vec::new(),
            listed: false,
        };
        Self { inner: Arc::new(Mutex::new(inner)) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// Queues `frames` contiguously, all or none.
    pub(crate) fn push_all(&self, frames: &[Frame]) -> Result<(), Refused> {
        let reader = {
            let mut inner = self.lock();
            if inner.closed {
                return Err(Refused::Closed);
            }
            if (inner.bound as usize) - inner.frames.len() < frames.len() {
                return Err(Refused::Full);
            }
            if let ([Frame::Text(text)], true, true) = (frames, inner.idle, inner.direct.is_some()) {
                // Idle: nothing queued, nothing half-written, the pump's buffer empty. A busy
                // worker appends the frame for its batch; so does any push while frames wait in
                // `pending` (they go first).
                let batching = batch::busy();
                if batching || !inner.pending.is_empty() {
                    let payload: &Bytes = text.as_ref();
                    let (header, used) = text_header(payload.len());
                    // One allocation for both, not one for the header and a second to grow it.
                    inner.pending.reserve(used + payload.len());
                    inner.pending.extend_from_slice(&header[..used]);
                    inner.pending.extend_from_slice(payload);
                    let mut now = !batching || inner.pending.len() >= PENDING_MAX;
                    if batching {
                        batch::appended();
                        if !inner.listed {
                            inner.listed = batch::list(&self.inner);
                            now |= !inner.listed;
                        }
                    }
                    let reader = if now { inner.write_pending() } else { None };
                    drop(inner);
                    Self::wake(reader);
                    return Ok(());
                }
                match inner.write_now(text.as_ref()) {
                    Written::All => return Ok(()),
                    Written::Part(rest) => {
                        inner.idle = false;
                        inner.rest = Some(rest);
                        let reader = inner.reader.take();
                        drop(inner);
                        Self::wake(reader);
                        return Ok(());
                    }
                    // The pump writes it, as it waits for room (or meets the error).
                    Written::None => inner.idle = false,
                }
            }
            let size = frames.iter().map(Frame::len).sum::<usize>();
            let bytes = inner.bytes as usize + size;
            if bytes > MAX_QUEUED_BYTES as usize && !inner.frames.is_empty() {
                return Err(Refused::Full);
            }
            // Queued: from now on the pump writes, so no later push may write before it (a
            // packet with attachments, queued while the pump was idle, would be overtaken).
            inner.unidle();
            inner.bytes = bytes.min(u32::MAX as usize) as u32;
            inner.frames.extend(frames.iter().cloned());
            inner.reader.take()
        };
        Self::wake(reader);
        Ok(())
    }

    fn wake(reader: Option<Waker>) {
        if let Some(reader) = reader {
            reader.wake();
        }
    }

    /// Starts loading the state a push reads (see `crate::prefetch`).
    pub(crate) fn prefetch(&self) {
        crate::prefetch::lines(Arc::as_ptr(&self.inner), std::mem::size_of::<Mutex<Inner>>());
    }

    /// Whether `other` is a handle of this queue.
    pub(crate) fn same(&self, other: &Queue) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The session closed: from now on every push is refused.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
    }

    /// A WebSocket pump starts with its socket: pushes may write to it while the pump is idle.
    pub(crate) fn set_direct(&self, direct: Direct) {
        self.lock().direct = Some(direct);
    }

    /// The pump ends, or writes other than through this queue (a drain, a close): no push
    /// writes from now on. What a push left half-written, if anything, with its socket.
    pub(crate) fn stop_direct(&self) -> Option<(Bytes, Arc<dyn DirectSocket>)> {
        let mut inner = self.lock();
        inner.unidle();
        let direct = inner.direct.take();
        inner.rest.take().zip(direct.map(|d| d.socket().clone()))
    }

    /// The pump is about to wait with its own buffer flushed: pushes may write if nothing is
    /// queued or half-written.
    pub(crate) fn set_idle(&self) {
        let mut inner = self.lock();
        inner.idle = inner.direct.is_some() && inner.frames.is_empty() && inner.rest.is_none();
    }

    /// The pump will write through its own buffer (e.g. a reply to a ping): no push writes
    /// until it is idle again. Returns what a push left half-written (with what waited for a
    /// batch behind it), if anything, with its socket: the pump writes that first, or its own
    /// bytes would land inside that frame.
    pub(crate) fn set_busy(&self) -> Option<(Bytes, Arc<dyn DirectSocket>)> {
        let mut inner = self.lock();
        inner.unidle();
        inner.take_rest()
    }

    /// A batch writes what was appended for it (see `batch`).
    fn write_listed(inner: &Mutex<Inner>) {
        let reader = {
            let mut inner = lock(inner);
            inner.listed = false;
            inner.write_pending()
        };
        Self::wake(reader);
    }

    /// The pump's next item: a half-written frame's end first, then the oldest frame.
    pub(crate) async fn recv_pumped(&self) -> Pumped {
        poll_fn(|cx| {
            let mut inner = self.lock();
            match Self::take_pumped(&mut inner) {
                Some(item) => Poll::Ready(item),
                None => {
                    Self::register(&mut inner, cx);
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// The pump's next item, if any.
    pub(crate) fn try_recv_pumped(&self) -> Option<Pumped> {
        Self::take_pumped(&mut self.lock())
    }

    fn take_pumped(inner: &mut Inner) -> Option<Pumped> {
        if !inner.pending.is_empty() {
            inner.unidle();
        }
        if let Some((rest, direct)) = inner.take_rest() {
            inner.idle = false;
            return Some(Pumped::Rest(rest, direct));
        }
        let frame = Self::pop(inner)?;
        inner.idle = false;
        Some(Pumped::Frame(frame))
    }

    fn register(inner: &mut Inner, cx: &mut Context<'_>) {
        match &mut inner.reader {
            Some(waker) => waker.clone_from(cx.waker()),
            none => *none = Some(cx.waker().clone()),
        }
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
        Self::register(&mut inner, cx);
        Poll::Pending
    }

    fn pop(inner: &mut Inner) -> Option<Frame> {
        let frame = inner.frames.pop_front();
        if let Some(frame) = &frame {
            inner.bytes = inner.bytes.saturating_sub(frame.len().min(u32::MAX as usize) as u32);
        }
        if inner.frames.is_empty() {
            inner.bytes = 0;
            if inner.frames.capacity() > KEEP_WHEN_EMPTY {
                inner.frames.shrink_to(KEEP_WHEN_EMPTY);
            }
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
        assert_eq!(q.push_all(&[Frame::message("c"), Frame::message("d")]), Err(Refused::Full));
        q.push_all(&[Frame::message("c")]).unwrap();
        assert_eq!(q.push_all(&[Frame::message("d")]), Err(Refused::Full));
        let got: Vec<_> = std::iter::from_fn(|| q.try_recv()).collect();
        assert_eq!(got, [Frame::message("a"), Frame::message("b"), Frame::message("c")]);
    }

    /// A queue holds at most `MAX_QUEUED_BYTES` of frames, all or none, whatever its bound in
    /// frames; one frame alone is taken whatever its size.
    #[test]
    fn bounded_in_bytes_too() {
        let q = Queue::new(1024);
        let big = Frame::message(&"x".repeat(MAX_QUEUED_BYTES as usize / 4));
        for _ in 0..3 {
            q.push_all(std::slice::from_ref(&big)).unwrap();
        }
        assert_eq!(q.push_all(&[big.clone(), Frame::message("y")]), Err(Refused::Full), "all or none");
        assert_eq!(q.push_all(std::slice::from_ref(&big)), Err(Refused::Full), "over the bytes");
        q.push_all(&[Frame::message("y")]).unwrap();
        assert_eq!(q.try_recv(), Some(big.clone()));
        q.push_all(std::slice::from_ref(&big)).unwrap();
        while q.try_recv().is_some() {}
        let huge = Frame::message(&"x".repeat(MAX_QUEUED_BYTES as usize + 1));
        q.push_all(std::slice::from_ref(&huge)).unwrap();
        assert_eq!(q.push_all(&[Frame::message("y")]), Err(Refused::Full), "behind an oversized frame");
        assert_eq!(q.try_recv(), Some(huge));
        q.push_all(&[Frame::message("y")]).unwrap();
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

    /// A socket taking at most `room` bytes in all, recording them.
    struct Wire(Mutex<(usize, Vec<u8>)>);

    impl DirectSocket for Wire {
        fn try_write_vectored(&self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
            let mut me = self.0.lock().unwrap();
            let mut n = 0;
            for b in bufs {
                let k = b.len().min(me.0);
                me.0 -= k;
                me.1.extend_from_slice(&b[..k]);
                n += k;
            }
            if n == 0 {
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        }

        fn poll_write_ready(&self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A queue of 8 whose pump's socket takes `room` bytes in all.
    fn wired(room: usize) -> (Queue, Arc<Wire>) {
        let q = Queue::new(8);
        let wire = Arc::new(Wire(Mutex::new((room, Vec::new()))));
        q.set_direct(Direct::new(wire.clone()));
        (q, wire)
    }

    /// [`wired`], with the pump idle: pushes may write.
    fn idle_wired(room: usize) -> (Queue, Arc<Wire>) {
        let (q, wire) = wired(room);
        q.set_idle();
        (q, wire)
    }

    fn pumped(q: &Queue) -> Vec<String> {
        std::iter::from_fn(|| q.try_recv_pumped())
            .map(|p| match p {
                Pumped::Frame(f) => format!("frame {f:?}"),
                Pumped::Rest(rest, _) => format!("rest {:?}", String::from_utf8_lossy(&rest)),
            })
            .collect()
    }

    #[test]
    fn an_idle_pump_lets_a_push_write_and_nobody_is_woken() {
        let (q, wire) = wired(1000);
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        assert!(q.poll_recv(&mut Context::from_waker(&waker)).is_pending());
        // Not idle yet: queued.
        q.push_all(&[Frame::message("a")]).unwrap();
        assert_eq!(pumped(&q), ["frame Text(Utf8Bytes(b\"4a\"))"]);
        q.set_idle();
        q.push_all(&[Frame::message("b")]).unwrap();
        assert_eq!(wire.0.lock().unwrap().1, b"\x81\x024b");
        assert_eq!(count.0.load(Ordering::Relaxed), 1, "only the queued frame woke the reader");
        assert!(pumped(&q).is_empty());
        // A frame and its attachments are queued, contiguous.
        q.push_all(&[Frame::message("c"), Frame::Binary(bytes::Bytes::from_static(b"x"))]).unwrap();
        assert_eq!(pumped(&q).len(), 2);
        // Stopped: no more writes.
        q.set_idle();
        q.stop_direct();
        q.set_idle();
        q.push_all(&[Frame::message("d")]).unwrap();
        assert_eq!(wire.0.lock().unwrap().1, b"\x81\x024b");
        assert_eq!(pumped(&q).len(), 1);
    }

    #[test]
    fn frames_queued_while_idle_are_not_overtaken_by_a_later_push() {
        let (q, wire) = idle_wired(1000);
        // Two frames (a packet and its attachment) cannot be written directly: queued.
        q.push_all(&[Frame::message("a"), Frame::Binary(bytes::Bytes::from_static(b"x"))]).unwrap();
        // The pump has not run yet: this one must queue behind them, not go to the socket.
        q.push_all(&[Frame::message("b")]).unwrap();
        assert!(wire.0.lock().unwrap().1.is_empty());
        assert_eq!(pumped(&q).len(), 3);
    }

    #[test]
    fn what_the_socket_does_not_take_goes_to_the_pump_first() {
        let (q, wire) = idle_wired(3);
        q.push_all(&[Frame::message("hello")]).unwrap();
        // Half-written: no longer idle, so the next one is queued behind the rest.
        q.push_all(&[Frame::message("next")]).unwrap();
        assert_eq!(wire.0.lock().unwrap().1, b"\x81\x064");
        assert_eq!(pumped(&q), ["rest \"hello\"", "frame Text(Utf8Bytes(b\"4next\"))"]);
        // A full socket: queued whole.
        q.set_idle();
        q.push_all(&[Frame::message("full")]).unwrap();
        assert_eq!(pumped(&q), ["frame Text(Utf8Bytes(b\"4full\"))"]);
        // The rest is handed back when the pump stops before writing it.
        wire.0.lock().unwrap().0 = 1;
        q.set_idle();
        q.push_all(&[Frame::message("x")]).unwrap();
        assert_eq!(q.stop_direct().map(|(rest, _)| rest), Some(bytes::Bytes::from_static(b"\x024x")));
    }

    #[test]
    fn the_end_of_a_half_written_frame_is_handed_to_a_pump_about_to_write_its_own() {
        let (q, wire) = idle_wired(3);
        q.push_all(&[Frame::message("hello")]).unwrap();
        assert_eq!(wire.0.lock().unwrap().1, b"\x81\x064");
        // A pong now would split the frame: the pump gets its end to write first.
        let (end, _) = q.set_busy().expect("the frame's end");
        assert_eq!(&end[..], b"hello");
        assert!(pumped(&q).is_empty());
        // Nothing half-written: nothing to hand over.
        q.set_idle();
        assert!(q.set_busy().is_none());
    }

    /// How `pumped` shows a `rest` of these bytes.
    fn rest(bytes: &[u8]) -> String {
        format!("rest {:?}", String::from_utf8_lossy(bytes))
    }

    #[tokio::test]
    async fn a_busy_thread_writes_a_sockets_frames_once_per_batch_in_order() {
        let (q, wire) = idle_wired(usize::MAX);
        batch::on_worker_park();
        let n = batch::BUSY as usize + 3;
        let mut expected = Vec::new();
        for i in 0..n {
            let text = format!("m{i}");
            expected.extend_from_slice(&[0x81, text.len() as u8 + 1, b'4']);
            expected.extend_from_slice(text.as_bytes());
            q.push_all(&[Frame::message(&text)]).unwrap();
        }
        // The last three wait for the batch, behind the ones written at once.
        assert_eq!(q.lock().pending.len(), expected.len() - wire.0.lock().unwrap().1.len());
        assert!(!q.lock().pending.is_empty());
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(q.lock().pending.is_empty());
        assert!(!q.lock().listed);
        assert_eq!(wire.0.lock().unwrap().1, expected);
        assert!(pumped(&q).is_empty());
        // Parked again: written at once.
        batch::on_worker_park();
        q.push_all(&[Frame::message("z")]).unwrap();
        assert!(wire.0.lock().unwrap().1.ends_with(b"\x81\x024z"));
    }

    #[tokio::test]
    async fn what_waits_for_a_batch_goes_to_the_pump_before_what_is_queued_after_it() {
        let (q, wire) = idle_wired(usize::MAX);
        batch::make_busy();
        q.push_all(&[Frame::message("a")]).unwrap();
        q.push_all(&[Frame::message("b"), Frame::Binary(bytes::Bytes::from_static(b"x"))]).unwrap();
        q.push_all(&[Frame::message("c")]).unwrap();
        let binary = format!("frame {:?}", Frame::Binary(bytes::Bytes::from_static(b"x")));
        assert_eq!(
            pumped(&q),
            [
                rest(b"\x81\x024a"),
                "frame Text(Utf8Bytes(b\"4b\"))".into(),
                binary,
                "frame Text(Utf8Bytes(b\"4c\"))".into()
            ]
        );
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(wire.0.lock().unwrap().1.is_empty(), "the batch found nothing left to write");
        // A ping's pong: the pump writes through its own buffer, after what waited, which
        // it is handed.
        q.set_idle();
        q.push_all(&[Frame::message("d")]).unwrap();
        let (waited, _) = q.set_busy().expect("what waited for the batch");
        assert_eq!(&waited[..], b"\x81\x024d");
        assert!(pumped(&q).is_empty());
    }

    #[tokio::test]
    async fn what_a_full_socket_does_not_take_from_a_batch_goes_to_the_pump() {
        let (q, wire) = idle_wired(3);
        batch::make_busy();
        q.push_all(&[Frame::message("hello")]).unwrap();
        q.push_all(&[Frame::message("next")]).unwrap();
        assert!(wire.0.lock().unwrap().1.is_empty());
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(wire.0.lock().unwrap().1, b"\x81\x064");
        assert_eq!(pumped(&q), [rest(b"hello\x81\x054next")]);
        // Stopped: nothing more is written or appended.
        q.set_idle();
        q.stop_direct();
        q.push_all(&[Frame::message("x")]).unwrap();
        assert_eq!(wire.0.lock().unwrap().1, b"\x81\x064");
    }
}
