//! The cluster without sticky sessions: clients whose every request lands on the next node in
//! turn (a per-request round-robin balancer in front of three nodes) chat with each other;
//! sessions survive a node joining; a dead owner's sessions get clean 400s; the RPC port
//! refuses strangers. In-process clusters, and one of three real processes.

use std::time::Duration;

use rust_socketio::TransportType;
use serde_json::{json, Value};

mod support;
use support::chat_client::{run_client_script, run_script, RustClient};
use support::cluster::{spawn_processes, TestCluster};
use support::rr_proxy::RoundRobinProxy;

const STEP: Duration = Duration::from_secs(10);

async fn proxy_over(cluster: &TestCluster) -> RoundRobinProxy {
    RoundRobinProxy::start("127.0.0.1:0".parse().unwrap(), cluster.http_addrs()).await.expect("proxy starts")
}

/// Connects `user` through `url` and returns the client with the node owning its session.
async fn connect(url: &str, user: &str, transport: TransportType) -> (RustClient, String) {
    let mut client = RustClient::connect(url, user, transport).await;
    let welcome = client.expect("welcome").await;
    assert_eq!(welcome["user"], json!(user));
    let owner = welcome["node"].as_str().expect("welcome names the owner").to_owned();
    (client, owner)
}

/// Two users whose sessions are owned by different nodes, both connected through `url`.
/// Placement is a hash of a random id, so clients are opened until the owners differ.
async fn users_on_two_owners(
    url: &str,
    transport: fn() -> TransportType,
) -> ((RustClient, String), (RustClient, String)) {
    let alice = connect(url, "alice", transport()).await;
    for attempt in 0..20 {
        let bob = connect(url, "bob", transport()).await;
        if bob.1 != alice.1 {
            return (alice, bob);
        }
        bob.0.client.disconnect().await.expect("disconnect");
        assert!(attempt < 19, "twenty sessions in a row were all placed on {}", alice.1);
    }
    unreachable!()
}

