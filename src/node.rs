//! A chat node: the Socket.IO server with the `/chat` namespace, the page, the HTTP server
//! and, in a cluster, gossip membership and the RPC listener.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, Instrument};

use crate::admin::Admin;
use crate::cluster::history::ClusterHistory;
use crate::cluster::membership::{GossipConfig, Membership};
use crate::cluster::rooms::ClusterRooms;
use crate::cluster::router::{peer_handler, Cluster, Router};
use crate::config::{ClusterSettings, ConfigError, NodeConfig};
use crate::engineio::{Engine, EngineConfig};
use crate::history::disk::{Disk, DiskError, Writer};
use crate::history::{History, HistoryHandle, HistoryStore, LocalHistory};
use crate::http::{EdgePolicy, HttpState};
use crate::io_threads::IoThreads;
use crate::logging::node_span;
use crate::metrics::{ClusterSources, Metrics, Sources};
use crate::rpc::listener::ListenSettings;
use crate::rpc::peers::{DialSettings, Peers};
use crate::rpc::stats::RpcStats;
use crate::rpc::{Request, Response, RpcLimits};
use crate::server::{ConnectionLimits, Server};
use crate::socketio::{Namespace, SocketIo};

/// The Engine.IO path of the chat, as socket.io clients expect it.
pub const ENGINE_PATH: &str = "/socket.io/";

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("a node needs at least one service")]
    NoService,
    #[error("cannot join the gossip ring: {0}")]
    Gossip(anyhow::Error),
    #[error("left the cluster because its gossip failed: {0}")]
    GossipDown(String),
    #[error("room history: {0}")]
    History(#[from] DiskError),
    #[error("cannot start the connection threads: {0}")]
    Threads(std::io::Error),
}

/// Where a started node listens, as `clusterchat node --ready-file` writes it: a supervisor or
/// a test that gave port 0 learns the ports the OS chose, and the file's appearance says the
/// node serves (it is written once the node is ready, and removed when it exits).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Listening {
    pub node_id: String,
    /// The HTTP listener (the page, Engine.IO, `/ready`, `/metrics`).
    pub http: SocketAddr,
    /// The separate `/metrics` listener, with `metrics_listen`.
    pub metrics: Option<SocketAddr>,
    /// The gossip address peers reach the node at: what other nodes take as `--seed`.
    pub gossip: Option<SocketAddr>,
    /// The RPC listener, in a cluster.
    pub rpc: Option<SocketAddr>,
}

impl Listening {
    /// Writes `self` as one JSON document at `path`, through a temporary file renamed over
    /// it, so a reader never sees half a file.
    pub fn write_to(&self, path: &std::path::Path) -> std::io::Result<()> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let json = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, json)?;
        std::fs::rename(&tmp, path)
    }
}

/// One Engine.IO endpoint a node serves: the engine at `path`, and the Socket.IO namespaces
/// on it whose rooms span the cluster (none for a bare Engine.IO handler), and the handle
/// through which its application reaches room history, if it keeps any (the node sets it
/// once it knows whether it runs alone or in a cluster).
pub struct Service {
    pub path: String,
    pub engine: Arc<Engine>,
    pub namespaces: Vec<Arc<Namespace>>,
    /// The Admin UI's side of this service's Socket.IO server, with `[admin]`.
    pub admin: Option<Arc<Admin>>,
    pub history: Option<Arc<HistoryHandle>>,
}

impl Service {
    /// The chat: Socket.IO with the `/chat` namespace at [`ENGINE_PATH`]. Fails when
    /// `[auth]` names a key that cannot be read.
    pub fn chat(config: &NodeConfig) -> Result<Self, NodeError> {
        let node_id: Arc<str> = config.node_id.as_str().into();
        let jwt = config.auth.jwt.as_ref().map(|jwt| jwt.verifier()).transpose().map_err(ConfigError::from)?;
        let history = Arc::new(HistoryHandle::default());
        let chat = crate::chat::namespace(node_id.clone(), config.chat.clone(), jwt, history.clone());
        let admin = config.admin.clone().map(|a| Admin::new(a, node_id)).transpose().map_err(ConfigError::Invalid)?;
        let namespaces = [Some(chat), admin.as_ref().map(Admin::namespace)].into_iter().flatten().collect();
        let io = SocketIo::new(config.engine.socketio(), namespaces);
        let service = Self::socketio(ENGINE_PATH, config.engine.engine(), io.clone());
        if let Some(admin) = &admin {
            admin.attach(&io, &service.engine);
        }
        Ok(Self { admin, history: Some(history), ..service })
    }

