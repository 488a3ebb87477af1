#!/usr/bin/env bash
# Two builds side by side (say the previous release and this one), in the
# same run, so that a noisy machine moves both: the short-lived calls each
# front-end makes most, and the flexrex attach -> ... -> detach cycle next
# to the plain shell. Each round is one hyperfine invocation per group with
# both builds' commands; the table shows each command's mean over the
# rounds as "lowest-highest".
#
#   scripts/compare-builds.sh <baseline bin dir> <candidate bin dir> [rounds]
#   e.g. git worktree add --detach ../old v0.x && (cd ../old && cargo build --release --bins)
#        scripts/compare-builds.sh ../old/target/release target/release 3
#
# Root (loop devices, mount). Each build gets its own temporary
# REXRAY_HOME (their catalogs may differ in format), removed at the end;
# every command runs through `env REXRAY_HOME=...`, as does the /bin/true
# baseline.
set -euo pipefail
export PATH="$HOME/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
[ "$(id -u)" -eq 0 ] || { echo "error: run as root (loop devices, mount)" >&2; exit 1; }
for t in hyperfine jq; do
  command -v "$t" >/dev/null || { echo "error: $t is needed (apt-get install $t)" >&2; exit 2; }
done
base="$(cd "${1:?usage: $0 <baseline bin dir> <candidate bin dir> [rounds]}" && pwd)"
cand="$(cd "${2:?usage: $0 <baseline bin dir> <candidate bin dir> [rounds]}" && pwd)"
rounds="${3:-3}"
runs="${BENCH_RUNS:-100}"

work="$(mktemp -d /tmp/rxcompare.XXXXXX)"
source "$(dirname "$0")/bench-lib.sh"
cleanup() {
  # Exactly what this run made: mounts under $work, loops on its images.
  release_work "$work"
}
trap cleanup EXIT

opts='{"volumeID":"bench1","kubernetes.io/fsType":"ext4","kubernetes.io/readwrite":"rw","kubernetes.io/pvOrVolumeName":"pv-bench"}'
# The cycle's volume: formatted, not mounted.
cycle_opts='{"volumeID":"bench2","kubernetes.io/fsType":"ext4","kubernetes.io/readwrite":"rw","kubernetes.io/pvOrVolumeName":"pv-bench"}'
for b in base cand; do
  bin=$base; [ $b = cand ] && bin=$cand
  home="$work/$b"
  mkdir -p "$home"
  # A formatted volume mounted for one consumer (so a new consumer's
  # mount is the warm one), another formatted and unmounted for the
  # flexrex cycle, and that cycle's script.
  env REXRAY_HOME="$home" "$bin/rexray" volume create bench1 --size 1 -q >/dev/null
  env REXRAY_HOME="$home" "$bin/rexray" volume mount bench1 --consumer holder -q >/dev/null
  env REXRAY_HOME="$home" "$bin/rexray" volume create bench2 --size 1 -q >/dev/null
  env REXRAY_HOME="$home" "$bin/rexray" volume mount bench2 -q >/dev/null
  env REXRAY_HOME="$home" "$bin/rexray" volume unmount bench2 -q >/dev/null
  pod="$home/kubelet/pods/uid1/volumes/rexray~flexrex/pv-bench"
  dmp="$home/kubelet/plugins/kubernetes.io/flexvolume/rexray/flexrex/mounts/pv-bench"
  cat >"$work/cycle-$b.sh" <<EOF
