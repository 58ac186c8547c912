//! Runs every fuzz target body over a seed corpus and deterministic mutations of it (every
//! truncation, single-bit flips at a stride), so that stable-toolchain CI exercises the same
//! code as `cargo fuzz`. With `FUZZ_SEED_DIR` set, `dump_seeds` writes the corpus for libFuzzer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use attestation::document::AttestationDocument;
use attestation::insecure_software_tpm::InsecureSoftwareTpm;
use attestation::{InsecureTrustAnyAkValidator, Measurements, Validator, Variant};
use attestation_fuzz::SEED_NONCE;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 18] = [
    ("tpms_attest", attestation_fuzz::tpms_attest),
    ("tpmt_public", attestation_fuzz::tpmt_public),
    ("tpmt_signature", attestation_fuzz::tpmt_signature),
    (
        "attestation_document",
        attestation_fuzz::attestation_document,
    ),
    ("eventlog", attestation_fuzz::eventlog),
    ("gce_pb", attestation_fuzz::gce_pb),
    ("azure_hcl", attestation_fuzz::azure_hcl),
    ("tdx_quote", attestation_fuzz::tdx_quote),
    ("tdx_collateral", attestation_fuzz::tdx_collateral),
    ("config_yaml", attestation_fuzz::config_yaml),
    ("state_yaml", attestation_fuzz::state_yaml),
    ("master_secret", attestation_fuzz::master_secret),
    ("image_measurements", attestation_fuzz::image_measurements),
    ("snp_report", attestation_fuzz::snp_report),
    ("snp_certs", attestation_fuzz::snp_certs),
    ("snp_instance_info", attestation_fuzz::snp_instance_info),
    ("pcs_answer", attestation_fuzz::pcs_answer),
    ("kube_join", attestation_fuzz::kube_join),
];

fn shared(rel: &str) -> Option<Vec<u8>> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/testvectors")
        .join(rel);
    let r = std::fs::read(&p).ok();
    if r.is_none() {
        eprintln!("seed {} not found, skipping it", p.display());
    }
    r
}

fn agile_log(events: &[(u32, &[u8])]) -> Vec<u8> {
    let le = |v: u32| v.to_le_bytes();
    let mut spec = b"Spec ID Event03\0".to_vec();
    spec.extend(le(0));
    spec.extend([0, 2, 0, 2]);
    spec.extend(le(1));
    spec.extend(0x000Bu16.to_le_bytes());
    spec.extend(32u16.to_le_bytes());
    spec.push(0);
    let mut out = Vec::new();
    out.extend(le(0));
    out.extend(le(3));
    out.extend([0u8; 20]);
    out.extend(le(spec.len() as u32));
    out.extend(spec);
    for (pcr, data) in events {
        out.extend(le(*pcr));
        out.extend(le(0xD));
        out.extend(le(1));
        out.extend(0x000Bu16.to_le_bytes());
        out.extend(Sha256::digest(data));
        out.extend(le(data.len() as u32));
        out.extend(*data);
    }
    out
}

fn pb_bytes(field: u64, b: &[u8], out: &mut Vec<u8>) {
    let varint = |mut v: u64, out: &mut Vec<u8>| loop {
        let byte = (v & 0x7F) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    };
    varint(field << 3 | 2, out);
    varint(b.len() as u64, out);
    out.extend_from_slice(b);
}

/// go-tpm-tools protobuf encoding of a document's attestation.
fn to_pb(doc: &AttestationDocument) -> Vec<u8> {
    let a = &doc.attestation;
    let mut out = Vec::new();
    pb_bytes(1, &a.ak_pub, &mut out);
    for q in &a.quotes {
        let mut pcrs = vec![0x08, q.pcrs.hash as u8];
        for (k, v) in &q.pcrs.pcrs {
            let mut e = vec![0x08, *k as u8];
            pb_bytes(2, v, &mut e);
            pb_bytes(2, &e, &mut pcrs);
        }
        let mut qb = Vec::new();
        pb_bytes(1, &q.quote, &mut qb);
        pb_bytes(2, &q.raw_sig, &mut qb);
        pb_bytes(3, &pcrs, &mut qb);
        pb_bytes(2, &qb, &mut out);
    }
    if let Some(log) = &a.event_log {
        pb_bytes(3, log, &mut out);
    }
    out
}

