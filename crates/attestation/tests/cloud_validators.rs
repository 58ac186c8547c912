//! The cloud variants' validators on Go-format documents. No Go-format document with real
//! hardware evidence exists here, so the documents are made in the test: the quote by a fixed
//! test-only RSA AK (`tests/data/test-rsa2048-ak.pk8`), the SEV-SNP report and its VCEK/VLEK
//! chain by [`attestation::insecure_snp::InsecureSnpSigner`] (an own ARK the policy trusts).
//! The real-evidence checks live in `snp_vector.rs`; the Trusted-Launch AK chain uses the real
//! GCE AK certificate.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use attestation::cloud::{self, AzureInstanceInfo, Collateral, SnpInstanceInfo, SnpValidation};
use attestation::document::{Attestation, AttestationDocument, Pcrs, Quote, HASH_SHA256};
use attestation::insecure_snp::InsecureSnpSigner;
use attestation::snp::{self, IdKeyPolicy, Product, SigningKey, SnpPolicy, Tcb};
use attestation::tpm2::{
    HashAlg, PublicKey, Scheme, SigScheme, TpmsAttest, TpmtPublic, TpmtSignature, TPM_ALG_RSASSA,
    TPM_ALG_SHA256,
};
use attestation::{
    make_extra_data, make_tpm_nonce, validator_for, Measurement, Measurements, ValidationError,
    ValidatorPolicy, Variant,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self as rsig, RsaKeyPair, RsaPublicKeyComponents};
use sha2::{Digest, Sha256, Sha512};

const KEY: &[u8] = include_bytes!("data/test-rsa2048-ak.pk8");
const NONCE: &[u8] = b"verifier nonce";
const USER_DATA: &[u8] = b"sha256 of the aTLS key";
/// 2025-06-01.
const NOW: i64 = 1_748_736_000;

struct Ak {
    key: RsaKeyPair,
    public: TpmtPublic,
    n: Vec<u8>,
}

fn ak() -> Ak {
    let key = RsaKeyPair::from_pkcs8(KEY).unwrap();
    let n = RsaPublicKeyComponents::<Vec<u8>>::from(key.public()).n;
    let public = TpmtPublic::ak_template_rsa(
        Scheme::WithHash {
            scheme: TPM_ALG_RSASSA,
            hash: TPM_ALG_SHA256,
        },
        n.clone(),
    );
    Ak { key, public, n }
}

fn pcrs() -> BTreeMap<u32, Vec<u8>> {
    (0..24).map(|i| (i, vec![i as u8; 32])).collect()
}

fn measurements() -> Measurements {
    Measurements::new(BTreeMap::from([(4, Measurement::enforced(vec![4u8; 32]))])).unwrap()
}

/// A Go vTPM document with `instance_info`, quoted by the AK for `NONCE`.
fn doc(ak: &Ak, instance_info: &[u8]) -> Vec<u8> {
    let tpm_nonce = make_tpm_nonce(instance_info, &make_extra_data(USER_DATA, NONCE));
    let attest = TpmsAttest {
        firmware_version: 1,
        ..TpmsAttest::sha256_quote(ak.public.name(), tpm_nonce.to_vec(), &pcrs())
    }
    .encode();
    let mut sig = vec![0; ak.key.public().modulus_len()];
    ak.key
        .sign(
            &rsig::RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            &attest,
            &mut sig,
        )
        .unwrap();
    AttestationDocument {
        attestation: Attestation {
            ak_pub: ak.public.encode(),
            quotes: vec![Quote {
                quote: attest,
                raw_sig: TpmtSignature::Rsa {
                    scheme: SigScheme::RsaSsa,
                    hash: HashAlg::Sha256,
                    sig,
                }
                .encode(),
                pcrs: Pcrs {
                    hash: HASH_SHA256,
                    pcrs: pcrs(),
                },
            }],
            ..Default::default()
        },
        instance_info: Some(instance_info.to_vec()),
        user_data: USER_DATA.to_vec(),
    }
    .to_json()
}

