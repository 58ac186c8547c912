//! The TDX attestation variants of the Go system.
//!
//! - `qemu-tdx` ([`QemuTdxValidator`]): the document is `{"RawQuote": b64, "UserData": b64}`
//!   (Go `tdx.tdxAttestationDocument`); the quote must verify ([`super::verify`]),
//!   `report_data == SHA-256(userData ‖ nonce) ‖ 0³²` (Go `CompareExtraData`, zero padded), and
//!   the measurements map indices 0 = MRTD, 1..4 = RTMR0..3 (48 bytes each).
//! - `azure-tdx` ([`AzureTdxValidator`]): a vTPM document ([`crate::document`]) whose
//!   `InstanceInfo` is `{"AttestationReport": b64 TD quote, "RuntimeData": b64 HCL runtime data}`
//!   (Go `azure/tdx.InstanceInfo`); the quote must verify, `report_data[0..32] ==
//!   SHA-256(RuntimeData)`, and the runtime data's `HCLAkPub` must be the document's AK; then
//!   the usual vTPM checks (quote, nonce, PCRs, measurements) run with that AK.
//!
//! Both take the collateral as a value through [`CollateralSource`] (an edge component
//! fetches and caches it; tests pass the captured collateral) and a verification time.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{der, verify, Collateral, PckExtension, Quote, TdxClaims, TdxError, TdxPolicy};
use crate::azure_hcl::{HclReport, REPORT_TYPE_TDX};
use crate::tpm2::PublicKey;
use crate::vtpm::{validate_vtpm, TrustOutcome};
use crate::{
    make_extra_data, Measurements, ValidationError, Validator, Variant, VerifiedAttestation,
};

/// Where a TDX validator gets collateral for a quote's platform (FMSPC). The validators stay
/// pure: an implementation returns values it already has (a cache an edge component fills
/// from Intel PCS or Azure THIM); [`Collateral`] itself is a source for one platform.
pub trait CollateralSource: std::fmt::Debug + Send + Sync {
    fn collateral(&self, fmspc: [u8; 6]) -> Result<Collateral, String>;

    /// The collateral for `quote`, whose PCK certificate names the FMSPC `fmspc`. Default:
    /// [`CollateralSource::collateral`]; a source that also needs the PCK CA (for the PCK
    /// CRL, as an Intel PCS fetcher does) reads it from the quote.
    fn collateral_for_quote(
        &self,
        quote: &Quote<'_>,
        fmspc: [u8; 6],
    ) -> Result<Collateral, String> {
        let _ = quote;
        self.collateral(fmspc)
    }
}

impl CollateralSource for Collateral {
    fn collateral(&self, _fmspc: [u8; 6]) -> Result<Collateral, String> {
        Ok(self.clone())
    }
}

/// The FMSPC named by the quote's PCK certificate (to select collateral; not yet trusted).
pub fn quote_fmspc(quote: &Quote<'_>) -> Result<[u8; 6], TdxError> {
    let chain = der::pem_chain(quote.pck_chain_pem).map_err(|reason| TdxError::Chain {
        chain: super::Chain::Pck,
        reason,
    })?;
    let (_, leaf) = X509Certificate::from_der(&chain[0]).map_err(|e| TdxError::Chain {
        chain: super::Chain::Pck,
        reason: format!("leaf certificate does not parse: {e}"),
    })?;
    Ok(PckExtension::from_cert(&leaf)?.fmspc)
}

/// Shared by both validators: parse, get collateral, verify at the configured time.
#[derive(Debug, Clone)]
struct TdxCheck {
    policy: TdxPolicy,
    collateral: Arc<dyn CollateralSource>,
    /// Unix seconds; `None` = the system clock at each validation.
    at: Option<i64>,
}

impl TdxCheck {
    fn now(&self) -> i64 {
        self.at.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        })
    }

    /// The claims and SHA-256 of the quote's attestation key.
    fn verify(
        &self,
        raw: &[u8],
        policy: &TdxPolicy,
    ) -> Result<(TdxClaims, [u8; 32]), ValidationError> {
        let quote = Quote::parse(raw).map_err(tdx_error)?;
        let fmspc = quote_fmspc(&quote).map_err(tdx_error)?;
        let collateral = self
            .collateral
            .collateral_for_quote(&quote, fmspc)
            .map_err(|e| {
                ValidationError::UntrustedKey(format!(
                    "no TDX collateral for FMSPC {}: {e}",
                    hex::encode_upper(fmspc)
                ))
            })?;
        let claims = verify(&quote, &collateral, self.now(), policy).map_err(tdx_error)?;
        Ok((claims, Sha256::digest(quote.attestation_key).into()))
    }
}

