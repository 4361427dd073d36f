//! Socket.IO protocol conformance, covering the Socket.IO cases of the official
//! socket.io-protocol test suite (its Engine.IO cases run in `engineio_protocol.rs` against
//! `/socket.io/` too), plus server-to-client acknowledgements and revision 4 clients over
//! Engine.IO 3.

mod support;

use std::time::Duration;

use bytes::Bytes;
use clusterchat::engineio::CloseReason;
use clusterchat::socketio::{AckError, AckResponse};
use serde_json::{json, Value};
use support::server::*;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;

const PLACEHOLDERS: &str = r#"{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}"#;

/// An Engine.IO v4 WebSocket to `/socket.io/`, before any namespace CONNECT; also returns the
/// Engine.IO sid.
async fn engine_ws(ts: &TestServer) -> (Ws, String) {
    let (ws, h) = ts.ws_session(SOCKETIO_PATH, 4).await;
    (ws, h["sid"].as_str().expect("sid").to_owned())
}

/// Sends `connect` (a CONNECT packet) and checks the reply `40[<nsp>,]{"sid":...}` and the
/// fixture's `auth` event carrying `auth`. Returns the socket id.
async fn connect(ws: &mut Ws, connect: &str, nsp: &str, auth: Value) -> String {
    ws.send_text(connect).await;
    let reply = ws.recv_text_skip_pings().await;
    let prefix = if nsp == "/" { "40".to_owned() } else { format!("40{nsp},") };
    let json = reply.strip_prefix(prefix.as_str()).unwrap_or_else(|| panic!("expected {prefix}{{..}}, got {reply:?}"));
    let handshake: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("CONNECT reply ({e}): {reply:?}"));
    assert_eq!(keys(&handshake), ["sid"], "{reply:?}");
    let sid = handshake["sid"].as_str().expect("socket sid is a string").to_owned();
    let event = ws.recv_text_skip_pings().await;
    let (event_nsp, id, data) = parse_sio_event(&event);
    assert_eq!((event_nsp.as_str(), id, data), (nsp, None, json!(["auth", auth])), "{event:?}");
    sid
}

/// A WebSocket connected to the main namespace, as the suite's `initSocketIOConnection`.
async fn connected(ts: &TestServer) -> (Ws, String) {
    let (mut ws, engine_sid) = engine_ws(ts).await;
    connect(&mut ws, "40", "/", json!({})).await;
    (ws, engine_sid)
}

/// Sends `packet` and expects the server to close the connection as a protocol error.
async fn assert_closes_on(ts: &TestServer, ws: &mut Ws, engine_sid: &str, packet: &str) {
    let session = ts.session(SOCKETIO_PATH, engine_sid);
    ws.send_text(packet).await;
    let seen = ws.expect_closed().await;
    assert!(seen.is_empty(), "{packet:?}: nothing answered before the close: {seen:?}");
    assert!(
        matches!(session.close_reason(), Some(CloseReason::TransportError(_))),
        "{packet:?}: close reason {:?}",
        session.close_reason()
    );
}