fn hcl(runtime: &[u8]) -> Vec<u8> {
    let mut r = vec![0u8; 0x4D4];
    r[..4].copy_from_slice(b"HCLA");
    r[0x4C8..0x4CC].copy_from_slice(&2u32.to_le_bytes());
    r[0x4D0..0x4D4].copy_from_slice(&(runtime.len() as u32).to_le_bytes());
    let h = Sha256::digest(runtime);
    r[0x70..0x90].copy_from_slice(&h);
    r.extend_from_slice(runtime);
    r
}

/// Seeds per target.
fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut tpm = InsecureSoftwareTpm::generate(Variant::QemuVtpm).unwrap();
    tpm.extend(9, b"cmdline");
    let mut doc = tpm.document(b"user data", SEED_NONCE, None).unwrap();
    doc.attestation.event_log = Some(agile_log(&[(9, b"cmdline")]));
    // The seed must pass the fuzz target's trust-any validator: it reaches every check.
    InsecureTrustAnyAkValidator::new(Measurements::default())
        .validate(&doc.to_json(), SEED_NONCE)
        .unwrap();
    let with_info = tpm
        .document(b"", SEED_NONCE, Some(br#"{"zone":"z"}"#.to_vec()))
        .unwrap();
    let q = &doc.attestation.quotes[0];
    let mut out = vec![
        ("tpms_attest", q.quote.clone()),
        ("tpmt_public", doc.attestation.ak_pub.clone()),
        ("tpmt_signature", q.raw_sig.clone()),
        ("attestation_document", doc.to_json()),
        ("attestation_document", with_info.to_json()),
        ("eventlog", doc.attestation.event_log.clone().unwrap()),
        ("gce_pb", to_pb(&doc)),
        (
            "azure_hcl",
            hcl(br#"{"keys":[{"kid":"HCLAkPub","kty":"RSA","e":"AQAB","n":"wMHC"}],"user-data":"00"}"#),
        ),
    ];
    if let Some(pb) = shared("gce-vtpm/gce-cos-85-nonce9009.pb") {
        let att = attestation::gce::decode_attestation_pb(&pb).unwrap();
        out.push(("tpmt_public", att.ak_pub.clone()));
        for q in &att.quotes {
            out.push(("tpms_attest", q.quote.clone()));
            out.push(("tpmt_signature", q.raw_sig.clone()));
        }
        out.push(("eventlog", att.event_log.clone().unwrap()));
        out.push(("gce_pb", pb));
    }
    out.extend(file_seeds());
    out.extend(tdx_seeds());
    out.extend(snp_seeds());
    if let Some(ev) = shared("azure-snp-vtpm/evidence-v2.json") {
        let v: serde_json::Value = serde_json::from_slice(&ev).unwrap();
        let h = v["hcl_report"].as_str().unwrap().trim_end_matches('=');
        out.push(("azure_hcl", URL_SAFE_NO_PAD.decode(h).unwrap()));
        let m = hex::decode(v["tpm_quote"]["message"].as_str().unwrap()).unwrap();
        out.push(("tpms_attest", m));
    }
    out
}

/// A structurally valid TDX quote v4 with zero signatures and a one-certificate PEM chain
/// (parses, fails verification), and the captured quote and collateral when present.
fn tdx_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let pem = b"-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n\0";
    let mut cert_data = vec![0u8; 384 + 64];
    cert_data.extend(2u16.to_le_bytes());
    cert_data.extend([0xAA, 0xBB]);
    cert_data.extend(5u16.to_le_bytes());
    cert_data.extend((pem.len() as u32).to_le_bytes());
    cert_data.extend(pem);
    let mut sig_data = vec![0u8; 128];
    sig_data.extend(6u16.to_le_bytes());
    sig_data.extend((cert_data.len() as u32).to_le_bytes());
    sig_data.extend(cert_data);
    let mut quote = Vec::new();
    quote.extend(4u16.to_le_bytes());
    quote.extend(2u16.to_le_bytes());
    quote.extend(0x81u32.to_le_bytes());
    quote.extend([0u8; 40 + 584]);
    quote.extend((sig_data.len() as u32).to_le_bytes());
    quote.extend(sig_data);
    quote.extend([0u8; 8]);
    assert!(attestation::tdx::Quote::parse(&quote).is_ok());
    let pair = |quote: &[u8], json: &[u8]| {
        let mut v = (quote.len() as u32).to_le_bytes().to_vec();
        v.extend(quote);
        v.extend(json);
        v
    };
    let empty = br#"{"pck_crl_issuer_chain":"","root_ca_crl":"","pck_crl":"","tcb_info_issuer_chain":"","tcb_info":"{}","tcb_info_signature":"00","qe_identity_issuer_chain":"","qe_identity":"{}","qe_identity_signature":""}"#;
    let mut out = vec![
        ("tdx_quote", quote.clone()),
        ("tdx_collateral", pair(&quote, empty)),
        (
            "pcs_answer",
            b"\x00-----BEGIN%20CERTIFICATE-----%0AMAA%3D%0A-----END%20CERTIFICATE-----%0A\0\
              {\"tcbInfo\":{\"nextUpdate\":\"2025-07-19T10:16:03Z\"},\"signature\":\"00\"}"
                .to_vec(),
        ),
    ];
    if let (Some(q), Some(c)) = (
        shared("tdx-dcap/tdx_quote"),
        shared("tdx-dcap/tdx_quote_collateral.json"),
    ) {
        // The captured pair verifies, so mutations start from an input that passes every check.
        let quote = attestation::tdx::Quote::parse(&q).unwrap();
        let col = attestation::tdx::Collateral::from_json(&c).unwrap();
        let policy = attestation::tdx::TdxPolicy::default();
        attestation::tdx::verify(&quote, &col, attestation_fuzz::TDX_SEED_TIME, &policy).unwrap();
        out.push(("tdx_collateral", pair(&q, &c)));
        out.extend(pcs_seeds(&c));
        out.push(("tdx_quote", q));
    }
    out
}

/// Intel PCS answers (`kind ‖ URL-encoded issuer chain ‖ 0 ‖ body`) made from the captured
/// collateral, as Intel serves them.
fn pcs_seeds(collateral: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    use attestation::tdx::pcs::PcsAnswer;
    let c: serde_json::Value = serde_json::from_slice(collateral).unwrap();
    let f = |k: &str| c[k].as_str().unwrap().to_string();
    let enc = |s: String| -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    let seed = |kind: u8, chain: Option<String>, body: Vec<u8>| {
        let mut v = vec![kind];
        if let Some(c) = chain {
            v.extend(c.into_bytes());
            v.push(0);
        }
        v.extend(body);
        ("pcs_answer", v)
    };
    let out = vec![
        seed(
            0,
            Some(enc(f("tcb_info_issuer_chain"))),
            format!(
                "{{\"tcbInfo\":{},\"signature\":\"{}\"}}",
                f("tcb_info"),
                f("tcb_info_signature")
            )
            .into_bytes(),
        ),
        seed(
            1,
            Some(enc(f("qe_identity_issuer_chain"))),
            format!(
                "{{\"enclaveIdentity\":{},\"signature\":\"{}\"}}",
                f("qe_identity"),
                f("qe_identity_signature")
            )
            .into_bytes(),
        ),
        seed(
            2,
            Some(enc(f("pck_crl_issuer_chain"))),
            hex::decode(f("pck_crl")).unwrap(),
        ),
        seed(3, None, f("root_ca_crl").into_bytes()),
    ];
    // The seeds are accepted answers, so mutations reach every check.
    for (_, s) in &out {
        let kind = [
            PcsAnswer::TcbInfo,
            PcsAnswer::QeIdentity,
            PcsAnswer::PckCrl,
            PcsAnswer::RootCaCrl,
        ][usize::from(s[0])];
        let rest = &s[1..];
        let (chain, body) = match rest.iter().position(|b| *b == 0) {
            Some(i) => (
                Some(std::str::from_utf8(&rest[..i]).unwrap()),
                &rest[i + 1..],
            ),
            None => (None, rest),
        };
        attestation::tdx::pcs::parse_answer(kind, body, chain).unwrap();
    }
    out
}

/// SEV-SNP seeds: stand-in reports and chains (they verify, so mutations reach every check),
/// Go `snp.InstanceInfo` JSON, and the shared real reports and AMD certificates.
fn snp_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use attestation::cloud::{AzureInstanceInfo, SnpInstanceInfo};
    use attestation::insecure_snp::InsecureSnpSigner;
    let s = attestation_fuzz::snp_signer();
    let report = s.report(&[1u8; 64], 1 << 16, 0).unwrap();
    let roots = s.roots();
    let parsed = attestation::snp::parse_report(&report).unwrap();
    attestation::snp::verify_report(&parsed, &s.certs(), &roots, attestation_fuzz::SNP_NOW)
        .unwrap();
    let pem = |d: &[u8]| InsecureSnpSigner::pem(d).into_bytes();
    let info = SnpInstanceInfo {
        report_signer: Some(pem(&s.leaf_der)),
        cert_chain: Some([pem(&s.ask_der), pem(&s.ark_der)].concat()),
        attestation_report: Some(report.clone()),
        azure: Some(AzureInstanceInfo {
            runtime_data: Some(b"{}".to_vec()),
            maa_token: String::new(),
        }),
        gcp: None,
    };
    let mut out = vec![
        ("snp_report", report),
        ("snp_certs", s.leaf_der.clone()),
        ("snp_certs", [pem(&s.ask_der), pem(&s.ark_der)].concat()),
        ("snp_instance_info", info.to_json()),
    ];
    if let Some(b) = shared("snp-azure-milan/attestation.bin") {
        out.push(("snp_report", b[..1184].to_vec()));
    }
    for f in [
        "snp-azure-milan/vcek.cert",
        "snp-azure-milan/certchain.pem",
        "amd-roots/ask_ark_turin_vlek.pem",
    ] {
        if let Some(b) = shared(f) {
            out.push(("snp_certs", b));
        }
    }
    out
}

