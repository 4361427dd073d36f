//! The Engine.IO server: one dispatch point for every request of one path (`/socket.io/`).
//!
//! [`Engine::handle_http`] answers handshakes, GET polls and POST pushes;
//! [`Engine::handle_websocket`] runs a WebSocket, either a new session or the upgrade of a
//! polling one. Neither knows about hyper: requests arrive as plain data and WebSockets as any
//! stream/sink of WebSocket messages, so both can come from a local socket or another node.

use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::debug;

use super::direct;
use super::error::EngineError;
use super::gate::Gate;
use super::lifecycle::Lifecycle;
use super::packet::{decode_binary, decode_text, Frame, Packet, PacketType, ProtocolVersion};
use super::payload::{self, PayloadFormat};
use super::queue::Pumped;
use super::request::{ContentType, EngineQuery, EngineRequest, EngineResponse, Method, TransportKind};
use super::session::{new_sid, CloseReason, EngineHandler, Heartbeat, Session, Sid, UpgradeState};
use crate::per_address::PerAddress;
use crate::tasks::Tasks;

/// Engine.IO settings, with the reference server's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    /// Largest payload (POST body, WebSocket message) accepted, in bytes.
    pub max_payload: usize,
    /// How long a WebSocket may take to complete an upgrade (probe, then UPGRADE).
    pub upgrade_timeout: Duration,
    /// Frames waiting per session before the session is closed as too slow.
    pub outbound_queue: usize,
    /// Most sessions one engine holds; handshakes beyond it are refused.
    pub max_sessions: usize,
    /// Most sessions from one client address (as the HTTP layer saw it); 0: no limit.
    pub max_sessions_per_address: usize,
    /// Most packets in one polling response. Clients cap what they decode (python-engineio
    /// refuses a payload of more than 16 packets and drops its session); the rest waits,
    /// in order, for the next poll.
    pub max_polling_packets: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_millis(25_000),
            ping_timeout: Duration::from_millis(20_000),
            max_payload: 1_000_000,
            upgrade_timeout: Duration::from_millis(10_000),
            outbound_queue: 1024,
            max_sessions: 100_000,
            max_polling_packets: 16,
            max_sessions_per_address: 0,
        }
    }
}

pub struct Engine {
    config: EngineConfig,
    handler: Arc<dyn EngineHandler>,
    /// Live sessions. A std lock: held only for map operations, never across an await.
    sessions: RwLock<HashMap<Sid, Arc<Session>>>,
    shutdown: CancellationToken,
    /// Sessions closed because their client fell `outbound_queue` frames, or 8 MiB, behind
    /// (metrics).
    queue_full_closes: AtomicU64,
    /// WebSockets being served: each holds a connection, so a client that stops reading must
    /// not keep one past its session.
    websockets: AtomicUsize,
    /// Sessions per client address, when `max_sessions_per_address` is set; its lock is
    /// taken inside the `sessions` lock when both are.
    per_address: PerAddress,
    /// Handshakes refused for `max_sessions_per_address` (metrics).
    refused_per_address: AtomicU64,
    /// Every session's heartbeat and cleanup, run by one task (see `lifecycle`).
    lifecycle: Arc<Lifecycle>,
    /// That task, started with the first session (an engine may be built outside a runtime)
    /// and stopped when the engine is dropped.
    lifecycle_task: OnceLock<AbortOnDropHandle<()>>,
    /// The closed sessions kept for their client's last poll; shutdown waits for them.
    tasks: Tasks,
}

