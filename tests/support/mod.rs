//! Test infrastructure shared by the cluster tests and the conformance server.
#![allow(dead_code)] // each includer uses part of it

pub mod attacker;
pub mod chat_client;
pub mod cluster;
pub mod load;
pub mod netlab;
pub mod rr_proxy;
