//! The internal RPC between nodes: bincode frames over authenticated TCP connections.
//!
//! `message` is the pure codec, `auth` the HMAC handshake, `connection` one multiplexed
//! connection, `peers` the dialing side's connection pool and `listener` the accepting side.

pub mod auth;
pub mod connection;
pub mod listener;
pub mod message;
pub mod peers;

pub use connection::{Connection, RpcError, RpcHandler, RpcStream, StreamReceiver, StreamSender};
pub use message::{ParkedWire, Push, Request, Response, RpcFrame, StreamOpen, WirePacket, WsFrame};
