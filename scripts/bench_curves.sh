#!/usr/bin/env bash
# Issue 14's cost curves, measured on this machine; results appended to $OUT/curves.jsonl (one JSON
# line per point), plots and the tables by scripts/bench_curves.py.
#   scripts/bench_curves.sh rooms [sizes (10,100,1000,10000)]    instructions per delivery, one room
#                                             of N members on one node (NODES=3: three nodes)
#   scripts/bench_curves.sh nodes [counts (1,3,5)]   instructions per delivery, 20 rooms x 30 members
#                                             at 100 msg/s spread over 1, 3, 5 node processes
#   scripts/bench_curves.sh nodes-cpu [counts (1,3,5)]   the same load natively, server CPU-seconds
#                                             per delivery (the points back to back, in one run)
#   scripts/bench_curves.sh gossip [sizes] [rooms]   gossip bytes/s per node and key convergence, in-process
#                                             rings of 3, 10, 30, 100 nodes and 100 / 10,000 /
#                                             100,000 rooms per node at 3 nodes (chatbench gossip-cost)
#   BASELINE_BIN=path scripts/bench_curves.sh bigroom-ab   the one-node big room (3,000 members),
#                                             this build and the baseline alternated, natively
#   scripts/bench_curves.sh plot              bench/results/curve-*.png and bench/curves.md's tables
#   scripts/bench_curves.sh all               every curve, then the plots
# BIN=path runs another clusterchat binary (e.g. a baseline build) with LABEL=name.
# Instruction counts come from `valgrind --tool=callgrind`: every node runs under it with
# instrumentation off (--instr-atstart=no) until the clients have joined and the joins' traffic
# has settled, then on for the step; the figure is the sum over the nodes of the instructions
# executed divided by the deliveries counted by the clients. Repeatable where CPU seconds on two
# shared cores are not. Everything listens on 127.0.0.1; every process started here is tracked
# by PID and stopped; every load stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results}
mkdir -p "$OUT" run/curves
RESULTS=$OUT/curves.jsonl
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
CURVE_BIN=${BIN:-}
. scripts/bench_lib.sh
BIN=${CURVE_BIN:-$BIN}
LABEL=${LABEL:-clusterchat}
LOGS=run/curves

# Starts `n` nodes of $BIN under callgrind (instrumentation off), clustered if n > 1; sets
# SERVER_PIDS and TARGETS (one --target per node).
start_callgrind_nodes() { # n
    local n=$1
    SERVER_PIDS=(); TARGETS=()
    rm -f "$LOGS"/callgrind.out.*
    # Under valgrind a node can fall silent for seconds: with the default phi threshold (8) its
    # peers then count it lost for a moment, and its users leave and rejoin every room (measured:
    # a third of a point's instructions). Far from that here; the gossip itself is unchanged.
    printf '[cluster]\nphi_threshold = %s\n' "${PHI:-30}" >"$LOGS/callgrind-node.toml"
    # PING_MS: the heartbeat's period. The room-size points send 1 message a second from 3,000
    # members on, and the clients, connected within seconds of each other, are pinged in waves
    # every 25 s: a 10 s step held one wave or none (39 M or 53 M instructions at 3,000). Their
    # heartbeat is not a delivery's cost: those points ping every 10 minutes, after the step.
    [ -z "${PING_MS:-}" ] || printf '[engine]\nping_interval_ms = %s\n' "$PING_MS" >>"$LOGS/callgrind-node.toml"
    # Sized as the benchmark's nodes are (`node_sizing`): on two cores, three or five nodes of
    # one thread each.
    local sized
    read -ra sized <<<"$(node_sizing "$n")"
    for i in $(seq "$n"); do
        local seeds=()
        for j in $(seq "$n"); do [ "$j" = "$i" ] || seeds+=(--seed "127.0.0.1:710$j"); done
        env CLUSTERCHAT_SECRET=bench-secret-0123 valgrind --tool=callgrind --instr-atstart=no \
            --callgrind-out-file="$LOGS/callgrind.out.node$i" "$BIN" node --config "$LOGS/callgrind-node.toml" --node-id "node$i" \
            --http "127.0.0.1:910$i" --gossip "127.0.0.1:710$i" --rpc "127.0.0.1:810$i" \
            --cluster-id "curves-$$-$n" "${seeds[@]}" "${sized[@]}" --log warn >"$LOGS/node$i.log" 2>&1 &
        started $!; SERVER_PIDS+=($!); TARGETS+=(--target "127.0.0.1:910$i")
    done
    for i in $(seq "$n"); do
        for _ in $(seq 900); do curl -fs -o /dev/null "http://127.0.0.1:910$i/ready" && break; sleep 0.2; done
    done
}

