#!/usr/bin/env bash
# The benchmarks of issue 6: every scenario against clusterchat (3 nodes behind haproxy) and
# against the peer, socket.io 4 on Node (3 processes with the sharded Redis adapter behind the
# same haproxy, websocket-only clients; and a single process), in one run; then BENCHMARKS.md.
#   scripts/bench.sh            full sizes (about 15 minutes on 2 cores)
#   QUICK=1 scripts/bench.sh    small sizes, a couple of minutes
# Everything listens on 127.0.0.1; every process this script starts is tracked by PID and
# stopped on exit; every load stops by itself (durations, counts, timeouts).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=${OUT:-run/bench}
mkdir -p "$OUT"
: >"$OUT/results.jsonl"

# Sizes (issue 6), scaled down with QUICK=1.
if [ "${QUICK:-0}" = 1 ]; then
    IDLE=300,1000; ROOMS=20; MEMBERS=10; RATES=50,200,800; BIG=200; BIG_RATES=2,10; STEP=3
    POLL=60; JV=50; GOSSIP=3,10; GOSSIP_TRIALS=1
else
    IDLE=1000,3000,6000; ROOMS=100; MEMBERS=30; RATES=50,100,200,400,800,1600,3200,6400; BIG=${BIG:-3000}
    BIG_RATES=1,2,5,10,20,40,80; STEP=5; POLL=300; JV=300; GOSSIP=3,10,30; GOSSIP_TRIALS=3
fi

# File descriptors: as many as this machine allows (about 20,000 here).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "== open files: $(ulimit -n)"

. scripts/bench_lib.sh
need haproxy haproxy
need redis-server redis-server
(cd bench && npm ci --no-audit --no-fund --loglevel=error)
python3 -c 'import matplotlib' 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check matplotlib
build

scenarios() { # label target [polling node args]
    local label=$1 target=$2; shift 2
    bench "$label" "$target" idle --clients "$IDLE" --hold 5
    bench "$label" "$target" fanout --rooms "$ROOMS" --members "$MEMBERS" --rates "$RATES" --step-secs "$STEP"
    bench "$label" "$target" big-room --members "$BIG" --rates "$BIG_RATES" --step-secs "$STEP"
    bench "$label" "$target" join-visibility --trials "$JV"
    if [ $# -gt 0 ]; then bench "$label" "$target" "$@" polling --clients "$POLL" --secs "$STEP"; fi
}

# One system at a time, each started fresh (the idle scenario's RSS baseline is a fresh server).
start_clusterchat
scenarios clusterchat 127.0.0.1:9200 --node 127.0.0.1:9101 --node 127.0.0.1:9102 --node 127.0.0.1:9103
cleanup
start_peer3
scenarios socketio-redis-3 127.0.0.1:9300
cleanup
start_peer1
scenarios socketio-1 127.0.0.1:9310
cleanup
SERVER_PIDS=()
bench clusterchat 127.0.0.1:9 gossip --sizes "$GOSSIP" --trials "$GOSSIP_TRIALS"

echo "== writing BENCHMARKS.md"
python3 scripts/bench_report.py "$OUT/results.jsonl" --command "${BENCH_COMMAND:-scripts/bench.sh}" --out BENCHMARKS.md --plot bench/results/latency.png
mkdir -p bench/results && cp "$OUT/results.jsonl" bench/results/results.jsonl
