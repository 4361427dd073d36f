//! The gossip scenario: in-process rings of 3, 10, 30 nodes on loopback. How long until every
//! other node stops counting a stopped node as live, and until a key set on one node is seen
//! by all the others. Nodes are awaited through their membership watchers, not polled.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use serde::Serialize;

use clusterchat::cluster::membership::room_key;
use clusterchat::config::{ClusterSettings, NodeConfig};
use clusterchat::node::Node;

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

fn free_udp_port() -> std::io::Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn start_ring(n: usize, cluster_id: &str) -> anyhow::Result<Vec<Node>> {
    let first = free_udp_port()?;
    let mut nodes = Vec::with_capacity(n);
    for i in 0..n {
        let port = if i == 0 { first } else { free_udp_port()? };
        let config = NodeConfig {
            node_id: format!("node{}", i + 1),
            http: "127.0.0.1:0".parse()?,
            log: "warn".into(),
            // The victim stops gossiping at once: what is measured is failure detection, not
            // a drain period (during which a leaving node still gossips).
            drain_ms: 0,
            cluster: Some(ClusterSettings {
                gossip: SocketAddr::from(([127, 0, 0, 1], port)),
                rpc: "127.0.0.1:0".parse()?,
                seeds: if i == 0 { Vec::new() } else { vec![format!("127.0.0.1:{first}")] },
                cluster_id: cluster_id.into(),
                secret: Some("bench-gossip-secret".into()),
                ..ClusterSettings::default()
            }),
            ..NodeConfig::default()
        };
        nodes.push(Node::start(config).await?);
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
    // The node stops gossiping (graceful stop: its sessions, RPC and gossip end); the others
    // notice only through the failure detector, as with a killed process.
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
