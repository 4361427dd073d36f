//! A socket: one client connected to one namespace, over one Engine.IO session.

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::oneshot;

use super::namespace::{Namespace, Room};
use super::packet::{encode, Packet, PacketType};
use super::recovery::{with_offset, Broadcast, Frontier, KeepRequest, RoomsUpdate, Stamp};
use crate::engineio::{Frame, Outbox, SendError, Session};

/// What a client answered to an emit with an ack.
#[derive(Debug, Clone, PartialEq)]
pub struct AckResponse {
    pub args: Vec<Value>,
    pub binary: Vec<Bytes>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    #[error("no acknowledgement within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Send(#[from] SendError),
    #[error("socket disconnected before acknowledging")]
    Disconnected,
}

/// Live broadcasts a restoring socket holds at most (see [`Socket::hold`]).
const MAX_HELD: usize = 10_000;

/// Live broadcasts waiting for a restore (see [`Socket::hold`]).
type Held = Vec<(Option<Stamp>, Vec<Frame>)>;

/// The stamped broadcasts of `held`, in order: what a keeper is seeded with.
fn stamped(held: &[(Option<Stamp>, Vec<Frame>)]) -> Vec<Broadcast> {
    held.iter().filter_map(|(stamp, frames)| stamp.map(|s| (s, frames.clone()))).collect()
}

/// A socket's side of recovery, and its outgoing broadcasts while it is restored. One lock:
/// a broadcast is checked against the frontier, given its offset and queued under it, so the
/// offsets follow the order the client gets them in. `repr(C)`: what every broadcast reads
/// (`held`, `frontier`) first, next to the lock (see [`Socket`]).
#[derive(Default)]
#[repr(C)]
struct Track {
    /// While a restored socket's missed broadcasts are gathered, live ones wait here, so the
    /// client gets CONNECT, then what it missed, then the rest. Boxed: one word in the line
    /// every delivery reads, for a state that is rare and short.
    held: Option<Box<Held>>,
    /// What the client was sent (see [`Frontier`]); tracked once the socket has a pid.
    frontier: Frontier,
    /// The node keeping this socket's record (`None`: this one, or not kept yet).
    keeper: Option<String>,
    /// The version of the record last sent to the keeper.
    version: u64,
    /// The keeper the whole record was last sent to (`Some(None)`: this node): changes to it
    /// go as changes, anything else gets the whole record.
    whole_at: Option<Option<String>>,
}

/// `repr(C)`, hot fields first: a room broadcast reads `outbox`, `pid` and `track` of every
/// member, so these sit in the allocation's first cache lines instead of wherever the compiler
/// put them among the cold ones (each extra line a miss per delivery on a large fan-out).
/// `outbox` shares the first line with the `Arc`'s count, which the room's member list just
/// wrote: the fan-out reads it there to fetch the next member's queue early
/// ([`Socket::prefetch_broadcast`]).
#[repr(C)]
pub struct Socket {
    /// The session's queue, reached without reading the session (see [`Session::outbox`]).
    outbox: Outbox,
    session: Arc<Session>,
    /// Connection state recovery: the private session id the client was given.
    pid: OnceLock<String>,
    track: Mutex<Track>,
    id: Arc<str>,
    ns: Arc<Namespace>,
    /// Rooms this socket joined; the namespace's room table is the reverse index.
    rooms: Mutex<HashSet<Room>>,
    /// Server → client acks waiting for the client's answer.
    pending_acks: Mutex<HashMap<u64, oneshot::Sender<AckResponse>>>,
    next_ack: AtomicU64,
    /// Application data attached at connect (e.g. the chat's user name).
    data: OnceLock<Box<dyn Any + Send + Sync>>,
    /// The name this socket shows in room presence lists, cluster-wide.
    label: OnceLock<Arc<str>>,
    /// Whether the client got its earlier session back.
    recovered: AtomicBool,
    /// Set once the socket leaves its namespace (either side's DISCONNECT, or its session
    /// closing): its client's entry for the namespace is then stale, and is dropped at its
    /// next use (see `socketio::server`).
    gone: AtomicBool,
    /// When the socket was created (the Admin UI shows it).
    connected_at: std::time::SystemTime,
}

