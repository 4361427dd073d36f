//! Rooms across the cluster: the driver of the rooms core ([`super::core`]).
//!
//! The core decides (who subscribes to a room, whom to tell of a change, when a join is
//! effective); this driver does what it decides: it feeds it local changes, peers' words and
//! membership snapshots, and carries out its effects over the RPC peers and gossip. Every
//! node advertises in gossip the rooms it has local members in (`room:` keys, written by one
//! advertiser task). A room's first local member is announced to every peer directly (one
//! round trip each) before the joiner is acked. A broadcast is encoded once and pushed once
//! to each subscribed node.
//!
//! Pushes and asks go through one bounded queue per peer, drained in order onto its
//! connection, so a node's words about a room reach each peer in the order it said them, and
//! a slow or dead node never blocks a publisher: what does not fit is dropped, counted and
//! logged (a dropped ask counts as unanswered, and the core asks again).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn, Instrument};

use super::core::{wire_labels, Effect, RoomId, RoomsCore, Version};
use super::keeps::Keeps;
use super::membership::{room_key, Members, Membership};
use super::placement::Placement;
use crate::engineio::Frame;
use crate::rpc::connection::{OnWritten, Written};
use crate::rpc::peers::Peers;
use crate::rpc::{Push, RecordWire, Request, Response, RoomsWire, WirePacket, WsFrame};
use crate::socketio::recovery::{broadcast_size, Broadcast, Frontier, Holder, KeepRequest, RoomsUpdate, Stamp};
use crate::socketio::{Adapter, Emitter, FoundSession, Labels, Namespace, OnSent};

/// Pushes queued per peer before new ones are dropped.
const PEER_QUEUE: usize = 8192;
/// Bytes of broadcasts a session's record carries from node to node at most (an RPC frame
/// holds 4 MiB): a hand-over keeps the latest that fit; a restore that needs more is a gap.
const HAND_OVER_BUDGET: usize = 2 * 1024 * 1024;
/// How long a barrier waits for each peer's pushes (see [`ClusterRooms::barrier_now`]); a
/// peer that is leaving may never send them. A barrier that gives up lets a restore go on
/// without what the peer had queued, which is then missed or replayed out of order, so this
/// outlasts a push queue that is slow under load (500 ms, before, is suspected, not proven,
/// in misses seen with three rolling restarts of 40 users at once on two cores; see
/// RELIABILITY.md). It also bounds how long a restore waits on a peer that answers and then
/// stalls.
const BARRIER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long at most a keeper handed a parked record waits for the leaving keeper's seed
/// before a take goes on without it. A backstop: that keeper sends it once all its records are
/// adopted (each at most [`JOIN_WAIT_MAX`]) and its barrier has passed (at most
/// [`BARRIER_TIMEOUT`]), and the wait ends too when it leaves the ring.
const SEED_WAIT: Duration = Duration::from_secs(15);
/// How long a joining node waits for each peer to confirm a subscription.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(2);
/// A failed `Subscribe` is made again after this (and again while it fails).
const REASK_AFTER: Duration = Duration::from_millis(200);
/// A first join waits at most this long for every live node to confirm it (see
/// `RoomsCore::answered`): past it, availability is put before a late subscription's gap.
const JOIN_WAIT_MAX: Duration = Duration::from_secs(10);

/// A peer's two queues: room traffic (broadcasts, presence, subscriptions), and session
/// records (their changes and releases, in order among themselves), so that a socket joining
/// thousands of rooms at once does not hold up the rooms' traffic behind its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    Rooms,
    Records,
}

impl Outgoing {
    fn lane(&self) -> Lane {
        match self {
            Outgoing::Call(..) | Outgoing::Push(Push::Release { .. } | Push::Seed { .. }, _) => Lane::Records,
            _ => Lane::Rooms,
        }
    }
}

/// What a push's connection tells (see [`Written`]): a history record it could not write is
/// held here ([`ClusterRooms::undelivered`]); the broadcast's [`OnSent`] is let go either way.
struct PushOutcome {
    /// A copy of the history record, and where to hold it; only for records (a broadcast's
    /// push takes no count of the shared rooms driver).
    record: Option<(Push, Arc<ClusterRooms>)>,
    sent: Option<Arc<OnSent>>,
}

impl OnWritten for PushOutcome {
    fn written(self: Box<Self>) {}

    fn lost(self: Box<Self>) {
        let PushOutcome { record, sent } = *self;
        if let Some((record, rooms)) = record {
            rooms.undelivered(Outgoing::Push(record, sent));
        }
    }
}

/// What a peer's queue carries, in order: pushes (a `Push::Barrier` among them says the ones
/// before it have arrived) and asks (requests whose answers go back to the core).
enum Outgoing {
    /// A push, and what to let go once it is written to the peer's connection (or never
    /// will be).
    Push(Push, Option<Arc<OnSent>>),
    Ask {
        room: RoomId,
        labels: Labels,
        version: Version,
        notify: bool,
    },
    /// A request that must reach the peer in order with the pushes (a session record's
    /// changes), and where its answer goes.
    Call(Request, oneshot::Sender<Option<Response>>),
}

/// The node a room is placed on: the rendezvous winner of the room's gossip key among the
/// ready members; `inspect --room` shows it. It is the first of the room's history replicas
/// (`cluster::history`).
pub fn room_owner(members: &Members, nsp: &str, room: &str) -> Option<String> {
    Placement::new(members.ready()).owner(&room_key(nsp, room)).map(str::to_owned)
}

/// Counters of room traffic, for metrics.
#[derive(Debug, Default)]
pub struct RoomStats {
    pub pushes_sent: AtomicU64,
    pub pushes_dropped: AtomicU64,
    pub publishes_received: AtomicU64,
}

/// The core and who waits on it, under one lock: a joiner is registered in the same step that
/// tells it to wait, so the release cannot slip between the two.
struct State {
    core: RoomsCore,
    /// Joiners waiting for their room's first join to be effective.
    waiters: HashMap<RoomId, Vec<oneshot::Sender<()>>>,
}

/// What is left of a core step's effects once the lock is released.
struct AfterLock {
    rest: Vec<Effect>,
    /// Asks whose peer's queue was full: (peer, room, version, notify).
    unsent: Vec<(String, RoomId, Version, bool)>,
}

/// What becomes of a history record that could not be sent: (namespace, room, entry).
pub type UndeliveredRecords = Box<dyn Fn(String, String, crate::history::Entry) + Send + Sync>;

