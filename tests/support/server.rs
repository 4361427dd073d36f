//! Shared fixture for the protocol integration tests: an in-process server like
//! `examples/conformance.rs` (an echo Engine.IO engine at `/engine.io/`, a Socket.IO server at
//! `/socket.io/` with namespaces `/` and `/custom`), plus small HTTP, WebSocket and payload
//! helpers. Every helper that awaits the network is bounded by [`STEP`] and panics with a
//! message naming what it waited for.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clusterchat::cluster::router::Router;
use clusterchat::engineio::{CloseReason, Engine, EngineConfig, EngineHandler, Frame, Message, Session};
use clusterchat::http::{EdgePolicy, HttpState};
use clusterchat::server::{ConnectionLimits, Server};
use clusterchat::socketio::{AckError, AckResponse, NamespaceBuilder, SocketIo, SocketIoConfig};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::task::TaskTracker;

pub const PING_INTERVAL: Duration = Duration::from_millis(300);
pub const PING_TIMEOUT: Duration = Duration::from_millis(200);
pub const DEFAULT_MAX_PAYLOAD: usize = 1_000_000;
/// Bound on any single await on the network.
pub const STEP: Duration = Duration::from_secs(5);

pub const ENGINE_PATH: &str = "/engine.io/";
pub const SOCKETIO_PATH: &str = "/socket.io/";

/// Awaits `fut` at most [`STEP`], failing the test with `what` otherwise.
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    within_for(STEP, what, fut).await
}

pub async fn within_for<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// Polls `cond` every few milliseconds until it holds, failing the test after `limit`.
pub async fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "condition not reached within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The fixture server
// ---------------------------------------------------------------------------------------------

/// Echoes every message back, as the engine.io suite's reference server does (shared with
/// `examples/conformance.rs`).
pub struct Echo;

impl EngineHandler for Echo {
    fn on_open(&self, _: &Arc<Session>) {}
    fn on_message(&self, session: &Arc<Session>, message: Message) {
        let frame = match message {
            Message::Text(t) => Frame::message(&t),
            Message::Binary(b) => Frame::Binary(b),
        };
        // A full queue closes the session itself; nothing else to do.
        let _ = session.send(frame);
    }
    fn on_close(&self, _: &Arc<Session>, _: CloseReason) {}
}

/// What a socket of the fixture remembers from its CONNECT.
struct ConnectData {
    auth: Value,
    /// The `x` query parameter (revision 4 namespace queries land here).
    x: Option<String>,
}

pub type AckResult = Result<AckResponse, AckError>;

/// The handlers the official socket.io suite expects in a namespace (shared with
/// `examples/conformance.rs`): `auth` after the CONNECT reply, `message-back`, acks echoed.
pub fn suite_handlers(name: &str) -> NamespaceBuilder {
    NamespaceBuilder::new(name)
        .on_connect(|socket, req| {
            socket.set_data(ConnectData { auth: req.auth.clone(), x: req.query_param("x").map(str::to_owned) });
            Ok(())
        })
        .on_connected(|socket| {
            // The suite awaits the CONNECT reply and this event one at a time, and its
            // WebSocket client drops the second of two frames that arrive in one TCP read
            // (the reference Node server loses that race too, about 1 run in 50). Sending a
            // millisecond later keeps them in separate reads.
            let socket = socket.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                let auth = socket.data::<ConnectData>().map(|d| d.auth.clone()).unwrap_or_default();
                let _ = socket.emit("auth", vec![auth]);
            });
        })
        .on("message", |socket, event, _| {
            let _ = socket.emit_binary("message-back", event.args, event.binary);
        })
        .on("message-with-ack", |_, event, ack| {
            if let Some(ack) = ack {
                let _ = ack.send_binary(event.args, event.binary);
            }
        })
}

