#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Cost of a quote on swtpm, next to the bare transport cost to the same swtpm.
//!
//! `cargo bench -p tpm -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::sync::Arc;

use attestation::{Issuer, Variant};
use criterion::{criterion_group, criterion_main, Criterion};
use tpm::{Swtpm, SwtpmConfig, Tpm, TpmIssuer};

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let swtpm = Swtpm::spawn_owned(&SwtpmConfig::new(dir.path())).expect("start swtpm");
    eprintln!("swtpm startup: {:?}", swtpm.startup_time());
    let tpm = Arc::new(Tpm::open(&swtpm.tcti()).expect("open TPM"));
    tpm.attestation_key().expect("AK");
    let nonce = [0x5a; 32];

    let mut g = c.benchmark_group("swtpm");
    g.bench_function("floor: GetRandom(8) round trip", |b| {
        b.iter(|| black_box(tpm.get_random(8).expect("GetRandom")))
    });
    g.bench_function("read SHA-256 PCRs 0-23 (3 PCR_Read)", |b| {
        b.iter(|| black_box(tpm.read_pcrs_sha256().expect("PCR_Read")))
    });
    g.bench_function("pcr_event (all banks)", |b| {
        b.iter(|| tpm.pcr_event(16, black_box(b"bench")).expect("extend"))
    });
    g.bench_function("quote SHA-256 PCRs 0-23 (+ PCR read, digest check)", |b| {
        b.iter(|| black_box(tpm.quote(&nonce).expect("quote")))
    });
    let issuer = TpmIssuer::new(tpm.clone(), Variant::LocalVtpm).expect("issuer");
    g.bench_function("TpmIssuer::issue (document JSON)", |b| {
        b.iter(|| black_box(issuer.issue(b"user data", &nonce).expect("issue")))
    });
    g.finish();
    drop(issuer);
    drop(tpm);
    drop(swtpm);
}

criterion_group!(benches, bench);
criterion_main!(benches);
