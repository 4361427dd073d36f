//! A deterministic simulation of N rooms cores: random scripts of joins, leaves, publishes,
//! node deaths, failed requests and arbitrary message delays, with the invariants of
//! [`super`] checked after every step and once the cluster is quiet. A failing run prints its
//! seed; `SIM_SEED=<seed> cargo test --lib cluster::core::sim` replays it (`SIM_DEBUG=1` also
//! prints every message and each publisher's tables), `SIM_RUNS=<n>` runs n seeds.
//!
//! The network is modelled as the real one is built: per ordered pair of nodes one FIFO link
//! (a peer's RPC connection carries its pushes and requests in order), answers on their own
//! (they travel on the asker's connection), and gossip as each node's view of every other
//! node's advertised rooms, refreshed one pair at a time in random order. Publishes are never
//! lost but with a dead node; requests may fail (a timeout): the asker is told so.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{wire_labels, Effect, RoomId, RoomsCore, Version};
use crate::cluster::membership::{MemberInfo, Members, RoomSet};

/// A node's local labels as the core takes them.
fn shared(labels: Vec<String>) -> crate::socketio::Labels {
    labels.into_iter().map(Into::into).collect()
}

const NSP: &str = "/chat";

fn room(name: &str) -> RoomId {
    (NSP.to_owned(), name.to_owned())
}

/// What travels on a link, in order.
#[derive(Debug, Clone)]
enum Msg {
    Presence { room: RoomId, labels: Vec<String>, version: Version },
    Ask { id: u64, room: RoomId, labels: Vec<String>, version: Version, notify: bool },
    Publish { room: RoomId, id: u64 },
}

/// An answer on its way back to the asker.
#[derive(Debug, Clone)]
struct Answer {
    to: usize,
    from: usize,
    room: RoomId,
    labels: Option<(Version, Vec<String>)>,
    notify: bool,
    asked: Version,
}

struct Node {
    name: String,
    core: RoomsCore,
    alive: bool,
    /// Users here: room → users.
    members: BTreeMap<RoomId, BTreeSet<String>>,
    /// This node's gossip: its advertised rooms (a persistent set, as membership builds it).
    advertised: RoomSet,
    advertise_due: bool,
    /// Local changes await their `Presence` pushes ([`Effect::PresenceDue`]).
    presence_due: bool,
    /// A push under way (the driver takes the labels between its two steps, unlocked).
    pushing: Option<Pushing>,
    /// What it believes of the others: node → their advertised rooms, for the live ones.
    view: BTreeMap<usize, RoomSet>,
    /// Users whose join waits for the room's [`Effect::Joined`].
    waiting: BTreeMap<RoomId, Vec<String>>,
    /// Publishes received: id → times.
    received: BTreeMap<u64, u32>,
    /// The last publish id received per (publisher, room): per-sender order.
    last_from: BTreeMap<(usize, RoomId), u64>,
}

/// A push under way: the rooms the pusher took and the clock then, and their labels if it
/// has taken those already.
type Pushing = (Vec<RoomId>, u64, Option<Vec<Vec<String>>>);

/// One user's join, for the visibility check.
#[derive(Debug, Clone)]
struct Join {
    node: usize,
    user: String,
    room: RoomId,
    /// Step at which the join was acked (released), if it was.
    acked: Option<u64>,
    left: bool,
}

#[derive(Debug, Clone)]
struct Publish {
    from: usize,
    room: RoomId,
    at: u64,
}

struct Sim {
    rng: StdRng,
    nodes: Vec<Node>,
    links: BTreeMap<(usize, usize), VecDeque<Msg>>,
    answers: Vec<Answer>,
    joins: Vec<Join>,
    publishes: BTreeMap<u64, Publish>,
    /// Publishers that died: their fan-out may have been cut short.
    step: u64,
    next_id: u64,
    faults: bool,
    /// Asks whose asker timed out while they were still on their way: the peer takes them
    /// late, and its answer finds nobody waiting.
    timed_out: BTreeSet<u64>,
}

