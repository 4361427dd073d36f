//! Room history: each room's last messages, an explicit layer beside the Socket.IO framework.
//!
//! The chat records what is said in a room and reads it back for whoever joins, through the
//! [`History`] trait; the framework knows nothing of it. A lone node keeps history here
//! ([`LocalHistory`]); a cluster keeps each room's on two replicas and hands it over when they
//! change (`cluster::history`). Either way a node's copies live in one [`HistoryStore`], written
//! to disk by [`disk`] when `history.dir` is set.
//!
//! Every entry has an identity given once, by the node that records it: a random publisher id
//! drawn at start, a counter, and the time (never decreasing on one node). Copies of a room
//! merge by that identity, in (time, publisher, counter) order, keeping the last `per_room`
//! entries ([`merge`]). Merging is a union trimmed to the newest: it can be repeated, applied
//! in any order, and a stale copy (a node back from a restart) only adds entries older than
//! what is kept, so a room's history never goes back in time.

pub mod disk;

use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, OnceLock};

use futures_util::future::BoxFuture;

use crate::socketio::OnSent;
use lru::LruCache;
use serde::{Deserialize, Serialize};

/// A room: its namespace and name.
pub type RoomId = (String, String);

/// Largest entry body accepted from a peer or the disk, bytes (a chat message of 2,000
/// characters with its user name and JSON fits many times).
pub const MAX_BODY: usize = 64 * 1024;

/// One recorded message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// When the recording node took it, ms since the epoch; never decreasing on one node.
    pub at_ms: u64,
    /// (publisher, counter): unique cluster-wide, given by the recording node.
    pub id: (u64, u64),
    /// The application's encoding of the message (the chat's JSON `{user, message}`).
    pub body: String,
}

impl Entry {
    fn order(&self) -> (u64, u64, u64) {
        (self.at_ms, self.id.0, self.id.1)
    }
}

/// Merges `from` into `into` (sorted, without duplicates, at most `cap` long): the union by
/// id, in order, trimmed to the newest `cap`. Entries with bodies over [`MAX_BODY`] are
/// dropped. Returns whether `into` changed.
pub fn merge(into: &mut Vec<Entry>, from: impl IntoIterator<Item = Entry>, cap: usize) -> bool {
    let mut changed = false;
    for entry in from {
        if entry.body.len() > MAX_BODY {
            continue;
        }
        // A live record is newer than everything kept, so no copy of one (an entry's time
        // never changes): it goes at the end without a look at each entry kept. A peer that
        // reused an id with a later time would get a second entry, as a new id would.
        let at = if into.last().is_none_or(|newest| newest.order() < entry.order()) {
            into.len()
        } else if into.iter().any(|e| e.id == entry.id) {
            continue;
        } else if into.len() == cap && into.first().is_some_and(|oldest| entry.order() < oldest.order()) {
            continue; // older than everything kept
        } else {
            into.partition_point(|e| e.order() < entry.order())
        };
        into.insert(at, entry);
        changed = true;
        if into.len() > cap {
            into.remove(0);
        }
    }
    changed
}

/// An entry's size in a message, bytes (its body and a bound on the rest).
pub fn entry_size(entry: &Entry) -> usize {
    entry.body.len() + 32
}

/// Gives entries their identity: a random publisher id and a counter, with a clock that never
/// goes back.
pub struct IdSource {
    publisher: u64,
    /// (last time given, counter). A std lock: one arithmetic update.
    last: Mutex<(u64, u64)>,
}

impl Default for IdSource {
    fn default() -> Self {
        Self { publisher: rand::random(), last: Mutex::new((0, 0)) }
    }
}

impl IdSource {
    pub fn entry(&self, body: String) -> Entry {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let now = now_ms().max(last.0);
        *last = (now, last.1 + 1);
        Entry { at_ms: now, id: (self.publisher, last.1), body }
    }
}

pub use crate::clock::unix_ms as now_ms;

struct StoreState {
    rooms: LruCache<RoomId, Vec<Entry>>,
    /// Rooms changed (or forgotten) since the disk writer last took them; none are noted
    /// for a store kept on no disk (no `history.dir`): nothing would ever take them.
    dirty: HashSet<RoomId>,
    on_disk: bool,
}

