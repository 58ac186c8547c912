//! Intel TDX: DCAP quote (v4) verification with its collateral, sans I/O.
//!
//! [`verify`] checks, in order, each failure naming its check ([`TdxError`]):
//! 1. the root CA CRL, signed by the pinned Intel SGX Root CA key ([`TdxPolicy::root_key`]);
//! 2. the PCK chain in the quote (PCK leaf → PCK Platform/Processor CA → Intel SGX Root CA):
//!    signatures, validity at `now`, root key = pinned key; the CA not revoked by the root CA
//!    CRL; the PCK CRL (signed by the PCK leaf's issuer, whose chain in the collateral is
//!    verified too) does not list the leaf;
//! 3. the QE report signature by the PCK key; the QE binding
//!    `SHA-256(attestation key ‖ QE auth data) == qe_report.report_data[0..32]`;
//! 4. the quote signature over header ‖ TD report by the attestation key;
//! 5. TCB info and QE identity: their signing chain (Intel SGX TCB Signing → root, not
//!    revoked), signature over the exact JSON text, `issueDate ≤ now ≤ nextUpdate`, ids and
//!    versions (`TDX` v3, `TD_QE` v2), FMSPC and PCE ID equal to the PCK certificate's;
//! 6. the TCB status: platform level (first level whose SGX components and PCE SVN are ≤ the
//!    PCK certificate's and TDX components ≤ `tee_tcb_svn`; with a TDX module version > 0, the
//!    module's own two SVN bytes are judged by its `tdxModuleIdentities` entry instead, whose
//!    MRSIGNER and SEAM attributes must match), QE level (MRSIGNER, ISVPRODID, masked
//!    MISCSELECT/ATTRIBUTES, then ISVSVN), converged; `Revoked` is always refused, the rest
//!    as the policy says;
//! 7. the policy ([`TdxPolicy`]): Go's `qeSVN`, `pceSVN`, `teeTCBSVN` minimums, `qeVendorID`,
//!    `mrSeam`, `xfam`, debug TDs refused, expected MRTD/RTMRs and `report_data`.
//!
//! Time: every window is checked against the caller's `now` (unix seconds); nothing reads
//! the clock, so expired collateral verifies only when the caller says "verify as of then".

mod azure_evidence;
mod collateral;
mod der;
pub mod pcs;
mod pki;
mod quote;
mod validators;

use std::collections::BTreeSet;
use std::fmt;

use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, X509Certificate};

pub use azure_evidence::{
    verify_azure_tdx_evidence, AzureTdxEvidence, AzureTdxEvidenceClaims, AzureTdxEvidenceError,
};
pub use collateral::{Collateral, TcbStatus, MAX_COLLATERAL_LEN};
pub use pki::PckExtension;
pub use quote::{
    Header, QeReport, Quote, TdReport, HEADER_LEN, INTEL_QE_VENDOR_ID, QE_REPORT_LEN, TD_REPORT_LEN,
};
pub use validators::{
    quote_fmspc, runtime_data_ak, tdx_measurements, AzureTdxInstanceInfo, AzureTdxValidator,
    CollateralSource, QemuTdxDocument, QemuTdxValidator,
};

use collateral::{hex_field, IsvSvn, QeIdentity, TcbInfo, TcbLevel};
use pki::{ec_key, ecdsa_fixed_ok, Crl};

/// The public key (uncompressed P-256 point) of the Intel SGX Root CA
/// (`CN=Intel SGX Root CA, O=Intel Corporation, L=Santa Clara, ST=CA, C=US`, valid
/// 2018-05-21 to 2049-12-31), the root Go's `intelRootKey` default names. A fact about
/// Intel's PKI, pinned here; every TDX chain and CRL must lead to it.
pub const INTEL_SGX_ROOT_CA_KEY: [u8; 65] = [
    0x04, 0x0b, 0xa9, 0xc4, 0xc0, 0xc0, 0xc8, 0x61, 0x93, 0xa3, 0xfe, 0x23, 0xd6, 0xb0, 0x2c, 0xda,
    0x10, 0xa8, 0xbb, 0xd4, 0xe8, 0x8e, 0x48, 0xb4, 0x45, 0x85, 0x61, 0xa3, 0x6e, 0x70, 0x55, 0x25,
    0xf5, 0x67, 0x91, 0x8e, 0x2e, 0xdc, 0x88, 0xe4, 0x0d, 0x86, 0x0b, 0xd0, 0xcc, 0x4e, 0xe2, 0x6a,
    0xac, 0xc9, 0x88, 0xe5, 0x05, 0xa9, 0x53, 0x55, 0x8c, 0x45, 0x3f, 0x6b, 0x09, 0x04, 0xae, 0x73,
    0x94,
];

/// SHA-256 of the Intel SGX Root CA certificate's DER encoding (for display; trust is the key).
pub const INTEL_SGX_ROOT_CA_SHA256: &str =
    "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3";

