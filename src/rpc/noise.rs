//! The RPC channel's security: a Noise handshake keyed by the cluster secret, then every
//! frame encrypted and authenticated.
//!
//! Why Noise with a pre-shared key (`Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s`, via `snow`) and
//! not TLS: the cluster already has one operator-held secret (the gossip needs it too), and a
//! PSK handshake needs no certificates, CA or expiry to manage, while still giving forward
//! secrecy (ephemeral X25519) and mutual authentication (only holders of the key complete it).
//!
//! The dialer first sends a plain hello: `"CCRPC/4\n" | key id (4) | len | dialer id | len |
//! listener id`; the listener answers with its own magic. The magic is the wire's version
//! ([`HELLO_MAGIC`]): a peer that speaks another one is refused on both sides with
//! [`HandshakeError::VersionMismatch`], naming both versions (the listener answers its magic
//! before it closes, so the dialer learns its version too). The listener refuses a hello that
//! names another node or a key it does not hold; the hello is the handshake's prologue, so both
//! node ids are bound into it: a
//! handshake relayed to another node, replayed, reflected, or with an id changed on the way
//! fails. Afterwards each direction is a sequence of records `len (u16) | ciphertext`, each
//! with its own nonce (a counter), so an injected, dropped, replayed, reordered or altered
//! record fails to decrypt and ends the connection. The records' plaintext is one stream of
//! length-delimited bincode frames (`message`) per direction: a record holds whatever the
//! writer had queued when it sealed, several frames or part of a large one.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use snow::resolvers::{DefaultResolver, FallbackResolver, RingResolver};
use snow::StatelessTransportState;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

use super::message::MAX_FRAME;
use crate::keyring::{KeyId, Keyring};

const PATTERN: &str = "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s";
/// The RPC wire's version: `"CCRPC/"`, one version character, LF. Bump it with any change to
/// what two nodes say to each other: this handshake, the records, or the encoding of
/// `rpc::message` (its enums' variants, their order, their fields; pinned by the tests of
/// `message`). Nodes of different versions refuse each other: no rolling upgrade across it.
pub const HELLO_MAGIC: &[u8; 8] = b"CCRPC/4\n";
/// Every version's magic starts so; the version is the character after it.
const MAGIC_PREFIX: &[u8; 6] = b"CCRPC/";
/// Longest node id in a hello (config allows ASCII letters, digits, `-` and `_`).
const MAX_ID: usize = 64;
/// Handshake messages are an ephemeral key and a tag: far below this.
const MAX_HANDSHAKE_MESSAGE: usize = 256;
const TAG: usize = 16;
/// Noise's largest message.
const MAX_RECORD: usize = 65_535;
/// The most plaintext one record carries: a writer that has more queued seals it in further
/// records.
pub const MAX_RECORD_PLAINTEXT: usize = MAX_RECORD - TAG;
/// Capacity a direction's plaintext buffer keeps between records.
const KEPT_BUFFER: usize = 2 * MAX_RECORD;

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("not a clusterchat RPC peer (malformed hello)")]
    BadHello,
    #[error(
        "peer speaks {peer}, this node {ours}: no rolling upgrade across RPC versions; restart the cluster on one build"
    )]
    VersionMismatch { peer: String, ours: &'static str },
    #[error("peer closed the connection without saying its RPC version (this node {ours}): a build older than CCRPC/3, or not a clusterchat node")]
    NoVersion { ours: &'static str },
    #[error("peer's cluster secret is not one of this node's (key id {0})")]
    UnknownKey(String),
    #[error("peer dialed node {wanted:?}, not this one")]
    Misdirected { wanted: String },
    #[error("peer failed authentication (wrong cluster secret?)")]
    BadProof,
    #[error("handshake timed out")]
    Timeout,
    #[error("I/O during handshake: {0}")]
    Io(#[from] std::io::Error),
}

impl HandshakeError {
    /// Label for `clusterchat_rpc_handshake_failures_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::BadHello => "bad_hello",
            Self::VersionMismatch { .. } => "version_mismatch",
            // Only a dialer sees it, and dialers count nothing: an early end of the stream.
            Self::NoVersion { .. } => "io",
            Self::UnknownKey(_) => "unknown_key",
            Self::Misdirected { .. } => "misdirected",
            Self::BadProof => "bad_proof",
            Self::Timeout => "timeout",
            Self::Io(_) => "io",
        }
    }
}

