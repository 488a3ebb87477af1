#!/usr/bin/env bash
# Installs everything the tests need, then runs every test: the format
# check, clippy, the unit and property tests, and the integration tests
# (real loop devices, mkfs, mount, a private dockerd) when run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
REXRAY_TEST_DEPS=all source scripts/deps.sh

step() { printf '\n=== %s\n' "$*" >&2; }
start=$(date +%s)

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, failpoints on)"
cargo clippy --all-targets --features failpoints -- -D warnings

step "cargo build (binaries used by the integration tests)"
cargo build --features failpoints --bins

step "cargo test (unit, property and integration tests)"
if [ "$(id -u)" -ne 0 ]; then
  echo "note: not root: integration tests that need loop devices and mount are skipped" >&2
fi
cargo test --features failpoints -- --test-threads="${TEST_THREADS:-2}"

step "done in $(( $(date +%s) - start )) s"
