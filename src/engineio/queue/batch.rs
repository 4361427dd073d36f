//! One write for several frames of a member when the node is busy.
//!
//! A push to an idle WebSocket writes its frame at once (see `direct`): one `send` per
//! delivery. That is the cheapest way while the node has time to spare, but a saturated node
//! then spends most of its time in those writes, where the pump it replaced, once behind,
//! packed several frames into each write. So a worker thread that has not parked for
//! [`BUSY`] direct pushes appends each frame to its socket's `pending` bytes instead, and lists
//! the socket in the thread's open batch; a task per batch writes every listed socket's
//! `pending` with one write, at the end of a worker turn (`yield_now` defers it until the
//! worker next polls its I/O driver: when it runs out of tasks, or after a fixed number of
//! them). It writes once a turn brought nothing new to the batch (the load paused), or once the
//! batch is [`max_delay`] old. The worker's park resets the count: an idle node writes at once.
//!
//! Order: a socket's `pending` is written before anything else of it, under its queue's lock
//! (a push meeting `pending` appends behind it; anything that ends the pump's idleness hands
//! `pending` to the pump first, as `rest`). Bounds: `pending` is written at once past
//! `PENDING_MAX` bytes; a batch holds each socket once.
//!
//! Only threads that run [`on_worker_park`] (the node's runtime, set up in `main`) batch: a
//! thread that never parks with it would never count as idle again.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::{Inner, Queue};

/// Direct pushes since the thread last parked past which it batches.
pub(super) const BUSY: u32 = 512;

/// How long a batch may gather while every worker turn adds to it: 10 ms, or
/// `CLUSTERCHAT_BATCH_MS` (a tuning knob; 0 writes at the end of every turn).
fn max_delay() -> Duration {
    static DELAY: OnceLock<Duration> = OnceLock::new();
    *DELAY.get_or_init(|| {
        let ms = std::env::var("CLUSTERCHAT_BATCH_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
        Duration::from_millis(ms)
    })
}

struct Worker {
    /// This thread runs [`on_worker_park`].
    parks: Cell<bool>,
    /// Direct pushes since it last parked.
    since_park: Cell<u32>,
    /// The batch this thread lists sockets in, until its task writes it.
    open: RefCell<Option<Arc<Batch>>>,
}

thread_local! {
    static WORKER: Worker = const {
        Worker { parks: Cell::new(false), since_park: Cell::new(0), open: RefCell::new(None) }
    };
}

/// Runs before a runtime worker parks (`tokio::runtime::Builder::on_thread_park`): the
/// thread has run out of work, so it is not busy.
pub fn on_worker_park() {
    let _ = WORKER.try_with(|w| {
        w.parks.set(true);
        w.since_park.set(0);
    });
}

/// Whether a direct push on this thread is to be batched (counted as one).
pub(super) fn busy() -> bool {
    WORKER
        .try_with(|w| {
            if !w.parks.get() {
                return false;
            }
            let n = w.since_park.get().saturating_add(1);
            w.since_park.set(n);
            n > BUSY
        })
        .unwrap_or(false)
}

/// A frame was appended for this thread's batch.
pub(super) fn appended() {
    let _ = WORKER.try_with(|w| {
        if let Some(batch) = &*w.open.borrow() {
            batch.appended.fetch_add(1, Ordering::Relaxed);
        }
    });
}

/// Lists a queue (its lock held by the caller) in this thread's open batch, opening one (and
/// spawning its task) if needed. False if it cannot (no runtime here): write at once.
pub(super) fn list(queue: &Arc<Mutex<Inner>>) -> bool {
    WORKER
        .try_with(|w| {
            let mut open = w.open.borrow_mut();
            if let Some(batch) = &*open {
                if let Some(queues) = batch.queues.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
                    queues.push(queue.clone());
                    return true;
                }
            }
            let Ok(runtime) = tokio::runtime::Handle::try_current() else { return false };
            let batch = Arc::new(Batch {
                queues: Mutex::new(Some(vec![queue.clone()])),
                appended: AtomicUsize::new(1),
                opened: Instant::now(),
            });
            runtime.spawn(batch.clone().run());
            *open = Some(batch);
            true
        })
        .unwrap_or(false)
}

struct Batch {
    /// The listed queues; None once the task has taken them (then a new batch opens).
    queues: Mutex<Option<Vec<Arc<Mutex<Inner>>>>>,
    /// Frames appended by its thread while it was open.
    appended: AtomicUsize,
    opened: Instant,
}

impl Batch {
    async fn run(self: Arc<Self>) {
        let mut seen = 0;
        loop {
            // To the end of the worker's turn.
            tokio::task::yield_now().await;
            let appended = self.appended.load(Ordering::Relaxed);
            if appended == seen || self.opened.elapsed() >= max_delay() {
                break;
            }
            seen = appended;
        }
        let queues = self.queues.lock().unwrap_or_else(|e| e.into_inner()).take().unwrap_or_default();
        for queue in &queues {
            Queue::write_listed(queue);
        }
    }
}

/// Makes this thread count as a busy worker (tests).
#[cfg(test)]
pub(super) fn make_busy() {
    let _ = WORKER.try_with(|w| {
        w.parks.set(true);
        w.since_park.set(BUSY);
    });
}
