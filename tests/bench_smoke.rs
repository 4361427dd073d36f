//! The load generator's smoke mode against an in-process three-node cluster: a few seconds of
//! fan-out, polling (to the owner and forwarded) and join visibility, with tiny numbers. The
//! benchmarks themselves (scripts/bench.sh) are not part of the test command.

mod support;

use chatbench::{Bench, BenchArgs};
use clap::Parser;
use support::cluster::TestCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_mode_delivers_messages() {
    let cluster = TestCluster::chat(3).await;
    let mut argv = vec!["chatbench".to_owned(), "--smoke".to_owned(), "--sources".to_owned(), "4".to_owned()];
    for addr in cluster.http_addrs() {
        argv.extend(["--target".to_owned(), addr.to_string(), "--node".to_owned(), addr.to_string()]);
    }
    let bench = Bench::new(BenchArgs::parse_from(argv)).expect("valid arguments");
    let lines = tokio::time::timeout(std::time::Duration::from_secs(60), bench.run())
        .await
        .expect("the smoke run stops by itself")
        .expect("the smoke run succeeds");

    let by = |s: &'static str| lines.iter().filter(move |l| l["scenario"] == s);
    let fanout = by("fanout").next().expect("a fanout result");
    let step = &fanout["step"];
    assert!(step["messages"].as_u64().unwrap() > 0, "{fanout}");
    assert!(step["delivered_pct"].as_f64().unwrap() >= 99.0, "every message reached every member: {fanout}");
    assert_eq!(fanout["clients_gone"], 0, "{fanout}");

    let polling = by("polling").next().expect("a polling result");
    for route in ["owner", "forwarded"] {
        let r = &polling["routes"][route];
        assert!(r["requests_per_s"].as_f64().unwrap() > 0.0, "{polling}");
        assert!(r["step"]["delivered_pct"].as_f64().unwrap() >= 99.0, "{route}: {polling}");
    }

    let jv = by("join-visibility").next().expect("a join-visibility result");
    assert_eq!(jv["cross_node"], true, "{jv}");
    assert_eq!((jv["missed"].as_u64(), jv["errors"].as_u64()), (Some(0), Some(0)), "{jv}");
    assert_eq!(jv["latency"]["count"], 5, "{jv}");
    // No graceful shutdown: a node with forwarded long-polls of clients that went away drains
    // for up to ~20 s (see BENCHMARKS.md); the runtime ends with the test.
    drop(cluster);
}

/// The gossip cost scenario in smoke sizes: one in-process ring of three nodes with ten room
/// keys each, its traffic counted at the nodes' sockets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_cost_smoke_counts_traffic() {
    let bench = Bench::new(BenchArgs::parse_from(["chatbench", "--smoke", "gossip-cost"])).expect("valid arguments");
    let lines = tokio::time::timeout(std::time::Duration::from_secs(60), bench.run())
        .await
        .expect("the smoke run stops by itself")
        .expect("the smoke run succeeds");
    let r = &lines[0]["result"];
    assert_eq!((r["nodes"].as_u64(), r["rooms_per_node"].as_u64()), (Some(3), Some(10)), "{r}");
    assert!(r["sent_bytes_per_node_s"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["sent_datagrams_per_node_s"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["convergence_max_ms"].as_f64().unwrap() > 0.0, "{r}");
}
