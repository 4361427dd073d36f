//! A cluster of chat nodes in this process, and a raw Engine.IO v4 polling client of its
//! `/chat` namespace that may send each request to any node.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use clusterchat::config::{ClusterSettings, NodeConfig};
use clusterchat::node::Node;

use super::{decode_v4, parse_open_packet, wait_until, within, STEP};

/// How long a ring of a few nodes may take to form, or gossip to spread.
pub const CONVERGE: Duration = Duration::from_secs(10);

pub struct TestCluster {
    pub nodes: Vec<Node>,
    /// Each node's gossip address, as `host:port`.
    pub gossip: Vec<String>,
}

/// A free UDP port: chitchat advertises its listen address, so port 0 cannot be used.
fn free_gossip_addr() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("a free UDP port");
    socket.local_addr().expect("UDP local address")
}

impl TestCluster {
    /// Starts `n` nodes `node1..` seeded with each other, and waits until every node sees all
    /// of them ready.
    pub async fn start(n: usize) -> Self {
        let gossip: Vec<String> = (0..n).map(|_| free_gossip_addr().to_string()).collect();
        let mut nodes = Vec::new();
        for i in 0..n {
            let cluster = ClusterSettings {
                gossip: gossip[i].parse().expect("gossip address"),
                rpc: "127.0.0.1:0".parse().expect("RPC address"),
                seeds: gossip.iter().filter(|g| **g != gossip[i]).cloned().collect(),
                secret: Some("test-cluster-secret".into()),
                ..ClusterSettings::default()
            };
            let mut config = NodeConfig {
                node_id: format!("node{}", i + 1),
                http: "127.0.0.1:0".parse().expect("HTTP address"),
                cluster: Some(cluster),
                ..NodeConfig::default()
            };
            // A node shutting down keeps a closed polling session up to the ping timeout for
            // the client's last poll; no test client polls again. The ping interval stays long,
            // so no client has to answer pings.
            config.engine.ping_timeout_ms = 1000;
            nodes.push(Node::start(config).await.unwrap_or_else(|e| panic!("node{} starts: {e}", i + 1)));
        }
        let cluster = Self { nodes, gossip };
        wait_until(CONVERGE, "every node sees every node ready", || {
            cluster.nodes.iter().all(|node| cluster.members_of(node).ready().count() == n)
        })
        .await;
        cluster
    }

    pub fn members_of(&self, node: &Node) -> std::sync::Arc<clusterchat::cluster::membership::Members> {
        node.membership().expect("a clustered node").members()
    }

    pub fn node(&self, id: &str) -> &Node {
        self.nodes.iter().find(|n| n.node_id() == id).unwrap_or_else(|| panic!("no node {id}"))
    }

    /// Stops every node; drop the clients first (a node waits for its open connections).
    pub async fn shutdown(self) {
        for node in self.nodes {
            within("node shutdown", node.shutdown()).await;
        }
    }
}

/// A `/chat` user over Engine.IO v4 long-polling. Each request names the node it goes to:
/// the cluster routes it to the session's owner.
pub struct ChatClient {
    http: reqwest::Client,
    pub sid: String,
    /// Packets received but not yet looked at.
    inbox: Vec<String>,
}

impl ChatClient {
    /// Handshakes at `node` and connects to `/chat` as `user`.
    pub async fn connect(node: SocketAddr, user: &str) -> Self {
        let http = reqwest::Client::new();
        let url = format!("http://{node}/socket.io/?EIO=4&transport=polling");
        let resp = within("handshake", http.get(&url).send()).await.expect("handshake sent");
        assert_eq!(resp.status(), 200, "handshake at {node}");
        let open = parse_open_packet(&within("handshake body", resp.text()).await.expect("handshake body"));
        let sid = open["sid"].as_str().expect("sid").to_owned();
        let mut client = Self { http, sid, inbox: Vec::new() };
        let connect = format!("40/chat,{}", serde_json::json!({ "user": user }));
        client.post(node, &connect).await;
        client.expect(node, "40/chat,").await;
        client
    }

    /// Joins `room` through `node` and waits for the join's ack.
    pub async fn join(&mut self, node: SocketAddr, room: &str) {
        let packet = format!("42/chat,1{}", serde_json::json!(["join room", { "room": room }]));
        self.post(node, &packet).await;
        let ack = self.expect(node, "43/chat,1").await;
        assert_eq!(ack, r#"43/chat,1[{"ok":true}]"#, "join {room}");
    }

    /// Closes the session (a CLOSE packet) through `node`.
    pub async fn close(self, node: SocketAddr) {
        self.post(node, "1").await;
    }

    /// Sends one packet through `node`.
    pub async fn post(&self, node: SocketAddr, packet: &str) {
        let url = format!("http://{node}/socket.io/?EIO=4&transport=polling&sid={}", self.sid);
        let resp = within("POST", self.http.post(&url).body(packet.to_owned()).send()).await.expect("POST sent");
        assert_eq!(resp.status(), 200, "POST {packet:?} at {node}");
    }

    /// One long-poll through `node`; returns its packets.
    pub async fn poll(&self, node: SocketAddr) -> Vec<String> {
        let url = format!("http://{node}/socket.io/?EIO=4&transport=polling&sid={}", self.sid);
        let resp = within("poll", self.http.get(&url).send()).await.expect("poll sent");
        assert_eq!(resp.status(), 200, "poll at {node}");
        decode_v4(&within("poll body", resp.text()).await.expect("poll body"))
    }

    /// Polls through `node` until a packet starting with `prefix` arrives; returns it.
    pub async fn expect(&mut self, node: SocketAddr, prefix: &str) -> String {
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            if let Some(i) = self.inbox.iter().position(|p| p.starts_with(prefix)) {
                return self.inbox.remove(i);
            }
            assert!(tokio::time::Instant::now() < deadline, "no {prefix:?} packet; got {:?}", self.inbox);
            let packets = self.poll(node).await;
            self.inbox.extend(packets);
        }
    }
}
