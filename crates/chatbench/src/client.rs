//! One simulated chat user: speaks Engine.IO v4 / Socket.IO v5 itself, over a WebSocket or
//! over HTTP long-polling, from a chosen 127.0.0.x source address, on namespace `/chat`.
//!
//! A client is one task. Commands (emit, emit with ack) arrive through a small bounded queue;
//! every `chat message` received is timed against the send timestamp it carries and counted
//! in the run's [`Shared`] statistics; nothing received is kept. Every packet sent or received
//! goes through the server's own codecs (`clusterchat::engineio`, `clusterchat::socketio`).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clusterchat::engineio::packet::{decode_text, Frame, Packet, PacketError, PacketType, ProtocolVersion};
use clusterchat::engineio::payload::{self, PayloadFormat};
use clusterchat::socketio::packet::{self as sio, DecodeError, Revision};
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::stats::{since_us, Counters, Histogram};

/// The Engine.IO path both servers serve.
const PATH: &str = "/socket.io/";
const NSP: &str = "/chat";
/// The revisions the generator speaks (socket.io-client v3/v4's): Engine.IO 4, Socket.IO 5.
const EIO: ProtocolVersion = ProtocolVersion::V4;
const SIO: Revision = Revision::V5;
/// Polling bodies the generator sends: v4 text payloads (it sends no binary).
const PAYLOAD: PayloadFormat = PayloadFormat { protocol: EIO, supports_binary: false };
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
    #[error("engine.io: {0}")]
    EngineIo(#[from] PacketError),
    #[error("socket.io: {0}")]
    SocketIo(#[from] DecodeError),
    #[error("timed out")]
    Timeout,
    #[error("the session closed")]
    Closed,
}

enum Command {
    Emit { event: &'static str, data: Value, ack: Option<oneshot::Sender<Instant>> },
}

/// The `message` of each chat message received, with its arrival time, from a client that was
/// asked to report them (join visibility).
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
    pub fn emit(&self, event: &'static str, data: Value) -> bool {
        self.commands.try_send(Command::Emit { event, data, ack: None }).is_ok()
    }

    /// Emits and waits for the server's ack; returns when it arrived.
    pub async fn emit_ack(&self, event: &'static str, data: Value) -> Result<Instant, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Emit { event, data, ack: Some(tx) }).await.map_err(|_| ClientError::Closed)?;
        tokio::time::timeout(CONNECT_TIMEOUT, rx)
            .await
            .map_err(|_| ClientError::Timeout)?
            .map_err(|_| ClientError::Closed)
    }

    pub async fn join(&self, room: &str) -> Result<Instant, ClientError> {
        self.emit_ack("join room", json!({ "room": room })).await
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
pub fn chat_message(room: &str) -> Value {
    json!({ "room": room, "message": super::stats::now_us().to_string() })
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
    fn encode(&mut self, event: &str, data: Value, ack: Option<oneshot::Sender<Instant>>) -> Frame {
        let mut packet = sio::Packet::new(sio::PacketType::Event, NSP, Some(json!([event, data])));
        packet.id = ack.map(|tx| {
            self.next_ack += 1;
            self.pending.push((self.next_ack, tx));
            self.next_ack
        });
        if event == "chat message" {
            Counters::bump(&self.shared.counters.sent);
        }
        Frame::message(&sio::encode(&packet))
    }

    /// A WebSocket text message: one Engine.IO packet. One that does not decode is counted as
    /// an error and skipped.
    fn receive_text(&mut self, text: &str) -> Received {
        match decode_text(text, EIO) {
            Ok(packet) => self.packet(packet),
            Err(_) => self.undecodable(),
        }
    }

    /// A polling response body: whether it asks for a pong, whether it closes the session.
    /// A body that does not decode is counted as an error and skipped.
    fn receive_payload(&mut self, body: &[u8]) -> (bool, bool) {
        let packets = payload::decode(body, EIO, false).unwrap_or_else(|_| {
            self.undecodable();
            Vec::new()
        });
        let (mut pong, mut close) = (false, false);
        for packet in packets {
            match self.packet(packet) {
                Received::Ping => pong = true,
                Received::Close => close = true,
                Received::Nothing => {}
            }
        }
        (pong, close)
    }

    fn undecodable(&self) -> Received {
        Counters::bump(&self.shared.counters.errors);
        Received::Nothing
    }

    /// One Engine.IO packet.
    fn packet(&mut self, packet: Packet) -> Received {
        match packet {
            Packet::Ping(_) => Received::Ping,
            Packet::Close => Received::Close,
            Packet::Message(text) => self.socketio(&text),
            _ => Received::Nothing,
        }
    }

    /// One Socket.IO packet: chat messages are timed, acks resolve their emits. A packet that
    /// does not decode is counted as an error and skipped.
    fn socketio(&mut self, text: &str) -> Received {
        let packet = match sio::decode(text, SIO, 0) {
            Ok(p) if p.nsp == NSP => p,
            Ok(_) => return Received::Nothing,
            Err(_) => return self.undecodable(),
        };
        match (packet.ty, packet.data) {
            (sio::PacketType::Event, Some(Value::Array(args))) if event_name(&args) == Some("chat message") => {
                self.chat_message(args.get(1).unwrap_or(&Value::Null))
            }
            (sio::PacketType::Ack, _) => {
                if let Some(i) = self.pending.iter().position(|(id, _)| Some(*id) == packet.id) {
                    let _ = self.pending.swap_remove(i).1.send(Instant::now());
                }
            }
            (sio::PacketType::Disconnect, _) => return Received::Close,
            _ => {}
        }
        Received::Nothing
    }

    fn chat_message(&mut self, data: &Value) {
        let now = Instant::now();
        Counters::bump(&self.shared.counters.deliveries);
        let message = data["message"].as_str().unwrap_or_default();
        if let Ok(sent) = message.parse::<u64>() {
            self.shared.latency.record(since_us(sent));
        }
        if let Some(probe) = &self.probe {
            let _ = probe.try_send((now, message.to_owned()));
        }
    }
}

/// What a packet received while connecting means.
enum Setup {
    /// A ping, to answer.
    Pong,
    /// `welcome`: the session's sid and the node that owns it.
    Welcome { sid: String, node: String },
    /// Anything else, to skip.
    Wait,
}

/// Reads one Engine.IO packet received before `welcome`. A refused CONNECT is an error.
fn setup(packet: Packet) -> Result<Setup, ClientError> {
    let text = match packet {
        Packet::Ping(_) => return Ok(Setup::Pong),
        Packet::Close => return Err(ClientError::Closed),
        Packet::Message(text) => text,
        _ => return Ok(Setup::Wait),
    };
    let packet = sio::decode(&text, SIO, 0)?;
    match (packet.ty, &packet.data) {
        _ if packet.nsp != NSP => Ok(Setup::Wait),
        (sio::PacketType::ConnectError, _) => Err(ClientError::Protocol(format!("refused: {text}"))),
        (sio::PacketType::Event, Some(Value::Array(args))) if event_name(args) == Some("welcome") => {
            let field = |name: &str| args.get(1).and_then(|w| w[name].as_str()).map(str::to_owned);
            match (field("sid"), field("node")) {
                (Some(sid), Some(node)) => Ok(Setup::Welcome { sid, node }),
                _ => Err(ClientError::Protocol(format!("welcome without sid and node: {text:.80}"))),
            }
        }
        _ => Ok(Setup::Wait),
    }
}

/// An EVENT's name: its first argument (the codec checked that it is a string).
fn event_name(args: &[Value]) -> Option<&str> {
    args.first().and_then(Value::as_str)
}

/// The CONNECT to `/chat` as `user`.
fn connect_packet(user: &str) -> Frame {
    Frame::message(&sio::encode(&sio::Packet::new(sio::PacketType::Connect, NSP, Some(json!({ "user": user })))))
}

/// The session id an OPEN packet carries.
fn open_sid(packet: Packet) -> Result<String, ClientError> {
    let Packet::Open(handshake) = packet else {
        return Err(ClientError::Protocol(format!("expected OPEN, got {packet:?}")));
    };
    let v: Value = serde_json::from_str(&handshake).map_err(|e| ClientError::Protocol(e.to_string()))?;
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
    open_sid(next_packet(&mut ws).await?)?;
    ws.send(connect_packet(&spec.user).into_websocket(EIO)).await?;
    loop {
        match setup(next_packet(&mut ws).await?)? {
            Setup::Pong => ws.send(pong()).await?,
            Setup::Welcome { sid, node } => return Ok((ws, sid, node)),
            Setup::Wait => {}
        }
    }
}

/// A PONG as a WebSocket message.
fn pong() -> Message {
    Frame::control(PacketType::Pong).into_websocket(EIO)
}

async fn next_packet(ws: &mut WsStream) -> Result<Packet, ClientError> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(decode_text(t.as_str(), EIO)?),
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
                    Some(Ok(Message::Text(t))) => match self.events.receive_text(t.as_str()) {
                        Received::Ping => if sink.send(pong()).await.is_err() { break true },
                        Received::Close => break true,
                        Received::Nothing => {}
                    },
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break true,
                    Some(Ok(_)) => {}
                },
                cmd = commands.recv() => match cmd {
                    Some(Command::Emit { event, data, ack }) => {
                        let frame = self.events.encode(event, data, ack);
                        if sink.send(frame.into_websocket(EIO)).await.is_err() { break true }
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
        body: Bytes,
    ) -> Result<Bytes, ClientError> {
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
                .body(Full::new(body.clone()))
                .expect("a valid request");
            match sender.send_request(req).await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let limited = http_body_util::Limited::new(resp.into_body(), MAX_MESSAGE);
                    let bytes = limited.collect().await.map_err(|e| ClientError::Protocol(e.to_string()))?.to_bytes();
                    if status != 200 {
                        return Err(ClientError::Status(status));
                    }
                    return Ok(bytes);
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
        let open = hs.request(spec, hyper::Method::GET, "EIO=4&transport=polling", Bytes::new()).await?;
        let first = payload::decode(&open, EIO, false)?.into_iter().next();
        let sid = open_sid(first.ok_or(PacketError::Empty)?)?;
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
            let body = p.get.request(&p.spec, hyper::Method::GET, &p.query, Bytes::new()).await?;
            for packet in payload::decode(&body, EIO, false)? {
                match setup(packet)? {
                    Setup::Pong => p.push(Frame::control(PacketType::Pong)).await?,
                    Setup::Welcome { sid, node } => return Ok((p, sid, node)),
                    Setup::Wait => {}
                }
            }
        }
    }

    /// POSTs one packet.
    async fn push(&mut self, frame: Frame) -> Result<(), ClientError> {
        let start = Instant::now();
        let body = payload::encode(&[frame], PAYLOAD).body;
        let r = self.post.request(&self.spec, hyper::Method::POST, &self.query, body).await?;
        self.events.shared.request_latency.record(start.elapsed());
        Counters::bump(&self.events.shared.counters.requests);
        if r != "ok" {
            return Err(ClientError::Protocol(format!("push answered {:.80}", String::from_utf8_lossy(&r))));
        }
        Ok(())
    }

    async fn run(mut self, mut commands: mpsc::Receiver<Command>, stop: CancellationToken) {
        let shared = self.events.shared.clone();
        // The long-poll runs on its own connection, in its own task: a GET in flight never
        // delays a POST. Bodies come back through a queue of one.
        let (bodies_tx, mut bodies) = mpsc::channel::<Result<Bytes, ClientError>>(1);
        let mut get = std::mem::replace(&mut self.get, HttpConn::new(self.spec.target));
        let (spec, query, poll_stop) = (self.spec.clone(), self.query.clone(), stop.child_token());
        let counters = shared.clone();
        let poller = tokio::spawn(async move {
            loop {
                let r = tokio::select! {
                    _ = poll_stop.cancelled() => return,
                    r = get.request(&spec, hyper::Method::GET, &query, Bytes::new()) => r,
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
                        let (pong, close) = self.events.receive_payload(&body);
                        if close || (pong && self.push(Frame::control(PacketType::Pong)).await.is_err()) { break true }
                    }
                    _ => break true,
                },
                cmd = commands.recv() => match cmd {
                    Some(Command::Emit { event, data, ack }) => {
                        let frame = self.events.encode(event, data, ack);
                        if self.push(frame).await.is_err() {
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
            let _ = tokio::time::timeout(Duration::from_secs(1), self.push(Frame::control(PacketType::Close))).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::now_us;

    fn events() -> Events {
        Events::new(Arc::new(Shared::default()), None)
    }

    #[test]
    fn sends_the_packets_socket_io_clients_send() {
        let mut e = events();
        let (tx, _rx) = oneshot::channel();
        let join = e.encode("join room", json!({ "room": "r" }), Some(tx));
        assert_eq!(join, Frame::Text(r#"42/chat,1["join room",{"room":"r"}]"#.into()));
        let say = e.encode("chat message", json!({ "room": "r", "message": "5" }), None);
        assert_eq!(say, Frame::Text(r#"42/chat,["chat message",{"room":"r","message":"5"}]"#.into()));
        assert_eq!(Counters::get(&e.shared.counters.sent), 1);
        assert_eq!(connect_packet("al"), Frame::Text(r#"40/chat,{"user":"al"}"#.into()));
        assert_eq!(&payload::encode(&[Frame::control(PacketType::Pong)], PAYLOAD).body[..], b"3");
    }

    #[test]
    fn reads_what_the_server_sends() {
        let mut e = events();
        let (tx, mut acked) = oneshot::channel();
        e.encode("join room", json!({ "room": "r" }), Some(tx));
        let message = json!(["chat message", { "user": "u", "room": "r", "message": now_us().to_string() }, "offset"]);
        let body = format!("2\x1e43/chat,1[{{\"ok\":true}}]\x1e42/chat,{message}");
        assert_eq!(e.receive_payload(body.as_bytes()), (true, false), "a ping to answer");
        assert!(acked.try_recv().is_ok(), "the ack resolved its emit");
        let shared = e.shared.clone();
        let c = &shared.counters;
        assert_eq!((Counters::get(&c.deliveries), Counters::get(&c.errors)), (1, 0));
        assert_eq!(shared.latency.take().count, 1, "the delivery was timed");
        assert!(matches!(e.receive_text("41/chat,"), Received::Close));
        assert!(matches!(e.receive_text("4garbage"), Received::Nothing));
        assert_eq!(Counters::get(&c.errors), 1, "what does not decode is counted");
    }

    #[test]
    fn connects_through_open_and_welcome() {
        let open = decode_text(r#"0{"sid":"abc.node1","upgrades":[]}"#, EIO).unwrap();
        assert_eq!(open_sid(open).unwrap(), "abc.node1");
        let welcome = r#"42/chat,["welcome",{"user":"u","node":"node2","sid":"x","recovered":false}]"#;
        let welcome = setup(decode_text(welcome, EIO).unwrap());
        assert!(matches!(welcome, Ok(Setup::Welcome { sid, node }) if sid == "x" && node == "node2"));
        let refused = setup(decode_text(r#"44/chat,{"message":"no user"}"#, EIO).unwrap());
        assert!(matches!(refused, Err(ClientError::Protocol(_))));
        assert!(matches!(setup(Packet::Ping(String::new())), Ok(Setup::Pong)));
    }
}
