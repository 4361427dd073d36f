//! The cluster plane as it runs across hosts, on loopback: nodes on IPv6, nodes listening on
//! the unspecified address and advertising the one peers reach, a keyring mid-rotation, and a
//! stranger that knows the cluster id but not the secret. (Attacks from another host, in
//! network namespaces: tests/netns_security.rs.)

mod support;

use std::net::{IpAddr, SocketAddr};

use clusterchat::config::{ClusterSettings, NodeConfig};
use clusterchat::node::Node;
use support::cluster::{unique_cluster_id, PING_INTERVAL_MS};
use support::polling::{ChatClient, CONVERGE};
use support::server::wait_until;

const OLD: &str = "the-old-cluster-secret-0000";
const NEW: &str = "the-new-cluster-secret-1111";

/// A node listening on `listen` (every port chosen by the OS) and advertising `advertise`,
/// with these secrets.
fn node_config(
    index: usize,
    cluster_id: &str,
    listen: IpAddr,
    advertise: IpAddr,
    seed: Option<SocketAddr>,
    secrets: &[&str],
) -> NodeConfig {
    let unspecified = listen.is_unspecified();
    let mut config = NodeConfig {
        node_id: format!("node{index}"),
        http: SocketAddr::new(listen, 0),
        drain_ms: 0,
        cluster: Some(ClusterSettings {
            gossip: SocketAddr::new(listen, 0),
            rpc: SocketAddr::new(listen, 0),
            gossip_advertise: unspecified.then(|| SocketAddr::new(advertise, 0)),
            rpc_advertise: unspecified.then(|| SocketAddr::new(advertise, 0)),
            http_advertise: unspecified.then(|| SocketAddr::new(advertise, 0)),
            seeds: seed.map(|s| vec![s.to_string()]).unwrap_or_default(),
            cluster_id: cluster_id.into(),
            secrets: secrets.iter().map(|s| s.to_string()).collect(),
            ..ClusterSettings::default()
        }),
        ..NodeConfig::default()
    };
    config.engine.ping_interval_ms = PING_INTERVAL_MS;
    config
}

/// Starts `secrets.len()` nodes, node1 the seed, and waits until each sees all of them ready.
async fn ring(listen: IpAddr, advertise: IpAddr, secrets: &[&[&str]]) -> Vec<Node> {
    ring_of(&unique_cluster_id(), listen, advertise, secrets).await
}

async fn ring_of(cluster_id: &str, listen: IpAddr, advertise: IpAddr, secrets: &[&[&str]]) -> Vec<Node> {
    let mut nodes: Vec<Node> = Vec::new();
    let mut seed = None;
    for (i, keys) in secrets.iter().enumerate() {
        let config = node_config(i + 1, cluster_id, listen, advertise, seed, keys);
        let node = Node::start(config).await.expect("node starts");
        seed.get_or_insert(node.gossip_addr().expect("a clustered node"));
        nodes.push(node);
    }
    let n = nodes.len();
    wait_until(CONVERGE, "every node sees every node ready", || {
        nodes.iter().all(|node| node.membership().expect("clustered").members().ready().count() == n)
    })
    .await;
    nodes
}

/// The address a client uses for `node`: its advertised HTTP address.
fn http_of(nodes: &[Node], index: usize) -> SocketAddr {
    let me = nodes[index].node_id();
    nodes[0].membership().unwrap().members().get(me).and_then(|m| m.http).expect("an advertised HTTP address")
}

/// Two users on different nodes chat: the receiving node forwards each request to the owner
/// over the RPC, and the room message is pushed between nodes.
async fn users_chat_across(nodes: &[Node]) {
    let (a, b) = (http_of(nodes, 0), http_of(nodes, nodes.len() - 1));
    let mut alice = ChatClient::connect(a, "alice").await;
    let mut bob = ChatClient::connect(b, "bob").await;
    alice.join(b, "lobby").await; // through the other node
    bob.join(a, "lobby").await;
    let message = format!("42/chat,{}", serde_json::json!(["chat message", { "room": "lobby", "message": "hi bob" }]));
    alice.post(a, &message).await;
    let got = bob.expect(b, "42/chat,[\"chat message\"").await;
    assert!(got.contains("hi bob") && got.contains("alice"), "{got}");
}

