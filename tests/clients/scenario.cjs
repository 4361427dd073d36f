// Shared chat scenario for the JavaScript client scripts (chat_v4.mjs, chat_v2.cjs).
//
// A script supplies a "driver" that knows how to open a connection with its own
// socket.io-client version; everything the server is asked and every assertion on
// what it answers lives here, so the v4 and v2 runs check exactly the same protocol.
//
// Driver interface:
//   driver.label                          e.g. "v4"
//   driver.connect(user, mode, timeoutMs) -> Promise<Client> (resolves after "connect")
//   driver.expectRefused(user, mode, timeoutMs) -> Promise<string> (the refusal message)
// Client interface:
//   client.events          EventLog that every server event of the namespace is pushed to
//   client.initialTransport transport name right after the connection was created
//   client.transport()     current transport name ("polling" | "websocket")
//   client.upgrades        number of engine "upgrade" events seen so far
//   client.waitUpgrade(ms) -> Promise<string> name of the transport upgraded to
//   client.emitAck(event, data, ms) -> Promise<any[]> the ack's arguments
//   client.close()         disconnects and closes the underlying engine
"use strict";

const crypto = require("node:crypto");
const { isDeepStrictEqual, inspect } = require("node:util");

const MODES = {
  websocket: { transports: ["websocket"] },
  polling: { transports: ["polling"] },
  upgrade: { transports: undefined }, // client default: polling first, then upgrade to websocket
};

// Events the chat server sends; anything not consumed by the scenario is an error.
const CHAT_EVENTS = ["join room", "leave room", "chat message", "room users", "chat error"];

class AssertionError extends Error {}

function check(cond, message) {
  if (!cond) throw new AssertionError(message);
}

function show(v) {
  return inspect(v, { depth: 6, breakLength: Infinity });
}

/** Every event a client received, with waiters that consume matching events. */
class EventLog {
  constructor(owner) {
    this.owner = owner;
    this.pending = []; // {name, args}
    this.seen = []; // all events, for diagnostics
    this.waiters = [];
  }

  push(name, args) {
    const ev = { name, args };
    this.seen.push(ev);
    for (let i = 0; i < this.waiters.length; i++) {
      const w = this.waiters[i];
      if (w.matches(ev)) {
        this.waiters.splice(i, 1);
        w.resolve(ev);
        return;
      }
    }
    this.pending.push(ev);
  }

  /** Consumes the first event `name` whose single argument deep-equals `payload`. */
  expect(name, payload, timeoutMs) {
    return this.expectMatch(
      name,
      // A room broadcast may carry its recovery offset (a string) after the payload.
      (args) => (args.length === 1 || (args.length === 2 && typeof args[1] === "string")) &&
        isDeepStrictEqual(args[0], payload),
      show(payload),
      timeoutMs,
    ).then((ev) => ev.args[0]);
  }

  /** Consumes the first event `name` whose argument list satisfies `pred`. */
  expectMatch(name, pred, description, timeoutMs) {
    const matches = (ev) => ev.name === name && pred(ev.args);
    const idx = this.pending.findIndex(matches);
    if (idx >= 0) return Promise.resolve(this.pending.splice(idx, 1)[0]);
    return new Promise((resolve, reject) => {
      const waiter = {
        matches,
        resolve: (ev) => {
          clearTimeout(waiter.timer);
          resolve(ev);
        },
      };
      waiter.timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(waiter), 1);
        const got = this.pending.filter((ev) => ev.name === name).map((ev) => show(ev.args));
        reject(
          new AssertionError(
            `${this.owner}: no "${name}" ${description} within ${timeoutMs} ms` +
              (got.length ? `; unmatched "${name}" events received: ${got.join(", ")}` : `; no other "${name}" event pending`),
          ),
        );
      }, timeoutMs);
      this.waiters.push(waiter);
    });
  }

  /** Asserts that no chat event is left unconsumed (nothing unexpected was broadcast). */
  assertNoLeftovers() {
    const left = this.pending.filter((ev) => CHAT_EVENTS.includes(ev.name));
    check(
      left.length === 0,
      `${this.owner}: unexpected events received: ${left.map((ev) => `"${ev.name}" ${show(ev.args)}`).join(", ")}`,
    );
  }
}