/// Which certificate chain a failure is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Chain {
    /// The PCK chain embedded in the quote.
    Pck,
    /// `pck_crl_issuer_chain` of the collateral.
    PckCrlIssuer,
    /// `tcb_info_issuer_chain`.
    TcbInfoIssuer,
    /// `qe_identity_issuer_chain`.
    QeIdentityIssuer,
}

impl fmt::Display for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Chain::Pck => "PCK certificate chain",
            Chain::PckCrlIssuer => "PCK CRL issuer chain",
            Chain::TcbInfoIssuer => "TCB info issuer chain",
            Chain::QeIdentityIssuer => "QE identity issuer chain",
        })
    }
}

/// Why a TDX quote was refused; each variant is one check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TdxError {
    #[error("TDX quote is malformed: {0}")]
    Quote(String),
    #[error("TDX collateral is malformed: {0}")]
    Collateral(String),
    #[error("{chain}: {reason}")]
    Chain { chain: Chain, reason: String },
    #[error("{chain} ends in root key {actual}, the trusted Intel SGX root key is {expected}")]
    UntrustedRoot {
        chain: Chain,
        expected: String,
        actual: String,
    },
    #[error("{what} is not valid at {now}: valid from {not_before} until {not_after}")]
    Expired {
        what: String,
        now: String,
        not_before: String,
        not_after: String,
    },
    #[error("{crl}: {reason}")]
    Crl { crl: &'static str, reason: String },
    #[error("{cert} is revoked: serial {serial} is listed in the {crl}")]
    Revoked {
        cert: String,
        serial: String,
        crl: &'static str,
    },
    #[error("QE report signature does not verify with the PCK certificate's key")]
    QeReportSignature,
    #[error("QE binding: QE report data holds {bound}, SHA-256(attestation key ‖ QE auth data) is {computed}")]
    QeBinding { bound: String, computed: String },
    #[error("quote signature over header and TD report does not verify with the attestation key")]
    QuoteSignature,
    #[error("{what} signature does not verify with the TCB signing certificate's key")]
    CollateralSignature { what: &'static str },
    #[error("{field}: the PCK certificate has {pck}, the TCB info is for {tcb_info}")]
    PlatformMismatch {
        field: &'static str,
        pck: String,
        tcb_info: String,
    },
    #[error("QE identity: {0}")]
    QeIdentity(String),
    #[error("TCB info: {0}")]
    TcbInfo(String),
    #[error("TCB status {status} (platform {platform}, QE {qe}{module}) is not accepted (accepted: {accepted})")]
    TcbStatus {
        status: TcbStatus,
        platform: TcbStatus,
        qe: TcbStatus,
        module: String,
        accepted: String,
    },
    #[error("TD is debuggable (TD_ATTRIBUTES {td_attributes}); the policy forbids debug TDs")]
    Debug { td_attributes: String },
    #[error("{field} is {actual}, the policy requires {expected}")]
    Policy {
        field: &'static str,
        expected: String,
        actual: String,
    },
    #[error("report_data is {actual}, expected {expected}")]
    ReportData { expected: String, actual: String },
    #[error("{register} is {actual}, expected {expected}")]
    Measurement {
        register: &'static str,
        expected: String,
        actual: String,
    },
}

/// The check names of [`TdxError::reason`] (as printed by `constellation attestation verify`).
pub mod check {
    pub const QUOTE_FORMAT: &str = "tdx-quote-format";
    pub const COLLATERAL_FORMAT: &str = "tdx-collateral-format";
    pub const CERT_CHAIN: &str = "tdx-cert-chain";
    pub const ROOT: &str = "tdx-root";
    pub const VALIDITY: &str = "tdx-validity";
    pub const CRL: &str = "tdx-crl";
    pub const REVOCATION: &str = "tdx-revocation";
    pub const QE_REPORT_SIGNATURE: &str = "tdx-qe-report-signature";
    pub const QE_BINDING: &str = "tdx-qe-binding";
    pub const QUOTE_SIGNATURE: &str = "tdx-quote-signature";
    pub const COLLATERAL_SIGNATURE: &str = "tdx-collateral-signature";
    pub const PLATFORM: &str = "tdx-platform";
    pub const QE_IDENTITY: &str = "tdx-qe-identity";
    pub const TCB_INFO: &str = "tdx-tcb-info";
    pub const TCB_STATUS: &str = "tdx-tcb-status";
    pub const DEBUG: &str = "tdx-debug";
    pub const POLICY: &str = "tdx-policy";
    pub const MEASUREMENT: &str = "tdx-measurement";
    pub const REPORT_DATA: &str = "tdx-report-data";
}

impl TdxError {
    /// The name of the check that failed (one of [`check`]).
    pub fn check(&self) -> &'static str {
        match self {
            TdxError::Quote(_) => check::QUOTE_FORMAT,
            TdxError::Collateral(_) => check::COLLATERAL_FORMAT,
            TdxError::Chain { .. } => check::CERT_CHAIN,
            TdxError::UntrustedRoot { .. } => check::ROOT,
            TdxError::Expired { .. } => check::VALIDITY,
            TdxError::Crl { .. } => check::CRL,
            TdxError::Revoked { .. } => check::REVOCATION,
            TdxError::QeReportSignature => check::QE_REPORT_SIGNATURE,
            TdxError::QeBinding { .. } => check::QE_BINDING,
            TdxError::QuoteSignature => check::QUOTE_SIGNATURE,
            TdxError::CollateralSignature { .. } => check::COLLATERAL_SIGNATURE,
            TdxError::PlatformMismatch { .. } => check::PLATFORM,
            TdxError::QeIdentity(_) => check::QE_IDENTITY,
            TdxError::TcbInfo(_) => check::TCB_INFO,
            TdxError::TcbStatus { .. } => check::TCB_STATUS,
            TdxError::Debug { .. } => check::DEBUG,
            TdxError::Policy { .. } => check::POLICY,
            TdxError::Measurement { .. } => check::MEASUREMENT,
            TdxError::ReportData { .. } => check::REPORT_DATA,
        }
    }

    /// The failure as a [`crate::Reason`]: check, expected, actual.
    pub fn reason(&self) -> crate::Reason {
        use crate::Reason;
        let c = self.check();
        match self {
            TdxError::UntrustedRoot {
                chain,
                expected,
                actual,
            } => Reason::new(c, format!("{chain} ending in {expected}"), actual),
            TdxError::Expired {
                what,
                now,
                not_before,
                not_after,
            } => Reason::new(
                c,
                format!("{what} valid at {now}"),
                format!("valid {not_before} to {not_after}"),
            ),
            TdxError::QeBinding { bound, computed } => Reason::new(
                c,
                format!("QE report data = SHA-256(attestation key ‖ QE auth data) = {computed}"),
                bound,
            ),
            TdxError::PlatformMismatch {
                field,
                pck,
                tcb_info,
            } => Reason::new(
                c,
                format!("{field} {pck} (PCK certificate)"),
                format!("TCB info for {tcb_info}"),
            ),
            TdxError::TcbStatus {
                status, accepted, ..
            } => Reason::new(
                c,
                format!("one of {accepted}"),
                format!("{status} ({self})"),
            ),
            TdxError::Debug { td_attributes } => {
                Reason::new(c, "TD_ATTRIBUTES.DEBUG clear", td_attributes)
            }
            TdxError::Policy {
                field,
                expected,
                actual,
            } => Reason::new(c, format!("{field} {expected}"), actual),
            TdxError::Measurement {
                register,
                expected,
                actual,
            } => Reason::new(c, format!("{register} = {expected}"), actual),
            TdxError::ReportData { expected, actual } => Reason::new(c, expected, actual),
            other => Reason::new(c, "a genuine, current TDX quote", other),
        }
    }
}