fn tcb(product: Product) -> Tcb {
    Tcb {
        fmc: (product == Product::Turin).then_some(1),
        bootloader: 4,
        tee: 0,
        snp: 22,
        microcode: 0xD9,
    }
}

fn policy(
    signer: &InsecureSnpSigner,
    snp_policy: SnpPolicy,
    collateral: Collateral,
) -> ValidatorPolicy {
    ValidatorPolicy {
        snp: SnpValidation {
            policy: snp_policy,
            roots: signer.roots(),
            signing_keys: Vec::new(),
        },
        collateral,
        now: Some(NOW),
        ..Default::default()
    }
}

fn checks(e: &ValidationError) -> Vec<&'static str> {
    e.reasons().iter().map(|r| r.check).collect()
}

fn pad64(b: &[u8]) -> [u8; 64] {
    let mut out = [0u8; 64];
    out[..b.len()].copy_from_slice(b);
    out
}

#[test]
fn aws_sev_snp_binds_the_ak_through_a_vlek_report() {
    let ak = ak();
    let signer =
        InsecureSnpSigner::new(Product::Milan, SigningKey::Vlek, tcb(Product::Milan)).unwrap();
    let digest = Sha512::digest(cloud::rsa_spki_der(&ak.n, 65537));
    let info = |report: Vec<u8>| {
        SnpInstanceInfo {
            report_signer: Some(InsecureSnpSigner::pem(&signer.leaf_der).into_bytes()),
            cert_chain: None,
            attestation_report: Some(report),
            ..Default::default()
        }
        .to_json()
    };
    let good = info(signer.report(&pad64(&digest), 1 << 16, 0).unwrap());
    // The ASVK comes from the config (amdSigningKey), as on AWS.
    let mut p = policy(&signer, SnpPolicy::default(), Collateral::default());
    p.snp.signing_keys = snp::parse_certs(signer.ask_der.as_slice()).unwrap();
    let v = validator_for(Variant::AwsSevSnp, measurements(), p.clone()).unwrap();
    let ok = v.validate(&doc(&ak, &good), NONCE).unwrap();
    assert_eq!(ok.user_data(), USER_DATA);
    assert_eq!(ok.claims()["snp"]["signing_key"], "VLEK");
    assert_eq!(ok.claims()["snp"]["reported_tcb"]["microcode"], 0xD9);

    // A report for another AK.
    let other = info(signer.report(&[7u8; 64], 1 << 16, 0).unwrap());
    assert_eq!(
        checks(&v.validate(&doc(&ak, &other), NONCE).unwrap_err()),
        [snp::check::REPORT_DATA]
    );
    // Debug-enabled guest refused by default.
    let dbg = info(
        signer
            .report(&pad64(&digest), (1 << 16) | (1 << 19), 0)
            .unwrap(),
    );
    assert_eq!(
        checks(&v.validate(&doc(&ak, &dbg), NONCE).unwrap_err()),
        [snp::check::DEBUG]
    );
    // Minimum launch TCB above the report's.
    let mut strict = p.clone();
    strict.snp.policy.minimum_launch_tcb = Tcb {
        microcode: 0xDA,
        ..tcb(Product::Milan)
    };
    let v2 = validator_for(Variant::AwsSevSnp, measurements(), strict).unwrap();
    assert_eq!(
        checks(&v2.validate(&doc(&ak, &good), NONCE).unwrap_err()),
        [snp::check::MINIMUM_LAUNCH_TCB]
    );
    // Without the ASVK, or with AMD's real roots, the chain does not verify.
    let mut no_ask = p.clone();
    no_ask.snp.signing_keys.clear();
    let v3 = validator_for(Variant::AwsSevSnp, measurements(), no_ask).unwrap();
    assert_eq!(
        checks(&v3.validate(&doc(&ak, &good), NONCE).unwrap_err()),
        [snp::check::CERT_CHAIN]
    );
    let mut amd = p.clone();
    amd.snp.roots = snp::AmdRoots::builtin();
    let v4 = validator_for(Variant::AwsSevSnp, measurements(), amd).unwrap();
    assert_eq!(
        checks(&v4.validate(&doc(&ak, &good), NONCE).unwrap_err()),
        [snp::check::CERT_CHAIN]
    );
    // Expired at the validation time (the stand-in chain ends 2049-12-31).
    let mut late = p;
    late.now = Some(2_600_000_000);
    let v5 = validator_for(Variant::AwsSevSnp, measurements(), late).unwrap();
    assert_eq!(
        checks(&v5.validate(&doc(&ak, &good), NONCE).unwrap_err()),
        [snp::check::CERT_VALIDITY]
    );
    // The nonce still binds the quote.
    assert!(matches!(
        v.validate(&doc(&ak, &good), b"other"),
        Err(ValidationError::NonceMismatch)
    ));
}