function withTimeout(promise, ms, what) {
  let timer;
  const t = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new AssertionError(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, t]).finally(() => clearTimeout(timer));
}

/** Runs the whole chat scenario once over one transport mode. Throws on the first failed assertion. */
async function runScenario(driver, mode, timeoutMs, log) {
  const suffix = crypto.randomBytes(4).toString("hex");
  const A = `alice-${suffix}`;
  const B = `bob-${suffix}`;
  const LOBBY = `lobby-${suffix}`;
  const CAFE = `café ☕ ${suffix}`;
  const NOWHERE = `nowhere-${suffix}`;
  const opened = [];

  const ackOk = async (client, who, event, data) => {
    const args = await client.emitAck(event, data, timeoutMs);
    check(
      args.length === 1 && isDeepStrictEqual(args[0], { ok: true }),
      `${who}: "${event}" ${show(data)} acked ${show(args)}, expected [ { ok: true } ]`,
    );
  };
  const ackError = async (client, who, event, data) => {
    const args = await client.emitAck(event, data, timeoutMs);
    const a = args[0];
    check(
      args.length === 1 &&
        a !== null &&
        typeof a === "object" &&
        !Array.isArray(a) &&
        Object.keys(a).length === 1 &&
        typeof a.error === "string" &&
        a.error.length > 0,
      `${who}: "${event}" ${show(data)} acked ${show(args)}, expected [ { error: "<text>" } ]`,
    );
    return a.error;
  };
  const expect = (client, name, payload) => client.events.expect(name, payload, timeoutMs);
  const checkTransport = (client, who, when) => {
    const now = client.transport();
    if (mode === "polling") {
      check(now === "polling", `${who}: transport is "${now}" ${when}, expected "polling" (polling only)`);
      check(client.upgrades === 0, `${who}: polling-only connection upgraded ${client.upgrades} time(s)`);
    } else {
      check(now === "websocket", `${who}: transport is "${now}" ${when}, expected "websocket"`);
    }
  };

  try {
    // --- refused connects -------------------------------------------------
    for (const [label, user] of [
      ["no user", undefined],
      ["empty user", ""],
    ]) {
      const msg = await driver.expectRefused(user, mode, timeoutMs);
      check(typeof msg === "string" && msg.length > 0, `connect with ${label} refused without a message: ${show(msg)}`);
      log(`connect with ${label} refused: ${JSON.stringify(msg)}`);
    }

    // --- connect ----------------------------------------------------------
    const alice = await driver.connect(A, mode, timeoutMs);
    opened.push(alice);
    const bob = await driver.connect(B, mode, timeoutMs);
    opened.push(bob);
    for (const [c, name] of [
      [alice, A],
      [bob, B],
    ]) {
      if (mode === "upgrade") {
        check(c.initialTransport === "polling", `${name}: first transport "${c.initialTransport}", expected "polling"`);
      } else {
        check(
          c.initialTransport === MODES[mode].transports[0],
          `${name}: first transport "${c.initialTransport}", expected "${MODES[mode].transports[0]}"`,
        );
      }
      const w = await c.events.expectMatch("welcome", (args) => args.length === 1, "(one argument)", timeoutMs);
      const welcome = w.args[0];
      check(
        welcome !== null &&
          typeof welcome === "object" &&
          isDeepStrictEqual(Object.keys(welcome).sort(), ["node", "recovered", "sid", "user"]) &&
          welcome.recovered === false &&
          welcome.user === name &&
          typeof welcome.node === "string" &&
          welcome.node.length > 0 &&
          typeof welcome.sid === "string" &&
          welcome.sid.length > 0,
        `${name}: welcome ${show(welcome)}, expected { user: '${name}', node: <string>, sid: <string>, recovered: false }`,
      );
      log(`${name} connected (${c.initialTransport}), welcome node=${welcome.node} sid=${welcome.sid}`);
    }

    // --- joins --------------------------------------------------------------
    await ackOk(alice, A, "join room", { room: LOBBY });
    await expect(alice, "join room", { user: A, room: LOBBY });
    await expect(alice, "room users", { room: LOBBY, users: [A] });

    await ackOk(bob, B, "join room", { room: LOBBY });
    await Promise.all([
      expect(alice, "join room", { user: B, room: LOBBY }),
      expect(bob, "join room", { user: B, room: LOBBY }),
      expect(alice, "room users", { room: LOBBY, users: [A, B] }),
      expect(bob, "room users", { room: LOBBY, users: [A, B] }),
    ]);
    log(`${A} saw ${B} join ${LOBBY}; room users [${A}, ${B}]`);

    await ackOk(bob, B, "join room", { room: CAFE });
    await expect(bob, "join room", { user: B, room: CAFE });
    await expect(bob, "room users", { room: CAFE, users: [B] });
    log(`${B} joined ${JSON.stringify(CAFE)}`);

    // --- transport check (after some traffic, which may have crossed an upgrade) ---
    if (mode === "upgrade") {
      for (const [c, name] of [
        [alice, A],
        [bob, B],
      ]) {
        const to = await c.waitUpgrade(timeoutMs);
        check(to === "websocket", `${name}: upgraded to "${to}", expected "websocket"`);
      }
      log(`both clients upgraded polling -> websocket`);
    }
    checkTransport(alice, A, "after joining");
    checkTransport(bob, B, "after joining");

    // --- chat in the lobby --------------------------------------------------
    const hello = `hello from ${A} ✓ ${suffix}`;
    await ackOk(alice, A, "chat message", { room: LOBBY, message: hello });
    await Promise.all([
      expect(alice, "chat message", { user: A, room: LOBBY, message: hello }),
      expect(bob, "chat message", { user: A, room: LOBBY, message: hello }),
    ]);
    log(`${A} -> ${LOBBY}: delivered to both`);

    // --- the emoji room -----------------------------------------------------
    await ackOk(alice, A, "join room", { room: CAFE });
    await Promise.all([
      expect(alice, "join room", { user: A, room: CAFE }),
      expect(bob, "join room", { user: A, room: CAFE }),
      expect(alice, "room users", { room: CAFE, users: [A, B] }),
      expect(bob, "room users", { room: CAFE, users: [A, B] }),
    ]);
    const ciao = `ciao ☕ 日本語 😀 ${suffix}`;
    await ackOk(bob, B, "chat message", { room: CAFE, message: ciao });
    await Promise.all([
      expect(alice, "chat message", { user: B, room: CAFE, message: ciao }),
      expect(bob, "chat message", { user: B, room: CAFE, message: ciao }),
    ]);
    log(`${B} -> ${JSON.stringify(CAFE)}: ${JSON.stringify(ciao)} delivered to both`);

    // --- alice leaves the lobby ---------------------------------------------
    await ackOk(alice, A, "leave room", { room: LOBBY });
    await Promise.all([
      expect(alice, "leave room", { user: A, room: LOBBY }),
      expect(bob, "leave room", { user: A, room: LOBBY }),
      expect(bob, "room users", { room: LOBBY, users: [B] }),
    ]);
    log(`${B} saw ${A} leave ${LOBBY}`);

    // --- errors -------------------------------------------------------------
    let e = await ackError(alice, A, "chat message", { room: LOBBY, message: `after leaving ${suffix}` });
    log(`send to a room left: error ${JSON.stringify(e)}`);
    e = await ackError(bob, B, "chat message", { room: NOWHERE, message: `never joined ${suffix}` });
    log(`send to a room never joined: error ${JSON.stringify(e)}`);
    e = await ackError(alice, A, "join room", { room: "" });
    log(`join "": error ${JSON.stringify(e)}`);
    e = await ackError(alice, A, "chat message", { room: "", message: `empty room ${suffix}` });
    log(`send to "": error ${JSON.stringify(e)}`);

    const spoofText = `spoof attempt ${suffix}`;
    await ackOk(bob, B, "chat message", { room: CAFE, message: spoofText, user: "spoof" });
    await Promise.all([
      expect(alice, "chat message", { user: B, room: CAFE, message: spoofText }),
      expect(bob, "chat message", { user: B, room: CAFE, message: spoofText }),
    ]);
    log(`spoofed user ignored: broadcast as ${B}`);

    checkTransport(alice, A, "at the end");
    checkTransport(bob, B, "at the end");
    bob.events.assertNoLeftovers();

    // --- bob disconnects ------------------------------------------------------
    bob.close();
    await Promise.all([
      expect(alice, "leave room", { user: B, room: CAFE }),
      expect(alice, "room users", { room: CAFE, users: [A] }),
    ]);
    log(`${B} disconnected; ${A} saw "leave room" for ${JSON.stringify(CAFE)}`);
    alice.events.assertNoLeftovers();
  } finally {
    for (const c of opened) {
      try {
        c.close();
      } catch {
        /* already closed */
      }
    }
  }
}

