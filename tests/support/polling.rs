//! A raw Engine.IO v4 polling client of the `/chat` namespace that may send each request to
//! any node of a cluster (`support::cluster` starts the cluster).

use std::net::SocketAddr;
use std::time::Duration;

use super::server::{decode_v4, parse_open_packet, within, STEP};

/// How long a ring of a few nodes may take to form, or gossip to spread.
pub const CONVERGE: Duration = Duration::from_secs(10);

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
        Self::connect_with(node, serde_json::json!({ "user": user })).await.0
    }

    /// Handshakes at `node` and connects to `/chat` with `auth`; returns the CONNECT answer too.
    pub async fn connect_with(node: SocketAddr, auth: serde_json::Value) -> (Self, String) {
        let http = reqwest::Client::new();
        let url = format!("http://{node}/socket.io/?EIO=4&transport=polling");
        let resp = within("handshake", http.get(&url).send()).await.expect("handshake sent");
        assert_eq!(resp.status(), 200, "handshake at {node}");
        let open = parse_open_packet(&within("handshake body", resp.text()).await.expect("handshake body"));
        let sid = open["sid"].as_str().expect("sid").to_owned();
        let mut client = Self { http, sid, inbox: Vec::new() };
        client.post(node, &format!("40/chat,{auth}")).await;
        let answer = client.expect(node, "40/chat,").await;
        (client, answer)
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
