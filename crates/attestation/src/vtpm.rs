//! Validators for vTPM attestation documents ([`crate::document`]) whose AK trust needs no
//! cloud API: `local-vtpm` (the AK must be one the local provider recorded) and the insecure
//! `qemu-vtpm` (any AK).
//!
//! Validation, in order (Go `vtpm.Validator.Validate`, with the SHA-256 quote verified
//! explicitly rather than "the first quote that verifies", reference attestation.md §2.10):
//! 1. size cap and JSON decoding; `ak_pub` decodes as a restricted signing key;
//! 2. AK trust (variant-specific), before any quote is looked at;
//! 3. `extraData = SHA-256(userData ‖ nonce)`, `tpmNonce = SHA-256(instanceInfo ‖ extraData)`;
//! 4. the one SHA-256-bank quote: signature by the AK, `extraData == tpmNonce`, PCR selection
//!    and digest ([`crate::quote::verify_quote`]);
//! 5. if the document carries an event log, it must replay to the quoted SHA-256 PCRs;
//! 6. the quoted SHA-256 PCRs against the expected measurements (enforced → error, warnOnly →
//!    warning in the result).

use std::collections::BTreeSet;
use std::fmt;

use sha2::{Digest, Sha256};

use crate::document::{self, AttestationDocument};
use crate::eventlog::EventLog;
use crate::quote::{self, QuoteError};
use crate::tpm2::{HashAlg, TpmtPublic, TpmtSignature};
use crate::{
    make_extra_data, make_tpm_nonce, Measurements, ValidationError, Validator, Variant,
    VerifiedAttestation,
};

/// SHA-256 of an attestation key's `TPMT_PUBLIC` bytes: how the local provider records AKs
/// and how [`VerifiedAttestation::ak_fingerprint`] identifies a node's TPM.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AkFingerprint(pub [u8; 32]);

impl AkFingerprint {
    /// Fingerprint of the encoded public area (`ak_pub` in the document).
    pub fn of_tpmt_public(tpmt_public: &[u8]) -> Self {
        Self(Sha256::digest(tpmt_public).into())
    }
    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Result<Self, ValidationError> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut out).map_err(|e| {
            ValidationError::Other(format!("AK fingerprint {s:?} is not 64 hex digits: {e}"))
        })?;
        Ok(Self(out))
    }
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for AkFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for AkFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AkFingerprint({self})")
    }
}

/// `local-vtpm`: accepts a document only if its AK is one the local provider recorded when it
/// created the node's software TPM. Security rests on the provider's record (who can add AKs)
/// and on the host; a software TPM gives no hardware root of trust.
#[derive(Debug, Clone)]
pub struct LocalVtpmValidator {
    trusted_aks: BTreeSet<AkFingerprint>,
    measurements: Measurements,
}

impl LocalVtpmValidator {
    pub fn new(
        trusted_aks: impl IntoIterator<Item = AkFingerprint>,
        measurements: Measurements,
    ) -> Self {
        Self {
            trusted_aks: trusted_aks.into_iter().collect(),
            measurements,
        }
    }
    pub fn trusted_aks(&self) -> &BTreeSet<AkFingerprint> {
        &self.trusted_aks
    }
}

impl Validator for LocalVtpmValidator {
    fn variant(&self) -> Variant {
        Variant::LocalVtpm
    }
    fn validate(&self, doc: &[u8], nonce: &[u8]) -> Result<VerifiedAttestation, ValidationError> {
        validate_vtpm(Variant::LocalVtpm, doc, nonce, &self.measurements, |t| {
            let fp = t.fingerprint;
            if self.trusted_aks.contains(fp) {
                Ok(TrustOutcome::default())
            } else {
                Err(ValidationError::UntrustedKey(format!(
                    "AK {fp} was not recorded by the local provider ({} AKs are trusted)",
                    self.trusted_aks.len()
                )))
            }
        })
    }
}

/// Go's `qemu-vtpm`: trusts whatever AK the document names. The quote then only shows that the
/// document is internally consistent and fresh; anyone who controls the VM or host can forge
/// it. Testing only.
#[cfg(any(test, feature = "insecure-test-variants"))]
#[derive(Debug, Clone)]
pub struct InsecureTrustAnyAkValidator {
    measurements: Measurements,
}

