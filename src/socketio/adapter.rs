//! The seam between a namespace and the rest of the cluster, one trait each way.
//!
//! [`Adapter`]: the namespace tells it whenever a room's local membership changes (with the
//! presence labels of its local members), hands it every room broadcast after local delivery,
//! and asks it for remote presence and parked sessions. A lone node's namespace uses
//! [`LocalAdapter`], which keeps all of that here; a cluster sets its own
//! (`cluster::rooms::ClusterRooms`).
//!
//! [`Emitter`]: what an adapter may do to a namespace in return, and nothing more: deliver a
//! broadcast from another node, tell of remote members coming and going, and reach the
//! namespace's parked sessions. (Room history is no part of it: see `crate::history`.)

use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::recovery::{Broadcast, ParkedState, Recovery, TAIL_WAIT};
use crate::engineio::Frame;

/// Where a parked session was found: the node keeping it, its socket id and rooms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundSession {
    pub node: String,
    pub sid: String,
    pub rooms: Vec<String>,
}

pub trait Adapter: Send + Sync + 'static {
    /// The local members of `room` are now those labelled `labels` (empty: none left). The
    /// future resolves once the other nodes know, so a message published anywhere after it
    /// reaches the new member.
    fn room_changed(&self, nsp: &str, room: &str, labels: Vec<String>) -> BoxFuture<'static, ()>;
    /// Delivers a room broadcast, already encoded (with its recovery offset, if any), to the
    /// room's members on other nodes; each push holds a clone of `sent` until it has left this
    /// node (see [`OnSent`]).
    fn publish(&self, nsp: &str, room: &str, offset: Option<&str>, frames: &[Frame], sent: &Arc<OnSent>);
    /// Labels of the room's members on other nodes.
    fn remote_labels(&self, nsp: &str, room: &str) -> Vec<String>;
    /// Moves a session parked on this node to its keeper, another node; never waits.
    fn hand_over(&self, nsp: &str, pid: &str);
    /// Looks for a parked session on the nodes that may keep it, `offset` being the client's
    /// last (it must be among the session's broadcasts).
    fn find_parked(&self, nsp: &str, pid: &str, offset: Option<&str>) -> BoxFuture<'static, Option<FoundSession>>;
    /// Takes a parked session from `node`: the broadcasts it missed after `offset`.
    fn take_parked(
        &self,
        node: &str,
        nsp: &str,
        pid: &str,
        offset: Option<&str>,
    ) -> BoxFuture<'static, Option<Vec<Broadcast>>>;
}

/// A namespace as an adapter sees it: the narrow way back in from other nodes.
pub trait Emitter: Send + Sync + 'static {
    fn name(&self) -> &str;
    /// Delivers a broadcast published on another node to the room's local members (and to
    /// the sessions parked in it, when it has a recovery `offset`); returns how many sockets
    /// took it.
    fn deliver(&self, room: &str, offset: Option<&str>, frames: &[Frame]) -> usize;
    /// Members of a room with local members came or went on other nodes.
    fn presence_changed(&self, room: &str, change: &PresenceChange);
    /// The namespace's parked sessions, if recovery is on.
    fn recovery(&self) -> Option<&Arc<Recovery>>;
    /// Parks a session handed over by another node; resolves to whether it is parked here,
    /// once this node's subscription to its rooms is effective everywhere.
    fn park(&self, state: ParkedState) -> BoxFuture<'static, bool>;
    /// Takes a session parked here once it is complete: what it missed after `offset`.
    fn take(&self, pid: &str, offset: Option<&str>) -> BoxFuture<'static, Option<Vec<Broadcast>>>;
    /// Drops a session parked here (a stale copy).
    fn discard(&self, pid: &str);
    /// Rooms whose last parked member left this node (after a hand-over).
    fn unparked(&self, rooms: &[String]);
}

/// A lone node's adapter: every member is local, the parked sessions are here.
pub struct LocalAdapter {
    recovery: Option<Arc<Recovery>>,
}

impl LocalAdapter {
    pub fn new(recovery: Option<Arc<Recovery>>) -> Self {
        Self { recovery }
    }
}

impl Adapter for LocalAdapter {
    fn room_changed(&self, _nsp: &str, _room: &str, _labels: Vec<String>) -> BoxFuture<'static, ()> {
        Box::pin(std::future::ready(()))
    }

    /// Nowhere else to go: nothing holds `sent`.
    fn publish(&self, _nsp: &str, _room: &str, _offset: Option<&str>, _frames: &[Frame], _sent: &Arc<OnSent>) {}

    fn remote_labels(&self, _nsp: &str, _room: &str) -> Vec<String> {
        Vec::new()
    }

    /// A parked session stays here: there is no other node.
    fn hand_over(&self, _nsp: &str, _pid: &str) {}

    fn find_parked(&self, _nsp: &str, pid: &str, offset: Option<&str>) -> BoxFuture<'static, Option<FoundSession>> {
        let found = self.recovery.as_ref().and_then(|r| r.peek(pid, offset).ok());
        let found = found.map(|(sid, rooms)| FoundSession { node: String::new(), sid, rooms });
        Box::pin(std::future::ready(found))
    }

    fn take_parked(
        &self,
        _node: &str,
        _nsp: &str,
        pid: &str,
        offset: Option<&str>,
    ) -> BoxFuture<'static, Option<Vec<Broadcast>>> {
        let Some(recovery) = self.recovery.clone() else { return Box::pin(std::future::ready(None)) };
        let (pid, offset) = (pid.to_owned(), offset.map(str::to_owned));
        Box::pin(async move {
            recovery.complete(&pid, TAIL_WAIT).await;
            // The rooms it leaves empty need no word: nobody else subscribes to them.
            recovery.take(&pid, offset.as_deref()).ok().map(|(missed, _emptied)| missed)
        })
    }
}

/// What runs once a room broadcast (and its history record) has left this node: when the last
/// holder of its `Arc` drops it, that is once every push it went out with is written to its
/// node's connection (in the kernel's hands: it is sent even if this process dies right after),
/// or that node's connection failed, or there was no other node to push to. The chat acks a
/// message from here, so a crash of the publishing process after the ack loses the message, and
/// its history record, for nobody.
pub struct OnSent(Option<Box<dyn FnOnce() + Send + Sync>>);

impl OnSent {
    pub fn new(f: impl FnOnce() + Send + Sync + 'static) -> Self {
        Self(Some(Box::new(f)))
    }

    /// Nothing to run.
    pub fn none() -> Self {
        Self(None)
    }
}

impl Drop for OnSent {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
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
