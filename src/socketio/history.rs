//! Room history: the last messages of each room, kept by the node that owns the room.
//!
//! Entries are opaque strings (the application's encoding). Both dimensions are bounded: each
//! room keeps its last `per_room` entries, and past `rooms` rooms the least recently written
//! room is forgotten, so a flood of one-message rooms cannot grow a node's memory without end.

use std::collections::VecDeque;
use std::num::NonZeroUsize;
use std::sync::Mutex;

use lru::LruCache;

pub struct RoomHistory {
    per_room: usize,
    rooms: Mutex<LruCache<String, VecDeque<String>>>,
}

impl RoomHistory {
    /// Keeps the last `per_room` entries of up to `rooms` rooms; `None` if either is zero.
    pub fn new(per_room: usize, rooms: usize) -> Option<Self> {
        let rooms = NonZeroUsize::new(rooms)?;
        (per_room > 0).then(|| Self { per_room, rooms: Mutex::new(LruCache::new(rooms)) })
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, LruCache<String, VecDeque<String>>> {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn record(&self, room: &str, entry: String) {
        let mut rooms = self.rooms();
        let entries = rooms.get_or_insert_mut(room.to_owned(), VecDeque::new);
        if entries.len() == self.per_room {
            entries.pop_front();
        }
        entries.push_back(entry);
    }

    /// The room's entries, oldest first.
    pub fn entries(&self, room: &str) -> Vec<String> {
        self.rooms().peek(room).map(|e| e.iter().cloned().collect()).unwrap_or_default()
    }

    pub fn room_count(&self) -> usize {
        self.rooms().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_entries_of_each_room() {
        let h = RoomHistory::new(3, 10).unwrap();
        for i in 0..5 {
            h.record("a", i.to_string());
        }
        h.record("b", "x".into());
        assert_eq!(h.entries("a"), ["2", "3", "4"]);
        assert_eq!(h.entries("b"), ["x"]);
        assert!(h.entries("c").is_empty());
    }

    #[test]
    fn forgets_the_least_recently_written_room() {
        let h = RoomHistory::new(2, 2).unwrap();
        h.record("a", "1".into());
        h.record("b", "1".into());
        h.record("a", "2".into());
        h.record("c", "1".into());
        assert_eq!(h.room_count(), 2);
        assert!(h.entries("b").is_empty(), "b was written least recently");
        assert_eq!(h.entries("a"), ["1", "2"]);
    }

    #[test]
    fn zero_sizes_mean_no_history() {
        assert!(RoomHistory::new(0, 10).is_none());
        assert!(RoomHistory::new(10, 0).is_none());
    }
}
