# Helpers shared by scripts/bench.sh and scripts/profile_fanout.sh (sourced, not run): start
# clusterchat (3 nodes behind haproxy, or one node), the socket.io peer (3 processes + Redis, or
# one process), the socketioxide peer (the same two shapes) or the floor on 127.0.0.1, track every
# started PID and stop them (cleanup), build and run chatbench and the peers.
# Expects OUT to be set. Each clusterchat node runs with its share of this machine's cores
# (`--cores n`: three nodes on two cores get 1, which runs each on one thread, as each peer
# process runs; n > 1 is n connection threads and n runtime workers), and one node the default
# (all cores). NODE_CORES=n sets n for every node instead; BASELINE_CORES=n for the baselines
# only (e.g. BASELINE_BIN=$BIN BASELINE_CORES=2 compares thread layouts side by side). A
# baseline built before `--cores` (5f14995) does not know the flag: give it a wrapper script
# that turns `--cores n` into the `--io-threads n --worker-threads n` it knows.

# The server and the load generator (the workspace member crates/chatbench), built together.
TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN=$TARGET_DIR/release/clusterchat
BENCH=$TARGET_DIR/release/chatbench
build() {
    echo "== building clusterchat and chatbench (release)"
    cargo build --release --quiet -p clusterchat -p chatbench
}

# The Rust peers: Cargo projects of their own under bench/peers/, each with its target
# directory in its folder (deleted by hand when done: they are large).
SIOXIDE_BIN=bench/peers/socketioxide/target/release/socketioxide-peer
FLOOR_BIN=bench/peers/floor/target/release/floor
build_peer() { # folder under bench/peers
    echo "== building bench/peers/$1 (release)"
    cargo build --release --quiet --manifest-path "bench/peers/$1/Cargo.toml" --target-dir "bench/peers/$1/target"
}

need() { # command, apt package
    command -v "$1" >/dev/null && return 0
    echo "== installing $2 (apt-get)"
    apt-get update -qq && apt-get install -y -qq "$2" >/dev/null
}

PIDS=()
cleanup() {
    local pid
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
    local i=0 s
    for s in "$@"; do i=$((i + 1)); echo "    server s$i $s maxconn 9000"; done
}

start_haproxy() { # name port servers...
    local name=$1 port=$2; shift 2
    haproxy_cfg "$port" "$@" >"$OUT/haproxy-$name.cfg"
    haproxy -db -f "$OUT/haproxy-$name.cfg" >>"$OUT/haproxy-$name.log" 2>&1 &
    started $!
    wait_http "http://127.0.0.1:$port/socket.io/?EIO=4&transport=polling" any
}

# The flags that size one of `n` clusterchat nodes sharing this machine (`--cores`: its share of
# the cores, at least 1; $NODE_CORES if set); none for a node alone, which keeps the default.
node_sizing() { # n [cores]
    local n=$1 cores=${2:-${NODE_CORES:-}}
    if [ -z "$cores" ] && [ "$n" -gt 1 ]; then cores=$(($(nproc) / n)); [ "$cores" -ge 1 ] || cores=1; fi
    [ -z "$cores" ] || echo "--cores $cores"
}

SERVER_PIDS=()
start_clusterchat() { # [nodes (3; 1 is served without haproxy, on 9101)] [binary ($BIN)] [cores ($NODE_CORES)]
    local n=${1:-3} bin=${2:-$BIN} sized i j
    read -ra sized <<<"$(node_sizing "$n" "${3:-}")"
    SERVER_PIDS=()
    for i in $(seq "$n"); do
        local seeds=()
        for j in $(seq "$n"); do [ "$j" = "$i" ] || seeds+=(--seed "127.0.0.1:710$j"); done
        env CLUSTERCHAT_SECRET=bench-secret-0123 "$bin" node --node-id "node$i" --http "127.0.0.1:910$i" \
            --gossip "127.0.0.1:710$i" --rpc "127.0.0.1:810$i" --cluster-id "bench-$$" "${seeds[@]}" "${sized[@]}" \
            --log warn >>"$OUT/node$i.log" 2>&1 &
        started $!; SERVER_PIDS+=($!)
    done
    for i in $(seq "$n"); do wait_http "http://127.0.0.1:910$i/ready"; done
    if [ "$n" -gt 1 ]; then
        local nodes=()
        for i in $(seq "$n"); do nodes+=("127.0.0.1:910$i"); done
        start_haproxy clusterchat 9200 "${nodes[@]}"
    fi
}

start_redis() { # port
    redis-server --port "$1" --bind 127.0.0.1 --save '' --appendonly no >>"$OUT/redis.log" 2>&1 &
    started $!; SERVER_PIDS+=($!)
    for _ in $(seq 50); do redis-cli -p "$1" ping >/dev/null 2>&1 && break; sleep 0.1; done
}

