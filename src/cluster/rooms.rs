//! Rooms across the cluster: the subscriber table, direct pushes, replicated presence.
//!
//! Every node advertises in gossip the rooms it has local members in (`room:` keys). When a
//! room gets its first local member the node also asks every peer directly (one round trip),
//! and each answers with its own local members of the room: the join is effective everywhere
//! before the joiner is acked, and the joiner's node learns who is in the room. Later changes
//! of a room's local members are pushed to the nodes subscribed to it. A broadcast is encoded
//! once and pushed once to each subscribed node. Gossip repairs what a push missed, and a
//! node that leaves the ring takes its members with it (the others announce their leave).
//!
//! Pushes go through one bounded queue per peer, so a slow or dead node never blocks a
//! publisher: what does not fit is dropped, counted and logged.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt, Shared};
use tokio::sync::mpsc;
use tracing::{debug, warn, Instrument};

use super::membership::{room_key, Members, Membership};
use super::placement::Placement;
use crate::engineio::Frame;
use crate::rpc::peers::Peers;
use crate::rpc::{ParkedWire, Push, Request, Response, WirePacket, WsFrame};
use crate::socketio::recovery::{broadcast_size, Broadcast, ParkedState, PARKED_LABEL, TAIL_WAIT};
use crate::socketio::{Adapter, FoundSession, Namespace, PresenceCause, PresenceChange};

/// Pushes queued per peer before new ones are dropped.
const PEER_QUEUE: usize = 8192;
/// Bytes of broadcasts a parked session carries from node to node at most (an RPC frame
/// holds 4 MiB): a hand-over keeps the latest that fit.
const HAND_OVER_BUDGET: usize = 2 * 1024 * 1024;
/// How long a node keeps taking broadcasts for a session it handed over, for those already
/// on their way to it when the keeper's subscription took effect.
const HAND_OVER_GRACE: Duration = Duration::from_millis(100);
/// How long a joining node waits for each peer to confirm a subscription.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(2);

type RoomId = (String, String);

/// What a peer's push queue carries: pushes, and markers that say when those before them are
/// on the connection.
enum Outgoing {
    Push(Push),
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// The node a room is placed on: the rendezvous winner of the room's gossip key among the
/// ready members; `inspect --room` shows it. The room's history is kept there and on the
/// next [`HISTORY_REPLICAS`] - 1 nodes of the same ranking.
pub fn room_owner(members: &Members, nsp: &str, room: &str) -> Option<String> {
    Placement::new(members.ready()).owner(&room_key(nsp, room)).map(str::to_owned)
}

/// Nodes that keep each room's history, so one node down (crashed, restarting) loses none.
pub const HISTORY_REPLICAS: usize = 2;

/// The first `n` nodes of a room's rendezvous ranking among the ready members.
pub fn room_replicas(members: &Members, nsp: &str, room: &str, n: usize) -> Vec<String> {
    Placement::new(members.ready()).ranking(&room_key(nsp, room)).into_iter().take(n).map(str::to_owned).collect()
}

/// Counters of room traffic, for metrics.
#[derive(Debug, Default)]
pub struct RoomStats {
    pub pushes_sent: AtomicU64,
    pub pushes_dropped: AtomicU64,
    pub publishes_received: AtomicU64,
}

#[derive(Default)]
struct Tables {
    /// Rooms with local members.
    local: HashSet<RoomId>,
    /// Remote presence: room → node → labels of its members there.
    presence: HashMap<RoomId, BTreeMap<String, Vec<String>>>,
    /// Remote subscriptions known from gossip: room → nodes.
    gossip: HashMap<RoomId, BTreeSet<String>>,
    /// Each remote node's room set as last applied to `gossip`.
    applied: HashMap<String, Arc<BTreeSet<RoomId>>>,
    /// Subscriptions seen in gossip whose node's members we have not heard of yet.
    unconfirmed: BTreeSet<(String, RoomId)>,
    /// Live node ids, as of the last membership change.
    live: BTreeSet<String>,
    /// Rooms whose first local member's Subscribe round trip is under way: later local joiners
    /// wait for the same answers before their join counts.
    subscribing: HashMap<RoomId, Shared<BoxFuture<'static, ()>>>,
    /// Rooms that gained their first or lost their last local member since the advertiser
    /// last ran: their gossip key is brought in line with `local`, whatever the order of the
    /// joins and leaves that made them dirty.
    unadvertised: BTreeSet<RoomId>,
}

pub struct ClusterRooms {
    /// This adapter itself, for the tasks it spawns from `&self` trait methods.
    me: std::sync::Weak<ClusterRooms>,
    node_id: String,
    membership: Arc<Membership>,
    peers: Arc<Peers>,
    namespaces: HashMap<String, Arc<Namespace>>,
    /// A std lock: held for table updates only, never across an await.
    tables: Mutex<Tables>,
    /// Per-peer push queues, each drained by its own task.
    queues: Mutex<HashMap<String, mpsc::Sender<Outgoing>>>,
    rpc_timeout: Duration,
    pub stats: RoomStats,
    /// Parked sessions being handed over to their keepers; a leaving node waits for them.
    hand_overs: tokio_util::task::TaskTracker,
    /// Pids being handed over, so each moves once at a time.
    moving: Mutex<HashSet<String>>,
    /// Wakes the advertiser when `Tables::unadvertised` gained a room.
    advertise: Arc<tokio::sync::Notify>,
    /// Cancelled by [`ClusterRooms::shutdown`]: the long-lived tasks (membership follower,
    /// advertiser, per-peer pushers) end with it.
    stop: tokio_util::sync::CancellationToken,
}

impl ClusterRooms {
    pub fn new(
        node_id: String,
        membership: Arc<Membership>,
        peers: Arc<Peers>,
        namespaces: Vec<Arc<Namespace>>,
        rpc_timeout: Duration,
    ) -> Arc<Self> {
        let rooms = Arc::new_cyclic(|me| Self {
            me: me.clone(),
            node_id,
            membership,
            peers,
            namespaces: namespaces.into_iter().map(|ns| (ns.name().to_owned(), ns)).collect(),
            tables: Mutex::new(Tables::default()),
            queues: Mutex::new(HashMap::new()),
            rpc_timeout,
            stats: RoomStats::default(),
            hand_overs: tokio_util::task::TaskTracker::new(),
            moving: Mutex::new(HashSet::new()),
            advertise: Arc::default(),
            stop: tokio_util::sync::CancellationToken::new(),
        });
        for ns in rooms.namespaces.values() {
            let adapter: std::sync::Weak<dyn Adapter> = Arc::downgrade(&rooms) as _;
            ns.set_adapter(adapter);
        }
        tokio::spawn(rooms.clone().follow_membership().in_current_span());
        tokio::spawn(
            advertise_rooms(Arc::downgrade(&rooms), rooms.advertise.clone(), rooms.stop.clone()).in_current_span(),
        );
        rooms
    }