/// The plain hello that opens a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub key_id: KeyId,
    pub dialer: String,
    pub listener: String,
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Hello {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HELLO_MAGIC.len() + 4 + 2 + self.dialer.len() + self.listener.len());
        out.extend_from_slice(HELLO_MAGIC);
        out.extend_from_slice(&self.key_id);
        for id in [&self.dialer, &self.listener] {
            out.push(id.len() as u8);
            out.extend_from_slice(id.as_bytes());
        }
        out
    }

    /// Reads a hello, byte counts checked before each read: at most 8 + 4 + 2 + 2 * 64 bytes.
    /// A hello of another version is read no further than its magic.
    async fn read<S: AsyncRead + Unpin>(io: &mut S) -> Result<(Self, Vec<u8>), HandshakeError> {
        let mut head = [0u8; HELLO_MAGIC.len() + 4 + 1];
        io.read_exact(&mut head[..HELLO_MAGIC.len()]).await?;
        check_magic(head[..HELLO_MAGIC.len()].try_into().expect("8 bytes"))?;
        io.read_exact(&mut head[HELLO_MAGIC.len()..]).await?;
        let mut raw = head.to_vec();
        let dialer_len = head[head.len() - 1] as usize;
        if dialer_len == 0 || dialer_len > MAX_ID {
            return Err(HandshakeError::BadHello);
        }
        let mut rest = vec![0u8; dialer_len + 1];
        io.read_exact(&mut rest).await?;
        raw.extend_from_slice(&rest);
        let listener_len = rest[dialer_len] as usize;
        if listener_len == 0 || listener_len > MAX_ID {
            return Err(HandshakeError::BadHello);
        }
        let mut listener = vec![0u8; listener_len];
        io.read_exact(&mut listener).await?;
        raw.extend_from_slice(&listener);
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).ok().filter(|s| valid_id(s));
        let hello = Hello {
            key_id: head[HELLO_MAGIC.len()..HELLO_MAGIC.len() + 4].try_into().expect("4 bytes"),
            dialer: text(&rest[..dialer_len]).ok_or(HandshakeError::BadHello)?,
            listener: text(&listener).ok_or(HandshakeError::BadHello)?,
        };
        Ok((hello, raw))
    }
}

/// `Ok` if `magic` is this build's; a typed error naming both versions if it is another
/// version's, `BadHello` if it is no magic at all.
fn check_magic(magic: &[u8; 8]) -> Result<(), HandshakeError> {
    if magic == HELLO_MAGIC {
        return Ok(());
    }
    let version = magic[MAGIC_PREFIX.len()];
    if !magic.starts_with(MAGIC_PREFIX) || magic[7] != b'\n' || !version.is_ascii_alphanumeric() {
        return Err(HandshakeError::BadHello);
    }
    Err(HandshakeError::VersionMismatch { peer: version_of(magic), ours: OURS })
}

/// A magic without its LF, e.g. `CCRPC/3` (only called on a checked magic: ASCII).
fn version_of(magic: &[u8; 8]) -> String {
    String::from_utf8_lossy(&magic[..7]).into_owned()
}

/// This build's version, as log lines name it.
const OURS: &str = match std::str::from_utf8(HELLO_MAGIC.split_at(7).0) {
    Ok(version) => version,
    Err(_) => panic!("the magic is ASCII"),
};

/// An authenticated channel: the peer's node id, proven by the handshake, and the keys.
pub struct Secured {
    pub peer: String,
    keys: Arc<StatelessTransportState>,
}

impl Secured {
    /// The codecs of the two directions, for `FramedRead` and `FramedWrite`.
    pub fn codecs(&self) -> (RecordDecoder, RecordEncoder) {
        (RecordDecoder::new(self.keys.clone()), RecordEncoder::new(self.keys.clone()))
    }
}

