//! The logs tell a session's story: a node run as the binary with `RUST_LOG=clusterchat=debug`
//! names the session id in the line for a new connection (the receiving node) and in the line
//! that starts the session (its owner), so `grep <sid>` over `cluster.sh logs` follows it.

use futures_util::StreamExt;

use tokio::io::{AsyncBufReadExt, BufReader};

mod support;
use support::cluster::{child_process, line_containing, LINE_TIMEOUT};

#[tokio::test]
async fn a_new_connection_is_logged_with_its_session_id() {
    let args = ["node", "--node-id", "logs1", "--http", "127.0.0.1:0"];
    let mut child = child_process(env!("CARGO_BIN_EXE_clusterchat"), &args, &[("RUST_LOG", "clusterchat=debug")]);
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let started = line_containing(&mut lines, "chat page at http://").await;
    let addr = started.rsplit("http://").next().expect("an address").trim_end_matches('/').to_owned();

    let http = reqwest::Client::builder().no_proxy().timeout(LINE_TIMEOUT).build().expect("HTTP client");
    let open = http.get(format!("http://{addr}/socket.io/?EIO=4&transport=polling")).send().await.expect("handshake");
    let body = open.text().await.expect("handshake body");
    // `0{"sid":"…",…}`: the Engine.IO OPEN packet.
    let open: serde_json::Value = serde_json::from_str(body.strip_prefix('0').expect("an OPEN packet")).expect("JSON");
    let sid = open["sid"].as_str().expect("a sid").to_owned();

    let received = line_containing(&mut lines, "Received new connection").await;
    assert!(received.contains(&format!("Received new connection for {sid}")), "{received}");
    assert!(received.contains("[logs1]"), "the line names the receiving node: {received}");
    let starting = line_containing(&mut lines, &format!("Starting {sid} session")).await;
    assert!(starting.contains("[logs1]"), "the line names the owner: {starting}");

    // A client that opens with a WebSocket: the same story.
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await.expect("WebSocket handshake");
    let open =
        tokio::time::timeout(LINE_TIMEOUT, ws.next()).await.expect("OPEN in time").expect("a frame").expect("ok");
    let open: serde_json::Value =
        serde_json::from_str(open.to_text().expect("text").strip_prefix('0').expect("an OPEN packet")).expect("JSON");
    let sid = open["sid"].as_str().expect("a sid").to_owned();
    let received = line_containing(&mut lines, "Received new connection").await;
    assert!(received.contains(&format!("Received new connection for {sid}")), "{received}");
    line_containing(&mut lines, &format!("Starting {sid} session")).await;
    child.kill().await.expect("node stopped");
}