/// What [`verify`] accepts beyond genuineness (Go's `azureTDX` config fields, plus
/// measurements and report data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdxPolicy {
    /// The trusted root's public key (`intelRootKey`); default [`INTEL_SGX_ROOT_CA_KEY`].
    pub root_key: Vec<u8>,
    /// TCB statuses accepted (`Revoked` never is). Default: `UpToDate` only, as Go's
    /// verifier (go-tdx-guest) requires of platform and QE when it checks collateral.
    pub accepted_tcb_statuses: BTreeSet<TcbStatus>,
    /// `qeSVN`: minimum header QE SVN.
    pub min_qe_svn: u16,
    /// `pceSVN`: minimum header PCE SVN.
    pub min_pce_svn: u16,
    /// `teeTCBSVN`: component-wise minimum of the TD report's `tee_tcb_svn`.
    pub min_tee_tcb_svn: [u8; 16],
    /// `qeVendorID`: default Intel's.
    pub qe_vendor_id: Option<[u8; 16]>,
    /// `mrSeam`: expected TDX module measurement.
    pub mr_seam: Option<[u8; 48]>,
    /// `xfam`: expected extended features mask.
    pub xfam: Option<[u8; 8]>,
    /// Debug TDs (`TD_ATTRIBUTES.DEBUG`) are refused unless set.
    pub allow_debug: bool,
    /// Expected MRTD and RTMR0..3 (validators compare measurements maps instead).
    pub mrtd: Option<[u8; 48]>,
    pub rtmr: [Option<[u8; 48]>; 4],
    /// Expected `report_data` (all 64 bytes).
    pub report_data: Option<[u8; 64]>,
}

impl Default for TdxPolicy {
    fn default() -> Self {
        Self {
            root_key: INTEL_SGX_ROOT_CA_KEY.to_vec(),
            accepted_tcb_statuses: [TcbStatus::UpToDate].into_iter().collect(),
            min_qe_svn: 0,
            min_pce_svn: 0,
            min_tee_tcb_svn: [0; 16],
            qe_vendor_id: Some(INTEL_QE_VENDOR_ID),
            mr_seam: None,
            xfam: None,
            allow_debug: false,
            mrtd: None,
            rtmr: [None; 4],
            report_data: None,
        }
    }
}

