//! The floor: the least a server can do to serve chatbench's `/chat` protocol, as the measure
//! of what the kernel alone costs. One process, one thread, one epoll loop (mio); WebSocket
//! transport only (a polling handshake is answered 400); no recovery, no cluster, no pong
//! timeouts. Each broadcast's frame is built once and appended to every member's output
//! buffer; every buffer touched in a turn of the loop is written once at the end of the turn.
//!
//! Environment: `PORT` (default 3001), `NAME` (the `node` of `welcome`, default `floor`).
//! Listens on 127.0.0.1 only; stops on SIGTERM like any process without a handler.
//! Bounds: frames of at most 64 KiB from clients, 8 KiB of HTTP head, [`MAX_OUT`] bytes queued
//! per connection (a client that falls further behind is closed), [`MAX_CONNS`] connections.

mod chat;
mod ws;

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use chat::Inbound;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use serde_json::Value;

/// Output queued for one connection before it is closed as too slow.
const MAX_OUT: usize = 4 << 20;
const MAX_CONNS: usize = 200_000;
const LISTENER: Token = Token(usize::MAX);
const PING_EVERY: Duration = Duration::from_secs(25);

enum Phase {
    /// Reading the HTTP upgrade request.
    Http,
    /// Engine.IO open, Socket.IO not yet connected to `/chat`.
    Open,
    /// Connected to `/chat` as `user`.
    Chat { user: Box<str> },
}

struct Conn {
    stream: TcpStream,
    phase: Phase,
    sid: Box<str>,
    /// Bytes of an incomplete frame (or request head) left from the last read.
    input: Vec<u8>,
    /// Bytes to write, from `written` on.
    out: Vec<u8>,
    written: usize,
    /// In this turn's list of connections to flush.
    dirty: bool,
    /// In this turn's list of connections to close; nothing more is queued for it.
    closing: bool,
    rooms: Vec<Box<str>>,
}

/// The connections, by token, and the work of the current turn.
#[derive(Default)]
struct Conns {
    slots: Vec<Option<Conn>>,
    free: Vec<usize>,
    dirty: Vec<usize>,
    closing: Vec<usize>,
}

impl Conns {
    fn get(&mut self, t: usize) -> Option<&mut Conn> {
        self.slots.get_mut(t).and_then(Option::as_mut)
    }

    /// Queues `bytes` (whole frames) for connection `t`.
    fn send(&mut self, t: usize, bytes: &[u8]) {
        let Some(c) = self.slots.get_mut(t).and_then(Option::as_mut) else { return };
        if c.closing {
            return;
        }
        if c.out.len() - c.written + bytes.len() > MAX_OUT {
            c.closing = true;
            self.closing.push(t);
            return;
        }
        c.out.extend_from_slice(bytes);
        if !c.dirty {
            c.dirty = true;
            self.dirty.push(t);
        }
    }

    fn close(&mut self, t: usize) {
        if let Some(c) = self.get(t) {
            if !c.closing {
                c.closing = true;
                self.closing.push(t);
            }
        }
    }

    /// Writes what connection `t` has queued, until done or the socket is full.
    fn flush(&mut self, t: usize) {
        let Some(c) = self.get(t) else { return };
        c.dirty = false;
        while c.written < c.out.len() {
            match c.stream.write(&c.out[c.written..]) {
                Ok(0) => break,
                Ok(n) => c.written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.close(t);
                    return;
                }
            }
        }
        if c.written == c.out.len() {
            c.written = 0;
            // Idle connections keep no large buffer.
            if c.out.capacity() > 16 * 1024 {
                c.out = Vec::new();
            } else {
                c.out.clear();
            }
        }
    }
}

struct Floor {
    poll: Poll,
    listener: TcpListener,
    conns: Conns,
    /// Room name → member tokens.
    rooms: HashMap<Box<str>, Vec<usize>>,
    node: String,
    next_sid: u64,
    /// Reused buffers: socket reads, and the frame being built.
    read_buf: Vec<u8>,
    text: Vec<u8>,
    frame: Vec<u8>,
}

fn main() -> std::io::Result<()> {
    let port: u16 = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(3001);
    let node = std::env::var("NAME").unwrap_or_else(|_| "floor".into());
    let poll = Poll::new()?;
    let mut listener = TcpListener::bind(([127, 0, 0, 1], port).into())?;
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    eprintln!("{node} listening on {port}");
    let mut floor = Floor {
        poll,
        listener,
        conns: Conns::default(),
        rooms: HashMap::new(),
        node,
        next_sid: 0,
        read_buf: vec![0; 64 * 1024],
        text: Vec::new(),
        frame: Vec::new(),
    };
    floor.run()
}

