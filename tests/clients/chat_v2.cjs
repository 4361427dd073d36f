#!/usr/bin/env node
// Real socket.io-client v2 (Engine.IO protocol 3) against a running clusterchat server.
//
//   node tests/clients/chat_v2.cjs http://127.0.0.1:41234 [--modes=websocket,polling,upgrade] [--timeout=10]
//
// Same scenario as chat_v4.mjs (scenario.cjs), but v2 clients have no CONNECT auth: the user
// name travels as the `user` query parameter, and a refused namespace connect arrives as an
// "error" event. Exits 0 only if every assertion in every mode held.
"use strict";

const io = require("socket.io-client-v2");
const { version } = require("socket.io-client-v2/package.json");
const { EventLog, MODES, AssertionError, main } = require("./scenario.cjs");

// v2 has no onAny: listen to every event the chat server may send.
const SERVER_EVENTS = ["welcome", "join room", "leave room", "chat message", "room users", "chat error"];

function open(baseUrl, user, mode) {
  const opts = {
    forceNew: true, // one engine.io session per client
    reconnection: false,
    timeout: 10000,
  };
  if (user !== undefined) opts.query = { user };
  if (MODES[mode].transports) opts.transports = MODES[mode].transports;
  return io(`${baseUrl}/chat`, opts);
}

function close(socket) {
  socket.close();
  socket.io.close();
}

const driver = {
  label: "v2",
  version,
  bind(baseUrl) {
    return {
      connect(user, mode, timeoutMs) {
        const socket = open(baseUrl, user, mode);
        const engine = socket.io.engine;
        const client = {
          events: new EventLog(user),
          initialTransport: engine.transport && engine.transport.name,
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
        for (const name of SERVER_EVENTS) socket.on(name, (...args) => client.events.push(name, args));
        return new Promise((resolve, reject) => {
          const fail = (msg) => {
            clearTimeout(t);
            close(socket);
            reject(new AssertionError(`${user}: ${msg}`));
          };
          const t = setTimeout(() => fail(`not connected within ${timeoutMs} ms`), timeoutMs);
          socket.once("connect", () => {
            clearTimeout(t);
            resolve(client);
          });
          socket.once("error", (err) => fail(`refused: ${JSON.stringify(err)}`));
          socket.once("connect_error", (err) => fail(`connect_error: ${err && err.message}`));
          socket.once("connect_timeout", () => fail("connect_timeout"));
        });
      },

      expectRefused(user, mode, timeoutMs) {
        const socket = open(baseUrl, user, mode);
        const what = user === undefined ? "connect without a user" : `connect with user ${JSON.stringify(user)}`;
        return new Promise((resolve, reject) => {
          const done = (fn, value) => {
            clearTimeout(t);
            close(socket);
            fn(value);
          };
          const t = setTimeout(
            () => done(reject, new AssertionError(`${what}: neither refused nor connected within ${timeoutMs} ms`)),
            timeoutMs,
          );
          // A namespace refusal is an ERROR packet, emitted as "error" with the server's data:
          // a string, or {message} from servers that send an object.
          socket.once("error", (err) => {
            const msg = typeof err === "string" ? err : err && typeof err.message === "string" ? err.message : undefined;
            if (err && err.type === "TransportError") {
              done(reject, new AssertionError(`${what}: transport error, not a refusal: ${msg}`));
            } else if (msg) done(resolve, msg);
            else done(reject, new AssertionError(`${what}: "error" without a message: ${JSON.stringify(err)}`));
          });
          socket.once("connect", () => done(reject, new AssertionError(`${what} was accepted, expected an "error" refusal`)));
          socket.once("connect_error", (err) =>
            done(reject, new AssertionError(`${what}: transport error, not a refusal: ${err && err.message}`)),
          );
          socket.once("connect_timeout", () => done(reject, new AssertionError(`${what}: connect_timeout`)));
        });
      },
    };
  },
};

main(driver, process.argv.slice(2), "chat_v2.cjs");
