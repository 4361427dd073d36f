//! The dialing side: one authenticated connection per peer node, opened on first use and
//! reused by every request and stream to that node.
//!
//! A peer that cannot be reached, or that accepts and then stays silent, costs at most one
//! handshake timeout, and only its own callers: each peer has its own slot, and after a
//! failure the slot refuses at once for a back-off that doubles with each failure in a row
//! (up to [`MAX_BACKOFF`]) instead of making every caller wait again.
//!
//! The back-off is owed to one life of the peer: a peer that restarted is dialed at once, not
//! after the back-off its earlier life earned. Why: a node that just came back is a replica and
//! a subscriber again as soon as the ring says so, and what is pushed to it meanwhile would be
//! dropped. A new life shows as a new (address, generation) from gossip, or as the peer dialing
//! this node, or gossip counting it a member again ([`Peers::is_back`]), whichever comes first.
//!
//! A connection is owed to one life of the peer too, and to one stretch of it being reachable:
//! a peer that restarted (a new generation or address) is dialed anew, and one the ring counts
//! dead is let go ([`Peers::forget`]). Why: what was written to a peer across a cut stays
//! unacknowledged in the kernel, retransmitted ever less often (up to two minutes apart), and
//! nothing written after it moves before it does; a connection kept through a partition would
//! hold up every push, call and stream to that peer for that long after the network healed.
//! The sockets themselves ([`tune`]) give up on a peer that acknowledges nothing for
//! [`PEER_SILENCE`] and probe an idle connection, for a cut the ring does not see (gossip
//! getting through where the connection does not) and for the accepting side, which has no
//! ring view of its connections.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::{info, warn};

use super::connection::{Connection, RpcError, RpcLimits};
use super::message::{Request, Response};
use super::noise;
use crate::keyring::Keyring;
use crate::tasks::Tasks;

/// The longest a peer that keeps failing is left alone before it is tried again.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// How long a peer may leave what was written to it unacknowledged, or an idle connection's
/// probes unanswered, before its connection is given up (`TCP_USER_TIMEOUT`, keepalive).
pub const PEER_SILENCE: Duration = Duration::from_secs(15);
/// An idle connection is probed after this long, then every `KEEPALIVE_EVERY`.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(5);
const KEEPALIVE_EVERY: Duration = Duration::from_secs(2);

/// Sets an RPC socket's options, either side's: no Nagle delay, and the [`PEER_SILENCE`]
/// bounds (see the module doc). A failure is logged: the connection works without them.
pub fn tune(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    let sock = socket2::SockRef::from(stream);
    let keepalive = socket2::TcpKeepalive::new().with_time(KEEPALIVE_IDLE).with_interval(KEEPALIVE_EVERY);
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let keepalive =
        keepalive.with_retries(((PEER_SILENCE - KEEPALIVE_IDLE).as_secs() / KEEPALIVE_EVERY.as_secs()) as u32);
    if let Err(err) = sock.set_tcp_keepalive(&keepalive) {
        warn!(error = %err, "cannot probe an idle RPC connection; a dead peer is noticed later");
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Err(err) = sock.set_tcp_user_timeout(Some(PEER_SILENCE)) {
        warn!(error = %err, "cannot bound an RPC connection's unacknowledged writes; a cut peer is noticed later");
    }
}

/// How the dialer reaches its peers.
#[derive(Debug, Clone)]
pub struct DialSettings {
    /// This node's id, bound into every handshake.
    pub node_id: String,
    pub keyring: Keyring,
    /// Connecting and the handshake, each.
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
    pub limits: RpcLimits,
}

/// Where a peer is, as gossip knows it: its RPC address in its current life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAt {
    pub addr: SocketAddr,
    /// The peer's gossip generation (new at every start).
    pub generation: u64,
}

#[derive(Default)]
struct SlotState {
    /// The connection, and the life of the peer it was dialed to.
    conn: Option<(Arc<Connection>, PeerAt)>,
    /// Failures in a row, and until when the peer is left alone.
    failures: u32,
    retry_at: Option<Instant>,
    /// The life of the peer the failures were against; a dial to another goes ahead.
    failed_at: Option<PeerAt>,
    last_error: String,
}

/// One peer's connection. Its state is behind a plain lock, never held across an await, so
/// that the ring's word ([`Peers::forget`], [`Peers::is_back`]) always takes effect; dialing
/// is serialised by an async lock of its own.
#[derive(Default)]
struct SlotInner {
    state: Mutex<SlotState>,
    dialing: tokio::sync::Mutex<()>,
}

type Slot = Arc<SlotInner>;