    /// Stops the long-lived tasks; what is still queued for peers is dropped (a leaving node
    /// has already flushed its hand-overs, see [`ClusterRooms::settle`]).
    pub fn shutdown(&self) {
        self.stop.cancel();
        self.queues.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Nodes to push a room's broadcasts to: subscribed by gossip or by direct word, live.
    fn subscribers(&self, id: &RoomId) -> Vec<String> {
        let t = self.tables();
        let mut nodes: BTreeSet<&String> = t.gossip.get(id).map(|s| s.iter().collect()).unwrap_or_default();
        if let Some(p) = t.presence.get(id) {
            nodes.extend(p.keys());
        }
        nodes.into_iter().filter(|n| **n != self.node_id && t.live.contains(*n)).cloned().collect()
    }

    /// Queues a push for `node` without waiting.
    fn push_to(self: &Arc<Self>, node: &str, push: Push) {
        let tx = {
            let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
            match queues.get(node).filter(|tx| !tx.is_closed()) {
                Some(tx) => tx.clone(),
                None => {
                    let (tx, rx) = mpsc::channel(PEER_QUEUE);
                    tokio::spawn(self.clone().pusher(node.to_owned(), rx).in_current_span());
                    queues.insert(node.to_owned(), tx.clone());
                    tx
                }
            }
        };
        if tx.try_send(Outgoing::Push(push)).is_err() {
            let dropped = self.stats.pushes_dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                warn!(peer = node, dropped, "push queue full: dropping room traffic to a slow node");
            }
        }
    }

    /// Resolves once every push queued for `node` so far is on its connection (at most 2 s):
    /// a request sent after it reaches the peer after them.
    async fn flush_pushes(&self, node: &str) {
        let tx = self.queues.lock().unwrap_or_else(|e| e.into_inner()).get(node).cloned();
        let Some(tx) = tx else { return };
        let (done, flushed) = tokio::sync::oneshot::channel();
        let flush = async {
            if tx.send(Outgoing::Flush(done)).await.is_ok() {
                let _ = flushed.await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), flush).await;
    }

