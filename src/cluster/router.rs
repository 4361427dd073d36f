//! Request routing: every Engine.IO request, whichever node received it, reaches the node
//! that owns its session.
//!
//! A new session is placed on the rendezvous-hash winner of its random id among the ready
//! members (a session that starts as a WebSocket gets an id that the receiving node wins), and its sid is `<random>.<owner node id>`: later requests find the owner from the
//! sid alone, so sessions stay reachable when members join (placement only decides where new
//! sessions go). Requests for the local node go to the engine; the others are carried over
//! the RPC: polling requests as request/response, WebSockets as streams, both ways.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::history::ClusterHistory;
use super::membership::Membership;
use super::placement::Placement;
use super::rooms::ClusterRooms;
use crate::engineio::session::new_random_id;
use crate::engineio::{Engine, EngineError, EngineQuery, EngineRequest, EngineResponse, Method};
use crate::metrics::{Metrics, RequestKind};
use crate::rpc::peers::Peers;
use crate::rpc::stats::RpcStats;
use crate::rpc::{Connection, Request, Response, RpcHandler, RpcStream, StreamOpen, WsFrame};

/// Draws of a session key before giving up on one this node wins (the chance to miss with N
/// ready members is (1 - 1/N)^64: under 0.2 % for 10 nodes).
const LOCAL_KEY_DRAWS: usize = 64;

/// How long a new polling session's handshake waits for the node it was placed on before it
/// goes to the next node of the ranking. Not the forwarding deadline (`rpc_timeout`, longer
/// than a long poll): a live owner answers a handshake at once, and one across a partition this
/// node has not noticed yet would hold the client for the whole deadline (55 s by default),
/// past socket.io's own connect timeout (20 s).
pub const PLACEMENT_TIMEOUT: Duration = Duration::from_secs(3);

/// What a node needs to reach the others.
pub struct Cluster {
    pub membership: Arc<Membership>,
    pub peers: Arc<Peers>,
    /// How long a forwarded request may take: longer than the longest long-poll.
    pub rpc_timeout: Duration,
    pub metrics: Arc<Metrics>,
}

pub struct Router {
    node_id: Arc<str>,
    /// The engine's path, which names it to the peers it forwards to.
    path: String,
    engine: Arc<Engine>,
    cluster: Option<Arc<Cluster>>,
    /// Cancelled when the node stops: WebSockets relayed to other owners end with it.
    closing: CancellationToken,
}

/// The node id a sid names as its owner.
pub fn sid_owner(sid: &str) -> Option<&str> {
    sid.rsplit_once('.').map(|(_, owner)| owner).filter(|o| !o.is_empty())
}

enum Target {
    Local,
    Remote(Arc<Connection>),
}

impl Router {
    /// A router for a node on its own: everything is local.
    pub fn local(node_id: Arc<str>, engine: Arc<Engine>) -> Arc<Self> {
        Arc::new(Self { node_id, path: String::new(), engine, cluster: None, closing: CancellationToken::new() })
    }

