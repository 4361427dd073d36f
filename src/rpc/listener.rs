//! The accepting side: authenticates each incoming connection (see `noise`), then serves it.
//! Peers that fail the handshake are logged and dropped before a single frame of theirs is
//! read; connections still in their handshake are capped, so a flood of silent connections
//! costs a bounded number of tasks and sockets.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::connection::{Connection, RpcHandler, RpcLimits};
use super::noise;
use super::peers::Peers;
use super::stats::RpcStats;
use crate::keyring::Keyring;
use crate::tasks::Tasks;

/// What the listener needs to authenticate and serve its peers.
pub struct ListenSettings {
    pub node_id: String,
    pub keyring: Keyring,
    pub handshake_timeout: Duration,
    /// Connections in their handshake at once; more are closed at once.
    pub max_handshakes: usize,
    pub limits: RpcLimits,
    /// This node's dialer: a peer that proves who it is here is up, so its back-off there ends
    /// ([`Peers::is_back`]).
    pub dialer: Arc<Peers>,
}

/// Accepts RPC connections until `stop` is cancelled, then closes those it serves, stops the
/// handshakes and the requests under way, and returns once every task has ended.
pub async fn serve(
    listener: TcpListener,
    settings: ListenSettings,
    handler: Arc<dyn RpcHandler>,
    stats: Arc<RpcStats>,
    stop: CancellationToken,
) {
    let settings = Arc::new(settings);
    let handshakes = Arc::new(Semaphore::new(settings.max_handshakes));
    let tasks = Tasks::default();
    loop {
        let (mut stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(err) => {
                    warn!(error = %err, "RPC accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => break,
        };
        let Ok(slot) = handshakes.clone().try_acquire_owned() else {
            stats.handshakes_shed.fetch_add(1, Ordering::Relaxed);
            debug!(%peer, "too many RPC handshakes under way; connection closed");
            continue;
        };
        super::peers::tune(&stream);
        let (settings, handler, stats, served) = (settings.clone(), handler.clone(), stats.clone(), tasks.clone());
        // A handshake under way when the listener stops is dropped.
        tasks.spawn_until_stopped(async move {
            let secured =
                noise::accept(&mut stream, &settings.keyring, &settings.node_id, settings.handshake_timeout).await;
            drop(slot);
            match secured {
                Ok(channel) => {
                    debug!(%peer, node = channel.peer, "RPC peer authenticated");
                    settings.dialer.is_back(&channel.peer);
                    Connection::spawn(stream, channel, Some(handler), settings.limits, &served);
                }
                Err(err) => {
                    stats.handshake_failed(err.reason());
                    warn!(%peer, error = %err, "refused RPC connection");
                }
            }
        });
    }
    drop(listener);
    tasks.shutdown().await;
    info!("RPC listener stopped");
}