    /// Drains one peer's queue in order over its RPC connection.
    async fn pusher(self: Arc<Self>, node: String, mut rx: mpsc::Receiver<Outgoing>) {
        loop {
            let item = tokio::select! {
                item = rx.recv() => item,
                _ = self.stop.cancelled() => None,
            };
            let Some(item) = item else { break };
            let push = match item {
                Outgoing::Push(push) => push,
                Outgoing::Flush(done) => {
                    let _ = done.send(());
                    continue;
                }
            };
            let addr = self.membership.members().get(&node).and_then(|m| m.rpc);
            let Some(addr) = addr else {
                // The node left: what was queued for it has nobody to go to.
                self.stats.pushes_dropped.fetch_add(1 + rx.len() as u64, Ordering::Relaxed);
                break;
            };
            let sent = match self.peers.connection(&node, addr).await {
                Ok(conn) => conn.push(push).await.is_ok(),
                Err(err) => {
                    debug!(peer = %node, error = %err, "push not delivered");
                    false
                }
            };
            let counter = if sent { &self.stats.pushes_sent } else { &self.stats.pushes_dropped };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        self.queues.lock().unwrap_or_else(|e| e.into_inner()).remove(&node);
    }

    /// Applies a peer's presence for a room; tells the namespace if it has local members and
    /// `notify` is set.
    fn apply_presence(&self, node: &str, nsp: &str, room: &str, labels: Vec<String>, notify: bool) {
        let id = (nsp.to_owned(), room.to_owned());
        let notify = {
            let mut t = self.tables();
            let entry = t.presence.entry(id.clone()).or_default();
            let before =
                if labels.is_empty() { entry.remove(node) } else { entry.insert(node.to_owned(), labels.clone()) };
            // News for the local members only if the names they see changed (not a parked
            // session coming or going).
            let visible = |l: &[String]| l.iter().filter(|l| *l != PARKED_LABEL).cloned().collect::<Vec<_>>();
            let changed = visible(before.as_deref().unwrap_or_default()) != visible(&labels);
            if entry.is_empty() {
                t.presence.remove(&id);
            }
            notify && changed && t.local.contains(&id)
        };
        if notify {
            if let Some(ns) = self.namespaces.get(nsp) {
                ns.presence_changed(room, &PresenceChange { cause: PresenceCause::Remote, left: Vec::new() });
            }
        }
    }

    /// Serves a peer's Subscribe: record its members, answer with ours.
    pub fn on_subscribe(&self, node: &str, nsp: &str, room: &str, labels: Vec<String>) -> Response {
        self.apply_presence(node, nsp, room, labels, true);
        let ours = self.namespaces.get(nsp).map(|ns| ns.local_labels(room)).unwrap_or_default();
        Response::Presence(ours)
    }

    /// Serves a peer's request for the history of a room this node owns.
    pub fn on_history(&self, nsp: &str, room: &str) -> Response {
        Response::History(self.namespaces.get(nsp).map(|ns| ns.local_history(room)).unwrap_or_default())
    }

    /// A request to `node`, over its RPC connection.
    async fn call(&self, node: &str, request: Request, timeout: Duration) -> Result<Response, crate::rpc::RpcError> {
        let addr = self.membership.members().get(node).and_then(|m| m.rpc);
        let addr = addr.ok_or_else(|| crate::rpc::RpcError::Connect {
            peer: node.to_owned(),
            reason: "not a live member".into(),
        })?;
        self.peers.call(node, addr, request, timeout).await
    }

    /// Serves a peer's hand-over of a parked session.
    pub fn on_park(&self, nsp: &str, state: ParkedWire) -> BoxFuture<'static, Response> {
        let Some(ns) = self.namespaces.get(nsp) else { return Box::pin(std::future::ready(Response::Parked(false))) };
        let parked = ns.park_here(parked_from_wire(state));
        Box::pin(async move { Response::Parked(parked.await) })
    }

    /// Serves a peer's question for a parked session.
    pub fn on_find_parked(&self, nsp: &str, pid: &str, offset: Option<&str>) -> Response {
        let found = self.namespaces.get(nsp).and_then(|ns| ns.recovery()).and_then(|r| r.peek(pid, offset).ok());
        Response::Found(found)
    }

    /// Gives a parked session to the peer that restores it. Missed broadcasts too large for
    /// one answer are a gap: the client is not recovered.
    pub fn on_take_parked(&self, nsp: &str, pid: &str, offset: Option<&str>) -> BoxFuture<'static, Response> {
        let Some(ns) = self.namespaces.get(nsp) else { return Box::pin(std::future::ready(Response::Taken(None))) };
        let taken = ns.take_complete(pid, offset);
        Box::pin(async move {
            let taken = taken.await;
            let taken = taken.filter(|packets| packets.iter().map(broadcast_size).sum::<usize>() <= HAND_OVER_BUDGET);
            Response::Taken(taken.map(|packets| packets.iter().map(broadcast_to_wire).collect()))
        })
    }

