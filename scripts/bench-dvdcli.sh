#!/usr/bin/env bash
# dvdcli timings next to /bin/true measured in the same run: `dvdcli path`
# and a warm `dvdcli mount` (the volume is already mounted, as for every
# container after the first under Mesos' docker/volume isolator).
# Prints two table rows on stdout, hyperfine's report on stderr.
#
#   scripts/bench-dvdcli.sh <release bin dir> [runs]
#
# Root (loop devices, mount). Uses $REXRAY_HOME if set (scripts/bench.sh
# passes its own; only the volume `benchdvd` is made and removed there),
# else a temporary home that is removed at the end.
set -euo pipefail
bin="$(cd "${1:?usage: bench-dvdcli.sh <release bin dir> [runs]}" && pwd)"
runs="${2:-30}"
[ "$(id -u)" -eq 0 ] || { echo "error: run as root (loop devices, mount)" >&2; exit 1; }
work="$(mktemp -d /tmp/rxbench-dvdcli.XXXXXX)"
# A REXRAY_HOME from the caller is shared: only our volume is touched there.
own_home=0
if [ -z "${REXRAY_HOME:-}" ]; then
  export REXRAY_HOME="$work/home"
  own_home=1
fi
home="$REXRAY_HOME"
cleanup() {
  "$bin/dvdcli" unmount --volumedriver=rexray --volumename=benchdvd >/dev/null 2>&1 || true
  "$bin/dvdcli" remove --volumedriver=rexray --volumename=benchdvd >/dev/null 2>&1 || true
  if [ "$own_home" -eq 1 ]; then
    # Exactly what this run made: mounts under our home, loop devices backed by files under it.
    { grep -o " $home[^ ]*" /proc/self/mountinfo || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    for f in /sys/block/loop*/loop/backing_file; do
      [ -e "$f" ] || continue
      case "$(cat "$f")" in "$home"/*) losetup -d "/dev/$(basename "$(dirname "$(dirname "$f")")")" 2>/dev/null || true ;; esac
    done
  fi
  rm -rf "$work"
}
trap cleanup EXIT

d="$bin/dvdcli"
args="--volumedriver=rexray --volumename=benchdvd"
"$d" mount $args --volumeopts=size=1,newfstype=xfs >/dev/null

hyperfine -N --style basic --warmup 5 --runs "$((runs * 5))" --export-json "$work/d.json" \
  "$d path $args" "$d mount $args --volumeopts=size=1,newfstype=xfs,overwritefs=true" "/bin/true" >&2
mean() { jq -r ".results[$1].mean" "$work/d.json"; }
ms() { awk -v s="$1" 'BEGIN { printf "%.2f ms", s * 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
p=$(mean 0); m=$(mean 1); t=$(mean 2)
printf '| %s | %s | %s | %s | %s |\n' "dvdcli path" "$(ms "$p")" "/bin/true $(ms "$t")" "$(ratio "$p" "$t")×" "≤ 3 ms"
printf '| %s | %s | %s | %s | %s |\n' "dvdcli mount (warm)" "$(ms "$m")" "/bin/true $(ms "$t")" "$(ratio "$m" "$t")×" "≤ 3 ms"
