#!/usr/bin/env bash
# Ceph benchmark (not a test): the rbd driver against the same steps done
# by hand, on a single-node cluster of its own (scripts/ceph.sh, under a
# temporary directory, stopped at exit), printed as ratios measured in the
# same run (never absolute targets: the machine varies).
#
#   - create + attach + mount of a fresh 1 GiB image:
#     `rexray volume create` + `rexray volume mount` against
#     `rbd create`, `rbd-fuse`, `losetup`, `mkfs.ext4`, `mount`
#     (the same rbd-fuse options and direct I/O on the loop device as the
#     driver, so mkfs costs the same on both sides); target at most 1.2x.
#   - `rexray volume ls` of BENCH_IMAGES (500) images, BENCH_ATTACHED (10)
#     of them attached, against `rbd ls -l --format json` of the same
#     pool; target at most 1.5x.
#
# Each rexray figure twice: as configured by default (rbd.library auto:
# librbd when the host has it) and with rbd.library off (the Ceph tools).
# Medians of BENCH_RUNS (10) runs; the sides of the first figure
# alternate run by run, so all see the same load.
#
# usage: scripts/bench-ceph.sh [dir with rexray]   (default: a release build)
# Run as root (Ceph daemons, FUSE, loop devices, mount).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
[ "$(id -u)" -eq 0 ] || { echo "error: run as root (Ceph, FUSE, loop devices, mount)" >&2; exit 1; }
for t in hyperfine jq rbd rbd-fuse losetup mkfs.ext4; do
  command -v "$t" >/dev/null || { echo "error: $t is needed (hyperfine, jq, ceph-common, rbd-fuse, util-linux, e2fsprogs)" >&2; exit 2; }
done
if [ $# -ge 1 ]; then
  bin="$(cd "$1" && pwd)"
else
  cargo build --release --quiet --bin rexray
  bin="$PWD/target/release"
fi
r="$bin/rexray"
runs="${BENCH_RUNS:-10}"
images="${BENCH_IMAGES:-500}"
attached="${BENCH_ATTACHED:-10}"

work="$(mktemp -d /tmp/rxcephbench.XXXXXX)"
source scripts/bench-lib.sh
cleanup() {
  # Mounts and loop devices of this run (the cluster still up, so they
  # let go at once), then the cluster, then the directory.
  release_work "$work/run"
  scripts/ceph.sh stop "$work/ceph" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
echo "== starting a Ceph cluster under $work/ceph" >&2
conf=$(CEPH_MON_PORT=$(port) CEPH_MGR=0 scripts/ceph.sh start "$work/ceph")
export CEPH_CONF="$conf"
unset CEPH_ARGS
mkdir -p "$work/run/home"
export REXRAY_HOME="$work/run/home"
mkdir -p "$REXRAY_HOME/etc"
printf 'libstorage:\n  service: rbd\nrbd:\n  cephArgs: --conf %s\n' "$conf" >"$REXRAY_HOME/etc/config.yml"

now() { date +%s%N; }
median() { sort -n | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

# --- create + attach + mount ---------------------------------------------
echo "== create + attach + mount, $runs runs each side" >&2
: >"$work/hand.ns"
: >"$work/rexray.ns"
: >"$work/tools.ns"
for i in $(seq "$runs"); do
  img="hand$i" f="$work/run/fuse$i" m="$work/run/mnt$i"
  mkdir -p "$f" "$m"
  t0=$(now)
  rbd create --size 1G --image-feature layering "rbd/$img"
  rbd-fuse --conf "$conf" --rbd_cache=false -p rbd -r "$img" "$f"
  dev=$(losetup --find --show --direct-io=on "$f/$img")
  mkfs.ext4 -q -F "$dev"
  mount "$dev" "$m"
  t1=$(now)
  echo $(( t1 - t0 )) >>"$work/hand.ns"
  umount "$m"
  losetup -d "$dev"
  umount "$f"
  for _ in $(seq 100); do rbd rm --no-progress "rbd/$img" >/dev/null 2>&1 && break; sleep 0.1; done

  v="rx$i"
  t0=$(now)
  "$r" volume create -q --size 1 "$v" >/dev/null
  "$r" volume mount -q "$v" >/dev/null
  t1=$(now)
  echo $(( t1 - t0 )) >>"$work/rexray.ns"
  "$r" volume unmount -q "$v" >/dev/null
  "$r" volume rm -q "$v" >/dev/null

  # The same with rbd.library off: the Ceph tools only.
  v="rt$i"
  t0=$(now)
  RBD_LIBRARY=off "$r" volume create -q --size 1 "$v" >/dev/null
  RBD_LIBRARY=off "$r" volume mount -q "$v" >/dev/null
  t1=$(now)
  echo $(( t1 - t0 )) >>"$work/tools.ns"
  RBD_LIBRARY=off "$r" volume unmount -q "$v" >/dev/null
  RBD_LIBRARY=off "$r" volume rm -q "$v" >/dev/null
done
hand=$(median <"$work/hand.ns")
rx=$(median <"$work/rexray.ns")
rt=$(median <"$work/tools.ns")

# --- volume ls -------------------------------------------------------------
echo "== $images images, $attached attached" >&2
seq -f 'ls%04g' "$images" | xargs -P 4 -I{} rbd create --size 1G --image-feature layering rbd/{}
for i in $(seq "$attached"); do
  "$r" volume attach -q "$(printf 'ls%04g' "$i")" >/dev/null
done
hyperfine -N --style basic --warmup 2 --runs "$runs" --export-json "$work/ls.json" \
  "rbd ls -l --format json -p rbd" "$r volume ls" "env RBD_LIBRARY=off $r volume ls" >/dev/null 2>&1
ls_rbd=$(jq -r '.results[0].median' "$work/ls.json")
ls_rx=$(jq -r '.results[1].median' "$work/ls.json")
ls_rt=$(jq -r '.results[2].median' "$work/ls.json")
n=$("$r" volume ls -f json | jq length)
held=$("$r" volume ls -f json | jq '[.[] | select(.attachments != null and (.attachments | length) > 0)] | length')
[ "$n" -eq "$images" ] && [ "$held" -eq "$attached" ] || {
  echo "error: volume ls listed $n volumes, $held attached (expected $images, $attached)" >&2
  exit 1
}
for i in $(seq "$attached"); do
  "$r" volume detach -q "$(printf 'ls%04g' "$i")" >/dev/null
done

echo
echo "| figure | rexray | by hand / rbd | ratio | target |"
echo "|---|---|---|---|---|"
awk -v a="$rx" -v b="$hand" 'BEGIN { printf "| create + attach + mount (1 GiB, ext4) | %.0f ms | %.0f ms | %.2fx | <= 1.2x |\n", a / 1e6, b / 1e6, a / b }'
awk -v a="$rt" -v b="$hand" 'BEGIN { printf "| the same, rbd.library off (tools) | %.0f ms | %.0f ms | %.2fx | |\n", a / 1e6, b / 1e6, a / b }'
awk -v a="$ls_rx" -v b="$ls_rbd" -v n="$images" 'BEGIN { printf "| volume ls of %d images | %.0f ms | %.0f ms | %.2fx | <= 1.5x |\n", n, a * 1e3, b * 1e3, a / b }'
awk -v a="$ls_rt" -v b="$ls_rbd" 'BEGIN { printf "| the same, rbd.library off (tools) | %.0f ms | %.0f ms | %.2fx | |\n", a * 1e3, b * 1e3, a / b }'
echo
echo "medians of $runs runs; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores"
