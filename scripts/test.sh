#!/usr/bin/env bash
# The test command: installs what the tests drive (npm, pip, and Debian's chromium and haproxy
# for the end-to-end test, iproute2 for the partition and netns_security tests, which need root,
# prometheus for docs/ops), checks formatting and lints, checks and unit-tests the Prometheus
# config and rules, runs every test, then the end-to-end tests of the demo cluster: in headless
# Chromium, and with Prometheus. Safe to re-run; works on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v haproxy >/dev/null || missing+=(haproxy)
[ -x "${CHROMIUM:-/usr/bin/chromium}" ] || missing+=(chromium)
command -v ip >/dev/null || missing+=(iproute2)   # the partition and netns_security tests' network namespaces
command -v curl >/dev/null || missing+=(curl)
command -v promtool >/dev/null || missing+=(prometheus)   # promtool, and the server of PROMETHEUS=1 ./cluster.sh
if [ "${#missing[@]}" -gt 0 ]; then
    echo "== installing ${missing[*]} (apt-get)"
    sudo=(); [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

echo "== installing the chat page's socket.io-client, the Admin UI, the test clients and playwright-core (npm ci)"
(cd web && npm ci --no-audit --no-fund --loglevel=error)
(cd admin && npm ci --no-audit --no-fund --loglevel=error)
(cd tests/clients && npm ci --no-audit --no-fund --loglevel=error)
(cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error)
echo "== installing python-socketio (pip)"
python3 -m pip install --quiet --disable-pip-version-check -r tests/clients/requirements.txt

echo "== cargo fmt --check / clippy"
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "== promtool: docs/ops config and rules, and the alerts' unit tests"
promtool check config docs/ops/prometheus.yml
promtool check rules docs/ops/rules.yml docs/ops/alerts.yml
promtool test rules docs/ops/alerts_test.yml

echo "== cargo test (the server and crates/chatbench, the load generator)"
cargo test --workspace --all-targets

echo "== end-to-end: ./cluster.sh start, two headless Chromium pages through haproxy, a node killed"
cargo build --release --quiet
for name in prometheus haproxy node1 node2 node3; do
    if [ -f "run/$name.pid" ] && kill -0 "$(cat "run/$name.pid")" 2>/dev/null; then
        echo "a cluster from this checkout is running ($name): ./cluster.sh stop first" >&2
        exit 1
    fi
done
# Whatever happens to the test, stop what cluster.sh started (a no-op when nothing runs).
trap './cluster.sh stop' EXIT
trap 'exit 130' INT TERM
node tests/e2e/e2e.mjs

echo "== end-to-end: PROMETHEUS=1 ./cluster.sh start, three targets up, the node-down alert fires"
tests/e2e/prometheus.sh