    /// Completes a session handed over here with the broadcasts its previous node buffered.
    /// A stale copy (`taken`: the client got the session from the sender) is dropped.
    pub fn on_park_tail(
        &self,
        nsp: &str,
        pid: &str,
        after: Option<&str>,
        packets: Vec<WirePacket>,
        taken: bool,
    ) -> Response {
        let Some(ns) = self.namespaces.get(nsp) else { return Response::Parked(false) };
        let Some(recovery) = ns.recovery() else { return Response::Parked(false) };
        recovery.prepend(pid, after, packets.into_iter().map(broadcast_from_wire).collect());
        if taken {
            let _ = ns.take_here(pid, None);
        }
        Response::Parked(true)
    }

    /// The ready members in rendezvous order of a pid: its keeper is the first of them that
    /// is not the session's owner, so it is one of the first two.
    fn pid_ranking(&self, pid: &str) -> Vec<String> {
        let members = self.membership.members();
        Placement::new(members.ready()).ranking(pid).into_iter().map(str::to_owned).collect()
    }

    /// Hands every session parked here to another keeper (this node is leaving).
    pub fn hand_over_all(&self) {
        for ns in self.namespaces.values() {
            for pid in ns.recovery().map(|r| r.parked()).unwrap_or_default() {
                self.hand_over(ns.name(), &pid);
            }
        }
    }

    /// Waits (at most `limit`) for the hand-overs under way.
    pub async fn settle(&self, limit: Duration) {
        self.hand_overs.close();
        if tokio::time::timeout(limit, self.hand_overs.wait()).await.is_err() {
            warn!(?limit, "hand-overs of parked sessions not finished; those sessions cannot be recovered");
        }
    }

    /// Moves a session parked here to its keeper: the keeper gets its state and subscribes
    /// to its rooms, then the broadcasts this node buffered meanwhile follow, and only then
    /// does this node let go (so no broadcast falls between the two).
    async fn move_parked(self: Arc<Self>, nsp: String, pid: String) {
        if !self.moving.lock().unwrap_or_else(|e| e.into_inner()).insert(pid.clone()) {
            return; // already on its way
        }
        self.clone().move_parked_once(&nsp, &pid).await;
        self.moving.lock().unwrap_or_else(|e| e.into_inner()).remove(&pid);
    }

    async fn move_parked_once(self: Arc<Self>, nsp: &str, pid: &str) {
        let Some(ns) = self.namespaces.get(nsp).cloned() else { return };
        let Some(recovery) = ns.recovery().cloned() else { return };
        let Some(keeper) = self.pid_ranking(pid).into_iter().find(|n| *n != self.node_id) else {
            return; // alone: the session stays here
        };
        // A session still waiting for its previous hand-over's tail moves once it has it.
        recovery.complete(pid, TAIL_WAIT).await;
        let Some(state) = recovery.snapshot(pid, HAND_OVER_BUDGET) else { return };
        let after = state.packets.last().map(|(offset, _)| offset.clone());
        let request = Request::Park { nsp: nsp.to_owned(), state: parked_to_wire(state) };
        match self.call(&keeper, request, self.rpc_timeout).await {
            Ok(Response::Parked(true)) => {
                // Broadcasts already on their way here before the keeper's subscription took
                // effect still arrive for a moment: keep taking them, then let go.
                tokio::time::sleep(HAND_OVER_GRACE).await;
                // Gone: a client took it from here meanwhile; the keeper's copy is stale.
                let (rest, taken) = match recovery.take_after(pid, after.as_deref()) {
                    Some((rest, emptied)) => {
                        ns.rooms_unparked(&emptied);
                        (rest, false)
                    }
                    None => (Vec::new(), true),
                };
                debug!(%pid, %keeper, later = rest.len(), taken, "parked session handed over");
                let packets = rest.iter().map(broadcast_to_wire).collect();
                let (nsp, pid) = (nsp.to_owned(), pid.to_owned());
                let tail = Request::ParkTail { nsp, pid, after, packets, taken };
                if let Err(err) = self.call(&keeper, tail, self.rpc_timeout).await {
                    warn!(%keeper, %err, "hand-over tail not delivered; the session may have a gap");
                }
            }
            other => warn!(%pid, %keeper, ?other, "parked session not handed over; it stays here"),
        }
    }

