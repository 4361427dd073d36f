#!/usr/bin/env python3
"""python-socketio clients over polling only, sending as fast as they can.

    python3 tests/clients/polling_burst.py http://127.0.0.1:41234 [--clients=12] [--messages=30] [--timeout=30]

Each client joins two rooms (client i: rooms i % R and (i + 1) % R, R = clients / 4), then
emits all its messages at once, alternating between its rooms, without waiting for acks.
python-engineio refuses a polling response of more than 16 packets and drops its session,
so this passes only if the server splits what it has queued over several polls. Checks
that every member of a room receives every message sent to it exactly once, and, in the
order the packets arrived on the wire, in the order each sender sent them.
Prints "polling burst: PASS ..." and exits 0, or prints why and exits 1.
"""

import argparse
import json
import os
import sys
import threading
import time

import socketio

NAMESPACE = "/chat"


class Member:
    """One client: the chat messages its handler saw, and the order they came off the wire."""

    def __init__(self, index, rooms, timeout):
        self.user = f"burst-{index}"
        self.rooms = rooms
        self.lock = threading.Condition()
        self.handled = []  # (sender, room, seq) as the event handlers ran (threads: any order)
        self.wire = []  # (sender, room, seq) in arrival order, recorded by the receiving thread
        self.errors = []
        self.sio = socketio.Client(reconnection=False, request_timeout=timeout)
        self.sio.on("chat message", self._on_message, namespace=NAMESPACE)
        self.sio.on("chat error", lambda *args: self.errors.append(args), namespace=NAMESPACE)
        self.sio.on("disconnect", lambda *args: self.errors.append(("disconnect",) + args), namespace=NAMESPACE)
        receive = self.sio.eio._receive_packet

        def record_then_receive(pkt):
            # Runs in the polling thread, packet by packet, before handlers are dispatched.
            text = pkt.data if isinstance(pkt.data, str) else ""
            if text.startswith('2/chat,["chat message"'):
                args = json.loads(text[len("2/chat,"):])
                with self.lock:
                    self.wire.append(parse(args[1]))
            return receive(pkt)

        self.sio.eio._receive_packet = record_then_receive

    def _on_message(self, data, *offset):
        # With connection state recovery on, a room broadcast ends with its offset.
        with self.lock:
            self.handled.append(parse(data))
            self.lock.notify_all()

    def wait_for(self, count, timeout):
        deadline = time.monotonic() + timeout
        with self.lock:
            while len(self.handled) < count and not self.errors:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.lock.wait(left)
            return len(self.handled)


def parse(data):
    _, seq = data["message"].rsplit(" ", 1)
    return (data["user"], data["room"], int(seq))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base_url")
    parser.add_argument("--clients", type=int, default=12)
    parser.add_argument("--messages", type=int, default=30)
    parser.add_argument("--timeout", type=float, default=30)
    args = parser.parse_args()
    watchdog = threading.Timer(args.timeout * 4, lambda: (print("polling burst: FAIL: hung", flush=True),
                                                          os._exit(3)))
    watchdog.daemon = True
    watchdog.start()

    n_rooms = max(2, args.clients // 4)
    room_names = [f"burst-room-{r}" for r in range(n_rooms)]
    members = [Member(i, [room_names[i % n_rooms], room_names[(i + 1) % n_rooms]], args.timeout)
               for i in range(args.clients)]
    started = time.monotonic()
    for m in members:
        m.sio.connect(args.base_url, auth={"user": m.user}, transports=["polling"],
                      namespaces=[NAMESPACE], wait_timeout=args.timeout)
        for room in m.rooms:
            ack = m.sio.call("join room", {"room": room}, namespace=NAMESPACE, timeout=args.timeout)
            if ack != {"ok": True}:
                print(f"polling burst: FAIL: {m.user} join {room}: {ack!r}", flush=True)
                os._exit(1)
    # A sender's messages, by room, in the order sent.
    sent = {}
    for m in members:
        for seq in range(args.messages):
            room = m.rooms[seq % 2]
            sent.setdefault((m.user, room), []).append(seq)
    # Everyone at once, no pacing, no acks.
    for seq in range(args.messages):
        for m in members:
            m.sio.emit("chat message", {"room": m.rooms[seq % 2], "message": f"{m.user} {seq}"},
                       namespace=NAMESPACE)

    failures = []
    total = 0
    for m in members:
        want = {key: seqs for key, seqs in sent.items() if key[1] in m.rooms}
        expected = sum(len(seqs) for seqs in want.values())
        got = m.wait_for(expected, args.timeout)
        total += got
        if m.errors:
            failures.append(f"{m.user}: {m.errors[:3]!r}")
            continue
        handled = sorted(m.handled)
        wanted = sorted((user, room, seq) for (user, room), seqs in want.items() for seq in seqs)
        if handled != wanted:
            failures.append(f"{m.user}: handled {got} messages, expected {expected} exactly once"
                            f" (missing {len(set(wanted) - set(handled))}, duplicates {len(handled) - len(set(handled))})")
            continue
        with m.lock:
            wire = list(m.wire)
        for key, seqs in want.items():
            order = [seq for (user, room, seq) in wire if (user, room) == key]
            if order != seqs:
                failures.append(f"{m.user}: from {key[0]} in {key[1]} in the order {order}, sent {seqs}")
                break
    elapsed = time.monotonic() - started
    for m in members:
        try:
            m.sio.disconnect()
        except Exception:
            pass
    if failures:
        print("polling burst: FAIL:\n  " + "\n  ".join(failures), flush=True)
        os._exit(1)
    print(f"polling burst: PASS: {args.clients} clients, {n_rooms} rooms, {args.messages} messages each,"
          f" {total} deliveries in order in {elapsed:.1f} s", flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
