//! Namespaces: the application's handlers for one namespace, its connected sockets and its
//! rooms (the local room table; an [`Adapter`] extends rooms over the cluster).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use serde_json::Value;

use super::adapter::{Adapter, Emitter, FoundSession, Labels, LocalAdapter, OnSent, PresenceChange};
use super::recovery::{
    self, Broadcast, Frontier, Holder, KeepRequest, Keeper, RecoveryConfig, RoomsUpdate, Stamp, PARKED_LABEL,
};
use super::socket::{AckSender, Socket};
use crate::engineio::Frame;
use crate::tasks::Tasks;

/// A room name. Shared, because the same name sits in the room table and in each member socket.
pub type Room = Arc<str>;

/// What a client sent with CONNECT.
#[derive(Debug, Clone, Default)]
pub struct ConnectRequest {
    /// Revision 5: the CONNECT payload (`{}` when the client sent none).
    pub auth: Value,
    /// Query parameters: the Engine.IO handshake's, then a revision-4 namespace query's.
    pub query: Vec<(String, String)>,
}

impl ConnectRequest {
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// An event as a handler receives it: its arguments, with binary placeholders left in place
/// and the attachments they refer to.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub name: String,
    pub args: Vec<Value>,
    pub binary: Vec<Bytes>,
}

/// Decides whether a CONNECT is accepted; `Err` carries the CONNECT_ERROR message.
pub type ConnectHandler = Arc<dyn Fn(&Arc<Socket>, &ConnectRequest) -> Result<(), String> + Send + Sync>;
/// Decides on a CONNECT with work that takes time (see [`NamespaceBuilder::check_connect`]).
pub type ConnectCheck =
    Arc<dyn Fn(&Arc<Socket>, &ConnectRequest) -> BoxFuture<'static, Result<(), String>> + Send + Sync>;
pub type ConnectedHandler = Arc<dyn Fn(&Arc<Socket>) + Send + Sync>;
pub type EventHandler = Arc<dyn Fn(&Arc<Socket>, Event, Option<AckSender>) + Send + Sync>;
pub type DisconnectHandler = Arc<dyn Fn(&Arc<Socket>, &str) + Send + Sync>;
pub type PresenceHandler = Arc<dyn Fn(&Arc<Namespace>, &str, &PresenceChange) + Send + Sync>;

/// Builds a namespace's handlers before the server starts.
pub struct NamespaceBuilder {
    name: String,
    check_connect: Option<ConnectCheck>,
    on_connect: Option<ConnectHandler>,
    on_connected: Option<ConnectedHandler>,
    events: HashMap<String, EventHandler>,
    on_disconnect: Option<DisconnectHandler>,
    on_presence: Option<PresenceHandler>,
    recovery: Option<RecoveryConfig>,
}

impl NamespaceBuilder {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            check_connect: None,
            on_connect: None,
            on_connected: None,
            events: HashMap::new(),
            on_disconnect: None,
            on_presence: None,
            recovery: None,
        }
    }

    /// Turns on connection state recovery (see [`super::recovery`]): room broadcasts carry
    /// an offset as their last argument, and a client whose connection drops gets its
    /// socket id, rooms and missed broadcasts back if it reconnects within
    /// `max_disconnection`.
    pub fn recovery(mut self, config: RecoveryConfig) -> Self {
        self.recovery = Some(config);
        self
    }

    /// Decides on a CONNECT before the client is answered: `Err(message)` refuses it with a
    /// CONNECT_ERROR. It may attach data to the socket; it must not emit (the client would
    /// receive events before it knows it is connected).
    pub fn on_connect(
        mut self,
        f: impl Fn(&Arc<Socket>, &ConnectRequest) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.on_connect = Some(Arc::new(f));
        self
    }

    /// Decides on a CONNECT with work that would hold up the connection's thread (a password's
    /// hash): the future runs as a task of its own, and the CONNECT goes on (to `on_connect`)
    /// once it is `Ok`; `Err(message)` refuses it with a CONNECT_ERROR. Like `on_connect`, it
    /// may attach data to the socket and must not emit.
    pub fn check_connect(
        mut self,
        f: impl Fn(&Arc<Socket>, &ConnectRequest) -> BoxFuture<'static, Result<(), String>> + Send + Sync + 'static,
    ) -> Self {
        self.check_connect = Some(Arc::new(f));
        self
    }

    /// Runs once the client has been told it is connected: the place for first emits and joins.
    pub fn on_connected(mut self, f: impl Fn(&Arc<Socket>) + Send + Sync + 'static) -> Self {
        self.on_connected = Some(Arc::new(f));
        self
    }

    pub fn on(
        mut self,
        event: &str,
        f: impl Fn(&Arc<Socket>, Event, Option<AckSender>) + Send + Sync + 'static,
    ) -> Self {
        self.events.insert(event.to_owned(), Arc::new(f));
        self
    }

    pub fn on_disconnect(mut self, f: impl Fn(&Arc<Socket>, &str) + Send + Sync + 'static) -> Self {
        self.on_disconnect = Some(Arc::new(f));
        self
    }

    /// Runs when members of a room that has local members come or go on other nodes.
    pub fn on_presence(mut self, f: impl Fn(&Arc<Namespace>, &str, &PresenceChange) + Send + Sync + 'static) -> Self {
        self.on_presence = Some(Arc::new(f));
        self
    }

    /// The namespace, whose handlers' tasks run on `tasks` (its server's).
    pub(crate) fn build(self, tasks: Tasks) -> Arc<Namespace> {
        let recovery = self.recovery.map(|c| Arc::new(Keeper::new(c)));
        let local = Arc::new(LocalAdapter);
        Arc::new_cyclic(|me| Namespace {
            me: me.clone(),
            name: self.name,
            check_connect: self.check_connect,
            on_connect: self.on_connect,
            on_connected: self.on_connected,
            events: self.events,
            on_disconnect: self.on_disconnect,
            on_presence: self.on_presence,
            recovery,
            local,
            cluster: OnceLock::new(),
            sockets: RwLock::new(HashMap::new()),
            rooms: RwLock::new(HashMap::new()),
            reports: Mutex::new(()),
            deliveries: AtomicU64::new(0),
            tasks,
        })
    }
}

