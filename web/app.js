/* clusterchat web client (plain JS, no build step).
 *
 * Asks for a name, connects to the Socket.IO namespace "/chat" with
 * auth { user }, and lets the user join / leave rooms, chat, and see each
 * room's members and history. The header shows which node served the page
 * (its Server-Timing header, else GET /whoami), which node owns the session
 * ("welcome"), the connection state and the transport. Rooms are re-joined
 * after a reconnect. All user data is rendered with textContent / createElement only. */
"use strict";

const ACK_TIMEOUT_MS = 10000;
const NAME_KEY = "clusterchat.name";

const $ = (id) => document.getElementById(id);
const rooms = new Map(); // room name -> { name, li, badge, log, mark, users, unread, pending }
let socket = null;
let me = "";          // our user name (as confirmed by "welcome")
let current = null;   // selected room name, or null

/* ---------- small DOM helpers ---------- */

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = String(text);
  return e;
}

function showError(id, msg) {
  $(id).textContent = msg || "";
  $(id).hidden = !msg;
}

function setConn(state) {
  $("conn").textContent = state;
  $("conn").dataset.state = state;
  $("reconnect").hidden = !(state === "disconnected" && socket && $("login").hidden);
}

function setTransport() {
  const engine = socket && socket.io.engine;
  $("transport").textContent = engine && engine.transport ? engine.transport.name : "—";
}

function showLogin(error) {
  $("login").hidden = false;
  $("chat").hidden = true;
  $("whoami").hidden = true;
  $("login-btn").disabled = false;
  $("login-btn").textContent = "Connect";
  showError("login-error", error);
  $("name").focus();
  $("name").select();
}

function showChat() {
  $("login").hidden = true;
  $("chat").hidden = false;
  $("whoami").hidden = false;
  $("me").textContent = me;
  showError("login-error", "");
}

/* ---------- talking to the server ---------- */

// Emits an event with an ack; resolves to "" on success or an error text
// (which is also shown in the error line `errId`).
function request(event, data, errId) {
  return new Promise((resolve) => {
    const done = (msg) => { showError(errId, msg); resolve(msg); };
    if (!socket || !socket.connected) return done("Not connected — waiting to reconnect.");
    socket.timeout(ACK_TIMEOUT_MS).emit(event, data, (err, res) => {
      if (err) return done("The server did not answer (timeout).");
      done(res && res.error ? String(res.error) : "");
    });
  });
}

function connect(name) {
  closeSocket();
  me = name;
  $("login-btn").disabled = true;
  $("login-btn").textContent = "Connecting…";
  showError("login-error", "");
  socket = io("/chat", { auth: { user: name } });
  setConn("connecting");

  socket.io.on("open", () => {
    setTransport();
    socket.io.engine.on("upgrade", setTransport);
  });
  socket.io.on("reconnect_attempt", () => setConn("reconnecting"));

  socket.on("connect", () => {
    setConn("connected");
    setTransport();
    showError("notice", "");
    showChat();
    for (const room of rooms.keys()) joinRoom(room, true);
  });

  socket.on("connect_error", (err) => {
    if (socket.active) { // network trouble: socket.io keeps retrying by itself
      setConn("reconnecting");
      const msg = `Cannot reach the server (${err.message}) — retrying…`;
      if ($("login").hidden) showError("notice", msg);
      else { showError("login-error", msg); $("login-btn").disabled = false; $("login-btn").textContent = "Connect"; }
    } else { // refused by the server (e.g. name taken): let the user pick another name
      setConn("disconnected");
      showLogin(err.message);
    }
  });

  socket.on("disconnect", () => {
    setConn(socket.active ? "reconnecting" : "disconnected");
    $("sess-node").textContent = "—";
    setTransport();
  });

  on("welcome", (d) => {
    if (d.user != null) me = String(d.user);
    $("me").textContent = me;
    $("sess-node").textContent = d.node != null ? String(d.node) : "?";
  });
  on("join room", (d) => system(d.room, `${d.user} joined the room.`));
  on("leave room", (d) => system(d.room, `${d.user} left the room.`));
  on("chat message", receiveMessage);
  on("room users", (d) => {
    const r = rooms.get(d.room);
    if (!r || !Array.isArray(d.users)) return;
    r.users = [...new Set(d.users.map(String))].sort((a, b) => a.localeCompare(b));
    // A big room's list names only its first users (chat.presence_limit); count is all of them.
    r.count = Number.isInteger(d.count) ? Math.max(d.count, r.users.length) : r.users.length;
    if (d.room === current) renderUsers(r);
  });
  on("room history", receiveHistory);
  on("chat error", (d) => showError("send-error", String(d.error)));
}