/// Seeds of the workspace files: generated configs (local, qemu; one cloud), a config in the
/// legacy bare-string measurement form, states before and after init, a master secret, and
/// image-measurement files (this project's layout and the shared Go-signed vector).
fn file_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use config::{Config, Provider};
    let mut out = Vec::new();
    for p in [Provider::Local, Provider::Qemu, Provider::Azure] {
        let raw = Config::generate(p, None, None, Default::default(), None).unwrap();
        out.push(("config_yaml", raw.to_yaml().into_bytes()));
    }
    // The legacy form of a measurement entry: `4: "<hex>"` instead of `{expected, warnOnly}`.
    let qemu = String::from_utf8(out[1].1.clone()).unwrap();
    let lines: Vec<&str> = qemu.lines().collect();
    let mut legacy = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let value = lines[i].trim().strip_prefix("expected: ");
        match (value, lines.get(i + 1).map(|l| l.trim())) {
            (Some(v), Some("warnOnly: false")) => {
                let key = legacy.pop().unwrap();
                legacy.push(format!("{key} {v}"));
                i += 2;
            }
            _ => {
                legacy.push(lines[i].to_string());
                i += 1;
            }
        }
    }
    let legacy = legacy.join("\n") + "\n";
    assert_ne!(legacy, qemu);
    out.push(("config_yaml", legacy.into_bytes()));

    let mut state = config::state::State::new();
    out.push(("state_yaml", state.to_yaml().unwrap().into_bytes()));
    state.infrastructure.uid = "0a1b2c3d".into();
    state.infrastructure.cluster_endpoint = "127.20.0.1".into();
    state.infrastructure.in_cluster_endpoint = "127.20.0.1".into();
    state.infrastructure.init_secret =
        config::state::InitSecret(config::state::HexBytes(vec![7; 32]));
    state.infrastructure.api_server_cert_sans = vec!["127.20.0.1".into(), "localhost".into()];
    state.infrastructure.name = "constell-0a1b2c3d".into();
    state.infrastructure.ip_cidr_node = "127.20.0.0/24".into();
    state.infrastructure.local = Some(config::state::LocalInfrastructure {
        state_dir: "constellation-local".into(),
        base_address: "127.20.0.1".into(),
    });
    state.set_cluster_values(&keys::ClusterId([9; 32]), &[5; 32]);
    out.push(("state_yaml", state.to_yaml().unwrap().into_bytes()));

    let secret = keys::MasterSecret::new(vec![1; 32], vec![2; 32]).unwrap();
    out.push((
        "master_secret",
        config::secret::encode(&secret).as_bytes().to_vec(),
    ));
    out.push((
        "master_secret",
        br#"{"key":"AAAAAAAAAAAAAAAAAAAAAA==","salt":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}"#
            .to_vec(),
    ));

    let pem = |kind: &str| format!("-----BEGIN {kind}-----\\nMIIBszCCAVmgAwIBAgIUQ2hh\\n-----END {kind}-----\\n");
    let cred = format!(
        r#"{{"cert_pem":"{}","key_pem":"{}"}}"#,
        pem("CERTIFICATE"),
        pem("PRIVATE KEY")
    );
    out.push((
        "kube_join",
        format!(
            r#"{{"cluster_name":"mini","node_name":"worker-0","api_servers":["198.18.1.1:6443"],"ca_pem":"{}","kubelet":{cred},"kube_proxy":{cred}}}"#,
            pem("CERTIFICATE")
        )
        .into_bytes(),
    ));
    out.push((
        "kube_join",
        format!(
            r#"{{"api_server":"198.18.1.1:6443","files":[{{"name":"ca.crt","data":[45,45]}},{{"name":"../../etc/passwd","data":[]}}],"etcd_member":null}}"#
        )
        .into_bytes(),
    ));

    let z = "0".repeat(64);
    let image = format!(
        r#"{{"version":"v2.24.0","ref":"-","stream":"stable","list":[{{"csp":"local","attestationVariant":"local-vtpm","measurements":{{"4":{{"expected":"{z}","warnOnly":false}},"15":"{z}"}}}},{{"csp":"QEMU","attestationVariant":"qemu-vtpm","measurements":{{}}}}]}}"#
    );
    out.push(("image_measurements", image.into_bytes()));
    if let Some(m) = shared("measurements-signing/measurements.json") {
        out.push(("image_measurements", m));
    }
    if let Some(sig) = shared("measurements-signing/measurements.json.sig") {
        out.push(("image_measurements", sig));
    }
    out
}

