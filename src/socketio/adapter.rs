//! The seam between a namespace and the rest of the cluster, one trait each way.
//!
//! [`Adapter`]: the namespace tells it whenever a room's local membership changes (with the
//! presence labels of its local members), hands it every room broadcast after local delivery,
//! and asks it for remote presence and parked sessions. A lone node's namespace uses
//! [`LocalAdapter`], which keeps all of that here; a cluster sets its own
//! (`cluster::rooms::ClusterRooms`).
//!
//! [`Emitter`]: what an adapter may do to a namespace in return, and nothing more: deliver a
//! broadcast from another node, tell of remote members coming and going, and reach the records
//! the namespace keeps for recovery. (Room history is no part of it: see `crate::history`.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::recovery::{Broadcast, Frontier, Holder, KeepRequest, Keeper, Stamp, PARKED_LABEL};
use crate::engineio::Frame;

/// The presence labels of a room's members on this node, shared: a change builds the list once
/// (a reference count taken per member, no name copied), and the cluster's table and every
/// peer's push hold that one list. Rebuilt with copied names, a room filling up to N members
/// copied N²/2 names (7 M instructions per join at 10,000 members, under callgrind).
pub type Labels = Arc<[Arc<str>]>;

/// Where a parked session was found: the node keeping it (`None`: this one), its socket id
/// and rooms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundSession {
    pub node: Option<String>,
    pub sid: String,
    pub rooms: Vec<String>,
}

pub trait Adapter: Send + Sync + 'static {
    /// The local members of `room` changed: `any` says whether it has some now (a member
    /// with a label, or a record parked here), `labels` copies their labels (empty: none),
    /// for an adapter that needs them at once: a cluster's takes them later, once for many
    /// changes (see [`Emitter::local_labels`]). The future resolves once the other nodes
    /// know, so a message published anywhere after it reaches the new member.
    fn room_changed(&self, nsp: &str, room: &str, any: bool, labels: &dyn Fn() -> Labels) -> BoxFuture<'static, ()>;
    /// Delivers a room broadcast, already encoded (with its recovery stamp, if any), to the
    /// room's members on other nodes; each push holds a clone of `sent` until it has left this
    /// node (see [`OnSent`]). Never yields: the publisher's order is the order of the calls.
    fn publish(&self, nsp: &str, room: &str, stamp: Option<Stamp>, frames: &[Frame], sent: &Arc<OnSent>);
    /// Labels of the room's members on other nodes.
    fn remote_labels(&self, nsp: &str, room: &str) -> Vec<String>;
    /// How many members the room has on other nodes: its labels but a parked session's
    /// placeholder ([`PARKED_LABEL`]), counted without copying them where an adapter can.
    fn remote_count(&self, nsp: &str, room: &str) -> usize {
        self.remote_labels(nsp, room).iter().filter(|l| *l != PARKED_LABEL).count()
    }
    /// This node, as the holder of its sessions' records.
    fn holder(&self) -> Holder;
    /// The node to keep a record of a session of this node: `current` while it is a live
    /// member, else another node chosen by the pid; `None`: this node (it is alone). Not
    /// `avoid` (the node relaying the session's WebSocket: one crash would take the
    /// connection and the record) unless no other node can.
    fn keeper_for(&self, pid: &str, current: Option<&str>, avoid: Option<&str>) -> Option<String>;
    /// Sends a record to its keeper `node`; resolves to whether it is kept there, once that
    /// node is subscribed to the record's rooms. Sent even if the future is dropped.
    fn keep_at(&self, node: &str, nsp: &str, req: KeepRequest, seed: Vec<Broadcast>) -> BoxFuture<'static, bool>;
    /// Pids of this namespace whose last record did not reach its keeper (the keeper was
    /// unreachable or refused it), taken: their sockets send the whole record again.
    fn failed_keeps(&self, _nsp: &str) -> Vec<String> {
        Vec::new()
    }
    /// Resolves once a record failed to reach its keeper since the last call (at once if one
    /// did meanwhile): the sweeper then sends failed records again without waiting for its
    /// next turn. Never, where records are kept here.
    fn keep_failed(&self) -> BoxFuture<'static, ()> {
        Box::pin(std::future::pending())
    }
    /// Tells a record's keeper that this node let go of the session after the record's
    /// `version`: parked for its client, or dropped.
    fn release_at(&self, node: &str, nsp: &str, pid: &str, version: u64, park: bool);
    /// Adds to a record's seed on its keeper (see [`Keeper::seed`]); resolves once the push
    /// is written to the keeper's connection, or never will be (it goes on if dropped).
    fn seed_at(&self, node: &str, nsp: &str, pid: &str, seed: Vec<Broadcast>) -> BoxFuture<'static, ()>;
    /// Whether `holder` still has the session (`pid`, socket `sid`) connected; false if it
    /// cannot say (its process is gone).
    fn holds(&self, holder: &Holder, nsp: &str, pid: &str, sid: &str) -> BoxFuture<'static, bool>;
    /// Resolves once every broadcast another node had queued for this one when it was called
    /// has arrived (at most a couple of seconds): those published before a subscription of
    /// this node took effect there.
    fn barrier(&self) -> BoxFuture<'static, ()>;
    /// Looks for a parked session on the other nodes.
    fn find_parked(&self, nsp: &str, pid: &str) -> BoxFuture<'static, Option<FoundSession>>;
    /// Takes a parked session from its keeper `node`: what its client missed above `frontier`.
    fn take_parked(
        &self,
        node: &str,
        nsp: &str,
        pid: &str,
        frontier: &Frontier,
    ) -> BoxFuture<'static, Option<Vec<Broadcast>>>;
}