/// ChaCha20-Poly1305 from `ring`, the rest (X25519, BLAKE2s) from snow's own resolver. Why:
/// the default cipher sets up a new ChaCha20-Poly1305 for each record, and its vectorised
/// Poly1305 precomputes powers of the key for each, which cost more than a small record's
/// bytes (about 4,000 instructions per record seen by callgrind); ring keeps one key per
/// direction for the connection's life and seals a short record in one pass. The wire is the
/// same cipher either way.
fn builder() -> snow::Builder<'static> {
    let resolver = FallbackResolver::new(Box::new(RingResolver), Box::new(DefaultResolver));
    snow::Builder::with_resolver(PATTERN.parse().expect("a valid Noise pattern"), Box::new(resolver))
}

async fn write_handshake<S: AsyncWrite + Unpin>(io: &mut S, message: &[u8]) -> Result<(), HandshakeError> {
    let mut out = Vec::with_capacity(2 + message.len());
    out.extend_from_slice(&(message.len() as u16).to_be_bytes());
    out.extend_from_slice(message);
    io.write_all(&out).await?;
    Ok(())
}

async fn read_handshake<S: AsyncRead + Unpin>(io: &mut S) -> Result<Vec<u8>, HandshakeError> {
    let len = io.read_u16().await? as usize;
    if len > MAX_HANDSHAKE_MESSAGE {
        return Err(HandshakeError::BadProof);
    }
    let mut message = vec![0u8; len];
    io.read_exact(&mut message).await?;
    Ok(message)
}

/// The dialer's side: `me` dials `peer`, which must prove it holds the sending secret.
pub async fn dial<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    keyring: &Keyring,
    me: &str,
    peer: &str,
    timeout: Duration,
) -> Result<Secured, HandshakeError> {
    let key = keyring.sending();
    let hello = Hello { key_id: key.id, dialer: me.to_owned(), listener: peer.to_owned() }.encode();
    let run = async {
        io.write_all(&hello).await?;
        let mut state = builder()
            .prologue(&hello)
            .and_then(|b| b.psk(0, &key.rpc_psk))
            .and_then(|b| b.build_initiator())
            .map_err(|_| HandshakeError::BadProof)?;
        let mut buf = [0u8; MAX_HANDSHAKE_MESSAGE];
        let n = state.write_message(&[], &mut buf).map_err(|_| HandshakeError::BadProof)?;
        write_handshake(io, &buf[..n]).await?;
        read_version(io).await?;
        let answer = read_handshake(io).await?;
        state.read_message(&answer, &mut buf).map_err(|_| HandshakeError::BadProof)?;
        let keys = state.into_stateless_transport_mode().map_err(|_| HandshakeError::BadProof)?;
        Ok(Secured { peer: peer.to_owned(), keys: Arc::new(keys) })
    };
    tokio::time::timeout(timeout, run).await.map_err(|_| HandshakeError::Timeout)?
}

/// The listener's side: `me` is this node's id; the peer must name it and prove it holds one
/// of the keyring's secrets. Nothing but the bounded hello and handshake is read before.
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    keyring: &Keyring,
    me: &str,
    timeout: Duration,
) -> Result<Secured, HandshakeError> {
    let run = async {
        let (hello, raw) = match Hello::read(io).await {
            Ok(read) => read,
            Err(err @ HandshakeError::VersionMismatch { .. }) => {
                // Told this node's version, the dialer can say why it is refused.
                io.write_all(HELLO_MAGIC).await?;
                io.shutdown().await?;
                return Err(err);
            }
            Err(err) => return Err(err),
        };
        io.write_all(HELLO_MAGIC).await?;
        let key = keyring
            .find(&hello.key_id)
            .ok_or_else(|| HandshakeError::UnknownKey(hello.key_id.iter().map(|b| format!("{b:02x}")).collect()))?;
        if hello.listener != me {
            return Err(HandshakeError::Misdirected { wanted: hello.listener });
        }
        let mut state = builder()
            .prologue(&raw)
            .and_then(|b| b.psk(0, &key.rpc_psk))
            .and_then(|b| b.build_responder())
            .map_err(|_| HandshakeError::BadProof)?;
        let mut buf = [0u8; MAX_HANDSHAKE_MESSAGE];
        let first = read_handshake(io).await?;
        state.read_message(&first, &mut buf).map_err(|_| HandshakeError::BadProof)?;
        let n = state.write_message(&[], &mut buf).map_err(|_| HandshakeError::BadProof)?;
        write_handshake(io, &buf[..n]).await?;
        let keys = state.into_stateless_transport_mode().map_err(|_| HandshakeError::BadProof)?;
        Ok(Secured { peer: hello.dialer, keys: Arc::new(keys) })
    };
    let secured = tokio::time::timeout(timeout, run).await.map_err(|_| HandshakeError::Timeout)?;
    if let Err(HandshakeError::VersionMismatch { .. }) = &secured {
        linger(io, timeout).await;
    }
    secured
}

