//! The `clusterchat` binary: parses flags, loads the config, runs a node until Ctrl-C/SIGTERM;
//! or inspects a running cluster's gossip state.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use clusterchat::config::NodeConfig;
use clusterchat::inspect::{Format, InspectConfig, Query};
use clusterchat::node::Node;

#[derive(Parser)]
#[command(version, about = "A clustered, multi-room Socket.IO chat server that needs no sticky sessions")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a chat node.
    Node(Box<NodeArgs>),
    /// Read a running cluster's gossip state: members, room subscribers, session and room owners.
    Inspect(InspectArgs),
    /// Print a fresh random cluster secret (32 bytes, base64url).
    Keygen,
    /// Print an HS256 token for a chat user, for demos and tests of `[auth] jwt`.
    Token(TokenArgs),
    /// Print the bcrypt hash of the Admin UI password read from standard input (its first
    /// line), for `[admin] password_hash` or CLUSTERCHAT_ADMIN_PASSWORD_HASH.
    AdminHash,
}

/// The token carries the user in the node's `user_claim`, and its `audience` and `issuer`
/// when `--config` sets them.
#[derive(Args)]
struct TokenArgs {
    /// The user name the token proves.
    #[arg(long)]
    user: String,
    /// The HS256 secret (rather from the environment: a flag shows in `ps`).
    #[arg(long, env = "CLUSTERCHAT_JWT_SECRET", conflicts_with = "config", required_unless_present = "config")]
    secret: Option<String>,
    /// A node's config file to take `[auth] jwt` from.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Seconds the token is valid.
    #[arg(long, default_value_t = 3600)]
    ttl: u64,
}

impl TokenArgs {
    fn mint(self) -> anyhow::Result<String> {
        let jwt = match (&self.config, self.secret) {
            (Some(path), _) => NodeConfig::from_file(path)?
                .auth
                .jwt
                .with_context(|| format!("{} has no [auth] jwt", path.display()))?,
            (None, secret) => clusterchat::auth::JwtSettings { secret, ..Default::default() },
        };
        Ok(jwt.mint(&self.user, self.ttl)?)
    }
}

/// The inspector joins the ring as an observer (it owns nothing, and leaves on exit). It
/// needs the cluster's secret: `CLUSTERCHAT_SECRET`, or the secrets of a node's `--config`.
#[derive(Args)]
struct InspectArgs {
    /// A node's config file to take the cluster secrets (and cluster id) from.
    #[arg(long, env = "CLUSTERCHAT_CONFIG")]
    config: Option<PathBuf>,
    /// Gossip address of a member to join through; repeat for several.
    #[arg(long = "seed", required = true)]
    seeds: Vec<String>,
    /// Cluster id of the ring [default: clusterchat].
    #[arg(long)]
    cluster_id: Option<String>,
    /// Also show which node owns this session id, and whether it is live. (Session ids may
    /// start with `-`.)
    #[arg(long, allow_hyphen_values = true)]
    sid: Option<String>,
    /// Also show which node owns this room, and which nodes have members in it.
    #[arg(long)]
    room: Option<String>,
    /// Namespace of --room.
    #[arg(long, default_value = clusterchat::chat::NAMESPACE, requires = "room")]
    nsp: String,
    /// Print one JSON document (with --watch, one JSON line per change).
    #[arg(long)]
    json: bool,
    /// Print again whenever the state changes, until Ctrl-C.
    #[arg(long)]
    watch: bool,
    /// The observer's own gossip address, advertised to the nodes; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// How long to wait for a seed to answer, in ms.
    #[arg(long, default_value_t = clusterchat::inspect::DEFAULT_WAIT.as_millis() as u64)]
    wait_ms: u64,
}

impl InspectArgs {
    fn into_config(self) -> anyhow::Result<InspectConfig> {
        let cluster = match &self.config {
            Some(path) => NodeConfig::from_file(path)?.cluster.unwrap_or_default(),
            None => Default::default(),
        };
        let keyring = cluster.keyring(self.listen)?;
        let mut c = InspectConfig::new(self.seeds, keyring);
        c.cluster_id = self.cluster_id.unwrap_or(cluster.cluster_id);
        c.listen = self.listen;
        c.wait = Duration::from_millis(self.wait_ms);
        c.query = Query { sid: self.sid, room: self.room.map(|room| (self.nsp, room)) };
        Ok(c)
    }
}