set -e
export REXRAY_HOME=$home
f="$bin/flexrex"
o='$cycle_opts'
dev=\$("\$f" attach "\$o" node1 | sed 's/.*"device":"\\([^"]*\\)".*/\\1/')
"\$f" mountdevice "$dmp" "\$dev" "\$o" >/dev/null
"\$f" mount "$pod" "\$o" >/dev/null
"\$f" unmount "$pod" >/dev/null
"\$f" unmountdevice "$dmp" >/dev/null
"\$f" detach pv-bench node1 >/dev/null
EOF
done
# The shell's cycle binds an ext4 image of its own, the same size (the
# builds' volumes stay theirs).
img="$work/shell.img"
truncate -s 1G "$img"
mkfs.ext4 -q "$img"
sh_mp="$work/shell/volume" sh_dmp="$work/shell/dmp" sh_pod="$work/shell/pod"
cat >"$work/cycle-shell.sh" <<EOF
set -e
mkdir -p "$sh_mp" "$sh_dmp" "$sh_pod"
dev=\$(losetup -f --show "$img")
mount -t ext4 -o nosuid,nodev "\$dev" "$sh_mp"
mount --bind "$sh_mp" "$sh_dmp"
mount --bind "$sh_mp" "$sh_pod"
umount "$sh_pod"
umount "$sh_dmp"
umount "$sh_mp"
losetup -d "\$dev"
EOF
for s in base cand shell; do bash "$work/cycle-$s.sh"; done

calls=()
for b in base cand; do
  bin=$base; [ $b = cand ] && bin=$cand
  e="env REXRAY_HOME=$work/$b"
  calls+=(-n "$b: flexrex init" "$e $bin/flexrex init")
  calls+=(-n "$b: flexrex getvolumename" "$e $bin/flexrex getvolumename '$opts'")
  calls+=(-n "$b: flexrex isattached" "$e $bin/flexrex isattached '$opts' node1")
  calls+=(-n "$b: dvdcli path" "$e $bin/dvdcli path --volumedriver=rexray --volumename=bench1")
done
for r in $(seq "$rounds"); do
  echo "== round $r of $rounds (load $(cut -d' ' -f1 /proc/loadavg))" >&2
  hyperfine -N --style none --warmup 10 --runs "$runs" --export-json "$work/calls.$r.json" \
    -n "env /bin/true" "env /bin/true" "${calls[@]}" >/dev/null
  mounts=()
  for b in base cand; do
    bin=$base; [ $b = cand ] && bin=$cand
    e="env REXRAY_HOME=$work/$b"
    mounts+=(--prepare "$e $bin/rexray volume unmount bench1 --consumer bench -q")
    mounts+=(-n "$b: warm rexray volume mount" "$e $bin/rexray volume mount bench1 --consumer bench -q")
  done
  # (The first prepare finds nothing to unmount: mount once before.)
  for b in base cand; do
    bin=$base; [ $b = cand ] && bin=$cand
    env REXRAY_HOME="$work/$b" "$bin/rexray" volume mount bench1 --consumer bench -q >/dev/null
  done
  hyperfine -N --style none --warmup 5 --runs "$runs" --export-json "$work/mount.$r.json" "${mounts[@]}" >/dev/null
  hyperfine -N --style none --warmup 3 --runs 30 --export-json "$work/cycle.$r.json" \
    -n "shell: attach...detach cycle" "bash $work/cycle-shell.sh" \
    -n "base: attach...detach cycle" "bash $work/cycle-base.sh" \
    -n "cand: attach...detach cycle" "bash $work/cycle-cand.sh" >/dev/null
done

echo "baseline:  $base"
echo "candidate: $cand"
printf '%-32s %s\n' "command (mean, ms)" "lowest-highest over $rounds rounds"
jq -rs '[.[].results[]] | group_by(.command) | .[]
        | [.[0].command, (map(.mean * 1000) | min), (map(.mean * 1000) | max)] | @tsv' \
  "$work"/calls.*.json "$work"/mount.*.json "$work"/cycle.*.json |
  awk -F'\t' '{ printf "%-32s %.2f-%.2f\n", $1, $2, $3 }'
# The cycle as a ratio to the shell, per round.
for r in $(seq "$rounds"); do
  jq -r --arg r "$r" '(.results | map({(.command): .mean}) | add) as $m
    | "round \($r): cycle / shell: base \($m["base: attach...detach cycle"] / $m["shell: attach...detach cycle"] * 100 | round / 100)x, cand \($m["cand: attach...detach cycle"] / $m["shell: attach...detach cycle"] * 100 | round / 100)x"' \
    "$work/cycle.$r.json"
done
