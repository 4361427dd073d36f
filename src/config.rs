//! Node configuration: TOML files (`config/node1.toml`) with documented defaults; every field
//! can be overridden on the command line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::admin::AdminSettings;
use crate::auth::{AuthError, AuthSettings};
use crate::chat::ChatConfig;
use crate::engineio::EngineConfig;
use crate::keyring::Keyring;
use crate::socketio::SocketIoConfig;

/// Everything a node needs to run. Defaults are those of the reference Socket.IO server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's name: in every log line, in `/whoami`, in the chat's `welcome`.
    pub node_id: String,
    /// Address of the HTTP listener (page, Engine.IO, health).
    pub http: SocketAddr,
    /// Directory of the chat page (`index.html`, `app.js`, `node_modules/socket.io-client`).
    pub web_dir: PathBuf,
    /// Browser origins allowed to use the Engine.IO endpoint (CORS and WebSocket upgrades),
    /// besides the page's own (same `Host`): `"loopback"` allows pages on localhost,
    /// 127.0.0.0/8 and `[::1]`, `"*"` any origin, anything else one exact origin. Requests
    /// without an `Origin` (clients that are not browsers) are always allowed.
    /// `cors_origins`, its former name, is read too.
    #[serde(alias = "cors_origins")]
    pub allowed_origins: Vec<String>,
    /// Where to serve `/metrics` instead of the public `http` listener; absent, it is served
    /// there.
    pub metrics_listen: Option<SocketAddr>,
    /// Default log filter (tracing `EnvFilter` syntax); `RUST_LOG` overrides it.
    pub log: String,
    /// On SIGTERM, how long the node keeps serving while not ready, so load balancers and
    /// peers stop sending it new clients before its sessions are closed, ms.
    pub drain_ms: u64,
    /// Open HTTP connections at most (not counting those upgraded to WebSockets, which are
    /// sessions); past it new connections get a 503. Idle ones close after 30 s.
    pub max_connections: usize,
    /// Open HTTP connections per client address at most; past it new ones get a 429. 0: no
    /// limit. Behind a proxy every client has the proxy's address, so leave it 0 there.
    pub max_connections_per_address: usize,
    /// Time a request body has to arrive in full, ms; then 408 and the connection closes.
    pub body_timeout_ms: u64,
    /// The host's cores this node may keep busy, which sizes both kinds of thread below
    /// unless they are set; absent: all of them. Nodes sharing a host each want their share
    /// (`cluster.sh` gives each of its three nodes `cores / 3`, at least 1); nothing caps the
    /// CPU a node takes. One core: the node does all its work on one thread (no connection
    /// threads, a single-threaded main runtime; tokio's blocking pool and the history writer
    /// aside, when used), so no thread wakes another to hand it a client's message or a peer's push;
    /// on two cores three nodes so made 10-18 % more deliveries per CPU-second than with one
    /// thread of each kind (`bench/analysis.md`, session 15). n > 1: n of each kind.
    pub cores: Option<usize>,
    /// Threads that serve the HTTP connections, each a single-threaded runtime that keeps its
    /// connections (see [`crate::io_threads`]); absent: as `cores` says. 0: none, the main
    /// runtime serves the connections too.
    pub io_threads: Option<usize>,
    /// Worker threads of the node's main runtime (gossip, the internal RPC, and delivering
    /// what peers push to this node's members); absent: as `cores` says (without it, one per
    /// core, or `TOKIO_WORKER_THREADS`). 1: a single-threaded runtime on the main thread.
    pub worker_threads: Option<usize>,
    pub engine: EngineSettings,
    pub chat: ChatConfig,
    /// How chat clients prove who they are; empty: they don't (see [`crate::auth`]).
    pub auth: AuthSettings,
    /// The socket.io Admin UI at `/admin/` and its `/admin` namespace; absent: off.
    pub admin: Option<AdminSettings>,
    /// Where room history is saved; its sizes are `chat.history_len` and `chat.history_rooms`.
    pub history: HistorySettings,
    /// Absent: the node runs alone.
    pub cluster: Option<ClusterSettings>,
}

/// Room history on disk (see [`crate::history::disk`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistorySettings {
    /// Directory of this node's history file (`history.redb`), created if missing; relative
    /// to the working directory. Absent: history is kept in memory only.
    pub dir: Option<PathBuf>,
}