impl TdxPolicy {
    /// Sets the trusted root from a PEM or DER certificate (Go's `intelRootKey` is a PEM
    /// certificate); its public key becomes [`TdxPolicy::root_key`].
    pub fn with_root_certificate(mut self, cert: &[u8]) -> Result<Self, TdxError> {
        let der = if cert.starts_with(b"-----") {
            der::pem_chain(cert)
                .map_err(|e| TdxError::Collateral(format!("intelRootKey: {e}")))?
                .remove(0)
        } else {
            cert.to_vec()
        };
        let (_, c) = X509Certificate::from_der(&der)
            .map_err(|e| TdxError::Collateral(format!("intelRootKey does not parse: {e}")))?;
        self.root_key = ec_key(&c).to_vec();
        Ok(self)
    }
}

/// What a verified quote says, with Intel's TCB judgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdxClaims {
    pub header: Header,
    pub td_report: TdReport,
    /// Converged status of platform, TDX module and QE.
    pub tcb_status: TcbStatus,
    pub platform_tcb_status: TcbStatus,
    pub qe_tcb_status: TcbStatus,
    /// Status from the TDX module identity, when the TCB info judges the module separately.
    pub module_tcb_status: Option<TcbStatus>,
    pub advisory_ids: Vec<String>,
    /// `tcbDate` of the matched platform TCB level.
    pub tcb_date: String,
    pub tcb_evaluation_data_number: u32,
    pub pck: PckExtension,
    pub qe_isv_svn: u16,
    /// Earliest `nextUpdate`/`notAfter` of everything the verdict relied on (unix seconds).
    pub collateral_valid_until: i64,
}

impl TdxClaims {
    /// The claims as JSON (hex byte strings), for the CLI.
    pub fn to_json(&self) -> serde_json::Value {
        let r = &self.td_report;
        let h = &self.header;
        serde_json::json!({
            "quote_version": h.version,
            "qe_svn": h.qe_svn,
            "pce_svn": h.pce_svn,
            "qe_vendor_id": hex::encode(h.qe_vendor_id),
            "tee_tcb_svn": hex::encode(r.tee_tcb_svn),
            "mr_seam": hex::encode(r.mr_seam),
            "mr_signer_seam": hex::encode(r.mr_signer_seam),
            "seam_attributes": hex::encode(r.seam_attributes),
            "td_attributes": hex::encode(r.td_attributes),
            "debug": r.debug(),
            "xfam": hex::encode(r.xfam),
            "mrtd": hex::encode(r.mrtd),
            "mr_config_id": hex::encode(r.mr_config_id),
            "mr_owner": hex::encode(r.mr_owner),
            "mr_owner_config": hex::encode(r.mr_owner_config),
            "rtmr0": hex::encode(r.rtmr[0]),
            "rtmr1": hex::encode(r.rtmr[1]),
            "rtmr2": hex::encode(r.rtmr[2]),
            "rtmr3": hex::encode(r.rtmr[3]),
            "report_data": hex::encode(r.report_data),
            "tcb_status": self.tcb_status.as_str(),
            "platform_tcb_status": self.platform_tcb_status.as_str(),
            "qe_tcb_status": self.qe_tcb_status.as_str(),
            "module_tcb_status": self.module_tcb_status.map(TcbStatus::as_str),
            "advisory_ids": self.advisory_ids,
            "tcb_date": self.tcb_date,
            "tcb_evaluation_data_number": self.tcb_evaluation_data_number,
            "fmspc": hex::encode(self.pck.fmspc),
            "pce_id": hex::encode(self.pck.pce_id),
            "pck_sgx_tcb_components": hex::encode(self.pck.sgx_tcb_components),
            "pck_pce_svn": self.pck.pce_svn,
            "qe_isv_svn": self.qe_isv_svn,
            "collateral_valid_until": fmt_unix(self.collateral_valid_until),
        })
    }
}