async fn chat_across_owners(transport: fn() -> TransportType) {
    let cluster = TestCluster::chat(3).await;
    let proxy = proxy_over(&cluster).await;
    let ((mut alice, alice_owner), (mut bob, bob_owner)) = users_on_two_owners(&proxy.url(), transport).await;
    assert_ne!(alice_owner, bob_owner);

    let room = "across ☕";
    assert_eq!(alice.call("join room", json!({ "room": room })).await, json!({ "ok": true }));
    assert_eq!(alice.expect("join room").await, json!({ "user": "alice", "room": room }));
    assert_eq!(bob.call("join room", json!({ "room": room })).await, json!({ "ok": true }));
    assert_eq!(alice.expect("join room").await, json!({ "user": "bob", "room": room }));
    alice.expect_users(room, &["alice", "bob"]).await;
    bob.expect_users(room, &["alice", "bob"]).await;

    for (from, text) in [("alice", "hello from one node"), ("bob", "and back from another")] {
        let sender = if from == "alice" { &alice } else { &bob };
        assert_eq!(sender.call("chat message", json!({ "room": room, "message": text })).await, json!({ "ok": true }));
        let want = json!({ "user": from, "room": room, "message": text });
        assert_eq!(alice.expect("chat message").await, want);
        assert_eq!(bob.expect("chat message").await, want);
    }

    bob.client.disconnect().await.expect("disconnect");
    assert_eq!(alice.expect("leave room").await, json!({ "user": "bob", "room": room }));
    alice.expect_users(room, &["alice"]).await;
    alice.client.disconnect().await.expect("disconnect");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_websocket_clients_chat_across_owners() {
    chat_across_owners(|| TransportType::Websocket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_polling_clients_chat_across_owners() {
    chat_across_owners(|| TransportType::Polling).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_upgrading_clients_chat_across_owners() {
    chat_across_owners(|| TransportType::WebsocketUpgrade).await;
}

/// The Node and Python clients, every request of theirs balanced round robin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clients_through_round_robin() {
    let cluster = TestCluster::chat(3).await;
    let proxy = proxy_over(&cluster).await;
    run_client_script("node", "chat_v4.mjs", &proxy.url()).await;
    run_client_script("node", "chat_v2.cjs", &proxy.url()).await;
    run_client_script("python3", "chat_py.py", &proxy.url()).await;
    cluster.shutdown().await;
}

/// Nodes with plain gossip digests (chitchat protocol V0, the default) and one with compressed
/// ones (`cluster.gossip_compress_digest`, V1) form one ring: each answers in the version it is
/// asked in, and chats across owners with every datagram accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_and_compressed_gossip_digests_form_one_ring() {
    let cluster =
        TestCluster::start(3, Box::new(|c| vec![clusterchat::node::Service::chat(c).expect("chat service")]), |c| {
            if c.node_id == "node2" {
                c.cluster.as_mut().expect("clustered").gossip_compress_digest = true;
            }
        })
        .await;
    let proxy = proxy_over(&cluster).await;
    run_client_script("node", "chat_v4.mjs", &proxy.url()).await;
    for node in cluster.live() {
        let rejections = node.membership().expect("clustered").rejections();
        for reason in clusterchat::cluster::gossip_wire::Reject::ALL {
            assert_eq!(rejections.count(reason), 0, "{} refused {reason:?}", node.node_id());
        }
    }
    cluster.shutdown().await;
}

/// python-socketio over polling only, through the round-robin balancer: 12 clients in two
/// rooms each send 30 messages each at once, no pacing. python-engineio drops a session whose
/// poll brings more than 16 packets, so this passes only because responses are capped at
/// `engine.max_polling_packets` (16) with the rest left for the next poll; the script checks
/// every message arrived exactly once and in each sender's order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_polling_clients_under_a_burst_keep_their_sessions() {
    let cluster = TestCluster::chat(3).await;
    let proxy = proxy_over(&cluster).await;
    let url = proxy.url();
    // Each client waits at most 25 s for its messages (2,880 deliveries take about 2 s here),
    // and the script's own watchdog (4 x 25 s) reports a hang before the runner's 120 s.
    let out = run_script("python3", "polling_burst.py", &[&url, "--clients=12", "--messages=30", "--timeout=25"]).await;
    assert!(out.contains("polling burst: PASS"), "{out}");
    println!("{}", out.trim());
    cluster.shutdown().await;
}

/// Minimal raw Engine.IO v4 polling, to look at status codes and bodies.
struct Raw {
    http: reqwest::Client,
}

impl Raw {
    fn new() -> Self {
        Self { http: reqwest::Client::builder().timeout(STEP).build().unwrap() }
    }

    /// Opens a polling session through `base`; returns its sid.
    async fn handshake(&self, base: &str) -> String {
        let body = self.get(base, "").await.1;
        let open: Value = serde_json::from_str(body.strip_prefix('0').expect("an OPEN packet")).unwrap();
        let keys: Vec<&str> = open.as_object().unwrap().keys().map(String::as_str).collect();
        // Exactly the keys of the spec: the owner is in the sid, not in an extra field.
        assert_eq!(keys, ["sid", "upgrades", "pingInterval", "pingTimeout", "maxPayload"]);
        open["sid"].as_str().unwrap().to_owned()
    }

    async fn get(&self, base: &str, sid: &str) -> (u16, String) {
        let sid = if sid.is_empty() { String::new() } else { format!("&sid={sid}") };
        let r = self.http.get(format!("{base}/socket.io/?EIO=4&transport=polling{sid}")).send().await.expect("GET");
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn post(&self, base: &str, sid: &str, body: &str) -> (u16, String) {
        let url = format!("{base}/socket.io/?EIO=4&transport=polling&sid={sid}");
        let r = self.http.post(url).body(body.to_owned()).send().await.expect("POST");
        (r.status().as_u16(), r.text().await.unwrap())
    }
}

fn owner_of(sid: &str) -> &str {
    sid.rsplit_once('.').expect("sid names its owner").1
}

fn assert_session_unknown((status, body): (u16, String)) {
    assert_eq!(status, 400, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), json!({ "code": 1, "message": "Session ID unknown" }));
}

/// Each request of one session sent to a different node, by hand: handshake on one, CONNECT
/// on the next, the answer polled from the third.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_of_a_session_on_a_different_node() {
    let cluster = TestCluster::chat(3).await;
    let raw = Raw::new();
    let urls: Vec<String> = (0..3).map(|i| cluster.url(i)).collect();
    let sid = raw.handshake(&urls[0]).await;
    assert_eq!(raw.post(&urls[1], &sid, "40/chat,{\"user\":\"zoe\"}").await, (200, "ok".into()));
    // The CONNECT answer and the welcome, polled from the other two nodes in turn.
    let mut packets = Vec::new();
    for url in urls[2..].iter().chain(urls[..2].iter()).cycle() {
        let (status, body) = raw.get(url, &sid).await;
        assert_eq!(status, 200, "{body}");
        packets.extend(body.split('\x1e').map(str::to_owned));
        if packets.len() >= 2 {
            break;
        }
    }
    assert!(packets[0].starts_with("40/chat,{\"sid\":"), "{packets:?}");
    let welcome = format!("\"node\":\"{}\"", owner_of(&sid));
    assert!(packets[1].starts_with("42/chat,[\"welcome\"") && packets[1].contains(&welcome), "{packets:?}");
    // Only the owner holds the session.
    for node in cluster.live() {
        let held = node.engine().session(&sid).is_some();
        assert_eq!(held, node.node_id() == owner_of(&sid), "{} holds {sid}: {held}", node.node_id());
    }
    cluster.shutdown().await;
}