/// How a node joins the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSettings {
    /// Gossip (UDP) listen address.
    pub gossip: SocketAddr,
    /// Internal RPC (TCP) listen address.
    pub rpc: SocketAddr,
    /// The addresses other nodes reach this one at, when they differ from the listen
    /// addresses (a node listening on `0.0.0.0` or `[::]`, behind NAT, in a container).
    /// Required for a listen address that is unspecified.
    /// An advertised port of 0 stands for the port bound.
    pub gossip_advertise: Option<SocketAddr>,
    pub rpc_advertise: Option<SocketAddr>,
    /// The HTTP address shown to peers and `inspect` (the node's `http` otherwise).
    pub http_advertise: Option<SocketAddr>,
    /// Gossip addresses of other members to join through (`host:port`; host names are
    /// resolved again every gossip round). They must be the members' advertised addresses.
    pub seeds: Vec<String>,
    /// Nodes only gossip with nodes of the same cluster id.
    pub cluster_id: String,
    /// The cluster's secrets: the first seals what this node sends, every one is accepted
    /// (rotation: see `keyring`). `CLUSTERCHAT_SECRET` overrides them with one secret.
    pub secrets: Vec<String>,
    /// One secret, as older configs give it; the same as `secrets = [secret]`.
    pub secret: Option<String>,
    /// How far a gossip datagram's send time may be from this node's clock (clock skew plus
    /// delivery), ms; older ones are refused as replays.
    pub gossip_max_clock_skew_ms: u64,
    /// Gossip round period; also the failure detector's initial heartbeat interval, ms.
    pub gossip_interval_ms: u64,
    /// How long a deleted gossip key (a room this node no longer has members in) is kept as
    /// a tombstone so peers learn of the deletion, ms. Chitchat's work per gossip round (and
    /// its memory) grows with every key it holds, tombstones included, and rooms come and go
    /// all the time in a chat: a short grace keeps that work flat under churn. A peer that
    /// falls further behind than this (a partition, a stall) is not wrong afterwards, only
    /// reset: it is sent the node's whole current state again.
    pub gossip_tombstone_ms: u64,
    /// Compress each gossip message's digest (chitchat's protocol V1) rather than send it
    /// plain (V0). The digest lists every node (about 60 bytes each), so compressing it saves
    /// bytes only in rings of tens of nodes, and costs CPU on every datagram: a zstd context
    /// and compression per digest sent (twice: chitchat measures it by compressing it), a
    /// 64 KiB zeroed buffer per digest received. Either setting talks with either: a node
    /// answers in the version it was asked in.
    pub gossip_compress_digest: bool,
    /// Phi-accrual threshold above which a silent member counts as dead.
    pub phi_threshold: f64,
    /// How long a ready member the failure detector counts dead is still counted a member,
    /// ms: one that is heard again within it never left (its rooms, sessions, history
    /// replicas and queued pushes stay as they were). Under CPU starvation a node's gossip can
    /// fall silent for a moment (the end-to-end test's crowd step: 98 % of such flaps were
    /// back within 750 ms); without this, each flap dropped the pushes queued for that node,
    /// told its rooms' members that its users left and came back, and moved history replicas
    /// and recovery keepers there and back. A crashed node is let go this much later. A node
    /// that leaves gracefully is not ready first and goes at once. 0: none.
    pub member_grace_ms: u64,
    /// How long a forwarded request may take, ms; 0 derives it from the ping settings so it
    /// always outlasts a long-poll.
    pub rpc_timeout_ms: u64,
    /// How long dialing a peer may take, ms.
    pub rpc_connect_timeout_ms: u64,
    /// How long an RPC handshake may take, ms: a peer that accepts and stays silent costs
    /// its callers no more, and is then left alone for a back-off.
    pub rpc_handshake_timeout_ms: u64,
    /// Incoming RPC connections in their handshake at once, an eighth of them from one
    /// address at most; more are closed at once.
    pub rpc_max_handshakes: usize,
    /// Per peer connection: bytes queued to send, requests awaiting an answer, and the
    /// peer's requests served at once.
    pub rpc_max_queued_bytes: usize,
    pub rpc_max_calls: usize,
    pub rpc_max_served: usize,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            gossip: "127.0.0.1:7001".parse().expect("valid default address"),
            rpc: "127.0.0.1:8001".parse().expect("valid default address"),
            gossip_advertise: None,
            rpc_advertise: None,
            http_advertise: None,
            seeds: Vec::new(),
            cluster_id: "clusterchat".into(),
            secrets: Vec::new(),
            secret: None,
            gossip_max_clock_skew_ms: 30_000,
            gossip_interval_ms: 100,
            gossip_tombstone_ms: 30_000,
            gossip_compress_digest: false,
            phi_threshold: 8.0,
            member_grace_ms: 750,
            rpc_timeout_ms: 0,
            rpc_connect_timeout_ms: 2000,
            rpc_handshake_timeout_ms: 1000,
            rpc_max_handshakes: 64,
            rpc_max_queued_bytes: 16 * 1024 * 1024,
            rpc_max_calls: 1024,
            rpc_max_served: 1024,
        }
    }
}

