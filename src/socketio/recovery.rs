//! Connection state recovery (socket.io 4.6+ `pid`/`offset`): the state kept for a client
//! whose connection dropped, so it gets its socket id, rooms and missed room broadcasts back
//! when it reconnects, on whichever node that is.
//!
//! Three pieces, all bounded, none doing I/O:
//! - offsets: every room broadcast carries a cluster-unique offset as its last argument; the
//!   client sends back the last one it received;
//! - the log: the last room broadcasts this node delivered, so a dropped socket's tail (what
//!   it was sent but may not have received) can be handed over with it;
//! - parked sessions: the state of dropped sockets, each buffering its rooms' broadcasts until
//!   the client comes back, the buffer overflows or the session expires. A parked session is
//!   a member of its rooms without a socket (it keeps the node subscribed; see
//!   [`PARKED_LABEL`]).
//!
//! Where a session is parked (on another node than its owner) and how it moves is the
//! adapter's business; see `cluster::rooms`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::engineio::Frame;

/// The presence label of a parked member: it subscribes its node to the room without
/// appearing in member lists (real labels are never empty).
pub const PARKED_LABEL: &str = "";

/// How long taking or moving a handed-over session waits for the hand-over's tail.
pub const TAIL_WAIT: Duration = Duration::from_secs(2);

/// Recovery settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryConfig {
    /// How long a dropped session is kept for its client (socket.io's
    /// `maxDisconnectionDuration`).
    pub max_disconnection: Duration,
    /// Room broadcasts this node remembers, to hand a dropped socket's tail over with it.
    pub log_len: usize,
    /// Broadcasts one parked session keeps (the latest); a client whose last offset is older
    /// has a gap and is not recovered.
    pub max_missed: usize,
    /// Parked sessions one node keeps; past it new ones are refused.
    pub max_parked: usize,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        Self { max_disconnection: Duration::from_secs(120), log_len: 10_000, max_missed: 1_000, max_parked: 10_000 }
    }
}

/// One room broadcast: its offset and its frames.
pub type Broadcast = (String, Vec<Frame>);

/// A broadcast as this node keeps it: once, shared by the log and every session parked in its
/// room (a copy per parked session cost ~100 bytes per broadcast per session: with 1,000 kept
/// for each of 1,000 sessions, 100 MB).
type Shared = std::sync::Arc<Broadcast>;

/// What moves between nodes: a parked session's state.
#[derive(Debug, Clone, PartialEq)]
pub struct ParkedState {
    pub pid: String,
    /// The socket id the client gets back.
    pub sid: String,
    pub rooms: Vec<String>,
    /// Broadcasts for the session, oldest first.
    pub packets: Vec<Broadcast>,
}

/// Why a parked session was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    #[error("no parked session for this pid")]
    Unknown,
    #[error("the client's offset is not among the session's broadcasts")]
    OffsetUnknown,
}

struct Parked {
    sid: String,
    rooms: Vec<String>,
    packets: VecDeque<Shared>,
    expires: Instant,
    /// False while a hand-over's tail (what the previous node buffered meanwhile) is due.
    complete: bool,
}

#[derive(Default)]
struct Store {
    sessions: HashMap<String, Parked>,
    /// Room → pids parked in it.
    rooms: HashMap<String, HashSet<String>>,
}

impl Store {
    /// Removes a session; returns it with the rooms that have no parked member left.
    fn remove(&mut self, pid: &str) -> Option<(Parked, Vec<String>)> {
        let parked = self.sessions.remove(pid)?;
        let mut emptied = Vec::new();
        for room in &parked.rooms {
            if let Some(pids) = self.rooms.get_mut(room) {
                pids.remove(pid);
                if pids.is_empty() {
                    self.rooms.remove(room);
                    emptied.push(room.clone());
                }
            }
        }
        Some((parked, emptied))
    }
}

struct LogEntry {
    seq: u64,
    room: String,
    packet: Shared,
}

/// A namespace's recovery state on this node.
pub struct Recovery {
    config: RecoveryConfig,
    /// Offsets are `<prefix><counter>`: the prefix is random per process, so offsets are
    /// unique across nodes and restarts.
    prefix: String,
    next_offset: AtomicU64,
    log: Mutex<(u64, VecDeque<LogEntry>)>,
    store: Mutex<Store>,
    /// Woken when a hand-over's tail arrives.
    completed: tokio::sync::Notify,
}

