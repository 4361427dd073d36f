//! The gossip scenario: in-process rings of 3, 10, 30 nodes on loopback. How long until every
//! other node stops counting a stopped node as live, and until a key set on one node is seen
//! by all the others. Nodes are awaited through their membership watchers, not polled.
//! [`cost`]: the gossip traffic of a ring (counted at each node's gossip socket) and the time a
//! new room key takes to reach every node, as nodes and room keys per node grow.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;

use clusterchat::cluster::membership::room_key;
use clusterchat::config::{ClusterSettings, NodeConfig};
use clusterchat::node::Node;

use super::stats::ProcSample;

#[derive(Debug, Serialize)]
pub struct GossipReport {
    pub nodes: usize,
    /// From the call that stops a node until every other node dropped it from its live members.
    pub detect_dead_ms: f64,
    /// From setting a key on one node until every other node sees it.
    pub spread_key_ms: f64,
    /// From starting the nodes until every node sees every node ready.
    pub converge_ms: f64,
}

/// Limits of one measurement; a ring that does not get there is a failed run, not a hang.
const LIMIT: Duration = Duration::from_secs(60);

/// Every listener on port 0; node1, once started, says its gossip port and seeds the others.
async fn start_ring(n: usize, cluster_id: &str) -> anyhow::Result<Vec<Node>> {
    let mut nodes: Vec<Node> = Vec::with_capacity(n);
    let mut seed: Option<SocketAddr> = None;
    for i in 0..n {
        let config = NodeConfig {
            node_id: format!("node{}", i + 1),
            http: "127.0.0.1:0".parse()?,
            log: "warn".into(),
            // The victim stops gossiping at once: what is measured is failure detection, not
            // a drain period (during which a leaving node still gossips).
            drain_ms: 0,
            cluster: Some(ClusterSettings {
                gossip: "127.0.0.1:0".parse()?,
                rpc: "127.0.0.1:0".parse()?,
                seeds: seed.iter().map(SocketAddr::to_string).collect(),
                cluster_id: cluster_id.into(),
                secret: Some("bench-gossip-secret".into()),
                ..ClusterSettings::default()
            }),
            ..NodeConfig::default()
        };
        let node = Node::start(config).await?;
        seed = seed.or(node.gossip_addr());
        nodes.push(node);
    }
    Ok(nodes)
}

async fn wait_all<F>(nodes: &[&Node], what: &str, pred: F) -> anyhow::Result<()>
where
    F: Fn(&clusterchat::cluster::membership::Members) -> bool + Clone,
{
    let waits = nodes.iter().map(|node| {
        let mut rx = node.membership().expect("a clustered node").subscribe();
        let pred = pred.clone();
        async move { rx.wait_for(|m| pred(m)).await.map(|_| ()) }
    });
    tokio::time::timeout(LIMIT, futures_util::future::try_join_all(waits))
        .await
        .map_err(|_| anyhow::anyhow!("{what}: not within {LIMIT:?}"))??;
    Ok(())
}

/// One ring of `n` nodes: converge, spread a key, stop the last node and detect it.
pub async fn run(n: usize) -> anyhow::Result<GossipReport> {
    anyhow::ensure!(n >= 2, "a ring needs two nodes");
    let cluster_id = format!("bench-gossip-{}-{n}-{}", std::process::id(), super::stats::now_us());
    let start = Instant::now();
    let mut nodes = start_ring(n, &cluster_id).await?;
    let ids: Vec<String> = nodes.iter().map(|n| n.node_id().to_owned()).collect();
    let all: Vec<&Node> = nodes.iter().collect();
    let ids2 = ids.clone();
    wait_all(&all, "convergence", move |m| ids2.iter().all(|id| m.get(id).is_some_and(|i| i.ready))).await?;
    let converge = start.elapsed();

    let key = room_key("/bench", "spread");
    let (nsp_room, origin) = (("/bench".to_owned(), "spread".to_owned()), ids[0].clone());
    let start = Instant::now();
    nodes[0].membership().expect("clustered").set(&key, "1").await;
    wait_all(&all[1..], "key spread", move |m| m.get(&origin).is_some_and(|i| i.rooms.contains(&nsp_room))).await?;
    let spread = start.elapsed();

    let victim = nodes.pop().expect("n >= 2");
    let victim_id = victim.node_id().to_owned();
    let rest: Vec<&Node> = nodes.iter().collect();
    let start = Instant::now();
    // The node stops (graceful stop: it says it is not ready, gossips three more rounds so the
    // others hear it, and its sessions, RPC and gossip end); the others notice it gone through
    // the failure detector. A killed process is let go `cluster.member_grace_ms` after the
    // detector counts it dead, instead of those three rounds.
    let stopping = tokio::spawn(victim.shutdown());
    wait_all(&rest, "dead node detection", move |m| m.get(&victim_id).is_none()).await?;
    let detect = start.elapsed();
    let _ = stopping.await;
    for node in nodes {
        node.shutdown().await;
    }
    Ok(GossipReport {
        nodes: n,
        detect_dead_ms: detect.as_secs_f64() * 1e3,
        spread_key_ms: spread.as_secs_f64() * 1e3,
        converge_ms: converge.as_secs_f64() * 1e3,
    })
}

