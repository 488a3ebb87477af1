#!/usr/bin/env bash
# Scale benchmark (not a test): the cost of one operation among 0, 1,000,
# 10,000 and 100,000 loop volumes, printed as ratios to the 0-volume figures
# of the same run (never absolute targets: the machine varies).
#
#   - create, mount (attach + mount of a formatted volume), rm, path,
#     `volume ls VOL`, `flexrex isattached`: target within 1.2x of 0 volumes;
#   - `volume ls` of every volume: target at most 300 ms at 100,000;
#   - seeding: all volumes made by one `rexray volume create v1 ... vN`
#     call per 10,000 names: target at most 2 min for 100,000.
#
# usage: scripts/bench-scale.sh [dir with release rexray and flexrex]
#        BENCH_SCALE_COUNTS="0 1000 10000" scripts/bench-scale.sh   # fewer
#        BENCH_RUNS=20 (timed runs per operation)
# Run as root (loop devices, mount). Everything happens under a temporary
# directory, removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
[ "$(id -u)" -eq 0 ] || { echo "error: run as root (loop devices, mount)" >&2; exit 1; }
for t in hyperfine jq; do
  command -v "$t" >/dev/null || { echo "error: $t is needed (apt-get install $t)" >&2; exit 2; }
done
if [ $# -ge 1 ]; then
  bin="$(cd "$1" && pwd)"
else
  cargo build --release --quiet --bins
  bin="$PWD/target/release"
fi
counts="${BENCH_SCALE_COUNTS:-0 1000 10000 100000}"
runs="${BENCH_RUNS:-20}"
batch=10000

work="$(mktemp -d /tmp/rxscale.XXXXXX)"
source scripts/bench-lib.sh
cleanup() {
  # Exactly what this run made: mounts under $work, loops backed by files under $work.
  release_work "$work"
}
trap cleanup EXIT

ops=(create mount rm path "ls VOL" "flexrex isattached")
declare -A mean
declare -A extra

for n in $counts; do
  export REXRAY_HOME="$work/h$n"
  mkdir -p "$REXRAY_HOME"
  r="$bin/rexray"
  echo "== $n volumes" >&2
  start=$(date +%s.%N)
  i=1
  while [ "$i" -le "$n" ]; do
    last=$(( i + batch - 1 )); [ "$last" -le "$n" ] || last=$n
    "$r" volume create -q --size 1 $(seq -f 's%06g' "$i" "$last") >/dev/null 2>"$work/seed.err" ||
      { cat "$work/seed.err" >&2; exit 1; }
    i=$(( last + 1 ))
  done
  extra["seed $n"]=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f s", b - a }')
  # The volume the operations work on, formatted by its first mount.
  "$r" volume create -q --size 1 bm bx >/dev/null 2>&1
  "$r" volume mount -q bm >/dev/null 2>&1
  "$r" volume unmount -q bm >/dev/null 2>&1
  opts='{"volumeID":"bm","kubernetes.io/fsType":"ext4","kubernetes.io/readwrite":"rw","kubernetes.io/pvOrVolumeName":"pv-bench"}'
  j="$work/$n.json"
  hyperfine -N --style basic --warmup 3 --runs "$runs" --export-json "$j.create" \
    --prepare "$r volume rm -q bx" "$r volume create -q --size 1 bx" >/dev/null 2>&1
  hyperfine -N --style basic --warmup 3 --runs "$runs" --export-json "$j.mount" \
    --prepare "$r volume unmount -q bm" "$r volume mount -q bm" >/dev/null 2>&1
  hyperfine -N --style basic --warmup 3 --runs "$runs" --export-json "$j.rm" \
    --prepare "$r volume create -q --size 1 br" "$r volume rm -q br" >/dev/null 2>&1
  hyperfine -N --style basic --warmup 3 --runs "$runs" --export-json "$j.rest" \
    "$r volume path bm" "$r volume ls bm" "$bin/flexrex isattached '$opts' node1" >/dev/null 2>&1
  hyperfine -N --style basic --warmup 1 --runs "$(( runs < 10 ? runs : 10 ))" --export-json "$j.ls" \
    "$r volume ls" >/dev/null 2>&1
  m() { jq -r ".results[$2].mean" "$1"; }
  mean["create $n"]=$(m "$j.create" 0)
  mean["mount $n"]=$(m "$j.mount" 0)
  mean["rm $n"]=$(m "$j.rm" 0)
  mean["path $n"]=$(m "$j.rest" 0)
  mean["ls VOL $n"]=$(m "$j.rest" 1)
  mean["flexrex isattached $n"]=$(m "$j.rest" 2)
  mean["ls all $n"]=$(m "$j.ls" 0)
  "$r" volume unmount -q bm >/dev/null 2>&1
  # This count's volumes go with their home (images and catalog), at the end.
done

first=${counts%% *}
printf '\n| operation |'; for n in $counts; do printf ' %s volumes |' "$n"; done; echo
printf '|---|'; for n in $counts; do printf -- '---|'; done; echo
for op in "${ops[@]}"; do
  printf '| %s |' "$op"
  for n in $counts; do
    awk -v a="${mean[$op $n]}" -v b="${mean[$op $first]}" -v n="$n" -v f="$first" \
      'BEGIN { if (n == f) printf " %.2f ms |", a * 1000; else printf " %.2fx (%.2f ms) |", a / b, a * 1000 }'
  done
  echo
done
printf '| volume ls (all) |'; for n in $counts; do awk -v a="${mean[ls all $n]}" 'BEGIN { printf " %.1f ms |", a * 1000 }'; done; echo
printf '| seeding (one call per %s) |' "$batch"; for n in $counts; do printf ' %s |' "${extra[seed $n]}"; done; echo
echo
echo "targets: each operation within 1.2x of 0 volumes; volume ls of 100,000 at most 300 ms; seeding 100,000 at most 2 min"
