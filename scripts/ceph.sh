#!/usr/bin/env bash
# A single-node Ceph cluster under one directory, for the tests and for
# trying the rbd and s3fs drivers:
#
#   scripts/ceph.sh start DIR   start it (a new one, or again the one in
#                               DIR, its data kept); prints DIR/ceph.conf
#   scripts/ceph.sh stop DIR    stop what `start DIR` started
#
# One monitor, one manager and one bluestore OSD on a sparse file, all on
# 127.0.0.1 only, cephx on, every file (data, logs, sockets, pid files)
# under DIR, the `rbd` pool created and initialised. With CEPH_RGW=1 it
# also starts radosgw and writes an S3 user to DIR/s3.env (mode 0600);
# with CEPH_RGW_HTTPS=1 radosgw serves HTTPS too, on CEPH_RGW_HTTPS_PORT
# (7443), with a certificate for 127.0.0.1 signed by a CA made for this
# cluster (openssl, under DIR/tls): DIR/s3.env then also names the https
# endpoint (S3_HTTPS_ENDPOINT) and that CA (S3_CA_FILE, PEM).
# Waits for HEALTH_OK at most CEPH_TIMEOUT seconds (default 180).
#
# Other settings: CEPH_MON_PORT (3300), CEPH_RGW_PORT (7480), CEPH_MGR=0
# (no manager), CEPH_STOP_SIGNAL (TERM). Installs the Debian packages it
# needs when they are missing (as root). Only the conf path goes to
# stdout; progress and errors go to stderr.
#
# `stop` signals exactly the daemons whose pid files are under DIR (and
# that run with DIR's conf), treats zombies as gone, unmounts FUSE mounts
# under DIR and detaches only loop devices whose backing file is under DIR.
set -euo pipefail

