#!/usr/bin/env bash
# The cost of one short call, old build against new: instructions counted
# by callgrind (repeatable on a busy machine) and wall time by hyperfine
# (builds alternating round by round), printed as new / old ratios.
#
#   scripts/bench-percall.sh [old bin dir] [new bin dir]
#
# Without an old directory, the previous release (commit 7028fc9, the last
# with the JSON catalog) is built in target/bench-baseline; without a new
# one, this tree's release build (cargo build --release --bins).
# Root (loop devices, mount); needs valgrind, hyperfine and jq.
# BENCH_ROUNDS (default 3) alternating rounds, BENCH_RUNS (default 100)
# runs per command and round.
#
# Calls: flexrex init, getvolumename, isattached, mount (a pod's bind of
# an attached, formatted, mounted volume); dvdcli mount (a new consumer of
# a mounted volume) and path; `rexray volume ls` among 1 and 100 volumes.
# Each build gets its own REXRAY_HOME (their catalogs differ in format),
# exported, so no wrapper process is timed; everything is under one
# temporary directory, removed at the end (its mounts and loop devices by
# path).
set -euo pipefail
export PATH="$HOME/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
[ "$(id -u)" -eq 0 ] || { echo "error: run as root (loop devices, mount)" >&2; exit 1; }
for t in valgrind hyperfine jq; do
  command -v "$t" >/dev/null || { echo "error: $t is needed (apt-get install $t)" >&2; exit 2; }
done
repo="$(cd "$(dirname "$0")/.." && pwd)"
baseline_commit=7028fc9
if [ -n "${1:-}" ]; then
  old="$(cd "$1" && pwd)"
else
  src="$repo/target/bench-baseline"
  if [ ! -x "$src/target/release/flexrex" ]; then
    [ -d "$src" ] || git -C "$repo" worktree add --detach "$src" "$baseline_commit" >&2
    (cd "$src" && cargo build --release --bins >&2)
  fi
  old="$src/target/release"
fi
if [ -n "${2:-}" ]; then
  new="$(cd "$2" && pwd)"
else
  (cd "$repo" && cargo build --release --bins >&2)
  new="$repo/target/release"
fi
for d in "$old" "$new"; do
  for b in rexray flexrex dvdcli; do
    [ -x "$d/$b" ] || { echo "error: $d/$b not found" >&2; exit 2; }
  done
done
# How much of the start-up layout list the new build has (a stale list
# costs speed only: see scripts/order.sh).
"$repo/scripts/order.sh" --check "$new" >&2 || true
rounds="${BENCH_ROUNDS:-3}"
runs="${BENCH_RUNS:-100}"

work="$(mktemp -d /tmp/rxpercall.XXXXXX)"
source "$repo/scripts/bench-lib.sh"
trap 'release_work "$work"' EXIT

opts='{"volumeID":"bench1","kubernetes.io/fsType":"ext4","kubernetes.io/readwrite":"rw","kubernetes.io/pvOrVolumeName":"pv-bench"}'
dvd="--volumedriver=rexray --volumename=bench1"
# name|command (@b@: the build's bin dir)|command run before each timed
# one (or empty)|REXRAY_HOME (the build's home @home@, or @home100@)
calls=(
  "flexrex init|@b@/flexrex init||@home@"
  "flexrex getvolumename|@b@/flexrex getvolumename '$opts'||@home@"
  "flexrex isattached|@b@/flexrex isattached '$opts' node1||@home@"
  "flexrex mount|@b@/flexrex mount @pod@ '$opts'|@b@/flexrex unmount @pod@|@home@"
  "dvdcli mount|@b@/dvdcli mount $dvd|@b@/dvdcli unmount $dvd|@home@"
  "dvdcli path|@b@/dvdcli path $dvd||@home@"
  "rexray volume ls (1)|@b@/rexray volume ls||@home@"
  "rexray volume ls (100)|@b@/rexray volume ls||@home100@"
)

