//! Connection state recovery across the cluster, with the real socket.io-client v4: a client
//! whose transport drops, or whose node leaves gracefully, reconnects through a round-robin
//! balancer (usually to another node) and gets its socket id, its rooms and the messages it
//! missed, exactly once (tests/clients/recovery.mjs does the client side).

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

mod support;
use clusterchat::cluster::router::sid_owner;
use support::cluster::TestCluster;
use support::polling::ChatClient;
use support::rr_proxy::RoundRobinProxy;

const SCRIPT_TIMEOUT: Duration = Duration::from_secs(40);

/// Runs recovery.mjs against three nodes behind the proxy; stops the node it names.
async fn recover(mode: &str, transport: &str) {
    let mut cluster = TestCluster::chat(3).await;
    let proxy = RoundRobinProxy::start("127.0.0.1:0".parse().unwrap(), cluster.http_addrs()).await.unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/recovery.mjs");
    let mut child = tokio::process::Command::new("node")
        .arg(&script)
        .args([&proxy.url(), mode, transport])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut out = Vec::new();
    let run = async {
        while let Some(line) = lines.next_line().await.expect("script output") {
            if let Some(node) = line.strip_prefix("STOP ") {
                let index = (0..3).find(|&i| cluster.node_at(i).is_some_and(|n| n.node_id() == node)).expect("a node");
                cluster.stop(index).await;
            }
            out.push(line);
        }
    };
    tokio::time::timeout(SCRIPT_TIMEOUT, run).await.unwrap_or_else(|_| panic!("recovery.mjs hung: {out:?}"));
    let output = child.wait_with_output().await.expect("exit status");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "recovery.mjs {mode} {transport}: {}\n{}\n{stderr}",
        output.status,
        out.join("\n")
    );
    assert_eq!(out.last().map(String::as_str), Some("PASS"), "{out:?}");
    eprintln!("{}", out[out.len() - 2]);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_websocket_recovers_its_room_and_missed_messages() {
    recover("drop", "websocket").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_polling_client_recovers_its_room_and_missed_messages() {
    recover("drop", "polling").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_a_node_restarted_gracefully_recovers_elsewhere() {
    recover("restart", "websocket").await;
}

/// A dropped session's recovery state is kept once, on another node than the one that owned
/// the session (so the owner's restart does not lose it), and taken back by the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_session_is_parked_once_on_another_node_than_its_owner() {
    let cluster = TestCluster::chat(3).await;
    let addrs = cluster.http_addrs();
    let mut alice = ChatClient::connect(addrs[0], "alice").await;
    let owner = sid_owner(&alice.sid).expect("sid names its owner").to_owned();
    alice.join(addrs[0], "r").await;
    alice.close(addrs[0]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let keeper = loop {
        let mut parked = Vec::new();
        for (i, addr) in addrs.iter().enumerate() {
            parked.push((cluster.node(i).node_id().to_owned(), gauge_on(*addr, "clusterchat_parked_sessions").await));
        }
        let holders: Vec<_> = parked.iter().filter(|(_, n)| *n > 0).collect();
        // While the hand-over runs the owner may hold it too; settled, exactly one node does.
        if holders.len() == 1 && holders[0].0 != owner {
            assert_eq!(holders[0].1, 1, "{parked:?}");
            break holders[0].0.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "never parked away from {owner}: {parked:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_ne!(keeper, owner);
    cluster.shutdown().await;
}

/// Recovery credentials that match no parked session (forged, of the wrong type, huge, or with
/// an offset the session never had) get a new session with a new pid, never an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_or_malformed_recovery_credentials_get_a_new_session() {
    use serde_json::{json, Value};
    let cluster = TestCluster::chat(3).await;
    let addrs = cluster.http_addrs();
    // A real parked session, asked back with an offset it never had.
    let (mut first, answer) = ChatClient::connect_with(addrs[0], json!({ "user": "eve" })).await;
    let real: Value = serde_json::from_str(answer.strip_prefix("40/chat,").unwrap()).unwrap();
    let real_pid = real["pid"].as_str().expect("the CONNECT answer carries a pid").to_owned();
    first.join(addrs[0], "r").await;
    first.close(addrs[0]).await;
    let attempts = [
        json!({ "user": "eve", "pid": "forged", "offset": "nope" }),
        json!({ "user": "eve", "pid": 42, "offset": [] }),
        json!({ "user": "eve", "pid": "p".repeat(20_000) }),
        json!({ "user": "eve", "pid": real_pid, "offset": "never-sent" }),
    ];
    for auth in attempts {
        let (mut client, answer) = ChatClient::connect_with(addrs[1], auth.clone()).await;
        let answer: Value = serde_json::from_str(answer.strip_prefix("40/chat,").unwrap()).unwrap();
        let pid = answer["pid"].as_str().expect("a pid");
        assert!(answer["sid"].is_string() && pid != auth["pid"], "{answer} for {auth}");
        assert_ne!(answer["sid"], real["sid"], "not the parked socket id");
        let welcome = client.expect(addrs[1], "42/chat,[\"welcome\"").await;
        assert!(welcome.contains("\"recovered\":false"), "{welcome}");
    }
    cluster.shutdown().await;
}

/// A `/chat` gauge of the node's metrics.
async fn gauge_on(node: std::net::SocketAddr, name: &str) -> u64 {
    let body = reqwest::get(format!("http://{node}/metrics")).await.expect("GET /metrics").text().await.unwrap();
    let line = body.lines().find(|l| l.starts_with(&format!("{name}{{nsp=\"/chat\"}}")));
    line.and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{name} metric"))
}

/// The nodes keeping a record, by `recovery_records_kept`, once exactly one does.
async fn keepers(cluster: &TestCluster) -> String {
    let addrs = cluster.http_addrs();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut kept = Vec::new();
        for (i, addr) in addrs.iter().enumerate() {
            kept.push((
                cluster.node(i).node_id().to_owned(),
                gauge_on(*addr, "clusterchat_recovery_records_kept").await,
            ));
        }
        let holders: Vec<_> = kept.iter().filter(|(_, n)| *n > 0).collect();
        if holders.len() == 1 && holders[0].1 == 1 {
            return holders[0].0.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "no single keeper: {kept:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A session whose WebSocket reaches its owner through another node (an upgrade through it)
/// has its record kept elsewhere than that node: one crash of it would cut the client off and
/// lose the record at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_moves_off_the_node_that_relays_its_websocket() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let cluster = TestCluster::chat(3).await;
    let addrs = cluster.http_addrs();
    let (alice, _) = ChatClient::connect_with(addrs[0], serde_json::json!({ "user": "alice" })).await;
    let owner = sid_owner(&alice.sid).expect("sid names its owner").to_owned();
    let keeper = keepers(&cluster).await;
    assert_ne!(keeper, owner, "kept on another node than its owner");
    // Upgrade to a WebSocket through the keeper: it relays the WebSocket to the owner.
    let at = (0..3).find(|&i| cluster.node(i).node_id() == keeper).expect("the keeper");
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket&sid={}", addrs[at], alice.sid);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("WebSocket through the keeper");
    ws.send(Message::text("2probe")).await.unwrap();
    let probe = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("probe answered");
    assert_eq!(probe.unwrap().unwrap().into_text().unwrap().as_str(), "3probe");
    ws.send(Message::text("5")).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = keepers(&cluster).await;
        if now != keeper {
            assert_ne!(now, owner, "kept on another node than its owner");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the record stayed on the node relaying its WebSocket");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(ws);
    cluster.shutdown().await;
}
