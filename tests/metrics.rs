//! `GET /metrics` on clustered nodes: requests received and forwarded by kind, RPC latency,
//! sessions, members and room traffic move as a user's requests cross the cluster.

use clusterchat::node::Service;

use std::net::SocketAddr;
use std::time::Duration;

use clusterchat::cluster::router::sid_owner;
use support::polling::{ChatClient, CONVERGE};

mod support;
use support::cluster::TestCluster;
use support::server::within;

/// One scrape of `node`'s `/metrics`.
async fn scrape(node: SocketAddr) -> String {
    let resp = within("GET /metrics", reqwest::get(format!("http://{node}/metrics"))).await.expect("GET /metrics");
    assert_eq!(resp.status(), 200);
    let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    within("metrics body", resp.text()).await.expect("metrics body")
}

/// The value of the sample `series` (name and labels, as printed), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Scrapes `node` until `series` reaches `at_least`: counters of pushes move after the
/// delivery they count.
async fn wait_for(node: SocketAddr, series: &str, at_least: f64) -> String {
    let deadline = tokio::time::Instant::now() + CONVERGE;
    loop {
        let text = scrape(node).await;
        if sample(&text, series).is_some_and(|v| v >= at_least) {
            return text;
        }
        assert!(tokio::time::Instant::now() < deadline, "{series} < {at_least} at {node}:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_forwarded_requests_and_room_pushes() {
    let cluster = TestCluster::start(3, Box::new(|c| vec![Service::chat(c).expect("chat service")]), |c| {
        c.engine.ping_timeout_ms = 1000
    })
    .await;
    let entry = cluster.node(0).http_addr();
    let alice = ChatClient::connect(entry, "alice").await;
    let a = sid_owner(&alice.sid).expect("owner").to_owned();
    // Bob on another owner, so a message crosses nodes; sessions that landed on Alice's
    // owner are closed again.
    let mut bob = None;
    for _ in 0..30 {
        let c = ChatClient::connect(entry, "bob").await;
        if sid_owner(&c.sid) != Some(a.as_str()) {
            bob = Some(c);
            break;
        }
        c.close(entry).await;
    }
    let mut bob = bob.expect("a session on another node within 30 tries");
    let b = sid_owner(&bob.sid).expect("owner").to_owned();
    // Every request of Alice's from now on goes through a node that does not own her session.
    let via = cluster.live().find(|n| n.node_id() != a).expect("a non-owner").http_addr();
    let mut alice = alice;
    alice.join(via, "lobby").await;
    bob.join(entry, "lobby").await;
    alice.post(via, r#"42/chat,2["chat message",{"room":"lobby","message":"hi"}]"#).await;
    assert_eq!(alice.expect(via, "43/chat,2").await, r#"43/chat,2[{"ok":true}]"#);
    let heard = bob.expect(entry, r#"42/chat,["chat message""#).await;
    assert!(heard.contains(r#""message":"hi""#), "{heard}");

    let text = scrape(via).await;
    for series in [
        r#"clusterchat_requests_received_total{kind="poll"}"#,
        r#"clusterchat_requests_received_total{kind="push"}"#,
        r#"clusterchat_requests_forwarded_total{kind="poll"}"#,
        r#"clusterchat_requests_forwarded_total{kind="push"}"#,
        r#"clusterchat_rpc_call_seconds_count{kind="poll"}"#,
    ] {
        assert!(sample(&text, series).is_some_and(|v| v >= 1.0), "{series} at {via}:\n{text}");
    }
    assert!(text.contains("# TYPE clusterchat_rpc_call_seconds histogram"), "{text}");

    let owner_a = cluster.node_by_id(&a).http_addr();
    let text = wait_for(owner_a, "clusterchat_room_pushes_sent_total", 1.0).await;
    assert_eq!(sample(&text, "clusterchat_sessions_owned"), Some(1.0), "{text}");
    assert_eq!(sample(&text, r#"clusterchat_sessions_by_transport{transport="polling"}"#), Some(1.0), "{text}");
    assert_eq!(sample(&text, r#"clusterchat_sessions_by_transport{transport="websocket"}"#), Some(0.0), "{text}");
    assert_eq!(sample(&text, "clusterchat_live_members"), Some(3.0), "{text}");
    assert_eq!(sample(&text, "clusterchat_ready_members"), Some(3.0), "{text}");
    assert_eq!(sample(&text, "clusterchat_room_pushes_dropped_total"), Some(0.0), "{text}");
    assert_eq!(sample(&text, "clusterchat_sessions_closed_queue_full_total"), Some(0.0), "{text}");

    let text = wait_for(cluster.node_by_id(&b).http_addr(), "clusterchat_room_pushes_received_total", 1.0).await;
    assert!(sample(&text, r#"clusterchat_room_deliveries_total{nsp="/chat"}"#).is_some_and(|v| v >= 1.0), "{text}");

    drop((alice, bob));
    cluster.shutdown().await;
}
