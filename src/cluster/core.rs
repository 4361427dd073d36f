//! The rooms core: everything one node knows about rooms across the cluster, as a state
//! machine that does no I/O and never waits.
//!
//! It takes three kinds of input: this node's local events (a room's local members changed),
//! what peers said (`Subscribe` requests and their answers, `Presence` pushes) and membership
//! snapshots from gossip. Each input updates the tables and returns [`Effect`]s for the
//! driver (`cluster::rooms`) to carry out: a push or a request to a node, news for the local
//! members, a gossip update, the release of joiners waiting for their room. Publishing asks it
//! for the nodes to push a broadcast to. Because it is plain data, it is tested with any number
//! of nodes in one process, with every interleaving a seeded random script can produce (see the
//! simulation in this module's tests).
//!
//! # States
//! Per room (namespace and name) a node holds: its local members' labels (`local`), the remote
//! members each peer told it of (`presence`), the peers whose gossip says they have members
//! (`gossip`), and, while the room's first local join is being announced, the peers that have
//! not answered yet (`joining`).
//!
//! # Invariants (checked by the tests)
//! - Once every message is delivered and gossip has converged, a node's subscribers of a room
//!   are exactly the other live nodes with local members in it, and the remote members it
//!   knows of in a room it has members in are exactly theirs.
//! - A room's first local join is released ([`Effect::Joined`]) only once every peer that was
//!   live then has answered (that ask or a later one) or left: a broadcast published anywhere
//!   after the release reaches the joiner's node (an ask that failed is made again until
//!   answered; the driver bounds the wait).
//! - A node's gossip keys converge to its rooms with local members, whatever the order of joins
//!   and leaves (one dirty set, applied by one writer).
//! - Every table is bounded by the rooms with members and the live nodes; a node that leaves
//!   takes its entries with it.
//! - Work per input is in proportion to the change: a membership snapshot diffs each node's
//!   room set with the last one applied, and the two share every part that did not change
//!   (`MemberInfo::rooms` is a persistent set), so the diff visits only what changed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use imbl::ordset::DiffItem;

use super::membership::{room_key, Members, RoomSet};
use crate::socketio::recovery::PARKED_LABEL;
use crate::socketio::Labels;
use crate::socketio::{PresenceCause, PresenceChange};

/// A room: its namespace and its name.
pub type RoomId = (String, String);

/// When a node's word about its members was true: its generation (a restart starts a new,
/// higher one) and a counter of its local changes. A receiver applies a node's word about a
/// room only if it is newer than what it has: answers and pushes travel on different
/// connections, so an answer can arrive after a later push, or before an earlier one.
pub type Version = (u64, u64);

/// Removed presence entries remembered (so an older word arriving late is recognized as
/// such), at most; the oldest are forgotten first. A late word is one overtaken on another
/// connection, a matter of milliseconds to an RPC timeout (2 s), while even heavy churn (the
/// churn soak: about 300 removals a second seen by each node) lays 16,384 in about a minute.
/// Each costs a few hundred bytes; 65,536 of them were a fifth of a churning node's heap.
const MAX_TOMBSTONES: usize = 16_384;

/// What the driver must do after an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Tell `to`, one way and after what was pushed to it before, that this node's local
    /// members of `room` are now `labels` (empty: none).
    Presence { to: String, room: RoomId, labels: Labels, version: Version },
    /// Ask `to` for its local members of `room`, telling it ours; feed its answer (or the
    /// failure) to [`RoomsCore::answered`] with the same `version` and `notify`.
    Ask { to: String, room: RoomId, labels: Labels, version: Version, notify: bool },
    /// Remote members of a room with local members changed: tell the local members.
    Notify { room: RoomId, change: PresenceChange },
    /// Gossip keys are due: take them with [`RoomsCore::take_advertisements`].
    Advertise,
    /// Local members changed in rooms with members before and after: a moment later, take
    /// the rooms ([`RoomsCore::take_presence_due`]) and hand their labels as they are then to
    /// [`RoomsCore::push_presence`], for all such changes made until then.
    PresenceDue,
    /// The room's first local join is effective on every peer: release who waits for it.
    Joined { room: RoomId },
}

