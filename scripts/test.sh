#!/usr/bin/env bash
# The test command: installs the real clients the tests drive (npm, pip), checks formatting
# and lints, then runs every test. Safe to re-run; works on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== installing the chat page's socket.io-client and the test clients (npm ci)"
(cd web && npm ci --no-audit --no-fund --loglevel=error)
(cd tests/clients && npm ci --no-audit --no-fund --loglevel=error)
echo "== installing python-socketio (pip)"
python3 -m pip install --quiet --disable-pip-version-check -r tests/clients/requirements.txt

echo "== cargo fmt --check / clippy"
cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings

echo "== cargo test"
cargo test --all-targets