/// Maps a TDX failure onto the validator error kinds: malformed input, the nonce binding, or
/// a refusal naming the check.
pub(crate) fn tdx_error(e: TdxError) -> ValidationError {
    match e {
        TdxError::Quote(_) | TdxError::Collateral(_) => ValidationError::Malformed(e.to_string()),
        TdxError::ReportData { .. } => ValidationError::NonceMismatch,
        other => ValidationError::Refused(vec![other.reason()]),
    }
}

/// `qemu-tdx` document (Go field names, standard base64).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QemuTdxDocument {
    #[serde(rename = "RawQuote", with = "b64")]
    pub raw_quote: Vec<u8>,
    #[serde(rename = "UserData", with = "b64")]
    pub user_data: Vec<u8>,
}

/// `azure-tdx` `InstanceInfo` (Go `azure/tdx.InstanceInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AzureTdxInstanceInfo {
    #[serde(rename = "AttestationReport", with = "b64")]
    pub attestation_report: Vec<u8>,
    #[serde(rename = "RuntimeData", with = "b64")]
    pub runtime_data: Vec<u8>,
}

mod b64 {
    use super::*;
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = Option::<String>::deserialize(d)?.unwrap_or_default();
        STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}

/// `qemu-tdx`: a raw TD quote whose report data binds the nonce and user data.
#[derive(Debug, Clone)]
pub struct QemuTdxValidator {
    check: TdxCheck,
    measurements: Measurements,
}

impl QemuTdxValidator {
    /// `at`: verification time (unix seconds), `None` = the system clock.
    pub fn new(
        measurements: Measurements,
        policy: TdxPolicy,
        collateral: Arc<dyn CollateralSource>,
        at: Option<i64>,
    ) -> Self {
        Self {
            check: TdxCheck {
                policy,
                collateral,
                at,
            },
            measurements,
        }
    }
}

/// MRTD and RTMR0..3 as measurement indices 0..4 (Go `tdx.Validator`).
pub fn tdx_measurements(claims: &TdxClaims) -> BTreeMap<u32, Vec<u8>> {
    let r = &claims.td_report;
    let mut m = BTreeMap::new();
    m.insert(0, r.mrtd.to_vec());
    for (i, rtmr) in r.rtmr.iter().enumerate() {
        m.insert(i as u32 + 1, rtmr.to_vec());
    }
    m
}

impl Validator for QemuTdxValidator {
    fn variant(&self) -> Variant {
        Variant::QemuTdx
    }
    fn validate(&self, doc: &[u8], nonce: &[u8]) -> Result<VerifiedAttestation, ValidationError> {
        if doc.len() > crate::document::MAX_DOCUMENT_LEN {
            return Err(ValidationError::Malformed(format!(
                "document has {} bytes, at most {} accepted",
                doc.len(),
                crate::document::MAX_DOCUMENT_LEN
            )));
        }
        let doc: QemuTdxDocument = serde_json::from_slice(doc)
            .map_err(|e| ValidationError::Malformed(format!("qemu-tdx document JSON: {e}")))?;
        let mut policy = self.check.policy.clone();
        let mut expected = [0u8; 64];
        expected[..32].copy_from_slice(&make_extra_data(&doc.user_data, nonce));
        policy.report_data = Some(expected);
        let (claims, att_key) = self.check.verify(&doc.raw_quote, &policy)?;
        let pcrs = tdx_measurements(&claims);
        let cmp = self.measurements.compare(&pcrs);
        if !cmp.errors.is_empty() {
            return Err(ValidationError::Measurements(cmp.errors));
        }
        Ok(
            VerifiedAttestation::new(Variant::QemuTdx, doc.user_data, pcrs, cmp.warnings, att_key)
                .with_evidence(Vec::new(), claims.to_json()),
        )
    }
}

/// `azure-tdx`: a vTPM document whose AK the TD quote vouches for through the HCL runtime data.
#[derive(Debug, Clone)]
pub struct AzureTdxValidator {
    check: TdxCheck,
    measurements: Measurements,
}

impl AzureTdxValidator {
    /// `at`: verification time (unix seconds), `None` = the system clock.
    pub fn new(
        measurements: Measurements,
        policy: TdxPolicy,
        collateral: Arc<dyn CollateralSource>,
        at: Option<i64>,
    ) -> Self {
        Self {
            check: TdxCheck {
                policy,
                collateral,
                at,
            },
            measurements,
        }
    }