impl SlotInner {
    fn state(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The open connection to the peer's life `at`, if any. One to an earlier life of the
    /// peer (it restarted or moved) is closed; a caller whose view of the ring is older than
    /// the connection is refused rather than let it tear down the connection to the new life.
    fn open_to(&self, node_id: &str, at: PeerAt) -> Result<Option<Arc<Connection>>, RpcError> {
        let mut state = self.state();
        let Some((conn, dialed_at)) = state.conn.as_ref().filter(|(c, _)| !c.is_closed()) else { return Ok(None) };
        if *dialed_at == at {
            return Ok(Some(conn.clone()));
        }
        if at.generation < dialed_at.generation {
            let reason = format!("asked for its life {}, it is in life {} now", at.generation, dialed_at.generation);
            return Err(RpcError::Connect { peer: format!("{node_id} ({})", at.addr), reason });
        }
        info!(peer = node_id, addr = %at.addr, "peer restarted or moved: its old connection is closed");
        conn.close();
        state.conn = None;
        Ok(None)
    }
}

pub struct Peers {
    settings: DialSettings,
    /// Node id → its connection slot. The slot's async lock serialises dialing one peer
    /// without holding up calls to the others.
    slots: Mutex<HashMap<String, Slot>>,
    /// The tasks of every connection dialed; [`Peers::shutdown`] closes them all, a
    /// connection a dial still in flight opens afterwards too.
    tasks: Tasks,
}

impl Peers {
    pub fn new(settings: DialSettings) -> Self {
        Self { settings, slots: Mutex::new(HashMap::new()), tasks: Tasks::default() }
    }

    /// The live connection to `node_id` at `at`, dialing (and authenticating) if needed.
    pub async fn connection(&self, node_id: &str, at: PeerAt) -> Result<Arc<Connection>, RpcError> {
        let slot = self.slot(node_id);
        if let Some(conn) = slot.open_to(node_id, at)? {
            return Ok(conn);
        }
        let _dialing = slot.dialing.lock().await;
        // Dialed meanwhile by the caller that held the lock.
        if let Some(conn) = slot.open_to(node_id, at)? {
            return Ok(conn);
        }
        let addr = at.addr;
        let peer = format!("{node_id} ({addr})");
        {
            let mut state = slot.state();
            if let Some(until) = state.retry_at.filter(|until| *until > Instant::now() && state.failed_at == Some(at)) {
                let reason = format!("backing off for {:?} after: {}", until - Instant::now(), state.last_error);
                return Err(RpcError::Connect { peer, reason });
            }
            if state.failed_at != Some(at) {
                state.failures = 0; // a new life starts with the first back-off
            }
        }
        let dialed = self.dial(node_id, addr).await;
        let mut state = slot.state();
        match dialed {
            Ok(conn) => {
                info!(peer = node_id, %addr, "RPC connection open");
                *state = SlotState { conn: Some((conn.clone(), at)), ..SlotState::default() };
                Ok(conn)
            }
            Err(reason) => {
                state.failures = state.failures.saturating_add(1);
                let backoff =
                    FIRST_BACKOFF.saturating_mul(1 << state.failures.min(5).saturating_sub(1)).min(MAX_BACKOFF);
                state.retry_at = Some(Instant::now() + backoff);
                state.failed_at = Some(at);
                state.last_error = reason.clone();
                warn!(peer = node_id, %addr, error = %reason, ?backoff, "cannot reach peer");
                Err(RpcError::Connect { peer, reason })
            }
        }
    }

    fn slot(&self, node_id: &str) -> Slot {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).entry(node_id.to_owned()).or_default().clone()
    }

    /// `node_id` is up (it proved who it is on a connection it opened, or gossip counts it a
    /// member again after it was not: a restart, a partition healed), so a back-off earned by
    /// failed dials ends. A dial under way goes on; if it fails, it earns a back-off anew.
    pub fn is_back(&self, node_id: &str) {
        let Some(slot) = self.known_slot(node_id) else { return };
        let mut state = slot.state();
        state.retry_at = None;
        state.failures = 0;
    }

    /// The ring counts the life `generation` of `node_id` dead (it died, left, or restarted
    /// as a new one): a connection to that life is closed, and the next use dials
    /// anew (see the module doc). A connection to another life (the new one, dialed as soon
    /// as it was known) is left alone. A dial under way is too: one that completes only
    /// after a heal carries nothing from before it.
    pub fn forget(&self, node_id: &str, generation: u64) {
        let Some(slot) = self.known_slot(node_id) else { return };
        let taken = slot.state().conn.take_if(|(_, at)| at.generation == generation);
        if let Some((conn, _)) = taken.filter(|(c, _)| !c.is_closed()) {
            info!(peer = node_id, generation, "peer's life left the ring: its connection is closed");
            conn.close();
        }
    }

