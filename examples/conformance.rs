//! The server the official protocol test suites expect on port 3000: an Engine.IO echo server
//! at `/engine.io/` and a Socket.IO server at `/socket.io/` with namespaces `/` and `/custom`.
//!
//! `cargo run --example conformance -- --port 3000`, then `npm test` in each suite's
//! `test-suite/` directory (see scripts/conformance.sh).
//!
//! With `--nodes 3` it runs a three-node cluster in this process behind a round-robin
//! balancer on the port: every request of the suites lands on the next node in turn, so
//! most of them reach their session's owner through the RPC.

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use clusterchat::cluster::router::Router;
use clusterchat::engineio::{Engine, EngineConfig};
use clusterchat::http::{EdgePolicy, HttpState};
use clusterchat::node::Service;
use clusterchat::server::Server;
use clusterchat::socketio::{SocketIo, SocketIoConfig};
use tokio_util::task::TaskTracker;

#[path = "../tests/support/mod.rs"]
mod support;
use support::rr_proxy::RoundRobinProxy;
use support::server::{suite_handlers, Echo};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 3000)]
    port: u16,
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Cluster nodes behind a per-request round-robin balancer; 1 serves directly.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    clusterchat::logging::init("info");
    let config = EngineConfig {
        ping_interval: Duration::from_millis(300),
        ping_timeout: Duration::from_millis(200),
        max_payload: 1_000_000,
        ..EngineConfig::default()
    };
    if args.nodes > 1 {
        return run_cluster(&args, config).await;
    }
    let io = SocketIo::new(SocketIoConfig::default(), vec![suite_handlers("/"), suite_handlers("/custom")]);
    let state = Arc::new(HttpState {
        node_id: "conformance".into(),
        engines: vec![
            ("/engine.io/".into(), Router::local("conformance".into(), Engine::new(config.clone(), Arc::new(Echo)))),
            ("/socket.io/".into(), Router::local("conformance".into(), Engine::new(config, io))),
        ],
        membership: None,
        metrics: None,
        web_dir: None,
        admin_dir: None,
        policy: EdgePolicy::open(),
        draining: Default::default(),
        tasks: TaskTracker::new(),
    });
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port)).await?;
    let server = Server::start(listener, state)?;
    let stop = server.shutdown_token();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    });
    server.wait().await;
    Ok(())
}

/// The suites' servers on `args.nodes` clustered nodes behind a round-robin balancer.
async fn run_cluster(args: &Args, config: EngineConfig) -> anyhow::Result<()> {
    let make: support::cluster::MakeServices = Box::new(move |_| {
        let io = SocketIo::new(SocketIoConfig::default(), vec![suite_handlers("/"), suite_handlers("/custom")]);
        vec![
            Service {
                path: "/engine.io/".into(),
                engine: Engine::new(config.clone(), Arc::new(Echo)),
                namespaces: vec![],
                admin: None,
                history: None,
            },
            Service::socketio("/socket.io/", config.clone(), io),
        ]
    });
    let cluster = support::cluster::TestCluster::start(args.nodes, make, |_| {}).await;
    let listen = tokio::net::lookup_host((args.host.as_str(), args.port))
        .await?
        .next()
        .ok_or_else(|| anyhow::anyhow!("cannot resolve {}", args.host))?;
    let proxy = RoundRobinProxy::start(listen, cluster.http_addrs()).await?;
    tracing::info!(addr = %proxy.addr(), backends = ?proxy.backends(), "round-robin balancer over the cluster");
    let _ = tokio::signal::ctrl_c().await;
    cluster.shutdown().await;
    Ok(())
}
