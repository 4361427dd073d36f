// Connection state recovery with the real socket.io-client v4 (>= 4.6), through a balancer in
// front of the cluster.
//
//   node recovery.mjs <url> <drop|restart> <websocket|polling>
//
// alice and bob (owned by different nodes) share a room; alice has received a message (so it
// has an offset). Then alice loses its connection: `drop` closes its transport from the client
// side; `restart` prints `STOP <alice's node>` and the test stops that node gracefully. While
// alice is away, bob sends three messages (acked). alice reconnects by itself (on whichever
// node the balancer picks) and must come back recovered: same socket id, still in the room,
// the three missed messages exactly once and in order, then live traffic again.
// Prints one JSON line of figures and `PASS`; exits 1 with the reason otherwise.
import { io } from "socket.io-client";

const [url, mode, transport] = process.argv.slice(2);
if (!url || !["drop", "restart"].includes(mode) || !["websocket", "polling"].includes(transport)) {
  console.error("usage: recovery.mjs <url> <drop|restart> <websocket|polling>");
  process.exit(2);
}
const TIMEOUT_MS = 20_000;
const tag = Math.random().toString(36).slice(2, 8);
const room = `recovery ☕ ${tag}`;
const opened = [];

function fail(message) {
  console.error(`FAIL (${mode}, ${transport}): ${message}`);
  for (const s of opened) s.close();
  process.exit(1);
}
setTimeout(() => fail(`not done within ${TIMEOUT_MS} ms`), TIMEOUT_MS).unref();

/** Resolves with the first `event` whose first argument satisfies `pred`. */
function once(socket, event, pred = () => true) {
  return new Promise((resolve) => {
    const listener = (...args) => {
      if (pred(...args)) {
        socket.off(event, listener);
        resolve(args);
      }
    };
    socket.on(event, listener);
  });
}

async function connect(user) {
  const socket = io(`${url}/chat`, {
    auth: { user },
    transports: [transport],
    reconnectionDelay: 100,
    reconnectionDelayMax: 500,
    randomizationFactor: 0,
    forceNew: true,
  });
  opened.push(socket);
  const [welcome] = await once(socket, "welcome");
  return { socket, node: welcome.node };
}

async function call(socket, event, data) {
  const reply = await socket.timeout(5000).emitWithAck(event, data);
  if (!reply || reply.ok !== true) fail(`${event} ${JSON.stringify(data)}: ${JSON.stringify(reply)}`);
}

const alice = await connect(`alice-${tag}`);
let bob;
for (let attempt = 0; ; attempt++) {
  bob = await connect(`bob-${tag}`);
  if (bob.node !== alice.node) break;
  bob.socket.close();
  if (attempt === 20) fail(`twenty sessions in a row on ${alice.node}`);
}
const received = [];
alice.socket.on("chat message", (msg, offset) => {
  if (typeof offset !== "string") fail(`a room broadcast without an offset: ${JSON.stringify([msg, offset])}`);
  received.push(msg.message);
});
await call(alice.socket, "join room", { room });
await call(bob.socket, "join room", { room });
const before = once(alice.socket, "chat message", (m) => m.message === "before");
await call(bob.socket, "chat message", { room, message: "before" });
await before;

const firstId = alice.socket.id;
let lostAt;
const missed = ["missed 1", "missed 2", "missed 3"];
const away = once(alice.socket, "disconnect").then(async ([reason]) => {
  lostAt = performance.now();
  for (const message of missed) await call(bob.socket, "chat message", { room, message });
  return reason;
});
const back = once(alice.socket, "connect");
const welcomeAgain = once(alice.socket, "welcome");
const rejoined = once(bob.socket, "join room", (m) => m.user === `alice-${tag}`);
if (mode === "drop") {
  alice.socket.io.engine.close();
} else {
  console.log(`STOP ${alice.node}`);
}
const reason = await away;
await back;
const reconnectMs = performance.now() - lostAt;
if (!alice.socket.recovered) fail(`not recovered after "${reason}"`);
if (alice.socket.id !== firstId) fail(`socket id ${alice.socket.id}, was ${firstId}`);
// The missed messages come right after the CONNECT; give them a moment to all arrive.
const deadline = Date.now() + 5000;
while (received.length < 1 + missed.length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
// Still in the room without joining again: live traffic reaches alice.
const after = once(alice.socket, "chat message", (m) => m.message === "after");
await call(bob.socket, "chat message", { room, message: "after" });
await after;
await rejoined;
const want = ["before", ...missed, "after"];
if (JSON.stringify(received) !== JSON.stringify(want)) {
  fail(`alice received ${JSON.stringify(received)}, expected ${JSON.stringify(want)}`);
}
const [welcome] = await welcomeAgain;
if (welcome.recovered !== true) fail(`the chat's welcome after reconnecting: ${JSON.stringify(welcome)}`);
const figures = { mode, transport, reason, reconnect_ms: Math.round(reconnectMs), missed: missed.length };
console.log(JSON.stringify({ ...figures, lost: 0, node_before: alice.node, node_after: welcome.node }));
console.log("PASS");
for (const s of opened) s.close();
process.exit(0);
