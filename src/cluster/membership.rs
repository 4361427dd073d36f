//! Membership: this node's place in the chitchat gossip ring, and a snapshot of the live
//! members with what they advertise (HTTP and RPC addresses, readiness).
//!
//! Gossip keys (all ASCII, values short): `http`, `rpc`, `ready` (`1` while the node takes new
//! sessions). Chitchat's failure detector decides liveness; a restarted node joins with a new
//! generation id, so the ring never confuses it with its previous life.
//!
//! An observer (`clusterchat inspect`) joins the ring advertising nothing. Only nodes that
//! advertise an `rpc` address are members: an observer owns no session, has no rooms, is never
//! pushed to, and its coming and going changes no node's membership.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chitchat::{spawn_chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, NodeState};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use super::gossip_transport::{GossipRejections, GossipTraffic, SecureTransport};
use super::gossip_wire::canonical;
use crate::keyring::Keyring;
use crate::tasks::Tasks;

pub const KEY_HTTP: &str = "http";
pub const KEY_RPC: &str = "rpc";
pub const KEY_READY: &str = "ready";
/// Prefix of the keys naming rooms with local members: `room:<base64url(nsp LF room)>`.
/// Room names may be any Unicode, and a gossip key must start with an ASCII character.
pub const ROOM_PREFIX: &str = "room:";

pub fn room_key(nsp: &str, room: &str) -> String {
    use base64::Engine as _;
    format!("{ROOM_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{nsp}\n{room}")))
}

/// The longest [`room_key`] of a room named with at most `chars` characters in namespace
/// `nsp` (a character is at most 4 bytes of UTF-8; base64 makes 4 of every 3).
pub fn longest_room_key(nsp: &str, chars: usize) -> usize {
    let bytes = nsp.len() + 1 + 4 * chars;
    ROOM_PREFIX.len() + (4 * bytes).div_ceil(3)
}

pub fn decode_room_key(key: &str) -> Option<(String, String)> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(key.strip_prefix(ROOM_PREFIX)?).ok()?;
    let (nsp, room) = String::from_utf8(bytes).ok()?.split_once('\n').map(|(n, r)| (n.to_owned(), r.to_owned()))?;
    Some((nsp, room))
}

/// A node's advertised rooms: see [`MemberInfo::rooms`].
pub type RoomSet = imbl::OrdSet<(String, String)>;

/// Gossip settings.
#[derive(Debug, Clone)]
pub struct GossipConfig {
    pub node_id: String,
    pub cluster_id: String,
    pub listen: SocketAddr,
    /// The socket already bound at `listen`, if the caller bound it (to learn the port the
    /// OS chose for port 0); otherwise the transport binds `listen`.
    pub socket: Option<Arc<std::net::UdpSocket>>,
    /// The address peers send to (the listen address unless it is `0.0.0.0`, `[::]` or
    /// behind NAT).
    pub advertise: SocketAddr,
    /// Host names are resolved again every gossip round (chitchat does), so a seed list of
    /// DNS names, such as a Kubernetes headless service, follows the hosts behind it.
    pub seeds: Vec<String>,
    pub interval: Duration,
    pub phi_threshold: f64,
    /// How long a ready member counted dead is still counted (see `cluster.member_grace_ms`).
    pub member_grace: Duration,
    /// Chitchat's protocol V1 (compressed digests) rather than V0 (see
    /// `cluster.gossip_compress_digest`).
    pub compress_digest: bool,
    /// How long a deleted key stays as a tombstone (see `cluster.gossip_tombstone_ms`).
    pub tombstone_grace: Duration,
    /// Seals and checks every datagram.
    pub keyring: Keyring,
    /// How far a datagram's send time may be from the receiver's clock.
    pub max_clock_skew: Duration,
}

