#!/usr/bin/env bash
# The main job, start to finish, on the embedded default (loop) driver:
# build, then create a 1 GiB volume, mount it, write and read a file, list,
# unmount and remove it — everything under a temporary REXRAY_HOME, which
# is removed at the end. Run as root on Debian: it installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
if [ "$(id -u)" -ne 0 ]; then
  echo "error: run as root: volumes are attached as loop devices and mounted" >&2
  exit 1
fi
source scripts/deps.sh

echo "+ cargo build --release" >&2
cargo build --release --quiet --bins
bin="$PWD/target/release"

export REXRAY_HOME="$(mktemp -d /tmp/rexray-try.XXXXXX)"
name="try-$$"
cleanup() {
  "$bin/rexray" volume unmount "$name" >/dev/null 2>&1 || true
  "$bin/rexray" volume rm "$name" >/dev/null 2>&1 || true
  rm -rf "$REXRAY_HOME"
}
trap cleanup EXIT

run() {
  printf '\n$ %s\n' "$*"
  "$@"
}

echo "REXRAY_HOME=$REXRAY_HOME"
rexray() { "$bin/rexray" "$@"; }

run rexray volume create "$name" --size 1
run rexray volume mount "$name"
path="$(rexray volume path "$name")"
run sh -c "echo 'hello from rexray-rs' > '$path/hello.txt'"
run cat "$path/hello.txt"
run findmnt -n -o SOURCE,FSTYPE,TARGET --mountpoint "$(dirname "$path")"
run rexray volume ls --path
run rexray volume unmount "$name"
run rexray volume rm "$name"
run rexray volume ls
echo
echo "ok: created, mounted, wrote, listed, unmounted and removed volume $name"
