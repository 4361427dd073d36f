//! The authenticated gossip wire format, pure: sealing and opening datagrams, the replay
//! guard, reassembly of the rare datagram sealed in two parts, and the check of a chitchat
//! message's content before chitchat sees it. No I/O here (see `gossip_transport`).
//!
//! A datagram is `"CCG2" | key id (4) | nonce (24) | XChaCha20-Poly1305(inner)`, the first
//! 8 bytes bound as associated data, the key the sending secret's gossip key. `inner` is
//! `sent_at_ms (u64) | message id (u64) | part (u8) | parts (u8) | len (u8) | to | chunk`:
//! `to` is the address the sender sent to, so a datagram captured on its way to one node (or
//! to a seed address an attacker holds) is refused by every other node (`misdirected`);
//! `sent_at_ms` and the random nonce let a receiver refuse replays: too old or too far ahead
//! (`stale`), or a nonce seen within the window (`replayed`). Chitchat's own message of up to
//! 65,507 bytes plus this overhead may not fit one UDP datagram; it is then sealed in two
//! parts (each checked alone) and reassembled.
//!
//! The content check refuses what chitchat 0.13 trusts and would crash or be fooled by:
//! changes to this node's own state, a delta whose `SetMaxVersion` is below a version it
//! carries (the `state.rs:237` assertion that ends the gossip task), and keys that are not
//! short ASCII. Entries naming this node at a newer generation (a past life that started with
//! the clock ahead, or an impersonator) are taken out and the rest passed on: chitchat would
//! track that life as another node, and peers name it in every message for half an hour
//! (half the dead-node grace). This node echoes those entries back in its own digests
//! ([`echo_lives`]), or peers would fill every delta to it with that life's state.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chacha20::cipher::consts::U10;
use chitchat::{ChitchatId, Deserializable};

use crate::keyring::{KeyId, Keyring};

const MAGIC: &[u8; 4] = b"CCG2";
const NONCE: usize = 24;
const TAG: usize = 16;
const OUTER: usize = MAGIC.len() + 4 + NONCE + TAG;
/// Largest UDP payload over IPv4.
pub const MAX_DATAGRAM: usize = 65_507;
/// Room for the inner header (with the longest textual socket address).
const INNER_HEADER: usize = 8 + 8 + 1 + 1 + 1 + 64;
/// Largest chunk of a chitchat message per datagram.
const MAX_CHUNK: usize = MAX_DATAGRAM - OUTER - INNER_HEADER;
/// Parts a message may be sealed in: chitchat's messages are at most one UDP payload.
const MAX_PARTS: u8 = 2;
/// Decompressed bytes a chitchat message may unfold to before it is refused.
const MAX_UNFOLDED: usize = 4 * 1024 * 1024;
/// Longest gossip key a node accepts (room keys are base64 of at most a few hundred bytes;
/// `chat.max_room_len` is checked against it at start).
pub const MAX_KEY_LEN: usize = 1024;
/// Longest gossip value a node accepts: ours are addresses and flags. A key and value near
/// 64 KB would never fit a datagram, and chitchat would stall every update behind it.
const MAX_VALUE_LEN: usize = 256;

/// Why a datagram was dropped; the label of `clusterchat_gossip_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reject {
    /// Not sealed with a key of this node's keyring (or altered).
    Unauthenticated,
    /// Not a well-formed envelope or chitchat message.
    Malformed,
    /// Sent too long ago or too far in the future.
    Stale,
    /// A nonce seen before within the window.
    Replayed,
    /// Sealed for another address.
    Misdirected,
    /// Claims a state for this node's own id and generation: changes to its own keys.
    SelfClaim,
    /// Names this node at a newer generation: a past life that started with the clock
    /// ahead, or an impersonator. Only those entries are dropped; the rest of the message is
    /// passed on (see [`check_message`]).
    NewerSelf,
    /// A delta chitchat would crash on or keys it would choke on.
    InvalidDelta,
    /// The replay guard is full: more datagrams within the window than it tracks.
    Overload,
}

impl Reject {
    pub const ALL: [Reject; 9] = [
        Reject::Unauthenticated,
        Reject::Malformed,
        Reject::Stale,
        Reject::Replayed,
        Reject::Misdirected,
        Reject::SelfClaim,
        Reject::NewerSelf,
        Reject::InvalidDelta,
        Reject::Overload,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reject::Unauthenticated => "unauthenticated",
            Reject::Malformed => "malformed",
            Reject::Stale => "stale",
            Reject::Replayed => "replayed",
            Reject::Misdirected => "misdirected",
            Reject::SelfClaim => "self_claim",
            Reject::NewerSelf => "newer_self",
            Reject::InvalidDelta => "invalid_delta",
            Reject::Overload => "overload",
        }
    }
}

/// One opened datagram.
#[derive(Debug, PartialEq, Eq)]
pub struct Opened {
    pub nonce: [u8; NONCE],
    pub sent_at_ms: u64,
    pub message_id: u64,
    pub part: u8,
    pub parts: u8,
    pub to: SocketAddr,
    pub chunk: Vec<u8>,
}

/// XChaCha20-Poly1305 for one nonce: HChaCha20 of the key and the nonce's first 16 bytes
/// is the key of an IETF ChaCha20-Poly1305 whose nonce is four zero bytes and the last 8 (as
/// in draft-irtf-cfrg-xchacha). ring's ChaCha20-Poly1305 seals a short datagram in one pass,
/// about a third of the instructions of the `chacha20poly1305` crate's, whose Poly1305 set-up
/// is paid per message; the wire is the same (checked against that crate in the tests).
fn xchacha(key: &[u8; 32], nonce: &[u8; NONCE]) -> (ring::aead::LessSafeKey, ring::aead::Nonce) {
    let subkey = chacha20::hchacha::<U10>(key.into(), nonce[..16].into());
    let unbound = ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, &subkey)
        .expect("a ChaCha20-Poly1305 key is 32 bytes");
    let mut inner_nonce = [0u8; 12];
    inner_nonce[4..].copy_from_slice(&nonce[16..]);
    (ring::aead::LessSafeKey::new(unbound), ring::aead::Nonce::assume_unique_for_key(inner_nonce))
}

