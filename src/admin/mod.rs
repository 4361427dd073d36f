//! The official socket.io Admin UI (`@socket.io/admin-ui`), for the whole cluster.
//!
//! The server side of its protocol, as the package's `instrument()` implements it
//! (`dist/index.js`): a `/admin` namespace whose CONNECT must carry the configured user and
//! password (bcrypt) or a session id from an earlier login ([`auth`]); on connect it gets
//! `config` (the supported features), then `all_sockets`, then every `stats_interval_ms` one
//! `server_stats` per node and the changes since (`socket_connected`, `socket_updated`,
//! `room_joined`, `room_left`, `socket_disconnected`); it may send `_disconnect`, `join`,
//! `leave` and `emit` ([`command`]), refused in read-only mode.
//!
//! Cluster-wide by asking: each admin socket's node asks every member (over the internal RPC,
//! `Request::Admin` carrying JSON) for its stats and sockets once per interval and sends the
//! UI the difference ([`snapshot::diff`]), so the namespace and room code carry no admin
//! hooks; changes reach the UI within one interval. A command goes to every member, each
//! applying it to the sockets it holds. What is sent is bounded: `max_sockets` sockets
//! cluster-wide (a stable subset past it), one stats object per node.
//! The UI itself is served at `/admin/` ([`ui`]).

mod auth;
pub mod command;
pub mod settings;
pub mod snapshot;
pub mod ui;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

use crate::cluster::membership::Membership;
use crate::engineio::Engine;
use crate::rpc::peers::Peers;
use crate::rpc::{Request, Response};
use crate::socketio::{AckSender, NamespaceBuilder, Socket, SocketIo};
pub use auth::INVALID_CREDENTIALS;
use command::Command;
pub use settings::AdminSettings;
use snapshot::{NodeFacts, NodeSnapshot, SeenSockets};

/// The namespace the UI connects to (its default).
pub const NAMESPACE: &str = "/admin";

/// What nodes ask each other for the UI (JSON in `Request::Admin`).
#[derive(Debug, Serialize, Deserialize)]
enum AdminRequest {
    Snapshot { max_sockets: usize },
    Command(Command),
}

/// A node's answer (JSON in `Response::Admin`).
#[derive(Debug, Serialize, Deserialize)]
enum AdminAnswer {
    Snapshot(NodeSnapshot),
    /// How many sockets the command acted on.
    Done(usize),
    Refused(String),
}

/// The Admin UI's server side on one node.
pub struct Admin {
    settings: AdminSettings,
    login: auth::Login,
    facts: NodeFacts,
    /// This node's Socket.IO server and engine, set once built. Weak: the `/admin`
    /// namespace's handlers hold this, and the server holds the namespace.
    local: OnceLock<(Weak<SocketIo>, Weak<Engine>)>,
    /// The ring, in a cluster. Weak: the node owns them and stops them.
    cluster: OnceLock<(Weak<Membership>, Weak<Peers>, Duration)>,
    /// One task per connected admin socket (its stats loop); each ends with its socket, or
    /// when `stop` is cancelled (the node stops).
    tasks: TaskTracker,
    stop: CancellationToken,
    /// Admin sockets connected to this node, at most `max_uis`.
    uis: Arc<AtomicUsize>,
}

/// What an admin socket carries: the session id to hand it, its loop's stop, and its place
/// among the `max_uis`.
struct AdminClient {
    new_session: Option<String>,
    stop: CancellationToken,
    _slot: UiSlot,
}

/// One of the `max_uis` places, given back when the socket is dropped.
struct UiSlot(Arc<AtomicUsize>);

impl UiSlot {
    fn take(count: &Arc<AtomicUsize>, max: usize) -> Option<Self> {
        let taken = count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1));
        taken.is_ok().then(|| Self(count.clone()))
    }
}