impl Engine {
    pub fn new(config: EngineConfig, handler: Arc<dyn EngineHandler>) -> Arc<Self> {
        Arc::new(Self {
            config,
            handler,
            sessions: RwLock::new(HashMap::new()),
            shutdown: CancellationToken::new(),
            queue_full_closes: AtomicU64::new(0),
            websockets: AtomicUsize::new(0),
            per_address: PerAddress::default(),
            refused_per_address: AtomicU64::new(0),
            lifecycle: Arc::default(),
            lifecycle_task: OnceLock::new(),
            tasks: Tasks::default(),
        })
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// A live session by id.
    pub fn session(&self, sid: &str) -> Option<Arc<Session>> {
        self.lookup(sid).filter(|s| !s.check_expired())
    }

    /// A session by id, closed or not: closed ones stay registered until cleaned up.
    fn lookup(&self, sid: &str) -> Option<Arc<Session>> {
        self.sessions.read().unwrap_or_else(|e| e.into_inner()).get(sid).cloned()
    }

    pub fn session_count(&self) -> usize {
        self.sessions.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Open sessions (closed ones awaiting cleanup left out) per current transport.
    pub fn sessions_by_transport(&self) -> [(TransportKind, usize); 2] {
        let mut counts = [(TransportKind::Polling, 0), (TransportKind::Websocket, 0)];
        for s in self.sessions.read().unwrap_or_else(|e| e.into_inner()).values().filter(|s| !s.is_closed()) {
            if let Some((_, n)) = counts.iter_mut().find(|(t, _)| *t == s.transport()) {
                *n += 1;
            }
        }
        counts
    }

    /// How many sessions were closed because their outbound queue was full.
    pub fn queue_full_closes(&self) -> u64 {
        self.queue_full_closes.load(Ordering::Relaxed)
    }

    /// How many handshakes were refused because their address had its share of sessions.
    pub fn refused_per_address(&self) -> u64 {
        self.refused_per_address.load(Ordering::Relaxed)
    }

    /// Counts a new session of `addr` against `max_sessions_per_address`.
    fn admit_address(&self, addr: Option<IpAddr>) -> Result<(), EngineError> {
        let (Some(addr), max @ 1..) = (addr, self.config.max_sessions_per_address) else { return Ok(()) };
        if !self.per_address.acquire(addr, max) {
            self.refused_per_address.fetch_add(1, Ordering::Relaxed);
            debug!(%addr, max, "sessions per address reached, refusing handshake");
            return Err(EngineError::TooManySessionsFromAddress);
        }
        Ok(())
    }

    /// Gives back a session's place under `max_sessions_per_address`.
    fn release_address(&self, addr: Option<IpAddr>) {
        if let (Some(addr), 1..) = (addr, self.config.max_sessions_per_address) {
            self.per_address.release(addr);
        }
    }

    /// WebSockets this engine is serving right now (open or closing).
    pub fn websocket_count(&self) -> usize {
        self.websockets.load(Ordering::Relaxed)
    }

    /// Closes every session and refuses new ones. Returns once every session is cleaned up
    /// and every task of the engine and of its handler has ended.
    pub async fn shutdown(&self) {
        self.shutdown.cancel();
        let sessions: Vec<_> = self.sessions.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        for s in &sessions {
            s.close(CloseReason::ServerShutdown);
        }
        while self.session_count() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.handler.shutdown().await;
        self.tasks.shutdown().await;
    }

    /// Answers one polling request.
    pub async fn handle_http(self: &Arc<Self>, req: EngineRequest) -> EngineResponse {
        match self.dispatch_http(req).await {
            Ok(response) => response,
            Err(err) => {
                debug!(error = %err, "refused request");
                err.into_response()
            }
        }
    }

    async fn dispatch_http(self: &Arc<Self>, req: EngineRequest) -> Result<EngineResponse, EngineError> {
        if req.query.transport != TransportKind::Polling {
            return Err(EngineError::BadRequest("websocket transport without an upgrade"));
        }
        let Some(sid) = req.query.sid.clone() else {
            if req.method != Method::Get {
                return Err(EngineError::BadHandshakeMethod);
            }
            return self.handshake_polling(req.query, req.new_sid);
        };
        let session = match self.lookup(&sid) {
            Some(s) if !s.check_expired() => s,
            Some(s) if req.method == Method::Get && s.take_owed_noop() => {
                return Ok(polling_response(&s, &[Frame::control(PacketType::Noop)]));
            }
            _ => return Err(EngineError::UnknownSid),
        };
        if session.protocol() != req.query.protocol {
            return Err(EngineError::BadRequest("protocol version mismatch"));
        }
        if session.transport() != TransportKind::Polling {
            return Err(EngineError::BadRequest("transport mismatch"));
        }
        match req.method {
            Method::Get => self.poll(&session).await,
            Method::Post => self.push(&session, &req),
            Method::Other => Err(EngineError::BadRequest("bad method")),
        }
    }

    fn handshake_polling(
        self: &Arc<Self>,
        query: EngineQuery,
        sid: Option<String>,
    ) -> Result<EngineResponse, EngineError> {
        let session = self.open_session(query, TransportKind::Polling, sid)?;
        let open = self.open_frame(&session);
        Ok(polling_response(&session, &[open]))
    }

    /// Creates and registers a session and starts its lifecycle task.
    fn open_session(
        self: &Arc<Self>,
        query: EngineQuery,
        transport: TransportKind,
        sid: Option<String>,
    ) -> Result<Arc<Session>, EngineError> {
        if self.shutdown.is_cancelled() {
            return Err(EngineError::ShuttingDown);
        }
        let query = query.for_session()?;
        let sid: Sid = sid.map(Sid::from).unwrap_or_else(new_sid);
        if self.lookup(&sid).is_some() {
            return Err(EngineError::BadRequest("session id already in use"));
        }
        let heartbeat = Heartbeat { interval: self.config.ping_interval, timeout: self.config.ping_timeout };
        let session = Session::new(
            sid.clone(),
            query,
            transport,
            self.config.outbound_queue,
            self.handler.clone(),
            (heartbeat, self.lifecycle.clone()),
        );
        {
            let mut sessions = self.sessions.write().unwrap_or_else(|e| e.into_inner());
            // Again under the lock `shutdown` lists the sessions under: a session made as it
            // began is either in its list (and closed) or refused here, never left open.
            if self.shutdown.is_cancelled() {
                return Err(EngineError::ShuttingDown);
            }
            if sessions.len() >= self.config.max_sessions {
                tracing::warn!(max = self.config.max_sessions, "session limit reached, refusing handshake");
                return Err(EngineError::TooManySessions);
            }
            self.admit_address(session.query().client_addr)?;
            sessions.insert(sid.clone(), session.clone());
        }
        debug!(%sid, "Starting {sid} session");
        self.lifecycle_task.get_or_init(|| {
            let task = run_lifecycle(Arc::downgrade(self), self.lifecycle.clone());
            AbortOnDropHandle::new(tokio::spawn(task))
        });
        session.start();
        self.handler.on_open(&session);
        Ok(session)
    }

    /// After a session closed: the handler's `on_close`, then its removal, which waits for
    /// the client's last poll if it is owed a NOOP.
    fn clean_up(self: &Arc<Self>, sid: &str) {
        let Some(s) = self.lookup(sid) else { return };
        let reason = s.close_reason().unwrap_or(CloseReason::ServerClose);
        if reason == CloseReason::QueueFull {
            self.queue_full_closes.fetch_add(1, Ordering::Relaxed);
        }
        debug!(sid = %s.sid(), reason = reason.as_str(), "session closed");
        self.handler.on_close(&s, reason);
        if !s.owes_noop() {
            self.remove(&s);
            return;
        }
        // Keep the closed session just long enough for the client's last poll.
        let engine = self.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                _ = s.noop_taken.notified() => {}
                _ = tokio::time::sleep(engine.config.ping_timeout) => {}
                _ = engine.shutdown.cancelled() => {}
            }
            engine.remove(&s);
        });
    }

    fn remove(&self, session: &Session) {
        let mut sessions = self.sessions.write().unwrap_or_else(|e| e.into_inner());
        sessions.remove(session.sid());
        self.release_address(session.query().client_addr);
    }

    fn open_frame(&self, session: &Session) -> Frame {
        let upgrades: &[&str] = match session.transport() {
            TransportKind::Polling => &["websocket"],
            TransportKind::Websocket => &[],
        };
        let c = &self.config;
        let json = match session.protocol() {
            ProtocolVersion::V4 => serde_json::json!({
                "sid": &**session.sid(),
                "upgrades": upgrades,
                "pingInterval": c.ping_interval.as_millis() as u64,
                "pingTimeout": c.ping_timeout.as_millis() as u64,
                "maxPayload": c.max_payload,
            }),
            ProtocolVersion::V3 => serde_json::json!({
                "sid": &**session.sid(),
                "upgrades": upgrades,
                "pingInterval": c.ping_interval.as_millis() as u64,
                "pingTimeout": c.ping_timeout.as_millis() as u64,
            }),
        };
        Frame::text(PacketType::Open, &json.to_string())
    }

    /// A GET poll: waits for frames, then returns the queued frames that fit in one payload
    /// (`max_payload` bytes, `max_polling_packets` packets), oldest first.
    async fn poll(&self, session: &Arc<Session>) -> Result<EngineResponse, EngineError> {
        match session.upgrade.get() {
            UpgradeState::Probed => return Ok(polling_response(session, &[Frame::control(PacketType::Noop)])),
            UpgradeState::Done => return Err(EngineError::BadRequest("transport mismatch")),
            UpgradeState::None | UpgradeState::Claimed => {}
        }
        let Ok(_reader) = session.reader.try_lock() else {
            session.close(CloseReason::TransportError("overlapping GET polls"));
            return Err(EngineError::BadRequest("duplicate poll"));
        };
        let mut frames = Vec::new();
        tokio::select! {
            biased;
            frame = session.queue.recv() => frames.push(frame),
            _ = session.closed() => {}
            state = session.upgrade.wait_for(|s| matches!(s, UpgradeState::Probed | UpgradeState::Done)) => {
                // The probe releases a pending poll with NOOP; an upgrade that completed
                // while this poll waited makes it a request on a stale transport.
                if state == UpgradeState::Done {
                    return Err(EngineError::BadRequest("transport mismatch"));
                }
                frames.push(Frame::control(PacketType::Noop));
            }
        }
        let mut size = frames.iter().map(Frame::len).sum::<usize>();
        while size < self.config.max_payload && frames.len() < self.config.max_polling_packets {
            match session.queue.try_recv() {
                Some(frame) => {
                    size += frame.len();
                    frames.push(frame);
                }
                None => break,
            }
        }
        if frames.is_empty() {
            // Closed while waiting: a client-requested close ends the poll with NOOP, any
            // other close tells the client with a CLOSE packet.
            frames.push(match session.close_reason() {
                Some(CloseReason::ClientClose) => Frame::control(PacketType::Noop),
                _ => Frame::control(PacketType::Close),
            });
        }
        Ok(polling_response(session, &frames))
    }

    /// A POST push: decodes the payload and hands its packets to the session, in order.
    fn push(&self, session: &Arc<Session>, req: &EngineRequest) -> Result<EngineResponse, EngineError> {
        if req.body.len() > self.config.max_payload {
            session.close(CloseReason::TransportError("payload too large"));
            return Err(EngineError::PayloadTooLarge);
        }
        if session.posting.swap(true, std::sync::atomic::Ordering::AcqRel) {
            session.close(CloseReason::TransportError("overlapping POST requests"));
            return Err(EngineError::BadRequest("overlapping POST requests"));
        }
        let decoded = match req.query.jsonp {
            Some(_) => payload::decode_jsonp(&req.body),
            None => payload::decode(&req.body, session.protocol(), req.binary_body),
        };
        let result = match decoded {
            Ok(packets) => {
                // Nothing after a packet that closed the session (a CLOSE, then a CONNECT).
                for packet in packets {
                    if session.is_closed() {
                        break;
                    }
                    session.on_packet(packet);
                }
                Ok(EngineResponse { status: 200, content_type: ContentType::Html, body: Bytes::from_static(b"ok") })
            }
            Err(err) => {
                debug!(sid = %session.sid(), error = %err, "malformed payload, closing session");
                session.close(CloseReason::TransportError("malformed payload"));
                Err(EngineError::BadRequest("malformed payload"))
            }
        };
        session.posting.store(false, std::sync::atomic::Ordering::Release);
        result
    }

    /// Closes the session of an oversized POST whose body was never read in full.
    pub fn reject_oversized(&self, query: &EngineQuery) -> EngineResponse {
        if let Some(session) = query.sid.as_deref().and_then(|sid| self.session(sid)) {
            session.close(CloseReason::TransportError("payload too large"));
        }
        EngineError::PayloadTooLarge.into_response()
    }

    /// Runs an accepted WebSocket to its end: a new session, or the upgrade of a polling one.
    /// `new_sid` names a new session (as for [`EngineRequest::new_sid`]); `sink` and `stream`
    /// are the two halves of the client's WebSocket, local or carried from another node.
    ///
    /// The future returned is what the WebSocket's task holds for the connection's whole life,
    /// so every idle client pays its size. It is not an `async fn`: the arguments of one stay
    /// in its future until it ends. They go to the start (a handshake, or an upgrade), which is
    /// boxed and gives back what runs after it; the close is boxed too.
    pub fn handle_websocket<Si, St, E>(
        self: &Arc<Self>,
        query: EngineQuery,
        new_sid: Option<String>,
        relay: Option<Arc<str>>,
        sink: Si,
        stream: St,
    ) -> impl Future<Output = ()>
    where
        Si: Sink<WsMessage> + Send + Unpin,
        St: Stream<Item = Result<WsMessage, E>> + Send + Unpin,
    {
        let engine = self.clone();
        let start = Box::pin(self.clone().start_websocket(query, new_sid, sink, stream));
        async move {
            let _counted = Counted::new(&engine.websockets);
            let Some((session, mut sink, mut stream)) = start.await else { return };
            if let Some(node) = relay {
                session.set_relay(node);
                session.handler.on_relay(&session);
            }
            run_websocket(&session, &mut sink, &mut stream, engine.config.ping_timeout).await;
            Box::pin(engine.close_websocket(&mut sink, None)).await;
        }
    }

    /// A WebSocket's session: a new one, announced with OPEN, or a polling one it upgrades;
    /// with the WebSocket's halves, given back. `None` if there is none to run (the refusal or
    /// the failure was handled here).
    async fn start_websocket<Si, St, E>(
        self: Arc<Self>,
        mut query: EngineQuery,
        new_sid: Option<String>,
        mut sink: Si,
        mut stream: St,
    ) -> Option<(Arc<Session>, Si, St)>
    where
        Si: Sink<WsMessage> + Send + Unpin,
        St: Stream<Item = Result<WsMessage, E>> + Send + Unpin,
    {
        let direct = query.direct.take();
        let Some(sid) = query.sid.clone() else {
            let session = match self.open_session(query, TransportKind::Websocket, new_sid) {
                Ok(s) => s,
                Err(err) => {
                    debug!(error = %err, "refused WebSocket handshake");
                    self.close_websocket(&mut sink, Some(refusal(&err))).await;
                    return None;
                }
            };
            let open = self.open_frame(&session);
            if sink.send(open.into_websocket(session.protocol())).await.is_err() {
                session.close(CloseReason::TransportClose);
                return None;
            }
            Self::allow_direct(&session, direct);
            return Some((session, sink, stream));
        };
        match self.upgrade(&sid, &query, &mut sink, &mut stream).await {
            Some(session) => {
                Self::allow_direct(&session, direct);
                Some((session, sink, stream))
            }
            None => {
                self.close_websocket(&mut sink, None).await;
                None
            }
        }
    }

    /// Gives the session's queue the WebSocket's socket for pushes to write to while its
    /// pump waits (see `direct`); the pump turns that on once it runs.
    fn allow_direct(session: &Session, direct: Option<super::direct::Direct>) {
        if let Some(direct) = direct {
            session.queue.set_direct(direct);
        }
    }

    /// Sends a WebSocket close frame. A client that does not read gets at most the ping
    /// timeout: then the connection is dropped without the close handshake.
    async fn close_websocket<Si: Sink<WsMessage> + Unpin>(&self, sink: &mut Si, frame: Option<CloseFrame>) {
        let close = sink.send(WsMessage::Close(frame));
        if tokio::time::timeout(self.config.ping_timeout, close).await.is_err() {
            debug!("client did not take the close frame, dropping the connection");
        }
    }

    /// The upgrade handshake: `2probe` → `3probe`, pending polls released with NOOP, then `5`.
    async fn upgrade<Si, St, E>(
        &self,
        sid: &str,
        query: &EngineQuery,
        sink: &mut Si,
        stream: &mut St,
    ) -> Option<Arc<Session>>
    where
        Si: Sink<WsMessage> + Unpin,
        St: Stream<Item = Result<WsMessage, E>> + Unpin,
    {
        let session = self.session(sid)?;
        if session.protocol() != query.protocol {
            return None;
        }
        if !session.upgrade.claim() {
            debug!(%sid, "refusing second upgrade of the session");
            return None;
        }
        let deadline = tokio::time::Instant::now() + self.config.upgrade_timeout;
        // The whole upgrade, the probe's answer included, is bound by its deadline and ends
        // with the session: a client that probes and never reads would otherwise hold the
        // task and its connection on a write that never completes.
        let upgrade = async {
            let mut buffered = None;
            loop {
                let packet = match buffered.take() {
                    Some(packet) => packet,
                    None => next_packet(stream, session.protocol(), deadline).await?,
                };
                match packet {
                    // One probe is answered; another fails the upgrade.
                    Packet::Ping(data) if data == "probe" && session.upgrade.get() != UpgradeState::Probed => {
                        sink.send(WsMessage::Text("3probe".into())).await.ok()?;
                        // A client that already sent UPGRADE completes at once, so no poll
                        // sees the half-upgraded state (the reference server does the same by
                        // handling all buffered frames in one event-loop turn).
                        match next_packet_now(stream, session.protocol()) {
                            Some(Some(Packet::Upgrade)) => {
                                session.upgrade.set(UpgradeState::Done);
                                return Some(());
                            }
                            Some(Some(other)) => buffered = Some(other),
                            Some(None) => return None,
                            None => {}
                        }
                        session.upgrade.set(UpgradeState::Probed);
                    }
                    Packet::Upgrade if session.upgrade.get() == UpgradeState::Probed => {
                        session.upgrade.set(UpgradeState::Done);
                        return Some(());
                    }
                    Packet::Noop => {}
                    _ => return None,
                }
            }
        };
        let result = tokio::select! {
            upgraded = tokio::time::timeout_at(deadline, upgrade) => upgraded.ok().flatten(),
            _ = session.closed() => None,
        };
        match result {
            Some(()) if !session.is_closed() => Some(session),
            _ => {
                debug!(%sid, "upgrade failed, session stays on polling");
                session.upgrade.set(UpgradeState::None);
                None
            }
        }
    }
}