// Registers a server event handler that ignores malformed payloads.
function on(event, fn) {
  socket.on(event, (data) => { if (data && typeof data === "object") fn(data); });
}

function closeSocket() {
  if (!socket) return;
  socket.removeAllListeners();
  socket.io.removeAllListeners();
  socket.disconnect();
  socket = null;
}

/* ---------- rooms ---------- */

function addRoom(name) {
  const r = { name, log: el("ol", "log"), mark: null, users: [], count: 0, unread: 0, pending: [] };
  r.li = el("li");
  const open = el("button", "room-btn");
  open.type = "button";
  r.badge = el("span", "badge");
  r.badge.hidden = true;
  open.append(el("span", "room-name", name), r.badge);
  open.addEventListener("click", () => select(name));
  const leave = el("button", "room-leave", "×");
  leave.type = "button";
  leave.title = `Leave ${name}`;
  leave.setAttribute("aria-label", `Leave room ${name}`);
  leave.addEventListener("click", () => leaveRoom(name));
  r.li.append(open, leave);
  $("room-list").append(r.li);
  rooms.set(name, r);
  return r;
}

function removeRoom(name) {
  const r = rooms.get(name);
  if (!r) return;
  r.li.remove();
  rooms.delete(name);
  if (current === name) select(rooms.size ? rooms.keys().next().value : null);
}

function select(name) {
  const r = name == null ? null : rooms.get(name);
  current = r ? name : null;
  for (const x of rooms.values()) x.li.classList.toggle("active", x === r);
  $("room-title").textContent = r ? name : "No room selected";
  $("log-wrap").replaceChildren(r ? r.log : el("p", "empty", "Join a room to start chatting."));
  $("message").disabled = $("send-btn").disabled = !r;
  showError("send-error", "");
  renderUsers(r);
  if (r) {
    r.unread = 0;
    updateBadge(r);
    scrollDown();
    $("message").focus();
  }
}

function updateBadge(r) {
  r.badge.textContent = r.unread > 99 ? "99+" : String(r.unread);
  r.badge.hidden = r.unread === 0;
}

function renderUsers(r) {
  const users = r ? r.users : [];
  $("members").replaceChildren(...users.map((u) => el("li", u === me ? "me" : "", u)));
  const more = r ? r.count - users.length : 0;
  if (more > 0) $("members").append(el("li", "more", `and ${more} more`));
  $("member-count").textContent = r ? `${r.count} online` : "";
}

// (Re-)joins a room. A marker line is appended to the log: "room history"
// replaces everything above it, so history always precedes live messages.
async function joinRoom(name, rejoin) {
  let r = rooms.get(name);
  if (r && !rejoin) return select(name);
  if (!r) r = addRoom(name);
  r.mark = el("li", rejoin ? "sys" : "mark", rejoin ? "Reconnected." : "");
  r.log.append(r.mark);
  const previous = current;
  if (!rejoin) select(name);
  const err = await request("join room", { room: name }, "join-error");
  if (!err) return;
  if (rejoin) return system(name, `Could not re-join this room: ${err}`);
  removeRoom(name);
  if (current !== previous && rooms.has(previous)) select(previous);
}

async function leaveRoom(name) {
  const err = await request("leave room", { room: name }, "join-error");
  if (!err) removeRoom(name);
}

/* ---------- messages ---------- */

function messageLine(user, text, live) {
  const li = el("li", user === me ? "msg mine" : "msg");
  li.append(el("span", "who", user), el("span", "text", text));
  if (live) {
    const now = new Date();
    const t = el("time", "time", now.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }));
    t.dateTime = now.toISOString();
    li.append(t);
  }
  return li;
}

function scrollDown() { $("log-wrap").scrollTop = $("log-wrap").scrollHeight; }