    pub fn socketio(path: &str, config: EngineConfig, io: Arc<SocketIo>) -> Self {
        let namespaces = io.namespaces().cloned().collect();
        Self { path: path.to_owned(), engine: Engine::new(config, io), namespaces, admin: None, history: None }
    }
}

/// Waits (at most `limit`) until gossip has brought the state of every seed, so the first
/// clients this node takes are placed and routed knowing the ring, and their rooms subscribed
/// on every member (a join asks only the members its node knows). A seed named by a host name
/// counts as every address it resolves to (a Kubernetes headless service names every pod),
/// this node's own excepted. A seed that is down only delays readiness by `limit`.
async fn meet_the_ring(membership: &Membership, seeds: &[String], me: SocketAddr, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    let mut wanted = std::collections::HashSet::new();
    for seed in seeds {
        match tokio::time::timeout_at(deadline, tokio::net::lookup_host(seed.as_str())).await {
            Ok(Ok(addrs)) => wanted.extend(addrs.filter(|a| *a != me)),
            Ok(Err(err)) => tracing::warn!(seed, error = %err, "cannot resolve seed"),
            Err(_) => tracing::warn!(seed, "resolving seed timed out"),
        }
    }
    let mut members = membership.subscribe();
    let met =
        members.wait_for(|m| wanted.iter().all(|addr| m.nodes.values().any(|n| n.gossip == *addr && n.rpc.is_some())));
    if tokio::time::timeout_at(deadline, met).await.is_err() {
        tracing::warn!(?limit, ?seeds, "not every seed heard from; serving while the ring forms");
    }
}

/// Waits (at most `limit`) until every member this node knows knows it too, in this life
/// (`Request::Knows`, asked again each `step`). Why: a member that does not know this node yet
/// neither asks it when a room's first member joins there nor waits for its pushes when it
/// runs a barrier before handing a parked session's replay to a restore; a client served here
/// meanwhile could publish into that gap, and a restored client elsewhere miss it (one miss in
/// 6,713 recoveries of the long crash test, a message sent 64 ms after its node restarted).
/// A member that stays silent (dead, not yet declared so) only delays readiness by `limit`.
async fn be_known_by_the_ring(cluster: &Cluster, me: &str, limit: Duration, step: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    let Some(generation) = cluster.membership.members().get(me).map(|m| m.generation) else { return };
    let mut known = std::collections::HashSet::new();
    loop {
        let members = cluster.membership.members();
        let asks = members
            .nodes
            .values()
            .filter(|m| m.node_id != me && !known.contains(&m.node_id))
            .filter_map(|m| Some((m.node_id.clone(), m.dial()?)))
            .map(|(node, at)| async move {
                let answer = cluster.peers.call(&node, at, Request::Knows { generation }, step).await;
                (node, matches!(answer, Ok(Response::Kept(true))))
            });
        let answers = futures_util::future::join_all(asks).await;
        if answers.is_empty() {
            return;
        }
        known.extend(answers.into_iter().filter(|(_, yes)| *yes).map(|(node, _)| node));
        let now = tokio::time::Instant::now();
        if now >= deadline {
            let unknown: Vec<_> = members.nodes.keys().filter(|n| *n != me && !known.contains(*n)).collect();
            tracing::warn!(?limit, ?unknown, "not every member knows this node yet; serving all the same");
            return;
        }
        tokio::time::sleep(step.min(deadline - now)).await;
    }
}

fn all_namespaces(services: &[Service]) -> Vec<Arc<Namespace>> {
    services.iter().flat_map(|s| s.namespaces.iter().cloned()).collect()
}

/// How long a leaving node waits for its parked sessions, and then its rooms' history, to
/// reach their new keepers.
const HAND_OVER_LIMIT: Duration = Duration::from_secs(5);
/// Gossip rounds a leaving node keeps gossiping after it says it is not ready (three: one
/// round reaches a few peers, and those pass it on).
const LEAVE_ROUNDS: u32 = 3;

