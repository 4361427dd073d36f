#!/usr/bin/env python3
"""Real python-socketio client against a running clusterchat server.

    python3 tests/clients/chat_py.py http://127.0.0.1:41234 [--modes=websocket,polling,upgrade] [--timeout=10]

Needs the packages pinned in tests/clients/requirements.txt. Runs the same chat scenario as
chat_v4.mjs once per transport mode: websocket only, polling only, and the default (polling,
then upgrade to websocket). Exits 0 only if every assertion in every mode held.
"""

import argparse
from importlib.metadata import version
import os
import secrets
import sys
import threading
import time
import traceback

try:
    import requests
    import socketio
except ImportError as exc:  # pragma: no cover
    print(f"chat_py.py: FAIL: missing package ({exc}); pip install -r tests/clients/requirements.txt",
          file=sys.stderr)
    sys.exit(2)

NAMESPACE = "/chat"
MODES = {
    "websocket": ["websocket"],
    "polling": ["polling"],
    "upgrade": None,  # client default: polling first, then upgrade to websocket
}
SERVER_EVENTS = ["welcome", "join room", "leave room", "chat message", "room users", "chat error"]
CHAT_EVENTS = ["join room", "leave room", "chat message", "room users", "chat error"]


class Failure(AssertionError):
    pass


def check(cond, message):
    if not cond:
        raise Failure(message)


def bounded(fn, timeout, what):
    """Runs fn() in a daemon thread; raises Failure if it takes longer than timeout seconds."""
    result = {}

    def run():
        try:
            result["value"] = fn()
        except BaseException as exc:  # re-raised in the caller's thread
            result["error"] = exc

    t = threading.Thread(target=run, daemon=True, name=what)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise Failure(f"{what}: did not complete within {timeout} s")
    if "error" in result:
        raise result["error"]
    return result.get("value")


class EventLog:
    """Every event a client received; waits consume the first matching one.

    python-socketio runs each event handler in its own thread, so two events may be
    handled out of order: matching by payload keeps the assertions exact regardless.
    """

    def __init__(self, owner):
        self.owner = owner
        self.pending = []  # [(name, args)]
        self.cond = threading.Condition()

    def push(self, name, args):
        with self.cond:
            self.pending.append((name, list(args)))
            self.cond.notify_all()

    def expect_match(self, name, pred, description, timeout):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for i, (n, args) in enumerate(self.pending):
                    if n == name and pred(args):
                        return self.pending.pop(i)[1]
                left = deadline - time.monotonic()
                if left <= 0:
                    got = [repr(a) for n, a in self.pending if n == name]
                    raise Failure(
                        f"{self.owner}: no {name!r} {description} within {timeout} s; "
                        + (f"unmatched {name!r} events received: {', '.join(got)}" if got
                           else f"no other {name!r} event pending"))
                self.cond.wait(left)

    def expect(self, name, payload, timeout):
        # A room broadcast may carry its recovery offset (a string) after the payload.
        return self.expect_match(
            name,
            lambda args: args[:1] == [payload] and (len(args) == 1 or (len(args) == 2 and isinstance(args[1], str))),
            repr(payload), timeout)[0]

    def assert_no_leftovers(self):
        with self.cond:
            left = [(n, a) for n, a in self.pending if n in CHAT_EVENTS]
        check(not left, f"{self.owner}: unexpected events received: "
              + ", ".join(f"{n!r} {a!r}" for n, a in left))


class Client:
    """One python-socketio connection to /chat with its event log and HTTP request record."""

    def __init__(self, user, timeout):
        self.user = user
        self.events = EventLog(user)
        self.http_requests = []  # transport= of every HTTP request engine.io made (polling)
        self.connect_errors = []
        session = requests.Session()
        session.hooks["response"].append(self._record)
        self.sio = socketio.Client(reconnection=False, http_session=session,
                                   request_timeout=timeout)

        def catch_all(event, *args):
            self.events.push(event, args)

        def connect_error(data=None):
            self.connect_errors.append(data)

        self.sio.on("*", catch_all, namespace=NAMESPACE)
        self.sio.on("connect_error", connect_error, namespace=NAMESPACE)
        for name in SERVER_EVENTS:  # explicit handlers too, in case '*' skips a name
            self.sio.on(name, (lambda n: lambda *args: self.events.push(n, args))(name),
                        namespace=NAMESPACE)

    def _record(self, response, *args, **kwargs):
        url = response.request.url
        transport = "polling" if "transport=polling" in url else url
        self.http_requests.append(transport)

    def connect(self, base_url, mode, timeout):
        auth = {"user": self.user} if self.user is not None else None
        bounded(lambda: self.sio.connect(base_url, auth=auth, transports=MODES[mode],
                                         namespaces=[NAMESPACE], wait_timeout=timeout),
                timeout + 1, f"connect as {self.user!r}")

    def transport(self):
        return self.sio.transport()

    def call(self, event, data, timeout):
        try:
            return self.sio.call(event, data, namespace=NAMESPACE, timeout=timeout)
        except socketio.exceptions.TimeoutError:
            raise Failure(f"{self.user}: no ack for {event!r} within {timeout} s") from None

    def close(self, timeout=10):
        """Disconnects; fails if that takes longer than timeout (e.g. a long-poll left hanging)."""
        bounded(self.sio.disconnect, timeout, f"{self.user!r} disconnect")

    def close_quietly(self, timeout=10):
        try:
            self.close(timeout)
        except BaseException:  # cleanup after a failure: never mask the first error
            pass


