//! Remote attestation: the document a node issues, and the validators that check it.
//!
//! ```text
//!  node (issuer, crate `tpm`)                     verifier (CLI, JoinService)
//!  ───────────────────────────                    ───────────────────────────
//!  extraData = SHA-256(userData ‖ nonce)   ◄─nonce──
//!  tpmNonce  = SHA-256(instanceInfo ‖ extraData)
//!  quote(PCRs, tpmNonce) → AttestationDocument ──►  Validator::validate(doc, nonce)
//!                                                    → VerifiedAttestation (userData, PCRs)
//! ```
//!
//! Everything here is synchronous and free of I/O: decoding TPM structures, checking quote
//! signatures, trust in the attestation key, and comparison with expected measurements. The
//! verifier side never needs `libtss2`.
//!
//! Map: [`tpm2`] decodes TPM structures; [`quote`] verifies one quote for one PCR bank;
//! [`eventlog`] replays firmware event logs; [`vtpm`] holds the validators for documents whose
//! AK trust needs no cloud API (`local-vtpm`, insecure `qemu-vtpm`), built by
//! [`validator_for`]; [`gce`] and [`azure_hcl`] read captured cloud evidence (GCE protobuf +
//! AK certificate chain, Azure HCL report) and are the building blocks for those variants'
//! validators, which additionally need cloud APIs. [`insecure_software_tpm`] and
//! [`insecure_dummy`] issue documents without a TPM, for tests only. [`tdx`] verifies Intel
//! TDX DCAP quotes with their collateral and holds the `qemu-tdx` and `azure-tdx` validators.

#![forbid(unsafe_code)]

// Insecure validators and issuers (dummy, trust-any-AK qemu-vtpm, the software TPM) are for
// tests only: behind a feature that release builds refuse (firecracker's guard).
#[cfg(all(feature = "insecure-test-variants", not(debug_assertions)))]
compile_error!(
    "the `insecure-test-variants` feature of `attestation` must not be enabled in release builds"
);

/// Whether this build includes the insecure test variants (`dummy`, `qemu-vtpm`'s
/// trust-any-AK validator, the software TPM): only debug builds with the
/// `insecure-test-variants` feature, as tests enable it.
pub const INSECURE_TEST_VARIANTS: bool = cfg!(any(test, feature = "insecure-test-variants"));

use std::collections::BTreeMap;
use std::fmt;

use sha2::{Digest, Sha256};

pub use measurements::{Comparison, Measurement, Measurements, Mismatch};

pub mod azure_hcl;
pub mod cloud;
mod cursor;
pub mod document;
pub mod eventlog;
pub mod gce;
#[cfg(any(test, feature = "insecure-test-variants"))]
pub mod insecure_dummy;
#[cfg(any(test, feature = "insecure-test-variants"))]
pub mod insecure_snp;
#[cfg(any(test, feature = "insecure-test-variants"))]
pub mod insecure_software_tpm;
pub mod quote;
pub mod snp;
pub mod tdx;
pub mod tpm2;
pub mod vtpm;

#[cfg(any(test, feature = "insecure-test-variants"))]
pub use vtpm::InsecureTrustAnyAkValidator;
pub use vtpm::{AkFingerprint, LocalVtpmValidator};

/// Attestation variants. The string forms and OIDs are those of the Go system, plus our own
/// `local-vtpm` (a software TPM whose attestation key the local provider vouches for).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Variant {
    /// Test-only variant of the Go system (`dummy`).
    Dummy,
    AwsNitroTpm,
    AwsSevSnp,
    GcpSevEs,
    GcpSevSnp,
    AzureSevSnp,
    AzureTrustedLaunch,
    AzureTdx,
    /// Go's `qemu-vtpm`: the AK in the document is trusted as-is. Insecure; testing only.
    QemuVtpm,
    QemuTdx,
    /// Our local provider: a `swtpm` per node, AK trusted only if the provider recorded it.
    LocalVtpm,
}