/// The engine's lifecycle task: cleans up the sessions that closed and runs the heartbeats
/// that are due, then waits for the next of either. Ends with the engine.
async fn run_lifecycle(engine: Weak<Engine>, lifecycle: Arc<Lifecycle>) {
    loop {
        {
            let Some(engine) = engine.upgrade() else { return };
            for sid in lifecycle.take_closed() {
                engine.clean_up(&sid);
            }
        }
        lifecycle.run_due(tokio::time::Instant::now());
        // Sessions the heartbeat closed are cleaned up in the next turn: they woke it.
        lifecycle.wait(lifecycle.next_due()).await;
    }
}

/// Reads the next Engine.IO packet from a WebSocket before `deadline`.
async fn next_packet<St, E>(
    stream: &mut St,
    protocol: ProtocolVersion,
    deadline: tokio::time::Instant,
) -> Option<Packet>
where
    St: Stream<Item = Result<WsMessage, E>> + Unpin,
{
    loop {
        let msg = tokio::time::timeout_at(deadline, stream.next()).await.ok()??.ok()?;
        return match msg {
            WsMessage::Text(t) => decode_text(&t, protocol).ok(),
            WsMessage::Binary(b) => decode_binary(b, protocol).ok(),
            WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_) => continue,
            WsMessage::Close(_) => None,
        };
    }
}

