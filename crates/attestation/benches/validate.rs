//! Validation cost next to its floor, measured in the same run:
//! - `local-vtpm/validate_ecdsa_doc`: a full [`LocalVtpmValidator::validate`] of a software-TPM
//!   document (JSON, TPMT_PUBLIC, quote, ECDSA P-256, digest, 3 measurements); floor:
//!   `floor/ecdsa_p256_verify` = ring's bare verify of the same quote signature.
//! - `azure/verify_quote_rsa2048`: [`verify_quote`] of the real Azure quote (RSASSA-SHA256,
//!   24 PCRs), and `azure/hcl_ak_and_quote` adding HCL parsing, binding and JWK extraction;
//!   floor: `floor/rsa2048_pkcs1_verify` = ring's bare verify of the same signature.
//!   (Skipped when ../shared/testvectors is absent.)
//! - `tdx/verify`: [`tdx::verify`] of the captured TDX quote with its collateral (parsing the
//!   quote, PEM chains, certificates, CRLs and JSON; 15 ECDSA P-256 signature checks; TCB
//!   status); floor: `floor/tdx_15_ecdsa_p256_verifies` = ring's bare verifies of exactly those
//!   15 signatures (3 PCK chain, 2 PCK CRL issuer chain, 2 + 2 TCB signing chains, 2 CRLs, QE
//!   report, quote, TCB info, QE identity), and `floor/tdx_quote_parse` for the parse alone.
//! - `snp/validate_milan_report`: full SEV-SNP validation of the real Azure Milan report:
//!   parse VCEK, ASK, ARK (DER/PEM) and the report, chain ARK → ASK → VCEK (three RSA-4096
//!   PSS-SHA-384 verifies, the ARK's self-signature included), report signature, TCB and chip
//!   ID binding, Go's guest policy, report_data; floors: `floor/ecdsa_p384_verify` = ring's
//!   bare verify of the report signature, `floor/rsa4096_pss_sha384_verify` = one bare chain
//!   signature verify (the VCEK's).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use attestation::azure_hcl::HclReport;
use attestation::insecure_software_tpm::InsecureSoftwareTpm;
use attestation::quote::verify_quote;
use attestation::tpm2::{HashAlg, PublicKey, SigScheme, TpmtPublic, TpmtSignature};
use attestation::{LocalVtpmValidator, Measurement, Measurements, Validator, Variant};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use criterion::{criterion_group, criterion_main, Criterion};
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use std::hint::black_box;

const NONCE: &[u8] = b"0123456789abcdef0123456789abcdef";

fn ecdsa(c: &mut Criterion) {
    let mut tpm = InsecureSoftwareTpm::generate(Variant::LocalVtpm).unwrap();
    tpm.extend(4, b"kernel");
    let m: BTreeMap<u32, Measurement> = [4u32, 9, 15]
        .into_iter()
        .map(|i| (i, Measurement::enforced(tpm.pcrs()[&i].clone())))
        .collect();
    let v = LocalVtpmValidator::new([tpm.ak_fingerprint()], Measurements::new(m).unwrap());
    let doc = tpm.document(b"user data", NONCE, None).unwrap();
    let json = doc.to_json();
    v.validate(&json, NONCE).unwrap();
    c.bench_function("local-vtpm/validate_ecdsa_doc", |b| {
        b.iter(|| v.validate(black_box(&json), NONCE).unwrap())
    });

    let q = &doc.attestation.quotes[0];
    let TpmtSignature::Ecdsa { r, s, .. } = TpmtSignature::decode(&q.raw_sig).unwrap() else {
        unreachable!()
    };
    let sig = [r, s].concat();
    let PublicKey::Ecc { x, y, .. } = TpmtPublic::decode(tpm.ak_public()).unwrap().public_key()
    else {
        unreachable!()
    };
    let point = [&[4u8][..], &x, &y].concat();
    let key = UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point);
    key.verify(&q.quote, &sig).unwrap();
    c.bench_function("floor/ecdsa_p256_verify", |b| {
        b.iter(|| key.verify(black_box(&q.quote), &sig).unwrap())
    });
}

