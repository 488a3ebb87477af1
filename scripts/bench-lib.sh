# Sourced by the benchmark scripts: clean-up of exactly what a run made.

# Unmount every mount under DIR (deepest first), detach the loop devices
# whose backing files are under DIR, then remove DIR.
release_work() {
  local work=$1 m f
  { grep -o " $work[^ ]*" /proc/self/mountinfo || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  for f in /sys/block/loop*/loop/backing_file; do
    [ -e "$f" ] || continue
    case "$(cat "$f")" in "$work"/*) losetup -d "/dev/$(basename "$(dirname "$(dirname "$f")")")" 2>/dev/null || true ;; esac
  done
  rm -rf "$work"
}

# Stop the process PID (a child of this shell): TERM, up to 30 s, then KILL.
stop_child() {
  local pid=$1
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