pub struct ClusterRooms {
    /// This adapter itself, for the tasks it spawns from `&self` trait methods.
    me: std::sync::Weak<ClusterRooms>,
    node_id: String,
    membership: Arc<Membership>,
    peers: Arc<Peers>,
    /// The namespaces, reached only as [`Emitter`]s. Weak: they hold this adapter weakly too,
    /// and whoever runs the node owns both.
    namespaces: HashMap<String, std::sync::Weak<dyn Emitter>>,
    /// A std lock: held for the core's steps only, never across an await.
    state: Mutex<State>,
    /// Per-peer queues, two per peer (indexed by [`Lane`]), each drained by its own task.
    /// Looked up by the peer's id as a `&str`: a push builds no key. Locked after `state`,
    /// never before.
    queues: Mutex<HashMap<String, [Option<mpsc::Sender<Outgoing>>; 2]>>,
    /// The per-peer drains and the waits for asks' answers: they end with the node.
    tasks: tokio_util::task::TaskTracker,
    rpc_timeout: Duration,
    pub stats: RoomStats,
    /// Records on their way to keepers (sent even if nobody waits for the answer); a leaving
    /// node waits for them.
    hand_overs: tokio_util::task::TaskTracker,
    /// Each member's generation and readiness at the last membership change: a keeper that is
    /// gone or came back as a new process has lost its records, and one that stopped being
    /// ready is leaving.
    generations: Mutex<HashMap<String, (u64, bool)>>,
    /// Records of this node's sessions sent to a keeper and not confirmed kept there yet, by
    /// (namespace, pid): in flight, or failed and to be sent again by their sockets. Until
    /// one is confirmed, a crash of this node loses that session (`/metrics` counts them).
    unconfirmed: Mutex<Keeps>,
    /// Set while a re-ask of failed asks is scheduled (see [`ClusterRooms::reask_soon`]).
    reask_pending: AtomicBool,
    /// Wakes the sweeper that sends failed records again (see [`Adapter::keep_failed`]).
    keep_failed: Arc<tokio::sync::Notify>,
    /// Barriers waiting for a peer's `Push::Barrier`, by token.
    barriers: Mutex<HashMap<u64, oneshot::Sender<()>>>,
    /// Takes a history record (`Push::Record`) this node could not send to its replica (set
    /// by `cluster::history`), before the sender's ack may go out.
    undelivered_records: std::sync::OnceLock<UndeliveredRecords>,
    next_barrier: AtomicU64,
    /// Wakes the advertiser when the core has gossip keys due.
    advertise: Arc<tokio::sync::Notify>,
    /// Cuts the advertiser's pause short: a member came or restarted (see [`ADVERTISE_EVERY`]).
    advertise_now: Arc<tokio::sync::Notify>,
    /// Wakes the presence pusher: local changes await their `Presence` pushes.
    presence_due: Arc<tokio::sync::Notify>,
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
            node_id: node_id.clone(),
            membership,
            peers,
            namespaces: namespaces
                .iter()
                .map(|ns| (ns.name().to_owned(), Arc::downgrade(ns) as std::sync::Weak<dyn Emitter>))
                .collect(),
            // The presence versions' generation: the start time, so a restarted node's word is
            // newer than its previous life's.
            state: Mutex::new(State {
                core: RoomsCore::new(node_id.clone(), crate::clock::unix_ms()),
                waiters: HashMap::new(),
            }),
            queues: Mutex::new(HashMap::new()),
            tasks: tokio_util::task::TaskTracker::new(),
            rpc_timeout,
            stats: RoomStats::default(),
            hand_overs: tokio_util::task::TaskTracker::new(),
            generations: Mutex::new(HashMap::new()),
            unconfirmed: Mutex::new(Keeps::default()),
            keep_failed: Arc::default(),
            reask_pending: AtomicBool::new(false),
            barriers: Mutex::new(HashMap::new()),
            undelivered_records: std::sync::OnceLock::new(),
            next_barrier: AtomicU64::new(0),
            advertise: Arc::default(),
            advertise_now: Arc::default(),
            presence_due: Arc::default(),
            stop: tokio_util::sync::CancellationToken::new(),
        });
        for ns in &namespaces {
            let adapter: std::sync::Weak<dyn Adapter> = Arc::downgrade(&rooms) as _;
            ns.set_adapter(adapter);
            // A restarted node's publishers are its earlier lives': frontiers stay bounded.
            if let Some(keeper) = ns.keeper() {
                keeper.set_lineage(&node_id, ns.name());
            }
        }
        rooms.tasks.spawn(rooms.clone().follow_membership().in_current_span());
        rooms.tasks.spawn(
            advertise_rooms(
                Arc::downgrade(&rooms),
                rooms.advertise.clone(),
                rooms.advertise_now.clone(),
                rooms.stop.clone(),
            )
            .in_current_span(),
        );
        rooms.tasks.spawn(
            push_presence(Arc::downgrade(&rooms), rooms.presence_due.clone(), rooms.stop.clone()).in_current_span(),
        );
        rooms
    }

    /// Stops the long-lived tasks and waits until every task has ended; what is still queued
    /// for peers is dropped (a leaving node has already flushed its hand-overs, see
    /// [`ClusterRooms::settle`]). Called once the RPC peers are closed, so the tasks that
    /// wait for an answer end at once.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.hand_overs.close();
        self.queues.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.hand_overs.wait().await;
        self.tasks.wait().await;
    }

    /// A namespace, while it exists.
    fn namespace(&self, nsp: &str) -> Option<Arc<dyn Emitter>> {
        self.namespaces.get(nsp).and_then(std::sync::Weak::upgrade)
    }

    /// Runs one step of the core and carries out its effects: pushes and asks are queued
    /// under the lock (so each peer gets them in the order the core said them) and joiners
    /// released; the rest (news for the namespaces, which may call back here; waking the
    /// advertiser) after it.
    fn step<R>(self: &Arc<Self>, f: impl FnOnce(&mut State, &mut Vec<Effect>) -> R) -> R {
        let mut effects = Vec::new();
        let (result, mut after) = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let result = f(&mut state, &mut effects);
            (result, self.carry_out_locked(&mut state, effects))
        };
        // Asks that found their peer's queue full count as unanswered: the core asks again.
        while !after.unsent.is_empty() {
            self.carry_out(std::mem::take(&mut after.rest));
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let mut effects = Vec::new();
            for (to, room, version, notify) in std::mem::take(&mut after.unsent) {
                state.core.answered(&to, &room, version, None, notify, &mut effects);
            }
            after = self.carry_out_locked(&mut state, effects);
        }
        self.carry_out(after.rest);
        result
    }

    /// The effects carried out under the state lock; returns the others.
    fn carry_out_locked(self: &Arc<Self>, state: &mut State, effects: Vec<Effect>) -> AfterLock {
        let mut after = AfterLock { rest: Vec::new(), unsent: Vec::new() };
        for effect in effects {
            match effect {
                Effect::Presence { to, room: (nsp, room), labels, version } => {
                    let labels = wire_labels(&labels);
                    let push = Push::Presence { node: self.node_id.clone(), nsp, room, labels, version };
                    self.push_to(&to, Outgoing::Push(push, None));
                }
                Effect::Ask { to, room, labels, version, notify } => {
                    if !self.push_to(&to, Outgoing::Ask { room: room.clone(), labels, version, notify }) {
                        after.unsent.push((to, room, version, notify));
                    }
                }
                Effect::Joined { room } => {
                    for waiter in state.waiters.remove(&room).unwrap_or_default() {
                        let _ = waiter.send(());
                    }
                }
                other => after.rest.push(other),
            }
        }
        after
    }

    /// The effects carried out after the state lock is released.
    fn carry_out(&self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Notify { room: (nsp, room), change } => {
                    if let Some(ns) = self.namespace(&nsp) {
                        ns.presence_changed(&room, &change);
                    }
                }
                Effect::Advertise => self.advertise.notify_one(),
                Effect::PresenceDue => self.presence_due.notify_one(),
                other => debug_assert!(false, "effect {other:?} is carried out under the lock"),
            }
        }
    }

    fn keeps(&self) -> std::sync::MutexGuard<'_, Keeps> {
        self.unconfirmed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks again, in a moment, the peers whose ask failed (one pending re-ask at a time;
    /// one that fails again schedules the next).
    fn reask_soon(self: &Arc<Self>) {
        if self.reask_pending.swap(true, Ordering::AcqRel) {
            return;
        }
        let rooms = self.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(REASK_AFTER) => {}
                _ = rooms.stop.cancelled() => return,
            }
            rooms.reask_pending.store(false, Ordering::Release);
            rooms.step(|s, out| s.core.reask(out));
        });
    }

    /// Notes a keeper's answer to a record's `version`; a failure wakes the sweeper.
    fn keep_answered(&self, nsp: String, pid: String, version: u64, kept: bool) {
        self.keeps().answered(nsp, pid, version, kept);
        if !kept {
            self.keep_failed.notify_one();
        }
    }

    /// Records of this node's sessions not confirmed kept by their keeper (see
    /// [`ClusterRooms::unconfirmed`]).
    pub fn unconfirmed_records(&self) -> usize {
        self.keeps().count()
    }

    /// Queues a push or an ask for `node` without waiting; false if its queue is full.
    fn push_to(self: &Arc<Self>, node: &str, item: Outgoing) -> bool {
        let lane = item.lane();
        let queued = {
            let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
            if !queues.contains_key(node) {
                queues.insert(node.to_owned(), Default::default());
            }
            let slot = &mut queues.get_mut(node).expect("inserted above")[lane as usize];
            let tx = match slot {
                Some(tx) if !tx.is_closed() => tx,
                _ => {
                    let (tx, rx) = mpsc::channel(PEER_QUEUE);
                    self.tasks.spawn(self.clone().pusher(node.to_owned(), lane, rx).in_current_span());
                    slot.insert(tx)
                }
            };
            tx.try_send(item)
        };
        if let Err(full) = queued {
            let dropped = self.stats.pushes_dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                warn!(peer = node, dropped, "push queue full: dropping room traffic to a slow node");
            }
            // The node is in the ring and its connection alive, but too far behind: its
            // members there, and the sessions kept there, will not get this broadcast, so its
            // sender is not told it was sent. (A copy lost with a connection is not counted so:
            // its node crashed or left, and its clients recover elsewhere; see RELIABILITY.md.)
            if let Some(sent) = self.undelivered(full.into_inner()) {
                if self.membership.members().get(node).is_some() {
                    sent.missed();
                }
            }
            return false;
        }
        true
    }

    /// What will not reach its peer (its queue full, its connection lost, the node gone): a
    /// room-history record is held here (see [`ClusterRooms::on_undelivered_records`]) before
    /// its sender's ack, which waits for every copy, can go; the rest is dropped. Returns the
    /// [`OnSent`] of what was dropped, if any.
    fn undelivered(&self, item: Outgoing) -> Option<Arc<OnSent>> {
        let Outgoing::Push(push, sent) = item else { return None };
        if let Push::Record { nsp, room, entry } = push {
            if let Some(keep) = self.undelivered_records.get() {
                keep(nsp, room, entry);
                return None;
            }
        }
        sent
    }

    /// The connection to `node` at `addr` (`None`: it is not a live member).
    async fn connect(
        &self,
        node: &str,
        addr: Option<crate::rpc::peers::PeerAt>,
    ) -> Result<Arc<crate::rpc::connection::Connection>, String> {
        let addr = addr.ok_or_else(|| "not a live member".to_owned())?;
        self.peers.connection(node, addr).await.map_err(|err| err.to_string())
    }

    /// Drains one peer's queue in order over its RPC connection.
    async fn pusher(self: Arc<Self>, node: String, lane: Lane, mut rx: mpsc::Receiver<Outgoing>) {
        loop {
            let item = tokio::select! {
                item = rx.recv() => item,
                _ = self.stop.cancelled() => None,
            };
            let Some(item) = item else { break };
            let addr = self.membership.members().get(&node).and_then(|m| m.dial());
            match item {
                Outgoing::Push(push, sent) => {
                    let sent = match &self.connect(&node, addr).await {
                        Ok(conn) => {
                            // Told by the connection if the push never reaches the socket.
                            let record = matches!(push, Push::Record { .. }).then(|| (push.clone(), self.clone()));
                            let outcome = (record.is_some() || sent.is_some())
                                .then(|| Written::new(PushOutcome { record, sent }));
                            let pushed = conn.push_then(push, outcome).await;
                            if let Err(err) = &pushed {
                                debug!(peer = %node, error = %err, "push not delivered");
                            }
                            pushed.is_ok()
                        }
                        Err(err) => {
                            debug!(peer = %node, error = %err, "push not delivered");
                            self.undelivered(Outgoing::Push(push, sent));
                            false
                        }
                    };
                    let counter = if sent { &self.stats.pushes_sent } else { &self.stats.pushes_dropped };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Outgoing::Call(request, answer) => {
                    // A record that does not reach its keeper is sent again, whole, by the
                    // namespace's sweeper (the keeper may have missed a change).
                    let keep_of = match &request {
                        Request::Keep { nsp, record, .. } => Some((nsp.clone(), record.pid.clone(), record.version)),
                        _ => None,
                    };
                    let sent = match &self.connect(&node, addr).await {
                        Ok(conn) => conn.send_request(request).await.map_err(|err| err.to_string()),
                        Err(err) => Err(err.clone()),
                    };
                    let limit = self.rpc_timeout;
                    // The answer is awaited aside, so the queue goes on meanwhile.
                    let rooms = self.clone();
                    let peer = node.clone();
                    self.tasks.spawn(async move {
                        let response = match sent {
                            Ok(pending) => {
                                tokio::time::timeout(limit, pending.answer()).await.ok().and_then(Result::ok)
                            }
                            Err(_) => None,
                        };
                        if let Some((nsp, pid, version)) = keep_of {
                            let kept = response == Some(Response::Kept(true));
                            if !kept {
                                debug!(%peer, ?response, %pid, "session record not kept; it will be sent again");
                            }
                            rooms.keep_answered(nsp, pid, version, kept);
                        }
                        let _ = answer.send(response);
                    });
                }
                Outgoing::Ask { room, labels, version, notify } => {
                    let (nsp, name) = room.clone();
                    let labels = wire_labels(&labels);
                    let request = Request::Subscribe { node: self.node_id.clone(), nsp, room: name, labels, version };
                    let sent = match &self.connect(&node, addr).await {
                        Ok(conn) => conn.send_request(request).await.map_err(|err| err.to_string()),
                        Err(err) => Err(err.clone()),
                    };
                    let rooms = self.clone();
                    let node = node.clone();
                    let limit = SUBSCRIBE_TIMEOUT.min(self.rpc_timeout);
                    // The answer is awaited aside, so the queue goes on meanwhile.
                    self.tasks.spawn(
                        async move {
                            let answer = match sent {
                                Ok(pending) => match tokio::time::timeout(limit, pending.answer()).await {
                                    Ok(Ok(Response::Members { version, labels })) => Some((version, labels)),
                                    Ok(Ok(other)) => {
                                        warn!(peer = node, ?other, "unexpected answer to Subscribe");
                                        None
                                    }
                                    Ok(Err(err)) => {
                                        warn!(peer = node, error = %err, "subscription not confirmed; asking again");
                                        None
                                    }
                                    Err(_) => {
                                        warn!(peer = node, ?limit, "subscription not confirmed in time; asking again");
                                        None
                                    }
                                },
                                Err(err) => {
                                    debug!(peer = node, error = %err, "subscription not sent; asking again");
                                    None
                                }
                            };
                            let failed = answer.is_none();
                            rooms.step(|s, out| s.core.answered(&node, &room, version, answer, notify, out));
                            if failed {
                                rooms.reask_soon();
                            }
                        }
                        .in_current_span(),
                    );
                }
            }
            if addr.is_none() {
                break; // the node left
            }
        }
        {
            let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(slot) = queues.get_mut(&node) {
                slot[lane as usize] = None;
                if slot.iter().all(Option::is_none) {
                    queues.remove(&node);
                }
            }
        }
        // What is still queued has nobody to go to (the node left, or this one stops); what
        // comes next for the node goes to a new queue.
        rx.close();
        while let Ok(item) = rx.try_recv() {
            self.stats.pushes_dropped.fetch_add(1, Ordering::Relaxed);
            self.undelivered(item);
        }
    }

    /// Serves a peer's Subscribe: record its members, answer with ours.
    pub fn on_subscribe(
        self: &Arc<Self>,
        node: &str,
        nsp: &str,
        room: &str,
        labels: Vec<String>,
        version: Version,
    ) -> Response {
        let room = (nsp.to_owned(), room.to_owned());
        let (version, labels) = self.step(|s, out| s.core.on_subscribe(node, &room, labels, version, out));
        Response::Members { version, labels: wire_labels(&labels) }
    }

    /// A request to `node`, over its RPC connection.
    pub(crate) async fn call(
        &self,
        node: &str,
        request: Request,
        timeout: Duration,
    ) -> Result<Response, crate::rpc::RpcError> {
        let addr = self.membership.members().get(node).and_then(|m| m.dial());
        let addr = addr.ok_or_else(|| crate::rpc::RpcError::Connect {
            peer: node.to_owned(),
            reason: "not a live member".into(),
        })?;
        self.peers.call(node, addr, request, timeout).await
    }

    /// A peer as the holder of its sessions: its id, proved by its channel, and its
    /// generation now. `None` if it is no member.
    fn holder_of(&self, peer: &str) -> Option<Holder> {
        let members = self.membership.members();
        members.get(peer).map(|m| Holder { node: peer.into(), generation: m.generation })
    }

    /// Serves a peer's record of one of its sessions (`adopt`: a parked one, handed on by a
    /// leaving keeper): kept once this node is subscribed to its rooms.
    pub fn on_keep(
        &self,
        peer: &str,
        nsp: &str,
        record: RecordWire,
        seed: Vec<WirePacket>,
        adopt: bool,
    ) -> BoxFuture<'static, Response> {
        let (Some(ns), Some(holder)) = (self.namespace(nsp), self.holder_of(peer)) else {
            return Box::pin(std::future::ready(Response::Kept(false)));
        };
        let rooms = match record.rooms {
            RoomsWire::All(all) => RoomsUpdate::All(all),
            RoomsWire::Join(room) => RoomsUpdate::Join(room),
            RoomsWire::Leave(room) => RoomsUpdate::Leave(room),
        };
        let req = KeepRequest { pid: record.pid, sid: record.sid, rooms, version: record.version };
        let pid = req.pid.clone();
        let kept = ns.keep(req, holder.clone(), seed.into_iter().map(broadcast_from_wire).collect());
        // Owed from now on, while the subscriptions are made: a take may come meanwhile (a
        // `find` parks the record once the leaving keeper says it no longer holds it).
        let owe = move |ns: &Arc<dyn Emitter>, pid: &str, holder: &Holder| {
            if let Some(keeper) = ns.keeper().filter(|_| adopt) {
                keeper.expect_seed(pid, holder, SEED_WAIT);
            }
        };
        owe(&ns, &pid, &holder);
        Box::pin(async move {
            let kept = kept.await;
            if kept && adopt {
                ns.release(&pid, &holder, 0, true);
                owe(&ns, &pid, &holder); // the time counts from the answer
            }
            Response::Kept(kept)
        })
    }

    /// Serves a peer's question for a parked session.
    pub fn on_find_parked(&self, nsp: &str, pid: &str) -> BoxFuture<'static, Response> {
        let Some(ns) = self.namespace(nsp) else { return Box::pin(std::future::ready(Response::Found(None))) };
        let found = ns.find(pid);
        Box::pin(async move { Response::Found(found.await) })
    }

    /// Serves a keeper's question: does this node still hold the session?
    pub fn on_holds(&self, nsp: &str, pid: &str, sid: &str) -> Response {
        Response::Kept(self.namespace(nsp).is_some_and(|ns| ns.holds(pid, sid)))
    }

    /// Gives a parked session to the peer that restores it, once every broadcast published
    /// before that peer's joins took effect has arrived here (a barrier), and the seed a
    /// handed-over record is owed (see [`Emitter::take`]). Missed broadcasts too large for one
    /// answer are a gap: the client is not recovered.
    pub fn on_take_parked(self: &Arc<Self>, nsp: &str, pid: &str, offset: &str) -> BoxFuture<'static, Response> {
        let (Some(ns), Some(frontier)) = (self.namespace(nsp), Frontier::parse(offset)) else {
            return Box::pin(std::future::ready(Response::Taken(None)));
        };
        let taken = ns.take(pid, &frontier);
        Box::pin(async move {
            let taken = taken.await;
            let taken = taken.filter(|packets| packets.iter().map(broadcast_size).sum::<usize>() <= HAND_OVER_BUDGET);
            Response::Taken(taken.map(|packets| packets.iter().map(broadcast_to_wire).collect()))
        })
    }

    /// Serves a peer's barrier: its token goes behind every push queued for it so far.
    pub fn on_barrier(self: &Arc<Self>, peer: &str, token: u64) -> Response {
        // Stopping, or a peer this node cannot address yet (it just started): nothing queued
        // for it will be pushed, so there is nothing to wait for.
        if self.stop.is_cancelled() || self.membership.members().get(peer).and_then(|m| m.rpc).is_none() {
            return Response::Kept(false);
        }
        Response::Kept(self.push_to(peer, Outgoing::Push(Push::Barrier { token }, None)))
    }

    /// Serves a starting peer's question: does this node know it in the life it is in (see
    /// `node::be_known_by_the_ring`)?
    pub fn on_knows(&self, peer: &str, generation: u64) -> Response {
        let members = self.membership.members();
        Response::Kept(members.get(peer).is_some_and(|m| m.generation == generation && m.rpc.is_some()))
    }

    /// The live members but this node.
    fn other_members(&self) -> Vec<String> {
        self.membership.members().nodes.keys().filter(|n| **n != self.node_id).cloned().collect()
    }

    /// Resolves once every push each live peer had queued for this node when asked has
    /// arrived (each peer at most [`BARRIER_TIMEOUT`]).
    fn barrier_now(self: &Arc<Self>) -> BoxFuture<'static, ()> {
        let waits: Vec<_> = self
            .other_members()
            .into_iter()
            .map(|node| {
                let token = self.next_barrier.fetch_add(1, Ordering::Relaxed);
                let (tx, rx) = oneshot::channel();
                self.barriers.lock().unwrap_or_else(|e| e.into_inner()).insert(token, tx);
                let this = self.clone();
                async move {
                    let asked = this.call(&node, Request::Barrier { token }, this.rpc_timeout).await;
                    if matches!(asked, Ok(Response::Kept(true)))
                        && tokio::time::timeout(BARRIER_TIMEOUT, rx).await.is_err()
                    {
                        warn!(
                            peer = node,
                            token,
                            "barrier timed out: a restore goes on without what the peer had queued for this node"
                        );
                    }
                    this.barriers.lock().unwrap_or_else(|e| e.into_inner()).remove(&token);
                }
            })
            .collect();
        Box::pin(async move {
            futures_util::future::join_all(waits).await;
        })
    }

    /// The ready members in rendezvous order of a pid.
    fn pid_ranking(&self, pid: &str) -> Vec<String> {
        let members = self.membership.members();
        Placement::new(members.ready()).ranking(pid).into_iter().map(str::to_owned).collect()
    }

    /// Hands every parked record kept here, with what its rooms logged, to another keeper
    /// (this node is leaving). Live records stay: their holders choose new keepers when this
    /// node leaves.
    ///
    /// Each new keeper answers `Adopt` once it is subscribed to the record's rooms; what was
    /// published before that took effect came here, not there, after the snapshot it got. So,
    /// once the records are adopted, one barrier lets all of that arrive, and each new keeper
    /// gets what this node logged since (as the record's seed; it drops what it has).
    pub fn hand_over_all(&self) {
        let Some(this) = self.me.upgrade() else { return };
        for ns in self.namespaces.values().filter_map(std::sync::Weak::upgrade) {
            let Some(keeper) = ns.keeper() else { continue };
            let parked = keeper.parked(HAND_OVER_BUDGET);
            if parked.is_empty() {
                continue;
            }
            let this = this.clone();
            self.hand_overs.spawn(
                async move {
                    let adopts = parked.into_iter().map(|(req, seed)| this.adopt_elsewhere(ns.name(), req, seed));
                    let adopted: Vec<_> = futures_util::future::join_all(adopts).await.into_iter().flatten().collect();
                    if adopted.is_empty() {
                        return;
                    }
                    this.barrier_now().await;
                    let Some(keeper) = ns.keeper() else { return };
                    let mut written = Vec::new();
                    for (pid, to, sent) in adopted {
                        let later: Vec<Broadcast> = keeper
                            .logged_for(&pid, HAND_OVER_BUDGET)
                            .into_iter()
                            .filter(|(stamp, _)| !sent.contains(stamp))
                            .collect();
                        // Sent even if empty: the new keeper waits for it before a take (see
                        // `Keeper::expect_seed`). Awaited until written: this node is about to stop.
                        written.push(this.push_seed(&to, ns.name(), &pid, &later));
                        ns.unkept(&keeper.forget(&pid).emptied);
                        debug!(%pid, %to, "parked session handed over");
                    }
                    futures_util::future::join_all(written).await;
                }
                .in_current_span(),
            );
        }
    }

    /// Hands one parked record to its next keeper (`Adopt`); once adopted: its pid, that
    /// keeper, and the stamps of the seed it got.
    async fn adopt_elsewhere(
        &self,
        nsp: &str,
        req: KeepRequest,
        seed: Vec<Broadcast>,
    ) -> Option<(String, String, HashSet<Stamp>)> {
        let Some(to) = self.pid_ranking(&req.pid).into_iter().find(|n| *n != self.node_id) else {
            return None; // alone: it stays here
        };
        let pid = req.pid.clone();
        let sent = seed.iter().map(|(stamp, _)| *stamp).collect();
        let request = Request::Adopt {
            nsp: nsp.to_owned(),
            record: record_to_wire(req),
            seed: seed.iter().map(broadcast_to_wire).collect(),
        };
        match self.call(&to, request, self.rpc_timeout).await {
            Ok(Response::Kept(true)) => Some((pid, to, sent)),
            other => {
                warn!(%pid, %to, ?other, "parked session not handed over; it stays here");
                None
            }
        }
    }

    /// Waits (at most `limit`) for the hand-overs under way, then for the per-peer queues to
    /// empty (the releases of this node's sessions are in them).
    pub async fn settle(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        self.hand_overs.close();
        if tokio::time::timeout_at(deadline, self.hand_overs.wait()).await.is_err() {
            warn!(?limit, "hand-overs of parked sessions not finished; those sessions cannot be recovered");
        }
        let queues: Vec<mpsc::Sender<Outgoing>> =
            self.queues.lock().unwrap_or_else(|e| e.into_inner()).values().flatten().flatten().cloned().collect();
        // No event says a queue is empty: look every 10 ms, this once, while the node stops.
        while queues.iter().any(|q| !q.is_closed() && q.capacity() < q.max_capacity()) {
            if tokio::time::Instant::now() >= deadline {
                warn!(?limit, "pushes to peers still queued as this node stops");
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Queues a push for `node` behind the ones already queued for it; false if its queue
    /// is full (the push is dropped and counted).
    /// `sent`, if any, is held until the push is written to the peer's connection.
    pub(crate) fn push_to_peer(self: &Arc<Self>, node: &str, push: Push, sent: Option<Arc<OnSent>>) -> bool {
        self.push_to(node, Outgoing::Push(push, sent))
    }

    /// Queues broadcasts for the record of `pid` kept by `node` (`Push::Seed`), on the records'
    /// queue; resolves once the push is on the connection (or never will be).
    fn push_seed(self: &Arc<Self>, node: &str, nsp: &str, pid: &str, seed: &[Broadcast]) -> BoxFuture<'static, ()> {
        let (tx, written) = oneshot::channel::<()>();
        let on_sent = Arc::new(OnSent::new(move |_| {
            let _ = tx.send(());
        }));
        let seed = seed.iter().map(broadcast_to_wire).collect();
        self.push_to(
            node,
            Outgoing::Push(Push::Seed { nsp: nsp.to_owned(), pid: pid.to_owned(), seed }, Some(on_sent)),
        );
        Box::pin(async move {
            let _ = written.await;
        })
    }

    /// Where history records go that cannot be sent to a replica (set once).
    pub(crate) fn on_undelivered_records(&self, keep: UndeliveredRecords) {
        let _ = self.undelivered_records.set(keep);
    }

    /// Serves a peer's push.
    pub fn on_push(self: &Arc<Self>, peer: &str, push: Push) {
        match push {
            Push::Publish { nsp, room, stamp, frames } => {
                self.stats.publishes_received.fetch_add(1, Ordering::Relaxed);
                if let Some(ns) = self.namespace(&nsp) {
                    let frames: Vec<Frame> = frames.into_iter().map(frame_from_wire).collect();
                    ns.deliver(&room, stamp.map(stamp_from_wire), &frames);
                }
            }
            Push::Release { nsp, pid, version, park } => {
                if let (Some(ns), Some(holder)) = (self.namespace(&nsp), self.holder_of(peer)) {
                    ns.release(&pid, &holder, version, park);
                }
            }
            Push::Barrier { token } => {
                if let Some(done) = self.barriers.lock().unwrap_or_else(|e| e.into_inner()).remove(&token) {
                    let _ = done.send(());
                }
            }
            Push::Seed { nsp, pid, seed } => {
                if let (Some(ns), Some(holder)) = (self.namespace(&nsp), self.holder_of(peer)) {
                    if let Some(keeper) = ns.keeper() {
                        keeper.seed(&pid, &holder, seed.into_iter().map(broadcast_from_wire).collect());
                    }
                }
            }
            Push::Presence { node, nsp, room, labels, version } => {
                self.step(|s, out| s.core.on_presence(&node, &(nsp, room), labels, version, out))
            }
            // Served by `cluster::history` (the peer handler routes it there).
            Push::Record { .. } => {}
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

    /// Applies a membership snapshot to the core (in proportion to what changed: see
    /// [`RoomsCore::membership_changed`]).
    fn membership_changed(self: &Arc<Self>, members: &Members) {
        self.step(|s, out| s.core.membership_changed(members, out));
        // Records: those whose holder died are parked here; sockets of this node whose
        // keeper died (or restarted, losing them) are kept anew. Only when a member came,
        // went or restarted (not on every heartbeat).
        let gone: HashSet<String> = {
            let now: HashMap<String, (u64, bool)> =
                members.nodes.iter().map(|(n, m)| (n.clone(), (m.generation, m.ready))).collect();
            let mut generations = self.generations.lock().unwrap_or_else(|e| e.into_inner());
            if *generations == now {
                return;
            }
            let gone = generations
                .iter()
                .filter(|(n, (g, _))| now.get(*n).is_none_or(|(generation, ready)| generation != g || !ready))
                .map(|(n, _)| n.clone())
                .collect();
            // A member that died, left or restarted is let go: what was written to it and not
            // acknowledged would hold up everything after it once it is back (`Peers::forget`).
            for (node, (g, _)) in generations.iter() {
                if now.get(node).is_none_or(|(generation, _)| generation != g) {
                    self.peers.forget(node, *g);
                }
            }
            // A member that came or came back (a restart, or the end of a partition) is up:
            // dials to it go ahead at once, not after the back-off failures to reach it earned.
            for (node, (generation, _)) in &now {
                if generations.get(node).is_none_or(|(g, _)| g != generation) {
                    self.peers.is_back(node);
                }
            }
            *generations = now;
            gone
        };
        // A node that just came (or came back) learns of rooms joined before it was live only
        // from gossip: what is due is written now, not at the advertiser's next turn.
        self.advertise_now.notify_one();
        let live = |h: &Holder| members.get(&h.node).is_some_and(|m| m.generation == h.generation);
        for ns in self.namespaces.values().filter_map(std::sync::Weak::upgrade) {
            if let Some(keeper) = ns.keeper() {
                let parked = keeper.holders_gone(live);
                if parked > 0 {
                    debug!(nsp = ns.name(), parked, "sessions of a node that left parked for their clients");
                }
            }
            ns.rekeep(&|node| gone.contains(node));
        }
    }
}

/// How often, at most, this node writes its `room:` gossip keys. A change waits for the next
/// write; that costs nothing in delivery, since joins and leaves reach the peers by direct
/// word at once (gossip is what a node that missed the word, or joined later, goes by). What
/// it saves: chitchat copies every live node's keys in a round where any node's keys changed,
/// and keeps each deleted key as a tombstone, so under room churn (every chat user with rooms
/// of their own, coming and going) writing at every change made the whole ring's gossip work
/// grow with the churn. Written at most once a second, a node changes its keys at most once a
/// second, and a room that comes and goes between two writes never reaches gossip at all. The
/// exception is a member coming or restarting: it knows of rooms joined before it was live only
/// from gossip, so what is due is written at once.
const ADVERTISE_EVERY: Duration = Duration::from_secs(1);

/// How long local membership changes gather before their `Presence` pushes: a room filling up
/// tells each subscriber of it at most about 20 times a second, whatever the joins. The other
/// nodes' `room users` lists are that much later; routing is not (a first join asks every peer
/// at once, a last leave tells every peer at once).
const PRESENCE_PAUSE: Duration = Duration::from_millis(50);

/// Pushes local membership changes to the rooms' subscribers [`PRESENCE_PAUSE`] after the
/// first of them (see [`RoomsCore::push_presence`]). Ends with [`ClusterRooms::shutdown`].
async fn push_presence(
    rooms: std::sync::Weak<ClusterRooms>,
    due: Arc<tokio::sync::Notify>,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            _ = due.notified() => {}
            _ = stop.cancelled() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(PRESENCE_PAUSE) => {}
            _ = stop.cancelled() => return,
        }
        let Some(rooms) = rooms.upgrade() else { return };
        let (due, taken) = rooms.state.lock().unwrap_or_else(|e| e.into_inner()).core.take_presence_due();
        // Each room's labels as they are now, taken outside the core's lock.
        let fresh = due
            .into_iter()
            .filter_map(|id| {
                let labels = rooms.namespace(&id.0)?.local_labels(&id.1);
                Some((id, labels))
            })
            .collect();
        rooms.step(|s, out| s.core.push_presence(taken, fresh, out));
    }
}

/// Keeps this node's `room:` gossip keys in line with its rooms with local members: one task,
/// so a quick join and leave can never leave their set and delete applied out of order; each
/// round costs in proportion to the rooms that changed, and rounds are [`ADVERTISE_EVERY`]
/// apart at least. Ends with [`ClusterRooms::shutdown`].
async fn advertise_rooms(
    rooms: std::sync::Weak<ClusterRooms>,
    wake: Arc<tokio::sync::Notify>,
    now: Arc<tokio::sync::Notify>,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            _ = wake.notified() => {}
            _ = stop.cancelled() => return,
        }
        {
            let Some(rooms) = rooms.upgrade() else { return };
            let changes = rooms.state.lock().unwrap_or_else(|e| e.into_inner()).core.take_advertisements();
            rooms.membership.update(changes).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(ADVERTISE_EVERY) => {}
            _ = now.notified() => {}
            _ = stop.cancelled() => return,
        }
    }
}