/// What one live member advertises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    pub node_id: String,
    pub generation: u64,
    pub gossip: SocketAddr,
    pub http: Option<SocketAddr>,
    pub rpc: Option<SocketAddr>,
    pub ready: bool,
    pub heartbeat: u64,
    /// Rooms with local members on that node, as `(namespace, room)`, from its `room:` keys.
    /// A persistent set: when the node's keys change, only the keys newer than the last
    /// snapshot are decoded into a copy that shares the rest, and a consumer that kept the
    /// previous snapshot finds what changed with `diff`, which skips the shared part. So a
    /// snapshot costs in proportion to the rooms that changed, not to the rooms advertised.
    pub rooms: RoomSet,
    /// The node state's version: it grows with every key the node sets or deletes.
    pub version: u64,
}

/// A node as the gossip state knows it, whether the failure detector deems it live or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownNode {
    pub info: MemberInfo,
    pub live: bool,
}

impl MemberInfo {
    /// A member with RPC at a placeholder address and no rooms, for tests of what reads
    /// membership snapshots.
    #[cfg(test)]
    pub fn for_test(id: &str, generation: u64, ready: bool) -> Self {
        let addr = "127.0.0.1:1".parse().expect("an address");
        Self {
            node_id: id.into(),
            generation,
            gossip: addr,
            http: Some(addr),
            rpc: Some(addr),
            ready,
            heartbeat: 0,
            rooms: Default::default(),
            version: 0,
        }
    }

    /// Where to dial the node's RPC in this life (`None` for observers).
    pub fn dial(&self) -> Option<crate::rpc::peers::PeerAt> {
        self.rpc.map(|addr| crate::rpc::peers::PeerAt { addr, generation: self.generation })
    }

    /// Whether the node is a member at all: observers advertise no RPC address.
    fn is_member(&self) -> bool {
        self.rpc.is_some()
    }

    fn from_state(id: &ChitchatId, state: &NodeState) -> Self {
        Self {
            rooms: state.key_values().filter_map(|(k, _)| decode_room_key(k)).collect(),
            ..Self::from_state_without_rooms(id, state)
        }
    }

    /// The node's info now, from `previous` (its info at the last change) where it can be:
    /// the same if no key changed, with the new heartbeat; else with only the room keys
    /// newer than `previous` applied (a deleted key is still there, as a tombstone, newer
    /// than any snapshot that saw it set). Decoded afresh when that cannot be trusted: a new
    /// generation, or tombstones newer than `previous` already collected (or a reset of the
    /// node's state, which chitchat marks the same way).
    fn from_state_since(id: &ChitchatId, state: &NodeState, previous: Option<&MemberInfo>) -> Self {
        let Some(p) = previous.filter(|p| p.generation == id.generation_id && state.last_gc_version() <= p.version)
        else {
            return Self::from_state(id, state);
        };
        if p.version == state.max_version() {
            return MemberInfo { heartbeat: u64::from(state.heartbeat()), ..p.clone() };
        }
        let mut rooms = p.rooms.clone();
        let newer = state.key_values_including_deleted().filter(|(_, v)| v.version > p.version);
        for (key, value) in newer {
            let Some(room) = decode_room_key(key) else { continue };
            if value.is_deleted() {
                rooms.remove(&room);
            } else {
                rooms.insert(room);
            }
        }
        MemberInfo { rooms, ..Self::from_state_without_rooms(id, state) }
    }

    fn from_state_without_rooms(id: &ChitchatId, state: &NodeState) -> Self {
        Self {
            node_id: id.node_id.to_string(),
            generation: id.generation_id,
            gossip: id.gossip_advertise_addr,
            http: state.get(KEY_HTTP).and_then(|v| v.parse().ok()),
            rpc: state.get(KEY_RPC).and_then(|v| v.parse().ok()),
            ready: state.get(KEY_READY) == Some("1"),
            heartbeat: u64::from(state.heartbeat()),
            rooms: RoomSet::new(),
            version: state.max_version(),
        }
    }
}

