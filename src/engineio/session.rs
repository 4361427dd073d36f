//! One Engine.IO session: its bounded outbound queue, its transport state and its heartbeat.
//!
//! A session is transport-agnostic. Outbound frames wait in a bounded queue that exactly one
//! reader drains at a time: a pending GET poll, or the WebSocket writer once upgraded. Inbound
//! packets are handed to the [`EngineHandler`] inline, in arrival order. The heartbeat is a
//! state machine ([`Session::on_timer`]) that the engine's one lifecycle task drives for all
//! its sessions (see `lifecycle`).

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::lifecycle::Lifecycle;
use super::packet::{Frame, Packet, PacketType, ProtocolVersion};
use super::queue::{Queue, Refused};
use super::request::{EngineQuery, TransportKind};

/// A session id: random, URL-safe, unguessable.
pub type Sid = Arc<str>;

/// What the application receives from a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Text(String),
    Binary(Bytes),
}

/// The most PING data a session echoes (clients send none, or `probe`).
pub const MAX_PING_DATA: usize = 64;

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent a CLOSE packet.
    ClientClose,
    /// No pong (v4) or no packet at all (v3) within the heartbeat deadline.
    PingTimeout,
    /// The client broke the protocol (malformed packet, overlapping requests, oversized payload).
    TransportError(&'static str),
    /// The WebSocket closed or failed.
    TransportClose,
    /// The outbound queue was full: the client does not read fast enough.
    QueueFull,
    /// The application closed the session.
    ServerClose,
    /// The node is shutting down.
    ServerShutdown,
}

impl CloseReason {
    /// The reason's wording in socket.io's disconnect reasons.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::ClientClose => "transport close",
            Self::PingTimeout => "ping timeout",
            Self::TransportError(_) => "transport error",
            Self::TransportClose => "transport close",
            Self::QueueFull => "outbound queue full",
            Self::ServerClose => "server namespace disconnect",
            Self::ServerShutdown => "server shutting down",
        }
    }
}

/// The application side of an engine: socket.io, or the echo server of the conformance suite.
/// Callbacks run inline on the request or connection that carried the packet, so they must not
/// block; work that waits is spawned, on tasks the handler owns and stops in `shutdown`.
pub trait EngineHandler: Send + Sync + 'static {
    fn on_open(&self, session: &Arc<Session>);
    fn on_message(&self, session: &Arc<Session>, message: Message);
    fn on_close(&self, session: &Arc<Session>, reason: CloseReason);
    /// The session's WebSocket now reaches this node through another one
    /// ([`Session::relay`]): a new session, or an upgrade.
    fn on_relay(&self, _session: &Arc<Session>) {}
    /// Resolves once every task the handler started has ended; the engine calls it from its
    /// own shutdown, after every session was closed and cleaned up. A handler that spawns
    /// nothing keeps the default.
    fn shutdown(&self) -> BoxFuture<'static, ()> {
        Box::pin(std::future::ready(()))
    }
}

/// The state of a polling → WebSocket upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum UpgradeState {
    None,
    /// A WebSocket with this sid arrived and waits for the probe.
    Claimed,
    /// The probe was answered: polls get NOOP until the upgrade completes.
    Probed,
    /// The session runs on its WebSocket.
    Done,
}

