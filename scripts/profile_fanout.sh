#!/usr/bin/env bash
# Where the fan-out's server CPU goes (issue 6). Starts one system as scripts/bench.sh does,
# runs the fan-out scenario at the given send rates (chatbench reports each step's server
# user and system CPU seconds apart) and, with PERF=1, records a perf profile of the server
# processes while the steps run (perf.data and a report in $OUT); with SYSCALLS=1, counts
# their system calls and context switches over the steps (perf stat).
#   scripts/profile_fanout.sh SYSTEM [rates] [step secs]     (SYSTEM: a label of scripts/bench.sh)
#   PERF=1 CALLGRAPH=dwarf scripts/profile_fanout.sh clusterchat 1600 10
#   PERF=1 PERF_ARGS=--all-user FREQ=999 scripts/profile_fanout.sh clusterchat 1600 15
#   SYSCALLS=1 scripts/profile_fanout.sh socketio-1 1600 10
#   THREADS=1 scripts/profile_fanout.sh clusterchat 1600 10   context switches and CPU per kind
#                                             of server thread over the steps (scripts/thread_stats.py)
# Everything listens on 127.0.0.1; every process started here is tracked by PID and stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
SYSTEM=${1:?usage: $0 clusterchat|clusterchat-1|socketioxide-redis-3|socketioxide-1|floor-1|socketio-redis-3|socketio-1 [rates] [step secs]}
RATES=${2:-800,1600}
STEP=${3:-10}
ROOMS=${ROOMS:-100}
MEMBERS=${MEMBERS:-30}
OUT=${OUT:-run/profile}
mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
. scripts/bench_lib.sh
build
case $SYSTEM in
    socketioxide-*) build_peer socketioxide ;;
    floor-1) build_peer floor ;;
esac
start_system "$SYSTEM"
pids=()
for p in "${SERVER_PIDS[@]}"; do pids+=(--server-pid "$p"); done

log=$OUT/$SYSTEM.log
"$BENCH" --label "$SYSTEM" --target "$TARGET" "${pids[@]}" fanout --rooms "$ROOMS" --members "$MEMBERS" \
    --rates "$RATES" --step-secs "$STEP" --max-p99-ms 1e9 >"$OUT/$SYSTEM.jsonl" 2>"$log" &
gen=$!
started $gen
if [ "${PERF:-0}" = 1 ] || [ "${SYSCALLS:-0}" = 1 ] || [ "${THREADS:-0}" = 1 ]; then
    # From the end of the join phase for as long as the steps send.
    until grep -q "joined" "$log"; do kill -0 $gen 2>/dev/null || break; sleep 0.2; done
    steps=$(($(tr ',' '\n' <<<"$RATES" | wc -l) * STEP))
    list=$(IFS=,; echo "${SERVER_PIDS[*]}")
    perfpids=()
    [ "${THREADS:-0}" = 1 ] && scripts/thread_stats.py snap "$OUT/threads-$SYSTEM-before.json" "${SERVER_PIDS[@]}"
    if [ "${PERF:-0}" = 1 ]; then
        perf record ${PERF_ARGS:-} -F "${FREQ:-499}" --call-graph "${CALLGRAPH:-dwarf}" -p "$list" -o "$OUT/perf-$SYSTEM.data" \
            -- sleep "$steps" 2>"$OUT/perf-$SYSTEM.err" &
        started $!; perfpids+=($!)
    fi
    if [ "${SYSCALLS:-0}" = 1 ]; then
        # System calls and context switches of the servers, counted (not sampled).
        events=context-switches,syscalls:sys_enter_sendto,syscalls:sys_enter_write,syscalls:sys_enter_writev
        events+=,syscalls:sys_enter_recvfrom,syscalls:sys_enter_read,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_futex
        perf stat -e "$events" -p "$list" -o "$OUT/syscalls-$SYSTEM.txt" -- sleep "$steps" &
        started $!; perfpids+=($!)
    fi
    if [ "${THREADS:-0}" = 1 ]; then
        sleep "$steps"
        scripts/thread_stats.py snap "$OUT/threads-$SYSTEM-after.json" "${SERVER_PIDS[@]}"
        scripts/thread_stats.py diff "$OUT/threads-$SYSTEM-before.json" "$OUT/threads-$SYSTEM-after.json" \
            | tee "$OUT/threads-$SYSTEM.txt"
    fi
    for p in "${perfpids[@]}"; do wait "$p" || true; done
    if [ "${PERF:-0}" = 1 ]; then
        perf report -i "$OUT/perf-$SYSTEM.data" --children --sort symbol -g none --stdio 2>/dev/null \
            | grep -v '^#' | grep -v '^$' | head -300 >"$OUT/perf-$SYSTEM.txt" || true
    fi
fi
wait $gen
cat "$log" >&2
python3 - "$OUT/$SYSTEM.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    s = json.loads(line)["step"]
    d = max(s["delivered"], 1)
    print(f"rate {s['rate']}: {s['delivered']} deliveries, user {s['server_user_s']:.2f} s, sys {s['server_sys_s']:.2f} s;"
          f" per 100k deliveries: user {s['server_user_s'] * 1e5 / d:.2f} s, sys {s['server_sys_s'] * 1e5 / d:.2f} s")
PY