pub struct Namespace {
    /// This namespace, for the handlers that take it from `&self` trait methods.
    me: std::sync::Weak<Namespace>,
    name: String,
    check_connect: Option<ConnectCheck>,
    on_connect: Option<ConnectHandler>,
    on_connected: Option<ConnectedHandler>,
    events: HashMap<String, EventHandler>,
    on_disconnect: Option<DisconnectHandler>,
    on_presence: Option<PresenceHandler>,
    /// Recovery on: the records this node keeps (see [`recovery`]).
    recovery: Option<Arc<Keeper>>,
    /// The adapter of a lone node, and of this one whenever it is not in a cluster.
    local: Arc<LocalAdapter>,
    /// Set once when the node joins a cluster. Weak: whoever runs the node owns it, and a node
    /// that stopped must free it.
    cluster: OnceLock<std::sync::Weak<dyn Adapter>>,
    /// Connected sockets by socket id. std locks: only held for map operations.
    sockets: RwLock<HashMap<Arc<str>, Arc<Socket>>>,
    /// Room → its members on this node, by socket id: the sockets themselves, so a broadcast
    /// takes them without looking each one up in `sockets`. Only sockets in `sockets` are
    /// here: a socket joins the table when it is connected (with the rooms it joined while
    /// connecting) or joins a room after that, and leaves it when it is removed.
    rooms: RwLock<HashMap<Room, Members>>,
    /// Held while a change of a room's members is reported to the adapter (see
    /// [`Namespace::room_changed`]).
    reports: Mutex<()>,
    /// Room broadcasts queued to local members, one per member (metrics).
    deliveries: AtomicU64,
    /// Its server's tasks, where handlers start work that waits (see [`Namespace::tasks`]).
    tasks: Tasks,
}

impl Namespace {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where handlers run work that waits (a join's history, a coalescing timer): the tasks of
    /// the Socket.IO server, which its engine's shutdown stops and waits for.
    pub fn tasks(&self) -> &Tasks {
        &self.tasks
    }

    /// Extends the rooms of this namespace over the cluster; only the first call counts. The
    /// namespace holds it weakly: whoever runs the node owns it.
    pub fn set_adapter(&self, adapter: std::sync::Weak<dyn Adapter>) {
        if self.cluster.set(adapter).is_err() {
            tracing::warn!(nsp = %self.name, "namespace already has an adapter");
        }
    }

    /// The cluster's adapter while the node that set it runs, else the local one.
    fn adapter(&self) -> Arc<dyn Adapter> {
        match self.cluster.get().and_then(std::sync::Weak::upgrade) {
            Some(cluster) => cluster,
            None => self.local.clone(),
        }
    }

    /// The namespace's slow check of a CONNECT (see [`NamespaceBuilder::check_connect`]), if
    /// it has one: awaited before [`Namespace::connect`].
    pub(crate) fn check_connect(
        &self,
        socket: &Arc<Socket>,
        req: &ConnectRequest,
    ) -> Option<BoxFuture<'static, Result<(), String>>> {
        self.check_connect.as_ref().map(|f| f(socket, req))
    }

    pub(crate) fn connect(&self, socket: &Arc<Socket>, req: &ConnectRequest) -> Result<(), String> {
        if let Some(f) = &self.on_connect {
            f(socket, req)?;
        }
        // Under the room table's lock, as `add_to_room`: a join racing this connect is in the
        // table either way.
        let mut table = self.rooms.write().unwrap_or_else(|e| e.into_inner());
        let mut sockets = self.sockets.write().unwrap_or_else(|e| e.into_inner());
        // Two restores of one parked session (its client reconnecting twice at once) would
        // both take its id; the second's removal would take the first's entries with it.
        if sockets.contains_key(socket.id()) {
            return Err("this session is being restored already".into());
        }
        sockets.insert(socket.id().clone(), socket.clone());
        drop(sockets);
        for room in socket.rooms() {
            table.entry(room).or_default().insert(socket.id().clone(), socket.clone());
        }
        Ok(())
    }

    pub(crate) fn after_connect(&self, socket: &Arc<Socket>) {
        if let Some(f) = &self.on_connected {
            f(socket);
        }
    }

    pub(crate) fn dispatch(&self, socket: &Arc<Socket>, event: Event, ack: Option<AckSender>) {
        match self.events.get(&event.name) {
            Some(f) => f(socket, event, ack),
            None => tracing::debug!(nsp = %self.name, event = %event.name, "no handler for event"),
        }
    }