impl Variant {
    pub const ALL: [Variant; 11] = [
        Variant::Dummy,
        Variant::AwsNitroTpm,
        Variant::AwsSevSnp,
        Variant::GcpSevEs,
        Variant::GcpSevSnp,
        Variant::AzureSevSnp,
        Variant::AzureTrustedLaunch,
        Variant::AzureTdx,
        Variant::QemuVtpm,
        Variant::QemuTdx,
        Variant::LocalVtpm,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Dummy => "dummy",
            Variant::AwsNitroTpm => "aws-nitro-tpm",
            Variant::AwsSevSnp => "aws-sev-snp",
            Variant::GcpSevEs => "gcp-sev-es",
            Variant::GcpSevSnp => "gcp-sev-snp",
            Variant::AzureSevSnp => "azure-sev-snp",
            Variant::AzureTrustedLaunch => "azure-trustedlaunch",
            Variant::AzureTdx => "azure-tdx",
            Variant::QemuVtpm => "qemu-vtpm",
            Variant::QemuTdx => "qemu-tdx",
            Variant::LocalVtpm => "local-vtpm",
        }
    }

    /// OID arcs under the unregistered arc 1.3.9900 (Go system's table; `local-vtpm` = 1.3.9900.6.1).
    pub fn oid(self) -> &'static [u64] {
        match self {
            Variant::Dummy => &[1, 3, 9900, 1, 1],
            Variant::AwsNitroTpm => &[1, 3, 9900, 2, 1],
            Variant::AwsSevSnp => &[1, 3, 9900, 2, 2],
            Variant::GcpSevEs => &[1, 3, 9900, 3, 1],
            Variant::GcpSevSnp => &[1, 3, 9900, 3, 2],
            Variant::AzureSevSnp => &[1, 3, 9900, 4, 1],
            Variant::AzureTrustedLaunch => &[1, 3, 9900, 4, 2],
            Variant::AzureTdx => &[1, 3, 9900, 4, 3],
            Variant::QemuVtpm => &[1, 3, 9900, 5, 1],
            Variant::QemuTdx => &[1, 3, 9900, 5, 99],
            Variant::LocalVtpm => &[1, 3, 9900, 6, 1],
        }
    }

    /// The config section key under `attestation:` (config v4).
    pub fn config_key(self) -> &'static str {
        match self {
            Variant::Dummy => "dummy",
            Variant::AwsNitroTpm => "awsNitroTPM",
            Variant::AwsSevSnp => "awsSEVSNP",
            Variant::GcpSevEs => "gcpSEVES",
            Variant::GcpSevSnp => "gcpSEVSNP",
            Variant::AzureSevSnp => "azureSEVSNP",
            Variant::AzureTrustedLaunch => "azureTrustedLaunch",
            Variant::AzureTdx => "azureTDX",
            Variant::QemuVtpm => "qemuVTPM",
            Variant::QemuTdx => "qemuTDX",
            Variant::LocalVtpm => "localVTPM",
        }
    }

    pub fn from_config_key(s: &str) -> Option<Variant> {
        Variant::ALL.into_iter().find(|v| v.config_key() == s)
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Variant {
    type Err = UnknownVariant;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Variant::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownVariant(s.to_string()))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown attestation variant {0:?} (known: {known})", known = known_variants())]
pub struct UnknownVariant(pub String);

/// Every variant's string form, from [`Variant::ALL`], so the list cannot drift.
fn known_variants() -> String {
    Variant::ALL.map(Variant::as_str).join(", ")
}

/// `extraData = SHA-256(userData ‖ nonce)` (Go `MakeExtraData`).
pub fn make_extra_data(user_data: &[u8], nonce: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(user_data);
    h.update(nonce);
    h.finalize().into()
}

/// The TPM quote's qualifying data: `SHA-256(instanceInfo ‖ extraData)` (Go `makeTpmNonce`).
pub fn make_tpm_nonce(instance_info: &[u8], extra_data: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(instance_info);
    h.update(extra_data);
    h.finalize().into()
}

/// Produces attestation documents (node side). Implemented by crate `tpm` for vTPM variants.
///
/// `issue` may block (TPM I/O); async callers use `spawn_blocking`.
pub trait Issuer: Send + Sync {
    fn variant(&self) -> Variant;
    fn issue(&self, user_data: &[u8], nonce: &[u8]) -> Result<Vec<u8>, IssueError>;
}

#[derive(Debug, thiserror::Error)]
#[error("issuing attestation failed: {message}")]
pub struct IssueError {
    pub message: String,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl IssueError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source: None,
        }
    }
    pub fn with_source(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }
}

