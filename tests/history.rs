//! Room history as a layer of its own (`clusterchat::history`, `cluster::history`): kept whole
//! while nodes join and leave under chat load (hand-over to new replicas), kept across a full
//! cluster restart with `history.dir`, and a node whose history file is corrupt still starts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clusterchat::cluster::history::{ready_of, replicas};
use clusterchat::config::NodeConfig;
use clusterchat::history::Entry;
use clusterchat::node::Node;
use rust_socketio::TransportType;
use serde_json::{json, Value};

mod support;
use support::chat_client::RustClient;
use support::cluster::{spawn_processes_with, wait_converged, TestCluster};

const ROOMS: [&str; 8] = ["lobby", "café ☕", "日本語", "😀", "a/b?c", "x", "two  spaces", "Ελληνικά"];

/// Messages acked to their senders, per room, in the order each was acked.
type Acked = Arc<Mutex<BTreeMap<String, Vec<String>>>>;

fn no_rate_limit(c: &mut NodeConfig) {
    c.chat.rate_limit_per_sec = 0;
}

fn temp_dir(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let dir = std::env::temp_dir().join(format!("clusterchat-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn join(client: &RustClient, room: &str) {
    assert_eq!(client.call("join room", json!({ "room": room })).await, json!({ "ok": true }), "joining {room}");
}

async fn connect(url: &str, user: &str) -> RustClient {
    let mut client = RustClient::connect(url, user, TransportType::Websocket).await;
    client.expect("welcome").await;
    client
}

/// `rounds` rounds of one message from each sender to every room, all senders at once.
async fn chat(senders: &[RustClient], rounds: usize, acked: &Acked, round0: usize) {
    let sends = senders.iter().enumerate().map(|(i, sender)| async move {
        for k in round0..round0 + rounds {
            for room in ROOMS {
                let message = format!("u{i}:{k}");
                let answer = sender.call("chat message", json!({ "room": room, "message": message })).await;
                assert_eq!(answer, json!({ "ok": true }));
                acked.lock().unwrap().entry(room.to_owned()).or_default().push(message);
            }
        }
    });
    futures_util::future::join_all(sends).await;
}

/// A newcomer on `url` joins every room: each room's history holds exactly the messages acked
/// so far (fewer than `history_len`), each once, each sender's in the order sent.
async fn check_history(url: &str, reader: &str, acked: &Acked, when: &str) {
    let mut client = connect(url, reader).await;
    let acked = acked.lock().unwrap().clone();
    for room in ROOMS {
        join(&client, room).await;
        let history = client.expect("room history").await;
        assert_eq!(history["room"], json!(room));
        let got: Vec<String> =
            history["messages"].as_array().unwrap().iter().map(|m| m["message"].as_str().unwrap().to_owned()).collect();
        let want = &acked[room];
        let mut sorted_got = got.clone();
        sorted_got.sort();
        let mut sorted_want = want.clone();
        sorted_want.sort();
        assert_eq!(sorted_got, sorted_want, "room {room:?} {when}: history is not every acked message once");
        for sender in ["u0:", "u1:"] {
            let of = |v: &[String]| v.iter().filter(|m| m.starts_with(sender)).cloned().collect::<Vec<_>>();
            assert_eq!(of(&got), of(want), "room {room:?} {when}: {sender} out of order");
        }
    }
    client.client.disconnect().await.ok();
}

/// Waits until every running node has handed its rooms' history over for the ring it sees.
async fn wait_settled(cluster: &TestCluster) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cluster.live().all(|n| n.history().expect("history on").settled()) {
        assert!(Instant::now() < deadline, "history hand-over did not settle");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Two users on node3 chat in eight rooms while node4 joins, then node1 and node2 leave one
/// after the other: in the end every room's two replicas are nodes that were not replicas of
/// most rooms at the start (node3 and node4), and after each step every room's history is still
/// exactly what was acked: nothing lost, nothing back in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joining_and_leaving_under_chat_load_loses_no_history() {
    let started = Instant::now();
    let mut cluster = TestCluster::start(
        3,
        Box::new(|c| vec![clusterchat::node::Service::chat(c).expect("chat service")]),
        no_rate_limit,
    )
    .await;
    let url3 = cluster.url(2);
    let mut senders = Vec::new();
    for user in ["u0", "u1"] {
        let client = connect(&url3, user).await;
        for room in ROOMS {
            join(&client, room).await;
        }
        senders.push(client);
    }
    let acked: Acked = Arc::default();
    chat(&senders, 2, &acked, 0).await;

    // node4 joins while they chat.
    let (_, ()) = tokio::join!(cluster.add_node(), chat(&senders, 4, &acked, 2));
    cluster.wait_converged().await;
    wait_settled(&cluster).await;
    check_history(&cluster.url(3), "reader1", &acked, "after node4 joined").await;

    // node1, then node2, leave while they chat.
    for (i, round0) in [(0, 6), (1, 10)] {
        let (_, ()) = tokio::join!(cluster.stop(i), chat(&senders, 4, &acked, round0));
        cluster.wait_converged().await;
        wait_settled(&cluster).await;
        check_history(&cluster.url(3), &format!("reader{}", i + 2), &acked, &format!("after node{} left", i + 1)).await;
    }
    check_history(&url3, "reader4", &acked, "in the end, read on node3").await;
    let per_room = acked.lock().unwrap()["lobby"].len();
    println!("join and leave: {per_room} messages per room kept whole in {:?}", started.elapsed());
    for s in senders {
        s.client.disconnect().await.ok();
    }
    cluster.shutdown().await;
}

/// A record kept by a node that is no replica of its room reaches the room's replicas with no
/// change of the ring: one held there because its replica could not be sent it
/// (`ClusterHistory::hold`, what the rooms driver calls then), and one sent there by a node
/// whose view of the ring differed (`on_record`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_kept_by_no_replica_reaches_the_replicas() {
    let cluster = TestCluster::start(
        3,
        Box::new(|c| vec![clusterchat::node::Service::chat(c).expect("chat service")]),
        no_rate_limit,
    )
    .await;
    cluster.wait_converged().await;
    wait_settled(&cluster).await;
    let (nsp, room) = ("/chat", "lobby");
    let ready = ready_of(&cluster.members_of(cluster.node(0)));
    let replicas: Vec<String> = replicas(&ready, nsp, room).into_iter().map(|(id, _)| id).collect();
    assert_eq!(replicas.len(), 2);
    let outsider = cluster.live().find(|n| !replicas.iter().any(|r| r == n.node_id())).expect("a third node");
    let entry = |n: u64, body: &str| Entry { at_ms: 1, id: (u64::MAX, n), body: body.to_owned() };
    let history = outsider.history().expect("history on");
    history.hold(nsp.to_owned(), room.to_owned(), entry(1, "held"));
    history.on_record(nsp.to_owned(), room.to_owned(), entry(2, "passed on"));
    let room_id = (nsp.to_owned(), room.to_owned());
    let deadline = Instant::now() + Duration::from_secs(10);
    for replica in &replicas {
        let store = cluster.node_by_id(replica).history_store().expect("a store");
        loop {
            let ids: Vec<(u64, u64)> = store.entries(&room_id).iter().map(|e| e.id).collect();
            if ids.contains(&(u64::MAX, 1)) && ids.contains(&(u64::MAX, 2)) {
                break;
            }
            assert!(Instant::now() < deadline, "{replica} has {ids:?}, not both records, after 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(ready_of(&cluster.members_of(cluster.node(0))), ready, "the ring did not change");
    cluster.shutdown().await;
}

/// Every node of a cluster with `history.dir` stops; a new cluster of the same nodes on the same
/// directories gives newcomers every room's history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_cluster_restart_keeps_every_rooms_history() {
    let started = Instant::now();
    let base = temp_dir("history-restart");
    let cluster = TestCluster::chat_with_history(3, &base, no_rate_limit).await;
    let alice = connect(&cluster.url(0), "alice").await;
    for room in ROOMS {
        join(&alice, room).await;
    }
    let acked: Acked = Arc::default();
    chat(std::slice::from_ref(&alice), 5, &acked, 0).await;
    alice.client.disconnect().await.ok();
    cluster.shutdown().await;
    for node in ["node1", "node2", "node3"] {
        assert!(base.join(node).join("history.redb").exists(), "{node} saved its history");
    }

    let cluster = TestCluster::chat_with_history(3, &base, no_rate_limit).await;
    for i in 0..3 {
        check_history(&cluster.url(i), &format!("reader{i}"), &acked, "after a full restart").await;
    }
    println!("full restart: {} rooms kept in {:?}", ROOMS.len(), started.elapsed());
    cluster.shutdown().await;
    let _ = std::fs::remove_dir_all(&base);
}

fn lone_node(dir: &Path) -> NodeConfig {
    let mut config = NodeConfig { http: "127.0.0.1:0".parse().unwrap(), drain_ms: 0, ..NodeConfig::default() };
    config.history.dir = Some(dir.to_owned());
    config
}

/// A node whose history file is garbage moves it aside, says so, starts with no history, and
/// saves the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_history_file_is_moved_aside_and_the_node_starts() {
    let dir = temp_dir("history-corrupt");
    std::fs::write(dir.join("history.redb"), b"not a database, just bytes".repeat(100)).unwrap();
    let node = Node::start(lone_node(&dir)).await.expect("the node starts despite a corrupt history file");
    let aside: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("history.redb.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "the corrupt file is kept aside: {aside:?}");
    let url = format!("http://{}", node.http_addr());
    let alice = connect(&url, "alice").await;
    join(&alice, "lobby").await;
    for k in 0..3 {
        let sent = alice.call("chat message", json!({ "room": "lobby", "message": format!("m{k}") })).await;
        assert_eq!(sent, json!({ "ok": true }));
    }
    alice.client.disconnect().await.ok();
    node.shutdown().await;

    let node = Node::start(lone_node(&dir)).await.expect("the node starts again");
    let mut late = connect(&format!("http://{}", node.http_addr()), "late").await;
    join(&late, "lobby").await;
    let history: Value = late.expect("room history").await;
    let messages: Vec<&str> =
        history["messages"].as_array().unwrap().iter().map(|m| m["message"].as_str().unwrap()).collect();
    assert_eq!(messages, ["m0", "m1", "m2"], "the new file kept what was said after the corrupt one");
    late.client.disconnect().await.ok();
    node.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// `kill -9` of a room's first replica (its history file left as it was), more messages while
/// it is down, and its restart on the same `history.dir` with that stale copy: a newcomer on any
/// node gets every message, in order; the stale copy takes nothing back in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_back_with_a_stale_copy_takes_no_room_back_in_time() {
    use clusterchat::cluster::membership::room_key;
    use clusterchat::cluster::placement::Placement;

    let started = Instant::now();
    let base = temp_dir("history-stale");
    let dirs: Vec<PathBuf> = (1..=3).map(|i| base.join(format!("node{i}"))).collect();
    let flags = |i: usize| vec!["--history-dir".to_owned(), dirs[i].display().to_string()];
    let mut nodes = spawn_processes_with(env!("CARGO_BIN_EXE_clusterchat"), 3, flags).await;
    let urls: Vec<String> = nodes.iter().map(|n| format!("http://{}", n.http)).collect();
    let room = "stale";
    let owner = Placement::new(["node1", "node2", "node3"]).owner(&room_key("/chat", room)).unwrap().to_owned();
    let owner_index: usize = owner.trim_start_matches("node").parse::<usize>().unwrap() - 1;
    // alice's session lives on a node that stays.
    let alice = loop {
        let mut client = RustClient::connect(&urls[(owner_index + 1) % 3], "alice", TransportType::Websocket).await;
        if client.expect("welcome").await["node"] != json!(owner) {
            break client;
        }
        client.client.disconnect().await.ok();
    };
    join(&alice, room).await;
    let say = |from: usize, to: usize| {
        let alice = &alice;
        async move {
            for k in from..to {
                let sent = alice.call("chat message", json!({ "room": room, "message": format!("m{k}") })).await;
                assert_eq!(sent, json!({ "ok": true }));
            }
        }
    };
    say(0, 10).await;
    nodes[owner_index].child.kill().await.expect("kill -9");
    let mut dead = nodes.remove(owner_index);
    wait_converged(&mut nodes).await; // the survivors count two ready members
    say(10, 20).await;
    dead.restart();
    nodes.insert(owner_index, dead);
    wait_converged(&mut nodes).await;
    let want: Vec<String> = (0..20).map(|k| format!("m{k}")).collect();
    for (i, url) in urls.iter().enumerate() {
        let mut late = connect(url, &format!("late{i}")).await;
        join(&late, room).await;
        let history = late.expect("room history").await;
        let got: Vec<&str> =
            history["messages"].as_array().unwrap().iter().map(|m| m["message"].as_str().unwrap()).collect();
        assert_eq!(got, want, "history read on node{} after {owner} came back", i + 1);
        late.client.disconnect().await.ok();
    }
    println!("stale replica: 20 of 20 messages, in order, on every node, in {:?}", started.elapsed());
    alice.client.disconnect().await.ok();
    for n in &mut nodes {
        let _ = n.child.kill().await;
    }
    let _ = std::fs::remove_dir_all(&base);
}
