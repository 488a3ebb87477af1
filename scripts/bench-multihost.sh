#!/usr/bin/env bash
# Multi-host benchmark (not a test): a libStorage controller (`rexray
# service start`) and one node on this machine, each figure printed beside
# a baseline measured in the same run (never an absolute time: the machine
# varies). Targets:
#
#   - `rexray volume ls` of 1000 loop volumes through the server (unix
#     socket): at most 2x the same node's embedded `volume ls` (the same
#     volumes, no server in the way);
#   - `GET /volumes/loop/{id}`: p99 at most 1 ms, and 200 concurrent
#     clients with 0 errors; baseline: `GET /services` (answered without
#     a task) by the same client, same run;
#   - the server's resident memory (VmRSS) at most 15 MiB idle, after start
#     and after the load;
#   - a mount + unmount cycle through the server: at most 1.3x the embedded
#     cycle of the same volume.
#
# The two sides of each comparison are timed in alternating rounds
# (BENCH_ROUNDS, default 3), and each round's ratio is printed.
#
# usage: scripts/bench-multihost.sh [dir with release rexray and examples/http_load]
#        BENCH_RUNS=30 (timed runs per command and round), BENCH_VOLUMES=1000
# Run as root (loop devices, mount). Everything happens under a temporary
# directory, removed at the end with exactly what the run made.
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
  cargo build --release --quiet --bins --example http_load
  bin="$PWD/target/release"
fi
r="$bin/rexray"
load="$bin/examples/http_load"
[ -x "$r" ] && [ -x "$load" ] || { echo "error: need $r and $load (cargo build --release --bins --example http_load)" >&2; exit 2; }
rounds="${BENCH_ROUNDS:-3}"
runs="${BENCH_RUNS:-30}"
n="${BENCH_VOLUMES:-1000}"

work="$(mktemp -d /tmp/rxmh.XXXXXX)"
ctl="$work/ctl"    # the controller's home
node="$work/node"  # the node's home; the volumes live under its lib dir
sock="$work/ctl.sock"
pid=""
source scripts/bench-lib.sh
cleanup() {
  stop_child "$pid"
  # Exactly what this run made: mounts under $work, loops backed by files under $work.
  release_work "$work"
}
trap cleanup EXIT

mkdir -p "$ctl/etc" "$node/etc"
install -d -m 0711 "$node/var/lib"
cat >"$ctl/etc/config.yml" <<EOF
rexray:
  modules:
    default-docker:
      disabled: true
libstorage:
  service: loop
  server:
    endpoints:
      ctl:
        address: unix://$sock
    services:
      loop:
        driver: loop
loop:
  volumePath: $node/var/lib/loop
EOF

# The node, embedded and as a client of the controller: the same command
# line and environment size on both sides.
emb=(env REXRAY_HOME="$node" LIBSTORAGE_EMBEDDED=true "$r")
cli=(env REXRAY_HOME="$node" LIBSTORAGE_HOST="unix://$sock" "$r")

echo "== seeding $n volumes" >&2
i=1
while [ "$i" -le "$n" ]; do
  last=$(( i + 999 )); [ "$last" -le "$n" ] || last=$n
  "${emb[@]}" volume create -q --size 1 $(seq -f 'v%05g' "$i" "$last") >/dev/null 2>"$work/seed.err" ||
    { cat "$work/seed.err" >&2; exit 1; }
  i=$(( last + 1 ))
done
# The volume mounted and unmounted, formatted by a first mount.
"${emb[@]}" volume create -q --size 1 bm >/dev/null 2>&1
"${emb[@]}" volume mount -q bm >/dev/null 2>&1
"${emb[@]}" volume unmount -q bm >/dev/null 2>&1