# One home per build: bench1 formatted and mounted for a holder, attached
# and mounted through flexrex as kubelet would (so `flexrex mount` binds a
# pod's directory); and a second home with 100 volumes for `ls`.
for side in old new; do
  b=$old; [ $side = new ] && b=$new
  home="$work/$side" home100="$work/$side-100"
  mkdir -p "$home" "$home100"
  export REXRAY_HOME="$home"
  "$b/rexray" volume create bench1 --size 1 >/dev/null
  "$b/rexray" volume mount bench1 --consumer holder >/dev/null
  dmp="$home/kubelet/plugins/kubernetes.io/flexvolume/rexray/flexrex/mounts/pv-bench"
  pod="$home/kubelet/pods/uid1/volumes/rexray~flexrex/pv-bench"
  dev=$("$b/flexrex" attach "$opts" node1 | jq -r .device)
  "$b/flexrex" mountdevice "$dmp" "$dev" "$opts" | jq -e '.status == "Success"' >/dev/null
  "$b/flexrex" mount "$pod" "$opts" | jq -e '.status == "Success"' >/dev/null
  for i in $(seq 100); do
    REXRAY_HOME="$home100" "$b/rexray" volume create "v$i" --size 1 >/dev/null 2>&1
  done
done

# The command line of call $1 for side $2 (old|new), and its preparation.
expand() { # call index, side, field (2: command, 3: prepare, 4: home)
  local b=$old home="$work/$2" home100="$work/$2-100"
  [ "$2" = new ] && b=$new
  local pod="$home/kubelet/pods/uid1/volumes/rexray~flexrex/pv-bench"
  local f
  f=$(cut -d'|' -f"$3" <<<"${calls[$1]}")
  f=${f//@b@/$b}; f=${f//@pod@/$pod}; f=${f//@home100@/$home100}; f=${f//@home@/$home}
  printf '%s\n' "$f"
}

# Every call must succeed before it is measured.
for side in old new; do
  for i in "${!calls[@]}"; do
    export REXRAY_HOME; REXRAY_HOME=$(expand "$i" $side 4)
    p=$(expand "$i" $side 3); c=$(expand "$i" $side 2)
    [ -z "$p" ] || sh -c "$p" >/dev/null
    if ! out=$(sh -c "$c" 2>&1) || [[ $out == *'"status":"Failure"'* ]]; then
      echo "error: $side: $c answered: $out" >&2
      exit 1
    fi
  done
done

# Instructions: each call once under callgrind (after its preparation),
# the whole process, dynamic loading included.
declare -A instr
for side in old new; do
  for i in "${!calls[@]}"; do
    export REXRAY_HOME; REXRAY_HOME=$(expand "$i" $side 4)
    p=$(expand "$i" $side 3); c=$(expand "$i" $side 2)
    [ -z "$p" ] || sh -c "$p" >/dev/null
    out="$work/cg.$side.$i"
    sh -c "valgrind -q --tool=callgrind --callgrind-out-file=$out $c" >/dev/null 2>"$out.err" || true
    instr[$side.$i]=$(awk '/^(summary|totals):/ { print $2; exit }' "$out" 2>/dev/null)
    [ -n "${instr[$side.$i]}" ] || { echo "error: no count for $side: $c" >&2; cat "$out.err" >&2; exit 1; }
  done
done

# Wall time: per round and call, one hyperfine invocation per build (no
# shell, no wrapper: the build's home is exported), the two builds
# alternating, old first in odd rounds.
for r in $(seq "$rounds"); do
  order="old new"; [ $((r % 2)) -eq 0 ] && order="new old"
  echo "== round $r of $rounds (load $(cut -d' ' -f1 /proc/loadavg))" >&2
  for i in "${!calls[@]}"; do
    for side in $order; do
      export REXRAY_HOME; REXRAY_HOME=$(expand "$i" $side 4)
      p=$(expand "$i" $side 3); c=$(expand "$i" $side 2)
      hyperfine -N --style none --warmup 5 --runs "$runs" --prepare "${p:-true}" \
        --export-json "$work/t.$side.$i.$r.json" "$c" >/dev/null 2>>"$work/hyperfine.err"
    done
  done
done

# The median over the rounds of each call's mean, in ms.
median_ms() { # side, call index
  jq -s '[.[].results[].mean * 1000] | sort
    | if length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end' \
    "$work"/t."$1"."$2".*.json
}
echo "old: $old"
echo "new: $new"
printf '%-24s %12s %12s %6s %9s %9s %6s\n' call "old instr" "new instr" ratio "old ms" "new ms" ratio
for i in "${!calls[@]}"; do
  name=$(cut -d'|' -f1 <<<"${calls[$i]}")
  to=$(median_ms old "$i"); tn=$(median_ms new "$i")
  awk -v n="$name" -v io="${instr[old.$i]}" -v inew="${instr[new.$i]}" -v to="$to" -v tn="$tn" \
    'BEGIN { printf "%-24s %12d %12d %6.2f %9.3f %9.3f %6.2f\n", n, io, inew, inew / io, to, tn, tn / to }'
done