/// `addr` as one form for each host: an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, how a
/// dual-stack socket on `[::]` sees an IPv4 peer, and so where chitchat answers it) as the
/// IPv4 address it maps. A datagram is sealed for this form and checked against it, so a node
/// listening on `[::]` and one advertising IPv4 agree on the address.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Seals a chitchat message for `to` in one datagram, or two if it does not fit one.
pub fn seal(keyring: &Keyring, message: &[u8], to: SocketAddr, sent_at_ms: u64) -> Vec<Vec<u8>> {
    let key = keyring.sending();
    let to_text = canonical(to).to_string();
    let message_id: u64 = rand::random();
    let chunks: Vec<&[u8]> = if message.is_empty() { vec![message] } else { message.chunks(MAX_CHUNK).collect() };
    let parts = chunks.len() as u8;
    chunks
        .iter()
        .enumerate()
        .map(|(part, chunk)| {
            let nonce: [u8; NONCE] = rand::random();
            let mut aad = [0u8; 8];
            aad[..4].copy_from_slice(MAGIC);
            aad[4..].copy_from_slice(&key.id);
            // Sealed in place: the datagram is the header, then `inner`, then its tag.
            let mut datagram = Vec::with_capacity(OUTER + 19 + to_text.len() + chunk.len());
            datagram.extend_from_slice(&aad);
            datagram.extend_from_slice(&nonce);
            let start = datagram.len();
            datagram.extend_from_slice(&sent_at_ms.to_be_bytes());
            datagram.extend_from_slice(&message_id.to_be_bytes());
            datagram.push(part as u8);
            datagram.push(parts);
            datagram.push(to_text.len() as u8);
            datagram.extend_from_slice(to_text.as_bytes());
            datagram.extend_from_slice(chunk);
            let (aead, inner_nonce) = xchacha(&key.gossip, &nonce);
            let tag = aead
                .seal_in_place_separate_tag(inner_nonce, ring::aead::Aad::from(aad), &mut datagram[start..])
                .expect("ChaCha20-Poly1305 seals any length under 256 GiB");
            datagram.extend_from_slice(tag.as_ref());
            datagram
        })
        .collect()
}

/// Opens a datagram: checks its seal under the keyring, then parses the inner header.
pub fn open(keyring: &Keyring, datagram: &[u8]) -> Result<Opened, Reject> {
    if datagram.len() < OUTER || &datagram[..4] != MAGIC {
        return Err(Reject::Unauthenticated);
    }
    let key_id: KeyId = datagram[4..8].try_into().expect("4 bytes");
    let key = keyring.find(&key_id).ok_or(Reject::Unauthenticated)?;
    let nonce: [u8; NONCE] = datagram[8..8 + NONCE].try_into().expect("24 bytes");
    let aad: [u8; 8] = datagram[..8].try_into().expect("8 bytes");
    let (aead, inner_nonce) = xchacha(&key.gossip, &nonce);
    let mut sealed = datagram[8 + NONCE..].to_vec();
    let inner = aead
        .open_in_place(inner_nonce, ring::aead::Aad::from(aad), &mut sealed)
        .map_err(|_| Reject::Unauthenticated)?;
    parse_inner(nonce, inner).ok_or(Reject::Malformed)
}

fn parse_inner(nonce: [u8; NONCE], inner: &[u8]) -> Option<Opened> {
    let sent_at_ms = u64::from_be_bytes(inner.get(..8)?.try_into().ok()?);
    let message_id = u64::from_be_bytes(inner.get(8..16)?.try_into().ok()?);
    let (part, parts, to_len) = (*inner.get(16)?, *inner.get(17)?, *inner.get(18)? as usize);
    let to = std::str::from_utf8(inner.get(19..19 + to_len)?).ok()?.parse().ok()?;
    if parts == 0 || parts > MAX_PARTS || part >= parts {
        return None;
    }
    Some(Opened { nonce, sent_at_ms, message_id, part, parts, to, chunk: inner[19 + to_len..].to_vec() })
}

/// Refuses datagrams sent outside the window around now, and any nonce seen within it.
pub struct ReplayGuard {
    window_ms: u64,
    capacity: usize,
    seen: HashSet<[u8; NONCE]>,
    /// Nonces with the time they leave the window, oldest first.
    expiries: VecDeque<(u64, [u8; NONCE])>,
}

impl ReplayGuard {
    pub fn new(window_ms: u64, capacity: usize) -> Self {
        Self { window_ms, capacity, seen: HashSet::new(), expiries: VecDeque::new() }
    }

