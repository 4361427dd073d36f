//! The socketioxide peer of the benchmarks: clusterchat's `/chat` protocol (the one of
//! `bench/peer.js`: `welcome`, `join room`, `leave room`, `chat message`, acks) on socketioxide.
//!
//! Environment: `PORT` (default 3001), `NAME` (the `node` of `welcome`), `REDIS_URL` (clusters
//! the process with socketioxide-redis, websocket transport only, as the socket.io peer does;
//! the URL should ask for RESP3, `?protocol=resp3`), `MAX_BUFFER` (packets queued per socket,
//! default 8192: socketioxide drops what does not fit, silently for a broadcast) and
//! `STREAM_BUFFER` (the Redis adapter's inbound queue, default 65536, same caveat).
//!
//! It runs on a current-thread runtime: on a multi-thread one socketioxide may reorder a
//! socket's events (socketioxide issue 232). Listens on 127.0.0.1 only; SIGTERM stops it.

use std::sync::{Arc, Mutex};

use engineioxide::service::NotFoundService;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, SocketRef, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::service::SocketIoService;
use socketioxide::{SocketIo, TransportType};
use socketioxide_redis::drivers::redis::redis_client as redis;
use socketioxide_redis::{RedisAdapter, RedisAdapterConfig, RedisAdapterCtr};
use tokio::net::TcpListener;

fn main() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(run())
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(v) => v.parse().map_err(|_| anyhow::anyhow!("{name}={v}: not a valid value")),
        Err(_) => Ok(default),
    }
}

async fn run() -> anyhow::Result<()> {
    let port: u16 = env_or("PORT", 3001)?;
    let name: Arc<str> = std::env::var("NAME").unwrap_or_else(|_| format!("peer{port}")).into();
    let max_buffer: usize = env_or("MAX_BUFFER", 8192)?;
    let stream_buffer: usize = env_or("STREAM_BUFFER", 65536)?;
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let builder = SocketIo::builder().max_buffer_size(max_buffer);
    match std::env::var("REDIS_URL") {
        Ok(url) => {
            let client = redis::Client::open(url)?;
            let config = RedisAdapterConfig::new().with_stream_buffer(stream_buffer);
            let adapter = RedisAdapterCtr::new_with_redis_config(&client, config).await?;
            let (svc, io) =
                builder.transports([TransportType::Websocket]).with_adapter::<RedisAdapter<_>>(adapter).build_svc();
            io.ns("/chat", chat::<RedisAdapter<_>>(name.clone()).with(authenticate)).await?;
            eprintln!("{name} listening on {port} (redis adapter)");
            serve(listener, svc).await
        }
        Err(_) => {
            let (svc, io) = builder.build_svc();
            io.ns("/chat", chat(name.clone()).with(authenticate));
            eprintln!("{name} listening on {port}");
            serve(listener, svc).await
        }
    }
}

/// Accepts HTTP/1 connections (with upgrades) until SIGTERM or Ctrl-C.
async fn serve<A: Adapter>(listener: TcpListener, svc: SocketIoService<NotFoundService, A>) -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = term.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        stream.set_nodelay(true)?;
        let svc = svc.clone();
        tokio::spawn(async move {
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).with_upgrades();
            if let Err(e) = conn.await {
                eprintln!("connection: {e}");
            }
        });
    }
}

#[derive(Deserialize)]
struct Auth {
    user: String,
}

#[derive(Deserialize)]
struct RoomArg {
    room: String,
}

#[derive(Deserialize)]
struct MessageArg {
    room: String,
    message: serde_json::Value,
}

#[derive(Serialize)]
struct Welcome<'a> {
    user: &'a str,
    node: &'a str,
    sid: String,
}

#[derive(Serialize)]
struct RoomEvent<'a> {
    user: &'a str,
    room: &'a str,
}

#[derive(Serialize)]
struct ChatMessage<'a> {
    user: &'a str,
    room: &'a str,
    message: &'a str,
}

