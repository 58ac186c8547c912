#!/usr/bin/env bash
# The main job: install what is missing, build, and bring up a local cluster.
#   scripts/up.sh [WORKSPACE]
# WORKSPACE defaults to ./mini under the current directory (git-ignored when that is this
# checkout). The binaries go to $CARGO_TARGET_DIR (default: target/ in this checkout); the
# constellation CLI finds constellation-node next to itself.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
ws="${1:-$PWD/mini}"
"$root/scripts/install-deps.sh"
cargo build --manifest-path "$root/Cargo.toml" -p cli -p node --bins
target="${CARGO_TARGET_DIR:-$root/target}"
case "$target" in /*) ;; *) target="$root/$target" ;; esac
mkdir -p "$ws"
echo "constellation: $target/debug/constellation (add $target/debug to PATH to run it directly)" >&2
exec "$target/debug/constellation" -C "$ws" mini up
