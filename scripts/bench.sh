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
TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN=$TARGET_DIR/release/clusterchat
BENCH=$TARGET_DIR/release/chatbench
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

need() { # command, apt package
    command -v "$1" >/dev/null && return 0
    echo "== installing $2 (apt-get)"
    apt-get update -qq && apt-get install -y -qq "$2" >/dev/null
}
need haproxy haproxy
need redis-server redis-server
(cd bench && npm ci --no-audit --no-fund --loglevel=error)
python3 -c 'import matplotlib' 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check matplotlib
echo "== building (release)"
cargo build --release --quiet --bins

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
    PIDS=()
}
trap cleanup EXIT

started() { PIDS+=("$1"); }

wait_http() { # url: until it answers 2xx; with a second argument "any", any HTTP answer
    local f=-f; [ "${2:-}" = any ] && f=
    for _ in $(seq 150); do curl $f -s -o /dev/null "$1" && return 0; sleep 0.2; done
    echo "timed out waiting for $1" >&2; return 1
}

haproxy_cfg() { # port, server addresses...
    local port=$1; shift
    cat <<CFG
global
    maxconn 9000
defaults
    mode http
    maxconn 9000
    option http-server-close
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
    timeout http-keep-alive 5s
frontend f
    bind 127.0.0.1:$port
    default_backend b
backend b
    balance roundrobin
CFG
    local i=0
    for s in "$@"; do i=$((i + 1)); echo "    server s$i $s maxconn 9000"; done
}

start_haproxy() { # name port servers...
    local name=$1 port=$2; shift 2
    haproxy_cfg "$port" "$@" >"$OUT/haproxy-$name.cfg"
    haproxy -db -f "$OUT/haproxy-$name.cfg" >>"$OUT/haproxy-$name.log" 2>&1 &
    started $!
    wait_http "http://127.0.0.1:$port/socket.io/?EIO=4&transport=polling" any
}

SERVER_PIDS=()
start_clusterchat() {
    SERVER_PIDS=()
    for i in 1 2 3; do
        local seeds=()
        for j in 1 2 3; do [ "$j" = "$i" ] || seeds+=(--seed "127.0.0.1:710$j"); done
        CLUSTERCHAT_SECRET=bench-secret-0123 "$BIN" node --node-id "node$i" --http "127.0.0.1:910$i" \
            --gossip "127.0.0.1:710$i" --rpc "127.0.0.1:810$i" --cluster-id "bench-$$" "${seeds[@]}" \
            --log warn >>"$OUT/node$i.log" 2>&1 &
        started $!; SERVER_PIDS+=($!)
    done
    for i in 1 2 3; do wait_http "http://127.0.0.1:910$i/ready"; done
    start_haproxy clusterchat 9200 127.0.0.1:9101 127.0.0.1:9102 127.0.0.1:9103
}

start_peer3() {
    SERVER_PIDS=()
    redis-server --port 6390 --bind 127.0.0.1 --save '' --appendonly no >>"$OUT/redis.log" 2>&1 &
    started $!; SERVER_PIDS+=($!)
    for _ in $(seq 50); do redis-cli -p 6390 ping >/dev/null 2>&1 && break; sleep 0.1; done
    for i in 1 2 3; do
        PORT=930$i NAME=peer$i REDIS_URL=redis://127.0.0.1:6390 node bench/peer.js >>"$OUT/peer$i.log" 2>&1 &
        started $!; SERVER_PIDS+=($!)
    done
    for i in 1 2 3; do wait_http "http://127.0.0.1:930$i/socket.io/?EIO=4&transport=websocket" any; done
    start_haproxy peer 9300 127.0.0.1:9301 127.0.0.1:9302 127.0.0.1:9303
}

start_peer1() {
    SERVER_PIDS=()
    PORT=9310 NAME=peer node bench/peer.js >>"$OUT/peer.log" 2>&1 &
    started $!; SERVER_PIDS+=($!)
    wait_http "http://127.0.0.1:9310/socket.io/?EIO=4&transport=polling"
}

bench() { # label target scenario args...
    local label=$1 target=$2; shift 2
    local pids=()
    for p in "${SERVER_PIDS[@]}"; do pids+=(--server-pid "$p"); done
    echo "== $label: $*"
    "$BENCH" --label "$label" --target "$target" "${pids[@]}" "$@" | tee -a "$OUT/results.jsonl"
}

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
