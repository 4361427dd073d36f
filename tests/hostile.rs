//! Hostile clients against a real node on port 0: oversized bodies and messages, malformed
//! payloads (the decoder seed corpus, over HTTP), invalid UTF-8, forged session ids, a client
//! that never reads, floods of sessions and of chat events. The server answers each with the
//! protocol's error or a close, never a 500 or a panic, and stays up for everyone else.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use clusterchat::config::NodeConfig;
use clusterchat::engineio::CloseReason;
use clusterchat::node::Node;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::server::{within, within_for, TestServer, ENGINE_PATH, SOCKETIO_PATH, STEP};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

/// A chat node on its own, on port 0, with `configure` applied.
async fn chat_node(configure: impl FnOnce(&mut NodeConfig)) -> Node {
    let mut config = NodeConfig { http: "127.0.0.1:0".parse().unwrap(), ..NodeConfig::default() };
    configure(&mut config);
    Node::start(config).await.expect("chat node starts")
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP/1.1 over TCP, for requests a well-behaved client library will not send
// ---------------------------------------------------------------------------------------------

/// Reads one HTTP response head and up to `Content-Length` of body; returns (status, body).
async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = within("an HTTP response", stream.read(&mut chunk)).await.expect("read response");
        assert!(n > 0, "connection closed before a response: {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        let Some(head_end) = text.find("\r\n\r\n") else { continue };
        let status = text[9..12].parse().expect("status code");
        let length: usize = text[..head_end]
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
            .unwrap_or(0);
        if buf.len() >= head_end + 4 + length {
            return (status, text[head_end + 4..head_end + 4 + length].to_owned());
        }
    }
}

#[track_caller]
fn assert_error_body(body: &str, code: u64, message: &str) {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("error body is not JSON ({e}): {body:?}"));
    assert_eq!(v, json!({ "code": code, "message": message }));
}

// ---------------------------------------------------------------------------------------------
// Oversized input
// ---------------------------------------------------------------------------------------------

/// A POST declaring 1 GiB is refused from its headers: 413 before a byte of body is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_oversized_body_is_refused_unread() {
    let ts = TestServer::builder().max_payload(2000).start().await;
    let p = ts.polling(ENGINE_PATH, 4, "").await;
    let session = p.session();
    let mut stream = TcpStream::connect(ts.url().trim_start_matches("http://")).await.unwrap();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        p.path_and_query(),
        1u64 << 30
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let (status, body) = read_response(&mut stream).await;
    assert_eq!(status, 413);
    assert_error_body(&body, 3, "Payload too large");
    assert!(matches!(session.close_reason(), Some(CloseReason::TransportError(_))), "{:?}", session.close_reason());
    ts.shutdown().await;
}

/// A chunked POST that never ends is read up to the limit only, then refused with 413: the
/// server buffers at most `max_payload` of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_chunked_body_is_cut_at_the_limit() {
    let ts = TestServer::builder().max_payload(2000).start().await;
    let p = ts.polling(ENGINE_PATH, 4, "").await;
    let stream = TcpStream::connect(ts.url().trim_start_matches("http://")).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n",
        p.path_and_query()
    );
    wr.write_all(head.as_bytes()).await.unwrap();
    // Up to 64 MiB in 64 KiB chunks, until the server answers (or stops reading).
    let writer = tokio::spawn(async move {
        let chunk = format!("10000\r\n4{}\r\n", "a".repeat(0xffff));
        let mut sent = 0usize;
        for _ in 0..1024 {
            if wr.write_all(chunk.as_bytes()).await.is_err() {
                break;
            }
            sent += 0x10000;
        }
        sent
    });
    let mut buf = vec![0u8; 4096];
    let n = within("the 413", rd.read(&mut buf)).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(head.contains(r#"{"code":3,"message":"Payload too large"}"#), "{head}");
    drop(rd);
    let sent = within("the writer to stop", writer).await.unwrap();
    println!("oversized chunked body: the client got its 413 after writing {sent} bytes");
    // The server is fine: a new session works.
    let p = ts.polling(ENGINE_PATH, 4, "").await;
    p.post_ok("4still here").await;
    assert_eq!(p.poll_packets(1).await, ["4still here"]);
    ts.shutdown().await;
}

/// A WebSocket message far over the limit closes the session from its frame header, and a
/// frame header claiming 2^62 bytes does too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_websocket_messages_close_the_session() {
    let ts = TestServer::builder().max_payload(2000).start().await;
    let open = |ts: &TestServer| {
        let url = format!("{}{ENGINE_PATH}?EIO=4&transport=websocket", ts.ws_url());
        async move {
            let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await.unwrap();
            let open = next_text(&mut ws).await;
            let sid = support::server::parse_open_packet(&open)["sid"].as_str().unwrap().to_owned();
            (ws, sid)
        }
    };
    let (mut ws, sid) = open(&ts).await;
    let session = ts.session(ENGINE_PATH, &sid);
    // The server stops reading at the header: the rest of the send may fail, which is fine.
    let _ = within("send", ws.send(WsMessage::text(format!("4{}", "a".repeat(8 << 20))))).await;
    support::server::wait_until(STEP, "the session to close", || session.is_closed()).await;

    // A hand-made frame header: FIN + binary, 127 = 64-bit length, then 2^62.
    let (mut ws, sid) = open(&ts).await;
    let session = ts.session(ENGINE_PATH, &sid);
    let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = ws.get_mut() else { panic!("plain TCP") };
    // Client frames are masked: mask bit set, then a 4-byte mask key.
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 62).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    tcp.write_all(&header).await.unwrap();
    support::server::wait_until(STEP, "the session to close", || session.is_closed()).await;
    // Still serving.
    let (mut ws, _) = ts.ws_session(ENGINE_PATH, 4).await;
    ws.send_text("4ok").await;
    assert_eq!(ws.recv_text_skip_pings().await, "4ok");
    ts.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Malformed payloads and invalid UTF-8