const ROOMS: [&str; 3] = ["lobby", "café", "a\nb"];

impl Sim {
    fn new(seed: u64, n: usize, faults: bool) -> Self {
        let names: Vec<String> = (0..n).map(|i| format!("node{i}")).collect();
        let nodes = names
            .iter()
            .map(|name| Node {
                name: name.clone(),
                core: RoomsCore::new(name.clone(), 1),
                alive: true,
                members: BTreeMap::new(),
                advertised: RoomSet::new(),
                advertise_due: false,
                presence_due: false,
                pushing: None,
                view: BTreeMap::new(),
                waiting: BTreeMap::new(),
                received: BTreeMap::new(),
                last_from: BTreeMap::new(),
            })
            .collect();
        let mut sim = Self {
            rng: StdRng::seed_from_u64(seed),
            nodes,
            links: BTreeMap::new(),
            answers: Vec::new(),
            joins: Vec::new(),
            publishes: BTreeMap::new(),
            step: 0,
            next_id: 0,
            faults,
            timed_out: BTreeSet::new(),
        };
        // Everyone knows everyone at the start (the node met the ring before serving).
        for i in 0..n {
            for j in 0..n {
                if i != j {
                    sim.nodes[i].view.insert(j, RoomSet::new());
                }
            }
            sim.snapshot(i);
        }
        sim
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn index(&self, name: &str) -> usize {
        self.nodes.iter().position(|n| n.name == name).expect("a simulated node")
    }

    /// Gives node `i` a membership snapshot built from its view.
    fn snapshot(&mut self, i: usize) {
        let mut members = Members::default();
        let addr = "127.0.0.1:1".parse().unwrap();
        let me = &self.nodes[i];
        let mine = std::iter::once((i, me.advertised.clone()));
        for (j, rooms) in mine.chain(me.view.iter().map(|(j, r)| (*j, r.clone()))) {
            let name = self.nodes[j].name.clone();
            let info = MemberInfo {
                node_id: name.clone(),
                generation: 1,
                gossip: addr,
                http: Some(addr),
                rpc: Some(addr),
                ready: true,
                heartbeat: 0,
                rooms,
                version: 0,
            };
            members.nodes.insert(name, info);
        }
        let mut out = Vec::new();
        self.nodes[i].core.membership_changed(&members, &mut out);
        self.effects(i, out);
    }

    /// Carries out node `i`'s effects.
    fn effects(&mut self, i: usize, out: Vec<Effect>) {
        for effect in out {
            match effect {
                Effect::Presence { to, room, labels, version } => {
                    let j = self.index(&to);
                    self.links.entry((i, j)).or_default().push_back(Msg::Presence {
                        room,
                        labels: wire_labels(&labels),
                        version,
                    });
                }
                Effect::Ask { to, room, labels, version, notify } => {
                    let j = self.index(&to);
                    let id = self.id();
                    self.links.entry((i, j)).or_default().push_back(Msg::Ask {
                        id,
                        room,
                        labels: wire_labels(&labels),
                        version,
                        notify,
                    });
                }
                Effect::Notify { .. } => {}
                Effect::Advertise => self.nodes[i].advertise_due = true,
                Effect::PresenceDue => self.nodes[i].presence_due = true,
                Effect::Joined { room } => {
                    let users = self.nodes[i].waiting.remove(&room).unwrap_or_default();
                    let step = self.step;
                    for j in self.joins.iter_mut().filter(|j| j.node == i && j.room == room && j.acked.is_none()) {
                        if users.contains(&j.user) {
                            j.acked = Some(step);
                        }
                    }
                }
            }
        }
    }

    fn labels(&self, i: usize, room: &RoomId) -> Vec<String> {
        self.nodes[i].members.get(room).map(|u| u.iter().cloned().collect()).unwrap_or_default()
    }

    /// Reports a change of node `i`'s members of `room` as the driver does: a room with
    /// members before and after is touched, its labels taken by the pusher (or, at random,
    /// changed with its labels at once, which the core takes too); returns whether the
    /// member waits for [`Effect::Joined`].
    fn report(&mut self, i: usize, room: &RoomId) -> bool {
        let labels = self.labels(i, room);
        let mut out = Vec::new();
        let touched = if !labels.is_empty() && self.rng.random_bool(0.8) {
            self.nodes[i].core.local_touched(room, &mut out)
        } else {
            None
        };
        let wait = touched.unwrap_or_else(|| self.nodes[i].core.local_changed(room.clone(), shared(labels), &mut out));
        self.effects(i, out);
        wait
    }

    fn join(&mut self, i: usize, user: String, room: RoomId) {
        if !self.nodes[i].members.entry(room.clone()).or_default().insert(user.clone()) {
            return;
        }
        let wait = self.report(i, &room);
        self.joins.push(Join {
            node: i,
            user: user.clone(),
            room: room.clone(),
            acked: (!wait).then_some(self.step),
            left: false,
        });
        if wait {
            self.nodes[i].waiting.entry(room).or_default().push(user);
        }
    }

    fn leave(&mut self, i: usize, user: &str, room: &RoomId) {
        let Some(users) = self.nodes[i].members.get_mut(room) else { return };
        if !users.remove(user) {
            return;
        }
        if users.is_empty() {
            self.nodes[i].members.remove(room);
        }
        for j in self.joins.iter_mut().filter(|j| j.node == i && j.user == user && &j.room == room && !j.left) {
            j.left = true;
        }
        self.report(i, room);
    }

    fn publish(&mut self, i: usize, room: RoomId) {
        let id = self.id();
        self.publishes.insert(id, Publish { from: i, room: room.clone(), at: self.step });
        let targets = self.nodes[i].core.subscribers(&room);
        if std::env::var("SIM_DEBUG").is_ok() {
            eprintln!(
                "step {} publish {id} {:?} from {i}: targets {targets:?}\n{:#?}",
                self.step, room.1, self.nodes[i].core
            );
        }
        let mut seen = BTreeSet::new();
        for to in targets {
            assert!(seen.insert(to.clone()), "publish {id}: {to} targeted twice");
            let j = self.index(&to);
            self.links.entry((i, j)).or_default().push_back(Msg::Publish { room: room.clone(), id });
        }
    }

    /// Delivers the next message of link (from, to).
    fn deliver(&mut self, from: usize, to: usize) {
        let Some(msg) = self.links.get_mut(&(from, to)).and_then(VecDeque::pop_front) else { return };
        let sender = self.nodes[from].name.clone();
        if std::env::var("SIM_DEBUG").is_ok() {
            eprintln!("step {} deliver {from}->{to}: {msg:?}", self.step);
        }
        let mut out = Vec::new();
        match msg {
            Msg::Presence { room, labels, version } => {
                self.nodes[to].core.on_presence(&sender, &room, labels, version, &mut out)
            }
            Msg::Ask { id, room, labels, version, notify } => {
                // An ask its asker timed out on was answered "no answer" then: the peer's
                // answer now finds nobody waiting.
                let timed_out = self.timed_out.remove(&id);
                if self.faults && self.rng.random_bool(0.1) {
                    if !timed_out {
                        self.fail_ask(to, from, room, version, notify);
                    }
                } else {
                    let answer = self.nodes[to].core.on_subscribe(&sender, &room, labels, version, &mut out);
                    if !timed_out {
                        let labels = Some((answer.0, wire_labels(&answer.1)));
                        self.answers.push(Answer { to: from, from: to, room, labels, notify, asked: version });
                    }
                }
            }
            Msg::Publish { room, id } => {
                let node = &mut self.nodes[to];
                let times = node.received.entry(id).or_default();
                *times += 1;
                assert_eq!(*times, 1, "publish {id} reached {} twice", node.name);
                if let Some(last) = node.last_from.insert((from, room.clone()), id) {
                    assert!(last < id, "{}: publish {id} from {sender} after {last}", node.name);
                }
            }
        }
        self.effects(to, out);
    }

    fn fail_ask(&mut self, from: usize, to: usize, room: RoomId, asked: Version, notify: bool) {
        self.answers.push(Answer { to, from, room, labels: None, notify, asked });
    }

    fn answer(&mut self, k: usize) {
        let a = self.answers.swap_remove(k);
        if !self.nodes[a.to].alive {
            return;
        }
        let mut labels = a.labels;
        if labels.is_some() && self.faults && self.rng.random_bool(0.05) {
            labels = None; // the answer was lost: the asker timed out
        }
        let sender = self.nodes[a.from].name.clone();
        if std::env::var("SIM_DEBUG").is_ok() {
            eprintln!("step {} answer {}->{}: {:?} {labels:?}", self.step, a.from, a.to, a.room.1);
        }
        let mut out = Vec::new();
        self.nodes[a.to].core.answered(&sender, &a.room, a.asked, labels, a.notify, &mut out);
        self.effects(a.to, out);
    }

    /// Node `i`'s pusher, a moment after presence was due, in one go.
    fn push_presence(&mut self, i: usize) {
        self.take_presence(i, true);
        self.finish_push(i);
    }

    /// The pusher's first step: takes the due rooms (and their labels now, if `labels`).
    fn take_presence(&mut self, i: usize, labels: bool) {
        self.nodes[i].presence_due = false;
        let (due, taken) = self.nodes[i].core.take_presence_due();
        let due: Vec<RoomId> = due.into_iter().collect();
        let fresh = labels.then(|| due.iter().map(|r| self.labels(i, r)).collect());
        self.nodes[i].pushing = Some((due, taken, fresh));
    }

    /// The pusher's last step: the rooms' labels (taken now if not before) to the core.
    fn finish_push(&mut self, i: usize) {
        let Some((due, taken, fresh)) = self.nodes[i].pushing.take() else { return };
        let fresh = fresh.unwrap_or_else(|| due.iter().map(|r| self.labels(i, r)).collect());
        let fresh = due.into_iter().zip(fresh.into_iter().map(shared)).collect();
        let mut out = Vec::new();
        self.nodes[i].core.push_presence(taken, fresh, &mut out);
        self.effects(i, out);
    }

    /// Node `i` writes its due gossip keys.
    fn advertise(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.advertise_due = false;
        let mut rooms = node.advertised.clone();
        for (key, value) in node.core.take_advertisements() {
            let id = ROOMS.iter().map(|r| room(r)).find(|r| crate::cluster::membership::room_key(&r.0, &r.1) == key);
            let id = id.expect("a key of a simulated room");
            // Each key written is a change: no set of a key already set, no delete of one
            // never set (chitchat warns of it).
            let changed = match value {
                Some(_) => rooms.insert(id).is_none(),
                None => rooms.remove(&id).is_some(),
            };
            assert!(changed, "{}: gossip key {key} written without a change", node.name);
        }
        node.advertised = rooms;
    }

    /// Node `i` hears gossip about node `j`: its rooms, or that it died.
    fn gossip(&mut self, i: usize, j: usize) {
        if self.nodes[j].alive {
            let rooms = self.nodes[j].advertised.clone();
            self.nodes[i].view.insert(j, rooms);
        } else {
            self.nodes[i].view.remove(&j);
        }
        self.snapshot(i);
    }

    fn kill(&mut self, i: usize) {
        self.nodes[i].alive = false;
        self.links.retain(|(from, to), _| *from != i && *to != i);
        // What it asked or was asked is never answered: the askers time out.
        let pending: Vec<Answer> = self.answers.iter().filter(|a| a.from == i || a.to == i).cloned().collect();
        self.answers.retain(|a| a.from != i && a.to != i);
        for a in pending.into_iter().filter(|a| a.to != i) {
            self.answers.push(Answer { labels: None, ..a });
        }
        for j in self.joins.iter_mut().filter(|j| j.node == i) {
            j.left = true;
        }
    }

    fn alive(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|i| self.nodes[*i].alive).collect()
    }

