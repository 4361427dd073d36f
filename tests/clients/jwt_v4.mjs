#!/usr/bin/env node
// socket.io-client v4 connecting to /chat with JWTs in its `auth` option.
//
//   node tests/clients/jwt_v4.mjs http://127.0.0.1:41234 '<cases JSON>'
//
// Each case is {name, auth, user} (accepted: the welcome names `user`) or {name, auth, error}
// (refused: connect_error's message is `error`); each runs over websocket and over polling.
// Prints one line per check and "N passed, M failed"; exits 0 only if none failed.
import { io } from "socket.io-client";

const [url, casesJson] = process.argv.slice(2);
if (!url || !casesJson) {
  console.error("usage: jwt_v4.mjs URL CASES_JSON");
  process.exit(2);
}
const cases = JSON.parse(casesJson);
const TIMEOUT_MS = 10000;

// Resolves with {user} on welcome or {error} on connect_error; rejects on timeout.
function attempt(auth, transports) {
  const socket = io(`${url}/chat`, { forceNew: true, reconnection: false, timeout: TIMEOUT_MS, auth, transports });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`neither welcome nor connect_error within ${TIMEOUT_MS} ms`)), TIMEOUT_MS);
    const done = (outcome) => {
      clearTimeout(timer);
      socket.disconnect();
      resolve(outcome);
    };
    socket.on("welcome", (w) => done({ user: w.user }));
    socket.on("connect_error", (err) => done({ error: err.message }));
  });
}

let passed = 0;
let failed = 0;
for (const c of cases) {
  for (const transports of [["websocket"], ["polling"]]) {
    const label = `${c.name} over ${transports[0]}`;
    try {
      const got = await attempt(c.auth, transports);
      const want = c.error !== undefined ? { error: c.error } : { user: c.user };
      if (JSON.stringify(got) !== JSON.stringify(want)) {
        throw new Error(`expected ${JSON.stringify(want)}, got ${JSON.stringify(got)}`);
      }
      console.log(`ok: ${label}`);
      passed++;
    } catch (err) {
      console.log(`FAIL: ${label}: ${err.message}`);
      failed++;
    }
  }
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