    /// Removes a socket from the namespace and its rooms, then runs the disconnect handler,
    /// which still sees the socket's rooms. Its keeper parks its record if the transport went
    /// away (the client may come back), else drops it.
    pub(crate) fn remove(&self, socket: &Arc<Socket>, reason: &str) {
        {
            // Only this socket: one refused for an id in use leaves the one that holds it.
            let mut sockets = self.sockets.write().unwrap_or_else(|e| e.into_inner());
            if !sockets.get(socket.id()).is_some_and(|s| Arc::ptr_eq(s, socket)) {
                return;
            }
            sockets.remove(socket.id());
        }
        let rooms = socket.rooms();
        {
            let mut table = self.rooms.write().unwrap_or_else(|e| e.into_inner());
            for room in &rooms {
                remove_member(&mut table, room, socket.id());
            }
        }
        for room in &rooms {
            // The report is made at once; nobody waits on a departing socket's rooms.
            drop(self.room_changed(room));
        }
        if let Some(f) = &self.on_disconnect {
            f(socket, reason);
        }
        if let (Some(_), Some(pid)) = (&self.recovery, socket.pid()) {
            let park = recovery::recoverable(reason);
            let adapter = self.adapter();
            let version = socket.record_version();
            match socket.keeper() {
                Some(node) => adapter.release_at(&node, &self.name, pid, version, park),
                None => self.release_here(pid, &adapter.holder(), version, park),
            }
            tracing::debug!(nsp = %self.name, socket = %socket.id(), %pid, park, "session released to its keeper");
        }
    }

    /// The records this node keeps, if recovery is on.
    pub fn keeper(&self) -> Option<&Arc<Keeper>> {
        self.recovery.as_ref()
    }

    /// Drops parked sessions whose time is up (every second, from the server's sweeper).
    pub fn expire_parked(&self) {
        if let Some(keeper) = &self.recovery {
            self.unkept(&keeper.expire());
        }
    }

