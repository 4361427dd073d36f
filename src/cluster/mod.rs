//! The cluster: membership by gossip, placement by rendezvous hashing, the internal RPC.

pub mod membership;
pub mod placement;
pub mod rooms;
pub mod router;
