//! A chat node: the Socket.IO server with the `/chat` namespace, the page, the HTTP server
//! and, in a cluster, gossip membership and the RPC listener.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::cluster::membership::{GossipConfig, Membership};
use crate::cluster::rooms::ClusterRooms;
use crate::cluster::router::{Cluster, Router};
use crate::config::NodeConfig;
use crate::engineio::Engine;
use crate::http::HttpState;
use crate::logging::node_span;
use crate::metrics::{Metrics, Sources};
use crate::rpc::peers::Peers;
use crate::server::Server;
use crate::socketio::SocketIo;

/// The Engine.IO path of the chat, as socket.io clients expect it.
pub const ENGINE_PATH: &str = "/socket.io/";

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot join the gossip ring: {0}")]
    Gossip(anyhow::Error),
}

/// A running node.
pub struct Node {
    node_id: Arc<str>,
    server: Server,
    engine: Arc<Engine>,
    cluster: Option<RunningCluster>,
    span: tracing::Span,
}

struct RunningCluster {
    cluster: Arc<Cluster>,
    rpc_addr: SocketAddr,
    rpc_stop: CancellationToken,
    rpc_task: tokio::task::JoinHandle<()>,
}

impl Node {
    /// Validates the configuration, binds the listeners, joins the cluster (if configured)
    /// and starts serving. The node advertises itself ready once it serves HTTP.
    pub async fn start(config: NodeConfig) -> Result<Self, NodeError> {
        config.validate()?;
        let span = node_span(&config.node_id);
        Self::start_in(config, span.clone()).instrument(span).await
    }

    async fn start_in(config: NodeConfig, span: tracing::Span) -> Result<Self, NodeError> {
        let node_id: Arc<str> = config.node_id.as_str().into();
        let io =
            SocketIo::new(config.engine.socketio(), vec![crate::chat::namespace(node_id.clone(), config.chat.clone())]);
        let engine = Engine::new(config.engine.engine(), io.clone());
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr).await.map_err(|source| NodeError::Bind { addr, source })
        };
        let http = bind(config.http).await?;
        let http_addr = http.local_addr().map_err(|source| NodeError::Bind { addr: config.http, source })?;

        let (router, cluster) = match &config.cluster {
            None => (Router::local(node_id.clone(), engine.clone()), None),
            Some(c) => {
                let secret: Arc<[u8]> = c.secret()?.into_bytes().into();
                let rpc = bind(c.rpc).await?;
                let rpc_addr = rpc.local_addr().map_err(|source| NodeError::Bind { addr: c.rpc, source })?;
                let gossip = GossipConfig {
                    node_id: config.node_id.clone(),
                    cluster_id: c.cluster_id.clone(),
                    listen: c.gossip,
                    seeds: c.seeds.clone(),
                    interval: Duration::from_millis(c.gossip_interval_ms),
                    phi_threshold: c.phi_threshold,
                };
                let membership =
                    Arc::new(Membership::start(gossip, http_addr, rpc_addr).await.map_err(NodeError::Gossip)?);
                let peers = Arc::new(Peers::new(secret.clone(), Duration::from_millis(c.rpc_connect_timeout_ms)));
                let rpc_timeout = c.rpc_timeout(&config.engine);
                let rooms = ClusterRooms::new(
                    config.node_id.clone(),
                    membership.clone(),
                    peers.clone(),
                    io.namespaces().cloned().collect(),
                    rpc_timeout,
                );
                let metrics = Metrics::new(Sources {
                    engine: engine.clone(),
                    namespaces: io.namespaces().cloned().collect(),
                    cluster: Some((membership.clone(), rooms.clone())),
                });
                let cluster = Arc::new(Cluster { membership, peers, rpc_timeout, metrics });
                let router = Router::clustered(node_id.clone(), engine.clone(), cluster.clone());
                let rpc_stop = CancellationToken::new();
                let rpc_task = tokio::spawn(
                    crate::rpc::listener::serve(rpc, secret, router.rpc_handler(rooms), rpc_stop.clone())
                        .in_current_span(),
                );
                (router, Some(RunningCluster { cluster, rpc_addr, rpc_stop, rpc_task }))
            }
        };
        let metrics = match &cluster {
            Some(c) => c.cluster.metrics.clone(),
            None => Metrics::new(Sources {
                engine: engine.clone(),
                namespaces: io.namespaces().cloned().collect(),
                cluster: None,
            }),
        };
        let state = Arc::new(HttpState {
            node_id: node_id.clone(),
            metrics: Some(metrics),
            engines: vec![(ENGINE_PATH.to_owned(), router)],
            membership: cluster.as_ref().map(|c| c.cluster.membership.clone()),
            web_dir: Some(config.web_dir.clone()),
            cors_origins: config.cors_origins.clone(),
            tasks: TaskTracker::new(),
        });
        let server = Server::start(http, state).map_err(|source| NodeError::Bind { addr: config.http, source })?;
        if let Some(c) = &cluster {
            c.cluster.membership.set_ready(true).await;
        }
        Ok(Self { node_id, server, engine, cluster, span })
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The RPC listener's address, in a cluster.
    pub fn rpc_addr(&self) -> Option<SocketAddr> {
        self.cluster.as_ref().map(|c| c.rpc_addr)
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub fn membership(&self) -> Option<&Arc<Membership>> {
        self.cluster.as_ref().map(|c| &c.cluster.membership)
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.server.shutdown_token()
    }

    /// Leaves the cluster and stops: not ready first (so balancers stop sending), then every
    /// session is closed, then the RPC listener and the gossip stop.
    pub async fn shutdown(self) {
        self.server.shutdown_token().cancel();
        self.wait().await
    }

    /// Runs until the shutdown token is cancelled, then shuts down as [`Node::shutdown`].
    pub async fn wait(self) {
        let span = self.span.clone();
        async move {
            let stop = self.server.shutdown_token();
            if let Some(c) = &self.cluster {
                stop.cancelled().await;
                c.cluster.membership.set_ready(false).await;
            }
            self.server.wait().await;
            if let Some(c) = self.cluster {
                c.rpc_stop.cancel();
                let _ = c.rpc_task.await;
                c.cluster.peers.close_all();
                c.cluster.membership.shutdown().await;
            }
        }
        .instrument(span)
        .await
    }
}
