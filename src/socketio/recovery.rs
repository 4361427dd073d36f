//! Connection state recovery (socket.io 4.6+ `pid`/`offset`) that survives the crash of the
//! node a client was connected to: the client gets its socket id, rooms and every room
//! broadcast it missed back, exactly once and in each publisher's order, through any node.
//!
//! Pure state, no I/O; where things live and move is the adapter's business
//! (`cluster::rooms`). Four pieces:
//!
//! - [`Stamp`]s: every room broadcast gets one from its publisher, a (publisher, counter)
//!   pair. A publisher is one thread of one process: a broadcast is stamped, queued to local
//!   members and queued to peers without yielding, so each publisher's broadcasts reach every
//!   socket, on every node, in counter order. A node's publishers keep their ids across its
//!   restarts (its id, the namespace and the thread's slot name them), with counters that
//!   start above anything its earlier lives can have stamped (from the start time): so a
//!   frontier names at most the nodes' publishing threads, however often they restart.
//! - [`Frontier`]s: what a socket was sent, as the highest counter per publisher. The offset a
//!   client gets with each broadcast (its last argument) is its socket's frontier at that
//!   broadcast, written out, so the offset a client comes back with says exactly what it has.
//!   A broadcast at or below the frontier is a duplicate and is not sent.
//! - [`Keeper`]: each socket with a `pid` has a small record (socket id, rooms, who holds it)
//!   on another node, its keeper, from connect to disconnect; the keeper is subscribed to the
//!   socket's rooms and logs their broadcasts, once per room however many records share it.
//!   When the socket's transport closes the record is parked; when its node dies the keeper
//!   parks every record that node held. A record costs a few hundred bytes, whatever its rooms
//!   carry.
//! - Restoring: a client comes back with its pid and offset; the node it reaches takes the
//!   record from the keeper with what the logs hold above the client's frontier.

use smallvec::SmallVec;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::engineio::Frame;

/// The presence label of kept records: it subscribes their keeper to the room without
/// appearing in member lists (real labels are never empty).
pub const PARKED_LABEL: &str = "";

/// Recovery settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryConfig {
    /// How long a dropped session is kept for its client (socket.io's
    /// `maxDisconnectionDuration`).
    pub max_disconnection: Duration,
    /// Broadcasts a keeper logs per room (the latest); a client that missed more is not
    /// recovered.
    pub max_missed: usize,
    /// Broadcasts a keeper logs in all, across rooms; past it the oldest go.
    pub log_len: usize,
    /// Records one node keeps (live sessions of other nodes, and parked ones); past it new
    /// sessions are not kept, so they cannot be recovered.
    pub max_records: usize,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        Self { max_disconnection: Duration::from_secs(120), max_missed: 1_000, log_len: 100_000, max_records: 100_000 }
    }
}

/// A broadcast's identity, given once by its publisher.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Stamp {
    /// A publisher: one thread publishing for one keeper (one namespace of one node), named
    /// by the keeper's lineage and the thread's slot (see [`Keeper::stamp`]).
    pub publisher: u32,
    /// The publisher's counter, from 1.
    pub counter: u64,
}

/// Numbers [`Keeper`]s, so each has its own publishers on a thread (nodes of one process,
/// as in tests, share their threads).
static NEXT_KEEPER: AtomicU64 = AtomicU64::new(1);

/// Publishers a thread remembers (one per keeper it stamped for); past it the oldest is
/// forgotten, and that keeper's next broadcast on this thread starts a new publisher.
const THREAD_PUBLISHERS: usize = 16;

thread_local! {
    /// (keeper, publisher id, last counter) for each keeper this thread stamped for.
    static PUBLISHERS: RefCell<Vec<(u64, u32, u64)>> = const { RefCell::new(Vec::new()) };
}

/// A publisher's id: the lineage and slot mixed (splitmix64, a fixed algorithm: every node
/// of every build agrees), never 0.
fn publisher_id(lineage: u64, slot: u32) -> u32 {
    let mut z = lineage ^ u64::from(slot).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z as u32).max(1)
}

/// A room broadcast as a keeper logs it and a restore replays it: its stamp and its frames,
/// the first of which is a socket.io EVENT packet without the offset.
pub type Broadcast = (Stamp, Vec<Frame>);

/// Logged once, shared by the room log and by every restore that reads it.
type Shared = Arc<Broadcast>;

/// What a socket was sent: the highest counter of each publisher.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    /// Sorted by publisher: two sockets sent the same have equal frontiers (and offsets).
    /// Inline up to three publishers (a lone node's connection threads on two cores, or three
    /// nodes of one thread each, `cores = 1`): every broadcast to every member reads it, and a
    /// separate allocation per socket was a cache miss per delivery. Three rather than two
    /// costs 16 B per idle client; for the three one-thread nodes of the benchmark it gave
    /// 8 % more deliveries per CPU-second at 1,600 msg/s, side by side in both orders
    /// (`bench/analysis.md`, session 15). More publishers (nodes of several threads each)
    /// spill to the heap (six inline would cost 48 B more per idle client).
    seen: SmallVec<[(u32, u64); 3]>,
    /// More publishers than [`Frontier::MAX`]: what was sent is no longer known exactly.
    overflowed: bool,
}

impl Frontier {
    /// Publishers a frontier names at most (each thread of each process that ever published to
    /// the socket's rooms while it was connected); past it the socket cannot be recovered.
    pub const MAX: usize = 64;

    /// Whether `stamp` is new to the socket; if so it is now sent. A publisher's broadcasts
    /// reach a socket in counter order, so one at or below its entry was sent already.
    pub fn admit(&mut self, stamp: Stamp) -> bool {
        let full = self.seen.len() == Self::MAX;
        match self.seen.iter_mut().find(|(p, _)| *p == stamp.publisher) {
            Some((_, counter)) if *counter >= stamp.counter => false,
            Some((_, counter)) => {
                *counter = stamp.counter;
                true
            }
            None if full => {
                self.overflowed = true;
                true
            }
            None => {
                let at = self.seen.partition_point(|(p, _)| *p < stamp.publisher);
                self.seen.insert(at, (stamp.publisher, stamp.counter));
                true
            }
        }
    }

    /// Whether the socket was sent `stamp`.
    pub fn has(&self, stamp: Stamp) -> bool {
        self.seen.iter().any(|(p, c)| *p == stamp.publisher && *c >= stamp.counter)
    }