/// The suite's handlers, plus:
/// - `ask` (args: `[timeout_ms]`): the server emits `question` with an ack and reports the
///   outcome of `emit_with_ack` on the test server's ack channel;
/// - `query` (with an ack): acknowledges with the CONNECT's `x` query parameter (or null).
fn suite_namespace(name: &str, acks: mpsc::UnboundedSender<AckResult>) -> NamespaceBuilder {
    suite_handlers(name)
        .on("query", |socket, _, ack| {
            if let Some(ack) = ack {
                let x = socket.data::<ConnectData>().and_then(|d| d.x.clone());
                let _ = ack.send(vec![json!(x)]);
            }
        })
        .on("ask", move |socket, event, _| {
            let timeout = Duration::from_millis(event.args.first().and_then(Value::as_u64).unwrap_or(1000));
            let socket = socket.clone();
            let acks = acks.clone();
            tokio::spawn(async move {
                let result = socket.emit_with_ack("question", vec![json!("ready?")], timeout).await;
                let _ = acks.send(result);
            });
        })
}

pub struct TestServerBuilder {
    engine: EngineConfig,
    socketio: SocketIoConfig,
    limits: ConnectionLimits,
}

impl TestServerBuilder {
    /// The engine's `max_payload`, which also bounds a packet's attachments (as in a node).
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.engine.max_payload = bytes;
        self.socketio.max_attachment_bytes = bytes;
        self
    }

    pub fn attachment_timeout(mut self, timeout: Duration) -> Self {
        self.socketio.attachment_timeout = timeout;
        self
    }

    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.socketio.connect_timeout = timeout;
        self
    }

    pub fn connection_limits(mut self, limits: ConnectionLimits) -> Self {
        self.limits = limits;
        self
    }

    pub async fn start(self) -> TestServer {
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        let io = SocketIo::new(
            self.socketio,
            vec![suite_namespace("/", ack_tx.clone()), suite_namespace("/custom", ack_tx)],
        );
        let echo = Engine::new(self.engine.clone(), Arc::new(Echo));
        let sio = Engine::new(self.engine.clone(), io.clone());
        let state = Arc::new(HttpState {
            node_id: "test".into(),
            engines: vec![
                (ENGINE_PATH.into(), Router::local("test".into(), echo.clone())),
                (SOCKETIO_PATH.into(), Router::local("test".into(), sio.clone())),
            ],
            membership: None,
            metrics: None,
            web_dir: None,
            admin_dir: None,
            policy: EdgePolicy::open(),
            draining: Default::default(),
            tasks: TaskTracker::new(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let server = Server::start_with(listener, state, self.limits).expect("server starts");
        let http = reqwest::Client::builder()
            .no_proxy()
            // No idle keep-alive connections: they would hold up the server's shutdown drain.
            .pool_max_idle_per_host(0)
            .build()
            .expect("HTTP client");
        TestServer {
            addr: server.local_addr(),
            server,
            http,
            echo,
            sio,
            io,
            config: self.engine,
            acks: tokio::sync::Mutex::new(ack_rx),
        }
    }
}

pub struct TestServer {
    addr: std::net::SocketAddr,
    server: Server,
    http: reqwest::Client,
    /// The echo engine at `/engine.io/`.
    pub echo: Arc<Engine>,
    /// The Socket.IO engine at `/socket.io/`.
    pub sio: Arc<Engine>,
    pub io: Arc<SocketIo>,
    pub config: EngineConfig,
    acks: tokio::sync::Mutex<mpsc::UnboundedReceiver<AckResult>>,
}

impl TestServer {
    /// The conformance settings: pingInterval 300 ms, pingTimeout 200 ms, maxPayload 1e6.
    pub fn builder() -> TestServerBuilder {
        TestServerBuilder {
            engine: EngineConfig {
                ping_interval: PING_INTERVAL,
                ping_timeout: PING_TIMEOUT,
                max_payload: DEFAULT_MAX_PAYLOAD,
                ..EngineConfig::default()
            },
            socketio: SocketIoConfig::default(),
            limits: ConnectionLimits::default(),
        }
    }

    pub async fn start() -> TestServer {
        Self::builder().start().await
    }

    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `ws://127.0.0.1:<port>`
    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// The engine serving `path`.
    pub fn engine(&self, path: &str) -> &Arc<Engine> {
        match path {
            ENGINE_PATH => &self.echo,
            SOCKETIO_PATH => &self.sio,
            other => panic!("no engine at {other}"),
        }
    }

    /// A live session, holding it so its close reason can be read after it is gone.
    pub fn session(&self, path: &str, sid: &str) -> Arc<Session> {
        self.engine(path).session(sid).unwrap_or_else(|| panic!("no live session {sid} at {path}"))
    }

    /// Waits (bounded) until the engine at `path` no longer knows a live session `sid`.
    pub async fn wait_session_gone(&self, path: &str, sid: &str, limit: Duration) {
        let engine = self.engine(path).clone();
        wait_until(limit, &format!("session {sid} at {path} to close"), || engine.session(sid).is_none()).await;
    }

    /// The outcome of the next `emit_with_ack` started by the fixture's `ask` handler.
    pub async fn next_ack_result(&self, limit: Duration) -> AckResult {
        let mut rx = self.acks.lock().await;
        within_for(limit, "the server's emit_with_ack to finish", rx.recv()).await.expect("ack channel open")
    }

    /// One HTTP request; `path_and_query` starts with `/`.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Resp {
        let mut req = self.http.request(method.clone(), format!("{}{}", self.url(), path_and_query));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(body) = body {
            req = req.body(body);
        }
        let what = format!("{method} {path_and_query}");
        let resp = within(&what, req.send()).await.unwrap_or_else(|e| panic!("{what} failed: {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = within(&what, resp.bytes()).await.unwrap_or_else(|e| panic!("{what}: reading body: {e}"));
        Resp { status, headers, body }
    }

    pub async fn get(&self, path_and_query: &str) -> Resp {
        self.request(reqwest::Method::GET, path_and_query, &[], None).await
    }

    /// A POST with a text body, as browsers send it.
    pub async fn post(&self, path_and_query: &str, body: impl Into<Vec<u8>>) -> Resp {
        self.post_as(path_and_query, "text/plain;charset=UTF-8", body).await
    }

    pub async fn post_as(&self, path_and_query: &str, content_type: &str, body: impl Into<Vec<u8>>) -> Resp {
        self.request(reqwest::Method::POST, path_and_query, &[("content-type", content_type)], Some(body.into())).await
    }

    /// Opens a WebSocket to `path_and_query` and expects the upgrade to succeed.
    pub async fn ws(&self, path_and_query: &str) -> Ws {
        let url = format!("{}{}", self.ws_url(), path_and_query);
        let (inner, _) = within(&format!("WebSocket {url}"), tokio_tungstenite::connect_async(url.as_str()))
            .await
            .unwrap_or_else(|e| panic!("WebSocket {url} refused: {e}"));
        Ws { inner }
    }

    /// Opens a WebSocket that the server must refuse at the HTTP level; returns the status.
    pub async fn ws_refused(&self, path_and_query: &str) -> u16 {
        use tokio_tungstenite::tungstenite::Error;
        let url = format!("{}{}", self.ws_url(), path_and_query);
        match within(&format!("WebSocket {url}"), tokio_tungstenite::connect_async(url.as_str())).await {
            Err(Error::Http(resp)) => resp.status().as_u16(),
            Err(other) => panic!("WebSocket {url}: expected an HTTP refusal, got {other}"),
            Ok(_) => panic!("WebSocket {url}: expected a refusal, the upgrade succeeded"),
        }
    }

    /// Opens an Engine.IO WebSocket session (`EIO=<eio>&transport=websocket`) and reads its
    /// OPEN packet.
    pub async fn ws_session(&self, path: &str, eio: u8) -> (Ws, Value) {
        let mut ws = self.ws(&format!("{path}?EIO={eio}&transport=websocket")).await;
        let open = ws.recv_text().await;
        let handshake = parse_open_packet(&open);
        (ws, handshake)
    }

    /// Opens a polling session; `extra` is appended to the handshake query (e.g. `&b64=1`).
    pub async fn polling(&self, path: &str, eio: u8, extra: &str) -> Polling<'_> {
        let query = format!("EIO={eio}&transport=polling{extra}");
        let resp = self.get(&format!("{path}?{query}")).await;
        assert_eq!(resp.status, 200, "handshake {path}?{query}: {}", resp.text());
        let body = resp.text();
        let open = match eio {
            4 => body.clone(),
            3 => {
                let packets = decode_v3_text(&body);
                assert_eq!(packets.len(), 1, "v3 handshake payload {body:?}");
                packets[0].clone()
            }
            _ => unreachable!(),
        };
        let handshake = parse_open_packet(&open);
        let sid = handshake["sid"].as_str().expect("sid is a string").to_owned();
        Polling {
            ts: self,
            path: path.to_owned(),
            query: format!("{query}&sid={sid}"),
            sid,
            handshake,
            handshake_body: body,
        }
    }

    /// Stops the server: sessions closed, connections drained.
    pub async fn shutdown(self) {
        let TestServer { server, http, .. } = self;
        drop(http);
        within_for(Duration::from_secs(10), "server shutdown", server.shutdown()).await;
    }
}

/// A buffered HTTP response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8(self.body.to_vec()).unwrap_or_else(|_| panic!("body is not UTF-8: {:?}", self.body))
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().expect("ASCII header"))
    }

    /// Asserts an Engine.IO error response: `status` and `{"code":code,"message":<string>}`.
    #[track_caller]
    pub fn assert_engine_error(&self, status: u16, code: u64) {
        assert_eq!(self.status, status, "status of error response, body {:?}", self.body);
        assert!(
            self.header("content-type").is_some_and(|c| c.starts_with("application/json")),
            "error content type: {:?}",
            self.header("content-type")
        );
        let body = self.json();
        let obj = body.as_object().unwrap_or_else(|| panic!("error body is not an object: {body}"));
        let mut keys: Vec<_> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["code", "message"], "error body keys: {body}");
        assert_eq!(body["code"], json!(code), "error code: {body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "error message: {body}");
    }
}

