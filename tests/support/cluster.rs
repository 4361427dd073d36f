//! Clusters for tests: N nodes on loopback, in process ([`TestCluster`]) or as processes of
//! the binary ([`spawn_processes`]), joined into one ring. Every listener is bound on port 0
//! and the node says which port it got (its accessors, or its `--ready-file`): no port is
//! probed and released, which another process could take in between.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use clusterchat::config::{ClusterSettings, NodeConfig};
use clusterchat::node::{Listening, Node, Service};

pub const SECRET: &str = "test-cluster-secret";

pub fn unique_cluster_id() -> String {
    format!("test-{}-{}", std::process::id(), rand_suffix())
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(Instant::now())
}

/// A node configuration for an in-process test cluster, every listener on port 0: the node
/// binds it and says which port it got ([`Node::gossip_addr`], [`Node::http_addr`]).
pub fn node_config(node_id: &str, cluster_id: &str, seeds: Vec<String>) -> NodeConfig {
    let mut config = NodeConfig {
        node_id: node_id.into(),
        http: "127.0.0.1:0".parse().unwrap(),
        drain_ms: 0,
        cluster: Some(ClusterSettings {
            gossip: "127.0.0.1:0".parse().unwrap(),
            rpc: "127.0.0.1:0".parse().unwrap(),
            seeds,
            cluster_id: cluster_id.into(),
            secret: Some(SECRET.into()),
            ..ClusterSettings::default()
        }),
        ..NodeConfig::default()
    };
    config.engine.ping_interval_ms = PING_INTERVAL_MS;
    config
}

/// A ping interval shorter than the clients' timeouts. python-engineio can leave its write
/// loop before sending the CLOSE of a polling disconnect (it checks its state between the
/// packets), and then waits for its last long-poll, which only the next PING releases; with
/// the default 25 s that exceeds the test scripts' 10 s timeouts.
pub const PING_INTERVAL_MS: u64 = 3000;

pub type MakeServices = Box<dyn Fn(&NodeConfig) -> Vec<Service> + Send + Sync>;

pub struct TestCluster {
    pub cluster_id: String,
    /// `None` once stopped.
    pub nodes: Vec<Option<Node>>,
    /// Each node's gossip address, `host:port`, by index.
    pub gossip: Vec<String>,
    seed: String,
    make: MakeServices,
    configure: fn(&mut NodeConfig),
    /// With it, node `nodeN` saves room history in `<history_base>/nodeN`.
    history_base: Option<std::path::PathBuf>,
}

impl TestCluster {
    /// `n` chat nodes named node1..nodeN, ready and seeing each other.
    pub async fn chat(n: usize) -> Self {
        Self::start(n, Box::new(|c| vec![Service::chat(c).expect("chat service")]), |_| {}).await
    }

    /// `n` nodes serving what `make` builds, with `configure` applied to each configuration.
    pub async fn start(n: usize, make: MakeServices, configure: fn(&mut NodeConfig)) -> Self {
        Self::start_in(n, make, configure, None).await
    }

    /// `n` chat nodes with `configure` applied, each saving room history in `base/<node id>`.
    pub async fn chat_with_history(n: usize, base: &std::path::Path, configure: fn(&mut NodeConfig)) -> Self {
        let make: MakeServices = Box::new(|c| vec![Service::chat(c).expect("chat service")]);
        Self::start_in(n, make, configure, Some(base.to_owned())).await
    }

    async fn start_in(
        n: usize,
        make: MakeServices,
        configure: fn(&mut NodeConfig),
        history_base: Option<std::path::PathBuf>,
    ) -> Self {
        let cluster_id = unique_cluster_id();
        let mut cluster = Self {
            seed: String::new(),
            cluster_id,
            nodes: Vec::new(),
            gossip: Vec::new(),
            make,
            configure,
            history_base,
        };
        for _ in 0..n {
            cluster.add_node().await;
        }
        cluster.wait_converged().await;
        cluster
    }

    /// Starts one more node, seeded with the first, and returns its index. Does not wait for
    /// the ring to see it.
    pub async fn add_node(&mut self) -> usize {
        let index = self.nodes.len();
        // Every listener on port 0: the node binds it and says which port it got. The first
        // node seeds the others.
        let seeds = if index == 0 { Vec::new() } else { vec![self.seed.clone()] };
        let mut config = node_config(&format!("node{}", index + 1), &self.cluster_id, seeds);
        (self.configure)(&mut config);
        if let Some(base) = &self.history_base {
            config.history.dir = Some(base.join(&config.node_id));
        }
        let services = (self.make)(&config);
        let node = Node::start_with(config, services).await.expect("node starts");
        let gossip = node.gossip_addr().expect("a clustered node").to_string();
        if index == 0 {
            self.seed = gossip.clone();
        }
        self.gossip.push(gossip);
        self.nodes.push(Some(node));
        index
    }

    pub fn node(&self, index: usize) -> &Node {
        self.nodes[index].as_ref().expect("node is running")
    }

    /// Node `index`, if it runs.
    pub fn node_at(&self, index: usize) -> Option<&Node> {
        self.nodes[index].as_ref()
    }