/// The live members, by node id. If a node id appears with two generations (a restart not
/// yet noticed as a death), the newest generation wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Members {
    pub nodes: BTreeMap<String, MemberInfo>,
}

impl Members {
    pub fn get(&self, node_id: &str) -> Option<&MemberInfo> {
        self.nodes.get(node_id)
    }

    /// Equal but for heartbeats. The live-node watcher also wakes when an observer comes or
    /// goes; that, with the heartbeats it carries, is no membership change. Rooms are
    /// compared by the node state's version (its keys are those of that version), not one
    /// by one.
    fn same_as(&self, other: &Members) -> bool {
        fn key(m: &MemberInfo) -> (&str, u64, SocketAddr, Option<SocketAddr>, Option<SocketAddr>, bool, u64) {
            (&m.node_id, m.generation, m.gossip, m.http, m.rpc, m.ready, m.version)
        }
        self.nodes.len() == other.nodes.len()
            && self.nodes.values().zip(other.nodes.values()).all(|(a, b)| key(a) == key(b))
    }

    /// Node ids of the members that take new sessions and can be reached by RPC.
    pub fn ready(&self) -> impl Iterator<Item = &str> {
        self.nodes.values().filter(|m| m.ready && m.rpc.is_some()).map(|m| m.node_id.as_str())
    }
}

pub struct Membership {
    handle: tokio::sync::Mutex<Option<ChitchatHandle>>,
    chitchat: Arc<tokio::sync::Mutex<chitchat::Chitchat>>,
    members: watch::Receiver<Arc<Members>>,
    /// The members watcher and the gossip task's watcher; stopped by [`Membership::shutdown`].
    tasks: Tasks,
    rejections: Arc<GossipRejections>,
    traffic: Arc<GossipTraffic>,
    /// Why the gossip task ended, if it did while the node was not leaving: the node is then
    /// out of the ring while its peers count it dead, so it must stop serving.
    failure: watch::Receiver<Option<String>>,
}

impl Membership {
    /// Joins the ring, advertising `http` and `rpc`. Not ready until [`Membership::set_ready`].
    pub async fn start(config: GossipConfig, http: SocketAddr, rpc: SocketAddr) -> anyhow::Result<Self> {
        Self::join(config, vec![(KEY_HTTP.to_owned(), http.to_string()), (KEY_RPC.to_owned(), rpc.to_string())]).await
    }

    /// Joins the ring as an observer: it hears the gossip but advertises no key, so it never
    /// becomes a member (see the module doc).
    pub async fn observe(config: GossipConfig) -> anyhow::Result<Self> {
        Self::join(config, Vec::new()).await
    }

