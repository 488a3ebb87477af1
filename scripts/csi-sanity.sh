#!/usr/bin/env bash
# The CSI conformance suite (kubernetes-csi/csi-test's csi-sanity) against
# rexray's CSI endpoint, in a temporary home: `rexray service start` with a
# csi module, then csi-sanity over its unix socket.
#
# usage: CSI_SANITY=/path/to/csi-sanity scripts/csi-sanity.sh [rexray binary]
#   SANITY_SERVICE=loop|vfs|rbd   the driver (default loop)
#   SANITY_CEPH_CONF=FILE         rbd: the cluster's ceph.conf
#                                 (scripts/ceph.sh start DIR prints one)
#   SANITY_CLIENT=1               rbd or loop through a libStorage server
#                                 (a second `rexray service start` serving
#                                 the driver; the csi module is its client)
#   SANITY_MAX_VOLUMES=N          rexray.csi.maxVolumesPerNode, and the
#                                 suite's attach-limit case with it
#   SANITY_ARGS="..."             more csi-sanity flags (--ginkgo.focus=...)
#   SANITY_KEEP=1                 keep the temporary home (logs) at the end
#
# csi-sanity is not built here (it is Go, from github.com/kubernetes-csi/
# csi-test, `go build ./cmd/csi-sanity` of a release; v5.3.1 builds with
# Debian's golang-go). Not part of scripts/test.sh for that reason: the
# test suite checks the same calls and codes with its own client
# (tests/integration/csi.rs).
#
# Run as root (loop devices, mount). Everything happens under a temporary
# directory; the services are stopped by PID and the directory removed,
# after csi-sanity's own clean-up of what it made.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
SANITY=${CSI_SANITY:?set CSI_SANITY to the csi-sanity binary}
BIN=${1:-target/release/rexray}
[ -x "$BIN" ] || { echo "error: $BIN is not built (cargo build --release)" >&2; exit 2; }
BIN=$(realpath "$BIN")
SERVICE=${SANITY_SERVICE:-loop}
case "$SERVICE" in loop | vfs | rbd) ;; *) echo "error: SANITY_SERVICE=$SERVICE: loop, vfs or rbd" >&2; exit 2 ;; esac
driver_yaml=""
if [ "$SERVICE" = rbd ]; then
  conf=${SANITY_CEPH_CONF:?rbd needs SANITY_CEPH_CONF (scripts/ceph.sh start DIR)}
  driver_yaml=$'rbd:\n  cephArgs: --conf '"$conf"
fi

dir=$(mktemp -d /tmp/rxsanity.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do
    kill "$p" 2>/dev/null || true
    # Bounded: the service stops its calls within its grace.
    for _ in $(seq 300); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  done
  [ -n "${SANITY_KEEP:-}" ] && { echo "kept: $dir" >&2; return; }
  rm -rf "$dir"
}
trap cleanup EXIT

# Start `rexray service start` for home $1 and wait (bounded) for socket $2.
start() {
  REXRAY_HOME=$1 REXRAY_MODULES_DEFAULT_DOCKER_HOST=unix://$1/docker.sock \
    "$BIN" service start -l debug >"$1/service.out" 2>"$1/service.log" &
  pids+=($!)
  for _ in $(seq 300); do
    [ -S "$2" ] && return 0
    kill -0 "${pids[-1]}" 2>/dev/null || break
    sleep 0.1
  done
  echo "error: the service of $1 did not start:" >&2
  tail -20 "$1/service.log" >&2
  exit 1
}

node=$dir/node
mkdir -p "$node/etc" "$node/sanity"
host_yaml=""
if [ "${SANITY_CLIENT:-}" = 1 ]; then
  srv=$dir/srv
  mkdir -p "$srv/etc"
  cat >"$srv/etc/config.yml" <<YML
rexray:
  modules:
    default-docker:
      disabled: true
libstorage:
  service: $SERVICE
  server:
    endpoints:
      ctl:
        address: unix://$srv/ls.sock
    services:
      $SERVICE:
        driver: $SERVICE
$driver_yaml
YML
  start "$srv" "$srv/ls.sock"
  host_yaml="  host: unix://$srv/ls.sock"
  # The loop driver through a server: the node attaches the server's
  # images, so it sees them at the server's path.
  [ "$SERVICE" = loop ] && driver_yaml=$'loop:\n  volumePath: '"$srv/var/lib/loop"
fi
max_yaml=""
args=()
if [ -n "${SANITY_MAX_VOLUMES:-}" ]; then
  max_yaml=$'  csi:\n    maxVolumesPerNode: '"$SANITY_MAX_VOLUMES"
  args+=(--csi.testnodevolumeattachlimit)
fi
cat >"$node/etc/config.yml" <<YML
libstorage:
  service: $SERVICE
$host_yaml
$driver_yaml
rexray:
  modules:
    kube:
      type: csi
      host: unix://$node/csi.sock
$max_yaml
YML
start "$node" "$node/csi.sock"

rc=0
# shellcheck disable=SC2086 # SANITY_ARGS is a list of flags
timeout 1800 "$SANITY" --csi.endpoint "unix://$node/csi.sock" \
  --csi.mountdir "$node/sanity/mount" --csi.stagingdir "$node/sanity/staging" \
  --ginkgo.no-color "${args[@]}" ${SANITY_ARGS:-} >"$dir/sanity.out" 2>&1 || rc=$?
grep -E '^(Ran |SUCCESS!|FAIL!)|^  \[FAIL\]' "$dir/sanity.out" || tail -40 "$dir/sanity.out"
if [ "$rc" -ne 0 ]; then
  echo "csi-sanity failed (rc=$rc); the endpoint's log:" >&2
  grep -E ' (WARN|ERROR) ' "$node/service.log" | tail -20 >&2 || true
fi
exit "$rc"
