//! Real Socket.IO clients against a chat node on port 0: rust_socketio in-process, and the
//! socket.io-client v4 / v2 (Node) and python-socketio scripts of `tests/clients/`, each run
//! over websocket only, polling only, and polling upgraded to websocket.
//!
//! The scripts need `npm ci` in tests/clients and `pip install -r tests/clients/requirements.txt`
//! (scripts/test.sh does both); a missing client fails the test, it is never skipped.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use clusterchat::config::NodeConfig;
use clusterchat::node::Node;
use futures_util::FutureExt;
use rust_socketio::asynchronous::{Client, ClientBuilder};
use rust_socketio::{Payload, TransportType};
use serde_json::{json, Value};
use tokio::sync::mpsc;

const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

async fn start_node() -> Node {
    let config = NodeConfig {
        node_id: "test1".into(),
        http: "127.0.0.1:0".parse().unwrap(),
        web_dir: repo().join("web"),
        ..NodeConfig::default()
    };
    Node::start(config).await.expect("node starts")
}

/// Runs a client script to completion and fails with its output unless it exits 0.
async fn run_script(program: &str, script: &str) {
    let node = start_node().await;
    let url = format!("http://{}", node.http_addr());
    let path = repo().join("tests/clients").join(script);
    let child = tokio::process::Command::new(program)
        .arg(&path)
        .arg(&url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program} {}: {e}", path.display()));
    let output = tokio::time::timeout(CLIENT_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish within {CLIENT_TIMEOUT:?}"))
        .expect("client output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{script} failed ({}):\n{stdout}\n{stderr}", output.status);
    // Every transport mode ran and passed: the scripts end with "N passed, 0 failed".
    assert!(stdout.contains("3 passed, 0 failed"), "{script} did not run all three modes:\n{stdout}");
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

/// A rust_socketio client whose received events arrive on a channel.
struct RustClient {
    client: Client,
    events: mpsc::Receiver<(String, Value)>,
}

impl RustClient {
    async fn connect(url: &str, user: &str, transport: TransportType) -> Self {
        let (tx, events) = mpsc::channel(256);
        let client = ClientBuilder::new(url)
            .namespace("/chat")
            .auth(json!({ "user": user }))
            .transport_type(transport)
            .on_any(move |event, payload, _| {
                let tx = tx.clone();
                async move {
                    if let Payload::Text(mut args) = payload {
                        let _ = tx.try_send((String::from(event), args.pop().unwrap_or(Value::Null)));
                    }
                }
                .boxed()
            })
            .connect()
            .await
            .expect("rust_socketio connects");
        Self { client, events }
    }

    /// The next event named `name`, skipping others.
    async fn expect(&mut self, name: &str) -> Value {
        tokio::time::timeout(EVENT_TIMEOUT, async {
            loop {
                let (event, data) = self.events.recv().await.expect("client event stream ended");
                if event == name {
                    return data;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {name:?} event within {EVENT_TIMEOUT:?}"))
    }

    /// Emits with an ack and returns the server's answer.
    async fn call(&self, event: &str, data: Value) -> Value {
        let (tx, mut rx) = mpsc::channel(1);
        self.client
            .emit_with_ack(event, Payload::Text(vec![data]), EVENT_TIMEOUT, move |payload, _| {
                let tx = tx.clone();
                async move {
                    // rust_socketio 0.6 hands an ack's arguments over as one JSON array.
                    if let Payload::Text(mut args) = payload {
                        let value = match args.pop() {
                            Some(Value::Array(mut inner)) if inner.len() == 1 => inner.pop().unwrap_or(Value::Null),
                            other => other.unwrap_or(Value::Null),
                        };
                        let _ = tx.try_send(value);
                    }
                }
                .boxed()
            })
            .await
            .expect("emit");
        tokio::time::timeout(EVENT_TIMEOUT, rx.recv()).await.expect("ack in time").expect("ack")
    }
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
    let users = bob.expect("room users").await;
    assert_eq!(users, json!({ "room": room, "users": ["alice", "bob"] }));

    let sent = alice.call("chat message", json!({ "room": room, "message": "hi 😀", "user": "mallory" })).await;
    assert_eq!(sent, json!({ "ok": true }));
    let want = json!({ "user": "alice", "room": room, "message": "hi 😀" });
    assert_eq!(bob.expect("chat message").await, want);
    assert_eq!(alice.expect("chat message").await, want);

    let refused = bob.call("chat message", json!({ "room": "elsewhere", "message": "x" })).await;
    assert!(refused["error"].as_str().is_some_and(|e| e.contains("elsewhere")), "{refused}");

    bob.client.disconnect().await.expect("disconnect");
    assert_eq!(alice.expect("leave room").await, json!({ "user": "bob", "room": room }));
    assert_eq!(alice.expect("room users").await, json!({ "room": room, "users": ["alice"] }));
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
