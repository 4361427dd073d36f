//! The Socket.IO server: sits on an Engine.IO engine as its [`EngineHandler`] and dispatches
//! each client's packets to namespaces, reassembling binary packets on the way.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use tracing::debug;

use super::adapter::FoundSession;
use super::namespace::{ConnectRequest, Event, Namespace, NamespaceBuilder};
use super::packet::{decode, encode, Packet, PacketType, Revision};
use super::recovery::Frontier;
use super::socket::{AckResponse, AckSender, Socket};
use crate::engineio::{CloseReason, EngineHandler, Frame, Message, ProtocolVersion, Session, Sid};
use crate::tasks::Tasks;

/// How often parked sessions are expired, and failed records sent again at the latest.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// The first pause before failed records are sent again (see `start_sweeper`).
const RETRY_FIRST: Duration = Duration::from_millis(100);

/// Socket.IO settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketIoConfig {
    /// A client that joins no namespace within this time is disconnected.
    pub connect_timeout: Duration,
    /// Most binary attachments one packet may announce.
    pub max_attachments: usize,
    /// Most bytes of attachments one packet may bring, all together (each is also bounded by
    /// the engine's `max_payload`, but ten of them would be ten times that).
    pub max_attachment_bytes: usize,
    /// Time a packet's attachments have to arrive, from its header: a client that announces
    /// attachments and never sends them holds the half packet no longer.
    pub attachment_timeout: Duration,
}

impl Default for SocketIoConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(45),
            max_attachments: 10,
            max_attachment_bytes: 1_000_000,
            attachment_timeout: Duration::from_secs(30),
        }
    }
}

/// One Engine.IO session's Socket.IO state.
struct Client {
    revision: Revision,
    /// Namespace name → socket. Usually one or two entries.
    sockets: Mutex<HashMap<String, Arc<Socket>>>,
    /// Namespaces whose CONNECT is being handled (with a `pid`, after an async look-up): a
    /// slot reserved before the look-up, so a repeated CONNECT is a duplicate at once instead
    /// of registering a second socket (a ghost member of the first one's rooms) later.
    connecting: Mutex<HashSet<String>>,
    /// A binary packet waiting for its attachments, and its deadline's timer.
    partial: Mutex<Attachments>,
}

/// The reassembly of one binary packet.
#[derive(Default)]
struct Attachments {
    pending: Option<Partial>,
    /// Whether a timer task watches `pending`'s deadline: one per client at most, however
    /// many binary packets it sends.
    timer: bool,
}

struct Partial {
    packet: Packet,
    binary: Vec<Bytes>,
    bytes: usize,
    deadline: tokio::time::Instant,
}

pub struct SocketIo {
    config: SocketIoConfig,
    namespaces: HashMap<String, Arc<Namespace>>,
    /// Engine session id → client state. A std lock: map operations only.
    clients: Mutex<HashMap<Sid, Arc<Client>>>,
    /// Started with the first session: drops expired parked sessions.
    sweeper: std::sync::OnceLock<()>,
    /// Every task of this server and its namespaces (restores, timers, the sweeper, the
    /// chat's joins); the engine's shutdown ends them through [`EngineHandler::shutdown`].
    tasks: Tasks,
}

impl SocketIo {
    pub fn new(config: SocketIoConfig, namespaces: Vec<NamespaceBuilder>) -> Arc<Self> {
        let tasks = Tasks::default();
        let namespaces = namespaces
            .into_iter()
            .map(|b| {
                let ns = b.build(tasks.clone());
                (ns.name().to_owned(), ns)
            })
            .collect();
        let (clients, sweeper) = (Mutex::new(HashMap::new()), std::sync::OnceLock::new());
        Arc::new(Self { config, namespaces, clients, sweeper, tasks })
    }

    pub fn namespace(&self, name: &str) -> Option<&Arc<Namespace>> {
        self.namespaces.get(name)
    }

    pub fn namespaces(&self) -> impl Iterator<Item = &Arc<Namespace>> {
        self.namespaces.values()
    }