# One point: `n` nodes under callgrind, `rooms` x `members` clients (big-room when rooms = 1),
# `rate` messages/s for `step` seconds after `settle` seconds. Appends a line to $RESULTS.
callgrind_point() { # curve n rooms members rate step settle
    local curve=$1 n=$2 rooms=$3 members=$4 rate=$5 step=$6 settle=$7
    echo "== $curve: $LABEL, $n node(s), $rooms x $members, $rate msg/s for $step s (callgrind)"
    start_callgrind_nodes "$n"
    local log=$LOGS/chatbench.log gen pids=()
    rm -f "$log" # waited for below: not an earlier point's
    for p in "${SERVER_PIDS[@]}"; do pids+=(--server-pid "$p"); done
    # MEASURE_JOIN=1: the connects, joins and settling counted too, in a dump of their own.
    if [ "${MEASURE_JOIN:-0}" = 1 ]; then
        for p in "${SERVER_PIDS[@]}"; do callgrind_control -i on "$p" >/dev/null; done
    fi
    "$BENCH" --label "$LABEL" "${TARGETS[@]}" "${pids[@]}" --concurrency "${CONCURRENCY:-128}" fanout --rooms "$rooms" --members "$members" \
        --rates "$rate" --step-secs "$step" --settle-secs "$settle" --hold-secs 60 --max-p99-ms 1e9 >"$LOGS/point.jsonl" 2>"$log" &
    gen=$!
    started $gen
    until grep -qs "settled" "$log"; do kill -0 $gen 2>/dev/null || break; sleep 0.1; done
    for p in "${SERVER_PIDS[@]}"; do
        if [ "${MEASURE_JOIN:-0}" = 1 ]; then callgrind_control -d "$p" >/dev/null; else callgrind_control -i on "$p" >/dev/null; fi
    done
    # The step's counts: taken while the clients hold on after it (--hold-secs); their leaving
    # is counted apart, once the nodes have seen every one of them go.
    until grep -qs "steps done" "$log"; do kill -0 $gen 2>/dev/null || break; sleep 0.1; done
    for p in "${SERVER_PIDS[@]}"; do callgrind_control -d "$p" >/dev/null; done
    wait $gen || { cat "$log" >&2; cleanup; return 1; }
    for t in "${TARGETS[@]}"; do
        [ "$t" = --target ] && continue
        for _ in $(seq 600); do
            curl -fs "http://$t/metrics" | grep -q '^clusterchat_sockets{nsp="/chat"} 0$' && break
            sleep 0.2
        done
    done
    for p in "${SERVER_PIDS[@]}"; do callgrind_control -d "$p" >/dev/null; done
    cleanup
    cat "$log" >&2
    grep -q "100.0 % delivered" "$log" || echo "== warning: not every delivery arrived; the point counts only those that did" >&2
    local total=0 t dump join_total=0 gossip_total=0 leave_total=0 k=1
    [ "${MEASURE_JOIN:-0}" = 1 ] && k=2
    for i in $(seq "$n"); do
        if [ "${MEASURE_JOIN:-0}" = 1 ]; then
            t=$(callgrind_annotate "$LOGS/callgrind.out.node$i.1" 2>/dev/null | awk '/PROGRAM TOTALS/ && !t {gsub(",", "", $1); t = $1} END {print t}')
            join_total=$((join_total + t))
        fi
        # The clients' leaving: the last dump asked for above.
        t=$(callgrind_annotate "$LOGS/callgrind.out.node$i.$((k + 1))" 2>/dev/null | awk '/PROGRAM TOTALS/ && !t {gsub(",", "", $1); t = $1} END {print (t == "" ? 0 : t)}')
        leave_total=$((leave_total + t))
        # The step's dump (the file of the exit holds only what ran after the last dump).
        dump=$LOGS/callgrind.out.node$i.$k
        t=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ && !t {gsub(",", "", $1); t = $1} END {print t}')
        total=$((total + t))
        # The gossip task's share (inclusive): background work, paid per node and per second
        # whatever the load.
        t=$(callgrind_annotate --inclusive=yes "$dump" 2>/dev/null |
            awk '/chitchat::server::spawn_chitchat::\{\{closure\}\}::\{\{closure\}\}/ && !t {gsub(",", "", $1); t = $1} END {print (t == "" ? 0 : t)}')
        gossip_total=$((gossip_total + t))
        if [ "$i" = 1 ]; then # the top functions of node 1, inclusive and self
            callgrind_annotate --inclusive=yes "$dump" 2>/dev/null | head -80 >"$LOGS/$curve-$LABEL-$n-$members.inclusive.txt" || true
            callgrind_annotate "$dump" 2>/dev/null | head -80 >"$LOGS/$curve-$LABEL-$n-$members.self.txt" || true
            cp "$dump" "$LOGS/$curve-$LABEL-$n-$members.callgrind"
        fi
    done
    python3 - "$LOGS/point.jsonl" "$curve" "$LABEL" "$n" "$total" "$join_total" "$gossip_total" "$leave_total" >>"$RESULTS" <<'PY'
import json, sys
step = json.loads(open(sys.argv[1]).readline())
curve, label, n, total, join = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
leave = int(sys.argv[8])
clients = step["rooms"] * step["members"]
gossip = int(sys.argv[7])
d = step["step"]["delivered"]
print(json.dumps({"curve": curve, "label": label, "nodes": n, "rooms": step["rooms"], "members": step["members"],
                  "rate": step["step"]["rate"], "messages": step["step"]["messages"], "delivered": d,
                  "delivered_pct": step["step"]["delivered_pct"], "instructions": total,
                  "instructions_per_delivery": total / d if d else None, "join_s": step["join_s"],
                  "gossip_instructions": gossip,
                  "instructions_per_delivery_without_gossip": (total - gossip) / d if d else None,
                  "clients_gone": step["clients_gone"],
                  "join_instructions": join or None, "join_instructions_per_client": join / clients if join else None,
                  "leave_instructions": leave, "leave_instructions_per_client": leave / clients}))
PY
    tail -1 "$RESULTS"
}

