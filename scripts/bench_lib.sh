# Helpers shared by scripts/bench.sh and scripts/profile_fanout.sh (sourced, not run): start
# clusterchat (3 nodes) or the socket.io peer (3 processes + Redis, or one process) behind
# haproxy on 127.0.0.1, track every started PID and stop them (cleanup), build and run chatbench.
# Expects OUT to be set. NODE_THREADS=n runs each clusterchat node with n tokio worker threads
# (TOKIO_WORKER_THREADS; default: one per core).

# The server and the load generator (the workspace member crates/chatbench), built together.
TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN=$TARGET_DIR/release/clusterchat
BENCH=$TARGET_DIR/release/chatbench
build() {
    echo "== building clusterchat and chatbench (release)"
    cargo build --release --quiet -p clusterchat -p chatbench
}

need() { # command, apt package
    command -v "$1" >/dev/null && return 0
    echo "== installing $2 (apt-get)"
    apt-get update -qq && apt-get install -y -qq "$2" >/dev/null
}

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
        env ${NODE_THREADS:+TOKIO_WORKER_THREADS=$NODE_THREADS} CLUSTERCHAT_SECRET=bench-secret-0123 "$BIN" node --node-id "node$i" --http "127.0.0.1:910$i" \
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

