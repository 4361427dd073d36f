//! Real Socket.IO clients against a chat node on port 0: rust_socketio in-process, and the
//! socket.io-client v4 / v2 (Node) and python-socketio scripts of `tests/clients/`, each run
//! over websocket only, polling only, and polling upgraded to websocket.
//!
//! The scripts need `npm ci` in tests/clients and `pip install -r tests/clients/requirements.txt`
//! (scripts/test.sh does both); a missing client fails the test, it is never skipped.

use std::path::PathBuf;

use clusterchat::config::NodeConfig;
use clusterchat::node::Node;
use rust_socketio::TransportType;
use serde_json::json;

mod support;
use support::chat_client::{run_client_script, RustClient};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

async fn start_node() -> Node {
    let mut config = NodeConfig {
        node_id: "test1".into(),
        http: "127.0.0.1:0".parse().unwrap(),
        web_dir: repo().join("web"),
        drain_ms: 0,
        ..NodeConfig::default()
    };
    // See PING_INTERVAL_MS: python-engineio may skip the CLOSE of a polling disconnect.
    config.engine.ping_interval_ms = support::cluster::PING_INTERVAL_MS;
    Node::start(config).await.expect("node starts")
}

/// Runs a client script against a fresh node.
async fn run_script(program: &str, script: &str) {
    let node = start_node().await;
    run_client_script(program, script, &format!("http://{}", node.http_addr())).await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_io_client_v4_on_node() {
    run_script("node", "chat_v4.mjs").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_io_client_v2_on_node() {
    run_script("node", "chat_v2.cjs").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_socketio_client() {
    run_script("python3", "chat_py.py").await;
}

async fn rust_client_chat(transport: fn() -> TransportType) {
    let node = start_node().await;
    let url = format!("http://{}", node.http_addr());
    let mut alice = RustClient::connect(&url, "alice", transport()).await;
    let welcome = alice.expect("welcome").await;
    assert_eq!((welcome["user"].as_str(), welcome["node"].as_str()), (Some("alice"), Some("test1")));
    let mut bob = RustClient::connect(&url, "bob", transport()).await;
    bob.expect("welcome").await;

    let room = "salle ☕ 日本";
    assert_eq!(alice.call("join room", json!({ "room": room })).await, json!({ "ok": true }));
    assert_eq!(alice.expect("join room").await, json!({ "user": "alice", "room": room }));
    assert_eq!(bob.call("join room", json!({ "room": room })).await, json!({ "ok": true }));
    assert_eq!(alice.expect("join room").await, json!({ "user": "bob", "room": room }));
    bob.expect_users(room, &["alice", "bob"]).await;

    let sent = alice.call("chat message", json!({ "room": room, "message": "hi 😀", "user": "mallory" })).await;
    assert_eq!(sent, json!({ "ok": true }));
    let want = json!({ "user": "alice", "room": room, "message": "hi 😀" });
    assert_eq!(bob.expect("chat message").await, want);
    assert_eq!(alice.expect("chat message").await, want);

    let refused = bob.call("chat message", json!({ "room": "elsewhere", "message": "x" })).await;
    assert!(refused["error"].as_str().is_some_and(|e| e.contains("elsewhere")), "{refused}");

    bob.client.disconnect().await.expect("disconnect");
    assert_eq!(alice.expect("leave room").await, json!({ "user": "bob", "room": room }));
    alice.expect_users(room, &["alice"]).await;
    alice.client.disconnect().await.expect("disconnect");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_socketio_over_websocket() {
    rust_client_chat(|| TransportType::Websocket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_socketio_over_polling() {
    rust_client_chat(|| TransportType::Polling).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_socketio_with_upgrade() {
    rust_client_chat(|| TransportType::WebsocketUpgrade).await;
}