fn snp_bench(c: &mut Criterion) {
    use attestation::snp::{self, AmdRoots, SnpPolicy};
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/testvectors/snp-azure-milan"
    );
    let (Ok(att), Ok(vcek), Ok(chain)) = (
        std::fs::read(format!("{dir}/attestation.bin")),
        std::fs::read(format!("{dir}/vcek.cert")),
        std::fs::read(format!("{dir}/certchain.pem")),
    ) else {
        eprintln!("skipping SNP benches: {dir} not found");
        return;
    };
    let report = &att[..0x4A0];
    let roots = AmdRoots::builtin();
    let now = 1_735_689_600; // 2025-01-01
    let policy = SnpPolicy::default();
    let full = || {
        let mut certs = snp::parse_certs(&vcek).unwrap();
        certs.extend(snp::parse_certs(&chain).unwrap());
        let r = snp::parse_report(report).unwrap();
        let v = snp::verify_report(&r, &certs, &roots, now).unwrap();
        assert!(policy.check(&v).refusals.is_empty());
        snp::check_report_data(&v.report, &r.report_data).unwrap();
    };
    full();
    c.bench_function("snp/validate_milan_report", |b| b.iter(full));

    let leaf = snp::parse_certs(&vcek).unwrap().remove(0);
    let r = snp::parse_report(report).unwrap();
    let sig = r.signature_be();
    let key = UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, leaf.public_key.clone());
    key.verify(r.signed_bytes(), &sig).unwrap();
    c.bench_function("floor/ecdsa_p384_verify", |b| {
        b.iter(|| key.verify(black_box(r.signed_bytes()), &sig).unwrap())
    });
    let ask = snp::parse_certs(&chain).unwrap().remove(0);
    leaf.verify_signed_by(&ask.public_key).unwrap();
    c.bench_function("floor/rsa4096_pss_sha384_verify", |b| {
        b.iter(|| black_box(&leaf).verify_signed_by(&ask.public_key).unwrap())
    });
}

fn azure(c: &mut Criterion) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/testvectors/azure-snp-vtpm/evidence-v2.json"
    );
    let Ok(bytes) = std::fs::read(path) else {
        eprintln!("skipping Azure benches: {path} not found");
        return;
    };
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let hex = |v: &serde_json::Value| hex::decode(v.as_str().unwrap()).unwrap();
    let quote = hex(&v["tpm_quote"]["message"]);
    let raw = hex(&v["tpm_quote"]["signature"]);
    let pcrs: BTreeMap<u32, Vec<u8>> = v["tpm_quote"]["pcrs"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, p)| (i as u32, hex(p)))
        .collect();
    let hcl = URL_SAFE_NO_PAD
        .decode(v["hcl_report"].as_str().unwrap().trim_end_matches('='))
        .unwrap();
    let report = HclReport::parse(&hcl).unwrap();
    let nonce = report.user_data().unwrap().unwrap()[..48].to_vec();
    let ak = report.ak_public_key().unwrap();
    let sig = TpmtSignature::Rsa {
        scheme: SigScheme::RsaSsa,
        hash: HashAlg::Sha256,
        sig: raw.clone(),
    };
    c.bench_function("azure/verify_quote_rsa2048", |b| {
        b.iter(|| {
            verify_quote(&ak, black_box(&quote), &sig, HashAlg::Sha256, &pcrs, &nonce).unwrap()
        })
    });
    c.bench_function("azure/hcl_ak_and_quote", |b| {
        b.iter(|| {
            let r = HclReport::parse(black_box(&hcl)).unwrap();
            r.check_runtime_data_binding().unwrap();
            let ak = r.ak_public_key().unwrap();
            verify_quote(&ak, &quote, &sig, HashAlg::Sha256, &pcrs, &nonce).unwrap()
        })
    });
    let PublicKey::Rsa { modulus, exponent } = &ak else {
        unreachable!()
    };
    let e = exponent.to_be_bytes();
    let key = RsaPublicKeyComponents {
        n: modulus.as_slice(),
        e: &e[1..],
    };
    c.bench_function("floor/rsa2048_pkcs1_verify", |b| {
        b.iter(|| {
            key.verify(
                &signature::RSA_PKCS1_2048_8192_SHA256,
                black_box(&quote),
                &raw,
            )
            .unwrap()
        })
    });
}

/// `SEQUENCE { tbs, alg, BIT STRING sig }` → (tbs bytes, DER signature).
fn split_signed(der: &[u8]) -> (&[u8], &[u8]) {
    fn tlv(b: &[u8]) -> (&[u8], &[u8], &[u8]) {
        let (len, hdr) = match b[1] {
            l if l < 0x80 => (l as usize, 2),
            0x81 => (b[2] as usize, 3),
            0x82 => ((b[2] as usize) << 8 | b[3] as usize, 4),
            _ => unreachable!(),
        };
        (&b[..hdr + len], &b[hdr..hdr + len], &b[hdr + len..])
    }
    let (_, outer, _) = tlv(der);
    let (tbs, _, rest) = tlv(outer);
    let (_, _, rest) = tlv(rest);
    let (_, sig, _) = tlv(rest);
    (tbs, &sig[1..])
}