    /// Expires parked sessions every second, and sends again the records that did not reach
    /// their keeper: at once when one fails (after a pause, doubled while they keep failing,
    /// up to a second), so a session is unprotected for as short a time as can be. Until the
    /// engine shuts down (or the namespaces are gone).
    fn start_sweeper(&self) {
        let namespaces: Vec<_> =
            self.namespaces.values().filter(|ns| ns.keeper().is_some()).map(Arc::downgrade).collect();
        if namespaces.is_empty() {
            return;
        }
        self.tasks.spawn_until_stopped(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            let mut pause = RETRY_FIRST;
            loop {
                // The namespaces share one adapter.
                let Some(failed) = namespaces.iter().find_map(std::sync::Weak::upgrade).map(|ns| ns.keep_failed())
                else {
                    return;
                };
                let failure = tokio::select! {
                    _ = tick.tick() => false,
                    _ = failed => true,
                };
                if failure {
                    // Not at once: a keeper that refuses now (it does not know this node
                    // yet, say) is not asked again in a loop.
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(SWEEP_EVERY);
                }
                let live: Vec<_> = namespaces.iter().filter_map(std::sync::Weak::upgrade).collect();
                let mut retried = 0;
                for ns in live {
                    if !failure {
                        ns.expire_parked();
                    }
                    retried += ns.retry_keeps();
                }
                if !failure && retried == 0 {
                    pause = RETRY_FIRST;
                }
            }
        });
    }

    fn client(&self, sid: &Sid) -> Option<Arc<Client>> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner()).get(sid).cloned()
    }

    fn on_packet(&self, session: &Arc<Session>, client: &Arc<Client>, packet: Packet, binary: Vec<Bytes>) {
        match packet.ty {
            PacketType::Connect => self.connect(session, client, packet),
            PacketType::Disconnect => {
                let socket = client.sockets.lock().unwrap_or_else(|e| e.into_inner()).remove(&packet.nsp);
                if let Some(socket) = socket {
                    socket.on_closed("client namespace disconnect");
                }
            }
            PacketType::Event | PacketType::BinaryEvent => {
                let Some(socket) = self.socket(client, &packet.nsp) else {
                    debug!(nsp = %packet.nsp, "event for a namespace the client is not connected to");
                    return;
                };
                let Some(Value::Array(mut args)) = packet.data else { return };
                let name = match args.remove(0) {
                    Value::String(name) => name,
                    _ => return,
                };
                let ack = packet.id.map(|id| AckSender::new(socket.clone(), id));
                socket.namespace().clone().dispatch(&socket, Event { name, args, binary }, ack);
            }
            PacketType::Ack | PacketType::BinaryAck => {
                let (Some(socket), Some(id), Some(Value::Array(args))) =
                    (self.socket(client, &packet.nsp), packet.id, packet.data)
                else {
                    return;
                };
                socket.resolve_ack(id, AckResponse { args, binary });
            }
            PacketType::ConnectError => {
                debug!("client sent CONNECT_ERROR, closing");
                session.close(CloseReason::TransportError("client sent CONNECT_ERROR"));
            }
        }
    }

    /// Holds a binary packet's header until its attachments arrive, before its deadline.
    fn await_attachments(&self, session: &Arc<Session>, client: &Arc<Client>, packet: Packet) {
        let deadline = tokio::time::Instant::now() + self.config.attachment_timeout;
        let mut partial = client.partial.lock().unwrap_or_else(|e| e.into_inner());
        partial.pending = Some(Partial { packet, binary: Vec::new(), bytes: 0, deadline });
        if !std::mem::replace(&mut partial.timer, true) {
            self.tasks.spawn(attachment_timer(session.clone(), client.clone()));
        }
    }

    /// Adds an attachment to the pending packet; returns the packet once complete, or why the
    /// session must close.
    fn attachment(&self, client: &Client, data: Bytes) -> Result<Option<(Packet, Vec<Bytes>)>, &'static str> {
        let mut partial = client.partial.lock().unwrap_or_else(|e| e.into_inner());
        let Some(pending) = partial.pending.as_mut() else { return Err("unexpected binary message") };
        pending.bytes += data.len();
        if pending.bytes > self.config.max_attachment_bytes {
            partial.pending = None;
            return Err("binary attachments too large");
        }
        pending.binary.push(data);
        if pending.binary.len() < pending.packet.attachments {
            return Ok(None);
        }
        Ok(partial.pending.take().map(|p| (p.packet, p.binary)))
    }

    /// The client's socket in `nsp`. One the server disconnected (the rate limit, the Admin
    /// UI) is dropped here: its packets go nowhere, as the client was told.
    fn socket(&self, client: &Client, nsp: &str) -> Option<Arc<Socket>> {
        let mut sockets = client.sockets.lock().unwrap_or_else(|e| e.into_inner());
        match sockets.get(nsp) {
            Some(socket) if socket.is_gone() => {
                sockets.remove(nsp);
                None
            }
            found => found.cloned(),
        }
    }

    fn connect(&self, session: &Arc<Session>, client: &Arc<Client>, packet: Packet) {
        let nsp = packet.nsp;
        let Some(ns) = self.namespaces.get(&nsp) else {
            // The answer names the namespace: one no server would have is not echoed (a client
            // that never reads its polls could fill its queue with its own bytes).
            if nsp.len() > MAX_UNKNOWN_NAMESPACE {
                session.close(CloseReason::TransportError("namespace name too long"));
                return;
            }
            let data = match client.revision {
                Revision::V5 => json!({ "message": "Invalid namespace" }),
                Revision::V4 => json!("Invalid namespace"),
            };
            // A failed send has closed the session already; nothing more to tell the client.
            let _ = session.send(Frame::message(&encode(&Packet::new(PacketType::ConnectError, &nsp, Some(data)))));
            return;
        };
        let Some(slot) = Slot::reserve(client, &nsp) else {
            debug!(%nsp, "duplicate CONNECT ignored");
            return;
        };
        let mut query = session.query().params.clone();
        if let Some(q) = &packet.query {
            query.extend(url::form_urlencoded::parse(q.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())));
        }
        let req = ConnectRequest { auth: packet.data.unwrap_or_else(|| json!({})), query };
        // A client coming back with its private session id: look for its parked session.
        let pid = req.auth.get("pid").and_then(Value::as_str).map(str::to_owned);
        if let (Some(pid), Some(_), Revision::V5) = (pid, ns.keeper(), client.revision) {
            let offset = req.auth.get("offset").and_then(Value::as_str).map(str::to_owned);
            let (session, client, ns) = (session.clone(), client.clone(), ns.clone());
            // Run to its end, even past the session's: a socket it registered is closed there.
            self.tasks.spawn(async move {
                restore(&session, &client, &ns, req, pid, offset).await;
                drop(slot);
            });
            return;
        }
        let socket = Socket::new(super::new_socket_id(), ns.clone(), session.clone());
        match ns.check_connect(&socket, &req) {
            None => {
                connect_new(client, &socket, &req, Ok(()));
                // The session may have closed meanwhile on another thread, its sockets closed
                // before this one was registered.
                close_if_left(session, client, ns);
            }
            Some(check) => {
                let (session, client) = (session.clone(), client.clone());
                // Off this turn: the connection's thread serves its other connections meanwhile.
                self.tasks.spawn(async move {
                    let checked = check.await;
                    if !session.is_closed() {
                        connect_new(&client, &socket, &req, checked);
                        close_if_left(&session, &client, socket.namespace());
                    }
                    drop(slot);
                });
            }
        }
    }
}