pub struct Session {
    sid: Sid,
    protocol: ProtocolVersion,
    /// The handshake request's query: applications read their parameters from it.
    query: EngineQuery,
    pub(crate) handler: Arc<dyn EngineHandler>,
    /// Producers (`send`) push here; the queue bound is the per-client memory bound. It
    /// refuses pushes once the session closed.
    pub(crate) queue: Queue,
    /// Held by the single active reader of `queue`: a GET poll or the WebSocket writer. A
    /// tokio mutex because the reader holds it while it waits for frames; `try_lock` failing
    /// means a duplicate poll.
    pub(crate) reader: tokio::sync::Mutex<()>,
    /// Transport and upgrade progress, which a pending poll learns of at once.
    pub(crate) upgrade: Upgrade,
    /// Woken when the session closes (see `closed`).
    closing: Notify,
    close_reason: OnceLock<CloseReason>,
    /// The engine's lifecycle: told when this session closes, so its cleanup runs.
    lifecycle: Arc<Lifecycle>,
    /// Ping interval and timeout.
    heartbeat: Heartbeat,
    /// Set while a POST is processed: overlapping POSTs break the protocol.
    pub(crate) posting: AtomicBool,
    /// Where the heartbeat stands. A std mutex: taken for a few loads and stores by the
    /// lifecycle task, a PONG (v4) or any packet (v3), never across an await.
    beat: Mutex<Beat>,
    /// The client closed over polling with no poll pending: its next poll is owed a NOOP.
    noop_owed: AtomicBool,
    pub(crate) noop_taken: Notify,
    /// The node relaying this session's WebSocket to this one, if it is relayed: that node's
    /// crash cuts the client off, so it must not also hold what the client needs to recover.
    relay: Mutex<Option<Arc<str>>>,
    /// The application's state for the session (see [`Session::app_state`]).
    app: OnceLock<Arc<dyn std::any::Any + Send + Sync>>,
}

/// The Engine.IO heartbeat's two durations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Heartbeat {
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
}

/// A session's heartbeat state.
#[derive(Debug)]
struct Beat {
    /// v4: when the next PING goes out, unless one awaits its PONG (`deadline` is set).
    next_ping: Instant,
    /// When the heartbeat gives up on this client: v4, pingTimeout after a PING (none while
    /// no PING is unanswered); v3, pingInterval + pingTimeout after the last packet. Checked
    /// on lookup as well as by the timer, so a request arriving just after the deadline never
    /// races the timer.
    deadline: Option<Instant>,
    /// v4: a PONG came while no PING was unanswered; it answers the next PING.
    pong_ahead: bool,
    /// When the lifecycle looks at this session next, and that entry's generation: a PONG
    /// that brings the next PING before it adds an earlier entry of a new generation, and
    /// the later one is dropped when it comes due.
    armed: (Instant, u32),
}

impl Session {
    /// A new session, which the caller schedules with `lifecycle` (see [`Session::start`]).
    pub(crate) fn new(
        sid: Sid,
        query: EngineQuery,
        transport: TransportKind,
        queue: usize,
        handler: Arc<dyn EngineHandler>,
        (heartbeat, lifecycle): (Heartbeat, Arc<Lifecycle>),
    ) -> Arc<Self> {
        let upgrade = match transport {
            TransportKind::Polling => UpgradeState::None,
            TransportKind::Websocket => UpgradeState::Done,
        };
        let now = Instant::now();
        let deadline = match query.protocol {
            ProtocolVersion::V4 => None,
            ProtocolVersion::V3 => Some(now + heartbeat.interval + heartbeat.timeout),
        };
        Arc::new(Self {
            sid,
            protocol: query.protocol,
            query,
            handler,
            queue: Queue::new(queue),
            reader: tokio::sync::Mutex::new(()),
            upgrade: Upgrade::new(upgrade),
            closing: Notify::new(),
            close_reason: OnceLock::new(),
            lifecycle,
            heartbeat,
            posting: AtomicBool::new(false),
            beat: Mutex::new(Beat {
                next_ping: now + heartbeat.interval,
                deadline,
                pong_ahead: false,
                armed: (deadline.unwrap_or(now + heartbeat.interval), 0),
            }),
            noop_owed: AtomicBool::new(false),
            noop_taken: Notify::new(),
            relay: Mutex::new(None),
            app: OnceLock::new(),
        })
    }

    /// Starts the heartbeat: the lifecycle looks at it when it is first due.
    pub(crate) fn start(self: &Arc<Self>) {
        let (at, generation) = self.beat().armed;
        self.lifecycle.schedule(at, generation, self);
    }

