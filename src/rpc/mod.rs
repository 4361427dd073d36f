//! The internal RPC between nodes: bincode frames over encrypted, mutually authenticated TCP
//! connections.
//!
//! `message` is the pure codec, `noise` the handshake and record layer, `connection` one
//! multiplexed connection, `peers` the dialing side's connection pool, `listener` the
//! accepting side and `stats` the counters of what they refused.

pub mod connection;
pub mod listener;
pub mod message;
pub mod noise;
pub mod peers;
pub mod stats;

pub use connection::{Connection, RpcError, RpcHandler, RpcLimits, RpcStream, StreamReceiver, StreamSender};
pub use message::{
    HistoryEntry, Push, RecordWire, Request, Response, RoomsWire, RpcFrame, StreamOpen, WirePacket, WsFrame,
};