/// Connects a new socket (no `pid`) once its namespace's checks have run: `checked` is the
/// verdict of its slow check, if it had one.
fn connect_new(client: &Client, socket: &Arc<Socket>, req: &ConnectRequest, checked: Result<(), String>) {
    if !accept(client, socket, req, checked) {
        return;
    }
    let ns = socket.namespace();
    let pid = ns.keeper().map(|_| {
        let pid = crate::engineio::session::new_random_id();
        socket.set_recovery(pid.clone(), Frontier::default());
        drop(ns.keep(socket, None)); // its keeper learns of it now; its joins will wait
        pid
    });
    if socket.send_packet(&connect_answer(client.revision, socket, pid.as_deref())).is_ok() {
        ns.after_connect(socket);
    }
}

/// Closes the socket a CONNECT that awaited something registered in `ns`, if the client left
/// meanwhile: its other sockets were closed with its session, before this one was there.
fn close_if_left(session: &Session, client: &Client, ns: &Namespace) {
    if session.is_closed() {
        let ours = client.sockets.lock().unwrap_or_else(|e| e.into_inner()).remove(ns.name());
        if let Some(socket) = ours {
            socket.on_closed("transport close");
        }
    }
}

/// Closes the session of a client whose pending binary packet outlives its deadline; ends
/// when no packet is pending (the next one starts a new timer) or the session closes.
async fn attachment_timer(session: Arc<Session>, client: Arc<Client>) {
    loop {
        let deadline = {
            let mut partial = client.partial.lock().unwrap_or_else(|e| e.into_inner());
            match &partial.pending {
                Some(p) if p.deadline <= tokio::time::Instant::now() => {
                    partial.pending = None;
                    partial.timer = false;
                    drop(partial);
                    debug!(sid = %session.sid(), "binary attachments not received in time, closing");
                    session.close(CloseReason::TransportError("binary attachments timed out"));
                    return;
                }
                Some(p) => p.deadline,
                None => {
                    partial.timer = false;
                    return;
                }
            }
        };
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {}
            _ = session.closed() => return,
        }
    }
}