    /// What the application keeps for the whole session, across its namespace connections,
    /// made by `init` the first time it is asked for; `None` if a value of another type is
    /// kept.
    pub fn app_state<T: std::any::Any + Send + Sync>(&self, init: impl FnOnce() -> T) -> Option<Arc<T>> {
        self.app.get_or_init(|| Arc::new(init())).clone().downcast::<T>().ok()
    }

    /// The node relaying this session's WebSocket here, if any (see [`EngineHandler::on_relay`]).
    pub fn relay(&self) -> Option<Arc<str>> {
        self.relay.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn set_relay(&self, node: Arc<str>) {
        *self.relay.lock().unwrap_or_else(|e| e.into_inner()) = Some(node);
    }

    pub fn sid(&self) -> &Sid {
        &self.sid
    }

    pub fn protocol(&self) -> ProtocolVersion {
        self.protocol
    }

    /// The handshake request's query parameters.
    pub fn query(&self) -> &EngineQuery {
        &self.query
    }

    /// Whether polling responses may be binary (v3 clients without `b64=1`).
    pub fn supports_binary(&self) -> bool {
        !self.query.b64 && self.query.jsonp.is_none()
    }

    pub fn transport(&self) -> TransportKind {
        match self.upgrade.get() {
            UpgradeState::Done => TransportKind::Websocket,
            _ => TransportKind::Polling,
        }
    }

    /// Queues a frame. A full queue closes the session: a client that far behind is better
    /// reconnected than allowed to grow the server's memory or stall its senders.
    pub fn send(&self, frame: Frame) -> Result<(), SendError> {
        self.send_all(std::slice::from_ref(&frame))
    }

    /// Queues frames contiguously (a packet and its binary attachments), all or none.
    pub fn send_all(&self, frames: &[Frame]) -> Result<(), SendError> {
        self.push(&self.queue, frames)
    }

    /// The session's outbound queue as a handle, for a sender that sends often (a socket.io
    /// socket, on every broadcast) to keep beside its own state: [`Session::send_via`] then
    /// reaches the queue without reading the session first (a cache miss per delivery on a
    /// large fan-out).
    pub(crate) fn outbox(&self) -> Outbox {
        Outbox(self.queue.clone())
    }

    /// [`Session::send_all`] through this session's `outbox`. Only this session's: a full
    /// queue closes the session it is called on (checked in debug builds only, as a release
    /// check would read the session, which is what the outbox saves).
    pub(crate) fn send_via(&self, outbox: &Outbox, frames: &[Frame]) -> Result<(), SendError> {
        debug_assert!(outbox.0.same(&self.queue), "an outbox of another session");
        self.push(&outbox.0, frames)
    }

    fn push(&self, queue: &Queue, frames: &[Frame]) -> Result<(), SendError> {
        match queue.push_all(frames) {
            Ok(()) => Ok(()),
            Err(Refused::Closed) => Err(SendError::Closed),
            Err(Refused::Full) => {
                tracing::warn!(sid = %self.sid, "outbound queue full, closing session");
                self.close(CloseReason::QueueFull);
                Err(SendError::QueueFull)
            }
        }
    }

    /// Ends the session. Only the first reason counts; cleanup runs in the session's lifecycle task.
    pub fn close(&self, reason: CloseReason) {
        if self.close_reason.set(reason).is_ok() {
            self.queue.close();
            tracing::debug!(sid = %self.sid, reason = reason.as_str(), "closing session");
            self.closing.notify_waiters();
            self.lifecycle.closed(self.sid.clone());
        }
    }

    /// Whether the session is closed. Reads the close reason, set before the token is
    /// cancelled: one atomic load, where the token's check takes a lock.
    pub fn is_closed(&self) -> bool {
        self.close_reason.get().is_some()
    }

    /// Closes the session if its heartbeat deadline has passed; true if it is closed.
    pub(crate) fn check_expired(&self) -> bool {
        let expired = self.beat().deadline.is_some_and(|d| d <= Instant::now());
        if expired {
            self.close(CloseReason::PingTimeout);
        }
        self.is_closed()
    }

    /// True once, for the first poll after the client closed with no poll pending.
    pub(crate) fn take_owed_noop(&self) -> bool {
        let owed = self.noop_owed.swap(false, std::sync::atomic::Ordering::AcqRel);
        if owed {
            self.noop_taken.notify_one();
        }
        owed
    }

    pub(crate) fn owes_noop(&self) -> bool {
        self.noop_owed.load(std::sync::atomic::Ordering::Acquire)
    }

    fn beat(&self) -> std::sync::MutexGuard<'_, Beat> {
        self.beat.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn close_reason(&self) -> Option<CloseReason> {
        self.close_reason.get().copied()
    }

    /// Until the session is closed.
    pub(crate) async fn closed(&self) {
        wait_until(&self.closing, || self.is_closed()).await;
    }

    /// Handles one decoded inbound packet, whatever transport carried it.
    pub(crate) fn on_packet(self: &Arc<Self>, packet: Packet) {
        if self.protocol == ProtocolVersion::V3 {
            // v3 clients ping; any packet proves they are alive.
            self.beat().deadline = Some(Instant::now() + self.heartbeat.interval + self.heartbeat.timeout);
        }
        match packet {
            Packet::Close => {
                // The reference server answers the poll that accompanies a close with NOOP;
                // when that poll has not arrived yet, it is owed one.
                if self.transport() == TransportKind::Polling && self.reader.try_lock().is_ok() {
                    self.noop_owed.store(true, std::sync::atomic::Ordering::Release);
                }
                self.close(CloseReason::ClientClose)
            }
            // A PING's data comes back in the PONG: clients send none or `probe`. Echoed at any
            // size, a client that never reads its polls could fill its queue with its own bytes
            // (1,024 frames of up to `max_payload` each).
            Packet::Ping(data) if data.len() > MAX_PING_DATA => {
                self.close(CloseReason::TransportError("PING data too long"));
            }
            Packet::Ping(data) => {
                let _ = self.send(Frame::text(PacketType::Pong, &data));
            }
            Packet::Pong(_) => self.on_pong(),
            Packet::Message(text) => self.handler.on_message(self, Message::Text(text)),
            Packet::Binary(data) => self.handler.on_message(self, Message::Binary(data)),
            Packet::Open(_) | Packet::Upgrade | Packet::Noop => {}
        }
    }

    /// v4: a PONG answers the PING awaiting one; the next goes out pingInterval from now.
    /// One that comes while none is awaited answers the next PING in advance.
    fn on_pong(self: &Arc<Self>) {
        let mut beat = self.beat();
        if beat.deadline.take().is_none() {
            beat.pong_ahead = true;
            return;
        }
        let next_ping = Instant::now() + self.heartbeat.interval;
        beat.next_ping = next_ping;
        if next_ping < beat.armed.0 {
            // The entry is at the PING's deadline, later than the next PING (the interval is
            // shorter than the timeout): the next PING needs an entry of its own.
            let generation = beat.armed.1.wrapping_add(1);
            beat.armed = (next_ping, generation);
            drop(beat);
            self.lifecycle.schedule(next_ping, generation, self);
        }
    }

    /// The heartbeat, when the lifecycle looks at it at `now` for its entry of `generation`:
    /// sends the PING that is due (v4), or closes a session past its deadline. Returns when to
    /// look again (the entry's new time), `None` once the session is closed or if the entry
    /// was replaced by an earlier one. Deadlines are absolute (a PING's is pingTimeout after
    /// the time it was due), so timer rounding does not accumulate.
    pub(crate) fn on_timer(&self, now: Instant, generation: u32) -> Option<Instant> {
        if self.is_closed() {
            return None;
        }
        let mut beat = self.beat();
        if beat.armed.1 != generation {
            return None;
        }
        let ping = match (self.protocol, beat.deadline) {
            (_, Some(deadline)) if deadline <= now => {
                drop(beat);
                self.close(CloseReason::PingTimeout);
                return None;
            }
            (ProtocolVersion::V4, None) if beat.next_ping <= now => {
                if std::mem::take(&mut beat.pong_ahead) {
                    beat.next_ping = now + self.heartbeat.interval;
                } else {
                    beat.deadline = Some(beat.next_ping + self.heartbeat.timeout);
                }
                true
            }
            // Not due: a PONG moved the next PING (v4), or a packet the deadline (v3).
            _ => false,
        };
        let next = beat.deadline.unwrap_or(beat.next_ping);
        beat.armed.0 = next;
        drop(beat);
        if ping {
            // A full queue closes the session.
            self.send(Frame::control(PacketType::Ping)).ok()?;
        }
        Some(next)
    }
}

/// A session's upgrade state, and a wait for its changes: an atomic and a `Notify` in the
/// session, where a `watch` channel would allocate for every session (most never upgrade).
pub(crate) struct Upgrade {
    state: AtomicU8,
    changed: Notify,
}

impl Upgrade {
    fn new(state: UpgradeState) -> Self {
        Self { state: AtomicU8::new(state as u8), changed: Notify::new() }
    }

