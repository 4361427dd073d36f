//! A deterministic simulation of recovery across N nodes: random scripts of publishes, link
//! delays, node crashes (`kill -9`: what was in flight from or to the node is lost, and so is
//! whatever its clients had not read yet), restarts, clients reconnecting through any node,
//! and keepers handing their parked records over as a leaving node does, run against the real
//! [`Keeper`] and [`Frontier`]. After each script, once the cluster is quiet, every client
//! must have received each broadcast owed to it exactly once, each publisher's in counter
//! order. A failing run prints its seed; `SIM_SEED=<seed> cargo test --lib
//! socketio::recovery::sim` replays it, `SIM_RUNS=<n>` runs n seeds.
//!
//! The model follows the server's protocol (ARCHITECTURE.md): a publisher stamps a broadcast,
//! delivers it to its node's members and keeps, and queues it to every other node with members
//! or records in the room, on one FIFO link per ordered pair; a socket's record lives on
//! another node from connect on; a restore joins (holding live broadcasts), takes the record
//! with the client's frontier, keeps the socket on a new keeper seeded with the replay, pushes
//! the held broadcasts to it, then releases. Room subscriptions take effect at once (the rooms
//! core and its own simulation cover how they spread). One crash at a time: a node is killed
//! only when every restore and re-keep of the previous crash is done.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{Broadcast, Frontier, Holder, KeepRequest, Keeper, RecoveryConfig, Stamp};

const ROOMS: usize = 3;

/// A broadcast's identity in the model: (publisher node, counter) as its stamp says.
type Id = (u32, u64);

struct Socket {
    user: usize,
    pid: String,
    frontier: Frontier,
    keeper: usize,
    version: u64,
    /// Sent to the client and not yet read by it (lost if the node dies), with when.
    unread: VecDeque<(Id, Frontier, u64)>,
    /// Broadcasts held while the socket is restored.
    held: Option<Vec<Broadcast>>,
}

struct Node {
    alive: bool,
    generation: u64,
    keeper: Keeper,
    /// This node's publisher (one per process life) and its counter.
    publisher: u32,
    counter: u64,
    sockets: Vec<Socket>,
}

struct User {
    rooms: Vec<usize>,
    /// Its session's pid (the key of its record).
    pid: String,
    /// What the client read, in order, and the offset of the last broadcast it read.
    received: Vec<Id>,
    offset: Option<Frontier>,
    /// Connected (the node it is on), or away.
    on: Option<usize>,
    /// A restore under way: (node, step).
    restoring: Option<(usize, Restore)>,
    /// When it first joined its rooms: broadcasts published since are owed to it.
    since: u64,
}

#[derive(Clone)]
enum Restore {
    /// Joined (holding), the record found on `keeper` and its pid.
    Joined { keeper: usize, pid: String },
    /// Taken: the replay, waiting for the new keeper.
    Taken { pid: String, missed: Vec<Broadcast> },
}

struct Sim {
    rng: StdRng,
    nodes: Vec<Node>,
    users: Vec<User>,
    /// FIFO links: (from, to) → broadcasts (room, stamp).
    links: BTreeMap<(usize, usize), VecDeque<(usize, Stamp)>>,
    /// Every broadcast: its room, publisher node and when it was published (step).
    published: BTreeMap<Id, (usize, usize, u64)>,
    /// Publishers of nodes that were killed, with their counter then: those broadcasts may be
    /// lost (a restarted node's publisher keeps its id and counts on from above).
    dead_publishers: BTreeMap<u32, u64>,
    step: u64,
    /// When the last node was killed.
    last_kill: u64,
    next_pid: u64,
    trace: Vec<String>,
    failures: Vec<String>,
}

fn frames() -> Vec<crate::engineio::Frame> {
    Vec::new()
}