/// What gossip costs a ring of `nodes` nodes with `rooms_per_node` room keys each.
#[derive(Debug, Serialize)]
pub struct GossipCost {
    pub nodes: usize,
    pub rooms_per_node: usize,
    /// From setting every node's room keys (all at once) until every node sees all of them.
    pub sync_ms: f64,
    /// Once synced, no key changing, over `secs`: sealed UDP payload bytes sent per node per
    /// second, the mean and the largest over the nodes, and datagrams.
    pub steady_secs: f64,
    pub sent_bytes_per_node_s: f64,
    pub sent_bytes_per_node_s_max: f64,
    pub sent_datagrams_per_node_s: f64,
    /// The same while the ring syncs (from the keys' setting until every node sees them).
    pub sync_sent_bytes_per_node: f64,
    /// CPU seconds per second of this process (every node of the ring, and nothing else), per
    /// node, over the steady period; and its RSS per node once synced.
    pub cpu_per_node: f64,
    pub rss_kib_per_node: f64,
    /// One new room key set on one node (a different one each trial) until every other node
    /// sees it, each trial.
    pub convergence_ms: Vec<f64>,
    pub convergence_median_ms: f64,
    pub convergence_max_ms: f64,
}

fn sent(nodes: &[Node]) -> Vec<clusterchat::cluster::gossip_transport::TrafficCounts> {
    nodes.iter().map(|n| n.membership().expect("clustered").traffic().counts()).collect()
}

/// One ring: `n` nodes, `rooms` room keys each; the sync, the steady traffic over `secs`, and
/// `trials` convergences of one new key.
pub async fn cost(n: usize, rooms: usize, secs: u64, trials: usize) -> anyhow::Result<GossipCost> {
    anyhow::ensure!(n >= 2, "a ring needs two nodes");
    let cluster_id = format!("bench-gossip-cost-{}-{n}-{}", std::process::id(), super::stats::now_us());
    let nodes = start_ring(n, &cluster_id).await?;
    let ids: Vec<String> = nodes.iter().map(|n| n.node_id().to_owned()).collect();
    let all: Vec<&Node> = nodes.iter().collect();
    let ids2 = ids.clone();
    wait_all(&all, "convergence", move |m| ids2.iter().all(|id| m.get(id).is_some_and(|i| i.ready))).await?;

    let before = sent(&nodes);
    let start = Instant::now();
    for (i, node) in nodes.iter().enumerate() {
        let keys = (0..rooms).map(|r| (room_key("/bench", &format!("n{i}-r{r}")), Some("1"))).collect();
        node.membership().expect("clustered").update(keys).await;
    }
    let ids2 = ids.clone();
    wait_all(&all, "room keys sync", move |m| ids2.iter().all(|id| m.get(id).is_some_and(|i| i.rooms.len() >= rooms)))
        .await?;
    let sync_ms = start.elapsed().as_secs_f64() * 1e3;
    let synced = sent(&nodes);
    let sync_sent: u64 = synced.iter().zip(&before).map(|(a, b)| a.sent_bytes - b.sent_bytes).sum();

    let me = [std::process::id()];
    let (p0, t0, c0) = (ProcSample::read(&me), Instant::now(), sent(&nodes));
    tokio::time::sleep(Duration::from_secs(secs)).await; // the steady period is the measurement
    let (p1, elapsed, c1) = (ProcSample::read(&me), t0.elapsed().as_secs_f64(), sent(&nodes));
    let per_node: Vec<f64> = c1.iter().zip(&c0).map(|(a, b)| (a.sent_bytes - b.sent_bytes) as f64 / elapsed).collect();
    let datagrams: u64 = c1.iter().zip(&c0).map(|(a, b)| a.sent_datagrams - b.sent_datagrams).sum();

    let mut convergence_ms = Vec::with_capacity(trials);
    for trial in 0..trials {
        let origin = trial % n;
        let room = format!("converge{trial}");
        let (nsp_room, origin_id) = (("/bench".to_owned(), room.clone()), ids[origin].clone());
        let others: Vec<&Node> = nodes.iter().enumerate().filter(|(i, _)| *i != origin).map(|(_, n)| n).collect();
        let start = Instant::now();
        nodes[origin].membership().expect("clustered").set(&room_key("/bench", &room), "1").await;
        wait_all(&others, "key convergence", move |m| m.get(&origin_id).is_some_and(|i| i.rooms.contains(&nsp_room)))
            .await?;
        convergence_ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    for node in nodes {
        node.shutdown().await;
    }
    let mut sorted = convergence_ms.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(GossipCost {
        nodes: n,
        rooms_per_node: rooms,
        sync_ms,
        steady_secs: elapsed,
        sent_bytes_per_node_s: per_node.iter().sum::<f64>() / n as f64,
        sent_bytes_per_node_s_max: per_node.iter().copied().fold(0.0, f64::max),
        sent_datagrams_per_node_s: datagrams as f64 / elapsed / n as f64,
        sync_sent_bytes_per_node: sync_sent as f64 / n as f64,
        cpu_per_node: (p1.cpu_s - p0.cpu_s) / elapsed / n as f64,
        rss_kib_per_node: p1.rss_kib as f64 / n as f64,
        convergence_median_ms: sorted.get(sorted.len() / 2).copied().unwrap_or(0.0),
        convergence_max_ms: sorted.last().copied().unwrap_or(0.0),
        convergence_ms,
    })
}
