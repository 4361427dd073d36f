//! Counters of the RPC plane's refusals, read by `/metrics` at scrape time.

use std::sync::atomic::{AtomicU64, Ordering};

/// Handshake failure reasons, as `noise::HandshakeError::reason` names them.
pub const HANDSHAKE_REASONS: [&str; 7] =
    ["bad_hello", "version_mismatch", "unknown_key", "misdirected", "bad_proof", "timeout", "io"];

#[derive(Default)]
pub struct RpcStats {
    handshake_failures: [AtomicU64; HANDSHAKE_REASONS.len()],
    /// Connections closed at once because too many were still in their handshake.
    pub handshakes_shed: AtomicU64,
    /// Messages refused because they named a node other than the channel's peer.
    pub claims_refused: AtomicU64,
}

impl RpcStats {
    pub fn handshake_failed(&self, reason: &str) {
        if let Some(i) = HANDSHAKE_REASONS.iter().position(|r| *r == reason) {
            self.handshake_failures[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Each reason with its count.
    pub fn handshake_failures(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        HANDSHAKE_REASONS.iter().zip(&self.handshake_failures).map(|(r, c)| (*r, c.load(Ordering::Relaxed)))
    }
}
