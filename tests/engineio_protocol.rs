//! Engine.IO protocol conformance, covering the cases of the official engine.io-protocol test
//! suite (and the Engine.IO part of the socket.io-protocol suite, run against `/socket.io/` too),
//! plus CORS, payload limits and Engine.IO v3 (length-prefixed payloads, client pings, base64,
//! binary payloads, JSONP).

mod support;

use std::time::Duration;

use clusterchat::engineio::{CloseReason, TransportKind};
use serde_json::json;
use support::server::*;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Both engines: the echo engine and the Socket.IO one share the Engine.IO layer.
const PATHS: [&str; 2] = [ENGINE_PATH, SOCKETIO_PATH];

fn heartbeat_deadline() -> Duration {
    PING_INTERVAL + PING_TIMEOUT
}

#[track_caller]
fn assert_v4_handshake(h: &serde_json::Value, upgrades: &[&str], max_payload: usize) {
    assert_eq!(keys(h), ["maxPayload", "pingInterval", "pingTimeout", "sid", "upgrades"], "handshake {h}");
    assert!(h["sid"].as_str().is_some_and(|s| !s.is_empty()), "sid: {h}");
    assert_eq!(h["upgrades"], json!(upgrades), "upgrades: {h}");
    assert_eq!(h["pingInterval"], json!(PING_INTERVAL.as_millis() as u64));
    assert_eq!(h["pingTimeout"], json!(PING_TIMEOUT.as_millis() as u64));
    assert_eq!(h["maxPayload"], json!(max_payload));
}

#[track_caller]
fn assert_v3_handshake(h: &serde_json::Value, upgrades: &[&str]) {
    assert_eq!(keys(h), ["pingInterval", "pingTimeout", "sid", "upgrades"], "v3 handshake has no maxPayload: {h}");
    assert!(h["sid"].as_str().is_some_and(|s| !s.is_empty()), "sid: {h}");
    assert_eq!(h["upgrades"], json!(upgrades));
    assert_eq!(h["pingInterval"], json!(PING_INTERVAL.as_millis() as u64));
    assert_eq!(h["pingTimeout"], json!(PING_TIMEOUT.as_millis() as u64));
}

