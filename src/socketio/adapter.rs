//! The adapter: how a namespace's rooms reach beyond this node.
//!
//! A namespace tells its adapter whenever a room's local membership changes (with the
//! presence labels of its local members) and hands it every room broadcast after local
//! delivery. The adapter tells the namespace, through [`PresenceChange`], when members on
//! other nodes come and go. Without an adapter a namespace is a single node's.

use futures_util::future::BoxFuture;

use super::recovery::Broadcast;
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
    /// room's members on other nodes.
    fn publish(&self, nsp: &str, room: &str, offset: Option<&str>, frames: &[Frame]);
    /// Labels of the room's members on other nodes.
    fn remote_labels(&self, nsp: &str, room: &str) -> Vec<String>;
    /// Appends to the room's history at the room's owner node; never waits.
    fn record(&self, nsp: &str, room: &str, entry: String);
    /// The room's history from its owner node (empty if the owner cannot be reached).
    fn history(&self, nsp: &str, room: &str) -> BoxFuture<'static, Vec<String>>;
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