/// An open polling session.
pub struct Polling<'a> {
    ts: &'a TestServer,
    pub path: String,
    /// `EIO=..&transport=polling[&extra]&sid=..`
    pub query: String,
    pub sid: String,
    /// The OPEN packet's JSON.
    pub handshake: Value,
    /// The handshake response body as received.
    pub handshake_body: String,
}

impl Polling<'_> {
    pub fn path_and_query(&self) -> String {
        format!("{}?{}", self.path, self.query)
    }

    pub async fn get(&self) -> Resp {
        self.ts.get(&self.path_and_query()).await
    }

    /// A GET that must succeed; returns the body as text.
    pub async fn get_text(&self) -> String {
        let r = self.get().await;
        assert_eq!(r.status, 200, "poll: {:?}", r.body);
        r.text()
    }

    pub async fn post(&self, body: impl Into<Vec<u8>>) -> Resp {
        self.ts.post(&self.path_and_query(), body).await
    }

    /// v4: polls until at least `n` packets other than PINGs arrived (PINGs are answered with
    /// PONG); returns every non-PING packet received, in order.
    pub async fn poll_packets(&self, n: usize) -> Vec<String> {
        within(&format!("{n} packets over polling"), async {
            let mut packets = Vec::new();
            while packets.len() < n {
                for packet in decode_v4(&self.get_text().await) {
                    if packet == "2" {
                        self.post_ok("3").await;
                    } else {
                        packets.push(packet);
                    }
                }
            }
            packets
        })
        .await
    }

    /// A POST that must be accepted with `ok`.
    pub async fn post_ok(&self, body: impl Into<Vec<u8>>) {
        let r = self.post(body).await;
        assert_eq!((r.status, r.text().as_str()), (200, "ok"), "push");
    }

    pub async fn post_as(&self, content_type: &str, body: impl Into<Vec<u8>>) -> Resp {
        self.ts.post_as(&self.path_and_query(), content_type, body).await
    }

    /// The live server-side session.
    pub fn session(&self) -> Arc<Session> {
        self.ts.session(&self.path, &self.sid)
    }
}

