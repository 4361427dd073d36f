#!/usr/bin/env bash
# Ack latency of `chat message` (bench/ack_latency.mjs) on 3 nodes (no haproxy: the sender on
# node1, a listener on each of node2 and node3), for this build and, with BASELINE_BIN, for
# another one, alternating ROUNDS times so both see the same machine. Loopback only; every
# process is tracked by PID and stopped on exit.
#   BASELINE_BIN=/path/to/old/clusterchat ROUNDS=3 MESSAGES=300 scripts/bench_acks.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-run/bench-acks}
mkdir -p "$OUT"
. scripts/bench_lib.sh
(cd tests/clients && npm ci --no-audit --no-fund --loglevel=error)
build
if [ -n "${BASELINE_BIN:-}" ]; then BASELINE_BIN=$(realpath -e "$BASELINE_BIN"); fi
for round in $(seq "${ROUNDS:-3}"); do
    for label in current ${BASELINE_BIN:+baseline}; do
        bin=$BIN; [ "$label" = baseline ] && bin=$BASELINE_BIN
        start_clusterchat 3 "$bin"
        echo "$label round $round: $(node bench/ack_latency.mjs http://127.0.0.1:9101 http://127.0.0.1:9102 http://127.0.0.1:9103 "${MESSAGES:-300}")"
        cleanup
    done
done
