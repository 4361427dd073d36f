// Ack latency of `chat message`: one sender on node 1 sends N messages one after another (each
// waits for its ack, and the next starts 60 ms after the previous one: the chat admits 20 events
// a second per user) to a room whose other members are on nodes 2 and 3, and reports the ack
// round trip's percentiles and the deliveries seen, as one JSON line. Loopback only; stops by
// itself.
//   node bench/ack_latency.mjs http://127.0.0.1:9101 http://127.0.0.1:9102 http://127.0.0.1:9103 [messages]
import { createRequire } from "node:module";

const require = createRequire(new URL("../tests/clients/package.json", import.meta.url));
const { io } = require("socket.io-client");

const [a, b, c] = process.argv.slice(2, 5);
const n = Number(process.argv[5] || 300);
const PACE_MS = 60;
const room = `acks-${process.pid}`;
const connect = (url, user) =>
  new Promise((resolve, reject) => {
    const s = io(`${url}/chat`, { transports: ["websocket"], query: { user }, auth: { user }, reconnection: false });
    s.once("connect", () => resolve(s));
    s.once("connect_error", reject);
  });
const join = (s) => s.timeout(10000).emitWithAck("join room", { room });

const timer = setTimeout(() => { console.error("timed out"); process.exit(1); }, 30000 + n * 100);
const sender = await connect(a, "sender");
const others = [await connect(b, "listener-b"), await connect(c, "listener-c")];
let delivered = 0;
for (const s of others) s.on("chat message", () => delivered++);
for (const s of [sender, ...others]) await join(s);
const rtts = [];
for (let i = 0; i < n; i++) {
  const start = Date.now();
  const t = process.hrtime.bigint();
  const r = await sender.timeout(10000).emitWithAck("chat message", { room, message: `m${i}` });
  if (!r || !r.ok) throw new Error(`not acked: ${JSON.stringify(r)}`);
  rtts.push(Number(process.hrtime.bigint() - t) / 1e6);
  await new Promise((r) => setTimeout(r, Math.max(0, PACE_MS - (Date.now() - start))));
}
const deadline = Date.now() + 5000;
while (delivered < 2 * n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
rtts.sort((x, y) => x - y);
const q = (p) => rtts[Math.min(rtts.length - 1, Math.floor(p * rtts.length))].toFixed(3);
console.log(JSON.stringify({ messages: n, p50_ms: q(0.5), p90_ms: q(0.9), p99_ms: q(0.99), delivered, owed: 2 * n }));
for (const s of [sender, ...others]) s.close();
clearTimeout(timer);