fn pem_ders(pem: &str) -> Vec<Vec<u8>> {
    use base64::engine::general_purpose::STANDARD;
    pem.split("-----BEGIN CERTIFICATE-----")
        .skip(1)
        .map(|b| {
            let body: String = b
                .split("-----END CERTIFICATE-----")
                .next()
                .unwrap()
                .split_whitespace()
                .collect();
            STANDARD.decode(body).unwrap()
        })
        .collect()
}

fn spki_point(der: &[u8]) -> Vec<u8> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, c) = X509Certificate::from_der(der).unwrap();
    c.public_key().subject_public_key.data.to_vec()
}

/// (public key, message, signature, DER-encoded signature?)
type SigCheck = (Vec<u8>, Vec<u8>, Vec<u8>, bool);

fn tdx_bench(c: &mut Criterion) {
    use attestation::tdx::{self, Collateral, Quote, TdxPolicy};
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/testvectors/tdx-dcap"
    );
    let (Ok(raw), Ok(json)) = (
        std::fs::read(format!("{dir}/tdx_quote")),
        std::fs::read(format!("{dir}/tdx_quote_collateral.json")),
    ) else {
        eprintln!("SKIPPED: TDX benches: {dir} not found");
        return;
    };
    let col = Collateral::from_json(&json).unwrap();
    let now = tdx::parse_rfc3339("2025-06-20T10:16:03Z").unwrap();
    let policy = TdxPolicy::default();
    tdx::verify(&Quote::parse(&raw).unwrap(), &col, now, &policy).unwrap();
    c.bench_function("tdx/verify", |b| {
        b.iter(|| {
            let q = Quote::parse(black_box(&raw)).unwrap();
            tdx::verify(&q, &col, now, &policy).unwrap()
        })
    });
    c.bench_function("floor/tdx_quote_parse", |b| {
        b.iter(|| Quote::parse(black_box(&raw)).unwrap())
    });

    // The 15 signatures `tdx::verify` checks.
    let q = Quote::parse(&raw).unwrap();
    let mut sigs: Vec<SigCheck> = Vec::new();
    let pem = String::from_utf8_lossy(q.pck_chain_pem).to_string();
    for chain in [
        pem.as_str(),
        &col.pck_crl_issuer_chain,
        &col.tcb_info_issuer_chain,
        &col.qe_identity_issuer_chain,
    ] {
        let ders = pem_ders(chain);
        for (i, d) in ders.iter().enumerate() {
            let issuer = ders.get(i + 1).unwrap_or(d);
            let (tbs, sig) = split_signed(d);
            sigs.push((spki_point(issuer), tbs.to_vec(), sig.to_vec(), true));
        }
    }
    // Every chain's self-signed root is checked, as `verify` does (4 chains, 9 signatures).
    // CRLs: the root CA CRL by the root, the PCK CRL by the PCK CA.
    let pck = pem_ders(&pem);
    for (crl, issuer) in [(&col.root_ca_crl, &pck[2]), (&col.pck_crl, &pck[1])] {
        let (tbs, sig) = split_signed(crl);
        sigs.push((spki_point(issuer), tbs.to_vec(), sig.to_vec(), true));
    }
    sigs.push((
        spki_point(&pck[0]),
        q.qe_report_raw.to_vec(),
        q.qe_report_signature.to_vec(),
        false,
    ));
    let att = [&[4u8][..], &q.attestation_key].concat();
    sigs.push((att, q.signed.to_vec(), q.signature.to_vec(), false));
    let tcb_signer = spki_point(&pem_ders(&col.tcb_info_issuer_chain)[0]);
    sigs.push((
        tcb_signer.clone(),
        col.tcb_info.clone().into_bytes(),
        col.tcb_info_signature.clone(),
        false,
    ));
    sigs.push((
        tcb_signer,
        col.qe_identity.clone().into_bytes(),
        col.qe_identity_signature.clone(),
        false,
    ));
    let verify_all = |sigs: &[SigCheck]| {
        for (key, msg, sig, asn1) in sigs {
            let alg = if *asn1 {
                &signature::ECDSA_P256_SHA256_ASN1
            } else {
                &signature::ECDSA_P256_SHA256_FIXED
            };
            UnparsedPublicKey::new(alg, key).verify(msg, sig).unwrap();
        }
    };
    verify_all(&sigs);
    eprintln!("tdx floor: {} ECDSA P-256 verifies", sigs.len());
    c.bench_function(
        &format!("floor/tdx_{}_ecdsa_p256_verifies", sigs.len()),
        |b| b.iter(|| verify_all(black_box(&sigs))),
    );
}

criterion_group!(benches, ecdsa, azure, snp_bench, tdx_bench);
criterion_main!(benches);