/// Checks attestation documents (verifier side). Synchronous and pure CPU.
pub trait Validator: Send + Sync {
    fn variant(&self) -> Variant;
    /// Verifies `doc` against `nonce` and this validator's policy (trusted AKs, measurements).
    fn validate(&self, doc: &[u8], nonce: &[u8]) -> Result<VerifiedAttestation, ValidationError>;
}

/// Proof that a document passed a [`Validator`]. Only validators construct it; code that hands
/// out secrets takes this type, never raw bytes.
#[derive(Debug, Clone)]
pub struct VerifiedAttestation {
    variant: Variant,
    user_data: Vec<u8>,
    pcrs: BTreeMap<u32, Vec<u8>>,
    warnings: Vec<Mismatch>,
    ak_fingerprint: [u8; 32],
    evidence_warnings: Vec<Reason>,
    claims: serde_json::Value,
}

impl VerifiedAttestation {
    /// Only validators in this crate construct it.
    pub(crate) fn new(
        variant: Variant,
        user_data: Vec<u8>,
        pcrs: BTreeMap<u32, Vec<u8>>,
        warnings: Vec<Mismatch>,
        ak_fingerprint: [u8; 32],
    ) -> Self {
        Self {
            variant,
            user_data,
            pcrs,
            warnings,
            ak_fingerprint,
            evidence_warnings: Vec::new(),
            claims: serde_json::Value::Null,
        }
    }
    pub(crate) fn with_evidence(
        mut self,
        warnings: Vec<Reason>,
        claims: serde_json::Value,
    ) -> Self {
        self.evidence_warnings = warnings;
        self.claims = claims;
        self
    }
    /// Hardware-evidence checks that only warn (e.g. `id_key_digest` under `WarnOnly`).
    pub fn evidence_warnings(&self) -> &[Reason] {
        &self.evidence_warnings
    }
    /// Decoded hardware claims (SEV-SNP report fields, TCB versions; `null` for plain vTPM).
    pub fn claims(&self) -> &serde_json::Value {
        &self.claims
    }
    pub fn variant(&self) -> Variant {
        self.variant
    }
    /// The user data the issuer bound into the document (aTLS: SHA-256 of the peer's SPKI).
    pub fn user_data(&self) -> &[u8] {
        &self.user_data
    }
    /// The verified PCR values (SHA-256 bank, the quote whose signature was checked).
    pub fn pcrs(&self) -> &BTreeMap<u32, Vec<u8>> {
        &self.pcrs
    }
    /// `warnOnly` measurements that differed.
    pub fn warnings(&self) -> &[Mismatch] {
        &self.warnings
    }
    /// SHA-256 of the attestation key's public area (TPMT_PUBLIC), identifying the node's TPM.
    pub fn ak_fingerprint(&self) -> &[u8; 32] {
        &self.ak_fingerprint
    }
    /// Requires the document to be bound to `expected` (aTLS: SHA-256 of the certificate key the
    /// peer proved possession of). A mismatch means the document was made for another channel.
    pub fn require_user_data(&self, expected: &[u8]) -> Result<(), ValidationError> {
        if quote::ct_eq(&self.user_data, expected) {
            Ok(())
        } else {
            Err(ValidationError::UserDataMismatch {
                expected: hex::encode(expected),
                got: hex::encode(&self.user_data),
            })
        }
    }
}

/// What a validator trusts beyond the measurements.
#[derive(Debug, Clone, Default)]
pub struct ValidatorPolicy {
    /// `local-vtpm`: the attestation keys the local provider recorded for its nodes.
    pub trusted_aks: std::collections::BTreeSet<AkFingerprint>,
    /// TDX variants (`azure-tdx`, `qemu-tdx`): the config's `intelRootKey`, `qeSVN`, `pceSVN`,
    /// `teeTCBSVN`, `qeVendorID`, `mrSeam`, `xfam` and the accepted TCB statuses.
    pub tdx: tdx::TdxPolicy,
    /// TDX collateral (Intel PCS TCB info, QE identity, CRLs) for the quotes' platforms.
    pub tdx_collateral: Option<std::sync::Arc<dyn tdx::CollateralSource>>,
    /// SEV-SNP variants: the config's AMD root/signing keys, minimum versions and ID-key policy.
    pub snp: cloud::SnpValidation,
    /// Cloud collateral (VCEK/ASK, cloud-vouched AKs, Trusted-Launch roots, EC2 image data).
    pub collateral: cloud::Collateral,
    /// The time certificates are checked at (Unix seconds); `None` = the system clock when a
    /// document is validated.
    pub now: Option<i64>,
}