function parseArgs(argv, script) {
  const usage =
    `usage: ${script} <base-url> [--modes=websocket,polling,upgrade] [--timeout=<seconds>]\n` +
    `  e.g. ${script} http://127.0.0.1:41234`;
  const positional = argv.filter((a) => !a.startsWith("--"));
  if (positional.length !== 1) {
    console.error(usage);
    process.exit(2);
  }
  let base;
  try {
    base = new URL(positional[0]);
  } catch {
    console.error(`not a URL: ${positional[0]}\n${usage}`);
    process.exit(2);
  }
  let modes = Object.keys(MODES);
  let timeoutSecs = Number(process.env.CLIENT_TIMEOUT_SECS || 10);
  for (const a of argv.filter((x) => x.startsWith("--"))) {
    const [k, v] = a.split("=", 2);
    if (k === "--modes" && v) modes = v.split(",");
    else if (k === "--timeout" && v) timeoutSecs = Number(v);
    else {
      console.error(`unknown option ${a}\n${usage}`);
      process.exit(2);
    }
  }
  for (const m of modes) {
    if (!MODES[m]) {
      console.error(`unknown mode ${m}; modes: ${Object.keys(MODES).join(", ")}`);
      process.exit(2);
    }
  }
  if (!(timeoutSecs > 0)) {
    console.error(`bad timeout ${timeoutSecs}`);
    process.exit(2);
  }
  return { baseUrl: base.href.replace(/\/+$/, ""), modes, timeoutMs: Math.round(timeoutSecs * 1000) };
}

