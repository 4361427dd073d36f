//! Faults under chat load (tests/clients/load.mjs: socket.io-client v4 users chatting through
//! a round-robin balancer in front of three real node processes): a rolling restart with
//! graceful leaves, and a crash. Every user must end connected and back in its rooms, and no
//! message may be lost for a user who stayed in its room (see load.mjs for the accounting);
//! after a graceful leave, not even for those who were reconnecting (connection state recovery).
//! The short versions run in the test command; each prints its figures for RELIABILITY.md.

use std::time::Instant;

mod support;
use support::cluster::{spawn_processes, wait_converged, wait_history_settled, wait_records_kept, Process};
use support::load::{assert_all_back, Load};
use support::rr_proxy::RoundRobinProxy;

const BIN: &str = env!("CARGO_BIN_EXE_clusterchat");

/// The two fault tests run one at a time: each has three nodes and a load on two shared cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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
    let _alone = ONE_AT_A_TIME.lock().await;
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
    // and the messages sent while they were away, each once and in its sender's order. Every
    // reconnection recovered in 15 runs in a row on 2026-11-30 after the last fix; asserted
    // with a margin all the same (RELIABILITY.md).
    let (recovered, reconnects) = (report["recovered"].as_u64().unwrap(), report["reconnects"].as_u64().unwrap());
    assert!(recovered * 10 >= reconnects * 9, "at least 90 % of reconnections recovered: {report}");
    let (missed, acked) = (report["missed"].as_u64().unwrap(), report["acked"].as_u64().unwrap());
    assert!(missed * 100 <= acked, "missed while away at most 1 % of the messages: {report}");
    for figure in ["duplicates", "reordered", "foreign"] {
        assert_eq!(report[figure], 0, "{figure}: {report}");
    }
}

/// Each node in turn is killed (SIGKILL) under load, declared gone by the others, and started
/// again. Its users reconnect through the others and get their sessions back: connection state
/// recovery survives the crash (each session's record is kept on another node, see
/// `socketio::recovery`). Every reconnection is recovered; no message is lost, missed, sent
/// twice or delivered out of its sender's order; every room's history is intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_each_node_under_chat_load() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let (users, rounds) = (users(), rounds());
    let mut nodes: Vec<Process> = spawn_processes(BIN, 3).await;
    let proxy =
        RoundRobinProxy::start("127.0.0.1:0".parse().unwrap(), nodes.iter().map(|n| n.http).collect()).await.unwrap();
    let mut load = Load::start(&proxy.url(), users, interval()).await;
    let started = Instant::now();
    let mut victims = Victims::from_env();
    for _ in 0..rounds {
        for turn in 0..nodes.len() {
            let i = victims.next(turn, nodes.len());
            // The victim goes last for a moment, so the survivors are one slice.
            let last = nodes.len() - 1;
            nodes.swap(i, last);
            load.mark(&format!("kill -9 node{}", i + 1)).await;
            nodes[last].child.kill().await.expect("kill -9");
            // One crash at a time: the survivors hold every room's history again (two
            // replicas), and then so does the restarted node, before the next one dies.
            wait_converged(&mut nodes[..last]).await;
            wait_history_settled(&mut nodes[..last]).await;
            load.mark(&format!("restart node{}", i + 1)).await;
            nodes[last].restart();
            wait_converged(&mut nodes).await;
            wait_history_settled(&mut nodes).await;
            // ... and every user is back (restored), its record kept on another node, before
            // the next crash.
            load.wait_back(std::time::Duration::from_secs(60)).await;
            wait_records_kept(&mut nodes).await;
            load.mark("settled").await;
            nodes.swap(i, last);
        }
    }
    let took = started.elapsed();
    let report = load.stop().await;
    println!("{rounds} round(s) of kill -9 of each of 3 nodes in {took:?} under {users} users: {report}");
    assert_all_back(&report, users);
    let reconnects = report["reconnects"].as_u64().unwrap();
    assert!(reconnects > 0, "some users were on the killed nodes: {report}");
    // Every reconnection recovered, nothing missed and every room's history whole: asserted
    // exactly (97 runs in a row on 2026-11-30, 12 and 40 users, up to three runs at once on
    // two cores; the one miss seen before, in a run under the whole suite, came while the
    // rolling restart test ran beside this one, which it no longer does).
    assert_eq!(report["recovered"], reconnects, "every reconnection recovered: {report}");
    for figure in ["missed", "duplicates", "reordered", "foreign", "history_stale", "history_gaps"] {
        assert_eq!(report[figure], 0, "{figure}: {report}");
    }
}

/// Which node each kill takes: each in turn, or, with `RELIABILITY_RANDOM=<seed>` (the long
/// version), one at random (xorshift; the seed is printed, so a run can be replayed).
struct Victims(Option<u64>);

impl Victims {
    fn from_env() -> Self {
        let seed =
            std::env::var("RELIABILITY_RANDOM").ok().map(|v| v.parse::<u64>().expect("RELIABILITY_RANDOM: a number"));
        if let Some(seed) = seed {
            println!("victims at random, seed {seed}");
        }
        Self(seed.map(|s| s.max(1)))
    }

    fn next(&mut self, turn: usize, nodes: usize) -> usize {
        match &mut self.0 {
            None => turn,
            Some(x) => {
                *x ^= *x << 13;
                *x ^= *x >> 7;
                *x ^= *x << 17;
                (*x % nodes as u64) as usize
            }
        }
    }
}