    /// The offset a client is given: `<publisher>-<counter>` in hex, joined by dots, or `x`
    /// once the frontier overflowed.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(self.encoded_len());
        self.write_to(&mut out);
        out
    }

    /// The offset's length in bytes (see [`Frontier::encode`]).
    fn encoded_len(&self) -> usize {
        if self.overflowed {
            return 1;
        }
        let dots = self.seen.len().saturating_sub(1);
        dots + self.seen.iter().map(|(p, c)| hex_len(u64::from(*p)) + 1 + hex_len(*c)).sum::<usize>()
    }

    /// Appends the offset to `out` (hex by hand: this runs for every delivery).
    fn write_to(&self, out: &mut String) {
        if self.overflowed {
            out.push('x');
            return;
        }
        for (i, (p, c)) in self.seen.iter().enumerate() {
            if i > 0 {
                out.push('.');
            }
            push_hex(out, u64::from(*p));
            out.push('-');
            push_hex(out, *c);
        }
    }

    /// Reads an offset a client came back with; `None` if it is not one of ours (or says the
    /// frontier overflowed): such a client is not recovered.
    pub fn parse(offset: &str) -> Option<Self> {
        if offset.len() > Self::MAX * 30 {
            return None;
        }
        let mut seen = SmallVec::new();
        for entry in offset.split('.').filter(|e| !e.is_empty()) {
            let (p, c) = entry.split_once('-')?;
            let (p, c) = (u32::from_str_radix(p, 16).ok()?, u64::from_str_radix(c, 16).ok()?);
            if seen.iter().any(|(q, _)| *q == p) || seen.len() == Self::MAX {
                return None;
            }
            seen.push((p, c));
        }
        seen.sort_unstable();
        Some(Self { seen, overflowed: false })
    }
}

/// How many hex digits `n` takes (at least one).
fn hex_len(n: u64) -> usize {
    (64 - n.leading_zeros() as usize).div_ceil(4).max(1)
}

/// Lowercase hex digits of `n`, appended (by hand: `write!` costs more on every delivery).
fn push_hex(out: &mut String, n: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for i in (0..hex_len(n)).rev() {
        out.push(DIGITS[((n >> (i * 4)) & 0xf) as usize] as char);
    }
}

/// The EVENT frame of a broadcast for one socket: its offset (`frontier`) spliced in as the
/// last argument (the packet's JSON array ends the text frame), in one allocation. `None` if
/// the frame is not such a packet (it goes out as it is).
pub fn with_offset(frame: &Frame, frontier: &Frontier) -> Option<Frame> {
    let Frame::Text(text) = frame else { return None };
    let head = text.strip_suffix(']')?;
    // Exactly sized: a `Bytes` made from a full `Vec` needs no second allocation.
    let mut s = String::with_capacity(head.len() + frontier.encoded_len() + 4);
    s.push_str(head);
    s.push_str(",\"");
    frontier.write_to(&mut s); // hex digits, dots, dashes: nothing to escape
    s.push_str("\"]");
    debug_assert_eq!(s.len(), s.capacity());
    Some(Frame::Text(Utf8Bytes::from(s)))
}

/// Why a record was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    #[error("no parked session for this pid")]
    Unknown,
    #[error("the session is still connected")]
    Live,
    #[error("broadcasts the client missed are no longer logged")]
    Gap,
    #[error("the client missed more broadcasts than are kept for it")]
    TooMany,
}

/// Who holds a kept session: a node (its id and generation); parked records have none.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Holder {
    pub node: Arc<str>,
    pub generation: u64,
}

/// A record as its holder sends it: whole, or one change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeepRequest {
    pub pid: String,
    pub sid: String,
    pub rooms: RoomsUpdate,
    /// Grows with every change of the socket's record; older ones are ignored.
    pub version: u64,
}

/// A record's rooms: all of them (a new record, or a record sent to a new keeper), or the one
/// that changed (so a socket in many rooms does not send them all on every join).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomsUpdate {
    All(Vec<String>),
    Join(String),
    Leave(String),
}

struct Record {
    sid: Arc<str>,
    /// Each room with the keeper's log position when the record joined it: what came before
    /// is not the session's.
    rooms: Vec<(Arc<str>, u64)>,
    /// Who holds (or last held) the session.
    holder: Holder,
    version: u64,
    /// Set once parked: when the client's time is up.
    expires: Option<Instant>,
    /// Broadcasts the session was sent before this keeper logged its rooms (a restore's
    /// replay), to be read with the logs.
    seed: Vec<Shared>,
}

#[derive(Default)]
struct RoomLog {
    name: Arc<str>,
    /// Tells this log from an earlier one of the same room in the keeper's `order`.
    id: u64,
    /// (position, broadcast), oldest first; positions are the keeper's, across rooms.
    entries: VecDeque<(u64, Shared)>,
    /// This log's mentions in the keeper's `order`: its entries are at most the latest that many.
    in_order: usize,
    /// Records in this room.
    records: usize,
    /// The highest evicted counter of each publisher, with its position: a record that
    /// joined before that position and whose client's frontier is below that counter has a
    /// gap. Past [`MAX_EVICTED`] publishers, only `evicted_upto` is known.
    evicted: HashMap<u32, (u64, u64)>,
    evicted_upto: Option<u64>,
}

/// Publishers whose evictions a room log remembers one by one.
const MAX_EVICTED: usize = 256;

impl RoomLog {
    fn evict_front(&mut self) -> Option<usize> {
        let (pos, entry) = self.entries.pop_front()?;
        let stamp = entry.0;
        if self.evicted.len() < MAX_EVICTED || self.evicted.contains_key(&stamp.publisher) {
            let e = self.evicted.entry(stamp.publisher).or_insert((0, 0));
            *e = (e.0.max(stamp.counter), e.1.max(pos));
        } else {
            self.evicted_upto = Some(self.evicted_upto.unwrap_or(0).max(pos));
        }
        Some(broadcast_size(&entry))
    }

    /// Whether a client that joined at `joined` and was sent `frontier` may miss an evicted
    /// broadcast.
    fn gap(&self, joined: u64, frontier: &Frontier) -> bool {
        self.evicted_upto.is_some_and(|upto| upto >= joined)
            || self
                .evicted
                .iter()
                .any(|(p, (counter, pos))| *pos >= joined && !frontier.has(Stamp { publisher: *p, counter: *counter }))
    }
}