/// Verifies `quote` with `collateral` at `now` (unix seconds) under `policy`.
pub fn verify(
    quote: &Quote<'_>,
    collateral: &Collateral,
    now: i64,
    policy: &TdxPolicy,
) -> Result<TdxClaims, TdxError> {
    let root_key = policy.root_key.as_slice();
    let mut valid_until = i64::MAX;

    // 1. Root CA CRL, by the pinned key. Its issuer name is checked against the PCK chain's
    // root below (same name, same key).
    let pck_chain = pki::verify_chain(
        Chain::Pck,
        der::pem_chain(quote.pck_chain_pem).map_err(|reason| TdxError::Chain {
            chain: Chain::Pck,
            reason,
        })?,
        root_key,
        now,
    )?;
    let n = pck_chain.ders.len();
    let root = pck_chain.cert(n - 1)?;
    let root_crl = Crl::verify(
        "root CA CRL",
        &collateral.root_ca_crl,
        root.subject().as_raw(),
        root_key,
        now,
    )?;
    let leaf = pck_chain.cert(0)?;
    let pck_ca = pck_chain.cert(1)?;
    for (i, d) in pck_chain.ders.iter().enumerate().skip(1).take(n - 2) {
        let (_, c) = X509Certificate::from_der(d)
            .map_err(|e| TdxError::Quote(format!("certificate #{i}: {e}")))?;
        root_crl.check("PCK CA certificate", &c)?;
    }
    valid_until = valid_until.min(chain_not_after(&pck_chain)?);

    // 2. PCK CRL: its issuer chain must verify and lead from the PCK leaf's issuer.
    let crl_chain = pki::verify_chain(
        Chain::PckCrlIssuer,
        der::pem_chain(collateral.pck_crl_issuer_chain.as_bytes()).map_err(|reason| {
            TdxError::Chain {
                chain: Chain::PckCrlIssuer,
                reason,
            }
        })?,
        root_key,
        now,
    )?;
    let crl_issuer = crl_chain.cert(0)?;
    if crl_issuer.subject().as_raw() != pck_ca.subject().as_raw()
        || ec_key(&crl_issuer) != ec_key(&pck_ca)
    {
        return Err(TdxError::Chain {
            chain: Chain::PckCrlIssuer,
            reason: format!(
                "starts with {}, but the PCK certificate was issued by {}",
                crl_issuer.subject(),
                pck_ca.subject()
            ),
        });
    }
    root_crl.check("PCK CRL issuer certificate", &crl_issuer)?;
    let pck_crl = Crl::verify(
        "PCK CRL",
        &collateral.pck_crl,
        pck_ca.subject().as_raw(),
        ec_key(&pck_ca),
        now,
    )?;
    pck_crl.check("PCK certificate", &leaf)?;
    valid_until = valid_until.min(crl_next_update(&collateral.pck_crl));
    valid_until = valid_until.min(crl_next_update(&collateral.root_ca_crl));
    let pck = PckExtension::from_cert(&leaf)?;

    // 3. QE report and its binding to the attestation key.
    if !ecdsa_fixed_ok(
        ec_key(&leaf),
        quote.qe_report_raw,
        &quote.qe_report_signature,
    ) {
        return Err(TdxError::QeReportSignature);
    }
    let mut h = Sha256::new();
    h.update(quote.attestation_key);
    h.update(quote.qe_auth_data);
    let computed = h.finalize();
    let bound = &quote.qe_report.report_data[..32];
    if !crate::quote::ct_eq(&computed, bound) {
        return Err(TdxError::QeBinding {
            bound: hex::encode(bound),
            computed: hex::encode(computed),
        });
    }

    // 4. The quote signature.
    let mut att_key = [0u8; 65];
    att_key[0] = 0x04;
    att_key[1..].copy_from_slice(&quote.attestation_key);
    if !ecdsa_fixed_ok(&att_key, quote.signed, &quote.signature) {
        return Err(TdxError::QuoteSignature);
    }

    // 5. TCB info and QE identity.
    let tcb_info: TcbInfo = signed_json(
        Chain::TcbInfoIssuer,
        "TCB info",
        &collateral.tcb_info_issuer_chain,
        &collateral.tcb_info,
        &collateral.tcb_info_signature,
        &root_crl,
        root_key,
        now,
        &mut valid_until,
    )?;
    let qe_identity: QeIdentity = signed_json(
        Chain::QeIdentityIssuer,
        "QE identity",
        &collateral.qe_identity_issuer_chain,
        &collateral.qe_identity,
        &collateral.qe_identity_signature,
        &root_crl,
        root_key,
        now,
        &mut valid_until,
    )?;
    check_window(
        "TCB info",
        &tcb_info.issue_date,
        &tcb_info.next_update,
        now,
        &mut valid_until,
    )?;
    check_window(
        "QE identity",
        &qe_identity.issue_date,
        &qe_identity.next_update,
        now,
        &mut valid_until,
    )?;
    if tcb_info.id != "TDX" || tcb_info.version != 3 {
        return Err(TdxError::TcbInfo(format!(
            "id {:?} version {}, expected \"TDX\" version 3",
            tcb_info.id, tcb_info.version
        )));
    }
    if qe_identity.id != "TD_QE" || qe_identity.version != 2 {
        return Err(TdxError::QeIdentity(format!(
            "id {:?} version {}, expected \"TD_QE\" version 2",
            qe_identity.id, qe_identity.version
        )));
    }
    let fmspc: [u8; 6] = hex_field("TCB info fmspc", &tcb_info.fmspc)?;
    if fmspc != pck.fmspc {
        return Err(TdxError::PlatformMismatch {
            field: "FMSPC",
            pck: hex::encode_upper(pck.fmspc),
            tcb_info: tcb_info.fmspc.clone(),
        });
    }
    let pce_id: [u8; 2] = hex_field("TCB info pceId", &tcb_info.pce_id)?;
    if pce_id != pck.pce_id {
        return Err(TdxError::PlatformMismatch {
            field: "PCE ID",
            pck: hex::encode_upper(pck.pce_id),
            tcb_info: tcb_info.pce_id.clone(),
        });
    }

    // 6. TCB status.
    let report = &quote.td_report;
    let qe_level = qe_tcb_level(&qe_identity, &quote.qe_report)?;
    let platform = platform_tcb_level(&tcb_info, &pck, report)?;
    let module = module_tcb_level(&tcb_info, report)?;
    let mut status = platform.tcb_status.converge(qe_level.tcb_status);
    let mut advisory_ids = platform.advisory_ids.clone();
    let mut extend = |ids: &[String]| {
        for id in ids {
            if !advisory_ids.contains(id) {
                advisory_ids.push(id.clone());
            }
        }
    };
    extend(&qe_level.advisory_ids);
    if let Some(m) = module {
        status = status.max(m.tcb_status);
        extend(&m.advisory_ids);
    }
    if status == TcbStatus::Revoked || !policy.accepted_tcb_statuses.contains(&status) {
        return Err(TdxError::TcbStatus {
            status,
            platform: platform.tcb_status,
            qe: qe_level.tcb_status,
            module: module.map_or(String::new(), |m| format!(", TDX module {}", m.tcb_status)),
            accepted: policy
                .accepted_tcb_statuses
                .iter()
                .filter(|s| **s != TcbStatus::Revoked)
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }

    // 7. Policy.
    check_policy(quote, policy)?;

    Ok(TdxClaims {
        header: quote.header.clone(),
        td_report: quote.td_report.clone(),
        tcb_status: status,
        platform_tcb_status: platform.tcb_status,
        qe_tcb_status: qe_level.tcb_status,
        module_tcb_status: module.map(|m| m.tcb_status),
        advisory_ids,
        tcb_date: platform.tcb_date.clone(),
        tcb_evaluation_data_number: tcb_info.tcb_evaluation_data_number,
        pck,
        qe_isv_svn: quote.qe_report.isv_svn,
        collateral_valid_until: valid_until,
    })
}

fn chain_not_after(chain: &pki::VerifiedChain) -> Result<i64, TdxError> {
    let mut min = i64::MAX;
    for i in 0..chain.ders.len() {
        min = min.min(chain.cert(i)?.validity().not_after.timestamp());
    }
    Ok(min)
}

fn crl_next_update(der: &[u8]) -> i64 {
    x509_parser::revocation_list::CertificateRevocationList::from_der(der)
        .ok()
        .and_then(|(_, c)| c.next_update())
        .map_or(i64::MAX, |t| t.timestamp())
}

/// Verifies a signed collateral body: its issuer chain (to the root, not revoked), the raw
/// r‖s signature over the exact text, then decodes it.
#[allow(clippy::too_many_arguments)]
fn signed_json<T: serde::de::DeserializeOwned>(
    chain: Chain,
    what: &'static str,
    chain_pem: &str,
    body: &str,
    sig: &[u8],
    root_crl: &Crl,
    root_key: &[u8],
    now: i64,
    valid_until: &mut i64,
) -> Result<T, TdxError> {
    let verified = pki::verify_chain(
        chain,
        der::pem_chain(chain_pem.as_bytes()).map_err(|reason| TdxError::Chain { chain, reason })?,
        root_key,
        now,
    )?;
    let signer = verified.cert(0)?;
    for i in 0..verified.ders.len() - 1 {
        root_crl.check(&format!("{chain} certificate #{i}"), &verified.cert(i)?)?;
    }
    *valid_until = (*valid_until).min(chain_not_after(&verified)?);
    if sig.len() != 64 || !ecdsa_fixed_ok(ec_key(&signer), body.as_bytes(), sig) {
        return Err(TdxError::CollateralSignature { what });
    }
    serde_json::from_str(body).map_err(|e| TdxError::Collateral(format!("{what}: {e}")))
}

fn check_window(
    what: &str,
    issue: &str,
    next: &str,
    now: i64,
    valid_until: &mut i64,
) -> Result<(), TdxError> {
    let parse = |field: &str, s: &str| {
        parse_rfc3339(s)
            .ok_or_else(|| TdxError::Collateral(format!("{what} {field} {s:?} is not RFC 3339")))
    };
    let (from, until) = (parse("issueDate", issue)?, parse("nextUpdate", next)?);
    if now < from || now > until {
        return Err(TdxError::Expired {
            what: what.to_string(),
            now: fmt_unix(now),
            not_before: fmt_unix(from),
            not_after: fmt_unix(until),
        });
    }
    *valid_until = (*valid_until).min(until);
    Ok(())
}

fn qe_tcb_level<'a>(id: &'a QeIdentity, qe: &QeReport) -> Result<&'a TcbLevel<IsvSvn>, TdxError> {
    let mrsigner: [u8; 32] = hex_field("QE identity mrsigner", &id.mrsigner)?;
    if mrsigner != qe.mr_signer {
        return Err(TdxError::QeIdentity(format!(
            "QE MRSIGNER is {}, expected {}",
            hex::encode(qe.mr_signer),
            hex::encode(mrsigner)
        )));
    }
    if qe.isv_prod_id != id.isvprodid {
        return Err(TdxError::QeIdentity(format!(
            "QE ISVPRODID is {}, expected {}",
            qe.isv_prod_id, id.isvprodid
        )));
    }
    let misc: [u8; 4] = hex_field("QE identity miscselect", &id.miscselect)?;
    let misc_mask: [u8; 4] = hex_field("QE identity miscselectMask", &id.miscselect_mask)?;
    let (misc, misc_mask) = (u32::from_le_bytes(misc), u32::from_le_bytes(misc_mask));
    if qe.misc_select & misc_mask != misc & misc_mask {
        return Err(TdxError::QeIdentity(format!(
            "QE MISCSELECT {:08x} does not match {misc:08x} under mask {misc_mask:08x}",
            qe.misc_select
        )));
    }
    let attrs: [u8; 16] = hex_field("QE identity attributes", &id.attributes)?;
    let mask: [u8; 16] = hex_field("QE identity attributesMask", &id.attributes_mask)?;
    if (0..16).any(|i| qe.attributes[i] & mask[i] != attrs[i] & mask[i]) {
        return Err(TdxError::QeIdentity(format!(
            "QE ATTRIBUTES {} do not match {} under mask {}",
            hex::encode(qe.attributes),
            hex::encode(attrs),
            hex::encode(mask)
        )));
    }
    id.tcb_levels
        .iter()
        .find(|l| qe.isv_svn >= l.tcb.isvsvn)
        .ok_or_else(|| {
            TdxError::QeIdentity(format!(
                "QE ISVSVN {} is below every TCB level ({:?})",
                qe.isv_svn,
                id.tcb_levels
                    .iter()
                    .map(|l| l.tcb.isvsvn)
                    .collect::<Vec<_>>()
            ))
        })
}

