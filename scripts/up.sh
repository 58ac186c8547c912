#!/usr/bin/env bash
# The main job: install what is missing, build, and bring up a local cluster.
#   scripts/up.sh [WORKSPACE]     (default workspace: ./mini under the current directory)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
ws="${1:-$PWD/mini}"
"$root/scripts/install-deps.sh"
cargo build --manifest-path "$root/Cargo.toml" -p cli -p node --bins
mkdir -p "$ws"
exec "$root/target/debug/constellation" -C "$ws" mini up