#[derive(Default)]
struct KeeperState {
    records: HashMap<String, Record>,
    /// Records whose seed the keeper that handed them over still owes (see
    /// [`Keeper::expect_seed`]): until when a take waits for it. Beside the records, not in
    /// them: few records ever owe one, and every kept session has a record.
    owed: HashMap<String, Instant>,
    logs: HashMap<Arc<str>, RoomLog>,
    /// Logs (room, log id) in the order their entries were logged, one per entry, to evict
    /// the oldest across rooms.
    order: VecDeque<(Arc<str>, u64)>,
    next_log_id: u64,
    /// The next log position, across rooms: the order this keeper got its broadcasts in.
    next_pos: u64,
}

/// Rooms whose kept status changed: the node's subscription follows them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct KeptRooms {
    /// Rooms now kept here that were not.
    pub added: Vec<String>,
    /// Rooms no record keeps here any more.
    pub emptied: Vec<String>,
}

/// Counters a publisher's thread may stamp per millisecond of its process's life, at most
/// (see [`Keeper::stamp`]): 2^20, far above any thread's rate.
const COUNTER_SHIFT: u32 = 20;
/// 2026-01-01T00:00:00Z in Unix milliseconds: counters count from it, so they stay short.
const COUNTER_EPOCH_MS: u64 = 1_767_225_600_000;
/// Counters between two keepers' floors in one process: more than a test stamps.
const IN_PROCESS_GAP: u64 = 1 << 40;
/// The highest first counter given in this process: keepers of one process (tests restart a
/// node within a millisecond) still start above each other.
static LAST_FLOOR: AtomicU64 = AtomicU64::new(0);

/// What a node keeps for other nodes' sessions (and its own, when alone), for one namespace.
pub struct Keeper {
    /// Tells this keeper's publishers from other keepers' on the same thread.
    id: u64,
    /// Names this keeper's publishers with the thread slot: the node and namespace, once the
    /// node is known ([`Keeper::set_lineage`]), else drawn at random.
    lineage: AtomicU64,
    /// The next thread slot.
    next_slot: std::sync::atomic::AtomicU32,
    /// Every counter of this keeper's publishers is above it: above anything an earlier life
    /// of the node stamped, as long as its clock did not go back across the restart (the
    /// gossip generation assumes the same).
    floor: u64,
    config: RecoveryConfig,
    /// A std lock: held for one record's change or one broadcast's append, never across an
    /// await.
    state: Mutex<KeeperState>,
    /// Rung when a seed a record waited for arrives (see [`Keeper::seeded`]).
    seeds: tokio::sync::Notify,
}