/// The dialer's side of the version check: the listener's magic, which must be this build's.
async fn read_version<S: AsyncRead + Unpin>(io: &mut S) -> Result<(), HandshakeError> {
    let mut magic = [0u8; HELLO_MAGIC.len()];
    match io.read_exact(&mut magic).await {
        Ok(_) => check_magic(&magic),
        // A listener of a version before the answer existed closes on a hello it cannot read.
        Err(err) if matches!(err.kind(), std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset) => {
            Err(HandshakeError::NoVersion { ours: OURS })
        }
        Err(err) => Err(err.into()),
    }
}

/// After telling a dialer of another version this node's: reads and drops what it sent until
/// it closes, at most `limit`. Closing with unread bytes would reset the connection, and the
/// reset could overtake the answer.
async fn linger<S: AsyncRead + Unpin>(io: &mut S, limit: Duration) {
    let mut sink = [0u8; 512];
    let drain = async { while matches!(io.read(&mut sink).await, Ok(1..)) {} };
    let _ = tokio::time::timeout(limit, drain).await;
}

fn invalid(what: &'static str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what)
}

/// One direction of a channel: its keys, its record counter (each record's nonce), and the
/// length-delimited frame codec inside the records, with its plaintext buffer.
struct Direction {
    keys: Arc<StatelessTransportState>,
    nonce: u64,
    frames: LengthDelimitedCodec,
    plain: BytesMut,
}

impl Direction {
    fn new(keys: Arc<StatelessTransportState>) -> Self {
        let frames = LengthDelimitedCodec::builder().max_frame_length(MAX_FRAME).new_codec();
        Self { keys, nonce: 0, frames, plain: BytesMut::new() }
    }
}

/// Encrypts frames: each is length-delimited (as before encryption) into a plaintext buffer,
/// and [`seal`](Self::seal) cuts what is buffered into as few records as fit (up to Noise's
/// 65,535 bytes each). Frames buffered together share their records: what a record costs
/// beyond its bytes (a Poly1305 key drawn from the stream cipher, its set-up and the tag) is
/// most of the cost of sealing a small frame, so a burst of pushes sealed at once costs about
/// one frame's. The receiver reads the records' plaintext as one stream of frames and cannot
/// tell how they were cut.
pub struct RecordEncoder(Direction);

impl RecordEncoder {
    fn new(keys: Arc<StatelessTransportState>) -> Self {
        Self(Direction::new(keys))
    }

    /// Buffers a frame for the next [`seal`](Self::seal); an error if it is larger than
    /// `MAX_FRAME`.
    pub fn push(&mut self, frame: Bytes) -> Result<(), std::io::Error> {
        let d = &mut self.0;
        d.frames.encode(frame, &mut d.plain)
    }

    /// Plaintext bytes buffered and not yet sealed.
    pub fn buffered(&self) -> usize {
        self.0.plain.len()
    }

