//! A node run as the binary has the threads its settings give it (`--cores`, `--io-threads`,
//! `--worker-threads`): nodes sharing a host are sized to their share of its cores
//! (`cluster.sh`), one core runs a node on one thread, and `--cores 0` or `--worker-threads 0`
//! is refused with a clear error before anything starts.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

mod support;
use support::cluster::{child_process, line_containing, spawn_processes_with};
use support::polling::ChatClient;

/// The names of a process's threads, from /proc.
fn thread_names(pid: u32) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the node's threads");
    tasks
        .map(|t| std::fs::read_to_string(t.expect("a thread").path().join("comm")).expect("a thread's name"))
        .map(|name| name.trim_end().to_owned())
        .collect()
}

/// The names of the threads of the binary run with `flags` once it serves, read until `settled`
/// holds of them (or 5 s pass): a new thread names itself once it first runs, so a snapshot taken
/// on a busy host may still show one under the process's name.
async fn threads_of_a_node_run_with(flags: &[&str], settled: impl Fn(&[String]) -> bool) -> Vec<String> {
    let mut args = vec!["node", "--node-id", "threads1", "--http", "127.0.0.1:0"];
    args.extend(flags);
    let mut child = child_process(env!("CARGO_BIN_EXE_clusterchat"), &args, &[]);
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    line_containing(&mut lines, "chat page at http://").await;
    let pid = child.id().expect("a running node");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut names = thread_names(pid);
    while !settled(&names) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        names = thread_names(pid);
    }
    child.kill().await.expect("the node stops");
    names
}

fn count(names: &[String], prefix: &str) -> usize {
    names.iter().filter(|n| n.starts_with(prefix)).count()
}

/// (connection threads, runtime workers and blocking threads): the runtime's blocking threads
/// share its workers' name; a node without a history directory starts none before it serves.
fn layout(names: &[String]) -> (usize, usize) {
    (count(names, "io-"), count(names, "tokio-rt-worker"))
}

#[tokio::test]
async fn a_node_runs_the_connection_threads_and_runtime_workers_it_is_given() {
    // Counts other than a small host's default (one per core), so that the flags are what is seen.
    let names =
        threads_of_a_node_run_with(&["--io-threads", "5", "--worker-threads", "3"], |n| layout(n) == (5, 3)).await;
    assert_eq!(layout(&names), (5, 3), "connection threads and runtime workers: {names:?}");
}

#[tokio::test]
async fn a_node_given_one_core_runs_on_one_thread() {
    let names = threads_of_a_node_run_with(&["--cores", "1"], |n| n.len() == 1).await;
    assert_eq!(names, ["clusterchat"], "one thread in all");
    // Explicit counts override what the cores say: a single-threaded main runtime still.
    let names = threads_of_a_node_run_with(&["--cores", "1", "--io-threads", "2"], |n| layout(n) == (2, 0)).await;
    assert_eq!(layout(&names), (2, 0), "{names:?}");
    let names = threads_of_a_node_run_with(&["--cores", "5"], |n| layout(n) == (5, 5)).await;
    assert_eq!(layout(&names), (5, 5), "{names:?}");
}

/// Three nodes of one thread each serve what the threaded ones do: clients of different nodes
/// chat, a request that lands on a node other than its session's owner is forwarded there, and
/// a node leaves gracefully on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_of_one_thread_each_chat_across_nodes_and_leave() {
    let mut nodes =
        spawn_processes_with(env!("CARGO_BIN_EXE_clusterchat"), 3, |_| vec!["--cores".into(), "1".into()]).await;
    for node in &nodes {
        let names = thread_names(node.child.id().expect("a running node"));
        // No connection threads, no runtime workers (nor blocking threads: nothing blocking
        // has run yet): the main thread serves everything.
        assert_eq!(names, ["clusterchat"], "one thread: {names:?}");
    }
    let at: Vec<_> = nodes.iter().map(|n| n.http).collect();
    let mut alice = ChatClient::connect(at[0], "alice").await;
    alice.join(at[1], "lobby").await;
    let mut bob = ChatClient::connect(at[2], "bob").await;
    bob.join(at[0], "lobby").await;
    let said = serde_json::json!(["chat message", { "room": "lobby", "message": "one thread each" }]);
    bob.post(at[1], &format!("42/chat,{said}")).await;
    let heard = alice.expect(at[2], "42/chat,[\"chat message\"").await;
    let args: serde_json::Value = serde_json::from_str(&heard["42/chat,".len()..]).expect("an event's arguments");
    assert_eq!(args[1], serde_json::json!({ "user": "bob", "room": "lobby", "message": "one thread each" }), "{heard}");

    // The one shutdown path, with the connections on the main runtime: drained and closed.
    nodes[2].terminate().await;
    let status = nodes[2].child.try_wait().expect("exit status").expect("exited");
    assert!(status.success(), "a node of one thread leaves cleanly on SIGTERM: {status}");
}

#[tokio::test]
async fn a_node_given_no_cores_or_no_runtime_workers_exits_with_a_clear_error() {
    for (flag, error) in [("--worker-threads", "worker_threads must be > 0"), ("--cores", "cores must be > 0")] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_clusterchat"))
            .args(["node", "--node-id", "threads2", "--http", "127.0.0.1:0", flag, "0"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("RUST_BACKTRACE", "0")
            .output()
            .await
            .expect("clusterchat runs");
        assert!(!out.status.success(), "a node with {flag} 0 must not run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(error), "{stderr}");
    }
}
