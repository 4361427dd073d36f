//! One node's Prometheus metrics, served at `GET /metrics` in the Prometheus text format.
//!
//! Events nothing else counts (requests received, requests forwarded and their RPC latency)
//! are counted here. Numbers the node already keeps (open sessions, members, room traffic and
//! drops counted by `ClusterRooms`, the engine and the namespaces) are read from their owner at
//! scrape time, so each number has one source. A `Metrics` belongs to its node, not to the
//! process: tests run several nodes in one process.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::cluster::gossip_wire::Reject;
use crate::cluster::history::ClusterHistory;
use crate::cluster::membership::Membership;
use crate::cluster::rooms::ClusterRooms;
use crate::engineio::{Engine, EngineRequest, Method};
use crate::history::HistoryStore;
use crate::rpc::stats::RpcStats;
use crate::socketio::Namespace;

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// What a client asked for, as the router sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// A polling request opening a session.
    Handshake,
    /// A polling GET of a session.
    Poll,
    /// A polling POST of a session.
    Push,
    /// A WebSocket, new or upgrading a session.
    Websocket,
}

impl RequestKind {
    /// The kind of a polling request.
    pub fn of(req: &EngineRequest) -> Self {
        match (&req.query.sid, req.method) {
            (None, _) => Self::Handshake,
            (Some(_), Method::Get) => Self::Poll,
            (Some(_), _) => Self::Push,
        }
    }

    fn label(self) -> [(&'static str, &'static str); 1] {
        let kind = match self {
            Self::Handshake => "handshake",
            Self::Poll => "poll",
            Self::Push => "push",
            Self::Websocket => "websocket",
        };
        [("kind", kind)]
    }
}

/// Why the HTTP layer turned a client away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Over `max_connections`.
    Connections,
    /// Over `max_connections_per_address`.
    ConnectionsPerAddress,
    /// A request body slower than `body_timeout_ms`.
    BodyTimeout,
    /// A browser origin not in `allowed_origins`.
    Origin,
}

impl Refusal {
    fn label(self) -> [(&'static str, &'static str); 1] {
        let reason = match self {
            Self::Connections => "connections",
            Self::ConnectionsPerAddress => "connections_per_address",
            Self::BodyTimeout => "body_timeout",
            Self::Origin => "origin",
        };
        [("reason", reason)]
    }
}

type ByKind<M> = Family<[(&'static str, &'static str); 1], M>;
type HistogramByKind = Family<[(&'static str, &'static str); 1], Histogram, fn() -> Histogram>;

/// Where the scrape-time numbers come from.
pub struct Sources {
    pub engine: Arc<Engine>,
    pub namespaces: Vec<Arc<Namespace>>,
    /// This node's copies of room histories; absent with history off.
    pub history: Option<Arc<HistoryStore>>,
    /// Absent on a node running alone.
    pub cluster: Option<ClusterSources>,
}

/// A cluster member's own sources.
pub struct ClusterSources {
    pub membership: Arc<Membership>,
    pub rooms: Arc<ClusterRooms>,
    pub history: Option<Arc<ClusterHistory>>,
    pub rpc: Arc<RpcStats>,
}

pub struct Metrics {
    registry: Registry,
    received: ByKind<Counter>,
    forwarded: ByKind<Counter>,
    rpc_seconds: HistogramByKind,
    refused: ByKind<Counter>,
}

/// RPC latency buckets: 1 ms to about 65 s, since a forwarded long-poll lasts up to the ping
/// interval (25 s by default).
fn rpc_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

