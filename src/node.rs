//! A chat node: the Socket.IO server with the `/chat` namespace, the page, and the HTTP server.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::NodeConfig;
use crate::engineio::Engine;
use crate::http::HttpState;
use crate::logging::node_span;
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
}

/// A running node.
pub struct Node {
    server: Server,
    engine: Arc<Engine>,
}

impl Node {
    /// Validates the configuration, binds the HTTP listener and starts serving.
    pub async fn start(config: NodeConfig) -> Result<Self, NodeError> {
        config.validate()?;
        let span = node_span(&config.node_id);
        let node_id: Arc<str> = config.node_id.as_str().into();
        let io =
            SocketIo::new(config.engine.socketio(), vec![crate::chat::namespace(node_id.clone(), config.chat.clone())]);
        let engine = Engine::new(config.engine.engine(), io);
        let listener =
            TcpListener::bind(config.http).await.map_err(|source| NodeError::Bind { addr: config.http, source })?;
        let state = Arc::new(HttpState {
            node_id,
            engines: vec![(ENGINE_PATH.to_owned(), engine.clone())],
            web_dir: Some(config.web_dir.clone()),
            cors_origins: config.cors_origins.clone(),
            tasks: TaskTracker::new(),
        });
        let server = async { Server::start(listener, state) }
            .instrument(span)
            .await
            .map_err(|source| NodeError::Bind { addr: config.http, source })?;
        Ok(Self { server, engine })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub fn shutdown_token(&self) -> tokio_util::sync::CancellationToken {
        self.server.shutdown_token()
    }

    /// Closes every session and stops.
    pub async fn shutdown(self) {
        self.server.shutdown().await
    }

    /// Runs until the shutdown token is cancelled.
    pub async fn wait(self) {
        self.server.wait().await
    }
}
