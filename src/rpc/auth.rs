//! Mutual challenge-response authentication of RPC connections with a shared cluster secret.
//!
//! The listener sends a random 32-byte nonce; the dialer answers with its own nonce and an
//! HMAC-SHA256 over both; the listener checks it and answers with an HMAC over both in the
//! other order. Each side thus proves it knows the secret without sending it, and a recorded
//! exchange cannot be replayed (the other side's nonce is fresh). Nothing else is read from a
//! peer before this succeeds.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

type HmacSha256 = Hmac<Sha256>;

const NONCE: usize = 32;
const MAC: usize = 32;
/// How long a peer has to complete the handshake.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("peer failed authentication (wrong cluster secret?)")]
    BadProof,
    #[error("authentication timed out")]
    Timeout,
    #[error("I/O during authentication: {0}")]
    Io(#[from] std::io::Error),
}

fn proof(secret: &[u8], role: &[u8], first: &[u8], second: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(b"clusterchat-rpc-v1 ");
    mac.update(role);
    mac.update(first);
    mac.update(second);
    mac
}

/// The dialer's side of the handshake.
pub async fn dial<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S, secret: &[u8]) -> Result<(), AuthError> {
    tokio::time::timeout(AUTH_TIMEOUT, async {
        let mut server_nonce = [0u8; NONCE];
        io.read_exact(&mut server_nonce).await?;
        let client_nonce: [u8; NONCE] = rand::random();
        let mac = proof(secret, b"dialer", &server_nonce, &client_nonce).finalize().into_bytes();
        let mut hello = [0u8; NONCE + MAC];
        hello[..NONCE].copy_from_slice(&client_nonce);
        hello[NONCE..].copy_from_slice(&mac);
        io.write_all(&hello).await?;
        let mut answer = [0u8; MAC];
        io.read_exact(&mut answer).await?;
        proof(secret, b"listener", &client_nonce, &server_nonce).verify_slice(&answer).map_err(|_| AuthError::BadProof)
    })
    .await
    .map_err(|_| AuthError::Timeout)?
}

/// The listener's side of the handshake.
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S, secret: &[u8]) -> Result<(), AuthError> {
    tokio::time::timeout(AUTH_TIMEOUT, async {
        let server_nonce: [u8; NONCE] = rand::random();
        io.write_all(&server_nonce).await?;
        let mut hello = [0u8; NONCE + MAC];
        io.read_exact(&mut hello).await?;
        let (client_nonce, mac) = hello.split_at(NONCE);
        proof(secret, b"dialer", &server_nonce, client_nonce).verify_slice(mac).map_err(|_| AuthError::BadProof)?;
        let answer = proof(secret, b"listener", client_nonce, &server_nonce).finalize().into_bytes();
        io.write_all(&answer).await?;
        Ok(())
    })
    .await
    .map_err(|_| AuthError::Timeout)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn same_secret_authenticates_both_ways() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let (d, l) = tokio::join!(dial(&mut a, b"s3cret"), accept(&mut b, b"s3cret"));
        assert!(d.is_ok() && l.is_ok(), "{d:?} {l:?}");
    }

    #[tokio::test]
    async fn wrong_secret_is_refused_by_the_listener() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let (d, l) = tokio::join!(dial(&mut a, b"guess"), async {
            let r = accept(&mut b, b"s3cret").await;
            drop(b);
            r
        });
        assert!(matches!(l, Err(AuthError::BadProof)), "{l:?}");
        assert!(d.is_err());
    }

    #[tokio::test]
    async fn a_listener_without_the_secret_is_refused_by_the_dialer() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let (d, _) = tokio::join!(dial(&mut a, b"s3cret"), async {
            // An impostor that sends a nonce and a made-up answer.
            b.write_all(&[7u8; NONCE]).await.unwrap();
            let mut hello = [0u8; NONCE + MAC];
            b.read_exact(&mut hello).await.unwrap();
            b.write_all(&[0u8; MAC]).await.unwrap();
        });
        assert!(matches!(d, Err(AuthError::BadProof)), "{d:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_times_out() {
        let (_a, mut b) = tokio::io::duplex(1024);
        assert!(matches!(accept(&mut b, b"s").await, Err(AuthError::Timeout)));
    }
}