    /// The owner of a room among the ready members (this node while it knows no other).
    /// The nodes that keep a room's history: the first [`HISTORY_REPLICAS`] of the room's
    /// rendezvous ranking among the ready members (this node alone if none is ready).
    fn history_replicas(&self, nsp: &str, room: &str) -> Vec<String> {
        let replicas = room_replicas(&self.membership.members(), nsp, room, HISTORY_REPLICAS);
        if replicas.is_empty() {
            vec![self.node_id.clone()]
        } else {
            replicas
        }
    }

    /// Serves a peer's push.
    pub fn on_push(&self, push: Push) {
        match push {
            Push::Publish { nsp, room, offset, frames } => {
                self.stats.publishes_received.fetch_add(1, Ordering::Relaxed);
                if let Some(ns) = self.namespaces.get(&nsp) {
                    let frames: Vec<Frame> = frames.into_iter().map(frame_from_wire).collect();
                    ns.deliver_local(&room, offset.as_deref(), &frames);
                }
            }
            Push::Presence { node, nsp, room, labels } => self.apply_presence(&node, &nsp, &room, labels, true),
            Push::Record { nsp, room, entry } => {
                if let Some(ns) = self.namespaces.get(&nsp) {
                    ns.record_local(&room, entry);
                }
            }
        }
    }

    /// Keeps the tables in step with gossip: subscriptions of live nodes, and the members of
    /// nodes that left.
    async fn follow_membership(self: Arc<Self>) {
        let mut changes = self.membership.subscribe();
        loop {
            let members = changes.borrow_and_update().clone();
            self.membership_changed(&members);
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                _ = self.stop.cancelled() => return,
            }
        }
    }

    /// Applies a membership change in proportion to what changed: only nodes whose room set
    /// is a new one (`MemberInfo::rooms` is shared while a node's keys stay the same) are
    /// diffed into the subscriber table, presence is scanned only when a node left, and only
    /// subscriptions new in gossip (or still unconfirmed) are checked for a missed word.
    fn membership_changed(self: &Arc<Self>, members: &Members) {
        let mut lost: Vec<(RoomId, Vec<String>)> = Vec::new();
        let mut repair: Vec<(String, RoomId)> = Vec::new();
        {
            let mut t = self.tables();
            let t = &mut *t;
            let gone: Vec<String> = t.applied.keys().filter(|n| !members.nodes.contains_key(*n)).cloned().collect();
            for node in &gone {
                let rooms = t.applied.remove(node).unwrap_or_default();
                for id in rooms.iter() {
                    unsubscribe(&mut t.gossip, id, node);
                }
            }
            for m in members.nodes.values().filter(|m| m.node_id != self.node_id) {
                let before = t.applied.get(&m.node_id);
                if before.is_some_and(|b| Arc::ptr_eq(b, &m.rooms)) {
                    continue;
                }
                let before = before.cloned().unwrap_or_default();
                for id in before.difference(&m.rooms) {
                    unsubscribe(&mut t.gossip, id, &m.node_id);
                }
                for id in m.rooms.difference(&before) {
                    t.gossip.entry(id.clone()).or_default().insert(m.node_id.clone());
                    t.unconfirmed.insert((m.node_id.clone(), id.clone()));
                }
                t.applied.insert(m.node_id.clone(), m.rooms.clone());
            }
            let live: BTreeSet<String> = members.nodes.keys().cloned().collect();
            if live != t.live {
                for (id, nodes) in t.presence.iter_mut() {
                    let gone: Vec<String> = nodes.keys().filter(|n| !live.contains(*n)).cloned().collect();
                    let mut left = Vec::new();
                    for node in gone {
                        left.extend(nodes.remove(&node).unwrap_or_default());
                    }
                    if !left.is_empty() {
                        lost.push((id.clone(), left));
                    }
                }
                t.presence.retain(|_, nodes| !nodes.is_empty());
                t.live = live;
            }
            // A node subscribed by gossip whose members we never heard of, in a room we have
            // members in: a direct word was missed. Ask it; asked again at each change until
            // its answer (or its leaving) settles it.
            let (gossip, presence, local) = (&t.gossip, &t.presence, &t.local);
            t.unconfirmed.retain(|(node, id)| {
                let subscribed = gossip.get(id).is_some_and(|nodes| nodes.contains(node));
                let heard = presence.get(id).is_some_and(|p| p.contains_key(node));
                subscribed && !heard
            });
            repair.extend(t.unconfirmed.iter().filter(|(_, id)| local.contains(id)).cloned());
        }
        for ((nsp, room), left) in lost {
            debug!(%room, ?left, "members lost with their node");
            if let Some(ns) = self.namespaces.get(&nsp) {
                if ns.has_local_room(&room) {
                    ns.presence_changed(&room, &PresenceChange { cause: PresenceCause::NodeLost, left });
                }
            }
        }
        for (node, (nsp, room)) in repair {
            let labels = self.namespaces.get(&nsp).map(|ns| ns.local_labels(&room)).unwrap_or_default();
            let rooms = self.clone();
            tokio::spawn(
                async move {
                    rooms.subscribe_at(&node, &nsp, &room, labels, true).await;
                }
                .in_current_span(),
            );
        }
    }

    /// Tells `node` about our members of a room and records its members.
    /// `notify`: whether the answer is news for the local members; not when a join is asking
    /// (the joiner's node announces the room's members itself once every peer answered).
    async fn subscribe_at(&self, node: &str, nsp: &str, room: &str, labels: Vec<String>, notify: bool) {
        if self.membership.members().get(node).and_then(|m| m.rpc).is_none() {
            return;
        }
        let request = Request::Subscribe { node: self.node_id.clone(), nsp: nsp.into(), room: room.into(), labels };
        match self.call(node, request, SUBSCRIBE_TIMEOUT.min(self.rpc_timeout)).await {
            // An empty answer says nothing new: the peer had no members when it answered, and
            // its own first join (a Subscribe here) may already have overtaken this answer, so
            // applying it would drop that newer word and the pushes it asked for.
            Ok(Response::Presence(theirs)) if theirs.is_empty() => {}
            Ok(Response::Presence(theirs)) => self.apply_presence(node, nsp, room, theirs, notify),
            Ok(other) => warn!(peer = node, ?other, "unexpected answer to Subscribe"),
            Err(err) => warn!(peer = node, error = %err, "subscription not confirmed; gossip will repair"),
        }
    }
}

