#!/usr/bin/env bash
# The demo cluster: three nodes (config/node1..3.toml) behind haproxy (haproxy.cfg).
#   ./cluster.sh start    build, start what is not running, wait until ready, print the URL;
#                         with PROMETHEUS=1 also Prometheus (docs/ops/prometheus.yml) on :9090
#   ./cluster.sh stop     stop exactly what start started (pidfiles in run/)
#   ./cluster.sh status   each process, and the ring as the nodes see it
#   ./cluster.sh logs     follow the nodes' logs
set -euo pipefail
cd "$(dirname "$0")"
RUN=run
BIN=target/release/clusterchat
NODES=(node1 node2 node3)
mkdir -p "$RUN"

# The cluster secret: made once, at random, kept in run/secret (readable by this user only),
# given to every node and to inspect. Nothing secret ships with the repository.
secret() {
    if [ ! -s "$RUN/secret" ]; then
        (umask 077 && "$BIN" keygen >"$RUN/secret.tmp" && mv "$RUN/secret.tmp" "$RUN/secret")
    fi
    cat "$RUN/secret"
}

# The Admin UI's password: made once, at random, kept in run/admin-password (this user only);
# the nodes get its bcrypt hash (run/admin-hash) as CLUSTERCHAT_ADMIN_PASSWORD_HASH.
admin_hash() {
    if [ ! -s "$RUN/admin-password" ]; then
        (umask 077 && "$BIN" keygen | cut -c1-20 >"$RUN/admin-password.tmp" && mv "$RUN/admin-password.tmp" "$RUN/admin-password")
    fi
    if [ ! -s "$RUN/admin-hash" ] || [ "$RUN/admin-password" -nt "$RUN/admin-hash" ]; then
        (umask 077 && "$BIN" admin-hash <"$RUN/admin-password" >"$RUN/admin-hash.tmp" && mv "$RUN/admin-hash.tmp" "$RUN/admin-hash")
    fi
    cat "$RUN/admin-hash"
}

