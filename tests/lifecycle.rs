//! A node's whole life: it starts, serves chat across a cluster, shuts down, and leaves
//! nothing behind: no task of its own still running once its shutdown returned, its engine and
//! rooms freed.
//!
//! Each node runs on a current-thread runtime of its own, on a thread of its own: every task a
//! node starts lands on its runtime, and on a current-thread runtime a task that ended is gone
//! from the runtime's count before the shutdown that waited for it returns. So the count is
//! read right after the shutdown, with no grace period: a task that the shutdown did not stop
//! and wait for (one that ends a moment later, or never) fails the test.

mod support;

use std::net::SocketAddr;
use std::sync::{mpsc, Arc, Weak};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use clusterchat::cluster::history::ClusterHistory;
use clusterchat::cluster::rooms::ClusterRooms;
use clusterchat::cluster::router::sid_owner;
use clusterchat::engineio::Engine;
use clusterchat::history::HistoryStore;
use clusterchat::node::Node;
use support::cluster::{node_config, unique_cluster_id};
use support::polling::ChatClient;
use support::server::within;

const NODES: usize = 3;

type ClientWs = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What a node's thread reports as the node runs and once it stopped.
enum Report {
    Started {
        http: SocketAddr,
        gossip: SocketAddr,
    },
    /// Every node of the cluster is a ready member, as this one sees it.
    Converged,
}

/// What is left of a node once it shut down.
struct Stopped {
    /// Whether its shutdown returned (within 30 s).
    finished: bool,
    /// Tasks alive on the node's runtime right after its shutdown returned.
    alive: usize,
    engine: Weak<Engine>,
    rooms: Weak<ClusterRooms>,
    history: Weak<ClusterHistory>,
    store: Weak<HistoryStore>,
}

/// A node running on its own thread and runtime.
struct Running {
    http: SocketAddr,
    gossip: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<Stopped>,
    reports: mpsc::Receiver<Report>,
}

impl Running {
    /// Starts `nodeN` (`index` N - 1), seeded with `seed`, and waits until it serves.
    fn start(index: usize, cluster_id: &str, seed: Option<SocketAddr>) -> Self {
        let config =
            node_config(&format!("node{}", index + 1), cluster_id, seed.map(|s| s.to_string()).into_iter().collect());
        let (reports_tx, reports) = mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let left = runtime.block_on(async move {
                let node = Node::start(config).await.expect("node starts");
                let membership = node.membership().expect("clustered").clone();
                let gossip = node.gossip_addr().expect("clustered");
                reports_tx.send(Report::Started { http: node.http_addr(), gossip }).unwrap();
                let mut members = membership.subscribe();
                members.wait_for(|m| m.ready().count() == NODES).await.expect("membership runs");
                reports_tx.send(Report::Converged).unwrap();
                let left = (
                    Arc::downgrade(node.engine()),
                    Arc::downgrade(node.rooms().unwrap()),
                    Arc::downgrade(node.history().unwrap()),
                    Arc::downgrade(node.history_store().unwrap()),
                );
                drop(membership); // the node's, not the test's, to free
                let _ = stopped.await;
                // A task that the shutdown waits for and that never ends hangs it.
                let limit = std::time::Duration::from_secs(30);
                let finished = tokio::time::timeout(limit, node.shutdown()).await.is_ok();
                (left, finished)
            });
            // The engine's lifecycle task is aborted when the engine drops, at the end of the
            // shutdown: one turn of the runtime reaps it (a task waiting for anything is still
            // counted).
            runtime.block_on(tokio::task::yield_now());
            let alive = runtime.metrics().num_alive_tasks();
            let ((engine, rooms, history, store), finished) = left;
            Stopped { finished, alive, engine, rooms, history, store }
        });
        let Ok(Report::Started { http, gossip }) = reports.recv() else { panic!("node{} did not start", index + 1) };
        Self { http, gossip, stop, thread, reports }
    }

    /// Waits until the node sees every node of the cluster ready.
    fn converged(&self) {
        let report = self.reports.recv_timeout(std::time::Duration::from_secs(15));
        assert!(matches!(report, Ok(Report::Converged)), "the cluster did not converge");
    }

    /// Stops the node and returns what is left of it.
    fn shut_down(self) -> Stopped {
        self.stop.send(()).expect("node still runs");
        self.thread.join().expect("node thread")
    }
}

/// A polling client's owner, by index.
fn owner(sid: &str) -> usize {
    let id = sid_owner(sid).expect("a clustered sid");
    id.strip_prefix("node").and_then(|n| n.parse::<usize>().ok()).expect("nodeN") - 1
}

/// A WebSocket that upgrades `sid`'s polling session, reached through `node`.
async fn upgrade(node: SocketAddr, sid: &str) -> ClientWs {
    let url = format!("ws://{node}/socket.io/?EIO=4&transport=websocket&sid={sid}");
    let (mut ws, _) =
        within("WebSocket", tokio_tungstenite::connect_async(url.as_str())).await.expect("upgrade accepted");
    ws.send(WsMessage::Text("2probe".into())).await.unwrap();
    let probe = within("probe answer", ws.next()).await.expect("open").expect("a message");
    assert_eq!(probe, WsMessage::Text("3probe".into()));
    ws.send(WsMessage::Text("5".into())).await.unwrap();
    ws
}