impl ClusterSettings {
    /// The secrets, from the environment (one) or the file.
    pub fn secrets(&self) -> Vec<String> {
        match std::env::var("CLUSTERCHAT_SECRET").ok().filter(|s| !s.is_empty()) {
            Some(secret) => vec![secret],
            None => self.secrets.iter().chain(&self.secret).cloned().collect(),
        }
    }

    /// The keyring of [`ClusterSettings::secrets`], checked against every address the node
    /// listens on or advertises (`http` is the node's HTTP listen address).
    pub fn keyring(&self, http: SocketAddr) -> Result<Keyring, ConfigError> {
        let addresses = [
            Some(http),
            Some(self.gossip),
            Some(self.rpc),
            self.gossip_advertise,
            self.rpc_advertise,
            self.http_advertise,
        ];
        let addresses: Vec<SocketAddr> = addresses.into_iter().flatten().collect();
        Keyring::new(&self.secrets(), &addresses).map_err(|err| ConfigError::Invalid(err.to_string()))
    }

    /// An advertised address: the configured one (port 0: the bound port), or the bound one
    /// unless it is unspecified.
    pub fn advertised(
        name: &str,
        configured: Option<SocketAddr>,
        bound: SocketAddr,
    ) -> Result<SocketAddr, ConfigError> {
        match configured {
            Some(addr) if addr.ip().is_unspecified() => {
                Err(ConfigError::Invalid(format!("cluster.{name}_advertise must be a reachable address, not {addr}")))
            }
            Some(addr) if addr.port() == 0 => Ok(SocketAddr::new(addr.ip(), bound.port())),
            Some(addr) => Ok(addr),
            None if bound.ip().is_unspecified() => Err(ConfigError::Invalid(format!(
                "cluster.{name} listens on {bound}: set cluster.{name}_advertise to the address peers reach"
            ))),
            None => Ok(bound),
        }
    }

    /// The forwarded-request timeout: configured, or ping interval + ping timeout + 10 s.
    pub fn rpc_timeout(&self, engine: &EngineSettings) -> Duration {
        match self.rpc_timeout_ms {
            0 => Duration::from_millis(engine.ping_interval_ms + engine.ping_timeout_ms + 10_000),
            ms => Duration::from_millis(ms),
        }
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            node_id: "node1".into(),
            http: "127.0.0.1:9001".parse().expect("valid default address"),
            web_dir: "web".into(),
            allowed_origins: vec!["loopback".into()],
            metrics_listen: None,
            log: "info".into(),
            drain_ms: 2000,
            max_connections: 10_000,
            max_connections_per_address: 0,
            body_timeout_ms: 30_000,
            cores: None,
            io_threads: None,
            worker_threads: None,
            engine: EngineSettings::default(),
            chat: ChatConfig::default(),
            auth: AuthSettings::default(),
            admin: None,
            history: HistorySettings::default(),
            cluster: None,
        }
    }
}

/// Engine.IO and Socket.IO settings, in the units of the reference server's options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineSettings {
    /// `pingInterval`: how often the server pings (v4) or expects pings (v3), ms.
    pub ping_interval_ms: u64,
    /// `pingTimeout`: how long a pong may take before the session is closed, ms.
    pub ping_timeout_ms: u64,
    /// `maxHttpBufferSize` / `maxPayload`: largest POST body or WebSocket message, bytes.
    pub max_payload: usize,
    /// `upgradeTimeout`: time allowed to complete a polling → WebSocket upgrade, ms.
    pub upgrade_timeout_ms: u64,
    /// `connectTimeout`: time a client has to join a namespace, ms.
    pub connect_timeout_ms: u64,
    /// Frames queued per session before a too-slow client is disconnected.
    pub outbound_queue: usize,
    /// Most concurrent sessions per node.
    pub max_sessions: usize,
    /// Most packets in one polling response (python-engineio decodes at most 16).
    pub max_polling_packets: usize,
    /// Most sessions one client address may hold on this node; 0: no limit. Behind a proxy
    /// every client has the proxy's address, so leave it 0 there.
    pub max_sessions_per_address: usize,
    /// Most binary attachments per Socket.IO packet; all of them together are bounded by
    /// `max_payload` bytes.
    pub max_attachments: usize,
    /// Time a Socket.IO packet's binary attachments have to arrive, ms; then the session closes.
    pub attachment_timeout_ms: u64,
}