    /// A router for the engine at `path` of a cluster member; every member serves the same
    /// engines at the same paths.
    pub fn clustered(node_id: Arc<str>, path: &str, engine: Arc<Engine>, cluster: Arc<Cluster>) -> Arc<Self> {
        Arc::new(Self {
            node_id,
            path: path.to_owned(),
            engine,
            cluster: Some(cluster),
            closing: CancellationToken::new(),
        })
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Stops: closes the sessions this node owns and ends the WebSockets it relays for other
    /// owners (their clients reconnect through another node).
    pub async fn shutdown(&self) {
        self.closing.cancel();
        self.engine.shutdown().await;
    }

    /// The max payload of the engine, for the HTTP layer's body limit.
    pub fn max_payload(&self) -> usize {
        self.engine.config().max_payload
    }

    /// Candidate owners for a new session with random id `key`, best first.
    /// A fresh session key that this node wins among the ready members, if one turns up in
    /// [`LOCAL_KEY_DRAWS`] draws (each wins with probability 1/N), with its ranking.
    fn local_key(&self) -> (String, Vec<String>) {
        let draw = || {
            let random = new_random_id();
            let ranking = self.placement(&random);
            (random, ranking)
        };
        let first = draw();
        if first.1.first().map(String::as_str) == Some(&*self.node_id) {
            return first;
        }
        (1..LOCAL_KEY_DRAWS)
            .map(|_| draw())
            .find(|(_, r)| r.first().map(String::as_str) == Some(&*self.node_id))
            .unwrap_or(first)
    }

    fn placement(&self, key: &str) -> Vec<String> {
        match &self.cluster {
            None => vec![self.node_id.to_string()],
            Some(c) => {
                let members = c.membership.members();
                let ready: Vec<&str> = members.ready().collect();
                if ready.is_empty() {
                    // Before the ring has converged (or while alone): serve it here.
                    return vec![self.node_id.to_string()];
                }
                Placement::new(ready).ranking(key).into_iter().map(str::to_owned).collect()
            }
        }
    }

    /// Where the owner of `node_id`'s sessions is reached.
    async fn target(&self, owner: &str) -> Result<Target, EngineError> {
        if owner == &*self.node_id {
            return Ok(Target::Local);
        }
        let cluster = self.cluster.as_ref().ok_or(EngineError::UnknownSid)?;
        let members = cluster.membership.members();
        let addr = members.get(owner).and_then(|m| m.dial()).ok_or(EngineError::UnknownSid)?;
        match cluster.peers.connection(owner, addr).await {
            Ok(conn) => Ok(Target::Remote(conn)),
            Err(err) => {
                warn!(owner, error = %err, "owner unreachable");
                Err(EngineError::UnknownSid)
            }
        }
    }

    /// Answers a polling request, here or at the session's owner.
    pub async fn handle_http(&self, mut req: EngineRequest) -> EngineResponse {
        let Some(sid) = req.query.sid.clone() else {
            if req.method != Method::Get || req.query.transport != crate::engineio::TransportKind::Polling {
                // Let the engine produce the protocol's error.
                return self.engine.handle_http(req).await;
            }
            let random = new_random_id();
            for owner in self.placement(&random) {
                let sid = format!("{random}.{owner}");
                // Named here, before its owner logs `Starting <sid> session`, so one session can
                // be followed across the nodes' logs (the next owner tried logs a new sid).
                debug!(%sid, "Received new connection for {sid}");
                req.new_sid = Some(sid);
                match self.target(&owner).await {
                    Ok(Target::Local) => return self.engine.handle_http(req).await,
                    Ok(Target::Remote(conn)) => match self.forward(&conn, req.clone(), Some(PLACEMENT_TIMEOUT)).await {
                        Ok(response) => return response,
                        Err(err) => warn!(owner, error = %err, "handshake not placed, trying the next node"),
                    },
                    Err(_) => continue,
                }
            }
            return EngineError::ShuttingDown.into_response();
        };
        match req.method {
            Method::Get => debug!(%sid, "Received poll request for {sid}"),
            _ => debug!(%sid, "Received push request for {sid}"),
        }
        let owner = sid_owner(&sid).unwrap_or_default().to_owned();
        match self.target(&owner).await {
            Ok(Target::Local) => self.engine.handle_http(req).await,
            Ok(Target::Remote(conn)) => match self.forward(&conn, req, None).await {
                Ok(response) => response,
                Err(err) => {
                    warn!(%sid, error = %err, "forwarding failed");
                    EngineError::UnknownSid.into_response()
                }
            },
            Err(err) => err.into_response(),
        }
    }

    /// Forwards `req` to the owner at the end of `conn`; `limit`, a deadline shorter than the
    /// forwarding deadline (`rpc_timeout`).
    async fn forward(
        &self,
        conn: &Arc<Connection>,
        req: EngineRequest,
        limit: Option<Duration>,
    ) -> Result<EngineResponse, crate::rpc::RpcError> {
        let deadline = self.cluster.as_ref().map_or(Duration::from_secs(60), |c| c.rpc_timeout);
        let timeout = limit.map_or(deadline, |limit| limit.min(deadline));
        let (kind, started) = (RequestKind::of(&req), std::time::Instant::now());
        let answer = conn.call(Request::Engine { path: self.path.clone(), req }, timeout).await;
        if let Some(c) = &self.cluster {
            c.metrics.forwarded(kind, Some(started.elapsed()));
        }
        match answer? {
            Response::Engine(response) => Ok(response),
            Response::Failed(reason) => Err(crate::rpc::RpcError::Connect { peer: conn.peer().to_owned(), reason }),
            _ => {
                Err(crate::rpc::RpcError::Connect { peer: conn.peer().to_owned(), reason: "unexpected answer".into() })
            }
        }
    }

    /// Closes a session whose POST body was too large (locally; a remote owner's session
    /// times out) and answers 413.
    pub fn reject_oversized(&self, query: &EngineQuery) -> EngineResponse {
        self.engine.reject_oversized(query)
    }

    /// Runs a client's WebSocket: served here, or relayed to the session's owner.
    ///
    /// Not an `async fn`: its arguments would stay in the future every WebSocket holds for its
    /// whole life. They go to the routing (the owner lookup, the stream's opening, and for a
    /// remote owner the relay), which is boxed and gives them back if the owner is this node.
    pub fn handle_websocket<Si, St, E>(
        self: &Arc<Self>,
        query: EngineQuery,
        sink: Si,
        stream: St,
    ) -> impl Future<Output = ()>
    where
        Si: Sink<WsMessage> + Send + Unpin,
        St: Stream<Item = Result<WsMessage, E>> + Send + Unpin,
    {
        let engine = self.engine.clone();
        let routed = Box::pin(self.clone().route_websocket(query, sink, stream));
        async move {
            // Not `if let`: the matched value would be kept in this future (unused) for the
            // connection's whole life.
            let Some(Local { query, new_sid, sink, stream }) = routed.await else { return };
            engine.handle_websocket(query, new_sid, None, sink, stream).await;
        }
    }

    /// Finds the WebSocket's owner: `Some` if it is this node; otherwise relays the WebSocket
    /// to the owner until it ends, or closes it if no owner is reachable.
    async fn route_websocket<Si, St, E>(
        self: Arc<Self>,
        query: EngineQuery,
        mut sink: Si,
        stream: St,
    ) -> Option<Local<Si, St>>
    where
        Si: Sink<WsMessage> + Send + Unpin,
        St: Stream<Item = Result<WsMessage, E>> + Send + Unpin,
    {
        let candidates = match &query.sid {
            Some(sid) => {
                debug!(%sid, "Received WebSocket request for {sid}");
                vec![(sid_owner(sid).unwrap_or_default().to_owned(), None)]
            }
            None => {
                // A WebSocket from the start is the session's only connection: relaying every
                // frame through a second node buys nothing. So mint a session id whose
                // rendezvous winner is this node (a few draws: one in N wins), keeping the rule
                // that a session's owner is the winner of its id; the ranking stays the fallback.
                let (random, ranking) = self.local_key();
                ranking.into_iter().map(|owner| (owner.clone(), Some(format!("{random}.{owner}")))).collect()
            }
        };
        for (owner, new_sid) in candidates {
            if let Some(sid) = &new_sid {
                debug!(%sid, "Received new connection for {sid}");
            }
            match self.target(&owner).await {
                Ok(Target::Local) => return Some(Local { query, new_sid, sink, stream }),
                Ok(Target::Remote(conn)) => {
                    let open = StreamOpen { path: self.path.clone(), query: query.clone(), new_sid };
                    match conn.open_stream(open).await {
                        Ok(rpc) => {
                            if let Some(c) = &self.cluster {
                                c.metrics.forwarded(RequestKind::Websocket, None);
                            }
                            relay(rpc, sink, stream, &self.closing, self.engine.config().ping_timeout).await;
                            return None;
                        }
                        Err(err) => warn!(owner, error = %err, "cannot open a stream to the owner"),
                    }
                }
                Err(_) => {}
            }
        }
        let _ = sink.send(WsMessage::Close(None)).await;
        None
    }
}

/// A WebSocket whose session this node owns, as the routing gives it back.
struct Local<Si, St> {
    query: EngineQuery,
    new_sid: Option<String>,
    sink: Si,
    stream: St,
}

/// Pumps a client's WebSocket to and from the owner's stream until either side ends.
async fn relay<Si, St, E>(
    rpc: RpcStream,
    mut sink: Si,
    mut stream: St,
    closing: &CancellationToken,
    write_limit: Duration,
) where
    Si: Sink<WsMessage> + Send + Unpin,
    St: Stream<Item = Result<WsMessage, E>> + Send + Unpin,
{
    let (to_owner, mut from_owner) = rpc.split();
    loop {
        tokio::select! {
            msg = stream.next() => match msg {
                Some(Ok(WsMessage::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(msg)) => if let Some(frame) = WsFrame::from_ws(msg) {
                    if to_owner.send(frame).await.is_err() {
                        break;
                    }
                },
            },
            _ = closing.cancelled() => break,
            frame = from_owner.recv() => match frame {
                // A client that stops reading holds this write; it gets as long as a silent
                // client gets from the owner's heartbeat, then the relay gives up on it.
                Some(frame) => match tokio::time::timeout(write_limit, sink.send(frame.into_ws())).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) | Err(_) => return,
                },
                None => break,
            },
        }
    }
    // Dropping `from_owner` closes the stream, which ends the session's WebSocket at the owner.
    let _ = tokio::time::timeout(write_limit, sink.send(WsMessage::Close(None))).await;
}

