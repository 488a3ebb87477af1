#!/usr/bin/env bash
# CSI benchmark (not a test): `rexray service start` with a csi module (loop
# driver) in a temporary home, driven over its unix socket by
# examples/csi_bench.rs; each figure printed beside a baseline measured in
# the same run (never an absolute time alone: the machine varies). Targets:
#
#   - NodeStageVolume of an attached-by-the-call blank volume (attach, mkfs,
#     mount, bind onto the staging path) at most 1.1x `rexray volume mount`
#     of the same kind of volume (a fresh blank 1 GiB volume: attach, mkfs,
#     mount), both p50 and mean;
#   - NodePublishVolume p50 at most 2 ms (beside it: Identity Probe, the
#     gRPC round trip alone);
#   - CreateVolume p99 at most 1.2x `rexray volume create` p99 (1 GiB each).
#
# The CLI side is timed by the same kind of loop (bash's EPOCHREALTIME
# around each command; only the named command timed, the rest untimed),
# and the two sides of each comparison run in alternating rounds
# (BENCH_ROUNDS, default 5); each round's ratio is printed, then the
# median over the rounds (a burst of load elsewhere skews one round).
#
# usage: scripts/bench-csi.sh [dir with release rexray and examples/csi_bench]
#        BENCH_ROUNDS=5, BENCH_RUNS=20 (stage and mount per round; create
#        and publish run 5x as many)
# Run as root (loop devices, mount). Everything happens under a temporary
# directory, removed at the end with exactly what the run made (its
# mounts and loop devices by path, the service by PID).
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
[ "$(id -u)" -eq 0 ] || { echo "error: run as root (loop devices, mount)" >&2; exit 1; }
command -v jq >/dev/null || { echo "error: jq is needed (apt-get install jq)" >&2; exit 2; }
[ -n "${EPOCHREALTIME:-}" ] || { echo "error: bash 5 or newer is needed (EPOCHREALTIME)" >&2; exit 2; }
if [ $# -ge 1 ]; then
  bin="$(cd "$1" && pwd)"
else
  cargo build --release --quiet --bins --example csi_bench
  bin="$PWD/target/release"
fi
r="$bin/rexray"
cb="$bin/examples/csi_bench"
[ -x "$r" ] && [ -x "$cb" ] || { echo "error: need $r and $cb (cargo build --release --bins --example csi_bench)" >&2; exit 2; }
rounds="${BENCH_ROUNDS:-5}"
runs="${BENCH_RUNS:-20}"
many=$(( runs * 5 ))

work="$(mktemp -d /tmp/rxcsi.XXXXXX)"
home="$work/home"
sock="$work/csi.sock"
paths="$work/paths"   # staging and target paths
pid=""
source scripts/bench-lib.sh
cleanup() {
  stop_child "$pid"
  # Exactly what this run made: mounts under $work, loops backed by files under $work.
  release_work "$work"
}
trap cleanup EXIT

mkdir -p "$home/etc" "$paths"
cat >"$home/etc/config.yml" <<EOF
libstorage:
  service: loop
rexray:
  modules:
    default-docker:
      disabled: true
    csi:
      type: csi
      host: unix://$sock
EOF
export REXRAY_HOME="$home"

echo "== starting the service" >&2
"$r" service start -l error 2>"$work/svc.log" &
pid=$!
up=""
for _ in $(seq 600); do
  kill -0 "$pid" 2>/dev/null || break
  if [ -S "$sock" ] && "$cb" "$sock" probe 1 "$paths" warm >/dev/null 2>&1; then up=1; break; fi
  sleep 0.05
done
[ -n "$up" ] || { echo "error: the csi endpoint did not answer within 30 s:" >&2; cat "$work/svc.log" >&2; exit 1; }

# p50 / p99 (nearest rank) / mean of the milliseconds in a file, as csi_bench prints them.
stats() {
  sort -g "$1" | awk -v op="$2" '{ v[NR] = $1; s += $1 }
    END { i50 = int(NR * 0.5); if (i50 < NR * 0.5) i50++; i99 = int(NR * 0.99); if (i99 < NR * 0.99) i99++
          printf "{\"op\":\"%s\",\"n\":%d,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"mean_ms\":%.3f,\"max_ms\":%.3f}\n", op, NR, v[i50], v[i99], s / NR, v[NR] }'
}
elapsed_ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f\n", (b - a) * 1000 }'; }
# The CLI's figures, one command timed per iteration; a failure stops the run.
cli_create() { # round
  : >"$work/t"
  for i in $(seq "$many"); do
    t0=$EPOCHREALTIME
    "$r" volume create -q --size 1 "cc$1-$i" >/dev/null
    t1=$EPOCHREALTIME
    elapsed_ms "$t0" "$t1" >>"$work/t"
  done
  stats "$work/t" "volume create"
}
cli_mount() { # round
  : >"$work/t"
  for i in $(seq "$runs"); do
    "$r" volume create -q --size 1 "cm$1-$i" >/dev/null
    t0=$EPOCHREALTIME
    "$r" volume mount -q "cm$1-$i" >/dev/null
    t1=$EPOCHREALTIME
    elapsed_ms "$t0" "$t1" >>"$work/t"
    "$r" volume unmount -q "cm$1-$i" >/dev/null
    "$r" volume rm -q "cm$1-$i" >/dev/null
  done
  stats "$work/t" "volume mount"
}
csi() { "$cb" "$sock" "$1" "$2" "$paths" "$3"; }

# Warm both sides once (page cache, mkfs and the service's first calls).
cli_mount w >/dev/null
csi stage 2 ws >/dev/null

g() { jq -r ".$2" <<<"$1"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
stage_rows=(); create_rows=(); publish_rows=()
r_stage50=(); r_stagemean=(); r_create99=(); publish50=()
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { printf "%.2f", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
for k in $(seq "$rounds"); do
  echo "== round $k of $rounds" >&2
  if [ $(( k % 2 )) -eq 1 ]; then
    m=$(cli_mount "$k"); s=$(csi stage "$runs" "cs$k")
    c=$(cli_create "$k"); v=$(csi create "$many" "cv$k")
  else
    s=$(csi stage "$runs" "cs$k"); m=$(cli_mount "$k")
    v=$(csi create "$many" "cv$k"); c=$(cli_create "$k")
  fi
  p=$(csi probe "$many" "pr$k"); u=$(csi publish "$many" "pu$k")
  r_stage50+=("$(ratio "$(g "$s" p50_ms)" "$(g "$m" p50_ms)")")
  r_stagemean+=("$(ratio "$(g "$s" mean_ms)" "$(g "$m" mean_ms)")")
  r_create99+=("$(ratio "$(g "$v" p99_ms)" "$(g "$c" p99_ms)")")
  publish50+=("$(g "$u" p50_ms)")
  stage_rows+=("| NodeStageVolume, blank 1 GiB ext4, p50 / mean | \`volume mount\` $(g "$m" p50_ms) / $(g "$m" mean_ms) ms | $(g "$s" p50_ms) / $(g "$s" mean_ms) ms | $(ratio "$(g "$s" p50_ms)" "$(g "$m" p50_ms)")x / $(ratio "$(g "$s" mean_ms)" "$(g "$m" mean_ms)")x (target <= 1.1x) |")
  publish_rows+=("| NodePublishVolume p50 / p99 | Identity Probe $(g "$p" p50_ms) / $(g "$p" p99_ms) ms | $(g "$u" p50_ms) / $(g "$u" p99_ms) ms | p50 $(g "$u" p50_ms) ms (target <= 2 ms) |")
  create_rows+=("| CreateVolume 1 GiB, p50 / p99 / max | \`volume create\` $(g "$c" p50_ms) / $(g "$c" p99_ms) / $(g "$c" max_ms) ms | $(g "$v" p50_ms) / $(g "$v" p99_ms) / $(g "$v" max_ms) ms | p99 $(ratio "$(g "$v" p99_ms)" "$(g "$c" p99_ms)")x (target <= 1.2x) |")
done

echo
echo "CSI benchmark: rexray service with a csi module, loop driver, unix socket; $rounds rounds, $runs stages / mounts and $many creates / publishes per round"
echo
echo "| figure | baseline (same run) | measured | ratio / target |"
echo "|---|---|---|---|"
printf '%s\n' "${stage_rows[@]}" "${publish_rows[@]}" "${create_rows[@]}"
echo
echo "Medians over the $rounds rounds: NodeStageVolume $(median "${r_stage50[@]}")x (p50) / $(median "${r_stagemean[@]}")x (mean) \`volume mount\` (target <= 1.1x); NodePublishVolume p50 $(median "${publish50[@]}") ms (target <= 2 ms); CreateVolume p99 $(median "${r_create99[@]}")x \`volume create\` (target <= 1.2x)"
