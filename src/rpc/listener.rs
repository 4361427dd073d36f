//! The accepting side: authenticates each incoming connection, then serves it.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use super::auth;
use super::connection::{Connection, RpcHandler};

/// Accepts RPC connections until `stop` is cancelled. Peers that fail the handshake are
/// logged and dropped before a single frame of theirs is read.
pub async fn serve(listener: TcpListener, secret: Arc<[u8]>, handler: Arc<dyn RpcHandler>, stop: CancellationToken) {
    // Served connections, so stopping can close them; weak so finished ones are not kept.
    let served: Arc<std::sync::Mutex<Vec<std::sync::Weak<Connection>>>> = Arc::default();
    loop {
        let (mut stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(err) => {
                    warn!(error = %err, "RPC accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let secret = secret.clone();
        let handler = handler.clone();
        let served = served.clone();
        tokio::spawn(
            async move {
                match auth::accept(&mut stream, &secret).await {
                    Ok(()) => {
                        debug!(%peer, "RPC peer authenticated");
                        let conn = Connection::spawn(stream, peer.to_string(), Some(handler));
                        let mut served = served.lock().unwrap_or_else(|e| e.into_inner());
                        served.retain(|c| c.strong_count() > 0);
                        served.push(Arc::downgrade(&conn));
                    }
                    Err(err) => warn!(%peer, error = %err, "refused RPC connection"),
                }
            }
            .in_current_span(),
        );
    }
    info!("RPC listener stopped");
    for conn in served.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
        if let Some(conn) = conn.upgrade() {
            conn.close();
        }
    }
}