    /// `node_id`'s slot, if it was ever dialed.
    fn known_slot(&self, node_id: &str) -> Option<Slot> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).get(node_id).cloned()
    }

    async fn dial(&self, node_id: &str, addr: SocketAddr) -> Result<Arc<Connection>, String> {
        let s = &self.settings;
        let mut stream = tokio::time::timeout(s.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| "connect timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        tune(&stream);
        let channel = noise::dial(&mut stream, &s.keyring, &s.node_id, node_id, s.handshake_timeout)
            .await
            .map_err(|err| format!("handshake: {err}"))?;
        Ok(Connection::spawn(stream, channel, None, s.limits, &self.tasks))
    }

    /// A request to `node_id`, under one deadline for dialing, the handshake and the answer.
    pub async fn call(
        &self,
        node_id: &str,
        at: PeerAt,
        request: Request,
        timeout: Duration,
    ) -> Result<Response, RpcError> {
        let started = Instant::now();
        let conn = tokio::time::timeout(timeout, self.connection(node_id, at))
            .await
            .map_err(|_| RpcError::Timeout { peer: node_id.to_owned(), timeout })??;
        conn.call(request, timeout.saturating_sub(started.elapsed())).await
    }

    /// Closes every connection and waits until their tasks have ended.
    pub async fn shutdown(&self) {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.tasks.shutdown().await;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::rpc::connection::RpcHandler;
    use crate::rpc::{Push, RpcStream, StreamOpen};
    use futures_util::future::BoxFuture;

    pub(crate) const SECRET: &str = "the-cluster-secret-1";

    pub(crate) fn settings(node_id: &str) -> DialSettings {
        DialSettings {
            node_id: node_id.into(),
            keyring: Keyring::single(SECRET),
            connect_timeout: Duration::from_secs(1),
            handshake_timeout: Duration::from_millis(500),
            limits: crate::rpc::RpcLimits::default(),
        }
    }

    /// Answers every request with its peer's name.
    pub(crate) struct Echo;
    impl RpcHandler for Echo {
        fn request(&self, peer: &str, _: Request) -> BoxFuture<'static, Response> {
            Box::pin(std::future::ready(Response::Failed(format!("hello {peer}"))))
        }
        fn stream(&self, _: &str, _: StreamOpen, _: RpcStream) -> BoxFuture<'static, ()> {
            Box::pin(std::future::ready(()))
        }
        fn push(&self, _: &str, _: Push) {}
    }

    /// A peer serving [`Echo`] on `tasks` until they shut down.
    async fn serving_peer(node_id: &'static str, tasks: &Tasks) -> PeerAt {
        serve_on(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(), node_id, tasks)
    }

    fn serve_on(listener: tokio::net::TcpListener, node_id: &'static str, tasks: &Tasks) -> PeerAt {
        let addr = listener.local_addr().unwrap();
        let served = tasks.clone();
        tasks.spawn_until_stopped(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let keys = Keyring::single(SECRET);
                if let Ok(channel) = noise::accept(&mut stream, &keys, node_id, Duration::from_secs(1)).await {
                    Connection::spawn(stream, channel, Some(Arc::new(Echo)), crate::rpc::RpcLimits::default(), &served);
                }
            }
        });
        PeerAt { addr, generation: 1 }
    }

    fn history() -> Request {
        Request::History { nsp: "/chat".into(), room: "lobby".into() }
    }

    #[tokio::test]
    async fn a_silent_peer_costs_one_handshake_timeout_then_fails_at_once() {
        // Accepts connections and never says a word.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent_addr = PeerAt { addr: silent.local_addr().unwrap(), generation: 1 };
        let servers = Tasks::default();
        servers.spawn_until_stopped(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = silent.accept().await {
                held.push(stream);
            }
        });
        let good = serving_peer("node3", &servers).await;
        let peers = Arc::new(Peers::new(settings("node1")));

        let started = Instant::now();
        let stuck = tokio::spawn({
            let peers = peers.clone();
            async move { peers.call("node2", silent_addr, history(), Duration::from_secs(10)).await }
        });
        // Meanwhile, calls to another peer are not held up by it.
        let answer = peers.call("node3", good, history(), Duration::from_secs(5)).await.unwrap();
        assert_eq!(answer, Response::Failed("hello node1".into()), "the peer sees the dialer's proven id");
        assert!(!stuck.is_finished(), "the silent peer's handshake is still pending");

        let err = stuck.await.unwrap().unwrap_err();
        assert!(err.to_string().contains("handshake timed out"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2), "one handshake timeout, not the call's deadline");
        // Remembered: the next call fails at once, saying why.
        let again = Instant::now();
        let err = peers.call("node2", silent_addr, history(), Duration::from_secs(10)).await.unwrap_err();
        assert!(err.to_string().contains("backing off"), "{err}");
        assert!(again.elapsed() < Duration::from_millis(100));
        peers.shutdown().await;
        servers.shutdown().await;
    }

    #[tokio::test]
    async fn a_peer_that_is_not_who_we_dialed_fails_the_handshake() {
        // "node3" answers at the address we believe is node2's: the hello names node2.
        let servers = Tasks::default();
        let imposter = serving_peer("node3", &servers).await;
        let peers = Peers::new(settings("node1"));
        let err = peers.call("node2", imposter, history(), Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(err, RpcError::Connect { .. }), "{err}");
        servers.shutdown().await;
    }

    #[tokio::test]
    async fn a_restarted_peer_is_dialed_at_once_not_after_its_earlier_lifes_back_off() {
        let servers = Tasks::default();
        let gone = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = gone.local_addr().unwrap();
        drop(gone);
        let peers = Peers::new(settings("node1"));
        let first_life = PeerAt { addr, generation: 1 };
        let err = peers.call("node2", first_life, history(), Duration::from_secs(5)).await.unwrap_err();
        assert!(!err.to_string().contains("backing off"), "the first dial is tried: {err}");
        // Back at the same address, in a new life.
        let back = serve_on(tokio::net::TcpListener::bind(addr).await.unwrap(), "node2", &servers);
        let err = peers.call("node2", first_life, history(), Duration::from_secs(5)).await.unwrap_err();
        assert!(err.to_string().contains("backing off"), "the same life is left alone: {err}");
        let second_life = PeerAt { generation: 2, ..back };
        let answer = peers.call("node2", second_life, history(), Duration::from_secs(5)).await.unwrap();
        assert_eq!(answer, Response::Failed("hello node1".into()));
        peers.shutdown().await;
        servers.shutdown().await;
    }

    #[tokio::test]
    async fn a_peer_that_dials_us_ends_its_back_off() {
        let servers = Tasks::default();
        let gone = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = PeerAt { addr: gone.local_addr().unwrap(), generation: 1 };
        drop(gone);
        let peers = Peers::new(settings("node1"));
        peers.call("node2", at, history(), Duration::from_secs(5)).await.unwrap_err();
        serve_on(tokio::net::TcpListener::bind(at.addr).await.unwrap(), "node2", &servers);
        let err = peers.call("node2", at, history(), Duration::from_secs(5)).await.unwrap_err();
        assert!(err.to_string().contains("backing off"), "{err}");
        peers.is_back("node2");
        let answer = peers.call("node2", at, history(), Duration::from_secs(5)).await.unwrap();
        assert_eq!(answer, Response::Failed("hello node1".into()));
        peers.shutdown().await;
        servers.shutdown().await;
    }

    #[tokio::test]
    async fn a_connection_serves_one_life_of_its_peer_and_is_let_go_when_the_ring_forgets_it() {
        let servers = Tasks::default();
        let at = serving_peer("node2", &servers).await;
        let peers = Peers::new(settings("node1"));
        let first = peers.connection("node2", at).await.unwrap();
        assert!(Arc::ptr_eq(&first, &peers.connection("node2", at).await.unwrap()), "reused within a life");

        let restarted = PeerAt { generation: 2, ..at };
        let second = peers.connection("node2", restarted).await.unwrap();
        assert!(first.is_closed(), "the connection to the peer's earlier life is closed");
        assert!(!Arc::ptr_eq(&first, &second));
        let Err(err) = peers.connection("node2", at).await else { panic!("an earlier life was dialed") };
        assert!(err.to_string().contains("in life 2 now"), "{err}");
        assert!(!second.is_closed(), "a caller with an older view does not close the new life's connection");

        peers.forget("node2", 1);
        assert!(!second.is_closed(), "the end of the peer's earlier life leaves its new life's connection open");
        // As though another caller were dialing the peer: the ring's word is not put off.
        let slot = peers.known_slot("node2").unwrap();
        let dialing = slot.dialing.lock().await;
        peers.forget("node2", 2);
        assert!(second.is_closed(), "a peer the ring forgets is let go");
        drop(dialing);
        let third = peers.connection("node2", restarted).await.unwrap();
        assert!(!third.is_closed() && !Arc::ptr_eq(&second, &third), "and dialed anew when asked for again");
        assert_eq!(
            third.call(history(), Duration::from_secs(5)).await.unwrap(),
            Response::Failed("hello node1".into())
        );
        peers.forget("node3", 1); // never dialed: nothing to do
        peers.shutdown().await;
        servers.shutdown().await;
    }
}