#[cfg(any(test, feature = "insecure-test-variants"))]
impl InsecureTrustAnyAkValidator {
    pub fn new(measurements: Measurements) -> Self {
        Self { measurements }
    }
}

#[cfg(any(test, feature = "insecure-test-variants"))]
impl Validator for InsecureTrustAnyAkValidator {
    fn variant(&self) -> Variant {
        Variant::QemuVtpm
    }
    fn validate(&self, doc: &[u8], nonce: &[u8]) -> Result<VerifiedAttestation, ValidationError> {
        validate_vtpm(Variant::QemuVtpm, doc, nonce, &self.measurements, |_| {
            Ok(TrustOutcome::default())
        })
    }
}

fn quote_error(e: QuoteError) -> ValidationError {
    match e {
        QuoteError::Decode(e) => ValidationError::Malformed(e.to_string()),
        QuoteError::QualifyingDataMismatch { .. } => ValidationError::NonceMismatch,
        QuoteError::DigestMismatch { bank, .. } => {
            ValidationError::PcrDigestMismatch { bank: bank.name() }
        }
        QuoteError::BankMismatch { .. }
        | QuoteError::SelectionMismatch { .. }
        | QuoteError::PcrValueLength { .. } => ValidationError::PcrSelection(e.to_string()),
        QuoteError::UnsupportedSignature { .. }
        | QuoteError::SchemeMismatch { .. }
        | QuoteError::BadKey(_)
        | QuoteError::BadSignature { .. } => ValidationError::BadSignature(e.to_string()),
    }
}

/// What the AK-trust step of [`validate_vtpm`] sees.
pub(crate) struct TrustInput<'a> {
    pub fingerprint: &'a AkFingerprint,
    pub ak: &'a TpmtPublic,
    pub doc: &'a AttestationDocument,
    /// `SHA-256(userData ‖ nonce)`.
    pub extra_data: &'a [u8; 32],
}

/// What the AK-trust step found besides "trusted": warnings and decoded hardware claims.
#[derive(Debug, Clone, Default)]
pub(crate) struct TrustOutcome {
    pub warnings: Vec<crate::Reason>,
    pub claims: serde_json::Value,
}