/// The rooms core of one node.
#[derive(Debug)]
pub struct RoomsCore {
    me: String,
    generation: u64,
    /// Local changes so far: the second half of this node's [`Version`]s.
    clock: u64,
    /// Rooms with local members: their labels (a parked session counts as [`PARKED_LABEL`]),
    /// as of the latest [`RoomsCore::local_changed`] or [`RoomsCore::push_presence`] (a room
    /// [`RoomsCore::local_touched`] since is behind by at most one pause of the pusher).
    local: HashMap<RoomId, Labels>,
    /// The clock at which [`RoomsCore::local_changed`] last set each room of `local`: labels
    /// taken before it (for [`RoomsCore::push_presence`]) are older than those.
    local_set_at: HashMap<RoomId, u64>,
    /// Remote presence: room → node → labels of its members there, as of a version. An
    /// entry with no labels is a tombstone: that node's members left, as of that version.
    presence: HashMap<RoomId, BTreeMap<String, (Version, Vec<String>)>>,
    /// Tombstones in the order they were laid, to forget the oldest past [`MAX_TOMBSTONES`].
    tombstones: std::collections::VecDeque<(RoomId, String, Version)>,
    /// Remote subscriptions known from gossip: room → nodes.
    gossip: HashMap<RoomId, BTreeSet<String>>,
    /// Each remote node's room set as last applied to `gossip` (shares structure with the
    /// next snapshot's, so diffing the two costs what changed).
    applied: HashMap<String, RoomSet>,
    /// Subscriptions seen in gossip whose node's members we have not heard of yet.
    unconfirmed: BTreeSet<(String, RoomId)>,
    /// Asks that failed (the peer did not answer in time), by the version of the latest that
    /// failed: asked again at each membership snapshot while the room has local members,
    /// until an ask made since then is answered (an answer to an older ask may describe the
    /// peer before changes it did not tell us of, as we were not its subscriber then).
    retry: BTreeMap<(String, RoomId), Version>,
    /// Live node ids, this one included, as of the last membership snapshot, with their
    /// generations.
    live: BTreeMap<String, u64>,
    /// Rooms whose first local join is being announced: the version of that join's asks
    /// and the peers yet to answer them (an answer to an earlier round does not count).
    joining: HashMap<RoomId, (Version, BTreeSet<String>)>,
    /// Rooms whose gossip key is not as their local members are: those that gained their
    /// first or lost their last local member an odd number of times since the keys were last
    /// taken. A room that came and went between two takes is back as gossip has it, so it is
    /// neither set nor deleted (chitchat warns of deleting a key it does not hold).
    unadvertised: BTreeSet<RoomId>,
    /// Rooms whose local members changed since their subscribers were last told, other than
    /// by a first join or a last leave (told at once, by an ask or an empty `Presence`). A
    /// `Presence` carries every local member's name, so one per change cost N²/2 names to
    /// fill a room of N; [`RoomsCore::push_presence`] tells each room's subscribers once for
    /// the changes made since. Bounded by the rooms with local members.
    presence_due: BTreeSet<RoomId>,
}

impl RoomsCore {
    /// The core of node `me`, in its `generation` (see [`Version`]).
    pub fn new(me: impl Into<String>, generation: u64) -> Self {
        let me = me.into();
        Self {
            live: [(me.clone(), generation)].into(),
            me,
            generation,
            clock: 0,
            local: HashMap::new(),
            local_set_at: HashMap::new(),
            presence: HashMap::new(),
            tombstones: Default::default(),
            gossip: HashMap::new(),
            applied: HashMap::new(),
            unconfirmed: BTreeSet::new(),
            retry: BTreeMap::new(),
            joining: HashMap::new(),
            unadvertised: BTreeSet::new(),
            presence_due: BTreeSet::new(),
        }
    }

    pub fn node_id(&self) -> &str {
        &self.me
    }

