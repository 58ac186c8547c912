#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Join-admission throughput of one JoinService under concurrent attested joins, next to the
//! bare cost of verifying one quote, measured in the same run.
//!
//! Set-up: a real one-node cluster (swtpm, node process, etcd) and `JOIN_BENCH_CLIENTS`
//! (default 4) joiners, each with its own real swtpm measured like a node of this image and
//! vouched for by the provider. Every client joins over and over for `JOIN_BENCH_SECS`
//! (default 5): each join is a new aTLS connection (a fresh TPM quote on the client, full
//! validation on the server), then `IssueJoinTicket` (CSR signing, two KeyService calls over
//! mTLS, one etcd write).
//!
//! Reported: joins per second end to end (client quotes included: they share the 2 cores),
//! the JoinService process's CPU time per join (from /proc, so only the server's work) and
//! etcd's, and in-process: full validation of one such document, and the bare ECDSA P-256
//! verify of its quote signature.
//!
//! Run: `cargo bench -p cloudcmd --bench join` (needs `cargo build --release --bins` first so
//! that the node image is built from release binaries).

#[path = "../tests/common/cluster.rs"]
mod cluster;
#[path = "../tests/common/rogue.rs"]
mod rogue;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use attestation::document::AttestationDocument;
use attestation::tpm2::{PublicKey, TpmtPublic, TpmtSignature};
use attestation::{validator_for, Variant};
use cloudcmd::apply::{apply, ApplyOptions};
use cluster::{random_base, write_local_config, Cleanup};
use provider_local::cloud::CloudState;
use rogue::Rogue;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields after the command: state is index 0, utime 11, stime 12 (stat fields 14, 15).
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    ticks as f64 / 100.0
}

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

fn per_op(n: u32, f: impl Fn()) -> Duration {
    f();
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed() / n
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let clients = env_or("JOIN_BENCH_CLIENTS", 4) as usize;
    let secs = env_or("JOIN_BENCH_SECS", 5);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let t = tempfile::tempdir().unwrap();
    let ws = t.path();
    let _c = Cleanup(ws);

    let cfg = write_local_config(ws, 0, random_base(250, 1));
    rt.block_on(apply(
        &provider_local::workspace_without_kubernetes(ws),
        &cfg,
        &ApplyOptions::default(),
        &mut |_: &str| {},
    ))
    .unwrap();

    let path = CloudState::path(ws);
    let mut cloud = CloudState::load(&path).unwrap().unwrap();
    let cp = cloud.endpoint().unwrap();
    let node_pid = cloud.nodes[0].process.unwrap().pid;
    let etcd_pid = children(node_pid)[0];
    let joiners: Vec<Arc<Rogue>> = (0..clients)
        .map(|i| {
            Arc::new(Rogue::boot(
                &ws.join(format!("joiner-{i}")),
                &cloud.image_dir,
            ))
        })
        .collect();
    for (i, j) in joiners.iter().enumerate() {
        cloud.nodes.push(j.record(ws, &format!("worker-{i}")));
    }
    cloud.save(&path).unwrap();

    // Warm-up: one join each (connections, caches).
    let uuid = |i: usize| format!("00000000-0000-4000-8000-{i:012x}");
    rt.block_on(async {
        for (i, j) in joiners.iter().enumerate() {
            j.join(cp, &uuid(i)).await.unwrap();
        }
    });

    let count = Arc::new(AtomicU64::new(0));
    let (cpu_node0, cpu_etcd0) = (cpu_seconds(node_pid), cpu_seconds(etcd_pid));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    rt.block_on(async {
        let mut tasks = vec![];
        for (i, j) in joiners.iter().enumerate() {
            let j = j.clone();
            let count = count.clone();
            let id = uuid(i);
            tasks.push(tokio::spawn(async move {
                while Instant::now() < deadline {
                    j.join(cp, &id).await.unwrap();
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    let wall = start.elapsed().as_secs_f64();
    let joins = count.load(Ordering::Relaxed) as f64;
    let cpu_node = cpu_seconds(node_pid) - cpu_node0;
    let cpu_etcd = cpu_seconds(etcd_pid) - cpu_etcd0;

    // The same run: validating one such document in-process, and the bare signature check.
    let j = &joiners[0];
    let nonce = [9u8; 32];
    let issuer = tpm::TpmIssuer::new(j.tpm.clone(), Variant::LocalVtpm).unwrap();
    let doc = attestation::Issuer::issue(&issuer, b"user data", &nonce).unwrap();
    let cloud = CloudState::load(&path).unwrap().unwrap();
    let policy = cloud.validator_policy();
    let v = validator_for(Variant::LocalVtpm, cfg.measurements().clone(), policy).unwrap();
    v.validate(&doc, &nonce).unwrap();
    let validate = per_op(2000, || {
        v.validate(std::hint::black_box(&doc), &nonce).unwrap();
    });
    let parsed = AttestationDocument::from_json(&doc).unwrap();
    let q = &parsed.attestation.quotes[0];
    let TpmtSignature::Ecdsa { r, s: sig_s, .. } = TpmtSignature::decode(&q.raw_sig).unwrap()
    else {
        panic!("the swtpm AK signs with ECDSA")
    };
    let sig = [r, sig_s].concat();
    let PublicKey::Ecc { x, y, .. } = TpmtPublic::decode(&parsed.attestation.ak_pub)
        .unwrap()
        .public_key()
    else {
        panic!("ECC AK")
    };
    let point = [&[4u8][..], &x, &y].concat();
    let key =
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, point);
    let bare = per_op(2000, || {
        key.verify(std::hint::black_box(&q.quote), &sig).unwrap();
    });

    let per_join_node = cpu_node / joins;
    let per_join_etcd = cpu_etcd / joins;
    println!("join admission, one JoinService, {clients} concurrent attested joiners, {secs} s:");
    println!(
        "  joins:                          {joins:.0} in {wall:.2} s = {:.1} joins/s (end to end, client quotes on the same 2 cores)",
        joins / wall
    );
    println!(
        "  JoinService process CPU / join: {:.2} ms  -> one core admits ~{:.0} joins/s",
        per_join_node * 1e3,
        1.0 / per_join_node
    );
    println!(
        "  etcd CPU / join:                {:.2} ms",
        per_join_etcd * 1e3
    );
    println!(
        "  validate one document:          {:.1} µs (in-process, full local-vtpm validation)",
        validate.as_secs_f64() * 1e6
    );
    println!(
        "  bare ECDSA P-256 quote verify:  {:.1} µs (ring, same signature)",
        bare.as_secs_f64() * 1e6
    );
    println!(
        "  ratio JoinService CPU per join / bare verify: {:.0}x",
        per_join_node / bare.as_secs_f64()
    );
}
