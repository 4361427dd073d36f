//! One simulated chat user: speaks Engine.IO v4 / Socket.IO v5 itself, over a WebSocket or
//! over HTTP long-polling, from a chosen 127.0.0.x source address, on namespace `/chat`.
//!
//! A client is one task. Commands (emit, emit with ack) arrive through a small bounded queue;
//! every `chat message` received is timed against the send timestamp it carries and counted
//! in the run's [`Shared`] statistics; nothing received is kept.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::stats::{since_us, Counters, Histogram};

/// The Engine.IO path both servers serve.
const PATH: &str = "/socket.io/";
const NSP: &str = "/chat";
/// How long connecting (TCP, upgrade or handshake, CONNECT, welcome) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Commands queued per client; a full queue means the generator itself is behind.
const COMMAND_QUEUE: usize = 16;
/// Largest WebSocket message or polling body the generator accepts.
const MAX_MESSAGE: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Transport {
    Websocket,
    Polling,
}

/// Where a polling client sends its requests after the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Route {
    /// The address the handshake went to (a balancer, usually).
    Target,
    /// The node owning the session (the sid's suffix).
    Owner,
    /// A node other than the owner, which forwards every request.
    NonOwner,
}

#[derive(Debug, Clone)]
pub struct ClientSpec {
    pub target: SocketAddr,
    pub source: Ipv4Addr,
    pub transport: Transport,
    pub route: Route,
    pub user: String,
}

/// What every client of a run reports into.
#[derive(Default)]
pub struct Shared {
    /// Send → receive of `chat message` events.
    pub latency: Histogram,
    /// Polling: request → response of POSTs.
    pub request_latency: Histogram,
    pub counters: Counters,
    /// Node id → its HTTP address, for polling routes.
    pub nodes: HashMap<String, SocketAddr>,
    pub stop: CancellationToken,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connect: {0}")]
    Io(#[from] std::io::Error),
    #[error("websocket: {0}")]
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    #[error("http status {0}")]
    Status(u16),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("timed out")]
    Timeout,
    #[error("the session closed")]
    Closed,
}

enum Command {
    Emit { event: &'static str, data: String, ack: Option<oneshot::Sender<Instant>> },
}

/// A chat message received by a client that was asked to report them (join visibility).
pub type Probe = mpsc::Sender<(Instant, String)>;

pub struct Client {
    pub sid: String,
    /// The node that owns the session, from `welcome`.
    pub node: String,
    commands: mpsc::Sender<Command>,
    task: tokio::task::JoinHandle<()>,
}

impl Client {
    /// Connects, joins `/chat` as `spec.user`, waits for `welcome`, and runs until `shared.stop`.
    pub async fn connect(spec: ClientSpec, shared: Arc<Shared>, probe: Option<Probe>) -> Result<Self, ClientError> {
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let setup = async {
            match spec.transport {
                Transport::Websocket => {
                    let (ws, sid, node) = ws_connect(&spec).await?;
                    let run = WsRun { ws, events: Events::new(shared.clone(), probe) };
                    Ok::<_, ClientError>((sid, node, tokio::spawn(run.run(rx, shared.stop.clone()))))
                }
                Transport::Polling => {
                    let (mut polling, sid, node) = Polling::connect(&spec, &shared).await?;
                    polling.events = Events::new(shared.clone(), probe);
                    Ok((sid, node, tokio::spawn(polling.run(rx, shared.stop.clone()))))
                }
            }
        };
        let (sid, node, task) =
            tokio::time::timeout(CONNECT_TIMEOUT, setup).await.map_err(|_| ClientError::Timeout)??;
        Ok(Self { sid, node, commands: tx, task })
    }

    /// Emits without waiting; false when the client is behind (its queue is full) or gone.
    pub fn emit(&self, event: &'static str, data: String) -> bool {
        self.commands.try_send(Command::Emit { event, data, ack: None }).is_ok()
    }

    /// Emits and waits for the server's ack; returns when it arrived.
    pub async fn emit_ack(&self, event: &'static str, data: String) -> Result<Instant, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Emit { event, data, ack: Some(tx) }).await.map_err(|_| ClientError::Closed)?;
        tokio::time::timeout(CONNECT_TIMEOUT, rx)
            .await
            .map_err(|_| ClientError::Timeout)?
            .map_err(|_| ClientError::Closed)
    }

    pub async fn join(&self, room: &str) -> Result<Instant, ClientError> {
        self.emit_ack("join room", serde_json::json!({ "room": room }).to_string()).await
    }

