//! The cluster's keys: every key the internal plane uses is derived from the operator's
//! secrets, never the secrets themselves.
//!
//! A keyring holds one or more secrets, as Consul's does: the first one is used to send, every
//! one is accepted. A secret is rotated by two rolling restarts: first every node gets
//! `[old, new]` (sends old, accepts both), then `[new, old]` (sends new, accepts both); the
//! old one can then be dropped. Each secret yields, through HKDF-SHA256 with a label per use,
//! a gossip key (XChaCha20-Poly1305), an RPC pre-shared key (Noise `psk0`) and a 4-byte key id
//! that tells a receiver which secret a sender used without trying each (ids are public and
//! derived, so they reveal nothing about the secret).

use std::net::SocketAddr;

use hkdf::Hkdf;
use sha2::Sha256;

/// The secret the demo configs once shipped. It is public, so it is refused whenever any
/// address of the node is reachable from another host.
pub const DEMO_SECRET: &str = "demo-secret-change-me";

/// Shortest secret accepted. `clusterchat keygen` makes 43-character ones.
pub const MIN_SECRET_LEN: usize = 16;

/// Identifies which secret a sender used; derived, not secret.
pub type KeyId = [u8; 4];

/// The keys derived from one secret.
#[derive(Clone)]
pub struct ClusterKey {
    pub id: KeyId,
    /// Seals gossip datagrams.
    pub gossip: [u8; 32],
    /// Noise pre-shared key of RPC channels.
    pub rpc_psk: [u8; 32],
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterKey").field("id", &hex(&self.id)).finish_non_exhaustive()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl ClusterKey {
    pub fn derive(secret: &str) -> Self {
        let hk = Hkdf::<Sha256>::new(Some(b"clusterchat cluster keys v2"), secret.as_bytes());
        let expand = |label: &[u8], out: &mut [u8]| hk.expand(label, out).expect("HKDF output of at most 32 bytes");
        let mut key = Self { id: [0; 4], gossip: [0; 32], rpc_psk: [0; 32] };
        expand(b"key id", &mut key.id);
        expand(b"gossip aead", &mut key.gossip);
        expand(b"rpc noise psk", &mut key.rpc_psk);
        key
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyringError {
    #[error("no cluster secret: set cluster.secrets (or CLUSTERCHAT_SECRET); `clusterchat keygen` makes one")]
    Missing,
    #[error("a cluster secret must have at least {MIN_SECRET_LEN} characters (`clusterchat keygen` makes one)")]
    TooShort,
    #[error("two cluster secrets share a key id; list each secret once")]
    Duplicate,
    #[error(
        "the published demo secret is refused on a node reachable from other hosts ({0}); \
         use `clusterchat keygen` for a secret of your own"
    )]
    DemoSecret(SocketAddr),
}

/// The node's secrets, as keys; the first one sends.
#[derive(Debug, Clone)]
pub struct Keyring {
    keys: Vec<ClusterKey>,
}

impl Keyring {
    /// Checks the secrets and derives their keys. `addresses` are every address the node
    /// listens on or advertises: the demo secret is accepted only if all are loopback.
    pub fn new(secrets: &[String], addresses: &[SocketAddr]) -> Result<Self, KeyringError> {
        if secrets.is_empty() {
            return Err(KeyringError::Missing);
        }
        if secrets.iter().any(|s| s.chars().count() < MIN_SECRET_LEN) {
            return Err(KeyringError::TooShort);
        }
        if secrets.iter().any(|s| s == DEMO_SECRET) {
            if let Some(open) = addresses.iter().find(|a| !a.ip().is_loopback()) {
                return Err(KeyringError::DemoSecret(*open));
            }
        }
        let keys: Vec<ClusterKey> = secrets.iter().map(|s| ClusterKey::derive(s)).collect();
        let mut ids: Vec<KeyId> = keys.iter().map(|k| k.id).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != keys.len() {
            return Err(KeyringError::Duplicate);
        }
        Ok(Self { keys })
    }

    /// A keyring of one secret, without the checks (tests, benchmarks).
    pub fn single(secret: &str) -> Self {
        Self { keys: vec![ClusterKey::derive(secret)] }
    }

    /// The key used to send.
    pub fn sending(&self) -> &ClusterKey {
        &self.keys[0]
    }

    /// The key with this id, if the node accepts it.
    pub fn find(&self, id: &KeyId) -> Option<&ClusterKey> {
        self.keys.iter().find(|k| &k.id == id)
    }
}

/// A fresh random secret: 32 bytes from the OS's generator, base64url (43 characters).
pub fn generate_secret() -> String {
    use base64::Engine as _;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "first-secret-0123456789";
    const B: &str = "second-secret-0123456789";

    #[test]
    fn derivation_is_fixed_and_separates_uses() {
        let k = ClusterKey::derive(A);
        // Pinned (HKDF-SHA256 as RFC 5869 defines it, checked with Python's hmac): every node
        // must derive the same keys, whatever release built it.
        assert_eq!(hex(&k.id), "420477e0");
        assert_ne!(k.gossip, k.rpc_psk);
        assert_ne!(k.id, ClusterKey::derive(B).id);
        assert!(!format!("{k:?}").contains(&format!("{:?}", k.gossip)), "Debug must not print keys");
    }

    #[test]
    fn first_secret_sends_and_all_are_accepted() {
        let ring = Keyring::new(&[A.into(), B.into()], &[]).unwrap();
        assert_eq!(ring.sending().id, ClusterKey::derive(A).id);
        assert!(ring.find(&ClusterKey::derive(B).id).is_some());
        assert!(ring.find(&ClusterKey::derive("another-secret-000000").id).is_none());
    }

    #[test]
    fn bad_secrets_are_refused_with_a_reason() {
        let lo: SocketAddr = "127.0.0.1:7001".parse().unwrap();
        let open: SocketAddr = "0.0.0.0:7001".parse().unwrap();
        assert_eq!(Keyring::new(&[], &[]).unwrap_err(), KeyringError::Missing);
        assert_eq!(Keyring::new(&["short".into()], &[]).unwrap_err(), KeyringError::TooShort);
        assert_eq!(Keyring::new(&[A.into(), A.into()], &[]).unwrap_err(), KeyringError::Duplicate);
        assert!(Keyring::new(&[DEMO_SECRET.into()], &[lo]).is_ok(), "the demo secret works on loopback");
        assert_eq!(Keyring::new(&[DEMO_SECRET.into()], &[lo, open]).unwrap_err(), KeyringError::DemoSecret(open));
    }

    #[test]
    fn generated_secrets_are_long_and_fresh() {
        let (a, b) = (generate_secret(), generate_secret());
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert!(Keyring::new(&[a], &["10.0.0.1:7001".parse().unwrap()]).is_ok());
    }
}