    async fn join(config: GossipConfig, initial: Vec<(String, String)>) -> anyhow::Result<Self> {
        // A fresh generation per start: milliseconds since the epoch never repeat for a node.
        let generation = crate::clock::unix_ms();
        let chitchat_id = ChitchatId::new(config.node_id.clone(), generation, config.advertise);
        // In canonical form, as datagrams' addresses are checked (see `gossip_wire::canonical`).
        let mut accepted_to = vec![canonical(config.advertise)];
        if config.listen != config.advertise && !config.listen.ip().is_unspecified() {
            accepted_to.push(canonical(config.listen));
        }
        let rejections = Arc::new(GossipRejections::default());
        let traffic = Arc::new(GossipTraffic::default());
        let transport = SecureTransport {
            bound: config.socket.clone(),
            keyring: config.keyring.clone(),
            me: chitchat_id.clone(),
            accepted_to,
            window: config.max_clock_skew,
            rejections: rejections.clone(),
            traffic: traffic.clone(),
        };
        let chitchat_config = ChitchatConfig {
            chitchat_id,
            cluster_id: config.cluster_id.clone(),
            gossip_interval: config.interval,
            listen_addr: config.listen,
            seed_nodes: config.seeds.clone(),
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: config.phi_threshold,
                // Without this, a new member counts as dead only after the 5 s default.
                initial_interval: config.interval,
                dead_node_grace_period: Duration::from_secs(3600),
                ..FailureDetectorConfig::default()
            },
            marked_for_deletion_grace_period: config.tombstone_grace,
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: if config.compress_digest {
                chitchat::ProtocolVersion::V1
            } else {
                chitchat::ProtocolVersion::V0
            },
        };
        let handle = spawn_chitchat(chitchat_config, initial, &transport).await?;
        let chitchat = handle.chitchat();
        let live = chitchat.lock().await.live_nodes_watcher();
        let (tx, members) = watch::channel(Arc::new(Members::default()));
        let tasks = Tasks::default();
        tasks.spawn(watch_members(live, tx, config.member_grace, tasks.child_token()));
        let (failed, failure) = watch::channel(None);
        tasks.spawn(watch_gossip_task(handle.termination_watcher(), failed, tasks.child_token()));
        info!(gossip = %config.listen, advertise = %config.advertise, seeds = ?config.seeds, generation, "joined the gossip ring");
        Ok(Self {
            handle: tokio::sync::Mutex::new(Some(handle)),
            chitchat,
            members,
            tasks,
            rejections,
            traffic,
            failure,
        })
    }

    /// Datagrams refused before chitchat saw them, by reason.
    pub fn rejections(&self) -> &Arc<GossipRejections> {
        &self.rejections
    }

    /// Bytes and datagrams sent and received on the gossip socket.
    pub fn traffic(&self) -> &Arc<GossipTraffic> {
        &self.traffic
    }

    /// Why the gossip task ended, once it has while the node was not leaving.
    pub fn failure(&self) -> watch::Receiver<Option<String>> {
        self.failure.clone()
    }

    pub fn has_failed(&self) -> bool {
        self.failure.borrow().is_some()
    }

    /// The live members now.
    pub fn members(&self) -> Arc<Members> {
        self.members.borrow().clone()
    }

    /// A receiver that sees every membership change.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Members>> {
        self.members.clone()
    }

    pub async fn set(&self, key: &str, value: &str) {
        self.chitchat.lock().await.self_node_state().set(key, value);
    }

    /// Sets (`Some(value)`) or deletes (`None`) several of this node's keys under one lock, in
    /// the order given.
    pub async fn update(&self, changes: Vec<(String, Option<&'static str>)>) {
        let mut chitchat = self.chitchat.lock().await;
        let state = chitchat.self_node_state();
        for (key, value) in changes {
            match value {
                Some(value) => state.set(key, value),
                None => state.delete(&key),
            }
        }
    }

    pub async fn set_ready(&self, ready: bool) {
        self.set(KEY_READY, if ready { "1" } else { "0" }).await;
    }

    /// Every node the ring knows of, live or dead (for inspection); observers left out.
    pub async fn snapshot(&self) -> Vec<KnownNode> {
        let chitchat = self.chitchat.lock().await;
        let live: std::collections::HashSet<_> = chitchat.live_nodes().cloned().collect();
        chitchat
            .node_states()
            .iter()
            .map(|(id, state)| KnownNode { info: MemberInfo::from_state(id, state), live: live.contains(id) })
            .filter(|node| node.info.is_member())
            .collect()
    }

    /// Leaves the ring.
    pub async fn shutdown(&self) {
        self.tasks.shutdown().await;
        if let Some(handle) = self.handle.lock().await.take() {
            if let Err(err) = handle.shutdown().await {
                tracing::warn!(error = %err, "gossip shutdown failed");
            }
        }
    }
}