// ---------------------------------------------------------------------------------------------
// Handshake
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_handshake_opens_a_session() {
    let ts = TestServer::start().await;
    for path in PATHS {
        let resp = ts.get(&format!("{path}?EIO=4&transport=polling")).await;
        assert_eq!(resp.status, 200);
        assert!(resp.header("content-type").is_some_and(|c| c.starts_with("text/plain")), "{:?}", resp.headers);
        let body = resp.text();
        assert!(body.starts_with('0'), "{body:?}");
        let h = parse_open_packet(&body);
        assert_v4_handshake(&h, &["websocket"], DEFAULT_MAX_PAYLOAD);
        let sid = h["sid"].as_str().unwrap();
        let session = ts.session(path, sid);
        assert_eq!(session.transport(), TransportKind::Polling);
    }
    // Two handshakes never share a sid.
    let a = ts.polling(ENGINE_PATH, 4, "").await;
    let b = ts.polling(ENGINE_PATH, 4, "").await;
    assert_ne!(a.sid, b.sid);
    ts.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_handshake_opens_a_session() {
    let ts = TestServer::start().await;
    for path in PATHS {
        let (ws, h) = ts.ws_session(path, 4).await;
        assert_v4_handshake(&h, &[], DEFAULT_MAX_PAYLOAD);
        let session = ts.session(path, h["sid"].as_str().unwrap());
        assert_eq!(session.transport(), TransportKind::Websocket);
        ws.close().await;
    }
    ts.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_handshake_errors_are_400_with_code() {
    let ts = TestServer::start().await;
    for path in PATHS {
        // Missing or invalid EIO: code 5 (unsupported protocol version).
        for query in ["transport=polling", "EIO=abc&transport=polling", "EIO=5&transport=polling"] {
            ts.get(&format!("{path}?{query}")).await.assert_engine_error(400, 5);
        }
        // Missing or unknown transport: code 0.
        for query in ["EIO=4", "EIO=4&transport=abc"] {
            ts.get(&format!("{path}?{query}")).await.assert_engine_error(400, 0);
        }
        // The websocket transport without an upgrade is a bad request.
        assert_eq!(ts.get(&format!("{path}?EIO=4&transport=websocket")).await.status, 400);
        // A handshake must be a GET: code 2.
        ts.post(&format!("{path}?EIO=4&transport=polling"), "").await.assert_engine_error(400, 2);
        let put = ts.request(reqwest::Method::PUT, &format!("{path}?EIO=4&transport=polling"), &[], None).await;
        assert_eq!(put.status, 400, "PUT handshake: {:?}", put.body);
        // Unknown sid, on GET and POST: code 1.
        ts.get(&format!("{path}?EIO=4&transport=polling&sid=nope")).await.assert_engine_error(400, 1);
        ts.post(&format!("{path}?EIO=4&transport=polling&sid=nope"), "4hello").await.assert_engine_error(400, 1);
        assert_eq!(ts.engine(path).session_count(), 0, "no error may open a session");
    }
    ts.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_handshake_errors_are_refused() {
    let ts = TestServer::start().await;
    for path in PATHS {
        for query in ["transport=websocket", "EIO=abc&transport=websocket", "EIO=4", "EIO=4&transport=abc"] {
            assert_eq!(ts.ws_refused(&format!("{path}?{query}")).await, 400, "{path}?{query}");
        }
        assert_eq!(ts.engine(path).session_count(), 0);
    }
    ts.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Messages over polling
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_echoes_one_text_packet() {
    let ts = TestServer::start().await;
    let p = ts.polling(ENGINE_PATH, 4, "").await;
    p.post_ok("4hello").await;
    assert_eq!(p.poll_packets(1).await, ["4hello"]);
    ts.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_echoes_several_text_packets_in_one_payload() {
    let ts = TestServer::start().await;
    let p = ts.polling(ENGINE_PATH, 4, "").await;
    p.post_ok("4test1\x1e4test2\x1e4test3").await;
    assert_eq!(p.poll_packets(3).await, ["4test1", "4test2", "4test3"]);
    ts.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_echoes_text_and_base64_binary_packets() {
    let ts = TestServer::start().await;
    let p = ts.polling(ENGINE_PATH, 4, "").await;
    p.post_ok("4hello\x1ebAQIDBA==").await;
    assert_eq!(p.poll_packets(2).await, ["4hello", "bAQIDBA=="]);
    ts.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_invalid_packet_closes_the_session() {
    let ts = TestServer::start().await;
    let p = ts.polling(ENGINE_PATH, 4, "").await;
    let session = p.session();
    p.post("abc").await.assert_engine_error(400, 3);
    assert!(matches!(session.close_reason(), Some(CloseReason::TransportError(_))), "{:?}", session.close_reason());
    p.get().await.assert_engine_error(400, 1);
    ts.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_duplicate_get_closes_the_session() {
    let ts = TestServer::start().await;
    let p = ts.polling(ENGINE_PATH, 4, "").await;
    let session = p.session();
    // Whichever GET the server sees second is refused and closes the session; the pending one
    // is then answered with CLOSE.
    let (a, b) = tokio::join!(p.get(), p.get());
    let mut outcomes = [(a.status, a.text()), (b.status, b.text())];
    outcomes.sort();
    assert_eq!(outcomes[0], (200, "1".to_owned()), "one poll ends with CLOSE: {outcomes:?}");
    assert_eq!(outcomes[1].0, 400, "the duplicate poll is refused: {outcomes:?}");
    assert!(matches!(session.close_reason(), Some(CloseReason::TransportError(_))), "{:?}", session.close_reason());
    p.get().await.assert_engine_error(400, 1);
    ts.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Messages over WebSocket
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echoes_text() {
    let ts = TestServer::start().await;
    let (mut ws, _) = ts.ws_session(ENGINE_PATH, 4).await;
    ws.send_text("4hello").await;
    assert_eq!(ws.recv_text_skip_pings().await, "4hello");
    ws.send_text("4héllo ☕ 😀").await;
    assert_eq!(ws.recv_text_skip_pings().await, "4héllo ☕ 😀");
    ws.close().await;
    ts.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echoes_binary() {
    let ts = TestServer::start().await;
    let (mut ws, _) = ts.ws_session(ENGINE_PATH, 4).await;
    ws.send_binary(&[1, 2, 3, 4]).await;
    assert_eq!(ws.recv_binary_skip_pings().await, [1, 2, 3, 4]);
    ws.close().await;
    ts.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_invalid_packet_closes_the_session() {
    let ts = TestServer::start().await;
    let (mut ws, h) = ts.ws_session(ENGINE_PATH, 4).await;
    let session = ts.session(ENGINE_PATH, h["sid"].as_str().unwrap());
    ws.send_text("abc").await;
    let seen = ws.expect_closed().await;
    assert!(seen.is_empty(), "nothing is echoed before the close: {seen:?}");
    assert!(matches!(session.close_reason(), Some(CloseReason::TransportError(_))), "{:?}", session.close_reason());
    ts.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Heartbeat
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_ping_pong() {
    let ts = TestServer::start().await;
    for path in PATHS {
        let start = Instant::now();
        let p = ts.polling(path, 4, "").await;
        for i in 0..3 {
            assert_eq!(p.get_text().await, "2", "{path}: poll {i} carries a PING");
            if i == 0 {
                assert!(
                    start.elapsed() >= PING_INTERVAL,
                    "first PING after {:?}, before pingInterval",
                    start.elapsed()
                );
            }
            p.post_ok("3").await;
        }
        assert!(!p.session().is_closed(), "{path}: answered PINGs keep the session");
    }
    ts.shutdown().await;
}

/// A PING's data comes back in the PONG; clients send none or `probe`. More than
/// `MAX_PING_DATA` closes the session instead of being echoed (a client that never reads its
/// polls could fill its queue with its own bytes), and `probe` still comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_ping_data_is_echoed_up_to_a_bound() {
    use clusterchat::engineio::session::MAX_PING_DATA;
    let ts = TestServer::start().await;
    let p = ts.polling(ENGINE_PATH, 3, "").await;
    let session = p.session();
    p.post_ok(format!("{}:2{}", MAX_PING_DATA + 1, "x".repeat(MAX_PING_DATA))).await;
    assert_eq!(p.get_text().await, format!("{}:3{}", MAX_PING_DATA + 1, "x".repeat(MAX_PING_DATA)));
    let long = format!("2{}", "x".repeat(MAX_PING_DATA + 1));
    p.post_ok(format!("{}:{long}", long.len())).await;
    assert_eq!(session.close_reason(), Some(CloseReason::TransportError("PING data too long")));
    ts.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_ping_timeout_closes_the_session() {
    let ts = TestServer::start().await;
    for path in PATHS {
        let start = Instant::now();
        let p = ts.polling(path, 4, "").await;
        let session = p.session();
        assert_eq!(p.get_text().await, "2", "{path}: PING");
        // No PONG: the session ends pingTimeout after the PING.
        ts.wait_session_gone(path, &p.sid, heartbeat_deadline() + STEP).await;
        assert!(start.elapsed() >= heartbeat_deadline(), "{path}: closed after {:?}", start.elapsed());
        assert_eq!(session.close_reason(), Some(CloseReason::PingTimeout));
        p.get().await.assert_engine_error(400, 1);
    }
    ts.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_ping_pong() {
    let ts = TestServer::start().await;
    for path in PATHS {
        // Each reference instant is taken before the server can start the interval it measures
        // (before the handshake, before the PONG), so the gap seen here can only be longer.
        let mut last = Instant::now();
        let (mut ws, h) = ts.ws_session(path, 4).await;
        for i in 0..3 {
            assert_eq!(ws.recv_text().await, "2", "{path}: message {i} is a PING");
            assert!(last.elapsed() >= PING_INTERVAL, "{path}: PING {i} after {:?}", last.elapsed());
            last = Instant::now();
            ws.send_text("3").await;
        }
        assert!(!ts.session(path, h["sid"].as_str().unwrap()).is_closed());
        ws.close().await;
    }
    ts.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_ping_timeout_closes_the_session() {
    let ts = TestServer::start().await;
    for path in PATHS {
        let start = Instant::now();
        let (mut ws, h) = ts.ws_session(path, 4).await;
        let session = ts.session(path, h["sid"].as_str().unwrap());
        let seen = ws.expect_closed_no_pong().await;
        assert!(start.elapsed() >= heartbeat_deadline(), "{path}: closed after {:?}", start.elapsed());
        assert_eq!(seen, [WsMessage::Text("2".into())], "{path}: one PING, then the close");
        assert_eq!(session.close_reason(), Some(CloseReason::PingTimeout));
    }
    ts.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Close
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_client_close() {
    let ts = TestServer::start().await;
    for path in PATHS {
        let p = ts.polling(path, 4, "").await;
        let session = p.session();
        // The pending poll of a closing client is released with NOOP.
        let (mut poll, push) = tokio::join!(p.get(), p.post("1"));
        assert_eq!((push.status, push.text().as_str()), (200, "ok"), "{path}: CLOSE push");
        // A PING queued before the close (the ping interval is short) answers the first poll;
        // the NOOP is then owed to the next.
        if (poll.status, poll.text().as_str()) == (200, "2") {
            poll = p.get().await;
        }
        assert_eq!((poll.status, poll.text().as_str()), (200, "6"), "{path}: pending poll");
        assert_eq!(session.close_reason(), Some(CloseReason::ClientClose));
        p.get().await.assert_engine_error(400, 1);
    }
    ts.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_client_close() {
    let ts = TestServer::start().await;
    for path in PATHS {
        let (mut ws, h) = ts.ws_session(path, 4).await;
        let sid = h["sid"].as_str().unwrap().to_owned();
        let session = ts.session(path, &sid);
        ws.send_text("1").await;
        ws.expect_closed().await;
        assert_eq!(session.close_reason(), Some(CloseReason::ClientClose));
        ts.wait_session_gone(path, &sid, STEP).await;
    }
    ts.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Upgrade
// ---------------------------------------------------------------------------------------------

/// Upgrades a fresh polling session: a poll in flight during the probe gets NOOP, then `5`
/// completes the upgrade.
async fn upgraded<'a>(ts: &'a TestServer, path: &str) -> (Polling<'a>, Ws) {
    upgraded_eio(ts, path, 4).await
}

async fn upgraded_eio<'a>(ts: &'a TestServer, path: &str, eio: u8) -> (Polling<'a>, Ws) {
    let p = ts.polling(path, eio, "").await;
    let ws_path = format!("{path}?EIO={eio}&transport=websocket&sid={}", p.sid);
    let (poll, mut ws) = tokio::join!(p.get(), async {
        let mut ws = ts.ws(&ws_path).await;
        ws.send_text("2probe").await;
        assert_eq!(ws.recv_text().await, "3probe", "{path}: probe answer");
        ws
    });
    let noop = if eio == 3 { "1:6" } else { "6" };
    assert_eq!((poll.status, poll.text().as_str()), (200, noop), "{path}: the probe releases the poll with NOOP");
    let session = p.session();
    assert_eq!(session.transport(), TransportKind::Polling, "{path}: not upgraded before UPGRADE");
    ws.send_text("5").await;
    wait_until(STEP, "the upgrade to complete", || session.transport() == TransportKind::Websocket).await;
    (p, ws)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_from_polling_to_websocket() {
    let ts = TestServer::start().await;
    // The suite's order: probe answered, then a poll gets NOOP.
    let p = ts.polling(ENGINE_PATH, 4, "").await;
    let mut ws = ts.ws(&format!("{ENGINE_PATH}?EIO=4&transport=websocket&sid={}", p.sid)).await;
    ws.send_text("2probe").await;
    assert_eq!(ws.recv_text().await, "3probe");
    assert_eq!(p.get_text().await, "6");
    ws.send_text("5").await;
    ws.send_text("4hello").await;
    assert_eq!(ws.recv_text_skip_pings().await, "4hello");
    ws.close().await;

    // A poll already pending when the probe arrives is released with NOOP too.
    let (_p, mut ws) = upgraded(&ts, ENGINE_PATH).await;
    ws.send_text("4after upgrade").await;
    assert_eq!(ws.recv_text_skip_pings().await, "4after upgrade");
    ws.close().await;

    // Socket.IO runs over the upgraded transport.
    let (_p, mut ws) = upgraded(&ts, SOCKETIO_PATH).await;
    ws.send_text("40").await;
    let connect = ws.recv_text_skip_pings().await;
    assert!(connect.starts_with("40{\"sid\":"), "{connect:?}");
    ws.close().await;
    ts.shutdown().await;
}

/// One probe is answered: another fails the upgrade (a client probing without end, and never
/// reading, would otherwise keep a task writing answers), and the session stays on polling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_probe_fails_the_upgrade_and_the_session_stays_on_polling() {
    let ts = TestServer::start().await;
    let p = ts.polling(ENGINE_PATH, 4, "").await;
    let session = p.session();
    let mut ws = ts.ws(&format!("{ENGINE_PATH}?EIO=4&transport=websocket&sid={}", p.sid)).await;
    ws.send_text("2probe").await;
    assert_eq!(ws.recv_text().await, "3probe");
    ws.send_text("2probe").await;
    assert_eq!(ws.expect_closed().await, Vec::<WsMessage>::new(), "no second answer");
    assert!(!session.is_closed());
    assert_eq!(session.transport(), TransportKind::Polling);
    p.post_ok("4still polling").await;
    assert_eq!(p.get_text().await, "4still polling");
    ts.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_requests_after_upgrade_are_refused() {
    let ts = TestServer::start().await;
    for path in PATHS {
        let (p, mut ws) = upgraded(&ts, path).await;
        p.get().await.assert_engine_error(400, 3);
        p.post("4hello").await.assert_engine_error(400, 3);
        if path == ENGINE_PATH {
            ws.send_text("4hello").await;
            assert_eq!(ws.recv_text_skip_pings().await, "4hello", "the WebSocket still works");
        }
        assert!(!p.session().is_closed());
        ws.close().await;
    }
    ts.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_websocket_with_the_same_sid_is_closed() {
    let ts = TestServer::start().await;
    for path in PATHS {
        let (p, mut ws) = upgraded(&ts, path).await;
        let mut ws2 = ts.ws(&format!("{path}?EIO=4&transport=websocket&sid={}", p.sid)).await;
        let seen = ws2.expect_closed().await;
        assert!(seen.is_empty(), "{path}: the second WebSocket gets nothing: {seen:?}");
        if path == ENGINE_PATH {
            ws.send_text("4hello").await;
            assert_eq!(ws.recv_text_skip_pings().await, "4hello", "the first WebSocket still works");
        }
        assert!(!p.session().is_closed());
        ws.close().await;
    }
    ts.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Limits and CORS
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_body_over_max_payload_is_413_and_closes() {
    let ts = TestServer::builder().max_payload(2000).start().await;
    let p = ts.polling(ENGINE_PATH, 4, "").await;
    assert_eq!(p.handshake["maxPayload"], json!(2000));
    let session = p.session();
    let at_limit = format!("4{}", "a".repeat(1999));
    p.post_ok(at_limit.clone()).await;
    assert_eq!(p.poll_packets(1).await, [at_limit]);
    let over = p.post(format!("4{}", "a".repeat(2000))).await;
    assert_eq!(over.status, 413, "{:?}", over.body);
    assert!(matches!(session.close_reason(), Some(CloseReason::TransportError(_))), "{:?}", session.close_reason());
    assert_eq!(p.get().await.status, 400);
    ts.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_message_over_max_payload_closes() {
    let ts = TestServer::builder().max_payload(2000).start().await;
    let (mut ws, h) = ts.ws_session(ENGINE_PATH, 4).await;
    assert_eq!(h["maxPayload"], json!(2000));
    let session = ts.session(ENGINE_PATH, h["sid"].as_str().unwrap());
    let at_limit = format!("4{}", "a".repeat(1999));
    ws.send_text(&at_limit).await;
    assert_eq!(ws.recv_text_skip_pings().await, at_limit);
    ws.send_text(&format!("4{}", "a".repeat(2000))).await;
    let seen = ws.expect_closed().await;
    assert!(seen.is_empty(), "{seen:?}");
    assert!(session.is_closed());
    ts.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_is_answered_without_a_session() {
    let ts = TestServer::start().await;
    let origin = "http://example.com";
    for query in ["EIO=4&transport=polling", "EIO=4&transport=polling&sid=unknown", ""] {
        let r = ts
            .request(
                reqwest::Method::OPTIONS,
                &format!("{ENGINE_PATH}?{query}"),
                &[("origin", origin), ("access-control-request-method", "POST")],
                None,
            )
            .await;
        assert_eq!(r.status, 204, "OPTIONS ?{query}: {:?}", r.body);
        assert_eq!(r.header("access-control-allow-origin"), Some(origin), "OPTIONS ?{query}");
        assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
        let methods = r.header("access-control-allow-methods").unwrap_or_default();
        assert!(methods.contains("GET") && methods.contains("POST"), "allow-methods {methods:?}");
        assert!(r.body.is_empty());
    }
    assert_eq!(ts.echo.session_count(), 0, "a preflight opens no session");

    // Actual requests echo the origin too, errors included; without Origin there is no header.
    let with_origin = [("origin", origin)];
    let ok =
        ts.request(reqwest::Method::GET, &format!("{ENGINE_PATH}?EIO=4&transport=polling"), &with_origin, None).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("access-control-allow-origin"), Some(origin));
    let err =
        ts.request(reqwest::Method::GET, &format!("{ENGINE_PATH}?EIO=9&transport=polling"), &with_origin, None).await;
    err.assert_engine_error(400, 5);
    assert_eq!(err.header("access-control-allow-origin"), Some(origin));
    let plain = ts.get(&format!("{ENGINE_PATH}?EIO=4&transport=polling")).await;
    assert_eq!(plain.header("access-control-allow-origin"), None);
    ts.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Engine.IO v3
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v3_polling_handshake_is_length_prefixed_without_max_payload() {
    let ts = TestServer::start().await;
    for path in PATHS {
        let p = ts.polling(path, 3, "").await;
        let body = &p.handshake_body;
        let (len, packet) = body.split_once(':').unwrap_or_else(|| panic!("not length-prefixed: {body:?}"));
        assert!(packet.starts_with("0{"), "{body:?}");
        assert_eq!(len.parse::<usize>().ok(), Some(packet.encode_utf16().count()), "{body:?}");
        assert_v3_handshake(&p.handshake, &["websocket"]);
        assert_eq!(p.session().protocol(), clusterchat::engineio::ProtocolVersion::V3);
    }
    ts.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v3_websocket_handshake_and_client_ping() {
    let ts = TestServer::start().await;
    let (mut ws, h) = ts.ws_session(ENGINE_PATH, 3).await;
    assert_v3_handshake(&h, &[]);
    // v3: the client pings, the server answers.
    ws.send_text("2").await;
    assert_eq!(ws.recv_text().await, "3");
    ws.send_text("2probe").await;
    assert_eq!(ws.recv_text().await, "3probe");
    ws.send_text("4hello").await;
    assert_eq!(ws.recv_text().await, "4hello");
    // v3 binary frames carry the packet type as their first byte.
    ws.send_binary(&[4, 1, 2, 3]).await;
    assert_eq!(ws.recv().await, WsMessage::Binary(vec![4u8, 1, 2, 3].into()));
    ws.close().await;
    ts.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v3_upgrade_from_polling_to_websocket() {
    let ts = TestServer::start().await;
    let (p, mut ws) = upgraded_eio(&ts, ENGINE_PATH, 3).await;
    ws.send_text("4hello").await;
    assert_eq!(ws.recv_text().await, "4hello");
    ws.send_binary(&[4, 1, 2]).await;
    assert_eq!(ws.recv().await, WsMessage::Binary(vec![4u8, 1, 2].into()));
    p.get().await.assert_engine_error(400, 3);
    ws.close().await;
    ts.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v3_text_payload_lengths_count_utf16_units() {
    let ts = TestServer::start().await;
    let p = ts.polling(ENGINE_PATH, 3, "").await;
    // `€` is one UTF-16 unit (three UTF-8 bytes).
    assert_eq!(encode_v3_text(&["4€"]), "2:4€");
    p.post_ok("2:4€").await;
    assert_eq!(p.get_text().await, "2:4€");
    // An emoji is two UTF-16 units (four UTF-8 bytes).
    p.post_ok("3:4😀").await;
    assert_eq!(p.get_text().await, "3:4😀");
    // Several packets in one payload, both ways.
    let payload = encode_v3_text(&["4€", "4😀", "4a☕b"]);
    assert_eq!(payload, "2:4€3:4😀4:4a☕b");
    p.post_ok(payload.clone()).await;
    let body = p.get_text().await;
    assert_eq!(body, payload);
    assert_eq!(decode_v3_text(&body), ["4€", "4😀", "4a☕b"]);
    ts.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v3_payload_with_byte_length_prefix_is_rejected() {
    let ts = TestServer::start().await;
    let p = ts.polling(ENGINE_PATH, 3, "").await;
    let session = p.session();
    // 4 is the UTF-8 byte length of "4€", not its UTF-16 length: a malformed payload.
    p.post("4:4€").await.assert_engine_error(400, 3);
    assert!(matches!(session.close_reason(), Some(CloseReason::TransportError(_))), "{:?}", session.close_reason());
    p.get().await.assert_engine_error(400, 1);
    ts.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v3_client_ping_gets_pong_and_keeps_the_session() {
    let ts = TestServer::start().await;
    let p = ts.polling(ENGINE_PATH, 3, "").await;
    let session = p.session();
    // A v3 client pings every pingInterval (the client's own schedule, hence the sleeps); the
    // server never pings and answers each one.
    for _ in 0..3 {
        p.post_ok("1:2").await;
        assert_eq!(p.get_text().await, "1:3");
        tokio::time::sleep(PING_INTERVAL).await;
    }
    assert!(!session.is_closed(), "pinging for 3 intervals (> interval + timeout) keeps the session");
    // Taken before the last ping is sent, so it is no later than the server's proof of life.
    let last_ping = Instant::now();
    p.post_ok("6:2probe").await;
    assert_eq!(p.get_text().await, "6:3probe");
    // Once the client stops pinging, the session ends pingInterval + pingTimeout later.
    ts.wait_session_gone(ENGINE_PATH, &p.sid, heartbeat_deadline() + STEP).await;
    assert!(last_ping.elapsed() >= heartbeat_deadline(), "closed {:?} after the last ping", last_ping.elapsed());
    assert_eq!(session.close_reason(), Some(CloseReason::PingTimeout));
    ts.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v3_b64_binary_comes_back_base64() {
    let ts = TestServer::start().await;
    let p = ts.polling(ENGINE_PATH, 3, "&b64=1").await;
    p.post_ok("10:b4AQIDBA==").await;
    let r = p.get().await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").is_some_and(|c| c.starts_with("text/plain")), "{:?}", r.headers);
    assert_eq!(r.text(), "10:b4AQIDBA==");
    ts.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v3_binary_payload_round_trip() {
    let ts = TestServer::start().await;
    let p = ts.polling(ENGINE_PATH, 3, "").await;
    // A binary packet (type byte 4, then data) and a text packet; binary payload lengths count bytes.
    let payload = encode_v3_binary(&[(1, &[4, 1, 2, 3, 4]), (0, "4€".as_bytes())]);
    assert_eq!(payload[..4], [1, 5, 0xff, 4]);
    let push = p.post_as("application/octet-stream", payload.clone()).await;
    assert_eq!((push.status, push.text().as_str()), (200, "ok"));
    let r = p.get().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert_eq!(r.body.to_vec(), payload);

    // A base64 binary packet sent by a binary-capable client comes back as a binary payload.
    p.post_ok("10:b4AQIDBA==").await;
    let r = p.get().await;
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert_eq!(r.body.to_vec(), encode_v3_binary(&[(1, &[4, 1, 2, 3, 4])]));
    ts.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v3_jsonp_polling() {
    let ts = TestServer::start().await;
    let handshake = ts.get(&format!("{ENGINE_PATH}?EIO=3&transport=polling&j=0")).await;
    assert_eq!(handshake.status, 200);
    assert!(
        handshake.header("content-type").is_some_and(|c| c.starts_with("text/javascript")),
        "{:?}",
        handshake.headers
    );
    let payload = unwrap_jsonp(&handshake.text(), 0);
    let packets = decode_v3_text(&payload);
    assert_eq!(packets.len(), 1, "{payload:?}");
    let h = parse_open_packet(&packets[0]);
    assert_v3_handshake(&h, &["websocket"]);
    let query = format!("{ENGINE_PATH}?EIO=3&transport=polling&j=0&sid={}", h["sid"].as_str().unwrap());

    // The JSONP client posts `d=<payload>` form-encoded, with newlines escaped as `\n`.
    let packet = "4a\nb \"q\" €";
    let escaped = encode_v3_text(&[packet]).replace('\n', "\\n");
    let form = format!("d={}", url::form_urlencoded::byte_serialize(escaped.as_bytes()).collect::<String>());
    let push = ts.post_as(&query, "application/x-www-form-urlencoded", form).await;
    assert_eq!((push.status, push.text().as_str()), (200, "ok"));
    let poll = ts.get(&query).await;
    assert_eq!(poll.status, 200);
    assert_eq!(decode_v3_text(&unwrap_jsonp(&poll.text(), 0)), [packet]);
    ts.shutdown().await;
}