// ---------------------------------------------------------------------------------------------

/// Every input of the decoder seed corpus, POSTed to a fresh session as text and as a binary
/// payload, in both protocol revisions: `ok` or a 400 with the protocol's error body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_corpus_over_http_gets_ok_or_400() {
    let ts = TestServer::start().await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut inputs = Vec::new();
    for dir in std::fs::read_dir(&root).unwrap() {
        for file in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            inputs.push(std::fs::read(file.unwrap().path()).unwrap());
        }
    }
    let mut outcomes = std::collections::BTreeMap::<u16, usize>::new();
    for path in [ENGINE_PATH, SOCKETIO_PATH] {
        for (eio, content_type) in [(4, "text/plain"), (3, "text/plain"), (3, "application/octet-stream")] {
            for body in &inputs {
                let p = ts.polling(path, eio, "").await;
                let r = p.post_as(content_type, body.clone()).await;
                *outcomes.entry(r.status).or_default() += 1;
                match r.status {
                    200 => assert_eq!(r.text(), "ok"),
                    400 => r.assert_engine_error(400, 3),
                    other => panic!("{other} for {body:?} ({content_type}, EIO={eio}): {:?}", r.body),
                }
            }
        }
    }
    println!("{} corpus POSTs: {outcomes:?}", inputs.len() * 6);
    // Still serving.
    let p = ts.polling(ENGINE_PATH, 4, "").await;
    p.post_ok("4fine").await;
    assert_eq!(p.poll_packets(1).await, ["4fine"]);
    ts.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_in_polling_bodies_is_a_400() {
    let ts = TestServer::start().await;
    for (eio, content_type, body) in [
        (4, "text/plain", b"4\xff\xfe".to_vec()),
        (3, "text/plain", b"2:4\xc3".to_vec()),
        (3, "application/octet-stream", vec![0, 2, 0xff, b'4', 0xff]),
        // The v3 binary payload that began with its terminator byte used to panic the decoder.
        (3, "application/octet-stream", vec![0xff]),
    ] {
        let p = ts.polling(ENGINE_PATH, eio, "").await;
        let session = p.session();
        p.post_as(content_type, body).await.assert_engine_error(400, 3);
        assert!(matches!(session.close_reason(), Some(CloseReason::TransportError(_))));
        p.get().await.assert_engine_error(400, 1);
    }
    ts.shutdown().await;
}