/// This node's copies of room histories: the last `per_room` entries of up to `rooms` rooms;
/// past that the least recently written room is forgotten (on disk too).
pub struct HistoryStore {
    per_room: usize,
    /// A std lock: held for one room's merge or copy, never across an await.
    state: Mutex<StoreState>,
    /// Rings the disk writer when something changed; bounded (one pending ring is enough).
    doorbell: OnceLock<std::sync::mpsc::SyncSender<()>>,
}

impl HistoryStore {
    /// `None` if either bound is zero (no history).
    pub fn new(per_room: usize, rooms: usize) -> Option<Self> {
        let rooms = NonZeroUsize::new(rooms)?;
        (per_room > 0).then(|| Self {
            per_room,
            state: Mutex::new(StoreState { rooms: LruCache::new(rooms), dirty: HashSet::new(), on_disk: false }),
            doorbell: OnceLock::new(),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, StoreState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn per_room(&self) -> usize {
        self.per_room
    }

    /// Merges `entries` into the room's copy ([`merge`]); returns whether it changed.
    pub fn merge(&self, room: &RoomId, entries: Vec<Entry>) -> bool {
        if entries.is_empty() {
            return false;
        }
        let changed = {
            let mut state = self.state();
            let StoreState { rooms, dirty, on_disk } = &mut *state;
            let written = *on_disk;
            let changed = match rooms.get_mut(room) {
                Some(copy) => merge(copy, entries, self.per_room),
                None => {
                    // A new room only if something is left to keep: nothing is evicted for nothing.
                    let mut copy = Vec::new();
                    merge(&mut copy, entries, self.per_room);
                    let fresh = !copy.is_empty();
                    if fresh {
                        if let Some((evicted, _)) = rooms.push(room.clone(), copy).filter(|_| written) {
                            dirty.insert(evicted);
                        }
                    }
                    fresh
                }
            };
            if written && changed && !dirty.contains(room) {
                dirty.insert(room.clone());
            }
            changed
        };
        if changed {
            if let Some(bell) = self.doorbell.get() {
                let _ = bell.try_send(()); // full: a ring is already pending
            }
        }
        changed
    }

    /// The room's entries, oldest first.
    pub fn entries(&self, room: &RoomId) -> Vec<Entry> {
        self.state().rooms.peek(room).cloned().unwrap_or_default()
    }

    /// The room's newest entries whose bodies add up to at most `budget` bytes, oldest first
    /// (what fits in one message to a peer).
    pub fn newest_within(&self, room: &RoomId, budget: usize) -> Vec<Entry> {
        let mut entries = self.entries(room);
        let mut size = 0;
        let keep = entries.iter().rev().take_while(|e| {
            size += entry_size(e);
            size <= budget
        });
        let skip = entries.len() - keep.count();
        entries.drain(..skip);
        entries
    }

    /// Every room held, least recently written first.
    pub fn rooms(&self) -> Vec<RoomId> {
        self.state().rooms.iter().rev().map(|(room, _)| room.clone()).collect()
    }

    /// How many rooms the store keeps at most.
    pub fn room_capacity(&self) -> usize {
        self.state().rooms.cap().get()
    }

    pub fn room_count(&self) -> usize {
        self.state().rooms.len()
    }

    /// From now on the store notes what changed, for [`HistoryStore::take_dirty`] (a disk
    /// keeps it).
    pub(crate) fn keep_on_disk(&self) {
        self.state().on_disk = true;
    }

    /// What changed since the last call: each room's copy now (`None`: forgotten).
    pub(crate) fn take_dirty(&self) -> Vec<(RoomId, Option<Vec<Entry>>)> {
        let mut state = self.state();
        let dirty = std::mem::take(&mut state.dirty);
        dirty
            .into_iter()
            .map(|room| {
                let copy = state.rooms.peek(&room).cloned();
                (room, copy)
            })
            .collect()
    }

    /// Rooms whose copy, taken by [`HistoryStore::take_dirty`], could not be written: noted
    /// again, so the next pass writes their copy then.
    pub(crate) fn dirty_again(&self, rooms: impl IntoIterator<Item = RoomId>) {
        self.state().dirty.extend(rooms);
    }

    pub(crate) fn set_doorbell(&self, bell: std::sync::mpsc::SyncSender<()>) {
        let _ = self.doorbell.set(bell);
    }
}

/// Room history as the chat sees it.
pub trait History: Send + Sync + 'static {
    /// Appends a message to the room's history; never waits.
    /// `sent`, if any, is held until the record has left this node (see `socketio::OnSent`).
    fn record(&self, nsp: &str, room: &str, body: String, sent: Option<&Arc<OnSent>>);
    /// The room's last messages, oldest first (empty if nobody holding them can be reached).
    fn history(&self, nsp: &str, room: &str) -> BoxFuture<'static, Vec<String>>;
}

/// A lone node's history: every room's copy is here.
pub struct LocalHistory {
    store: Arc<HistoryStore>,
    ids: IdSource,
}

impl LocalHistory {
    pub fn new(store: Arc<HistoryStore>) -> Self {
        Self { store, ids: IdSource::default() }
    }
}

impl History for LocalHistory {
    fn record(&self, nsp: &str, room: &str, body: String, _sent: Option<&Arc<OnSent>>) {
        self.store.merge(&(nsp.to_owned(), room.to_owned()), vec![self.ids.entry(body)]);
    }

    fn history(&self, nsp: &str, room: &str) -> BoxFuture<'static, Vec<String>> {
        let entries = self.store.entries(&(nsp.to_owned(), room.to_owned()));
        Box::pin(std::future::ready(entries.into_iter().map(|e| e.body).collect()))
    }
}

/// The chat's handle on history, set once by the node's wiring when it knows whether it runs
/// alone or in a cluster. Unset (history off, or before the node starts): nothing is kept.
#[derive(Default)]
pub struct HistoryHandle(OnceLock<Arc<dyn History>>);

impl HistoryHandle {
    pub fn set(&self, history: Arc<dyn History>) {
        if self.0.set(history).is_err() {
            tracing::warn!("room history was already set; keeping the first");
        }
    }