    pub fn node_by_id(&self, id: &str) -> &Node {
        self.live().find(|n| n.node_id() == id).unwrap_or_else(|| panic!("no running node {id}"))
    }

    /// The live members as `node` sees them.
    pub fn members_of(&self, node: &Node) -> std::sync::Arc<clusterchat::cluster::membership::Members> {
        node.membership().expect("a clustered node").members()
    }

    pub fn live(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().flatten()
    }

    /// HTTP addresses of the running nodes.
    pub fn http_addrs(&self) -> Vec<SocketAddr> {
        self.live().map(|n| n.http_addr()).collect()
    }

    pub fn url(&self, index: usize) -> String {
        format!("http://{}", self.node(index).http_addr())
    }

    /// Waits until every running node sees every running node as a ready member.
    pub async fn wait_converged(&self) {
        let expected: Vec<String> = self.live().map(|n| n.node_id().to_owned()).collect();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let converged = self.live().all(|n| {
                let members = n.membership().expect("clustered").members();
                let mut ready: Vec<String> = members.ready().map(str::to_owned).collect();
                ready.sort();
                let mut want = expected.clone();
                want.sort();
                ready == want
            });
            if converged {
                return;
            }
            assert!(Instant::now() < deadline, "cluster did not converge on {expected:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops node `index` gracefully.
    pub async fn stop(&mut self, index: usize) {
        if let Some(node) = self.nodes[index].take() {
            node.shutdown().await;
        }
    }

    pub async fn shutdown(mut self) {
        for i in 0..self.nodes.len() {
            self.stop(i).await;
        }
    }
}

/// A node running as a real process with the CLI's flags (killed when dropped).
pub struct Process {
    pub child: tokio::process::Child,
    pub http: SocketAddr,
    program: String,
    /// What [`Process::restart`] runs again.
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// The node's `--ready-file`, removed when the process is dropped.
    ready_file: Option<PathBuf>,
}

impl Process {
    /// Runs `program` with `args` and `env`: a node (or a wrapper that executes one, such as
    /// `ip netns exec`) serving HTTP at `http`.
    pub fn command(program: &str, args: Vec<String>, env: Vec<(String, String)>, http: SocketAddr) -> Self {
        let child = spawn_child(program, &args, &env);
        Self { child, http, program: program.to_owned(), args, env, ready_file: None }
    }

    /// Runs the node binary `bin` with `args` plus `--ready-file`, and waits until the node
    /// says where it listens (its ports may be 0 in `args`: the OS chooses them).
    async fn start(bin: &str, mut args: Vec<String>, ready_file: PathBuf) -> (Self, Listening) {
        args.extend(["--ready-file".into(), ready_file.display().to_string()]);
        let env = vec![("CLUSTERCHAT_SECRET".to_owned(), SECRET.to_owned())];
        let mut child = spawn_child(bin, &args, &env);
        let listening = read_ready_file(&mut child, &ready_file).await;
        let process =
            Self { child, http: listening.http, program: bin.to_owned(), args, env, ready_file: Some(ready_file) };
        (process, listening)
    }

    /// SIGTERM (a graceful leave), then waits for the exit.
    pub async fn terminate(&mut self) {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
        assert!(status.success(), "kill -TERM {pid}");
        let exit = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
        exit.expect("exits after SIGTERM").expect("exit status");
    }

    /// Starts the same node again (same ports, a new generation).
    pub fn restart(&mut self) {
        self.child = spawn_child(&self.program, &self.args, &self.env);
    }

    /// Starts the node again with other arguments and environment.
    pub fn restart_with(&mut self, args: Vec<String>, env: Vec<(String, String)>) {
        self.child = spawn_child(&self.program, &args, &env);
        (self.args, self.env) = (args, env);
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(path) = &self.ready_file {
            // A killed node leaves its file behind; nothing reads it after the test.
            std::fs::remove_file(path).ok();
        }
    }
}

/// Where a node process's logs go: its stdout, shown with CLUSTERCHAT_TEST_LOGS set (and
/// RUST_LOG), else nowhere.
pub fn node_logs() -> Stdio {
    if std::env::var_os("CLUSTERCHAT_TEST_LOGS").is_some() {
        Stdio::inherit()
    } else {
        Stdio::null()
    }
}

fn spawn_child(program: &str, args: &[String], env: &[(String, String)]) -> tokio::process::Child {
    tokio::process::Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(node_logs())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("clusterchat starts")
}

/// The addresses a starting node writes to `path` once it serves. The file is the only
/// signal, so it is polled (with a deadline); fails at once if the node exited.
async fn read_ready_file(child: &mut tokio::process::Child, path: &std::path::Path) -> Listening {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("child status") {
            panic!("the node writing {} exited ({status}) before it served", path.display());
        }
        match std::fs::read(path) {
            Ok(json) => return serde_json::from_slice(&json).expect("a ready file of the node's format"),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => panic!("reading {}: {err}", path.display()),
        }
        assert!(Instant::now() < deadline, "the node never wrote {}", path.display());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The binary `bin` (`env!("CARGO_BIN_EXE_clusterchat")`) run with `args` and `env` from the
/// crate's directory, its standard output piped for the test to read; killed when dropped.
pub fn child_process(bin: &str, args: &[&str], env: &[(&str, &str)]) -> tokio::process::Child {
    tokio::process::Command::new(bin)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("clusterchat starts")
}

/// How long a [`child_process`] may take to print a line waited for.
pub const LINE_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads a [`child_process`]'s output until a line contains `needle`; returns it. Fails at EOF
/// or after [`LINE_TIMEOUT`].
pub async fn line_containing(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    needle: &str,
) -> String {
    let wait = async {
        while let Some(line) = lines.next_line().await.expect("node stdout") {
            if line.contains(needle) {
                return line;
            }
        }
        panic!("the node's output ended without {needle:?}");
    };
    tokio::time::timeout(LINE_TIMEOUT, wait).await.unwrap_or_else(|_| panic!("no line with {needle:?}"))
}

/// `n` clustered processes of the binary `bin` (`env!("CARGO_BIN_EXE_clusterchat")`, which
/// only tests see), named node1..nodeN, each ready.
pub async fn spawn_processes(bin: &str, n: usize) -> Vec<Process> {
    spawn_processes_with(bin, n, |_| Vec::new()).await
}

/// [`spawn_processes`], node `i` (from 0) given the extra flags `extra(i)`.
///
/// Every listener is on port 0: the nodes start one after the other, each seeded with the
/// gossip addresses of those before it, which their ready files gave. Then each node's
/// restart is pinned to the ports it got and seeded with all the others, so that a node
/// restarted (whichever) comes back where the others and the tests' proxies look for it.
pub async fn spawn_processes_with(bin: &str, n: usize, extra: impl Fn(usize) -> Vec<String>) -> Vec<Process> {
    let cluster_id = unique_cluster_id();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let args = |i: usize, [http, gossip, rpc]: [SocketAddr; 3], seeds: &[SocketAddr]| {
        let mut args: Vec<String> = vec![
            "node".into(),
            "--node-id".into(),
            format!("node{}", i + 1),
            "--http".into(),
            http.to_string(),
            "--gossip".into(),
            gossip.to_string(),
            "--rpc".into(),
            rpc.to_string(),
            "--cluster-id".into(),
            cluster_id.clone(),
            "--log".into(),
            "warn".into(),
        ];
        for seed in seeds {
            args.extend(["--seed".into(), seed.to_string()]);
        }
        args.extend(extra(i));
        args
    };
    let mut nodes = Vec::new();
    let mut bound: Vec<[SocketAddr; 3]> = Vec::new();
    for i in 0..n {
        let seeds: Vec<SocketAddr> = bound.iter().map(|[_, gossip, _]| *gossip).collect();
        let ready_file = std::env::temp_dir().join(format!("clusterchat-{cluster_id}-node{}.json", i + 1));
        let (process, at) = Process::start(bin, args(i, [any; 3], &seeds), ready_file).await;
        bound.push([at.http, at.gossip.expect("a clustered node"), at.rpc.expect("a clustered node")]);
        nodes.push(process);
    }
    for (i, node) in nodes.iter_mut().enumerate() {
        let others: Vec<SocketAddr> =
            bound.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, [_, gossip, _])| *gossip).collect();
        let ready_file = node.ready_file.as_ref().expect("started with a ready file").display().to_string();
        node.args = args(i, bound[i], &others);
        node.args.extend(["--ready-file".into(), ready_file]);
    }
    wait_converged(&mut nodes).await;
    nodes
}

/// Waits until every process sees all of them as ready members (their metrics say so); fails
/// at once if one of them exited.
pub async fn wait_converged(nodes: &mut [Process]) {
    let want = format!("clusterchat_ready_members {}", nodes.len());
    wait_metric(nodes, &want).await;
}

/// Waits until every process has handed its rooms' history over for the members it sees.
pub async fn wait_history_settled(nodes: &mut [Process]) {
    wait_metric(nodes, "clusterchat_history_settled 1").await;
}

/// Waits until every process's sessions are recoverable after a crash of that process: the
/// record of each is confirmed kept by its keeper (none in flight or failed).
pub async fn wait_records_kept(nodes: &mut [Process]) {
    wait_metric(nodes, "clusterchat_recovery_records_unconfirmed 0").await;
}

/// Waits until every process's metrics have the line `want`; fails at once if one exited.
async fn wait_metric(nodes: &mut [Process], want: &str) {
    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(5)).build().expect("HTTP client");
    let deadline = Instant::now() + Duration::from_secs(30);
    let n = nodes.len();
    for node in nodes {
        loop {
            if let Some(status) = node.child.try_wait().expect("child status") {
                panic!("node at {} exited ({status}) before the ring was whole", node.http);
            }
            let metrics = match http.get(format!("http://{}/metrics", node.http)).send().await {
                Ok(r) => r.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if metrics.lines().any(|l| l == want) {
                break;
            }
            assert!(Instant::now() < deadline, "node at {} (of {n}) never showed {want}", node.http);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
