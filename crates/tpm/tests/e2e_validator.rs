#![allow(clippy::unwrap_used, clippy::expect_used)]
//! swtpm → TpmIssuer → the pure-Rust validator of crate `attestation`.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use attestation::document::AttestationDocument;
use attestation::{
    validator_for, Issuer, Measurements, ValidationError, Validator, ValidatorPolicy, Variant,
};
use common::TestTpm;
use measurements::Measurement;
use tpm::TpmIssuer;

/// What the launcher measures (PCR_Event data per PCR).
const BOOT: [(u32, &[u8]); 3] = [
    (4, b"launcher"),
    (9, b"local-vtpm"),
    (11, b"image manifest"),
];

/// Boots a "node": measures components the way the launcher does, returns the issuer and the
/// expected PCR values a verifier would compute offline.
fn node(t: &TestTpm) -> (TpmIssuer, Vec<u8>, BTreeMap<u32, Measurement>) {
    let tpm = Arc::new(t.open());
    let zero = [0u8; 32];
    let mut expected = BTreeMap::new();
    for (pcr, data) in BOOT {
        tpm.pcr_event(pcr, data).unwrap();
        let v = measurements::extend_sha256(&zero, data);
        expected.insert(pcr, Measurement::enforced(v.to_vec()));
    }
    expected.insert(15, Measurement::enforced(zero.to_vec()));
    let ak = tpm.attestation_key().unwrap();
    let issuer = TpmIssuer::new(tpm, Variant::LocalVtpm).unwrap();
    (issuer, ak, expected)
}

/// A `local-vtpm` validator that trusts `ak` and expects `expected`.
fn trusting(ak: &[u8], expected: BTreeMap<u32, Measurement>) -> Box<dyn Validator> {
    validator_for(
        Variant::LocalVtpm,
        Measurements::new(expected).unwrap(),
        ValidatorPolicy::default().trust_ak_public(ak),
    )
    .unwrap()
}

#[test]
fn issued_document_validates_with_the_recorded_ak() {
    let t = TestTpm::start();
    let (issuer, ak, expected) = node(&t);
    let validator = trusting(&ak, expected.clone());

    let user_data = b"sha256 of the aTLS key";
    let nonce = [7u8; 32];
    let doc = issuer.issue(user_data, &nonce).unwrap();
    let verified = validator.validate(&doc, &nonce).unwrap();
    assert_eq!(verified.user_data(), user_data);
    assert_eq!(verified.variant(), Variant::LocalVtpm);
    assert_eq!(verified.pcrs().len(), 24);
    assert_eq!(verified.pcrs()[&4], expected[&4].expected);
    assert!(verified.require_user_data(user_data).is_ok());

    // The Go layout: one SHA-256 quote, no instance info, no event log.
    let parsed = AttestationDocument::from_json(&doc).unwrap();
    assert_eq!(parsed.attestation.ak_pub, ak);
    assert_eq!(parsed.attestation.quotes.len(), 1);
    assert_eq!(parsed.attestation.quotes[0].pcrs.hash, 11);
    assert_eq!(parsed.instance_info, None);
    assert_eq!(parsed.attestation.event_log, None);

    // A replayed document (other nonce) is refused.
    let err = validator.validate(&doc, &[8u8; 32]).unwrap_err();
    assert!(matches!(err, ValidationError::NonceMismatch), "{err}");

    // An AK the provider did not record is refused.
    let stranger = validator_for(
        Variant::LocalVtpm,
        Measurements::new(expected).unwrap(),
        ValidatorPolicy::default(),
    )
    .unwrap();
    let err = stranger.validate(&doc, &nonce).unwrap_err();
    assert!(matches!(err, ValidationError::UntrustedKey(_)), "{err}");
}

#[test]
fn changed_pcr_fails_naming_it() {
    let t = TestTpm::start();
    let (issuer, ak, expected) = node(&t);
    let validator = trusting(&ak, expected);
    // A component that was not in the image gets measured: PCR 11 changes.
    issuer.tpm().pcr_event(11, b"tampered component").unwrap();
    let nonce = [1u8; 32];
    let doc = issuer.issue(b"u", &nonce).unwrap();
    match validator.validate(&doc, &nonce) {
        Err(ValidationError::Measurements(m)) => {
            assert_eq!(m.iter().map(|m| m.index).collect::<Vec<_>>(), vec![11]);
        }
        other => panic!("expected a PCR 11 mismatch, got {other:?}"),
    }
    let message = validator.validate(&doc, &nonce).unwrap_err().to_string();
    assert!(message.contains("PCR 11"), "{message}");
}

#[test]
fn qemu_vtpm_variant_issues_the_same_layout() {
    let t = TestTpm::start();
    let tpm = Arc::new(t.open());
    let issuer = TpmIssuer::new(tpm, Variant::QemuVtpm).unwrap();
    assert_eq!(issuer.variant(), Variant::QemuVtpm);
    let validator = validator_for(
        Variant::QemuVtpm,
        Measurements::new(BTreeMap::new()).unwrap(),
        ValidatorPolicy::default(),
    )
    .unwrap();
    let doc = issuer.issue(b"x", b"nonce").unwrap();
    assert_eq!(
        validator.validate(&doc, b"nonce").unwrap().user_data(),
        b"x"
    );
    assert!(TpmIssuer::new(issuer.tpm().clone(), Variant::AwsSevSnp).is_err());
}

/// The size of a real document, as ARCHITECTURE.md states it, and well under rustls's 64 KiB
/// handshake-message limit (the document travels inside the aTLS certificate).
#[test]
fn document_size_on_swtpm() {
    let t = TestTpm::start();
    let (issuer, _, _) = node(&t);
    let doc = issuer.issue(&[0u8; 32], &[1u8; 32]).unwrap();
    let parsed = AttestationDocument::from_json(&doc).unwrap();
    let q = &parsed.attestation.quotes[0];
    eprintln!(
        "local-vtpm document: {} bytes JSON (ak_pub {} B, quote {} B, signature {} B, {} PCRs)",
        doc.len(),
        parsed.attestation.ak_pub.len(),
        q.quote.len(),
        q.raw_sig.len(),
        q.pcrs.pcrs.len()
    );
    assert_eq!(parsed.attestation.ak_pub.len(), tpm::AK_PUBLIC_LEN);
    assert!(doc.len() < 8 * 1024, "{} bytes", doc.len());
}
