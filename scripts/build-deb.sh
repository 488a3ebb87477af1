#!/usr/bin/env bash
# Builds the Debian package target/debian/rexray_<version>_<arch>.deb with
# cargo-deb: release binaries, man pages and shell completions generated
# from the CLI definitions (dvdcli and flexrex: from their documentation-only
# clap commands), the default config, the systemd unit.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked
cargo build --release --bins
out=target/packaging
rm -rf "$out"; mkdir -p "$out/man" "$out/completions"
./target/release/rexray man "$out/man"
gzip -9n "$out"/man/*.1
./target/release/rexray completion bash > "$out/completions/rexray.bash"
./target/release/rexray completion zsh > "$out/completions/_rexray"
./target/release/rexray completion fish > "$out/completions/rexray.fish"
# dvdcli's argv is a protocol, but people type it too when debugging a
# Mesos agent; flexrex is only ever run by kubelet, with JSON arguments.
./target/release/rexray completion bash --program dvdcli > "$out/completions/dvdcli.bash"
./target/release/rexray completion zsh --program dvdcli > "$out/completions/_dvdcli"
./target/release/rexray completion fish --program dvdcli > "$out/completions/dvdcli.fish"
cargo deb --no-build --no-strip -o target/debian/ >&2
ls target/debian/*.deb
