//! `room users` updates, coalesced per room.
//!
//! Every join and leave changes a room's member list, and the list goes to every member: sent
//! at once on each change, a room filling up with N members costs N² deliveries of lists up to
//! N names long (3,000 members joining: billions of bytes). Instead a change marks the room,
//! and one update with the list as it is then goes out a moment later; the moment grows with
//! the room (1 ms per local member, from 10 ms to 2 s), so a big room gets a few lists while it
//! fills, a small one gets them at once.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde_json::json;

use crate::socketio::Namespace;

const MIN_DELAY: Duration = Duration::from_millis(10);
const MAX_DELAY: Duration = Duration::from_secs(2);

#[derive(Default)]
pub struct RoomUsers {
    /// Rooms with an update on its way.
    pending: Mutex<HashSet<String>>,
}

impl RoomUsers {
    /// Schedules a `room users` update of `room` to its local members, unless one is on its
    /// way (it will carry this change too).
    pub fn changed(self: &Arc<Self>, ns: &Arc<Namespace>, room: &str) {
        if !self.pending.lock().unwrap_or_else(|e| e.into_inner()).insert(room.to_owned()) {
            return;
        }
        let members = ns.room_members(room).len() as u64;
        let delay = Duration::from_millis(members).clamp(MIN_DELAY, MAX_DELAY);
        let (this, weak, room) = (self.clone(), Arc::downgrade(ns), room.to_owned());
        // Cut short when the node stops: its clients are gone, nobody is waiting for a list.
        ns.tasks().spawn_until_stopped(async move {
            tokio::time::sleep(delay).await;
            this.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&room);
            if let Some(ns) = Weak::upgrade(&weak) {
                ns.emit_to_local_room(&room, "room users", vec![list(&ns, &room)]);
            }
        });
    }
}

/// `{room, users}`: the sorted, distinct names of the room's members on every node.
pub fn list(ns: &Namespace, room: &str) -> serde_json::Value {
    json!({ "room": room, "users": ns.room_labels(room) })
}
