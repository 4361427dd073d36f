//! Chitchat's transport, authenticated: every datagram is sealed on its way out and checked
//! (seal, address, freshness, content) on its way in, before chitchat decodes a byte of it
//! (wire format and checks: `gossip_wire`).
//!
//! Chitchat 0.13 keeps its message codec private, so this transport borrows chitchat's own
//! UDP socket as the codec: on loopback, a private `codec` socket (chitchat's) and a `tap`
//! socket pass chitchat's messages to each other. Sending, chitchat's socket writes the
//! message to the tap, which seals it and sends it from the public socket; receiving, the
//! public socket opens and checks a datagram, and the tap hands its message to chitchat's
//! socket to decode. One datagram at a time in each direction, so the real sender of each
//! decoded message is known. The tap only takes bytes from the codec socket and the codec
//! only yields messages from the tap; strangers writing to either on loopback are ignored.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport, UdpSocket as ChitchatUdp};
use chitchat::{ChitchatEnvelope, ChitchatId};
use tokio::net::UdpSocket;
use tracing::warn;

use super::gossip_wire::{
    canonical, check_message, empty_ack, open, seal, Checked, Echoes, Reassembly, Reject, ReplayGuard, MAX_DATAGRAM,
};
use crate::keyring::Keyring;

/// Datagrams tracked for replays within the window: far more than a node receives in it.
const REPLAY_CAPACITY: usize = 1 << 18;
/// How long chitchat's codec may take to hand a message over on loopback.
const CODEC_WAIT: Duration = Duration::from_millis(200);
/// At most one log line per reason in this period.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Counts of dropped datagrams, by reason, for `/metrics` (`newer_self`: messages passed on
/// with entries dropped).
#[derive(Default)]
pub struct GossipRejections {
    counts: [AtomicU64; Reject::ALL.len()],
    last_log: Mutex<[Option<Instant>; Reject::ALL.len()]>,
}

impl GossipRejections {
    fn index(reason: Reject) -> usize {
        Reject::ALL.iter().position(|r| *r == reason).expect("every reason is listed")
    }

    pub fn count(&self, reason: Reject) -> u64 {
        self.counts[Self::index(reason)].load(Ordering::Relaxed)
    }

    /// Counts a drop, and logs it unless one of its kind was logged lately.
    fn reject(&self, reason: Reject, from: SocketAddr) {
        let i = Self::index(reason);
        let total = self.counts[i].fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.last_log.lock().unwrap_or_else(|e| e.into_inner());
        if last[i].is_none_or(|at| at.elapsed() >= LOG_EVERY) {
            last[i] = Some(Instant::now());
            if reason == Reject::NewerSelf {
                warn!(
                    %from,
                    reason = reason.as_str(),
                    total,
                    "gossip names this node at a newer generation (a past life started with the clock \
                     ahead, or an impersonator): those entries are ignored"
                );
            } else {
                warn!(%from, reason = reason.as_str(), total, "gossip datagram refused");
            }
        }
    }
}

/// What the public gossip socket sent and received (sealed datagrams, as on the wire, UDP
/// payload bytes), for `/metrics` and the gossip cost benchmark.
#[derive(Default)]
pub struct GossipTraffic {
    sent_bytes: AtomicU64,
    sent_datagrams: AtomicU64,
    received_bytes: AtomicU64,
    received_datagrams: AtomicU64,
}

/// A reading of [`GossipTraffic`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrafficCounts {
    pub sent_bytes: u64,
    pub sent_datagrams: u64,
    pub received_bytes: u64,
    pub received_datagrams: u64,
}

impl GossipTraffic {
    pub fn counts(&self) -> TrafficCounts {
        TrafficCounts {
            sent_bytes: self.sent_bytes.load(Ordering::Relaxed),
            sent_datagrams: self.sent_datagrams.load(Ordering::Relaxed),
            received_bytes: self.received_bytes.load(Ordering::Relaxed),
            received_datagrams: self.received_datagrams.load(Ordering::Relaxed),
        }
    }