// ---------------------------------------------------------------------------------------------
// Connect
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_to_the_main_namespace() {
    let ts = TestServer::start().await;
    let (mut ws, engine_sid) = engine_ws(&ts).await;
    let sid = connect(&mut ws, "40", "/", json!({})).await;
    assert_ne!(sid, engine_sid, "the socket id is not the Engine.IO sid");
    assert_eq!(ts.io.namespace("/").unwrap().socket_count(), 1);
    ws.close().await;
    ts.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_to_the_main_namespace_with_a_payload() {
    let ts = TestServer::start().await;
    let (mut ws, _) = engine_ws(&ts).await;
    connect(&mut ws, r#"40{"token":"123"}"#, "/", json!({"token": "123"})).await;
    ws.close().await;
    ts.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_to_a_custom_namespace() {
    let ts = TestServer::start().await;
    let (mut ws, _) = engine_ws(&ts).await;
    connect(&mut ws, "40/custom,", "/custom", json!({})).await;
    assert_eq!(ts.io.namespace("/custom").unwrap().socket_count(), 1);
    assert_eq!(ts.io.namespace("/").unwrap().socket_count(), 0, "no implicit main namespace in revision 5");
    ws.close().await;
    ts.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_to_a_custom_namespace_with_a_payload() {
    let ts = TestServer::start().await;
    let (mut ws, _) = engine_ws(&ts).await;
    connect(&mut ws, r#"40/custom,{"token":"abc"}"#, "/custom", json!({"token": "abc"})).await;
    ws.close().await;
    ts.shutdown().await;
}

/// A CONNECT_ERROR names the namespace; one with a name no server would have (here 300
/// bytes) closes the session instead of being echoed: a client that never reads its polls
/// could otherwise fill its queue with its own bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_namespace_too_long_to_echo_closes_the_session() {
    let ts = TestServer::start().await;
    let p = ts.polling(SOCKETIO_PATH, 4, "").await;
    let session = p.session();
    p.post_ok(format!("40/{},", "a".repeat(300))).await;
    assert_eq!(session.close_reason(), Some(CloseReason::TransportError("namespace name too long")));
    ts.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_an_unknown_namespace() {
    let ts = TestServer::start().await;
    let (mut ws, engine_sid) = engine_ws(&ts).await;
    ws.send_text("40/random").await;
    assert_eq!(ws.recv_text_skip_pings().await, r#"44/random,{"message":"Invalid namespace"}"#);
    // The connection stays usable for a valid namespace.
    connect(&mut ws, "40/custom,", "/custom", json!({})).await;
    assert!(!ts.session(SOCKETIO_PATH, &engine_sid).is_closed());
    ws.close().await;
    ts.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_handshake_closes_the_connection() {
    let ts = TestServer::start().await;
    let (mut ws, engine_sid) = engine_ws(&ts).await;
    assert_closes_on(&ts, &mut ws, &engine_sid, "4abc").await;
    ts.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closes_the_connection_if_no_handshake_is_received() {
    let connect_timeout = Duration::from_millis(400);
    let ts = TestServer::builder().connect_timeout(connect_timeout).start().await;
    let start = Instant::now();
    let (mut ws, engine_sid) = engine_ws(&ts).await;
    let session = ts.session(SOCKETIO_PATH, &engine_sid);
    // PINGs are answered, so only the missing CONNECT can end the session.
    let seen = ws.expect_closed().await;
    assert!(seen.is_empty(), "{seen:?}");
    assert!(start.elapsed() >= connect_timeout, "closed after {:?}", start.elapsed());
    assert_eq!(session.close_reason(), Some(CloseReason::ServerClose));
    ts.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Disconnect
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_from_the_main_namespace_keeps_the_session() {
    let ts = TestServer::start().await;
    let (mut ws, engine_sid) = connected(&ts).await;
    ws.send_text("41").await;
    // The Engine.IO session lives on: the next thing the client sees is a heartbeat.
    assert_eq!(ws.recv_text().await, "2");
    ws.send_text("3").await;
    let ns = ts.io.namespace("/").unwrap().clone();
    wait_until(STEP, "the socket to leave the main namespace", || ns.socket_count() == 0).await;
    assert!(!ts.session(SOCKETIO_PATH, &engine_sid).is_closed());
    ws.close().await;
    ts.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_from_a_custom_namespace_keeps_the_main_one() {
    let ts = TestServer::start().await;
    let (mut ws, _) = connected(&ts).await;
    connect(&mut ws, "40/custom", "/custom", json!({})).await;
    ws.send_text("41/custom").await;
    ws.send_text(r#"42["message","message to main namespace"]"#).await;
    assert_eq!(ws.recv_text_skip_pings().await, r#"42["message-back","message to main namespace"]"#);
    let custom = ts.io.namespace("/custom").unwrap().clone();
    wait_until(STEP, "the socket to leave /custom", || custom.socket_count() == 0).await;
    assert_eq!(ts.io.namespace("/").unwrap().socket_count(), 1);
    ws.close().await;
    ts.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoes_a_plain_text_event() {
    let ts = TestServer::start().await;
    let (mut ws, _) = connected(&ts).await;
    ws.send_text(r#"42["message",1,"2",{"3":[true]}]"#).await;
    assert_eq!(ws.recv_text_skip_pings().await, r#"42["message-back",1,"2",{"3":[true]}]"#);
    // The same in a custom namespace.
    connect(&mut ws, "40/custom,", "/custom", json!({})).await;
    ws.send_text(r#"42/custom,["message","ünïcode ☕"]"#).await;
    assert_eq!(ws.recv_text_skip_pings().await, r#"42/custom,["message-back","ünïcode ☕"]"#);
    ws.close().await;
    ts.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoes_an_event_with_binary_attachments() {
    let ts = TestServer::start().await;
    let (mut ws, _) = connected(&ts).await;
    ws.send_text(&format!(r#"452-["message",{PLACEHOLDERS}]"#)).await;
    ws.send_binary(&[1, 2, 3]).await;
    ws.send_binary(&[4, 5, 6]).await;
    assert_eq!(ws.recv_text_skip_pings().await, format!(r#"452-["message-back",{PLACEHOLDERS}]"#));
    assert_eq!(ws.recv_binary_skip_pings().await, [1, 2, 3]);
    assert_eq!(ws.recv_binary_skip_pings().await, [4, 5, 6]);
    ws.close().await;
    ts.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledges_a_plain_text_event() {
    let ts = TestServer::start().await;
    let (mut ws, _) = connected(&ts).await;
    ws.send_text(r#"42456["message-with-ack",1,"2",{"3":[false]}]"#).await;
    assert_eq!(ws.recv_text_skip_pings().await, r#"43456[1,"2",{"3":[false]}]"#);
    ws.close().await;
    ts.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledges_an_event_with_binary_attachments() {
    let ts = TestServer::start().await;
    let (mut ws, _) = connected(&ts).await;
    ws.send_text(&format!(r#"452-789["message-with-ack",{PLACEHOLDERS}]"#)).await;
    ws.send_binary(&[1, 2, 3]).await;
    ws.send_binary(&[4, 5, 6]).await;
    assert_eq!(ws.recv_text_skip_pings().await, format!("462-789[{PLACEHOLDERS}]"));
    assert_eq!(ws.recv_binary_skip_pings().await, [1, 2, 3]);
    assert_eq!(ws.recv_binary_skip_pings().await, [4, 5, 6]);
    ws.close().await;
    ts.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_packets_close_the_connection() {
    let ts = TestServer::start().await;
    for packet in [
        // The suite's three: unknown packet type, invalid payload format, invalid ack id.
        "4abc",
        "42{}",
        r#"42abc["message-with-ack",1,"2",{"3":[false]}]"#,
        // Also: a packet type past BINARY_ACK, and a placeholder without its attachment.
        "47",
        r#"40"not an object""#,
        r#"451-["message",{"_placeholder":true,"num":1}]"#,
    ] {
        let (mut ws, engine_sid) = connected(&ts).await;
        assert_closes_on(&ts, &mut ws, &engine_sid, packet).await;
    }
    ts.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_and_binary_attachments_over_polling() {
    let ts = TestServer::start().await;
    let p = ts.polling(SOCKETIO_PATH, 4, "").await;
    p.post_ok("40").await;
    let packets = p.poll_packets(2).await;
    assert!(packets[0].starts_with("40{\"sid\":"), "{packets:?}");
    assert_eq!(packets[1], r#"42["auth",{}]"#);
    // Attachments travel as base64 binary packets in the same payload.
    p.post_ok(format!("452-[\"message\",{PLACEHOLDERS}]\x1ebAQID\x1ebBAUG")).await;
    let packets = p.poll_packets(3).await;
    assert_eq!(packets, [format!(r#"452-["message-back",{PLACEHOLDERS}]"#), "bAQID".into(), "bBAUG".into()]);
    p.post_ok(r#"4212["message-with-ack","x"]"#).await;
    assert_eq!(p.poll_packets(1).await, [r#"4312["x"]"#]);
    ts.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Server-to-client acknowledgements
// ---------------------------------------------------------------------------------------------

/// Asks the fixture to emit `question` with an ack (timeout `timeout_ms`) in namespace `nsp`;
/// returns the ack id of the `question` event the client receives.
async fn ask(ws: &mut Ws, nsp: &str, timeout_ms: u64) -> u64 {
    let prefix = if nsp == "/" { "42".to_owned() } else { format!("42{nsp},") };
    ws.send_text(&format!(r#"{prefix}["ask",{timeout_ms}]"#)).await;
    let question = ws.recv_text_skip_pings().await;
    let (got_nsp, id, data) = parse_sio_event(&question);
    assert_eq!((got_nsp.as_str(), &data), (nsp, &json!(["question", "ready?"])), "{question:?}");
    id.unwrap_or_else(|| panic!("an emit with ack carries an id: {question:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_emit_with_ack_gets_the_client_answer() {
    let ts = TestServer::start().await;
    let (mut ws, _) = connected(&ts).await;
    let id = ask(&mut ws, "/", 3000).await;
    ws.send_text(&format!(r#"43{id}["yes",42]"#)).await;
    let answer = ts.next_ack_result(STEP).await;
    assert_eq!(answer, Ok(AckResponse { args: vec![json!("yes"), json!(42)], binary: vec![] }));

    // A binary answer, in a custom namespace.
    connect(&mut ws, "40/custom,", "/custom", json!({})).await;
    let id = ask(&mut ws, "/custom", 3000).await;
    ws.send_text(&format!(r#"461-/custom,{id}[{{"_placeholder":true,"num":0}}]"#)).await;
    ws.send_binary(&[9, 8, 7]).await;
    let answer = ts.next_ack_result(STEP).await;
    assert_eq!(
        answer,
        Ok(AckResponse {
            args: vec![json!({"_placeholder": true, "num": 0})],
            binary: vec![Bytes::from_static(&[9, 8, 7])]
        })
    );
    ws.close().await;
    ts.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_emit_with_ack_times_out_without_an_answer() {
    let ts = TestServer::start().await;
    let (mut ws, engine_sid) = connected(&ts).await;
    let timeout = Duration::from_millis(300);
    let start = Instant::now();
    let id = ask(&mut ws, "/", timeout.as_millis() as u64).await;
    // No answer: the emitter gives up after its timeout (PINGs are answered meanwhile).
    let (answer, ()) = tokio::join!(ts.next_ack_result(timeout + STEP), async {
        // Keep the heartbeat going while the server waits.
        while start.elapsed() < timeout {
            let _ = tokio::time::timeout(timeout.saturating_sub(start.elapsed()), ws.recv_skip_pings()).await;
        }
    });
    assert_eq!(answer, Err(AckError::Timeout(timeout)));
    assert!(start.elapsed() >= timeout, "timed out after {:?}", start.elapsed());
    // A late answer is ignored and the connection stays usable.
    ws.send_text(&format!(r#"43{id}["late"]"#)).await;
    ws.send_text(r#"42["message","still here"]"#).await;
    assert_eq!(ws.recv_text_skip_pings().await, r#"42["message-back","still here"]"#);
    assert!(!ts.session(SOCKETIO_PATH, &engine_sid).is_closed());
    ws.close().await;
    ts.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Revision 4 (socket.io 2.x clients) over Engine.IO 3
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revision_4_client_over_eio3_websocket() {
    let ts = TestServer::start().await;
    let (mut ws, h) = ts.ws_session(SOCKETIO_PATH, 3).await;
    assert!(h.get("maxPayload").is_none(), "{h}");
    // Revision 4 clients are connected to the main namespace without asking; CONNECT has no data.
    assert_eq!(ws.recv_text().await, "40");
    assert_eq!(ws.recv_text().await, r#"42["auth",{}]"#);

    // A namespace CONNECT may carry a query; the reply names the namespace only.
    ws.send_text("40/custom?x=1,").await;
    assert_eq!(ws.recv_text().await, "40/custom,");
    assert_eq!(ws.recv_text().await, r#"42/custom,["auth",{}]"#);
    ws.send_text(r#"42/custom,1["query"]"#).await;
    assert_eq!(ws.recv_text().await, r#"43/custom,1["1"]"#, "the namespace query reaches the connect handler");

    // Errors are bare strings in revision 4.
    ws.send_text("40/random,").await;
    assert_eq!(ws.recv_text().await, r#"44/random,"Invalid namespace""#);

    // Events and binary attachments (v3 binary frames start with the packet type 4).
    ws.send_text("2").await;
    assert_eq!(ws.recv_text().await, "3", "v3 clients ping the server");
    ws.send_text(&format!(r#"452-["message",{PLACEHOLDERS}]"#)).await;
    ws.send_binary(&[4, 1, 2, 3]).await;
    ws.send_binary(&[4, 4, 5, 6]).await;
    assert_eq!(ws.recv_text().await, format!(r#"452-["message-back",{PLACEHOLDERS}]"#));
    assert_eq!(ws.recv().await, WsMessage::Binary(vec![4u8, 1, 2, 3].into()));
    assert_eq!(ws.recv().await, WsMessage::Binary(vec![4u8, 4, 5, 6].into()));
    ws.close().await;
    ts.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revision_4_client_over_eio3_polling() {
    let ts = TestServer::start().await;
    let p = ts.polling(SOCKETIO_PATH, 3, "").await;
    // The implicit main-namespace CONNECT is the first packet of the first poll.
    let first = decode_v3_text(&p.get_text().await);
    assert_eq!(first.first().map(String::as_str), Some("40"), "{first:?}");
    p.post_ok(encode_v3_text(&["40/custom?x=2,", r#"42/custom,7["query"]"#])).await;
    let mut packets: Vec<String> = first.into_iter().skip(1).collect();
    within("the /custom ack over v3 polling", async {
        while !packets.iter().any(|p| p.starts_with("43/custom,")) {
            packets.extend(decode_v3_text(&p.get_text().await));
        }
    })
    .await;
    let custom: Vec<&str> =
        packets.iter().map(String::as_str).filter(|p| p.starts_with("4") && p.contains("/custom,")).collect();
    assert_eq!(custom.first(), Some(&"40/custom,"), "{packets:?}");
    assert!(custom.contains(&r#"43/custom,7["2"]"#), "{packets:?}");
    ts.shutdown().await;
}