    /// Sends a chat message carrying the send time.
    pub fn say(&self, room: &str) -> bool {
        self.emit("chat message", chat_message(room))
    }

    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Waits until the client task ended (after `stop`).
    pub async fn finish(self) {
        let _ = self.task.await;
    }
}

/// `{room, message}` whose message is the send time in the generator's clock.
pub fn chat_message(room: &str) -> String {
    format!("{{\"room\":{},\"message\":\"{}\"}}", serde_json::Value::from(room), super::stats::now_us())
}

async fn tcp(spec: &ClientSpec, to: SocketAddr) -> Result<TcpStream, ClientError> {
    let socket = TcpSocket::new_v4()?;
    // Small kernel buffers: thousands of mostly idle connections.
    socket.set_recv_buffer_size(16 * 1024)?;
    socket.set_send_buffer_size(16 * 1024)?;
    socket.bind(SocketAddr::from((spec.source, 0)))?;
    let stream = socket.connect(to).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// What a client does with what it receives.
struct Events {
    shared: Arc<Shared>,
    probe: Option<Probe>,
    next_ack: u64,
    pending: Vec<(u64, oneshot::Sender<Instant>)>,
}

enum Received {
    Nothing,
    Ping,
    Close,
}

impl Events {
    fn new(shared: Arc<Shared>, probe: Option<Probe>) -> Self {
        Self { shared, probe, next_ack: 0, pending: Vec::new() }
    }

    /// Encodes an EVENT packet, registering its ack.
    fn encode(&mut self, event: &str, data: &str, ack: Option<oneshot::Sender<Instant>>) -> String {
        let id = match ack {
            Some(tx) => {
                self.next_ack += 1;
                self.pending.push((self.next_ack, tx));
                self.next_ack.to_string()
            }
            None => String::new(),
        };
        if event == "chat message" {
            Counters::bump(&self.shared.counters.sent);
        }
        format!("42{NSP},{id}[\"{event}\",{data}]")
    }

    /// One Engine.IO packet.
    fn packet(&mut self, p: &str) -> Received {
        match p.as_bytes().first() {
            Some(b'2') => return Received::Ping,
            Some(b'1') => return Received::Close,
            _ => {}
        }
        let Some(sio) = p.strip_prefix("4").and_then(|s| s.split_once(',')) else { return Received::Nothing };
        let (head, body) = sio;
        match head {
            "2/chat" if body.starts_with("[\"chat message\"") => self.chat_message(body),
            "3/chat" => {
                let digits = body.bytes().take_while(u8::is_ascii_digit).count();
                if let Ok(id) = body[..digits].parse::<u64>() {
                    if let Some(i) = self.pending.iter().position(|(a, _)| *a == id) {
                        let _ = self.pending.swap_remove(i).1.send(Instant::now());
                    }
                }
            }
            "1/chat" => return Received::Close,
            _ => {}
        }
        Received::Nothing
    }

    fn chat_message(&mut self, body: &str) {
        let now = Instant::now();
        Counters::bump(&self.shared.counters.deliveries);
        let sent = body.rfind("\"message\":\"").map(|i| &body[i + 11..]).map(|m| {
            let digits = m.bytes().take_while(u8::is_ascii_digit).count();
            &m[..digits]
        });
        if let Some(sent) = sent.and_then(|s| s.parse::<u64>().ok()) {
            self.shared.latency.record(since_us(sent));
        }
        if let Some(probe) = &self.probe {
            let _ = probe.try_send((now, body.to_owned()));
        }
    }
}

/// Reads `welcome` out of a packet: (sid, node).
fn welcome(p: &str) -> Option<(String, String)> {
    let body = p.strip_prefix("42/chat,[\"welcome\",")?.strip_suffix(']')?;
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    Some((v["sid"].as_str()?.to_owned(), v["node"].as_str()?.to_owned()))
}

fn connect_packet(user: &str) -> String {
    format!("40{NSP},{}", serde_json::json!({ "user": user }))
}

fn open_sid(p: &str) -> Result<String, ClientError> {
    let json = p.strip_prefix('0').ok_or_else(|| ClientError::Protocol(format!("expected OPEN, got {p:.80}")))?;
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| ClientError::Protocol(e.to_string()))?;
    v["sid"].as_str().map(str::to_owned).ok_or_else(|| ClientError::Protocol("OPEN without sid".into()))
}

// ---------------------------------------------------------------------------------------------
// WebSocket
// ---------------------------------------------------------------------------------------------

type WsStream = tokio_tungstenite::WebSocketStream<TcpStream>;

async fn ws_connect(spec: &ClientSpec) -> Result<(WsStream, String, String), ClientError> {
    let stream = tcp(spec, spec.target).await?;
    let url = format!("ws://{}{PATH}?EIO=4&transport=websocket", spec.target);
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await?;
    let open = next_text(&mut ws).await?;
    open_sid(&open)?;
    ws.send(Message::text(connect_packet(&spec.user))).await?;
    loop {
        let p = next_text(&mut ws).await?;
        if p == "2" {
            ws.send(Message::text("3")).await?;
        } else if p.starts_with("44/chat") {
            return Err(ClientError::Protocol(format!("refused: {p}")));
        } else if let Some((sid, node)) = welcome(&p) {
            return Ok((ws, sid, node));
        }
    }
}

async fn next_text(ws: &mut WsStream) -> Result<String, ClientError> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_owned()),
            Some(Ok(Message::Close(_))) | None => return Err(ClientError::Closed),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
        }
    }
}