    /// The AK the instance info vouches for: TD quote verified, runtime data bound to its
    /// report data, `HCLAkPub` from the runtime data. Returns the claims too (for the CLI).
    pub fn trusted_ak(
        &self,
        instance_info: &[u8],
    ) -> Result<(PublicKey, TdxClaims), ValidationError> {
        let info: AzureTdxInstanceInfo = serde_json::from_slice(instance_info)
            .map_err(|e| ValidationError::Malformed(format!("azure-tdx InstanceInfo JSON: {e}")))?;
        let (claims, _) = self
            .check
            .verify(&info.attestation_report, &self.check.policy)?;
        let ak = runtime_data_ak(&info.runtime_data, &claims.td_report.report_data)?;
        Ok((ak, claims))
    }
}

/// `SHA-256(runtime data) == report_data[0..32]`, then the runtime data's `HCLAkPub`.
pub fn runtime_data_ak(
    runtime_data: &[u8],
    report_data: &[u8; 64],
) -> Result<PublicKey, ValidationError> {
    let h = Sha256::digest(runtime_data);
    if !crate::quote::ct_eq(&h, &report_data[..32]) {
        return Err(ValidationError::UntrustedKey(format!(
            "HCL runtime data hashes to {}, the TD quote binds {}",
            hex::encode(h),
            hex::encode(&report_data[..32])
        )));
    }
    if let Some(ec) = ec_jwk_ak(runtime_data)? {
        return Ok(ec);
    }
    // Only the runtime-data accessors of `HclReport` are used; no hardware report here.
    let hcl = HclReport {
        report_type: REPORT_TYPE_TDX,
        hw_report: &[],
        runtime_data,
    };
    hcl.ak_public_key()
        .map_err(|e| ValidationError::UntrustedKey(format!("HCL runtime data: {e}")))
}

/// An `HCLAkPub` given as a P-256 JWK (`kty "EC"`, `crv "P-256"`, `x`, `y`). Azure's HCL
/// names an RSA AK; a P-256 AK is the other key form the vTPM quote check supports (and the
/// one the software TPM used in tests has). `None` when the key is not an EC JWK.
fn ec_jwk_ak(runtime_data: &[u8]) -> Result<Option<PublicKey>, ValidationError> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let bad = |m: String| ValidationError::UntrustedKey(format!("HCL runtime data: {m}"));
    let json: serde_json::Value =
        serde_json::from_slice(runtime_data).map_err(|e| bad(format!("not JSON: {e}")))?;
    let Some(jwk) = json
        .get("keys")
        .and_then(|k| k.as_array())
        .and_then(|keys| {
            keys.iter()
                .find(|k| k.get("kid").and_then(|v| v.as_str()) == Some("HCLAkPub"))
        })
    else {
        return Ok(None);
    };
    if jwk.get("kty").and_then(|v| v.as_str()) != Some("EC") {
        return Ok(None);
    }
    if jwk.get("crv").and_then(|v| v.as_str()) != Some("P-256") {
        return Err(bad(
            "HCLAkPub is an EC key on a curve other than P-256".into()
        ));
    }
    let coord = |name: &str| -> Result<Vec<u8>, ValidationError> {
        let s = jwk
            .get(name)
            .and_then(|v| v.as_str())
            .ok_or_else(|| bad(format!("HCLAkPub has no \"{name}\"")))?;
        let v = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|e| bad(format!("HCLAkPub \"{name}\": {e}")))?;
        if v.len() != 32 {
            return Err(bad(format!(
                "HCLAkPub \"{name}\" has {} bytes, not 32",
                v.len()
            )));
        }
        Ok(v)
    };
    Ok(Some(PublicKey::Ecc {
        curve: crate::tpm2::EccCurve::NistP256,
        x: coord("x")?,
        y: coord("y")?,
    }))
}

impl Validator for AzureTdxValidator {
    fn variant(&self) -> Variant {
        Variant::AzureTdx
    }
    fn validate(&self, doc: &[u8], nonce: &[u8]) -> Result<VerifiedAttestation, ValidationError> {
        validate_vtpm(Variant::AzureTdx, doc, nonce, &self.measurements, |t| {
            let info = t.doc.instance_info.as_deref().ok_or_else(|| {
                ValidationError::Malformed("azure-tdx document has no InstanceInfo".into())
            })?;
            let (trusted, claims) = self.trusted_ak(info)?;
            if trusted != t.ak.public_key() {
                return Err(ValidationError::UntrustedKey(
                    "the document's AK is not the HCLAkPub the TD quote vouches for".into(),
                ));
            }
            Ok(TrustOutcome {
                warnings: Vec::new(),
                claims: claims.to_json(),
            })
        })
    }
}
