#!/usr/bin/env bash
# Install what is missing and run every test of the workspace.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/install-deps.sh"
cd "$root"
if [ ! -d "$root/../shared/testvectors" ]; then
  echo "NOTE: $root/../shared/testvectors is absent: the tests on captured attestation evidence" >&2
  echo "      and signed measurements print SKIPPED and check nothing (see the lines marked SKIPPED)" >&2
fi
# Binaries first: end-to-end tests drive `constellation` and `constellation-node`.
cargo build --workspace --bins
cargo test --workspace --no-fail-fast