usage() {
  echo "usage: $0 start|stop DIR" >&2
  exit 2
}
[ $# -eq 2 ] || usage
cmd=$1
[ -n "$2" ] || usage
mkdir -p "$2"
DIR=$(cd "$2" && pwd -P)
CONF=$DIR/ceph.conf
TIMEOUT=${CEPH_TIMEOUT:-180}
MON_PORT=${CEPH_MON_PORT:-3300}
RGW_PORT=${CEPH_RGW_PORT:-7480}
RGW_HTTPS_PORT=${CEPH_RGW_HTTPS_PORT:-7443}
HTTPS=${CEPH_RGW_HTTPS:-0}
export CEPH_CONF=$CONF
unset CEPH_ARGS

say() { echo "ceph.sh: $*" >&2; }
die() {
  echo "ceph.sh: error: $*" >&2
  exit 1
}

# Whether PID is a live process (a zombie counts as gone: PID 1 here may
# reap orphans only once a second).
alive() {
  local st
  st=$(sed -E 's/^.*\) (.).*$/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$st" ] && [ "$st" != Z ]
}

# Whether PID runs with this cluster's conf or data (guards against a
# recycled PID).
ours() {
  tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$DIR/"
}

install_packages() {
  local pkgs=(ceph-mon ceph-mgr ceph-osd ceph-common rbd-fuse radosgw s3fs fuse3 uuid-runtime iproute2 curl openssl)
  local missing=() p
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get to install them"
  [ "$(id -u)" -eq 0 ] || die "missing packages ${missing[*]}: run as root to install them"
  say "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -q >&2
  apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}" >&2
}

port_free() {
  ! ss -Htln "sport = :$1" 2>/dev/null | grep -q .
}

# Run "$@" until it succeeds or the deadline passes.
deadline=0
until_ok() {
  local what=$1
  shift
  while ! "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || die "$what: not done within ${TIMEOUT}s (logs in $DIR/log)"
    sleep 0.5
  done
}

ceph_() { timeout 30 ceph -c "$CONF" "$@"; }

healthy() {
  local s
  s=$(ceph_ status --format json 2>/dev/null) || return 1
  python3 - "$s" <<'EOF'
import json, sys
s = json.loads(sys.argv[1])
pg = s.get("pgmap", {})
total = pg.get("num_pgs", 0)
clean = sum(x["count"] for x in pg.get("pgs_by_state", []) if x["state_name"] == "active+clean")
ok = s["health"]["status"] == "HEALTH_OK" and total > 0 and clean == total
sys.exit(0 if ok else 1)
EOF
}

write_conf() {
  local fsid=$1
  cat >"$CONF" <<EOF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$MON_PORT]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
public network = 127.0.0.0/8
cluster network = 127.0.0.0/8
ms bind msgr1 = false
ms bind ipv6 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
keyring = $DIR/keyring
run dir = $DIR/run
log file = $DIR/log/\$name.log
crash dir = $DIR/crash
mon cluster log file = $DIR/log/cluster.log
pid file = \$run_dir/\$name.pid
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon warn on pool no redundancy = false
mon allow pool delete = true
osd crush chooseleaf type = 0
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon data avail warn = 2
mon data avail crit = 1
mgr stats period = 1
mgr initial modules = iostat

[mon]
mon data = $DIR/mon/\$name

[mgr]
mgr data = $DIR/mgr/\$name

[osd]
osd data = $DIR/osd/\$name
osd objectstore = bluestore
bluestore block create = true
bluestore block size = 10G
bluestore fsck on mkfs = false
bluestore fsck on mount = false
osd memory target = 1073741824
osd op num shards = 2

[client]
admin socket = \$run_dir/\$cluster-\$name.\$pid.\$cctid.asok

[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:$RGW_PORT$(https_frontend)
rgw data = $DIR/rgw
EOF
}

# The beast options of the HTTPS endpoint (none without CEPH_RGW_HTTPS=1).
https_frontend() {
  [ "$HTTPS" = 1 ] || return 0
  printf ' ssl_endpoint=127.0.0.1:%s ssl_certificate=%s ssl_private_key=%s' \
    "$RGW_HTTPS_PORT" "$DIR/tls/rgw.crt" "$DIR/tls/rgw.key"
}

# A CA of this cluster (DIR/tls/ca.pem) and radosgw's certificate for
# 127.0.0.1 and localhost, signed by it (valid 10 years; keys mode 0600).
make_tls() {
  local t=$DIR/tls
  mkdir -p "$t"
  (
    umask 077
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=rexray-rs test CA $(basename "$DIR")" \
      -keyout "$t/ca.key" -out "$t/ca.pem" 2>>"$DIR/log/setup.log"
    openssl req -new -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
      -keyout "$t/rgw.key" -out "$t/rgw.csr" 2>>"$DIR/log/setup.log"
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' >"$t/rgw.ext"
    openssl x509 -req -in "$t/rgw.csr" -CA "$t/ca.pem" -CAkey "$t/ca.key" -CAcreateserial \
      -days 3650 -extfile "$t/rgw.ext" -out "$t/rgw.crt" 2>>"$DIR/log/setup.log"
  ) || die "making the TLS certificates failed (see $DIR/log/setup.log)"
  chmod 644 "$t/ca.pem" "$t/rgw.crt"
  rm -f "$t/rgw.csr" "$t/rgw.ext" "$t/ca.srl"
}

start() {
  install_packages
  if [ -f "$CONF" ]; then
    for f in "$DIR"/run/*.pid; do
      [ -f "$f" ] || continue
      p=$(cat "$f" 2>/dev/null || true)
      if [ -n "$p" ] && alive "$p" && ours "$p"; then
        die "a cluster already runs under $DIR (pid $p, $(basename "$f" .pid)); stop it first: $0 stop $DIR"
      fi
    done
  fi
  if [ -f "$CONF" ] && [ -f "$DIR/keyring" ] && [ -d "$DIR/mon/mon.a/store.db" ] && [ -f "$DIR/osd/osd.0/whoami" ]; then
    restart
    return
  fi
  port_free "$MON_PORT" || die "port $MON_PORT (monitor) is taken; set CEPH_MON_PORT"
  if [ "${CEPH_RGW:-0}" = 1 ]; then
    port_free "$RGW_PORT" || die "port $RGW_PORT (radosgw) is taken; set CEPH_RGW_PORT"
    if [ "$HTTPS" = 1 ]; then
      port_free "$RGW_HTTPS_PORT" || die "port $RGW_HTTPS_PORT (radosgw https) is taken; set CEPH_RGW_HTTPS_PORT"
    fi
  fi
  # A new cluster: what a half-made one left is removed.
  rm -rf "$DIR/mon" "$DIR/mgr" "$DIR/osd" "$DIR/run" "$DIR/log" "$DIR/crash" "$DIR/rgw" "$DIR/tls" \
    "$DIR/keyring" "$DIR/monmap" "$DIR/s3.env" "$CONF"
  mkdir -p "$DIR/mon/mon.a" "$DIR/mgr/mgr.x" "$DIR/osd/osd.0" "$DIR/run" "$DIR/log" "$DIR/crash" "$DIR/rgw"
  chmod 700 "$DIR"
  deadline=$(($(date +%s) + TIMEOUT))
  local fsid
  fsid=$(uuidgen)
  write_conf "$fsid"
  if [ "${CEPH_RGW:-0}" = 1 ] && [ "$HTTPS" = 1 ]; then
    say "TLS certificates for radosgw (a CA of this cluster)"
    make_tls
  fi

  say "keys (cephx)"
  local kr=$DIR/keyring
  ceph-authtool --create-keyring "$kr" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  ceph-authtool "$kr" --gen-key -n client.admin \
    --cap mon 'allow *' --cap osd 'allow *' --cap mds 'allow *' --cap mgr 'allow *' >/dev/null
  ceph-authtool "$kr" --gen-key -n mgr.x \
    --cap mon 'allow profile mgr' --cap osd 'allow *' --cap mds 'allow *' >/dev/null
  ceph-authtool "$kr" --gen-key -n osd.0 \
    --cap mon 'allow profile osd' --cap mgr 'allow profile osd' --cap osd 'allow *' >/dev/null
  ceph-authtool "$kr" --gen-key -n client.rgw.a \
    --cap mon 'allow rw' --cap osd 'allow rwx' --cap mgr 'allow rw' >/dev/null
  chmod 600 "$kr"

  say "monitor on 127.0.0.1:$MON_PORT"
  monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$MON_PORT]" "$DIR/monmap" >/dev/null
  ceph-mon -c "$CONF" --mkfs -i a --monmap "$DIR/monmap" --keyring "$kr" 2>>"$DIR/log/setup.log" \
    || die "ceph-mon --mkfs failed (see $DIR/log)"
  ceph-mon -c "$CONF" -i a 2>>"$DIR/log/setup.log" || die "ceph-mon did not start (see $DIR/log)"
  until_ok "the monitor answering" ceph_ mon stat

  say "OSD (bluestore on a sparse file)"
  local uuid
  uuid=$(uuidgen)
  ceph_ osd new "$uuid" >/dev/null
  ceph-osd -c "$CONF" -i 0 --mkfs --osd-uuid "$uuid" >>"$DIR/log/setup.log" 2>&1 \
    || die "ceph-osd --mkfs failed (see $DIR/log)"
  ceph-osd -c "$CONF" -i 0 2>>"$DIR/log/setup.log" || die "ceph-osd did not start (see $DIR/log)"

  if [ "${CEPH_MGR:-1}" != 0 ]; then
    say "manager"
    ceph-mgr -c "$CONF" -i x 2>>"$DIR/log/setup.log" || die "ceph-mgr did not start (see $DIR/log)"
  fi

  until_ok "the OSD up" sh -c "timeout 30 ceph -c '$CONF' osd stat --format json | grep -q '\"num_up_osds\":1'"
  say "rbd pool"
  ceph_ osd pool create rbd 8 8 >/dev/null 2>&1
  ceph_ osd pool application enable rbd rbd >/dev/null 2>&1 || true
  timeout "$TIMEOUT" rbd -c "$CONF" pool init rbd || die "rbd pool init failed"

  if [ "${CEPH_RGW:-0}" = 1 ]; then
    say "radosgw on 127.0.0.1:$RGW_PORT"
    radosgw -c "$CONF" -n client.rgw.a 2>>"$DIR/log/setup.log" || die "radosgw did not start (see $DIR/log)"
    until_ok "radosgw answering" curl -fsS -o /dev/null "http://127.0.0.1:$RGW_PORT/"
    if [ "$HTTPS" = 1 ]; then
      until_ok "radosgw answering https" curl -fsS -o /dev/null --cacert "$DIR/tls/ca.pem" "https://127.0.0.1:$RGW_HTTPS_PORT/"
    fi
    local ak sk
    # 20 and 40 random hex digits (a filter of random bytes through tr
    # kept too few characters to rely on).
    ak=$(od -An -tx1 -N10 /dev/urandom | tr -d ' \n' | tr 'a-f' 'A-F')
    sk=$(od -An -tx1 -N20 /dev/urandom | tr -d ' \n')
    [ ${#ak} -eq 20 ] && [ ${#sk} -eq 40 ] || die "could not read random keys from /dev/urandom"
    timeout 60 radosgw-admin -c "$CONF" user create --uid=rexray --display-name=rexray \
      --access-key="$ak" --secret-key="$sk" >/dev/null 2>>"$DIR/log/setup.log" \
      || die "radosgw-admin user create failed (see $DIR/log)"
    (umask 077 && cat >"$DIR/s3.env" <<EOF
S3_ENDPOINT=http://127.0.0.1:$RGW_PORT
AWS_ACCESS_KEY_ID=$ak
AWS_SECRET_ACCESS_KEY=$sk
EOF
    )
    if [ "$HTTPS" = 1 ]; then
      printf 'S3_HTTPS_ENDPOINT=https://127.0.0.1:%s\nS3_CA_FILE=%s\n' "$RGW_HTTPS_PORT" "$DIR/tls/ca.pem" >>"$DIR/s3.env"
    fi
  fi

  say "waiting for HEALTH_OK (at most ${TIMEOUT}s)"
  if [ "${CEPH_MGR:-1}" != 0 ]; then
    until_ok "HEALTH_OK with every PG active+clean" healthy
  else
    until_ok "HEALTH_OK" sh -c "timeout 30 ceph -c '$CONF' health | grep -q HEALTH_OK"
  fi
  say "ready after $(($(date +%s) - deadline + TIMEOUT))s"
  echo "$CONF"
}

# Start the daemons of the cluster already in DIR again (its data kept).
restart() {
  deadline=$(($(date +%s) + TIMEOUT))
  say "restarting the cluster in $DIR"
  ceph-mon -c "$CONF" -i a 2>>"$DIR/log/setup.log" || die "ceph-mon did not start (see $DIR/log)"
  until_ok "the monitor answering" ceph_ mon stat
  ceph-osd -c "$CONF" -i 0 2>>"$DIR/log/setup.log" || die "ceph-osd did not start (see $DIR/log)"
  if [ "${CEPH_MGR:-1}" != 0 ]; then
    ceph-mgr -c "$CONF" -i x 2>>"$DIR/log/setup.log" || die "ceph-mgr did not start (see $DIR/log)"
  fi
  if [ -f "$DIR/s3.env" ]; then
    radosgw -c "$CONF" -n client.rgw.a 2>>"$DIR/log/setup.log" || die "radosgw did not start (see $DIR/log)"
  fi
  until_ok "the OSD up" sh -c "timeout 30 ceph -c '$CONF' osd stat --format json | grep -q '\"num_up_osds\":1'"
  if [ "${CEPH_MGR:-1}" != 0 ]; then
    until_ok "HEALTH_OK with every PG active+clean" healthy
  else
    until_ok "HEALTH_OK" sh -c "timeout 30 ceph -c '$CONF' health | grep -q HEALTH_OK"
  fi
  say "ready after $(($(date +%s) - deadline + TIMEOUT))s"
  echo "$CONF"
}

stop() {
  [ -d "$DIR" ] || return 0
  local sig=${CEPH_STOP_SIGNAL:-TERM}
  # What clients left under DIR: FUSE mounts, then loop devices.
  if command -v findmnt >/dev/null; then
    findmnt -rn -o TARGET | awk -v d="$DIR/" 'index($0, d) == 1' | sort -r | while read -r m; do
      umount "$m" 2>/dev/null || fusermount -u "$m" 2>/dev/null || umount -l "$m" || true
    done
  fi
  losetup -l -n -O NAME,BACK-FILE 2>/dev/null | awk -v d="$DIR/" 'index($2, d) == 1 {print $1}' | while read -r l; do
    losetup -d "$l" || true
  done
  # Daemons: everything but the monitor first (an OSD whose monitor is
  # gone waits out its shutdown timeout), then the monitor.
  local pids=() mon=() f p
  for f in "$DIR"/run/*.pid; do
    [ -f "$f" ] || continue
    p=$(cat "$f" 2>/dev/null || true)
    [[ "$p" =~ ^[0-9]+$ ]] || continue
    alive "$p" && ours "$p" || continue
    case $(basename "$f") in
      mon.*) mon+=("$p") ;;
      *) pids+=("$p") ;;
    esac
  done
  stop_pids "$sig" "${pids[@]}"
  stop_pids "$sig" "${mon[@]}"
  say "stopped"
}

# Signal the PIDs, wait at most 30 s for them to be gone, then KILL.
stop_pids() {
  local sig=$1 p t
  shift
  [ $# -gt 0 ] || return 0
  for p in "$@"; do kill "-$sig" "$p" 2>/dev/null || true; done
  for t in $(seq 300); do
    local left=0
    for p in "$@"; do alive "$p" && left=1; done
    [ $left = 0 ] && return 0
    [ "$t" = 200 ] && for p in "$@"; do alive "$p" && kill -KILL "$p" 2>/dev/null; done
    sleep 0.1
  done
  for p in "$@"; do alive "$p" && say "pid $p did not exit"; done
  return 0
}

case $cmd in
  start) start ;;
  stop) stop ;;
  *) usage ;;
esac