impl Adapter for ClusterRooms {
    fn room_changed(&self, nsp: &str, room: &str, any: bool, labels: &dyn Fn() -> Labels) -> BoxFuture<'static, ()> {
        let Some(this) = self.me.upgrade() else { return Box::pin(std::future::ready(())) };
        let id = (nsp.to_owned(), room.to_owned());
        let wait_for = |s: &mut State, wait: bool| {
            wait.then(|| {
                let (tx, rx) = oneshot::channel();
                s.waiters.entry(id.clone()).or_default().push(tx);
                rx
            })
        };
        // A room that has local members and had some: its labels are taken by the pusher, once
        // for the changes of a pause (copying them at each join cost N² to fill a room of N).
        // A first join or a last leave is made at once, labels and all: it changes routing.
        let touched =
            if any { this.step(|s, out| s.core.local_touched(&id, out).map(|wait| wait_for(s, wait))) } else { None };
        let joined = match touched {
            Some(joined) => joined,
            None => {
                // Taken before the core's lock: a namespace's locks are never taken under it.
                let labels = if any { labels() } else { Labels::from([]) };
                this.step(|s, out| {
                    let wait = s.core.local_changed(id.clone(), labels, out);
                    wait_for(s, wait)
                })
            }
        };
        match joined {
            // Released by the core once every peer answered (or left, or was never reached);
            // a node that stops drops the sender, which releases it too. A peer that is live
            // but cannot answer (overloaded past its timeouts, or its RPC cut off while its
            // gossip gets through) holds a join at most JOIN_WAIT_MAX.
            Some(joined) => Box::pin(async move {
                if tokio::time::timeout(JOIN_WAIT_MAX, joined).await.is_err() {
                    warn!(nsp = id.0, room = id.1, "join went on before every node confirmed it: members here may miss what those nodes publish until they do");
                }
            }),
            None => Box::pin(std::future::ready(())),
        }
    }

    fn publish(&self, nsp: &str, room: &str, stamp: Option<Stamp>, frames: &[Frame], sent: &Arc<OnSent>) {
        let Some(this) = self.me.upgrade() else { return };
        let targets =
            this.state.lock().unwrap_or_else(|e| e.into_inner()).core.subscribers(&(nsp.to_owned(), room.to_owned()));
        if targets.is_empty() {
            return;
        }
        let push = Push::Publish {
            nsp: nsp.into(),
            room: room.into(),
            stamp: stamp.map(|s| (s.publisher, s.counter)),
            frames: frames.iter().map(frame_to_wire).collect(),
        };
        // Each target's push holds it; the last one written (or dropped) runs it.
        for node in targets {
            this.push_to(&node, Outgoing::Push(push.clone(), Some(sent.clone())));
        }
    }

    fn holder(&self) -> Holder {
        let generation = self.membership.members().get(&self.node_id).map_or(0, |m| m.generation);
        Holder { node: self.node_id.as_str().into(), generation }
    }

    fn keeper_for(&self, pid: &str, current: Option<&str>, avoid: Option<&str>) -> Option<String> {
        let members = self.membership.members();
        // A keeper that stopped being ready is leaving: its records go with it.
        let ready = |c: &&str| *c != self.node_id && members.get(c).is_some_and(|m| m.ready);
        if let Some(current) = current.filter(ready).filter(|c| Some(*c) != avoid) {
            return Some(current.to_owned());
        }
        let placement = Placement::new(members.ready());
        let ranking: Vec<&str> = placement.ranking(pid).into_iter().filter(|n| *n != self.node_id).collect();
        ranking.iter().find(|n| Some(**n) != avoid).or(ranking.first()).map(|n| (*n).to_owned())
    }

    /// On the peer's ordered queue (a record's changes must arrive in order, with the
    /// releases), so it is sent even if nobody waits for the answer.
    fn keep_at(&self, node: &str, nsp: &str, req: KeepRequest, seed: Vec<Broadcast>) -> BoxFuture<'static, bool> {
        let Some(this) = self.me.upgrade() else { return Box::pin(std::future::ready(false)) };
        let (tx, rx) = oneshot::channel();
        let (req_pid, req_version) = (req.pid.clone(), req.version);
        let request = Request::Keep {
            nsp: nsp.to_owned(),
            record: record_to_wire(req),
            seed: seed.iter().map(broadcast_to_wire).collect(),
        };
        this.keeps().sent(nsp, &req_pid, req_version);
        if !this.push_to(node, Outgoing::Call(request, tx)) {
            this.keep_answered(nsp.to_owned(), req_pid, req_version, false);
            return Box::pin(std::future::ready(false));
        }
        // A failure is noted by the queue's drain, whether or not this is awaited.
        Box::pin(async move { matches!(rx.await, Ok(Some(Response::Kept(true)))) })
    }

    fn failed_keeps(&self, nsp: &str) -> Vec<String> {
        self.keeps().take_failed(nsp)
    }

    fn keep_failed(&self) -> BoxFuture<'static, ()> {
        let notify = self.keep_failed.clone();
        Box::pin(async move { notify.notified().await })
    }

    fn release_at(&self, node: &str, nsp: &str, pid: &str, version: u64, park: bool) {
        let Some(this) = self.me.upgrade() else { return };
        // The session left this node: nothing of it is to be sent again.
        self.keeps().released(nsp, pid);
        let push = Push::Release { nsp: nsp.to_owned(), pid: pid.to_owned(), version, park };
        this.push_to(node, Outgoing::Push(push, None));
    }

    fn seed_at(&self, node: &str, nsp: &str, pid: &str, seed: Vec<Broadcast>) -> BoxFuture<'static, ()> {
        match self.me.upgrade() {
            Some(this) => this.push_seed(node, nsp, pid, &seed),
            None => Box::pin(std::future::ready(())),
        }
    }

    fn holds(&self, holder: &Holder, nsp: &str, pid: &str, sid: &str) -> BoxFuture<'static, bool> {
        let Some(this) = self.me.upgrade() else { return Box::pin(std::future::ready(false)) };
        let members = this.membership.members();
        if members.get(&holder.node).is_none_or(|m| m.generation != holder.generation) {
            return Box::pin(std::future::ready(false)); // gone, or a new process
        }
        if *holder.node == *this.node_id {
            return Box::pin(std::future::ready(this.on_holds(nsp, pid, sid) == Response::Kept(true)));
        }
        let node = holder.node.to_string();
        let request = Request::Holds { nsp: nsp.to_owned(), pid: pid.to_owned(), sid: sid.to_owned() };
        Box::pin(async move {
            // A crashed node refuses the connection at once; a hung one is given the timeout.
            match this.call(&node, request, this.rpc_timeout).await {
                Ok(Response::Kept(holds)) => holds,
                other => {
                    debug!(peer = node, ?other, "the holder of a session did not answer; taken as gone");
                    false
                }
            }
        })
    }

    fn barrier(&self) -> BoxFuture<'static, ()> {
        match self.me.upgrade() {
            Some(this) => this.barrier_now(),
            None => Box::pin(std::future::ready(())),
        }
    }

    /// Asks every other live member at once: a record stays with the keeper it was sent to,
    /// wherever the pid's ranking now points.
    fn find_parked(&self, nsp: &str, pid: &str) -> BoxFuture<'static, Option<FoundSession>> {
        let Some(this) = self.me.upgrade() else { return Box::pin(std::future::ready(None)) };
        let asks: Vec<_> = this
            .other_members()
            .into_iter()
            .map(|node| {
                let this = this.clone();
                let request = Request::FindParked { nsp: nsp.to_owned(), pid: pid.to_owned() };
                Box::pin(async move {
                    match this.call(&node, request, this.rpc_timeout).await {
                        Ok(Response::Found(Some((sid, rooms)))) => Some(FoundSession { node: Some(node), sid, rooms }),
                        Ok(_) => None,
                        Err(err) => {
                            debug!(peer = node, %err, "could not ask for a parked session");
                            None
                        }
                    }
                })
            })
            .collect();
        Box::pin(async move { futures_util::future::join_all(asks).await.into_iter().flatten().next() })
    }

    fn take_parked(
        &self,
        node: &str,
        nsp: &str,
        pid: &str,
        frontier: &Frontier,
    ) -> BoxFuture<'static, Option<Vec<Broadcast>>> {
        let Some(this) = self.me.upgrade() else { return Box::pin(std::future::ready(None)) };
        let node = node.to_owned();
        let request = Request::TakeParked { nsp: nsp.into(), pid: pid.into(), offset: frontier.encode() };
        Box::pin(async move {
            // The keeper runs a barrier before it takes (see `on_take_parked`).
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
        self.state.lock().unwrap_or_else(|e| e.into_inner()).core.remote_labels(&(nsp.to_owned(), room.to_owned()))
    }

    fn remote_count(&self, nsp: &str, room: &str) -> usize {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).core.remote_count(&(nsp.to_owned(), room.to_owned()))
    }
}

