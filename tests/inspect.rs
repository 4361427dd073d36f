//! `clusterchat inspect` against three in-process nodes: the real binary joins the ring as an
//! observer, reports members, room subscribers and owners, and no node ever counts it.

use clusterchat::node::Service;

use std::process::{Output, Stdio};
use std::time::Duration;

use clusterchat::cluster::rooms::room_owner;
use clusterchat::cluster::router::sid_owner;
use support::polling::{ChatClient, CONVERGE};

mod support;
use serde_json::{json, Value};
use support::cluster::{TestCluster, SECRET};
use support::server::wait_until;

/// Bound on one inspect run: its own wait for the seeds is 5 s.
const RUN: Duration = Duration::from_secs(20);

/// Runs `clusterchat inspect <args>` to completion. Meanwhile, every node's membership must
/// stay exactly `node1..node3`: the observer is never a member.
async fn inspect(cluster: &TestCluster, args: &[&str]) -> Output {
    inspect_with_secret(cluster, args, SECRET).await
}

async fn inspect_with_secret(cluster: &TestCluster, args: &[&str], secret: &str) -> Output {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_clusterchat"))
        .arg("inspect")
        .args(args)
        .env("CLUSTERCHAT_SECRET", secret)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the clusterchat binary runs");
    let output = child.wait_with_output();
    tokio::pin!(output);
    let deadline = tokio::time::Instant::now() + RUN;
    loop {
        tokio::select! {
            out = &mut output => return out.expect("inspect output"),
            () = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
        assert!(tokio::time::Instant::now() < deadline, "inspect {args:?} did not finish within {RUN:?}");
        for node in cluster.live() {
            let ids: Vec<String> = cluster.members_of(node).nodes.keys().cloned().collect();
            assert_eq!(ids, ["node1", "node2", "node3"], "{} counts the observer as a member", node.node_id());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_reports_members_rooms_and_owners() {
    let cluster = TestCluster::start(3, Box::new(|c| vec![Service::chat(c).expect("chat service")]), |c| {
        c.engine.ping_timeout_ms = 1000
    })
    .await;
    let entry = cluster.node(0).http_addr();
    let room = "café ☕";
    let mut alice = ChatClient::connect(entry, "alice").await;
    alice.join(entry, room).await;
    let owner = sid_owner(&alice.sid).expect("the sid names its owner").to_owned();
    let room_id = ("/chat".to_owned(), room.to_owned());
    // Alice's node and the keeper of her session's record advertise the room.
    wait_until(CONVERGE, "the room keys of the owner and the keeper reach every node", || {
        cluster.live().all(|n| {
            let members = cluster.members_of(n);
            members.get(&owner).is_some_and(|m| m.rooms.contains(&room_id))
                && members.nodes.values().filter(|m| m.rooms.contains(&room_id)).count() == 2
        })
    })
    .await;

    let seeds = ["--seed", &cluster.gossip[0], "--seed", &cluster.gossip[1], "--cluster-id", &cluster.cluster_id];
    let out = inspect(&cluster, &[&seeds[..], &["--json", "--sid", &alice.sid, "--room", room]].concat()).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "inspect failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let report: Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not one JSON document ({e}): {stdout}"));

    let members = report["members"].as_array().expect("members");
    let ids: Vec<&str> = members.iter().map(|m| m["node_id"].as_str().expect("node_id")).collect();
    assert_eq!(ids, ["node1", "node2", "node3"], "{report}");
    // The room is advertised by alice's node and by the keeper of her session's record
    // (connection state recovery: another node, subscribed to her rooms).
    let keeper = members
        .iter()
        .map(|m| m["node_id"].as_str().unwrap())
        .find(|id| {
            *id != owner
                && report["members"].as_array().unwrap().iter().any(|m| m["node_id"] == *id && m["rooms"] != json!([]))
        })
        .expect("a keeper advertises the room")
        .to_owned();
    for (m, (node, gossip)) in members.iter().zip(cluster.live().zip(&cluster.gossip)) {
        assert_eq!(m["live"], true, "{m}");
        assert_eq!(m["ready"], true, "{m}");
        assert!(m["generation"].as_u64().is_some_and(|g| g > 0) && m["heartbeat"].is_u64(), "{m}");
        assert_eq!(m["gossip"], json!(gossip), "{m}");
        assert_eq!(m["http"], json!(node.http_addr().to_string()), "{m}");
        assert_eq!(m["rpc"], json!(node.rpc_addr().expect("RPC address").to_string()), "{m}");
        let advertises = node.node_id() == owner || node.node_id() == keeper;
        let want = if advertises { json!([{ "nsp": "/chat", "room": room }]) } else { json!([]) };
        assert_eq!(m["rooms"], want, "{m}");
    }
    assert_eq!(report["sid"], json!({ "sid": alice.sid, "owner": owner, "owner_live": true }));
    let mut subscribers = [owner.clone(), keeper.clone()];
    subscribers.sort();
    let room_at_node1 = room_owner(&cluster.members_of(cluster.node(0)), "/chat", room).expect("a room owner");
    assert_eq!(
        report["room"],
        json!({ "nsp": "/chat", "room": room, "owner": room_at_node1, "subscribers": subscribers }),
        "{report}"
    );

    // The text form: an aligned member table, the room table, the answers.
    let out = inspect(&cluster, &[&seeds[..], &["--sid", "-x.node9", "--room", "empty"]].concat()).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("3 live, 0 dead"), "{text}");
    let header = text.lines().find(|l| l.starts_with("NODE   GENERATION")).unwrap_or_else(|| panic!("{text}"));
    let ready_column = header.find("READY").expect("READY column");
    let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("node") && l.contains(" live ")).collect();
    assert_eq!(rows.len(), 3, "{text}");
    assert!(rows.iter().all(|r| r[ready_column..].starts_with("yes")), "aligned: {text}");
    assert!(text.lines().any(|l| l.starts_with(&owner) && l.ends_with(room)), "room table: {text}");
    assert!(text.contains("session -x.node9: owned by node9 (not a live member"), "{text}");
    assert!(text.contains("room /chat empty: owned by node"), "{text}");

    // The observers have left; the nodes' view never changed.
    for node in cluster.live() {
        assert_eq!(cluster.members_of(node).ready().count(), 3);
    }
    drop(alice);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_fails_when_no_seed_answers() {
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("a UDP port");
    let seed = silent.local_addr().expect("address").to_string();
    let out = tokio::time::timeout(
        RUN,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_clusterchat"))
            .args(["inspect", "--seed", &seed, "--wait-ms", "500"])
            .env("CLUSTERCHAT_SECRET", SECRET)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("inspect gives up in time")
    .expect("the clusterchat binary runs");
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no seed answered"), "{stderr}");
}

/// Gossip is sealed with the cluster secret: an observer with another secret hears nothing,
/// every node drops its datagrams before chitchat sees them (and counts them), and no
/// node's view of the ring changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observer_without_the_secret_hears_nothing() {
    let cluster = TestCluster::chat(3).await;
    let seeds = ["--seed", &cluster.gossip[0], "--cluster-id", &cluster.cluster_id, "--wait-ms", "1000"];
    let out = inspect_with_secret(&cluster, &seeds, "a-guessed-secret-0000").await;
    assert!(!out.status.success(), "inspect with a wrong secret got an answer");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no seed answered"), "{stderr}");
    let metrics = reqwest::get(format!("http://{}/metrics", cluster.node(0).http_addr()))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    let refused = metrics
        .lines()
        .find_map(|l| l.strip_prefix("clusterchat_gossip_rejected_total{reason=\"unauthenticated\"} "))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no unauthenticated count in:\n{metrics}"));
    assert!(refused > 0, "the observer's datagrams were not counted");
    assert!(metrics.contains("clusterchat_gossip_up 1"), "{metrics}");
    // Traffic is counted at the socket, refused datagrams included.
    let count = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{metrics}"))
    };
    assert!(count("clusterchat_gossip_received_datagrams_total") >= refused, "{metrics}");
    assert!(count("clusterchat_gossip_sent_bytes_total") > 0, "{metrics}");
    cluster.shutdown().await;
}