/// The next packet if one is already buffered: `None` if none is, `Some(None)` if the
/// WebSocket ended or sent garbage.
fn next_packet_now<St, E>(stream: &mut St, protocol: ProtocolVersion) -> Option<Option<Packet>>
where
    St: Stream<Item = Result<WsMessage, E>> + Unpin,
{
    use futures_util::FutureExt;
    loop {
        let msg = match stream.next().now_or_never()? {
            Some(Ok(msg)) => msg,
            _ => return Some(None),
        };
        return Some(match msg {
            WsMessage::Text(t) => decode_text(&t, protocol).ok(),
            WsMessage::Binary(b) => decode_binary(b, protocol).ok(),
            WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_) => continue,
            WsMessage::Close(_) => None,
        });
    }
}

/// Counts one WebSocket in a gauge for as long as it lives.
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    fn new(gauge: &'a AtomicUsize) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        Self(gauge)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The close frame refusing a WebSocket handshake: 1013 (try again later) when the node (or
/// the client's address) is full, 1001 when it is going away, 1008 otherwise; the reason is the Engine.IO message.
fn refusal(err: &EngineError) -> CloseFrame {
    let code = match err {
        EngineError::TooManySessions | EngineError::TooManySessionsFromAddress => CloseCode::Again,
        EngineError::ShuttingDown => CloseCode::Away,
        _ => CloseCode::Policy,
    };
    CloseFrame { code, reason: err.message().into() }
}

/// Pumps a session over its WebSocket until either side closes. A client that stops reading
/// blocks the writes: its queue then fills (or its heartbeat lapses), the session closes, and
/// the blocked write is abandoned, so a stalled connection never outlives its session.
/// `grace` bounds the delivery of what was queued before a close.
async fn run_websocket<Si, St, E>(session: &Arc<Session>, sink: &mut Si, stream: &mut St, grace: Duration)
where
    Si: Sink<WsMessage> + Unpin,
    St: Stream<Item = Result<WsMessage, E>> + Unpin,
{
    let queue = &session.queue;
    // Whichever way the pump ends, pushes stop writing to the socket before anything else
    // (a drain, the close frame) does.
    let _direct = StopDirect(queue);
    // One wait for the close, shared by every select below: registered with the session
    // once, not created and dropped again for every frame.
    let closed = session.closed();
    tokio::pin!(closed);
    // Waits for a poll still in flight to hand back the queue.
    let _reader = tokio::select! {
        reader = session.reader.lock() => reader,
        _ = &mut closed => return,
    };
    let protocol = session.protocol();
    // A pong tungstenite owes for a ping read before the pump ran goes out now: from here on,
    // its buffer is empty whenever the pump waits (see below).
    if sink.flush().await.is_err() {
        session.close(CloseReason::TransportClose);
        return;
    }
    // The task wakes for every queued frame: the read half and the close are polled again
    // only when they woke it (see `gate`).
    let (read_gate, close_gate) = (Gate::new(), Gate::new());
    loop {
        // Nothing is half-written here: while the pump waits, a push to an empty queue may
        // write its frame to the socket itself (see `direct`).
        queue.set_idle();
        tokio::select! {
            biased;
            first = queue.recv_pumped() => {
                // Everything queued goes out in one write (`http::websocket_config` gathers
                // fed frames until the flush): one syscall for a burst. A frame a push wrote
                // in part comes first, and is finished before anything else is written.
                let write = async {
                    let mut next = Some(first);
                    while let Some(item) = next {
                        match item {
                            Pumped::Frame(frame) => sink.feed(frame.into_websocket(protocol)).await.map_err(drop)?,
                            Pumped::Rest(rest, socket) => direct::write_all(&*socket, rest).await.map_err(drop)?,
                        }
                        next = queue.try_recv_pumped();
                    }
                    sink.flush().await.map_err(drop)
                };
                let sent = tokio::select! {
                    biased;
                    sent = write => sent.is_ok(),
                    _ = poll_fn(|cx| close_gate.poll(cx, |cx| closed.as_mut().poll(cx))) => return,
                };
                if !sent {
                    session.close(CloseReason::TransportClose);
                    return;
                }
            }
            msg = poll_fn(|cx| read_gate.poll(cx, |cx| stream.poll_next_unpin(cx))) => {
                let packet = match msg {
                    Some(Ok(WsMessage::Text(t))) => decode_text(&t, protocol),
                    Some(Ok(WsMessage::Binary(b))) => decode_binary(b, protocol),
                    Some(Ok(WsMessage::Ping(_))) => {
                        // tungstenite owes a pong, written with its next write or read: now,
                        // while no push writes, so that no read ever writes; after the end of
                        // a frame a push wrote in part, which the pong must not split.
                        let rest = queue.set_busy();
                        let pong = async {
                            if let Some((rest, socket)) = rest {
                                direct::write_all(&*socket, rest).await.map_err(drop)?;
                            }
                            sink.flush().await.map_err(drop)
                        };
                        if pong.await.is_err() {
                            session.close(CloseReason::TransportClose);
                            return;
                        }
                        continue;
                    }
                    Some(Ok(WsMessage::Pong(_) | WsMessage::Frame(_))) => continue,
                    Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => {
                        session.close(CloseReason::TransportClose);
                        return;
                    }
                };
                match packet {
                    Ok(packet) => session.on_packet(packet),
                    Err(err) => {
                        debug!(sid = %session.sid(), error = %err, "malformed packet, closing session");
                        session.close(CloseReason::TransportError("malformed packet"));
                    }
                }
            }
            _ = poll_fn(|cx| close_gate.poll(cx, |cx| closed.as_mut().poll(cx))) => {
                let rest = queue.stop_direct();
                if session.close_reason() == Some(CloseReason::QueueFull) {
                    // What is queued is what the client could not keep up with.
                    return;
                }
                // Deliver what was queued before the close (e.g. a socket.io DISCONNECT),
                // after the end of a frame a push wrote in part.
                let drain = async {
                    if let Some((rest, socket)) = rest {
                        direct::write_all(&*socket, rest).await.map_err(drop)?;
                    }
                    while let Some(frame) = queue.try_recv() {
                        sink.feed(frame.into_websocket(protocol)).await.map_err(drop)?;
                    }
                    sink.flush().await.map_err(drop)
                };
                // Boxed: it runs once, and inline it would size the pump's future.
                let _ = Box::pin(tokio::time::timeout(grace, drain)).await;
                return;
            }
        }
    }
}

/// Stops a queue's direct writes when dropped (see `Queue::stop_direct`).
struct StopDirect<'a>(&'a super::queue::Queue);

