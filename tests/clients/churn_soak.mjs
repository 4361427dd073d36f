// Churn for the soak (scripts/churn_soak.sh): W socket.io-client v4 workers, each in a loop:
// connect over WebSocket (through the balancer), join 3 rooms of its own and "lobby", send one
// message to lobby (acked), then leave: every other cycle its transport drops (the session is
// parked for recovery), else it disconnects. Prints a JSON line every REPORT seconds with the
// cycles done in that interval, and stops after SECONDS.
//   node churn_soak.mjs URL [--workers 20] [--seconds 600] [--report 10]
import { io } from "socket.io-client";

const args = process.argv.slice(2);
const url = args[0];
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const WORKERS = opt("workers", 20);
const SECONDS = opt("seconds", 600);
const REPORT = opt("report", 10);
const start = Date.now();
let cycles = 0, failures = 0, last = 0;

async function cycle(w, n) {
  const socket = io(`${url}/chat`, { transports: ["websocket"], auth: { user: `churn${w}` }, reconnection: false, forceNew: true, timeout: 5000 });
  try {
    await new Promise((ok, fail) => { socket.on("connect", ok); socket.on("connect_error", fail); });
    for (const room of [`churn-${w}-${n}-a`, `churn-${w}-${n}-b`, `churn-${w}-${n}-c`, "lobby"]) {
      const r = await socket.timeout(5000).emitWithAck("join room", { room });
      if (!r?.ok) throw new Error(JSON.stringify(r));
    }
    const r = await socket.timeout(5000).emitWithAck("chat message", { room: "lobby", message: `w${w} c${n}` });
    if (!r?.ok) throw new Error(JSON.stringify(r));
    cycles++;
  } catch (_) {
    failures++;
  } finally {
    if (n % 2 === 0 && socket.io.engine) socket.io.engine.close(); // transport lost: parked
    else socket.disconnect();
  }
}

const workers = Array.from({ length: WORKERS }, async (_, w) => {
  for (let n = 0; Date.now() - start < SECONDS * 1000; n++) await cycle(w, n);
});
const timer = setInterval(() => {
  const t = Math.round((Date.now() - start) / 1000);
  console.log(JSON.stringify({ t, cycles: cycles - last, rate: (cycles - last) / REPORT, failures }));
  last = cycles;
}, REPORT * 1000);
await Promise.all(workers);
clearInterval(timer);
console.log(JSON.stringify({ done: true, cycles, failures }));
process.exit(0);