    /// Resolves once a record of this node failed to reach its keeper (see
    /// [`Adapter::keep_failed`]).
    pub(crate) fn keep_failed(&self) -> BoxFuture<'static, ()> {
        self.adapter().keep_failed()
    }

    /// Sends again, whole, the records of sockets whose last record did not reach their
    /// keeper (from the server's sweeper); how many failed records there were.
    pub fn retry_keeps(&self) -> usize {
        let failed: HashSet<String> = self.adapter().failed_keeps(&self.name).into_iter().collect();
        if !failed.is_empty() {
            for socket in self.sockets().iter().filter(|s| s.pid().is_some_and(|p| failed.contains(p))) {
                drop(self.keep(socket, None));
            }
        }
        failed.len()
    }

    /// Rooms no record keeps here any more: this node's subscription follows its sockets.
    fn unkept(&self, rooms: &[String]) {
        for room in rooms {
            drop(self.room_changed(room));
        }
    }

    /// Sends a socket's record (its rooms now) to its keeper; resolves once the keeper is
    /// subscribed to them. `seed`: what a restored socket is sent that its new keeper may
    /// not have logged.
    pub(crate) fn keep_with(
        &self,
        socket: &Socket,
        change: Option<RoomsUpdate>,
        seed: Vec<Broadcast>,
    ) -> BoxFuture<'static, bool> {
        let (Some(_), Some(pid)) = (&self.recovery, socket.pid()) else { return Box::pin(std::future::ready(false)) };
        let adapter = self.adapter();
        let relay = socket.session().relay();
        let choose = |current: Option<&str>| adapter.keeper_for(pid, current, relay.as_deref());
        let Some((req, keeper)) = socket.next_record(change, choose) else {
            return Box::pin(std::future::ready(false));
        };
        match keeper {
            Some(node) => adapter.keep_at(&node, &self.name, req, seed),
            None => {
                tracing::debug!(nsp = %self.name, socket = %socket.id(), %pid, "record kept here: no other ready node to keep it");
                self.keep_here(req, adapter.holder(), seed)
            }
        }
    }

    /// [`Namespace::keep_with`] without a seed: the whole record (`None`), or a join or a leave.
    pub(crate) fn keep(&self, socket: &Socket, change: Option<RoomsUpdate>) -> BoxFuture<'static, ()> {
        let kept = self.keep_with(socket, change, Vec::new());
        Box::pin(async move {
            kept.await;
        })
    }

    /// Moves a socket's record off the node that now relays its WebSocket, if that node
    /// keeps it: one crash of that node would cut the client off and lose its record.
    pub(crate) fn avoid_relay(&self, socket: &Socket) {
        let (Some(_), Some(pid), Some(relay)) = (&self.recovery, socket.pid(), socket.session().relay()) else {
            return;
        };
        if socket.keeper().as_deref() != Some(&*relay) {
            return;
        }
        let adapter = self.adapter();
        if adapter.keeper_for(pid, None, Some(&relay)).is_some_and(|k| *k != *relay) {
            // The old copy goes first: the new one is tracked until its keeper confirms it.
            adapter.release_at(&relay, &self.name, pid, u64::MAX, false);
            drop(self.keep(socket, None));
            tracing::debug!(nsp = %self.name, socket = %socket.id(), %pid, %relay, "record moved off the node relaying its WebSocket");
        }
    }

    /// Re-sends the records of sockets whose keeper is `gone` (died or restarted), or that
    /// are kept here or on their relay while another node could keep them, to a keeper
    /// chosen now.
    fn rekeep_sockets(&self, gone: &dyn Fn(&str) -> bool) {
        if self.recovery.is_none() {
            return;
        }
        let adapter = self.adapter();
        for socket in self.sockets() {
            let Some(pid) = socket.pid() else { continue };
            let current = socket.keeper();
            let due = match &current {
                Some(node) if gone(node) => true,
                Some(_) => {
                    // Kept on its relay for want of another node: one may have come.
                    self.avoid_relay(&socket);
                    false
                }
                None => adapter.keeper_for(pid, None, None).is_some(),
            };
            if !due {
                continue;
            }
            drop(self.keep(&socket, None));
            if current.is_none() {
                // Kept here until now: the new keeper has it.
                self.release_here(pid, &adapter.holder(), u64::MAX, false);
            }
        }
    }

    /// Finds a parked session here or, through the adapter, on another node.
    pub(crate) fn find_parked(&self, pid: &str) -> BoxFuture<'static, Option<FoundSession>> {
        let here = self.find_here(pid);
        let elsewhere = self.adapter().find_parked(&self.name, pid);
        Box::pin(async move {
            match here.await {
                Some((sid, rooms)) => Some(FoundSession { node: None, sid, rooms }),
                None => elsewhere.await,
            }
        })
    }

    /// A session parked here; a live record whose holder no longer has the session (its
    /// node crashed, or has not noticed the client is gone yet... the client is back) is
    /// parked first.
    fn find_here(&self, pid: &str) -> BoxFuture<'static, Option<(String, Vec<String>)>> {
        let Some(keeper) = self.recovery.clone() else { return Box::pin(std::future::ready(None)) };
        let live = keeper.live_holder(pid);
        let holds = live.as_ref().map(|(holder, sid)| self.adapter().holds(holder, &self.name, pid, sid));
        let pid = pid.to_owned();
        Box::pin(async move {
            if let (Some((holder, _)), Some(holds)) = (live, holds) {
                if !holds.await {
                    keeper.release(&pid, &holder, 0, true);
                }
            }
            keeper.find(&pid).ok()
        })
    }

    /// Takes a session found by [`Namespace::find_parked`]: what its client missed above
    /// `frontier`.
    pub(crate) fn take_parked(
        &self,
        found: &FoundSession,
        pid: &str,
        frontier: &Frontier,
    ) -> BoxFuture<'static, Option<Vec<Broadcast>>> {
        match &found.node {
            Some(node) => self.adapter().take_parked(node, &self.name, pid, frontier),
            // As a keeper does for another node (see the adapter).
            None => self.take_settled(pid, frontier),
        }
    }

    /// Takes a session parked here, for this node's restore or a peer's: once the seed a
    /// handed-over record is owed has come (see [`Keeper::seeded`]) and a barrier has let in
    /// what other nodes had queued for this one; what its client missed above `frontier`.
    fn take_settled(&self, pid: &str, frontier: &Frontier) -> BoxFuture<'static, Option<Vec<Broadcast>>> {
        let (Some(me), pid, frontier) = (self.me.upgrade(), pid.to_owned(), frontier.clone()) else {
            return Box::pin(std::future::ready(None));
        };
        Box::pin(async move {
            if let Some(keeper) = &me.recovery {
                keeper.seeded(&pid).await;
            }
            me.adapter().barrier().await;
            me.take_here(&pid, &frontier)
        })
    }

    /// Resolves once what other nodes had queued for this one has arrived (see
    /// [`Adapter::barrier`]).
    pub(crate) fn barrier(&self) -> BoxFuture<'static, ()> {
        self.adapter().barrier()
    }

    /// Pushes what a restored socket is about to be sent to its keeper (`None`: this node);
    /// resolves once it is written to the keeper's connection (at once for this node).
    pub(crate) fn seed_keeper(
        &self,
        keeper: Option<String>,
        pid: &str,
        seed: Vec<Broadcast>,
    ) -> BoxFuture<'static, ()> {
        let done = || -> BoxFuture<'static, ()> { Box::pin(std::future::ready(())) };
        let Some(here) = &self.recovery else { return done() };
        if seed.is_empty() {
            return done();
        }
        let adapter = self.adapter();
        match keeper {
            Some(node) => adapter.seed_at(&node, &self.name, pid, seed),
            None => {
                here.seed(pid, &adapter.holder(), seed);
                done()
            }
        }
    }

    /// Adds a socket to a room's members here once it is connected (see `rooms`); a socket
    /// still connecting is added by `connect`, one already removed never.
    pub(crate) fn add_to_room(&self, room: &Room, socket: &Arc<Socket>) -> BoxFuture<'static, ()> {
        {
            // Only while the socket still lists the room: a leave that ran meanwhile took it
            // out of both, and an entry added after it would hold the socket (and send to it)
            // until the process ends.
            let mut table = self.rooms.write().unwrap_or_else(|e| e.into_inner());
            let connected = self.sockets.read().unwrap_or_else(|e| e.into_inner()).contains_key(socket.id());
            if connected && socket.in_room(room) {
                table.entry(room.clone()).or_default().insert(socket.id().clone(), socket.clone());
            }
        }
        self.room_changed(room)
    }

    pub(crate) fn remove_from_room(&self, room: &Room, sid: &Arc<str>) {
        remove_member(&mut self.rooms.write().unwrap_or_else(|e| e.into_inner()), room, sid);
        drop(self.room_changed(room));
    }

    /// Reports a change of a room's local members to the adapter, at once; the returned
    /// future resolves when the other nodes know.
    ///
    /// One report at a time: whether the room has members is read and handed to the adapter
    /// as one step. Two made at once on different threads (a connection thread each) could
    /// otherwise land in the other order: a last leave read (no members), then a first join
    /// made and reported (the adapter still knew of members: nothing to announce), then the
    /// leave's report (the room is empty). The adapter would hold the room empty for good
    /// while it has a member, and the other nodes would stop sending it the room's messages.
    /// The adapter's step calls nothing back here, so the lock is never taken twice.
    fn room_changed(&self, room: &str) -> BoxFuture<'static, ()> {
        let _one_at_a_time = self.reports.lock().unwrap_or_else(|e| e.into_inner());
        let any = self.parked_in(room)
            || self.rooms.read().unwrap_or_else(|e| e.into_inner()).get(room).is_some_and(Members::any_labelled);
        self.adapter().room_changed(&self.name, room, any, &|| self.local_labels(room))
    }

    /// Whether a record kept here for recovery is in the room.
    fn parked_in(&self, room: &str) -> bool {
        self.recovery.as_ref().is_some_and(|k| k.keeps(room))
    }

    /// The sockets in a room on this node, now.
    pub fn room_members(&self, room: &str) -> Arc<[Arc<Socket>]> {
        let rooms = self.rooms.read().unwrap_or_else(|e| e.into_inner());
        rooms.get(room).map_or_else(|| Arc::from([]), Members::list)
    }

    /// Presence labels of the room's members on this node; records kept here for recovery
    /// count as one [`PARKED_LABEL`], which keeps the node subscribed.
    pub fn local_labels(&self, room: &str) -> Labels {
        let parked = self.parked_in(room).then(|| Arc::from(PARKED_LABEL));
        self.room_members(room).iter().filter_map(|s| s.shared_label()).chain(parked).collect()
    }

    /// Presence labels of the room's members on every node, sorted and distinct.
    pub fn room_labels(&self, room: &str) -> Vec<String> {
        let mut labels: Vec<String> = self.local_labels(room).iter().map(|l| l.to_string()).collect();
        labels.extend(self.adapter().remote_labels(&self.name, room));
        labels.retain(|l| l != PARKED_LABEL);
        // Equal names are alike: an unstable sort gives the same list, without a buffer.
        labels.sort_unstable();
        labels.dedup();
        labels
    }

    /// How many members the room has on every node, now: its connections (a user connected
    /// twice counts twice), not its distinct labels, and cheap where [`Namespace::room_labels`]
    /// copies and sorts every name.
    pub fn room_size(&self, room: &str) -> usize {
        let here = self.rooms.read().unwrap_or_else(|e| e.into_inner()).get(room).map_or(0, |m| m.by_id.len());
        here + self.adapter().remote_count(&self.name, room)
    }

    /// Whether the room has members on this node.
    pub fn has_local_room(&self, room: &str) -> bool {
        self.rooms.read().unwrap_or_else(|e| e.into_inner()).contains_key(room)
    }

    /// The sockets connected to this namespace on this node, now.
    pub fn sockets(&self) -> Vec<Arc<Socket>> {
        self.sockets.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    /// One socket connected to this namespace on this node.
    pub fn socket(&self, id: &str) -> Option<Arc<Socket>> {
        self.sockets.read().unwrap_or_else(|e| e.into_inner()).get(id).cloned()
    }

    pub fn room_count(&self) -> usize {
        self.rooms.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn socket_count(&self) -> usize {
        self.sockets.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Emits an event to every member of `room` on every node, encoding the packet once.
    /// With recovery on, the event's last argument is the receiving socket's offset (as
    /// socket.io 4.6+ does).
    pub fn emit_to_room(&self, room: &str, event: &str, args: Vec<Value>) {
        self.emit_to_room_then(room, event, args, &Arc::new(OnSent::none()));
    }

    /// [`Namespace::emit_to_room`], then `sent` once the broadcast has left this node (see
    /// [`OnSent`]): written to every other node with members of the room.
    pub fn emit_to_room_then(&self, room: &str, event: &str, args: Vec<Value>, sent: &Arc<OnSent>) {
        let frames = super::socket::event_frames(&self.name, event, args, Vec::new(), None);
        // Stamped, logged, queued to peers and sent to the members here, without yielding: the
        // publisher's order everywhere. The order of the steps matters to a restore racing
        // this broadcast (see `restore` in `server`): a socket restored here joins the room,
        // then takes its record from a keeper elsewhere once that keeper has what this node
        // had queued to it. So the push to that keeper is queued before the members here are
        // listed: a socket listed too late to be sent the broadcast joined after the push was
        // queued, and finds it in its record. And a keeper here logs it before the push: a
        // record taken here before it was logged belongs to a socket elsewhere whose join this
        // node knew of when it queued the push, so that socket is sent it live.
        let stamp = self.recovery.as_ref().map(|k| k.stamp());
        self.log_local(room, stamp, &frames);
        self.adapter().publish(&self.name, room, stamp, &frames, sent);
        self.send_local(room, stamp, &frames);
    }

    /// Emits an event to the members of `room` on this node only.
    pub fn emit_to_local_room(&self, room: &str, event: &str, args: Vec<Value>) {
        self.deliver_local(room, None, &super::socket::event_frames(&self.name, event, args, Vec::new(), None));
    }

    /// Queues encoded frames for the room's local members, and logs them for the records kept
    /// here when the broadcast has a recovery `stamp`; returns how many sockets took them.
    /// Sockets whose queue is full are closed by their session, never waited for.
    pub fn deliver_local(&self, room: &str, stamp: Option<Stamp>, frames: &[Frame]) -> usize {
        self.log_local(room, stamp, frames);
        self.send_local(room, stamp, frames)
    }

    /// Logs a broadcast with a recovery `stamp` for the records kept here.
    fn log_local(&self, room: &str, stamp: Option<Stamp>, frames: &[Frame]) {
        if let (Some(keeper), Some(stamp)) = (&self.recovery, stamp) {
            keeper.delivered(room, stamp, frames);
        }
    }

    /// Queues a broadcast for the room's members here; returns how many sockets took it.
    fn send_local(&self, room: &str, stamp: Option<Stamp>, frames: &[Frame]) -> usize {
        let mut spliced = None;
        let members = self.room_members(room);
        let mut delivered = 0;
        for (i, socket) in members.iter().enumerate() {
            // The next member's state is fetched while this member's write runs.
            if let Some(next) = members.get(i + 1) {
                next.prefetch_broadcast();
            }
            delivered += usize::from(socket.send_broadcast(stamp, frames, &mut spliced).is_ok());
        }
        self.deliveries.fetch_add(delivered as u64, Ordering::Relaxed);
        delivered
    }

    /// How many room broadcasts were queued to local members, one per member.
    pub fn deliveries(&self) -> u64 {
        self.deliveries.load(Ordering::Relaxed)
    }
}

impl Namespace {
    fn keep_here(&self, req: KeepRequest, holder: Holder, seed: Vec<Broadcast>) -> BoxFuture<'static, bool> {
        let Some(changed) = self.recovery.as_ref().and_then(|k| k.keep(req, holder, seed)) else {
            return Box::pin(std::future::ready(false));
        };
        self.unkept(&changed.emptied);
        let subscribed: Vec<_> = changed.added.iter().map(|room| self.room_changed(room)).collect();
        Box::pin(async move {
            futures_util::future::join_all(subscribed).await;
            true
        })
    }

    fn release_here(&self, pid: &str, holder: &Holder, version: u64, park: bool) {
        if let Some(keeper) = &self.recovery {
            self.unkept(&keeper.release(pid, holder, version, park).emptied);
        }
    }

    fn take_here(&self, pid: &str, frontier: &Frontier) -> Option<Vec<Broadcast>> {
        match self.recovery.as_ref()?.take(pid, frontier) {
            Ok((missed, changed)) => {
                self.unkept(&changed.emptied);
                Some(missed)
            }
            Err(err) => {
                tracing::debug!(nsp = %self.name, %pid, error = %err, "session not recovered");
                None
            }
        }
    }
}

/// How the cluster's adapter reaches this namespace.
impl Emitter for Namespace {
    fn name(&self) -> &str {
        &self.name
    }

    fn deliver(&self, room: &str, stamp: Option<Stamp>, frames: &[Frame]) -> usize {
        self.deliver_local(room, stamp, frames)
    }

    fn presence_changed(&self, room: &str, change: &PresenceChange) {
        if let (Some(f), Some(me)) = (&self.on_presence, self.me.upgrade()) {
            f(&me, room, change);
        }
    }

    fn local_labels(&self, room: &str) -> Labels {
        Namespace::local_labels(self, room)
    }

    fn keeper(&self) -> Option<&Arc<Keeper>> {
        self.recovery.as_ref()
    }

    fn keep(&self, req: KeepRequest, holder: Holder, seed: Vec<Broadcast>) -> BoxFuture<'static, bool> {
        self.keep_here(req, holder, seed)
    }

    fn release(&self, pid: &str, holder: &Holder, version: u64, park: bool) {
        self.release_here(pid, holder, version, park);
    }

    fn find(&self, pid: &str) -> BoxFuture<'static, Option<(String, Vec<String>)>> {
        self.find_here(pid)
    }

    fn holds(&self, pid: &str, sid: &str) -> bool {
        self.socket(sid).is_some_and(|s| s.pid() == Some(pid))
    }

    fn take(&self, pid: &str, frontier: &Frontier) -> BoxFuture<'static, Option<Vec<Broadcast>>> {
        self.take_settled(pid, frontier)
    }

    fn unkept(&self, rooms: &[String]) {
        Namespace::unkept(self, rooms);
    }

    fn rekeep(&self, gone: &dyn Fn(&str) -> bool) {
        self.rekeep_sockets(gone);
    }
}