fn platform_tcb_level<'a>(
    info: &'a TcbInfo,
    pck: &PckExtension,
    report: &TdReport,
) -> Result<&'a TcbLevel<collateral::PlatformTcb>, TdxError> {
    // With a TDX module version (tee_tcb_svn[1]) > 0, bytes 0 and 1 are the module's SVN
    // and version, judged by the module identity; the levels judge the rest.
    let tdx_from = if report.tee_tcb_svn[1] > 0 { 2 } else { 0 };
    for level in &info.tcb_levels {
        let t = &level.tcb;
        if t.sgxtcbcomponents.len() != 16 || t.tdxtcbcomponents.len() != 16 {
            return Err(TdxError::TcbInfo(format!(
                "TCB level {} has {} SGX and {} TDX components, expected 16 each",
                level.tcb_date,
                t.sgxtcbcomponents.len(),
                t.tdxtcbcomponents.len()
            )));
        }
        let sgx_ok = (0..16).all(|i| pck.sgx_tcb_components[i] >= t.sgxtcbcomponents[i].svn);
        let tdx_ok = (tdx_from..16).all(|i| report.tee_tcb_svn[i] >= t.tdxtcbcomponents[i].svn);
        if sgx_ok && pck.pce_svn >= t.pcesvn && tdx_ok {
            return Ok(level);
        }
    }
    Err(TdxError::TcbInfo(format!(
        "no TCB level matches SGX components {}, PCE SVN {}, TEE TCB SVN {}",
        hex::encode(pck.sgx_tcb_components),
        pck.pce_svn,
        hex::encode(report.tee_tcb_svn)
    )))
}