    /// The room's local members are now `labels` (empty: none left). Returns whether the
    /// caller must wait for [`Effect::Joined`] before its join counts: the room's first join
    /// is being announced to the peers.
    pub fn local_changed(&mut self, room: RoomId, labels: Labels, out: &mut Vec<Effect>) -> bool {
        self.clock += 1;
        let version = (self.generation, self.clock);
        let (first, last) = if labels.is_empty() {
            self.local_set_at.remove(&room);
            (false, self.local.remove(&room).is_some())
        } else {
            self.local_set_at.insert(room.clone(), self.clock);
            (self.local.insert(room.clone(), labels.clone()).is_none(), false)
        };
        if (first || last) && !self.unadvertised.remove(&room) {
            self.unadvertised.insert(room.clone());
            out.push(Effect::Advertise);
        }
        if first {
            // One round trip to every live peer: each records our members and answers with
            // its own, so the join is effective everywhere before the joiner goes on.
            let peers: BTreeSet<String> = self.peers().cloned().collect();
            for to in &peers {
                let (to, room, labels) = (to.clone(), room.clone(), labels.clone());
                out.push(Effect::Ask { to, room, labels, version, notify: false });
            }
            if peers.is_empty() {
                return false;
            }
            self.joining.insert(room, (version, peers));
            return true;
        }
        // The last member left while its join was announced: nobody waits for the answers
        // any more (and a timed-out ask is not made again for a room without members).
        if last && self.joining.remove(&room).is_some() {
            out.push(Effect::Joined { room: room.clone() });
        }
        if last {
            // Every live node hears of the last leave at once, so none keeps pushing here
            // until gossip catches up.
            self.presence_due.remove(&room);
            for to in self.peers().cloned().collect::<Vec<_>>() {
                out.push(Effect::Presence { to, room: room.clone(), labels: labels.clone(), version });
            }
        } else if !labels.is_empty() {
            // Everyone subscribed hears of other changes a moment later, together.
            if self.presence_due.is_empty() {
                out.push(Effect::PresenceDue);
            }
            self.presence_due.insert(room.clone());
        }
        self.joining.contains_key(&room)
    }

    /// The room's local members changed, and it had some before and has some still: what
    /// they are is taken at the next push ([`RoomsCore::push_presence`]), not now. Filling a
    /// room of N, copying every label at every join cost N²/2; a pause of the pusher gathers
    /// many joins. `None`: the core knows of no local members of the room (a first join, or
    /// its report overtaken by this one), so the change must be made with its labels by
    /// [`RoomsCore::local_changed`]. Otherwise whether the caller must wait for
    /// [`Effect::Joined`], as there.
    pub fn local_touched(&mut self, room: &RoomId, out: &mut Vec<Effect>) -> Option<bool> {
        if !self.local.contains_key(room) {
            return None;
        }
        if self.presence_due.is_empty() {
            out.push(Effect::PresenceDue);
        }
        self.presence_due.insert(room.clone());
        Some(self.joining.contains_key(room))
    }

    /// The rooms whose subscribers are due a `Presence`: the caller takes their labels as
    /// they are now, outside of any lock the namespaces may wait on, for
    /// [`RoomsCore::push_presence`].
    pub fn take_presence_due(&mut self) -> (BTreeSet<RoomId>, u64) {
        (std::mem::take(&mut self.presence_due), self.clock)
    }

    /// Tells the subscribers of each room in `fresh` (taken by
    /// [`RoomsCore::take_presence_due`] at clock `taken`, with its local members' labels as
    /// they were then) its members, with the version of the latest change (a word about a
    /// room at a version always says the same members: they change only with the clock). A
    /// room whose last member left meanwhile was told of at once, and is skipped; one that
    /// changed again meanwhile is due again, and one whose labels were set since (its last
    /// member left and a first came) keeps those.
    pub fn push_presence(&mut self, taken: u64, fresh: Vec<(RoomId, Labels)>, out: &mut Vec<Effect>) {
        let mut rooms = Vec::with_capacity(fresh.len());
        for (room, labels) in fresh {
            // Empty: the last member left after the room was taken; that word is on its way.
            let Some(known) = self.local.get_mut(&room).filter(|_| !labels.is_empty()) else { continue };
            if self.local_set_at.get(&room).is_none_or(|at| *at <= taken) && labels != *known {
                *known = labels;
                self.clock += 1;
            }
            rooms.push(room);
        }
        let version = (self.generation, self.clock);
        for room in rooms {
            let labels = self.local[&room].clone();
            for to in self.subscribers(&room) {
                out.push(Effect::Presence { to, room: room.clone(), labels: labels.clone(), version });
            }
        }
    }