/// A room's members on this node, by socket id, and as one shared list.
///
/// Why the list: a broadcast used to collect the members into a `Vec` of its own (one
/// allocation, and a reference count taken and given back on every member's socket: two more
/// writes to each member's memory per delivery). The list is built by the first broadcast
/// after the membership changed and shared by every broadcast after it, for one count. A room
/// whose members change between every two broadcasts pays what it paid before.
#[derive(Default)]
struct Members {
    by_id: HashMap<Arc<str>, Arc<Socket>>,
    /// `by_id`'s sockets; emptied by every change, filled under the table's read lock.
    list: OnceLock<Arc<[Arc<Socket>]>>,
}

impl Members {
    fn insert(&mut self, sid: Arc<str>, socket: Arc<Socket>) {
        self.by_id.insert(sid, socket);
        self.list = OnceLock::new();
    }

    fn remove(&mut self, sid: &Arc<str>) {
        if self.by_id.remove(sid).is_some() {
            self.list = OnceLock::new();
        }
    }

    fn list(&self) -> Arc<[Arc<Socket>]> {
        self.list.get_or_init(|| self.by_id.values().cloned().collect()).clone()
    }

    /// Whether a member has a presence label (the room then has some, see
    /// [`Namespace::local_labels`]); the first member looked at has one, but for sockets of
    /// an application that labels none.
    fn any_labelled(&self) -> bool {
        self.by_id.values().any(|s| s.label().is_some())
    }
}