impl Drop for UiSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admin {
    /// Fails on settings that cannot work (see [`AdminSettings::validate`]).
    pub fn new(settings: AdminSettings, node_id: Arc<str>) -> Result<Arc<Self>, String> {
        settings.validate()?;
        let login = auth::Login::new(
            settings.username.clone(),
            settings.password_hash(),
            Duration::from_secs(settings.session_secs),
            settings.max_logins,
        );
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| node_id.to_string());
        let facts = NodeFacts { hostname, node_id, started: Instant::now() };
        Ok(Arc::new(Self {
            settings,
            login,
            facts,
            local: OnceLock::new(),
            cluster: OnceLock::new(),
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
            uis: Arc::new(AtomicUsize::new(0)),
        }))
    }

    pub fn settings(&self) -> &AdminSettings {
        &self.settings
    }

    /// Connects the admin to this node's server and engine (once).
    pub fn attach(&self, io: &Arc<SocketIo>, engine: &Arc<Engine>) {
        let _ = self.local.set((Arc::downgrade(io), Arc::downgrade(engine)));
    }

    /// Connects the admin to the ring (once).
    pub fn join_cluster(&self, membership: &Arc<Membership>, peers: &Arc<Peers>, timeout: Duration) {
        let _ = self.cluster.set((Arc::downgrade(membership), Arc::downgrade(peers), timeout));
    }

    fn io(&self) -> Option<(Arc<SocketIo>, Arc<Engine>)> {
        let (io, engine) = self.local.get()?;
        Some((io.upgrade()?, engine.upgrade()?))
    }

    /// The features the UI may use (`config`). `ALL_EVENTS` is the reference's development
    /// mode, in which it sends `all_sockets` and the socket and room events, and which the UI
    /// needs to show its Sockets, Rooms, Clients and Events pages; this server sends those
    /// but not `event_received`/`event_sent`. `AGGREGATED_EVENTS` (the dashboard's traffic
    /// counts) is not offered: no counts are kept.
    fn features(&self) -> Vec<&'static str> {
        let mut features = match self.settings.read_only {
            true => Vec::new(),
            false => vec!["EMIT", "JOIN", "LEAVE", "DISCONNECT", "MJOIN", "MLEAVE", "MDISCONNECT"],
        };
        features.push("ALL_EVENTS");
        features
    }

    /// The `/admin` namespace.
    pub fn namespace(self: &Arc<Self>) -> NamespaceBuilder {
        let (a1, a2, a3) = (self.clone(), self.clone(), self.clone());
        let mut builder = NamespaceBuilder::new(NAMESPACE)
            // A password's check takes tens of milliseconds: not on the connection's thread.
            .check_connect(move |socket, req| {
                let (admin, socket, auth) = (a1.clone(), socket.clone(), req.auth.clone());
                Box::pin(async move {
                    let new_session = admin.login.check(&auth).await.inspect_err(|err| {
                        info!(socket = %socket.id(), addr = ?socket.session().query().client_addr, error = %err, "admin login refused");
                    })?;
                    let Some(slot) = UiSlot::take(&admin.uis, admin.settings.max_uis) else {
                        info!(socket = %socket.id(), max = admin.settings.max_uis, "admin UI refused: too many connected");
                        return Err(format!("too many Admin UIs connected to this node ({})", admin.settings.max_uis));
                    };
                    socket.set_data(AdminClient { new_session, stop: admin.stop.child_token(), _slot: slot });
                    Ok(())
                })
            })
            .on_connected(move |socket| a2.connected(socket))
            .on_disconnect(|socket, _| {
                if let Some(client) = socket.data::<AdminClient>() {
                    client.stop.cancel();
                }
            });
        for event in command::EVENTS {
            let admin = a3.clone();
            builder = builder.on(event, move |socket, e, ack| admin.on_command(socket, &e.name, &e.args, ack));
        }
        builder
    }

    fn connected(self: &Arc<Self>, socket: &Arc<Socket>) {
        let Some(client) = socket.data::<AdminClient>() else { return };
        info!(socket = %socket.id(), "admin UI connected");
        if let Some(session) = &client.new_session {
            let _ = socket.emit("session", vec![session.as_str().into()]);
        }
        let _ = socket.emit("config", vec![json!({ "supportedFeatures": self.features() })]);
        let (admin, socket, stop) = (self.clone(), socket.clone(), client.stop.clone());
        self.tasks.spawn(async move { admin.watch(&socket, stop).await }.in_current_span());
    }

    /// Sends the UI the cluster's sockets, then each interval every node's stats and what
    /// changed, until the socket goes.
    async fn watch(&self, socket: &Socket, stop: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_millis(self.settings.stats_interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut told: Option<SeenSockets> = None;
        let mut said_capped = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let (snapshots, silent) = tokio::select! {
                _ = stop.cancelled() => return,
                gathered = self.gather() => gathered,
            };
            let mut sent = true;
            for s in &snapshots {
                sent &= socket.emit("server_stats", vec![s.stats.clone()]).is_ok();
            }
            let total: u64 = snapshots.iter().map(|s| snapshot::socket_count(&s.stats)).sum();
            let mut sockets: Vec<Value> = snapshots.into_iter().flat_map(|s| s.sockets).collect();
            sockets.truncate(self.settings.max_sockets);
            if total > sockets.len() as u64 && !said_capped {
                said_capped = true;
                info!(
                    listed = sockets.len(),
                    total,
                    max_sockets = self.settings.max_sockets,
                    "the Admin UI is told about part of the sockets (admin.max_sockets)"
                );
            }
            let mut now = snapshot::seen(&sockets);
            match &told {
                None => sent &= socket.emit("all_sockets", vec![Value::Array(sockets)]).is_ok(),
                Some(before) => {
                    // A node that did not answer this time keeps what the UI was told of it.
                    for (key, seen) in before.iter().filter(|(_, s)| silent.contains(&s.node)) {
                        now.entry(key.clone()).or_insert_with(|| seen.clone());
                    }
                    for (event, args) in snapshot::diff(before, &now, &sockets) {
                        sent &= socket.emit(event, args).is_ok();
                    }
                }
            }
            if !sent {
                debug!(socket = %socket.id(), "admin UI not keeping up or gone; its updates stop");
                return;
            }
            told = Some(now);
        }
    }

    /// Every member's snapshot (this node's first), and the members that did not answer.
    async fn gather(&self) -> (Vec<NodeSnapshot>, BTreeSet<String>) {
        let max_sockets = self.settings.max_sockets;
        let mut snapshots = Vec::new();
        if let Some((io, engine)) = self.io() {
            snapshots.push(snapshot::local(&self.facts, &io, &engine, max_sockets));
        }
        let request = AdminRequest::Snapshot { max_sockets };
        let timeout = Duration::from_millis(self.settings.stats_interval_ms);
        let mut silent = BTreeSet::new();
        for (node, answer) in self.ask_peers(&request, timeout).await {
            match answer {
                Ok(AdminAnswer::Snapshot(s)) => snapshots.push(s),
                Ok(other) => {
                    warn!(node, answer = ?other, "unexpected admin answer");
                    silent.insert(node);
                }
                Err(err) => {
                    debug!(node, error = %err, "no admin snapshot");
                    silent.insert(node);
                }
            }
        }
        (snapshots, silent)
    }

    /// Asks every other member, at once, under one deadline.
    async fn ask_peers(&self, request: &AdminRequest, timeout: Duration) -> Vec<(String, Result<AdminAnswer, String>)> {
        let Some((membership, peers, rpc_timeout)) = self.cluster.get() else { return Vec::new() };
        let (Some(membership), Some(peers)) = (membership.upgrade(), peers.upgrade()) else { return Vec::new() };
        let body = match serde_json::to_string(request) {
            Ok(body) => body,
            Err(err) => return vec![(self.facts.node_id.to_string(), Err(err.to_string()))],
        };
        let timeout = timeout.min(*rpc_timeout);
        let members = membership.members();
        let calls = members.nodes.values().filter(|m| *m.node_id != *self.facts.node_id).filter_map(|m| {
            let (node, rpc, peers, body) = (m.node_id.clone(), m.dial()?, peers.clone(), body.clone());
            Some(async move {
                let answer = match peers.call(&node, rpc, Request::Admin(body), timeout).await {
                    Ok(Response::Admin(text)) => serde_json::from_str(&text).map_err(|e| format!("bad answer: {e}")),
                    Ok(Response::Failed(reason)) => Err(reason),
                    Ok(other) => Err(format!("unexpected response {other:?}")),
                    Err(err) => Err(err.to_string()),
                };
                (node, answer)
            })
        });
        futures_util::future::join_all(calls).await
    }

    fn on_command(self: &Arc<Self>, socket: &Arc<Socket>, event: &str, args: &[Value], ack: Option<AckSender>) {
        let reply = |ack: Option<AckSender>, answer: Value| {
            if let Some(ack) = ack {
                let _ = ack.send(vec![answer]);
            }
        };
        if self.settings.read_only {
            info!(socket = %socket.id(), event, "admin command refused: read-only");
            return reply(ack, json!({ "error": "read-only: commands are refused" }));
        }
        let command = match Command::parse(event, args) {
            Ok(command) => command,
            Err(err) => {
                info!(socket = %socket.id(), error = %err, "admin command refused");
                return reply(ack, json!({ "error": err }));
            }
        };
        info!(socket = %socket.id(), ?command, "admin command");
        let (admin, stop) = (self.clone(), self.stop.clone());
        self.tasks.spawn(
            async move {
                // A node that stops does not wait for its peers' answers.
                let Some((acted, errors)) = stop.run_until_cancelled(admin.run(command)).await else { return };
                let answer = match errors.is_empty() {
                    true => json!({ "ok": true, "sockets": acted }),
                    false => json!({ "ok": false, "sockets": acted, "errors": errors }),
                };
                reply(ack, answer);
            }
            .in_current_span(),
        );
    }

    /// Runs a command on every node; how many sockets it acted on, and the nodes that failed.
    async fn run(&self, command: Command) -> (usize, Vec<String>) {
        let mut acted = 0;
        let mut errors = Vec::new();
        if let Some((io, _)) = self.io() {
            match command.apply_local(&io).await {
                Ok(n) => acted += n,
                Err(err) => errors.push(format!("{}: {err}", self.facts.node_id)),
            }
        }
        let timeout = self.cluster.get().map_or(Duration::ZERO, |(_, _, t)| *t);
        for (node, answer) in self.ask_peers(&AdminRequest::Command(command), timeout).await {
            match answer {
                Ok(AdminAnswer::Done(n)) => acted += n,
                Ok(AdminAnswer::Refused(err)) => errors.push(format!("{node}: {err}")),
                Ok(other) => errors.push(format!("{node}: unexpected answer {other:?}")),
                Err(err) => errors.push(format!("{node}: {err}")),
            }
        }
        if !errors.is_empty() {
            warn!(?errors, "admin command failed on some nodes");
        }
        (acted, errors)
    }

    /// Answers a peer's `Request::Admin`.
    pub fn on_peer_request(self: &Arc<Self>, body: String) -> BoxFuture<'static, Response> {
        let admin = self.clone();
        Box::pin(async move {
            let answer = match serde_json::from_str::<AdminRequest>(&body) {
                Err(err) => AdminAnswer::Refused(format!("bad admin request: {err}")),
                Ok(request) => match (request, admin.io()) {
                    (_, None) => AdminAnswer::Refused("this node is stopping".into()),
                    (AdminRequest::Snapshot { max_sockets }, Some((io, engine))) => {
                        let max_sockets = max_sockets.min(admin.settings.max_sockets);
                        AdminAnswer::Snapshot(snapshot::local(&admin.facts, &io, &engine, max_sockets))
                    }
                    (AdminRequest::Command(_), Some(_)) if admin.settings.read_only => {
                        AdminAnswer::Refused("read-only".into())
                    }
                    (AdminRequest::Command(command), Some((io, _))) => match command.apply_local(&io).await {
                        Ok(n) => AdminAnswer::Done(n),
                        Err(err) => AdminAnswer::Refused(err),
                    },
                },
            };
            match serde_json::to_string(&answer) {
                Ok(text) => Response::Admin(text),
                Err(err) => Response::Failed(format!("cannot encode the admin answer: {err}")),
            }
        })
    }

    /// Ends every admin socket's loop and waits for them (the sockets themselves close with
    /// their sessions).
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// `clusterchat admin-hash`: the bcrypt hash of a password, for `admin.password_hash`.
pub fn hash_password(password: &str) -> Result<String, String> {
    if password.is_empty() {
        return Err("the password is empty".into());
    }
    bcrypt::hash(password, HASH_COST).map_err(|e| e.to_string())
}

