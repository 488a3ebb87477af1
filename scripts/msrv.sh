#!/usr/bin/env bash
# Checks, from the locked manifests, that no locked dependency needs a newer Rust than the
# `rust-version` Cargo.toml declares: the highest `rust-version` among the
# packages a build compiles (normal and build dependencies, every target
# platform) must not exceed ours. The tests' own dependencies
# (dev-dependencies) are reported, not checked: building needs none of them.
#
# Only the declarations are compared: no older toolchain is run (none can
# be installed where only package registries are reachable). clippy's
# `incompatible_msrv` lint checks our own code against `rust-version`.
#
# Usage: scripts/msrv.sh   (needs cargo and jq; exit 1 when too old)
set -euo pipefail
cd "$(dirname "$0")/.."

# The manifests of every locked package, for every platform (a fresh
# machine has only those its own builds fetched).
cargo fetch --locked --quiet
meta="$(cargo metadata --format-version 1 --locked --offline)"

jq -r '
  def ver: split(".") | map(tonumber) | (. + [0, 0, 0])[0:3];
  (.resolve.root) as $root
  | (.resolve.nodes | map({key: .id, value: .deps}) | from_entries) as $deps
  | (.packages | map({key: .id, value: .}) | from_entries) as $pkgs
  # What a build compiles: the root and, transitively, normal and build
  # dependencies (a dependency'"'"'s dev-dependencies are never resolved).
  | def built($id):
      [$deps[$id][] | select(any(.dep_kinds[]; .kind == null or .kind == "build")) | .pkg];
    ({seen: {($root): true}, todo: [$root]}
     | until(.todo == [];
         .todo[0] as $t
         | .todo |= .[1:]
         | reduce built($t)[] as $d (.;
             if .seen[$d] then . else .seen[$d] = true | .todo += [$d] end))
     | .seen | keys) as $build
  | ($pkgs[$root].rust_version // "") as $ours
  | def needs($ids):
      [$ids[] | select(. != $root) | $pkgs[.] | select(.rust_version != null)
       | {name, version, rust: .rust_version}]
      | sort_by(.rust | ver) | reverse;
  needs($build) as $b
  | needs($deps | keys) as $all
  | "ours \($ours)",
    "build \($b[0].rust // "none") \($b[0].name // "") \($b[0].version // "")",
    "tests \($all[0].rust // "none") \($all[0].name // "") \($all[0].version // "")",
    (if $ours == "" then empty
     else $b[] | select((.rust | ver) > ($ours | ver)) | "newer \(.rust) \(.name) \(.version)"
     end)
' <<<"$meta" | {
  ours="" newer=()
  while read -r what a b c; do
    case "$what" in
      ours) ours="$a" ;;
      build) build="$a ($b $c)" ;;
      tests) tests="$a ($b $c)" ;;
      newer) newer+=("$b $c needs Rust $a") ;;
    esac
  done
  if [ -z "$ours" ]; then
    echo "msrv: Cargo.toml declares no rust-version" >&2
    exit 1
  fi
  echo "msrv: rust-version = $ours; building needs $build; the tests need $tests" >&2
  if [ ${#newer[@]} -gt 0 ]; then
    for n in "${newer[@]}"; do
      echo "msrv: $n, newer than rust-version $ours" >&2
    done
    echo "msrv: raise rust-version in Cargo.toml, or lock older versions (cargo update -p NAME --precise VERSION)" >&2
    exit 1
  fi
}