fn runtime_data(n: &[u8]) -> Vec<u8> {
    format!(
        r#"{{"keys":[{{"kid":"HCLAkPub","key_ops":["sign"],"kty":"RSA","e":"AQAB","n":"{}"}}],"vm-configuration":{{"secure-boot":true}},"user-data":"00"}}"#,
        URL_SAFE_NO_PAD.encode(n)
    )
    .into_bytes()
}

#[test]
fn azure_sev_snp_binds_the_ak_through_the_runtime_data() {
    let ak = ak();
    let signer =
        InsecureSnpSigner::new(Product::Genoa, SigningKey::Vcek, tcb(Product::Genoa)).unwrap();
    let chain = format!(
        "{}{}",
        InsecureSnpSigner::pem(&signer.ask_der),
        InsecureSnpSigner::pem(&signer.ark_der)
    );
    let info = |runtime: Vec<u8>, bound: &[u8]| {
        let rd = pad64(&Sha256::digest(bound));
        SnpInstanceInfo {
            report_signer: Some(InsecureSnpSigner::pem(&signer.leaf_der).into_bytes()),
            cert_chain: Some(chain.clone().into_bytes()),
            attestation_report: Some(signer.report(&rd, 1 << 16, 0).unwrap()),
            azure: Some(AzureInstanceInfo {
                runtime_data: Some(runtime),
                maa_token: String::new(),
            }),
            gcp: None,
        }
        .to_json()
    };
    let rt = runtime_data(&ak.n);
    let good = info(rt.clone(), &rt);
    let go_default = [0x03u8; 48];
    let snp_policy = |p| SnpPolicy {
        minimum_tcb: Some(tcb(Product::Genoa)),
        accepted_id_key_digests: vec![go_default],
        id_key_policy: p,
        ..SnpPolicy::default()
    };
    let v = validator_for(
        Variant::AzureSevSnp,
        measurements(),
        policy(
            &signer,
            snp_policy(IdKeyPolicy::WarnOnly),
            Collateral::default(),
        ),
    )
    .unwrap();
    let ok = v.validate(&doc(&ak, &good), NONCE).unwrap();
    assert_eq!(ok.claims()["snp"]["product"], "Genoa");
    assert_eq!(ok.evidence_warnings()[0].check, snp::check::ID_KEY_DIGEST);
    for p in [IdKeyPolicy::Equal, IdKeyPolicy::MaaFallback] {
        let v = validator_for(
            Variant::AzureSevSnp,
            measurements(),
            policy(&signer, snp_policy(p), Collateral::default()),
        )
        .unwrap();
        assert_eq!(
            checks(&v.validate(&doc(&ak, &good), NONCE).unwrap_err()),
            [snp::check::ID_KEY_DIGEST],
            "{p:?}"
        );
    }
    // Runtime data not bound by the report.
    let mut other_rt = rt.clone();
    other_rt.extend(b" ");
    let unbound = info(other_rt, &rt);
    assert_eq!(
        checks(&v.validate(&doc(&ak, &unbound), NONCE).unwrap_err()),
        [cloud::check::RUNTIME_DATA]
    );
    // Runtime data naming another AK.
    let mut n2 = ak.n.clone();
    n2[10] ^= 1;
    let rt2 = runtime_data(&n2);
    let foreign = info(rt2.clone(), &rt2);
    assert_eq!(
        checks(&v.validate(&doc(&ak, &foreign), NONCE).unwrap_err()),
        [cloud::check::AK_BINDING]
    );
    // VCEK from collateral (THIM) when the document has none.
    let mut no_vcek: SnpInstanceInfo = serde_json::from_slice(&good).unwrap();
    no_vcek.report_signer = None;
    let no_vcek = no_vcek.to_json();
    assert_eq!(
        checks(&v.validate(&doc(&ak, &no_vcek), NONCE).unwrap_err()),
        [snp::check::CERT_CHAIN]
    );
    let coll = Collateral {
        amd_certs: snp::parse_certs(&signer.leaf_der).unwrap(),
        ..Default::default()
    };
    let v = validator_for(
        Variant::AzureSevSnp,
        measurements(),
        policy(&signer, snp_policy(IdKeyPolicy::WarnOnly), coll),
    )
    .unwrap();
    v.validate(&doc(&ak, &no_vcek), NONCE).unwrap();
    // Garbage instance info.
    assert_eq!(
        checks(
            &v.validate(&doc(&ak, b"{\"AttestationReport\":\"AAAA\"}"), NONCE)
                .unwrap_err()
        ),
        [cloud::check::INSTANCE_INFO]
    );
    let short = br#"{"AttestationReport":"AAAA","Azure":{"RuntimeData":"e30=","MAAToken":""}}"#;
    assert_eq!(
        checks(&v.validate(&doc(&ak, short), NONCE).unwrap_err()),
        [snp::check::REPORT_FORMAT]
    );
    assert_eq!(
        checks(&v.validate(&doc(&ak, b"[]"), NONCE).unwrap_err()),
        [cloud::check::INSTANCE_INFO]
    );
}

