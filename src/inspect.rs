//! `clusterchat inspect`: the cluster's gossip state as an operator sees it — members, each
//! node's room subscriber table, and who owns a given session or room.
//!
//! The inspector joins the ring as an observer (see `cluster::membership`): a chitchat node of
//! its own id and a fresh generation that advertises nothing, so no node ever counts it as a
//! member, places anything on it or pushes to it, and its leaving changes nothing. The report is
//! built by a pure function from a snapshot of the gossip state, which keeps its shape testable
//! without a network.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::cluster::membership::{GossipConfig, KnownNode, Members, Membership};
use crate::cluster::rooms::room_owner;
use crate::cluster::router::sid_owner;
use crate::config::ClusterSettings;
use crate::keyring::Keyring;

/// How long the inspector waits for a seed to answer, and then for the view to settle.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(5);
/// Consecutive identical snapshots (one per gossip interval) after which the view is settled:
/// members that became live a round after the first stay in the report.
const SETTLED_ROUNDS: u32 = 3;

/// What to inspect and how to reach the ring.
#[derive(Debug, Clone)]
pub struct InspectConfig {
    /// Gossip addresses of members (`host:port`).
    pub seeds: Vec<String>,
    pub cluster_id: String,
    /// The observer's gossip address, advertised to the ring; port 0 picks a free port.
    pub listen: SocketAddr,
    pub interval: Duration,
    pub wait: Duration,
    pub query: Query,
    /// The cluster's keys: gossip is sealed, so an observer needs the secret too.
    pub keyring: Keyring,
}

impl InspectConfig {
    /// The cluster defaults (cluster id, gossip interval), a local ephemeral port, [`DEFAULT_WAIT`].
    pub fn new(seeds: Vec<String>, keyring: Keyring) -> Self {
        let defaults = ClusterSettings::default();
        Self {
            keyring,
            seeds,
            cluster_id: defaults.cluster_id,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            interval: Duration::from_millis(defaults.gossip_interval_ms),
            wait: DEFAULT_WAIT,
            query: Query::default(),
        }
    }
}

/// The optional questions of a report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// Which node owns this session id.
    pub sid: Option<String>,
    /// Which node owns this room, as `(namespace, room)`, and which nodes have its members.
    pub room: Option<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aligned tables for people.
    Text,
    /// One JSON document per report, on one line.
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error(
        "no seed answered within {waited:?} (seeds {seeds:?}, cluster id {cluster_id:?}): \
         is the cluster running, and are the gossip addresses and the cluster id right?"
    )]
    NoAnswer { seeds: Vec<String>, cluster_id: String, waited: Duration },
    #[error("--listen {0}: the observer advertises this address, so it must be one the nodes can reach")]
    Unreachable(SocketAddr),
    #[error("cannot pick a gossip port on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot join the gossip ring: {0}")]
    Gossip(anyhow::Error),
    #[error("cannot write the report: {0}")]
    Output(#[from] std::io::Error),
}

