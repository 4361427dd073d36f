//! Room history across the cluster: the replicated implementation of [`History`].
//!
//! Placement: a room's history is kept by its *replicas*, the first [`REPLICAS`] nodes of the
//! rendezvous ranking of the room's gossip key among the ready members (the first is the room's
//! owner, what `inspect --room` shows). Recording pushes the entry to each replica
//! (`Push::Record`, on the rooms driver's ordered per-peer queues); reading asks each replica
//! (`Request::History`) and merges their answers ([`crate::history::merge`]), so one replica
//! down, or one that just became a replica, loses nothing. A record that cannot be sent to a
//! replica stays on the recording node (before the sender's ack: it never goes out with the
//! message on one node only), which sends the room's copy on to the replicas it sees, again
//! after a pause while they cannot take it ([`ClusterHistory::hold`]); so does a node sent a
//! record by a node whose view of the ring differs, when its own says it is no replica.
//!
//! Hand-over: the ranking changes when a node joins, leaves or restarts (a new generation
//! counts as a new node: its memory may be gone). On every change each node looks at the rooms
//! it holds and sends its copy to every replica that was not one before (`Request::
//! HistoryMerge`, batches of at most [`BATCH_BYTES`]); the receiver merges. A node leaving
//! gracefully does the same for the ranking without itself before it goes. Merging is a union by
//! entry id trimmed to the newest, so copies can cross, repeat or arrive stale: a room's history
//! never goes back in time.
//!
//! Peers' words are untrusted: at most [`MAX_BATCH_ROOMS`] rooms per merge, each room's
//! entries cut to the newest `history_len`, bodies over [`crate::history::MAX_BODY`] dropped.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

use super::membership::{room_key, Members, Membership};
use super::placement::Placement;
use super::rooms::ClusterRooms;
use crate::history::{entry_size, merge, Entry, History, HistoryStore, IdSource, RoomId};
use crate::rpc::{Push, Request, Response};
use crate::socketio::OnSent;

/// Nodes that keep each room's history, so one node down (crashed, restarting) loses none.
pub const REPLICAS: usize = 2;
/// Bytes of entries one hand-over message carries at most (an RPC frame holds 4 MiB).
pub const BATCH_BYTES: usize = 1024 * 1024;
/// Rooms one hand-over message may carry.
pub const MAX_BATCH_ROOMS: usize = 4096;
/// How long a reader waits for a replica's answer.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one hand-over message may take (a node that died unnoticed holds the hand-over
/// up no longer than this per message).
const HAND_OVER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the resender waits before trying again rooms a replica could not take.
const RESEND_BACKOFF: Duration = Duration::from_secs(1);

/// The ready members and their generations.
pub type Ready = BTreeMap<String, u64>;

pub fn ready_of(members: &Members) -> Ready {
    members.nodes.values().filter(|m| m.ready && m.rpc.is_some()).map(|m| (m.node_id.clone(), m.generation)).collect()
}

/// A room's replicas among `ready`: the first [`REPLICAS`] of its ranking.
pub fn replicas(ready: &Ready, nsp: &str, room: &str) -> Vec<(String, u64)> {
    let placement = Placement::new(ready.keys().map(String::as_str));
    let ranking = placement.ranking(&room_key(nsp, room));
    ranking.into_iter().take(REPLICAS).map(|id| (id.to_owned(), ready[id])).collect()
}

/// Rooms whose replicas [`ReplicaCache`] remembers; past it, it starts again empty.
const CACHED_ROOMS: usize = 4096;

/// Each room's replicas among the ready set of the newest membership snapshot, computed once
/// per room and ready set. Why: every recorded message needs its room's replicas, and reading
/// the ready set, the room's gossip key and its ranking cost about 8,500 instructions each
/// time (callgrind, 3 nodes), more than sealing the message for a peer. A snapshot whose ready
/// set is unchanged (a room joined anywhere makes a new one) keeps the cache.
struct ReplicaCache {
    /// The snapshot `ready` was read from (compared by pointer: one per membership change).
    members: Arc<Members>,
    ready: Ready,
    /// By namespace, then room: looked up by `&str`, without building a key.
    rooms: HashMap<String, HashMap<String, Arc<[String]>>>,
    cached: usize,
}

impl ReplicaCache {
    fn new() -> Self {
        Self { members: Arc::new(Members::default()), ready: Ready::new(), rooms: HashMap::new(), cached: 0 }
    }