    /// One random step; returns what it did, for the failure report.
    fn random_step(&mut self) -> String {
        self.step += 1;
        let alive = self.alive();
        let i = alive[self.rng.random_range(0..alive.len())];
        let r = room(ROOMS[self.rng.random_range(0..ROOMS.len())]);
        match self.rng.random_range(0..100) {
            0..15 => {
                let user = format!("u{}", self.rng.random_range(0..4));
                self.join(i, format!("{user}@{i}"), r.clone());
                format!("join {i} {user} {:?}", r.1)
            }
            15..25 => {
                let users: Vec<String> =
                    self.nodes[i].members.get(&r).map(|u| u.iter().cloned().collect()).unwrap_or_default();
                if users.is_empty() {
                    return "noop".into();
                }
                let user = users[self.rng.random_range(0..users.len())].clone();
                self.leave(i, &user, &r);
                format!("leave {i} {user} {:?}", r.1)
            }
            25..40 => {
                self.publish(i, r.clone());
                format!("publish {i} {:?}", r.1)
            }
            40..70 => {
                let links: Vec<(usize, usize)> =
                    self.links.iter().filter(|(_, q)| !q.is_empty()).map(|(k, _)| *k).collect();
                if links.is_empty() {
                    return "noop".into();
                }
                let (from, to) = links[self.rng.random_range(0..links.len())];
                self.deliver(from, to);
                format!("deliver {from}->{to}")
            }
            70..77 => {
                if self.answers.is_empty() {
                    return "noop".into();
                }
                let k = self.rng.random_range(0..self.answers.len());
                self.answer(k);
                "answer".into()
            }
            77..80 => {
                // An ask still on its way times out at its asker (a slow peer): the asker
                // hears "no answer" now, the peer takes the ask later.
                if !self.faults {
                    return "noop".into();
                }
                let queued: Vec<(usize, usize, u64, RoomId, Version, bool)> = (self.links.iter())
                    .flat_map(|((from, to), q)| {
                        q.iter().filter_map(move |m| match m {
                            Msg::Ask { id, room, version, notify, .. } => {
                                Some((*from, *to, *id, room.clone(), *version, *notify))
                            }
                            _ => None,
                        })
                    })
                    .filter(|(_, _, id, ..)| !self.timed_out.contains(id))
                    .collect();
                if queued.is_empty() {
                    return "noop".into();
                }
                let (asker, peer, ask, room, asked, notify) = queued[self.rng.random_range(0..queued.len())].clone();
                self.timed_out.insert(ask);
                self.answers.push(Answer { to: asker, from: peer, room, labels: None, notify, asked });
                format!("time out ask {ask} {asker}->{peer}")
            }
            80..86 => {
                let due: Vec<usize> = alive.iter().copied().filter(|i| self.nodes[*i].advertise_due).collect();
                if due.is_empty() {
                    return "noop".into();
                }
                let i = due[self.rng.random_range(0..due.len())];
                self.advertise(i);
                format!("advertise {i}")
            }
            86..88 => {
                // The driver's re-ask, a moment after a failed one.
                let mut out = Vec::new();
                if !self.nodes[i].core.reask(&mut out) {
                    return "noop".into();
                }
                self.effects(i, out);
                format!("reask {i}")
            }
            88..96 => {
                let j = self.rng.random_range(0..self.nodes.len());
                if i == j {
                    return "noop".into();
                }
                self.gossip(i, j);
                format!("gossip {i}<-{j}")
            }
            96..99 => {
                // The pusher: in one go, or its two steps apart, other steps between them.
                if self.nodes[i].pushing.is_some() {
                    self.finish_push(i);
                    return format!("finish push {i}");
                }
                if !self.nodes[i].presence_due {
                    return "noop".into();
                }
                match self.rng.random_range(0..3) {
                    0 => self.push_presence(i),
                    k => self.take_presence(i, k == 1),
                }
                format!("push presence {i}")
            }
            _ => {
                if !self.faults || alive.len() <= 2 {
                    return "noop".into();
                }
                self.kill(i);
                format!("kill {i}")
            }
        }
    }