impl Socket {
    pub(crate) fn new(id: Arc<str>, ns: Arc<Namespace>, session: Arc<Session>) -> Arc<Self> {
        Arc::new(Self {
            id,
            ns,
            outbox: session.outbox(),
            session,
            rooms: Mutex::new(HashSet::new()),
            pending_acks: Mutex::new(HashMap::new()),
            next_ack: AtomicU64::new(0),
            data: OnceLock::new(),
            label: OnceLock::new(),
            pid: OnceLock::new(),
            recovered: AtomicBool::new(false),
            gone: AtomicBool::new(false),
            track: Mutex::new(Track::default()),
            connected_at: std::time::SystemTime::now(),
        })
    }

    fn track(&self) -> std::sync::MutexGuard<'_, Track> {
        self.track.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The private session id (`pid`) the client was given for recovery, if enabled.
    pub fn pid(&self) -> Option<&str> {
        self.pid.get().map(String::as_str)
    }

    /// Gives the socket its pid, and what its client was sent already (a restored client's
    /// frontier): from now on every broadcast carries the socket's offset.
    pub(crate) fn set_recovery(&self, pid: String, frontier: Frontier) {
        let mut track = self.track();
        if self.pid.set(pid).is_ok() {
            track.frontier = frontier;
        }
    }

    /// Whether this connection recovered an earlier session (its id, rooms and missed
    /// broadcasts), like socket.io's `socket.recovered`.
    pub fn recovered(&self) -> bool {
        self.recovered.load(Ordering::Relaxed)
    }