#[test]
fn gcp_sev_snp_binds_the_nonce_in_the_report_and_takes_the_ak_from_the_api() {
    let ak = ak();
    let signer =
        InsecureSnpSigner::new(Product::Turin, SigningKey::Vcek, tcb(Product::Turin)).unwrap();
    let extra = make_extra_data(USER_DATA, NONCE);
    let info = SnpInstanceInfo {
        report_signer: Some(InsecureSnpSigner::pem(&signer.leaf_der).into_bytes()),
        cert_chain: Some(InsecureSnpSigner::pem(&signer.ask_der).into_bytes()),
        attestation_report: Some(signer.report(&pad64(&extra), 1 << 16, 0).unwrap()),
        azure: None,
        gcp: Some(
            serde_json::json!({"zone": "europe-west3-b", "project_id": "p", "instance_name": "n"}),
        ),
    }
    .to_json();
    let api = Collateral {
        cloud_aks: vec![PublicKey::Rsa {
            modulus: ak.n.clone(),
            exponent: 65537,
        }],
        ..Default::default()
    };
    let v = validator_for(
        Variant::GcpSevSnp,
        measurements(),
        policy(&signer, SnpPolicy::default(), api),
    )
    .unwrap();
    let ok = v.validate(&doc(&ak, &info), NONCE).unwrap();
    assert_eq!(ok.claims()["snp"]["reported_tcb"]["fmc"], 1);
    // Another nonce: the report does not bind it.
    let e = v.validate(&doc(&ak, &info), b"replayed").unwrap_err();
    assert_eq!(checks(&e), [snp::check::REPORT_DATA]);
    // The GCE API does not vouch for this AK.
    let v = validator_for(
        Variant::GcpSevSnp,
        measurements(),
        policy(&signer, SnpPolicy::default(), Collateral::default()),
    )
    .unwrap();
    assert_eq!(
        checks(&v.validate(&doc(&ak, &info), NONCE).unwrap_err()),
        [cloud::check::AK_TRUST]
    );
}