impl ValidatorPolicy {
    /// Adds an AK by its encoded public area (`TPMT_PUBLIC`, as in the document's `ak_pub`).
    pub fn trust_ak_public(mut self, tpmt_public: &[u8]) -> Self {
        self.trusted_aks
            .insert(AkFingerprint::of_tpmt_public(tpmt_public));
        self
    }
    pub fn trust_ak(mut self, fingerprint: AkFingerprint) -> Self {
        self.trusted_aks.insert(fingerprint);
        self
    }
}

/// A variant this build cannot validate.
#[derive(Debug, thiserror::Error)]
#[error("no validator for attestation variant {variant}: {reason}")]
pub struct UnsupportedVariant {
    pub variant: Variant,
    pub reason: &'static str,
}

/// The validator for `variant` (the Go `choose.Validator`).
///
/// `local-vtpm` → [`LocalVtpmValidator`] with `policy.trusted_aks`; `qemu-vtpm` →
/// [`InsecureTrustAnyAkValidator`]; `dummy` → [`insecure_dummy::InsecureDummyValidator`]
/// (both insecure, as in the Go system). `azure-tdx` → [`tdx::AzureTdxValidator`] and
/// `qemu-tdx` → [`tdx::QemuTdxValidator`] with `policy.tdx`, `policy.tdx_collateral` (refused
/// without collateral) and `policy.now`; the other cloud variants → [`cloud::CloudValidator`]
/// with `policy.snp`, `policy.collateral` and `policy.now`.
pub fn validator_for(
    variant: Variant,
    measurements: Measurements,
    policy: ValidatorPolicy,
) -> Result<Box<dyn Validator>, UnsupportedVariant> {
    match variant {
        Variant::LocalVtpm => Ok(Box::new(LocalVtpmValidator::new(
            policy.trusted_aks,
            measurements,
        ))),
        #[cfg(any(test, feature = "insecure-test-variants"))]
        Variant::QemuVtpm => Ok(Box::new(InsecureTrustAnyAkValidator::new(measurements))),
        #[cfg(any(test, feature = "insecure-test-variants"))]
        Variant::Dummy => Ok(Box::new(insecure_dummy::InsecureDummyValidator)),
        #[cfg(not(any(test, feature = "insecure-test-variants")))]
        Variant::QemuVtpm | Variant::Dummy => Err(UnsupportedVariant {
            variant,
            reason: "an insecure test variant (any attestation key is trusted): only in debug builds with the insecure-test-variants feature",
        }),
        Variant::AwsNitroTpm
        | Variant::AwsSevSnp
        | Variant::AzureSevSnp
        | Variant::AzureTrustedLaunch
        | Variant::GcpSevEs
        | Variant::GcpSevSnp => cloud::CloudValidator::new(
            variant,
            measurements,
            policy.snp,
            policy.collateral,
            policy.now,
        )
        .map(|v| Box::new(v) as Box<dyn Validator>)
        .ok_or(UnsupportedVariant {
            variant,
            reason: "not a cloud variant",
        }),
        Variant::AzureTdx | Variant::QemuTdx => {
            let Some(collateral) = policy.tdx_collateral else {
                return Err(UnsupportedVariant {
                    variant,
                    reason: "TDX quotes need collateral (Intel PCS TCB info, QE identity, CRLs); none was given",
                });
            };
            Ok(if variant == Variant::AzureTdx {
                Box::new(tdx::AzureTdxValidator::new(
                    measurements,
                    policy.tdx,
                    collateral,
                    policy.now,
                ))
            } else {
                Box::new(tdx::QemuTdxValidator::new(
                    measurements,
                    policy.tdx,
                    collateral,
                    policy.now,
                ))
            })
        }
    }
}

/// One failed check of hardware evidence: which check, what was expected, what was found.
/// Shared by the SEV-SNP and TDX verifiers and printed by `constellation attestation verify`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, thiserror::Error)]
#[error("{check}: expected {expected}, got {actual}")]
pub struct Reason {
    pub check: &'static str,
    pub expected: String,
    pub actual: String,
}