    /// Delivers everything and lets gossip converge, without new faults.
    fn settle(&mut self) {
        self.faults = false;
        for _ in 0..50 {
            loop {
                let link = self.links.iter().find(|(_, q)| !q.is_empty()).map(|(k, _)| *k);
                if let Some((from, to)) = link {
                    self.deliver(from, to);
                } else if !self.answers.is_empty() {
                    self.answer(0);
                } else {
                    break;
                }
            }
            for i in self.alive() {
                self.advertise(i);
                self.finish_push(i);
                if self.nodes[i].presence_due {
                    self.push_presence(i);
                }
            }
            let alive = self.alive();
            for &i in &alive {
                for j in 0..self.nodes.len() {
                    if i != j {
                        self.gossip(i, j);
                    }
                }
            }
            if self.links.values().all(VecDeque::is_empty) && self.answers.is_empty() {
                return;
            }
        }
        panic!("the cluster never went quiet");
    }

    /// Safety, after every step: tables bounded by what exists.
    fn check_bounds(&self) {
        for i in self.alive() {
            let node = &self.nodes[i];
            let sizes = node.core.sizes();
            assert_eq!(sizes.local, node.members.len(), "{}: local rooms", node.name);
            assert!(sizes.presence <= ROOMS.len() * self.nodes.len(), "{}: presence {sizes:?}", node.name);
            assert!(sizes.gossip <= ROOMS.len() * self.nodes.len(), "{}: gossip {sizes:?}", node.name);
        }
    }

