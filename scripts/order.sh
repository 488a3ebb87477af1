#!/usr/bin/env bash
# Writes link/startup.order: the functions the short-lived calls run, the
# hottest first, which the release build hands the linker (build.rs,
# `startup_order`) so that a call's code sits together and touches a few
# pages instead of most of the binary.
#
#   scripts/order.sh [bin dir]     write link/startup.order
#   scripts/order.sh --check [bin dir]
#                                  print how much of the list the binaries
#                                  have (exit 1 below 80 %: refresh it)
#
# Without a bin dir, this tree's release build (cargo build --release
# --bins). Root (loop devices, mount); needs valgrind and jq. The calls,
# each once under callgrind in a temporary REXRAY_HOME (removed at the end,
# its mounts and loop devices by path): flexrex init, getvolumename,
# isattached, attach, waitforattach, mountdevice, mount and unmount of a
# pod; dvdcli mount, path and unmount; rexray volume ls, inspect, path,
# create, mount, unmount and rm. A function run by more of the calls comes
# first; among equals, the one run earlier.
#
# The names carry the toolchain's and the dependencies' hashes: refresh the
# list after changing either (the build stays correct without it, only the
# layout falls back to the linker's own).
set -euo pipefail
export PATH="$HOME/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
repo="$(cd "$(dirname "$0")/.." && pwd)"
list="$repo/link/startup.order"

check=0
if [ "${1:-}" = --check ]; then check=1; shift; fi
if [ -n "${1:-}" ]; then
  bin="$(cd "$1" && pwd)"
else
  (cd "$repo" && cargo build --release --bins >&2)
  bin="$repo/target/release"
fi
for b in rexray flexrex dvdcli; do
  [ -x "$bin/$b" ] || { echo "error: $bin/$b not found" >&2; exit 2; }
done

if [ $check = 1 ]; then
  [ -f "$list" ] || { echo "error: no $list" >&2; exit 1; }
  have=$(for b in rexray flexrex dvdcli; do nm --defined-only "$bin/$b" | awk '{ print $NF }'; done | sort -u)
  total=$(grep -cv '^#' "$list")
  found=$(grep -v '^#' "$list" | sort -u | comm -12 - <(printf '%s\n' "$have") | wc -l)
  pct=$((found * 100 / total))
  echo "startup order: $found of $total functions ($pct %) in $bin"
  if [ "$pct" -lt 80 ]; then
    echo "the list is stale (another toolchain or other dependency versions): run scripts/order.sh" >&2
    exit 1
  fi
  exit 0
fi

[ "$(id -u)" -eq 0 ] || { echo "error: run as root (loop devices, mount)" >&2; exit 1; }
for t in valgrind jq; do
  command -v "$t" >/dev/null || { echo "error: $t is needed (apt-get install $t)" >&2; exit 2; }
done

work="$(mktemp -d /tmp/rxorder.XXXXXX)"
source "$repo/scripts/bench-lib.sh"
trap 'release_work "$work"' EXIT
export REXRAY_HOME="$work/home"
mkdir -p "$REXRAY_HOME"

opts='{"volumeID":"order1","kubernetes.io/fsType":"ext4","kubernetes.io/readwrite":"rw","kubernetes.io/pvOrVolumeName":"pv-order"}'
dvd="--volumedriver=rexray --volumename=order1"
dmp="$REXRAY_HOME/kubelet/plugins/kubernetes.io/flexvolume/rexray/flexrex/mounts/pv-order"
pod="$REXRAY_HOME/kubelet/pods/uid1/volumes/rexray~flexrex/pv-order"
"$bin/rexray" volume create order1 --size 1 >/dev/null
"$bin/rexray" volume mount order1 --consumer holder >/dev/null

# The calls, in the order they run (each prepares the next: attach before
# mountdevice, mount before unmount).
calls=(
  "$bin/flexrex init"
  "$bin/flexrex getvolumename '$opts'"
  "$bin/flexrex isattached '$opts' node1"
  "$bin/flexrex attach '$opts' node1"
  "$bin/flexrex waitforattach @dev@ '$opts'"
  "$bin/flexrex mountdevice $dmp @dev@ '$opts'"
  "$bin/flexrex mount $pod '$opts'"
  "$bin/flexrex unmount $pod"
  "$bin/dvdcli mount $dvd"
  "$bin/dvdcli path $dvd"
  "$bin/dvdcli unmount $dvd"
  "$bin/rexray volume ls"
  "$bin/rexray volume inspect order1"
  "$bin/rexray volume path order1"
  "$bin/rexray volume create order2 --size 1"
  "$bin/rexray volume mount order2"
  "$bin/rexray volume unmount order2"
  "$bin/rexray volume rm order2"
)
dev=$("$bin/flexrex" attach "$opts" node1 | jq -r .device)
i=0
for c in "${calls[@]}"; do
  c=${c//@dev@/$dev}
  out="$work/cg.$(printf '%02d' $i)"
  sh -c "valgrind -q --tool=callgrind --demangle=no --callgrind-out-file=$out $c" >"$out.stdout" 2>"$out.err" ||
    { echo "error: $c failed:" >&2; cat "$out.stdout" "$out.err" >&2; exit 1; }
  if grep -q '"status":"Failure"' "$out.stdout"; then
    echo "error: $c answered: $(cat "$out.stdout")" >&2
    exit 1
  fi
  i=$((i + 1))
done

# Each profile's functions in our three binaries (callgrind names an object
# and a function once, then refers to them by number), counted over the
# profiles; sorted by count, then by first appearance.
mkdir -p "$(dirname "$list")"
{
  echo "# The functions the short-lived calls run, hottest first: the order"
  echo "# the release build lays them out in (build.rs, startup_order)."
  echo "# Written by scripts/order.sh; refresh after a toolchain or"
  echo "# dependency change (scripts/order.sh --check tells)."
  awk '
    FNR == 1 { delete obn; delete fnn; delete seen; obj = "" }
    match($0, /^c?ob=\([0-9]+\)/) {
      id = substr($0, 1, RLENGTH); sub(/^c?ob=/, "", id)
      name = substr($0, RLENGTH + 2)
      if (name != "") obn[id] = name
      if ($0 ~ /^ob=/) obj = obn[id]
      next
    }
    match($0, /^c?fn=\([0-9]+\)/) {
      id = substr($0, 1, RLENGTH); sub(/^c?fn=/, "", id)
      name = substr($0, RLENGTH + 2)
      if (name != "") fnn[id] = name
      if ($0 !~ /^fn=/ || obj !~ /\/(rexray|flexrex|dvdcli)$/) next
      f = fnn[id]; sub(/'"'"'[0-9]+$/, "", f)
      if (f == "" || f ~ /^0x/ || f ~ /^\(/ || (f in seen)) next
      seen[f] = 1; count[f]++
      if (!(f in first)) first[f] = ++n
    }
    END { for (f in count) printf "%d %d %s\n", count[f], first[f], f }
  ' "$work"/cg.?? | sort -k1,1nr -k2,2n | awk '{ print $3 }'
} >"$list.tmp"
mv "$list.tmp" "$list"
echo "wrote $list: $(grep -cv '^#' "$list") functions from ${#calls[@]} calls" >&2