    /// The answer of `from` to an [`Effect::Ask`] made at `asked` (the ask's version): its
    /// members as of a version (`None`: no answer, whether the ask timed out or was never
    /// sent: either way the join waits, see below).
    pub fn answered(
        &mut self,
        from: &str,
        room: &RoomId,
        asked: Version,
        answer: Option<(Version, Vec<String>)>,
        notify: bool,
        out: &mut Vec<Effect>,
    ) {
        let answered = answer.is_some();
        match answer {
            Some((version, labels)) => {
                let key = (from.to_owned(), room.clone());
                if self.retry.get(&key).is_some_and(|failed| *failed <= asked) {
                    self.retry.remove(&key);
                }
                self.apply_presence(from, room, labels, version, notify, out);
            }
            // Its members may have changed meanwhile without a word to us (we were not its
            // subscriber yet): ask again.
            None if self.local.contains_key(room) && self.live.contains_key(from) => {
                let failed = self.retry.entry((from.to_owned(), room.clone())).or_insert(asked);
                *failed = (*failed).max(asked);
            }
            None => {}
        }
        // A join goes on once each peer answered an ask made for it or since (a later ask
        // carries the join too), or left. Not on a timeout: the peer may take the
        // subscription late, and whatever it publishes meanwhile would miss this node. Nor
        // on an ask never sent: a peer that cannot be reached now (one restarting, say) may be
        // a moment later, and would publish without knowing of this node's members until
        // gossip tells it (up to a second). The join waits for the ask made again (see
        // `reask`), for the peer to leave, or for the room to empty.
        let joining = self.joining.get_mut(room).filter(|(round, _)| answered && asked >= *round);
        if let Some((_, waiting)) = joining {
            waiting.remove(from);
            if waiting.is_empty() {
                self.joining.remove(room);
                out.push(Effect::Joined { room: room.clone() });
            }
        }
    }

    /// Asks again, now, the peers whose last ask failed (see `retry`): membership snapshots
    /// ask them again too, but come only when the ring changes, and a join may be waiting.
    /// Returns whether any was asked.
    pub fn reask(&mut self, out: &mut Vec<Effect>) -> bool {
        let version = (self.generation, self.clock);
        let before = out.len();
        for (to, room) in self.retry.keys() {
            if let Some(labels) = self.local.get(room) {
                let (to, room, labels) = (to.clone(), room.clone(), labels.clone());
                out.push(Effect::Ask { to, room, labels, version, notify: true });
            }
        }
        out.len() > before
    }

    /// A peer's `Subscribe`: it has members `labels` in the room, as of `version`. Returns
    /// our answer: our local members' labels as of now.
    pub fn on_subscribe(
        &mut self,
        from: &str,
        room: &RoomId,
        labels: Vec<String>,
        version: Version,
        out: &mut Vec<Effect>,
    ) -> (Version, Labels) {
        self.apply_presence(from, room, labels, version, true, out);
        ((self.generation, self.clock), self.local.get(room).cloned().unwrap_or_else(|| Labels::from([])))
    }

    /// A peer's `Presence` push: its members of the room are now `labels`, as of `version`.
    pub fn on_presence(
        &mut self,
        from: &str,
        room: &RoomId,
        labels: Vec<String>,
        version: Version,
        out: &mut Vec<Effect>,
    ) {
        self.apply_presence(from, room, labels, version, true, out);
    }

    fn apply_presence(
        &mut self,
        node: &str,
        room: &RoomId,
        labels: Vec<String>,
        version: Version,
        notify: bool,
        out: &mut Vec<Effect>,
    ) {
        let entry = self.presence.entry(room.clone()).or_default();
        if entry.get(node).is_some_and(|(known, _)| *known >= version) {
            return; // older than what we have: it was overtaken
        }
        if labels.is_empty() {
            self.tombstones.push_back((room.clone(), node.to_owned(), version));
        }
        // News for the local members only if the names they see changed (not a parked
        // session coming or going).
        fn visible(l: &[String]) -> impl Iterator<Item = &String> {
            l.iter().filter(|l| *l != PARKED_LABEL)
        }
        let before = entry.get(node).map_or(&[][..], |(_, l)| l);
        let changed = !visible(before).eq(visible(&labels));
        entry.insert(node.to_owned(), (version, labels));
        self.forget_old_tombstones();
        if notify && changed && self.local.contains_key(room) {
            out.push(Effect::Notify {
                room: room.clone(),
                change: PresenceChange { cause: PresenceCause::Remote, left: Vec::new() },
            });
        }
    }

