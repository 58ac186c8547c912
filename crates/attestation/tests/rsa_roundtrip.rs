//! RSA attestation keys through the full validator, as the `tpm` crate's issuer produces them
//! (go-tpm-tools `AKTemplateRSA`: RSA-2048, exponent field 0, RSASSA-SHA256 fixed), signed here
//! with a fixed test-only RSA key (`tests/data/test-rsa2048-ak.pk8`, never used elsewhere).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use attestation::document::{Attestation, AttestationDocument, Pcrs, Quote, HASH_SHA256};
use attestation::tpm2::{
    HashAlg, Scheme, SigScheme, TpmsAttest, TpmtPublic, TpmtSignature, TPM_ALG_RSASSA,
    TPM_ALG_SHA256,
};
use attestation::{
    make_extra_data, make_tpm_nonce, validator_for, AkFingerprint, Measurement, Measurements,
    ValidationError, ValidatorPolicy, Variant,
};
use ring::rand::SystemRandom;
use ring::signature::{self, RsaKeyPair, RsaPublicKeyComponents};

const KEY: &[u8] = include_bytes!("data/test-rsa2048-ak.pk8");
const NONCE: &[u8] = b"nonce";

fn ak(key: &RsaKeyPair, scheme: Scheme) -> TpmtPublic {
    let c = RsaPublicKeyComponents::<Vec<u8>>::from(key.public());
    assert_eq!(c.e, vec![1, 0, 1]);
    TpmtPublic::ak_template_rsa(scheme, c.n)
}

fn doc(key: &RsaKeyPair, ak: &TpmtPublic, scheme: SigScheme) -> AttestationDocument {
    let pcrs: BTreeMap<u32, Vec<u8>> = (0..24).map(|i| (i, vec![i as u8; 32])).collect();
    let nonce = make_tpm_nonce(&[], &make_extra_data(b"ud", NONCE));
    let attest = TpmsAttest {
        firmware_version: 1,
        ..TpmsAttest::sha256_quote(ak.name(), nonce.to_vec(), &pcrs)
    }
    .encode();
    let mut sig = vec![0; key.public().modulus_len()];
    let enc: &dyn signature::RsaEncoding = match scheme {
        SigScheme::RsaPss => &signature::RSA_PSS_SHA256,
        _ => &signature::RSA_PKCS1_SHA256,
    };
    key.sign(enc, &SystemRandom::new(), &attest, &mut sig)
        .unwrap();
    AttestationDocument {
        attestation: Attestation {
            ak_pub: ak.encode(),
            quotes: vec![Quote {
                quote: attest,
                raw_sig: TpmtSignature::Rsa {
                    scheme,
                    hash: HashAlg::Sha256,
                    sig,
                }
                .encode(),
                pcrs: Pcrs {
                    hash: HASH_SHA256,
                    pcrs,
                },
            }],
            ..Default::default()
        },
        instance_info: None,
        user_data: b"ud".to_vec(),
    }
}

fn measurements() -> Measurements {
    Measurements::new(BTreeMap::from([(4, Measurement::enforced(vec![4u8; 32]))])).unwrap()
}

#[test]
fn rsa_ak_template_documents_validate() {
    let key = RsaKeyPair::from_pkcs8(KEY).unwrap();
    let template = ak(
        &key,
        Scheme::WithHash {
            scheme: TPM_ALG_RSASSA,
            hash: TPM_ALG_SHA256,
        },
    );
    assert_eq!(template.encode().len(), 280);
    let d = doc(&key, &template, SigScheme::RsaSsa);
    let policy = ValidatorPolicy::default().trust_ak_public(&d.attestation.ak_pub);
    let v = validator_for(Variant::LocalVtpm, measurements(), policy).unwrap();
    let ok = v.validate(&d.to_json(), NONCE).unwrap();
    assert_eq!(ok.user_data(), b"ud");
    assert_eq!(
        ok.ak_fingerprint(),
        &AkFingerprint::of_tpmt_public(&d.attestation.ak_pub).0
    );

    // The template fixes RSASSA: a PSS signature cannot have come from this TPM key.
    let pss = doc(&key, &template, SigScheme::RsaPss);
    assert!(matches!(
        v.validate(&pss.to_json(), NONCE),
        Err(ValidationError::BadSignature(_))
    ));
    // A key that leaves the scheme open may sign with PSS (salt = hash length).
    let open = ak(&key, Scheme::Null);
    let pss = doc(&key, &open, SigScheme::RsaPss);
    let policy = ValidatorPolicy::default().trust_ak_public(&pss.attestation.ak_pub);
    let v = validator_for(Variant::LocalVtpm, measurements(), policy).unwrap();
    v.validate(&pss.to_json(), NONCE).unwrap();
    assert!(matches!(
        v.validate(&pss.to_json(), b"other nonce"),
        Err(ValidationError::NonceMismatch)
    ));
}
