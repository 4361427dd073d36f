#!/usr/bin/env python3
"""python-socketio churn for the soak (scripts/churn_soak.sh): W threads, each in a loop:
connect over WebSocket, join 3 rooms of its own and "lobby", send one message to lobby (acked),
then disconnect() (python-socketio closes its WebSocket without waiting for its goodbye, so the
node sees a transport close and parks the session). Stops after SECONDS; prints the cycles.

    python3 tests/clients/churn_py.py URL [--workers 5] [--seconds 600]
"""

import argparse
import json
import threading
import time

import socketio

NAMESPACE = "/chat"


def worker(url, w, deadline, counts):
    n = 0
    while time.monotonic() < deadline:
        sio = socketio.Client(reconnection=False, request_timeout=5)
        try:
            sio.connect(url, auth={"user": f"py{w}"}, transports=["websocket"], namespaces=[NAMESPACE], wait_timeout=5)
            for room in (f"py-{w}-{n}-a", f"py-{w}-{n}-b", f"py-{w}-{n}-c", "lobby"):
                if sio.call("join room", {"room": room}, namespace=NAMESPACE, timeout=5) != {"ok": True}:
                    raise RuntimeError("join refused")
            if sio.call("chat message", {"room": "lobby", "message": f"py{w} c{n}"}, namespace=NAMESPACE, timeout=5) != {"ok": True}:
                raise RuntimeError("message refused")
            counts[w] += 1
        except Exception:  # noqa: BLE001 - counted, the loop goes on
            counts["failures"] += 1
        finally:
            try:
                sio.disconnect()
            except Exception:  # noqa: BLE001
                pass
        n += 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--workers", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=600)
    args = parser.parse_args()
    deadline = time.monotonic() + args.seconds
    counts = {w: 0 for w in range(args.workers)}
    counts["failures"] = 0
    threads = [threading.Thread(target=worker, args=(args.url, w, deadline, counts)) for w in range(args.workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"done": True, "cycles": sum(v for k, v in counts.items() if k != "failures"), "failures": counts["failures"]}), flush=True)


if __name__ == "__main__":
    main()
