#!/usr/bin/env node
// socket.io-client v4 speaking the Admin UI's protocol to a cluster's /admin namespace, as the
// UI (@socket.io/admin-ui) does, with chat users on given nodes.
//
//   node tests/clients/admin_v4.mjs '<setup JSON>'
//
// setup: {mode: "full" | "readonly", admin: URL (any node, or a balancer), nodes: [URL, URL, URL]
// (the chat users connect over WebSocket alone, so each session lives on the node it reaches),
// servers: N (the servers the UI must list), username, password}.
// full: a wrong password is refused; the UI sees N servers, alice (nodes[0], room lobby) and
// bob (nodes[1], room kitchen) on different nodes with their rooms; `join` puts alice in a
// room, `emit` reaches her and `leave` takes her out; a malformed command gets an error;
// `_disconnect` disconnects bob (he hears it, the UI sees it); the session id from the
// login lets the UI back in on another node without the password.
// readonly: the UI sees alice, no command feature is offered, `_disconnect` is refused (ack
// with an error) and alice still chats.
// Prints one line per check and "N passed, M failed"; exits 0 only if none failed.
import { io } from "socket.io-client";

const setup = JSON.parse(process.argv[2] || "null");
if (!setup) {
  console.error("usage: admin_v4.mjs SETUP_JSON");
  process.exit(2);
}
const TIMEOUT_MS = 15000;

// Records every event a socket receives, so a check can wait for one that already came.
function recorder(socket) {
  const events = [];
  const waiters = [];
  socket.onAny((event, ...args) => {
    events.push({ event, args });
    for (const w of [...waiters]) w.check();
  });
  return {
    until(event, pred = () => true, what = event) {
      return new Promise((resolve, reject) => {
        const w = {
          check() {
            const hit = events.find((e) => e.event === event && pred(...e.args));
            if (hit) {
              waiters.splice(waiters.indexOf(w), 1);
              clearTimeout(timer);
              resolve(hit.args);
            }
          },
        };
        const timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(w), 1);
          reject(new Error(`no ${what} within ${TIMEOUT_MS} ms`));
        }, TIMEOUT_MS);
        waiters.push(w);
        w.check();
      });
    },
  };
}