/// A fourth node joins while sessions run: they stay reachable through every node, and new
/// sessions start landing on the newcomer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_breaks_no_session() {
    let mut cluster = TestCluster::chat(3).await;
    let proxy = proxy_over(&cluster).await;
    let ((mut alice, _), (mut bob, _)) = users_on_two_owners(&proxy.url(), || TransportType::Polling).await;
    let (mut carol, _) = connect(&proxy.url(), "carol", TransportType::Websocket).await;
    let room = "steady";
    for c in [&alice, &bob, &carol] {
        assert_eq!(c.call("join room", json!({ "room": room })).await, json!({ "ok": true }));
    }

    cluster.add_node().await;
    cluster.wait_converged().await;

    for (i, sender) in [&alice, &bob, &carol].into_iter().enumerate() {
        let text = format!("after the join {i}");
        assert_eq!(sender.call("chat message", json!({ "room": room, "message": text })).await, json!({ "ok": true }));
    }
    // Every member gets each message once. Messages of different senders, published on
    // different nodes, may arrive in either order (one sender's keep theirs).
    for c in [&mut alice, &mut bob, &mut carol] {
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(c.expect("chat message").await.to_string());
        }
        got.sort();
        let mut want: Vec<String> = ["alice", "bob", "carol"]
            .into_iter()
            .enumerate()
            .map(|(i, user)| {
                json!({ "user": user, "room": room, "message": format!("after the join {i}") }).to_string()
            })
            .collect();
        want.sort();
        assert_eq!(got, want);
    }

    // The newcomer takes new sessions, reached through the old nodes (the proxy knows only them).
    let raw = Raw::new();
    let mut owners = std::collections::BTreeSet::new();
    for _ in 0..40 {
        owners.insert(owner_of(&raw.handshake(&proxy.url()).await).to_owned());
        if owners.contains("node4") {
            break;
        }
    }
    assert!(owners.contains("node4"), "40 new sessions, none placed on node4: {owners:?}");
    for c in [alice, bob, carol] {
        c.client.disconnect().await.expect("disconnect");
    }
    cluster.shutdown().await;
}

