#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `constellation verify` on a real local cluster, next to what it is made of, in one run:
//!
//! * the bare TPM quote on the control-plane node's own swtpm (the node's floor),
//! * one `GetAttestation` round trip (quote + document on the node, plain gRPC),
//! * in-process validation of one such document (AK, signature, digest, nonce, PCRs),
//! * the whole `cloudcmd::verify::verify` of every node, concurrently (what the command does
//!   after loading its files).
//!
//! Set-up: 1 control-plane node and `VERIFY_BENCH_WORKERS` (default 2) workers, each with its
//! own swtpm, from release binaries. Medians of `VERIFY_BENCH_RUNS` (default 50) runs.
//!
//! Run: `cargo build --release --bins && cargo bench -p cloudcmd --bench verify`.

#[path = "../tests/common/cluster.rs"]
mod cluster;

use std::time::{Duration, Instant};

use cloudcmd::apply::{apply, ApplyOptions};
use cloudcmd::verify::{verify, VerifyOptions};
use cluster::{random_base, write_local_config, Cleanup};
use provider_local::cloud::{CloudState, PORT_VERIFY};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let workers = env_or("VERIFY_BENCH_WORKERS", 2) as u32;
    let runs = env_or("VERIFY_BENCH_RUNS", 50).max(1) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let t = tempfile::tempdir().unwrap();
    let ws = t.path();
    let _c = Cleanup(ws);
    let cfg = write_local_config(ws, workers, random_base(240, 5));
    rt.block_on(apply(
        &provider_local::workspace_without_kubernetes(ws),
        &cfg,
        &ApplyOptions::default(),
        &mut |_: &str| {},
    ))
    .unwrap();
    let cloud = CloudState::load(&CloudState::path(ws)).unwrap().unwrap();
    let cp = cloud.endpoint().unwrap();
    let nodes = cloud.nodes.len();

    // Floor: a quote on the node's own TPM (the node serves the same TPM meanwhile).
    let cp_dir = &cloud.nodes[0].dir;
    let tpm = tpm::Tpm::open(&tpm::SwtpmConfig::new(cp_dir.join("tpm")).tcti()).unwrap();
    tpm.quote(b"warm-up").unwrap();
    let quote = median(
        (0..runs)
            .map(|i| {
                let t = Instant::now();
                tpm.quote(&(i as u64).to_be_bytes()).unwrap();
                t.elapsed()
            })
            .collect(),
    );

    // One GetAttestation round trip on a persistent channel.
    let (rpc, doc, nonce) = rt.block_on(async {
        let mut client =
            proto::verify::api_client::ApiClient::connect(format!("http://{cp}:{PORT_VERIFY}"))
                .await
                .unwrap();
        let mut times = vec![];
        let mut last = (vec![], vec![]);
        for i in 0..=runs {
            let nonce = [i as u8; 32].to_vec();
            let t = Instant::now();
            let doc = client
                .get_attestation(proto::verify::GetAttestationRequest {
                    nonce: nonce.clone(),
                })
                .await
                .unwrap()
                .into_inner()
                .attestation;
            if i > 0 {
                times.push(t.elapsed());
            }
            last = (doc, nonce);
        }
        (median(times), last.0, last.1)
    });

    // In-process validation of that document.
    let state = config::state::State::load(&ws.join(cloudcmd::STATE_FILE)).unwrap();
    let mut m = cfg.measurements().clone();
    m.set(
        15,
        measurements::Measurement::enforced(state.cluster_id().unwrap().expected_pcr15().to_vec()),
    )
    .unwrap();
    let policy = cloud.validator_policy();
    let v = attestation::validator_for(cfg.variant(), m, policy).unwrap();
    v.validate(&doc, &nonce).unwrap();
    let n = 2000u32;
    let t = Instant::now();
    for _ in 0..n {
        v.validate(std::hint::black_box(&doc), &nonce).unwrap();
    }
    let validate = t.elapsed() / n;

    // The whole verification of every node.
    let opts = VerifyOptions::default();
    let all = median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                let r = rt
                    .block_on(verify(
                        &provider_local::workspace_without_kubernetes(ws),
                        &cfg,
                        &opts,
                    ))
                    .unwrap();
                let d = t.elapsed();
                assert!(r.all_verified(), "{r:?}");
                d
            })
            .collect(),
    );

    println!("verify, 1 control plane + {workers} workers, medians of {runs} runs:");
    println!("  bare TPM quote on the node's swtpm:  {}", ms(quote));
    println!(
        "  GetAttestation round trip:          {}  ({:.2}x the bare quote)",
        ms(rpc),
        rpc.as_secs_f64() / quote.as_secs_f64()
    );
    println!(
        "  validate one document (in-process): {:.1} µs",
        validate.as_secs_f64() * 1e6
    );
    println!(
        "  verify all {nodes} nodes (concurrent):   {}  ({:.2}x one round trip)",
        ms(all),
        all.as_secs_f64() / rpc.as_secs_f64()
    );
}