impl Floor {
    fn run(&mut self) -> std::io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut next_ping = Instant::now() + PING_EVERY;
        loop {
            let timeout = next_ping.saturating_duration_since(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    Token(t) => {
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.read(t);
                        }
                        if event.is_writable() {
                            self.conns.flush(t);
                        }
                    }
                }
            }
            if Instant::now() >= next_ping {
                self.ping_all();
                next_ping = Instant::now() + PING_EVERY;
            }
            self.end_turn();
        }
    }

    fn end_turn(&mut self) {
        let dirty = std::mem::take(&mut self.conns.dirty);
        for &t in &dirty {
            self.conns.flush(t);
        }
        self.conns.dirty = dirty;
        self.conns.dirty.clear();
        while let Some(t) = self.conns.closing.pop() {
            self.remove(t);
        }
    }

    fn accept(&mut self) {
        loop {
            let mut stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    eprintln!("accept: {e}");
                    return;
                }
            };
            let t = match self.conns.free.pop() {
                Some(t) => t,
                None if self.conns.slots.len() < MAX_CONNS => {
                    self.conns.slots.push(None);
                    self.conns.slots.len() - 1
                }
                None => continue, // full: the stream is dropped, closing it
            };
            if stream.set_nodelay(true).is_err()
                || self
                    .poll
                    .registry()
                    .register(&mut stream, Token(t), Interest::READABLE | Interest::WRITABLE)
                    .is_err()
            {
                self.conns.free.push(t);
                continue;
            }
            self.next_sid += 1;
            let sid = format!("f{:x}", self.next_sid).into_boxed_str();
            self.conns.slots[t] = Some(Conn {
                stream,
                phase: Phase::Http,
                sid,
                input: Vec::new(),
                out: Vec::new(),
                written: 0,
                dirty: false,
                closing: false,
                rooms: Vec::new(),
            });
        }
    }

    /// Reads until the socket is empty, acting on every complete frame.
    fn read(&mut self, t: usize) {
        let mut buf = std::mem::take(&mut self.read_buf);
        while let Some(c) = self.conns.get(t).filter(|c| !c.closing) {
            match c.stream.read(&mut buf) {
                Ok(0) => {
                    self.conns.close(t);
                    break;
                }
                Ok(n) => {
                    // Frames are read from the shared buffer unless a partial one is pending.
                    let mut input = std::mem::take(&mut c.input);
                    if input.is_empty() {
                        let used = self.consume(t, &mut buf[..n]);
                        input.extend_from_slice(&buf[used..n]);
                    } else {
                        input.extend_from_slice(&buf[..n]);
                        let used = self.consume(t, &mut input);
                        input.drain(..used);
                    }
                    if let Some(c) = self.conns.get(t) {
                        if input.len() > ws::MAX_FRAME + 14 {
                            self.conns.close(t);
                        } else {
                            c.input = input;
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.conns.close(t);
                    break;
                }
            }
        }
        self.read_buf = buf;
    }

    /// Acts on the complete frames (or request head) at the start of `buf`; returns how many
    /// bytes were used.
    fn consume(&mut self, t: usize, buf: &mut [u8]) -> usize {
        let mut at = 0;
        loop {
            let Some(c) = self.conns.get(t) else { return buf.len() };
            if c.closing {
                return buf.len();
            }
            if matches!(c.phase, Phase::Http) {
                match ws::parse_request(&buf[at..]) {
                    ws::Request::Incomplete => return at,
                    ws::Request::Refused => {
                        self.conns.send(t, ws::REFUSED_RESPONSE);
                        self.conns.close(t);
                        return buf.len();
                    }
                    ws::Request::Upgrade { key, consumed } => {
                        at += consumed;
                        self.upgrade(t, &key);
                        continue;
                    }
                }
            }
            match ws::decode(&mut buf[at..]) {
                ws::Decoded::Incomplete => return at,
                ws::Decoded::Frame { fin, opcode, start, len } => {
                    let payload = at + start..at + len;
                    at += len;
                    match (fin, opcode) {
                        (true, ws::TEXT) => match std::str::from_utf8(&buf[payload]) {
                            Ok(text) => self.packet(t, text),
                            Err(_) => self.conns.close(t),
                        },
                        (true, ws::PING) => {
                            self.frame.clear();
                            ws::encode(&mut self.frame, ws::PONG, &buf[payload]);
                            self.conns.send(t, &self.frame);
                        }
                        (true, ws::PONG) => {}
                        (true, ws::CLOSE) => {
                            self.frame.clear();
                            ws::encode(&mut self.frame, ws::CLOSE, &[]);
                            self.conns.send(t, &self.frame);
                            self.conns.close(t);
                        }
                        // Fragmented or binary messages: not part of the protocol served here.
                        _ => self.conns.close(t),
                    }
                }
                ws::Decoded::TooBig | ws::Decoded::Unmasked => {
                    self.frame.clear();
                    ws::encode(&mut self.frame, ws::CLOSE, &[0x03, 0xF1]); // 1009
                    self.conns.send(t, &self.frame);
                    self.conns.close(t);
                    return buf.len();
                }
            }
        }
    }

    fn upgrade(&mut self, t: usize, key: &str) {
        let Some(c) = self.conns.get(t) else { return };
        c.phase = Phase::Open;
        let sid = c.sid.clone();
        self.frame.clear();
        ws::accept_response(key, &mut self.frame);
        self.text.clear();
        chat::open(&mut self.text, &sid, PING_EVERY.as_millis() as u64);
        ws::encode(&mut self.frame, ws::TEXT, &self.text);
        self.conns.send(t, &self.frame);
    }

    /// Builds one text frame with `f` into `self.frame`.
    fn build(&mut self, f: impl FnOnce(&mut Vec<u8>)) {
        self.text.clear();
        f(&mut self.text);
        self.frame.clear();
        ws::encode(&mut self.frame, ws::TEXT, &self.text);
    }

    fn reply(&mut self, t: usize, f: impl FnOnce(&mut Vec<u8>)) {
        self.build(f);
        self.conns.send(t, &self.frame);
    }

    /// Builds one frame and queues it for every member of `room`.
    fn broadcast(&mut self, room: &str, f: impl FnOnce(&mut Vec<u8>)) {
        self.build(f);
        if let Some(members) = self.rooms.get(room) {
            for &m in members {
                self.conns.send(m, &self.frame);
            }
        }
    }

    fn packet(&mut self, t: usize, text: &str) {
        let Some(c) = self.conns.get(t) else { return };
        match (chat::parse(text), &c.phase) {
            (Inbound::Close, _) => self.conns.close(t),
            (Inbound::Connect { user: Some(user) }, Phase::Open) => {
                let sid = c.sid.clone();
                c.phase = Phase::Chat { user: user.clone().into_boxed_str() };
                self.reply(t, |o| chat::connected(o, &sid));
                let node = std::mem::take(&mut self.node);
                self.reply(t, |o| chat::welcome(o, &user, &node, &sid));
                self.node = node;
            }
            (Inbound::Connect { user: None }, Phase::Open) => {
                self.reply(t, |o| chat::connect_error(o, chat::NSP, "a user name is required"))
            }
            (Inbound::ConnectElsewhere(nsp), _) => self.reply(t, |o| chat::connect_error(o, &nsp, "Invalid namespace")),
            (Inbound::Event { ack, name, arg }, Phase::Chat { user }) => {
                let user = user.clone();
                let error = self.event(t, &user, &name, &arg);
                if let Some(id) = ack {
                    self.reply(t, |o| chat::ack(o, id, error.as_deref()));
                }
            }
            _ => {}
        }
    }

    /// One event of a connected user; the error its ack carries, if any.
    fn event(&mut self, t: usize, user: &str, name: &str, arg: &Value) -> Option<String> {
        let room = arg["room"].as_str().filter(|r| !r.is_empty());
        let Some(room) = room else { return Some("room required".into()) };
        let c = self.conns.get(t)?;
        let member = c.rooms.iter().any(|r| &**r == room);
        match name {
            "join room" => {
                if !member {
                    c.rooms.push(room.into());
                    self.rooms.entry(room.into()).or_default().push(t);
                }
                self.broadcast(room, |o| chat::room_event(o, "join room", user, room));
            }
            "leave room" => {
                if member {
                    c.rooms.retain(|r| &**r != room);
                    self.leave(t, room);
                }
                self.broadcast(room, |o| chat::room_event(o, "leave room", user, room));
            }
            "chat message" => {
                if !member {
                    return Some(format!("join room {room} before sending to it"));
                }
                let message = match &arg["message"] {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                self.broadcast(room, |o| chat::chat_message(o, user, room, &message));
            }
            _ => {}
        }
        None
    }

    fn leave(&mut self, t: usize, room: &str) {
        if let Some(members) = self.rooms.get_mut(room) {
            if let Some(i) = members.iter().position(|&m| m == t) {
                members.swap_remove(i);
            }
            if members.is_empty() {
                self.rooms.remove(room);
            }
        }
    }

    fn ping_all(&mut self) {
        self.frame.clear();
        ws::encode(&mut self.frame, ws::TEXT, b"2");
        let frame = std::mem::take(&mut self.frame);
        for t in 0..self.conns.slots.len() {
            if matches!(self.conns.slots[t].as_ref().map(|c| &c.phase), Some(Phase::Open | Phase::Chat { .. })) {
                self.conns.send(t, &frame);
            }
        }
        self.frame = frame;
    }

    /// Drops connection `t`: out of its rooms, out of epoll, its slot free for reuse.
    fn remove(&mut self, t: usize) {
        let Some(mut c) = self.conns.slots.get_mut(t).and_then(Option::take) else { return };
        for room in std::mem::take(&mut c.rooms) {
            self.leave(t, &room);
        }
        if let Err(e) = self.poll.registry().deregister(&mut c.stream) {
            eprintln!("deregister: {e}");
        }
        self.conns.free.push(t);
    }
}