impl Reason {
    pub fn new(
        check: &'static str,
        expected: impl fmt::Display,
        actual: impl fmt::Display,
    ) -> Self {
        Self {
            check,
            expected: expected.to_string(),
            actual: actual.to_string(),
        }
    }
}

/// Validation failures. Messages name what did not match; they are for the local log and for
/// the owner's CLI. Services answer unauthenticated peers with a generic error instead.
#[derive(Debug, thiserror::Error)]
pub enum ValidationError {
    #[error("attestation document is malformed: {0}")]
    Malformed(String),
    #[error("attestation document is for variant {got}, expected {want}")]
    WrongVariant { want: Variant, got: String },
    #[error("attestation key is not trusted: {0}")]
    UntrustedKey(String),
    #[error("quote signature does not verify: {0}")]
    BadSignature(String),
    #[error("quote is not fresh: qualifying data does not match this nonce and user data (replayed or for another peer)")]
    NonceMismatch,
    #[error("quote's PCR digest does not match the reported PCR values (bank {bank})")]
    PcrDigestMismatch { bank: &'static str },
    #[error("quote does not cover exactly the reported PCRs: {0}")]
    PcrSelection(String),
    #[error("{0}")]
    EventLog(String),
    #[error("attestation is bound to user data {got}, expected {expected}")]
    UserDataMismatch { expected: String, got: String },
    #[error("{}", format_mismatches(.0))]
    Measurements(Vec<Mismatch>),
    /// Hardware evidence (SEV-SNP, TDX) was refused; every failed check is listed.
    #[error("{}", format_reasons(.0))]
    Refused(Vec<Reason>),
    #[error("{0}")]
    Other(String),
}

fn format_reasons(r: &[Reason]) -> String {
    let list: Vec<String> = r.iter().map(|r| r.to_string()).collect();
    format!("evidence refused: {}", list.join("; "))
}

impl ValidationError {
    /// The failure as check/expected/actual reasons (for `constellation attestation verify`).
    pub fn reasons(&self) -> Vec<Reason> {
        let one = |check: &'static str, expected: &str, actual: String| {
            vec![Reason::new(check, expected, actual)]
        };
        match self {
            ValidationError::Refused(r) => r.clone(),
            ValidationError::Measurements(m) => m
                .iter()
                .map(|m| {
                    Reason::new(
                        "measurement",
                        format!("PCR {} = {}", m.index, hex::encode(&m.expected)),
                        m.actual
                            .as_ref()
                            .map(hex::encode)
                            .unwrap_or_else(|| "missing".into()),
                    )
                })
                .collect(),
            ValidationError::Malformed(e) => {
                one("document-format", "a well-formed document", e.clone())
            }
            ValidationError::WrongVariant { want, got } => {
                one("variant", want.as_str(), got.clone())
            }
            ValidationError::UntrustedKey(e) => {
                one("ak-trust", "a trusted attestation key", e.clone())
            }
            ValidationError::BadSignature(e) => {
                one("quote-signature", "a valid quote signature", e.clone())
            }
            ValidationError::NonceMismatch => one(
                "nonce",
                "quote extraData = SHA-256(InstanceInfo ‖ SHA-256(UserData ‖ nonce))",
                "a different value".into(),
            ),
            ValidationError::PcrDigestMismatch { bank } => one(
                "pcr-digest",
                "quote PCR digest = hash of the reported PCR values",
                format!("mismatch in bank {bank}"),
            ),
            ValidationError::PcrSelection(e) => one("pcr-selection", "the quoted PCRs", e.clone()),
            ValidationError::EventLog(e) => {
                one("event-log", "a log replaying to the quoted PCRs", e.clone())
            }
            ValidationError::UserDataMismatch { expected, got } => {
                one("user-data", expected, got.clone())
            }
            ValidationError::Other(e) => one("other", "", e.clone()),
        }
    }
}

fn format_mismatches(m: &[Mismatch]) -> String {
    let list: Vec<String> = m.iter().map(|m| m.to_string()).collect();
    format!("measurements do not match: {}", list.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_variant_lists_every_known_one() {
        let msg = "local-tpm".parse::<Variant>().unwrap_err().to_string();
        assert!(msg.contains("\"local-tpm\""), "{msg}");
        for v in Variant::ALL {
            assert_eq!(v.as_str().parse::<Variant>().unwrap(), v);
            assert!(msg.contains(v.as_str()), "{msg} lacks {v}");
        }
    }
}
