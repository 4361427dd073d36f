//! A node run as the binary has the threads its settings give it (`--io-threads`,
//! `--worker-threads`): nodes sharing a host are sized to their share of its cores
//! (`cluster.sh`), and a count of 0 is refused with a clear error before anything starts.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

mod support;
use support::cluster::child_process;

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

#[tokio::test]
async fn a_node_runs_the_connection_threads_and_runtime_workers_it_is_given() {
    let args = ["node", "--node-id", "threads1", "--http", "127.0.0.1:0", "--io-threads", "3", "--worker-threads", "1"];
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
    let count = |prefix: &str| names.iter().filter(|n| n.starts_with(prefix)).count();
    assert_eq!(count("io-"), 3, "connection threads: {names:?}");
    // The runtime's blocking threads share its workers' name; a node without a history
    // directory starts none before it serves.
    assert_eq!(count("tokio-rt-worker"), 1, "runtime workers: {names:?}");
    child.kill().await.expect("the node stops");
}

#[tokio::test]
async fn a_node_given_no_runtime_workers_exits_with_a_clear_error() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_clusterchat"))
        .args(["node", "--node-id", "threads2", "--http", "127.0.0.1:0", "--worker-threads", "0"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUST_BACKTRACE", "0")
        .output()
        .await
        .expect("clusterchat runs");
    assert!(!out.status.success(), "a node with no workers must not run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("worker_threads must be > 0"), "{stderr}");
}