struct WsRun {
    ws: WsStream,
    events: Events,
}

impl WsRun {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>, stop: CancellationToken) {
        let (mut sink, mut stream) = self.ws.split();
        let ended = loop {
            tokio::select! {
                _ = stop.cancelled() => break false,
                msg = stream.next() => match msg {
                    Some(Ok(Message::Text(t))) => match self.events.packet(t.as_str()) {
                        Received::Ping => if sink.send(Message::text("3")).await.is_err() { break true },
                        Received::Close => break true,
                        Received::Nothing => {}
                    },
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break true,
                    Some(Ok(_)) => {}
                },
                cmd = commands.recv() => match cmd {
                    Some(Command::Emit { event, data, ack }) => {
                        let p = self.events.encode(event, &data, ack);
                        if sink.send(Message::text(p)).await.is_err() { break true }
                    }
                    None => break false,
                },
            }
        };
        if ended {
            Counters::bump(&self.events.shared.counters.disconnects);
        }
        let _ = sink.close().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Long-polling
// ---------------------------------------------------------------------------------------------

/// One HTTP/1.1 keep-alive connection from the client's source address, redialed when closed.
struct HttpConn {
    to: SocketAddr,
    sender: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
    /// The connection's I/O task: ended with the `HttpConn`, so no request outlives its client.
    io: Option<tokio::task::JoinHandle<()>>,
}

impl HttpConn {
    fn new(to: SocketAddr) -> Self {
        Self { to, sender: None, io: None }
    }
}

impl Drop for HttpConn {
    fn drop(&mut self) {
        if let Some(io) = self.io.take() {
            io.abort();
        }
    }
}

impl HttpConn {
    async fn request(
        &mut self,
        spec: &ClientSpec,
        method: hyper::Method,
        query: &str,
        body: Option<String>,
    ) -> Result<String, ClientError> {
        for attempt in 0..2 {
            if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
                let stream = tcp(spec, self.to).await?;
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                if let Some(old) = self.io.replace(tokio::spawn(async move {
                    let _ = conn.await;
                })) {
                    old.abort();
                }
                self.sender = Some(sender);
            }
            let sender = self.sender.as_mut().expect("connected above");
            sender.ready().await?;
            let req = hyper::Request::builder()
                .method(method.clone())
                .uri(format!("{PATH}?{query}"))
                .header(hyper::header::HOST, self.to.to_string())
                .header(hyper::header::CONTENT_TYPE, "text/plain;charset=UTF-8")
                .body(Full::new(Bytes::from(body.clone().unwrap_or_default())))
                .expect("a valid request");
            match sender.send_request(req).await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let limited = http_body_util::Limited::new(resp.into_body(), MAX_MESSAGE);
                    let bytes = limited.collect().await.map_err(|e| ClientError::Protocol(e.to_string()))?.to_bytes();
                    if status != 200 {
                        return Err(ClientError::Status(status));
                    }
                    return String::from_utf8(bytes.to_vec()).map_err(|e| ClientError::Protocol(e.to_string()));
                }
                // A keep-alive connection the server closed meanwhile: redial once.
                Err(e) if attempt == 0 && (e.is_canceled() || e.is_closed() || e.is_incomplete_message()) => {
                    self.sender = None;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ClientError::Closed)
    }
}

struct Polling {
    spec: ClientSpec,
    query: String,
    /// Long-polls (GET), and pushes (POST): two connections, as browsers use.
    get: HttpConn,
    post: HttpConn,
    events: Events,
}