    pub fn record(&self, nsp: &str, room: &str, body: String, sent: Option<&Arc<OnSent>>) {
        if let Some(h) = self.0.get() {
            h.record(nsp, room, body, sent);
        }
    }

    pub fn history(&self, nsp: &str, room: &str) -> BoxFuture<'static, Vec<String>> {
        match self.0.get() {
            Some(h) => h.history(nsp, room),
            None => Box::pin(std::future::ready(Vec::new())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(at: u64, publisher: u64, n: u64) -> Entry {
        Entry { at_ms: at, id: (publisher, n), body: format!("{publisher}:{n}") }
    }

    fn bodies(v: &[Entry]) -> Vec<&str> {
        v.iter().map(|e| e.body.as_str()).collect()
    }

    #[test]
    fn merge_is_a_union_by_id_in_order_trimmed_to_the_newest() {
        let mut a = vec![e(1, 1, 1), e(3, 1, 2)];
        assert!(merge(&mut a, vec![e(2, 2, 1), e(3, 1, 2), e(4, 2, 2)], 3));
        assert_eq!(bodies(&a), ["2:1", "1:2", "2:2"]);
        let copy = a.clone();
        assert!(!merge(&mut a, copy, 3), "merging a copy of itself changes nothing");
    }

    /// Live records arrive newest last: each is appended, the oldest goes at the cap, and the
    /// newest arriving again (a replica's copy of it) is not kept twice.
    #[test]
    fn live_records_are_appended_and_a_repeat_of_the_newest_is_dropped() {
        let mut a = Vec::new();
        for n in 1..=4 {
            assert!(merge(&mut a, vec![e(n, 1, n)], 3));
        }
        assert_eq!(bodies(&a), ["1:2", "1:3", "1:4"]);
        assert!(!merge(&mut a, vec![e(4, 1, 4)], 3), "the newest again");
        assert!(merge(&mut a, vec![e(4, 2, 1)], 3), "the same time, another publisher");
        assert_eq!(bodies(&a), ["1:3", "1:4", "2:1"]);
    }

    #[test]
    fn merge_is_order_independent() {
        let x = vec![e(1, 1, 1), e(5, 1, 2), e(9, 1, 3)];
        let y = vec![e(2, 2, 1), e(5, 2, 2), e(7, 2, 3)];
        let z = vec![e(5, 1, 2), e(8, 3, 1)];
        let mut one = Vec::new();
        for part in [&x, &y, &z] {
            merge(&mut one, part.clone(), 4);
        }
        let mut other = Vec::new();
        for part in [&z, &y, &x] {
            merge(&mut other, part.clone(), 4);
        }
        assert_eq!(one, other);
        assert_eq!(bodies(&one), ["2:2", "2:3", "3:1", "1:3"]);
    }

    #[test]
    fn a_stale_copy_never_takes_history_back_in_time() {
        let mut fresh: Vec<Entry> = (10..15).map(|n| e(n, 1, n)).collect();
        let stale: Vec<Entry> = (1..8).map(|n| e(n, 1, n)).collect();
        assert!(!merge(&mut fresh, stale, 5));
        assert_eq!(fresh.first().unwrap().at_ms, 10);
        // A shorter window still keeps what is newest.
        let mut partial = vec![e(12, 1, 12)];
        merge(&mut partial, (1..8).map(|n| e(n, 1, n)), 5);
        merge(&mut partial, (10..15).map(|n| e(n, 1, n)), 5);
        assert_eq!(partial.iter().map(|e| e.at_ms).collect::<Vec<_>>(), [10, 11, 12, 13, 14]);
    }

    #[test]
    fn oversized_bodies_are_dropped() {
        let mut v = Vec::new();
        let big = Entry { at_ms: 1, id: (1, 1), body: "x".repeat(MAX_BODY + 1) };
        assert!(!merge(&mut v, vec![big], 10));
    }

    #[test]
    fn ids_are_unique_and_in_order_on_one_node() {
        let ids = IdSource::default();
        let a = ids.entry("a".into());
        let b = ids.entry("b".into());
        assert!(a.order() < b.order());
        assert_ne!(a.id, b.id);
    }

    #[test]
    fn the_store_keeps_the_last_entries_of_the_most_recent_rooms() {
        let store = HistoryStore::new(2, 2).unwrap();
        store.keep_on_disk();
        let room = |r: &str| ("/chat".to_owned(), r.to_owned());
        store.merge(&room("a"), vec![e(1, 1, 1), e(2, 1, 2), e(3, 1, 3)]);
        store.merge(&room("b"), vec![e(1, 1, 4)]);
        store.merge(&room("a"), vec![e(4, 1, 5)]);
        store.merge(&room("c"), vec![e(1, 1, 6)]);
        assert_eq!(store.room_count(), 2);
        assert!(store.entries(&room("b")).is_empty(), "b was written least recently");
        assert_eq!(bodies(&store.entries(&room("a"))), ["1:3", "1:5"]);
        let dirty: HashSet<RoomId> = store.take_dirty().into_iter().map(|(r, _)| r).collect();
        assert_eq!(dirty, [room("a"), room("b"), room("c")].into());
        assert!(HistoryStore::new(0, 1).is_none() && HistoryStore::new(1, 0).is_none());
    }

    /// Kept on no disk (no `history.dir`, the default), nothing takes the changed rooms: noting
    /// them would grow without bound with every new room name.
    #[test]
    fn a_store_without_a_disk_writer_notes_no_changes_for_it() {
        let store = HistoryStore::new(2, 2).unwrap();
        for r in 0..1000 {
            store.merge(&("/chat".to_owned(), format!("room{r}")), vec![e(1, 1, r)]);
        }
        assert_eq!(store.room_count(), 2);
        assert!(store.take_dirty().is_empty());
    }

    #[test]
    fn nothing_to_keep_evicts_nothing() {
        let store = HistoryStore::new(2, 1).unwrap();
        let room = |r: &str| ("/chat".to_owned(), r.to_owned());
        store.merge(&room("a"), vec![e(1, 1, 1)]);
        let big = Entry { at_ms: 2, id: (1, 2), body: "x".repeat(MAX_BODY + 1) };
        assert!(!store.merge(&room("b"), vec![big]));
        assert_eq!(store.rooms(), [room("a")]);
    }

    #[test]
    fn the_newest_entries_within_a_budget() {
        let store = HistoryStore::new(10, 1).unwrap();
        let room = ("/chat".to_owned(), "a".to_owned());
        store.merge(&room, (1..=5).map(|n| e(n, 1, n)).collect());
        let two = 2 * entry_size(&e(1, 1, 1));
        assert_eq!(bodies(&store.newest_within(&room, two)), ["1:4", "1:5"]);
        assert!(store.newest_within(&room, 1).is_empty());
    }
}
