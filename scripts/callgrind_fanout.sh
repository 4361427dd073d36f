#!/usr/bin/env bash
# Instructions per delivery of one clusterchat node on the fan-out load, counted by callgrind:
# repeatable where CPU seconds on two shared cores are not. Starts one node under
# `valgrind --tool=callgrind`, connects ROOMS x MEMBERS clients, zeroes the counters once they
# have joined, sends RATE messages/s for STEP seconds, dumps the counters, and prints the
# instructions per delivery and the top functions (inclusive and self) to $OUT.
#   ROOMS=20 MEMBERS=30 scripts/callgrind_fanout.sh [rate (100)] [step secs (5)] [binary]
# NODE_CORES=n as in scripts/bench_lib.sh. Everything listens on 127.0.0.1; every process
# started here is tracked by PID and stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${1:-100}
STEP=${2:-5}
ROOMS=${ROOMS:-20}
MEMBERS=${MEMBERS:-30}
OUT=${OUT:-run/callgrind}
mkdir -p "$OUT"
. scripts/bench_lib.sh
BIN=${3:-$BIN}
[ -n "${3:-}" ] || build
out=$OUT/callgrind.out
rm -f "$out"*
read -ra sized <<<"$(node_sizing 1)"
env CLUSTERCHAT_SECRET=bench-secret-0123 \
    valgrind --tool=callgrind --compress-strings=no --callgrind-out-file="$out" "$BIN" node --node-id node1 \
    --http 127.0.0.1:9101 --gossip 127.0.0.1:7101 --rpc 127.0.0.1:8101 --cluster-id "cg-$$" "${sized[@]}" \
    --log warn >"$OUT/node.log" 2>&1 &
server=$!
started $server
for _ in $(seq 600); do curl -fs -o /dev/null http://127.0.0.1:9101/ready && break; sleep 0.2; done
log=$OUT/chatbench.log
"$BENCH" --label clusterchat-1 --target 127.0.0.1:9101 --server-pid "$server" fanout --rooms "$ROOMS" \
    --members "$MEMBERS" --rates "$RATE" --step-secs "$STEP" --max-p99-ms 1e9 >"$OUT/fanout.jsonl" 2>"$log" &
gen=$!
started $gen
until grep -q "joined" "$log"; do kill -0 $gen 2>/dev/null || break; sleep 0.1; done
callgrind_control -z "$server" >/dev/null
wait $gen
callgrind_control -d "$server" >/dev/null
cleanup
dump=$(ls -t "$out"* | grep -v '\.out$' | head -1 || true)
[ -n "$dump" ] || dump=$(ls -t "$out"* | head -1)
delivered=$(python3 -c 'import json,sys; print(sum(json.loads(l)["step"]["delivered"] for l in open(sys.argv[1])))' "$OUT/fanout.jsonl")
total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
cat "$log" >&2
echo "deliveries $delivered, instructions $total, per delivery $((total / delivered))"
callgrind_annotate --inclusive=yes "$dump" 2>/dev/null | head -60 >"$OUT/inclusive.txt" || true
callgrind_annotate "$dump" 2>/dev/null | head -60 >"$OUT/self.txt" || true