# Three processes of a peer, clustered through a fresh Redis (counted as a server process), on
# <prefix>1..3 behind haproxy on <prefix>0; their logs are $OUT/<name>1..3.log.
start_three() { # name port-prefix redis-port redis-url-suffix command...
    local name=$1 prefix=$2 redis=$3 suffix=$4 i s; shift 4
    SERVER_PIDS=()
    start_redis "$redis"
    local servers=()
    for i in 1 2 3; do
        PORT=$prefix$i NAME=$name$i REDIS_URL="redis://127.0.0.1:$redis$suffix" "$@" >>"$OUT/$name$i.log" 2>&1 &
        started $!; SERVER_PIDS+=($!); servers+=("127.0.0.1:$prefix$i")
    done
    for s in "${servers[@]}"; do wait_http "http://$s/socket.io/?EIO=4&transport=websocket" any; done
    start_haproxy "$name" "${prefix}0" "${servers[@]}"
}

# One process of a peer on `port`, its log $OUT/<name>.log; ready when a polling handshake gets
# an answer (a 2xx one unless `ready` is "any": websocket-only servers refuse it).
start_one() { # name port ready command...
    local name=$1 port=$2 ready=$3; shift 3
    SERVER_PIDS=()
    PORT=$port NAME=$name "$@" >>"$OUT/$name.log" 2>&1 &
    started $!; SERVER_PIDS+=($!)
    wait_http "http://127.0.0.1:$port/socket.io/?EIO=4&transport=polling" "$ready"
}

# socket.io on Node (bench/peer.js): 3 processes with the sharded Redis adapter behind haproxy
# on 9300, or one process on 9310.
start_peer3() { start_three peer 930 6390 "" node bench/peer.js; }
start_peer1() { start_one peer 9310 2xx node bench/peer.js; }
# socketioxide (bench/peers/socketioxide): 3 processes with socketioxide-redis (RESP3) behind
# haproxy on 9330, or one process on 9320.
start_sioxide3() { start_three sioxide 933 6391 "/?protocol=resp3" "$SIOXIDE_BIN"; }
start_sioxide1() { start_one sioxide 9320 2xx "$SIOXIDE_BIN"; }
# The floor (bench/peers/floor): one process, one thread, websocket only, on 9340.
start_floor() { start_one floor 9340 any "$FLOOR_BIN"; }

# Starts the system named `label` (scripts/bench.sh lists them; the baselines need
# BASELINE_BIN) and sets TARGET, where clients connect, and POLL_ARGS, the nodes' own addresses
# for the polling scenario (only clusterchat's three nodes take it).
start_system() { # label
    POLL_ARGS=()
    local nodes=(--node 127.0.0.1:9101 --node 127.0.0.1:9102 --node 127.0.0.1:9103)
    case $1 in
        clusterchat) start_clusterchat 3 "$BIN"; TARGET=127.0.0.1:9200; POLL_ARGS=("${nodes[@]}") ;;
        clusterchat-1) start_clusterchat 1 "$BIN"; TARGET=127.0.0.1:9101 ;;
        clusterchat-1t) start_clusterchat 1 "$BIN" 1; TARGET=127.0.0.1:9101 ;;
        clusterchat-baseline) start_clusterchat 3 "$BASELINE_BIN" "${BASELINE_CORES:-${NODE_CORES:-}}"; TARGET=127.0.0.1:9200; POLL_ARGS=("${nodes[@]}") ;;
        clusterchat-baseline-1) start_clusterchat 1 "$BASELINE_BIN" "${BASELINE_CORES:-${NODE_CORES:-}}"; TARGET=127.0.0.1:9101 ;;
        socketioxide-redis-3) start_sioxide3; TARGET=127.0.0.1:9330 ;;
        socketioxide-1) start_sioxide1; TARGET=127.0.0.1:9320 ;;
        floor-1) start_floor; TARGET=127.0.0.1:9340 ;;
        socketio-redis-3) start_peer3; TARGET=127.0.0.1:9300 ;;
        socketio-1) start_peer1; TARGET=127.0.0.1:9310 ;;
        *) echo "unknown system $1" >&2; return 2 ;;
    esac
}

bench() { # label target scenario args...
    local label=$1 target=$2; shift 2
    local pids=() p
    for p in "${SERVER_PIDS[@]}"; do pids+=(--server-pid "$p"); done
    echo "== $label: $*"
    # ROUND (scripts/bench.sh ROUNDS): which round of the fan-out a line belongs to.
    "$BENCH" --label "$label" --target "$target" "${pids[@]}" "$@" | sed -u "${ROUND:+s/^{/{\"round\":$ROUND,/}" \
        | tee -a "$OUT/results.jsonl"
}