def expect_refused(base_url, user, mode, timeout):
    what = "connect without a user" if user is None else f"connect with user {user!r}"
    c = Client(user, timeout)
    # Client(None) connects with no auth at all; Client("") with auth {"user": ""}.
    try:
        c.connect(base_url, mode, timeout)
    except socketio.exceptions.ConnectionError as exc:
        errors = list(c.connect_errors)
        c.close_quietly(timeout)
        # A refusal by the /chat namespace (CONNECT_ERROR), not a transport failure.
        check("namespaces failed to connect" in str(exc),
              f"{what}: transport failure, not a namespace refusal: {exc}")
        check(errors, f"{what}: connect failed without a connect_error ({exc}) - not a refusal?")
        data = errors[0]
        msg = data.get("message") if isinstance(data, dict) else data
        check(isinstance(msg, str) and msg, f"{what}: refused without a message: {data!r}")
        return msg
    c.close_quietly(timeout)
    raise Failure(f"{what} was accepted, expected a refusal")


def run_scenario(base_url, mode, timeout, log):
    suffix = secrets.token_hex(4)
    A, B = f"alice-{suffix}", f"bob-{suffix}"
    LOBBY, CAFE, NOWHERE = f"lobby-{suffix}", f"café ☕ {suffix}", f"nowhere-{suffix}"
    opened = []

    def ack_ok(client, event, data):
        args = client.call(event, data, timeout)
        check(args == {"ok": True}, f"{client.user}: {event!r} {data!r} acked {args!r}, expected {{'ok': True}}")

    def ack_error(client, event, data):
        args = client.call(event, data, timeout)
        check(isinstance(args, dict) and list(args) == ["error"] and isinstance(args["error"], str)
              and args["error"],
              f"{client.user}: {event!r} {data!r} acked {args!r}, expected {{'error': '<text>'}}")
        return args["error"]

    def expect(client, name, payload):
        return client.events.expect(name, payload, timeout)

    def check_transport(client, when):
        now = client.transport()
        if mode == "polling":
            check(now == "polling", f"{client.user}: transport {now!r} {when}, expected 'polling'")
        else:
            check(now == "websocket", f"{client.user}: transport {now!r} {when}, expected 'websocket'")
        polled = [r for r in client.http_requests if r == "polling"]
        others = [r for r in client.http_requests if r != "polling"]
        check(not others, f"{client.user}: unexpected HTTP requests {others!r}")
        if mode == "websocket":
            check(not polled, f"{client.user}: websocket-only client made {len(polled)} polling requests")
        else:
            check(polled, f"{client.user}: no polling request was made in mode {mode}")

    try:
        # --- refused connects ---
        for label, user in [("no user", None), ("empty user", "")]:
            msg = expect_refused(base_url, user, mode, timeout)
            log(f"connect with {label} refused: {msg!r}")

        # --- connect ---
        alice, bob = Client(A, timeout), Client(B, timeout)
        for c in (alice, bob):
            opened.append(c)
            c.connect(base_url, mode, timeout)
            args = c.events.expect_match("welcome", lambda a: len(a) == 1, "(one argument)", timeout)
            w = args[0]
            check(isinstance(w, dict) and sorted(w) == ["node", "recovered", "sid", "user"]
                  and w["recovered"] is False and w["user"] == c.user
                  and isinstance(w["node"], str) and w["node"] and isinstance(w["sid"], str) and w["sid"],
                  f"{c.user}: welcome {w!r}, expected {{user: {c.user!r}, node: <str>, sid: <str>}}")
            # The default mode upgrades inside connect(): polling requests were made first
            # (checked by check_transport), and the transport is websocket afterwards.
            check_transport(c, "after connect")
            log(f"{c.user} connected ({c.transport()}, {len(c.http_requests)} polling requests), "
                f"welcome node={w['node']} sid={w['sid']}")
        if mode == "upgrade":
            log("both clients upgraded polling -> websocket")

        # --- joins ---
        ack_ok(alice, "join room", {"room": LOBBY})
        expect(alice, "join room", {"user": A, "room": LOBBY})
        expect(alice, "room users", {"room": LOBBY, "users": [A]})

        ack_ok(bob, "join room", {"room": LOBBY})
        for c in (alice, bob):
            expect(c, "join room", {"user": B, "room": LOBBY})
            expect(c, "room users", {"room": LOBBY, "users": [A, B]})
        log(f"{A} saw {B} join {LOBBY}; room users [{A}, {B}]")

        ack_ok(bob, "join room", {"room": CAFE})
        expect(bob, "join room", {"user": B, "room": CAFE})
        expect(bob, "room users", {"room": CAFE, "users": [B]})
        log(f"{B} joined {CAFE!r}")

        # --- chat in the lobby ---
        hello = f"hello from {A} ✓ {suffix}"
        ack_ok(alice, "chat message", {"room": LOBBY, "message": hello})
        for c in (alice, bob):
            expect(c, "chat message", {"user": A, "room": LOBBY, "message": hello})
        log(f"{A} -> {LOBBY}: delivered to both")

        # --- the emoji room ---
        ack_ok(alice, "join room", {"room": CAFE})
        for c in (alice, bob):
            expect(c, "join room", {"user": A, "room": CAFE})
            expect(c, "room users", {"room": CAFE, "users": [A, B]})
        ciao = f"ciao ☕ 日本語 😀 {suffix}"
        ack_ok(bob, "chat message", {"room": CAFE, "message": ciao})
        for c in (alice, bob):
            expect(c, "chat message", {"user": B, "room": CAFE, "message": ciao})
        log(f"{B} -> {CAFE!r}: {ciao!r} delivered to both")

        # --- alice leaves the lobby ---
        ack_ok(alice, "leave room", {"room": LOBBY})
        expect(alice, "leave room", {"user": A, "room": LOBBY})
        expect(bob, "leave room", {"user": A, "room": LOBBY})
        expect(bob, "room users", {"room": LOBBY, "users": [B]})
        log(f"{B} saw {A} leave {LOBBY}")

        # --- errors ---
        e = ack_error(alice, "chat message", {"room": LOBBY, "message": f"after leaving {suffix}"})
        log(f"send to a room left: error {e!r}")
        e = ack_error(bob, "chat message", {"room": NOWHERE, "message": f"never joined {suffix}"})
        log(f"send to a room never joined: error {e!r}")
        e = ack_error(alice, "join room", {"room": ""})
        log(f"join '': error {e!r}")
        e = ack_error(alice, "chat message", {"room": "", "message": f"empty room {suffix}"})
        log(f"send to '': error {e!r}")

        spoof = f"spoof attempt {suffix}"
        ack_ok(bob, "chat message", {"room": CAFE, "message": spoof, "user": "spoof"})
        for c in (alice, bob):
            expect(c, "chat message", {"user": B, "room": CAFE, "message": spoof})
        log(f"spoofed user ignored: broadcast as {B}")

        check_transport(alice, "at the end")
        check_transport(bob, "at the end")
        bob.events.assert_no_leftovers()

        # --- bob disconnects ---
        bob.close(timeout)
        expect(alice, "leave room", {"user": B, "room": CAFE})
        expect(alice, "room users", {"room": CAFE, "users": [A]})
        log(f"{B} disconnected; {A} saw 'leave room' for {CAFE!r}")
        alice.events.assert_no_leftovers()
    finally:
        for c in opened:
            c.close_quietly(timeout)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base_url", help="server base URL, e.g. http://127.0.0.1:41234")
    parser.add_argument("--modes", default=",".join(MODES),
                        help="comma-separated subset of: " + ", ".join(MODES))
    parser.add_argument("--timeout", type=float,
                        default=float(os.environ.get("CLIENT_TIMEOUT_SECS", "10")),
                        help="seconds for every single wait (default 10, env CLIENT_TIMEOUT_SECS)")
    args = parser.parse_args()
    modes = args.modes.split(",")
    for m in modes:
        if m not in MODES:
            parser.error(f"unknown mode {m!r}")
    if not args.timeout > 0:
        parser.error("timeout must be positive")
    base_url = args.base_url.rstrip("/")

    # Last resort: never hang, whatever a library thread does.
    hard_limit = len(modes) * (args.timeout * 8 + 5)

    def give_up():
        print(f"chat_py.py: FAIL: still running after {hard_limit:.0f} s, giving up",
              file=sys.stderr, flush=True)
        os._exit(3)

    watchdog = threading.Timer(hard_limit, give_up)
    watchdog.daemon = True
    watchdog.start()

    print(f"chat_py.py: python-socketio {version('python-socketio')}"
          f" against {base_url}{NAMESPACE}, modes {','.join(modes)}", flush=True)
    passed = failed = 0
    for mode in modes:
        tag = f"[py {mode}]"
        t0 = time.monotonic()
        try:
            run_scenario(base_url, mode, args.timeout, lambda m: print(f"{tag} {m}", flush=True))
            passed += 1
            print(f"{tag} PASS ({(time.monotonic() - t0) * 1000:.0f} ms)", flush=True)
        except Failure as exc:
            failed += 1
            print(f"{tag} FAIL: {exc}", file=sys.stderr, flush=True)
        except Exception:
            failed += 1
            print(f"{tag} FAIL: {traceback.format_exc()}", file=sys.stderr, flush=True)
    print(f"py: {passed} passed, {failed} failed", flush=True)
    sys.stdout.flush()
    sys.stderr.flush()
    # os._exit: do not wait for library threads (polling loops) that may still be winding down.
    os._exit(0 if failed == 0 else 1)


if __name__ == "__main__":
    main()