    /// Once quiet: the tables are exact, joins released, publishes reached who they must.
    fn check_quiet(&self) {
        let alive = self.alive();
        for &i in &alive {
            let node = &self.nodes[i];
            assert!(node.waiting.is_empty(), "{}: joins still waiting: {:?}", node.name, node.waiting);
            assert_eq!(node.core.sizes().joining, 0, "{}: joins still announced", node.name);
            let mut want: BTreeSet<RoomId> = node.members.keys().cloned().collect();
            want.retain(|r| !node.members[r].is_empty());
            assert_eq!(
                node.advertised.iter().cloned().collect::<BTreeSet<_>>(),
                want,
                "{}: advertised rooms",
                node.name
            );
            for r in ROOMS.iter().map(|r| room(r)) {
                let with_members: Vec<String> = alive
                    .iter()
                    .filter(|j| **j != i && self.nodes[**j].members.contains_key(&r))
                    .map(|j| self.nodes[*j].name.clone())
                    .collect();
                assert_eq!(node.core.subscribers(&r), with_members, "{}: subscribers of {:?}", node.name, r.1);
                if node.members.contains_key(&r) {
                    let mut theirs: Vec<String> =
                        alive.iter().filter(|j| **j != i).flat_map(|j| self.labels(*j, &r)).collect();
                    theirs.sort();
                    let mut known = node.core.remote_labels(&r);
                    known.sort();
                    assert_eq!(known, theirs, "{}: remote members of {:?}", node.name, r.1);
                }
            }
        }
        // A publish after a member's join was acked reaches the member's node, if both
        // nodes lived, the member stayed and its node's join round trip went through.
        for (id, p) in &self.publishes {
            if !self.nodes[p.from].alive {
                continue;
            }
            for j in &self.joins {
                let before = j.acked.is_some_and(|acked| acked < p.at);
                if before && !j.left && j.room == p.room && j.node != p.from && self.nodes[j.node].alive {
                    let node = &self.nodes[j.node];
                    assert_eq!(
                        node.received.get(id),
                        Some(&1),
                        "publish {id} from {} at step {} to {:?} missed {}'s member {} (acked at {:?})",
                        self.nodes[p.from].name,
                        p.at,
                        p.room.1,
                        node.name,
                        j.user,
                        j.acked
                    );
                }
            }
        }
    }
}