/// A node that stops takes its sessions with it: requests for them through the others get
/// the protocol's "Session ID unknown", and new sessions go to the living.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_owners_sessions_are_unknown_to_the_others() {
    let mut cluster = TestCluster::chat(3).await;
    let raw = Raw::new();
    let sid = raw.handshake(&cluster.url(0)).await;
    let owner = cluster.live().position(|n| n.node_id() == owner_of(&sid)).unwrap();
    let other = (owner + 1) % 3;
    let other_url = cluster.url(other);
    // The others hear the leaver say it is not ready before they count it dead, so they let
    // it go at once (a ready member counted dead is kept for `cluster.member_grace_ms`).
    let mut members = cluster.node(other).membership().unwrap().subscribe();
    let owner_id = format!("node{}", owner + 1);
    let heard_not_ready = tokio::spawn(async move {
        let mut not_ready = false;
        loop {
            match members.borrow_and_update().get(&owner_id) {
                Some(info) => not_ready |= !info.ready,
                None => return not_ready,
            }
            if members.changed().await.is_err() {
                return not_ready;
            }
        }
    });
    cluster.stop(owner).await;
    let heard = tokio::time::timeout(std::time::Duration::from_secs(15), heard_not_ready).await;
    assert!(heard.expect("the stopped node leaves the members").unwrap(), "its peers heard it was not ready first");
    assert_session_unknown(raw.get(&other_url, &sid).await);
    assert_session_unknown(raw.post(&other_url, &sid, "40").await);
    let fresh = raw.handshake(&other_url).await;
    assert_ne!(owner_of(&fresh), format!("node{}", owner + 1));
    cluster.shutdown().await;
}

/// The RPC port talks only to members: a wrong secret fails the handshake, and frames sent
/// without one are dropped with the connection, never served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_rpc_peer_is_refused() {
    use futures_util::SinkExt;
    use tokio::io::AsyncReadExt;

    let cluster = TestCluster::chat(3).await;
    let rpc = cluster.node(0).rpc_addr().unwrap();

    let mut stream = tokio::net::TcpStream::connect(rpc).await.unwrap();
    let wrong = clusterchat::keyring::Keyring::single("not the cluster secret");
    let refused = clusterchat::rpc::noise::dial(&mut stream, &wrong, "node2", "node1", STEP).await;
    assert!(refused.is_err(), "a wrong secret authenticated");

    // A well-formed forwarded handshake, sent straight after connecting.
    let stream = tokio::net::TcpStream::connect(rpc).await.unwrap();
    let mut framed = tokio_util::codec::Framed::new(stream, tokio_util::codec::LengthDelimitedCodec::new());
    let request = clusterchat::rpc::RpcFrame::Request {
        id: 1,
        body: clusterchat::rpc::Request::Engine {
            path: "/socket.io/".into(),
            req: clusterchat::engineio::EngineRequest {
                method: clusterchat::engineio::Method::Get,
                query: clusterchat::engineio::EngineQuery::parse("EIO=4&transport=polling").unwrap(),
                binary_body: false,
                body: Default::default(),
                new_sid: Some("forged.node1".into()),
            },
        },
    };
    let _ = framed.send(clusterchat::rpc::message::encode(&request).unwrap()).await;
    let mut stream = framed.into_inner();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(STEP, stream.read_to_end(&mut rest)).await.expect("the node hangs up");
    // The dialer speaks first: the node never said a byte to an unauthenticated peer.
    assert!(rest.is_empty(), "the node answered an unauthenticated peer: {rest:?}");
    assert!(cluster.node(0).engine().session("forged.node1").is_none());
    assert_eq!(cluster.node(0).engine().session_count(), 0);

    // Members still talk: a session forwarded between them works.
    let raw = Raw::new();
    let sid = raw.handshake(&cluster.url(1)).await;
    assert_eq!(raw.post(&cluster.url(2), &sid, "40/chat,{\"user\":\"ok\"}").await, (200, "ok".into()));
    cluster.shutdown().await;
}

