//! One Engine.IO session: its bounded outbound queue, its transport state and its heartbeat.
//!
//! A session is transport-agnostic. Outbound frames wait in a bounded queue that exactly one
//! reader drains at a time: a pending GET poll, or the WebSocket writer once upgraded. Inbound
//! packets are handed to the [`EngineHandler`] inline, in arrival order.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use super::packet::{Frame, Packet, PacketType, ProtocolVersion};
use super::queue::Queue;
use super::request::{EngineQuery, TransportKind};

/// A session id: random, URL-safe, unguessable.
pub type Sid = Arc<str>;

/// What the application receives from a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Text(String),
    Binary(Bytes),
}

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
/// block; work that waits is spawned.
pub trait EngineHandler: Send + Sync + 'static {
    fn on_open(&self, session: &Arc<Session>);
    fn on_message(&self, session: &Arc<Session>, message: Message);
    fn on_close(&self, session: &Arc<Session>, reason: CloseReason);
}

/// The state of a polling → WebSocket upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// Producers (`send`) push here; the queue bound is the per-client memory bound.
    pub(crate) queue: Queue,
    /// Held by the single active reader of `queue`: a GET poll or the WebSocket writer. A
    /// tokio mutex because the reader holds it while it waits for frames; `try_lock` failing
    /// means a duplicate poll.
    pub(crate) reader: tokio::sync::Mutex<()>,
    /// Transport and upgrade progress; a watch so a pending poll learns of a probe at once.
    pub(crate) upgrade: watch::Sender<UpgradeState>,
    closed: CancellationToken,
    close_reason: OnceLock<CloseReason>,
    /// Signalled on a pong (v4) or any packet (v3): the heartbeat's proof of life.
    pub(crate) heartbeat: Notify,
    /// Set while a POST is processed: overlapping POSTs break the protocol.
    pub(crate) posting: AtomicBool,
    /// When the heartbeat gives up on this client. Checked on lookup as well as by the timer,
    /// so a request arriving just after the deadline never races the timer.
    deadline: Mutex<Option<tokio::time::Instant>>,
    /// The client closed over polling with no poll pending: its next poll is owed a NOOP.
    noop_owed: AtomicBool,
    pub(crate) noop_taken: Notify,
}

impl Session {
    pub(crate) fn new(
        sid: Sid,
        query: EngineQuery,
        transport: TransportKind,
        queue: usize,
        handler: Arc<dyn EngineHandler>,
    ) -> Arc<Self> {
        let upgrade = match transport {
            TransportKind::Polling => UpgradeState::None,
            TransportKind::Websocket => UpgradeState::Done,
        };
        Arc::new(Self {
            sid,
            protocol: query.protocol,
            query,
            handler,
            queue: Queue::new(queue),
            reader: tokio::sync::Mutex::new(()),
            upgrade: watch::Sender::new(upgrade),
            closed: CancellationToken::new(),
            close_reason: OnceLock::new(),
            heartbeat: Notify::new(),
            posting: AtomicBool::new(false),
            deadline: Mutex::new(None),
            noop_owed: AtomicBool::new(false),
            noop_taken: Notify::new(),
        })
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
        match *self.upgrade.borrow() {
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
        if self.is_closed() {
            return Err(SendError::Closed);
        }
        if self.queue.push_all(frames).is_err() {
            tracing::warn!(sid = %self.sid, "outbound queue full, closing session");
            self.close(CloseReason::QueueFull);
            return Err(SendError::QueueFull);
        }
        Ok(())
    }

    /// Ends the session. Only the first reason counts; cleanup runs in the session's lifecycle task.
    pub fn close(&self, reason: CloseReason) {
        if self.close_reason.set(reason).is_ok() {
            tracing::debug!(sid = %self.sid, reason = reason.as_str(), "closing session");
            self.closed.cancel();
        }
    }

    /// Whether the session is closed. Reads the close reason, set before the token is
    /// cancelled: one atomic load, where the token's check takes a lock (this runs for every
    /// frame queued).
    pub fn is_closed(&self) -> bool {
        self.close_reason.get().is_some()
    }

    /// Closes the session if its heartbeat deadline has passed; true if it is closed.
    pub(crate) fn check_expired(&self) -> bool {
        let expired =
            self.deadline.lock().unwrap_or_else(|e| e.into_inner()).is_some_and(|d| d <= tokio::time::Instant::now());
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

    fn set_deadline(&self, deadline: Option<tokio::time::Instant>) {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner()) = deadline;
    }

    pub fn close_reason(&self) -> Option<CloseReason> {
        self.close_reason.get().copied()
    }

    pub(crate) async fn closed(&self) {
        self.closed.cancelled().await
    }

    /// Handles one decoded inbound packet, whatever transport carried it.
    pub(crate) fn on_packet(self: &Arc<Self>, packet: Packet) {
        if self.protocol == ProtocolVersion::V3 {
            // v3 clients ping; any packet proves they are alive.
            self.heartbeat.notify_one();
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
            Packet::Ping(data) => {
                let _ = self.send(Frame::text(PacketType::Pong, &data));
            }
            Packet::Pong(_) => self.heartbeat.notify_one(),
            Packet::Message(text) => self.handler.on_message(self, Message::Text(text)),
            Packet::Binary(data) => self.handler.on_message(self, Message::Binary(data)),
            Packet::Open(_) | Packet::Upgrade | Packet::Noop => {}
        }
    }

    /// Runs the heartbeat until the session closes. Deadlines are absolute, so timer
    /// rounding does not accumulate across the ping and pong waits.
    pub(crate) async fn heartbeat(&self, interval: Duration, timeout: Duration) {
        use tokio::time::{sleep_until, Instant};
        let mut next_ping = Instant::now() + interval;
        loop {
            match self.protocol {
                ProtocolVersion::V4 => {
                    tokio::select! {
                        _ = sleep_until(next_ping) => {}
                        _ = self.closed() => return,
                    }
                    let deadline = next_ping + timeout;
                    self.set_deadline(Some(deadline));
                    if self.send(Frame::control(PacketType::Ping)).is_err() {
                        return;
                    }
                    tokio::select! {
                        _ = self.heartbeat.notified() => {
                            self.set_deadline(None);
                            next_ping = Instant::now() + interval;
                        }
                        _ = sleep_until(deadline) => self.close(CloseReason::PingTimeout),
                        _ = self.closed() => return,
                    }
                }
                ProtocolVersion::V3 => {
                    let deadline = Instant::now() + interval + timeout;
                    self.set_deadline(Some(deadline));
                    tokio::select! {
                        _ = self.heartbeat.notified() => {}
                        _ = sleep_until(deadline) => self.close(CloseReason::PingTimeout),
                        _ = self.closed() => return,
                    }
                }
            }
        }
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

    fn session(queue: usize) -> Arc<Session> {
        let query = EngineQuery::parse("EIO=4&transport=polling").unwrap();
        Session::new(new_sid(), query, TransportKind::Polling, queue, Arc::new(Nop))
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

    #[tokio::test(start_paused = true)]
    async fn v4_heartbeat_times_out_without_pong() {
        let s = session(8);
        s.heartbeat(Duration::from_millis(300), Duration::from_millis(200)).await;
        assert_eq!(s.close_reason(), Some(CloseReason::PingTimeout));
        assert_eq!(s.queue.try_recv().unwrap(), Frame::control(PacketType::Ping));
    }
}
