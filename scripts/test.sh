#!/usr/bin/env bash
# Install what is missing and run every test of the workspace.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/install-deps.sh"
cd "$root"
# Binaries first: end-to-end tests drive `constellation` and `constellation-node`.
cargo build --workspace --bins
cargo test --workspace --no-fail-fast
