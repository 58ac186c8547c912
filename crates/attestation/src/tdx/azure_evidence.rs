//! Azure TDX CVM evidence in the layout other verifiers capture it (confidential-containers
//! trustee's `az-tdx-vtpm` evidence; the same shape as the shared `azure-snp-vtpm` vector with
//! a TD quote):
//!
//! ```json
//! {"tpm_quote": {"signature": "<hex RSASSA-SHA256>", "message": "<hex TPMS_ATTEST>",
//!                "pcrs": ["<hex SHA-256>", … 24]},
//!  "hcl_report": "<base64url HCL report, TDX type>", "td_quote": "<base64url TD quote v4>"}
//! ```
//!
//! [`verify_azure_tdx_evidence`] checks: the TD quote with its collateral ([`super::verify`]);
//! the HCL report is of TDX type and its TDREPORT carries the quote's `report_data`;
//! `SHA-256(runtime data) == report_data[0..32]`; the runtime data's `HCLAkPub` signed the TPM
//! quote (RSASSA-SHA256), whose PCR digest matches `pcrs`; and, when given, the nonce equals
//! the TPM quote's qualifying data. For `constellation attestation verify --format
//! azure-tdx-vtpm`.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::{verify, Collateral, Quote, TdxClaims, TdxError, TdxPolicy};
use crate::azure_hcl::{HclError, HclReport, REPORT_TYPE_TDX};
use crate::quote::{verify_quote, QuoteError};
use crate::tpm2::{HashAlg, PublicKey, SigScheme, TpmsAttest, TpmtSignature};

/// The decoded evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureTdxEvidence {
    pub tpm_quote_message: Vec<u8>,
    pub tpm_quote_signature: Vec<u8>,
    pub pcrs: BTreeMap<u32, Vec<u8>>,
    pub hcl_report: Vec<u8>,
    pub td_quote: Vec<u8>,
}

/// Why Azure TDX evidence was refused; each variant names the step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AzureTdxEvidenceError {
    #[error("evidence is malformed: {0}")]
    Malformed(String),
    #[error("TD quote: {0}")]
    Tdx(#[from] TdxError),
    #[error("HCL report: {0}")]
    Hcl(#[from] HclError),
    #[error("HCL report binding: {0}")]
    Binding(String),
    #[error("vTPM quote: {0}")]
    TpmQuote(#[from] QuoteError),
    #[error("vTPM quote nonce is {actual}, expected {expected}")]
    Nonce { expected: String, actual: String },
}

/// What verified evidence says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureTdxEvidenceClaims {
    pub tdx: TdxClaims,
    /// The vTPM attestation key the TD quote vouches for.
    pub ak: PublicKey,
    /// The vTPM quote's qualifying data (the nonce it answers).
    pub tpm_nonce: Vec<u8>,
    /// The vTPM's SHA-256 PCRs, verified against the quote's digest.
    pub pcrs: BTreeMap<u32, Vec<u8>>,
}

impl AzureTdxEvidenceClaims {
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = self.tdx.to_json();
        if let Some(m) = v.as_object_mut() {
            m.insert("tpm_nonce".into(), hex::encode(&self.tpm_nonce).into());
            let pcrs: serde_json::Map<String, serde_json::Value> = self
                .pcrs
                .iter()
                .map(|(i, p)| (i.to_string(), hex::encode(p).into()))
                .collect();
            m.insert("pcrs".into(), pcrs.into());
            let ak = match &self.ak {
                PublicKey::Rsa { modulus, exponent } => serde_json::json!({
                    "type": "RSA", "bits": modulus.len() * 8, "exponent": exponent}),
                PublicKey::Ecc { x, y, .. } => serde_json::json!({
                    "type": "EC", "x": hex::encode(x), "y": hex::encode(y)}),
            };
            m.insert("ak".into(), ak);
        }
        v
    }
}

