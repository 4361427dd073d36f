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

/// Peers gossip a node's past life until they forget it, an hour after its death. A life
/// that started with the clock ahead of today's (a crash, then the clock stepped back) has a
/// newer generation than the node's own: every digest and delta its peers send name it. The
/// node must drop those entries and go on hearing its peers (it refused whole messages that
/// named it, and so heard none until the hour was over).
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
    // node2 hears of node1 an hour ahead, as of node1's past life (here from a holder of the
    // secret).
    let syn = wire::syn(&cluster_id, "node1", node1.generation + 3_600_000, node1.gossip, 1_000);
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for datagram in seal(&Keyring::single(OLD), &syn, node2.gossip, now_ms()) {
        socket.send_to(&datagram, node2.gossip).await.unwrap();
    }
    let rejections = nodes[0].membership().unwrap().rejections().clone();
    wait_until(CONVERGE, "node2 gossips node1's newer life to node1", || rejections.count(Reject::NewerSelf) >= 3)
        .await;

    // node1 still hears node2: node2's heartbeat, as node1 knows it, goes on rising, and
    // node2 stays a ready member.
    let heartbeat = || async {
        let known = nodes[0].membership().unwrap().snapshot().await;
        known.into_iter().find(|n| n.info.node_id == "node2" && n.live).map(|n| n.info.heartbeat)
    };
    let from = heartbeat().await.expect("node2 live on node1");
    let deadline = Instant::now() + CONVERGE;
    while heartbeat().await.is_none_or(|h| h < from + 20) {
        assert!(
            Instant::now() < deadline,
            "node1 stopped hearing node2 (heartbeat {from} then {:?})",
            heartbeat().await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(rejections.count(Reject::NewerSelf) > 3, "node1 kept hearing of its newer life meanwhile");
    assert_eq!(nodes[0].membership().unwrap().members().ready().collect::<Vec<_>>(), ["node1", "node2"]);
    stop(nodes.into_iter().collect()).await;
}