/// This node's room history: its copies, and the thread saving them (with `history.dir`).
struct NodeHistory {
    store: Arc<HistoryStore>,
    writer: Option<Writer>,
}

/// The store of `chat.history_len` × `chat.history_rooms`, loaded from `history.dir` if set;
/// `None` if history is off.
async fn open_history(config: &NodeConfig) -> Result<Option<NodeHistory>, NodeError> {
    let Some(store) = HistoryStore::new(config.chat.history_len, config.chat.history_rooms).map(Arc::new) else {
        return Ok(None);
    };
    let Some(dir) = config.history.dir.clone() else { return Ok(Some(NodeHistory { store, writer: None })) };
    let (loading, rooms) = (store.clone(), config.chat.history_rooms);
    let span = tracing::Span::current(); // the node's, for the log lines of the load
    let opened = tokio::task::spawn_blocking(move || span.in_scope(|| Disk::open(&dir, &loading, rooms))).await;
    let (disk, _opened) = opened.map_err(|err| DiskError::Open {
        path: config.history.dir.clone().unwrap_or_default(),
        reason: err.to_string(),
    })??;
    let writer = Writer::start(disk, &store);
    Ok(Some(NodeHistory { store, writer: Some(writer) }))
}

/// A running node.
pub struct Node {
    node_id: Arc<str>,
    /// Cancelled to make the node leave (see [`Node::wait`]).
    stop: CancellationToken,
    drain: Duration,
    state: Arc<HttpState>,
    server: Server,
    /// Where `server`'s connections run (none: on the main runtime); stopped last.
    io_threads: Option<Arc<IoThreads>>,
    /// `/metrics` on a listener of its own (`metrics_listen`), off the public port.
    metrics_server: Option<Server>,
    engine: Arc<Engine>,
    cluster: Option<RunningCluster>,
    /// The Admin UI's side, whose per-UI tasks stop with the node.
    admin: Option<Arc<Admin>>,
    history: Option<NodeHistory>,
    span: tracing::Span,
}

struct RunningCluster {
    cluster: Arc<Cluster>,
    /// The gossip round (see the leave in [`Node::wait`]).
    gossip_interval: Duration,
    gossip_advertise: SocketAddr,
    rooms: Arc<ClusterRooms>,
    history: Option<Arc<ClusterHistory>>,
    rpc_addr: SocketAddr,
    rpc_stop: CancellationToken,
    rpc_task: tokio::task::JoinHandle<()>,
}

impl Node {
    /// Validates the configuration, binds the listeners, joins the cluster (if configured)
    /// and starts serving. The node advertises itself ready once it serves HTTP.
    pub async fn start(config: NodeConfig) -> Result<Self, NodeError> {
        let chat = Service::chat(&config)?;
        Self::start_with(config, vec![chat]).await
    }

    /// Starts a node serving `services` (the first one is [`Node::engine`]) instead of the chat.
    pub async fn start_with(config: NodeConfig, services: Vec<Service>) -> Result<Self, NodeError> {
        config.validate()?;
        let span = node_span(&config.node_id);
        Self::start_in(config, services, span.clone()).instrument(span).await
    }