/// A client's namespace slot, reserved while its CONNECT is handled; freed on drop, by
/// which time the socket is registered (or refused).
struct Slot {
    client: Arc<Client>,
    nsp: String,
}

impl Slot {
    /// `None` if the client has a socket in `nsp` or a CONNECT to it in progress. The check
    /// and the reservation happen under the sockets lock, so two CONNECTs cannot both pass.
    fn reserve(client: &Arc<Client>, nsp: &str) -> Option<Self> {
        let sockets = client.sockets.lock().unwrap_or_else(|e| e.into_inner());
        // A socket the server disconnected leaves its entry until the client connects again.
        let free = sockets.get(nsp).is_none_or(|s| s.is_gone())
            && client.connecting.lock().unwrap_or_else(|e| e.into_inner()).insert(nsp.to_owned());
        drop(sockets);
        free.then(|| Self { client: client.clone(), nsp: nsp.to_owned() })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.client.connecting.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.nsp);
    }
}

/// Runs the namespace's connect handler if its slow check passed (`checked`); registers the
/// socket with its client, or refuses it.
fn accept(client: &Client, socket: &Arc<Socket>, req: &ConnectRequest, checked: Result<(), String>) -> bool {
    let ns = socket.namespace();
    match checked.and_then(|()| ns.connect(socket, req)) {
        Ok(()) => {
            client.sockets.lock().unwrap_or_else(|e| e.into_inner()).insert(ns.name().to_owned(), socket.clone());
            debug!(nsp = %ns.name(), socket = %socket.id(), "socket connected");
            true
        }
        Err(message) => {
            debug!(nsp = %ns.name(), %message, "connection refused");
            let data = match client.revision {
                Revision::V5 => json!({ "message": message }),
                Revision::V4 => json!(message),
            };
            let _ = socket.send_packet(&Packet::new(PacketType::ConnectError, ns.name(), Some(data)));
            false
        }
    }
}

