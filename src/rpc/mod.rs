//! The internal RPC between nodes: bincode frames over authenticated TCP connections.
//!
//! `message` is the pure codec, `auth` the HMAC handshake, `connection` one multiplexed
//! connection, `peers` the dialing side's connection pool and `listener` the accepting side.

pub mod auth;
pub mod connection;
pub mod message;

pub use connection::{Connection, RpcError, RpcHandler, RpcStream};
pub use message::{Request, Response, RpcFrame, StreamOpen, WsFrame};