async fn stop(nodes: Vec<Node>) {
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv6_ring_forwards_sessions_and_rooms() {
    let v6: IpAddr = "::1".parse().unwrap();
    let nodes = ring(v6, v6, &[&[OLD], &[OLD]]).await;
    assert!(http_of(&nodes, 1).is_ipv6());
    users_chat_across(&nodes).await;
    stop(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_listening_on_every_address_advertise_the_one_peers_reach() {
    let nodes = ring("0.0.0.0".parse().unwrap(), "127.0.0.1".parse().unwrap(), &[&[OLD], &[OLD], &[OLD]]).await;
    for node in &nodes {
        let members = node.membership().unwrap().members();
        for m in members.nodes.values() {
            let addrs = [Some(m.gossip), m.rpc, m.http];
            assert!(addrs.iter().flatten().all(|a| a.ip().is_loopback() && a.port() != 0), "{m:?}");
        }
    }
    users_chat_across(&nodes).await;
    stop(nodes).await;
}

/// Nodes listening on the IPv6 unspecified address (dual stack) and advertising IPv4: a
/// datagram from an IPv4 peer arrives from an IPv4-mapped IPv6 address, and chitchat answers
/// there, so the answer is sealed for that form of the address the peer advertises.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_listening_on_ipv6_any_and_advertising_ipv4_form_a_ring() {
    let nodes = ring("::".parse().unwrap(), "127.0.0.1".parse().unwrap(), &[&[OLD], &[OLD], &[OLD]]).await;
    users_chat_across(&nodes).await;
    for node in &nodes {
        let rejections = node.membership().unwrap().rejections();
        assert_eq!(rejections.count(clusterchat::cluster::gossip_wire::Reject::Misdirected), 0);
    }
    stop(nodes).await;
}

/// Mid-rotation, nodes send with different secrets but each accepts both: the ring and the
/// chat work as with one secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_mid_rotation_is_whole() {
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    let nodes = ring(lo, lo, &[&[OLD, NEW], &[NEW, OLD], &[NEW, OLD]]).await;
    users_chat_across(&nodes).await;
    stop(nodes).await;
}

/// A node that sends with a secret the others do not hold never joins them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_secret_stays_out() {
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    let cluster_id = unique_cluster_id();
    let nodes = ring_of(&cluster_id, lo, lo, &[&[OLD], &[OLD]]).await;
    let seed = nodes[0].membership().unwrap().members().get("node1").map(|m| m.gossip).unwrap();
    // Same cluster id as the ring: only the secret differs.
    let stranger = node_config(9, &cluster_id, lo, lo, Some(seed), &[NEW]);
    let stranger = Node::start(stranger).await.expect("the stranger starts");
    let rejections = nodes[0].membership().unwrap().rejections().clone();
    wait_until(CONVERGE, "node1 refuses the stranger's datagrams", || {
        rejections.count(clusterchat::cluster::gossip_wire::Reject::Unauthenticated) >= 3
    })
    .await;
    for node in &nodes {
        let members = node.membership().unwrap().members();
        assert_eq!(
            members.nodes.keys().collect::<Vec<_>>(),
            ["node1", "node2"],
            "{} let the stranger in",
            node.node_id()
        );
    }
    assert_eq!(stranger.membership().unwrap().members().nodes.keys().collect::<Vec<_>>(), ["node9"]);
    stranger.shutdown().await;
    stop(nodes).await;
}

/// A message that names a node must come from that node's own channel: a peer (even one
/// holding the secret) cannot subscribe or announce presence for another node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_speaks_only_for_itself() {
    use clusterchat::keyring::Keyring;
    use clusterchat::rpc::peers::{DialSettings, Peers};
    use clusterchat::rpc::{Request, Response, RpcLimits};
    use std::time::Duration;

    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    let nodes = ring(lo, lo, &[&[OLD], &[OLD]]).await;
    let node1 = nodes[0].membership().unwrap().members().get("node1").cloned().unwrap();
    let peers = Peers::new(DialSettings {
        node_id: "node2".into(),
        keyring: Keyring::single(OLD),
        connect_timeout: Duration::from_secs(1),
        handshake_timeout: Duration::from_secs(1),
        limits: RpcLimits::default(),
    });
    let subscribe = |node: &str| Request::Subscribe {
        node: node.into(),
        nsp: "/chat".into(),
        room: "lobby".into(),
        labels: vec!["mallory".into()],
        version: (1, 1),
    };
    let rpc = node1.dial().unwrap();
    let forged = peers.call("node1", rpc, subscribe("node3"), Duration::from_secs(5)).await.unwrap();
    assert!(matches!(&forged, Response::Failed(why) if why.contains("may not subscribe for node3")), "{forged:?}");
    let own = peers.call("node1", rpc, subscribe("node2"), Duration::from_secs(5)).await.unwrap();
    assert!(matches!(own, Response::Members { .. }), "{own:?}");
    let metrics = reqwest::get(format!("http://{}/metrics", nodes[0].http_addr())).await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l == "clusterchat_rpc_claims_refused_total 1"), "{metrics}");
    peers.shutdown().await;
    stop(nodes).await;
}

/// A seed given by host name is resolved (chitchat resolves it again every round, as a
/// Kubernetes headless service needs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_named_by_host_name_is_found() {
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    let cluster_id = unique_cluster_id();
    let first = ring_of(&cluster_id, lo, lo, &[&[OLD]]).await;
    let seed = first[0].membership().unwrap().members().get("node1").map(|m| m.gossip).unwrap();
    let mut config = node_config(2, &cluster_id, lo, lo, None, &[OLD]);
    config.cluster.as_mut().unwrap().seeds = vec![format!("localhost:{}", seed.port())];
    let second = Node::start(config).await.expect("node2 starts");
    let nodes = [&first[0], &second];
    wait_until(CONVERGE, "both nodes see both ready", || {
        nodes.iter().all(|n| n.membership().unwrap().members().ready().count() == 2)
    })
    .await;
    second.shutdown().await;
    stop(first).await;
}