fn module_tcb_level<'a>(
    info: &'a TcbInfo,
    report: &TdReport,
) -> Result<Option<&'a TcbLevel<IsvSvn>>, TdxError> {
    let base = info
        .tdx_module
        .as_ref()
        .ok_or_else(|| TdxError::TcbInfo("no tdxModule".into()))?;
    let version = report.tee_tcb_svn[1];
    let identity = if version > 0 && !info.tdx_module_identities.is_empty() {
        let id = format!("TDX_{version:02X}");
        Some(
            info.tdx_module_identities
                .iter()
                .find(|m| m.id.eq_ignore_ascii_case(&id))
                .ok_or_else(|| TdxError::TcbInfo(format!("no TDX module identity {id}")))?,
        )
    } else {
        None
    };
    let (mrsigner, attrs, mask) = match identity {
        Some(m) => (&m.mrsigner, &m.attributes, &m.attributes_mask),
        None => (&base.mrsigner, &base.attributes, &base.attributes_mask),
    };
    let mrsigner: [u8; 48] = hex_field("TDX module mrsigner", mrsigner)?;
    let attrs: [u8; 8] = hex_field("TDX module attributes", attrs)?;
    let mask: [u8; 8] = hex_field("TDX module attributesMask", mask)?;
    if mrsigner != report.mr_signer_seam {
        return Err(TdxError::TcbInfo(format!(
            "TDX module MRSIGNER is {}, expected {}",
            hex::encode(report.mr_signer_seam),
            hex::encode(mrsigner)
        )));
    }
    if (0..8).any(|i| report.seam_attributes[i] & mask[i] != attrs[i] & mask[i]) {
        return Err(TdxError::TcbInfo(format!(
            "SEAM attributes {} do not match {} under mask {}",
            hex::encode(report.seam_attributes),
            hex::encode(attrs),
            hex::encode(mask)
        )));
    }
    let Some(identity) = identity else {
        return Ok(None);
    };
    let svn = u16::from(report.tee_tcb_svn[0]);
    identity
        .tcb_levels
        .iter()
        .find(|l| svn >= l.tcb.isvsvn)
        .map(Some)
        .ok_or_else(|| {
            TdxError::TcbInfo(format!(
                "TDX module {} SVN {svn} is below every TCB level",
                identity.id
            ))
        })
}