impl Drop for StopDirect<'_> {
    fn drop(&mut self) {
        self.0.stop_direct();
    }
}

fn polling_response(session: &Session, frames: &[Frame]) -> EngineResponse {
    if let Some(j) = session.query().jsonp {
        return EngineResponse {
            status: 200,
            content_type: ContentType::Javascript,
            body: payload::encode_jsonp(frames, j),
        };
    }
    let format = PayloadFormat { protocol: session.protocol(), supports_binary: session.supports_binary() };
    let encoded = payload::encode(frames, format);
    EngineResponse { status: 200, content_type: encoded.content_type(), body: encoded.body }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engineio::session::tests::Nop;

    fn get(query: &str) -> EngineRequest {
        EngineRequest {
            method: Method::Get,
            query: EngineQuery::parse(query).unwrap(),
            binary_body: false,
            body: Bytes::new(),
            new_sid: None,
        }
    }

    /// Polls once and decodes the response's packets.
    async fn poll(engine: &Arc<Engine>, session: &Session) -> Vec<Packet> {
        let eio = match session.protocol() {
            ProtocolVersion::V3 => 3,
            ProtocolVersion::V4 => 4,
        };
        let r = engine.handle_http(get(&format!("EIO={eio}&transport=polling&sid={}", session.sid()))).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        payload::decode(&r.body, session.protocol(), r.content_type == ContentType::Binary).unwrap()
    }

    /// The future a WebSocket's task holds for its whole life: every idle client pays its size.
    /// What runs once is boxed, so the pump sizes it (see `handle_websocket`). The sink and
    /// stream are those of production (a split `WebSocketStream`) over an in-memory pipe.
    #[tokio::test]
    async fn an_idle_websocket_holds_little_more_than_its_pump() {
        use tokio_tungstenite::tungstenite::protocol::Role;
        use tokio_tungstenite::WebSocketStream;
        let ws = || async {
            let (io, _peer) = tokio::io::duplex(64);
            WebSocketStream::from_raw_socket(io, Role::Server, None).await.split()
        };
        let engine = Engine::new(EngineConfig::default(), Arc::new(Nop));
        let (sink, stream) = ws().await;
        let query = EngineQuery::parse("EIO=4&transport=websocket").unwrap();
        let whole = std::mem::size_of_val(&engine.handle_websocket(query, None, None, sink, stream));
        let session = engine
            .open_session(EngineQuery::parse("EIO=4&transport=websocket").unwrap(), TransportKind::Websocket, None)
            .unwrap();
        let (mut sink, mut stream) = ws().await;
        let pump = std::mem::size_of_val(&run_websocket(&session, &mut sink, &mut stream, Duration::from_secs(1)));
        eprintln!("handle_websocket future: {whole} B, of which run_websocket: {pump} B");
        // Beside the pump: the halves it borrows (the sink 64 B), the session, the engine.
        assert!(whole <= pump + 128, "handle_websocket {whole} B, run_websocket {pump} B");
        session.close(CloseReason::ServerClose);
    }

    /// 40 queued frames (every fifth binary) leave in polls of at most `max_polling_packets`,
    /// in order, none lost, for both protocol revisions.
    #[tokio::test]
    async fn polls_carry_at_most_max_polling_packets() {
        for eio in [4, 3] {
            let config = EngineConfig { max_polling_packets: 16, ..EngineConfig::default() };
            let engine = Engine::new(config, Arc::new(Nop));
            engine.handle_http(get(&format!("EIO={eio}&transport=polling"))).await;
            let session = engine.sessions.read().unwrap().values().next().unwrap().clone();
            let sent: Vec<Frame> = (0..40)
                .map(|i| match i % 5 {
                    4 => Frame::Binary(Bytes::from(vec![i as u8; 3])),
                    _ => Frame::message(&format!("m{i}")),
                })
                .collect();
            for frame in &sent {
                session.send(frame.clone()).unwrap();
            }
            let mut sizes = Vec::new();
            let mut received = Vec::new();
            while received.len() < sent.len() {
                let packets = poll(&engine, &session).await;
                sizes.push(packets.len());
                received.extend(packets);
            }
            assert_eq!(sizes, [16, 16, 8], "EIO={eio}");
            let want: Vec<Packet> = (0..40)
                .map(|i| match i % 5 {
                    4 => Packet::Binary(Bytes::from(vec![i as u8; 3])),
                    _ => Packet::Message(format!("m{i}")),
                })
                .collect();
            assert_eq!(received, want, "EIO={eio}");
            session.close(CloseReason::ServerClose);
        }
    }
}
