#!/usr/bin/env python3
"""python-socketio connecting to /chat with JWTs in its CONNECT auth payload.

    python3 tests/clients/jwt_py.py http://127.0.0.1:41234 '<cases JSON>'

Each case is {name, auth, user} (accepted: the welcome names `user`) or {name, auth, error}
(refused: the connect_error's message is `error`); each runs over websocket and over polling.
Prints one line per check and "N passed, M failed"; exits 0 only if none failed.
"""

import json
import sys
import threading

import socketio

NAMESPACE = "/chat"
TIMEOUT = 10


def attempt(url, auth, transports):
    """{'user': ...} on welcome, {'error': ...} on connect_error; raises on timeout."""
    sio = socketio.Client(reconnection=False)
    outcome = {}
    done = threading.Event()

    @sio.on("welcome", namespace=NAMESPACE)
    def welcome(data):
        outcome["user"] = data.get("user")
        done.set()

    @sio.on("connect_error", namespace=NAMESPACE)
    def connect_error(data):
        outcome["error"] = data.get("message") if isinstance(data, dict) else data
        done.set()

    try:
        sio.connect(url, namespaces=[NAMESPACE], auth=auth, transports=transports, wait_timeout=TIMEOUT)
    except socketio.exceptions.ConnectionError:
        pass  # a refused namespace; connect_error has the reason
    try:
        if not done.wait(TIMEOUT):
            raise AssertionError(f"neither welcome nor connect_error within {TIMEOUT} s")
        return outcome
    finally:
        sio.disconnect()


def main():
    if len(sys.argv) != 3:
        print("usage: jwt_py.py URL CASES_JSON", file=sys.stderr)
        return 2
    url, cases = sys.argv[1], json.loads(sys.argv[2])
    passed = failed = 0
    for case in cases:
        for transport in ["websocket", "polling"]:
            label = f"{case['name']} over {transport}"
            want = {"error": case["error"]} if "error" in case else {"user": case["user"]}
            try:
                got = attempt(url, case["auth"], [transport])
                if got != want:
                    raise AssertionError(f"expected {want}, got {got}")
                print(f"ok: {label}")
                passed += 1
            except Exception as exc:  # report every case, then fail
                print(f"FAIL: {label}: {exc}")
                failed += 1
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