fn record_to_wire(req: KeepRequest) -> RecordWire {
    let rooms = match req.rooms {
        RoomsUpdate::All(all) => RoomsWire::All(all),
        RoomsUpdate::Join(room) => RoomsWire::Join(room),
        RoomsUpdate::Leave(room) => RoomsWire::Leave(room),
    };
    RecordWire { pid: req.pid, sid: req.sid, rooms, version: req.version }
}

fn stamp_from_wire((publisher, counter): (u32, u64)) -> Stamp {
    Stamp { publisher, counter }
}

fn broadcast_to_wire((stamp, frames): &Broadcast) -> WirePacket {
    ((stamp.publisher, stamp.counter), frames.iter().map(frame_to_wire).collect())
}

fn broadcast_from_wire((stamp, frames): WirePacket) -> Broadcast {
    (stamp_from_wire(stamp), frames.into_iter().map(frame_from_wire).collect())
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
    use crate::socketio::Sent;

    fn member(id: &str, ready: bool) -> MemberInfo {
        MemberInfo::for_test(id, 1, ready)
    }

    /// A node alone in its ring, with the history records it could not send collected.
    async fn lone_node() -> (Arc<ClusterRooms>, Arc<Mutex<Vec<u64>>>) {
        let (rooms, held, _) = node("node1", Vec::new()).await;
        (rooms, held)
    }

    /// A node of a ring, with the history records it could not send collected, and its gossip
    /// address (also its RPC address, where nothing accepts TCP).
    async fn node(id: &str, seeds: Vec<String>) -> (Arc<ClusterRooms>, Arc<Mutex<Vec<u64>>>, std::net::SocketAddr) {
        let listen: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        let socket = Arc::new(std::net::UdpSocket::bind(listen).unwrap());
        let advertise = socket.local_addr().unwrap();
        let gossip = crate::cluster::membership::GossipConfig {
            node_id: id.into(),
            cluster_id: "test".into(),
            listen: advertise,
            socket: Some(socket),
            advertise,
            seeds,
            interval: Duration::from_millis(100),
            phi_threshold: 8.0,
            member_grace: Duration::ZERO,
            compress_digest: true,
            tombstone_grace: Duration::from_secs(60),
            keyring: crate::keyring::Keyring::single("the-cluster-secret-1"),
            max_clock_skew: Duration::from_secs(60),
        };
        let membership = Arc::new(Membership::start(gossip, advertise, advertise).await.unwrap());
        let peers = Arc::new(Peers::new(crate::rpc::peers::DialSettings {
            node_id: id.into(),
            keyring: crate::keyring::Keyring::single("the-cluster-secret-1"),
            connect_timeout: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(1),
            limits: crate::rpc::RpcLimits::default(),
        }));
        let rooms = ClusterRooms::new(id.into(), membership, peers, Vec::new(), Duration::from_secs(5));
        let held = Arc::new(Mutex::new(Vec::new()));
        let into = held.clone();
        rooms.on_undelivered_records(Box::new(move |_, _, entry| into.lock().unwrap().push(entry.id.1)));
        (rooms, held, advertise)
    }

    fn record(n: u64) -> Push {
        let entry = crate::history::Entry { at_ms: n, id: (1, n), body: format!("m{n}") };
        Push::Record { nsp: "/chat".into(), room: "lobby".into(), entry }
    }

    /// A history record is acked once every copy of it is gone: one that cannot reach its
    /// replica must be held here first, whichever way it fails. Here the replica is not a
    /// member: the first record fails to connect, and the ones queued behind it are drained
    /// when its pusher gives up on the node; a queue found full holds the record at once.
    #[tokio::test]
    async fn history_records_that_cannot_reach_their_replica_are_held_here() {
        let (rooms, held) = lone_node().await;
        let queued = 100;
        for n in 0..queued {
            assert!(rooms.push_to_peer("node2", record(n), None));
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while held.lock().unwrap().len() < queued as usize {
            assert!(tokio::time::Instant::now() < deadline, "held {:?} of {queued}", held.lock().unwrap().len());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(*held.lock().unwrap(), (0..queued).collect::<Vec<_>>(), "each once, in order");

        // A full queue (the pusher does not run before this test yields again).
        held.lock().unwrap().clear();
        for n in 0..PEER_QUEUE as u64 {
            assert!(rooms.push_to_peer("node3", record(n), None));
        }
        assert!(!rooms.push_to_peer("node3", record(PEER_QUEUE as u64), None), "the queue is full");
        assert_eq!(*held.lock().unwrap(), [PEER_QUEUE as u64], "held at once, before any ack");
        rooms.shutdown().await;
    }

    fn publish() -> Push {
        Push::Publish { nsp: "/chat".into(), room: "lobby".into(), stamp: None, frames: Vec::new() }
    }

    /// An [`OnSent`] whose outcome lands in the returned receiver.
    fn on_sent() -> (Arc<OnSent>, oneshot::Receiver<Sent>) {
        let (tx, rx) = oneshot::channel();
        (
            Arc::new(OnSent::new(move |sent| {
                let _ = tx.send(sent);
            })),
            rx,
        )
    }

    /// A broadcast is acked as sent unless a copy was dropped at the full queue of a node in
    /// the ring ([`Sent::Missed`]). A copy owed to a node that is not a member, or lost with a
    /// connection (here: one that cannot be made), is not counted missed: that node crashed or
    /// left, and its clients recover elsewhere.
    #[tokio::test]
    async fn a_broadcast_dropped_at_a_live_nodes_full_queue_is_not_acked_as_sent() {
        let (node2, _, seed) = node("node2", Vec::new()).await;
        let (node1, _, _) = node("node1", vec![seed.to_string()]).await;
        let mut changes = node1.membership.subscribe();
        tokio::time::timeout(Duration::from_secs(10), changes.wait_for(|m| m.get("node2").is_some()))
            .await
            .expect("node1 sees node2 within 10 s")
            .unwrap();

        // Not a member: nothing owed there.
        let (sent, outcome) = on_sent();
        node1.push_to_peer("node3", publish(), Some(sent));
        assert_eq!(outcome.await.unwrap(), Sent::All);

        // A full queue (its pusher does not run before this test yields again): the push
        // that does not fit is missed at once, whatever happens to the ones queued.
        for _ in 0..PEER_QUEUE {
            assert!(node1.push_to_peer("node2", publish(), None));
        }
        let (sent, mut outcome) = on_sent();
        assert!(!node1.push_to_peer("node2", publish(), Some(sent)), "the queue is full");
        assert_eq!(outcome.try_recv().unwrap(), Sent::Missed);

        // node2's RPC address accepts nothing: queued behind the others, this one goes once
        // its pusher fails to connect, not counted missed.
        tokio::time::timeout(Duration::from_secs(10), async {
            while !node1.push_to_peer("node2", publish(), None) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("room in the queue again");
        let (sent, outcome) = on_sent();
        assert!(node1.push_to_peer("node2", publish(), Some(sent)));
        let outcome = tokio::time::timeout(Duration::from_secs(10), outcome).await.expect("an outcome within 10 s");
        assert_eq!(outcome.unwrap(), Sent::All);
        node1.shutdown().await;
        node2.shutdown().await;
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
