//! The cluster: membership by authenticated gossip, placement by rendezvous hashing, routing
//! over the internal RPC, rooms across nodes, room history on two replicas.

pub mod core;
pub mod gossip_transport;
pub mod gossip_wire;
pub mod history;
mod keeps;
pub mod membership;
pub mod placement;
pub mod rooms;
pub mod router;