    pub(crate) fn get(&self) -> UpgradeState {
        match self.state.load(Ordering::Acquire) {
            0 => UpgradeState::None,
            1 => UpgradeState::Claimed,
            2 => UpgradeState::Probed,
            _ => UpgradeState::Done,
        }
    }

    pub(crate) fn set(&self, state: UpgradeState) {
        self.state.store(state as u8, Ordering::Release);
        self.changed.notify_waiters();
    }

    /// Claims the upgrade of a session that has none under way; false if it has one.
    pub(crate) fn claim(&self) -> bool {
        let (none, claimed) = (UpgradeState::None as u8, UpgradeState::Claimed as u8);
        let claimed = self.state.compare_exchange(none, claimed, Ordering::AcqRel, Ordering::Acquire).is_ok();
        if claimed {
            self.changed.notify_waiters();
        }
        claimed
    }

    /// Until the state satisfies `ready` (at once if it does); that state.
    pub(crate) async fn wait_for(&self, ready: impl Fn(UpgradeState) -> bool) -> UpgradeState {
        let mut state = self.get();
        wait_until(&self.changed, || {
            state = self.get();
            ready(state)
        })
        .await;
        state
    }
}

/// Until `done` holds, checked now and after each wake of `notify` (which its setter wakes
/// with `notify_waiters` after the change): registered before each check, so no change is
/// missed.
async fn wait_until(notify: &Notify, mut done: impl FnMut() -> bool) {
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if done() {
            return;
        }
        notified.await;
    }
}

