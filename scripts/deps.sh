#!/usr/bin/env bash
# Installs what building and testing rexray-rs needs on Debian/Ubuntu, as
# root. Safe to run again. Used by try.sh and test.sh.
set -euo pipefail

need_pkgs=(
  ca-certificates build-essential pkg-config
  util-linux            # blkid, findmnt, losetup (tests' cross-checks)
  e2fsprogs xfsprogs    # mkfs.ext4, mkfs.xfs, resize2fs, xfs_growfs
  kmod                  # modprobe loop
)
if [ "${REXRAY_TEST_DEPS:-}" = "all" ]; then
  need_pkgs+=(docker.io busybox-static hyperfine curl jq)
  # The Ceph stage (scripts/ceph.sh, tests/integration/ceph.rs): a real
  # single-node cluster, RBD through rbd-fuse and S3 through s3fs (openssl
  # makes the certificates of its https radosgw endpoint).
  need_pkgs+=(ceph-mon ceph-mgr ceph-osd ceph-common rbd-fuse radosgw s3fs fuse3 uuid-runtime iproute2 openssl)
fi

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  missing=()
  for p in "${need_pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "+ apt-get install ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -q >&2
    apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}" >&2
  fi
fi

if ! command -v cargo >/dev/null; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  elif [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "+ apt-get install cargo rustc (no Rust toolchain found)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q cargo rustc >&2
  else
    echo "error: no Rust toolchain (cargo) found; install one (https://rustup.rs) and run again" >&2
    exit 1
  fi
fi

# The Debian package is built with cargo-deb.
if [ "${REXRAY_TEST_DEPS:-}" = "all" ] && ! command -v cargo-deb >/dev/null; then
  echo "+ cargo install cargo-deb" >&2
  cargo install cargo-deb --locked --quiet >&2
fi

# Loop devices need the loop module.
if [ "$(id -u)" -eq 0 ] && [ ! -e /dev/loop-control ]; then
  modprobe loop 2>/dev/null || true
fi