/// Serves what peers ask of this node: forwarded requests and streams for the sessions
/// its `engines` (by path) own, and room traffic.
pub fn peer_handler(
    engines: Vec<(String, Arc<Engine>)>,
    rooms: Arc<ClusterRooms>,
    history: Option<Arc<ClusterHistory>>,
    stats: Arc<RpcStats>,
    admin: Option<Arc<crate::admin::Admin>>,
) -> Arc<dyn RpcHandler> {
    Arc::new(PeerHandler { engines, rooms, history, stats, admin })
}

/// This node as peers see it: forwarded polling requests and WebSocket streams go to the
/// engine at their path, room traffic to the cluster rooms, room history to its layer.
struct PeerHandler {
    engines: Vec<(String, Arc<Engine>)>,
    rooms: Arc<ClusterRooms>,
    /// `None`: this node keeps no history (`chat.history_len = 0`).
    history: Option<Arc<ClusterHistory>>,
    stats: Arc<RpcStats>,
    /// The Admin UI's side, when `[admin]` is configured.
    admin: Option<Arc<crate::admin::Admin>>,
}

impl PeerHandler {
    fn engine(&self, path: &str) -> Option<Arc<Engine>> {
        self.engines.iter().find(|(p, _)| p == path).map(|(_, e)| e.clone())
    }