#[test]
fn aws_nitro_tpm_requires_an_image_with_tpm_support() {
    let ak = ak();
    let iid = br#"{"imageId":"ami-0123","region":"eu-central-1","instanceId":"i-1"}"#;
    let mut coll = Collateral::default();
    let p = |coll: Collateral| ValidatorPolicy {
        collateral: coll,
        ..Default::default()
    };
    let v = validator_for(Variant::AwsNitroTpm, measurements(), p(coll.clone())).unwrap();
    assert_eq!(
        checks(&v.validate(&doc(&ak, iid), NONCE).unwrap_err()),
        [cloud::check::AWS_TPM_SUPPORT]
    );
    coll.aws_tpm_images.insert("ami-0123".into());
    let v = validator_for(Variant::AwsNitroTpm, measurements(), p(coll)).unwrap();
    v.validate(&doc(&ak, iid), NONCE).unwrap();
    // Measurements are enforced as everywhere.
    let m = Measurements::new(BTreeMap::from([(4, Measurement::enforced(vec![5u8; 32]))])).unwrap();
    let v = validator_for(
        Variant::AwsNitroTpm,
        m,
        p(Collateral {
            aws_tpm_images: ["ami-0123".to_string()].into(),
            ..Default::default()
        }),
    )
    .unwrap();
    assert_eq!(
        checks(&v.validate(&doc(&ak, iid), NONCE).unwrap_err()),
        ["measurement"]
    );
}

/// The Trusted-Launch trust step on a real AK certificate chain (GCE's, the only real one
/// here): with the right root the AK is trusted and validation proceeds to the quote, which
/// this test cannot sign with that AK; with no or another root the AK is refused.
#[test]
fn azure_trustedlaunch_trusts_the_ak_through_its_certificate() {
    let dir = std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/testvectors/gce-vtpm"
    ));
    if !dir.is_dir() {
        eprintln!("SKIPPED: {} not found", dir.display());
        return;
    }
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    let att = attestation::gce::decode_attestation_pb(&read("gce-cos-85-nonce9009.pb")).unwrap();
    let info = serde_json::to_vec(&cloud::TrustedLaunchInfo {
        ak_cert: att.ak_cert.clone().unwrap(),
        ca: read("tpm_ek_intermediate_2.crt"),
    })
    .unwrap();
    let q = &att.quotes[1];
    let d = AttestationDocument {
        attestation: Attestation {
            ak_pub: att.ak_pub.clone(),
            quotes: vec![q.clone()],
            ..Default::default()
        },
        instance_info: Some(info),
        user_data: USER_DATA.to_vec(),
    }
    .to_json();
    let p = |roots: Vec<Vec<u8>>| ValidatorPolicy {
        collateral: Collateral {
            trusted_launch_roots: roots,
            ..Default::default()
        },
        now: Some(NOW),
        ..Default::default()
    };
    let v = validator_for(
        Variant::AzureTrustedLaunch,
        measurements(),
        p(vec![read("tpm_ek_root_1.cer")]),
    )
    .unwrap();
    // Trusted; the quote is then for another nonce.
    assert!(matches!(
        v.validate(&d, NONCE),
        Err(ValidationError::NonceMismatch)
    ));
    for roots in [vec![], vec![read("tpm_ek_intermediate_2.crt")]] {
        let v = validator_for(Variant::AzureTrustedLaunch, measurements(), p(roots)).unwrap();
        assert_eq!(
            checks(&v.validate(&d, NONCE).unwrap_err()),
            [cloud::check::AK_TRUST]
        );
    }
}

#[test]
fn rsa_spki_matches_the_pkix_encoding() {
    let ak = ak();
    let key = RsaKeyPair::from_pkcs8(KEY).unwrap();
    let spki = cloud::rsa_spki_der(&ak.n, 65537);
    // The SPKI wraps exactly ring's RSAPublicKey DER.
    assert!(spki.ends_with(key.public().as_ref()));
    use x509_parser::prelude::FromDer;
    let (rest, parsed) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&spki).unwrap();
    assert!(rest.is_empty());
    assert_eq!(
        parsed.algorithm.algorithm.to_id_string(),
        "1.2.840.113549.1.1.1"
    );
    assert_eq!(&parsed.subject_public_key.data[..], key.public().as_ref());
}
