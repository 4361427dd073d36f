//! The accepting side: authenticates each incoming connection (see `noise`), then serves it.
//! Peers that fail the handshake are logged and dropped before a single frame of theirs is
//! read; connections still in their handshake are capped, so a flood of silent connections
//! costs a bounded number of tasks and sockets. One address may hold only an eighth of those
//! slots ([`per_address_handshakes`]): a single host opening silent connections cannot keep
//! the nodes' own handshakes out.

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
use crate::per_address::PerAddress;
use crate::tasks::Tasks;

/// One address's handshake slot, given back when dropped (also with a handshake dropped
/// unfinished when the listener stops).
struct HeldBy(Arc<PerAddress>, std::net::IpAddr);

impl Drop for HeldBy {
    fn drop(&mut self) {
        self.0.release(self.1);
    }
}

/// What the listener needs to authenticate and serve its peers.
pub struct ListenSettings {
    pub node_id: String,
    pub keyring: Keyring,
    pub handshake_timeout: Duration,
    /// Connections in their handshake at once, an eighth of them from one address at most;
    /// more are closed at once.
    pub max_handshakes: usize,
    pub limits: RpcLimits,
    /// This node's dialer: a peer that proves who it is here is up, so its back-off there ends
    /// ([`Peers::is_back`]).
    pub dialer: Arc<Peers>,
}

/// How many of `max_handshakes` one address may hold.
pub fn per_address_handshakes(max_handshakes: usize) -> usize {
    (max_handshakes / 8).max(1)
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
    let per_address = Arc::new(PerAddress::default());
    let per_address_max = per_address_handshakes(settings.max_handshakes);
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
        if !per_address.acquire(peer.ip(), per_address_max) {
            stats.handshakes_shed.fetch_add(1, Ordering::Relaxed);
            debug!(%peer, "too many RPC handshakes under way from this address; connection closed");
            continue;
        }
        let held = HeldBy(per_address.clone(), peer.ip());
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
            drop((slot, held));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::peers::tests::{settings as dialing, Echo, SECRET};
    use crate::rpc::peers::PeerAt;
    use crate::rpc::Request;
    use crate::rpc::Response;

    /// Anyone who reaches the RPC port can open connections and say nothing. One host doing
    /// so takes only its share of the handshake slots: a node's own dial still gets through.
    #[tokio::test]
    async fn silent_connections_from_one_address_leave_room_for_the_nodes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let settings = ListenSettings {
            node_id: "node2".into(),
            keyring: Keyring::single(SECRET),
            handshake_timeout: Duration::from_secs(30),
            max_handshakes: 8,
            limits: RpcLimits::default(),
            dialer: Arc::new(Peers::new(dialing("node2"))),
        };
        let (stats, stop) = (Arc::new(RpcStats::default()), CancellationToken::new());
        let served = tokio::spawn(serve(listener, settings, Arc::new(Echo), stats.clone(), stop.clone()));
        // As many silent connections from 127.0.0.2 as there are slots, accepted before the dial.
        let mut silent = Vec::new();
        for _ in 0..8 {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
            silent.push(socket.connect(addr).await.unwrap());
        }
        let peers = Peers::new(dialing("node1"));
        let at = PeerAt { addr, generation: 1 };
        let history = Request::History { nsp: "/chat".into(), room: "lobby".into() };
        let answer = peers.call("node2", at, history, Duration::from_secs(5)).await;
        assert_eq!(answer.map_err(|e| e.to_string()), Ok(Response::Failed("hello node1".into())));
        assert_eq!(stats.handshakes_shed.load(Ordering::Relaxed), 7, "one slot for 127.0.0.2, the rest closed");
        peers.shutdown().await;
        stop.cancel();
        served.await.unwrap();
    }
}