    /// The room's replicas in `members`, or `fallback` alone while nobody is ready.
    fn get(&mut self, members: Arc<Members>, nsp: &str, room: &str, fallback: &str) -> Arc<[String]> {
        self.lookup(members, nsp, room, fallback, true)
    }

    /// As [`ReplicaCache::get`], but a room not cached is ranked without being kept: for
    /// lookups of many rooms at once (the resender's), which would otherwise fill the cache
    /// and empty it of the rooms being recorded to.
    fn peek(&mut self, members: Arc<Members>, nsp: &str, room: &str, fallback: &str) -> Arc<[String]> {
        self.lookup(members, nsp, room, fallback, false)
    }

    fn lookup(&mut self, members: Arc<Members>, nsp: &str, room: &str, fallback: &str, keep: bool) -> Arc<[String]> {
        if !Arc::ptr_eq(&self.members, &members) {
            let ready = ready_of(&members);
            self.members = members;
            if ready != self.ready {
                self.ready = ready;
                self.clear();
            }
        }
        if let Some(found) = self.rooms.get(nsp).and_then(|rooms| rooms.get(room)) {
            return found.clone();
        }
        let mut ids: Vec<String> = replicas(&self.ready, nsp, room).into_iter().map(|(id, _)| id).collect();
        if ids.is_empty() {
            ids.push(fallback.to_owned()); // nobody is ready: keep it here
        }
        let ids: Arc<[String]> = ids.into();
        if !keep {
            return ids;
        }
        if self.cached >= CACHED_ROOMS {
            self.clear();
        }
        self.rooms.entry(nsp.to_owned()).or_default().insert(room.to_owned(), ids.clone());
        self.cached += 1;
        ids
    }

    fn clear(&mut self) {
        self.rooms.clear();
        self.cached = 0;
    }
}

/// A peer's entries for one room, cut to the newest `cap` before merging.
fn untrusted(mut entries: Vec<Entry>, cap: usize) -> Vec<Entry> {
    if entries.len() > cap {
        entries.sort_by_key(|e| (e.at_ms, e.id.0, e.id.1));
        entries.drain(..entries.len() - cap);
    }
    entries
}

/// Adds `room` to `set` unless that would make it hold more than `cap` rooms; whether it is in.
fn add_within(set: &mut HashSet<RoomId>, room: RoomId, cap: usize) -> bool {
    if set.len() >= cap && !set.contains(&room) {
        return false;
    }
    set.insert(room);
    true
}

fn entries_size(entries: &[Entry]) -> usize {
    entries.iter().map(entry_size).sum()
}

/// Rooms whose copy here their replicas may lack, for the resender (see
/// [`ClusterHistory::hold`]). Each set holds at most as many rooms as the store keeps.
#[derive(Default)]
struct Unsent {
    /// To send to each of their replicas but this node.
    rooms: HashSet<RoomId>,
    /// That a replica could not take, by replica: tried again after [`RESEND_BACKOFF`] (the
    /// others' copies went through).
    retry: BTreeMap<String, HashSet<RoomId>>,
    /// Passes in a row that left some room unsent.
    failures: u32,
}

