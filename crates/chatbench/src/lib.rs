//! `chatbench`, the load generator: simulated chat users speaking Engine.IO v4 / Socket.IO v5
//! over WebSocket or long-polling against clusterchat (or any server of the same `/chat`
//! protocol, such as the socket.io peer in `bench/`), one scenario per subcommand. A crate of
//! its own so that the server's library holds only the server; it uses the server's codecs.
//!
//! Every scenario stops by itself (durations, counts and timeouts are arguments), keeps its
//! statistics in fixed-size histograms and counters, and prints one JSON line per result on
//! stdout (a human summary goes to stderr). Server processes named with `--server-pid` are
//! measured from `/proc`: RSS (VmRSS) and CPU seconds (utime + stime, and each apart).

pub mod client;
pub mod gossip;
pub mod stats;
pub mod workers;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::Serialize;
use serde_json::json;

pub use client::{Client, ClientSpec, Route, Shared, Transport};
use stats::{Counters, ProcSample, Summary};

#[derive(Debug, Clone, clap::Parser)]
#[command(about = "Load generator for clusterchat and socket.io servers of the same /chat protocol")]
pub struct BenchArgs {
    #[command(subcommand)]
    pub scenario: Option<Scenario>,
    /// Where clients connect (a balancer, or nodes); client i uses target i mod count.
    #[arg(long = "target", global = true)]
    pub targets: Vec<SocketAddr>,
    /// Each node's own HTTP address (clusterchat): maps node ids (GET /whoami) to addresses,
    /// for polling routes.
    #[arg(long = "node", global = true)]
    pub nodes: Vec<SocketAddr>,
    /// Server processes to measure (RSS, CPU seconds); repeat for each.
    #[arg(long = "server-pid", global = true)]
    pub pids: Vec<u32>,
    /// Name of the system under test, copied into every result.
    #[arg(long, global = true, default_value = "clusterchat")]
    pub label: String,
    #[arg(long, global = true, value_enum, default_value = "websocket")]
    pub transport: Transport,
    /// Source addresses 127.0.0.2 .. 127.0.0.(1+N) are used in turn (each bound before connecting).
    #[arg(long, global = true, default_value_t = 32)]
    pub sources: u8,
    /// Connections being set up at once.
    #[arg(long, global = true, default_value_t = 128)]
    pub concurrency: usize,
    /// Tiny sizes and short durations (a few seconds): what CI runs. Without a scenario, runs
    /// fanout, polling and join-visibility in smoke sizes.
    #[arg(long, global = true)]
    pub smoke: bool,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Scenario {
    /// N connected clients that do nothing; RSS of the servers per client.
    Idle {
        /// Client counts, reached in turn (ascending).
        #[arg(long, value_delimiter = ',', default_value = "1000,3000,6000")]
        clients: Vec<usize>,
        /// Seconds to hold each count before measuring.
        #[arg(long, default_value_t = 5)]
        hold: u64,
        /// Most clients one generator process holds: a larger count is spread over helper
        /// processes (`idle-worker`), as one process may open only so many files (about
        /// 20,000 on the benchmark machine).
        #[arg(long, default_value_t = 15_000)]
        per_process: usize,
    },
    /// A helper of `idle` (started by it, not by hand): holds as many idle clients as the
    /// leader says on stdin (see `workers`).
    #[command(hide = true)]
    IdleWorker {
        /// This helper's number, which names its clients.
        #[arg(long)]
        index: usize,
    },
    /// R rooms x M members, stepping the total send rate until p99 passes --max-p99-ms.
    Fanout(FanoutArgs),
    /// One room of N members.
    BigRoom {
        #[arg(long, default_value_t = 3000)]
        members: usize,
        #[arg(long, value_delimiter = ',', default_value = "1,2,5,10,20,40")]
        rates: Vec<u64>,
        #[arg(long, default_value_t = 5)]
        step_secs: u64,
        #[arg(long, default_value_t = 100.0)]
        max_p99_ms: f64,
        /// Seconds to wait after the joins before the first step (see `FanoutArgs::settle_secs`).
        #[arg(long, default_value_t = 0)]
        settle_secs: u64,
    },
    /// Polling-only clients: requests/s and POST latency, sent to the owner vs to a non-owner.
    Polling {
        #[arg(long, default_value_t = 300)]
        clients: usize,
        /// Members per room.
        #[arg(long, default_value_t = 5)]
        room_size: usize,
        /// Total chat messages per second.
        #[arg(long, default_value_t = 200)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        secs: u64,
    },
    /// Time from a join ack on one node until a message published on another reaches the joiner.
    JoinVisibility {
        #[arg(long, default_value_t = 300)]
        trials: usize,
        #[arg(long, default_value_t = 8)]
        parallel: usize,
    },
    /// In-process rings: time to detect a stopped node and to spread a key.
    Gossip {
        #[arg(long, value_delimiter = ',', default_value = "3,10,30")]
        sizes: Vec<usize>,
        #[arg(long, default_value_t = 3)]
        trials: usize,
    },
    /// In-process rings: gossip bytes per node per second and a new room key's convergence, for
    /// every pair of a node count and a number of room keys per node.
    GossipCost {
        /// Ring sizes (nodes).
        #[arg(long, value_delimiter = ',', default_value = "3,10,30,100")]
        sizes: Vec<usize>,
        #[arg(long, value_delimiter = ',', default_value = "100")]
        rooms: Vec<usize>,
        /// Seconds of steady traffic measured (no key changing).
        #[arg(long, default_value_t = 10)]
        secs: u64,
        /// New keys whose convergence is timed, one after the other.
        #[arg(long, default_value_t = 5)]
        trials: usize,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct FanoutArgs {
    #[arg(long, default_value_t = 100)]
    pub rooms: usize,
    #[arg(long, default_value_t = 30)]
    pub members: usize,
    /// Total chat messages per second, one step each.
    #[arg(long, value_delimiter = ',', default_value = "50,100,200,400,800,1600,3200,6400")]
    pub rates: Vec<u64>,
    #[arg(long, default_value_t = 5)]
    pub step_secs: u64,
    #[arg(long, default_value_t = 100.0)]
    pub max_p99_ms: f64,
    /// Seconds to wait after the joins before the first step, so that the joins' own traffic
    /// (`join room` notices, the coalesced `room users` lists) is not in the first step.
    #[arg(long, default_value_t = 0)]
    pub settle_secs: u64,
    /// Seconds to keep the clients connected after the last step, before they close. Its
    /// start is logged (`fanout: steps done`): `scripts/bench_curves.sh` takes the step's
    /// counts then, and the clients' leaving in a dump of its own.
    #[arg(long, default_value_t = 0)]
    pub hold_secs: u64,
}

/// One run's context: where to connect, what to measure.
pub struct Bench {
    pub args: BenchArgs,
    next_client: std::sync::atomic::AtomicUsize,
}

/// A result line.
pub type Report = serde_json::Value;

impl Bench {
    pub fn new(args: BenchArgs) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !args.targets.is_empty()
                || matches!(args.scenario, Some(Scenario::Gossip { .. } | Scenario::GossipCost { .. })),
            "--target is required"
        );
        anyhow::ensure!(args.sources >= 1 && args.sources <= 250, "--sources must be 1..=250");
        Ok(Self { args, next_client: 0.into() })
    }

    /// Runs the scenario (or the smoke suite) and returns its result lines.
    pub async fn run(&self) -> anyhow::Result<Vec<Report>> {
        let smoke = self.args.smoke;
        let mut out = Vec::new();
        match self.args.scenario.clone() {
            None if smoke => {
                out.extend(
                    self.fanout(&FanoutArgs {
                        rooms: 2,
                        members: 3,
                        rates: vec![20],
                        step_secs: 1,
                        max_p99_ms: 1e9,
                        settle_secs: 0,
                        hold_secs: 0,
                    })
                    .await?,
                );
                if self.args.transport == Transport::Websocket {
                    out.push(self.polling_only(6, 3, 20, 1).await?);
                }
                out.push(self.join_visibility(5, 2).await?);
            }
            None => anyhow::bail!("name a scenario, or pass --smoke"),
            Some(Scenario::Idle { clients, hold, per_process }) => {
                let (clients, hold) = if smoke { (vec![10], 1) } else { (clients, hold) };
                out.extend(self.idle(&clients, hold, per_process).await?);
            }
            Some(Scenario::IdleWorker { index }) => self.idle_worker(index).await?,
            Some(Scenario::Fanout(a)) => {
                let a = if smoke { FanoutArgs { rooms: 2, members: 3, rates: vec![20], step_secs: 1, ..a } } else { a };
                out.extend(self.fanout(&a).await?);
            }
            Some(Scenario::BigRoom { members, rates, step_secs, max_p99_ms, settle_secs }) => {
                let a = if smoke {
                    FanoutArgs {
                        rooms: 1,
                        members: 10,
                        rates: vec![5],
                        step_secs: 1,
                        max_p99_ms,
                        settle_secs: 0,
                        hold_secs: 0,
                    }
                } else {
                    FanoutArgs { rooms: 1, members, rates, step_secs, max_p99_ms, settle_secs, hold_secs: 0 }
                };
                let mut r = self.fanout(&a).await?;
                for line in &mut r {
                    line["scenario"] = json!("big-room");
                }
                out.extend(r);
            }
            Some(Scenario::Polling { clients, room_size, rate, secs }) => {
                let (clients, rate, secs) = if smoke { (6, 20, 1) } else { (clients, rate, secs) };
                out.push(self.polling_only(clients, room_size, rate, secs).await?);
            }
            Some(Scenario::JoinVisibility { trials, parallel }) => {
                let trials = if smoke { 5 } else { trials };
                out.push(self.join_visibility(trials, parallel).await?);
            }
            Some(Scenario::Gossip { sizes, trials }) => {
                let (sizes, trials) = if smoke { (vec![3], 1) } else { (sizes, trials) };
                for n in sizes {
                    for trial in 0..trials {
                        let r = gossip::run(n).await?;
                        eprintln!("gossip n={n}: detect {:.0} ms, spread {:.0} ms", r.detect_dead_ms, r.spread_key_ms);
                        out.push(self.line("gossip", json!({ "trial": trial, "result": r })));
                    }
                }
            }
            Some(Scenario::GossipCost { sizes, rooms, secs, trials }) => {
                let (sizes, rooms, secs, trials) =
                    if smoke { (vec![3], vec![10], 1, 1) } else { (sizes, rooms, secs, trials) };
                for &n in &sizes {
                    for &r in &rooms {
                        let c = gossip::cost(n, r, secs, trials).await?;
                        eprintln!(
                            "gossip cost n={n} rooms={r}: sync {:.0} ms, {:.0} B/s per node (max {:.0}), {:.1} datagrams/s, convergence median {:.0} ms max {:.0} ms, CPU {:.3} per node",
                            c.sync_ms, c.sent_bytes_per_node_s, c.sent_bytes_per_node_s_max, c.sent_datagrams_per_node_s,
                            c.convergence_median_ms, c.convergence_max_ms, c.cpu_per_node
                        );
                        out.push(self.line("gossip-cost", json!({ "result": c })));
                    }
                }
            }
        }
        Ok(out)
    }

    fn line(&self, scenario: &str, mut body: Report) -> Report {
        body["scenario"] = json!(scenario);
        body["label"] = json!(self.args.label);
        body["transport"] = json!(self.args.transport);
        body
    }

    fn shared(&self, nodes: HashMap<String, SocketAddr>) -> Arc<Shared> {
        Arc::new(Shared { nodes, ..Shared::default() })
    }

    fn spec(&self, user: String, transport: Transport, route: Route) -> ClientSpec {
        let i = self.next_client.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let targets = &self.args.targets;
        ClientSpec {
            target: targets[i % targets.len()],
            source: Ipv4Addr::new(127, 0, 0, 2 + (i % usize::from(self.args.sources)) as u8),
            transport,
            route,
            user,
        }
    }

    /// Connects `n` clients named `<prefix><i>`, `concurrency` at a time. Clients that fail are
    /// counted, not retried; the run fails if more than 1 % fail.
    async fn connect(
        &self,
        shared: &Arc<Shared>,
        prefix: &str,
        n: usize,
        transport: Transport,
        route: Route,
    ) -> anyhow::Result<Vec<Client>> {
        let specs: Vec<ClientSpec> = (0..n).map(|i| self.spec(format!("{prefix}{i}"), transport, route)).collect();
        let results: Vec<_> = futures_util::stream::iter(specs)
            .map(|spec| Client::connect(spec, shared.clone(), None))
            .buffered(self.args.concurrency.max(1))
            .collect()
            .await;
        let mut clients = Vec::with_capacity(n);
        let mut failed = Vec::new();
        for r in results {
            match r {
                Ok(c) => clients.push(c),
                Err(e) => failed.push(e.to_string()),
            }
        }
        if !failed.is_empty() {
            eprintln!("{} of {n} clients failed to connect; first: {}", failed.len(), failed[0]);
            Counters::bump(&shared.counters.errors);
        }
        anyhow::ensure!(failed.len() * 100 <= n, "{} of {n} connections failed: {}", failed.len(), failed[0]);
        Ok(clients)
    }

    async fn join_all(&self, clients: &[Client], room_of: impl Fn(usize) -> String) -> anyhow::Result<()> {
        let joins = futures_util::stream::iter(clients.iter().enumerate())
            .map(|(i, c)| {
                let room = room_of(i);
                async move { c.join(&room).await }
            })
            .buffer_unordered(self.args.concurrency.max(1));
        let failed = joins.filter(|r| futures_util::future::ready(r.is_err())).count().await;
        anyhow::ensure!(failed == 0, "{failed} joins failed");
        Ok(())
    }

    async fn close(&self, shared: &Arc<Shared>, clients: Vec<Client>) {
        shared.stop.cancel();
        let finish = futures_util::future::join_all(clients.into_iter().map(Client::finish));
        let _ = tokio::time::timeout(Duration::from_secs(10), finish).await;
    }

    fn proc(&self) -> ProcSample {
        ProcSample::read(&self.args.pids)
    }

    // -----------------------------------------------------------------------------------------

    /// Holds `counts` idle clients in turn (ascending) and measures the servers' RSS per
    /// client after `hold` seconds at each. Counts above `per_process` are spread over helper
    /// processes, every one holding its share of each count.
    async fn idle(&self, counts: &[usize], hold: u64, per_process: usize) -> anyhow::Result<Vec<Report>> {
        let shared = self.shared(HashMap::new());
        let base = self.proc();
        let procs = counts.iter().max().copied().unwrap_or(0).div_ceil(per_process.max(1)).max(1);
        let mut workers = workers::Workers::start(procs - 1, &self.worker_args())?;
        let mut clients: Vec<Client> = Vec::new();
        let mut out = Vec::new();
        for &n in counts {
            let shares = workers::shares(n, procs);
            let start = Instant::now();
            workers.hold(&shares[1..]).await?;
            if shares[0] > clients.len() {
                let more = self
                    .connect(
                        &shared,
                        &format!("idle{}-", clients.len()),
                        shares[0] - clients.len(),
                        self.args.transport,
                        Route::Target,
                    )
                    .await?;
                clients.extend(more);
            }
            let held = clients.len() + workers.held().await?;
            eprintln!("idle: {held} clients connected in {:.1} s ({procs} processes)", start.elapsed().as_secs_f64());
            let cpu_before = self.proc();
            tokio::time::sleep(Duration::from_secs(hold)).await; // holding idle connections is the measurement
            let now = self.proc();
            let alive = clients.iter().filter(|c| !c.is_finished()).count() + workers.alive().await?;
            let delta = now.delta(base);
            let per_client = (delta.rss_kib as f64 * 1024.0) / alive.max(1) as f64;
            eprintln!("idle: {alive} alive, server RSS +{} KiB, {:.0} B per client", delta.rss_kib, per_client);
            out.push(self.line(
                "idle",
                json!({
                    "clients": n, "alive": alive, "rss_base_kib": base.rss_kib, "rss_kib": now.rss_kib,
                    "rss_per_client_bytes": per_client, "generator_processes": procs,
                    "idle_cpu_s_per_s": (now.cpu_s - cpu_before.cpu_s) / hold.max(1) as f64,
                }),
            ));
        }
        drop(workers); // their stdin closes: they close their clients and end
        self.close(&shared, clients).await;
        Ok(out)
    }

    /// The global options, for helper processes.
    fn worker_args(&self) -> Vec<String> {
        let a = &self.args;
        let mut args: Vec<String> = a.targets.iter().flat_map(|t| ["--target".into(), t.to_string()]).collect();
        let transport = clap::ValueEnum::to_possible_value(&a.transport).map(|v| v.get_name().to_owned());
        args.extend(["--sources".into(), a.sources.to_string(), "--concurrency".into(), a.concurrency.to_string()]);
        args.extend(["--label".into(), a.label.clone(), "--transport".into(), transport.unwrap_or_default()]);
        args
    }

    /// An `idle` helper: holds what the leader says until its stdin closes (see `workers`).
    async fn idle_worker(&self, index: usize) -> anyhow::Result<()> {
        use tokio::io::AsyncBufReadExt;
        let shared = self.shared(HashMap::new());
        let mut commands = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        let mut clients: Vec<Client> = Vec::new();
        while let Some(line) = commands.next_line().await? {
            match workers::Command::parse(&line)? {
                workers::Command::Hold(n) => {
                    if n > clients.len() {
                        let prefix = format!("idle-w{index}-{}-", clients.len());
                        clients.extend(
                            self.connect(&shared, &prefix, n - clients.len(), self.args.transport, Route::Target)
                                .await?,
                        );
                    }
                    println!("held {}", clients.len());
                }
                workers::Command::Alive => println!("alive {}", clients.iter().filter(|c| !c.is_finished()).count()),
            }
        }
        self.close(&shared, clients).await;
        Ok(())
    }

    async fn fanout(&self, a: &FanoutArgs) -> anyhow::Result<Vec<Report>> {
        let shared = self.shared(HashMap::new());
        let n = a.rooms * a.members;
        let start = Instant::now();
        let clients = self.connect(&shared, "fan", n, self.args.transport, Route::Target).await?;
        let rooms = a.rooms;
        let connect_s = start.elapsed().as_secs_f64();
        let start = Instant::now();
        self.join_all(&clients, |i| format!("room{}", i % rooms)).await?;
        let join_s = start.elapsed().as_secs_f64();
        eprintln!("fanout: {n} clients connected in {connect_s:.1} s, joined {rooms} rooms in {join_s:.1} s");
        if a.settle_secs > 0 {
            // Letting the joins' own traffic pass is the point of the wait.
            tokio::time::sleep(Duration::from_secs(a.settle_secs)).await;
            eprintln!("fanout: settled for {} s", a.settle_secs);
        }
        // Senders of room r: its members, in turn.
        let mut out = Vec::new();
        for &rate in &a.rates {
            let step = self.step(&shared, &clients, rooms, a.members, rate, Duration::from_secs(a.step_secs)).await;
            let dead = clients.iter().filter(|c| c.is_finished()).count();
            eprintln!(
                "fanout {rooms}x{}: rate {rate}/s: {:.0} deliveries/s ({:.1} % delivered), p50 {:.2} ms p99 {:.2} ms, {:.0} deliveries per server CPU-s (user {:.2} s, sys {:.2} s), {dead} clients gone",
                a.members, step.deliveries_per_s, step.delivered_pct, step.latency.p50_ms, step.latency.p99_ms, step.deliveries_per_cpu_s,
                step.server_user_s, step.server_sys_s
            );
            let saturated = step.latency.p99_ms > a.max_p99_ms || step.delivered_pct < 95.0 || dead > 0;
            out.push(self.line(
                "fanout",
                json!({ "rooms": rooms, "members": a.members, "connect_s": connect_s, "join_s": join_s, "step": step, "saturated": saturated, "clients_gone": dead }),
            ));
            if saturated {
                break;
            }
        }
        eprintln!("fanout: steps done");
        if a.hold_secs > 0 {
            tokio::time::sleep(Duration::from_secs(a.hold_secs)).await;
        }
        self.close(&shared, clients).await;
        Ok(out)
    }

    /// Sends `rate` messages per second for `secs` over the rooms in turn, then waits (at most
    /// 5 s) for the deliveries still in flight.
    async fn step(
        &self,
        shared: &Arc<Shared>,
        clients: &[Client],
        rooms: usize,
        members: usize,
        rate: u64,
        secs: Duration,
    ) -> Step {
        let c = &shared.counters;
        shared.latency.take();
        let (d0, k0) = (Counters::get(&c.deliveries), Counters::get(&c.send_skipped));
        let p0 = self.proc();
        let start = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut sent = 0u64;
        let room_names: Vec<String> = (0..rooms).map(|r| format!("room{r}")).collect();
        while start.elapsed() < secs {
            tick.tick().await;
            let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
            while sent < due {
                let room = (sent as usize) % rooms;
                let member = (sent as usize / rooms) % members;
                if !clients[room + rooms * member].say(&room_names[room]) {
                    Counters::bump(&c.send_skipped);
                }
                sent += 1;
            }
        }
        let send_time = start.elapsed();
        // Drain: until every expected delivery arrived or nothing arrives for 2 s (at most 5 s),
        // so that a late delivery counts as latency in its own step rather than as a loss.
        // Counted here, not by the client tasks, which may not have encoded the last ones yet.
        let messages = sent - (Counters::get(&c.send_skipped) - k0);
        let expected = d0 + messages * members as u64;
        let drain_deadline = Instant::now() + Duration::from_secs(5);
        let mut last = (Counters::get(&c.deliveries), Instant::now());
        while Counters::get(&c.deliveries) < expected && Instant::now() < drain_deadline {
            tokio::time::sleep(Duration::from_millis(20)).await; // sampling a counter, not a fixed wait
            let now = Counters::get(&c.deliveries);
            if now != last.0 {
                last = (now, Instant::now());
            } else if last.1.elapsed() > Duration::from_secs(2) {
                break;
            }
        }
        let elapsed = start.elapsed();
        let p1 = self.proc();
        let delivered = Counters::get(&c.deliveries) - d0;
        let cpu = p1.cpu_s - p0.cpu_s;
        Step {
            rate,
            secs: send_time.as_secs_f64(),
            messages,
            skipped: Counters::get(&c.send_skipped) - k0,
            delivered,
            delivered_pct: if messages == 0 {
                100.0
            } else {
                delivered as f64 * 100.0 / (messages * members as u64) as f64
            },
            deliveries_per_s: delivered as f64 / elapsed.as_secs_f64(),
            server_cpu_s: cpu,
            server_user_s: p1.user_s - p0.user_s,
            server_sys_s: p1.sys_s - p0.sys_s,
            deliveries_per_cpu_s: if cpu > 0.0 { delivered as f64 / cpu } else { 0.0 },
            server_rss_kib: p1.rss_kib,
            latency: shared.latency.take(),
        }
    }

    /// Node id → address of each `--node`, from `GET /whoami`.
    async fn node_ids(&self) -> anyhow::Result<HashMap<String, SocketAddr>> {
        let mut map = HashMap::new();
        for &addr in &self.args.nodes {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let req = hyper::Request::get("/whoami")
                .header(hyper::header::HOST, addr.to_string())
                .body(http_body_util::Empty::<hyper::body::Bytes>::new())?;
            use http_body_util::BodyExt;
            let body = sender.send_request(req).await?.into_body().collect().await?.to_bytes();
            let v: serde_json::Value = serde_json::from_slice(&body)?;
            let id = v["node"].as_str().ok_or_else(|| anyhow::anyhow!("{addr}/whoami: no node"))?;
            map.insert(id.to_owned(), addr);
        }
        Ok(map)
    }

    /// Polling clients in rooms of `room_size`, sending `rate` messages per second: once with
    /// every request sent to the session's owner, once to a node that must forward it.
    async fn polling_only(&self, clients: usize, room_size: usize, rate: u64, secs: u64) -> anyhow::Result<Report> {
        let nodes = self.node_ids().await?;
        anyhow::ensure!(nodes.len() >= 2, "polling needs two --node addresses (clusterchat nodes)");
        let mut routes = serde_json::Map::new();
        for route in [Route::Owner, Route::NonOwner] {
            let shared = self.shared(nodes.clone());
            let cs = self.connect(&shared, "poll", clients, Transport::Polling, route).await?;
            let rooms = clients.div_ceil(room_size.max(1));
            self.join_all(&cs, |i| format!("room{}", i % rooms)).await?;
            let r0 = Counters::get(&shared.counters.requests);
            shared.request_latency.take();
            let t0 = Instant::now();
            let step = self.step(&shared, &cs, rooms, room_size.min(clients), rate, Duration::from_secs(secs)).await;
            let requests = Counters::get(&shared.counters.requests) - r0;
            let requests_per_s = requests as f64 / t0.elapsed().as_secs_f64();
            let post = shared.request_latency.take();
            eprintln!(
                "polling {route:?}: {requests_per_s:.0} requests/s, POST p50 {:.2} ms p99 {:.2} ms, delivery p99 {:.2} ms, {:.1} % delivered",
                post.p50_ms, post.p99_ms, step.latency.p99_ms, step.delivered_pct
            );
            let key = if route == Route::Owner { "owner" } else { "forwarded" };
            routes.insert(key.into(), json!({ "requests_per_s": requests_per_s, "post_latency": post, "step": step }));
            self.close(&shared, cs).await;
        }
        Ok(self.line("polling", json!({ "clients": clients, "room_size": room_size, "rate": rate, "routes": routes })))
    }

    /// Pairs of clients owned by different nodes: the publisher joins a fresh room, the
    /// subscriber joins it; from the subscriber's ack, the publisher sends; the time until the
    /// subscriber has it is the join visibility.
    async fn join_visibility(&self, trials: usize, parallel: usize) -> anyhow::Result<Report> {
        let shared = self.shared(HashMap::new());
        // Enough clients that each node owns several.
        let pool = self.connect(&shared, "jv", (trials * 2).clamp(6, 600), self.args.transport, Route::Target).await?;
        let mut by_node: HashMap<&str, Vec<&Client>> = HashMap::new();
        for c in &pool {
            by_node.entry(c.node.as_str()).or_default().push(c);
        }
        let mut nodes: Vec<&str> = by_node.keys().copied().collect();
        nodes.sort_unstable();
        let cross_node = nodes.len() >= 2;
        // Subscribers need their own probe channel: connect them separately, one per trial.
        let hist = stats::Histogram::default();
        let mut missed = 0usize;
        let mut subs = Vec::with_capacity(trials);
        for i in 0..trials {
            let (tx, rx) = tokio::sync::mpsc::channel(64);
            subs.push((self.spec(format!("jvs{i}"), self.args.transport, Route::Target), tx, rx));
        }
        let results: Vec<Result<Option<Duration>, anyhow::Error>> =
            futures_util::stream::iter(subs.into_iter().enumerate())
                .map(|(i, (spec, tx, mut rx))| {
                    let shared = shared.clone();
                    let (by_node, nodes) = (&by_node, &nodes);
                    async move {
                        let sub = Client::connect(spec, shared, Some(tx)).await?;
                        // A publisher on another node than the subscriber's owner.
                        let other = nodes
                            .iter()
                            .copied()
                            .filter(|n| !cross_node || *n != sub.node)
                            .nth(i % nodes.len().max(2).saturating_sub(1))
                            .or(nodes.first().copied());
                        let publisher = other
                            .and_then(|n| by_node.get(n))
                            .map(|v| v[i % v.len()])
                            .ok_or_else(|| anyhow::anyhow!("no publisher"))?;
                        let room = format!("jv{i}-{}", stats::now_us());
                        publisher.join(&room).await?;
                        let acked = sub.join(&room).await?;
                        let token = stats::now_us().to_string();
                        publisher.emit_ack("chat message", json!({ "room": room, "message": token })).await?;
                        let seen = tokio::time::timeout(Duration::from_secs(2), async {
                            while let Some((at, message)) = rx.recv().await {
                                if message == token {
                                    return Some(at);
                                }
                            }
                            None
                        })
                        .await
                        .ok()
                        .flatten();
                        let _ = publisher.emit("leave room", json!({ "room": room }));
                        drop(sub); // its task ends at stop
                        Ok(seen.map(|at| at.saturating_duration_since(acked)))
                    }
                })
                .buffer_unordered(parallel.max(1))
                .collect()
                .await;
        let mut errors = 0;
        for r in results {
            match r {
                Ok(Some(d)) => hist.record(d),
                Ok(None) => missed += 1,
                Err(e) => {
                    errors += 1;
                    eprintln!("join-visibility trial failed: {e}");
                }
            }
        }
        let s: Summary = hist.take();
        eprintln!(
            "join visibility ({}): p50 {:.2} ms p99 {:.2} ms, {missed} missed, {errors} failed",
            if cross_node { "cross-node" } else { "one node" },
            s.p50_ms,
            s.p99_ms
        );
        self.close(&shared, pool).await;
        Ok(self.line(
            "join-visibility",
            json!({ "trials": trials, "cross_node": cross_node, "latency": s, "missed": missed, "errors": errors }),
        ))
    }
}

/// One send-rate step.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub rate: u64,
    pub secs: f64,
    pub messages: u64,
    pub skipped: u64,
    pub delivered: u64,
    pub delivered_pct: f64,
    pub deliveries_per_s: f64,
    /// Server CPU seconds of the step, user plus system, and each apart.
    pub server_cpu_s: f64,
    pub server_user_s: f64,
    pub server_sys_s: f64,
    pub deliveries_per_cpu_s: f64,
    pub server_rss_kib: u64,
    pub latency: Summary,
}