impl Metrics {
    pub fn new(sources: Sources) -> Arc<Self> {
        let mut registry = Registry::with_prefix("clusterchat");
        let received = ByKind::<Counter>::default();
        let forwarded = ByKind::<Counter>::default();
        let rpc_seconds = HistogramByKind::new_with_constructor(rpc_histogram);
        registry.register("requests_received", "Engine.IO requests received over HTTP, by kind", received.clone());
        registry.register(
            "requests_forwarded",
            "Requests forwarded to their session's owner over the RPC, by kind",
            forwarded.clone(),
        );
        registry.register(
            "rpc_call_seconds",
            "Latency of forwarded requests' RPC calls (a long-poll waits up to the ping interval)",
            rpc_seconds.clone(),
        );
        let refused = ByKind::<Counter>::default();
        registry.register("refused", "Connections and requests the HTTP layer refused, by reason", refused.clone());
        registry.register_collector(Box::new(Scraped(sources)));
        Arc::new(Self { registry, received, forwarded, rpc_seconds, refused })
    }

    /// An Engine.IO request arrived over HTTP.
    pub fn received(&self, kind: RequestKind) {
        self.received.get_or_create(&kind.label()).inc();
    }

    /// A request was forwarded to its owner; `elapsed` is the RPC call's time, if it had one
    /// (a WebSocket relay is a stream, not a call).
    pub fn forwarded(&self, kind: RequestKind, elapsed: Option<Duration>) {
        self.forwarded.get_or_create(&kind.label()).inc();
        if let Some(elapsed) = elapsed {
            self.rpc_seconds.get_or_create(&kind.label()).observe(elapsed.as_secs_f64());
        }
    }

    /// The HTTP layer refused a connection or a request.
    pub fn refused(&self, reason: Refusal) {
        self.refused.get_or_create(&reason.label()).inc();
    }

    /// Every metric, in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail, and every value encodes.
        if let Err(err) = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %err, "metrics encoding failed");
        }
        out
    }
}

/// The numbers read from their owners at each scrape. Help texts end with a period, as the
/// registry makes those of registered metrics end.
struct Scraped(Sources);

impl std::fmt::Debug for Scraped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scraped")
    }
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> std::fmt::Result {
    let g = ConstGauge::new(value);
    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
}

fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> std::fmt::Result {
    let c = ConstCounter::new(value);
    c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)
}

/// One metric with a sample per value of the label `key`.
fn labeled<'a, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    key: &str,
    samples: impl IntoIterator<Item = (&'a str, M)>,
) -> std::fmt::Result {
    let mut samples = samples.into_iter().peekable();
    let Some(metric_type) = samples.peek().map(|(_, m)| m.metric_type()) else { return Ok(()) };
    let mut family = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (value, metric) in samples {
        metric.encode(family.encode_family(&[(key, value)])?)?;
    }
    Ok(())
}

