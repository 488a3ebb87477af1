#!/usr/bin/env bash
# How fast flexrex answers kubelet, as ratios to a baseline measured in the
# same run (never absolute timings, which depend on the machine):
#
#   - `flexrex init`, `getvolumename`, `isattached` against spawning /bin/true
#     (target: each within 3 ms);
#   - as root, a full attach → mountdevice → mount → unmount → unmountdevice
#     → detach cycle on an existing volume against the same steps done by a
#     plain shell script with losetup and mount (target: within 1.3×).
#
# usage: scripts/bench-flexrex.sh <dir with release rexray and flexrex>
#        e.g. cargo build --release --bins && scripts/bench-flexrex.sh target/release
# Everything happens under a temporary REXRAY_HOME, removed at the end.
set -euo pipefail

dir="${1:?usage: $0 <dir with release rexray and flexrex, e.g. target/release>}"
bin="$(cd "$dir" && pwd)"
for b in rexray flexrex; do
  if [ ! -x "$bin/$b" ]; then
    echo "error: $bin/$b not found (cargo build --release --bins)" >&2
    exit 2
  fi
done
for t in hyperfine jq; do
  if ! command -v "$t" >/dev/null; then
    echo "error: $t is needed (apt-get install $t)" >&2
    exit 2
  fi
done

home="$(mktemp -d /tmp/flexrex-bench.XXXXXX)"
export REXRAY_HOME="$home"
pod="$home/kubelet/pods/uid1/volumes/rexray~flexrex/pv-bench"
dmp="$home/kubelet/plugins/kubernetes.io/flexvolume/rexray/flexrex/mounts/pv-bench"
shell_mp="$home/shell/volume"
cleanup() {
  # Only what this script made: mounts under $home, loops on its images.
  if [ "$(id -u)" -eq 0 ]; then
    findmnt -rn -o TARGET | awk -v h="$home/" 'index($0, h) == 1' | sort -r |
      while read -r m; do umount "$m" 2>/dev/null || true; done
    for l in /sys/block/loop*/loop/backing_file; do
      [ -e "$l" ] || continue
      case "$(cat "$l")" in "$home"/*)
        d="/dev/$(basename "$(dirname "$(dirname "$l")")")"
        losetup -d "$d" 2>/dev/null || true ;;
      esac
    done
  fi
  rm -rf "$home"
}
trap cleanup EXIT

"$bin/rexray" volume create bench1 --size 1 >/dev/null
opts='{"volumeID":"bench1","kubernetes.io/fsType":"ext4","kubernetes.io/readwrite":"rw","kubernetes.io/pvOrVolumeName":"pv-bench"}'

# Each call must succeed before it is timed.
check() {
  local out
  out="$("$bin/flexrex" "$@" 2>&1)" || true
  case "$out" in *'"status":"Success"'*) ;; *)
    echo "error: flexrex $1 answered: $out" >&2
    exit 1 ;;
  esac
}
check init
check getvolumename "$opts"
check isattached "$opts" node1

ratio_table() { # json file, baseline name
  jq -r --arg base "$2" '
    (.results | map(select(.command == $base))[0].mean) as $b
    | .results[]
    | [.command, (.mean * 1000 | . * 1000 | round / 1000), (.mean / $b | . * 100 | round / 100)]
    | @tsv' "$1" |
    awk -F'\t' 'BEGIN { printf "%-28s %10s %8s\n", "command", "mean ms", "ratio" }
                { printf "%-28s %10.3f %8.2f\n", $1, $2, $3 }'
}

echo "== flexrex calls vs spawning /bin/true"
hyperfine -N --style basic --warmup 20 --runs 300 --export-json "$home/calls.json" \
  -n /bin/true "/bin/true" \
  -n "flexrex init" "$bin/flexrex init" \
  -n "flexrex getvolumename" "$bin/flexrex getvolumename '$opts'" \
  -n "flexrex isattached" "$bin/flexrex isattached '$opts' node1" >/dev/null
ratio_table "$home/calls.json" /bin/true
echo "(target: each flexrex call within 3 ms)"

if [ "$(id -u)" -ne 0 ]; then
  echo "note: not root: the attach/mount cycle is skipped" >&2
  exit 0
fi

# Format once, so both cycles mount an existing filesystem.
"$bin/rexray" volume mount bench1 >/dev/null
"$bin/rexray" volume unmount bench1 >/dev/null
id="$("$bin/rexray" volume ls bench1 -f json | jq -r '.[0].id')"
img="$(readlink -f "$home/var/lib/loop/$id.img")"

cat >"$home/cycle-flexrex.sh" <<EOF
set -e
f="$bin/flexrex"
o='$opts'
dev=\$("\$f" attach "\$o" node1 | sed 's/.*"device":"\\([^"]*\\)".*/\\1/')
"\$f" mountdevice "$dmp" "\$dev" "\$o" >/dev/null
"\$f" mount "$pod" "\$o" >/dev/null
"\$f" unmount "$pod" >/dev/null
"\$f" unmountdevice "$dmp" >/dev/null
"\$f" detach pv-bench node1 >/dev/null
EOF
cat >"$home/cycle-shell.sh" <<EOF
set -e
mkdir -p "$shell_mp" "$dmp" "$pod"
dev=\$(losetup -f --show "$img")
mount -t ext4 -o nosuid,nodev "\$dev" "$shell_mp"
mount --bind "$shell_mp" "$dmp"
mount --bind "$shell_mp" "$pod"
umount "$pod"
umount "$dmp"
umount "$shell_mp"
losetup -d "\$dev"
EOF

echo
echo "== attach → mountdevice → mount → unmount → unmountdevice → detach"
hyperfine -N --style basic --warmup 3 --runs 30 --export-json "$home/cycle.json" \
  -n "shell script" "bash $home/cycle-shell.sh" \
  -n "flexrex" "bash $home/cycle-flexrex.sh" >/dev/null
ratio_table "$home/cycle.json" "shell script"
echo "(target: flexrex within 1.3x of the shell script)"