/// A namespace as an adapter sees it: the narrow way back in from other nodes.
pub trait Emitter: Send + Sync + 'static {
    fn name(&self) -> &str;
    /// Delivers a broadcast published on another node to the room's local members (and logs
    /// it for the records kept here, when it has a recovery `stamp`); returns how many sockets
    /// took it.
    fn deliver(&self, room: &str, stamp: Option<Stamp>, frames: &[Frame]) -> usize;
    /// Members of a room with local members came or went on other nodes.
    fn presence_changed(&self, room: &str, change: &PresenceChange);
    /// The labels of the room's local members now (see [`Adapter::room_changed`]).
    fn local_labels(&self, room: &str) -> Labels;
    /// The records kept here, if recovery is on.
    fn keeper(&self) -> Option<&Arc<Keeper>>;
    /// Keeps a record for `holder`; resolves to whether it is kept, once this node is
    /// subscribed to its rooms.
    fn keep(&self, req: KeepRequest, holder: Holder, seed: Vec<Broadcast>) -> BoxFuture<'static, bool>;
    /// `holder` let go of a session kept here, after its record's `version`.
    fn release(&self, pid: &str, holder: &Holder, version: u64, park: bool);
    /// Finds a session parked here (or held by a node that no longer has it, which parks it):
    /// its socket id and rooms.
    fn find(&self, pid: &str) -> BoxFuture<'static, Option<(String, Vec<String>)>>;
    /// Whether a socket of this namespace here has that pid and socket id.
    fn holds(&self, pid: &str, sid: &str) -> bool;
    /// Takes a session parked here, once the seed a handed-over record is owed has come and a
    /// barrier has let in what other nodes had queued for this one: what its client missed
    /// above `frontier`.
    fn take(&self, pid: &str, frontier: &Frontier) -> BoxFuture<'static, Option<Vec<Broadcast>>>;
    /// Rooms no record keeps here any more (the keeper's own changes).
    fn unkept(&self, rooms: &[String]);
    /// Membership changed: re-sends the records of sockets whose keeper is `gone` (died or
    /// restarted) to a keeper chosen now.
    fn rekeep(&self, gone: &dyn Fn(&str) -> bool);
}

/// A lone node's adapter: every member is local, every record is kept here.
pub struct LocalAdapter;