/// The common vTPM flow; `trust` decides about the AK (given its fingerprint, public area, the
/// document and the extra data), before any quote is looked at.
pub(crate) fn validate_vtpm(
    variant: Variant,
    doc: &[u8],
    nonce: &[u8],
    measurements: &Measurements,
    trust: impl Fn(&TrustInput<'_>) -> Result<TrustOutcome, ValidationError>,
) -> Result<VerifiedAttestation, ValidationError> {
    if doc.len() > document::MAX_DOCUMENT_LEN {
        return Err(ValidationError::Malformed(format!(
            "document has {} bytes, at most {} accepted",
            doc.len(),
            document::MAX_DOCUMENT_LEN
        )));
    }
    let doc = AttestationDocument::from_json(doc)
        .map_err(|e| ValidationError::Malformed(format!("JSON: {e}")))?;
    let att = &doc.attestation;
    let ak = TpmtPublic::decode(&att.ak_pub)
        .map_err(|e| ValidationError::Malformed(format!("ak_pub: {e}")))?;
    let fingerprint = AkFingerprint::of_tpmt_public(&att.ak_pub);
    if !ak.is_restricted_signing_key() {
        return Err(ValidationError::UntrustedKey(format!(
            "AK {fingerprint} is not a restricted signing key (attributes {:#010x})",
            ak.object_attributes
        )));
    }
    let extra_data = make_extra_data(&doc.user_data, nonce);
    let outcome = trust(&TrustInput {
        fingerprint: &fingerprint,
        ak: &ak,
        doc: &doc,
        extra_data: &extra_data,
    })?;

    let tpm_nonce = make_tpm_nonce(
        doc.instance_info.as_deref().unwrap_or_default(),
        &extra_data,
    );

    let mut sha256 = att
        .quotes
        .iter()
        .filter(|q| q.pcrs.hash == document::HASH_SHA256);
    let q = match (sha256.next(), sha256.next()) {
        (Some(q), None) => q,
        (None, _) => {
            return Err(ValidationError::Malformed(format!(
                "no SHA-256 quote among {} quotes",
                att.quotes.len()
            )))
        }
        (Some(_), Some(_)) => {
            return Err(ValidationError::Malformed(
                "more than one SHA-256 quote".into(),
            ))
        }
    };
    let sig = TpmtSignature::decode(&q.raw_sig)
        .map_err(|e| ValidationError::Malformed(format!("raw_sig: {e}")))?;
    quote::check_scheme(&ak, &sig).map_err(quote_error)?;
    quote::verify_quote(
        &ak.public_key(),
        &q.quote,
        &sig,
        HashAlg::Sha256,
        &q.pcrs.pcrs,
        &tpm_nonce,
    )
    .map_err(quote_error)?;

    if let Some(log) = att.event_log.as_deref().filter(|l| !l.is_empty()) {
        EventLog::parse(log)
            .and_then(|log| log.verify(HashAlg::Sha256, &q.pcrs.pcrs))
            .map_err(|e| ValidationError::EventLog(e.to_string()))?;
    }

    let pcrs = q.pcrs.pcrs.clone();
    let cmp = measurements.compare(&pcrs);
    if !cmp.errors.is_empty() {
        return Err(ValidationError::Measurements(cmp.errors));
    }
    Ok(
        VerifiedAttestation::new(variant, doc.user_data, pcrs, cmp.warnings, fingerprint.0)
            .with_evidence(outcome.warnings, outcome.claims),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::document::{Pcrs, Quote};
    use crate::insecure_software_tpm::InsecureSoftwareTpm;
    use crate::tpm2::{PcrSelection, PcrSelectionList, TpmsAttest};
    use crate::{validator_for, ValidatorPolicy};
    use measurements::Measurement;

    const NONCE: &[u8] = b"fresh nonce from the verifier..";
    const USER_DATA: &[u8] = b"sha256 of the aTLS key";

    fn tpm() -> InsecureSoftwareTpm {
        let mut t = InsecureSoftwareTpm::generate(Variant::LocalVtpm).unwrap();
        t.extend(4, b"kernel");
        t.extend(9, b"cmdline");
        t
    }

    /// PCR 4 and 9 enforced with the TPM's values, PCR 0 warnOnly with a wrong value.
    fn measurements(t: &InsecureSoftwareTpm) -> Measurements {
        let mut m = BTreeMap::new();
        m.insert(4, Measurement::enforced(t.pcrs()[&4].clone()));
        m.insert(9, Measurement::enforced(t.pcrs()[&9].clone()));
        m.insert(0, Measurement::warn_only(vec![0x11; 32]));
        Measurements::new(m).unwrap()
    }

    fn local(t: &InsecureSoftwareTpm) -> LocalVtpmValidator {
        LocalVtpmValidator::new([t.ak_fingerprint()], measurements(t))
    }

    fn doc(t: &InsecureSoftwareTpm) -> AttestationDocument {
        t.document(USER_DATA, NONCE, None).unwrap()
    }

    #[test]
    fn round_trip_returns_user_data_pcrs_warnings_and_ak() {
        let t = tpm();
        let v = local(&t);
        let ok = v.validate(&doc(&t).to_json(), NONCE).unwrap();
        assert_eq!(ok.variant(), Variant::LocalVtpm);
        assert_eq!(ok.user_data(), USER_DATA);
        assert_eq!(ok.pcrs(), t.pcrs());
        assert_eq!(ok.ak_fingerprint(), &t.ak_fingerprint().0);
        assert_eq!(ok.warnings().len(), 1);
        assert_eq!(ok.warnings()[0].index, 0);
        ok.require_user_data(USER_DATA).unwrap();
        // Issuer trait path gives the same.
        use crate::Issuer;
        assert!(v
            .validate(&t.issue(USER_DATA, NONCE).unwrap(), NONCE)
            .is_ok());
    }

    #[test]
    fn instance_info_is_bound_into_the_nonce() {
        let t = tpm();
        let v = local(&t);
        let mut d = t
            .document(USER_DATA, NONCE, Some(br#"{"zone":"a"}"#.to_vec()))
            .unwrap();
        assert!(v.validate(&d.to_json(), NONCE).is_ok());
        d.instance_info = Some(br#"{"zone":"b"}"#.to_vec());
        assert!(matches!(
            v.validate(&d.to_json(), NONCE),
            Err(ValidationError::NonceMismatch)
        ));
        d.instance_info = None;
        assert!(matches!(
            v.validate(&d.to_json(), NONCE),
            Err(ValidationError::NonceMismatch)
        ));
    }

    #[test]
    fn replayed_document_is_not_fresh() {
        let t = tpm();
        let old = doc(&t).to_json();
        assert!(matches!(
            local(&t).validate(&old, b"the next nonce"),
            Err(ValidationError::NonceMismatch)
        ));
    }

    #[test]
    fn document_for_other_user_data_is_caught_by_require_user_data() {
        let t = tpm();
        let d = t.document(b"another TLS key", NONCE, None).unwrap();
        let ok = local(&t).validate(&d.to_json(), NONCE).unwrap();
        assert_eq!(ok.user_data(), b"another TLS key");
        let err = ok.require_user_data(USER_DATA).unwrap_err();
        assert!(matches!(err, ValidationError::UserDataMismatch { .. }));
        assert!(err.to_string().contains(&hex::encode(USER_DATA)));
        // Swapping the user data in the JSON breaks the nonce binding instead.
        let mut d = doc(&t);
        d.user_data = b"another TLS key".to_vec();
        assert!(matches!(
            local(&t).validate(&d.to_json(), NONCE),
            Err(ValidationError::NonceMismatch)
        ));
    }

    #[test]
    fn changed_pcr_value_breaks_the_digest() {
        let t = tpm();
        for idx in [0u32, 4, 15, 23] {
            let mut d = doc(&t);
            d.attestation.quotes[0]
                .pcrs
                .pcrs
                .insert(idx, vec![0x42; 32]);
            assert!(
                matches!(
                    local(&t).validate(&d.to_json(), NONCE),
                    Err(ValidationError::PcrDigestMismatch { bank: "SHA-256" })
                ),
                "PCR {idx}"
            );
        }
    }

    #[test]
    fn pcr_map_must_match_the_selection() {
        let t = tpm();
        let v = local(&t);
        let mut missing = doc(&t);
        missing.attestation.quotes[0].pcrs.pcrs.remove(&23);
        let mut extra = doc(&t);
        extra.attestation.quotes[0]
            .pcrs
            .pcrs
            .insert(24, vec![0; 32]);
        let mut short = doc(&t);
        short.attestation.quotes[0].pcrs.pcrs.insert(3, vec![0; 20]);
        for (name, d) in [("missing", missing), ("extra", extra), ("short", short)] {
            assert!(
                matches!(
                    v.validate(&d.to_json(), NONCE),
                    Err(ValidationError::PcrSelection(_))
                ),
                "{name}"
            );
        }
    }

    #[test]
    fn enforced_measurement_mismatch_names_pcr_expected_and_actual() {
        let t = tpm();
        let mut m = measurements(&t);
        m.set(9, Measurement::enforced(vec![0xEE; 32])).unwrap();
        let v = LocalVtpmValidator::new([t.ak_fingerprint()], m);
        let err = v.validate(&doc(&t).to_json(), NONCE).unwrap_err();
        let ValidationError::Measurements(ref mm) = err else {
            panic!("{err}")
        };
        assert_eq!(mm.len(), 1);
        assert_eq!(mm[0].index, 9);
        let msg = err.to_string();
        assert!(msg.contains("PCR 9"), "{msg}");
        assert!(msg.contains(&"ee".repeat(32)), "{msg}");
        assert!(msg.contains(&hex::encode(&t.pcrs()[&9])), "{msg}");
    }

    #[test]
    fn unvouched_ak_is_untrusted_and_named() {
        let t = tpm();
        let other = tpm();
        let v = LocalVtpmValidator::new([other.ak_fingerprint()], measurements(&t));
        let err = v.validate(&doc(&t).to_json(), NONCE).unwrap_err();
        assert!(matches!(err, ValidationError::UntrustedKey(_)), "{err}");
        assert!(err.to_string().contains(&t.ak_fingerprint().to_hex()));
        // qemu-vtpm semantics: any AK.
        assert!(InsecureTrustAnyAkValidator::new(measurements(&t))
            .validate(&doc(&t).to_json(), NONCE)
            .is_ok());
    }

    #[test]
    fn quote_signed_by_another_key_is_rejected() {
        let t = tpm();
        let other = tpm();
        let mut d = doc(&t);
        d.attestation.quotes[0].raw_sig = other.sign(&d.attestation.quotes[0].quote).unwrap();
        assert!(matches!(
            local(&t).validate(&d.to_json(), NONCE),
            Err(ValidationError::BadSignature(_))
        ));
    }

    #[test]
    fn non_quote_or_non_restricted_key_is_rejected() {
        let t = tpm();
        let mut d = doc(&t);
        // A signed TPMS_ATTEST of another type (certify) must not pass as a quote.
        let mut certify = d.attestation.quotes[0].quote.clone();
        certify[5] = 0x17;
        d.attestation.quotes[0].raw_sig = t.sign(&certify).unwrap();
        d.attestation.quotes[0].quote = certify;
        assert!(matches!(
            local(&t).validate(&d.to_json(), NONCE),
            Err(ValidationError::Malformed(_))
        ));
        let mut d = doc(&t);
        let mut ak = TpmtPublic::decode(&d.attestation.ak_pub).unwrap();
        ak.object_attributes &= !crate::tpm2::TPMA_OBJECT_RESTRICTED;
        d.attestation.ak_pub = ak.encode();
        let v = LocalVtpmValidator::new(
            [AkFingerprint::of_tpmt_public(&d.attestation.ak_pub)],
            measurements(&t),
        );
        assert!(matches!(
            v.validate(&d.to_json(), NONCE),
            Err(ValidationError::UntrustedKey(_))
        ));
    }

    /// Go's bug (reference §2.10): a valid quote for another bank must not vouch for the
    /// SHA-256 PCRs that are compared.
    #[test]
    fn sha256_quote_itself_must_verify() {
        let t = tpm();
        let mut d = doc(&t);
        let sha384: BTreeMap<u32, Vec<u8>> = (0..24).map(|i| (i, vec![0u8; 48])).collect();
        let attest = TpmsAttest {
            pcr_select: PcrSelectionList(vec![PcrSelection {
                hash: HashAlg::Sha384,
                size_of_select: 3,
                pcrs: sha384.keys().copied().collect(),
            }]),
            pcr_digest: HashAlg::Sha256.digest_parts(sha384.values().map(|v| v.as_slice())),
            ..TpmsAttest::decode(&d.attestation.quotes[0].quote).unwrap()
        };
        let attest = attest.encode();
        let sig = t.sign(&attest).unwrap();
        d.attestation.quotes.insert(
            0,
            Quote {
                quote: attest,
                raw_sig: sig,
                pcrs: Pcrs {
                    hash: crate::document::HASH_SHA384,
                    pcrs: sha384,
                },
            },
        );
        assert!(local(&t).validate(&d.to_json(), NONCE).is_ok());
        // Now forge the SHA-256 PCRs; its quote no longer verifies, the SHA-384 one still does.
        d.attestation.quotes[1]
            .pcrs
            .pcrs
            .insert(4, t.pcrs()[&9].clone());
        assert!(local(&t).validate(&d.to_json(), NONCE).is_err());
    }

    #[test]
    fn event_log_must_replay_to_the_quoted_pcrs() {
        use crate::eventlog::tests::agile_log;
        let t = tpm(); // PCR 4 ← "kernel", PCR 9 ← "cmdline"
        let v = local(&t);
        let cases: [(&str, Vec<u8>, bool); 4] = [
            (
                "matching",
                agile_log(&[(4, 0xD, b"kernel"), (9, 0xD, b"cmdline")]),
                true,
            ),
            ("subset", agile_log(&[(4, 0xD, b"kernel")]), true),
            ("other data", agile_log(&[(4, 0xD, b"kernel2")]), false),
            ("garbage", vec![1, 2, 3], false),
        ];
        for (name, log, ok) in cases {
            let mut d = doc(&t);
            d.attestation.event_log = Some(log);
            let r = v.validate(&d.to_json(), NONCE);
            assert_eq!(r.is_ok(), ok, "{name}: {r:?}");
            if !ok {
                assert!(matches!(r, Err(ValidationError::EventLog(_))), "{name}");
            }
        }
    }

    #[test]
    fn quote_sets_are_checked() {
        let t = tpm();
        let v = local(&t);
        let mut none = doc(&t);
        none.attestation.quotes[0].pcrs.hash = crate::document::HASH_SHA1;
        let mut two = doc(&t);
        two.attestation
            .quotes
            .push(two.attestation.quotes[0].clone());
        for (name, d) in [("no sha256", none), ("two sha256", two)] {
            assert!(
                matches!(
                    v.validate(&d.to_json(), NONCE),
                    Err(ValidationError::Malformed(_))
                ),
                "{name}"
            );
        }
    }

    #[test]
    fn truncated_garbled_and_oversized_documents_are_malformed() {
        let t = tpm();
        let v = local(&t);
        let json = doc(&t).to_json();
        for cut in (0..json.len()).step_by(13) {
            let r = v.validate(&json[..cut], NONCE);
            assert!(matches!(r, Err(ValidationError::Malformed(_))), "cut {cut}");
        }
        // Garble bytes inside each decoded binary field; every result is an error, no panic.
        let d = doc(&t);
        for field in 0..3 {
            let len = match field {
                0 => d.attestation.ak_pub.len(),
                1 => d.attestation.quotes[0].quote.len(),
                _ => d.attestation.quotes[0].raw_sig.len(),
            };
            for pos in 0..len {
                let mut g = d.clone();
                let b = match field {
                    0 => &mut g.attestation.ak_pub,
                    1 => &mut g.attestation.quotes[0].quote,
                    _ => &mut g.attestation.quotes[0].raw_sig,
                };
                b[pos] ^= 0x01;
                assert!(
                    v.validate(&g.to_json(), NONCE).is_err(),
                    "field {field} pos {pos}"
                );
                let mut cut = d.clone();
                let b = match field {
                    0 => &mut cut.attestation.ak_pub,
                    1 => &mut cut.attestation.quotes[0].quote,
                    _ => &mut cut.attestation.quotes[0].raw_sig,
                };
                b.truncate(pos);
                assert!(
                    v.validate(&cut.to_json(), NONCE).is_err(),
                    "field {field} cut {pos}"
                );
            }
        }
        let big = vec![b' '; crate::document::MAX_DOCUMENT_LEN + 1];
        assert!(matches!(
            v.validate(&big, NONCE),
            Err(ValidationError::Malformed(_))
        ));
        for junk in [
            &b""[..],
            b"null",
            b"[]",
            b"{\"Attestation\":{}}",
            &[0xFF, 0xFE],
        ] {
            assert!(matches!(
                v.validate(junk, NONCE),
                Err(ValidationError::Malformed(_))
            ));
        }
    }

    #[test]
    fn factory_builds_validators_and_refuses_cloud_variants() {
        let t = tpm();
        let policy = ValidatorPolicy::default().trust_ak_public(t.ak_public());
        let v = validator_for(Variant::LocalVtpm, measurements(&t), policy.clone()).unwrap();
        assert_eq!(v.variant(), Variant::LocalVtpm);
        assert!(v.validate(&doc(&t).to_json(), NONCE).is_ok());
        let v = validator_for(
            Variant::LocalVtpm,
            measurements(&t),
            ValidatorPolicy::default(),
        )
        .unwrap();
        assert!(matches!(
            v.validate(&doc(&t).to_json(), NONCE),
            Err(ValidationError::UntrustedKey(_))
        ));
        for (variant, ok) in [
            (Variant::QemuVtpm, true),
            (Variant::Dummy, true),
            (Variant::AwsNitroTpm, true),
            (Variant::AwsSevSnp, true),
            (Variant::GcpSevEs, true),
            (Variant::GcpSevSnp, true),
            (Variant::AzureSevSnp, true),
            (Variant::AzureTdx, false),
            (Variant::AzureTrustedLaunch, true),
            (Variant::QemuTdx, false),
        ] {
            let r = validator_for(variant, measurements(&t), policy.clone());
            assert_eq!(r.is_ok(), ok, "{variant}");
            match r {
                Ok(v) => assert_eq!(v.variant(), variant),
                Err(e) => assert!(e.to_string().contains(variant.as_str())),
            }
        }
    }

    #[test]
    fn fingerprint_hex_round_trip() {
        let fp = AkFingerprint::of_tpmt_public(b"x");
        assert_eq!(AkFingerprint::from_hex(&fp.to_hex()).unwrap(), fp);
        assert!(AkFingerprint::from_hex("abc").is_err());
    }
}