/// The next text message of `ws` that starts with `prefix` (PINGs answered, others skipped).
async fn ws_expect(ws: &mut ClientWs, prefix: &str) -> String {
    within("a WebSocket message", async {
        loop {
            match ws.next().await {
                Some(Ok(WsMessage::Text(t))) if t.as_str() == "2" => {
                    ws.send(WsMessage::Text("3".into())).await.unwrap()
                }
                Some(Ok(WsMessage::Text(t))) if t.as_str().starts_with(prefix) => return t.as_str().to_owned(),
                Some(Ok(_)) => continue,
                other => panic!("expected {prefix:?}, got {other:?}"),
            }
        }
    })
    .await
}

fn say(room: &str, message: &str) -> String {
    format!("42/chat,{}", json!(["chat message", { "room": room, "message": message }]))
}

#[test]
fn every_node_that_shut_down_leaves_no_task_and_frees_its_state() {
    let cluster_id = unique_cluster_id();
    let first = Running::start(0, &cluster_id, None);
    let seed = first.gossip;
    let mut nodes = vec![first];
    nodes.extend((1..NODES).map(|i| Running::start(i, &cluster_id, Some(seed))));
    for node in &nodes {
        node.converged();
    }
    let http: Vec<SocketAddr> = nodes.iter().map(|n| n.http).collect();
    // A node other than `owner`: a request sent there is served over the RPC.
    let elsewhere = |owner: usize| http[(owner + 1) % NODES];

    let clients = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (held, late_poll) = clients.block_on(async {
        let mut alice = ChatClient::connect(http[0], "alice").await;
        let mut bob = ChatClient::connect(http[2], "bob").await;
        let (a, b) = (elsewhere(owner(&alice.sid)), elsewhere(owner(&bob.sid)));
        // Joins and messages through nodes that do not own the session: RPC requests, joins
        // asking every peer, `room users` timers, history reads.
        alice.join(a, "lobby").await;
        bob.join(b, "lobby").await;
        alice.post(a, &say("lobby", "hi")).await;
        bob.expect(b, "42/chat,[\"chat message\"").await;

        // carol's session runs on a WebSocket relayed by a node that does not own it: a relay
        // on that node, a stream on the owner. Both are still open when the nodes stop.
        let mut carol = ChatClient::connect(http[1], "carol").await;
        carol.join(http[1], "lobby").await;
        let mut ws = upgrade(elsewhere(owner(&carol.sid)), &carol.sid).await;
        alice.post(a, &say("lobby", "to the websocket")).await;
        ws_expect(&mut ws, "42/chat,[\"chat message\"").await;
        ws.send(WsMessage::Text(say("lobby", "from the websocket").into())).await.unwrap();
        bob.expect(b, "42/chat,[\"chat message\"").await;

        // A reconnection with a private session id nobody parked: a restore that asks every
        // node, then a new socket.
        let (dave, answer) =
            ChatClient::connect_with(http[2], json!({ "user": "dave", "pid": "not-parked", "offset": "" })).await;
        assert!(answer.contains("\"pid\""), "{answer}");
        // A binary packet whose attachment never comes: its timer runs when the nodes stop.
        dave.post(elsewhere(owner(&dave.sid)), "451-/chat,[\"x\",{\"_placeholder\":true,\"num\":0}]").await;
        // bob leaves and joins again: `room users` timers on every node.
        bob.post(b, &format!("42/chat,{}", json!(["leave room", { "room": "lobby" }]))).await;
        bob.join(b, "lobby").await;

        // A long-poll waiting on its owner through another node as the nodes stop: an RPC
        // request still being served.
        let url = format!("http://{b}/socket.io/?EIO=4&transport=polling&sid={}", bob.sid);
        let late_poll = tokio::spawn(reqwest::get(url));
        ((alice, bob, carol, ws, dave), late_poll)
    });

    let mut left = Vec::new();
    for (i, node) in nodes.into_iter().enumerate() {
        let stopped = node.shut_down();
        assert!(stopped.finished, "node{}: its shutdown did not return", i + 1);
        assert_eq!(stopped.alive, 0, "node{}: tasks still running after its shutdown returned", i + 1);
        left.push(stopped);
    }
    clients.block_on(async move {
        let _ = late_poll.await; // answered or refused as its nodes stopped: either will do
        drop(held);
    });
    for (i, stopped) in left.iter().enumerate() {
        let node = i + 1;
        assert!(stopped.engine.upgrade().is_none(), "node{node}: a stopped node's engine is still held");
        assert!(stopped.rooms.upgrade().is_none(), "node{node}: a stopped node's cluster rooms are still held");
        assert!(stopped.history.upgrade().is_none(), "node{node}: a stopped node's room history layer is still held");
        assert!(stopped.store.upgrade().is_none(), "node{node}: a stopped node's room history store is still held");
    }
}