/// Keeps this node's `room:` gossip keys in line with its rooms with local members: one task,
/// so a quick join and leave can never leave their set and delete applied out of order; each
/// round costs in proportion to the rooms that changed. Ends with [`ClusterRooms::shutdown`].
async fn advertise_rooms(
    rooms: std::sync::Weak<ClusterRooms>,
    wake: Arc<tokio::sync::Notify>,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            _ = wake.notified() => {}
            _ = stop.cancelled() => return,
        }
        let Some(rooms) = rooms.upgrade() else { return };
        let changes: Vec<(String, Option<&'static str>)> = {
            let mut t = rooms.tables();
            let dirty = std::mem::take(&mut t.unadvertised);
            dirty.into_iter().map(|id| (room_key(&id.0, &id.1), t.local.contains(&id).then_some("1"))).collect()
        };
        rooms.membership.update(changes).await;
    }
}

/// Removes `node` from the room's gossip subscribers (and the room, once nobody is left).
fn unsubscribe(gossip: &mut HashMap<RoomId, BTreeSet<String>>, id: &RoomId, node: &str) {
    if let Some(nodes) = gossip.get_mut(id) {
        nodes.remove(node);
        if nodes.is_empty() {
            gossip.remove(id);
        }
    }
}

impl Adapter for ClusterRooms {
    fn room_changed(&self, nsp: &str, room: &str, labels: Vec<String>) -> BoxFuture<'static, ()> {
        let Some(this) = self.me.upgrade() else { return Box::pin(std::future::ready(())) };
        let id = (nsp.to_owned(), room.to_owned());
        let (first, last) = {
            let mut t = this.tables();
            let (first, last) =
                if labels.is_empty() { (false, t.local.remove(&id)) } else { (t.local.insert(id.clone()), false) };
            if first || last {
                t.unadvertised.insert(id.clone());
            }
            (first, last)
        };
        if first || last {
            this.advertise.notify_one();
        }
        if first {
            let peers: Vec<String> =
                this.membership.members().nodes.keys().filter(|n| **n != this.node_id).cloned().collect();
            let rooms = this.clone();
            let subscribed = async move {
                let (nsp, room) = &id;
                let asks = peers.iter().map(|node| rooms.subscribe_at(node, nsp, room, labels.clone(), false));
                futures_util::future::join_all(asks).await;
                rooms.tables().subscribing.remove(&id);
            }
            .in_current_span()
            .boxed()
            .shared();
            this.tables().subscribing.insert((nsp.to_owned(), room.to_owned()), subscribed.clone());
            // Driven here, so it completes even if the joiner stops waiting.
            tokio::spawn(subscribed.clone());
            return subscribed.boxed();
        }
        let push = Push::Presence { node: this.node_id.clone(), nsp: nsp.into(), room: room.into(), labels };
        // Everyone subscribed hears of a change; on the last leave, tell every live node so
        // none keeps pushing here until gossip catches up.
        let targets = if last {
            this.tables().live.iter().filter(|n| **n != this.node_id).cloned().collect()
        } else {
            this.subscribers(&(nsp.to_owned(), room.to_owned()))
        };
        for node in targets {
            this.push_to(&node, push.clone());
        }
        let pending = this.tables().subscribing.get(&(nsp.to_owned(), room.to_owned())).cloned();
        match pending {
            Some(pending) => pending.boxed(),
            None => Box::pin(std::future::ready(())),
        }
    }

    fn publish(&self, nsp: &str, room: &str, offset: Option<&str>, frames: &[Frame]) {
        let Some(this) = self.me.upgrade() else { return };
        let targets = this.subscribers(&(nsp.to_owned(), room.to_owned()));
        if targets.is_empty() {
            return;
        }
        let push = Push::Publish {
            nsp: nsp.into(),
            room: room.into(),
            offset: offset.map(str::to_owned),
            frames: frames.iter().map(frame_to_wire).collect(),
        };
        for node in targets {
            this.push_to(&node, push.clone());
        }
    }

    fn record(&self, nsp: &str, room: &str, entry: String) {
        let Some(this) = self.me.upgrade() else { return };
        for replica in this.history_replicas(nsp, room) {
            if replica == this.node_id {
                if let Some(ns) = this.namespaces.get(nsp) {
                    ns.record_local(room, entry.clone());
                }
            } else {
                this.push_to(&replica, Push::Record { nsp: nsp.into(), room: room.into(), entry: entry.clone() });
            }
        }
    }

    /// Asks every replica and keeps the longest answer: a replica that just became one (a node
    /// joined) or lost its copy (it restarted) has fewer entries than one that has held the
    /// room all along, and one replica down leaves the other's.
    fn history(&self, nsp: &str, room: &str) -> BoxFuture<'static, Vec<String>> {
        let Some(this) = self.me.upgrade() else { return Box::pin(std::future::ready(Vec::new())) };
        let replicas = this.history_replicas(nsp, room);
        let (nsp, room) = (nsp.to_owned(), room.to_owned());
        Box::pin(async move {
            let asks = replicas.into_iter().map(|replica| {
                let this = this.clone();
                let (nsp, room) = (nsp.clone(), room.clone());
                async move {
                    if replica == this.node_id {
                        return this.namespaces.get(&nsp).map(|ns| ns.local_history(&room)).unwrap_or_default();
                    }
                    let request = Request::History { nsp, room };
                    match this.call(&replica, request, SUBSCRIBE_TIMEOUT.min(this.rpc_timeout)).await {
                        Ok(Response::History(entries)) => entries,
                        Ok(other) => {
                            warn!(peer = replica, ?other, "unexpected answer to History");
                            Vec::new()
                        }
                        Err(err) => {
                            warn!(peer = replica, error = %err, "room history unavailable from this replica");
                            Vec::new()
                        }
                    }
                }
            });
            let answers = futures_util::future::join_all(asks).await;
            answers
                .into_iter()
                .fold(Vec::new(), |best, entries| if entries.len() > best.len() { entries } else { best })
        })
    }

    fn hand_over(&self, nsp: &str, pid: &str) {
        let Some(this) = self.me.upgrade() else { return };
        self.hand_overs.spawn(this.move_parked(nsp.to_owned(), pid.to_owned()).in_current_span());
    }

    fn find_parked(&self, nsp: &str, pid: &str, offset: Option<&str>) -> BoxFuture<'static, Option<FoundSession>> {
        let Some(this) = self.me.upgrade() else { return Box::pin(std::future::ready(None)) };
        let (nsp, pid, offset) = (nsp.to_owned(), pid.to_owned(), offset.map(str::to_owned));
        Box::pin(async move {
            // Here first (free), then the first three of the pid's ranking among the live
            // members: the keeper was the first ready one but the owner, and above it there can
            // only be the owner and a node that has stopped being ready (draining, or leaving
            // while it hands its parked sessions on).
            let mut nodes = vec![this.node_id.clone()];
            let members = this.membership.members();
            let live = Placement::new(members.nodes.keys().map(String::as_str));
            nodes.extend(live.ranking(&pid).into_iter().take(3).filter(|n| *n != this.node_id).map(str::to_owned));
            for node in nodes {
                let found = if node == this.node_id {
                    this.on_find_parked(&nsp, &pid, offset.as_deref())
                } else {
                    let request = Request::FindParked { nsp: nsp.clone(), pid: pid.clone(), offset: offset.clone() };
                    match this.call(&node, request, this.rpc_timeout).await {
                        Ok(answer) => answer,
                        Err(err) => {
                            debug!(peer = node, %err, "could not ask for a parked session");
                            continue;
                        }
                    }
                };
                if let Response::Found(Some((sid, rooms))) = found {
                    return Some(FoundSession { node, sid, rooms });
                }
            }
            None
        })
    }

    fn take_parked(
        &self,
        node: &str,
        nsp: &str,
        pid: &str,
        offset: Option<&str>,
    ) -> BoxFuture<'static, Option<Vec<Broadcast>>> {
        let Some(this) = self.me.upgrade() else { return Box::pin(std::future::ready(None)) };
        if node == this.node_id {
            return match this.namespaces.get(nsp) {
                Some(ns) => ns.take_complete(pid, offset),
                None => Box::pin(std::future::ready(None)),
            };
        }
        let node = node.to_owned();
        let request = Request::TakeParked { nsp: nsp.into(), pid: pid.into(), offset: offset.map(str::to_owned) };
        Box::pin(async move {
            // Broadcasts this node published before its socket joined went to the keeper, as
            // pushes: they must reach it before the take, or nobody would have them.
            this.flush_pushes(&node).await;
            match this.call(&node, request, this.rpc_timeout).await {
                Ok(Response::Taken(packets)) => packets.map(|p| p.into_iter().map(broadcast_from_wire).collect()),
                other => {
                    warn!(peer = node, ?other, "parked session not taken");
                    None
                }
            }
        })
    }

    fn remote_labels(&self, nsp: &str, room: &str) -> Vec<String> {
        let t = self.tables();
        t.presence
            .get(&(nsp.to_owned(), room.to_owned()))
            .map(|nodes| {
                nodes.iter().filter(|(n, _)| t.live.contains(*n)).flat_map(|(_, l)| l.iter().cloned()).collect()
            })
            .unwrap_or_default()
    }
}