/// Runs one seeded script; panics with the seed and the last steps on a broken invariant.
fn run(seed: u64, nodes: usize, steps: usize, faults: bool) {
    let mut sim = Sim::new(seed, nodes, faults);
    let mut trace: VecDeque<String> = VecDeque::new();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for _ in 0..steps {
            let what = sim.random_step();
            if trace.len() == 4000 {
                trace.pop_front();
            }
            trace.push_back(format!("{} {what}", sim.step));
            sim.check_bounds();
        }
        sim.settle();
        sim.check_quiet();
        // And after quiet, a publish from every node reaches exactly the nodes with members.
        for i in sim.alive() {
            for r in ROOMS.iter().map(|r| room(r)) {
                sim.publish(i, r);
            }
        }
        sim.settle();
        sim.check_quiet();
    }));
    if let Err(panic) = result {
        eprintln!("simulation failed: seed {seed}, {nodes} nodes, faults {faults}; last steps:");
        for step in &trace {
            eprintln!("  {step}");
        }
        std::panic::resume_unwind(panic);
    }
}

fn seeds() -> Vec<u64> {
    sim_seeds(300)
}

/// The seeds a simulation runs: `SIM_SEED=<seed>` replays one, `SIM_RUNS=<n>` runs n (or
/// fewer) scripts, else `default` of them. Shared by the simulations of the crate.
pub(crate) fn sim_seeds(default: u64) -> Vec<u64> {
    match std::env::var("SIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("SIM_SEED is a number")],
        Err(_) => (0..std::env::var("SIM_RUNS").ok().and_then(|n| n.parse().ok()).unwrap_or(default)).collect(),
    }
}

