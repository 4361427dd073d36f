//! What an engine's sessions need over time, kept for all of them by one task of the engine
//! instead of a task (and a timer) per session: the heartbeat's due times, and the list of
//! sessions that closed and await their cleanup (the handler's `on_close`, then removal).
//!
//! Every live session has one entry in a heap, at the next time its heartbeat must be looked
//! at ([`Session::on_timer`] says what happens then, and when to look again). A PONG, or any
//! packet of a v3 client, moves only the session's own deadline; when the entry comes due the
//! session answers with the new time and the entry goes back in. So an idle session costs an
//! entry of the heap (32 bytes), not a task with its timer.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::session::{Session, Sid};

#[derive(Default)]
pub(crate) struct Lifecycle {
    /// When each session's heartbeat is due, earliest on top. A std mutex: held for one heap
    /// operation, never across an await.
    due: Mutex<BinaryHeap<Due>>,
    /// Sessions closed since the task's last turn: one entry per session at most (only the
    /// first close counts), so the engine's `max_sessions` bounds it.
    closed: Mutex<Vec<Sid>>,
    /// Wakes the task: a session closed, or an entry earlier than all others was added. It
    /// keeps a permit, so a wake between two turns of the task is not lost.
    wake: Notify,
}

/// One session's next heartbeat time. Held weakly: a session dropped without closing (in
/// tests) is not kept alive by its entry.
struct Due {
    at: Instant,
    /// Which of the session's entries this is: only its latest counts.
    generation: u32,
    session: Weak<Session>,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}

impl Eq for Due {}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Due {
    /// Reversed: the heap is a max-heap and the earliest entry must be on top.
    fn cmp(&self, other: &Self) -> Ordering {
        other.at.cmp(&self.at)
    }
}

impl Lifecycle {
    /// Looks at `session`'s heartbeat at `at`, for its entry of `generation`.
    pub(crate) fn schedule(&self, at: Instant, generation: u32, session: &Arc<Session>) {
        if self.push(Due { at, generation, session: Arc::downgrade(session) }) {
            self.wake.notify_one();
        }
    }

    /// Adds an entry; true if it is the earliest, which the task must be told of.
    fn push(&self, entry: Due) -> bool {
        let mut due = self.due.lock().unwrap_or_else(|e| e.into_inner());
        let earliest = due.peek().is_none_or(|top| entry.at < top.at);
        due.push(entry);
        earliest
    }

    /// Records that the session `sid` closed; the task cleans it up.
    pub(crate) fn closed(&self, sid: Sid) {
        self.closed.lock().unwrap_or_else(|e| e.into_inner()).push(sid);
        self.wake.notify_one();
    }

    /// The sessions closed since the last call.
    pub(crate) fn take_closed(&self) -> Vec<Sid> {
        std::mem::take(&mut *self.closed.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Runs the heartbeat of every session due at `now`, putting each live one back at the
    /// time it asks for.
    pub(crate) fn run_due(&self, now: Instant) {
        loop {
            let entry = {
                let mut due = self.due.lock().unwrap_or_else(|e| e.into_inner());
                match due.peek() {
                    Some(top) if top.at <= now => due.pop(),
                    _ => None,
                }
            };
            let Some(mut entry) = entry else { return };
            // The heap's lock is not held here: the heartbeat queues a PING or closes.
            let Some(session) = entry.session.upgrade() else { continue };
            if let Some(at) = session.on_timer(now, entry.generation) {
                entry.at = at;
                self.push(entry);
            }
        }
    }

    /// When the earliest entry is due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.due.lock().unwrap_or_else(|e| e.into_inner()).peek().map(|d| d.at)
    }

    /// Entries in the heap (tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.due.lock().unwrap().len()
    }

    /// Until something is due at `next` (if anything is), a session closed, or an earlier
    /// entry was added.
    pub(crate) async fn wait(&self, next: Option<Instant>) {
        match next {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = self.wake.notified() => {}
                }
            }
            None => self.wake.notified().await,
        }
    }
}