fn parked_to_wire(state: ParkedState) -> ParkedWire {
    let packets = state.packets.iter().map(broadcast_to_wire).collect();
    ParkedWire { pid: state.pid, sid: state.sid, rooms: state.rooms, packets }
}

fn parked_from_wire(wire: ParkedWire) -> ParkedState {
    let packets = wire.packets.into_iter().map(broadcast_from_wire).collect();
    ParkedState { pid: wire.pid, sid: wire.sid, rooms: wire.rooms, packets }
}

fn broadcast_to_wire((offset, frames): &Broadcast) -> WirePacket {
    (offset.clone(), frames.iter().map(frame_to_wire).collect())
}

fn broadcast_from_wire((offset, frames): WirePacket) -> Broadcast {
    (offset, frames.into_iter().map(frame_from_wire).collect())
}

fn frame_to_wire(frame: &Frame) -> WsFrame {
    match frame {
        Frame::Text(t) => WsFrame::Text(t.as_str().to_owned()),
        Frame::Binary(b) => WsFrame::Binary(b.clone()),
    }
}

fn frame_from_wire(frame: WsFrame) -> Frame {
    match frame {
        WsFrame::Text(t) => Frame::Text(t.into()),
        WsFrame::Binary(b) => Frame::Binary(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::membership::MemberInfo;

    fn member(id: &str, ready: bool) -> MemberInfo {
        let addr = "127.0.0.1:1".parse().unwrap();
        MemberInfo {
            node_id: id.into(),
            generation: 1,
            gossip: addr,
            http: Some(addr),
            rpc: Some(addr),
            ready,
            heartbeat: 0,
            rooms: Default::default(),
            version: 0,
        }
    }

    #[test]
    fn a_room_is_owned_by_a_ready_member() {
        let mut members = Members::default();
        for (id, ready) in [("node1", true), ("node2", true), ("node3", false)] {
            members.nodes.insert(id.into(), member(id, ready));
        }
        let ready = Placement::new(["node1", "node2"]);
        for room in ["lobby", "café", "a\nb", ""] {
            let owner = room_owner(&members, "/chat", room);
            assert_eq!(owner.as_deref(), ready.owner(&room_key("/chat", room)), "{room}");
        }
        assert_eq!(room_owner(&Members::default(), "/chat", "lobby"), None);
    }
}