    pub fn check(&mut self, nonce: [u8; NONCE], sent_at_ms: u64, now_ms: u64) -> Result<(), Reject> {
        if sent_at_ms.saturating_add(self.window_ms) < now_ms || sent_at_ms > now_ms.saturating_add(self.window_ms) {
            return Err(Reject::Stale);
        }
        while self.expiries.front().is_some_and(|(expiry, _)| *expiry < now_ms) {
            let (_, old) = self.expiries.pop_front().expect("front exists");
            self.seen.remove(&old);
        }
        if self.seen.contains(&nonce) {
            return Err(Reject::Replayed);
        }
        if self.seen.len() >= self.capacity {
            return Err(Reject::Overload);
        }
        self.seen.insert(nonce);
        // A datagram is refused as stale once its time is out of the window: its nonce can go.
        self.expiries.push_back((sent_at_ms.saturating_add(self.window_ms), nonce));
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// A message's parts so far, with when its first part came.
type Partial = (u64, Vec<Option<Vec<u8>>>);

/// Messages sealed in two parts, waiting for the other one. Bounded in entries and time.
pub struct Reassembly {
    pending: HashMap<(SocketAddr, u64), Partial>,
}

/// Messages waiting for a part at most; older or more are dropped.
const MAX_PENDING: usize = 64;
const PART_WAIT_MS: u64 = 2_000;

impl Default for Reassembly {
    fn default() -> Self {
        Self::new()
    }
}

impl Reassembly {
    pub fn new() -> Self {
        Self { pending: HashMap::new() }
    }

    /// The whole message once all its parts are in.
    pub fn add(&mut self, from: SocketAddr, opened: Opened, now_ms: u64) -> Option<Vec<u8>> {
        if opened.parts == 1 {
            return Some(opened.chunk);
        }
        self.pending.retain(|_, (since, _)| since.saturating_add(PART_WAIT_MS) >= now_ms);
        let key = (from, opened.message_id);
        if !self.pending.contains_key(&key) && self.pending.len() >= MAX_PENDING {
            return None;
        }
        let (_, parts) = self.pending.entry(key).or_insert_with(|| (now_ms, vec![None; opened.parts as usize]));
        if parts.len() != opened.parts as usize {
            return None;
        }
        parts[opened.part as usize] = Some(opened.chunk);
        if parts.iter().all(Option::is_some) {
            let (_, parts) = self.pending.remove(&key)?;
            return Some(parts.into_iter().flatten().flatten().collect());
        }
        None
    }
}

/// Chitchat's wire constants (chitchat 0.13, `message_serialize.rs` and `serialize.rs`).
const CHITCHAT_MAGIC: u16 = 45_139;

/// Message type of an Ack; the end of a block stream (an empty one is this byte alone).
const CHITCHAT_ACK: u8 = 2;
const CHITCHAT_END_OF_BLOCKS: u8 = 0;

/// An Ack carrying an empty delta, decoded here; `None` for any other message. It is the
/// usual Ack once peers are in step (every round, from every peer asked), and chitchat's
/// decoder zeroes a 64 KiB buffer for every delta it reads, empty or not. Only these exact
/// five bytes are taken: anything else goes to chitchat's decoder (a test checks that both
/// decode these bytes to the same message).
pub fn empty_ack(bytes: &[u8]) -> Option<chitchat::ChitchatEnvelope> {
    let [m0, m1, version, CHITCHAT_ACK, CHITCHAT_END_OF_BLOCKS] = *bytes else { return None };
    if u16::from_le_bytes([m0, m1]) != CHITCHAT_MAGIC {
        return None;
    }
    let version = chitchat::ProtocolVersion::from_code(version)?;
    // Chitchat's `Delta::default()` is the empty delta, as its decoder makes it (its
    // serialized length, 1, the end marker).
    Some(chitchat::ChitchatEnvelope { version, message: chitchat::ChitchatMessage::Ack { delta: Default::default() } })
}

/// What the content check made of a chitchat message.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Checked {
    /// The bytes to pass on instead of the message, if it named this node at a newer
    /// generation: the message without those entries.
    pub stripped: Option<Vec<u8>>,
    /// The digest's entries naming this node at a newer generation, as they came (empty if
    /// none); `None` if the message has no digest. See [`echo_lives`].
    pub newer_lives: Option<Vec<u8>>,
}

impl Checked {
    /// A message passed on as it came.
    pub fn whole(has_digest: bool) -> Self {
        Self { stripped: None, newer_lives: has_digest.then(Vec::new) }
    }
}

/// Checks a chitchat message (its wire bytes) before chitchat decodes it; see the module doc.
///
/// Entries naming this node at a newer generation are taken out rather than the message
/// refused: peers gossip a past life of this node that started with the clock ahead of
/// today's (the generation is the start time) until they stop naming it, half the dead-node
/// grace after its death (half an hour), and refusing every message that names it would cut
/// this node off for that long.
pub fn check_message(bytes: &[u8], me: &ChitchatId) -> Result<Checked, Reject> {
    let mut buf = bytes;
    let header: [u8; 4] = take(&mut buf, 4)?.try_into().expect("4 bytes");
    if u16::from_le_bytes([header[0], header[1]]) != CHITCHAT_MAGIC || header[2] > 1 {
        return Err(Reject::Malformed);
    }
    let v1 = header[2] == 1;
    // The message again, with what was stripped left out.
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&header);
    let mut lives = Vec::new();
    let stripped = match header[3] {
        // Syn: digest, cluster id.
        0 => {
            let stripped = check_digest(&mut buf, v1, me, &mut out, &mut lives)?;
            let mut cluster_id = buf;
            read::<String>(&mut cluster_id)?;
            out.extend_from_slice(buf);
            stripped
        }
        // SynAck: digest, delta.
        1 => check_digest(&mut buf, v1, me, &mut out, &mut lives)? | check_delta(&mut buf, me, &mut out)?,
        // Ack: delta.
        2 => check_delta(&mut buf, me, &mut out)?,
        // BadCluster.
        3 => false,
        _ => return Err(Reject::Malformed),
    };
    Ok(Checked { stripped: stripped.then_some(out), newer_lives: matches!(header[3], 0 | 1).then_some(lives) })
}

/// This node's outgoing Syn or SynAck (as its chitchat encoded it) with `lives` added to its
/// digest: the entries a peer's digest named this node at a newer generation with, as that
/// peer sent them. Why: chitchat sends first, in every delta, each node the receiver's
/// digest lacks, and this node's chitchat never tracks its newer lives (their entries are
/// stripped), so without the echo a peer would fill every delta to this node with a past
/// life's whole state (thousands of room keys fill the 64 KB budget), and this node would
/// hear heartbeats but no key of any peer. Echoed as they came, the entries tell the peer
/// nothing it did not say: its failure detector ignores a heartbeat that is not higher, and
/// one it collected is not brought back. `None` for other messages (an Ack carries no
/// digest) or bytes that do not parse.
pub fn echo_lives(message: &[u8], lives: &[u8]) -> Option<Vec<u8>> {
    let mut buf = message;
    let header: [u8; 4] = take(&mut buf, 4).ok()?.try_into().ok()?;
    if u16::from_le_bytes([header[0], header[1]]) != CHITCHAT_MAGIC || !matches!(header[3], 0 | 1) {
        return None;
    }
    let mut out = Vec::with_capacity(message.len() + lives.len());
    out.extend_from_slice(&header);
    match header[2] {
        0 => {
            let count: u16 = read(&mut buf).ok()?;
            let added = digest_entries(lives).ok()?;
            out.extend_from_slice(&count.checked_add(u16::try_from(added).ok()?)?.to_le_bytes());
            out.extend_from_slice(lives);
        }
        1 => {
            let mut entries = unfold(&mut buf).ok()?;
            entries.extend_from_slice(lives);
            fold(&entries, &mut out);
        }
        _ => return None,
    }
    // The v0 digest's own entries, then the cluster id or delta: as they were.
    out.extend_from_slice(buf);
    Some(out)
}

/// How long a peer's newer lives of this node are echoed to it after its last digest naming
/// them (it sends one every few gossip rounds while it names them).
const ECHO_FOR: Duration = Duration::from_secs(10);
/// Peers whose newer lives of this node are echoed, at most (a peer is one address).
const MAX_ECHOED_PEERS: usize = 1024;
/// Bytes of digest entries echoed to one peer, at most: a few lives' (an entry is a node id
/// and three numbers); a past life is one, an impersonator's forgeries could be many.
const MAX_ECHOED_BYTES: usize = 1024;

/// By peer: the digest entries naming this node at a newer generation in that peer's latest
/// digest, and when it came, to echo back to it ([`echo_lives`]). Addresses are taken in
/// their canonical form. Bounded: at most [`MAX_ECHOED_PEERS`] peers (those not heard from
/// within [`ECHO_FOR`] make way first), [`MAX_ECHOED_BYTES`] of entries each.
#[derive(Default)]
pub struct Echoes {
    by_peer: HashMap<SocketAddr, (Instant, Vec<u8>)>,
}

