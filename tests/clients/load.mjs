// Chat load for the reliability tests: N socket.io-client v4 users over WebSocket, each in a
// few rooms, each sending a numbered message to one of its rooms every interval. Clients
// reconnect by themselves and re-join their rooms. Runs until stdin says "stop" (or closes),
// then stops sending, lets deliveries settle, and prints one JSON report line:
//
//   connected / joined   users connected and back in all their rooms at the end
//   reconnects           disconnections seen, and the time from each to "back in all rooms"
//   acked                messages the server acknowledged
//   lost                 deliveries owed and never made: a member that was in the room (joined,
//                        connected) from before the message was sent until 1 s after its ack
//                        did not receive it
//   missed               deliveries to members that were away (reconnecting) meanwhile and
//                        did not get them when they came back
//   recovered            reconnections that got their session back (socket.io connection state
//                        recovery: rooms and missed messages, without joining again)
//   duplicates           deliveries of a message a user had already received
//   reordered            deliveries of a sender's acked message after a later one of the same
//                        sender
//   reordered_unacked    the same for messages never acked: one sent as its node crashed may
//                        have reached some nodes (a member's keeper among them) and not others,
//                        so a member that recovers gets it after the sender's later ones. Not
//                        promised in order (nor at all), so reported apart
//   history_stale        rooms whose history (read by a new client at the end) lacks the room's
//                        last acked message
//   history_gaps         acked messages missing from their room's history though ones sent
//                        over 200 ms before them are in it
//   foreign              deliveries of "#..." messages no user of this load sent
//
// usage: node load.mjs URL [--users 12] [--rooms 4] [--per-user 2] [--interval 100]
import { createRequire } from "node:module";
import readline from "node:readline";

const require = createRequire(import.meta.url);
const { io } = require("socket.io-client");

const args = process.argv.slice(2);
const url = args[0];
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const USERS = opt("users", 12);
const ROOMS = opt("rooms", 4);
const PER_USER = opt("per-user", 2);
const INTERVAL = opt("interval", 100);
const GRACE_MS = 1000;

const now = () => performance.now();
const rooms = Array.from({ length: ROOMS }, (_, i) => `load-${i} ⚡`);
const users = [];
const messages = new Map(); // id -> {room, sender, sent, acked}
const attempted = new Set(); // every id sent, acked or not
const sentAt = new Map(); // with LOAD_DEBUG: every id sent, with its times

for (let u = 0; u < USERS; u++) {
  const name = `user${u}`;
  const mine = Array.from({ length: PER_USER }, (_, k) => rooms[(u + k) % ROOMS]);
  const socket = io(`${url}/chat`, {
    auth: { user: name },
    transports: ["websocket"],
    forceNew: true,
    reconnectionDelay: 100,
    reconnectionDelayMax: 1000,
    timeout: 5000,
  });
  const user = { name, mine, socket, joinedSince: null, intervals: [], received: new Set(),
    downAt: null, reconnects: [], recovered: 0, seq: 0, firstJoined: null, duplicates: 0,
    lastOf: new Map(), reordered: [] };
  users.push(user);
  socket.on("connect", async () => {
    try {
      // A recovered session is back in its rooms, and gets what it missed, by itself.
      if (socket.recovered) user.recovered++;
      else if (user.downAt !== null && process.env.LOAD_DEBUG) console.error(`not recovered: ${user.name} at ${Math.round(now())}, down since ${Math.round(user.downAt)}; pid ${socket._pid}`);
      for (const room of socket.recovered ? [] : mine) {
        const r = await socket.timeout(5000).emitWithAck("join room", { room });
        if (!r || !r.ok) throw new Error(JSON.stringify(r));
      }
      user.joinedSince = now();
      if (user.firstJoined === null) user.firstJoined = user.joinedSince;
      if (user.downAt !== null) {
        user.reconnects.push(user.joinedSince - user.downAt);
        user.downAt = null;
      }
    } catch (err) {
      socket.disconnect().connect(); // try again from scratch
    }
  });
  socket.on("disconnect", () => {
    if (user.joinedSince !== null) user.intervals.push([user.joinedSince, now()]);
    user.joinedSince = null;
    if (user.downAt === null) user.downAt = now();
  });
  socket.on("chat message", (m) => {
    if (typeof m?.message !== "string" || !m.message.startsWith("#")) return;
    if (user.received.has(m.message)) {
      user.duplicates++;
      if (process.env.LOAD_DEBUG) console.error(`duplicate ${m.message} (${m.room}) for ${user.name} at ${Math.round(now())}: recovered ${user.recovered} of ${user.reconnects.length} reconnections, the last back at ${Math.round(user.joinedSince ?? -1)}; pid ${user.socket._pid}`);
    }
    user.received.add(m.message);
    // Each sender's messages in the order it sent them (ids are "#user:seq").
    const [sender, seq] = m.message.slice(1).split(":");
    if (Number(seq) < (user.lastOf.get(sender) ?? -1)) {
      user.reordered.push(m.message);
      if (process.env.LOAD_DEBUG) console.error(`reordered ${m.message} for ${user.name} after #${sender}:${user.lastOf.get(sender)} at ${Math.round(now())}: back since ${Math.round(user.joinedSince ?? -1)}, recovered ${user.recovered} of ${user.reconnects.length}; sent ${Math.round(sentAt.get(m.message)?.sent ?? -1)} acked ${Math.round(sentAt.get(m.message)?.acked ?? -1)}`);
    }
    user.lastOf.set(sender, Math.max(Number(seq), user.lastOf.get(sender) ?? -1));
  });
}

