#!/usr/bin/env bash
# Benchmarks (not tests): whole-process timings with hyperfine, each shown
# next to a baseline measured in the same run, so a noisy machine moves
# both. Run as root: it uses real loop devices. Prints a summary table.
#
#   scripts/bench.sh            # everything
#   BENCH_RUNS=50 scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
[ "$(id -u)" -eq 0 ] || { echo "error: run as root (loop devices, mount)" >&2; exit 1; }
REXRAY_TEST_DEPS=all source scripts/deps.sh
cargo build --release --quiet --bins --examples
bin="$PWD/target/release"
runs="${BENCH_RUNS:-30}"

work="$(mktemp -d /tmp/rxbench.XXXXXX)"
export REXRAY_HOME="$work/home"
source scripts/bench-lib.sh
cleanup() {
  # Exactly what this run made: mounts under $work, loop devices backed by files under $work.
  release_work "$work"
}
trap cleanup EXIT

results=()
# mean seconds of command #i in a hyperfine JSON export
mean() { jq -r ".results[$2].mean" "$1"; }
ms() { awk -v s="$1" 'BEGIN { printf "%.2f ms", s * 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
record() { results+=("$(printf '| %s | %s | %s | %s | %s |' "$1" "$2" "$3" "$4" "$5")"); }

echo "== (a) rexray volume ls with 1000 loop volumes" >&2
"$bin/rexray" volume create -q --size 1 $(seq -f 'bench%04g' 1 1000) >/dev/null
hyperfine -N --style basic --warmup 5 --runs "$((runs * 5))" --export-json "$work/a.json" \
  "$bin/rexray volume ls" "/bin/true" >&2
a=$(mean "$work/a.json" 0); t=$(mean "$work/a.json" 1)
record "volume ls, 1000 volumes" "$(ms "$a")" "/bin/true $(ms "$t")" "$(ratio "$a" "$t")×" "≤ 20 ms"
"$bin/rexray" volume rm -q $(seq -f 'bench%04g' 1 1000) >/dev/null

echo "== (b) create + mount + unmount + rm of a 1 GiB ext4 volume vs the plain shell sequence" >&2
sh_dir="$work/sh"; mkdir -p "$sh_dir"
r="$bin/rexray"
hyperfine --style basic --warmup 3 --runs "$runs" --export-json "$work/b.json" \
  "$r volume create lc --size 1 -q >/dev/null && $r volume mount lc -q >/dev/null && $r volume unmount lc -q >/dev/null && $r volume rm lc >/dev/null" \
  "truncate -s 1G $sh_dir/f.img && d=\$(losetup -f --show $sh_dir/f.img) && mkfs.ext4 -q \$d && mkdir -p $sh_dir/m && mount \$d $sh_dir/m && mkdir -p $sh_dir/m/data && umount $sh_dir/m && losetup -d \$d && rm $sh_dir/f.img" >&2
b=$(mean "$work/b.json" 0); s=$(mean "$work/b.json" 1)
record "create+mount+unmount+rm, 1 GiB ext4" "$(ms "$b")" "shell $(ms "$s")" "$(ratio "$b" "$s")×" "≤ 1.3×"

echo "== (c) warm mount: volume already mounted, a new consumer" >&2
"$r" volume create warm --size 1 -q >/dev/null
"$r" volume mount warm --consumer holder -q >/dev/null
hyperfine -N --style basic --warmup 5 --runs "$((runs * 5))" --export-json "$work/c.json" \
  --prepare "$r volume unmount warm --consumer bench -q" \
  "$r volume mount warm --consumer bench -q" >&2
hyperfine -N --style basic --warmup 5 --runs "$((runs * 5))" --export-json "$work/c0.json" "/bin/true" >&2
c=$(mean "$work/c.json" 0); t=$(mean "$work/c0.json" 0)
record "warm mount (new consumer)" "$(ms "$c")" "/bin/true $(ms "$t")" "$(ratio "$c" "$t")×" "≤ 3 ms"
"$r" volume unmount warm --consumer bench -q >/dev/null 2>&1 || true
"$r" volume unmount warm --consumer holder -q >/dev/null
"$r" volume rm warm >/dev/null

echo
echo "| benchmark | rexray-rs | baseline (same run) | ratio | target |"
echo "|---|---|---|---|---|"
printf '%s\n' "${results[@]}"

# Front-end benchmarks: standalone scripts taking the binary directory; each
# prints its own figures against its own baseline.
for extra in scripts/bench-*.sh; do
  [ -e "$extra" ] || continue
  echo
  echo "## $extra"
  bash "$extra" "$bin" 2>&1 | grep -v -e 'Warning: Statistical outliers' -e '^ *$' || echo "($extra failed)"
done