impl Default for EngineSettings {
    fn default() -> Self {
        let e = EngineConfig::default();
        let s = SocketIoConfig::default();
        Self {
            ping_interval_ms: e.ping_interval.as_millis() as u64,
            ping_timeout_ms: e.ping_timeout.as_millis() as u64,
            max_payload: e.max_payload,
            upgrade_timeout_ms: e.upgrade_timeout.as_millis() as u64,
            connect_timeout_ms: s.connect_timeout.as_millis() as u64,
            outbound_queue: e.outbound_queue,
            max_sessions: e.max_sessions,
            max_polling_packets: e.max_polling_packets,
            max_sessions_per_address: e.max_sessions_per_address,
            max_attachments: s.max_attachments,
            attachment_timeout_ms: s.attachment_timeout.as_millis() as u64,
        }
    }
}

impl EngineSettings {
    pub fn engine(&self) -> EngineConfig {
        EngineConfig {
            ping_interval: Duration::from_millis(self.ping_interval_ms),
            ping_timeout: Duration::from_millis(self.ping_timeout_ms),
            max_payload: self.max_payload,
            upgrade_timeout: Duration::from_millis(self.upgrade_timeout_ms),
            outbound_queue: self.outbound_queue,
            max_sessions: self.max_sessions,
            max_polling_packets: self.max_polling_packets,
            max_sessions_per_address: self.max_sessions_per_address,
        }
    }

    pub fn socketio(&self) -> SocketIoConfig {
        SocketIoConfig {
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            max_attachments: self.max_attachments,
            max_attachment_bytes: self.max_payload,
            attachment_timeout: Duration::from_millis(self.attachment_timeout_ms),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config file {path}: {source}")]
    Parse { path: PathBuf, source: toml::de::Error },
    #[error("invalid setting: {0}")]
    Invalid(String),
    #[error(transparent)]
    Auth(#[from] AuthError),
}

impl NodeConfig {
    /// How many connection threads the node runs: `io_threads`, else none on one core and
    /// one per core on more.
    pub fn io_thread_count(&self) -> usize {
        match (self.io_threads, self.cores) {
            (Some(n), _) => n,
            (None, Some(1)) => 0,
            (None, Some(n)) => n,
            (None, None) => crate::io_threads::IoThreads::default_count(),
        }
    }

    /// How many workers the main runtime runs: `worker_threads`, else one per core of
    /// `cores`; `None`: tokio's default (one per core of the host, or `TOKIO_WORKER_THREADS`).
    pub fn worker_thread_count(&self) -> Option<usize> {
        self.worker_threads.or(self.cores)
    }

    /// How many threads serve the node's connections: its connection threads or, without
    /// any, the main runtime's workers.
    pub fn serving_thread_count(&self) -> usize {
        match self.io_thread_count() {
            0 => self.worker_thread_count().unwrap_or_else(crate::io_threads::IoThreads::default_count),
            n => n,
        }
    }

    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.into(), source })
    }

