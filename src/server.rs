//! The HTTP server's life: accept loop, per-connection tasks, and the one shutdown path.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use crate::config::NodeConfig;
use crate::http::{handle, HttpState};
use crate::io_threads::IoThreads;
use crate::metrics::Refusal;
use crate::per_address::PerAddress;

/// How long shutdown waits for connections to finish after every session was closed.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Limits on the HTTP connections of one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Open HTTP connections at most (a connection upgraded to a WebSocket counts as a
    /// session instead, under `engine.max_sessions`); past it new ones get a 503 and are closed.
    pub max_connections: usize,
    /// A connection that sends no complete request head within this time (a new connection,
    /// or a kept-alive one between requests) is closed.
    pub idle_timeout: Duration,
    /// Open HTTP connections per client address at most, counted as `max_connections` is;
    /// past it new ones get a 429 and are closed. 0: no limit.
    pub max_per_address: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self { max_connections: 10_000, idle_timeout: Duration::from_secs(30), max_per_address: 0 }
    }
}

impl ConnectionLimits {
    pub fn from_config(config: &NodeConfig) -> Self {
        Self {
            max_connections: config.max_connections,
            max_per_address: config.max_connections_per_address,
            ..Self::default()
        }
    }
}

/// What a connection over the limit is told before it is closed.
const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
connection: close\r\ncontent-length: 50\r\n\r\n{\"code\":3,\"message\":\"Too many connections, retry\"}";

/// What a connection over its address's limit is told before it is closed.
const TOO_MANY_FROM_ADDRESS: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n\
connection: close\r\ncontent-length: 61\r\n\r\n{\"code\":3,\"message\":\"Too many connections from this address\"}";

/// One connection's place under `max_per_address`, given back on drop.
struct AddressPermit {
    table: Arc<PerAddress>,
    addr: IpAddr,
}

impl AddressPermit {
    fn acquire(table: &Arc<PerAddress>, addr: IpAddr, max: usize) -> Option<Self> {
        table.acquire(addr, max).then(|| Self { table: table.clone(), addr })
    }
}

impl Drop for AddressPermit {
    fn drop(&mut self) {
        self.table.release(self.addr);
    }
}

/// A running HTTP server. Dropping it does not stop it; call [`Server::shutdown`].
pub struct Server {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Server {
    /// Serves `state` on `listener` in the current tracing span, with default limits.
    pub fn start(listener: TcpListener, state: Arc<HttpState>) -> std::io::Result<Self> {
        Self::start_with(listener, state, ConnectionLimits::default())
    }

    /// Serves `state` on `listener` in the current tracing span, each connection on the
    /// current runtime.
    pub fn start_with(listener: TcpListener, state: Arc<HttpState>, limits: ConnectionLimits) -> std::io::Result<Self> {
        Self::start_on(listener, state, limits, None)
    }

    /// Serves `state` on `listener` in the current tracing span, each connection on one of
    /// `threads` (see [`IoThreads`]) or, without, on the current runtime. The caller stops
    /// `threads` after this server.
    pub fn start_on(
        listener: TcpListener,
        state: Arc<HttpState>,
        limits: ConnectionLimits,
        threads: Option<Arc<IoThreads>>,
    ) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(accept_loop(listener, state, limits, threads, shutdown.clone()).in_current_span());
        Ok(Self { addr, shutdown, task })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A token that stops the server when cancelled (e.g. from a signal handler).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops accepting, closes every session (clients are told), and waits for connections.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.wait().await;
    }

    /// Waits until the server has stopped.
    pub async fn wait(self) {
        if let Err(err) = self.task.await {
            warn!(error = %err, "server task failed");
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    state: Arc<HttpState>,
    limits: ConnectionLimits,
    threads: Option<Arc<IoThreads>>,
    shutdown: CancellationToken,
) {
    info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "listening");
    let connections = CancellationToken::new();
    let open = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let per_address = Arc::new(PerAddress::default());
    let mut refused: u64 = 0;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            refused += 1;
            if refused.is_power_of_two() {
                warn!(max = limits.max_connections, refused, "too many connections: refusing new ones");
            }
            state.refused(Refusal::Connections);
            state.tasks.spawn(refuse(stream, TOO_MANY_CONNECTIONS));
            continue;
        };
        let address_permit = match limits.max_per_address {
            0 => None,
            max => match AddressPermit::acquire(&per_address, peer.ip(), max) {
                Some(permit) => Some(permit),
                None => {
                    debug!(%peer, max, "too many connections from this address: refusing");
                    state.refused(Refusal::ConnectionsPerAddress);
                    state.tasks.spawn(refuse(stream, TOO_MANY_FROM_ADDRESS));
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            state: state.clone(),
            peer,
            limits,
            draining: shutdown.clone(),
            stop: connections.clone(),
            _permits: (permit, address_permit),
        };
        match &threads {
            None => state.tasks.spawn(connection.serve(stream).in_current_span()),
            // To another runtime's I/O driver: out of this one's first.
            Some(threads) => match stream.into_std() {
                Ok(stream) => {
                    let serve = async move {
                        match tokio::net::TcpStream::from_std(stream) {
                            Ok(stream) => connection.serve(stream).await,
                            Err(err) => warn!(%peer, error = %err, "connection not handed to its thread"),
                        }
                    };
                    state.tasks.spawn_on(serve.in_current_span(), threads.next())
                }
                Err(err) => {
                    warn!(%peer, error = %err, "connection not handed to its thread");
                    continue;
                }
            },
        };
    }
    info!("shutting down: closing sessions");
    drop(listener);
    for (_, router) in &state.engines {
        router.shutdown().await;
    }
    // Pending polls were answered by the engine shutdown; give responses a moment to flush.
    state.tasks.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, state.tasks.wait()).await.is_err() {
        connections.cancel();
        state.tasks.wait().await;
    }
    info!("stopped");
}

/// One accepted HTTP connection, served until it closes.
struct Connection {
    state: Arc<HttpState>,
    peer: SocketAddr,
    limits: ConnectionLimits,
    /// The server's shutdown: idle keep-alive connections close, a request in flight gets its
    /// answer first.
    draining: CancellationToken,
    /// The drain deadline passed: close now.
    stop: CancellationToken,
    /// Its places under `max_connections` and `max_per_address`, given back when it closes.
    _permits: (tokio::sync::OwnedSemaphorePermit, Option<AddressPermit>),
}

impl Connection {
    async fn serve(self, stream: tokio::net::TcpStream) {
        let Self { state, peer, limits, draining, stop, _permits } = self;
        let service = service_fn(move |req| handle(state.clone(), peer, req));
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.idle_timeout)
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        tokio::pin!(conn);
        let result = tokio::select! {
            result = conn.as_mut() => result,
            _ = draining.cancelled() => {
                conn.as_mut().graceful_shutdown();
                tokio::select! {
                    result = conn.as_mut() => result,
                    _ = stop.cancelled() => Ok(()),
                }
            }
        };
        if let Err(err) = result {
            debug!(%peer, error = %err, "connection error");
        }
    }
}

/// Tells a connection over a limit so, briefly, and closes it.
async fn refuse(mut stream: tokio::net::TcpStream, answer: &'static [u8]) {
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(answer)).await;
}
