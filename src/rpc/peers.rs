//! The dialing side: one authenticated connection per peer node, opened on first use and
//! reused by every request and stream to that node.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpStream;
use tracing::{info, warn};

use super::auth;
use super::connection::{Connection, RpcError};

/// One peer's connection, behind an async lock held while dialing.
type Slot = Arc<tokio::sync::Mutex<Option<Arc<Connection>>>>;

pub struct Peers {
    secret: Arc<[u8]>,
    connect_timeout: Duration,
    /// Node id → its connection slot. The slot's async lock serialises dialing one peer
    /// without holding up calls to the others.
    slots: Mutex<HashMap<String, Slot>>,
}

impl Peers {
    pub fn new(secret: Arc<[u8]>, connect_timeout: Duration) -> Self {
        Self { secret, connect_timeout, slots: Mutex::new(HashMap::new()) }
    }

    /// The live connection to `node_id` at `addr`, dialing (and authenticating) if needed.
    pub async fn connection(&self, node_id: &str, addr: SocketAddr) -> Result<Arc<Connection>, RpcError> {
        let slot = self.slots.lock().unwrap_or_else(|e| e.into_inner()).entry(node_id.to_owned()).or_default().clone();
        let mut slot = slot.lock().await;
        if let Some(conn) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(conn.clone());
        }
        let fail = |reason: String| RpcError::Connect { peer: format!("{node_id} ({addr})"), reason };
        let mut stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| fail("connect timed out".into()))?
            .map_err(|e| fail(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        if let Err(err) = auth::dial(&mut stream, &self.secret).await {
            warn!(peer = node_id, %addr, error = %err, "RPC authentication failed");
            return Err(fail(err.to_string()));
        }
        info!(peer = node_id, %addr, "RPC connection open");
        let conn = Connection::spawn(stream, node_id.to_owned(), None);
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Closes every connection.
    pub fn close_all(&self) {
        let slots: Vec<_> = self.slots.lock().unwrap_or_else(|e| e.into_inner()).drain().map(|(_, s)| s).collect();
        for slot in slots {
            if let Ok(slot) = slot.try_lock() {
                if let Some(conn) = slot.as_ref() {
                    conn.close();
                }
            }
        }
    }
}