impl Sim {
    fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let n = rng.random_range(3..=5);
        let users = rng.random_range(4..=10);
        let config = RecoveryConfig { max_missed: 10_000, log_len: 100_000, ..RecoveryConfig::default() };
        let nodes = (0..n)
            .map(|i| Node {
                alive: true,
                generation: 1,
                keeper: Keeper::new(config.clone()),
                publisher: (i as u32 + 1) * 1000 + 1,
                counter: 0,
                sockets: Vec::new(),
            })
            .collect();
        let mut sim = Sim {
            rng,
            nodes,
            users: Vec::new(),
            links: BTreeMap::new(),
            published: BTreeMap::new(),
            dead_publishers: BTreeMap::new(),
            step: 0,
            last_kill: 0,
            next_pid: 0,
            trace: Vec::new(),
            failures: Vec::new(),
        };
        for u in 0..users {
            let mut rooms: Vec<usize> = (0..ROOMS).filter(|_| sim.rng.random_bool(0.6)).collect();
            if rooms.is_empty() {
                rooms.push(u % ROOMS);
            }
            sim.users.push(User {
                rooms,
                pid: String::new(),
                received: Vec::new(),
                offset: None,
                on: None,
                restoring: None,
                since: 0,
            });
            let node = sim.rng.random_range(0..n);
            sim.connect(u, node);
        }
        sim
    }

    fn holder(&self, node: usize) -> Holder {
        Holder { node: node.to_string().into(), generation: self.nodes[node].generation }
    }

    fn live(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].alive).collect()
    }

    /// A keeper for a socket of `node`: another live node, chosen by the pid.
    fn keeper_for(&self, node: usize, pid: &str) -> usize {
        let others: Vec<usize> = self.live().into_iter().filter(|&i| i != node).collect();
        let h = pid.bytes().fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
        if others.is_empty() {
            node
        } else {
            others[h % others.len()]
        }
    }

    /// A new session: its record on a keeper, then its joins.
    fn connect(&mut self, user: usize, node: usize) {
        self.next_pid += 1;
        let pid = format!("p{}", self.next_pid);
        let keeper = self.keeper_for(node, &pid);
        let rooms = self.users[user].rooms.clone();
        self.keep(keeper, node, &pid, user, 1, Vec::new());
        self.nodes[node].sockets.push(Socket {
            user,
            pid,
            frontier: Frontier::default(),
            keeper,
            version: 1,
            unread: VecDeque::new(),
            held: None,
        });
        let u = &mut self.users[user];
        u.pid = self.nodes[node].sockets.last().unwrap().pid.clone();
        u.on = Some(node);
        u.since = self.step;
        u.offset = None;
        u.received.clear();
        self.trace.push(format!("{}: user {user} connects to {node} (rooms {rooms:?}), kept on {keeper}", self.step));
    }

    fn keep(&mut self, keeper: usize, holder: usize, pid: &str, user: usize, version: u64, seed: Vec<Broadcast>) {
        let req = KeepRequest {
            pid: pid.to_owned(),
            sid: format!("s{user}"),
            rooms: super::RoomsUpdate::All(self.users[user].rooms.iter().map(|r| r.to_string()).collect()),
            version,
        };
        let holder = self.holder(holder);
        self.nodes[keeper].keeper.keep(req, holder, seed).expect("room for records");
    }

    /// Whether `node` receives broadcasts of `room`: members or records there.
    fn subscribed(&self, node: usize, room: usize) -> bool {
        let n = &self.nodes[node];
        n.alive
            && (n.keeper.keeps(&room.to_string()) || n.sockets.iter().any(|s| self.users[s.user].rooms.contains(&room)))
    }

    fn publish(&mut self, node: usize, room: usize) {
        let n = &mut self.nodes[node];
        n.counter += 1;
        let stamp = Stamp { publisher: n.publisher, counter: n.counter };
        self.published.insert((stamp.publisher, stamp.counter), (room, node, self.step));
        self.trace.push(format!("{}: {node} publishes {}:{} in {room}", self.step, stamp.publisher, stamp.counter));
        self.deliver(node, room, stamp);
        for to in 0..self.nodes.len() {
            if to != node && self.subscribed(to, room) {
                self.links.entry((node, to)).or_default().push_back((room, stamp));
            }
        }
    }

    /// A broadcast reaches `node`: logged for its records, queued to its members.
    fn deliver(&mut self, node: usize, room: usize, stamp: Stamp) {
        let users = &self.users;
        let n = &mut self.nodes[node];
        n.keeper.delivered(&room.to_string(), stamp, &frames());
        for socket in n.sockets.iter_mut().filter(|s| users[s.user].rooms.contains(&room)) {
            match socket.held.as_mut() {
                Some(held) => held.push((stamp, frames())),
                None => send(socket, stamp, self.step),
            }
        }
    }

    /// One random event.
    fn event(&mut self) {
        self.step += 1;
        let live = self.live();
        match self.rng.random_range(0..100) {
            0..=34 => {
                // A connected user publishes in one of its rooms.
                let connected: Vec<usize> = (0..self.users.len()).filter(|&u| self.users[u].on.is_some()).collect();
                if let Some(&u) = pick(&mut self.rng, &connected) {
                    let room = *pick(&mut self.rng, &self.users[u].rooms.clone()).unwrap();
                    self.publish(self.users[u].on.unwrap(), room);
                }
            }
            35..=64 => {
                // A link delivers its next broadcast.
                let busy: Vec<(usize, usize)> =
                    self.links.iter().filter(|(_, q)| !q.is_empty()).map(|(k, _)| *k).collect();
                if let Some(&(from, to)) = pick(&mut self.rng, &busy) {
                    let (room, stamp) = self.links.get_mut(&(from, to)).unwrap().pop_front().unwrap();
                    if self.nodes[to].alive {
                        self.deliver(to, room, stamp);
                    }
                }
            }
            65..=84 => {
                // A client reads what its node sent it.
                let reading: Vec<(usize, usize)> = live
                    .iter()
                    .flat_map(|&n| (0..self.nodes[n].sockets.len()).map(move |i| (n, i)))
                    .filter(|&(n, i)| !self.nodes[n].sockets[i].unread.is_empty())
                    .collect();
                if let Some(&(n, i)) = pick(&mut self.rng, &reading) {
                    let socket = &mut self.nodes[n].sockets[i];
                    let (id, offset, _) = socket.unread.pop_front().unwrap();
                    let user = &mut self.users[socket.user];
                    user.received.push(id);
                    user.offset = Some(offset);
                }
            }
            85..=94 => self.advance_restore(),
            95..=96 if live.len() == self.nodes.len() => {
                let from = *pick(&mut self.rng, &live).unwrap();
                self.hand_over(from);
            }
            _ => {
                if self.quiet_enough() && live.len() == self.nodes.len() {
                    let victim = *pick(&mut self.rng, &live).unwrap();
                    self.kill(victim);
                } else {
                    let dead = self.dead();
                    if let Some(&dead) = pick(&mut self.rng, &dead) {
                        self.restart(dead);
                    }
                }
            }
        }
    }

    fn dead(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&i| !self.nodes[i].alive).collect()
    }

    /// The previous crash is over: no restore under way, no client away, and every client
    /// has read what was published before that crash (a node re-keeps its sockets whose
    /// keeper died with a log from then on; what they had been sent before and never read
    /// would need the dead keeper: a second fault).
    fn quiet_enough(&self) -> bool {
        self.users.iter().all(|u| u.on.is_some() && u.restoring.is_none())
            && self
                .nodes
                .iter()
                .all(|n| n.sockets.iter().all(|s| s.unread.iter().all(|e| self.published[&e.0].2 > self.last_kill)))
            && self
                .links
                .values()
                .all(|q| q.iter().all(|(_, s)| self.published[&(s.publisher, s.counter)].2 > self.last_kill))
    }

    fn kill(&mut self, victim: usize) {
        self.trace.push(format!("{}: kill -9 {victim}", self.step));
        self.last_kill = self.step;
        let node = &mut self.nodes[victim];
        node.alive = false;
        self.dead_publishers.insert(node.publisher, node.counter);
        // Its clients lose what they had not read; its records and logs are gone.
        for socket in std::mem::take(&mut node.sockets) {
            let user = &mut self.users[socket.user];
            user.on = None;
            user.restoring = None;
        }
        node.keeper = Keeper::new(node.keeper.config().clone());
        // What was in flight from it may or may not arrive; what was going to it is lost.
        for ((from, to), queue) in self.links.iter_mut() {
            if *to == victim {
                queue.clear();
            } else if *from == victim {
                let keep = self.rng.random_range(0..=queue.len());
                queue.truncate(keep);
            }
        }
        // Users restoring through it start over (their client sees the connection fail).
        for user in self.users.iter_mut() {
            if user.restoring.as_ref().is_some_and(|(n, _)| *n == victim) {
                user.restoring = None;
            }
        }
        // The others learn it is gone: its records are parked, records it kept are re-sent.
        let generation = self.nodes[victim].generation;
        let gone = Holder { node: victim.to_string().into(), generation };
        for i in self.live() {
            self.nodes[i].keeper.holders_gone(|h| *h != gone);
            let rekeep: Vec<usize> =
                (0..self.nodes[i].sockets.len()).filter(|&s| self.nodes[i].sockets[s].keeper == victim).collect();
            for s in rekeep {
                let (pid, user) = (self.nodes[i].sockets[s].pid.clone(), self.nodes[i].sockets[s].user);
                let keeper = self.keeper_for(i, &pid);
                let socket = &mut self.nodes[i].sockets[s];
                socket.keeper = keeper;
                socket.version += 1;
                let version = socket.version;
                self.keep(keeper, i, &pid, user, version, Vec::new());
            }
        }
    }

    fn restart(&mut self, node: usize) {
        self.trace.push(format!("{}: restart {node}", self.step));
        let n = &mut self.nodes[node];
        n.alive = true;
        n.generation += 1;
        // The same publisher (node, slot), counting from above its earlier life's counters.
        n.counter += 1_000_000;
    }

    /// Moves one away user's reconnection on by one step.
    fn advance_restore(&mut self) {
        let away: Vec<usize> = (0..self.users.len()).filter(|&u| self.users[u].on.is_none()).collect();
        let Some(&u) = pick(&mut self.rng, &away) else { return };
        match self.users[u].restoring.clone() {
            None => {
                // Reconnects through a live node: finds its record, joins its rooms, holds.
                let live = self.live();
                let m = *pick(&mut self.rng, &live).unwrap();
                let pid = self.users[u].pid.clone();
                let found =
                    (0..self.nodes.len()).find(|&k| self.nodes[k].alive && self.nodes[k].keeper.find(&pid).is_ok());
                let Some(keeper) = found else {
                    // One crash at a time: its record must be on a live keeper.
                    self.failures.push(format!("user {u} found no record for {pid}"));
                    self.trace.push(format!("{}: user {u} finds no record; new session on {m}", self.step));
                    self.connect(u, m);
                    return;
                };
                let version = 0;
                self.nodes[m].sockets.push(Socket {
                    user: u,
                    pid: pid.clone(),
                    frontier: self.users[u].offset.clone().unwrap_or_default(),
                    keeper: m,
                    version,
                    unread: VecDeque::new(),
                    held: Some(Vec::new()),
                });
                self.users[u].restoring = Some((m, Restore::Joined { keeper, pid }));
                let _ = version;
                self.trace.push(format!("{}: user {u} restoring on {m}, record on {keeper}", self.step));
            }
            Some((m, Restore::Joined { keeper, pid })) => {
                // A barrier first: every node's pushes to the keeper queued before now (those
                // published before this node's joins took effect there) arrive, then the take.
                self.barrier(keeper);
                let frontier = self.users[u].offset.clone().unwrap_or_default();
                let missed = match self.nodes[keeper].keeper.take(&pid, &frontier) {
                    Ok((missed, _)) => missed,
                    Err(err) => {
                        self.failures.push(format!("user {u}'s record not taken: {err}"));
                        Vec::new()
                    }
                };
                self.users[u].restoring = Some((m, Restore::Taken { pid, missed }));
            }
            Some((m, Restore::Taken { pid, missed })) => {
                // Kept on a new keeper with the replay as seed; a barrier (what was published
                // before the new keeper's subscription and is on its way here arrives, held);
                // the held ones follow to the keeper; released.
                let keeper = self.keeper_for(m, &pid);
                self.keep(keeper, m, &pid, u, 1, missed.clone());
                self.barrier(m);
                let i = self.nodes[m].sockets.iter().position(|s| s.user == u).unwrap();
                let held = self.nodes[m].sockets[i].held.take().unwrap_or_default();
                let holder = self.holder(m);
                self.nodes[keeper].keeper.seed(&pid, &holder, held.clone());
                let socket = &mut self.nodes[m].sockets[i];
                socket.keeper = keeper;
                socket.version = 1;
                for (stamp, _) in missed.iter().chain(held.iter()) {
                    send(socket, *stamp, self.step);
                }
                self.users[u].on = Some(m);
                self.users[u].restoring = None;
                self.trace.push(format!(
                    "{}: user {u} restored on {m}: {} missed, kept on {keeper}",
                    self.step,
                    missed.len()
                ));
            }
        }
    }

    /// `from` hands the records parked on it to other keepers, as a node leaving does: each
    /// with what its rooms logged as the new keeper's seed (the new keeper subscribes at once);
    /// then a barrier (what was published before that subscription is still on its way to
    /// `from`, not to the new keeper) and what `from` logged since, as a second seed. Records
    /// with a restore under way stay (their take is next).
    fn hand_over(&mut self, from: usize) {
        let restoring: BTreeSet<String> =
            self.users.iter().filter(|u| u.restoring.is_some()).map(|u| u.pid.clone()).collect();
        for (req, seed) in self.nodes[from].keeper.parked(usize::MAX) {
            if restoring.contains(&req.pid) {
                continue;
            }
            let pid = req.pid.clone();
            let to = self.keeper_for(from, &pid);
            let holder = self.holder(from);
            let sent: BTreeSet<Id> = seed.iter().map(|(s, _)| (s.publisher, s.counter)).collect();
            self.nodes[to].keeper.keep(req, holder.clone(), seed).expect("room for records");
            self.nodes[to].keeper.release(&pid, &holder, 0, true);
            self.barrier(from);
            let later: Vec<Broadcast> = self.nodes[from]
                .keeper
                .logged_for(&pid, usize::MAX)
                .into_iter()
                .filter(|(s, _)| !sent.contains(&(s.publisher, s.counter)))
                .collect();
            self.nodes[to].keeper.seed(&pid, &holder, later);
            self.nodes[from].keeper.forget(&pid);
            self.trace.push(format!("{}: {from} hands {pid} over to {to}", self.step));
        }
    }

    /// What every node queued for `to` until now arrives.
    fn barrier(&mut self, to: usize) {
        for from in 0..self.nodes.len() {
            while let Some((room, stamp)) = self.links.get_mut(&(from, to)).and_then(VecDeque::pop_front) {
                self.deliver(to, room, stamp);
            }
        }
    }

    /// Lets everything in flight arrive, every restore finish and every client read.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            let links = self.links.values().any(|q| !q.is_empty());
            let away = self.users.iter().any(|u| u.on.is_none());
            let unread = self.nodes.iter().any(|n| n.alive && n.sockets.iter().any(|s| !s.unread.is_empty()));
            if !links && !away && !unread {
                return;
            }
            self.step += 1;
            if links {
                let busy: Vec<(usize, usize)> =
                    self.links.iter().filter(|(_, q)| !q.is_empty()).map(|(k, _)| *k).collect();
                let (from, to) = *pick(&mut self.rng, &busy).unwrap();
                let (room, stamp) = self.links.get_mut(&(from, to)).unwrap().pop_front().unwrap();
                if self.nodes[to].alive {
                    self.deliver(to, room, stamp);
                }
            } else if away {
                self.advance_restore();
            } else {
                for n in self.nodes.iter_mut().filter(|n| n.alive) {
                    for socket in n.sockets.iter_mut() {
                        let user = &mut self.users[socket.user];
                        for (id, offset, _) in socket.unread.drain(..) {
                            user.received.push(id);
                            user.offset = Some(offset);
                        }
                    }
                }
            }
        }
        self.failures.push("the cluster never settled".into());
    }

    /// Each client read every broadcast owed to it once, each publisher's in counter order.
    fn check(&mut self) {
        for (u, user) in self.users.iter().enumerate() {
            let mut seen = BTreeSet::new();
            let mut last: HashMap<u32, u64> = HashMap::new();
            for id in &user.received {
                if !seen.insert(*id) {
                    self.failures.push(format!("user {u} read {id:?} twice"));
                }
                if last.get(&id.0).is_some_and(|c| *c >= id.1) {
                    self.failures.push(format!("user {u} read {id:?} after {}:{}", id.0, last[&id.0]));
                }
                last.insert(id.0, id.1);
                if self.published.get(id).is_none_or(|(room, _, _)| !user.rooms.contains(room)) {
                    self.failures.push(format!("user {u} read {id:?}, not of its rooms"));
                }
            }
            for (id, (room, _, at)) in &self.published {
                let lost_with_its_node = self.dead_publishers.get(&id.0).is_some_and(|upto| id.1 <= *upto);
                let owed = user.rooms.contains(room) && *at > user.since && !lost_with_its_node;
                if owed && !seen.contains(id) {
                    self.failures.push(format!("user {u} never read {id:?} (room {room}, published at {at})"));
                }
            }
        }
    }
}

