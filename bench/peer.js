// The benchmark's peer: clusterchat's /chat protocol (welcome, join room, chat message, acks)
// on socket.io 4. PORT and NAME from the environment; REDIS_URL clusters it with the sharded
// Redis adapter (SPUBLISH per room), otherwise it runs alone. Websocket transport only when
// clustered, since polling would need sticky sessions.
const http = require("http");
const { Server } = require("socket.io");

const port = Number(process.env.PORT || 3001);
const name = process.env.NAME || `peer${port}`;

async function main() {
  const server = http.createServer();
  const io = new Server(server, { transports: process.env.REDIS_URL ? ["websocket"] : ["polling", "websocket"] });
  if (process.env.REDIS_URL) {
    const { createClient } = require("redis");
    const { createShardedAdapter } = require("@socket.io/redis-adapter");
    const pub = createClient({ url: process.env.REDIS_URL });
    const sub = pub.duplicate();
    await Promise.all([pub.connect(), sub.connect()]);
    io.adapter(createShardedAdapter(pub, sub));
  }
  const chat = io.of("/chat");
  chat.use((socket, next) => {
    const user = socket.handshake.auth && socket.handshake.auth.user;
    if (typeof user !== "string" || !user.trim()) return next(new Error("a user name is required"));
    socket.data.user = user.trim();
    next();
  });
  chat.on("connection", (socket) => {
    const user = socket.data.user;
    socket.emit("welcome", { user, node: name, sid: socket.id });
    const reply = (ack, err) => typeof ack === "function" && ack(err ? { error: err } : { ok: true });
    socket.on("join room", async (arg, ack) => {
      const room = arg && arg.room;
      if (typeof room !== "string" || !room) return reply(ack, "room required");
      await socket.join(room);
      chat.to(room).emit("join room", { user, room });
      reply(ack);
    });
    socket.on("leave room", async (arg, ack) => {
      const room = arg && arg.room;
      await socket.leave(room);
      chat.to(room).emit("leave room", { user, room });
      reply(ack);
    });
    socket.on("chat message", (arg, ack) => {
      const room = arg && arg.room;
      if (!socket.rooms.has(room)) return reply(ack, `join room ${room} before sending to it`);
      chat.to(room).emit("chat message", { user, room, message: String(arg.message) });
      reply(ack);
    });
  });
  server.listen(port, "127.0.0.1", () => console.error(`${name} listening on ${port}`));
  const stop = () => io.close(() => process.exit(0));
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
