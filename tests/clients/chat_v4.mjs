#!/usr/bin/env node
// Real socket.io-client v4 against a running clusterchat server.
//
//   node tests/clients/chat_v4.mjs http://127.0.0.1:41234 [--modes=websocket,polling,upgrade] [--timeout=10]
//
// Runs the chat scenario (scenario.cjs) once per transport mode: websocket only,
// polling only, and the default (polling, then upgrade to websocket). Exits 0 only if
// every assertion in every mode held; otherwise prints the failed assertion and exits 1.
import { createRequire } from "node:module";
import { io } from "socket.io-client";

const require = createRequire(import.meta.url);
const { EventLog, MODES, AssertionError, main } = require("./scenario.cjs");
const { version } = require("socket.io-client/package.json");

function open(baseUrl, user, mode) {
  const opts = {
    forceNew: true, // one engine.io session per client (io() would otherwise share a Manager per URL)
    reconnection: false,
    timeout: 10000,
  };
  if (user !== undefined) opts.auth = { user };
  if (MODES[mode].transports) opts.transports = MODES[mode].transports;
  return io(`${baseUrl}/chat`, opts);
}

function close(socket) {
  socket.disconnect();
  socket.io.engine?.close();
}

const driver = {
  label: "v4",
  version,
  bind(baseUrl) {
    return {
      connect(user, mode, timeoutMs) {
        const socket = open(baseUrl, user, mode);
        const engine = socket.io.engine;
        const client = {
          events: new EventLog(user),
          initialTransport: engine.transport?.name,
          upgrades: 0,
          upgradedTo: null,
          upgradeWaiters: [],
          transport: () => socket.io.engine.transport.name,
          waitUpgrade(ms) {
            if (client.upgradedTo) return Promise.resolve(client.upgradedTo);
            return new Promise((resolve, reject) => {
              const t = setTimeout(
                () =>
                  reject(new AssertionError(`${user}: no engine "upgrade" within ${ms} ms (transport ${client.transport()})`)),
                ms,
              );
              client.upgradeWaiters.push((name) => {
                clearTimeout(t);
                resolve(name);
              });
            });
          },
          emitAck(event, data, ms) {
            return new Promise((resolve, reject) => {
              const t = setTimeout(() => reject(new AssertionError(`${user}: no ack for "${event}" within ${ms} ms`)), ms);
              socket.emit(event, data, (...args) => {
                clearTimeout(t);
                resolve(args);
              });
            });
          },
          close: () => close(socket),
        };
        engine.on("upgrade", (transport) => {
          client.upgrades++;
          client.upgradedTo = transport.name;
          for (const w of client.upgradeWaiters.splice(0)) w(transport.name);
        });
        socket.onAny((name, ...args) => client.events.push(name, args));
        return new Promise((resolve, reject) => {
          const t = setTimeout(() => {
            close(socket);
            reject(new AssertionError(`${user}: not connected within ${timeoutMs} ms`));
          }, timeoutMs);
          socket.once("connect", () => {
            clearTimeout(t);
            resolve(client);
          });
          socket.once("connect_error", (err) => {
            clearTimeout(t);
            close(socket);
            reject(new AssertionError(`${user}: connect_error: ${err.message}`));
          });
        });
      },

      expectRefused(user, mode, timeoutMs) {
        const socket = open(baseUrl, user, mode);
        const what = user === undefined ? "connect without a user" : `connect with user ${JSON.stringify(user)}`;
        return new Promise((resolve, reject) => {
          const t = setTimeout(() => {
            close(socket);
            reject(new AssertionError(`${what}: neither refused nor connected within ${timeoutMs} ms`));
          }, timeoutMs);
          socket.once("connect", () => {
            clearTimeout(t);
            close(socket);
            reject(new AssertionError(`${what} was accepted, expected connect_error`));
          });
          socket.once("connect_error", (err) => {
            clearTimeout(t);
            close(socket);
            // A refusal by the namespace (not a transport failure) carries the server's message.
            // Transport failures are TransportError ("xhr poll error", "websocket error") or "timeout".
            if (err && err.message && err.type !== "TransportError" && err.message !== "timeout") {
              resolve(err.message);
            } else {
              reject(new AssertionError(`${what}: transport error, not a refusal: ${err && err.message}`));
            }
          });
        });
      },
    };
  },
};

await main(driver, process.argv.slice(2), "chat_v4.mjs");