#[test]
fn random_scripts_without_faults_keep_every_invariant() {
    for seed in seeds() {
        run(seed, 2 + (seed % 4) as usize, 400, false);
    }
}

#[test]
fn random_scripts_with_deaths_and_failed_requests_keep_every_invariant() {
    for seed in seeds() {
        run(seed, 3 + (seed % 3) as usize, 400, true);
    }
}

/// A room filling up tells each subscriber once per run of the pusher, not once per join: a
/// `Presence` carries every local member's name, so one per join cost N²/2 names.
#[test]
fn changes_gathered_before_a_push_go_out_as_one_presence_per_subscriber() {
    let mut sim = Sim::new(1, 2, false);
    let lobby = room("lobby");
    sim.join(1, "far@1".into(), lobby.clone());
    sim.join(0, "u0@0".into(), lobby.clone());
    sim.settle();
    for u in 1..20 {
        sim.join(0, format!("u{u}@0"), lobby.clone());
    }
    let presences = |sim: &Sim| {
        sim.links.get(&(0, 1)).map_or(0, |q| q.iter().filter(|m| matches!(m, Msg::Presence { .. })).count())
    };
    assert_eq!(presences(&sim), 0, "nothing is pushed before the pusher runs");
    assert!(sim.nodes[0].presence_due);
    sim.push_presence(0);
    assert_eq!(presences(&sim), 1, "19 joins, one push");
    sim.settle();
    assert_eq!(sim.nodes[1].core.remote_labels(&lobby).len(), 20, "node1 knows every member of node0");
}
