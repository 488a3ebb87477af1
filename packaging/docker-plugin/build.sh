#!/usr/bin/env bash
# Builds the rexray Docker managed plugin: a bundle directory holding
# config.json and a rootfs made of the rexray binary, the tools it execs
# (mkfs.ext4, mkfs.xfs, blkid, resize2fs, xfs_growfs) and their shared
# libraries, copied from this host with their ldd closure (no image pull,
# no network), then `docker plugin create NAME BUNDLE`.
#
#   packaging/docker-plugin/build.sh [NAME[:TAG]]     default rexray-rs:<version>
#
# Environment: REXRAY_BIN (default target/release/rexray), BUNDLE (default
# target/docker-plugin), CREATE=0 to build the bundle only, DOCKER_HOST as
# for the docker CLI.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
top="$(cd "$here/../.." && pwd)"
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$top/Cargo.toml" | head -n 1)"
name="${1:-rexray-rs:$version}"
bin="${REXRAY_BIN:-$top/target/release/rexray}"
bundle="${BUNDLE:-$top/target/docker-plugin}"

die() { echo "build.sh: $*" >&2; exit 1; }
[ -x "$bin" ] || die "$bin not found: run \`cargo build --release --bins\` first (or set REXRAY_BIN)"
tools=(mkfs.ext4:e2fsprogs resize2fs:e2fsprogs blkid:util-linux mkfs.xfs:xfsprogs xfs_growfs:xfsprogs)
for t in "${tools[@]}"; do
  command -v "${t%%:*}" >/dev/null || die "${t%%:*} not found: apt-get install ${t##*:}"
done
command -v ldd >/dev/null || die "ldd not found: apt-get install libc-bin"

rm -rf "$bundle"
root="$bundle/rootfs"
mkdir -p "$root"/{usr/bin,usr/sbin,etc/rexray,dev,proc,sys,run/docker/plugins,tmp} \
  "$root"/var/{lib/rexray,lib/rexray-volumes,log/rexray,run/rexray}
chmod 1777 "$root/tmp"
install -m 0755 "$bin" "$root/usr/bin/rexray"
for t in "${tools[@]}"; do
  # A copy under the name it is called by: mke2fs picks ext4 from it.
  install -m 0755 "$(readlink -f "$(command -v "${t%%:*}")")" "$root/usr/sbin/${t%%:*}"
done
[ -f /etc/mke2fs.conf ] && install -m 0644 /etc/mke2fs.conf "$root/etc/mke2fs.conf"
# The shared libraries, at the paths the loader was linked with.
for f in "$root/usr/bin/rexray" "$root"/usr/sbin/*; do
  ldd "$f" | grep -o '/[^ ]*' || true
done | sort -u | while read -r lib; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
install -m 0644 "$here/config.json" "$bundle/config.json"
"$root/usr/bin/rexray" version >/dev/null 2>&1 || die "the rootfs binary does not run on this host"

if [ "${CREATE:-1}" != 0 ]; then
  command -v docker >/dev/null || die "docker CLI not found (CREATE=0 builds the bundle only)"
  docker plugin create "$name" "$bundle" >&2
fi
echo "$name"