impl Collector for Scraped {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let Sources { engine, namespaces, history, cluster } = &self.0;
        if let Some(store) = history {
            gauge(
                &mut encoder,
                "history_rooms",
                "Rooms whose history this node keeps a copy of.",
                store.room_count() as i64,
            )?;
        }
        let by_transport = engine.sessions_by_transport();
        let owned: usize = by_transport.iter().map(|(_, n)| n).sum();
        gauge(&mut encoder, "sessions_owned", "Open sessions this node owns.", owned as i64)?;
        labeled(
            &mut encoder,
            "sessions_by_transport",
            "Open sessions this node owns, by current transport.",
            "transport",
            by_transport.map(|(transport, n)| (transport.name(), ConstGauge::new(n as i64))),
        )?;
        labeled(
            &mut encoder,
            "sockets",
            "Sockets connected to this node, by namespace.",
            "nsp",
            namespaces.iter().map(|ns| (ns.name(), ConstGauge::new(ns.socket_count() as i64))),
        )?;
        labeled(
            &mut encoder,
            "room_deliveries",
            "Room broadcasts queued to local members, one per member, by namespace.",
            "nsp",
            namespaces.iter().map(|ns| (ns.name(), ConstCounter::new(ns.deliveries()))),
        )?;
        // One pass over each keeper's records for both gauges.
        let kept: Vec<_> = namespaces.iter().filter_map(|ns| ns.keeper().map(|k| (ns.name(), k.counts()))).collect();
        labeled(
            &mut encoder,
            "recovery_records_kept",
            "Records of sessions (of other nodes, parked or live) kept on this node, by namespace.",
            "nsp",
            kept.iter().map(|(nsp, (records, _))| (*nsp, ConstGauge::new(*records as i64))),
        )?;
        labeled(
            &mut encoder,
            "parked_sessions",
            "Dropped sessions kept on this node for their clients to recover, by namespace.",
            "nsp",
            kept.iter().map(|(nsp, (_, parked))| (*nsp, ConstGauge::new(*parked as i64))),
        )?;
        counter(
            &mut encoder,
            "sessions_refused_per_address",
            "Handshakes refused because their client address held max_sessions_per_address sessions.",
            engine.refused_per_address(),
        )?;
        counter(
            &mut encoder,
            "sessions_closed_queue_full",
            "Sessions closed because their client fell a whole outbound queue behind.",
            engine.queue_full_closes(),
        )?;
        if let Some(ClusterSources { membership, rooms, history, rpc }) = cluster {
            if let Some(history) = history {
                gauge(
                    &mut encoder,
                    "history_settled",
                    "1 once this node has handed its rooms' history to their new replicas for the ring it sees.",
                    i64::from(history.settled()),
                )?;
            }
            gauge(
                &mut encoder,
                "recovery_records_unconfirmed",
                "Records of this node's sessions sent to their keeper and not confirmed kept yet (in flight, or failed and to be sent again): sessions a crash of this node now would not recover.",
                rooms.unconfirmed_records() as i64,
            )?;
            let members = membership.members();
            let rejections = membership.rejections();
            labeled(
                &mut encoder,
                "gossip_rejected",
                "Gossip datagrams dropped before chitchat saw them, by reason.",
                "reason",
                Reject::ALL.iter().map(|r| (r.as_str(), ConstCounter::new(rejections.count(*r)))),
            )?;
            let traffic = membership.traffic().counts();
            counter(&mut encoder, "gossip_sent_bytes", "Sealed gossip bytes sent (UDP payloads).", traffic.sent_bytes)?;
            counter(&mut encoder, "gossip_sent_datagrams", "Gossip datagrams sent.", traffic.sent_datagrams)?;
            counter(
                &mut encoder,
                "gossip_received_bytes",
                "Gossip bytes received (UDP payloads), refused ones included.",
                traffic.received_bytes,
            )?;
            counter(
                &mut encoder,
                "gossip_received_datagrams",
                "Gossip datagrams received, refused ones included.",
                traffic.received_datagrams,
            )?;
            gauge(
                &mut encoder,
                "gossip_up",
                "1 while this node's gossip task runs; 0 once it ended (the node then stops serving).",
                i64::from(!membership.has_failed()),
            )?;
            labeled(
                &mut encoder,
                "rpc_handshake_failures",
                "Incoming RPC connections refused at their handshake, by reason.",
                "reason",
                rpc.handshake_failures().map(|(r, n)| (r, ConstCounter::new(n))),
            )?;
            let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
            counter(
                &mut encoder,
                "rpc_handshakes_shed",
                "Incoming RPC connections closed at once: too many were in their handshake.",
                load(&rpc.handshakes_shed),
            )?;
            counter(
                &mut encoder,
                "rpc_claims_refused",
                "RPC messages refused for naming another node than the channel's authenticated peer.",
                load(&rpc.claims_refused),
            )?;
            gauge(
                &mut encoder,
                "live_members",
                "Live members of the ring, this node included.",
                members.nodes.len() as i64,
            )?;
            gauge(&mut encoder, "ready_members", "Live members taking new sessions.", members.ready().count() as i64)?;
            let stats = &rooms.stats;
            counter(&mut encoder, "room_pushes_sent", "Room pushes delivered to peers.", load(&stats.pushes_sent))?;
            counter(
                &mut encoder,
                "room_pushes_received",
                "Room broadcasts received from peers.",
                load(&stats.publishes_received),
            )?;
            counter(
                &mut encoder,
                "room_pushes_dropped",
                "Room pushes dropped: peer queue full, peer gone or unreachable.",
                load(&stats.pushes_dropped),
            )?;
        }
        Ok(())
    }
}