/// Flags override the config file, which overrides the built-in defaults.
#[derive(Args)]
struct NodeArgs {
    /// TOML config file (see config/node1.toml).
    #[arg(long, env = "CLUSTERCHAT_CONFIG")]
    config: Option<PathBuf>,
    /// Node id shown in logs and to clients [default: node1].
    #[arg(long)]
    node_id: Option<String>,
    /// HTTP listen address [default: 127.0.0.1:9001].
    #[arg(long)]
    http: Option<SocketAddr>,
    /// Directory of the chat page [default: web].
    #[arg(long)]
    web_dir: Option<PathBuf>,
    /// Server ping interval in ms [default: 25000].
    #[arg(long)]
    ping_interval: Option<u64>,
    /// Pong deadline in ms [default: 20000].
    #[arg(long)]
    ping_timeout: Option<u64>,
    /// Largest accepted payload in bytes [default: 1000000].
    #[arg(long)]
    max_payload: Option<usize>,
    /// Upgrade deadline in ms [default: 10000].
    #[arg(long)]
    upgrade_timeout: Option<u64>,
    /// Log filter, e.g. `debug` or `clusterchat=debug` [default: info]; RUST_LOG overrides.
    #[arg(long)]
    log: Option<String>,
    /// The host's cores this node may keep busy (`cores`): 1 runs it on one thread, n > 1
    /// gives it n threads of each kind below [default: all].
    #[arg(long)]
    cores: Option<usize>,
    /// Threads that serve HTTP and WebSocket connections; 0: the main runtime's [default: as
    /// --cores says].
    #[arg(long)]
    io_threads: Option<usize>,
    /// Worker threads of the main runtime (gossip, internal RPC); 1: a single-threaded
    /// runtime on the main thread [default: as --cores says].
    #[arg(long)]
    worker_threads: Option<usize>,
    /// Directory where room history is saved (`history.dir`) [default: none, memory only].
    #[arg(long)]
    history_dir: Option<PathBuf>,
    /// Gossip (UDP) address: joins a cluster [default with a [cluster] section: 127.0.0.1:7001].
    #[arg(long)]
    gossip: Option<SocketAddr>,
    /// Internal RPC (TCP) address [default: 127.0.0.1:8001].
    #[arg(long)]
    rpc: Option<SocketAddr>,
    /// Gossip address peers reach this node at, when it listens on 0.0.0.0/[::] or behind NAT.
    #[arg(long)]
    gossip_advertise: Option<SocketAddr>,
    /// RPC address peers reach this node at [default: the RPC listen address].
    #[arg(long)]
    rpc_advertise: Option<SocketAddr>,
    /// HTTP address shown to peers and `inspect` [default: the HTTP listen address].
    #[arg(long)]
    http_advertise: Option<SocketAddr>,
    /// Gossip address of a member to join through; repeat for several.
    #[arg(long = "seed")]
    seeds: Vec<String>,
    /// Cluster id: only nodes with the same id form a ring [default: clusterchat].
    #[arg(long)]
    cluster_id: Option<String>,
    /// Once the node serves, write its listen addresses here as JSON (`node_id`, `http`,
    /// `metrics`, `gossip`, `rpc`; the ports the OS chose for port 0); removed on exit.
    #[arg(long)]
    ready_file: Option<PathBuf>,
}

impl NodeArgs {
    fn into_config(self) -> anyhow::Result<NodeConfig> {
        let mut c = match &self.config {
            Some(path) => NodeConfig::from_file(path)?,
            None => NodeConfig::default(),
        };
        if let Some(v) = self.node_id {
            c.node_id = v;
        }
        if let Some(v) = self.http {
            c.http = v;
        }
        if let Some(v) = self.web_dir {
            c.web_dir = v;
        }
        if let Some(v) = self.ping_interval {
            c.engine.ping_interval_ms = v;
        }
        if let Some(v) = self.ping_timeout {
            c.engine.ping_timeout_ms = v;
        }
        if let Some(v) = self.max_payload {
            c.engine.max_payload = v;
        }
        if let Some(v) = self.upgrade_timeout {
            c.engine.upgrade_timeout_ms = v;
        }
        if let Some(v) = self.log {
            c.log = v;
        }
        if let Some(v) = self.cores {
            c.cores = Some(v);
        }
        if let Some(v) = self.io_threads {
            c.io_threads = Some(v);
        }
        if let Some(v) = self.worker_threads {
            c.worker_threads = Some(v);
        }
        if let Some(v) = self.history_dir {
            c.history.dir = Some(v);
        }
        let advertised =
            self.gossip_advertise.is_some() || self.rpc_advertise.is_some() || self.http_advertise.is_some();
        let clustered = advertised
            || self.gossip.is_some()
            || self.rpc.is_some()
            || !self.seeds.is_empty()
            || self.cluster_id.is_some();
        if clustered {
            let cluster = c.cluster.get_or_insert_with(Default::default);
            if let Some(v) = self.gossip {
                cluster.gossip = v;
            }
            if let Some(v) = self.rpc {
                cluster.rpc = v;
            }
            if !self.seeds.is_empty() {
                cluster.seeds = self.seeds;
            }
            if let Some(v) = self.cluster_id {
                cluster.cluster_id = v;
            }
            cluster.gossip_advertise = self.gossip_advertise.or(cluster.gossip_advertise);
            cluster.rpc_advertise = self.rpc_advertise.or(cluster.rpc_advertise);
            cluster.http_advertise = self.http_advertise.or(cluster.http_advertise);
        }
        c.validate()?;
        Ok(c)
    }
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Node(args) => {
            let ready_file = args.ready_file.clone();
            // Read before the runtime starts: the settings size it.
            let config = (*args).into_config()?;
            cap_malloc_arenas(config.serving_thread_count());
            runtime(config.worker_thread_count())?.block_on(run_node(config, ready_file))
        }
        Command::Inspect(args) => runtime(None)?.block_on(run_inspect(args)),
        Command::Keygen => {
            println!("{}", clusterchat::keyring::generate_secret());
            Ok(())
        }
        Command::Token(args) => {
            println!("{}", args.mint()?);
            Ok(())
        }
        Command::AdminHash => {
            let mut password = String::new();
            std::io::stdin().read_line(&mut password).context("reading the password from standard input")?;
            let password = password.trim_end_matches(['\r', '\n']);
            println!("{}", clusterchat::admin::hash_password(password).map_err(anyhow::Error::msg)?);
            Ok(())
        }
    }
}

