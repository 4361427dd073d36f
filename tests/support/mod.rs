//! The one test-support tree, shared by every integration test and the conformance server:
//! `server` (an in-process protocol server and raw HTTP/WebSocket helpers), `polling` (a raw
//! Engine.IO polling chat client), `cluster` (in-process and process clusters), `chat_client`
//! (the real clients), `rr_proxy` (a round-robin balancer), `load`, `netlab` and `attacker`.
#![allow(dead_code)] // each includer uses part of it

pub mod attacker;
pub mod chat_client;
pub mod cluster;
pub mod load;
pub mod netlab;
pub mod polling;
pub mod rr_proxy;
pub mod server;
