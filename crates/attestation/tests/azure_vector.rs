//! Real evidence: an Azure SEV-SNP CVM's vTPM quote, verified with the attestation key named
//! in the HCL report's runtime data (`HCLAkPub`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use attestation::azure_hcl::HclReport;
use attestation::quote::{verify_quote, QuoteError};
use attestation::tpm2::{HashAlg, PublicKey, SigScheme, TpmtSignature};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

struct Azure {
    quote: Vec<u8>,
    sig: Vec<u8>,
    pcrs: BTreeMap<u32, Vec<u8>>,
    hcl: Vec<u8>,
}

fn load() -> Option<Azure> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/testvectors/azure-snp-vtpm/evidence-v2.json"
    );
    let Ok(bytes) = std::fs::read(path) else {
        // Written to the real stderr (not captured by the test harness): a skip must be visible.
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            format!("SKIPPED (test vectors absent): {path} not found\n").as_bytes(),
        );
        return None;
    };
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let q = &v["tpm_quote"];
    let hex = |v: &serde_json::Value| hex::decode(v.as_str().unwrap()).unwrap();
    Some(Azure {
        quote: hex(&q["message"]),
        sig: hex(&q["signature"]),
        pcrs: q["pcrs"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, p)| (i as u32, hex(p)))
            .collect(),
        hcl: URL_SAFE_NO_PAD
            .decode(v["hcl_report"].as_str().unwrap().trim_end_matches('='))
            .unwrap(),
    })
}

fn rsassa(sig: &[u8]) -> TpmtSignature {
    TpmtSignature::Rsa {
        scheme: SigScheme::RsaSsa,
        hash: HashAlg::Sha256,
        sig: sig.to_vec(),
    }
}

fn ak_and_nonce(a: &Azure) -> (PublicKey, Vec<u8>) {
    let hcl = HclReport::parse(&a.hcl).unwrap();
    hcl.check_runtime_data_binding().unwrap();
    let ak = hcl.ak_public_key().unwrap();
    // trustee's v2 binding: the verifier's nonce is the prefix of the HCL user-data.
    let nonce = hcl.user_data().unwrap().unwrap()[..48].to_vec();
    (ak, nonce)
}

#[test]
fn azure_quote_verifies_with_hcl_ak() {
    let Some(a) = load() else { return };
    assert_eq!(a.hcl.len(), 2600);
    let (ak, nonce) = ak_and_nonce(&a);
    let PublicKey::Rsa { modulus, exponent } = &ak else {
        panic!("AK is not RSA")
    };
    assert_eq!((modulus.len(), *exponent), (256, 65537));
    let q = verify_quote(
        &ak,
        &a.quote,
        &rsassa(&a.sig),
        HashAlg::Sha256,
        &a.pcrs,
        &nonce,
    )
    .unwrap();
    assert_eq!(q.extra_data.len(), 48);
    assert_eq!(q.pcr_select.0[0].pcrs.len(), 24);
}

#[test]
fn azure_flipped_bytes_fail() {
    let Some(a) = load() else { return };
    let (ak, nonce) = ak_and_nonce(&a);
    let check = |quote: &[u8], sig: &[u8], pcrs: &BTreeMap<u32, Vec<u8>>, nonce: &[u8]| {
        verify_quote(&ak, quote, &rsassa(sig), HashAlg::Sha256, pcrs, nonce)
    };
    // quote: header, signer name, nonce, clock, firmware, selection, digest.
    // Every position of the quote, the signature, each PCR value and the nonce.
    for pos in 0..a.quote.len() {
        let mut quote = a.quote.clone();
        quote[pos] ^= 0x01;
        assert!(
            check(&quote, &a.sig, &a.pcrs, &nonce).is_err(),
            "quote byte {pos}"
        );
    }
    for pos in 0..a.sig.len() {
        let mut sig = a.sig.clone();
        sig[pos] ^= 0x01;
        assert!(
            matches!(
                check(&a.quote, &sig, &a.pcrs, &nonce),
                Err(QuoteError::BadSignature { .. })
            ),
            "signature byte {pos}"
        );
    }
    let every_pcr_byte = a
        .pcrs
        .iter()
        .flat_map(|(i, v)| (0..v.len()).map(move |byte| (*i, byte)));
    for (pcr, byte) in every_pcr_byte {
        let mut pcrs = a.pcrs.clone();
        pcrs.get_mut(&pcr).unwrap()[byte] ^= 0x01;
        assert!(
            matches!(
                check(&a.quote, &a.sig, &pcrs, &nonce),
                Err(QuoteError::DigestMismatch { .. })
            ),
            "PCR {pcr}"
        );
    }
    for pos in 0..nonce.len() {
        let mut n = nonce.clone();
        n[pos] ^= 0x01;
        assert!(
            matches!(
                check(&a.quote, &a.sig, &a.pcrs, &n),
                Err(QuoteError::QualifyingDataMismatch { .. })
            ),
            "nonce byte {pos}"
        );
    }
    // A flipped byte in the runtime data breaks the hardware-report binding.
    let hcl = HclReport::parse(&a.hcl).unwrap();
    let rt_off = 0x4D4 + hcl.runtime_data.len() / 2;
    let mut hcl_bytes = a.hcl.clone();
    hcl_bytes[rt_off] ^= 0x01;
    assert!(HclReport::parse(&hcl_bytes)
        .unwrap()
        .check_runtime_data_binding()
        .is_err());
}