    async fn start_in(config: NodeConfig, services: Vec<Service>, span: tracing::Span) -> Result<Self, NodeError> {
        let node_id: Arc<str> = config.node_id.as_str().into();
        let engine = services.first().map(|s| s.engine.clone()).ok_or(NodeError::NoService)?;
        let admin = services.iter().find_map(|s| s.admin.clone());
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr).await.map_err(|source| NodeError::Bind { addr, source })
        };
        let http = bind(config.http).await?;
        let http_addr = http.local_addr().map_err(|source| NodeError::Bind { addr: config.http, source })?;
        let metrics_listener = match config.metrics_listen {
            Some(addr) => Some((bind(addr).await?, addr)),
            None => None,
        };

        let handles: Vec<Arc<HistoryHandle>> = services.iter().filter_map(|s| s.history.clone()).collect();
        // Only services that keep history (the chat) make a node open its store.
        let history = if handles.is_empty() { None } else { open_history(&config).await? };
        let set_history = |layer: Arc<dyn History>| handles.iter().for_each(|h| h.set(layer.clone()));
        let (routers, cluster) = match &config.cluster {
            None => {
                if let Some(h) = &history {
                    set_history(Arc::new(LocalHistory::new(h.store.clone())));
                }
                let routers =
                    services.iter().map(|s| (s.path.clone(), Router::local(node_id.clone(), s.engine.clone())));
                (routers.collect(), None)
            }
            Some(c) => {
                let keyring = c.keyring(config.http)?;
                let rpc = bind(c.rpc).await?;
                let rpc_addr = rpc.local_addr().map_err(|source| NodeError::Bind { addr: c.rpc, source })?;
                let rpc_advertise = ClusterSettings::advertised("rpc", c.rpc_advertise, rpc_addr)?;
                let http_advertise = ClusterSettings::advertised("http", c.http_advertise, http_addr)?;
                // Bound here, like the HTTP and RPC listeners, so port 0 gets a port from the OS.
                let gossip_socket = std::net::UdpSocket::bind(c.gossip)
                    .and_then(|s| s.local_addr().map(|addr| (s, addr)))
                    .map_err(|source| NodeError::Bind { addr: c.gossip, source })?;
                let (gossip_socket, gossip_addr) = (Arc::new(gossip_socket.0), gossip_socket.1);
                let gossip_advertise = ClusterSettings::advertised("gossip", c.gossip_advertise, gossip_addr)?;
                let gossip = GossipConfig {
                    node_id: config.node_id.clone(),
                    cluster_id: c.cluster_id.clone(),
                    listen: gossip_addr,
                    socket: Some(gossip_socket),
                    advertise: gossip_advertise,
                    seeds: c.seeds.clone(),
                    interval: Duration::from_millis(c.gossip_interval_ms),
                    phi_threshold: c.phi_threshold,
                    member_grace: Duration::from_millis(c.member_grace_ms),
                    compress_digest: c.gossip_compress_digest,
                    tombstone_grace: Duration::from_millis(c.gossip_tombstone_ms),
                    keyring: keyring.clone(),
                    max_clock_skew: Duration::from_millis(c.gossip_max_clock_skew_ms),
                };
                let membership = Arc::new(
                    Membership::start(gossip, http_advertise, rpc_advertise).await.map_err(NodeError::Gossip)?,
                );
                let limits = RpcLimits {
                    max_queued_bytes: c.rpc_max_queued_bytes,
                    max_calls: c.rpc_max_calls,
                    max_served: c.rpc_max_served,
                };
                let handshake_timeout = Duration::from_millis(c.rpc_handshake_timeout_ms);
                let peers = Arc::new(Peers::new(DialSettings {
                    node_id: config.node_id.clone(),
                    keyring: keyring.clone(),
                    connect_timeout: Duration::from_millis(c.rpc_connect_timeout_ms),
                    handshake_timeout,
                    limits,
                }));
                let rpc_timeout = c.rpc_timeout(&config.engine);
                let rooms = ClusterRooms::new(
                    config.node_id.clone(),
                    membership.clone(),
                    peers.clone(),
                    all_namespaces(&services),
                    rpc_timeout,
                );
                let cluster_history = history.as_ref().map(|h| {
                    let layer = ClusterHistory::new(
                        config.node_id.clone(),
                        membership.clone(),
                        rooms.clone(),
                        h.store.clone(),
                        rpc_timeout,
                    );
                    set_history(layer.clone());
                    layer
                });
                let rpc_stats = Arc::new(RpcStats::default());
                let metrics = Metrics::new(Sources {
                    engine: engine.clone(),
                    namespaces: all_namespaces(&services),
                    history: history.as_ref().map(|h| h.store.clone()),
                    cluster: Some(ClusterSources {
                        membership: membership.clone(),
                        rooms: rooms.clone(),
                        history: cluster_history.clone(),
                        rpc: rpc_stats.clone(),
                    }),
                });
                let cluster = Arc::new(Cluster { membership, peers, rpc_timeout, metrics });
                let routers = services
                    .iter()
                    .map(|s| {
                        (s.path.clone(), Router::clustered(node_id.clone(), &s.path, s.engine.clone(), cluster.clone()))
                    })
                    .collect();
                if let Some(admin) = &admin {
                    admin.join_cluster(&cluster.membership, &cluster.peers, rpc_timeout);
                }
                let handler = peer_handler(
                    services.iter().map(|s| (s.path.clone(), s.engine.clone())).collect(),
                    rooms.clone(),
                    cluster_history.clone(),
                    rpc_stats.clone(),
                    admin.clone(),
                );
                let rpc_stop = CancellationToken::new();
                let listen = ListenSettings {
                    node_id: config.node_id.clone(),
                    keyring,
                    handshake_timeout,
                    max_handshakes: c.rpc_max_handshakes,
                    limits,
                    dialer: cluster.peers.clone(),
                };
                let rpc_task = tokio::spawn(
                    crate::rpc::listener::serve(rpc, listen, handler, rpc_stats, rpc_stop.clone()).in_current_span(),
                );
                let running = RunningCluster {
                    cluster,
                    gossip_interval: Duration::from_millis(c.gossip_interval_ms),
                    gossip_advertise,
                    rooms,
                    history: cluster_history,
                    rpc_addr,
                    rpc_stop,
                    rpc_task,
                };
                (routers, Some(running))
            }
        };
        let metrics = match &cluster {
            Some(c) => c.cluster.metrics.clone(),
            None => Metrics::new(Sources {
                engine: engine.clone(),
                namespaces: all_namespaces(&services),
                history: history.as_ref().map(|h| h.store.clone()),
                cluster: None,
            }),
        };
        let state = Arc::new(HttpState {
            node_id: node_id.clone(),
            metrics: Some(metrics),
            engines: routers,
            membership: cluster.as_ref().map(|c| c.cluster.membership.clone()),
            web_dir: Some(config.web_dir.clone()),
            admin_dir: config.admin.as_ref().map(|a| a.ui_dir.clone()),
            policy: EdgePolicy::from_config(&config),
            draining: Default::default(),
            tasks: TaskTracker::new(),
        });
        // Clients wait in the listen backlog until the node knows the ring: a node that took
        // sessions before would place them on itself and subscribe their rooms nowhere.
        if let (Some(c), Some(settings)) = (&cluster, &config.cluster) {
            if !settings.seeds.is_empty() {
                let limit = Duration::from_millis(settings.gossip_interval_ms * 20);
                meet_the_ring(&c.cluster.membership, &settings.seeds, c.gossip_advertise, limit).await;
                let step = Duration::from_millis(settings.gossip_interval_ms);
                be_known_by_the_ring(&c.cluster, &node_id, limit, step).await;
            }
        }
        // None: the main runtime serves the connections.
        let io_threads = match config.io_thread_count() {
            0 => None,
            n => Some(IoThreads::start(n).map(Arc::new).map_err(NodeError::Threads)?),
        };
        let server = Server::start_on(http, state.clone(), ConnectionLimits::from_config(&config), io_threads.clone())
            .map_err(|source| NodeError::Bind { addr: config.http, source })?;
        let metrics_server = match metrics_listener {
            Some((listener, addr)) => Some(
                Server::start(listener, Arc::new(state.metrics_only()))
                    .map_err(|source| NodeError::Bind { addr, source })?,
            ),
            None => None,
        };
        if let Some(c) = &cluster {
            c.cluster.membership.set_ready(true).await;
        }
        let drain = Duration::from_millis(config.drain_ms);
        let stop = CancellationToken::new();
        Ok(Self {
            node_id,
            stop,
            drain,
            state,
            server,
            io_threads,
            metrics_server,
            engine,
            cluster,
            admin,
            history,
            span,
        })
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The `/metrics` listener's address, when `metrics_listen` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_server.as_ref().map(Server::local_addr)
    }

    /// The gossip address peers reach this node at (its seed address), in a cluster.
    pub fn gossip_addr(&self) -> Option<SocketAddr> {
        self.cluster.as_ref().map(|c| c.gossip_advertise)
    }

    /// The RPC listener's address, in a cluster.
    pub fn rpc_addr(&self) -> Option<SocketAddr> {
        self.cluster.as_ref().map(|c| c.rpc_addr)
    }

    /// Every address the node listens at (the ports the OS chose for port 0).
    pub fn listening(&self) -> Listening {
        Listening {
            node_id: self.node_id.to_string(),
            http: self.http_addr(),
            metrics: self.metrics_addr(),
            gossip: self.gossip_addr(),
            rpc: self.rpc_addr(),
        }
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub fn membership(&self) -> Option<&Arc<Membership>> {
        self.cluster.as_ref().map(|c| &c.cluster.membership)
    }

    /// The cluster rooms (subscriber table, pushes and their counters), in a cluster.
    pub fn rooms(&self) -> Option<&Arc<ClusterRooms>> {
        self.cluster.as_ref().map(|c| &c.rooms)
    }

    /// The replicated room history, in a cluster that keeps history.
    pub fn history(&self) -> Option<&Arc<ClusterHistory>> {
        self.cluster.as_ref().and_then(|c| c.history.as_ref())
    }

    /// This node's copies of room histories, if it keeps history.
    pub fn history_store(&self) -> Option<&Arc<HistoryStore>> {
        self.history.as_ref().map(|h| &h.store)
    }

    /// Cancelling it makes the node leave, as [`Node::shutdown`] does.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Leaves gracefully and stops; see [`Node::wait`].
    pub async fn shutdown(self) {
        self.stop.cancel();
        if let Err(err) = self.wait().await {
            tracing::warn!(error = %err, "the node had failed before it was stopped");
        }
    }

    /// Runs until the shutdown token is cancelled, then leaves in order: `/ready` fails and
    /// gossip says not ready, so balancers and peers stop sending new clients here, while
    /// requests keep being served for the drain period (`drain_ms`); then every session is
    /// closed (its client reconnects to another node), in-flight requests finish, and the RPC
    /// listener and gossip stop.
    ///
    /// If the node's gossip task ends on its own, its peers soon count it dead while it would
    /// still take clients: it leaves the same way at once, and this returns the reason.
    pub async fn wait(self) -> Result<(), NodeError> {
        let span = self.span.clone();
        async move {
            let mut failure = match &self.cluster {
                Some(c) => c.cluster.membership.failure(),
                None => tokio::sync::watch::channel(None).1,
            };
            let failed = tokio::select! {
                _ = self.stop.cancelled() => None,
                // A closed channel (no cluster, or gossip stopped on purpose) is no failure.
                reason = async {
                    let reason = failure.wait_for(Option::is_some).await.map(|r| r.clone());
                    match reason {
                        Ok(reason) => reason,
                        Err(_) => std::future::pending().await,
                    }
                } => reason,
            };
            self.state.draining.store(true, std::sync::atomic::Ordering::Relaxed);
            let not_ready_at = tokio::time::Instant::now();
            if let Some(c) = &self.cluster {
                c.cluster.membership.set_ready(false).await;
                // Sessions parked here for other nodes' clients move to nodes that stay.
                c.rooms.hand_over_all();
            }
            if !self.drain.is_zero() {
                info!(drain = ?self.drain, "leaving: not ready; draining before closing sessions");
                // A fixed grace: balancers' health checks and peers' gossip cannot be observed.
                tokio::time::sleep(self.drain).await;
            }
            self.server.shutdown().await;
            if let Some(admin) = &self.admin {
                admin.shutdown().await;
            }
            if let Some(metrics) = self.metrics_server {
                metrics.shutdown().await;
            }
            if let Some(c) = self.cluster {
                // Sessions parked for recovery (those just closed, and those kept for other
                // nodes' clients) move to nodes that stay.
                c.rooms.hand_over_all();
                c.rooms.settle(HAND_OVER_LIMIT).await;
                if let Some(history) = &c.history {
                    // Its rooms' copies go to the replicas that take its place.
                    history.leave(HAND_OVER_LIMIT).await;
                    history.shutdown().await;
                }
                c.rpc_stop.cancel();
                let _ = c.rpc_task.await;
                c.cluster.peers.shutdown().await;
                // Peers hear "not ready" before they count this node dead, so they let it go
                // at once rather than after `cluster.member_grace_ms` (chitchat has no leave
                // message): a few gossip rounds since it was said, at least.
                tokio::time::sleep_until(not_ready_at + c.gossip_interval * LEAVE_ROUNDS).await;
                c.cluster.membership.shutdown().await;
                c.rooms.shutdown().await;
            }
            if let Some(writer) = self.history.and_then(|h| h.writer) {
                writer.stop().await; // what is not on disk yet is written now
            }
            if let Some(threads) = self.io_threads {
                threads.stop().await;
            }
            info!("left");
            match failed {
                Some(reason) => Err(NodeError::GossipDown(reason)),
                None => Ok(()),
            }
        }
        .instrument(span)
        .await
    }
}