    fn sent(&self, bytes: usize) {
        self.sent_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.sent_datagrams.fetch_add(1, Ordering::Relaxed);
    }

    fn received(&self, bytes: usize) {
        self.received_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.received_datagrams.fetch_add(1, Ordering::Relaxed);
    }
}

/// Settings of the authenticated transport.
#[derive(Clone)]
pub struct SecureTransport {
    /// The gossip socket, if it was bound before chitchat started.
    pub bound: Option<Arc<std::net::UdpSocket>>,
    pub keyring: Keyring,
    /// This node's gossip identity: states claiming it are refused.
    pub me: ChitchatId,
    /// Addresses a datagram may be sealed for: this node's advertised and listen addresses,
    /// in canonical form (`gossip_wire::canonical`).
    pub accepted_to: Vec<SocketAddr>,
    /// How far a datagram's send time may be from now (clock skew plus delivery).
    pub window: Duration,
    pub rejections: Arc<GossipRejections>,
    pub traffic: Arc<GossipTraffic>,
}

use crate::clock::unix_ms as now_ms;

#[async_trait]
impl Transport for SecureTransport {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let public = match &self.bound {
            Some(socket) if socket.local_addr().ok() == Some(listen_addr) => {
                let socket = socket.try_clone().context("failed to share the gossip socket")?;
                socket.set_nonblocking(true)?;
                UdpSocket::from_std(socket)?
            }
            _ => UdpSocket::bind(listen_addr)
                .await
                .with_context(|| format!("failed to bind to {listen_addr}/UDP for gossip"))?,
        };
        let codec = ChitchatUdp::open("127.0.0.1:0".parse()?).await?;
        let codec_addr = codec.local_addr()?;
        let tap = UdpSocket::bind("127.0.0.1:0").await.context("failed to bind the gossip codec tap")?;
        let tap_addr = tap.local_addr()?;
        Ok(Box::new(SecureSocket {
            settings: self.clone(),
            public,
            codec,
            codec_addr,
            tap,
            tap_addr,
            guard: ReplayGuard::new(self.window.as_millis() as u64, REPLAY_CAPACITY),
            parts: Reassembly::new(),
            buf: vec![0; MAX_DATAGRAM + 1].into_boxed_slice(),
            in_flight: Default::default(),
            echoes: Echoes::default(),
        }))
    }
}

struct SecureSocket {
    settings: SecureTransport,
    public: UdpSocket,
    codec: ChitchatUdp,
    codec_addr: SocketAddr,
    tap: UdpSocket,
    tap_addr: SocketAddr,
    guard: ReplayGuard,
    parts: Reassembly,
    buf: Box<[u8]>,
    /// Messages handed to the codec and not yet decoded: sender, deadline, datagram size.
    in_flight: std::collections::VecDeque<(SocketAddr, tokio::time::Instant, usize)>,
    /// The newer lives of this node each peer named lately, echoed back to it.
    echoes: Echoes,
}

impl SecureSocket {
    /// Has chitchat's socket encode `envelope`; its bytes.
    async fn encode(&mut self, envelope: ChitchatEnvelope) -> anyhow::Result<Vec<u8>> {
        self.codec.send(self.tap_addr, envelope).await?;
        loop {
            let (n, from) = tokio::time::timeout(CODEC_WAIT, self.tap.recv_from(&mut self.buf))
                .await
                .context("chitchat's codec did not hand over a message")??;
            if from == self.codec_addr {
                return Ok(self.buf[..n].to_vec());
            }
        }
    }