    /// Forgets the oldest tombstones past [`MAX_TOMBSTONES`] (a word older than a forgotten
    /// one could then be applied: it would have to be overtaken by [`MAX_TOMBSTONES`] later removals).
    fn forget_old_tombstones(&mut self) {
        while self.tombstones.len() > MAX_TOMBSTONES {
            let Some((room, node, version)) = self.tombstones.pop_front() else { break };
            if let Some(nodes) = self.presence.get_mut(&room) {
                if nodes.get(&node).is_some_and(|(v, labels)| *v == version && labels.is_empty()) {
                    nodes.remove(&node);
                }
                if nodes.is_empty() {
                    self.presence.remove(&room);
                }
            }
        }
    }

    /// Applies a membership snapshot, in proportion to what changed: only nodes whose room
    /// set is a new one are diffed into the subscriber table, presence is scanned only when
    /// the live set changed, and only subscriptions new in gossip (or still unconfirmed) are
    /// checked for a missed word.
    pub fn membership_changed(&mut self, members: &Members, out: &mut Vec<Effect>) {
        let gone: Vec<String> = self.applied.keys().filter(|n| !members.nodes.contains_key(*n)).cloned().collect();
        for node in &gone {
            for room in self.applied.remove(node).unwrap_or_default().iter() {
                unsubscribe(&mut self.gossip, room, node);
            }
        }
        for m in members.nodes.values().filter(|m| m.node_id != self.me) {
            let before = self.applied.get(&m.node_id).cloned().unwrap_or_default();
            for change in before.diff(&m.rooms) {
                match change {
                    DiffItem::Remove(room) => unsubscribe(&mut self.gossip, room, &m.node_id),
                    DiffItem::Add(room) => {
                        self.gossip.entry(room.clone()).or_default().insert(m.node_id.clone());
                        // Only where our members could have missed its word: a room we
                        // join later is asked of every peer then.
                        if self.local.contains_key(room) {
                            self.unconfirmed.insert((m.node_id.clone(), room.clone()));
                        }
                    }
                }
            }
            self.applied.insert(m.node_id.clone(), m.rooms.clone());
        }
        // A node that restarted (a new generation) lost its members like one that left.
        let mut live: BTreeMap<String, u64> =
            members.nodes.values().map(|m| (m.node_id.clone(), m.generation)).collect();
        live.insert(self.me.clone(), self.generation);
        if live != self.live {
            let old = &self.live;
            let same = |node: &String| live.get(node).is_some_and(|g| old.get(node).is_none_or(|o| o == g));
            let mut lost = Vec::new();
            for (room, nodes) in self.presence.iter_mut() {
                let mut left = Vec::new();
                nodes.retain(|node, (_, labels)| {
                    let keep = same(node);
                    if !keep {
                        left.append(labels);
                    }
                    keep
                });
                if !left.is_empty() {
                    lost.push((room.clone(), left));
                }
            }
            self.presence.retain(|_, nodes| !nodes.is_empty());
            for (room, left) in lost {
                if self.local.contains_key(&room) {
                    out.push(Effect::Notify { room, change: PresenceChange { cause: PresenceCause::NodeLost, left } });
                }
            }
            // A peer that left answers no more: a join waiting for it goes on without it.
            let mut released = Vec::new();
            for (room, (_, waiting)) in self.joining.iter_mut() {
                waiting.retain(|node| live.contains_key(node));
                if waiting.is_empty() {
                    released.push(room.clone());
                }
            }
            for room in released {
                self.joining.remove(&room);
                out.push(Effect::Joined { room });
            }
            self.live = live;
        }
        // A node subscribed by gossip whose members we never heard of, in a room we have
        // members in: a direct word was missed. Ask it; asked again at each snapshot until
        // its answer (or its leaving) settles it.
        let (gossip, presence) = (&self.gossip, &self.presence);
        self.unconfirmed.retain(|(node, room)| {
            let subscribed = gossip.get(room).is_some_and(|nodes| nodes.contains(node));
            let heard = presence.get(room).and_then(|p| p.get(node)).is_some_and(|(_, labels)| !labels.is_empty());
            subscribed && !heard
        });
        let (live, local) = (&self.live, &self.local);
        self.retry.retain(|(node, room), _| live.contains_key(node) && local.contains_key(room));
        let version = (self.generation, self.clock);
        let retry = self.retry.keys().filter(|k| !self.unconfirmed.contains(*k));
        for (to, room) in self.unconfirmed.iter().chain(retry) {
            if let Some(labels) = self.local.get(room) {
                let (to, room, labels) = (to.clone(), room.clone(), labels.clone());
                out.push(Effect::Ask { to, room, labels, version, notify: true });
            }
        }
    }

