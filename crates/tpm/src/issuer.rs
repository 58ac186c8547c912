//! [`TpmIssuer`]: the node side of vTPM attestation (Go `vtpm.Issuer` for `qemu-vtpm`, and our
//! `local-vtpm`).

use std::collections::BTreeMap;
use std::sync::Arc;

use attestation::document::{self, AttestationDocument};
use attestation::{make_extra_data, make_tpm_nonce, IssueError, Issuer, Variant};

use crate::Tpm;

/// Issues vTPM attestation documents from a [`Tpm`].
///
/// Document (reference §1.3): `extraData = SHA-256(userData ‖ nonce)`, no instance info, so
/// `tpmNonce = SHA-256(extraData)`; one quote of the SHA-256 bank, PCRs 0..=23, qualified with
/// `tpmNonce`; `ak_pub` = the AK's TPMT_PUBLIC; no event log (the local node launcher measures
/// into PCRs directly, there is no firmware log to replay). It vouches for nothing itself: the
/// verifier decides whether it trusts `ak_pub` (for `local-vtpm`: only if the provider recorded
/// it when it started the node's swtpm).
///
/// `issue` blocks on the TPM (a few ms); async callers use `spawn_blocking`.
#[derive(Debug, Clone)]
pub struct TpmIssuer {
    tpm: Arc<Tpm>,
    variant: Variant,
}

#[derive(Debug, thiserror::Error)]
#[error("variant {0} is not issued from a plain vTPM (use local-vtpm or qemu-vtpm)")]
pub struct UnsupportedVariant(pub Variant);

impl TpmIssuer {
    /// `variant` must be [`Variant::LocalVtpm`] or [`Variant::QemuVtpm`]: the document layout is
    /// the same, the variants differ in what the verifier trusts.
    pub fn new(tpm: Arc<Tpm>, variant: Variant) -> Result<Self, UnsupportedVariant> {
        match variant {
            Variant::LocalVtpm | Variant::QemuVtpm => Ok(Self { tpm, variant }),
            other => Err(UnsupportedVariant(other)),
        }
    }

    pub fn tpm(&self) -> &Arc<Tpm> {
        &self.tpm
    }

    /// The document as a value (for callers that want to inspect it).
    pub fn issue_document(
        &self,
        user_data: &[u8],
        nonce: &[u8],
    ) -> Result<AttestationDocument, IssueError> {
        let extra_data = make_extra_data(user_data, nonce);
        let tpm_nonce = make_tpm_nonce(&[], &extra_data);
        let ak_pub = self
            .tpm
            .attestation_key()
            .map_err(|e| IssueError::with_source("loading the attestation key", e))?;
        let quote = self
            .tpm
            .quote(&tpm_nonce)
            .map_err(|e| IssueError::with_source("quoting PCRs", e))?;
        Ok(AttestationDocument {
            attestation: document::Attestation {
                ak_pub,
                quotes: vec![document::Quote {
                    quote: quote.attest,
                    raw_sig: quote.signature,
                    pcrs: document::Pcrs {
                        hash: document::HASH_SHA256,
                        pcrs: quote.pcrs.into_iter().collect::<BTreeMap<_, _>>(),
                    },
                }],
                event_log: None,
                ak_cert: None,
                tee_attestation: None,
            },
            instance_info: None,
            user_data: user_data.to_vec(),
        })
    }
}

impl Issuer for TpmIssuer {
    fn variant(&self) -> Variant {
        self.variant
    }

    fn issue(&self, user_data: &[u8], nonce: &[u8]) -> Result<Vec<u8>, IssueError> {
        Ok(self.issue_document(user_data, nonce)?.to_json())
    }
}