/// What the inspector reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub cluster_id: String,
    /// Every node the gossip state knows, live or dead, by node id then generation.
    pub members: Vec<NodeReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<SidReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room: Option<RoomReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeReport {
    pub node_id: String,
    pub generation: u64,
    pub gossip: SocketAddr,
    pub http: Option<SocketAddr>,
    pub rpc: Option<SocketAddr>,
    /// Live according to the observer's failure detector.
    pub live: bool,
    /// Advertises `ready=1` (takes new sessions).
    pub ready: bool,
    pub heartbeat: u64,
    /// Rooms with local members on that node: its subscriber table.
    pub rooms: Vec<RoomRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct RoomRef {
    pub nsp: String,
    pub room: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SidReport {
    pub sid: String,
    /// The node the sid names; `None` if it names none (not a clusterchat sid).
    pub owner: Option<String>,
    /// Whether that node is a live member (if not, requests for the sid get "Session ID unknown").
    pub owner_live: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoomReport {
    pub nsp: String,
    pub room: String,
    /// The rendezvous owner among the ready live members (see `cluster::rooms::room_owner`).
    pub owner: Option<String>,
    /// Live members with local members of the room.
    pub subscribers: Vec<String>,
}

impl Report {
    /// Builds the report from the gossip state (`nodes`) and the live members.
    pub fn build(cluster_id: &str, nodes: &[KnownNode], members: &Members, query: &Query) -> Self {
        let mut list: Vec<NodeReport> = nodes
            .iter()
            .map(|n| NodeReport {
                node_id: n.info.node_id.clone(),
                generation: n.info.generation,
                gossip: n.info.gossip,
                http: n.info.http,
                rpc: n.info.rpc,
                live: n.live,
                ready: n.info.ready,
                heartbeat: n.info.heartbeat,
                rooms: n
                    .info
                    .rooms
                    .iter()
                    .map(|(nsp, room)| RoomRef { nsp: nsp.clone(), room: room.clone() })
                    .collect(),
            })
            .collect();
        list.sort_by(|a, b| (&a.node_id, a.generation).cmp(&(&b.node_id, b.generation)));
        let sid = query.sid.as_ref().map(|sid| {
            let owner = sid_owner(sid).map(str::to_owned);
            let owner_live = owner.as_deref().is_some_and(|o| members.get(o).is_some());
            SidReport { sid: sid.clone(), owner, owner_live }
        });
        let room = query.room.as_ref().map(|(nsp, room)| {
            let id = (nsp.clone(), room.clone());
            RoomReport {
                nsp: nsp.clone(),
                room: room.clone(),
                owner: room_owner(members, nsp, room),
                subscribers: members
                    .nodes
                    .values()
                    .filter(|m| m.rooms.contains(&id))
                    .map(|m| m.node_id.clone())
                    .collect(),
            }
        });
        Self { cluster_id: cluster_id.to_owned(), members: list, sid, room }
    }

    /// Whether any member answers.
    fn heard(&self) -> bool {
        self.members.iter().any(|m| m.live)
    }

    /// Equal but for heartbeats, which tick every gossip round and are no news in a watch.
    pub fn same_state(&self, other: &Report) -> bool {
        let beatless = |r: &Report| {
            let mut r = r.clone();
            r.members.iter_mut().for_each(|m| m.heartbeat = 0);
            r
        };
        beatless(self) == beatless(other)
    }

    pub fn render(&self, format: Format) -> String {
        match format {
            // Serializing plain strings, numbers and addresses cannot fail.
            Format::Json => serde_json::to_string(self).unwrap_or_default() + "\n",
            Format::Text => self.render_text(),
        }
    }

    fn render_text(&self) -> String {
        let live = self.members.iter().filter(|m| m.live).count();
        let mut out = format!("cluster {:?}: {live} live, {} dead\n\n", self.cluster_id, self.members.len() - live);
        let addr = |a: Option<SocketAddr>| a.map_or_else(|| "-".to_owned(), |a| a.to_string());
        let rows: Vec<Vec<String>> = self
            .members
            .iter()
            .map(|m| {
                vec![
                    m.node_id.clone(),
                    m.generation.to_string(),
                    (if m.live { "live" } else { "dead" }).to_owned(),
                    (if m.ready { "yes" } else { "no" }).to_owned(),
                    m.heartbeat.to_string(),
                    m.gossip.to_string(),
                    addr(m.http),
                    addr(m.rpc),
                ]
            })
            .collect();
        out += &table(&["NODE", "GENERATION", "STATE", "READY", "HEARTBEAT", "GOSSIP", "HTTP", "RPC"], &rows);
        out.push('\n');
        let rows: Vec<Vec<String>> = self
            .members
            .iter()
            .flat_map(|m| m.rooms.iter().map(|r| vec![m.node_id.clone(), printable(&r.nsp), printable(&r.room)]))
            .collect();
        if rows.is_empty() {
            out += "no node has room members\n";
        } else {
            out += &table(&["NODE", "NAMESPACE", "ROOM"], &rows);
        }
        if let Some(s) = &self.sid {
            out += &match &s.owner {
                Some(owner) => format!(
                    "\nsession {}: owned by {owner} ({})\n",
                    printable(&s.sid),
                    if s.owner_live { "a live member" } else { "not a live member: the session is gone" }
                ),
                None => format!("\nsession {}: names no owner (not a clusterchat sid)\n", printable(&s.sid)),
            };
        }
        if let Some(r) = &self.room {
            let owner = r.owner.as_deref().unwrap_or("nobody (no ready live member)");
            let subscribers = if r.subscribers.is_empty() { "none".to_owned() } else { r.subscribers.join(", ") };
            out += &format!(
                "\nroom {} {}: owned by {owner}; nodes with members: {subscribers}\n",
                printable(&r.nsp),
                printable(&r.room)
            );
        }
        out
    }
}

/// Room names and sids come from clients: escaped, they cannot break a line or a terminal.
fn printable(s: &str) -> String {
    s.escape_debug().to_string()
}

/// Left-aligned columns two spaces apart, header first.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out += cells.join("  ").trim_end();
        out.push('\n');
    }
    out
}

/// The inspector's place in the ring.
pub struct Observer {
    membership: Membership,
    cluster_id: String,
    interval: Duration,
}

impl Observer {
    /// Joins the ring through `config.seeds` under a fresh id, `inspect-<pid>-<random>`.
    pub async fn join(config: &InspectConfig) -> Result<Self, InspectError> {
        let (socket, listen) = gossip_socket(config.listen)?;
        let gossip = GossipConfig {
            node_id: format!("inspect-{}-{:08x}", std::process::id(), rand::random::<u32>()),
            cluster_id: config.cluster_id.clone(),
            listen,
            socket: Some(std::sync::Arc::new(socket)),
            advertise: listen,
            seeds: config.seeds.clone(),
            interval: config.interval,
            phi_threshold: ClusterSettings::default().phi_threshold,
            // An observer reports chitchat's view as it is.
            member_grace: Duration::ZERO,
            compress_digest: ClusterSettings::default().gossip_compress_digest,
            tombstone_grace: Duration::from_millis(ClusterSettings::default().gossip_tombstone_ms),
            keyring: config.keyring.clone(),
            max_clock_skew: Duration::from_millis(ClusterSettings::default().gossip_max_clock_skew_ms),
        };
        let membership = Membership::observe(gossip).await.map_err(InspectError::Gossip)?;
        Ok(Self { membership, cluster_id: config.cluster_id.clone(), interval: config.interval })
    }

    pub async fn report(&self, query: &Query) -> Report {
        let nodes = self.membership.snapshot().await;
        Report::build(&self.cluster_id, &nodes, &self.membership.members(), query)
    }

    /// Waits, at most `wait`, for a member to answer, then, at most `wait` again, for the view
    /// to stop changing; returns the settled report (or the last one, if it never settles).
    pub async fn settle(&self, config: &InspectConfig) -> Result<Report, InspectError> {
        let mut deadline = Instant::now() + config.wait;
        let mut ticks = tokio::time::interval(self.interval);
        let mut last: Option<Report> = None;
        let mut same = 0;
        loop {
            ticks.tick().await;
            let report = self.report(&config.query).await;
            if report.heard() {
                match &last {
                    Some(previous) if previous.heard() && previous.same_state(&report) => same += 1,
                    Some(previous) if previous.heard() => same = 0,
                    // First contact: give the view its own time to settle.
                    _ => deadline = Instant::now() + config.wait,
                }
                if same >= SETTLED_ROUNDS || Instant::now() >= deadline {
                    return Ok(report);
                }
            } else if Instant::now() >= deadline {
                return Err(InspectError::NoAnswer {
                    seeds: config.seeds.clone(),
                    cluster_id: config.cluster_id.clone(),
                    waited: config.wait,
                });
            }
            last = Some(report);
        }
    }

    /// Leaves the ring. The members never counted the observer, so they notice nothing.
    pub async fn leave(self) {
        self.membership.shutdown().await;
    }
}

/// The socket the observer gossips on and the address it advertises (the port the OS chose, if
/// `listen` has port 0: chitchat advertises its listen address, so it is bound first).
fn gossip_socket(listen: SocketAddr) -> Result<(std::net::UdpSocket, SocketAddr), InspectError> {
    if listen.ip().is_unspecified() {
        return Err(InspectError::Unreachable(listen));
    }
    let socket = std::net::UdpSocket::bind(listen).map_err(|source| InspectError::Bind { addr: listen, source })?;
    let addr = socket.local_addr().map_err(|source| InspectError::Bind { addr: listen, source })?;
    Ok((socket, addr))
}

/// Joins the ring, prints the settled report to `out` — with `watch`, then every change until
/// `stop` resolves — and leaves the ring, whatever happened.
pub async fn run(
    config: InspectConfig,
    format: Format,
    watch: bool,
    out: &mut (dyn Write + Send),
    stop: impl Future<Output = ()>,
) -> Result<(), InspectError> {
    let observer = Observer::join(&config).await?;
    let result = tokio::select! {
        r = report_loop(&observer, &config, format, watch, out) => r,
        () = stop => Ok(()),
    };
    observer.leave().await;
    result
}

async fn report_loop(
    observer: &Observer,
    config: &InspectConfig,
    format: Format,
    watch: bool,
    out: &mut (dyn Write + Send),
) -> Result<(), InspectError> {
    let mut shown = observer.settle(config).await?;
    write_report(out, &shown, format)?;
    if !watch {
        return Ok(());
    }
    let mut ticks = tokio::time::interval(config.interval);
    loop {
        ticks.tick().await;
        let report = observer.report(&config.query).await;
        if !report.same_state(&shown) {
            if format == Format::Text {
                out.write_all(b"\n")?;
            }
            write_report(out, &report, format)?;
            shown = report;
        }
    }
}

fn write_report(out: &mut (dyn Write + Send), report: &Report, format: Format) -> Result<(), InspectError> {
    out.write_all(report.render(format).as_bytes())?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::cluster::membership::MemberInfo;

    fn node(id: &str, generation: u64, live: bool, ready: bool, rooms: &[&str]) -> KnownNode {
        let port = 7000 + generation as u16;
        KnownNode {
            info: MemberInfo {
                node_id: id.into(),
                generation,
                gossip: SocketAddr::from(([127, 0, 0, 1], port)),
                http: Some(SocketAddr::from(([127, 0, 0, 1], port + 2000))),
                rpc: Some(SocketAddr::from(([127, 0, 0, 1], port + 1000))),
                ready,
                heartbeat: 42,
                rooms: rooms.iter().map(|r| ("/chat".to_owned(), (*r).to_owned())).collect(),
                version: 1,
            },
            live,
        }
    }

    /// A ring of node1 (ready, in lobby), node2 (ready, in lobby and "a b\n"), node3 (not
    /// ready), and a dead earlier generation of node2.
    fn ring() -> (Vec<KnownNode>, Members) {
        let nodes = vec![
            node("node2", 2, true, true, &["lobby", "a b\n"]),
            node("node1", 1, true, true, &["lobby"]),
            node("node2", 0, false, true, &["old"]),
            node("node3", 3, true, false, &[]),
        ];
        let mut members = Members::default();
        for n in nodes.iter().filter(|n| n.live) {
            members.nodes.insert(n.info.node_id.clone(), n.info.clone());
        }
        (nodes, members)
    }

    #[test]
    fn the_report_lists_every_node_and_answers_the_query() {
        let (nodes, members) = ring();
        let query = Query { sid: Some("abc.node2".into()), room: Some(("/chat".into(), "lobby".into())) };
        let r = Report::build("clusterchat", &nodes, &members, &query);
        let ids: Vec<_> = r.members.iter().map(|m| (m.node_id.as_str(), m.generation, m.live)).collect();
        assert_eq!(ids, [("node1", 1, true), ("node2", 0, false), ("node2", 2, true), ("node3", 3, true)]);
        assert_eq!(r.sid, Some(SidReport { sid: "abc.node2".into(), owner: Some("node2".into()), owner_live: true }));
        let room = r.room.expect("room report");
        assert_eq!(room.subscribers, ["node1", "node2"]);
        assert_eq!(room.owner, room_owner(&members, "/chat", "lobby"));
        assert!(matches!(room.owner.as_deref(), Some("node1" | "node2")), "node3 is not ready");

        let gone = Query { sid: Some("abc.node9".into()), room: None };
        let r = Report::build("clusterchat", &nodes, &members, &gone);
        assert_eq!(r.sid.as_ref().map(|s| s.owner_live), Some(false));
        let r = Report::build("clusterchat", &nodes, &members, &Query { sid: Some("nodot".into()), room: None });
        assert_eq!(r.sid.and_then(|s| s.owner), None);
    }

    #[test]
    fn heartbeats_alone_are_no_change() {
        let (nodes, members) = ring();
        let a = Report::build("c", &nodes, &members, &Query::default());
        let mut b = a.clone();
        b.members[0].heartbeat += 10;
        assert!(a.same_state(&b));
        b.members[0].ready = false;
        assert!(!a.same_state(&b));
    }

    #[test]
    fn text_is_aligned_and_escapes_room_names() {
        let (nodes, members) = ring();
        let text = Report::build("c", &nodes, &members, &Query::default()).render(Format::Text);
        let table: Vec<&str> = text.lines().skip(2).take(5).collect();
        assert!(table[0].starts_with("NODE   GENERATION  STATE  READY  HEARTBEAT  GOSSIP"), "{text}");
        let column = table[0].find("STATE").unwrap();
        assert!(
            table.iter().all(|l| l[column..].starts_with("live")
                || l[column..].starts_with("dead")
                || l[column..].starts_with("STATE")),
            "{text}"
        );
        assert!(text.contains(r"a b\n"), "{text}");
        assert!(!text.contains("a b\n"), "a room name cannot break a line: {text}");
    }

    #[test]
    fn json_is_one_line() {
        let (nodes, members) = ring();
        let json = Report::build("c", &nodes, &members, &Query::default()).render(Format::Json);
        assert_eq!(json.lines().count(), 1);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["members"][0]["rpc"], "127.0.0.1:8001");
        assert_eq!(v["members"][2]["rooms"][0], serde_json::json!({"nsp": "/chat", "room": "a b\n"}));
        assert!(v.get("sid").is_none() && v.get("room").is_none());
    }

    #[test]
    fn the_observer_address_must_be_reachable() {
        assert!(matches!(gossip_socket("0.0.0.0:0".parse().unwrap()), Err(InspectError::Unreachable(_))));
        let (socket, picked) = gossip_socket("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_ne!(picked.port(), 0);
        assert_eq!(socket.local_addr().unwrap(), picked, "the socket bound is the one advertised");
    }
}