    /// The socket's record for its keeper, with a new version, and the keeper to send it to:
    /// `choose` picks one given the current one (`None` in both: this node). `change` is the
    /// room joined or left (`None`: send the whole record); a keeper that has not had the whole
    /// record gets it whatever the change.
    pub(crate) fn next_record(
        &self,
        change: Option<RoomsUpdate>,
        choose: impl FnOnce(Option<&str>) -> Option<String>,
    ) -> Option<(KeepRequest, Option<String>)> {
        let pid = self.pid.get()?;
        let mut track = self.track();
        track.keeper = choose(track.keeper.as_deref());
        track.version += 1;
        let rooms = match change {
            Some(change) if track.whole_at.as_ref() == Some(&track.keeper) => change,
            _ => {
                track.whole_at = Some(track.keeper.clone());
                RoomsUpdate::All(
                    self.rooms.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|r| r.to_string()).collect(),
                )
            }
        };
        let req = KeepRequest { pid: pid.clone(), sid: self.id.to_string(), rooms, version: track.version };
        Some((req, track.keeper.clone()))
    }

    /// The version of the socket's record last sent.
    pub(crate) fn record_version(&self) -> u64 {
        self.track().version
    }

    /// The node keeping this socket's record (`None`: this one).
    pub(crate) fn keeper(&self) -> Option<String> {
        self.track().keeper.clone()
    }

    /// Holds live broadcasts until [`Socket::release`].
    pub(crate) fn hold(&self) {
        self.track().held = Some(Box::default());
    }

    /// The stamped broadcasts held so far, in the order they came (see [`Socket::release`]).
    pub(crate) fn held_now(&self) -> Vec<Broadcast> {
        stamped(self.track().held.as_deref().map(Vec::as_slice).unwrap_or_default())
    }

    /// Sends `first` (the CONNECT answer), then `missed`, then the held broadcasts, each
    /// broadcast once and with its offset, and stops holding. `before` sees the held
    /// broadcasts with a stamp before any of it is queued (the keeper must have them before
    /// the client can).
    pub(crate) fn release(
        &self,
        first: Vec<Frame>,
        missed: Vec<Broadcast>,
        recovered: bool,
        before: impl FnOnce(Vec<Broadcast>),
    ) -> Result<(), SendError> {
        let mut track = self.track();
        let waiting = track.held.take().map(|held| *held).unwrap_or_default();
        self.recovered.store(recovered, Ordering::Relaxed);
        before(stamped(&waiting));
        self.send_frames(&first)?;
        // Each a broadcast of its own: nothing spliced is shared between them.
        for (stamp, frames) in missed {
            self.send_tracked(&mut track, Some(stamp), &frames, &mut None)?;
        }
        for (stamp, frames) in waiting {
            self.send_tracked(&mut track, stamp, &frames, &mut None)?;
        }
        Ok(())
    }

    /// Queues a room broadcast (with its stamp, if recovery is on) for the client. `spliced`
    /// carries the last socket's EVENT frame with its offset from one member to the next:
    /// members that were sent the same (the usual case in a room) share it.
    pub(crate) fn send_broadcast(
        &self,
        stamp: Option<Stamp>,
        frames: &[Frame],
        spliced: &mut Option<(Frontier, Frame)>,
    ) -> Result<(), SendError> {
        let mut track = self.track();
        if let Some(held) = track.held.as_mut() {
            if held.len() >= MAX_HELD {
                // A restore that takes this long is not coming back in time.
                self.session.close(crate::engineio::CloseReason::QueueFull);
                return Err(SendError::Closed);
            }
            held.push((stamp, frames.to_vec()));
            return Ok(());
        }
        self.send_tracked(&mut track, stamp, frames, spliced)
    }

    /// Starts loading what a broadcast to this socket reads (see `crate::prefetch`): the
    /// socket's hot fields, and its queue's state, whose address is in the socket's first
    /// line, in the cache once the room's member list was taken (it counted its reference).
    pub(crate) fn prefetch_broadcast(&self) {
        crate::prefetch::lines(self as *const Self, std::mem::offset_of!(Self, id));
        self.outbox.prefetch();
    }

    /// Sends a broadcast unless the client has it; a socket with a pid gets it with its offset
    /// (the EVENT frame from `spliced` if the socket before it, sent the same, made it; see
    /// [`Socket::send_broadcast`]), then any attachments as they are.
    fn send_tracked(
        &self,
        track: &mut Track,
        stamp: Option<Stamp>,
        frames: &[Frame],
        spliced: &mut Option<(Frontier, Frame)>,
    ) -> Result<(), SendError> {
        let (Some(stamp), Some(_), Some((first, rest))) = (stamp, self.pid.get(), frames.split_first()) else {
            return self.send_frames(frames);
        };
        if !track.frontier.admit(stamp) {
            return Ok(()); // sent already (a restore's replay and a live copy)
        }
        let event = match spliced.as_ref().filter(|(f, _)| *f == track.frontier) {
            Some((_, event)) => event.clone(),
            None => {
                let Some(event) = with_offset(first, &track.frontier) else { return self.send_frames(frames) };
                *spliced = Some((track.frontier.clone(), event.clone()));
                event
            }
        };
        if rest.is_empty() {
            self.send_frames(std::slice::from_ref(&event))
        } else {
            // Contiguous, all or none, like any packet with attachments.
            self.send_frames(&[&[event][..], rest].concat())
        }
    }

    pub fn connected_at(&self) -> std::time::SystemTime {
        self.connected_at
    }

    pub fn id(&self) -> &Arc<str> {
        &self.id
    }

    pub fn namespace(&self) -> &Arc<Namespace> {
        &self.ns
    }

    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    /// Attaches application data, once; returns false if data was already set.
    pub fn set_data<T: Any + Send + Sync>(&self, value: T) -> bool {
        self.data.set(Box::new(value)).is_ok()
    }

    pub fn data<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.data.get().and_then(|d| d.downcast_ref())
    }

    /// Sets the presence label, once, before joining rooms.
    pub fn set_label(&self, label: &str) -> bool {
        self.label.set(label.into()).is_ok()
    }

    pub fn label(&self) -> Option<&str> {
        self.label.get().map(|l| &**l)
    }

    /// The presence label, shared (see [`crate::socketio::Labels`]).
    pub(crate) fn shared_label(&self) -> Option<Arc<str>> {
        self.label.get().cloned()
    }

    pub fn emit(&self, event: &str, args: Vec<Value>) -> Result<(), SendError> {
        self.send_frames(&event_frames(self.ns.name(), event, args, Vec::new(), None))
    }

    pub fn emit_binary(&self, event: &str, args: Vec<Value>, binary: Vec<Bytes>) -> Result<(), SendError> {
        self.send_frames(&event_frames(self.ns.name(), event, args, binary, None))
    }

    /// Emits and waits for the client's acknowledgement, at most `timeout`.
    pub async fn emit_with_ack(
        &self,
        event: &str,
        args: Vec<Value>,
        timeout: Duration,
    ) -> Result<AckResponse, AckError> {
        let id = self.next_ack.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending_acks.lock().unwrap_or_else(|e| e.into_inner()).insert(id, tx);
        if let Err(e) = self.send_frames(&event_frames(self.ns.name(), event, args, Vec::new(), Some(id))) {
            self.pending_acks.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
            return Err(e.into());
        }
        let result = tokio::time::timeout(timeout, rx).await;
        self.pending_acks.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        match result {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(_)) => Err(AckError::Disconnected),
            Err(_) => Err(AckError::Timeout(timeout)),
        }
    }

    pub(crate) fn resolve_ack(&self, id: u64, response: AckResponse) {
        match self.pending_acks.lock().unwrap_or_else(|e| e.into_inner()).remove(&id) {
            Some(tx) => {
                // The emitter may have timed out and gone; then the answer is simply late.
                let _ = tx.send(response);
            }
            None => tracing::debug!(socket = %self.id, id, "ack for an unknown or expired id"),
        }
    }

    /// Queues frames contiguously to the client, all or none.
    pub(crate) fn send_frames(&self, frames: &[Frame]) -> Result<(), SendError> {
        self.session.send_via(&self.outbox, frames)
    }

    pub(crate) fn send_packet(&self, packet: &Packet) -> Result<(), SendError> {
        self.send_frames(&[Frame::message(&encode(packet))])
    }

    /// Joins a room. `None` if the socket was already in it; otherwise a future that
    /// resolves once every node knows (messages published anywhere after it reach us).
    pub fn join(self: &Arc<Self>, room: &str) -> Option<futures_util::future::BoxFuture<'static, ()>> {
        let room: Room = room.into();
        let added = self.rooms.lock().unwrap_or_else(|e| e.into_inner()).insert(room.clone());
        added.then(|| {
            let subscribed = self.ns.add_to_room(&room, self);
            let kept = self.ns.keep(self, Some(RoomsUpdate::Join(room.to_string())));
            let joined: futures_util::future::BoxFuture<'static, ()> = Box::pin(async move {
                futures_util::future::join(subscribed, kept).await;
            });
            joined
        })
    }

    /// Leaves a room; returns false if the socket was not in it.
    pub fn leave(&self, room: &str) -> bool {
        let removed = self.rooms.lock().unwrap_or_else(|e| e.into_inner()).take(room);
        match removed {
            Some(room) => {
                self.ns.remove_from_room(&room, &self.id);
                drop(self.ns.keep(self, Some(RoomsUpdate::Leave(room.to_string())))); // sent now; nobody waits on a leave
                true
            }
            None => false,
        }
    }

    pub fn in_room(&self, room: &str) -> bool {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner()).contains(room)
    }

    pub fn rooms(&self) -> Vec<Room> {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect()
    }

    /// Disconnects this socket from its namespace (the session stays open for others).
    pub fn disconnect(self: &Arc<Self>) {
        let _ = self.send_packet(&Packet::new(PacketType::Disconnect, self.ns.name(), None));
        self.on_closed("server namespace disconnect");
    }

    /// Whether the socket has left its namespace.
    pub(crate) fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Acquire)
    }

    pub(crate) fn on_closed(self: &Arc<Self>, reason: &str) {
        self.gone.store(true, Ordering::Release);
        self.ns.remove(self, reason);
        self.pending_acks.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// The Engine.IO frames of one event: the packet, then its attachments.
pub(crate) fn event_frames(
    nsp: &str,
    event: &str,
    args: Vec<Value>,
    binary: Vec<Bytes>,
    id: Option<u64>,
) -> Vec<Frame> {
    let mut data = Vec::with_capacity(args.len() + 1);
    data.push(Value::String(event.to_owned()));
    data.extend(args);
    let ty = if binary.is_empty() { PacketType::Event } else { PacketType::BinaryEvent };
    packet_frames(
        Packet { ty, nsp: nsp.to_owned(), id, data: Some(Value::Array(data)), attachments: binary.len(), query: None },
        binary,
    )
}

pub(crate) fn packet_frames(packet: Packet, binary: Vec<Bytes>) -> Vec<Frame> {
    let mut frames = Vec::with_capacity(1 + binary.len());
    frames.push(Frame::message(&encode(&packet)));
    frames.extend(binary.into_iter().map(Frame::Binary));
    frames
}

/// Lets an event handler answer the client's ack request, once.
pub struct AckSender {
    socket: Arc<Socket>,
    id: u64,
}

impl AckSender {
    pub(crate) fn new(socket: Arc<Socket>, id: u64) -> Self {
        Self { socket, id }
    }

    pub fn send(self, args: Vec<Value>) -> Result<(), SendError> {
        self.send_binary(args, Vec::new())
    }

    pub fn send_binary(self, args: Vec<Value>, binary: Vec<Bytes>) -> Result<(), SendError> {
        let ty = if binary.is_empty() { PacketType::Ack } else { PacketType::BinaryAck };
        let packet = Packet {
            ty,
            nsp: self.socket.ns.name().to_owned(),
            id: Some(self.id),
            data: Some(Value::Array(args)),
            attachments: binary.len(),
            query: None,
        };
        self.socket.send_frames(&packet_frames(packet, binary))
    }
}