    /// The next datagram that passes every check, with its sender; `Err` only if the socket
    /// is broken.
    async fn next_message(&mut self) -> anyhow::Result<(Vec<u8>, SocketAddr, usize)> {
        loop {
            let (n, from) = match self.public.recv_from(&mut self.buf).await {
                Ok(received) => received,
                Err(err) if is_transient(&err) => continue,
                Err(err) => return Err(err).context("fatal UDP recv error"),
            };
            self.settings.traffic.received(n);
            let datagram = self.buf[..n].to_vec();
            let checked = self.check(&datagram, from);
            match checked {
                Ok(Some(message)) => return Ok((message, from, n)),
                Ok(None) => {}
                Err(reason) => self.settings.rejections.reject(reason, from),
            }
        }
    }

    /// A datagram's chitchat message, once whole (`None`: the other part is still due).
    fn check(&mut self, datagram: &[u8], from: SocketAddr) -> Result<Option<Vec<u8>>, Reject> {
        let opened = open(&self.settings.keyring, datagram)?;
        if !self.settings.accepted_to.contains(&canonical(opened.to)) {
            return Err(Reject::Misdirected);
        }
        let now = now_ms();
        self.guard.check(opened.nonce, opened.sent_at_ms, now)?;
        let Some(message) = self.parts.add(from, opened, now) else { return Ok(None) };
        let Checked { stripped, newer_lives } = check_message(&message, &self.settings.me)?;
        if let Some(lives) = newer_lives {
            self.echoes.note(from, lives, Instant::now());
        }
        match stripped {
            None => Ok(Some(message)),
            Some(stripped) => {
                self.settings.rejections.reject(Reject::NewerSelf, from);
                Ok(Some(stripped))
            }
        }
    }
}

fn is_transient(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        std::io::ErrorKind::OutOfMemory | std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionRefused
    )
}

#[async_trait]
impl Socket for SecureSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.public.local_addr().context("failed to get UDP socket address")
    }

    async fn send(&mut self, to: SocketAddr, envelope: ChitchatEnvelope) -> anyhow::Result<SendOutcome> {
        let message = self.encode(envelope).await?;
        let message = self.echoes.apply(to, message, Instant::now());
        let mut num_bytes_sent = 0;
        for datagram in seal(&self.settings.keyring, &message, to, now_ms()) {
            match self.public.send_to(&datagram, to).await {
                Ok(n) => {
                    num_bytes_sent += n;
                    self.settings.traffic.sent(n);
                }
                // A peer that is gone or unreachable is the failure detector's business.
                Err(err) => warn!(%to, error = %err, "gossip send failed"),
            }
        }
        Ok(SendOutcome { num_bytes_sent })
    }

    /// Cancellation-safe, as chitchat needs (its loop drops a pending `recv` on every gossip
    /// tick): a checked message handed to the codec is remembered in `in_flight` with its
    /// sender, and a later call picks up its decoded form.
    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            if let Some(&(from_addr, deadline, num_bytes_received)) = self.in_flight.front() {
                match tokio::time::timeout_at(deadline, self.codec.recv()).await {
                    Ok(outcome) => {
                        let outcome = outcome?;
                        if outcome.from_addr == self.tap_addr {
                            self.in_flight.pop_front();
                            return Ok(RecvOutcome { from_addr, envelope: outcome.envelope, num_bytes_received });
                        }
                    }
                    // Chitchat refused what the check let through: nothing to hand over.
                    Err(_) => {
                        self.in_flight.pop_front();
                        self.settings.rejections.reject(Reject::Malformed, from_addr);
                    }
                }
                continue;
            }
            let (message, from, n) = self.next_message().await?;
            // Nothing is in flight here, so the order of messages is kept.
            if let Some(envelope) = empty_ack(&message) {
                return Ok(RecvOutcome { from_addr: from, envelope, num_bytes_received: n });
            }
            if let Err(err) = self.tap.send_to(&message, self.codec_addr).await {
                // A loopback hiccup costs this datagram, not the gossip task (gossip repairs).
                warn!(%from, error = %err, "gossip datagram not handed to chitchat's codec");
                continue;
            }
            self.in_flight.push_back((from, tokio::time::Instant::now() + CODEC_WAIT, n));
        }
    }
}
