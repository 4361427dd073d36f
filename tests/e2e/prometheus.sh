#!/usr/bin/env bash
# End-to-end test of the monitoring: `PROMETHEUS=1 ./cluster.sh start`, then through the
# Prometheus HTTP API: the three nodes are targets and up, every node reports three ready
# members (the metric names of docs/ops are the nodes' own), the recording rules produce a
# series; node3 is killed and the ClusterchatNodeDown alert fires for it. Stops the cluster.
# Needs the release build, haproxy and Debian's prometheus (scripts/test.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/../.."
API=http://127.0.0.1:9090/api/v1
passed=0

trap './cluster.sh stop >/dev/null' EXIT
trap 'exit 130' INT TERM

fail() { echo "FAIL: $*" >&2; echo "$passed passed, 1 failed"; exit 1; }
ok() { echo "ok: $*"; passed=$((passed + 1)); }

# wait_for SECONDS DESCRIPTION PYTHON_EXPR URL: polls URL (JSON, as `d`) every 0.5 s until the
# expression is true; fails with the last answer after SECONDS.
wait_for() {
    local start=$SECONDS deadline=$((SECONDS + $1)) body=""
    while [ "$SECONDS" -lt "$deadline" ]; do
        body=$(curl -fs -m 2 "$4" || true)
        if [ -n "$body" ] && python3 -c "import json,sys; d=json.loads(sys.argv[1]); sys.exit(0 if ($3) else 1)" "$body"; then
            ok "$2 (after $((SECONDS - start)) s)"
            return 0
        fi
        sleep 0.5
    done
    fail "$2: not within $1 s; last answer: ${body:0:2000}"
}

PROMETHEUS=1 ./cluster.sh start

wait_for 60 "Prometheus scrapes three clusterchat targets, all up" \
    "sorted(t['labels']['instance'] for t in d['data']['activeTargets'] if t['health'] == 'up' and t['labels']['job'] == 'clusterchat') == ['127.0.0.1:9001', '127.0.0.1:9002', '127.0.0.1:9003']" \
    "$API/targets?state=active"
wait_for 60 "each node reports clusterchat_ready_members 3" \
    "sorted((r['metric']['instance'], r['value'][1]) for r in d['data']['result']) == [('127.0.0.1:900%d' % i, '3') for i in (1, 2, 3)]" \
    "$API/query?query=clusterchat_ready_members"
wait_for 60 "the recording rule clusterchat:sessions_owned:sum has a value" \
    "len(d['data']['result']) == 1" \
    "$API/query?query=clusterchat:sessions_owned:sum"
wait_for 30 "no alert fires while the cluster is whole" \
    "not [a for a in d['data']['alerts'] if a['state'] == 'firing']" \
    "$API/alerts"

pid=$(cat run/node3.pid)
kill -9 "$pid"   # the node cluster.sh started, by its pid
echo "killed node3 (pid $pid)"
wait_for 60 "ClusterchatNodeDown fires for node3 (127.0.0.1:9003)" \
    "any(a['labels']['alertname'] == 'ClusterchatNodeDown' and a['labels']['instance'] == '127.0.0.1:9003' and a['state'] == 'firing' for a in d['data']['alerts'])" \
    "$API/alerts"
echo "$passed passed, 0 failed"
