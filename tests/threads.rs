//! A node run as the binary has the threads its settings give it (`--cores`, `--io-threads`,
//! `--worker-threads`): nodes sharing a host are sized to their share of its cores
//! (`cluster.sh`), one core runs a node on one thread in all, and a count of 0 is refused with
//! a clear error before anything starts.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

mod support;
use support::cluster::{child_process, spawn_processes_with};
use support::polling::ChatClient;

/// How long the node may take to print that it serves.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The names of a process's threads, from /proc.
fn thread_names(pid: u32) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the node's threads");
    tasks
        .map(|t| std::fs::read_to_string(t.expect("a thread").path().join("comm")).expect("a thread's name"))
        .map(|name| name.trim_end().to_owned())
        .collect()
}

/// The names of the threads of the binary run with `flags`, once it serves.
async fn threads_of_a_node_run_with(flags: &[&str]) -> Vec<String> {
    let mut args = vec!["node", "--node-id", "threads1", "--http", "127.0.0.1:0"];
    args.extend(flags);
    let mut child = child_process(env!("CARGO_BIN_EXE_clusterchat"), &args, &[]);
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let serving = async {
        while let Some(line) = lines.next_line().await.expect("node stdout") {
            if line.contains("chat page at http://") {
                return;
            }
        }
        panic!("the node's output ended before it served");
    };
    tokio::time::timeout(START_TIMEOUT, serving).await.expect("the node serves");
    let names = thread_names(child.id().expect("a running node"));
    child.kill().await.expect("the node stops");
    names
}

fn count(names: &[String], prefix: &str) -> usize {
    names.iter().filter(|n| n.starts_with(prefix)).count()
}

#[tokio::test]
async fn a_node_runs_the_connection_threads_and_runtime_workers_it_is_given() {
    let names = threads_of_a_node_run_with(&["--io-threads", "3", "--worker-threads", "2"]).await;
    assert_eq!(count(&names, "io-"), 3, "connection threads: {names:?}");
    // The runtime's blocking threads share its workers' name; a node without a history
    // directory starts none before it serves.
    assert_eq!(count(&names, "tokio-rt-worker"), 2, "runtime workers: {names:?}");
}

#[tokio::test]
async fn a_node_given_one_core_runs_on_one_thread() {
    let names = threads_of_a_node_run_with(&["--cores", "1"]).await;
    assert_eq!(names, ["clusterchat"], "one thread in all");
    // Explicit counts override what the cores say.
    let names = threads_of_a_node_run_with(&["--cores", "1", "--io-threads", "2"]).await;
    assert_eq!(count(&names, "io-"), 2, "connection threads: {names:?}");
    assert_eq!(count(&names, "tokio-rt-worker"), 0, "a single-threaded main runtime: {names:?}");
    let names = threads_of_a_node_run_with(&["--cores", "2"]).await;
    assert_eq!((count(&names, "io-"), count(&names, "tokio-rt-worker")), (2, 2), "{names:?}");
}

/// Three nodes of one thread each serve what the threaded ones do: clients of different nodes
/// chat, and a request that lands on a node other than its session's owner is forwarded there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_of_one_thread_each_chat_across_nodes() {
    let nodes =
        spawn_processes_with(env!("CARGO_BIN_EXE_clusterchat"), 3, |_| vec!["--cores".into(), "1".into()]).await;
    for node in &nodes {
        let names = thread_names(node.child.id().expect("a running node"));
        assert_eq!(count(&names, "io-"), 0, "no connection threads: {names:?}");
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