function once(socket, event) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${event} within ${TIMEOUT_MS} ms`)), TIMEOUT_MS);
    socket.once(event, (...args) => {
      clearTimeout(timer);
      resolve(args);
    });
  });
}

async function chatUser(url, user, room) {
  const socket = io(`${url}/chat`, { forceNew: true, reconnection: false, transports: ["websocket"], auth: { user } });
  const [welcome] = await once(socket, "welcome");
  const ack = await socket.timeout(TIMEOUT_MS).emitWithAck("join room", { room });
  if (!ack || !ack.ok) throw new Error(`${user} could not join ${room}: ${JSON.stringify(ack)}`);
  return { socket, node: welcome.node, id: socket.id };
}

// An admin connection as the UI opens it (polling, then WebSocket), recording from the start.
function admin(auth, url = setup.admin) {
  const socket = io(`${url}/admin`, { forceNew: true, reconnection: false, auth });
  return { socket, log: recorder(socket) };
}

const closers = [];
let passed = 0;
let failed = 0;
async function check(label, f) {
  try {
    await f();
    console.log(`ok: ${label}`);
    passed++;
  } catch (err) {
    console.log(`FAIL: ${label}: ${err.message}`);
    failed++;
  }
}

const has = (list, item) => Array.isArray(list) && list.includes(item);
const findSocket = (sockets, id) => sockets.find((s) => s.nsp === "/chat" && s.id === id);

async function full() {
  let alice, bob, ui, session;
  await check("alice and bob chat on two different nodes", async () => {
    alice = await chatUser(setup.nodes[0], "alice", "lobby");
    bob = await chatUser(setup.nodes[1], "bob", "kitchen");
    closers.push(alice.socket, bob.socket);
    if (alice.node === bob.node) throw new Error(`both on ${alice.node}`);
  });
  await check("a wrong password is refused", async () => {
    const wrong = io(`${setup.admin}/admin`, {
      forceNew: true, reconnection: false, auth: { username: setup.username, password: "not-the-password" },
    });
    closers.push(wrong);
    const [err] = await once(wrong, "connect_error");
    if (err.message !== "invalid credentials") throw new Error(`refused with ${err.message}`);
  });
  await check("the right password connects, with a session id and every command", async () => {
    ui = admin({ username: setup.username, password: setup.password });
    closers.push(ui.socket);
    [session] = await ui.log.until("session");
    const [config] = await ui.log.until("config");
    for (const f of ["DISCONNECT", "JOIN", "LEAVE", "EMIT", "MDISCONNECT"]) {
      if (!has(config.supportedFeatures, f)) throw new Error(`features ${JSON.stringify(config.supportedFeatures)}`);
    }
  });
  await check(`the UI lists ${setup.servers} servers`, async () => {
    const seen = new Set();
    await ui.log.until("server_stats", (s) => {
      seen.add(s.serverId);
      return seen.size >= setup.servers;
    }, `${setup.servers} servers`);
  });
  await check("all_sockets has alice and bob, on their nodes, with their rooms", async () => {
    const [sockets] = await ui.log.until("all_sockets");
    const a = findSocket(sockets, alice.id);
    const b = findSocket(sockets, bob.id);
    if (!a || !b) throw new Error(`not both in ${JSON.stringify(sockets.map((s) => s.id))}`);
    if (!has(a.rooms, "lobby") || !has(b.rooms, "kitchen")) throw new Error(`rooms ${a.rooms} / ${b.rooms}`);
    if (a.data.node !== alice.node || b.data.node !== bob.node) throw new Error(`nodes ${a.data.node} / ${b.data.node}`);
    if (a.data.user !== "alice" || !a.handshake || typeof a.handshake.issued !== "number") {
      throw new Error(`alice as ${JSON.stringify(a)}`);
    }
  });
  await check("join puts alice (on another node) in a room: room_joined", async () => {
    ui.socket.emit("join", "/chat", "garden", alice.id);
    await ui.log.until("room_joined", (nsp, room, id) => nsp === "/chat" && room === "garden" && id === alice.id);
  });
  await check("emit reaches alice on her node; leave takes her out of the room again", async () => {
    const heard = once(alice.socket, "admin notice");
    const answer = await ui.socket.timeout(TIMEOUT_MS).emitWithAck("emit", "/chat", alice.id, "admin notice", { text: "hi" });
    if (!answer.ok || answer.sockets !== 1) throw new Error(`answer ${JSON.stringify(answer)}`);
    const [notice] = await heard;
    if (notice?.text !== "hi") throw new Error(`alice heard ${JSON.stringify(notice)}`);
    ui.socket.emit("leave", "/chat", "garden", alice.id);
    await ui.log.until("room_left", (nsp, room, id) => nsp === "/chat" && room === "garden" && id === alice.id);
  });
  await check("a malformed command is answered with an error", async () => {
    const answer = await ui.socket.timeout(TIMEOUT_MS).emitWithAck("join", "/chat", 42);
    if (!answer.error) throw new Error(`answer ${JSON.stringify(answer)}`);
  });
  await check("_disconnect disconnects bob where he lives: he hears it, the UI sees it", async () => {
    const heard = once(bob.socket, "disconnect");
    const answer = await ui.socket.timeout(TIMEOUT_MS).emitWithAck("_disconnect", "/chat", false, bob.id);
    if (!answer.ok || answer.sockets !== 1) throw new Error(`answer ${JSON.stringify(answer)}`);
    const [reason] = await heard;
    if (reason !== "io server disconnect") throw new Error(`bob's reason: ${reason}`);
    await ui.log.until("socket_disconnected", (nsp, id) => nsp === "/chat" && id === bob.id);
  });
  await check("the session id lets the UI back in on another node without the password", async () => {
    const again = admin({ sessionId: session }, setup.nodes[2]);
    closers.push(again.socket);
    await again.log.until("config");
    const bad = admin({ sessionId: `${session}0` }, setup.nodes[2]);
    closers.push(bad.socket);
    const [err] = await once(bad.socket, "connect_error");
    if (err.message !== "invalid credentials") throw new Error(`forged session refused with ${err.message}`);
  });
}

async function readonly() {
  let alice, ui;
  await check("alice chats", async () => {
    alice = await chatUser(setup.nodes[0], "alice", "lobby");
    closers.push(alice.socket);
  });
  await check("the UI connects and is offered no command", async () => {
    ui = admin({ username: setup.username, password: setup.password });
    closers.push(ui.socket);
    const [config] = await ui.log.until("config");
    if (config.supportedFeatures.some((f) => ["DISCONNECT", "JOIN", "LEAVE", "EMIT"].includes(f))) {
      throw new Error(`features ${JSON.stringify(config.supportedFeatures)}`);
    }
    const [sockets] = await ui.log.until("all_sockets");
    if (!findSocket(sockets, alice.id)) throw new Error("alice not listed");
  });
  await check("_disconnect is refused and alice still chats", async () => {
    const answer = await ui.socket.timeout(TIMEOUT_MS).emitWithAck("_disconnect", "/chat", false, alice.id);
    if (!answer.error || !answer.error.includes("read-only")) throw new Error(`answer ${JSON.stringify(answer)}`);
    const ack = await alice.socket.timeout(TIMEOUT_MS).emitWithAck("chat message", { room: "lobby", message: "still here" });
    if (!ack || !ack.ok) throw new Error(`alice's message: ${JSON.stringify(ack)}`);
  });
}

await (setup.mode === "readonly" ? readonly() : full());
for (const s of closers) s.disconnect();
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
