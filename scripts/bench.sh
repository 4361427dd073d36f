#!/usr/bin/env bash
# The benchmarks of issues 6 and 14: every scenario against clusterchat and against each peer,
# one system at a time, each started fresh, in one run; then the report (ratios to each peer).
# Systems (labels):
#   clusterchat             3 nodes behind haproxy          clusterchat-1         one node
#   clusterchat-1t          one node on one thread (--cores 1), as the floor and each socketioxide
#                           process run (clusterchat-1 has the default: a thread of each kind per core)
#   socketioxide-redis-3    bench/peers/socketioxide x3 + socketioxide-redis + Redis, behind haproxy
#   socketioxide-1          bench/peers/socketioxide, one process
#   floor-1                 bench/peers/floor: one process, one thread, epoll
#   socketio-redis-3        bench/peer.js x3 + the sharded Redis adapter, behind haproxy
#   socketio-1              bench/peer.js, one process
#   clusterchat-baseline, clusterchat-baseline-1: with BASELINE_BIN=/path/to/clusterchat, the
#                           same two shapes run with that binary, beside the current one
# Usage:
#   scripts/bench.sh                          full sizes, every system (about 35 minutes on 2 cores)
#   QUICK=1 scripts/bench.sh                  small sizes
#   SCENARIOS=fanout scripts/bench.sh         only these scenarios (comma-separated: idle, fanout,
#                                             big-room, join-visibility, polling, gossip)
#   SYSTEMS=clusterchat-1,floor-1 scripts/bench.sh    only these systems
#   IDLE_CLIENTS=10000,30000,50000 SCENARIOS=idle scripts/bench.sh   the idle scenario's client
#                                             counts instead of the defaults (see below)
#   ROUNDS=3 scripts/bench.sh                 the fan-out that many times: after the first round of
#                                             every scenario, each system again, fan-out only, in the
#                                             same order; the report pools each system's rounds per
#                                             send rate (one shared machine drifts 5-10 % between runs)
#   FANOUT_RATES=800,1600,3200 scripts/bench.sh   only these send rates in the fan-out
#   BASELINE_BIN=/path/to/clusterchat scripts/bench.sh   e.g. a build of main: git worktree add
#                                             ../base main && cargo build --release in it, then
#                                             BASELINE_BIN=../base/target/release/clusterchat
# A full, unfiltered run (no IDLE_CLIENTS either) writes BENCHMARKS.md and bench/results/; any other run (QUICK, SCENARIOS,
# SYSTEMS) writes its report to $OUT/BENCHMARKS.md ($OUT is run/bench unless set) and leaves
# both alone. Everything listens on 127.0.0.1; every process this script starts is tracked by
# PID and stopped on exit; every load stops by itself (durations, counts, timeouts).
set -euo pipefail
# A relative BASELINE_BIN is relative to where the script was called from.
if [ -n "${BASELINE_BIN:-}" ]; then BASELINE_BIN=$(realpath -e "$BASELINE_BIN"); fi
cd "$(dirname "$0")/.."
OUT=${OUT:-run/bench}
mkdir -p "$OUT"
: >"$OUT/results.jsonl"

ALL_SCENARIOS=idle,fanout,big-room,join-visibility,polling,gossip
ALL_SYSTEMS=clusterchat,clusterchat-1,clusterchat-1t,socketioxide-redis-3,socketioxide-1,floor-1,socketio-redis-3,socketio-1
SCENARIOS=${SCENARIOS:-$ALL_SCENARIOS}
SYSTEMS=${SYSTEMS:-$ALL_SYSTEMS}
FULL=1
if [ "${QUICK:-0}" = 1 ] || [ "$SCENARIOS" != "$ALL_SCENARIOS" ] || [ "$SYSTEMS" != "$ALL_SYSTEMS" ] || [ -n "${IDLE_CLIENTS:-}" ] \
    || [ -n "${FANOUT_RATES:-}" ]; then FULL=0; fi