let sending = true;
const senders = users.map((user) => (async () => {
  while (sending) {
    await new Promise((r) => setTimeout(r, INTERVAL));
    if (user.joinedSince === null || !sending) continue;
    const room = user.mine[user.seq % user.mine.length];
    const id = `#${user.name}:${user.seq++}`;
    const m = { room, sender: user.name, sent: now(), acked: null };
    attempted.add(id);
    if (process.env.LOAD_DEBUG) sentAt.set(id, m);
    try {
      const r = await user.socket.timeout(5000).emitWithAck("chat message", { room, message: id });
      if (r && r.ok) {
        m.acked = now();
        messages.set(id, m);
      }
    } catch (_) { /* not acked: not owed */ }
  }
})());

const stop = async () => {
  // Users still reconnecting get 10 s to be back in their rooms, sending as usual.
  const back = now() + 10000;
  while (now() < back && !users.every((u) => u.joinedSince !== null)) await new Promise((r) => setTimeout(r, 50));
  sending = false;
  await Promise.all(senders);
  // Settle: until every owed delivery arrived, or 5 s.
  const deadline = now() + 5000;
  const owed = () => {
    let lost = 0, missed = 0;
    for (const [id, m] of messages) {
      for (const u of users) {
        if (!u.mine.includes(m.room) || u.received.has(id)) continue;
        // Sent before the user first joined: not for it.
        if (u.firstJoined === null || m.sent < u.firstJoined) continue;
        const spans = [...u.intervals, ...(u.joinedSince !== null ? [[u.joinedSince, Infinity]] : [])];
        const present = spans.some(([a, b]) => a <= m.sent && m.acked + GRACE_MS <= b);
        if (present) {
          lost++;
          if (process.env.LOAD_DEBUG && lost <= 10) console.error(`lost ${id} (${m.room}) for ${u.name}: sent ${Math.round(m.sent)} acked ${Math.round(m.acked)}; ${u.name} in rooms ${JSON.stringify(spans.map(([a, b]) => [Math.round(a), Math.round(b)]))}`);
        } else {
          missed++;
          if (process.env.LOAD_DEBUG && missed <= 10) console.error(`missed ${id} (${m.room}) for ${u.name}: sent ${Math.round(m.sent)} acked ${Math.round(m.acked)}; ${u.name} in rooms ${JSON.stringify(spans.map(([a, b]) => [Math.round(a), Math.round(b)]))}; recovered ${u.recovered} of ${u.reconnects.length}; pid ${u.socket._pid}`);
        }
      }
    }
    return { lost, missed };
  };
  while (now() < deadline && owed().lost > 0) await new Promise((r) => setTimeout(r, 50));
  const { lost, missed } = owed();
  const { stale, gaps } = await historyCheck();
  const reconnects = users.flatMap((u) => u.reconnects).sort((a, b) => a - b);
  const pct = (p) => (reconnects.length ? Math.round(reconnects[Math.min(reconnects.length - 1, Math.floor(p * reconnects.length))]) : 0);
  const report = {
    users: USERS,
    connected: users.filter((u) => u.socket.connected).length,
    joined: users.filter((u) => u.joinedSince !== null).length,
    reconnects: reconnects.length,
    reconnect_ms: { p50: pct(0.5), p99: pct(0.99), max: Math.round(reconnects.at(-1) ?? 0) },
    recovered: users.reduce((n, u) => n + u.recovered, 0),
    acked: messages.size,
    lost,
    missed,
    duplicates: users.reduce((n, u) => n + u.duplicates, 0),
    foreign: users.reduce((n, u) => n + [...u.received].filter((id) => !attempted.has(id)).length, 0),
    reordered: users.reduce((n, u) => n + u.reordered.filter((id) => messages.has(id)).length, 0),
    reordered_unacked: users.reduce((n, u) => n + u.reordered.filter((id) => !messages.has(id)).length, 0),
    history_stale: stale,
    history_gaps: gaps,
  };
  console.log(JSON.stringify(report));
  for (const u of users) u.socket.disconnect();
  process.exit(0);
};