fn check_policy(quote: &Quote<'_>, p: &TdxPolicy) -> Result<(), TdxError> {
    let h = &quote.header;
    let r = &quote.td_report;
    let policy = |field, expected: String, actual: String| TdxError::Policy {
        field,
        expected,
        actual,
    };
    if h.qe_svn < p.min_qe_svn {
        return Err(policy(
            "QE SVN (qeSVN)",
            format!("≥ {}", p.min_qe_svn),
            h.qe_svn.to_string(),
        ));
    }
    if h.pce_svn < p.min_pce_svn {
        return Err(policy(
            "PCE SVN (pceSVN)",
            format!("≥ {}", p.min_pce_svn),
            h.pce_svn.to_string(),
        ));
    }
    if (0..16).any(|i| r.tee_tcb_svn[i] < p.min_tee_tcb_svn[i]) {
        return Err(policy(
            "TEE TCB SVN (teeTCBSVN)",
            format!("≥ {} in every byte", hex::encode(p.min_tee_tcb_svn)),
            hex::encode(r.tee_tcb_svn),
        ));
    }
    if let Some(v) = p.qe_vendor_id.filter(|v| *v != h.qe_vendor_id) {
        return Err(policy(
            "QE vendor ID (qeVendorID)",
            hex::encode(v),
            hex::encode(h.qe_vendor_id),
        ));
    }
    if let Some(v) = p.mr_seam.filter(|v| *v != r.mr_seam) {
        return Err(policy(
            "MRSEAM (mrSeam)",
            hex::encode(v),
            hex::encode(r.mr_seam),
        ));
    }
    if let Some(v) = p.xfam.filter(|v| *v != r.xfam) {
        return Err(policy("XFAM (xfam)", hex::encode(v), hex::encode(r.xfam)));
    }
    if r.debug() && !p.allow_debug {
        return Err(TdxError::Debug {
            td_attributes: hex::encode(r.td_attributes),
        });
    }
    let registers = [
        ("MRTD", p.mrtd, r.mrtd),
        ("RTMR0", p.rtmr[0], r.rtmr[0]),
        ("RTMR1", p.rtmr[1], r.rtmr[1]),
        ("RTMR2", p.rtmr[2], r.rtmr[2]),
        ("RTMR3", p.rtmr[3], r.rtmr[3]),
    ];
    for (register, want, got) in registers {
        if let Some(want) = want.filter(|w| *w != got) {
            return Err(TdxError::Measurement {
                register,
                expected: hex::encode(want),
                actual: hex::encode(got),
            });
        }
    }
    if let Some(want) = p
        .report_data
        .filter(|w| !crate::quote::ct_eq(w, &r.report_data))
    {
        return Err(TdxError::ReportData {
            expected: hex::encode(want),
            actual: hex::encode(r.report_data),
        });
    }
    Ok(())
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.frac]Z` (or a `±HH:MM` offset) to unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if !t.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let ob = rest.as_bytes();
            if ob.len() != 6 || ob[3] != b':' || !matches!(ob[0], b'+' | b'-') {
                return None;
            }
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            let o = oh * 3600 + om * 60;
            if ob[0] == b'-' {
                -o
            } else {
                o
            }
        }
    };
    Some(days_from_civil(y, mo, d) * 86400 + hh * 3600 + mm * 60 + ss - offset)
}

/// Formats unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn fmt_unix(t: i64) -> String {
    let days = t.div_euclid(86400);
    let secs = t.rem_euclid(86400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

// Howard Hinnant's civil-calendar algorithms (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip() {
        let t = parse_rfc3339("2025-06-20T10:16:03Z").unwrap();
        assert_eq!(t, 1_750_414_563);
        assert_eq!(fmt_unix(t), "2025-06-20T10:16:03Z");
        assert_eq!(parse_rfc3339("2025-06-20T12:16:03+02:00"), Some(t));
        assert_eq!(parse_rfc3339("2025-06-20T10:16:03.5Z"), Some(t));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(fmt_unix(-1), "1969-12-31T23:59:59Z");
        for bad in [
            "",
            "2025-06-20",
            "2025-13-20T10:16:03Z",
            "2025-06-20T10:16:03",
            "2025-06-20T10:16:03+0200",
            "+025-06-20T10:16:03Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn converge_takes_the_worse_status() {
        use TcbStatus::*;
        assert_eq!(UpToDate.converge(UpToDate), UpToDate);
        assert_eq!(UpToDate.converge(OutOfDate), OutOfDate);
        assert_eq!(SWHardeningNeeded.converge(UpToDate), SWHardeningNeeded);
        assert_eq!(
            ConfigurationNeeded.converge(OutOfDate),
            OutOfDateConfigurationNeeded
        );
        assert_eq!(OutOfDate.converge(Revoked), Revoked);
    }
}