/// A session's outbound queue, held by a frequent sender (see [`Session::outbox`]).
#[derive(Clone)]
pub(crate) struct Outbox(Queue);

impl Outbox {
    /// Starts loading what a send through this outbox reads (see `crate::prefetch`).
    pub(crate) fn prefetch(&self) {
        self.0.prefetch();
    }
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("session closed")]
    Closed,
    #[error("outbound queue full")]
    QueueFull,
}

/// A new random id: 15 random bytes, base64url, 20 characters.
pub fn new_random_id() -> String {
    use base64::Engine as _;
    let bytes: [u8; 15] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A new random session id, for engines used without a router.
pub(crate) fn new_sid() -> Sid {
    new_random_id().into()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A handler that ignores everything: for tests of sessions and of the engine above them.
    pub(crate) struct Nop;
    impl EngineHandler for Nop {
        fn on_open(&self, _: &Arc<Session>) {}
        fn on_message(&self, _: &Arc<Session>, _: Message) {}
        fn on_close(&self, _: &Arc<Session>, _: CloseReason) {}
    }

    const HEARTBEAT: Heartbeat =
        Heartbeat { interval: Duration::from_millis(300), timeout: Duration::from_millis(200) };

    fn session_of(eio: u8, queue: usize) -> Arc<Session> {
        let query = EngineQuery::parse(&format!("EIO={eio}&transport=polling")).unwrap();
        let lifecycle = Arc::new(Lifecycle::default());
        Session::new(new_sid(), query, TransportKind::Polling, queue, Arc::new(Nop), (HEARTBEAT, lifecycle))
    }

    pub(crate) fn session(queue: usize) -> Arc<Session> {
        session_of(4, queue)
    }

    #[test]
    fn sids_are_unique_and_url_safe() {
        let a = new_sid();
        assert_eq!(a.len(), 20);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_ne!(a, new_sid());
    }

    #[test]
    fn full_queue_closes_the_session() {
        let s = session(2);
        s.send(Frame::message("a")).unwrap();
        s.send(Frame::message("b")).unwrap();
        assert_eq!(s.send(Frame::message("c")), Err(SendError::QueueFull));
        assert_eq!(s.close_reason(), Some(CloseReason::QueueFull));
        assert_eq!(s.send(Frame::message("d")), Err(SendError::Closed));
        assert_eq!(s.send_via(&s.outbox(), &[Frame::message("e")]), Err(SendError::Closed));
    }

    #[test]
    fn a_full_queue_met_through_the_outbox_closes_the_session() {
        let s = session(1);
        let outbox = s.outbox();
        s.send_via(&outbox, &[Frame::message("a")]).unwrap();
        assert_eq!(s.send_via(&outbox, &[Frame::message("b")]), Err(SendError::QueueFull));
        assert_eq!(s.close_reason(), Some(CloseReason::QueueFull));
        assert_eq!(s.queue.try_recv(), Some(Frame::message("a")));
    }

    #[test]
    fn multi_frame_sends_are_all_or_nothing() {
        let s = session(2);
        s.send(Frame::message("a")).unwrap();
        assert_eq!(s.send_all(&[Frame::message("b"), Frame::message("c")]), Err(SendError::QueueFull));
        assert_eq!(s.queue.try_recv().unwrap(), Frame::message("a"));
        assert!(s.queue.try_recv().is_none());
    }

    #[test]
    fn first_close_reason_wins() {
        let s = session(1);
        s.close(CloseReason::PingTimeout);
        s.close(CloseReason::ClientClose);
        assert!(s.is_closed());
        assert_eq!(s.close_reason(), Some(CloseReason::PingTimeout));
    }

    /// The heartbeat as the lifecycle drives it: `on_timer` at the times it asks for.
    fn look(s: &Session, at: Instant) -> Option<Instant> {
        let generation = s.beat().armed.1;
        s.on_timer(at, generation)
    }

    #[tokio::test(start_paused = true)]
    async fn v4_pings_every_interval_and_times_out_without_pong() {
        let s = session(8);
        let t0 = s.beat().armed.0 - HEARTBEAT.interval;
        // Not due yet: looked at early, it asks for the PING's time again.
        assert_eq!(look(&s, t0), Some(t0 + HEARTBEAT.interval));
        assert!(s.queue.try_recv().is_none());
        // Due: a PING, and a deadline pingTimeout after the time it was due (not after `now`).
        let late = t0 + HEARTBEAT.interval + Duration::from_millis(7);
        assert_eq!(look(&s, late), Some(t0 + HEARTBEAT.interval + HEARTBEAT.timeout));
        assert_eq!(s.queue.try_recv().unwrap(), Frame::control(PacketType::Ping));
        assert!(!s.check_expired());
        // No PONG by the deadline: closed.
        assert_eq!(look(&s, t0 + HEARTBEAT.interval + HEARTBEAT.timeout), None);
        assert_eq!(s.close_reason(), Some(CloseReason::PingTimeout));
    }

    #[tokio::test(start_paused = true)]
    async fn v4_pong_moves_the_next_ping_to_an_interval_after_it() {
        let s = session(8);
        let ping_at = s.beat().armed.0;
        let deadline = look(&s, ping_at).unwrap();
        assert_eq!(s.queue.try_recv().unwrap(), Frame::control(PacketType::Ping));
        tokio::time::advance(HEARTBEAT.interval + Duration::from_millis(50)).await;
        let pong_at = Instant::now();
        s.on_packet(Packet::Pong(String::new()));
        // The entry at the old deadline finds no PING awaiting and moves to the next PING.
        assert_eq!(look(&s, deadline), Some(pong_at + HEARTBEAT.interval));
        assert!(s.queue.try_recv().is_none());
        assert!(!s.is_closed());
    }

    #[tokio::test(start_paused = true)]
    async fn v4_pong_before_a_shorter_interval_gets_an_earlier_entry() {
        let lifecycle = Arc::new(Lifecycle::default());
        let heartbeat = Heartbeat { interval: Duration::from_millis(100), timeout: Duration::from_millis(500) };
        let query = EngineQuery::parse("EIO=4&transport=websocket").unwrap();
        let s =
            Session::new(new_sid(), query, TransportKind::Websocket, 8, Arc::new(Nop), (heartbeat, lifecycle.clone()));
        s.start();
        tokio::time::advance(heartbeat.interval).await;
        lifecycle.run_due(Instant::now());
        assert_eq!(s.queue.try_recv().unwrap(), Frame::control(PacketType::Ping));
        assert_eq!(lifecycle.next_due(), Some(Instant::now() + heartbeat.timeout));
        s.on_packet(Packet::Pong(String::new()));
        // The next PING is due an interval after the PONG, before the old deadline's entry.
        let next_ping = Instant::now() + heartbeat.interval;
        assert_eq!(lifecycle.next_due(), Some(next_ping));
        tokio::time::advance(heartbeat.interval).await;
        lifecycle.run_due(Instant::now());
        assert_eq!(s.queue.try_recv().unwrap(), Frame::control(PacketType::Ping));
        // The old entry, when it comes due, is dropped: one entry per session remains.
        tokio::time::advance(heartbeat.timeout).await;
        s.on_packet(Packet::Pong(String::new()));
        lifecycle.run_due(Instant::now());
        assert_eq!(lifecycle.len(), 1);
        assert!(!s.is_closed());
    }

    #[tokio::test(start_paused = true)]
    async fn v4_pong_ahead_of_the_ping_answers_it() {
        let s = session(8);
        let ping_at = s.beat().armed.0;
        s.on_packet(Packet::Pong(String::new()));
        assert_eq!(look(&s, ping_at), Some(ping_at + HEARTBEAT.interval));
        assert_eq!(s.queue.try_recv().unwrap(), Frame::control(PacketType::Ping));
        assert!(!s.check_expired());
    }

    #[tokio::test(start_paused = true)]
    async fn v3_any_packet_moves_the_deadline_and_silence_closes() {
        let s = session_of(3, 8);
        let first = s.beat().armed.0;
        tokio::time::advance(HEARTBEAT.interval).await;
        s.on_packet(Packet::Message("hi".into()));
        let moved = Instant::now() + HEARTBEAT.interval + HEARTBEAT.timeout;
        // The server never pings a v3 client; the entry moves to the new deadline.
        assert_eq!(look(&s, first), Some(moved));
        assert!(s.queue.try_recv().is_none());
        assert_eq!(look(&s, moved), None);
        assert_eq!(s.close_reason(), Some(CloseReason::PingTimeout));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_stops_the_heartbeat() {
        let s = session(1);
        s.send(Frame::message("a")).unwrap();
        let ping_at = s.beat().armed.0;
        assert_eq!(look(&s, ping_at), None);
        assert_eq!(s.close_reason(), Some(CloseReason::QueueFull));
    }
}