/** Parses argv, runs every mode, prints a summary and exits 0 only if all passed. */
async function main(driver, argv, script) {
  const { baseUrl, modes, timeoutMs } = parseArgs(argv, script);
  // A last resort so the process can never hang: each mode gets a generous budget.
  const hardLimit = modes.length * (timeoutMs * 8 + 5000);
  setTimeout(() => {
    console.error(`${script}: FAIL: still running after ${hardLimit} ms, giving up`);
    process.exit(3);
  }, hardLimit).unref();

  console.log(`${script}: socket.io-client ${driver.version} against ${baseUrl}/chat, modes ${modes.join(",")}`);
  let passed = 0;
  let failed = 0;
  for (const mode of modes) {
    const tag = `[${driver.label} ${mode}]`;
    const log = (msg) => console.log(`${tag} ${msg}`);
    const t0 = Date.now();
    try {
      await withTimeout(
        runScenario(driver.bind(baseUrl), mode, timeoutMs, log),
        timeoutMs * 6,
        `the whole ${mode} scenario`,
      );
      passed++;
      log(`PASS (${Date.now() - t0} ms)`);
    } catch (err) {
      failed++;
      const msg = err instanceof AssertionError ? err.message : err && err.stack ? err.stack : String(err);
      console.error(`${tag} FAIL: ${msg}`);
    }
  }
  console.log(`${driver.label}: ${passed} passed, ${failed} failed`);
  process.exit(failed === 0 ? 0 : 1);
}

module.exports = { MODES, EventLog, AssertionError, check, withTimeout, runScenario, main };