ROUNDS=${ROUNDS:-1}
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "ROUNDS=$ROUNDS: a count of at least 1" >&2; exit 2; }
has() { case ",$2," in *",$1,"*) return 0 ;; esac; return 1; } # item list
for s in ${SCENARIOS//,/ }; do has "$s" "$ALL_SCENARIOS" || { echo "unknown scenario $s (of $ALL_SCENARIOS)" >&2; exit 2; }; done
for s in ${SYSTEMS//,/ }; do
    has "$s" "$ALL_SYSTEMS,clusterchat-baseline,clusterchat-baseline-1" || { echo "unknown system $s (of $ALL_SYSTEMS)" >&2; exit 2; }
done
# The baseline: a twin of every clusterchat shape selected, run right after it.
if [ -n "${BASELINE_BIN:-}" ]; then
    [ -x "$BASELINE_BIN" ] || { echo "BASELINE_BIN=$BASELINE_BIN is not an executable" >&2; exit 2; }
    with=()
    for s in ${SYSTEMS//,/ }; do
        with+=("$s")
        case $s in clusterchat | clusterchat-1) has "${s/clusterchat/clusterchat-baseline}" "$SYSTEMS" || with+=("${s/clusterchat/clusterchat-baseline}") ;; esac
    done
    SYSTEMS=$(IFS=,; echo "${with[*]}")
fi
echo "== systems: $SYSTEMS; scenarios: $SCENARIOS"

# Sizes (issue 6), scaled down with QUICK=1.
if [ "${QUICK:-0}" = 1 ]; then
    IDLE=300,1000; ROOMS=20; MEMBERS=10; RATES=50,200,800; BIG=200; BIG_RATES=2,10; STEP=3; SETTLE=1
    POLL=60; JV=50; GOSSIP=3,10; GOSSIP_TRIALS=1
else
    IDLE=1000,3000,6000; ROOMS=100; MEMBERS=30; RATES=50,100,200,400,800,1600,3200,6400; BIG=${BIG:-3000}
    BIG_RATES=1,2,5,10,20,40,80; STEP=5; SETTLE=5; POLL=300; JV=300; GOSSIP=3,10,30; GOSSIP_TRIALS=3
fi

RATES=${FANOUT_RATES:-$RATES}

# IDLE_CLIENTS: the idle counts. haproxy is one process of about 20,000 files holding two per
# client, so counts above its 9,000 connections go to a three-process system's processes
# directly (client i to process i mod 3, as round robin would); chatbench spreads counts above
# 15,000 over several generator processes itself (`idle --per-process`).
IDLE=${IDLE_CLIENTS:-$IDLE}
IDLE_MAX=$(tr , '\n' <<<"$IDLE" | sort -n | tail -1)
idle_targets() { # label target: the --target arguments of the idle scenario
    local direct=()
    if [ "$IDLE_MAX" -gt 9000 ]; then
        case $1 in
            clusterchat | clusterchat-baseline) direct=(9101 9102 9103) ;;
            socketioxide-redis-3) direct=(9331 9332 9333) ;;
            socketio-redis-3) direct=(9301 9302 9303) ;;
        esac
    fi
    if [ ${#direct[@]} = 0 ]; then echo "--target $2"; return; fi
    for p in "${direct[@]}"; do echo "--target 127.0.0.1:$p"; done
}

# File descriptors: as many as this machine allows (about 20,000 here).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "== open files: $(ulimit -n)"

. scripts/bench_lib.sh
any() { for s in "$@"; do has "$s" "$SYSTEMS" && return 0; done; return 1; }
if any clusterchat clusterchat-baseline socketioxide-redis-3 socketio-redis-3; then need haproxy haproxy; fi
if any socketioxide-redis-3 socketio-redis-3; then need redis-server redis-server; fi
if any socketio-redis-3 socketio-1; then (cd bench && npm ci --no-audit --no-fund --loglevel=error); fi
python3 -c 'import matplotlib' 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check matplotlib
# SKIP_BUILD=1: use the binaries already in $CARGO_TARGET_DIR (e.g. copies of an earlier build).
[ "${SKIP_BUILD:-0}" = 1 ] || build
if any socketioxide-redis-3 socketioxide-1; then build_peer socketioxide; fi
if any floor-1; then build_peer floor; fi

scenarios() { # label target [polling node args]
    local label=$1 target=$2; shift 2
    if has idle "$SCENARIOS"; then
        local targets
        read -r -a targets <<<"$(idle_targets "$label" "$target" | tr '\n' ' ')"
        # All of them after the scenario: there they replace bench's own --target (clap).
        bench "$label" "$target" idle --clients "$IDLE" --hold 5 "${targets[@]}"
    fi
    if has fanout "$SCENARIOS"; then
        bench "$label" "$target" fanout --rooms "$ROOMS" --members "$MEMBERS" --rates "$RATES" --step-secs "$STEP"
    fi
    if has big-room "$SCENARIOS"; then bench "$label" "$target" big-room --members "$BIG" --rates "$BIG_RATES" --step-secs "$STEP" --settle-secs "$SETTLE"; fi
    if has join-visibility "$SCENARIOS"; then bench "$label" "$target" join-visibility --trials "$JV"; fi
    if [ $# -gt 0 ] && has polling "$SCENARIOS"; then bench "$label" "$target" "$@" polling --clients "$POLL" --secs "$STEP"; fi
}

system() { # label: start it fresh (the idle scenario's RSS baseline is a fresh server), run, stop
    start_system "$1"
    scenarios "$1" "$TARGET" "${POLL_ARGS[@]}"
    cleanup
}
export ROUND=1 # chatbench's lines are tagged with it (bench in bench_lib.sh)
for s in ${SYSTEMS//,/ }; do system "$s"; done
if has fanout "$SCENARIOS"; then
    for ((ROUND = 2; ROUND <= ROUNDS; ROUND++)); do
        echo "== fan-out round $ROUND of $ROUNDS"
        for s in ${SYSTEMS//,/ }; do SCENARIOS=fanout system "$s"; done
    done
fi
unset ROUND

SERVER_PIDS=()
if has gossip "$SCENARIOS" && any clusterchat clusterchat-1; then
    bench clusterchat 127.0.0.1:9 gossip --sizes "$GOSSIP" --trials "$GOSSIP_TRIALS"
fi

COMMAND=${BENCH_COMMAND:-scripts/bench.sh}
if [ "$FULL" = 1 ]; then
    echo "== writing BENCHMARKS.md"
    python3 scripts/bench_report.py "$OUT/results.jsonl" --command "$COMMAND" --out BENCHMARKS.md --plot bench/results/latency.png
    mkdir -p bench/results && cp "$OUT/results.jsonl" bench/results/results.jsonl
else
    echo "== writing $OUT/BENCHMARKS.md (a partial or quick run: BENCHMARKS.md is left alone)"
    python3 scripts/bench_report.py "$OUT/results.jsonl" --command "$COMMAND" --out "$OUT/BENCHMARKS.md" --plot "$OUT/latency.png"
fi