    /// Nodes to push a room's broadcasts to: subscribed by gossip or by direct word, live,
    /// not this one.
    pub fn subscribers(&self, room: &RoomId) -> Vec<String> {
        let mut nodes: BTreeSet<&String> = self.gossip.get(room).map(|s| s.iter().collect()).unwrap_or_default();
        if let Some(p) = self.presence.get(room) {
            nodes.extend(p.iter().filter(|(_, (_, labels))| !labels.is_empty()).map(|(n, _)| n));
        }
        nodes.into_iter().filter(|n| **n != self.me && self.live.contains_key(*n)).cloned().collect()
    }

    /// Labels of the room's members on other live nodes.
    pub fn remote_labels(&self, room: &RoomId) -> Vec<String> {
        self.live_remote_labels(room).cloned().collect()
    }

    /// How many members the room has on live peers, without the placeholder of parked
    /// sessions: [`RoomsCore::remote_labels`]' length, without copying them.
    pub fn remote_count(&self, room: &RoomId) -> usize {
        self.live_remote_labels(room).filter(|l| l.as_str() != PARKED_LABEL).count()
    }

    fn live_remote_labels<'a>(&'a self, room: &RoomId) -> impl Iterator<Item = &'a String> {
        let nodes = self.presence.get(room).into_iter().flatten();
        nodes.filter(|(n, _)| self.live.contains_key(*n)).flat_map(|(_, (_, labels))| labels)
    }

    /// The gossip keys to write now, each set (`Some`) or deleted (`None`): the rooms that
    /// changed since the last call, as they are now.
    pub fn take_advertisements(&mut self) -> Vec<(String, Option<&'static str>)> {
        let dirty = std::mem::take(&mut self.unadvertised);
        dirty.into_iter().map(|id| (room_key(&id.0, &id.1), self.local.contains_key(&id).then_some("1"))).collect()
    }

    /// Live peers (not this node).
    pub fn peers(&self) -> impl Iterator<Item = &String> {
        self.live.keys().filter(|n| **n != self.me)
    }

    /// How many rooms, remote presences and gossip subscriptions the tables hold (metrics,
    /// and the tests' bound checks).
    pub fn sizes(&self) -> TableSizes {
        TableSizes {
            local: self.local.len(),
            presence: self.presence.values().flat_map(BTreeMap::values).filter(|(_, l)| !l.is_empty()).count(),
            tombstones: self.tombstones.len(),
            gossip: self.gossip.values().map(BTreeSet::len).sum(),
            joining: self.joining.len(),
        }
    }
}

/// Entry counts of a [`RoomsCore`]'s tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TableSizes {
    pub local: usize,
    pub presence: usize,
    pub tombstones: usize,
    pub gossip: usize,
    pub joining: usize,
}

/// Removes `node` from the room's gossip subscribers (and the room, once nobody is left).
fn unsubscribe(gossip: &mut HashMap<RoomId, BTreeSet<String>>, room: &RoomId, node: &str) {
    if let Some(nodes) = gossip.get_mut(room) {
        nodes.remove(node);
        if nodes.is_empty() {
            gossip.remove(room);
        }
    }
}

/// Local labels as the RPC messages carry them (`Presence`, `Subscribe` and its answer): a
/// copy of each name, made only for a peer that is told.
pub fn wire_labels(labels: &[Arc<str>]) -> Vec<String> {
    labels.iter().map(|l| l.to_string()).collect()
}

#[cfg(test)]
pub(crate) mod sim;
