#!/usr/bin/env bash
# Runs the official protocol test suites against examples/conformance.rs on port 3000.
#   scripts/conformance.sh ENGINE_IO_PROTOCOL_CHECKOUT SOCKET_IO_PROTOCOL_CHECKOUT
# NODES=3 runs them against a three-node cluster behind a per-request round-robin balancer.
# Each argument is a checkout of socketio/engine.io-protocol or socketio/socket.io-protocol
# (they are not vendored here). Needs npm to install the suites' own dependencies.
set -euo pipefail
if [ $# -ne 2 ]; then
    echo "usage: $0 ENGINE_IO_PROTOCOL_DIR SOCKET_IO_PROTOCOL_DIR" >&2
    exit 2
fi
root="$(cd "$(dirname "$0")/.." && pwd)"
cargo build --quiet --manifest-path "$root/Cargo.toml" --example conformance
"$root/target/debug/examples/conformance" --port 3000 --nodes "${NODES:-1}" &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    curl -fs -o /dev/null "http://127.0.0.1:3000/engine.io/?EIO=4&transport=polling" && break
    sleep 0.1
done
status=0
for suite in "$1" "$2"; do
    echo "== $(basename "$suite")"
    (cd "$suite/test-suite" && npm ci --no-audit --no-fund --loglevel=error && npx mocha test-suite.js) || status=1
done
exit $status