echo "== starting the controller" >&2
REXRAY_HOME="$ctl" "$r" service start -l error 2>"$work/ctl.log" &
pid=$!
up=""
for _ in $(seq 600); do
  kill -0 "$pid" 2>/dev/null || break
  if [ -S "$sock" ] && [ "$("$load" "unix://$sock" 1 1 /help/version | jq .errors)" = 0 ]; then up=1; break; fi
  sleep 0.05
done
[ -n "$up" ] || { echo "error: the controller did not answer within 30 s:" >&2; cat "$work/ctl.log" >&2; exit 1; }
rss() { awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$pid/status"; }
rss_start=$(rss)

# Client mode really goes through the server (and embedded does not).
"${cli[@]}" volume ls -f json >"$work/ls.json"
[ "$(jq length "$work/ls.json")" -eq $(( n + 1 )) ] || { echo "error: the client lists $(jq length "$work/ls.json") volumes, not $(( n + 1 ))" >&2; exit 1; }
id=$(jq -r '.[] | select(.name == "v00500") | .id' "$work/ls.json")
[ -n "$id" ] || { echo "error: no id for v00500" >&2; exit 1; }

mean() { jq -r ".results[$2].mean" "$1"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
ms() { awk -v a="$1" 'BEGIN { printf "%.2f", a * 1000 }'; }

echo "== volume ls ($n volumes), $rounds rounds" >&2
ls_rows=()
for k in $(seq "$rounds"); do
  j="$work/ls.$k.json"
  hyperfine -N --style none --warmup 3 --runs "$runs" --export-json "$j" \
    "${emb[*]} volume ls" "${cli[*]} volume ls" >/dev/null 2>&1
  e=$(mean "$j" 0); c=$(mean "$j" 1)
  ls_rows+=("$(ms "$e") ms | $(ms "$c") ms | $(ratio "$c" "$e")x")
done

echo "== mount + unmount cycle, $rounds rounds" >&2
mt_rows=()
for k in $(seq "$rounds"); do
  j="$work/mount.$k.json"
  hyperfine --style none --warmup 2 --runs "$runs" --export-json "$j" \
    "${emb[*]} volume mount -q bm && ${emb[*]} volume unmount -q bm" \
    "${cli[*]} volume mount -q bm && ${cli[*]} volume unmount -q bm" >/dev/null 2>&1
  e=$(mean "$j" 0); c=$(mean "$j" 1)
  mt_rows+=("$(ms "$e") ms | $(ms "$c") ms | $(ratio "$c" "$e")x")
done

echo "== GET /volumes/loop/$id" >&2
one="/volumes/loop/$id"
"$load" "unix://$sock" 1 500 "$one" /services >/dev/null   # warm up
get_rows=()
for k in $(seq "$rounds"); do
  b=$("$load" "unix://$sock" 1 5000 /services)
  g=$("$load" "unix://$sock" 1 5000 "$one")
  get_rows+=("$b|$g")
done
b200=$("$load" "unix://$sock" 200 50 /services)
g200=$("$load" "unix://$sock" 200 50 "$one")
rss_load=$(rss)
sleep 3
rss_idle=$(rss)

f() { jq -r ".$2" <<<"$1"; }
echo
echo "Multi-host benchmark: controller and node on this machine, $n loop volumes, unix socket"
echo
echo "| figure | baseline (same run) | measured | ratio / target |"
echo "|---|---|---|---|"
for row in "${ls_rows[@]}"; do
  IFS='|' read -r e c q <<<"$row"
  echo "| \`volume ls\` ($n volumes), client mode | embedded:$e |$c |$q (target <= 2x) |"
done
for row in "${get_rows[@]}"; do
  b=${row%%|*}; g=${row#*|}
  echo "| \`GET $one\` p50 / p99 / max, 1 client | \`GET /services\` $(f "$b" p50_us) / $(f "$b" p99_us) / $(f "$b" max_us) us | $(f "$g" p50_us) / $(f "$g" p99_us) / $(f "$g" max_us) us, $(f "$g" errors) errors | p99 $(f "$g" p99_us) us (target <= 1000 us) |"
done
echo "| \`GET $one\`, 200 clients x 50 | \`GET /services\` p99 $(f "$b200" p99_us) us, $(f "$b200" errors) errors | p50 $(f "$g200" p50_us) us, p99 $(f "$g200" p99_us) us, max $(f "$g200" max_us) us | $(f "$g200" errors) errors (target 0) |"
for row in "${mt_rows[@]}"; do
  IFS='|' read -r e c q <<<"$row"
  echo "| mount + unmount cycle, client mode | embedded:$e |$c |$q (target <= 1.3x) |"
done
echo "| server VmRSS | after start: $rss_start MiB | after the load: $rss_load MiB; 3 s later: $rss_idle MiB | target <= 15 MiB idle |"