impl AzureTdxEvidence {
    pub fn from_json(bytes: &[u8]) -> Result<Self, AzureTdxEvidenceError> {
        let bad = |m: String| AzureTdxEvidenceError::Malformed(m);
        if bytes.len() > crate::document::MAX_DOCUMENT_LEN {
            return Err(bad(format!(
                "{} bytes, at most {} accepted",
                bytes.len(),
                crate::document::MAX_DOCUMENT_LEN
            )));
        }
        let v: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("JSON: {e}")))?;
        let s = |v: &serde_json::Value, name: &str| -> Result<String, AzureTdxEvidenceError> {
            v.get(name)
                .and_then(|x| x.as_str())
                .map(str::to_owned)
                .ok_or_else(|| bad(format!("no string \"{name}\"")))
        };
        let hexf = |v: &serde_json::Value, name: &str| -> Result<Vec<u8>, AzureTdxEvidenceError> {
            hex::decode(s(v, name)?).map_err(|e| bad(format!("\"{name}\" is not hex: {e}")))
        };
        let b64 = |name: &str| -> Result<Vec<u8>, AzureTdxEvidenceError> {
            URL_SAFE_NO_PAD
                .decode(s(&v, name)?.trim_end_matches('='))
                .map_err(|e| bad(format!("\"{name}\" is not base64url: {e}")))
        };
        let q = v
            .get("tpm_quote")
            .ok_or_else(|| bad("no \"tpm_quote\"".into()))?;
        let pcrs = q
            .get("pcrs")
            .and_then(|p| p.as_array())
            .ok_or_else(|| bad("no \"tpm_quote.pcrs\" array".into()))?
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let h = p
                    .as_str()
                    .ok_or_else(|| bad(format!("PCR {i} is not a string")))?;
                let b = hex::decode(h).map_err(|e| bad(format!("PCR {i} is not hex: {e}")))?;
                Ok((i as u32, b))
            })
            .collect::<Result<_, AzureTdxEvidenceError>>()?;
        Ok(Self {
            tpm_quote_message: hexf(q, "message")?,
            tpm_quote_signature: hexf(q, "signature")?,
            pcrs,
            hcl_report: b64("hcl_report")?,
            td_quote: b64("td_quote")?,
        })
    }
}

/// Verifies the evidence at `now` (unix seconds); `nonce`, when given, must be the vTPM
/// quote's qualifying data.
pub fn verify_azure_tdx_evidence(
    e: &AzureTdxEvidence,
    collateral: &Collateral,
    now: i64,
    policy: &TdxPolicy,
    nonce: Option<&[u8]>,
) -> Result<AzureTdxEvidenceClaims, AzureTdxEvidenceError> {
    let quote = Quote::parse(&e.td_quote)?;
    let tdx = verify(&quote, collateral, now, policy)?;
    let hcl = HclReport::parse(&e.hcl_report)?;
    if hcl.report_type != REPORT_TYPE_TDX {
        return Err(AzureTdxEvidenceError::Binding(format!(
            "HCL report type {} is not TDX ({REPORT_TYPE_TDX})",
            hcl.report_type
        )));
    }
    if hcl.report_data() != tdx.td_report.report_data {
        return Err(AzureTdxEvidenceError::Binding(format!(
            "the HCL TDREPORT binds {}, the TD quote {}",
            hex::encode(hcl.report_data()),
            hex::encode(tdx.td_report.report_data)
        )));
    }
    hcl.check_runtime_data_binding()?;
    let ak = super::runtime_data_ak(hcl.runtime_data, &tdx.td_report.report_data)
        .map_err(|err| AzureTdxEvidenceError::Binding(err.to_string()))?;
    if !matches!(ak, PublicKey::Rsa { .. }) {
        return Err(AzureTdxEvidenceError::Malformed(
            "this evidence layout carries raw RSASSA signatures; HCLAkPub is not RSA".into(),
        ));
    }
    let sig = TpmtSignature::Rsa {
        scheme: SigScheme::RsaSsa,
        hash: HashAlg::Sha256,
        sig: e.tpm_quote_signature.clone(),
    };
    let attest = TpmsAttest::decode(&e.tpm_quote_message).map_err(QuoteError::from)?;
    let qualifying = nonce.unwrap_or(&attest.extra_data);
    match verify_quote(
        &ak,
        &e.tpm_quote_message,
        &sig,
        HashAlg::Sha256,
        &e.pcrs,
        qualifying,
    ) {
        Err(QuoteError::QualifyingDataMismatch { want, got }) => {
            return Err(AzureTdxEvidenceError::Nonce {
                expected: want,
                actual: got,
            })
        }
        other => other?,
    };
    Ok(AzureTdxEvidenceClaims {
        tdx,
        ak,
        tpm_nonce: attest.extra_data,
        pcrs: e.pcrs.clone(),
    })
}