    /// Encrypts every buffered frame into records appended to `dst`, each with the next nonce.
    pub fn seal(&mut self, dst: &mut BytesMut) -> Result<(), std::io::Error> {
        let d = &mut self.0;
        for chunk in d.plain.chunks(MAX_RECORD_PLAINTEXT) {
            let start = dst.len();
            dst.put_u16(0);
            dst.resize(start + 2 + chunk.len() + TAG, 0);
            let n = d
                .keys
                .write_message(d.nonce, chunk, &mut dst[start + 2..])
                .map_err(|_| invalid("cannot encrypt an RPC record"))?;
            d.nonce += 1;
            dst[start..start + 2].copy_from_slice(&(n as u16).to_be_bytes());
            dst.truncate(start + 2 + n);
        }
        d.plain.clear();
        if d.plain.capacity() > KEPT_BUFFER {
            // A rare large frame does not pin its size for the connection's life.
            d.plain = BytesMut::new();
        }
        Ok(())
    }
}

/// Decrypts records and yields the frames inside; a record that fails to decrypt is an error
/// (the connection ends). Holds at most one frame's plaintext plus one record.
pub struct RecordDecoder(Direction);

impl RecordDecoder {
    fn new(keys: Arc<StatelessTransportState>) -> Self {
        Self(Direction::new(keys))
    }
}