impl Polling {
    async fn connect(spec: &ClientSpec, shared: &Arc<Shared>) -> Result<(Self, String, String), ClientError> {
        let mut hs = HttpConn::new(spec.target);
        let open = hs.request(spec, hyper::Method::GET, "EIO=4&transport=polling", None).await?;
        let sid = open_sid(open.split('\x1e').next().unwrap_or_default())?;
        let owner = sid.rsplit_once('.').map(|(_, o)| o.to_owned()).unwrap_or_default();
        let to = match spec.route {
            Route::Target => spec.target,
            Route::Owner => {
                *shared.nodes.get(&owner).ok_or_else(|| ClientError::Protocol(format!("unknown owner {owner}")))?
            }
            Route::NonOwner => *shared
                .nodes
                .iter()
                .filter(|(id, _)| **id != owner)
                .min_by_key(|(id, _)| (*id).clone())
                .map(|(_, a)| a)
                .ok_or_else(|| ClientError::Protocol("no node other than the owner".into()))?,
        };
        let mut p = Self {
            spec: spec.clone(),
            query: format!("EIO=4&transport=polling&sid={sid}"),
            get: if to == spec.target { hs } else { HttpConn::new(to) },
            post: HttpConn::new(to),
            events: Events::new(shared.clone(), None),
        };
        p.push(connect_packet(&spec.user)).await?;
        loop {
            let body = p.get.request(&p.spec, hyper::Method::GET, &p.query, None).await?;
            for packet in body.split('\x1e') {
                if packet == "2" {
                    p.push("3".into()).await?;
                } else if packet.starts_with("44/chat") {
                    return Err(ClientError::Protocol(format!("refused: {packet}")));
                } else if let Some((sid, node)) = welcome(packet) {
                    return Ok((p, sid, node));
                }
            }
        }
    }

    async fn push(&mut self, body: String) -> Result<(), ClientError> {
        let start = Instant::now();
        let r = self.post.request(&self.spec, hyper::Method::POST, &self.query, Some(body)).await?;
        self.events.shared.request_latency.record(start.elapsed());
        Counters::bump(&self.events.shared.counters.requests);
        if r != "ok" {
            return Err(ClientError::Protocol(format!("push answered {r:.80}")));
        }
        Ok(())
    }

    async fn run(mut self, mut commands: mpsc::Receiver<Command>, stop: CancellationToken) {
        let shared = self.events.shared.clone();
        // The long-poll runs on its own connection, in its own task: a GET in flight never
        // delays a POST. Bodies come back through a queue of one.
        let (bodies_tx, mut bodies) = mpsc::channel::<Result<String, ClientError>>(1);
        let mut get = std::mem::replace(&mut self.get, HttpConn::new(self.spec.target));
        let (spec, query, poll_stop) = (self.spec.clone(), self.query.clone(), stop.child_token());
        let counters = shared.clone();
        let poller = tokio::spawn(async move {
            loop {
                let r = tokio::select! {
                    _ = poll_stop.cancelled() => return,
                    r = get.request(&spec, hyper::Method::GET, &query, None) => r,
                };
                Counters::bump(&counters.counters.requests);
                let failed = r.is_err();
                if bodies_tx.send(r).await.is_err() || failed {
                    return;
                }
            }
        });
        let ended = loop {
            tokio::select! {
                _ = stop.cancelled() => break false,
                body = bodies.recv() => match body {
                    Some(Ok(body)) => {
                        let mut pong = false;
                        let mut close = false;
                        for packet in body.split('\x1e') {
                            match self.events.packet(packet) {
                                Received::Ping => pong = true,
                                Received::Close => close = true,
                                Received::Nothing => {}
                            }
                        }
                        if close || (pong && self.push("3".into()).await.is_err()) { break true }
                    }
                    _ => break true,
                },
                cmd = commands.recv() => match cmd {
                    Some(Command::Emit { event, data, ack }) => {
                        let p = self.events.encode(event, &data, ack);
                        if self.push(p).await.is_err() {
                            Counters::bump(&shared.counters.errors);
                            break true;
                        }
                    }
                    None => break false,
                },
            }
        };
        poller.abort();
        if ended {
            Counters::bump(&shared.counters.disconnects);
        } else {
            // Close the session politely so the server frees it now.
            let _ = tokio::time::timeout(Duration::from_secs(1), self.push("1".into())).await;
        }
    }
}