impl Keeper {
    pub fn new(config: RecoveryConfig) -> Self {
        let now = crate::clock::unix_ms().saturating_sub(COUNTER_EPOCH_MS) << COUNTER_SHIFT;
        // Within one process: also above the previous keeper's floor and whatever it stamps.
        let next = |prev: u64| if prev == 0 { now } else { now.max(prev + IN_PROCESS_GAP) };
        let prev = LAST_FLOOR.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| Some(next(p))).unwrap_or(0);
        let floor = next(prev);
        Self {
            id: NEXT_KEEPER.fetch_add(1, Ordering::Relaxed),
            lineage: AtomicU64::new(rand::random()),
            next_slot: std::sync::atomic::AtomicU32::new(0),
            floor,
            config,
            state: Mutex::new(KeeperState::default()),
            seeds: tokio::sync::Notify::new(),
        }
    }

    /// Names this keeper's publishers after its node and namespace, so a restarted node's
    /// publishers are its earlier lives' (called before the node publishes).
    pub fn set_lineage(&self, node: &str, nsp: &str) {
        use std::hash::Hasher;
        // A fixed algorithm and keys: the same node gets the same lineage from any build.
        let mut hasher = siphasher::sip::SipHasher13::new_with_keys(0x636c_7573_7465_7263, 0x6861_7420_7075_6273);
        hasher.write(node.as_bytes());
        hasher.write_u8(0xff);
        hasher.write(nsp.as_bytes());
        self.lineage.store(hasher.finish(), Ordering::Relaxed);
    }

    /// The next stamp of this thread for this keeper's namespace. The caller must queue the
    /// broadcast to its local members and to its peers before it yields, or the publisher's
    /// order is lost. A thread's first stamp takes the keeper's next slot: its publisher is
    /// named by the lineage and the slot, and counts from the keeper's floor.
    pub fn stamp(&self) -> Stamp {
        PUBLISHERS.with_borrow_mut(|publishers| {
            if let Some((_, publisher, counter)) = publishers.iter_mut().find(|(k, _, _)| *k == self.id) {
                *counter += 1;
                return Stamp { publisher: *publisher, counter: *counter };
            }
            if publishers.len() == THREAD_PUBLISHERS {
                publishers.remove(0);
            }
            let slot = self.next_slot.fetch_add(1, Ordering::Relaxed);
            let publisher = publisher_id(self.lineage.load(Ordering::Relaxed), slot);
            publishers.push((self.id, publisher, self.floor + 1));
            Stamp { publisher, counter: self.floor + 1 }
        })
    }

    pub fn config(&self) -> &RecoveryConfig {
        &self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, KeeperState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates or updates the record of a live session held by `holder`, with `seed` (what
    /// it was sent that this keeper may not have logged). Nothing changes for a stale update
    /// (an older version); `None` if the keeper is full.
    pub fn keep(&self, req: KeepRequest, holder: Holder, seed: Vec<Broadcast>) -> Option<KeptRooms> {
        let mut state = self.lock();
        let KeeperState { records, logs, next_log_id, next_pos, owed, .. } = &mut *state;
        if let Some(old) = records.get(&req.pid) {
            if old.holder == holder && old.version >= req.version {
                return Some(KeptRooms::default()); // stale
            }
        } else if records.len() >= self.config.max_records {
            tracing::warn!(max = self.config.max_records, "too many kept sessions; this one cannot be recovered");
            return None;
        }
        let mut changed = KeptRooms::default();
        let all = match req.rooms {
            RoomsUpdate::All(all) => all,
            change => {
                // A change to the record this keeper has from the same holder, in order.
                let record = records.get_mut(&req.pid).filter(|r| r.holder == holder)?;
                record.version = req.version;
                match change {
                    RoomsUpdate::Join(room) if !record.rooms.iter().any(|(r, _)| **r == *room) => {
                        record.rooms.push((enter_log(logs, &room, next_log_id, &mut changed.added), *next_pos));
                    }
                    RoomsUpdate::Leave(room) => {
                        if let Some(i) = record.rooms.iter().position(|(r, _)| **r == *room) {
                            let (name, _) = record.rooms.swap_remove(i);
                            leave_log(logs, &name, &mut changed.emptied);
                        }
                    }
                    _ => {}
                }
                record.seed.extend(seed.into_iter().map(Arc::new));
                keep_latest(&mut record.seed, self.config.max_missed);
                return Some(changed);
            }
        };
        let old = records.remove(&req.pid);
        let mut rooms = Vec::with_capacity(all.len());
        for room in dedup(all) {
            // A room the record had keeps where it joined; a new one starts here.
            let kept = old.as_ref().and_then(|o| o.rooms.iter().find(|(r, _)| **r == *room).cloned());
            rooms.push(kept.unwrap_or_else(|| (enter_log(logs, &room, next_log_id, &mut changed.added), *next_pos)));
        }
        let mut seed: Vec<Shared> = seed.into_iter().map(Arc::new).collect();
        if old.as_ref().is_some_and(|o| o.holder != holder) {
            // A seed is owed by the holder that handed the record over, not by a new one.
            forgive_seed(owed, &req.pid);
        }
        if let Some(old) = old {
            for (room, _) in &old.rooms {
                if !rooms.iter().any(|(r, _)| r == room) {
                    leave_log(logs, room, &mut changed.emptied);
                }
            }
            seed.extend(old.seed);
        }
        keep_latest(&mut seed, self.config.max_missed);
        let record = Record { sid: req.sid.into(), rooms, holder, version: req.version, expires: None, seed };
        records.insert(req.pid, record);
        Some(changed)
    }

    /// Adds to a record's seed (what its restoring socket is sent besides what this keeper
    /// logs); nothing if `holder` does not hold it. A seed the record waited for is in.
    pub fn seed(&self, pid: &str, holder: &Holder, broadcasts: Vec<Broadcast>) {
        let mut state = self.lock();
        if let Some(record) = state.records.get_mut(pid).filter(|r| r.holder == *holder) {
            record.seed.extend(broadcasts.into_iter().map(Arc::new));
            keep_latest(&mut record.seed, self.config.max_missed);
            if forgive_seed(&mut state.owed, pid) {
                drop(state);
                self.seeds.notify_waiters();
            }
        }
    }

    /// A record handed over by `holder`, a leaving keeper: once sure this keeper is subscribed
    /// to the record's rooms, that keeper sends what it logged for the record meanwhile (a
    /// seed, maybe empty). Until it arrives, `holder` leaves the ring (see
    /// [`Keeper::holders_gone`]), or `within` passes, a take waits for it (see
    /// [`Keeper::seeded`]): a client reconnecting in that window would otherwise be restored
    /// without what the leaving keeper logged after its snapshot, and the seed then dropped.
    pub fn expect_seed(&self, pid: &str, holder: &Holder, within: Duration) {
        let mut state = self.lock();
        if state.records.get(pid).is_some_and(|r| r.holder == *holder) {
            state.owed.insert(pid.to_owned(), Instant::now() + within);
        }
    }

    /// Resolves once `pid`'s record owes no seed (see [`Keeper::expect_seed`]): it came, its
    /// time is up, or the record is gone.
    pub async fn seeded(&self, pid: &str) {
        loop {
            let notified = self.seeds.notified();
            tokio::pin!(notified);
            // Registered before the look, so a seed arriving in between still wakes this.
            notified.as_mut().enable();
            let due = self.lock().owed.get(pid).copied();
            let Some(due) = due.filter(|due| *due > Instant::now()) else { return };
            if tokio::time::timeout_at(due, notified).await.is_err() {
                return;
            }
        }
    }

    /// The holder let go of a session after its record's `version`: parked for its client
    /// (`park`, a transport loss) or dropped (the client left). Nothing if `holder` does not
    /// hold it. An update of that version or older arriving later is stale.
    pub fn release(&self, pid: &str, holder: &Holder, version: u64, park: bool) -> KeptRooms {
        let mut state = self.lock();
        let mut changed = KeptRooms::default();
        if !state.records.get(pid).is_some_and(|r| r.holder == *holder) {
            return changed;
        }
        if park {
            if let Some(record) = state.records.get_mut(pid) {
                record.version = record.version.max(version);
                record.expires.get_or_insert(Instant::now() + self.config.max_disconnection);
            }
        } else {
            remove(&mut state, pid, &mut changed.emptied);
        }
        changed
    }

    /// Parks the records whose holder is gone (its node died, restarted or left); a seed it
    /// owed (see [`Keeper::expect_seed`]) will not come.
    pub fn holders_gone(&self, live: impl Fn(&Holder) -> bool) -> usize {
        let mut state = self.lock();
        let KeeperState { records, owed, .. } = &mut *state;
        let expires = Instant::now() + self.config.max_disconnection;
        let mut parked = 0;
        let mut unowed = false;
        for (pid, record) in records.iter_mut() {
            if live(&record.holder) {
                continue;
            }
            if record.expires.is_none() {
                record.expires = Some(expires);
                parked += 1;
            }
            unowed |= forgive_seed(owed, pid);
        }
        drop(state);
        if unowed {
            self.seeds.notify_waiters();
        }
        parked
    }

    /// The holder of a live record, and its socket id.
    pub fn live_holder(&self, pid: &str) -> Option<(Holder, String)> {
        let state = self.lock();
        state.records.get(pid).filter(|r| r.expires.is_none()).map(|r| (r.holder.clone(), r.sid.to_string()))
    }

    /// A parked session's socket id and rooms.
    pub fn find(&self, pid: &str) -> Result<(String, Vec<String>), RestoreError> {
        let state = self.lock();
        let record = state.records.get(pid).ok_or(RestoreError::Unknown)?;
        check_parked(record)?;
        Ok((record.sid.to_string(), record.rooms.iter().map(|(r, _)| r.to_string()).collect()))
    }

    /// Takes a parked session: removes its record and returns what its client missed, the
    /// broadcasts of its rooms above `frontier`, each publisher's in counter order.
    pub fn take(&self, pid: &str, frontier: &Frontier) -> Result<(Vec<Broadcast>, KeptRooms), RestoreError> {
        let mut state = self.lock();
        let record = state.records.get(pid).ok_or(RestoreError::Unknown)?;
        check_parked(record)?;
        let missed = missed(record, &state.logs, frontier, self.config.max_missed);
        let mut changed = KeptRooms::default();
        remove(&mut state, pid, &mut changed.emptied);
        Ok((missed?, changed))
    }

    /// Parked records, each with what its rooms logged since it joined them (the latest that
    /// fit in `budget` bytes), for another keeper (this node is leaving).
    pub fn parked(&self, budget: usize) -> Vec<(KeepRequest, Vec<Broadcast>)> {
        let state = self.lock();
        state
            .records
            .iter()
            .filter(|(_, r)| r.expires.is_some())
            .map(|(pid, r)| {
                let req = KeepRequest {
                    pid: pid.clone(),
                    sid: r.sid.to_string(),
                    rooms: RoomsUpdate::All(r.rooms.iter().map(|(room, _)| room.to_string()).collect()),
                    version: r.version,
                };
                (req, logged(r, &state.logs, budget))
            })
            .collect()
    }

    /// What a record's rooms logged since it joined them, with its seed (the latest that fit
    /// in `budget` bytes): for the keeper a leaving node handed it to, once that one is
    /// subscribed, as what it may have missed meanwhile.
    pub fn logged_for(&self, pid: &str, budget: usize) -> Vec<Broadcast> {
        let state = self.lock();
        state.records.get(pid).map(|r| logged(r, &state.logs, budget)).unwrap_or_default()
    }

    /// Drops a record, whatever its state (a leaving keeper handed it on).
    pub fn forget(&self, pid: &str) -> KeptRooms {
        let mut changed = KeptRooms::default();
        remove(&mut self.lock(), pid, &mut changed.emptied);
        changed
    }

    /// Logs a broadcast of a room with records here.
    pub fn delivered(&self, room: &str, stamp: Stamp, frames: &[Frame]) {
        let mut state = self.lock();
        let KeeperState { logs, order, next_pos, .. } = &mut *state;
        let Some(log) = logs.get_mut(room) else { return };
        order.push_back((log.name.clone(), log.id));
        log.in_order += 1;
        log.entries.push_back((*next_pos, Arc::new((stamp, frames.to_vec()))));
        *next_pos += 1;
        if log.entries.len() > self.config.max_missed {
            log.evict_front();
        }
        while order.len() > self.config.log_len {
            let Some((oldest, id)) = order.pop_front() else { break };
            if let Some(log) = logs.get_mut(&oldest).filter(|l| l.id == id) {
                log.in_order -= 1;
                // Unless its own bound evicted it already, its oldest entry is this one.
                if log.entries.len() > log.in_order {
                    log.evict_front();
                }
            }
        }
    }

    /// Whether records keep this node subscribed to `room`.
    pub fn keeps(&self, room: &str) -> bool {
        self.lock().logs.get(room).is_some_and(|l| l.records > 0)
    }

    /// Drops parked sessions whose time is up; returns the rooms no record keeps any more.
    pub fn expire(&self) -> Vec<String> {
        let now = Instant::now();
        let mut state = self.lock();
        let expired: Vec<String> =
            state.records.iter().filter(|(_, r)| r.expires.is_some_and(|e| e <= now)).map(|(p, _)| p.clone()).collect();
        let mut emptied = Vec::new();
        for pid in expired {
            remove(&mut state, &pid, &mut emptied);
        }
        emptied
    }

    /// (records, parked records) kept here.
    pub fn counts(&self) -> (usize, usize) {
        let state = self.lock();
        (state.records.len(), state.records.values().filter(|r| r.expires.is_some()).count())
    }

    /// Broadcasts logged here, across rooms.
    #[cfg(test)]
    pub fn logged(&self) -> usize {
        self.lock().logs.values().map(|l| l.entries.len()).sum()
    }
}

fn dedup(rooms: Vec<String>) -> Vec<String> {
    let mut seen = HashSet::new();
    rooms.into_iter().filter(|r| seen.insert(r.clone())).collect()
}

/// Counts one more record in a room's log, made if there is none (the twin of [`leave_log`]);
/// a room no record kept before goes into `added`. Returns the room's shared name.
fn enter_log(
    logs: &mut HashMap<Arc<str>, RoomLog>,
    room: &str,
    next_id: &mut u64,
    added: &mut Vec<String>,
) -> Arc<str> {
    if !logs.contains_key(room) {
        *next_id += 1;
        let name: Arc<str> = room.into();
        logs.insert(name.clone(), RoomLog { name, id: *next_id, ..RoomLog::default() });
    }
    let log = logs.get_mut(room).expect("just inserted");
    log.records += 1;
    if log.records == 1 {
        added.push(room.to_owned());
    }
    log.name.clone()
}

fn leave_log(logs: &mut HashMap<Arc<str>, RoomLog>, room: &Arc<str>, emptied: &mut Vec<String>) {
    if let Some(log) = logs.get_mut(room) {
        log.records -= 1;
        if log.records == 0 {
            logs.remove(room);
            emptied.push(room.to_string());
        }
    }
}

/// Forgets a debt of seed (see [`Keeper::expect_seed`]); whether there was one. Rarely any:
/// the map is not hashed into while empty.
fn forgive_seed(owed: &mut HashMap<String, Instant>, pid: &str) -> bool {
    !owed.is_empty() && owed.remove(pid).is_some()
}

fn remove(state: &mut KeeperState, pid: &str, emptied: &mut Vec<String>) {
    forgive_seed(&mut state.owed, pid);
    if let Some(record) = state.records.remove(pid) {
        for (room, _) in &record.rooms {
            leave_log(&mut state.logs, room, emptied);
        }
        if state.logs.is_empty() {
            state.order.clear();
        }
    }
}

fn check_parked(record: &Record) -> Result<(), RestoreError> {
    match record.expires {
        None => Err(RestoreError::Live),
        Some(e) if e <= Instant::now() => Err(RestoreError::Unknown),
        Some(_) => Ok(()),
    }
}

/// Everything a record's rooms logged since it joined them, and its seed, the latest that fit
/// in `budget` bytes.
fn logged(record: &Record, logs: &HashMap<Arc<str>, RoomLog>, budget: usize) -> Vec<Broadcast> {
    latest_within(missed(record, logs, &Frontier::default(), usize::MAX).unwrap_or_default(), budget)
}

/// The broadcasts of a record's rooms (seed and logs) above `frontier`, without duplicates,
/// each publisher's in counter order. The logs' order is the order they were published in, as
/// this keeper saw it; the seed's broadcasts that are not in the logs were published before
/// this keeper logged the rooms, so they go first.
fn missed(
    record: &Record,
    logs: &HashMap<Arc<str>, RoomLog>,
    frontier: &Frontier,
    max: usize,
) -> Result<Vec<Broadcast>, RestoreError> {
    // The rooms' logs, merged in the order this keeper logged them.
    let mut from_logs: Vec<(u64, usize, Shared)> = Vec::new();
    for (i, (room, joined)) in record.rooms.iter().enumerate() {
        let Some(log) = logs.get(room) else { continue };
        if log.gap(*joined, frontier) {
            return Err(RestoreError::Gap);
        }
        from_logs.extend(log.entries.iter().filter(|(pos, _)| pos >= joined).map(|(pos, e)| (*pos, i, e.clone())));
    }
    from_logs.sort_by_key(|(pos, i, _)| (*pos, *i));
    let logged: HashSet<Stamp> = from_logs.iter().map(|(_, _, e)| e.0).collect();
    let mut seen = HashSet::new();
    let earlier = record.seed.iter().filter(|e| !logged.contains(&e.0));
    let mut out: Vec<Shared> = Vec::new();
    for entry in earlier.chain(from_logs.iter().map(|(_, _, e)| e)) {
        if !frontier.has(entry.0) && seen.insert(entry.0) {
            out.push(entry.clone());
        }
    }
    if out.len() > max {
        return Err(RestoreError::TooMany);
    }
    Ok(in_publisher_order(out.iter().map(|e| Broadcast::clone(e)).collect()))
}

/// Reorders each publisher's broadcasts by counter within the places they hold, so
/// publishers stay interleaved as they were and each is in its own order.
pub fn in_publisher_order(mut broadcasts: Vec<Broadcast>) -> Vec<Broadcast> {
    let mut by_publisher: HashMap<u32, Vec<usize>> = HashMap::new();
    for (i, (stamp, _)) in broadcasts.iter().enumerate() {
        by_publisher.entry(stamp.publisher).or_default().push(i);
    }
    for places in by_publisher.values() {
        let mut items: Vec<Broadcast> = places.iter().map(|&i| std::mem::take(&mut broadcasts[i])).collect();
        items.sort_by_key(|(stamp, _)| stamp.counter);
        for (&i, item) in places.iter().zip(items) {
            broadcasts[i] = item;
        }
    }
    broadcasts
}

fn keep_latest(seed: &mut Vec<Shared>, max: usize) {
    let excess = seed.len().saturating_sub(max);
    seed.drain(..excess);
}

/// Roughly how many bytes a broadcast takes on the wire.
pub fn broadcast_size((_, frames): &Broadcast) -> usize {
    16 + frames.iter().map(|f| 8 + f.len()).sum::<usize>()
}

/// The latest of `broadcasts` (oldest first) whose sizes add up to at most `budget`.
pub fn latest_within(broadcasts: Vec<Broadcast>, budget: usize) -> Vec<Broadcast> {
    let mut left = budget;
    let mut kept: Vec<Broadcast> = broadcasts
        .into_iter()
        .rev()
        .take_while(|b| {
            let size = broadcast_size(b);
            let fits = size <= left;
            left = left.saturating_sub(size);
            fits
        })
        .collect();
    kept.reverse();
    kept
}

/// Why a socket's close lets its client recover (socket.io's recoverable reasons): the
/// transport went away, not the client or the application.
pub fn recoverable(reason: &str) -> bool {
    matches!(reason, "transport close" | "transport error" | "ping timeout" | "server shutting down")
}

#[cfg(test)]
mod sim;

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(s: &str) -> Vec<Frame> {
        vec![Frame::message(&format!("2[\"m\",\"{s}\"]"))]
    }

    fn stamp(publisher: u32, counter: u64) -> Stamp {
        Stamp { publisher, counter }
    }

    fn holder(node: &str) -> Holder {
        Holder { node: node.into(), generation: 1 }
    }

    fn req(pid: &str, rooms: &[&str], version: u64) -> KeepRequest {
        let rooms = RoomsUpdate::All(rooms.iter().map(|r| r.to_string()).collect());
        KeepRequest { pid: pid.into(), sid: "s1".into(), rooms, version }
    }

    fn keeper(max_missed: usize) -> Keeper {
        Keeper::new(RecoveryConfig { max_missed, log_len: 100, ..RecoveryConfig::default() })
    }

    fn stamps(broadcasts: &[Broadcast]) -> Vec<(u32, u64)> {
        broadcasts.iter().map(|(s, _)| (s.publisher, s.counter)).collect()
    }

    #[test]
    fn a_thread_stamps_in_counter_order_and_threads_and_keepers_are_distinct_publishers() {
        let (k1, k2) = (Arc::new(keeper(10)), keeper(10));
        let (a, b) = (k1.stamp(), k1.stamp());
        assert_eq!((a.publisher, a.counter + 1), (b.publisher, b.counter));
        let other = k2.stamp();
        assert_ne!(other.publisher, a.publisher, "two nodes of one process on one thread");
        assert!(other.counter > b.counter, "a later keeper counts from above");
        let elsewhere = std::thread::spawn(move || k1.stamp()).join().unwrap();
        assert_ne!(elsewhere.publisher, a.publisher);
    }

    #[test]
    fn a_restarted_nodes_publishers_are_its_earlier_lifes_counting_on_from_above() {
        let before = keeper(10);
        before.set_lineage("node1", "/chat");
        let stamps: Vec<Stamp> = (0..1000).map(|_| before.stamp()).collect();
        let last = *stamps.last().unwrap();
        let elsewhere = std::thread::scope(|s| s.spawn(|| before.stamp()).join().unwrap());
        drop(before);
        // The same node and namespace, a new life (here on the same threads, within a
        // millisecond: the process-wide floor still puts it above).
        let after = keeper(10);
        after.set_lineage("node1", "/chat");
        let first = after.stamp();
        assert_eq!(first.publisher, last.publisher, "the same slot is the same publisher");
        assert!(first.counter > last.counter, "{first:?} after {last:?}");
        let second_thread = std::thread::scope(|s| s.spawn(|| after.stamp()).join().unwrap());
        assert_eq!(second_thread.publisher, elsewhere.publisher);
        assert!(second_thread.counter > elsewhere.counter);
        let other_node = keeper(10);
        other_node.set_lineage("node2", "/chat");
        assert_ne!(other_node.stamp().publisher, first.publisher);
        // A frontier that saw both lives names one publisher per slot.
        let mut f = Frontier::default();
        for s in stamps.iter().chain([&first]) {
            assert!(f.admit(*s));
        }
        assert_eq!(f.encode().matches('.').count(), 0, "one publisher: {}", f.encode());
    }

    #[test]
    fn a_frontier_admits_each_stamp_once_and_round_trips_as_an_offset() {
        let mut f = Frontier::default();
        assert!(f.admit(stamp(1, 5)) && f.admit(stamp(0xab, 1)));
        assert!(!f.admit(stamp(1, 5)) && !f.admit(stamp(1, 4)), "at or below: sent already");
        assert!(f.admit(stamp(1, 6)));
        assert_eq!(f.encode(), "1-6.ab-1");
        let mut g = Frontier::default();
        assert!(g.admit(stamp(0xab, 1)) && g.admit(stamp(1, 6)));
        assert_eq!(g, f, "the same whatever the order publishers were first seen in");
        assert_eq!(Frontier::parse(&f.encode()), Some(f.clone()));
        assert!(f.has(stamp(0xab, 1)) && !f.has(stamp(0xab, 2)) && !f.has(stamp(2, 1)));
        assert_eq!(Frontier::parse(""), Some(Frontier::default()));
        for bad in ["x", "zz-1", "1-", "1-2.1-3", "MTIz"] {
            assert_eq!(Frontier::parse(bad), None, "{bad}");
        }
        let mut full = Frontier::default();
        (0..Frontier::MAX as u32).for_each(|p| assert!(full.admit(stamp(p + 1, 1))));
        assert!(full.admit(stamp(9999, 1)));
        assert_eq!(full.encode(), "x", "overflowed: not recoverable");
    }

    #[test]
    fn the_offset_is_spliced_in_as_the_last_argument() {
        let frontier = Frontier::parse("1-2.fedcba98-1234567890abcdef").unwrap();
        let out = with_offset(&Frame::message("2/chat,[\"m\",{\"a\":1}]"), &frontier);
        assert_eq!(out, Some(Frame::message("2/chat,[\"m\",{\"a\":1},\"1-2.fedcba98-1234567890abcdef\"]")));
        assert_eq!(with_offset(&Frame::Binary(bytes::Bytes::from_static(b"x")), &frontier), None);
        assert_eq!(Frontier::parse("0-0").unwrap().encode(), "0-0");
        // A frontier of many publishers, spliced in whole.
        let long = (1..=8).map(|p| format!("{p:x}-ffffffffff")).collect::<Vec<_>>().join(".");
        let spliced = with_offset(&Frame::message("2[\"m\"]"), &Frontier::parse(&long).unwrap());
        assert_eq!(spliced, Some(Frame::message(&format!("2[\"m\",\"{long}\"]"))));
    }

    #[test]
    fn a_parked_record_gives_back_what_its_rooms_logged_above_the_frontier() {
        let k = keeper(10);
        let changed = k.keep(req("p", &["a", "b"], 1), holder("n1"), vec![]).unwrap();
        assert_eq!(changed.added, ["a", "b"]);
        assert!(k.keeps("a") && !k.keeps("c"));
        k.delivered("a", stamp(1, 1), &frames("1"));
        k.delivered("c", stamp(1, 2), &frames("2"));
        k.delivered("b", stamp(2, 1), &frames("3"));
        k.delivered("a", stamp(1, 3), &frames("4"));
        assert_eq!(k.find("p"), Err(RestoreError::Live), "its holder still has it");
        assert_eq!(k.take("p", &Frontier::default()).unwrap_err(), RestoreError::Live);
        k.keep(req("p", &["a", "b"], 2), holder("n1"), vec![]);
        assert!(k.release("p", &holder("n2"), 9, true).emptied.is_empty(), "only its holder lets go");
        k.release("p", &holder("n1"), 9, true);
        assert_eq!(k.find("p"), Ok(("s1".into(), vec!["a".into(), "b".into()])));
        // The client had 1:1 only.
        let frontier = Frontier::parse("1-1").unwrap();
        let (missed, changed) = k.take("p", &frontier).unwrap();
        assert_eq!(stamps(&missed), [(2, 1), (1, 3)]);
        assert_eq!(changed.emptied, ["a", "b"]);
        assert_eq!(k.find("p"), Err(RestoreError::Unknown), "taken once");
        // A late update from the holder, of a version it had released, does not bring it back.
        k.keep(req("q", &["a"], 1), holder("n1"), vec![]);
        k.release("q", &holder("n1"), 3, true);
        k.keep(req("q", &["a", "b"], 3), holder("n1"), vec![]);
        assert!(k.find("q").is_ok() && !k.keeps("b"));
        assert_eq!(k.logged(), 0, "no record keeps a log");
    }

    #[test]
    fn a_dead_holders_records_are_parked() {
        let k = keeper(10);
        k.keep(req("p", &["a"], 1), holder("n1"), vec![]);
        k.keep(req("q", &["a"], 1), holder("n2"), vec![]);
        assert_eq!(k.holders_gone(|h| &*h.node == "n2"), 1);
        assert!(k.find("p").is_ok() && k.find("q") == Err(RestoreError::Live));
        assert_eq!(k.counts(), (2, 1));
    }

    #[test]
    fn stale_updates_are_ignored_and_joins_start_at_the_log_position() {
        let k = keeper(10);
        k.keep(req("p", &["a"], 2), holder("n1"), vec![]);
        assert_eq!(k.keep(req("p", &[], 1), holder("n1"), vec![]), Some(KeptRooms::default()), "older version");
        assert!(k.keeps("a"));
        k.delivered("a", stamp(1, 1), &frames("a"));
        k.delivered("b", stamp(1, 2), &frames("b, before the join: not logged"));
        let changed = k.keep(req("p", &["a", "b"], 3), holder("n1"), vec![]).unwrap();
        assert_eq!(changed, KeptRooms { added: vec!["b".into()], emptied: vec![] });
        k.delivered("b", stamp(1, 3), &frames("b"));
        k.release("p", &holder("n1"), 9, true);
        let (missed, _) = k.take("p", &Frontier::default()).unwrap();
        assert_eq!(stamps(&missed), [(1, 1), (1, 3)]);
    }

    #[test]
    fn a_record_changes_one_room_at_a_time() {
        let k = keeper(10);
        let change = |rooms, version| KeepRequest { pid: "p".into(), sid: "s1".into(), rooms, version };
        assert_eq!(k.keep(change(RoomsUpdate::Join("a".into()), 1), holder("n1"), vec![]), None, "no record yet");
        k.keep(req("p", &["a"], 1), holder("n1"), vec![]);
        let joined = k.keep(change(RoomsUpdate::Join("b".into()), 2), holder("n1"), vec![]).unwrap();
        assert_eq!(joined.added, ["b"]);
        assert_eq!(k.keep(change(RoomsUpdate::Join("c".into()), 3), holder("n2"), vec![]), None, "another holder");
        let left = k.keep(change(RoomsUpdate::Leave("a".into()), 4), holder("n1"), vec![]).unwrap();
        assert_eq!(left.emptied, ["a"]);
        k.release("p", &holder("n1"), 4, true);
        assert_eq!(k.find("p"), Ok(("s1".into(), vec!["b".into()])));
    }

    #[test]
    fn seeds_and_logs_merge_without_duplicates_in_publisher_order() {
        let k = keeper(10);
        k.keep(req("p", &["a"], 1), holder("n1"), vec![(stamp(1, 2), frames("2"))]);
        k.delivered("a", stamp(1, 1), &frames("1"));
        k.delivered("a", stamp(1, 2), &frames("2"));
        k.delivered("a", stamp(2, 1), &frames("x"));
        k.seed("p", &holder("n1"), vec![(stamp(1, 3), frames("3"))]);
        k.release("p", &holder("n1"), 9, true);
        let (missed, _) = k.take("p", &Frontier::default()).unwrap();
        // What only the seed has first (published before the keeper logged the room), then the
        // logs' order; each publisher in counter order in the places it holds.
        assert_eq!(stamps(&missed), [(1, 1), (1, 2), (1, 3), (2, 1)]);
    }

    #[test]
    fn the_replay_of_several_rooms_follows_the_order_the_keeper_got_them_in() {
        let k = keeper(10);
        k.keep(req("p", &["a", "b"], 1), holder("n1"), vec![]);
        k.delivered("a", stamp(1, 1), &frames("a1"));
        k.delivered("a", stamp(1, 2), &frames("a2"));
        k.delivered("b", stamp(2, 1), &frames("b1"));
        k.delivered("a", stamp(3, 1), &frames("a3"));
        k.release("p", &holder("n1"), 9, true);
        let (missed, _) = k.take("p", &Frontier::default()).unwrap();
        assert_eq!(stamps(&missed), [(1, 1), (1, 2), (2, 1), (3, 1)]);
    }

    #[test]
    fn an_evicted_broadcast_the_client_missed_is_a_gap() {
        let k = keeper(2);
        for pid in ["p", "q"] {
            k.keep(req(pid, &["a"], 1), holder("n1"), vec![]);
        }
        for c in 1..=3 {
            k.delivered("a", stamp(1, c), &frames("x"));
        }
        k.release("p", &holder("n1"), 9, true);
        k.release("q", &holder("n1"), 9, true);
        assert_eq!(k.take("p", &Frontier::default()).unwrap_err(), RestoreError::Gap, "1:1 is gone");
        let (missed, _) = k.take("q", &Frontier::parse("1-1").unwrap()).unwrap();
        assert_eq!(stamps(&missed), [(1, 2), (1, 3)]);
    }

    #[test]
    fn the_log_is_bounded_across_rooms() {
        let k = Keeper::new(RecoveryConfig { max_missed: 10, log_len: 3, ..RecoveryConfig::default() });
        k.keep(req("p", &["a", "b"], 1), holder("n1"), vec![]);
        for c in 1..=5 {
            k.delivered(if c % 2 == 0 { "a" } else { "b" }, stamp(1, c), &frames("x"));
        }
        assert_eq!(k.logged(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn parked_records_expire() {
        let k = keeper(10);
        k.keep(req("p", &["a"], 1), holder("n1"), vec![]);
        k.release("p", &holder("n1"), 9, true);
        assert!(k.expire().is_empty());
        tokio::time::advance(RecoveryConfig::default().max_disconnection).await;
        assert_eq!(k.find("p"), Err(RestoreError::Unknown));
        assert_eq!(k.expire(), ["a"]);
        assert_eq!(k.counts(), (0, 0));
    }

    #[test]
    fn a_leaving_keeper_hands_parked_records_on_with_their_logs() {
        let (k, next) = (keeper(10), keeper(10));
        k.keep(req("p", &["a"], 1), holder("n1"), vec![]);
        k.delivered("a", stamp(1, 1), &frames("1"));
        k.release("p", &holder("n1"), 9, true);
        let parked = k.parked(usize::MAX);
        assert_eq!(parked.len(), 1);
        for (req, seed) in parked {
            let pid = req.pid.clone();
            next.keep(req, holder("k"), seed).unwrap();
            next.release(&pid, &holder("k"), 0, true);
        }
        let (missed, _) = next.take("p", &Frontier::default()).unwrap();
        assert_eq!(stamps(&missed), [(1, 1)]);
    }

    /// A record handed over by a leaving keeper is taken once that keeper's seed is in, so
    /// the restore includes it; without the seed, a take waits no longer than its time.
    #[tokio::test]
    async fn a_take_waits_for_the_seed_a_handed_over_record_is_owed() {
        let k = keeper(100);
        let leaving = holder("node1");
        k.keep(req("p", &["r"], 1), leaving.clone(), Vec::new()).unwrap();
        k.release("p", &leaving, 1, true);
        k.expect_seed("p", &leaving, Duration::from_secs(10));
        let later = (stamp(9, 1), frames("logged by the leaving keeper"));
        let started = Instant::now();
        tokio::join!(k.seeded("p"), async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            k.seed("p", &holder("node2"), vec![(stamp(9, 2), frames("not its holder"))]);
            tokio::time::sleep(Duration::from_millis(50)).await;
            k.seed("p", &leaving, vec![later.clone()]);
        });
        assert!(started.elapsed() < Duration::from_secs(5), "woken by the seed, not its time");
        let (missed, _) = k.take("p", &Frontier::default()).unwrap();
        assert_eq!(stamps(&missed), [(9, 1)]);

        // The leaving keeper is gone: no seed will come, the take goes on.
        k.keep(req("s", &["r"], 1), leaving.clone(), Vec::new()).unwrap();
        k.release("s", &leaving, 1, true);
        k.expect_seed("s", &leaving, Duration::from_secs(10));
        let started = Instant::now();
        tokio::join!(k.seeded("s"), async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            k.holders_gone(|h| *h != leaving);
        });
        assert!(started.elapsed() < Duration::from_secs(5), "woken when its holder left");

        // No seed comes: the take goes on once its time is up.
        k.keep(req("q", &["r"], 1), leaving.clone(), Vec::new()).unwrap();
        k.release("q", &leaving, 1, true);
        k.expect_seed("q", &leaving, Duration::from_millis(100));
        let started = Instant::now();
        k.seeded("q").await;
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert!(k.take("q", &Frontier::default()).is_ok());
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
