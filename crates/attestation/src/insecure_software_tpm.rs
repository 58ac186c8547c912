//! An in-process "TPM": 24 SHA-256 PCRs and an ECDSA P-256 attestation key held in memory,
//! producing real-format documents ([`crate::document`]: `TPMT_PUBLIC`, `TPMS_ATTEST`,
//! `TPMT_SIGNATURE`) that the vTPM validators check like any other.
//!
//! Insecure by construction — whoever runs it can sign any PCR values — and meant for tests,
//! fuzzing, benchmarks and protocol work without `swtpm`. A validator accepts its documents
//! only if told to trust its AK ([`InsecureSoftwareTpm::ak_fingerprint`]) or if it trusts any
//! AK (`qemu-vtpm`).

use std::collections::BTreeMap;

use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

use crate::document::{self, AttestationDocument, Pcrs, Quote};
use crate::tpm2::{ClockInfo, HashAlg, TpmsAttest, TpmtPublic, TpmtSignature};
use crate::vtpm::AkFingerprint;
use crate::{make_extra_data, make_tpm_nonce, IssueError, Issuer, Variant};

/// Software TPM with an ECDSA P-256 AK (go-tpm-tools `AKTemplateECC` layout). Insecure.
pub struct InsecureSoftwareTpm {
    variant: Variant,
    key: EcdsaKeyPair,
    ak_public: TpmtPublic,
    ak_public_bytes: Vec<u8>,
    pcrs: BTreeMap<u32, Vec<u8>>,
    rng: SystemRandom,
}

impl std::fmt::Debug for InsecureSoftwareTpm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InsecureSoftwareTpm")
            .field("variant", &self.variant)
            .field("ak", &self.ak_fingerprint())
            .finish_non_exhaustive()
    }
}

impl InsecureSoftwareTpm {
    /// A fresh random AK; all PCRs zero.
    pub fn generate(variant: Variant) -> Result<Self, IssueError> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| IssueError::new("generating the software AK failed"))?;
        Self::from_pkcs8(variant, pkcs8.as_ref())
    }

    /// An AK from a PKCS#8 P-256 key (deterministic AK for fixtures); all PCRs zero.
    pub fn from_pkcs8(variant: Variant, pkcs8: &[u8]) -> Result<Self, IssueError> {
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng).map_err(
            |e| IssueError::new(format!("software AK key is not a P-256 PKCS#8 key: {e}")),
        )?;
        // Uncompressed point: 0x04 ‖ x (32) ‖ y (32).
        let point = key.public_key().as_ref();
        let (x, y) = match point {
            [0x04, rest @ ..] if rest.len() == 64 => (rest[..32].to_vec(), rest[32..].to_vec()),
            _ => return Err(IssueError::new("unexpected P-256 public key encoding")),
        };
        let ak_public = TpmtPublic::ak_template_ecc(x, y);
        let ak_public_bytes = ak_public.encode();
        Ok(Self {
            variant,
            key,
            ak_public,
            ak_public_bytes,
            pcrs: (0..24).map(|i| (i, vec![0u8; 32])).collect(),
            rng,
        })
    }

    /// The AK's encoded `TPMT_PUBLIC` (the document's `ak_pub`).
    pub fn ak_public(&self) -> &[u8] {
        &self.ak_public_bytes
    }
    pub fn ak_fingerprint(&self) -> AkFingerprint {
        AkFingerprint::of_tpmt_public(&self.ak_public_bytes)
    }
    /// Current SHA-256 PCR values 0..=23.
    pub fn pcrs(&self) -> &BTreeMap<u32, Vec<u8>> {
        &self.pcrs
    }
    /// `TPM2_PCR_Event` on the SHA-256 bank: `PCR = SHA-256(PCR ‖ SHA-256(data))`.
    pub fn extend(&mut self, pcr: u32, data: &[u8]) {
        if let Some(v) = self.pcrs.get_mut(&pcr) {
            *v = HashAlg::Sha256.digest_parts([v.as_slice(), &HashAlg::Sha256.digest(data)]);
        }
    }

    /// Signs any `TPMS_ATTEST` (including ones a real TPM would never produce — that is the
    /// point for negative tests). Returns the encoded `TPMT_SIGNATURE`.
    pub fn sign(&self, attest: &[u8]) -> Result<Vec<u8>, IssueError> {
        let sig = self
            .key
            .sign(&self.rng, attest)
            .map_err(|_| IssueError::new("software AK signing failed"))?;
        let sig = sig.as_ref();
        if sig.len() != 64 {
            return Err(IssueError::new("unexpected P-256 signature length"));
        }
        Ok(TpmtSignature::Ecdsa {
            hash: HashAlg::Sha256,
            r: sig[..32].to_vec(),
            s: sig[32..].to_vec(),
        }
        .encode())
    }

    /// A SHA-256 quote over `pcrs` with `qualifying_data` as `extraData`: `(TPMS_ATTEST,
    /// TPMT_SIGNATURE)`.
    pub fn quote(
        &self,
        pcrs: &BTreeMap<u32, Vec<u8>>,
        qualifying_data: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>), IssueError> {
        let attest = TpmsAttest {
            clock_info: ClockInfo {
                clock: 1_000,
                reset_count: 0,
                restart_count: 0,
                safe: true,
            },
            firmware_version: 0x2023_0101_0000_0000,
            ..TpmsAttest::sha256_quote(self.ak_public.name(), qualifying_data.to_vec(), pcrs)
        }
        .encode();
        let sig = self.sign(&attest)?;
        Ok((attest, sig))
    }

    /// The document for `user_data` and `nonce`, as the Go vTPM issuer builds it.
    pub fn document(
        &self,
        user_data: &[u8],
        nonce: &[u8],
        instance_info: Option<Vec<u8>>,
    ) -> Result<AttestationDocument, IssueError> {
        let extra = make_extra_data(user_data, nonce);
        let tpm_nonce = make_tpm_nonce(instance_info.as_deref().unwrap_or_default(), &extra);
        let (quote, raw_sig) = self.quote(&self.pcrs, &tpm_nonce)?;
        Ok(AttestationDocument {
            attestation: document::Attestation {
                ak_pub: self.ak_public_bytes.clone(),
                quotes: vec![Quote {
                    quote,
                    raw_sig,
                    pcrs: Pcrs {
                        hash: document::HASH_SHA256,
                        pcrs: self.pcrs.clone(),
                    },
                }],
                ..Default::default()
            },
            instance_info,
            user_data: user_data.to_vec(),
        })
    }
}

impl Issuer for InsecureSoftwareTpm {
    fn variant(&self) -> Variant {
        self.variant
    }
    fn issue(&self, user_data: &[u8], nonce: &[u8]) -> Result<Vec<u8>, IssueError> {
        Ok(self.document(user_data, nonce, None)?.to_json())
    }
}
