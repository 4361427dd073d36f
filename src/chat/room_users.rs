//! `room users` updates, coalesced and paced per room.
//!
//! Every join and leave changes a room's member list, and the list goes to every local member:
//! sent at once on each change, a room filling up with N members costs N² deliveries of lists
//! up to N names long (3,000 members joining: billions of bytes). Instead a change marks the
//! room, and one update with the list as it is then goes out a moment later ([`FIRST_DELAY`]);
//! changes made while it was on its way, or in the pause after it, are carried by one more.
//!
//! The pause after an update grows with the list it sent ([`pause`]): each member is sent at
//! most about [`LIST_BYTES_PER_SEC`] of lists while its room churns, whatever the room's size.
//! Paced by the local members instead (as it once was), a node's list traffic grew with the
//! room's total size: a room of 3,000 over three nodes filling up sent each node's 1,000
//! members a 36 KB list every second, 36 MB/s per node, which outran the clients' reading
//! and closed their sessions as too slow (the benchmark's three-node big room).
//!
//! A list names at most `chat.presence_limit` users (the first, in order); a list cut short
//! says how many there are (`count`). A 10,000-member room's full list would be some 120 KB,
//! for each of its members.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde_json::json;

use crate::socketio::Namespace;

/// How long changes gather before a room's first update goes out.
const FIRST_DELAY: Duration = Duration::from_millis(10);
/// Bytes of `room users` lists a member of a churning room is sent per second, about.
const LIST_BYTES_PER_SEC: u64 = 8 * 1024;
/// The longest pause between two updates of a room (a list of some 80 KB and more).
const MAX_PAUSE: Duration = Duration::from_secs(10);

pub struct RoomUsers {
    /// Rooms with an update on its way or in the pause after one, and whether they changed
    /// since their last update went out.
    pending: Mutex<HashMap<String, bool>>,
    /// The most names in a list; 0: all.
    limit: usize,
}

impl RoomUsers {
    pub fn new(limit: usize) -> Self {
        Self { pending: Mutex::default(), limit }
    }

    /// `{room, users}`: the sorted, distinct names of the room's members on every node; past
    /// `limit` of them, the first `limit` and `count`, how many there are.
    pub fn list(&self, ns: &Namespace, room: &str) -> serde_json::Value {
        payload(room, ns.room_labels(room), self.limit).0
    }

    /// Schedules a `room users` update of `room` to its local members, unless one is on its
    /// way or pausing (the next one will carry this change).
    pub fn changed(self: &Arc<Self>, ns: &Arc<Namespace>, room: &str) {
        {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(changed) = pending.get_mut(room) {
                *changed = true;
                return;
            }
            pending.insert(room.to_owned(), true);
        }
        let (this, weak, room) = (self.clone(), Arc::downgrade(ns), room.to_owned());
        // Cut short when the node stops: its clients are gone, nobody is waiting for a list.
        ns.tasks().spawn_until_stopped(async move {
            tokio::time::sleep(FIRST_DELAY).await;
            loop {
                if let Some(changed) = this.pending.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&room) {
                    *changed = false;
                }
                let Some(ns) = Weak::upgrade(&weak) else {
                    this.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&room);
                    break;
                };
                let (list, sent) = payload(&room, ns.room_labels(&room), this.limit);
                ns.emit_to_local_room(&room, "room users", vec![list]);
                drop(ns);
                tokio::time::sleep(pause(sent)).await;
                let mut pending = this.pending.lock().unwrap_or_else(|e| e.into_inner());
                if pending.get(&room) != Some(&true) {
                    pending.remove(&room);
                    break;
                }
            }
        });
    }
}

/// The pause after an update whose list was `bytes` long (see the module doc).
fn pause(bytes: u64) -> Duration {
    Duration::from_millis(bytes.saturating_mul(1000) / LIST_BYTES_PER_SEC).clamp(FIRST_DELAY, MAX_PAUSE)
}

/// About the bytes of a list of `users` in JSON: each name, quoted, and a comma.
fn list_bytes(users: &[String]) -> u64 {
    users.iter().map(|u| u.len() as u64 + 3).sum()
}

/// A `room users` event's argument for `users`, the room's sorted, distinct labels (see
/// [`RoomUsers::list`]), and about its bytes (for [`pause`]).
fn payload(room: &str, mut users: Vec<String>, limit: usize) -> (serde_json::Value, u64) {
    let count = users.len();
    if limit > 0 && count > limit {
        users.truncate(limit);
        let bytes = list_bytes(&users);
        return (json!({ "room": room, "users": users, "count": count }), bytes);
    }
    let bytes = list_bytes(&users);
    (json!({ "room": room, "users": users }), bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_past_the_limit_names_the_first_users_and_counts_them_all() {
        let names = |n: usize| (0..n).map(|i| format!("u{i}")).collect::<Vec<_>>();
        let (list, bytes) = payload("r", names(3), 3);
        assert_eq!(list, json!({ "room": "r", "users": ["u0", "u1", "u2"] }), "no count at the limit");
        assert_eq!(bytes, 15);
        let (list, bytes) = payload("r", names(5), 3);
        assert_eq!(list, json!({ "room": "r", "users": ["u0", "u1", "u2"], "count": 5 }));
        assert_eq!(bytes, 15, "paced by what is sent");
        let (list, _) = payload("r", names(5), 0);
        assert_eq!(list, json!({ "room": "r", "users": ["u0", "u1", "u2", "u3", "u4"] }), "0: no limit");
    }

    #[test]
    fn the_pause_grows_with_the_list_so_a_member_gets_a_bounded_rate_of_lists() {
        assert_eq!(pause(0), FIRST_DELAY, "a small room's lists go out at once");
        assert_eq!(pause(400), Duration::from_millis(48), "30 names");
        // 3,000 names of 9 characters: 36 KB, one list per 4.4 s.
        let names: Vec<String> = (0..3000).map(|i| format!("user{i:05}")).collect();
        assert_eq!(list_bytes(&names), 36_000);
        assert_eq!(pause(list_bytes(&names)), Duration::from_millis(4394));
        assert_eq!(pause(10_000_000), MAX_PAUSE);
        // The rate a member is sent, list bytes over the pause, stays near the budget.
        for bytes in [2_000u64, 36_000, 80_000] {
            let rate = bytes as f64 / pause(bytes).as_secs_f64();
            assert!((rate - LIST_BYTES_PER_SEC as f64).abs() < 10.0, "{bytes} B: {rate} B/s");
        }
    }
}