/// The ack of every event: `{ok: true}` or `{error}`.
#[derive(Serialize)]
#[serde(untagged)]
enum Reply {
    Ok { ok: bool },
    Error { error: String },
}

const OK: Reply = Reply::Ok { ok: true };

fn user_of(auth: Option<Auth>) -> Option<String> {
    auth.map(|a| a.user.trim().to_owned()).filter(|u| !u.is_empty())
}

/// Refuses a CONNECT without a user name, as the socket.io peer does.
async fn authenticate(TryData(auth): TryData<Auth>) -> Result<(), &'static str> {
    user_of(auth.ok()).map(|_| ()).ok_or("a user name is required")
}

/// One connected user: its name and its rooms (what `chat message` checks, without asking the
/// adapter for a copy of the socket's room set per message).
struct Member {
    user: String,
    rooms: Mutex<Vec<String>>,
}

impl Member {
    fn is_in(&self, room: &str) -> bool {
        self.rooms.lock().expect("not poisoned").iter().any(|r| r == room)
    }
}

fn ack<A: Adapter>(ack: AckSender<A>, reply: &Reply) {
    if let Err(e) = ack.send(reply) {
        eprintln!("ack: {e}");
    }
}

fn report<E: std::fmt::Display>(what: &str, r: Result<(), E>) {
    if let Err(e) = r {
        eprintln!("{what}: {e}");
    }
}

/// The `/chat` connect handler: `welcome`, then the three events.
fn chat<A: Adapter>(
    node: Arc<str>,
) -> impl FnOnce(SocketRef<A>, TryData<Auth>) -> std::future::Ready<()> + Clone + Send + Sync + 'static {
    move |socket: SocketRef<A>, TryData(auth): TryData<Auth>| {
        let user = user_of(auth.ok()).unwrap_or_default();
        let welcome = Welcome { user: &user, node: &node, sid: socket.id.to_string() };
        report("welcome", socket.emit("welcome", &welcome));
        let member = Arc::new(Member { user, rooms: Mutex::new(Vec::new()) });

        let m = member.clone();
        socket.on("join room", move |s: SocketRef<A>, TryData(arg): TryData<RoomArg>, tx: AckSender<A>| async move {
            let Some(room) = arg.ok().map(|a| a.room).filter(|r| !r.is_empty()) else {
                return ack(tx, &Reply::Error { error: "room required".into() });
            };
            s.join(room.clone());
            {
                let mut rooms = m.rooms.lock().expect("not poisoned");
                if !rooms.contains(&room) {
                    rooms.push(room.clone());
                }
            }
            report(
                "join room",
                s.within(room.clone()).emit("join room", &RoomEvent { user: &m.user, room: &room }).await,
            );
            ack(tx, &OK);
        });

        let m = member.clone();
        socket.on("leave room", move |s: SocketRef<A>, TryData(arg): TryData<RoomArg>, tx: AckSender<A>| async move {
            let Ok(RoomArg { room }) = arg else {
                return ack(tx, &Reply::Error { error: "room required".into() });
            };
            s.leave(room.clone());
            m.rooms.lock().expect("not poisoned").retain(|r| *r != room);
            report(
                "leave room",
                s.within(room.clone()).emit("leave room", &RoomEvent { user: &m.user, room: &room }).await,
            );
            ack(tx, &OK);
        });

        let m = member;
        socket.on(
            "chat message",
            move |s: SocketRef<A>, TryData(arg): TryData<MessageArg>, tx: AckSender<A>| async move {
                let Ok(MessageArg { room, message }) = arg else {
                    return ack(tx, &Reply::Error { error: "room and message required".into() });
                };
                if !m.is_in(&room) {
                    return ack(tx, &Reply::Error { error: format!("join room {room} before sending to it") });
                }
                let text = match &message {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let event = ChatMessage { user: &m.user, room: &room, message: &text };
                report("chat message", s.within(room.clone()).emit("chat message", &event).await);
                ack(tx, &OK);
            },
        );
        std::future::ready(())
    }
}
