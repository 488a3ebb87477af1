#!/usr/bin/env bash
# Benchmark of the Docker plugin endpoint (issue targets: Get p99 <= 1 ms,
# List of 10,000 volumes <= 50 ms, 200 concurrent Get/List clients with no
# errors and p99 <= 10 ms). Keep-alive HTTP over the unix socket; every
# figure is also printed as a ratio to an empty /Plugin.Activate measured in
# the same run, so slow or busy machines stay comparable.
#
#   cargo build --release --bins --examples
#   scripts/bench-docker.sh target/release
#
# Standalone: a private REXRAY_HOME under /tmp with a generated loop catalog
# (Get/List read only the catalog; no images or loop devices are made).
set -euo pipefail
BIN=${1:?usage: bench-docker.sh RELEASE_BIN_DIR (e.g. target/release)}
BIN=$(cd "$BIN" && pwd)
REXRAY=$BIN/rexray
LOAD=$BIN/examples/docker_load
[ -x "$REXRAY" ] && [ -x "$LOAD" ] || { echo "need $REXRAY and $LOAD: cargo build --release --bins --examples" >&2; exit 1; }
N=${VOLUMES:-10000}

H=$(mktemp -d /tmp/rxb.XXXXXX)
PID=""
cleanup() {
  [ -n "$PID" ] && kill -TERM "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
  rm -rf "$H"
}
trap cleanup EXIT

catalog() {  # catalog DIR COUNT
  mkdir -p "$1"
  python3 - "$1/catalog.json" "$2" <<'PY'
import json, sys
n = int(sys.argv[2])
vols = [{"id": "%016x" % (0x1000 + i), "name": "v%d" % i, "size": 16, "type": "",
         "iops": 0, "availabilityZone": "", "createdAt": "2026-01-01T00:00:00Z",
         "fields": {}} for i in range(n)]
json.dump({"volumes": vols}, open(sys.argv[1], "w"))
PY
}

serve() {  # serve HOME
  REXRAY_HOME=$1 REXRAY_MODULES_DEFAULT_DOCKER_HOST=unix://$1/p.sock \
    "$REXRAY" service start -l error 2>"$1/service.log" &
  PID=$!
  for _ in $(seq 600); do [ -S "$1/p.sock" ] && return 0; kill -0 $PID || break; sleep 0.05; done
  echo "service did not start:" >&2; cat "$1/service.log" >&2; exit 1
}
stop() { kill -TERM "$PID"; wait "$PID" || true; PID=""; }

field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }
ratio() { python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print('%.1f' % (a/b if b else 0))" "$1" "$2"; }

catalog "$H/big/var/lib/loop" "$N"
serve "$H/big"
S=$H/big/p.sock
mid=$((N / 2))
"$LOAD" "$S" 1 200 /VolumeDriver.List '{}' >/dev/null   # warm up
act=$("$LOAD" "$S" 1 5000 /Plugin.Activate '')
get=$("$LOAD" "$S" 1 5000 /VolumeDriver.Get "{\"Name\":\"v$mid\"}")
lst=$("$LOAD" "$S" 1 50 /VolumeDriver.List '{}')
# The first List after the catalog changed parses and renders it all (the
# figures above are of an unchanged catalog, answered from memory): replace
# the catalog with a copy (a new file, as every write does) before each one.
cold=()
for _ in 1 2 3 4 5; do
  python3 - "$H/big/var/lib/loop/catalog.json" <<'PY'
import os, shutil, sys
shutil.copyfile(sys.argv[1], sys.argv[1] + ".new")
os.replace(sys.argv[1] + ".new", sys.argv[1])
PY
  cold+=("$(field "$("$LOAD" "$S" 1 1 /VolumeDriver.List '{}')" p50_us)")
done
stop

echo "volumes in catalog: $N"
printf '%-34s %s\n' "Plugin.Activate (baseline)" "$act"
printf '%-34s %s\n' "Get" "$get"
printf '%-34s %s\n' "List ($N volumes)" "$lst"
a99=$(field "$act" p99_us); g99=$(field "$get" p99_us); l99=$(field "$lst" p99_us); l50=$(field "$lst" p50_us)
echo "Get  p99: ${g99} us (target 1000 us)  = $(ratio "$g99" "$a99") x Activate p99"
echo "List p50: ${l50} us, p99: ${l99} us (target 50000 us)  = $(ratio "$l99" "$a99") x Activate p99"
cmax=$(printf '%s\n' "${cold[@]}" | sort -n | tail -1)
echo "List after a catalog change: ${cold[*]} us (max ${cmax} us, target 50000 us)  = $(ratio "$cmax" "$a99") x Activate p99"

C=${CLIENTS:-200}
M=${CONCURRENT_VOLUMES:-100}
R=${CONCURRENT_REQUESTS:-50}   # per client; the first one includes the connection
catalog "$H/small/var/lib/loop" "$M"
serve "$H/small"
S=$H/small/p.sock
cact=$("$LOAD" "$S" "$C" "$R" /Plugin.Activate '')
conc=$("$LOAD" "$S" "$C" "$R" /VolumeDriver.Get '{"Name":"v7"}' /VolumeDriver.List '{}')
stop
printf '%-34s %s\n' "$C clients Activate (baseline)" "$cact"
printf '%-34s %s\n' "$C clients Get/List ($M volumes)" "$conc"
echo "$C clients: errors $(field "$conc" errors), p99 $(field "$conc" p99_us) us (target 10000 us) = $(ratio "$(field "$conc" p99_us)" "$(field "$cact" p99_us)") x concurrent Activate p99"
