#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Real swtpm processes: AK persistence, PCR semantics, quotes, process management.

mod common;

use std::sync::Arc;
use std::time::Instant;

use common::TestTpm;
use sha2::{Digest, Sha256};
use tpm::{Swtpm, SwtpmConfig, Tpm, TpmError, AK_PUBLIC_LEN};

/// TPMT_PUBLIC prefix of go-tpm-tools' AKTemplateECC: ECC, SHA-256 name, attributes 0x00050072,
/// empty policy, NULL symmetric, ECDSA-SHA256, NIST P-256, NULL KDF, unique x of 32 bytes.
const AK_PREFIX: &str = "0023000b00050072000000100018000b000300100020";

#[test]
fn ak_is_idempotent_and_survives_swtpm_restart() {
    let t = TestTpm::start();
    let config = t.swtpm.config().clone();
    let first = {
        let tpm = t.open();
        let a = tpm.attestation_key().unwrap();
        let b = tpm.attestation_key().unwrap();
        assert_eq!(a, b);
        a
    };
    assert_eq!(first.len(), AK_PUBLIC_LEN);
    assert_eq!(hex::encode(&first[..22]), AK_PREFIX);
    // A new connection (as a new process would open) loads the persistent key.
    assert_eq!(t.open().attestation_key().unwrap(), first);

    // Restart on the same state directory: same key, PCRs reset (startup-clear = reboot).
    let TestTpm { swtpm, dir } = t;
    {
        let tpm = Tpm::open(&swtpm.tcti()).unwrap();
        tpm.pcr_event(15, b"before restart").unwrap();
    }
    swtpm.shutdown().unwrap();
    let swtpm = Swtpm::spawn_owned(&config).unwrap();
    let tpm = Tpm::open(&swtpm.tcti()).unwrap();
    assert_eq!(tpm.attestation_key().unwrap(), first);
    assert_eq!(tpm.read_pcrs_sha256().unwrap()[&15], [0u8; 32]);
    drop(tpm);
    drop(swtpm);
    drop(dir);
}

#[test]
fn pcr_event_matches_shared_vector() {
    let t = TestTpm::start();
    let tpm = t.open();
    let cluster_id =
        hex::decode("128c164378fe8767f998fbdfe4b4d6463ec5ae1b664ea5999bc27417607ae9b6").unwrap();
    let banks = tpm.banks();
    eprintln!("allocated PCR banks: {banks:?}");
    assert!(banks.contains(&tpm::HashAlg::Sha256));
    let before = tpm.read_pcrs_sha256().unwrap();
    assert_eq!(before[&15], [0u8; 32]);
    tpm.pcr_event(15, &cluster_id).unwrap();
    let after = tpm.read_pcrs_sha256().unwrap();
    assert_eq!(
        hex::encode(after[&15]),
        "23400370357e846478cce7cc0c76cdfe4da077cc57b36dee0f665ede2c8b3f2f"
    );
    // Only PCR 15 changed.
    for i in (0..24).filter(|&i| i != 15) {
        assert_eq!(after[&i], before[&i], "PCR {i}");
    }
    // A second event chains on the first, as the offline predictor computes it.
    tpm.pcr_event(15, b"second").unwrap();
    assert_eq!(
        tpm.read_pcrs_sha256().unwrap()[&15],
        measurements::extend_sha256(&after[&15], b"second")
    );
}

#[test]
fn extend_sha256_extends_the_given_digest() {
    let t = TestTpm::start();
    let tpm = t.open();
    let digest: [u8; 32] = Sha256::digest(b"component").into();
    tpm.extend_sha256(4, &digest).unwrap();
    let expected: [u8; 32] = Sha256::new()
        .chain_update([0u8; 32])
        .chain_update(digest)
        .finalize()
        .into();
    assert_eq!(tpm.read_pcrs_sha256().unwrap()[&4], expected);
    assert!(matches!(
        tpm.extend_sha256(24, &digest),
        Err(TpmError::PcrIndex(24))
    ));
    assert!(matches!(
        tpm.pcr_event(99, b"x"),
        Err(TpmError::PcrIndex(99))
    ));
}