/// A client WebSocket with bounded reads.
pub struct Ws {
    inner: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Ws {
    pub async fn send_text(&mut self, text: &str) {
        within("WebSocket send", self.inner.send(WsMessage::Text(text.into())))
            .await
            .unwrap_or_else(|e| panic!("sending {text:?}: {e}"));
    }

    pub async fn send_binary(&mut self, data: &[u8]) {
        within("WebSocket send", self.inner.send(WsMessage::Binary(Bytes::copy_from_slice(data))))
            .await
            .unwrap_or_else(|e| panic!("sending binary {data:?}: {e}"));
    }

    /// The next data message (text or binary); WebSocket control frames are skipped, a close
    /// fails the test.
    pub async fn recv(&mut self) -> WsMessage {
        within("a WebSocket message", async {
            loop {
                match self.inner.next().await {
                    Some(Ok(m @ (WsMessage::Text(_) | WsMessage::Binary(_)))) => return m,
                    Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_))) => continue,
                    other => panic!("expected a WebSocket message, got {other:?}"),
                }
            }
        })
        .await
    }

    pub async fn recv_text(&mut self) -> String {
        match self.recv().await {
            WsMessage::Text(t) => t.as_str().to_owned(),
            other => panic!("expected a text message, got {other:?}"),
        }
    }

    /// The next data message that is not an Engine.IO PING; PINGs are answered with PONG.
    pub async fn recv_skip_pings(&mut self) -> WsMessage {
        within("a WebSocket message other than PING", async {
            loop {
                match self.recv().await {
                    WsMessage::Text(t) if t.as_str() == "2" => self.send_text("3").await,
                    m => return m,
                }
            }
        })
        .await
    }

    pub async fn recv_text_skip_pings(&mut self) -> String {
        match self.recv_skip_pings().await {
            WsMessage::Text(t) => t.as_str().to_owned(),
            other => panic!("expected a text message, got {other:?}"),
        }
    }

    pub async fn recv_binary_skip_pings(&mut self) -> Vec<u8> {
        match self.recv_skip_pings().await {
            WsMessage::Binary(b) => b.to_vec(),
            other => panic!("expected a binary message, got {other:?}"),
        }
    }

    /// Waits until the server closes the WebSocket. Engine.IO PINGs are answered meanwhile, so
    /// a heartbeat timeout cannot be what closes it; other data messages are returned.
    pub async fn expect_closed(&mut self) -> Vec<WsMessage> {
        self.wait_closed(true).await
    }

    /// Waits until the server closes the WebSocket, without answering PINGs.
    pub async fn expect_closed_no_pong(&mut self) -> Vec<WsMessage> {
        self.wait_closed(false).await
    }

    async fn wait_closed(&mut self, pong: bool) -> Vec<WsMessage> {
        let mut seen = Vec::new();
        let deadline = Instant::now() + STEP;
        loop {
            let msg = match tokio::time::timeout_at(deadline, self.inner.next()).await {
                Ok(m) => m,
                Err(_) => panic!("the server did not close the WebSocket within {STEP:?}; got {seen:?}"),
            };
            match msg {
                None | Some(Err(_)) | Some(Ok(WsMessage::Close(_))) => return seen,
                Some(Ok(WsMessage::Text(t))) if pong && t.as_str() == "2" => {
                    // The connection may already be closing: a failed PONG is fine here.
                    let _ = self.inner.send(WsMessage::Text("3".into())).await;
                }
                Some(Ok(m @ (WsMessage::Text(_) | WsMessage::Binary(_)))) => seen.push(m),
                Some(Ok(_)) => {}
            }
        }
    }

    pub async fn close(mut self) {
        let _ = within("WebSocket close", self.inner.close(None)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Payload helpers (written independently of the server's codec)
// ---------------------------------------------------------------------------------------------

/// Parses `0{...}` into its JSON.
#[track_caller]
pub fn parse_open_packet(packet: &str) -> Value {
    let json = packet.strip_prefix('0').unwrap_or_else(|| panic!("not an OPEN packet: {packet:?}"));
    serde_json::from_str(json).unwrap_or_else(|e| panic!("OPEN packet JSON ({e}): {packet:?}"))
}

/// Sorted keys of a JSON object.
pub fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap_or_else(|| panic!("not an object: {v}")).keys().cloned().collect();
    k.sort();
    k
}

/// Splits a v4 polling payload into its packets.
pub fn decode_v4(payload: &str) -> Vec<String> {
    payload.split('\x1e').map(str::to_owned).collect()
}

/// Encodes packets as a v3 text payload: `<UTF-16 length>:<packet>` each.
pub fn encode_v3_text(packets: &[&str]) -> String {
    packets.iter().map(|p| format!("{}:{p}", p.encode_utf16().count())).collect()
}

/// Splits a v3 text payload, counting lengths in UTF-16 code units.
#[track_caller]
pub fn decode_v3_text(payload: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = payload;
    while !rest.is_empty() {
        let (len, tail) = rest.split_once(':').unwrap_or_else(|| panic!("v3 payload without length: {payload:?}"));
        let units: usize = len.parse().unwrap_or_else(|_| panic!("v3 payload length {len:?} in {payload:?}"));
        let mut taken = 0;
        let mut end = 0;
        for c in tail.chars() {
            if taken == units {
                break;
            }
            taken += c.len_utf16();
            end += c.len_utf8();
        }
        assert_eq!(taken, units, "v3 payload length {units} does not match {payload:?}");
        out.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

/// One packet of a v3 binary payload: `kind` 0 is text, 1 is binary (data includes the type byte).
pub fn encode_v3_binary(packets: &[(u8, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (kind, data) in packets {
        out.push(*kind);
        out.extend(data.len().to_string().bytes().map(|d| d - b'0'));
        out.push(0xff);
        out.extend_from_slice(data);
    }
    out
}

/// Strips a JSONP response `___eio[j]("...");` down to the payload string it carries.
#[track_caller]
pub fn unwrap_jsonp(body: &str, j: u32) -> String {
    let prefix = format!("___eio[{j}](");
    let json = body
        .strip_prefix(prefix.as_str())
        .and_then(|b| b.strip_suffix(");"))
        .unwrap_or_else(|| panic!("not a JSONP response for index {j}: {body:?}"));
    serde_json::from_str(json).unwrap_or_else(|e| panic!("JSONP argument is not a JSON string ({e}): {json:?}"))
}

/// Splits a Socket.IO EVENT packet `42[/nsp,]<id>[...]` into (namespace, ack id, data).
#[track_caller]
pub fn parse_sio_event(packet: &str) -> (String, Option<u64>, Value) {
    let rest = packet.strip_prefix("42").unwrap_or_else(|| panic!("not an EVENT packet: {packet:?}"));
    let (nsp, rest) = match rest.strip_prefix('/') {
        Some(r) => {
            let (name, tail) = r.split_once(',').unwrap_or_else(|| panic!("namespace without comma: {packet:?}"));
            (format!("/{name}"), tail)
        }
        None => ("/".to_owned(), rest),
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let id = (digits > 0).then(|| rest[..digits].parse().expect("ack id"));
    let data = serde_json::from_str(&rest[digits..]).unwrap_or_else(|e| panic!("EVENT data ({e}): {packet:?}"));
    (nsp, id, data)
}