impl Adapter for LocalAdapter {
    fn room_changed(
        &self,
        _nsp: &str,
        _room: &str,
        _any: bool,
        _labels: &dyn Fn() -> Labels,
    ) -> BoxFuture<'static, ()> {
        Box::pin(std::future::ready(()))
    }

    /// Nowhere else to go: nothing holds `sent`.
    fn publish(&self, _nsp: &str, _room: &str, _stamp: Option<Stamp>, _frames: &[Frame], _sent: &Arc<OnSent>) {}

    fn remote_labels(&self, _nsp: &str, _room: &str) -> Vec<String> {
        Vec::new()
    }

    fn holder(&self) -> Holder {
        Holder { node: "".into(), generation: 0 }
    }

    fn keeper_for(&self, _pid: &str, _current: Option<&str>, _avoid: Option<&str>) -> Option<String> {
        None
    }

    // Never called: `keeper_for` names no other node.
    fn keep_at(&self, _node: &str, _nsp: &str, _req: KeepRequest, _seed: Vec<Broadcast>) -> BoxFuture<'static, bool> {
        Box::pin(std::future::ready(false))
    }

    fn release_at(&self, _node: &str, _nsp: &str, _pid: &str, _version: u64, _park: bool) {}

    fn seed_at(&self, _node: &str, _nsp: &str, _pid: &str, _seed: Vec<Broadcast>) -> BoxFuture<'static, ()> {
        Box::pin(std::future::ready(()))
    }

    /// The holder is this node, whose sockets release their records when they close.
    fn holds(&self, _holder: &Holder, _nsp: &str, _pid: &str, _sid: &str) -> BoxFuture<'static, bool> {
        Box::pin(std::future::ready(true))
    }

    fn barrier(&self) -> BoxFuture<'static, ()> {
        Box::pin(std::future::ready(()))
    }

    fn find_parked(&self, _nsp: &str, _pid: &str) -> BoxFuture<'static, Option<FoundSession>> {
        Box::pin(std::future::ready(None))
    }

    fn take_parked(
        &self,
        _node: &str,
        _nsp: &str,
        _pid: &str,
        _frontier: &Frontier,
    ) -> BoxFuture<'static, Option<Vec<Broadcast>>> {
        Box::pin(std::future::ready(None))
    }
}

/// What runs once a room broadcast (and its history record) has left this node: when the last
/// holder of its `Arc` drops it, that is once every push it went out with is written to its
/// node's connection (in the kernel's hands: it is sent even if this process dies right after),
/// or will never be, or there was no other node to push to. It is told whether a copy was
/// dropped for a node that is up but too far behind ([`Sent::Missed`]: see [`OnSent::missed`]).
/// The chat acks a message from here, so a crash of the publishing process after the ack loses
/// the message, and its history record, for nobody; and a message that members of a live node
/// will not get is not acked as sent.
pub struct OnSent {
    run: Option<Box<dyn FnOnce(Sent) + Send + Sync>>,
    missed: AtomicBool,
}

/// How a broadcast left this node (see [`OnSent`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// No copy was dropped for a live node: each was written to its node's connection, or held
    /// here (a history record whose replica could not be reached), or lost with a connection
    /// (its node crashed or left: its clients recover elsewhere).
    All,
    /// A copy was dropped at the full push queue of a node in the ring: its members there, and
    /// the sessions kept there, do not get the message.
    Missed,
}

impl OnSent {
    pub fn new(f: impl FnOnce(Sent) + Send + Sync + 'static) -> Self {
        Self { run: Some(Box::new(f)), missed: AtomicBool::new(false) }
    }

    /// Nothing to run.
    pub fn none() -> Self {
        Self { run: None, missed: AtomicBool::new(false) }
    }

    /// A copy owed to a live node was dropped.
    pub fn missed(&self) {
        self.missed.store(true, Ordering::Relaxed);
    }
}

impl Drop for OnSent {
    fn drop(&mut self) {
        if let Some(f) = self.run.take() {
            // The last holder runs this, after every other's `missed`: the `Arc`'s drop orders them.
            f(if *self.missed.get_mut() { Sent::Missed } else { Sent::All });
        }
    }
}

/// Why remote presence changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceCause {
    /// Members joined or left on another node (that node announces its own events).
    Remote,
    /// A node left the cluster: its members are gone and nobody else will say so.
    NodeLost,
}

/// Members of a room on other nodes that appeared or disappeared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceChange {
    pub cause: PresenceCause,
    pub left: Vec<String>,
}