/// A WebSocket text frame that is not UTF-8 closes that session, not the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_in_a_websocket_text_frame_closes_the_session() {
    let ts = TestServer::start().await;
    for path in [ENGINE_PATH, SOCKETIO_PATH] {
        let url = format!("{}{path}?EIO=4&transport=websocket", ts.ws_url());
        let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await.unwrap();
        let open = within("OPEN", ws.next()).await.unwrap().unwrap();
        let sid = support::server::parse_open_packet(open.to_text().unwrap())["sid"].as_str().unwrap().to_owned();
        let session = ts.session(path, &sid);
        let frame = Frame::message(b"4\xff\xfe\xfd".to_vec(), OpCode::Data(Data::Text), true);
        within("send", ws.send(WsMessage::Frame(frame))).await.unwrap();
        support::server::wait_until(STEP, "the session to close", || session.is_closed()).await;
        let rest = within("the close", async {
            let mut rest = Vec::new();
            while let Some(Ok(m)) = ws.next().await {
                rest.push(m);
            }
            rest
        })
        .await;
        assert!(rest.iter().all(|m| matches!(m, WsMessage::Close(_) | WsMessage::Text(_))), "{rest:?}");
    }
    let (mut ws, _) = ts.ws_session(ENGINE_PATH, 4).await;
    ws.send_text("4ok").await;
    assert_eq!(ws.recv_text_skip_pings().await, "4ok");
    ts.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Forged session ids
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_sids_are_unknown_never_a_500() {
    let ts = TestServer::start().await;
    let real = ts.polling(ENGINE_PATH, 4, "").await;
    let closed = ts.polling(ENGINE_PATH, 4, "").await;
    closed.post_ok("1").await;
    // The poll that follows a client's close gets its NOOP; then the sid is gone.
    assert_eq!(closed.get_text().await, "6");
    let long = "A".repeat(60_000);
    let forged: Vec<String> = vec![
        "AAAAAAAAAAAAAAAAAAAA".into(),
        format!("{}.node9", real.sid),
        format!("{}.", real.sid),
        format!("{}x", real.sid),
        real.sid.chars().rev().collect(),
        ".".into(),
        String::new(),
        long.clone(),
        format!("{long}.test"),
        "日本語.test".into(),
        "\u{0}\u{1}\u{7f}".into(),
        "😀".repeat(1000),
        closed.sid.clone(),
        "../../etc/passwd".into(),
        "%".into(),
    ];
    let encode = |sid: &str| url::form_urlencoded::byte_serialize(sid.as_bytes()).collect::<String>();
    for sid in &forged {
        for eio in [3, 4] {
            let q = format!("{ENGINE_PATH}?EIO={eio}&transport=polling&sid={}", encode(sid));
            let r = ts.get(&q).await;
            r.assert_engine_error(400, 1);
            assert_eq!(r.json()["message"], "Session ID unknown");
            ts.post(&q, "4x").await.assert_engine_error(400, 1);
        }
        // A WebSocket "upgrade" of a forged sid is closed at once.
        let url = format!("{}{ENGINE_PATH}?EIO=4&transport=websocket&sid={}", ts.ws_url(), encode(sid));
        let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await.unwrap();
        let ended = within("the forged upgrade to close", async {
            loop {
                match ws.next().await {
                    None | Some(Err(_)) | Some(Ok(WsMessage::Close(_))) => return,
                    Some(Ok(_)) => {}
                }
            }
        });
        ended.await;
    }
    // A raw `sid=` with invalid percent-encoding and bytes that are not UTF-8.
    for raw in ["%ff%fe", "%e0%a4%a", "%00"] {
        ts.get(&format!("{ENGINE_PATH}?EIO=4&transport=polling&sid={raw}")).await.assert_engine_error(400, 1);
    }
    // The real session did not notice.
    real.post_ok("4still mine").await;
    assert_eq!(real.poll_packets(1).await, ["4still mine"]);
    ts.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// The chat: a client that never reads, floods of sessions and of events
// ---------------------------------------------------------------------------------------------

type RawWs = WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// The next text message; Engine.IO PINGs are answered.
async fn next_text(ws: &mut RawWs) -> String {
    within("a WebSocket text message", async {
        loop {
            match ws.next().await {
                Some(Ok(WsMessage::Text(t))) if t.as_str() == "2" => ws.send(WsMessage::text("3")).await.unwrap(),
                Some(Ok(WsMessage::Text(t))) => return t.as_str().to_owned(),
                Some(Ok(_)) => {}
                other => panic!("expected a text message, got {other:?}"),
            }
        }
    })
    .await
}

/// Reads until a packet starting with `prefix`; returns it.
async fn expect_packet(ws: &mut RawWs, prefix: &str) -> String {
    within(&format!("a {prefix:?} packet"), async {
        loop {
            let t = next_text(ws).await;
            if t.starts_with(prefix) {
                return t;
            }
        }
    })
    .await
}

/// A `/chat` user over a raw WebSocket, its sid, having joined `room`. `recv_buffer` sets a
/// small socket receive buffer (for the client that stops reading).
async fn chat_user(node: SocketAddr, user: &str, room: &str, recv_buffer: Option<u32>) -> (RawWs, String) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).unwrap();
    }
    let tcp = within("connect", socket.connect(node)).await.unwrap();
    let url = format!("ws://{node}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = within(
        "WebSocket",
        tokio_tungstenite::client_async(url.as_str(), tokio_tungstenite::MaybeTlsStream::Plain(tcp)),
    )
    .await
    .unwrap();
    let open = next_text(&mut ws).await;
    let sid = support::server::parse_open_packet(&open)["sid"].as_str().unwrap().to_owned();
    ws.send(WsMessage::text(format!("40/chat,{}", json!({ "user": user })))).await.unwrap();
    expect_packet(&mut ws, "40/chat,").await;
    ws.send(WsMessage::text(format!("42/chat,1{}", json!(["join room", { "room": room }])))).await.unwrap();
    assert_eq!(expect_packet(&mut ws, "43/chat,1").await, r#"43/chat,1[{"ok":true}]"#);
    (ws, sid)
}

fn chat_message(room: &str, text: &str) -> WsMessage {
    WsMessage::text(format!("42/chat,{}", json!(["chat message", { "room": room, "message": text }])))
}