fn target(name: &str) -> Target {
    TARGETS.iter().find(|(n, _)| *n == name).unwrap().1
}

#[test]
fn every_target_has_seeds() {
    let s = seeds();
    for (name, _) in TARGETS {
        assert!(s.iter().any(|(n, _)| *n == name), "{name}");
    }
}

/// The file seeds are valid files (the Go-signed measurements' signature aside), so that
/// mutations start from inputs that reach every check.
#[test]
fn file_seeds_parse() {
    for (name, seed) in file_seeds() {
        let text = String::from_utf8(seed.clone()).unwrap();
        let ok = match name {
            "config_yaml" => config::RawConfig::from_yaml(&text).is_ok(),
            "state_yaml" => config::state::State::from_yaml(&text).is_ok(),
            "master_secret" => config::secret::decode(&seed).is_ok(),
            "kube_join" => serde_json::from_slice::<serde_json::Value>(&seed).is_ok(),
            "image_measurements" => {
                measurements::image::ImageMeasurements::parse(&seed).is_ok()
                    || !text.trim_start().starts_with('{')
            }
            _ => unreachable!("{name}"),
        };
        assert!(ok, "{name} seed does not parse:\n{text}");
    }
}

#[test]
fn seeds_and_mutations_never_panic() {
    let mut runs = 0usize;
    for (name, seed) in seeds() {
        let run = target(name);
        run(&seed);
        // Larger seeds get a coarser stride to bound the run time (≈ 3000 inputs per seed).
        let stride = (seed.len() / 1500).max(1);
        for cut in (0..seed.len()).step_by(stride) {
            run(&seed[..cut]);
            runs += 1;
        }
        for pos in (0..seed.len()).step_by(stride) {
            for bit in [0x01u8, 0x80] {
                let mut m = seed.clone();
                m[pos] ^= bit;
                run(&m);
                runs += 1;
            }
        }
    }
    eprintln!("{runs} mutated inputs");
}

/// `FUZZ_SEED_DIR=fuzz/corpus cargo test --no-default-features -- --ignored dump_seeds`
#[test]
#[ignore]
fn dump_seeds() {
    let Ok(dir) = std::env::var("FUZZ_SEED_DIR") else {
        panic!("set FUZZ_SEED_DIR");
    };
    for (i, (name, seed)) in seeds().into_iter().enumerate() {
        let d = Path::new(&dir).join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("seed-{i}")), seed).unwrap();
    }
}