#[test]
fn quote_echoes_qualifying_data_and_matches_pcrs() {
    let t = TestTpm::start();
    let tpm = t.open();
    tpm.pcr_event(9, b"cmdline").unwrap();
    let nonce: [u8; 32] = Sha256::digest(b"nonce").into();
    let q = tpm.quote(&nonce).unwrap();

    // TPMS_ATTEST: magic, type QUOTE, qualifiedSigner (TPM2B_NAME), extraData (TPM2B_DATA).
    let a = &q.attest;
    assert_eq!(&a[0..4], &0xFF54_4347u32.to_be_bytes());
    assert_eq!(&a[4..6], &0x8018u16.to_be_bytes());
    let name_len = u16::from_be_bytes([a[6], a[7]]) as usize;
    let off = 8 + name_len;
    assert_eq!(u16::from_be_bytes([a[off], a[off + 1]]), 32);
    assert_eq!(&a[off + 2..off + 34], &nonce);
    assert_eq!(a.len(), 113 + 32, "single-bank 24-PCR quote size");
    // The signed pcrDigest (last 32 bytes) covers the returned PCR values.
    let mut h = Sha256::new();
    for v in q.pcrs.values() {
        h.update(v);
    }
    assert_eq!(&a[a.len() - 32..], h.finalize().as_slice());
    assert_eq!(q.pcrs.len(), 24);
    assert_eq!(
        q.pcrs[&9],
        measurements::extend_sha256(&[0; 32], b"cmdline").to_vec()
    );
    // TPMT_SIGNATURE: ECDSA, SHA-256, r and s of 32 bytes each.
    assert_eq!(&q.signature[..6], &[0x00, 0x18, 0x00, 0x0b, 0x00, 0x20]);
    assert_eq!(q.signature.len(), 72);

    assert!(matches!(
        tpm.quote(&[0u8; 65]),
        Err(TpmError::QualifyingDataTooLong(65))
    ));
}