running() { # pidfile → true if that process is alive
    [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

wait_http() { # url, name: waits until url answers 200 while run/<name>.pid lives
    for _ in $(seq 150); do
        curl -fs -o /dev/null "$1" && return 0
        running "$RUN/$2.pid" || { echo "$2 exited; see $RUN/$2.log" >&2; return 1; }
        sleep 0.2
    done
    echo "timed out waiting for $2 ($1)" >&2
    return 1
}

install() { # command package: installs Debian's package when the command is missing
    command -v "$1" >/dev/null && return 0
    echo "installing $2 (apt-get)"
    local sudo=(); [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null
}

# Prometheus scraping the three nodes with docs/ops/prometheus.yml (its rules and alerts), its
# data in run/prometheus-data, its UI and API on 127.0.0.1:9090.
start_prometheus() {
    install prometheus prometheus
    if running "$RUN/prometheus.pid"; then echo "prometheus already running (pid $(cat "$RUN/prometheus.pid"))"; return; fi
    # Debian's package may have started its own service there (where systemd runs).
    if curl -fs -o /dev/null "http://127.0.0.1:9090/-/ready"; then
        echo "another Prometheus answers on 127.0.0.1:9090 (the package's service? systemctl stop prometheus)" >&2
        return 1
    fi
    prometheus --config.file=docs/ops/prometheus.yml --storage.tsdb.path="$RUN/prometheus-data" \
        --storage.tsdb.retention.time=1d --web.listen-address=127.0.0.1:9090 >>"$RUN/prometheus.log" 2>&1 &
    echo $! >"$RUN/prometheus.pid"
    echo "started prometheus (pid $!)"
    wait_http "http://127.0.0.1:9090/-/ready" "prometheus"
}

start() {
    install haproxy haproxy
    [ -d web/node_modules/socket.io-client ] || (cd web && npm ci --no-audit --no-fund --loglevel=error)
    [ -d admin/node_modules/@socket.io/admin-ui ] || (cd admin && npm ci --no-audit --no-fund --loglevel=error)
    cargo build --release --quiet
    local key admin
    key=$(secret)
    admin=$(admin_hash)
    # The three nodes share this host: each gets its share of the cores (more threads than cores
    # only switch between each other; a share of one runs the node on one thread:
    # bench/analysis.md, sessions 14 and 15).
    local share=$(($(nproc) / ${#NODES[@]}))
    [ "$share" -ge 1 ] || share=1
    for n in "${NODES[@]}"; do
        if running "$RUN/$n.pid"; then echo "$n already running (pid $(cat "$RUN/$n.pid"))"; continue; fi
        CLUSTERCHAT_SECRET="$key" CLUSTERCHAT_ADMIN_PASSWORD_HASH="$admin" "$BIN" node --config "config/$n.toml" \
            --cores "$share" >>"$RUN/$n.log" 2>&1 &
        echo $! >"$RUN/$n.pid"
        echo "started $n (pid $!)"
    done
    for i in 1 2 3; do wait_http "http://127.0.0.1:900$i/ready" "node$i"; done
    if running "$RUN/haproxy.pid"; then echo "haproxy already running (pid $(cat "$RUN/haproxy.pid"))"
    else
        # In the foreground (-db) of a background job, like the nodes: a daemon (-D) would
        # drop the log lines haproxy.cfg sends to stdout (health-check state changes).
        haproxy -f haproxy.cfg -db >>"$RUN/haproxy.log" 2>&1 &
        echo $! >"$RUN/haproxy.pid"
        echo "started haproxy (pid $!)"
    fi
    wait_http "http://127.0.0.1:9000/ready" "haproxy"
    if [ "${PROMETHEUS:-}" = 1 ]; then start_prometheus; fi
    echo
    echo "Chat:          http://127.0.0.1:9000/   (round robin over three nodes, no stickiness)"
    echo "Admin UI:      http://127.0.0.1:9000/admin/   (user admin, password $(cat "$RUN/admin-password"); in run/admin-password)"
    echo "haproxy stats: http://127.0.0.1:9100/"
    if running "$RUN/prometheus.pid"; then echo "Prometheus:    http://127.0.0.1:9090/alerts"; fi
    echo "Stop with ./cluster.sh stop"
}

# Sends SIGTERM to each named process that is running, then waits for all of them (the nodes
# drain for drain_ms in parallel), SIGKILLing any still alive after 10 s.
stop_all() { # names...
    local names=() pids=()
    for name in "$@"; do
        if running "$RUN/$name.pid"; then
            names+=("$name"); pids+=("$(cat "$RUN/$name.pid")")
            kill "${pids[-1]}"
        fi
    done
    for i in "${!pids[@]}"; do
        for _ in $(seq 100); do kill -0 "${pids[$i]}" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "${pids[$i]}" 2>/dev/null; then kill -9 "${pids[$i]}"; fi
        echo "stopped ${names[$i]} (pid ${pids[$i]})"
    done
    for name in "$@"; do rm -f "$RUN/$name.pid"; done
}

stop() {
    stop_all prometheus haproxy
    stop_all "${NODES[@]}"
}

status() {
    for n in prometheus haproxy "${NODES[@]}"; do
        if running "$RUN/$n.pid"; then echo "$n: running (pid $(cat "$RUN/$n.pid"))"; else echo "$n: stopped"; fi
    done
    for i in 1 2 3; do
        printf 'node%s /ready: %s\n' "$i" "$(curl -s -m 1 "http://127.0.0.1:900$i/ready" || echo unreachable)"
    done
    if [ -x "$BIN" ] && [ -s "$RUN/secret" ]; then
        CLUSTERCHAT_SECRET="$(cat "$RUN/secret")" "$BIN" inspect --seed 127.0.0.1:7001 || true
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    logs) tail -F "$RUN"/node*.log ;;
    *) echo "usage: $0 start|stop|status|logs" >&2; exit 2 ;;
esac