/// Three processes behind the round-robin balancer: the real clients chat; then the owner of a
/// session is killed: its requests get clean 400s from the others, new handshakes (a client
/// reconnecting) get a live owner, and a user owned by a survivor keeps chatting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_survive_a_killed_owner() {
    let mut nodes = spawn_processes(env!("CARGO_BIN_EXE_clusterchat"), 3).await;
    let urls: Vec<String> = nodes.iter().map(|n| format!("http://{}", n.http)).collect();
    let proxy =
        RoundRobinProxy::start("127.0.0.1:0".parse().unwrap(), nodes.iter().map(|n| n.http).collect()).await.unwrap();
    run_client_script("node", "chat_v4.mjs", &proxy.url()).await;

    let raw = Raw::new();
    let sid = raw.handshake(&proxy.url()).await;
    let victim = owner_of(&sid).to_owned();
    let index = |node: &str| node.trim_start_matches("node").parse::<usize>().unwrap() - 1;
    let survivor = &urls[(index(&victim) + 1) % 3];
    // Alice: connected to a survivor and owned by a survivor.
    let mut alice = loop {
        let (client, owner) = connect(survivor, "alice", TransportType::Websocket).await;
        if owner != victim {
            break client;
        }
        client.client.disconnect().await.expect("disconnect");
    };
    assert_eq!(alice.call("join room", json!({ "room": "before" })).await, json!({ "ok": true }));

    nodes[index(&victim)].child.kill().await.expect("kill -9");
    for (i, url) in urls.iter().enumerate() {
        if i != index(&victim) {
            assert_session_unknown(raw.get(url, &sid).await);
            for _ in 0..3 {
                assert_ne!(owner_of(&raw.handshake(url).await), victim, "a new session placed on the dead node");
            }
        }
    }
    assert_eq!(
        alice.call("chat message", json!({ "room": "before", "message": "still here" })).await,
        json!({ "ok": true })
    );
    let want = json!({ "user": "alice", "room": "before", "message": "still here" });
    assert_eq!(alice.expect("chat message").await, want);
    alice.client.disconnect().await.expect("disconnect");
    for node in &mut nodes {
        let _ = node.child.kill().await;
    }
}

/// A session that starts as a WebSocket is owned by the node the socket reached (no relay), and
/// that node is still the rendezvous winner of the sid's random part among the ready members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_session_is_owned_by_the_node_it_reached() {
    use clusterchat::cluster::placement::Placement;
    use futures_util::StreamExt;
    let cluster = TestCluster::chat(3).await;
    for index in 0..3 {
        let node = cluster.node(index);
        for _ in 0..5 {
            let url = format!("{}/socket.io/?EIO=4&transport=websocket", cluster.url(index).replace("http", "ws"));
            let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("WebSocket opens");
            let open = ws.next().await.expect("open packet").expect("open packet");
            let open = open.into_text().expect("text");
            let handshake: Value = serde_json::from_str(open.strip_prefix('0').expect("an open packet")).unwrap();
            let sid = handshake["sid"].as_str().unwrap();
            assert_eq!(owner_of(sid), node.node_id(), "{sid} reached {}", node.node_id());
            let members = cluster.members_of(node);
            let random = sid.rsplit_once('.').unwrap().0;
            assert_eq!(Placement::new(members.ready()).owner(random), Some(node.node_id()), "{sid}");
            assert!(node.engine().session(sid).is_some());
            ws.close(None).await.ok();
        }
    }
    cluster.shutdown().await;
}

/// A node takes clients only once every member it knows knows it, in its current life: a
/// member that did not would neither ask it when a room's first member joins there nor wait
/// for its pushes in the barrier before a restore's replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_serves_only_once_every_member_knows_it() {
    let mut cluster = TestCluster::chat(2).await;
    for _ in 0..3 {
        let index = cluster.add_node().await;
        let new = cluster.node(index);
        let generation = cluster.members_of(new).get(new.node_id()).map(|m| m.generation);
        assert!(generation.is_some(), "{} knows itself", new.node_id());
        for i in 0..index {
            let seen = cluster.members_of(cluster.node(i)).get(new.node_id()).map(|m| m.generation);
            assert_eq!(seen, generation, "node{} knows {} once it serves", i + 1, new.node_id());
        }
    }
    cluster.shutdown().await;
}