/// Reports the end of the gossip task (an error, or a panic inside chitchat) unless the node
/// is leaving.
async fn watch_gossip_task(
    ended: impl std::future::Future<Output = anyhow::Result<()>>,
    failed: watch::Sender<Option<String>>,
    stop: CancellationToken,
) {
    let reason = tokio::select! {
        result = ended => match result {
            Ok(()) => "the gossip task stopped".to_owned(),
            Err(err) => format!("the gossip task failed: {err}"),
        },
        _ = stop.cancelled() => return,
    };
    if stop.is_cancelled() {
        return;
    }
    error!(%reason, "gossip is down: this node is out of the ring and stops serving");
    let _ = failed.send(Some(reason));
}

/// Publishes the members: chitchat's live nodes that advertise RPC, the newest generation of
/// each id, and, for `grace` after the failure detector counts it dead, a member that was
/// ready (see `cluster.member_grace_ms`): if it is heard again by then, nobody saw it go.
async fn watch_members(
    mut live: watch::Receiver<BTreeMap<ChitchatId, NodeState>>,
    tx: watch::Sender<Arc<Members>>,
    grace: Duration,
    stop: CancellationToken,
) {
    // Every live node's info at the last change, observers included, by id and generation.
    let mut known: BTreeMap<ChitchatId, MemberInfo> = BTreeMap::new();
    // Ready members chitchat no longer lists, still counted until then, by node id.
    let mut held: BTreeMap<String, (MemberInfo, tokio::time::Instant)> = BTreeMap::new();
    loop {
        let mut members = {
            let nodes = live.borrow_and_update();
            let mut members = Members::default();
            known.retain(|id, _| nodes.contains_key(id));
            for (id, state) in nodes.iter() {
                let info = MemberInfo::from_state_since(id, state, known.get(id));
                known.insert(id.clone(), info.clone());
                if !info.is_member() {
                    continue;
                }
                let newer = members.nodes.get(&info.node_id).is_none_or(|m| m.generation < info.generation);
                if newer {
                    members.nodes.insert(info.node_id.clone(), info);
                }
            }
            members
        };
        let now = tokio::time::Instant::now();
        if !grace.is_zero() {
            // Who was published as a member the last time, and so whose going would be news.
            let published = tx.borrow().clone();
            for (id, info) in &published.nodes {
                if info.ready && !members.nodes.contains_key(id) && !held.contains_key(id) {
                    info!(node = %id, ?grace, "member counted dead; still a member for the grace");
                    held.insert(id.clone(), (info.clone(), now + grace));
                }
            }
        }
        // Back (this life or a new one), or past the grace: no longer held.
        held.retain(|id, (_, until)| {
            let back = members.nodes.contains_key(id);
            if back {
                info!(node = %id, "member heard again within the grace");
            }
            !back && *until > now
        });
        for (id, (info, _)) in &held {
            members.nodes.insert(id.clone(), info.clone());
        }
        tx.send_if_modified(|current| {
            let changed = !current.same_as(&members);
            if changed {
                // Room subscriptions change all the time; only who is in and who is ready is news.
                let who = |m: &Members| {
                    (m.nodes.keys().cloned().collect::<Vec<_>>(), m.ready().map(str::to_owned).collect::<Vec<_>>())
                };
                if who(current) != who(&members) {
                    let (nodes, ready) = who(&members);
                    info!(members = ?nodes, ?ready, "membership changed");
                }
                *current = Arc::new(members);
            }
            changed
        });
        let until = held.values().map(|(_, until)| *until).min();
        tokio::select! {
            r = live.changed() => if r.is_err() { return },
            _ = tokio::time::sleep_until(until.unwrap_or(now)), if until.is_some() => {}
            _ = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A live-node map as chitchat's watcher gives it: `(id, generation, ready)` each, with
    /// an RPC address (members); `touched` nodes have set one key more (a newer version).
    fn live_map_touched(nodes: &[(&str, u64, bool)], touched: &[&str]) -> BTreeMap<ChitchatId, NodeState> {
        nodes
            .iter()
            .map(|&(id, generation, ready)| {
                let mut state = NodeState::for_test();
                state.set(KEY_RPC, "127.0.0.1:1");
                state.set(KEY_READY, if ready { "1" } else { "0" });
                if touched.contains(&id) {
                    state.set("extra", "1");
                }
                (ChitchatId::new(id.to_owned(), generation, "127.0.0.1:7000".parse().unwrap()), state)
            })
            .collect()
    }

    fn live_map(nodes: &[(&str, u64, bool)]) -> BTreeMap<ChitchatId, NodeState> {
        live_map_touched(nodes, &[])
    }

    fn ids(members: &Members) -> Vec<(String, u64)> {
        members.nodes.values().map(|m| (m.node_id.clone(), m.generation)).collect()
    }

    /// Until the published members are `want`; a failure (not a hang) past `limit`.
    async fn until(members: &mut watch::Receiver<Arc<Members>>, want: &[(String, u64)], limit: Duration) {
        let seen = tokio::time::timeout(limit, members.wait_for(|m| ids(m) == want));
        assert!(seen.await.is_ok(), "members not {want:?} within {limit:?}, last {:?}", ids(&members.borrow()));
    }

    /// A ready member the failure detector counts dead stays a member for the grace: heard
    /// again within it, nobody saw it go (no snapshot was published meanwhile), and what it
    /// says then is published as it says it; silent past it, it goes. A member that was not
    /// ready (leaving) goes at once, and a new generation takes the old one's place at once.
    #[tokio::test(start_paused = true)]
    async fn a_ready_member_counted_dead_stays_for_the_grace() {
        let grace = Duration::from_millis(750);
        // Well within the grace: what must happen "at once".
        let soon = Duration::from_millis(50);
        let (live_tx, live) = watch::channel(live_map(&[("node1", 1, true), ("node2", 1, true), ("node3", 1, false)]));
        let (tx, mut members) = watch::channel(Arc::new(Members::default()));
        let stop = CancellationToken::new();
        tokio::spawn(watch_members(live, tx, grace, stop.clone()));
        let three = vec![("node1".to_owned(), 1), ("node2".to_owned(), 1), ("node3".to_owned(), 1)];
        until(&mut members, &three, soon).await;

        // node2 silent for 500 ms, node3 (not ready) too: node3 goes at once, node2 stays and
        // nothing more is published; back unchanged, still nothing.
        live_tx.send(live_map(&[("node1", 1, true)])).unwrap();
        let two = vec![("node1".to_owned(), 1), ("node2".to_owned(), 1)];
        until(&mut members, &two, soon).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!members.has_changed().unwrap(), "no snapshot without node2 within the grace");
        live_tx.send(live_map(&[("node1", 1, true), ("node2", 1, true)])).unwrap();
        tokio::time::sleep(grace * 2).await;
        assert!(!members.has_changed().unwrap(), "back within the grace: no change published");
        let version = members.borrow_and_update().get("node2").unwrap().version;

        // Silent again, back with a key more: its word as it is now, at once.
        live_tx.send(live_map(&[("node1", 1, true)])).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        live_tx.send(live_map_touched(&[("node1", 1, true), ("node2", 1, true)], &["node2"])).unwrap();
        let newer =
            tokio::time::timeout(soon, members.wait_for(|m| m.get("node2").is_some_and(|n| n.version > version)));
        assert!(newer.await.is_ok(), "node2's newer state is published, not the held one");

        // Silent past the grace: gone, not before.
        live_tx.send(live_map(&[("node1", 1, true)])).unwrap();
        tokio::time::sleep(grace - soon).await;
        assert_eq!(ids(&members.borrow()), two);
        tokio::time::sleep(soon * 2).await;
        assert_eq!(ids(&members.borrow()), [("node1".to_owned(), 1)]);

        // Back, then counted dead and restarted (a new generation) within the grace: the new
        // life at once.
        live_tx.send(live_map(&[("node1", 1, true), ("node2", 1, true)])).unwrap();
        until(&mut members, &two, soon).await;
        live_tx.send(live_map(&[("node1", 1, true)])).unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        live_tx.send(live_map(&[("node1", 1, true), ("node2", 2, true)])).unwrap();
        until(&mut members, &[("node1".to_owned(), 1), ("node2".to_owned(), 2)], soon).await;
        stop.cancel();
    }

    #[test]
    fn room_keys_are_ascii_and_round_trip() {
        for room in ["lobby", "café ☕ 日本", "a\nb", "😀", ""] {
            let key = room_key("/chat", room);
            assert!(key.is_ascii() && key.starts_with(ROOM_PREFIX), "{key}");
            assert_eq!(decode_room_key(&key), Some(("/chat".into(), room.into())));
        }
        assert_eq!(decode_room_key("http"), None);
        assert_eq!(decode_room_key("room:!!"), None);
        // A 64-character room of 4-byte characters still makes a small key.
        assert!(room_key("/chat", &"😀".repeat(64)).len() < 400);
    }

    /// Room sets built from the previous snapshot plus the newer keys equal sets decoded
    /// afresh, through random joins and leaves (deletions seen as tombstones), and the
    /// snapshots share what did not change.
    #[test]
    fn room_sets_follow_key_changes_incrementally() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut state = NodeState::for_test();
        let id = state.chitchat_id().clone();
        state.set(KEY_RPC, "127.0.0.1:1");
        let mut info = MemberInfo::from_state(&id, &state);
        for step in 0..2_000 {
            for _ in 0..rng.random_range(0..4) {
                let key = room_key("/chat", &format!("room {}", rng.random_range(0..300)));
                if rng.random_bool(0.5) {
                    state.set(&key, "1");
                } else {
                    state.delete(&key);
                }
            }
            let next = MemberInfo::from_state_since(&id, &state, Some(&info));
            assert_eq!(next, MemberInfo::from_state(&id, &state), "step {step}");
            if next.version == info.version {
                assert!(next.rooms.ptr_eq(&info.rooms), "an unchanged node's set is the same set");
            }
            info = next;
        }
        assert!(info.rooms.len() > 50, "the walk kept rooms: {}", info.rooms.len());
        let other = ChitchatId { generation_id: 1, ..id.clone() };
        assert_eq!(MemberInfo::from_state_since(&other, &state, Some(&info)), MemberInfo::from_state(&other, &state));
    }

    #[tokio::test]
    async fn a_gossip_task_that_ends_is_reported_unless_the_node_is_leaving() {
        let (tx, mut rx) = watch::channel(None);
        watch_gossip_task(async { Err(anyhow::anyhow!("assertion failed in state.rs")) }, tx, CancellationToken::new())
            .await;
        let reason = rx.wait_for(Option::is_some).await.unwrap().clone().unwrap();
        assert!(reason.contains("state.rs"), "{reason}");

        let (tx, rx) = watch::channel(None);
        let stop = CancellationToken::new();
        stop.cancel();
        watch_gossip_task(std::future::pending(), tx, stop).await;
        assert!(rx.borrow().is_none(), "a node that leaves has not failed");
    }

    #[test]
    fn heartbeats_are_no_membership_change() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let info = MemberInfo {
            node_id: "node1".into(),
            generation: 1,
            gossip: addr,
            http: Some(addr),
            rpc: Some(addr),
            ready: true,
            heartbeat: 5,
            rooms: Default::default(),
            version: 3,
        };
        let members = |info: MemberInfo| Members { nodes: [(info.node_id.clone(), info)].into() };
        let a = members(info.clone());
        assert!(a.same_as(&members(MemberInfo { heartbeat: 9, ..info.clone() })));
        assert!(!a.same_as(&members(MemberInfo { ready: false, ..info.clone() })));
        assert!(!a.same_as(&Members::default()));
        assert!(!MemberInfo { rpc: None, ..info }.is_member(), "an observer advertises no RPC address");
    }
}