/// A member stops reading while the room is flooded: once its bounded queue is full the server
/// closes its session and drops its connection, and the others receive every message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_dropped_and_the_room_goes_on() {
    let node = chat_node(|c| {
        c.engine.outbound_queue = 64;
        c.engine.ping_timeout_ms = 1000;
        c.chat.rate_limit_per_sec = 0;
    })
    .await;
    let addr = node.http_addr();
    let (mut slow, slow_sid) = chat_user(addr, "slow", "flood", Some(4096)).await;
    let (mut steady, _) = chat_user(addr, "steady", "flood", None).await;
    let (flooder, _) = chat_user(addr, "flooder", "flood", None).await;
    let (mut to_room, mut flooder_rx) = flooder.split();
    // The flooder reads its own echoes, so only the slow client falls behind.
    let echoes = tokio::spawn(async move { while let Some(Ok(_)) = flooder_rx.next().await {} });
    assert_eq!(node.engine().websocket_count(), 3);

    let big = "€".repeat(1990); // 6 kB a message, within the 2000 characters allowed
    let (mut sent, mut received, mut slow_left) = (0usize, 0usize, false);
    let deadline = Instant::now() + Duration::from_secs(60);
    while node.engine().session(&slow_sid).is_some() || received < sent {
        assert!(Instant::now() < deadline, "slow client still open after {sent} messages of 6 kB");
        // Keep the steady member at most 32 messages behind: it reads, it is never too slow.
        if node.engine().session(&slow_sid).is_some() && sent < received + 32 {
            within("send", to_room.send(chat_message("flood", &format!("{sent} {big}")))).await.unwrap();
            sent += 1;
            continue;
        }
        let t = next_text(&mut steady).await;
        if t.starts_with(r#"42/chat,["chat message""#) {
            assert!(t.contains(&format!("\"{received} ")), "message {received} out of order: {:.40}", t);
            received += 1;
        } else if t.starts_with(r#"42/chat,["leave room",{"user":"slow""#) {
            slow_left = true;
        }
    }
    println!("the non-reading client was closed after {sent} messages of 6 kB; the steady member got all {received}");
    while !slow_left {
        slow_left = next_text(&mut steady).await.starts_with(r#"42/chat,["leave room",{"user":"slow""#);
    }
    assert!(node.engine().queue_full_closes() >= 1);
    // Its connection is released although it still reads nothing.
    support::server::wait_until(STEP, "the slow client's WebSocket to be dropped", || {
        node.engine().websocket_count() == 2
    })
    .await;
    // When it finally reads, it finds the end of the stream after what was in flight.
    let drained = within_for(Duration::from_secs(20), "the slow client's stream to end", async {
        let mut n = 0;
        while let Some(Ok(_)) = slow.next().await {
            n += 1;
        }
        n
    })
    .await;
    assert!(drained < sent, "the slow client got {drained} of {sent}");
    // The room goes on.
    to_room.send(chat_message("flood", "after")).await.unwrap();
    expect_packet(&mut steady, r#"42/chat,["chat message",{"user":"flooder","room":"flood","message":"after"}"#).await;
    echoes.abort();
    node.shutdown().await;
}

/// `engine.max_sessions` caps a node: the handshake past it is refused with 503 and the
/// protocol's error body (a WebSocket with close code 1013), and a flood of handshakes gets
/// exactly the free places.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_cap_refuses_clearly() {
    const CAP: usize = 20;
    let node = chat_node(|c| c.engine.max_sessions = CAP).await;
    let base = format!("http://{}/socket.io/?EIO=4&transport=polling", node.http_addr());
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let handshakes = (0..5 * CAP).map(|_| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let r = http.get(&base).send().await.expect("handshake answered");
            (r.status().as_u16(), r.text().await.unwrap())
        }
    });
    let results = within("100 handshakes", futures_util::future::join_all(handshakes)).await;
    let accepted: Vec<&String> = results.iter().filter(|(s, _)| *s == 200).map(|(_, b)| b).collect();
    assert_eq!(accepted.len(), CAP, "{results:?}");
    for (status, body) in results.iter().filter(|(s, _)| *s != 200) {
        assert_eq!(*status, 503);
        assert_error_body(body, 3, "Too many sessions");
    }
    // Over WebSocket: upgraded, then closed with 1013 and the reason.
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", node.http_addr());
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await.unwrap();
    match within("the refusal", ws.next()).await {
        Some(Ok(WsMessage::Close(Some(frame)))) => {
            assert_eq!((frame.code, frame.reason.as_str()), (CloseCode::Again, "Too many sessions"))
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    // A place freed is a place taken again.
    let sid = support::server::parse_open_packet(accepted[0])["sid"].as_str().unwrap().to_owned();
    let r = http.post(format!("{base}&sid={sid}")).body("1").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(http.get(format!("{base}&sid={sid}")).send().await.unwrap().text().await.unwrap(), "6");
    support::server::wait_until(STEP, "the closed session to be cleaned up", || node.engine().session_count() < CAP)
        .await;
    assert_eq!(http.get(&base).send().await.unwrap().status(), 200);
    assert_eq!(http.get(&base).send().await.unwrap().status(), 503);
    node.shutdown().await;
}

/// Events over the rate are refused with `rate limited` (ack error, or `chat error` when no ack
/// was asked), the room hears only what was admitted, and persistent abuse disconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_events_is_rate_limited_then_disconnected() {
    const PER_SEC: u32 = 2;
    const BURST: u32 = 10;
    const STRIKES: u32 = 20;
    let node = chat_node(|c| {
        c.chat.rate_limit_per_sec = PER_SEC;
        c.chat.rate_limit_burst = BURST;
        c.chat.rate_limit_strikes = STRIKES;
    })
    .await;
    let addr = node.http_addr();
    let (mut listener, _) = chat_user(addr, "listener", "r", None).await;
    let (mut flooder, flooder_sid) = chat_user(addr, "flooder", "r", None).await;
    let started = Instant::now();
    for i in 0..100 {
        let packet =
            format!("42/chat,{}{}", 100 + i, json!(["chat message", { "room": "r", "message": i.to_string() }]));
        flooder.send(WsMessage::text(packet)).await.unwrap();
    }
    let (mut admitted, mut refused) = (0u32, 0u32);
    loop {
        let t = next_text(&mut flooder).await;
        if t == "41/chat," {
            break;
        }
        let Some(ack) = t.strip_prefix("43/chat,") else { continue };
        if ack.ends_with(r#"[{"ok":true}]"#) {
            admitted += 1;
        } else {
            assert!(ack.contains("rate limited"), "{t}");
            refused += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    // The CONNECT and the join took a token each; refills during the flood may admit a few more.
    let most = BURST - 2 + (f64::from(PER_SEC) * elapsed).ceil() as u32;
    assert!((BURST - 2..=most).contains(&admitted), "{admitted} admitted in {elapsed:.2} s");
    assert_eq!(refused, STRIKES, "disconnected at the {STRIKES}th refusal");
    // The listener heard exactly the admitted messages.
    let mut heard = 0;
    while heard < admitted {
        if expect_packet(&mut listener, "42/chat,").await.starts_with(r#"42/chat,["chat message""#) {
            heard += 1;
        }
    }
    listener.send(chat_message("r", "the listener is not limited")).await.unwrap();
    let next = expect_packet(&mut listener, r#"42/chat,["chat message""#).await;
    assert!(next.contains("the listener is not limited"), "a refused message reached the room: {next}");
    // The Engine.IO session outlives the namespace disconnect. Its client is answered when it
    // connects to the namespace again (the disconnected socket no longer holds its place), but
    // refused for now: the limit is the session's, and connecting again does not refill it.
    assert!(node.engine().session(&flooder_sid).is_some());
    flooder.send(WsMessage::text(r#"40/chat,{"user":"flooder again"}"#)).await.unwrap();
    let again = expect_packet(&mut flooder, "44/chat,").await;
    assert!(again.contains("rate limited"), "{again}");

    // Without an ack, a refusal is a `chat error` event.
    let (mut quiet, _) = chat_user(addr, "noack", "r", None).await;
    for i in 0..BURST + 2 {
        quiet.send(chat_message("r", &format!("no ack {i}"))).await.unwrap();
    }
    let error = expect_packet(&mut quiet, r#"42/chat,["chat error""#).await;
    assert!(error.contains("rate limited"), "{error}");
    node.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Floods of connections that never send a request
// ---------------------------------------------------------------------------------------------

/// Past `max_connections` open HTTP connections, a new one is told 503 and closed; connections
/// that send no request are closed after the idle timeout, which frees their places.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_capped_and_time_out() {
    use clusterchat::server::ConnectionLimits;
    let limits = ConnectionLimits {
        max_connections: 4,
        idle_timeout: Duration::from_millis(500),
        ..ConnectionLimits::default()
    };
    let ts = TestServer::builder().connection_limits(limits).start().await;
    let addr: SocketAddr = ts.url().trim_start_matches("http://").parse().unwrap();
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    // The fifth is refused with a clear answer; the server still serves the ones it holds.
    let mut fifth = TcpStream::connect(addr).await.unwrap();
    let mut answer = String::new();
    within("the refusal", fifth.read_to_string(&mut answer)).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.ends_with(r#"{"code":3,"message":"Too many connections, retry"}"#), "{answer}");
    // The idle ones are closed by the server after the timeout (EOF, not a hang).
    let started = Instant::now();
    for conn in &mut idle {
        let mut rest = Vec::new();
        let _ = within("idle close", conn.read_to_end(&mut rest)).await;
    }
    assert!(started.elapsed() >= Duration::from_millis(300), "closed before the idle timeout");
    // Their places are free again: a request is served.
    let p = ts.polling(ENGINE_PATH, 4, "").await;
    p.post_ok("4again").await;
    assert_eq!(p.poll_packets(1).await, ["4again"]);
    ts.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Repeated CONNECTs
// ---------------------------------------------------------------------------------------------

/// The node's `clusterchat_sockets{nsp="/chat"}` gauge.
async fn chat_sockets(node: SocketAddr) -> f64 {
    let text = reqwest::get(format!("http://{node}/metrics")).await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(r#"clusterchat_sockets{nsp="/chat"} "#)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sockets gauge in {text}"))
}

/// Reads the packets of `ws` until one starting with `until`, asserting that none before it
/// contains `never`; returns the one found.
async fn expect_packet_without(ws: &mut RawWs, until: &str, never: &str) -> String {
    within(&format!("a {until:?} packet"), async {
        loop {
            let t = next_text(ws).await;
            assert!(!t.contains(never), "{never:?} came before {until:?}: {t}");
            if t.starts_with(until) {
                return t;
            }
        }
    })
    .await
}

/// A room filling past `chat.presence_limit` goes quiet: joins and leaves are no longer
/// announced one by one (N joins would cost N²/2 deliveries), and `room users` names the first
/// `presence_limit` users with the room's `count`. Back at the limit, both come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_room_hears_no_joins_and_gets_a_short_list_with_its_count() {
    let node = chat_node(|c| {
        c.chat.rate_limit_per_sec = 0;
        c.chat.presence_limit = 2;
    })
    .await;
    let addr = node.http_addr();
    let (mut watcher, _) = chat_user(addr, "watcher", "big", None).await;
    expect_packet(&mut watcher, r#"42/chat,["room users",{"room":"big","users":["watcher"]}"#).await;

    // The second member is within the limit: announced, listed in full.
    let (a, _) = chat_user(addr, "a", "big", None).await;
    expect_packet(&mut watcher, r#"42/chat,["join room",{"user":"a","room":"big"}"#).await;
    expect_packet(&mut watcher, r#"42/chat,["room users",{"room":"big","users":["a","watcher"]}"#).await;

    // The third is past it: not announced; the list names two of three.
    let (b, _) = chat_user(addr, "b", "big", None).await;
    let list = expect_packet_without(&mut watcher, r#"42/chat,["room users""#, r#""user":"b""#).await;
    assert_eq!(list, r#"42/chat,["room users",{"room":"big","users":["a","b"],"count":3}]"#);

    // Leaving a room of three is not announced either; the list is whole again.
    drop(b);
    let list = expect_packet_without(&mut watcher, r#"42/chat,["room users""#, r#""user":"b""#).await;
    assert_eq!(list, r#"42/chat,["room users",{"room":"big","users":["a","watcher"]}]"#);

    // Leaving a room of two is.
    drop(a);
    expect_packet(&mut watcher, r#"42/chat,["leave room",{"user":"a","room":"big"}"#).await;
    expect_packet(&mut watcher, r#"42/chat,["room users",{"room":"big","users":["watcher"]}"#).await;
    node.shutdown().await;
}

/// Ten CONNECTs carrying the same `pid` on one session: the first recovers the parked session,
/// the others are duplicates (the namespace slot is reserved before the parked session is
/// looked up), so the session holds one socket, gets one CONNECT answer, and leaves no ghost
/// member behind in its room when it goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_pid_connects_leave_one_socket_and_no_ghost() {
    let node = chat_node(|c| c.chat.rate_limit_per_sec = 0).await;
    let addr = node.http_addr();
    let (mut watcher, _) = chat_user(addr, "watcher", "haunt", None).await;
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");

    // A first connection gets its pid, joins, and drops: its session is parked.
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await.unwrap();
    next_text(&mut ws).await;
    ws.send(WsMessage::text(format!("40/chat,{}", json!({ "user": "ghost" })))).await.unwrap();
    let answer: Value = serde_json::from_str(&expect_packet(&mut ws, "40/chat,").await["40/chat,".len()..]).unwrap();
    let pid = answer["pid"].as_str().expect("a pid").to_owned();
    ws.send(WsMessage::text(format!("42/chat,1{}", json!(["join room", { "room": "haunt" }])))).await.unwrap();
    assert_eq!(expect_packet(&mut ws, "43/chat,1").await, r#"43/chat,1[{"ok":true}]"#);
    drop(ws);
    expect_packet(&mut watcher, r#"42/chat,["leave room",{"user":"ghost","room":"haunt"}"#).await;
    expect_packet(&mut watcher, r#"42/chat,["room users",{"room":"haunt","users":["watcher"]}"#).await;

    // It comes back and sends its CONNECT ten times at once.
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await.unwrap();
    next_text(&mut ws).await;
    let connect = WsMessage::text(format!("40/chat,{}", json!({ "user": "ghost", "pid": pid })));
    for _ in 0..10 {
        ws.feed(connect.clone()).await.unwrap();
    }
    ws.flush().await.unwrap();
    expect_packet(&mut ws, "40/chat,").await;
    let welcome = expect_packet(&mut ws, r#"42/chat,["welcome""#).await;
    assert!(welcome.contains(r#""recovered":true"#), "{welcome}");
    // An ack after every CONNECT was handled: exactly one CONNECT answer came before it.
    ws.send(WsMessage::text(format!("42/chat,2{}", json!(["join room", { "room": "haunt" }])))).await.unwrap();
    let mut answers = 1;
    loop {
        let t = next_text(&mut ws).await;
        if t.starts_with("43/chat,2") {
            break;
        }
        answers += usize::from(t.starts_with("40/chat,"));
    }
    assert_eq!(answers, 1, "one CONNECT answer per session and namespace");
    assert_eq!(chat_sockets(addr).await, 2.0, "the watcher and one ghost socket");
    expect_packet(&mut watcher, r#"42/chat,["room users",{"room":"haunt","users":["ghost","watcher"]}"#).await;

    // It leaves: no socket of it stays, and the room lists the watcher alone.
    ws.close(None).await.unwrap();
    let deadline = Instant::now() + STEP;
    while chat_sockets(addr).await != 1.0 {
        assert!(Instant::now() < deadline, "a socket of the departed client stayed connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    expect_packet(&mut watcher, r#"42/chat,["room users",{"room":"haunt","users":["watcher"]}"#).await;
    node.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------------

/// User names with bidi overrides, zero-width or control characters are refused at CONNECT
/// with a CONNECT_ERROR naming the character; such room names get an error ack (join, send)
/// or a `chat error` (no ack); no room of such a name is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_with_invisible_characters_are_refused() {
    let node = chat_node(|c| c.chat.rate_limit_per_sec = 0).await;
    let addr = node.http_addr();
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    for (user, code) in
        [("admin\u{202E}nimda", "202E"), ("al\u{200B}ice", "200B"), ("\u{FEFF}bob", "FEFF"), ("a\u{1B}[31m", "001B")]
    {
        let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await.unwrap();
        next_text(&mut ws).await;
        ws.send(WsMessage::text(format!("40/chat,{}", json!({ "user": user })))).await.unwrap();
        let refusal = expect_packet(&mut ws, "4").await;
        let want = format!(
            "44/chat,{}",
            json!({ "message": format!("user name must not contain control or invisible formatting characters (U+{code})") })
        );
        assert_eq!(refusal, want, "{user:?}");
    }
    let (mut ws, _) = chat_user(addr, "carol", "plain", None).await;
    for room in ["lobby\u{2066}", "\u{200D}", "a\u{2028}b"] {
        ws.send(WsMessage::text(format!("42/chat,7{}", json!(["join room", { "room": room }])))).await.unwrap();
        let ack = expect_packet(&mut ws, "43/chat,7").await;
        assert!(ack.contains("room name must not contain control or invisible formatting characters"), "{ack}");
        ws.send(WsMessage::text(format!("42/chat,8{}", json!(["chat message", { "room": room, "message": "x" }]))))
            .await
            .unwrap();
        let ack = expect_packet(&mut ws, "43/chat,8").await;
        assert!(ack.contains("room name must not contain"), "{ack}");
        ws.send(WsMessage::text(format!("42/chat,{}", json!(["join room", { "room": room }])))).await.unwrap();
        let error = expect_packet(&mut ws, r#"42/chat,["chat error""#).await;
        assert!(error.contains("room name must not contain"), "{error}");
    }
    // Visible names in any script still work.
    ws.send(WsMessage::text(format!("42/chat,9{}", json!(["join room", { "room": "שלום ☕️" }])))).await.unwrap();
    assert_eq!(expect_packet(&mut ws, "43/chat,9").await, r#"43/chat,9[{"ok":true}]"#);
    node.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Binary attachments
// ---------------------------------------------------------------------------------------------

/// A WebSocket session of the fixture's Socket.IO engine, connected to `/`.
async fn sio_connected(ts: &TestServer) -> (support::server::Ws, std::sync::Arc<clusterchat::engineio::Session>) {
    let (mut ws, open) = ts.ws_session(SOCKETIO_PATH, 4).await;
    ws.send_text("40").await;
    assert!(ws.recv_text_skip_pings().await.starts_with("40"));
    let sid = open["sid"].as_str().unwrap().to_owned();
    (ws, ts.session(SOCKETIO_PATH, &sid))
}

/// A packet's binary attachments are bounded together by `max_payload` bytes and in time:
/// two of 900 bytes under a 2,000-byte limit go through, two of 1,500 close the session, and
/// a header whose attachments never come closes it at the deadline, not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_attachments_are_bounded_in_bytes_and_time() {
    const TIMEOUT: Duration = Duration::from_millis(250);
    let ts = TestServer::builder().max_payload(2000).attachment_timeout(TIMEOUT).start().await;
    let header = r#"452-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#;
    let (mut ws, _) = sio_connected(&ts).await;
    ws.send_text(header).await;
    ws.send_binary(&[1; 900]).await;
    ws.send_binary(&[2; 900]).await;
    loop {
        let t = ws.recv_text_skip_pings().await;
        if t.starts_with(r#"452-["message-back""#) {
            break;
        }
    }
    assert_eq!(ws.recv_binary_skip_pings().await, vec![1; 900]);
    assert_eq!(ws.recv_binary_skip_pings().await, vec![2; 900]);

    let (mut ws, session) = sio_connected(&ts).await;
    ws.send_text(header).await;
    ws.send_binary(&[1; 1500]).await;
    ws.send_binary(&[2; 1500]).await;
    ws.expect_closed().await;
    assert_eq!(session.close_reason(), Some(CloseReason::TransportError("binary attachments too large")));

    let (mut ws, session) = sio_connected(&ts).await;
    let started = Instant::now();
    ws.send_text(header).await;
    ws.send_binary(&[1; 10]).await;
    ws.expect_closed().await;
    let waited = started.elapsed();
    assert_eq!(session.close_reason(), Some(CloseReason::TransportError("binary attachments timed out")));
    assert!(waited >= TIMEOUT, "closed after {waited:?}, before the {TIMEOUT:?} deadline");
    println!("a packet missing an attachment: session closed after {waited:?} (deadline {TIMEOUT:?})");
    ts.shutdown().await;
}

/// A session keeps its handshake query for its lifetime, so the query is bounded: 2 KiB of
/// application parameters or 16 of them at most, else 400 (a WebSocket closed with 1008).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_handshake_query_is_refused() {
    let ts = TestServer::start().await;
    let long = "x".repeat(40_000);
    ts.get(&format!("{ENGINE_PATH}?EIO=4&transport=polling&user={long}")).await.assert_engine_error(400, 3);
    let many: String = (0..17).map(|i| format!("&p{i}=1")).collect();
    ts.get(&format!("{ENGINE_PATH}?EIO=4&transport=polling{many}")).await.assert_engine_error(400, 3);
    let mut ws = ts.ws(&format!("{ENGINE_PATH}?EIO=4&transport=websocket&user={long}")).await;
    ws.expect_closed().await;
    assert_eq!(ts.echo.session_count(), 0);
    // What a client sends is far below: 16 parameters of 100 bytes, and the protocol's own.
    let fine: String = (0..16).map(|i| format!("&p{i}={}", "y".repeat(100))).collect();
    let r = ts.get(&format!("{ENGINE_PATH}?EIO=4&transport=polling&t=Nx1{fine}")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    ts.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Per-address caps, slow bodies, browser origins
// ---------------------------------------------------------------------------------------------

/// A sample of the node's `/metrics` (0 when the series is absent), from `addr`.
async fn metric(addr: SocketAddr, series: &str) -> f64 {
    let text = reqwest::get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap();
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(0.0)
}

/// `max_connections_per_address` 2: a third open connection from the address gets 429 and is
/// closed, counted in `/metrics`; a place freed is taken again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_address_are_capped() {
    let node = chat_node(|c| c.max_connections_per_address = 2).await;
    let addr = node.http_addr();
    let first = TcpStream::connect(addr).await.unwrap();
    let _second = TcpStream::connect(addr).await.unwrap();
    let mut third = TcpStream::connect(addr).await.unwrap();
    let mut answer = String::new();
    within("the refusal", third.read_to_string(&mut answer)).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(answer.ends_with(r#"{"code":3,"message":"Too many connections from this address"}"#), "{answer}");
    drop(first);
    // The scrape needs a connection of its own: it gets the freed place (the server sees the
    // close a moment later, so try until it does).
    let deadline = Instant::now() + STEP;
    let refused = loop {
        if let Ok(r) = reqwest::get(format!("http://{addr}/metrics")).await {
            break r.text().await.unwrap();
        }
        assert!(Instant::now() < deadline, "the freed place was not given back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(refused.contains(r#"clusterchat_refused_total{reason="connections_per_address"} 1"#), "{refused}");
    node.shutdown().await;
}

/// `engine.max_sessions_per_address` 3: the fourth handshake from the address gets 429 with the
/// protocol's error body (a WebSocket a 1013 close), counted; a session closed frees a place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_per_address_are_capped() {
    let node = chat_node(|c| c.engine.max_sessions_per_address = 3).await;
    let base = format!("http://{}/socket.io/?EIO=4&transport=polling", node.http_addr());
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut sids = Vec::new();
    for _ in 0..3 {
        let r = http.get(&base).send().await.unwrap();
        assert_eq!(r.status(), 200);
        sids.push(support::server::parse_open_packet(&r.text().await.unwrap())["sid"].as_str().unwrap().to_owned());
    }
    let r = http.get(&base).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_error_body(&r.text().await.unwrap(), 3, "Too many sessions from this address");
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", node.http_addr());
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await.unwrap();
    match within("the refusal", ws.next()).await {
        Some(Ok(WsMessage::Close(Some(frame)))) => {
            assert_eq!((frame.code, frame.reason.as_str()), (CloseCode::Again, "Too many sessions from this address"))
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    assert_eq!(metric(node.http_addr(), "clusterchat_sessions_refused_per_address_total").await, 2.0);
    // One closes: its place is free once the session is cleaned up.
    assert_eq!(http.post(format!("{base}&sid={}", sids[0])).body("1").send().await.unwrap().status(), 200);
    assert_eq!(http.get(format!("{base}&sid={}", sids[0])).send().await.unwrap().text().await.unwrap(), "6");
    support::server::wait_until(STEP, "the closed session to be cleaned up", || node.engine().session_count() < 3)
        .await;
    assert_eq!(http.get(&base).send().await.unwrap().status(), 200);
    assert_eq!(http.get(&base).send().await.unwrap().status(), 429);
    node.shutdown().await;
}

/// A POST whose body trickles in a byte every 50 ms gets 408 at `body_timeout_ms` and its
/// connection is closed; the node keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_times_out() {
    const TIMEOUT: Duration = Duration::from_millis(400);
    let node = chat_node(|c| c.body_timeout_ms = TIMEOUT.as_millis() as u64).await;
    let addr = node.http_addr();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = format!("http://{addr}/socket.io/?EIO=4&transport=polling");
    let open = http.get(&base).send().await.unwrap().text().await.unwrap();
    let sid = support::server::parse_open_packet(&open)["sid"].as_str().unwrap().to_owned();
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let head = format!(
        "POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\n"
    );
    wr.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        for _ in 0..1000 {
            if wr.write_all(b"4").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let mut answer = Vec::new();
    within("the 408 and the close", rd.read_to_end(&mut answer)).await.unwrap();
    let waited = started.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.ends_with(r#"{"code":3,"message":"Request body timeout"}"#), "{answer}");
    assert!(waited >= TIMEOUT, "answered after {waited:?}, before the {TIMEOUT:?} deadline");
    println!("a body trickled at 20 B/s: 408 and closed after {waited:?} (deadline {TIMEOUT:?})");
    trickle.abort();
    assert_eq!(metric(addr, r#"clusterchat_refused_total{reason="body_timeout"}"#).await, 1.0);
    let r = http.get(&base).send().await.unwrap();
    assert_eq!(r.status(), 200);
    node.shutdown().await;
}

/// With the default `allowed_origins` (the page's own origin and loopback pages), a page
/// elsewhere gets 403 for polling, preflight and WebSocket alike, without CORS headers;
/// same-origin and loopback pages, and clients without an Origin, get through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_origins_are_refused() {
    let node = chat_node(|_| {}).await;
    let addr = node.http_addr();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = format!("http://{addr}/socket.io/?EIO=4&transport=polling");
    let get = |origin: Option<&str>| {
        let mut req = http.get(&base);
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        req.send()
    };
    for origin in ["https://evil.example", "null", "http://127.0.0.1.evil.example"] {
        let r = get(Some(origin)).await.unwrap();
        assert_eq!(r.status(), 403, "{origin}");
        assert!(r.headers().get("access-control-allow-origin").is_none());
        assert_error_body(&r.text().await.unwrap(), 4, "Forbidden");
    }
    let r =
        http.request(reqwest::Method::OPTIONS, &base).header("origin", "https://evil.example").send().await.unwrap();
    assert_eq!(r.status(), 403);
    for origin in [format!("http://{addr}"), "http://localhost:5173".into()] {
        let r = get(Some(&origin)).await.unwrap();
        assert_eq!(r.status(), 200, "{origin}");
        assert_eq!(r.headers()["access-control-allow-origin"], origin.as_str());
    }
    assert_eq!(get(None).await.unwrap().status(), 200);
    // WebSockets: the upgrade is refused before it happens.
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let mut req = url.as_str().into_client_request().unwrap();
    req.headers_mut().insert("origin", "https://evil.example".parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403),
        other => panic!("expected a 403, got {other:?}"),
    }
    let mut req = url.as_str().into_client_request().unwrap();
    req.headers_mut().insert("origin", format!("http://{addr}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.expect("same-origin WebSocket");
    assert!(next_text(&mut ws).await.starts_with("0{"));
    assert_eq!(metric(addr, r#"clusterchat_refused_total{reason="origin"}"#).await, 5.0);
    node.shutdown().await;
}

/// With `metrics_listen`, `/metrics` is served there and no longer on the public port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_leave_the_public_port() {
    let node = chat_node(|c| c.metrics_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let public = reqwest::get(format!("http://{}/metrics", node.http_addr())).await.unwrap();
    assert_eq!(public.status(), 404);
    let private = node.metrics_addr().expect("a metrics listener");
    let r = reqwest::get(format!("http://{private}/metrics")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("clusterchat_sessions_owned"));
    // It serves nothing else: no Engine.IO there.
    let r = reqwest::get(format!("http://{private}/socket.io/?EIO=4&transport=polling")).await.unwrap();
    assert_eq!(r.status(), 404);
    node.shutdown().await;
}