/// The CONNECT answer: revision 5 names the socket (and its private session id, for recovery).
fn connect_answer(revision: Revision, socket: &Socket, pid: Option<&str>) -> Packet {
    let data = match (revision, pid) {
        (Revision::V5, Some(pid)) => Some(json!({ "sid": &**socket.id(), "pid": pid })),
        (Revision::V5, None) => Some(json!({ "sid": &**socket.id() })),
        (Revision::V4, _) => None,
    };
    Packet::new(PacketType::Connect, socket.namespace().name(), data)
}

/// Takes a found session; if it moved meanwhile (its keeper was leaving and handed it on),
/// finds it again, a couple of times.
async fn take_parked(
    ns: &Arc<Namespace>,
    found: &FoundSession,
    pid: &str,
    frontier: &Frontier,
) -> Option<Vec<super::recovery::Broadcast>> {
    let mut at = found.clone();
    for _ in 0..3 {
        if let Some(missed) = ns.take_parked(&at, pid, frontier).await {
            return Some(missed);
        }
        match ns.find_parked(pid).await {
            Some(again) if again.sid == found.sid && again.node != at.node => at = again,
            _ => return None,
        }
    }
    None
}

/// Connects a client that sent its `pid`: with its parked session (socket id, rooms, the
/// broadcasts it missed above the frontier its `offset` names) if one is found, else as a new
/// socket. The socket joins its rooms before the session is taken, holding live broadcasts
/// meanwhile; its new keeper has its record (and what it is about to be replayed) before the
/// client gets anything, so nothing is lost or sent twice, even if this node dies next.
async fn restore(
    session: &Arc<Session>,
    client: &Arc<Client>,
    ns: &Arc<Namespace>,
    req: ConnectRequest,
    pid: String,
    offset: Option<String>,
) {
    // An offset that is not ours (or says its frontier overflowed) cannot be recovered.
    let frontier = match &offset {
        None => Some(Frontier::default()),
        Some(offset) => Frontier::parse(offset),
    };
    let found = match &frontier {
        Some(_) => ns.find_parked(&pid).await,
        None => None,
    };
    let id = found.as_ref().map_or_else(super::new_socket_id, |f| f.sid.as_str().into());
    let socket = Socket::new(id, ns.clone(), session.clone());
    let checked = match ns.check_connect(&socket, &req) {
        Some(check) => check.await,
        None => Ok(()),
    };
    if session.is_closed() || !accept(client, &socket, &req, checked) {
        return;
    }
    socket.hold();
    let missed = match (&found, &frontier) {
        (Some(found), Some(frontier)) => {
            let joins: Vec<_> = found.rooms.iter().filter_map(|room| socket.join(room)).collect();
            futures_util::future::join_all(joins).await;
            take_parked(ns, found, &pid, frontier).await
        }
        _ => None,
    };
    let recovered = missed.is_some();
    if !recovered {
        debug!(nsp = %ns.name(), %pid, found = found.is_some(), "parked session not recovered");
    }
    let (pid, frontier) = match (recovered, frontier) {
        (true, Some(frontier)) => (pid, frontier),
        _ => (crate::engineio::session::new_random_id(), Frontier::default()),
    };
    socket.set_recovery(pid.clone(), frontier);
    let missed = missed.unwrap_or_default();
    ns.keep_with(&socket, None, missed.clone()).await;
    // What was published before the new keeper's subscription took effect and is on its way
    // here arrives now, held, so it goes to the keeper with the rest of what is held.
    ns.barrier().await;
    let first = vec![Frame::message(&encode(&connect_answer(client.revision, &socket, Some(&pid))))];
    debug!(nsp = %ns.name(), socket = %socket.id(), recovered, missed = missed.len(), %pid, "reconnected with a pid");
    let keeper = socket.keeper();
    // What is held now came before the keeper's subscription took effect: the keeper has it,
    // written to its connection, before the client can (a crash of this node then loses it for
    // neither), unless the write takes longer than a barrier may. All that is held is seeded
    // again on release (the keeper drops what it has): what came meanwhile too.
    let held = socket.held_now();
    let _ = tokio::time::timeout(SEED_WRITE_LIMIT, ns.seed_keeper(keeper.clone(), &pid, held)).await;
    let rest = |held| drop(ns.seed_keeper(keeper, &pid, held));
    if socket.release(first, missed, recovered, rest).is_ok() {
        ns.after_connect(&socket);
    }
    close_if_left(session, client, ns);
}

