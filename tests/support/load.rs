//! Chat load for fault tests: tests/clients/load.mjs (socket.io-client v4 users chatting in a
//! few rooms through a balancer) as a child process, started, then stopped for its report.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdout};

pub struct Load {
    child: Child,
    lines: tokio::io::Lines<BufReader<ChildStdout>>,
}

impl Load {
    /// `users` users in 4 rooms (2 each) at `url`, each sending every `interval_ms`; returns once
    /// every user is in its rooms.
    pub async fn start(url: &str, users: usize, interval_ms: u64) -> Self {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/load.mjs");
        let mut child = tokio::process::Command::new("node")
            .arg(script)
            .arg(url)
            .args([
                "--users",
                &users.to_string(),
                "--rooms",
                "4",
                "--per-user",
                "2",
                "--interval",
                &interval_ms.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs load.mjs");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut load = Self { child, lines };
        assert_eq!(load.line(Duration::from_secs(30)).await, "ready", "every user in its rooms");
        load
    }

    async fn line(&mut self, limit: Duration) -> String {
        let line = tokio::time::timeout(limit, self.lines.next_line()).await.expect("load.mjs answers in time");
        line.expect("load.mjs output").expect("load.mjs still running")
    }

    /// Notes an event in the load's debug log (with `LOAD_DEBUG`), on its clock.
    pub async fn mark(&mut self, what: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(format!("mark {what}\n").as_bytes()).await.unwrap();
    }

    /// Waits (at most `limit`) until every user is connected and in its rooms again.
    pub async fn wait_back(&mut self, limit: Duration) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(b"back?\n").await.unwrap();
        assert_eq!(self.line(limit).await, "back", "every user back in its rooms");
    }

    /// Stops the load and returns its report.
    pub async fn stop(mut self) -> Value {
        let mut stdin = self.child.stdin.take().unwrap();
        stdin.write_all(b"stop\n").await.unwrap();
        let report = self.line(Duration::from_secs(30)).await;
        let _ = self.child.wait().await;
        serde_json::from_str(&report).unwrap_or_else(|e| panic!("not a report ({e}): {report}"))
    }
}

/// Every user ended connected and in its rooms, and none lost a message while in its room.
pub fn assert_all_back(report: &Value, users: usize) {
    assert_eq!(report["connected"], users, "every user connected at the end: {report}");
    assert_eq!(report["joined"], users, "every user back in its rooms: {report}");
    assert_eq!(report["lost"], 0, "no message lost for a user who stayed in its room: {report}");
    assert!(report["acked"].as_u64().unwrap() > 0, "the load ran: {report}");
}