#[test]
fn two_instances_in_parallel_do_not_interfere() {
    let a = TestTpm::start();
    let b = TestTpm::start();
    let (ta, tb) = (Arc::new(a.open()), Arc::new(b.open()));
    let ak_a = ta.attestation_key().unwrap();
    let ak_b = tb.attestation_key().unwrap();
    assert_ne!(ak_a, ak_b, "each swtpm has its own seeds and so its own AK");

    let threads: Vec<_> = [(ta.clone(), b"a".as_slice()), (tb.clone(), b"b".as_slice())]
        .into_iter()
        .map(|(tpm, tag)| {
            std::thread::spawn(move || {
                for _ in 0..10 {
                    tpm.pcr_event(11, tag).unwrap();
                    tpm.quote(tag).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let expect =
        |tag: &[u8]| (0..10).fold([0u8; 32], |pcr, _| measurements::extend_sha256(&pcr, tag));
    assert_eq!(ta.read_pcrs_sha256().unwrap()[&11], expect(b"a"));
    assert_eq!(tb.read_pcrs_sha256().unwrap()[&11], expect(b"b"));
}

#[test]
fn detached_swtpm_outlives_its_starter_and_stop_kills_it() {
    let dir = tempfile::tempdir().unwrap();
    let config: SwtpmConfig = common::config(&dir);
    let started = Swtpm::spawn_detached(&config).unwrap();
    let pid = started.pid;
    eprintln!("swtpm detached startup: {:?}", started.startup);
    // Whatever happens below, do not leave the daemon behind.
    struct StopOnDrop(u32);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            let _ = Swtpm::stop(self.0);
        }
    }
    let guard = StopOnDrop(pid);

    // It is not our child: re-parented, in its own session.
    let (parent, session) = parent_and_session(&pid.to_string());
    let (_, own_session) = parent_and_session("self");
    assert_ne!(parent, std::process::id(), "parent");
    assert_ne!(session, own_session, "session");

    let ak = Tpm::open(&started.tcti).unwrap().attestation_key().unwrap();
    assert_eq!(ak.len(), AK_PUBLIC_LEN);

    let t = Instant::now();
    Swtpm::stop(pid).unwrap();
    eprintln!("stop took {:?}", t.elapsed());
    let gone = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.contains(") Z"))
        .unwrap_or(true);
    assert!(gone, "swtpm {pid} still running after stop");
    assert!(Tpm::open(&started.tcti).is_err());
    // Stopping again is fine (terminate is idempotent).
    Swtpm::stop(pid).unwrap();
    drop(guard);

    // The state survives: a new daemon on the same directory has the same AK.
    let again = Swtpm::spawn_detached(&config).unwrap();
    let guard = StopOnDrop(again.pid);
    assert_eq!(
        Tpm::open(&again.tcti).unwrap().attestation_key().unwrap(),
        ak
    );
    drop(guard);
}

/// `ppid` and `sid` from `/proc/<pid>/stat`.
fn parent_and_session(pid: &str) -> (u32, u32) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    (fields[1].parse().unwrap(), fields[3].parse().unwrap())
}

#[test]
fn startup_time_and_errors() {
    let t = TestTpm::start();
    eprintln!("swtpm owned startup: {:?}", t.swtpm.startup_time());
    // The same TPM folder cannot be used twice at once (its socket answers), and the first
    // swtpm keeps working.
    let config = t.swtpm.config().clone();
    let err = Swtpm::spawn_owned(&config).unwrap_err();
    eprintln!("second swtpm on the same dir: {err}");
    assert!(matches!(err, tpm::SwtpmError::InUse(_)), "{err}");
    t.open().attestation_key().unwrap();
    // Nothing listens: connecting fails instead of hanging.
    let nobody = format!("swtpm:path={}/nobody.sock", t.dir.path().display());
    assert!(matches!(Tpm::open(&nobody), Err(TpmError::Connect { .. })));
}

#[test]
fn two_connections_to_one_swtpm_interleave() {
    // The swtpm TCTI connects per command, so several `Tpm` values (as in several processes
    // of one node) share one swtpm; nothing is left in the TPM between calls. Each writer
    // extends between the other's quote and read often: the quote must retry, not starve.
    let t = TestTpm::start();
    let (a, b) = (Arc::new(t.open()), Arc::new(t.open()));
    let t0 = Instant::now();
    let threads: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .map(|tpm| {
            std::thread::spawn(move || {
                let ak = tpm.attestation_key().unwrap();
                for _ in 0..100 {
                    tpm.pcr_event(16, b"x").unwrap();
                    tpm.quote(b"q").unwrap();
                }
                ak
            })
        })
        .collect();
    let aks: Vec<Vec<u8>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    eprintln!(
        "2 x (AK + 100 x (event + quote)) on one swtpm: {:?}",
        t0.elapsed()
    );
    assert_eq!(aks[0], aks[1], "both connections see the one persistent AK");
    let expected = (0..200).fold([0u8; 32], |pcr, _| measurements::extend_sha256(&pcr, b"x"));
    assert_eq!(a.read_pcrs_sha256().unwrap()[&16], expected);
}

/// Each restart without TPM2_Shutdown (a node killed, swtpm stopped) counts against the TPM's
/// dictionary-attack limit once the (DA-protected) attestation key was used: after a few the
/// TPM refuses to quote. `reset_dictionary_attack_lockout`, which the local provider sends
/// after every TPM start, clears that.
#[test]
fn unorderly_restarts_lock_the_tpm_out_until_the_lockout_is_reset() {
    let t = TestTpm::start();
    let config = t.swtpm.config().clone();
    let TestTpm { swtpm, dir } = t;
    let mut swtpm = Some(swtpm);
    let mut locked_after = None;
    for restart in 1..=10 {
        Tpm::open(&swtpm.as_ref().unwrap().tcti())
            .unwrap()
            .quote(b"use the AK")
            .unwrap();
        swtpm.take().unwrap().shutdown().unwrap();
        swtpm = Some(Swtpm::spawn_owned(&config).unwrap());
        let tpm = Tpm::open(&swtpm.as_ref().unwrap().tcti()).unwrap();
        if let Err(e) = tpm.quote(b"after restart") {
            let chain = format!("{:?}", anyhow_chain(&e));
            assert!(chain.contains("lockout"), "{chain}");
            locked_after = Some(restart);
            break;
        }
    }
    let restarts = locked_after.expect("10 unorderly restarts did not lock the TPM out");
    eprintln!("locked out after {restarts} unorderly restarts");
    let s = swtpm.unwrap();
    tpm::swtpm::reset_dictionary_attack_lockout(&config).unwrap();
    Tpm::open(&s.tcti()).unwrap().quote(b"after reset").unwrap();
    drop(s);
    drop(dir);
}

fn anyhow_chain(e: &dyn std::error::Error) -> Vec<String> {
    let mut v = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        v.push(s.to_string());
        cur = s.source();
    }
    v
}
