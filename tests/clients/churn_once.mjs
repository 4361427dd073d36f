// Parks N sessions on one node: each client connects over WebSocket, joins "lobby", then its
// transport drops (engine closed without a Socket.IO DISCONNECT), as a flaky network would.
import { io } from "socket.io-client";
const [url, n] = [process.argv[2], Number(process.argv[3] ?? 1000)];
for (let i = 0; i < n; i++) {
  const socket = io(`${url}/chat`, { transports: ["websocket"], auth: { user: `u${i}` }, reconnection: false });
  await new Promise((ok, fail) => { socket.on("connect", ok); socket.on("connect_error", fail); });
  await new Promise((ok) => socket.emit("join room", { room: "lobby" }, ok));
  socket.io.engine.close();
}
console.log(`parked ${n}`);
process.exit(0);