/// Sends a broadcast to a socket through its frontier.
fn send(socket: &mut Socket, stamp: Stamp, step: u64) {
    if socket.frontier.admit(stamp) {
        socket.unread.push_back(((stamp.publisher, stamp.counter), socket.frontier.clone(), step));
    }
}

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> Option<&'a T> {
    (!items.is_empty()).then(|| &items[rng.random_range(0..items.len())])
}

fn seeds() -> Vec<u64> {
    crate::cluster::core::sim::sim_seeds(200)
}

#[test]
fn every_client_reads_what_it_is_owed_once_and_in_order_through_crashes() {
    let (mut crashes, mut restores) = (0, 0);
    for seed in seeds() {
        let mut sim = Sim::new(seed);
        for _ in 0..sim.rng.random_range(200..600) {
            sim.event();
        }
        sim.settle();
        sim.check();
        crashes += sim.trace.iter().filter(|t| t.contains("kill -9")).count();
        restores += sim.trace.iter().filter(|t| t.contains("restored on")).count();
        if !sim.failures.is_empty() {
            for line in &sim.trace {
                eprintln!("{line}");
            }
            panic!("seed {seed}: {:#?}", &sim.failures[..sim.failures.len().min(10)]);
        }
    }
    // The scripts did what they are for.
    if std::env::var("SIM_SEED").is_err() {
        assert!(crashes > 0 && restores > crashes, "{crashes} crashes, {restores} restores");
    }
}
