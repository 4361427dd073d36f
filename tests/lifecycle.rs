//! A node's whole life: it starts, serves chat across a cluster, shuts down, and leaves
//! nothing behind: no task of its own still running, its engine and rooms freed.

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::cluster::TestCluster;
use support::polling::ChatClient;

#[test]
fn a_cluster_that_shut_down_leaves_no_task_and_frees_its_state() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let metrics = runtime.metrics();
    let before = metrics.num_alive_tasks();
    let (engine, rooms, history, store) = runtime.block_on(async {
        let cluster = TestCluster::chat(3).await;
        let (a, b) = (cluster.node(0).http_addr(), cluster.node(2).http_addr());
        let mut alice = ChatClient::connect(a, "alice").await;
        let mut bob = ChatClient::connect(b, "bob").await;
        alice.join(b, "lobby").await;
        bob.join(a, "lobby").await;
        let message = format!("42/chat,{}", serde_json::json!(["chat message", { "room": "lobby", "message": "hi" }]));
        alice.post(a, &message).await;
        bob.expect(b, "42/chat,[\"chat message\"").await;
        let engine = Arc::downgrade(cluster.node(0).engine());
        let rooms = Arc::downgrade(cluster.node(0).rooms().unwrap());
        let history = Arc::downgrade(cluster.node(0).history().unwrap());
        let store = Arc::downgrade(cluster.node(0).history_store().unwrap());
        cluster.shutdown().await;
        (engine, rooms, history, store)
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while metrics.num_alive_tasks() > before && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(metrics.num_alive_tasks(), before, "tasks still running after every node shut down");
    assert!(engine.upgrade().is_none(), "a stopped node's engine is still held");
    assert!(rooms.upgrade().is_none(), "a stopped node's cluster rooms are still held");
    assert!(history.upgrade().is_none(), "a stopped node's room history layer is still held");
    assert!(store.upgrade().is_none(), "a stopped node's room history store is still held");
}
