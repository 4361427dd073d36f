#!/usr/bin/env bash
# Churn soak (issue 13): three release nodes behind haproxy; socket.io-client v4 workers
# (tests/clients/churn_soak.mjs) and python-socketio workers (tests/clients/churn_py.py)
# connect, join 3 rooms of their own and "lobby", send, and leave (half of the v4 cycles and
# every python one end in a transport close, so the session is parked for recovery), for
# SECONDS. Every REPORT seconds: each node's RSS and CPU seconds, and the cycle rate. Writes
# $OUT/churn-soak.txt. Loopback only; every process started here is tracked and stopped.
#   SECONDS_TOTAL=600 WORKERS=20 PY_WORKERS=5 scripts/churn_soak.sh [binary]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-run/churn}
mkdir -p "$OUT"
. scripts/bench_lib.sh
trap cleanup EXIT
DURATION=${SECONDS_TOTAL:-600}
WORKERS=${WORKERS:-20}
PY_WORKERS=${PY_WORKERS:-5}
REPORT=${REPORT:-10}
if [ -n "${1:-}" ]; then BIN=$1; else build; fi
need haproxy haproxy
(cd tests/clients && [ -d node_modules ] || npm ci --silent)
python3 -c 'import socketio' 2>/dev/null || pip install -q -r tests/clients/requirements.txt
start_clusterchat 3 "$BIN"
result=$OUT/churn-soak.txt
{
    echo "# churn soak: $(date -u +%FT%TZ), $DURATION s, $WORKERS v4 workers + $PY_WORKERS python workers, binary $BIN"
    echo "# t(s) | per node: RSS MB, CPU s (user+system) | v4 cycles/s in the interval"
} >"$result"
node tests/clients/churn_soak.mjs http://127.0.0.1:9200 --workers "$WORKERS" --seconds "$DURATION" --report "$REPORT" \
    >"$OUT/v4.jsonl" 2>"$OUT/v4.err" &
v4=$!; started $v4
python3 tests/clients/churn_py.py http://127.0.0.1:9200 --workers "$PY_WORKERS" --seconds "$DURATION" \
    >"$OUT/py.json" 2>"$OUT/py.err" &
py=$!; started $py
tick=$(getconf CLK_TCK)
sample() {
    local line="$1"
    for pid in "${SERVER_PIDS[@]}"; do
        rss=$(awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$pid/status")
        cpu=$(awk -v t="$tick" '{printf "%.1f", ($14 + $15) / t}' "/proc/$pid/stat")
        line="$line | $rss MB $cpu s"
    done
    echo "$line"
}
sample "0" >>"$result"
seen=0
while kill -0 $v4 2>/dev/null; do
    sleep "$REPORT"
    lines=$(wc -l <"$OUT/v4.jsonl")
    rate=$(tail -n +$((seen + 1)) "$OUT/v4.jsonl" | python3 -c 'import json,sys; r=[json.loads(l).get("rate") for l in sys.stdin]; r=[x for x in r if x is not None]; print(r[-1] if r else "-")')
    seen=$lines
    kill -0 $v4 2>/dev/null && sample "$(python3 -c "import json,sys; print(json.loads(open('$OUT/v4.jsonl').readlines()[-1]).get('t', '-'))" 2>/dev/null || echo -) ($rate/s)" >>"$result"
done
wait $py || true
echo "# v4: $(tail -1 "$OUT/v4.jsonl"); python: $(cat "$OUT/py.json")" >>"$result"
for i in 1 2 3; do
    echo "# node$i: $(curl -fs http://127.0.0.1:910$i/metrics | grep -E '^clusterchat_parked_sessions' | tr '\n' ' ')" >>"$result"
done
cat "$result"
