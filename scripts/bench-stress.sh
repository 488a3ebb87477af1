#!/usr/bin/env bash
# Throughput of the stress mix (tests/integration/stress.rs): rexray
# mount/unmount with consumers, kubelet's flexrex sequence, dvdcli and
# Docker plugin requests on 8 volumes — first serially, then 32 actors at
# once. Prints ops/s for both and the ratio (the gain from concurrency).
#
#   scripts/bench-stress.sh target/release     (as root)
set -euo pipefail
BIN=${1:?usage: bench-stress.sh BIN_DIR (e.g. target/release)}
BIN=$(cd "$BIN" && pwd)
[ "$(id -u)" -eq 0 ] || { echo "bench-stress.sh needs root (loop devices, mount)" >&2; exit 1; }
ROUNDS=${ROUNDS:-4}
H=$(mktemp -d /tmp/rxs.XXXXXX)
export REXRAY_HOME=$H
PID=""
cleanup() {
  [ -n "$PID" ] && kill -TERM "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
  # Exactly what is under this home: its mounts (deepest first), then the
  # loop devices backed by its images.
  awk -v h="$H/" 'index($5, h) == 1 {print $5}' /proc/self/mountinfo | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null || true; done
  losetup -nO NAME,BACK-FILE 2>/dev/null | awk -v h="$H/" 'index($2, h) == 1 {print $1}' |
    while read -r d; do losetup -d "$d" 2>/dev/null || true; done
  rm -rf "$H"
}
trap cleanup EXIT

for i in $(seq 0 7); do "$BIN/rexray" volume create "s$i" --size 1 >/dev/null; done
REXRAY_MODULES_DEFAULT_DOCKER_HOST=unix://$H/p.sock "$BIN/rexray" service start -l error 2>"$H/service.log" &
PID=$!
for _ in $(seq 600); do [ -S "$H/p.sock" ] && break; kill -0 "$PID" || exit 1; sleep 0.05; done

post() { curl -sf --unix-socket "$H/p.sock" -X POST -d "$2" "http://plugin$1"; }

# op CMD...: run one operation; count it if it succeeded, report it if not.
op() {
  local o
  if o=$("$@" 2>&1); then ops=$((ops + 1)); else echo "failed: $* -> $o" >&2; fi
}

# actor KIND K: ROUNDS rounds of take + release; prints its op count.
actor() {
  set +e
  local kind=$1 k=$2 ops=0 r v
  for r in $(seq 0 $((ROUNDS - 1))); do
    case $kind in
      rexray) v=s$(((k + r) % 8))
        op "$BIN/rexray" volume mount "$v" --consumer "r$k"
        op "$BIN/rexray" volume unmount "$v" --consumer "r$k" ;;
      docker) v=s$(((3 * k + r + 1) % 8))
        op post /VolumeDriver.Mount "{\"Name\":\"$v\",\"ID\":\"d$k\"}"
        op post /VolumeDriver.Unmount "{\"Name\":\"$v\",\"ID\":\"d$k\"}" ;;
      dvdcli) v=s$k
        op "$BIN/dvdcli" mount --volumedriver=rexray --volumename="$v"
        op "$BIN/dvdcli" unmount --volumedriver=rexray --volumename="$v" ;;
      flex) v=s$k
        local o="{\"volumeID\":\"$v\",\"kubernetes.io/fsType\":\"ext4\",\"kubernetes.io/pvOrVolumeName\":\"pv-$k\"}"
        local dmp=$H/kubelet/pv-$k dev
        dev=$("$BIN/flexrex" attach "$o" node1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["device"])') && ops=$((ops + 1))
        # Another front-end's last unmount may detach it meanwhile (an
        # attach holds no consumer); mountdevice attaches again.
        "$BIN/flexrex" waitforattach "$dev" "$o" >/dev/null && ops=$((ops + 1))
        op "$BIN/flexrex" mountdevice "$dmp" "$dev" "$o"
        op "$BIN/flexrex" unmountdevice "$dmp"
        # Refused (and not counted) while other actors use the volume.
        "$BIN/flexrex" detach "pv-$k" node1 >/dev/null && ops=$((ops + 1)) ;;
    esac
  done
  echo "$ops"
}

now() { date +%s.%N; }
# Formats every volume once, so both runs measure the same work.
for i in $(seq 0 7); do "$BIN/rexray" volume mount "s$i" >/dev/null; "$BIN/rexray" volume unmount "s$i" >/dev/null; done

t0=$(now); serial=0
for kind in rexray flex dvdcli docker; do
  for k in $(seq 0 7); do serial=$((serial + $(actor $kind "$k"))); done
done
t1=$(now)

out=$H/ops; mkdir -p "$out"
t2=$(now)
for kind in rexray flex dvdcli docker; do
  for k in $(seq 0 7); do actor $kind "$k" >"$out/$kind-$k" 2>"$out/$kind-$k.err" & done
done
wait $(jobs -p | grep -v "^$PID\$") 2>/dev/null || true
t3=$(now)
for e in "$out"/*.err; do grep -v "stays mounted" "$e" | sed "s|^|$(basename "$e" .err): |" >&2 || true; done
conc=$(cat "$out"/*[0-9] | awk '{s += $1} END {print s + 0}')
python3 - "$serial" "$t0" "$t1" "$conc" "$t2" "$t3" <<'PY'
import sys
s, t0, t1, c, t2, t3 = map(float, sys.argv[1:])
a, b = s / (t1 - t0), c / (t3 - t2)
print("| stress mix (8 volumes) | ops | seconds | ops/s |")
print("|---|---|---|---|")
print("| serial, 1 actor | %d | %.2f | %.1f |" % (s, t1 - t0, a))
print("| 32 concurrent actors | %d | %.2f | %.1f |" % (c, t3 - t2, b))
print("ratio concurrent/serial: %.2f×" % (b / a))
PY
awk -v h="$H/" 'index($5, h) == 1' /proc/self/mountinfo | grep -q . && { echo "mounts left behind" >&2; exit 1; }
exit 0