fn remove_member(table: &mut HashMap<Room, Members>, room: &Room, sid: &Arc<str>) {
    if let Some(members) = table.get_mut(room) {
        members.remove(sid);
        if members.by_id.is_empty() {
            table.remove(room);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Mutex, Weak};

    /// The other nodes, as far as publishing goes: notes how many broadcasts had been sent to
    /// members here each time one is queued to the other nodes. And, as a cluster's adapter
    /// does, which rooms it was told have members here.
    #[derive(Default)]
    struct Peers {
        ns: OnceLock<Weak<Namespace>>,
        sent_here_at_publish: Mutex<Vec<u64>>,
        rooms: Mutex<HashSet<String>>,
    }

    impl Adapter for Peers {
        fn room_changed(&self, _: &str, room: &str, any: bool, labels: &dyn Fn() -> Labels) -> BoxFuture<'static, ()> {
            // As the cluster's core: a room it knows of is only marked (its labels taken
            // later); a first join gives its labels, a last leave none.
            let known = self.rooms.lock().unwrap().contains(room);
            if !(any && known) {
                let labels = if any { labels() } else { Labels::from([]) };
                // Where a report made with no lock could be overtaken.
                for _ in 0..50 {
                    std::thread::yield_now();
                }
                let mut rooms = self.rooms.lock().unwrap();
                if labels.is_empty() {
                    rooms.remove(room);
                } else {
                    rooms.insert(room.to_owned());
                }
            }
            Box::pin(std::future::ready(()))
        }

        fn publish(&self, _: &str, _: &str, _: Option<Stamp>, _: &[Frame], _: &Arc<OnSent>) {
            let ns = self.ns.get().and_then(Weak::upgrade).expect("the namespace");
            self.sent_here_at_publish.lock().unwrap().push(ns.deliveries());
        }

        fn remote_labels(&self, _: &str, _: &str) -> Vec<String> {
            Vec::new()
        }

        fn holder(&self) -> Holder {
            Holder { node: "node1".into(), generation: 1 }
        }

        fn keeper_for(&self, _: &str, _: Option<&str>, _: Option<&str>) -> Option<String> {
            None
        }

        fn keep_at(&self, _: &str, _: &str, _: KeepRequest, _: Vec<Broadcast>) -> BoxFuture<'static, bool> {
            unreachable!("records are kept here")
        }

        fn release_at(&self, _: &str, _: &str, _: &str, _: u64, _: bool) {
            unreachable!("records are kept here")
        }

        fn seed_at(&self, _: &str, _: &str, _: &str, _: Vec<Broadcast>) -> BoxFuture<'static, ()> {
            unreachable!("records are kept here")
        }

        fn holds(&self, _: &Holder, _: &str, _: &str, _: &str) -> BoxFuture<'static, bool> {
            unreachable!("no restore here")
        }

        fn barrier(&self) -> BoxFuture<'static, ()> {
            unreachable!("no restore here")
        }

        fn find_parked(&self, _: &str, _: &str) -> BoxFuture<'static, Option<FoundSession>> {
            unreachable!("no restore here")
        }

        fn take_parked(&self, _: &str, _: &str, _: &str, _: &Frontier) -> BoxFuture<'static, Option<Vec<Broadcast>>> {
            unreachable!("no restore here")
        }
    }

    /// A socket restored here joins its rooms, then takes its record from its keeper once the
    /// keeper has what this node had queued to it. A broadcast published here while that runs
    /// must reach the socket one way or the other: if the socket joined too late to be listed
    /// among the members here, the push to the keeper must already be queued. So the push
    /// comes first. It used to come after the members here were sent it, and a restore that
    /// joined in between lost the broadcast: seen in the long crash test (RELIABILITY.md) once
    /// sending to the members here took milliseconds (direct writes, branch perf1c).
    #[tokio::test]
    async fn a_broadcast_is_queued_to_the_other_nodes_before_the_members_here_are_listed() {
        let ns = NamespaceBuilder::new("/t").recovery(RecoveryConfig::default()).build(Tasks::default());
        let peers = Arc::new(Peers::default());
        peers.ns.set(Arc::downgrade(&ns)).unwrap();
        let adapter: Arc<dyn Adapter> = peers.clone();
        ns.set_adapter(Arc::downgrade(&adapter));
        let socket = Socket::new("s1".into(), ns.clone(), crate::engineio::session::tests::session(8));
        ns.connect(&socket, &ConnectRequest { auth: Value::Null, query: Vec::new() }).unwrap();
        socket.join("r").expect("a new room").await;

        ns.emit_to_room("r", "m", Vec::new());
        assert_eq!(ns.deliveries(), 1, "the member here was sent it");
        assert_eq!(*peers.sent_here_at_publish.lock().unwrap(), [0], "queued to the other nodes first");
    }

    /// A join's entry in the room table is made after the socket lists the room; a leave that
    /// ran in between must not leave it there.
    #[tokio::test]
    async fn a_socket_that_no_longer_lists_a_room_is_not_added_to_its_members() {
        let ns = NamespaceBuilder::new("/t").build(Tasks::default());
        let socket = Socket::new("s1".into(), ns.clone(), crate::engineio::session::tests::session(8));
        ns.connect(&socket, &ConnectRequest { auth: Value::Null, query: Vec::new() }).unwrap();
        drop(ns.add_to_room(&"r".into(), &socket));
        assert!(ns.room_members("r").is_empty(), "left (or never joined): not a member");
        socket.join("r").expect("a new room").await;
        assert_eq!(ns.room_members("r").len(), 1);
    }

    /// A room's last member leaves on one thread while the next joins on another (their
    /// connections on two connection threads): the adapter must end up knowing the room has
    /// a member, whatever the order the two reports are made in.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_last_leave_and_a_first_join_at_once_leave_the_adapter_knowing_the_member() {
        let ns = NamespaceBuilder::new("/t").build(Tasks::default());
        let peers = Arc::new(Peers::default());
        let adapter: Arc<dyn Adapter> = peers.clone();
        ns.set_adapter(Arc::downgrade(&adapter));
        let [x, y] = ["x", "y"].map(|id| {
            let socket = Socket::new(id.into(), ns.clone(), crate::engineio::session::tests::session(8));
            assert!(socket.set_label(id));
            ns.connect(&socket, &ConnectRequest { auth: Value::Null, query: Vec::new() }).unwrap();
            socket
        });
        let known = || peers.rooms.lock().unwrap().contains("r");
        let rounds = 2000;
        let mut wrong = 0;
        let start = std::sync::Barrier::new(2);
        for _ in 0..rounds {
            drop(x.join("r").expect("not in the room"));
            assert!(known());
            std::thread::scope(|threads| {
                threads.spawn(|| {
                    start.wait();
                    assert!(x.leave("r"));
                });
                threads.spawn(|| {
                    start.wait();
                    drop(y.join("r").expect("not in the room"));
                });
            });
            assert_eq!(ns.room_members("r").len(), 1);
            wrong += usize::from(!known());
            assert!(y.leave("r"));
            assert!(!known());
        }
        assert_eq!(wrong, 0, "of {rounds} rounds, the adapter was left sure the room was empty in {wrong}");
    }

    /// A socket id is connected once: a second socket with it (two restores of one parked
    /// session) is refused, and the first keeps its rooms.
    #[tokio::test]
    async fn a_second_socket_with_a_connected_id_is_refused() {
        let ns = NamespaceBuilder::new("/t").build(Tasks::default());
        let [first, second] =
            [0, 1].map(|_| Socket::new("s1".into(), ns.clone(), crate::engineio::session::tests::session(8)));
        let req = ConnectRequest { auth: Value::Null, query: Vec::new() };
        ns.connect(&first, &req).unwrap();
        first.join("r").expect("a new room").await;
        assert!(ns.connect(&second, &req).is_err());
        second.on_closed("transport close");
        assert_eq!(ns.socket_count(), 1);
        assert_eq!(ns.room_members("r").len(), 1, "the first keeps its rooms");
    }

    /// A broadcast shares the room's member list; a join or a leave after it makes a new one.
    #[tokio::test]
    async fn the_member_list_a_broadcast_shares_follows_joins_and_leaves() {
        let ns = NamespaceBuilder::new("/t").build(Tasks::default());
        let sockets: Vec<_> = ["s1", "s2"]
            .into_iter()
            .map(|id| {
                let socket = Socket::new(id.into(), ns.clone(), crate::engineio::session::tests::session(8));
                ns.connect(&socket, &ConnectRequest { auth: Value::Null, query: Vec::new() }).unwrap();
                socket
            })
            .collect();
        sockets[0].join("r").expect("a new room").await;
        ns.emit_to_room("r", "m", Vec::new());
        assert_eq!(ns.deliveries(), 1);
        assert!(Arc::ptr_eq(&ns.room_members("r"), &ns.room_members("r")), "one list, shared");
        sockets[1].join("r").expect("a new room").await;
        ns.emit_to_room("r", "m", Vec::new());
        assert_eq!(ns.deliveries(), 3, "the joiner too");
        assert!(sockets[0].leave("r"));
        ns.emit_to_room("r", "m", Vec::new());
        assert_eq!(ns.deliveries(), 4, "not the leaver");
        assert_eq!(ns.room_members("r").iter().map(|s| s.id().to_string()).collect::<Vec<_>>(), ["s2"]);
    }
}