impl Recovery {
    pub fn new(config: RecoveryConfig) -> Self {
        let prefix = crate::engineio::session::new_random_id().chars().take(8).collect::<String>() + "-";
        Self {
            config,
            prefix,
            next_offset: AtomicU64::new(0),
            log: Mutex::new((0, VecDeque::new())),
            store: Mutex::new(Store::default()),
            completed: tokio::sync::Notify::new(),
        }
    }

    pub fn config(&self) -> &RecoveryConfig {
        &self.config
    }

    /// A new broadcast offset.
    pub fn next_offset(&self) -> String {
        format!("{}{:x}", self.prefix, self.next_offset.fetch_add(1, Ordering::Relaxed))
    }

    /// The log position now: a socket connecting now was sent the entries from here on.
    pub fn log_position(&self) -> u64 {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    /// Notes a broadcast delivered here: into the log, and into every session parked in the
    /// room. Returns its position in the log, which its sockets record with it (see
    /// [`SendOrder`]).
    pub fn delivered(&self, room: &str, offset: &str, frames: &[Frame]) -> u64 {
        let packet: Shared = Shared::new((offset.to_owned(), frames.to_vec()));
        let seq = {
            let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
            let seq = log.0;
            log.0 += 1;
            if self.config.log_len > 0 {
                if log.1.len() == self.config.log_len {
                    log.1.pop_front();
                }
                log.1.push_back(LogEntry { seq, room: room.to_owned(), packet: packet.clone() });
            }
            seq
        };
        let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        let Store { sessions, rooms } = &mut *store;
        for pid in rooms.get(room).into_iter().flatten() {
            if let Some(parked) = sessions.get_mut(pid) {
                // A window of the latest: a client whose offset fell out of it has a gap and
                // is not recovered (it gets a new session).
                parked.packets.push_back(packet.clone());
                keep_latest(&mut parked.packets, self.config.max_missed);
            }
        }
        seq
    }

    /// The latest logged broadcasts (at most `max_missed`) a socket was sent since `since`
    /// (a [`Recovery::log_position`]) in `rooms`, in the order it was sent them: the log's,
    /// but for those `order` says went out late. `None` if that order is unknown (too many
    /// went out late).
    pub fn tail(&self, since: u64, rooms: &[String], order: &SendOrder) -> Option<Vec<Broadcast>> {
        if order.overflowed {
            return None;
        }
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let late: HashSet<u64> = order.late.iter().map(|(seq, _)| *seq).collect();
        let mut tail: Vec<(u64, &Shared)> = log
            .1
            .iter()
            .filter(|e| (e.seq >= since && rooms.contains(&e.room)) || late.contains(&e.seq))
            .map(|e| (e.seq, &e.packet))
            .filter(|(seq, _)| !late.contains(seq))
            .collect();
        for (seq, prev) in &order.late {
            let Some(entry) = log.1.iter().find(|e| e.seq == *seq) else { continue };
            // Right after the one sent just before it (at the front if that one is not here).
            let at = prev.and_then(|p| tail.iter().position(|(s, _)| *s == p)).map_or(0, |i| i + 1);
            tail.insert(at, (*seq, &entry.packet));
        }
        let skip = tail.len().saturating_sub(self.config.max_missed);
        Some(tail.into_iter().skip(skip).map(|(_, p)| Broadcast::clone(p)).collect())
    }

    /// Parks a session here; `complete` is false when it comes from a hand-over whose tail
    /// is still due. Returns the rooms that had no parked member before (this node's
    /// subscription to them must be kept), or `None` if the store is full.
    pub fn park(&self, state: ParkedState, complete: bool) -> Option<Vec<String>> {
        let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        let mut emptied = Vec::new();
        if let Some((_, e)) = store.remove(&state.pid) {
            emptied = e; // parked again (a hand-over back here): replace
        }
        if store.sessions.len() >= self.config.max_parked {
            tracing::warn!(max = self.config.max_parked, "too many parked sessions; this one cannot be recovered");
            return None;
        }
        let mut packets: VecDeque<Shared> = state.packets.into_iter().map(Shared::new).collect();
        keep_latest(&mut packets, self.config.max_missed);
        let mut added = Vec::new();
        for room in &state.rooms {
            let pids = store.rooms.entry(room.clone()).or_default();
            if pids.is_empty() && !emptied.contains(room) {
                added.push(room.clone());
            }
            pids.insert(state.pid.clone());
        }
        let expires = Instant::now() + self.config.max_disconnection;
        store.sessions.insert(state.pid, Parked { sid: state.sid, rooms: state.rooms, packets, expires, complete });
        Some(added)
    }

    /// Adds the hand-over's tail, the broadcasts sent for a parked session before it got here:
    /// right after `after` (the last broadcast of the state it came with; at the front if that
    /// one is gone or there was none), so ahead of those it buffered itself, skipping the ones
    /// it has. The session is complete.
    pub fn prepend(&self, pid: &str, after: Option<&str>, packets: Vec<Broadcast>) {
        let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        let Some(parked) = store.sessions.get_mut(pid) else { return };
        parked.complete = true;
        self.completed.notify_waiters();
        let have: HashSet<&str> = parked.packets.iter().map(|p| p.0.as_str()).collect();
        let new: Vec<Shared> =
            packets.into_iter().filter(|(o, _)| !have.contains(o.as_str())).map(Shared::new).collect();
        let at = position_after(&parked.packets, after);
        for (i, packet) in new.into_iter().enumerate() {
            parked.packets.insert(at + i, packet);
        }
        keep_latest(&mut parked.packets, self.config.max_missed);
    }

    /// The broadcasts of a session parked here after `after` (all of them if `after` is gone
    /// or `None`), and removes it: what a hand-over sends last. Returns `None` if the session
    /// is not here (a client took it).
    pub fn take_after(&self, pid: &str, after: Option<&str>) -> Option<(Vec<Broadcast>, Vec<String>)> {
        let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        let (parked, emptied) = store.remove(pid)?;
        let start = position_after(&parked.packets, after);
        Some((parked.packets.into_iter().skip(start).map(Shared::unwrap_or_clone).collect(), emptied))
    }

    /// A parked session's state as it is now (for a hand-over), without removing it; only
    /// the latest broadcasts that fit in `budget` bytes.
    pub fn snapshot(&self, pid: &str, budget: usize) -> Option<ParkedState> {
        let store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        store.sessions.get(pid).map(|p| ParkedState {
            pid: pid.to_owned(),
            sid: p.sid.clone(),
            rooms: p.rooms.clone(),
            packets: latest_within(p.packets.iter().map(|p| &**p), budget),
        })
    }

    /// The session's socket id and rooms, if it is parked here and `offset` (the client's
    /// last) is among its broadcasts or absent; the session stays parked.
    pub fn peek(&self, pid: &str, offset: Option<&str>) -> Result<(String, Vec<String>), RestoreError> {
        let store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        let parked = store.sessions.get(pid).filter(|p| p.expires > Instant::now()).ok_or(RestoreError::Unknown)?;
        from_offset(&parked.packets, offset)?;
        Ok((parked.sid.clone(), parked.rooms.clone()))
    }

    /// Waits (at most `limit`) until a session parked here is complete: its hand-over's tail
    /// arrived, or it never had one.
    pub async fn complete(&self, pid: &str, limit: Duration) {
        let wait = async {
            loop {
                let notified = self.completed.notified();
                let done =
                    self.store.lock().unwrap_or_else(|e| e.into_inner()).sessions.get(pid).is_none_or(|p| p.complete);
                if done {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(limit, wait).await;
    }

    /// Removes a parked session: the broadcast at `offset` (the client's last, first) and what
    /// it missed after it, and the rooms with no parked member left. The anchor is not for
    /// the client: its next node keeps it, so that the client, dropping again before it got
    /// anything more, is still found by the same offset.
    pub fn take(&self, pid: &str, offset: Option<&str>) -> Result<(Vec<Broadcast>, Vec<String>), RestoreError> {
        let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        let (parked, emptied) = store.remove(pid).ok_or(RestoreError::Unknown)?;
        if parked.expires <= Instant::now() {
            return Err(RestoreError::Unknown);
        }
        Ok((from_offset(&parked.packets, offset)?, emptied))
    }

    /// Removes the sessions whose time is up; returns them with the rooms left empty.
    pub fn expire(&self) -> Vec<(String, Vec<String>)> {
        let now = Instant::now();
        let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        let expired: Vec<String> =
            store.sessions.iter().filter(|(_, p)| p.expires <= now).map(|(k, _)| k.clone()).collect();
        expired.into_iter().filter_map(|pid| store.remove(&pid).map(|(_, emptied)| (pid, emptied))).collect()
    }

    /// Whether a session is parked in `room` here.
    pub fn parked_in(&self, room: &str) -> bool {
        self.store.lock().unwrap_or_else(|e| e.into_inner()).rooms.contains_key(room)
    }

    /// Pids parked here.
    pub fn parked(&self) -> Vec<String> {
        self.store.lock().unwrap_or_else(|e| e.into_inner()).sessions.keys().cloned().collect()
    }

    pub fn parked_count(&self) -> usize {
        self.store.lock().unwrap_or_else(|e| e.into_inner()).sessions.len()
    }
}

/// Broadcasts going out to one socket from concurrent publishers (no lock is shared between
/// rooms) can leave in another order than the log's. A socket records the exceptions, so its
/// tail can be rebuilt in the order it was sent (the client's offset names a place in *that*
/// order): each broadcast sent after one later in the log is noted with the one sent just
/// before it, and forgotten once it has left the log. Rare and bounded: past
/// [`SendOrder::MAX_LATE`] within the log's length the order is unknown and the socket is not
/// parked.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SendOrder {
    /// The log position of the last broadcast sent, and the highest sent.
    last: Option<u64>,
    highest: Option<u64>,
    /// (late one, the one sent just before it), in the order they were sent.
    late: Vec<(u64, Option<u64>)>,
    overflowed: bool,
}

impl SendOrder {
    pub const MAX_LATE: usize = 64;

    /// Notes that the broadcast at log position `seq` is being sent now; the log keeps the
    /// last `log_len` broadcasts.
    pub fn sent(&mut self, seq: u64, log_len: usize) {
        let horizon = seq.saturating_sub(log_len as u64);
        if self.late.first().is_some_and(|(s, _)| *s < horizon) {
            self.late.retain(|(s, _)| *s >= horizon);
        }
        if self.highest.is_some_and(|h| seq < h) {
            if self.late.len() == Self::MAX_LATE {
                self.overflowed = true;
            } else {
                self.late.push((seq, self.last));
            }
        }
        self.highest = self.highest.max(Some(seq));
        self.last = Some(seq);
    }
}

/// Drops the oldest broadcasts past `max`.
fn keep_latest(packets: &mut VecDeque<Shared>, max: usize) {
    let excess = packets.len().saturating_sub(max);
    packets.drain(..excess);
}

/// Where the broadcasts after `after` start: just past it, or at the front if it is gone or
/// `None`.
fn position_after(packets: &VecDeque<Shared>, after: Option<&str>) -> usize {
    after.and_then(|a| packets.iter().position(|p| p.0 == a)).map_or(0, |i| i + 1)
}

/// Roughly how many bytes a packet takes on the wire.
pub fn broadcast_size((offset, frames): &Broadcast) -> usize {
    16 + offset.len() + frames.iter().map(|f| 8 + f.len()).sum::<usize>()
}

/// The latest of `packets` (oldest first) whose sizes add up to at most `budget`.
pub fn latest_within<'a>(packets: impl DoubleEndedIterator<Item = &'a Broadcast>, budget: usize) -> Vec<Broadcast> {
    let mut left = budget;
    let mut kept: Vec<Broadcast> = packets
        .rev()
        .take_while(|p| {
            let size = broadcast_size(p);
            let fits = size <= left;
            left = left.saturating_sub(size);
            fits
        })
        .cloned()
        .collect();
    kept.reverse();
    kept
}

/// The packets after `offset`; all of them without one (the client received no broadcast).
/// The packets from `offset` on, that one included (the anchor: see [`Recovery::take`]); all
/// of them without one.
fn from_offset(packets: &VecDeque<Shared>, offset: Option<&str>) -> Result<Vec<Broadcast>, RestoreError> {
    let start = match offset {
        None => 0,
        Some(offset) => packets.iter().position(|p| p.0 == offset).ok_or(RestoreError::OffsetUnknown)?,
    };
    Ok(packets.iter().skip(start).map(|p| Broadcast::clone(p)).collect())
}

/// Why a socket's close lets its client recover (socket.io's recoverable reasons): the
/// transport went away, not the client or the application.
pub fn recoverable(reason: &str) -> bool {
    matches!(reason, "transport close" | "transport error" | "ping timeout" | "server shutting down")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(s: &str) -> Vec<Frame> {
        vec![Frame::message(s)]
    }

    fn recovery(max_missed: usize) -> Recovery {
        Recovery::new(RecoveryConfig { max_missed, log_len: 4, ..RecoveryConfig::default() })
    }

    fn state(pid: &str, rooms: &[&str], packets: Vec<Broadcast>) -> ParkedState {
        ParkedState { pid: pid.into(), sid: "s1".into(), rooms: rooms.iter().map(|r| r.to_string()).collect(), packets }
    }

    impl Recovery {
        fn park_complete(&self, state: ParkedState) -> Option<Vec<String>> {
            self.park(state, true)
        }
    }

    #[tokio::test]
    async fn a_handed_over_session_is_complete_once_its_tail_arrives() {
        let r = std::sync::Arc::new(recovery(10));
        r.park(state("p", &["a"], vec![("o1".into(), frames("1"))]), false);
        let waiter = tokio::spawn({
            let r = r.clone();
            async move { r.complete("p", Duration::from_secs(10)).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        r.prepend("p", Some("o1"), vec![("o2".into(), frames("2"))]);
        waiter.await.unwrap();
        assert_eq!(r.take("p", Some("o1")).unwrap().0.len(), 2);
    }

    #[test]
    fn offsets_are_unique_and_differ_between_stores() {
        let (a, b) = (recovery(10), recovery(10));
        let mut seen: HashSet<String> = (0..100).map(|_| a.next_offset()).collect();
        assert_eq!(seen.len(), 100);
        seen.extend((0..100).map(|_| b.next_offset()));
        assert_eq!(seen.len(), 200);
    }

    #[tokio::test]
    async fn a_parked_session_buffers_its_rooms_and_replays_after_the_offset() {
        let r = recovery(10);
        assert_eq!(
            r.park_complete(state("p", &["a", "b"], vec![("o1".into(), frames("1"))])),
            Some(vec!["a".into(), "b".into()])
        );
        assert!(r.parked_in("a") && !r.parked_in("c"));
        r.delivered("a", "o2", &frames("2"));
        r.delivered("c", "o3", &frames("3"));
        r.delivered("b", "o4", &frames("4"));
        assert_eq!(r.peek("p", Some("o1")), Ok(("s1".into(), vec!["a".into(), "b".into()])));
        assert_eq!(r.peek("p", Some("nope")), Err(RestoreError::OffsetUnknown));
        assert_eq!(r.peek("q", None), Err(RestoreError::Unknown));
        let (missed, emptied) = r.take("p", Some("o1")).unwrap();
        assert_eq!(missed.iter().map(|(o, _)| o.as_str()).collect::<Vec<_>>(), ["o1", "o2", "o4"], "o1 the anchor");
        assert_eq!(emptied, ["a", "b"]);
        assert_eq!(r.take("p", Some("o1")), Err(RestoreError::Unknown), "taken once");
        assert!(!r.parked_in("a"));
    }

    #[tokio::test]
    async fn without_an_offset_everything_is_replayed() {
        let r = recovery(10);
        r.park_complete(state("p", &["a"], vec![("o1".into(), frames("1"))]));
        r.delivered("a", "o2", &frames("2"));
        assert_eq!(r.take("p", None).unwrap().0.len(), 2);
    }

    #[tokio::test]
    async fn a_parked_session_keeps_the_latest_and_a_client_behind_them_has_a_gap() {
        let r = recovery(2);
        r.park_complete(state("p", &["a"], vec![]));
        for i in 1..=3 {
            r.delivered("a", &format!("o{i}"), &frames("x"));
        }
        assert_eq!(r.parked_count(), 1);
        assert_eq!(r.peek("p", Some("o1")), Err(RestoreError::OffsetUnknown), "o2 is gone: a gap");
        let (missed, _) = r.take("p", Some("o2")).unwrap();
        assert_eq!(missed.iter().map(|(o, _)| o.as_str()).collect::<Vec<_>>(), ["o2", "o3"]);
    }

    #[test]
    fn a_hand_over_keeps_the_latest_within_its_byte_budget() {
        let packets: Vec<Broadcast> = (0..10).map(|i| (format!("o{i}"), frames(&"x".repeat(100)))).collect();
        let one = broadcast_size(&packets[0]);
        let kept = latest_within(packets.iter(), one * 3 + one / 2);
        assert_eq!(kept.iter().map(|(o, _)| o.as_str()).collect::<Vec<_>>(), ["o7", "o8", "o9"]);
        assert!(latest_within(packets.iter(), 0).is_empty());
    }

    #[tokio::test]
    async fn the_hand_over_tail_goes_before_what_the_keeper_buffered_without_duplicates() {
        let r = recovery(10);
        r.park_complete(state("p", &["a"], vec![("o1".into(), frames("1"))]));
        r.delivered("a", "o3", &frames("3"));
        r.prepend("p", Some("o1"), vec![("o2".into(), frames("2")), ("o3".into(), frames("3"))]);
        let (missed, _) = r.take("p", None).unwrap();
        assert_eq!(missed.iter().map(|(o, _)| o.as_str()).collect::<Vec<_>>(), ["o1", "o2", "o3"]);
    }

    #[tokio::test]
    async fn a_full_window_hands_over_what_came_after_the_state_sent() {
        let r = recovery(3);
        r.park_complete(state(
            "p",
            &["a"],
            vec![("o1".into(), frames("1")), ("o2".into(), frames("2")), ("o3".into(), frames("3"))],
        ));
        let sent = r.snapshot("p", usize::MAX).unwrap();
        // The window is full: each later broadcast pushes the oldest out, so counting the
        // state's length would find nothing after it.
        r.delivered("a", "o4", &frames("4"));
        r.delivered("a", "o5", &frames("5"));
        let last = sent.packets.last().map(|(o, _)| o.as_str());
        let (rest, _) = r.take_after("p", last).unwrap();
        assert_eq!(rest.iter().map(|(o, _)| o.as_str()).collect::<Vec<_>>(), ["o4", "o5"]);
        assert!(r.take_after("p", last).is_none(), "gone");
    }

    #[tokio::test]
    async fn the_log_is_bounded_and_its_tail_is_filtered_by_room_and_position() {
        let r = recovery(10);
        r.delivered("a", "o0", &frames("0"));
        let since = r.log_position();
        for (i, room) in ["a", "b", "a", "a", "b"].iter().enumerate() {
            r.delivered(room, &format!("o{}", i + 1), &frames("x"));
        }
        // log_len 4: o0 and o1 are gone.
        let tail: Vec<String> =
            r.tail(since, &["a".into()], &SendOrder::default()).unwrap().into_iter().map(|(o, _)| o).collect();
        assert_eq!(tail, ["o3", "o4"]);
    }

    #[test]
    fn a_tail_follows_the_order_its_socket_was_sent() {
        let r = recovery(10);
        let rooms = ["a".to_string(), "b".to_string()];
        let seqs: Vec<u64> = (0..4).map(|i| r.delivered(&rooms[i % 2], &format!("o{i}"), &frames("x"))).collect();
        // Two publishers raced: the socket got o0, o2, o1, o3.
        let mut order = SendOrder::default();
        for i in [0, 2, 1, 3] {
            order.sent(seqs[i], 4);
        }
        let tail = r.tail(0, &rooms, &order).unwrap();
        assert_eq!(tail.iter().map(|(o, _)| o.as_str()).collect::<Vec<_>>(), ["o0", "o2", "o1", "o3"]);
        // In the log's order, nothing is noted.
        let mut order = SendOrder::default();
        seqs.iter().for_each(|s| order.sent(*s, 4));
        assert_eq!(order, SendOrder { last: Some(3), highest: Some(3), late: vec![], overflowed: false });
        // Too many exceptions: the order is unknown.
        let mut order = SendOrder::default();
        order.sent(1000, 10_000);
        (0..=SendOrder::MAX_LATE as u64).for_each(|s| order.sent(s, 10_000));
        assert!(r.tail(0, &rooms, &order).is_none());
        // Exceptions that left the log are forgotten.
        let mut order = SendOrder::default();
        order.sent(5, 4);
        order.sent(3, 4);
        assert_eq!(order.late, [(3, Some(5))]);
        order.sent(8, 4);
        assert!(order.late.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn parked_sessions_expire() {
        let r = recovery(10);
        r.park_complete(state("p", &["a"], vec![]));
        assert!(r.expire().is_empty());
        tokio::time::advance(RecoveryConfig::default().max_disconnection).await;
        assert_eq!(r.peek("p", None), Err(RestoreError::Unknown));
        assert_eq!(r.expire(), vec![("p".to_string(), vec!["a".to_string()])]);
        assert_eq!(r.parked_count(), 0);
    }

    #[test]
    fn only_transport_losses_are_recoverable() {
        for reason in ["transport close", "transport error", "ping timeout", "server shutting down"] {
            assert!(recoverable(reason), "{reason}");
        }
        for reason in ["client namespace disconnect", "server namespace disconnect", "outbound queue full"] {
            assert!(!recoverable(reason), "{reason}");
        }
    }
}