/// The main runtime: `workers` threads (absent: one per core, or `TOKIO_WORKER_THREADS`).
/// One is a single-threaded runtime on the calling thread rather than a multi-thread runtime
/// of one worker: the same single thread of work, without a second thread parked in `block_on`
/// and without the wakes a multi-thread runtime makes to hand work between threads.
fn runtime(workers: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = match workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    if let Some(n) = workers.filter(|&n| n > 1) {
        builder.worker_threads(n);
    }
    // A worker that parks has run out of work: its WebSocket writes are not batched (see
    // `engineio::queue::batch`).
    builder.enable_all().on_thread_park(clusterchat::engineio::on_worker_park).build().context("starting the runtime")
}

/// One malloc arena per thread that serves connections (`io_threads`, or the workers without
/// them: they make nearly every allocation of the node's connections), unless
/// `MALLOC_ARENA_MAX` says otherwise. glibc gives a thread that finds the arenas busy one of its
/// own, up to eight per core, and an arena keeps much of what was freed in it. With the
/// connection threads beside the runtime's workers, that cost idle clients about 400 B of RSS
/// each at 10,000 over three nodes (6,467 against 6,070 B) and 130 B at 50,000; with one arena
/// per core, 6,117 B at 10,000. Three nodes of one connection thread and one worker each, on two
/// arenas: 6,059-6,786 B at 10,000 over four runs; on one, 5,934 B (`bench/idle-scale.md`). The
/// CPU cost, side by side, was within the noise both times.
/// Called first, before the runtime starts any thread.
fn cap_malloc_arenas(arenas: usize) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a limit; called before any other thread starts.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, libc::c_int::try_from(arenas.max(1)).unwrap_or(libc::c_int::MAX));
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = arenas;
}

async fn run_inspect(args: InspectArgs) -> anyhow::Result<()> {
    // The report is stdout; logs (gossip warnings) go to stderr.
    clusterchat::logging::init_to("warn", std::io::stderr);
    let format = if args.json { Format::Json } else { Format::Text };
    let watch = args.watch;
    let mut out = std::io::stdout();
    clusterchat::inspect::run(args.into_config()?, format, watch, &mut out, wait_for_signal()).await?;
    Ok(())
}

/// Runs the node until a signal or a gossip failure; with `ready_file`, the file says where
/// it listens while it runs.
async fn run_node(config: NodeConfig, ready_file: Option<PathBuf>) -> anyhow::Result<()> {
    // Tasks spawned outside the node's span log too: every line names this process's node.
    clusterchat::logging::init_node(&config.log, &config.node_id);
    let node_id = config.node_id.clone();
    let node = Node::start(config).await.context("starting the node")?;
    let _span = clusterchat::logging::node_span(&node_id).entered();
    tracing::info!("chat page at http://{}/", node.http_addr());
    drop(_span);
    if let Some(path) = &ready_file {
        let written = node.listening().write_to(path);
        if let Err(err) = written {
            node.shutdown().await;
            return Err(anyhow::Error::new(err).context(format!("writing the ready file {}", path.display())));
        }
    }
    let result = serve_until_stopped(node).await;
    if let Some(path) = &ready_file {
        // A file left behind would say a stopped node serves.
        if let Err(err) = std::fs::remove_file(path) {
            tracing::warn!("cannot remove the ready file {}: {err}", path.display());
        }
    }
    result
}

async fn serve_until_stopped(node: Node) -> anyhow::Result<()> {
    let stop = node.shutdown_token();
    let left = node.wait();
    tokio::pin!(left);
    // A node whose gossip failed has left the cluster: exit non-zero so a supervisor
    // (systemd, Kubernetes, cluster.sh's operator) starts it again under a new generation.
    tokio::select! {
        result = &mut left => result?,
        () = wait_for_signal() => {
            stop.cancel();
            left.await?;
        }
    }
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