impl Decoder for RecordDecoder {
    type Item = BytesMut;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, Self::Error> {
        let d = &mut self.0;
        loop {
            if let Some(frame) = d.frames.decode(&mut d.plain)? {
                return Ok(Some(frame));
            }
            if src.len() < 2 {
                return Ok(None);
            }
            let len = u16::from_be_bytes([src[0], src[1]]) as usize;
            if len < TAG {
                return Err(invalid("RPC record shorter than its tag"));
            }
            if src.len() < 2 + len {
                src.reserve(2 + len - src.len());
                return Ok(None);
            }
            src.advance(2);
            let record = src.split_to(len);
            let start = d.plain.len();
            d.plain.resize(start + len, 0);
            let n = d
                .keys
                .read_message(d.nonce, &record, &mut d.plain[start..])
                .map_err(|_| invalid("RPC record failed authentication"))?;
            d.nonce += 1;
            d.plain.truncate(start + n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seals one frame alone, as a writer with nothing else queued does.
    fn seal_one(enc: &mut RecordEncoder, frame: Bytes, wire: &mut BytesMut) {
        enc.push(frame).unwrap();
        enc.seal(wire).unwrap();
    }

    const ME: &str = "node1";
    const PEER: &str = "node2";
    const T: Duration = Duration::from_secs(2);

    fn ring(secrets: &[&str]) -> Keyring {
        Keyring::new(&secrets.iter().map(|s| s.to_string()).collect::<Vec<_>>(), &[]).unwrap()
    }

    async fn handshake(
        dialer: &Keyring,
        listener: &Keyring,
        wanted: &str,
    ) -> (Result<Secured, HandshakeError>, Result<Secured, HandshakeError>) {
        let (mut a, mut b) = tokio::io::duplex(4096);
        tokio::join!(dial(&mut a, dialer, ME, wanted, T), async {
            let r = accept(&mut b, listener, PEER, T).await;
            drop(b);
            r
        })
    }

    #[tokio::test]
    async fn both_ids_are_proven_and_frames_round_trip_encrypted() {
        let keys = ring(&["the-cluster-secret-1"]);
        let (d, l) = handshake(&keys, &keys, PEER).await;
        let (d, l) = (d.unwrap(), l.unwrap());
        assert_eq!((d.peer.as_str(), l.peer.as_str()), (PEER, ME));
        let (_, mut enc) = d.codecs();
        let (mut dec, _) = l.codecs();
        let big = Bytes::from(vec![7u8; 200_000]);
        let mut wire = BytesMut::new();
        seal_one(&mut enc, Bytes::from_static(b"hello"), &mut wire);
        seal_one(&mut enc, big.clone(), &mut wire);
        assert!(!wire.windows(5).any(|w| w == b"hello"), "frames travel encrypted");
        assert_eq!(dec.decode(&mut wire).unwrap().unwrap(), &b"hello"[..]);
        assert_eq!(dec.decode(&mut wire).unwrap().unwrap(), &big[..]);
        assert!(dec.decode(&mut wire).unwrap().is_none());
    }

    #[tokio::test]
    async fn a_second_secret_is_accepted_during_rotation() {
        let (d, l) = handshake(
            &ring(&["the-new-secret-0000", "the-old-secret-0000"]),
            &ring(&["the-old-secret-0000", "the-new-secret-0000"]),
            PEER,
        )
        .await;
        assert!(d.is_ok() && l.is_ok());
    }

    #[tokio::test]
    async fn a_wrong_secret_or_a_relayed_hello_fails() {
        let (d, l) = handshake(&ring(&["a-guessed-secret-000"]), &ring(&["the-cluster-secret-1"]), PEER).await;
        assert!(matches!(l, Err(HandshakeError::UnknownKey(_))), "{:?}", l.err());
        assert!(d.is_err());
        // A dialer that meant to reach another node (an attacker relaying its handshake here).
        let keys = ring(&["the-cluster-secret-1"]);
        let (d, l) = handshake(&keys, &keys, "evil").await;
        assert!(matches!(l, Err(HandshakeError::Misdirected { .. })), "{:?}", l.err());
        assert!(d.is_err());
    }

    #[tokio::test]
    async fn a_listener_without_the_secret_fails_the_dialer() {
        let keys = ring(&["the-cluster-secret-1"]);
        let (mut a, mut b) = tokio::io::duplex(4096);
        let (d, _) = tokio::join!(dial(&mut a, &keys, ME, PEER, T), async {
            // An impostor that reads the hello and answers with made-up handshake bytes.
            let _ = Hello::read(&mut b).await.unwrap();
            let _ = read_handshake(&mut b).await.unwrap();
            b.write_all(HELLO_MAGIC).await.unwrap();
            write_handshake(&mut b, &[9u8; 48]).await.unwrap();
        });
        assert!(matches!(d, Err(HandshakeError::BadProof)), "{:?}", d.err());
    }

    #[tokio::test]
    async fn altered_replayed_or_reordered_records_are_refused() {
        let keys = ring(&["the-cluster-secret-1"]);
        let (d, l) = handshake(&keys, &keys, PEER).await;
        let (d, l) = (d.unwrap(), l.unwrap());
        let (_, mut enc) = d.codecs();
        let mut one = BytesMut::new();
        seal_one(&mut enc, Bytes::from_static(b"first"), &mut one);
        let mut two = BytesMut::new();
        seal_one(&mut enc, Bytes::from_static(b"second"), &mut two);

        let mut altered = one.clone();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        assert!(l.codecs().0.decode(&mut altered).is_err(), "altered");
        assert!(l.codecs().0.decode(&mut two.clone()).is_err(), "out of order");
        let mut dec = l.codecs().0;
        let mut replay = one.clone();
        replay.extend_from_slice(&one);
        assert!(dec.decode(&mut replay).unwrap().is_some());
        assert!(dec.decode(&mut replay).is_err(), "replayed");
        // And a record of the other direction (reflection) does not decrypt either.
        let (_, mut back) = l.codecs();
        let mut reflected = BytesMut::new();
        seal_one(&mut back, Bytes::from_static(b"x"), &mut reflected);
        assert!(l.codecs().0.decode(&mut reflected).is_err(), "reflected");
    }

    /// The two codecs of one direction, dialer to listener.
    async fn direction() -> (RecordEncoder, RecordDecoder) {
        let keys = ring(&["the-cluster-secret-1"]);
        let (d, l) = handshake(&keys, &keys, PEER).await;
        (d.unwrap().codecs().1, l.unwrap().codecs().0)
    }

    /// The records' lengths, walking the wire.
    fn records(wire: &[u8]) -> Vec<usize> {
        let mut lens = Vec::new();
        let mut at = 0;
        while at < wire.len() {
            let len = u16::from_be_bytes([wire[at], wire[at + 1]]) as usize;
            lens.push(len);
            at += 2 + len;
        }
        assert_eq!(at, wire.len(), "the wire is whole records");
        lens
    }

    #[tokio::test]
    async fn frames_sealed_together_share_one_record() {
        let (mut enc, mut dec) = direction().await;
        let frames = [&b"one"[..], b"two", &[5u8; 1000]];
        for f in frames {
            enc.push(Bytes::copy_from_slice(f)).unwrap();
        }
        assert_eq!(enc.buffered(), 3 * 4 + 3 + 3 + 1000);
        let mut wire = BytesMut::new();
        enc.seal(&mut wire).unwrap();
        assert_eq!(enc.buffered(), 0);
        assert_eq!(records(&wire), vec![3 * 4 + 1006 + TAG]);
        for f in frames {
            assert_eq!(dec.decode(&mut wire).unwrap().unwrap(), f);
        }
        assert!(dec.decode(&mut wire).unwrap().is_none());
        // The next seal continues the nonces: a record alone after the batch decrypts.
        seal_one(&mut enc, Bytes::from_static(b"after"), &mut wire);
        assert_eq!(dec.decode(&mut wire).unwrap().unwrap(), &b"after"[..]);
    }

    #[tokio::test]
    async fn a_batch_larger_than_a_record_spans_records_and_arrives_in_pieces() {
        let (mut enc, mut dec) = direction().await;
        let big = Bytes::from((0..150_000u32).map(|i| i as u8).collect::<Vec<_>>());
        let frames = [Bytes::from_static(b"before"), big.clone(), Bytes::from_static(b"after")];
        for f in &frames {
            enc.push(f.clone()).unwrap();
        }
        let mut wire = BytesMut::new();
        enc.seal(&mut wire).unwrap();
        let lens = records(&wire);
        assert_eq!(lens.len(), 3);
        assert!(lens.iter().all(|&l| l <= MAX_RECORD), "{lens:?}");
        // The wire arrives a few bytes at a time: each frame as soon as it is whole.
        let mut src = BytesMut::new();
        let mut got = Vec::new();
        for piece in wire.chunks(997) {
            src.extend_from_slice(piece);
            while let Some(frame) = dec.decode(&mut src).unwrap() {
                got.push(frame.freeze());
            }
        }
        assert_eq!(got, frames);
        assert!(src.is_empty());
    }

    #[tokio::test]
    async fn a_dropped_record_of_a_batch_fails() {
        let (mut enc, mut dec) = direction().await;
        enc.push(Bytes::from(vec![1u8; 100_000])).unwrap();
        let mut wire = BytesMut::new();
        enc.seal(&mut wire).unwrap();
        let first = 2 + records(&wire)[0];
        let mut second_only = wire.split_off(first);
        assert!(dec.decode(&mut second_only).is_err(), "a record missing before it");
    }

    #[tokio::test]
    async fn an_oversized_frame_is_refused_before_it_is_buffered() {
        let (mut enc, mut dec) = direction().await;
        assert!(enc.push(Bytes::from(vec![0u8; MAX_FRAME + 1])).is_err());
        // A peer that says so anyway (a length past the limit inside a valid record).
        enc.0.plain.put_u32(MAX_FRAME as u32 + 1);
        let mut wire = BytesMut::new();
        enc.seal(&mut wire).unwrap();
        assert!(dec.decode(&mut wire).is_err());
    }

    #[test]
    fn rings_records_open_with_snows_own_cipher_and_back() {
        // A node built before ring was chosen (snow's default cipher) and one after talk.
        use snow::params::CipherChoice;
        use snow::resolvers::CryptoResolver;
        let key = [7u8; 32];
        let ciphers = [&RingResolver as &dyn CryptoResolver, &DefaultResolver].map(|r| {
            let mut c = r.resolve_cipher(&CipherChoice::ChaChaPoly).unwrap();
            c.set(&key);
            c
        });
        for (seal, open) in [(&ciphers[0], &ciphers[1]), (&ciphers[1], &ciphers[0])] {
            let mut sealed = [0u8; 5 + TAG];
            seal.encrypt(u64::MAX - 1, &[], b"hello", &mut sealed);
            let mut opened = [0u8; 5 + TAG];
            let n = open.decrypt(u64::MAX - 1, &[], &sealed, &mut opened).unwrap();
            assert_eq!(&opened[..n], b"hello");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_times_out() {
        let (_a, mut b) = tokio::io::duplex(1024);
        let r = accept(&mut b, &ring(&["the-cluster-secret-1"]), PEER, T).await;
        assert!(matches!(r, Err(HandshakeError::Timeout)));
    }

    /// A hello of `version` from `me` to `PEER`, as a node of that version would send it
    /// (the hello's layout beyond the magic is the same in every version so far).
    fn hello_of(version: &[u8; 8], keys: &Keyring) -> Vec<u8> {
        let hello = Hello { key_id: keys.sending().id, dialer: ME.into(), listener: PEER.into() }.encode();
        [&version[..], &hello[HELLO_MAGIC.len()..]].concat()
    }

    #[tokio::test]
    async fn a_listener_refuses_a_dialer_of_another_version_and_tells_it_its_own() {
        let keys = ring(&["the-cluster-secret-1"]);
        let (mut a, mut b) = tokio::io::duplex(4096);
        let hello = hello_of(b"CCRPC/2\n", &keys);
        let (answer, l) = tokio::join!(
            async move {
                // A CCRPC/2 dialer: its hello, its first handshake message, then it reads (and
                // hangs up once the listener has).
                a.write_all(&hello).await.unwrap();
                write_handshake(&mut a, &[1u8; 48]).await.unwrap();
                let mut answer = Vec::new();
                a.read_to_end(&mut answer).await.unwrap();
                answer
            },
            async {
                let r = accept(&mut b, &keys, PEER, T).await;
                drop(b);
                r
            }
        );
        match l {
            Err(HandshakeError::VersionMismatch { peer, ours }) => {
                assert_eq!((peer.as_str(), ours), ("CCRPC/2", "CCRPC/4"))
            }
            other => panic!("expected a version mismatch, got {:?}", other.err()),
        }
        assert_eq!(answer, HELLO_MAGIC, "the listener says its version, and nothing else, before it closes");
    }

    #[tokio::test]
    async fn a_dialer_refuses_a_listener_of_another_version_naming_both() {
        let keys = ring(&["the-cluster-secret-1"]);
        let (mut a, mut b) = tokio::io::duplex(4096);
        let (d, _) = tokio::join!(dial(&mut a, &keys, ME, PEER, T), async {
            let mut magic = [0u8; 8];
            b.read_exact(&mut magic).await.unwrap();
            b.write_all(b"CCRPC/5\n").await.unwrap();
            b
        });
        let err = d.err().expect("refused");
        assert!(
            matches!(&err, HandshakeError::VersionMismatch { peer, ours } if peer == "CCRPC/5" && *ours == "CCRPC/4"),
            "{err:?}"
        );
        let logged = err.to_string();
        assert!(logged.contains("peer speaks CCRPC/5, this node CCRPC/4"), "{logged}");
        assert!(logged.contains("no rolling upgrade"), "{logged}");
    }

    #[tokio::test]
    async fn a_dialer_whose_listener_closes_without_its_version_says_so() {
        let keys = ring(&["the-cluster-secret-1"]);
        let (mut a, mut b) = tokio::io::duplex(4096);
        let (d, _) = tokio::join!(dial(&mut a, &keys, ME, PEER, T), async move {
            // A CCRPC/2 listener: a hello with another magic is a bad hello, and it hangs up.
            let mut magic = [0u8; 8];
            b.read_exact(&mut magic).await.unwrap();
        });
        assert!(matches!(d, Err(HandshakeError::NoVersion { ours: "CCRPC/4" })), "{:?}", d.err());
    }

    #[tokio::test]
    async fn garbage_is_not_a_hello() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let r = accept(&mut b, &ring(&["the-cluster-secret-1"]), PEER, T).await;
        assert!(matches!(r, Err(HandshakeError::BadHello)));
    }
}