function append(r, li) {
  const box = $("log-wrap");
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 60;
  r.log.append(li);
  if (r.name === current && atBottom) scrollDown();
}

function system(room, text) {
  if (rooms.has(room)) append(rooms.get(room), el("li", "sys", text));
}

function receiveMessage(d) {
  const r = rooms.get(d.room);
  if (!r) return;
  const user = String(d.user), text = String(d.message);
  if (user === me) { // our own message echoed back: confirm the optimistic line
    const i = r.pending.findIndex((p) => p.text === text);
    if (i >= 0) return r.pending.splice(i, 1)[0].li.classList.remove("pending");
  }
  append(r, messageLine(user, text, true));
  if (d.room !== current) { r.unread++; updateBadge(r); }
}

function receiveHistory(d) {
  const r = rooms.get(d.room);
  if (!r || !r.mark || !Array.isArray(d.messages)) return;
  if (!d.messages.length && r.mark.previousSibling) return; // keep what we already show
  while (r.mark.previousSibling) r.mark.previousSibling.remove();
  r.pending = r.pending.filter((p) => r.log.contains(p.li));
  for (const m of d.messages) {
    if (m && typeof m === "object") r.log.insertBefore(messageLine(String(m.user), String(m.message), false), r.mark);
  }
  if (d.room === current) scrollDown();
}

/* ---------- forms & buttons ---------- */

$("login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const name = $("name").value.trim();
  if (!name) return;
  if (typeof io !== "function") return showError("login-error", "Could not load /vendor/socket.io.min.js.");
  try { localStorage.setItem(NAME_KEY, name); } catch (_) { /* storage disabled */ }
  connect(name);
});

$("join-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const name = $("room-input").value.trim();
  if (!name) return;
  $("room-input").value = "";
  joinRoom(name, false);
});

$("send-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const input = $("message");
  const text = input.value.trim();
  const r = rooms.get(current);
  if (!text || !r) return;
  if (!socket || !socket.connected) return showError("send-error", "Not connected — waiting to reconnect.");
  const li = messageLine(me, text, true);
  li.classList.add("pending");
  const p = { text, li };
  r.pending.push(p);
  append(r, li);
  scrollDown();
  input.value = "";
  const err = await request("chat message", { room: r.name, message: text }, "send-error");
  if (err) {
    li.classList.add("failed");
    li.title = err;
    if (!input.value) input.value = text; // give the text back for a retry
  }
  li.classList.remove("pending");
  // Forget it after a while in case the server does not echo our own messages.
  setTimeout(() => { r.pending = r.pending.filter((x) => x !== p); }, err ? 0 : 5000);
});

$("logout").addEventListener("click", () => {
  closeSocket();
  for (const name of [...rooms.keys()]) removeRoom(name);
  $("sess-node").textContent = "—";
  setTransport();
  setConn("disconnected");
  showLogin("");
});

$("reconnect").addEventListener("click", () => {
  if (socket) { setConn("connecting"); socket.connect(); }
});

/* ---------- start ---------- */

// Which node served this document: the node sets `Server-Timing: node;desc="<id>"` and the
// browser keeps it on the navigation entry (secure contexts, e.g. localhost). Elsewhere fall
// back to asking /whoami, which under round robin may be answered by another node.
function showPageNode() {
  const nav = performance.getEntriesByType ? performance.getEntriesByType("navigation")[0] : null;
  const entry = nav && Array.isArray(nav.serverTiming) ? nav.serverTiming.find((t) => t.name === "node") : null;
  if (entry && entry.description) {
    $("page-node").textContent = entry.description;
    $("page-node").title = "the node that served this page";
    return;
  }
  fetch("/whoami")
    .then((res) => (res.ok ? res.json() : Promise.reject(new Error(res.status))))
    .then((d) => {
      $("page-node").textContent = d && d.node != null ? String(d.node) : "?";
      $("page-node").title = "the node that answered /whoami";
    })
    .catch(() => { $("page-node").textContent = "unknown"; });
}

showPageNode();

try { $("name").value = localStorage.getItem(NAME_KEY) || ""; } catch (_) { /* storage disabled */ }
select(null);
showLogin("");