    /// Rejects settings that cannot work, with a message naming the setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let e = &self.engine;
        let checks = [
            (
                self.node_id.is_empty()
                    || self.node_id.len() > 64
                    || !self.node_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                "node_id must be 1 to 64 ASCII letters, digits, - or _",
            ),
            (e.ping_interval_ms == 0, "engine.ping_interval_ms must be > 0"),
            (e.ping_timeout_ms == 0, "engine.ping_timeout_ms must be > 0"),
            (e.max_payload < 1024, "engine.max_payload must be at least 1024 bytes"),
            (e.outbound_queue < 16, "engine.outbound_queue must be at least 16"),
            (e.max_sessions == 0, "engine.max_sessions must be > 0"),
            (e.max_polling_packets == 0, "engine.max_polling_packets must be > 0"),
            (self.max_connections == 0, "max_connections must be > 0"),
            (self.body_timeout_ms == 0, "body_timeout_ms must be > 0"),
            (self.cores == Some(0), "cores must be > 0"),
            (self.worker_threads == Some(0), "worker_threads must be > 0"),
            (
                self.chat.max_room_len == 0 || self.chat.max_user_len == 0 || self.chat.max_message_len == 0,
                "chat limits must be > 0",
            ),
        ];
        if let Some((_, msg)) = checks.iter().find(|(bad, _)| *bad) {
            return Err(ConfigError::Invalid((*msg).into()));
        }
        // A room is advertised in gossip under a key naming it; a key over what peers accept
        // would be refused by every one of them, and with it every later update of this node.
        let longest = crate::cluster::membership::longest_room_key(crate::chat::NAMESPACE, self.chat.max_room_len);
        if longest > crate::cluster::gossip_wire::MAX_KEY_LEN {
            return Err(ConfigError::Invalid(format!(
                "chat.max_room_len {} is too long: a room's gossip key could be {longest} bytes, over the {} a peer accepts",
                self.chat.max_room_len,
                crate::cluster::gossip_wire::MAX_KEY_LEN
            )));
        }
        if let Some(jwt) = &self.auth.jwt {
            jwt.validate()?;
        }
        if let Some(admin) = &self.admin {
            admin.validate().map_err(ConfigError::Invalid)?;
        }
        if let Some(c) = &self.cluster {
            let bad = [
                (c.rpc_max_handshakes == 0, "cluster.rpc_max_handshakes must be > 0"),
                (c.rpc_max_calls == 0 || c.rpc_max_served == 0, "cluster.rpc_max_calls and rpc_max_served must be > 0"),
                (
                    c.rpc_max_queued_bytes < crate::rpc::message::MAX_FRAME,
                    "cluster.rpc_max_queued_bytes must hold one largest frame (4 MiB)",
                ),
                (c.rpc_max_queued_bytes > u32::MAX as usize, "cluster.rpc_max_queued_bytes must be under 4 GiB"),
                (c.gossip_max_clock_skew_ms < 1000, "cluster.gossip_max_clock_skew_ms must be at least 1000"),
                (
                    c.gossip_tombstone_ms < 1000 || c.gossip_tombstone_ms < 20 * c.gossip_interval_ms,
                    "cluster.gossip_tombstone_ms must be at least 1000 and 20 gossip intervals",
                ),
            ];
            if let Some((_, msg)) = bad.iter().find(|(bad, _)| *bad) {
                return Err(ConfigError::Invalid((*msg).into()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cores_size_both_kinds_of_thread_unless_they_are_set() {
        let sized = |cores, io_threads, worker_threads| {
            let c = NodeConfig { cores, io_threads, worker_threads, ..NodeConfig::default() };
            (c.io_thread_count(), c.worker_thread_count(), c.serving_thread_count())
        };
        // One core: no connection threads, a single-threaded runtime serves them.
        assert_eq!(sized(Some(1), None, None), (0, Some(1), 1));
        assert_eq!(sized(Some(3), None, None), (3, Some(3), 3));
        assert_eq!(sized(Some(1), Some(2), None), (2, Some(1), 2));
        assert_eq!(sized(Some(4), None, Some(1)), (4, Some(1), 4));
        assert_eq!(sized(None, Some(0), Some(2)), (0, Some(2), 2));
        let all = crate::io_threads::IoThreads::default_count();
        assert_eq!(sized(None, None, None), (all, None, all));

        // No connection threads is a valid layout; no cores or no workers is not.
        let valid = |c: NodeConfig| c.validate().map_err(|e| e.to_string());
        assert_eq!(valid(NodeConfig { io_threads: Some(0), ..NodeConfig::default() }), Ok(()));
        let refused = valid(NodeConfig { cores: Some(0), ..NodeConfig::default() }).unwrap_err();
        assert!(refused.contains("cores must be > 0"), "{refused}");
        let refused = valid(NodeConfig { worker_threads: Some(0), ..NodeConfig::default() }).unwrap_err();
        assert!(refused.contains("worker_threads must be > 0"), "{refused}");
    }

    /// A room is advertised under a gossip key naming it: a room name whose key peers would
    /// refuse would stall every later gossip update of its node, so the limit is checked at
    /// start against what peers accept.
    #[test]
    fn a_room_name_limit_whose_gossip_key_peers_would_refuse_is_refused() {
        let valid = |max_room_len| {
            let chat = crate::chat::ChatConfig { max_room_len, ..Default::default() };
            NodeConfig { chat, ..NodeConfig::default() }.validate().map_err(|e| e.to_string())
        };
        // The longest name of 4-byte characters, as a key: exactly at the bound, and one over.
        let fits = (1..1000)
            .take_while(|n| crate::cluster::membership::longest_room_key(crate::chat::NAMESPACE, *n) <= 1024)
            .last()
            .unwrap();
        let key = crate::cluster::membership::room_key(crate::chat::NAMESPACE, &"😀".repeat(fits));
        assert!(key.len() <= 1024 && key.len() > 1000, "the bound is exact: {}", key.len());
        assert_eq!(valid(fits), Ok(()));
        let refused = valid(fits + 1).unwrap_err();
        assert!(refused.contains("chat.max_room_len") && refused.contains("1024"), "{refused}");
        assert_eq!(valid(64), Ok(()), "the default");
    }

    #[test]
    fn defaults_are_the_reference_servers() {
        let c = NodeConfig::default();
        assert_eq!(c.engine.ping_interval_ms, 25_000);
        assert_eq!(c.engine.ping_timeout_ms, 20_000);
        assert_eq!(c.engine.max_payload, 1_000_000);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn partial_files_keep_defaults_and_unknown_keys_fail() {
        let c: NodeConfig = toml::from_str("node_id = \"node2\"\n[engine]\nping_interval_ms = 300\n").unwrap();
        assert_eq!(c.node_id, "node2");
        assert_eq!(c.engine.ping_interval_ms, 300);
        assert_eq!(c.engine.ping_timeout_ms, 20_000);
        assert!(toml::from_str::<NodeConfig>("nod_id = \"x\"").is_err());
    }

    #[test]
    fn cors_origins_is_read_as_allowed_origins() {
        let c: NodeConfig = toml::from_str("cors_origins = [\"*\"]").unwrap();
        assert_eq!(c.allowed_origins, ["*"]);
    }

    #[test]
    fn the_shipped_node_config_documents_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/defaults.toml");
        assert_eq!(NodeConfig::from_file(&path).unwrap(), NodeConfig::default());
    }

    #[test]
    fn the_demo_cluster_configs_are_valid_and_distinct() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let nodes: Vec<NodeConfig> =
            (1..=3).map(|i| NodeConfig::from_file(&dir.join(format!("node{i}.toml"))).unwrap()).collect();
        for (i, c) in nodes.iter().enumerate() {
            let admin = c.admin.as_ref().expect("the demo runs the Admin UI");
            assert!(admin.password_hash.is_empty(), "cluster.sh passes the demo's hash in the environment");
            let with_hash = AdminSettings { password_hash: bcrypt::hash("x", 4).unwrap(), ..admin.clone() };
            NodeConfig { admin: Some(with_hash), ..c.clone() }.validate().unwrap();
            let cluster = c.cluster.as_ref().expect("a [cluster] section");
            assert_eq!(c.node_id, format!("node{}", i + 1));
            assert_eq!(cluster.seeds.len(), 2, "each node seeds with the other two");
            assert!(!cluster.seeds.contains(&cluster.gossip.to_string()));
        }
        let dirs: std::collections::HashSet<_> = nodes.iter().map(|c| c.history.dir.clone()).collect();
        assert_eq!(dirs.len(), 3, "each node has its own history.dir");
        assert!(nodes.iter().all(|c| c.history.dir.as_ref().is_some_and(|d| d.starts_with("run"))));
    }

    #[test]
    fn auth_jwt_is_read_and_checked() {
        let c: NodeConfig =
            toml::from_str("[auth]\njwt = { secret = \"0123456789abcdef\", audience = \"chat\" }").unwrap();
        let jwt = c.auth.jwt.as_ref().expect("jwt");
        assert_eq!((jwt.user_claim.as_str(), jwt.audience.as_deref()), ("sub", Some("chat")));
        c.validate().unwrap();
        let short: NodeConfig = toml::from_str("[auth]\njwt = { secret = \"short\" }").unwrap();
        assert!(short.validate().unwrap_err().to_string().starts_with("auth.jwt: secret"));
        assert!(toml::from_str::<NodeConfig>("[auth]\njwt = { algorithm = \"none\" }").is_err());
    }

    #[test]
    fn invalid_settings_are_named() {
        let c = NodeConfig { node_id: "bad id".into(), ..NodeConfig::default() };
        assert!(c.validate().unwrap_err().to_string().contains("node_id"));
        let mut c = NodeConfig::default();
        c.engine.max_payload = 10;
        assert!(c.validate().unwrap_err().to_string().contains("max_payload"));
    }
}