# Room size: about 30,000 deliveries per point (rate x step x members), each sender within the
# chat's rate limit (20 messages/s per client: at most 10 here), after the joins settled (the
# `room users` list is sent at most 2 s after the last join, later under valgrind).
rooms_curve() { # sizes
    local n=${NODES:-1}
    for m in ${1//,/ }; do
        local rate=$((3000 / m)) step settle=$((5 + m / 500))
        if [ "$rate" -gt $((10 * m)) ]; then rate=$((10 * m)); fi
        if [ "$rate" -lt 1 ]; then rate=1; fi
        step=$((30000 / (rate * m))); if [ "$step" -lt 3 ]; then step=3; fi
        # Joins are announced to the room up to chat.presence_limit (1,000) members: under
        # valgrind, joins made 128 at a time waited longer than the client's 20 s for their
        # acks from 3,000 members on (when every join was announced).
        local conc=128; if [ "$m" -ge 3000 ]; then conc=8; fi
        PING_MS=600000 CONCURRENCY=$conc callgrind_point rooms "$n" 1 "$m" "$rate" "$step" "$settle"
    done
}

nodes_curve() { # counts
    for n in ${1//,/ }; do callgrind_point nodes "$n" 20 30 100 10 5; done
}

# The nodes curve natively: server CPU-seconds from /proc, the points back to back. The fan-out
# of issue 14 (20 rooms x 30, 1,000 msg/s = 30,000 deliveries/s) and half of it.
nodes_cpu_curve() { # counts
    for n in ${1//,/ }; do
        echo "== nodes-cpu: $LABEL, $n node(s)"
        OUT=$LOGS start_clusterchat "$n" "$BIN"
        local targets=() pids=()
        for i in $(seq "$n"); do targets+=(--target "127.0.0.1:910$i"); done
        for p in "${SERVER_PIDS[@]}"; do pids+=(--server-pid "$p"); done
        "$BENCH" --label "$LABEL" "${targets[@]}" "${pids[@]}" fanout --rooms 20 --members 30 --rates 500,1000 \
            --step-secs 10 --settle-secs 3 --max-p99-ms 1e9 2>>"$LOGS/chatbench.log" |
            python3 -c '
import json, sys
for l in sys.stdin:
    r = json.loads(l); s = r["step"]
    print(json.dumps({"curve": "nodes-cpu", "label": r["label"], "nodes": int(sys.argv[1]), "rooms": r["rooms"],
        "members": r["members"], "rate": s["rate"], "delivered": s["delivered"], "delivered_pct": s["delivered_pct"],
        "server_cpu_s": s["server_cpu_s"], "server_user_s": s["server_user_s"], "server_sys_s": s["server_sys_s"],
        "cpu_us_per_delivery": s["server_cpu_s"] * 1e6 / max(s["delivered"], 1), "p99_ms": s["latency"]["p99_ms"]}))
' "$n" | tee -a "$RESULTS"
        cleanup
    done
}

# The one-node big room, the current build and BASELINE_BIN alternated (ROUNDS times each), every
# step run whatever its p99 (the table's scenario stops at the first step over 100 ms), natively:
# deliveries per server CPU-second at equal send rates. Lines in $OUT/bigroom-ab.jsonl.
bigroom_ab() {
    [ -x "${BASELINE_BIN:-}" ] || { echo "set BASELINE_BIN" >&2; exit 2; }
    local members=${MEMBERS:-3000}
    for round in $(seq "${ROUNDS:-2}"); do
        for pair in "clusterchat-1:$BIN" "clusterchat-baseline-1:$BASELINE_BIN"; do
            local label=${pair%%:*} bin=${pair#*:} pids=()
            echo "== bigroom-ab round $round: $label"
            OUT=$LOGS start_clusterchat 1 "$bin"
            for p in "${SERVER_PIDS[@]}"; do pids+=(--server-pid "$p"); done
            "$BENCH" --label "$label" --target 127.0.0.1:9101 "${pids[@]}" big-room --members "$members" \
                --rates 10,20,40,80 --step-secs 5 --settle-secs 5 --max-p99-ms 1e9 | tee -a "$OUT/bigroom-ab.jsonl"
            cleanup
        done
    done
}

# One ring per run, so that a ring that does not converge (100 nodes in one process need more
# than this machine's two cores) costs its own point only.
# The sizes run without room keys (at 100 per node, 100 nodes did not sync within a minute here:
# the process needed more than two cores), the room keys at 3 nodes.
gossip_curve() { # sizes, rooms per node at 3 nodes
    for n in ${1//,/ }; do
        "$BENCH" --label "$LABEL" gossip-cost --sizes "$n" --rooms 0 --secs 10 | tee -a "$RESULTS" || echo "== $n nodes: failed" >&2
    done
    for r in ${2//,/ }; do
        "$BENCH" --label "$LABEL" gossip-cost --sizes 3 --rooms "$r" --secs 10 | tee -a "$RESULTS" || echo "== $r rooms: failed" >&2
    done
}

what=${1:-all}
case $what in
    rooms) rooms_curve "${2:-10,100,1000,10000}" ;;
    nodes) nodes_curve "${2:-1,3,5}" ;;
    nodes-cpu) nodes_cpu_curve "${2:-1,3,5}" ;;
    gossip) gossip_curve "${2-3,10,30,100}" "${3-100,10000,100000}" ;;
    bigroom-ab) bigroom_ab ;;
    plot) python3 scripts/bench_curves.py "$RESULTS" --out-dir "$OUT" --md bench/curves.md ;;
    all)
        rooms_curve 10,100,1000,10000
        nodes_curve 1,3,5
        nodes_cpu_curve 1,3,5
        gossip_curve 3,10,30,100 100,10000,100000
        python3 scripts/bench_curves.py "$RESULTS" --out-dir "$OUT" --md bench/curves.md
        ;;
    *) echo "unknown curve $what" >&2; exit 2 ;;
esac
