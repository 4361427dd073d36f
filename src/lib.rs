//! clusterchat: a clustered, multi-room Socket.IO chat server that needs no sticky sessions.
//!
//! Layers, bottom up: `engineio` (transport protocol), `socketio` (namespaces, events, rooms),
//! `chat` (the application), `history` (rooms' last messages, for the chat), `http` (routing), `server` (accept loop and shutdown), `node`
//! (wiring one node together), `config` and `logging`; `inspect` reads a running cluster's
//! gossip state; `per_address` counts what each client address holds; `admin` serves the
//! socket.io Admin UI for the whole cluster.

pub mod admin;
pub mod auth;
pub mod chat;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod engineio;
pub mod history;
pub mod http;
pub mod inspect;
pub mod io_threads;
pub mod keyring;
pub mod logging;
pub mod metrics;
pub mod node;
pub mod per_address;
pub(crate) mod prefetch;
pub mod rpc;
pub mod server;
pub mod socketio;
pub mod tasks;