/// Peers gossip a node's past life until they stop naming it, half an hour after its death
/// (half the dead-node grace). A life that started with the clock ahead of today's (a crash,
/// then the clock stepped back) has a newer generation than the node's own: every digest and
/// delta its peers send name it. The node must drop those entries and go on hearing its
/// peers: their heartbeats (it refused whole messages that named the life, and so heard
/// none), and their keys too, though the past life had enough of its own to fill every delta
/// a peer sends it (a peer sends first what the node's digest lacks: the node echoes the
/// life's entry back, as the peer gave it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_past_life_ahead_of_the_clock_does_not_cut_a_node_off() {
    use clusterchat::cluster::gossip_wire::{seal, Reject};
    use clusterchat::keyring::Keyring;
    use std::time::{Duration, Instant};
    use support::attacker::{now_ms, wire};

    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    let cluster_id = unique_cluster_id();
    let nodes = ring_of(&cluster_id, lo, lo, &[&[OLD], &[OLD]]).await;
    let members = nodes[0].membership().unwrap().members();
    let (node1, node2) = (members.get("node1").unwrap().clone(), members.get("node2").unwrap().clone());
    let newer = node1.generation + 3_600_000;
    // node2 hears of node1 an hour ahead, as of node1's past life (here from a holder of the
    // secret), and of the life's keys: 600 of 250 bytes, four times what a delta carries.
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let to_node2 = |message: Vec<u8>| {
        let socket = &socket;
        async move {
            for datagram in seal(&Keyring::single(OLD), &message, node2.gossip, now_ms()) {
                socket.send_to(&datagram, node2.gossip).await.unwrap();
            }
        }
    };
    // What `node`'s chitchat knows of the node `id` at `generation` (any, if `None`): its
    // version and heartbeat, if it counts it live or `dead_too`.
    let known = |node: usize, id: &'static str, generation: Option<u64>, dead_too: bool| {
        let nodes = &nodes;
        async move {
            let known = nodes[node].membership().unwrap().snapshot().await;
            known
                .into_iter()
                .find(|n| {
                    n.info.node_id == id && generation.is_none_or(|g| g == n.info.generation) && (n.live || dead_too)
                })
                .map(|n| (n.info.version, n.info.heartbeat))
        }
    };
    let until = |what: &str| {
        let deadline = Instant::now() + CONVERGE;
        let what = what.to_owned();
        move || assert!(Instant::now() < deadline, "not within {CONVERGE:?}: {what}")
    };
    // Values that do not compress (chitchat's budget is for compressed bytes), as room keys'
    // base64 names do not much.
    let value = |seed: u64| -> String {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..250)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"[(x % 62) as usize])
            })
            .collect()
    };
    let batch = |n: u64| -> Vec<(String, String)> {
        let mut keys: Vec<(String, String)> =
            (0..200).map(|i| (format!("past:{:04}", n * 200 + i), value(n * 200 + i))).collect();
        if n == 0 {
            keys[0] = ("rpc".into(), node1.rpc.expect("an RPC address").to_string());
            // a member's
        }
        keys
    };
    // The Syn makes node2 track the life, then the first keys apply (a delta about a node it
    // does not track is ignored: sent again until they take).
    let check = until("node2 tracks node1's newer life");
    while known(1, "node1", Some(newer), true).await.is_none() {
        check();
        to_node2(wire::syn(&cluster_id, "node1", newer, node1.gossip, 1_000)).await;
        to_node2(wire::keys("node1", newer, node1.gossip, 0, &batch(0))).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for n in 1..3u64 {
        // Sent again until it takes (a datagram lost is a batch node2 never has; a repeat is
        // refused as known).
        let check = until("node2 takes the past life's keys");
        while known(1, "node1", Some(newer), true).await.is_none_or(|(v, _)| v < (n + 1) * 200) {
            check();
            to_node2(wire::keys("node1", newer, node1.gossip, n * 200, &batch(n))).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let rejections = nodes[0].membership().unwrap().rejections().clone();
    wait_until(CONVERGE, "node2 gossips node1's newer life to node1", || rejections.count(Reject::NewerSelf) >= 3)
        .await;

    // node1 still hears node2: its heartbeat goes on rising, and a key node2 sets now reaches
    // node1 (without the echo, every delta node2 sends is the past life's state).
    let (_, from) = known(0, "node2", None, false).await.expect("node2 live on node1");
    nodes[1].membership().unwrap().set("probe", "1").await;
    let (set_at, _) = known(1, "node2", None, false).await.expect("node2 knows itself");
    let check = until("node1 hears node2's heartbeat and its new key");
    while known(0, "node2", None, false).await.is_none_or(|(v, h)| h < from + 20 || v < set_at) {
        check();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(rejections.count(Reject::NewerSelf) > 3, "node1 kept hearing of its newer life meanwhile");
    assert_eq!(nodes[0].membership().unwrap().members().ready().collect::<Vec<_>>(), ["node1", "node2"]);
    stop(nodes.into_iter().collect()).await;
}
