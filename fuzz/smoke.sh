#!/usr/bin/env bash
# Fuzz smoke run. With cargo-fuzz and a nightly toolchain: every target runs for
# FUZZ_SECONDS (default 30) from the seed corpus. Without them, or with FUZZ_STABLE_ONLY=1 (CI):
# the seed-corpus test runs the same target bodies over seeds and deterministic mutations on the
# stable toolchain.
#
# fuzz/ is its own cargo workspace (not a member of the main one); its build stays in
# fuzz/target (or CARGO_TARGET_DIR), so repeated runs only rebuild what changed.
set -euo pipefail
cd "$(dirname "$0")"
SECS="${FUZZ_SECONDS:-30}"
TARGETS=(tpms_attest tpmt_public tpmt_signature attestation_document eventlog gce_pb azure_hcl
    tdx_quote tdx_collateral config_yaml state_yaml master_secret image_measurements snp_report snp_certs
    snp_instance_info pcs_answer kube_join)

if [[ "${FUZZ_STABLE_ONLY:-0}" != 1 ]] && cargo fuzz --version >/dev/null 2>&1 &&
    rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    corpus="$(mktemp -d)"
    trap 'rm -rf "$corpus"' EXIT
    FUZZ_SEED_DIR="$corpus" cargo test --no-default-features --test seeds -- --ignored dump_seeds
    for t in "${TARGETS[@]}"; do
        echo "== fuzzing $t for ${SECS}s"
        mkdir -p "$corpus/$t"
        cargo +nightly fuzz run "$t" "$corpus/$t" -- -max_total_time="$SECS" -max_len=65536 -rss_limit_mb=2048
    done
else
    echo "fuzz smoke: stable toolchain, seed corpus and deterministic mutations"
    cargo test --no-default-features --test seeds
fi