pub struct ClusterHistory {
    node_id: String,
    membership: Arc<Membership>,
    /// The per-peer queues and calls.
    rooms: Arc<ClusterRooms>,
    store: Arc<HistoryStore>,
    ids: IdSource,
    rpc_timeout: Duration,
    /// Rooms' replicas by ready set; a std lock, held for a lookup and never across an await.
    replicas: Mutex<ReplicaCache>,
    /// The ready set whose hand-over this node has finished.
    handed: watch::Sender<Option<Ready>>,
    /// What the resender is to send (see [`ClusterHistory::hold`]).
    unsent: Mutex<Unsent>,
    /// Rung when `unsent` gains a room.
    unsent_bell: Notify,
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl ClusterHistory {
    pub fn new(
        node_id: String,
        membership: Arc<Membership>,
        rooms: Arc<ClusterRooms>,
        store: Arc<HistoryStore>,
        rpc_timeout: Duration,
    ) -> Arc<Self> {
        let history = Arc::new(Self {
            node_id,
            membership,
            rooms,
            store,
            ids: IdSource::default(),
            rpc_timeout,
            replicas: Mutex::new(ReplicaCache::new()),
            handed: watch::Sender::new(None),
            unsent: Mutex::new(Unsent::default()),
            unsent_bell: Notify::new(),
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
        });
        // A record its replica could not be sent (the replica unreachable for now: starting,
        // or dead and not yet declared so) is kept here instead, so it is still on two nodes
        // when the sender's ack goes out, and sent on by the resender.
        let (weak, store) = (Arc::downgrade(&history), history.store.clone());
        history.rooms.on_undelivered_records(Box::new(move |nsp, room, entry| match weak.upgrade() {
            Some(history) => history.hold(nsp, room, entry),
            None => {
                store.merge(&(nsp, room), vec![entry]); // stopping: kept here all the same
            }
        }));
        history.tasks.spawn(history.clone().follow_membership().in_current_span());
        history.tasks.spawn(history.clone().resend().in_current_span());
        history
    }

    /// Stops the hand-over task.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Whether this node has handed over its rooms for the ready set it sees now.
    pub fn settled(&self) -> bool {
        self.handed.borrow().as_ref() == Some(&ready_of(&self.membership.members()))
    }

    /// The room's replicas as the newest membership snapshot ranks them (this node alone while
    /// nobody is ready).
    fn replicas_now(&self, nsp: &str, room: &str) -> Arc<[String]> {
        let members = self.membership.members();
        self.replicas.lock().unwrap_or_else(|e| e.into_inner()).get(members, nsp, room, &self.node_id)
    }

    /// As [`ClusterHistory::replicas_now`], without caching a room not cached yet (see
    /// [`ReplicaCache::peek`]).
    fn replicas_passing(&self, nsp: &str, room: &str) -> Arc<[String]> {
        let members = self.membership.members();
        self.replicas.lock().unwrap_or_else(|e| e.into_inner()).peek(members, nsp, room, &self.node_id)
    }

    /// Serves a peer's read of this node's copy.
    pub fn on_history(&self, nsp: &str, room: &str) -> Response {
        Response::History(self.store.newest_within(&(nsp.to_owned(), room.to_owned()), BATCH_BYTES))
    }

    /// Serves a peer's record. The publisher chose the replicas by its view of the ring; if
    /// this node's view says it is no replica (it handed the room over already, so the record
    /// would stay here alone), the room's copy goes on to the replicas it sees
    /// ([`ClusterHistory::hold`]), as a merge, which is never passed on again.
    pub fn on_record(&self, nsp: String, room: String, entry: Entry) {
        if self.replicas_now(&nsp, &room).contains(&self.node_id) {
            self.store.merge(&(nsp, room), vec![entry]);
        } else {
            self.hold(nsp, room, entry);
        }
    }

    /// Keeps `entry` here, where its room's replicas may lack it (a replica could not be sent
    /// the record, or this node got it though it is no replica), and has the resender send the
    /// room's copy to the replicas other than this node. One task sends for every room noted,
    /// a batch per replica, so a burst of such records costs no task each; a room noted again
    /// before the resender takes it is sent once.
    pub fn hold(&self, nsp: String, room: String, entry: Entry) {
        let id = (nsp, room);
        self.store.merge(&id, vec![entry]);
        let mut unsent = self.unsent.lock().unwrap_or_else(|e| e.into_inner());
        if !add_within(&mut unsent.rooms, id, self.store.room_capacity()) {
            // As many rooms as the store keeps are waiting already: this one's copy stays here,
            // and goes to whichever replica is new to the room at a change of the ring.
            debug!("too many rooms waiting to be sent on; one stays here");
            return;
        }
        drop(unsent);
        self.unsent_bell.notify_one();
    }

    /// Sends the copies of the rooms [`ClusterHistory::hold`] noted to each room's replicas
    /// (other than this node) as the ring is now; the rooms a replica could not take are tried
    /// again on that replica after [`RESEND_BACKOFF`], if it is still one of theirs (a replica
    /// new to a room gets it with the hand-over).
    async fn resend(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = self.unsent_bell.notified() => {}
                _ = self.stop.cancelled() => return,
            }
            let (rooms, retry) = {
                let mut unsent = self.unsent.lock().unwrap_or_else(|e| e.into_inner());
                (std::mem::take(&mut unsent.rooms), std::mem::take(&mut unsent.retry))
            };
            // The replicas as `record` finds them (cached per ring, but the rooms of a burst
            // are not added to the cache; this node alone while nobody is ready, which sends
            // nothing).
            let replicas_of = |room: &RoomId| self.replicas_passing(&room.0, &room.1);
            let mut due: BTreeMap<String, HashSet<RoomId>> = BTreeMap::new();
            for room in rooms {
                for replica in replicas_of(&room).iter().filter(|r| **r != self.node_id) {
                    due.entry(replica.clone()).or_default().insert(room.clone());
                }
            }
            for (node, rooms) in retry {
                let still = rooms.into_iter().filter(|room| replicas_of(room).contains(&node));
                due.entry(node.clone()).or_default().extend(still);
            }
            let mut failed: BTreeMap<String, HashSet<RoomId>> = BTreeMap::new();
            for (node, rooms) in due {
                let rooms: Vec<RoomId> = rooms.into_iter().collect();
                let sent = tokio::select! {
                    sent = self.send_rooms(&node, &rooms) => sent,
                    _ = self.stop.cancelled() => return,
                };
                if sent < rooms.len() {
                    failed.insert(node, rooms.into_iter().collect());
                }
            }
            if failed.is_empty() {
                self.unsent.lock().unwrap_or_else(|e| e.into_inner()).failures = 0;
                continue;
            }
            self.retry_later(failed);
            tokio::select! {
                _ = tokio::time::sleep(RESEND_BACKOFF) => {}
                _ = self.stop.cancelled() => return,
            }
        }
    }

    /// Notes the rooms each replica could not take, for the resender's next pass.
    fn retry_later(&self, failed: BTreeMap<String, HashSet<RoomId>>) {
        let mut unsent = self.unsent.lock().unwrap_or_else(|e| e.into_inner());
        unsent.failures += 1;
        if unsent.failures.is_power_of_two() {
            let peers: Vec<&String> = failed.keys().collect();
            warn!(
                ?peers,
                failures = unsent.failures,
                ?RESEND_BACKOFF,
                "room history not sent on to a replica; trying again"
            );
        }
        let cap = self.store.room_capacity();
        for (node, rooms) in failed {
            let retry = unsent.retry.entry(node).or_default();
            for room in rooms {
                add_within(retry, room, cap);
            }
        }
        drop(unsent);
        self.unsent_bell.notify_one();
    }

    /// Serves a peer's hand-over.
    pub fn on_merge(&self, rooms: Vec<(String, String, Vec<Entry>)>) -> Response {
        if rooms.len() > MAX_BATCH_ROOMS {
            return Response::Failed(format!("{} rooms in one merge; at most {MAX_BATCH_ROOMS}", rooms.len()));
        }
        let count = rooms.len();
        for (nsp, room, entries) in rooms {
            self.store.merge(&(nsp, room), untrusted(entries, self.store.per_room()));
        }
        Response::Merged(count as u32)
    }

    /// Keeps the replicas' copies whole as the ranking changes (see the module's doc).
    async fn follow_membership(self: Arc<Self>) {
        let mut changes = self.membership.subscribe();
        // Nothing handed over yet: every replica of what this node holds (from disk) is new.
        let mut last = Ready::new();
        loop {
            let ready = ready_of(&changes.borrow_and_update());
            if ready != last {
                tokio::select! {
                    _ = self.hand_over(&last, &ready) => {}
                    _ = self.stop.cancelled() => return,
                }
                last = ready.clone();
            }
            self.handed.send_replace(Some(ready));
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                _ = self.stop.cancelled() => return,
            }
        }
    }

    /// This node is leaving: its copies go to the replicas of the ranking without it.
    pub async fn leave(&self, limit: Duration) {
        let before = ready_of(&self.membership.members());
        let mut after = before.clone();
        after.remove(&self.node_id);
        let mut with_me = before;
        with_me.entry(self.node_id.clone()).or_insert(0);
        if tokio::time::timeout(limit, self.hand_over(&with_me, &after)).await.is_err() {
            warn!(?limit, "room history hand-over not finished before leaving");
        }
    }

    /// Sends this node's copy of each room it holds to the room's replicas under `after` that
    /// were not replicas under `before`.
    async fn hand_over(&self, before: &Ready, after: &Ready) {
        let mut due: BTreeMap<String, Vec<RoomId>> = BTreeMap::new();
        for room in self.store.rooms() {
            let old = replicas(before, &room.0, &room.1);
            for replica in replicas(after, &room.0, &room.1) {
                if replica.0 != self.node_id && !old.contains(&replica) {
                    due.entry(replica.0).or_default().push(room.clone());
                }
            }
        }
        for (node, rooms) in due {
            let sent = self.send_rooms(&node, &rooms).await;
            if sent > 0 {
                info!(peer = node, rooms = sent, "room history handed over to a new replica");
            }
            if sent < rooms.len() {
                warn!(peer = node, rooms = rooms.len() - sent, "room history not handed over");
            }
        }
    }

    /// Sends this node's copy of `rooms` to `node`, in batches of at most [`BATCH_BYTES`] and
    /// [`MAX_BATCH_ROOMS`]; returns how many rooms it merged.
    async fn send_rooms(&self, node: &str, rooms: &[RoomId]) -> usize {
        let mut sent = 0;
        let mut batch = Vec::new();
        let mut size = 0;
        for id in rooms {
            let entries = self.store.newest_within(id, BATCH_BYTES);
            let room_size = entries_size(&entries) + id.0.len() + id.1.len();
            if !batch.is_empty() && (size + room_size > BATCH_BYTES || batch.len() == MAX_BATCH_ROOMS) {
                sent += self.send_batch(node, std::mem::take(&mut batch)).await;
                size = 0;
            }
            size += room_size;
            batch.push((id.0.clone(), id.1.clone(), entries));
        }
        if !batch.is_empty() {
            sent += self.send_batch(node, batch).await;
        }
        sent
    }

    /// One hand-over message; returns how many rooms the peer merged.
    async fn send_batch(&self, node: &str, rooms: Vec<(String, String, Vec<Entry>)>) -> usize {
        let n = rooms.len();
        let limit = HAND_OVER_TIMEOUT.min(self.rpc_timeout);
        match self.rooms.call(node, Request::HistoryMerge { rooms }, limit).await {
            Ok(Response::Merged(_)) => n,
            other => {
                debug!(peer = node, ?other, rooms = n, "room history merge not taken");
                0
            }
        }
    }
}