/// How long a restore waits for its held broadcasts to be written to its keeper's connection
/// before it releases them to the client anyway.
const SEED_WRITE_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The longest unknown namespace a CONNECT_ERROR names.
const MAX_UNKNOWN_NAMESPACE: usize = 256;

impl EngineHandler for SocketIo {
    fn on_relay(&self, session: &Arc<Session>) {
        let Some(client) = self.client(session.sid()) else { return };
        let sockets: Vec<_> = client.sockets.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        for socket in sockets {
            socket.namespace().avoid_relay(&socket);
        }
    }

    fn on_open(&self, session: &Arc<Session>) {
        self.sweeper.get_or_init(|| self.start_sweeper());
        let revision = match session.protocol() {
            ProtocolVersion::V3 => Revision::V4,
            ProtocolVersion::V4 => Revision::V5,
        };
        let client = Arc::new(Client {
            revision,
            sockets: Mutex::new(HashMap::new()),
            connecting: Mutex::new(HashSet::new()),
            partial: Mutex::new(Attachments::default()),
        });
        self.clients.lock().unwrap_or_else(|e| e.into_inner()).insert(session.sid().clone(), client.clone());
        if revision == Revision::V4 && self.namespaces.contains_key("/") {
            // Revision 4 clients are connected to the main namespace without asking.
            self.connect(session, &client, Packet::new(PacketType::Connect, "/", None));
        }
        let timeout = self.config.connect_timeout;
        let session = session.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(timeout) => {
                    if client.sockets.lock().unwrap_or_else(|e| e.into_inner()).is_empty() {
                        debug!(sid = %session.sid(), "no namespace joined in time, closing");
                        session.close(CloseReason::ServerClose);
                    }
                }
                _ = session.closed() => {}
            }
        });
    }

    fn on_message(&self, session: &Arc<Session>, message: Message) {
        let Some(client) = self.client(session.sid()) else { return };
        let complete = match message {
            Message::Text(text) => {
                if client.partial.lock().unwrap_or_else(|e| e.into_inner()).pending.is_some() {
                    debug!(sid = %session.sid(), "text packet while attachments were expected, closing");
                    session.close(CloseReason::TransportError("missing binary attachments"));
                    return;
                }
                match decode(&text, client.revision, self.config.max_attachments) {
                    Ok(packet) if packet.attachments > 0 => {
                        self.await_attachments(session, &client, packet);
                        None
                    }
                    Ok(packet) => Some((packet, Vec::new())),
                    Err(err) => {
                        debug!(sid = %session.sid(), error = %err, "invalid socket.io packet, closing");
                        session.close(CloseReason::TransportError("invalid socket.io packet"));
                        return;
                    }
                }
            }
            Message::Binary(data) => match self.attachment(&client, data) {
                Ok(complete) => complete,
                Err(reason) => {
                    debug!(sid = %session.sid(), reason, "closing");
                    session.close(CloseReason::TransportError(reason));
                    return;
                }
            },
        };
        if let Some((packet, binary)) = complete {
            self.on_packet(session, &client, packet, binary);
        }
    }

    fn shutdown(&self) -> futures_util::future::BoxFuture<'static, ()> {
        let tasks = self.tasks.clone();
        Box::pin(async move { tasks.shutdown().await })
    }

    fn on_close(&self, session: &Arc<Session>, reason: CloseReason) {
        let Some(client) = self.clients.lock().unwrap_or_else(|e| e.into_inner()).remove(session.sid()) else { return };
        let sockets: Vec<_> =
            client.sockets.lock().unwrap_or_else(|e| e.into_inner()).drain().map(|(_, s)| s).collect();
        for socket in sockets {
            socket.on_closed(reason.as_str());
        }
    }
}