impl Echoes {
    /// Notes the newer lives `from`'s latest digest named (none: forgets them).
    pub fn note(&mut self, from: SocketAddr, mut lives: Vec<u8>, now: Instant) {
        let from = canonical(from);
        if lives.is_empty() {
            self.by_peer.remove(&from);
            return;
        }
        if !self.by_peer.contains_key(&from) && self.by_peer.len() >= MAX_ECHOED_PEERS {
            self.by_peer.retain(|_, (seen, _)| now.saturating_duration_since(*seen) < ECHO_FOR);
            if self.by_peer.len() >= MAX_ECHOED_PEERS {
                return;
            }
        }
        if lives.len() > MAX_ECHOED_BYTES {
            lives = echo_within(&lives, MAX_ECHOED_BYTES);
        }
        self.by_peer.insert(from, (now, lives));
    }

    /// This node's outgoing `message` to `to`, with the newer lives `to` named lately echoed
    /// in its digest; as it is if there are none, it has no digest, or the echo would not fit
    /// what a peer's codec takes (the message chitchat sized then goes as it was).
    pub fn apply(&mut self, to: SocketAddr, message: Vec<u8>, now: Instant) -> Vec<u8> {
        let to = canonical(to);
        match self.by_peer.get(&to) {
            Some((seen, lives)) if now.saturating_duration_since(*seen) < ECHO_FOR => {
                echo_lives(&message, lives).filter(|echoed| echoed.len() <= MAX_DATAGRAM).unwrap_or(message)
            }
            Some(_) => {
                self.by_peer.remove(&to);
                message
            }
            None => message,
        }
    }

    /// Peers noted.
    pub fn len(&self) -> usize {
        self.by_peer.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_peer.is_empty()
    }
}

/// The whole digest entries of `entries` that fit in `max` bytes, from the first.
fn echo_within(mut entries: &[u8], max: usize) -> Vec<u8> {
    let all = entries;
    let mut end = 0;
    while !entries.is_empty() && digest_entry(&mut entries).is_ok() {
        let at = all.len() - entries.len();
        if at > max {
            break;
        }
        end = at;
    }
    all[..end].to_vec()
}

/// How many digest entries `entries` holds.
fn digest_entries(mut entries: &[u8]) -> Result<usize, Reject> {
    let mut n = 0;
    while !entries.is_empty() {
        digest_entry(&mut entries)?;
        n += 1;
    }
    Ok(n)
}