impl History for ClusterHistory {
    fn record(&self, nsp: &str, room: &str, body: String, sent: Option<&Arc<OnSent>>) {
        let entry = self.ids.entry(body);
        for replica in self.replicas_now(nsp, room).iter() {
            if *replica == self.node_id {
                self.store.merge(&(nsp.to_owned(), room.to_owned()), vec![entry.clone()]);
            } else {
                let push = Push::Record { nsp: nsp.into(), room: room.into(), entry: entry.clone() };
                self.rooms.push_to_peer(replica, push, sent.cloned());
            }
        }
    }

    /// Asks every replica and merges the answers with this node's own copy (if any).
    fn history(&self, nsp: &str, room: &str) -> BoxFuture<'static, Vec<String>> {
        let replicas = self.replicas_now(nsp, room);
        let id: RoomId = (nsp.to_owned(), room.to_owned());
        let (me, store, rooms) = (self.node_id.clone(), self.store.clone(), self.rooms.clone());
        let limit = READ_TIMEOUT.min(self.rpc_timeout);
        Box::pin(async move {
            let cap = store.per_room();
            let asks = replicas.iter().filter(|r| **r != me).map(|replica| {
                let request = Request::History { nsp: id.0.clone(), room: id.1.clone() };
                let rooms = rooms.clone();
                async move {
                    match rooms.call(replica, request, limit).await {
                        Ok(Response::History(entries)) => untrusted(entries, cap),
                        other => {
                            debug!(peer = replica, ?other, "room history unavailable from this replica");
                            Vec::new()
                        }
                    }
                }
            });
            let answers = futures_util::future::join_all(asks).await;
            let mut merged = store.entries(&id);
            for answer in answers {
                merge(&mut merged, answer, cap);
            }
            merged.into_iter().map(|e| e.body).collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rooms_replicas_are_the_first_two_of_its_ranking_with_their_generations() {
        let ready: Ready = [("node1".into(), 5), ("node2".into(), 6), ("node3".into(), 7)].into();
        let got = replicas(&ready, "/chat", "lobby");
        let placement = Placement::new(["node1", "node2", "node3"]);
        let want: Vec<(String, u64)> = placement
            .ranking(&room_key("/chat", "lobby"))
            .into_iter()
            .take(2)
            .map(|id| (id.into(), ready[id]))
            .collect();
        assert_eq!(got, want);
        // A restarted node (new generation) is a new replica: its copy may be gone.
        let mut restarted = ready.clone();
        *restarted.get_mut(&got[0].0).unwrap() += 1;
        assert!(!replicas(&ready, "/chat", "lobby").contains(&replicas(&restarted, "/chat", "lobby")[0]));
        assert!(replicas(&Ready::new(), "/chat", "lobby").is_empty());
    }

    #[test]
    fn a_peers_entries_are_cut_to_the_newest() {
        let entries: Vec<Entry> = (0..10).rev().map(|n| Entry { at_ms: n, id: (1, n), body: String::new() }).collect();
        let kept = untrusted(entries, 3);
        assert_eq!(kept.iter().map(|e| e.at_ms).collect::<Vec<_>>(), [7, 8, 9]);
    }

    /// A snapshot of `nodes` (id, generation, ready), each with a fresh room set.
    fn snapshot(nodes: &[(&str, u64, bool)]) -> Arc<Members> {
        let mut members = Members::default();
        for &(id, generation, ready) in nodes {
            members.nodes.insert(id.into(), crate::cluster::membership::MemberInfo::for_test(id, generation, ready));
        }
        Arc::new(members)
    }

    fn ids(ready: &Ready, room: &str) -> Vec<String> {
        replicas(ready, "/chat", room).into_iter().map(|(id, _)| id).collect()
    }

    #[test]
    fn cached_replicas_follow_the_ready_set() {
        let mut cache = ReplicaCache::new();
        let three = snapshot(&[("node1", 1, true), ("node2", 1, true), ("node3", 1, true)]);
        let rooms: Vec<String> = (0..50).map(|n| format!("room{n}")).collect();
        for room in &rooms {
            let got = cache.get(three.clone(), "/chat", room, "node1");
            assert_eq!(*got, ids(&ready_of(&three), room));
            assert!(Arc::ptr_eq(&got, &cache.get(three.clone(), "/chat", room, "node1")), "computed once");
        }
        // A new snapshot, same ready set (a room joined somewhere): the rooms stay cached.
        let again = snapshot(&[("node1", 1, true), ("node2", 1, true), ("node3", 1, true)]);
        let before = cache.get(three.clone(), "/chat", "room0", "node1");
        assert!(Arc::ptr_eq(&before, &cache.get(again, "/chat", "room0", "node1")));
        // node3 no longer ready: every room is ranked again among node1 and node2.
        let two = snapshot(&[("node1", 1, true), ("node2", 1, true), ("node3", 1, false)]);
        for room in &rooms {
            let got = cache.get(two.clone(), "/chat", room, "node1");
            assert_eq!(*got, ids(&ready_of(&two), room));
            assert!(!got.contains(&"node3".to_string()));
        }
        // Nobody ready: the record stays here.
        let none = snapshot(&[("node1", 2, false)]);
        assert_eq!(*cache.get(none, "/chat", "room0", "node1"), ["node1".to_string()]);
    }

    #[test]
    fn a_restarted_replica_is_ranked_again_and_the_cache_is_bounded() {
        let mut cache = ReplicaCache::new();
        let one = snapshot(&[("node1", 1, true), ("node2", 1, true)]);
        let before = cache.get(one, "/chat", "lobby", "node1");
        let restarted = snapshot(&[("node1", 1, true), ("node2", 2, true)]);
        assert!(!Arc::ptr_eq(&before, &cache.get(restarted.clone(), "/chat", "lobby", "node1")));
        for n in 0..CACHED_ROOMS + 10 {
            cache.get(restarted.clone(), "/chat", &n.to_string(), "node1");
            assert!(cache.cached <= CACHED_ROOMS);
        }
    }

    /// The resender's lookups of a burst of rooms rank them as `get` does but keep none: the
    /// rooms cached for recording stay cached.
    #[test]
    fn a_peek_ranks_as_a_get_and_keeps_nothing() {
        let mut cache = ReplicaCache::new();
        let three = snapshot(&[("node1", 1, true), ("node2", 1, true), ("node3", 1, true)]);
        let lobby = cache.get(three.clone(), "/chat", "lobby", "node1");
        for n in 0..2 * CACHED_ROOMS {
            let room = format!("burst{n}");
            assert_eq!(*cache.peek(three.clone(), "/chat", &room, "node1"), ids(&ready_of(&three), &room));
        }
        assert_eq!(cache.cached, 1);
        assert!(Arc::ptr_eq(&lobby, &cache.peek(three.clone(), "/chat", "lobby", "node1")), "a cached room is read");
        assert!(Arc::ptr_eq(&lobby, &cache.get(three, "/chat", "lobby", "node1")), "still cached");
    }
}