// Each room's history as a newcomer reads it (`room history` after joining), against the
// acked messages: the last one must be there, and none older than the oldest acked one there
// may be missing (the history keeps the room's last messages, acked or not).
async function historyCheck() {
  let stale = 0, gaps = 0;
  for (const room of rooms) {
    const acked = [...messages].filter(([, m]) => m.room === room).sort((a, b) => a[1].sent - b[1].sent);
    if (acked.length === 0) continue;
    const socket = io(`${url}/chat`, { auth: { user: "historian" }, transports: ["websocket"], forceNew: true, reconnection: false });
    const history = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no history of ${room}`)), 10000);
      socket.on("room history", (h) => {
        if (h?.room !== room) return;
        clearTimeout(timer);
        resolve(new Set(h.messages.map((m) => m.message)));
      });
      socket.on("connect", () => socket.emit("join room", { room }));
    }).finally(() => socket.disconnect());
    if (!history.has(acked.at(-1)[0])) {
      stale++;
      if (process.env.LOAD_DEBUG) console.error(`history of ${room} lacks its last acked message ${acked.at(-1)[0]}`);
    }
    // The history keeps the newest by the time the server recorded them, which may differ from
    // the send time by the request's latency: count a gap only well inside the window.
    const first = acked.findIndex(([id]) => history.has(id));
    if (first >= 0) {
      const from = acked[first][1].sent + 200;
      for (const [id] of acked.slice(first).filter(([, m]) => m.sent > from)) {
        if (!history.has(id)) {
          gaps++;
          if (process.env.LOAD_DEBUG) console.error(`history of ${room} lacks ${id}: sent ${Math.round(messages.get(id).sent)} acked ${Math.round(messages.get(id).acked)}`);
        }
      }
    }
  }
  return { stale, gaps };
}

// Ready once every user is in its rooms.
const readyCheck = setInterval(() => {
  if (users.every((u) => u.joinedSince !== null)) {
    clearInterval(readyCheck);
    console.log("ready");
  }
}, 20);

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", (line) => {
  if (line.trim() === "stop") stop();
  else if (line.trim() === "back?") {
    // Answers "back" once every user is connected and in its rooms again.
    const check = setInterval(() => {
      if (users.every((u) => u.joinedSince !== null)) {
        clearInterval(check);
        console.log("back");
      }
    }, 20);
  }
  else if (line.startsWith("mark ") && process.env.LOAD_DEBUG) console.error(`${Math.round(now())}: ${line.slice(5)}`);
});
rl.on("close", () => stop());