/// The next entry of a digest (a node id, then its heartbeat, last gc version and max
/// version): the node id and the entry's bytes.
fn digest_entry<'a>(entries: &mut &'a [u8]) -> Result<(ChitchatId, &'a [u8]), Reject> {
    let start = *entries;
    let id: ChitchatId = read(entries)?;
    take(entries, 24)?;
    Ok((id, &start[..start.len() - entries.len()]))
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], Reject> {
    if buf.len() < n {
        return Err(Reject::Malformed);
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Ok(head)
}

fn read<T: Deserializable>(buf: &mut &[u8]) -> Result<T, Reject> {
    T::deserialize(buf).map_err(|_| Reject::Malformed)
}

/// Unfolds chitchat's block stream (zstd or stored blocks of at most 64 KiB).
fn unfold(buf: &mut &[u8]) -> Result<Vec<u8>, Reject> {
    let mut out = Vec::new();
    loop {
        match take(buf, 1)?[0] {
            0 => return Ok(out),
            kind @ (1 | 2) => {
                let len = u16::from_le_bytes(take(buf, 2)?.try_into().expect("2 bytes")) as usize;
                let block = take(buf, len)?;
                if kind == 1 {
                    // One decompression context per thread: making one per block was a
                    // visible share of the gossip check's work (it runs for every datagram).
                    thread_local! {
                        static CONTEXT: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
                            const { std::cell::RefCell::new(None) };
                    }
                    let unfolded = CONTEXT.with_borrow_mut(|context| {
                        let context = match context {
                            Some(c) => c,
                            None => context.insert(zstd::bulk::Decompressor::new().map_err(|_| Reject::Malformed)?),
                        };
                        context.decompress(block, u16::MAX as usize).map_err(|_| Reject::Malformed)
                    })?;
                    out.extend_from_slice(&unfolded);
                } else {
                    out.extend_from_slice(block);
                }
                if out.len() > MAX_UNFOLDED {
                    return Err(Reject::Malformed);
                }
            }
            _ => return Err(Reject::Malformed),
        }
    }
}

/// Whether a node id in a digest or delta is this node at a newer generation: a past life
/// that started with the clock ahead, or an impersonator. Its entries are stripped.
fn newer_me(id: &ChitchatId, me: &ChitchatId) -> bool {
    id.node_id == me.node_id && id.generation_id > me.generation_id
}

/// Checks a digest read from `buf` and appends it to `out`, without the entries naming this
/// node at a newer generation, which go to `lives`; whether there were any.
fn check_digest(
    buf: &mut &[u8],
    v1: bool,
    me: &ChitchatId,
    out: &mut Vec<u8>,
    lives: &mut Vec<u8>,
) -> Result<bool, Reject> {
    // Appends the entries kept to `kept`; how many were read and how many kept.
    let keep_entries = |entries: &mut &[u8],
                        count: Option<u16>,
                        kept: &mut Vec<u8>,
                        lives: &mut Vec<u8>|
     -> Result<(u32, u32), Reject> {
        let (mut read_n, mut kept_n) = (0u32, 0u32);
        while count.map_or(!entries.is_empty(), |c| read_n < u32::from(c)) {
            let (id, entry) = digest_entry(entries)?;
            if newer_me(&id, me) {
                lives.extend_from_slice(entry);
            } else {
                kept.extend_from_slice(entry);
                kept_n += 1;
            }
            read_n += 1;
        }
        Ok((read_n, kept_n))
    };
    let start = *buf;
    let mut kept = Vec::new();
    let (read_n, kept_n) = if v1 {
        keep_entries(&mut unfold(buf)?.as_slice(), None, &mut kept, lives)?
    } else {
        let count: u16 = read(buf)?;
        keep_entries(buf, Some(count), &mut kept, lives)?
    };
    if read_n == kept_n {
        out.extend_from_slice(&start[..start.len() - buf.len()]);
        return Ok(false);
    }
    if v1 {
        fold(&kept, out);
    } else {
        out.extend_from_slice(&u16::try_from(kept_n).expect("at most the count read").to_le_bytes());
        out.extend_from_slice(&kept);
    }
    Ok(true)
}

/// Checks a delta read from `buf` and appends it to `out`, without the node states naming
/// this node at a newer generation; whether there were any.
fn check_delta(buf: &mut &[u8], me: &ChitchatId, out: &mut Vec<u8>) -> Result<bool, Reject> {
    let start = *buf;
    let unfolded = unfold(buf)?;
    let mut ops = unfolded.as_slice();
    // The highest key version of the node state being described, if any.
    let mut node: Option<u64> = None;
    let mut described = HashSet::new();
    // The ops kept, and whether the node state being described is stripped.
    let mut kept = Vec::new();
    let mut stripping = false;
    while !ops.is_empty() {
        let op = ops;
        match take(&mut ops, 1)?[0] {
            0 => {
                let id: ChitchatId = read(&mut ops)?;
                take(&mut ops, 16)?; // last gc version, from version
                if id.node_id == me.node_id && id.generation_id == me.generation_id {
                    return Err(Reject::SelfClaim);
                }
                stripping = newer_me(&id, me);
                if !described.insert(id) {
                    return Err(Reject::InvalidDelta);
                }
                node = Some(0);
            }
            1 => {
                let key: String = read(&mut ops)?;
                let value: String = read(&mut ops)?;
                let version: u64 = read(&mut ops)?;
                if take(&mut ops, 1)?[0] > 2 {
                    return Err(Reject::Malformed); // not a deletion status
                }
                let highest = node.as_mut().ok_or(Reject::Malformed)?;
                let bad_key = key.is_empty() || key.len() > MAX_KEY_LEN || !key.is_ascii();
                if bad_key || value.len() > MAX_VALUE_LEN || version <= *highest {
                    return Err(Reject::InvalidDelta);
                }
                *highest = version;
            }
            2 => {
                let max_version: u64 = read(&mut ops)?;
                let highest = node.ok_or(Reject::Malformed)?;
                if max_version < highest {
                    return Err(Reject::InvalidDelta);
                }
            }
            _ => return Err(Reject::Malformed),
        }
        if !stripping {
            kept.extend_from_slice(&op[..op.len() - ops.len()]);
        }
    }
    if kept.len() == unfolded.len() {
        out.extend_from_slice(&start[..start.len() - buf.len()]);
        return Ok(false);
    }
    fold(&kept, out);
    Ok(true)
}

/// Folds `items` into chitchat's block stream, as chitchat does: blocks of 16 KiB,
/// zstd-compressed unless that is no shorter.
fn fold(items: &[u8], out: &mut Vec<u8>) {
    const BLOCK: usize = 16_384;
    thread_local! {
        static CONTEXT: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    for block in items.chunks(BLOCK) {
        let compressed = CONTEXT.with_borrow_mut(|context| {
            let context = match context {
                Some(c) => c,
                None => context.insert(zstd::bulk::Compressor::new(0).ok()?),
            };
            context.compress(block).ok().filter(|c| c.len() < block.len())
        });
        let (kind, bytes) = match &compressed {
            Some(c) => (1u8, &c[..]),
            None => (2u8, block),
        };
        out.push(kind);
        out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
        out.extend_from_slice(bytes);
    }
    out.push(0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use chitchat::Serializable;

    fn ring(secret: &str) -> Keyring {
        Keyring::single(secret)
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// An empty Ack, as chitchat encodes it, decodes here to what chitchat's decoder makes of
    /// it; anything else is left to chitchat.
    #[tokio::test]
    async fn an_empty_ack_decodes_here_as_chitchat_decodes_it() {
        use chitchat::transport::{Socket, UdpSocket as ChitchatUdp};
        use chitchat::{ChitchatEnvelope, ChitchatMessage, ProtocolVersion};
        let mut codec = ChitchatUdp::open(addr("127.0.0.1:0")).await.unwrap();
        let plain = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let me = ChitchatId::new("me", 1, addr("127.0.0.1:7000"));
        for version in [ProtocolVersion::V0, ProtocolVersion::V1] {
            let ack = ChitchatEnvelope { version, message: ChitchatMessage::Ack { delta: Default::default() } };
            codec.send(plain.local_addr().unwrap(), ack).await.unwrap();
            let mut buf = [0u8; 64];
            let (n, _) = plain.recv_from(&mut buf).await.unwrap();
            let bytes = &buf[..n];
            check_message(bytes, &me).unwrap();
            let ours = empty_ack(bytes).expect("an empty Ack");
            plain.send_to(bytes, codec.local_addr().unwrap()).await.unwrap();
            let theirs = codec.recv().await.unwrap().envelope;
            assert_eq!(ours, theirs);
            let mut longer = bytes.to_vec();
            longer.push(0);
            assert!(empty_ack(&longer).is_none());
            assert!(empty_ack(&bytes[..4]).is_none());
            for at in 0..bytes.len() {
                let mut other = bytes.to_vec();
                other[at] ^= 1 << 2;
                assert!(empty_ack(&other).is_none(), "byte {at} changed");
            }
        }
    }

    /// A Syn with one peer in its digest and `cluster_id`.
    fn syn_of(cluster_id: &str) -> Vec<u8> {
        let mut m = header(0, 0);
        m.extend_from_slice(&1u16.to_le_bytes());
        m.extend(entry(&id("node2", 5), 1));
        cluster_id.to_owned().serialize(&mut m);
        m
    }

    /// The echo, per peer: noted from its digest, added to this node's messages to that peer
    /// only (its address in either form), forgotten when the peer's digest no longer names
    /// them or 10 s after it last did; bounded in peers (stale ones make way) and in bytes;
    /// left out of a message it would push past what a peer's codec takes.
    #[test]
    fn echoes_are_per_peer_bounded_and_forgotten() {
        let me = id("node1", 100);
        let lives = entry(&id("node1", 101), 9);
        let (a, b) = (addr("10.0.0.2:7000"), addr("10.0.0.3:7000"));
        let t0 = Instant::now();
        let mut echoes = Echoes::default();
        echoes.note(a, lives.clone(), t0);
        let to_a = echoes.apply(a, syn_of("chat"), t0);
        assert_eq!(check_message(&to_a, &me).unwrap().newer_lives, Some(lives.clone()));
        assert_eq!(echoes.apply(addr("[::ffff:10.0.0.2]:7000"), syn_of("chat"), t0), to_a);
        assert_eq!(echoes.apply(b, syn_of("chat"), t0), syn_of("chat"), "only to the peer that named them");
        let no_digest = ack(&[node_op(&id("node2", 5))]);
        assert_eq!(echoes.apply(a, no_digest.clone(), t0), no_digest);
        let room = MAX_DATAGRAM - syn_of("").len() - 8;
        let big = syn_of(&"c".repeat(room));
        assert!(big.len() <= MAX_DATAGRAM && big.len() + lives.len() > MAX_DATAGRAM);
        assert_eq!(echoes.apply(a, big.clone(), t0), big, "would not fit: as it was");

        // Forgotten: the peer's digest names none, or it named them too long ago.
        echoes.note(a, Vec::new(), t0);
        assert!(echoes.is_empty());
        echoes.note(a, lives.clone(), t0);
        assert_eq!(echoes.apply(a, syn_of("chat"), t0 + ECHO_FOR), syn_of("chat"));
        assert!(echoes.is_empty());

        // Bounded in peers: a new one is noted only if a stale one makes way.
        for n in 0..MAX_ECHOED_PEERS {
            echoes.note(SocketAddr::from(([10, 1, (n / 256) as u8, (n % 256) as u8], 7000)), lives.clone(), t0);
        }
        let later = t0 + Duration::from_secs(1);
        echoes.note(b, lives.clone(), later);
        assert_eq!(echoes.len(), MAX_ECHOED_PEERS);
        assert_eq!(echoes.apply(b, syn_of("chat"), later), syn_of("chat"), "no room for b");
        echoes.note(b, lives.clone(), t0 + ECHO_FOR);
        assert_eq!(echoes.len(), 1, "the stale ones made way");
        // Bounded in bytes, in whole entries.
        let many: Vec<u8> = (0..100).flat_map(|g| entry(&id("node1", 200 + g), 1)).collect();
        echoes.note(a, many.clone(), t0 + ECHO_FOR);
        let echoed = echoes.apply(a, syn_of("chat"), t0 + ECHO_FOR);
        let echoed = check_message(&echoed, &me).unwrap().newer_lives.unwrap();
        assert!(!echoed.is_empty() && echoed.len() <= MAX_ECHOED_BYTES && many.starts_with(&echoed));
    }

    /// A digest of several blocks (here about 40 KiB of entries) is stripped and folded again
    /// into blocks chitchat decodes, and so is its echo.
    #[tokio::test]
    async fn a_digest_of_several_blocks_is_stripped_and_echoed_whole() {
        let me = id("node1", 100);
        let newer = entry(&id("node1", 101), 9);
        let mut entries: Vec<u8> = (0..800).flat_map(|n| entry(&id(&format!("peer{n:04}"), 5), n)).collect();
        entries.extend(&newer);
        assert!(entries.len() > 2 * 16_384);
        let mut message = header(1, 0);
        message.extend(stream(&entries));
        "chat".to_owned().serialize(&mut message);
        let checked = check_message(&message, &me).unwrap();
        assert_eq!(checked.newer_lives, Some(newer.clone()));
        let stripped = checked.stripped.unwrap();
        let decoded = format!("{:?}", chitchat_decodes(&stripped).await);
        assert!(decoded.contains("peer0000:5:") && decoded.contains("peer0799:5:") && !decoded.contains("node1:101:"));
        let echoed = chitchat_decodes(&echo_lives(&stripped, &newer).unwrap()).await;
        assert_eq!(echoed, chitchat_decodes(&message).await);
    }

    /// A dual-stack socket sees an IPv4 peer at an IPv4-mapped address: sealed for and
    /// checked as the IPv4 address, so both ends agree.
    #[test]
    fn an_ipv4_mapped_address_is_sealed_as_its_ipv4_address() {
        let keyring = ring("secret-aaaaaaaaaaaa");
        let mapped = addr("[::ffff:127.0.0.1]:7001");
        assert_eq!(canonical(mapped), addr("127.0.0.1:7001"));
        assert_eq!(canonical(addr("[::1]:7001")), addr("[::1]:7001"));
        assert_eq!(canonical(addr("10.0.0.1:7001")), addr("10.0.0.1:7001"));
        let opened = open(&keyring, &seal(&keyring, b"m", mapped, 1).remove(0)).unwrap();
        assert_eq!(opened.to, addr("127.0.0.1:7001"));
    }

    /// The seal is XChaCha20-Poly1305 as the `chacha20poly1305` crate implements it: each
    /// opens what the other sealed, and a flipped bit is refused.
    #[test]
    fn the_seal_is_xchacha20_poly1305() {
        use chacha20poly1305::aead::{Aead, KeyInit, Payload};
        use chacha20poly1305::{XChaCha20Poly1305, XNonce};
        let keyring = ring("secret-aaaaaaaaaaaa");
        let key = keyring.sending();
        let other = XChaCha20Poly1305::new((&key.gossip).into());
        for len in [0usize, 1, 15, 16, 17, 63, 64, 65, 255, 1000, 5000] {
            let message: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            let to = addr("10.0.0.2:7000");
            let datagram = seal(&keyring, &message, to, 42).remove(0);
            let nonce = XNonce::from_slice(&datagram[8..8 + NONCE]);
            let inner = other
                .decrypt(nonce, Payload { msg: &datagram[8 + NONCE..], aad: &datagram[..8] })
                .expect("the crate opens our seal");
            assert_eq!(&inner[inner.len() - len..], &message[..]);
            let mut theirs = datagram[..8 + NONCE].to_vec();
            theirs.extend(other.encrypt(nonce, Payload { msg: &inner, aad: &datagram[..8] }).unwrap());
            assert_eq!(theirs, datagram, "the same key, nonce and input seal the same bytes");
            let opened = open(&keyring, &theirs).expect("we open the crate's seal");
            assert_eq!(opened.chunk, message);
            for at in [0, 8, 8 + NONCE, datagram.len() - 1] {
                let mut bad = datagram.clone();
                bad[at] ^= 1;
                assert!(open(&keyring, &bad).is_err());
            }
        }
    }

    #[test]
    fn sealed_datagrams_open_only_under_the_same_secret() {
        let to = addr("10.0.0.2:7000");
        let sealed = seal(&ring("secret-aaaaaaaaaaaa"), b"hello", to, 42);
        assert_eq!(sealed.len(), 1);
        let opened = open(&ring("secret-aaaaaaaaaaaa"), &sealed[0]).unwrap();
        assert_eq!((opened.chunk.as_slice(), opened.to, opened.sent_at_ms), (&b"hello"[..], to, 42));
        assert_eq!(open(&ring("secret-bbbbbbbbbbbb"), &sealed[0]), Err(Reject::Unauthenticated));
        // Any flipped bit, anywhere, is refused.
        for i in [0, 5, 9, 40, sealed[0].len() - 1] {
            let mut bad = sealed[0].clone();
            bad[i] ^= 1;
            assert_eq!(open(&ring("secret-aaaaaaaaaaaa"), &bad), Err(Reject::Unauthenticated), "byte {i}");
        }
        assert_eq!(open(&ring("secret-aaaaaaaaaaaa"), b"CCG2"), Err(Reject::Unauthenticated));
    }

    #[test]
    fn a_message_too_big_for_one_datagram_goes_in_two_and_comes_back_whole() {
        let keys = ring("secret-aaaaaaaaaaaa");
        let message: Vec<u8> = (0..MAX_DATAGRAM).map(|i| i as u8).collect();
        let sealed = seal(&keys, &message, addr("127.0.0.1:1"), 1);
        assert_eq!(sealed.len(), 2);
        assert!(sealed.iter().all(|d| d.len() <= MAX_DATAGRAM));
        let mut parts = Reassembly::new();
        let from = addr("127.0.0.1:2");
        // In either order.
        assert_eq!(parts.add(from, open(&keys, &sealed[1]).unwrap(), 10), None);
        assert_eq!(parts.add(from, open(&keys, &sealed[0]).unwrap(), 10), Some(message));
    }

    #[test]
    fn the_replay_guard_refuses_old_future_and_repeated_datagrams() {
        let mut guard = ReplayGuard::new(1_000, 3);
        assert_eq!(guard.check([1; NONCE], 10_000, 10_000), Ok(()));
        assert_eq!(guard.check([1; NONCE], 10_000, 10_500), Err(Reject::Replayed));
        assert_eq!(guard.check([2; NONCE], 8_000, 10_000), Err(Reject::Stale));
        assert_eq!(guard.check([2; NONCE], 12_000, 10_000), Err(Reject::Stale));
        assert_eq!(guard.check([2; NONCE], 10_100, 10_100), Ok(()));
        assert_eq!(guard.check([3; NONCE], 10_200, 10_200), Ok(()));
        assert_eq!(guard.check([4; NONCE], 10_200, 10_200), Err(Reject::Overload));
        // Once the first leaves the window its slot frees up, and its replay is stale anyway.
        assert_eq!(guard.check([4; NONCE], 11_050, 11_050), Ok(()));
        assert_eq!(guard.check([1; NONCE], 10_000, 11_050), Err(Reject::Stale));
        assert!(guard.len() <= 3);
    }

    fn id(name: &str, generation: u64) -> ChitchatId {
        ChitchatId::new(name.to_owned(), generation, addr("10.0.0.1:7000"))
    }

    /// A stored block stream of `ops` (chitchat's block type 2), as chitchat would send it.
    fn stream(ops: &[u8]) -> Vec<u8> {
        let mut out = vec![2];
        out.extend_from_slice(&(ops.len() as u16).to_le_bytes());
        out.extend_from_slice(ops);
        out.push(0);
        out
    }

    fn node_op(node: &ChitchatId) -> Vec<u8> {
        let mut op = vec![0];
        node.serialize(&mut op);
        op.extend_from_slice(&0u64.to_le_bytes());
        op.extend_from_slice(&0u64.to_le_bytes());
        op
    }

    fn kv_op(key: &str, version: u64) -> Vec<u8> {
        kv_op_valued(key, "1", version)
    }

    fn kv_op_valued(key: &str, value: &str, version: u64) -> Vec<u8> {
        let mut op = vec![1];
        key.to_owned().serialize(&mut op);
        value.to_owned().serialize(&mut op);
        op.extend_from_slice(&version.to_le_bytes());
        op.push(0);
        op
    }

    fn ack(ops: &[Vec<u8>]) -> Vec<u8> {
        let mut bytes = CHITCHAT_MAGIC.to_le_bytes().to_vec();
        bytes.extend_from_slice(&[1, 2]);
        bytes.extend(stream(&ops.concat()));
        bytes
    }

    #[test]
    fn deltas_chitchat_would_crash_on_or_be_fooled_by_are_refused() {
        let me = id("node1", 100);
        let peer = id("node2", 5);
        let set_max = |v: u64| {
            let mut op = vec![2];
            op.extend_from_slice(&v.to_le_bytes());
            op
        };
        assert_eq!(
            check_message(&ack(&[node_op(&peer), kv_op("ready", 3), kv_op("rpc", 5)]), &me),
            Ok(Checked::whole(false))
        );
        // The state.rs:237 assertion: a key at version 5, then SetMaxVersion 1.
        assert_eq!(
            check_message(&ack(&[node_op(&peer), kv_op("ready", 5), set_max(1)]), &me),
            Err(Reject::InvalidDelta)
        );
        assert_eq!(check_message(&ack(&[node_op(&peer), set_max(7)]), &me), Ok(Checked::whole(false)));
        assert_eq!(check_message(&ack(&[node_op(&peer), kv_op("é", 1)]), &me), Err(Reject::InvalidDelta));
        // A value chitchat could never pass on whole (here merely over our bound).
        let long = "x".repeat(MAX_VALUE_LEN + 1);
        assert_eq!(
            check_message(&ack(&[node_op(&peer), kv_op_valued("rpc", &long, 1)]), &me),
            Err(Reject::InvalidDelta)
        );
        let fits = "x".repeat(MAX_VALUE_LEN);
        assert_eq!(
            check_message(&ack(&[node_op(&peer), kv_op_valued("rpc", &fits, 1)]), &me),
            Ok(Checked::whole(false))
        );
        assert_eq!(
            check_message(&ack(&[node_op(&peer), kv_op("a", 2), kv_op("b", 2)]), &me),
            Err(Reject::InvalidDelta)
        );
        // Our own state: only we change it.
        assert_eq!(check_message(&ack(&[node_op(&me), kv_op("ready", 9)]), &me), Err(Reject::SelfClaim));
        // A newer generation of ours (a past life ahead of the clock, an impersonator) is
        // taken out, and the rest passed on (see the next test).
        let mut empty = ack(&[]);
        empty.truncate(4);
        empty.push(CHITCHAT_END_OF_BLOCKS);
        assert_eq!(
            check_message(&ack(&[node_op(&id("node1", 101))]), &me),
            Ok(Checked { stripped: Some(empty), newer_lives: None })
        );
        // A past life of ours, which peers still know, is fine.
        assert_eq!(
            check_message(&ack(&[node_op(&id("node1", 99)), kv_op("ready", 1)]), &me),
            Ok(Checked::whole(false))
        );
        assert_eq!(check_message(&ack(&[kv_op("ready", 1)]), &me), Err(Reject::Malformed));
        assert_eq!(check_message(b"\x00\x01", &me), Err(Reject::Malformed));
    }

    /// A digest entry of `node` (heartbeat, last gc version, max version).
    fn entry(node: &ChitchatId, max_version: u64) -> Vec<u8> {
        let mut entry = Vec::new();
        node.serialize(&mut entry);
        for n in [3u64, 0, max_version] {
            entry.extend_from_slice(&n.to_le_bytes());
        }
        entry
    }

    /// Chitchat's header of a message of `kind` in protocol `version`.
    fn header(version: u8, kind: u8) -> Vec<u8> {
        let mut bytes = CHITCHAT_MAGIC.to_le_bytes().to_vec();
        bytes.extend_from_slice(&[version, kind]);
        bytes
    }

    /// What chitchat's own decoder makes of `bytes` (it skips what it cannot decode and waits
    /// for the next datagram: a limit turns that into a failure).
    async fn chitchat_decodes(bytes: &[u8]) -> chitchat::ChitchatEnvelope {
        use chitchat::transport::{Socket, UdpSocket as ChitchatUdp};
        let mut codec = ChitchatUdp::open(addr("127.0.0.1:0")).await.unwrap();
        let plain = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        plain.send_to(bytes, codec.local_addr().unwrap()).await.unwrap();
        let decoded = tokio::time::timeout(std::time::Duration::from_secs(5), codec.recv());
        decoded.await.expect("chitchat decodes the message").unwrap().envelope
    }

    /// Peers gossip a past life of this node that started with the clock ahead of today's
    /// (or an impersonator's entries) until they forget it: the entries naming this node at
    /// a newer generation are taken out of digests and deltas, the rest of the message is
    /// kept, and chitchat decodes what is left. Refusing the whole message cut the node off.
    #[tokio::test]
    async fn entries_naming_this_node_at_a_newer_generation_are_stripped_and_the_rest_kept() {
        let me = id("node1", 100);
        let (newer, past, peer) = (id("node1", 101), id("node1", 99), id("node2", 5));
        let cluster_id = || {
            let mut bytes = Vec::new();
            "chat".to_owned().serialize(&mut bytes);
            bytes
        };
        let folded = |items: &[u8]| {
            let mut out = Vec::new();
            fold(items, &mut out);
            out
        };
        let digest_all = [entry(&peer, 4), entry(&newer, 9), entry(&past, 2)];
        let digest_kept = [entry(&peer, 4), entry(&past, 2)];

        // A Syn, digest in protocol 0 (a count, then entries) and 1 (a block stream).
        let mut v0 = header(0, 0);
        v0.extend_from_slice(&3u16.to_le_bytes());
        v0.extend(digest_all.concat());
        v0.extend(cluster_id());
        let mut v0_kept = header(0, 0);
        v0_kept.extend_from_slice(&2u16.to_le_bytes());
        v0_kept.extend(digest_kept.concat());
        v0_kept.extend(cluster_id());
        let mut v1 = header(1, 0);
        v1.extend(stream(&digest_all.concat()));
        v1.extend(cluster_id());
        let mut v1_kept = header(1, 0);
        v1_kept.extend(folded(&digest_kept.concat()));
        v1_kept.extend(cluster_id());

        // A SynAck: that digest, and a delta describing the newer life and a peer, with
        // enough keys that its blocks are compressed.
        let keys = |from: u64| -> Vec<Vec<u8>> {
            (0..200).map(|i| kv_op_valued(&format!("room:{i:04}"), &"x".repeat(100), from + i)).collect()
        };
        let delta_all = [vec![node_op(&newer)], keys(1), vec![node_op(&peer)], keys(1)].concat();
        let delta_kept = [vec![node_op(&peer)], keys(1)].concat();
        let mut syn_ack = header(1, 1);
        syn_ack.extend(stream(&digest_all.concat()));
        syn_ack.extend(folded(&delta_all.concat()));
        let mut syn_ack_kept = header(1, 1);
        syn_ack_kept.extend(folded(&digest_kept.concat()));
        syn_ack_kept.extend(folded(&delta_kept.concat()));
        assert!(folded(&delta_kept.concat()).len() < delta_kept.concat().len() / 4, "compressed blocks");

        for (message, kept) in [(v0, v0_kept), (v1, v1_kept), (syn_ack, syn_ack_kept)] {
            let lives = entry(&newer, 9);
            let checked = check_message(&message, &me);
            assert_eq!(checked, Ok(Checked { stripped: Some(kept.clone()), newer_lives: Some(lives.clone()) }));
            assert_eq!(check_message(&kept, &me), Ok(Checked::whole(true)));
            let decoded = format!("{:?}", chitchat_decodes(&kept).await);
            assert!(!decoded.contains("node1:101:"), "{decoded}");
            for node in ["node2:5:", "node1:99:"] {
                assert!(decoded.contains(node), "{node} in {decoded}");
            }
            // Echoed in this node's own digest (here the stripped message stands for one),
            // the newer life is back in what the peer decodes, and nothing else changed.
            let echoed = chitchat_decodes(&echo_lives(&kept, &lives).expect("a Syn or SynAck")).await;
            let decoded = format!("{echoed:?}");
            for node in ["node1:101:", "node2:5:", "node1:99:"] {
                assert!(decoded.contains(node), "{node} in {decoded}");
            }
            if message[3] == 0 {
                // A Syn: the digest as the peer sent it, in full.
                assert_eq!(echoed, chitchat_decodes(&message).await);
            }
        }
        assert_eq!(echo_lives(&ack(&[node_op(&peer), kv_op("ready", 1)]), &entry(&newer, 9)), None);
        // What is echoed to one peer is bounded, in whole entries.
        let many = [entry(&newer, 9), entry(&id("node1", 102), 1), entry(&id("node1", 103), 1)].concat();
        let one = entry(&newer, 9).len();
        assert_eq!(echo_within(&many, 2 * one + 1), many[..2 * one]);
        assert_eq!(echo_within(&many, many.len()), many);
        assert!(echo_within(&many, one - 1).is_empty());
        // Our own generation in a digest is how peers know us; in a delta, refused (above).
        let mut ours = header(0, 0);
        ours.extend_from_slice(&1u16.to_le_bytes());
        ours.extend(entry(&me, 3));
        ours.extend(cluster_id());
        assert_eq!(check_message(&ours, &me), Ok(Checked::whole(true)));
    }
}