/// The bcrypt cost of `clusterchat admin-hash` (the reference's examples use 10: a check
/// takes tens of milliseconds).
const HASH_COST: u32 = 10;

#[cfg(test)]
mod tests {
    use super::*;

    fn admin() -> Arc<Admin> {
        let settings = AdminSettings { password_hash: bcrypt::hash("pw", 4).unwrap(), ..AdminSettings::default() };
        Admin::new(settings, "n1".into()).unwrap()
    }

    #[tokio::test]
    async fn peers_get_a_clear_refusal_never_a_panic() {
        let admin = admin();
        for body in ["", "garbage", "{\"Snapshot\":{}}", "[1,2]", "{\"Command\":{\"Join\":{}}}"] {
            let Response::Admin(text) = admin.on_peer_request(body.into()).await else { panic!("{body}") };
            assert!(text.contains("Refused"), "{body}: {text}");
        }
        // Well-formed, but this admin has no server (yet, or any more).
        let body = serde_json::to_string(&AdminRequest::Snapshot { max_sockets: 5 }).unwrap();
        let Response::Admin(text) = admin.on_peer_request(body).await else { panic!() };
        assert!(text.contains("stopping"), "{text}");
    }

    #[test]
    fn ui_slots_are_bounded_and_given_back() {
        let count = Arc::new(AtomicUsize::new(0));
        let a = UiSlot::take(&count, 2).unwrap();
        let _b = UiSlot::take(&count, 2).unwrap();
        assert!(UiSlot::take(&count, 2).is_none());
        drop(a);
        assert!(UiSlot::take(&count, 2).is_some());
    }

    #[test]
    fn read_only_offers_no_command() {
        let mut settings = AdminSettings { password_hash: bcrypt::hash("pw", 4).unwrap(), ..AdminSettings::default() };
        settings.read_only = true;
        assert_eq!(Admin::new(settings, "n1".into()).unwrap().features(), ["ALL_EVENTS"]);
        assert!(admin().features().contains(&"DISCONNECT"));
    }
}