    /// Whether a message that names `node` came from it: a peer speaks only for itself.
    fn names_its_sender(&self, peer: &str, node: &str, what: &str) -> bool {
        if peer == node {
            return true;
        }
        self.stats.claims_refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        warn!(peer, named = node, what, "refused a message naming another node than its sender");
        false
    }
}

impl RpcHandler for PeerHandler {
    fn request(&self, peer: &str, request: Request) -> futures_util::future::BoxFuture<'static, Response> {
        match request {
            Request::Subscribe { node, .. } if !self.names_its_sender(peer, &node, "Subscribe") => {
                Box::pin(std::future::ready(Response::Failed(format!("{peer} may not subscribe for {node}"))))
            }
            Request::Engine { path, req } => match self.engine(&path) {
                Some(engine) => Box::pin(async move { Response::Engine(engine.handle_http(req).await) }),
                None => Box::pin(std::future::ready(Response::Failed(format!("no engine at {path}")))),
            },
            Request::Subscribe { node, nsp, room, labels, version } => {
                Box::pin(std::future::ready(self.rooms.on_subscribe(&node, &nsp, &room, labels, version)))
            }
            Request::History { nsp, room } => Box::pin(std::future::ready(match &self.history {
                Some(history) => history.on_history(&nsp, &room),
                None => Response::History(Vec::new()),
            })),
            Request::HistoryMerge { rooms } => Box::pin(std::future::ready(match &self.history {
                Some(history) => history.on_merge(rooms),
                None => Response::Failed("this node keeps no room history".into()),
            })),
            Request::Keep { nsp, record, seed } => self.rooms.on_keep(peer, &nsp, record, seed, false),
            Request::Adopt { nsp, record, seed } => self.rooms.on_keep(peer, &nsp, record, seed, true),
            Request::FindParked { nsp, pid } => self.rooms.on_find_parked(&nsp, &pid),
            Request::Barrier { token } => Box::pin(std::future::ready(self.rooms.on_barrier(peer, token))),
            Request::Knows { generation } => Box::pin(std::future::ready(self.rooms.on_knows(peer, generation))),
            Request::Holds { nsp, pid, sid } => Box::pin(std::future::ready(self.rooms.on_holds(&nsp, &pid, &sid))),
            Request::TakeParked { nsp, pid, offset } => self.rooms.on_take_parked(&nsp, &pid, &offset),
            Request::Admin(body) => match &self.admin {
                Some(admin) => admin.on_peer_request(body),
                None => Box::pin(std::future::ready(Response::Failed("no [admin] on this node".into()))),
            },
        }
    }

    fn push(&self, peer: &str, push: crate::rpc::Push) {
        if let crate::rpc::Push::Presence { node, .. } = &push {
            if !self.names_its_sender(peer, node, "Presence") {
                return;
            }
        }
        match push {
            crate::rpc::Push::Record { nsp, room, entry } => {
                if let Some(history) = &self.history {
                    history.on_record(nsp, room, entry);
                }
            }
            push => self.rooms.on_push(peer, push),
        }
    }

    fn stream(&self, peer: &str, open: StreamOpen, stream: RpcStream) -> futures_util::future::BoxFuture<'static, ()> {
        let Some(engine) = self.engine(&open.path) else {
            warn!(path = open.path, "stream for an unknown engine refused");
            return Box::pin(std::future::ready(())); // dropping the stream closes it
        };
        // The channel proved this peer's identity: the relay a session's recovery avoids.
        let peer: Arc<str> = peer.into();
        Box::pin(async move {
            let (tx, rx) = stream.split();
            // Never fails: an unfold sink that failed once panics on the next send, and the
            // engine may still say goodbye. A closed stream shows on the receiving half.
            let sink = Box::pin(futures_util::sink::unfold(tx, |tx, msg: WsMessage| async move {
                if let Some(frame) = WsFrame::from_ws(msg) {
                    let _ = tx.send(frame).await;
                }
                Ok::<_, Infallible>(tx)
            }));
            let stream = Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|frame| (Ok::<_, Infallible>(frame.into_ws()), rx))
            }));
            engine.handle_websocket(open.query, open.new_sid, Some(peer), sink, stream).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The router's future around the engine's, which a local WebSocket holds for its whole
    /// life: the routing is boxed, so it adds little.
    #[tokio::test]
    async fn a_local_websocket_holds_little_more_than_the_engines_future() {
        use crate::engineio::session::{CloseReason, EngineHandler, Message, Session};
        use crate::engineio::EngineConfig;
        use tokio_tungstenite::tungstenite::protocol::Role;
        use tokio_tungstenite::WebSocketStream;
        struct Nop;
        impl EngineHandler for Nop {
            fn on_open(&self, _: &Arc<Session>) {}
            fn on_message(&self, _: &Arc<Session>, _: Message) {}
            fn on_close(&self, _: &Arc<Session>, _: CloseReason) {}
        }
        let ws = || async {
            let (io, _peer) = tokio::io::duplex(64);
            WebSocketStream::from_raw_socket(io, Role::Server, None).await.split()
        };
        let engine = Engine::new(EngineConfig::default(), Arc::new(Nop));
        let router = Router::local("n1".into(), engine.clone());
        let query = || EngineQuery::parse("EIO=4&transport=websocket").unwrap();
        let (sink, stream) = ws().await;
        let engines = std::mem::size_of_val(&engine.handle_websocket(query(), None, None, sink, stream));
        let (sink, stream) = ws().await;
        let routers = std::mem::size_of_val(&router.handle_websocket(query(), sink, stream));
        eprintln!("router's future: {routers} B, the engine's: {engines} B");
        assert!(routers <= engines + 32, "router {routers} B, engine {engines} B");
    }

    #[test]
    fn sids_name_their_owner() {
        assert_eq!(sid_owner("AbC-_x.node2"), Some("node2"));
        assert_eq!(sid_owner("a.b.node-3"), Some("node-3"));
        assert_eq!(sid_owner("nodot"), None);
        assert_eq!(sid_owner("trailing."), None);
    }
}
