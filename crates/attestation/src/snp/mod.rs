//! AMD SEV-SNP: attestation reports, the AMD certificate chain and the guest policy.
//!
//! [`verify_report`] decides whether a report is genuine: the leaf (VCEK or VLEK, as the
//! report's `signer_info` says) chains through the ASK (VCEK) or ASVK (VLEK) to a trusted ARK
//! ([`AmdRoots`]: the pinned ARKs of Milan, Genoa and Turin, or the config's `amdRootKey`),
//! every certificate valid at an explicit `now`, all RSASSA-PSS SHA-384; the report's ECDSA
//! P-384 signature verifies with the leaf key; the leaf's TCB extensions equal the report's
//! `reported_tcb`; the VCEK's hardware ID equals the report's `chip_id` (unless masked); on
//! report versions 3 and later the CPUID family matches the chain's product.
//!
//! [`SnpPolicy::check`] decides whether a genuine report is acceptable (go-sev-guest
//! `validate.SnpAttestation` with the options Constellation passes): debug and migration agent
//! forbidden, SMT allowed, VMPL 0, committed ≤ current TCB (provisional firmware allowed),
//! minimum launch TCB (and on Azure minimum reported TCB), accepted `id_key_digest`s with the
//! enforcement policy, and `report_data`.
//!
//! Every failure is a [`Reason`] naming the check with expected and actual values.

pub mod certs;
pub mod report;
pub mod roots;

use std::fmt;

use ring::signature::{self, UnparsedPublicKey};
use x509_parser::prelude::ASN1Time;

pub use certs::{AmdCert, CertError, Role};
pub use report::{Report, ReportError, SigningKey, Tcb};

use crate::Reason;

/// Names of the checks, as they appear in [`Reason::check`].
pub mod check {
    pub const REPORT_FORMAT: &str = "snp-report-format";
    pub const CERTIFICATE_FORMAT: &str = "snp-certificate-format";
    pub const CERT_CHAIN: &str = "snp-cert-chain";
    pub const CERT_VALIDITY: &str = "snp-cert-validity";
    pub const PRODUCT: &str = "snp-product";
    pub const SIGNING_KEY: &str = "snp-signing-key";
    pub const REPORT_SIGNATURE: &str = "snp-report-signature";
    pub const REPORTED_TCB: &str = "snp-reported-tcb";
    pub const CHIP_ID: &str = "snp-chip-id";
    pub const COMMITTED_TCB: &str = "snp-committed-tcb";
    pub const CURRENT_TCB: &str = "snp-current-tcb";
    pub const FIRMWARE_VERSION: &str = "snp-firmware-version";
    pub const MINIMUM_LAUNCH_TCB: &str = "snp-minimum-launch-tcb";
    pub const MINIMUM_TCB: &str = "snp-minimum-tcb";
    pub const DEBUG: &str = "snp-policy-debug";
    pub const MIGRATION_AGENT: &str = "snp-policy-migration-agent";
    pub const SMT: &str = "snp-policy-smt";
    pub const POLICY_RESERVED: &str = "snp-policy-reserved-bit";
    pub const CXL: &str = "snp-policy-cxl";
    pub const VMPL: &str = "snp-vmpl";
    pub const ID_KEY_DIGEST: &str = "snp-id-key-digest";
    pub const REPORT_DATA: &str = "snp-report-data";
}

/// AMD EPYC product families with SEV-SNP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Product {
    Milan,
    Genoa,
    Turin,
}

impl Product {
    pub const ALL: [Product; 3] = [Product::Milan, Product::Genoa, Product::Turin];

    /// `Milan`, `Genoa`, `Turin` (also the prefix of a product name such as `Milan-B0`).
    pub fn from_name(s: &str) -> Option<Product> {
        match s.split('-').next().unwrap_or_default() {
            "Milan" => Some(Product::Milan),
            "Genoa" => Some(Product::Genoa),
            "Turin" => Some(Product::Turin),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Product::Milan => "Milan",
            Product::Genoa => "Genoa",
            Product::Turin => "Turin",
        }
    }
}

impl fmt::Display for Product {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Trusted AMD root keys, per product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmdRoots {
    /// `(product, RSA public key as PKCS#1 DER)`.
    keys: Vec<(Product, Vec<u8>)>,
}

impl AmdRoots {
    /// The pinned ARKs of Milan, Genoa and Turin ([`roots`]).
    pub fn builtin() -> Self {
        let keys = [
            (Product::Milan, roots::ARK_MILAN_RSA_PUBLIC_KEY),
            (Product::Genoa, roots::ARK_GENOA_RSA_PUBLIC_KEY),
            (Product::Turin, roots::ARK_TURIN_RSA_PUBLIC_KEY),
        ]
        .into_iter()
        // Invariant: the constants are hex (checked by a test).
        .map(|(p, k)| (p, hex::decode(k).unwrap_or_default()))
        .collect();
        Self { keys }
    }

    /// Trusts exactly the ARK(s) in `pem` (the config's `amdRootKey`), which must be
    /// self-signed ARK certificates valid at `now`.
    pub fn from_ark_pem(pem: &[u8], now: i64) -> Result<Self, Reason> {
        let certs = AmdCert::parse_many(pem)
            .map_err(|e| Reason::new(check::CERTIFICATE_FORMAT, "an ARK certificate", e))?;
        let mut keys = Vec::new();
        for c in certs {
            let Role::Ark(p) = c.role else {
                return Err(Reason::new(
                    check::CERT_CHAIN,
                    "an ARK certificate as amdRootKey",
                    format!("{} ({})", c.role.name(), c.subject_cn),
                ));
            };
            check_validity(&c, now)?;
            c.verify_signed_by(&c.public_key).map_err(|e| {
                Reason::new(
                    check::CERT_CHAIN,
                    "ARK self-signed",
                    format!("ARK ({p}): {e}"),
                )
            })?;
            keys.push((p, c.public_key));
        }
        Ok(Self { keys })
    }

    /// Trusts exactly these `(product, RSA public key as PKCS#1 DER)` pairs.
    pub fn from_keys(keys: Vec<(Product, Vec<u8>)>) -> Self {
        Self { keys }
    }

    /// The trusted key for `product`.
    pub fn key(&self, product: Product) -> Option<&[u8]> {
        self.keys
            .iter()
            .find(|(p, _)| *p == product)
            .map(|(_, k)| k.as_slice())
    }

    pub fn products(&self) -> Vec<Product> {
        self.keys.iter().map(|(p, _)| *p).collect()
    }
}

impl Default for AmdRoots {
    fn default() -> Self {
        Self::builtin()
    }
}

/// Formats Unix seconds for messages.
pub fn fmt_time(t: i64) -> String {
    ASN1Time::from_timestamp(t)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| format!("{t} (Unix seconds)"))
}

fn check_validity(c: &AmdCert, now: i64) -> Result<(), Reason> {
    if c.valid_at(now) {
        Ok(())
    } else {
        Err(Reason::new(
            check::CERT_VALIDITY,
            format!("{} valid at {}", c.role.name(), fmt_time(now)),
            format!(
                "valid from {} to {}",
                fmt_time(c.not_before),
                fmt_time(c.not_after)
            ),
        ))
    }
}

/// A report whose signature, chain and TCB binding verified.
#[derive(Debug, Clone)]
pub struct VerifiedReport {
    pub report: Report,
    pub product: Product,
    pub signing_key: SigningKey,
    pub leaf: AmdCert,
}

impl VerifiedReport {
    pub fn reported_tcb(&self) -> Tcb {
        Tcb::decode(self.report.reported_tcb, self.product)
    }
    pub fn launch_tcb(&self) -> Tcb {
        Tcb::decode(self.report.launch_tcb, self.product)
    }
    pub fn current_tcb(&self) -> Tcb {
        Tcb::decode(self.report.current_tcb, self.product)
    }
    pub fn committed_tcb(&self) -> Tcb {
        Tcb::decode(self.report.committed_tcb, self.product)
    }

    /// Decoded claims for display (CLI `attestation verify`).
    pub fn claims(&self) -> serde_json::Value {
        let r = &self.report;
        serde_json::json!({
            "product": self.product.as_str(),
            "report_version": r.version,
            "signing_key": self.signing_key.as_str(),
            "vmpl": r.vmpl,
            "guest_svn": r.guest_svn,
            "policy": format!("{:#x}", r.policy),
            "policy_debug": r.debug_allowed(),
            "policy_migrate_ma": r.migrate_ma_allowed(),
            "policy_smt": r.smt_allowed(),
            "policy_abi": format!("{}.{}", r.policy_abi().0, r.policy_abi().1),
            "platform_info": format!("{:#x}", r.platform_info),
            "measurement": hex::encode(r.measurement),
            "host_data": hex::encode(r.host_data),
            "report_data": hex::encode(r.report_data),
            "id_key_digest": hex::encode(r.id_key_digest),
            "author_key_digest": hex::encode(r.author_key_digest),
            "family_id": hex::encode(r.family_id),
            "image_id": hex::encode(r.image_id),
            "chip_id": hex::encode(r.chip_id),
            "reported_tcb": tcb_json(&self.reported_tcb()),
            "launch_tcb": tcb_json(&self.launch_tcb()),
            "current_tcb": tcb_json(&self.current_tcb()),
            "committed_tcb": tcb_json(&self.committed_tcb()),
            "firmware_current": format!("{}.{}.{}", r.current_version.2, r.current_version.1, r.current_version.0),
            "leaf_not_after": fmt_time(self.leaf.not_after),
        })
    }
}

fn tcb_json(t: &Tcb) -> serde_json::Value {
    let mut v = serde_json::json!({
        "bootloader": t.bootloader, "tee": t.tee, "snp": t.snp, "microcode": t.microcode,
    });
    if let (Some(fmc), Some(o)) = (t.fmc, v.as_object_mut()) {
        o.insert("fmc".into(), fmc.into());
    }
    v
}

/// Picks the certificate with `want` role among `certs`.
fn find(certs: &[AmdCert], want: impl Fn(Role) -> bool) -> Vec<&AmdCert> {
    certs.iter().filter(|c| want(c.role)).collect()
}

/// Verifies a report (parsed) with the given certificates (leaf, intermediate and optionally
/// the ARK, in any order) against `roots` at `now` (Unix seconds). See the module docs.
pub fn verify_report(
    report: &Report,
    certs: &[AmdCert],
    roots: &AmdRoots,
    now: i64,
) -> Result<VerifiedReport, Reason> {
    let signing_key = report.signing_key().map_err(|v| {
        Reason::new(
            check::SIGNING_KEY,
            "signer_info signing key 0 (VCEK) or 1 (VLEK)",
            v.to_string(),
        )
    })?;
    let (leaf_role, leaf_name) = match signing_key {
        SigningKey::Vcek => (Role::Vcek, "VCEK"),
        SigningKey::Vlek => (Role::Vlek, "VLEK"),
        SigningKey::None => {
            return Err(Reason::new(
                check::SIGNING_KEY,
                "a report signed by a VCEK or VLEK",
                "unsigned report (signing key 7)",
            ))
        }
    };
    let leaves = find(certs, |r| r == leaf_role);
    let leaf = match leaves.as_slice() {
        [one] => *one,
        [] => {
            let given: Vec<String> = certs.iter().map(|c| c.role.name()).collect();
            return Err(Reason::new(
                check::CERT_CHAIN,
                format!("a {leaf_name} certificate (the report is {leaf_name}-signed)"),
                format!("certificates given: [{}]", given.join(", ")),
            ));
        }
        _ => {
            return Err(Reason::new(
                check::CERT_CHAIN,
                format!("one {leaf_name} certificate"),
                format!("{} certificates", leaves.len()),
            ))
        }
    };
    let is_intermediate = |r: Role| {
        matches!(
            (signing_key, r),
            (SigningKey::Vcek, Role::Ask(_)) | (SigningKey::Vlek, Role::Asvk(_))
        )
    };
    let inter_name = if signing_key == SigningKey::Vcek {
        "ASK"
    } else {
        "ASVK"
    };
    let intermediates = find(certs, is_intermediate);
    let leaf_product = leaf.product();
    let inter = match leaf_product {
        Some(p) => intermediates.iter().find(|c| c.product() == Some(p)),
        None => intermediates.first(),
    };
    let Some(inter) = inter.copied() else {
        let got: Vec<String> = intermediates.iter().map(|c| c.role.name()).collect();
        return Err(Reason::new(
            if got.is_empty() {
                check::CERT_CHAIN
            } else {
                check::PRODUCT
            },
            match leaf_product {
                Some(p) => format!("an {inter_name} for {p} (the {leaf_name}'s product)"),
                None => format!("an {inter_name} certificate"),
            },
            if got.is_empty() {
                "none given".to_string()
            } else {
                got.join(", ")
            },
        ));
    };
    let product = inter.product().ok_or_else(|| {
        Reason::new(
            check::PRODUCT,
            "Milan, Genoa or Turin",
            inter.subject_cn.clone(),
        )
    })?;
    let root_key = roots.key(product).ok_or_else(|| {
        Reason::new(
            check::PRODUCT,
            format!(
                "a product with a trusted ARK ({})",
                roots
                    .products()
                    .iter()
                    .map(|p| p.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            product.to_string(),
        )
    })?;
    // An ARK certificate that is given must be the trusted one.
    for ark in find(certs, |r| matches!(r, Role::Ark(_))) {
        if ark.role != Role::Ark(product) {
            return Err(Reason::new(
                check::PRODUCT,
                format!("ARK ({product})"),
                ark.role.name(),
            ));
        }
        if ark.public_key != root_key {
            return Err(Reason::new(
                check::CERT_CHAIN,
                format!("the trusted ARK-{product} key"),
                format!("another key in the given ARK ({})", ark.subject_cn),
            ));
        }
        check_validity(ark, now)?;
        ark.verify_signed_by(root_key)
            .map_err(|e| Reason::new(check::CERT_CHAIN, "ARK self-signed", e))?;
    }
    let expected_issuer = format!("ARK-{product}");
    if inter.issuer_cn != expected_issuer {
        return Err(Reason::new(
            check::CERT_CHAIN,
            format!("{} issued by {expected_issuer}", inter.role.name()),
            format!("issuer {:?}", inter.issuer_cn),
        ));
    }
    inter.verify_signed_by(root_key).map_err(|e| {
        Reason::new(
            check::CERT_CHAIN,
            format!("{} signed by ARK-{product}", inter.role.name()),
            e,
        )
    })?;
    check_validity(inter, now)?;
    if leaf.issuer_cn != inter.subject_cn {
        return Err(Reason::new(
            check::CERT_CHAIN,
            format!("{leaf_name} issued by {}", inter.subject_cn),
            format!("issuer {:?}", leaf.issuer_cn),
        ));
    }
    leaf.verify_signed_by(&inter.public_key).map_err(|e| {
        Reason::new(
            check::CERT_CHAIN,
            format!("{leaf_name} signed by {}", inter.subject_cn),
            e,
        )
    })?;
    check_validity(leaf, now)?;
    if let Some(p) = leaf_product.filter(|p| *p != product) {
        return Err(Reason::new(
            check::PRODUCT,
            product.to_string(),
            format!("{leaf_name} for {p}"),
        ));
    }
    if let Some(cpu) = report.cpuid_product() {
        if cpu != product {
            return Err(Reason::new(
                check::PRODUCT,
                format!("a report from a {product} CPU (the certificate chain's product)"),
                format!("CPUID says {cpu}"),
            ));
        }
    }
    if !leaf.key_is_p384 {
        return Err(Reason::new(
            check::CERT_CHAIN,
            format!("{leaf_name} with an ECDSA P-384 key"),
            "another key type",
        ));
    }
    UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, &leaf.public_key)
        .verify(report.signed_bytes(), &report.signature_be())
        .map_err(|_| {
            Reason::new(
                check::REPORT_SIGNATURE,
                format!("ECDSA P-384 signature by the {leaf_name} over bytes 0x000..0x2A0"),
                "signature does not verify",
            )
        })?;
    let cert_tcb = leaf.spl.tcb().ok_or_else(|| {
        Reason::new(
            check::REPORTED_TCB,
            format!("{leaf_name} with bl/tee/snp/ucode SPL extensions"),
            "missing",
        )
    })?;
    let cert_tcb = if product == Product::Turin {
        cert_tcb
    } else {
        Tcb {
            fmc: None,
            ..cert_tcb
        }
    };
    let reported = Tcb::decode(report.reported_tcb, product);
    if cert_tcb != reported {
        return Err(Reason::new(
            check::REPORTED_TCB,
            format!("reported_tcb equal to the {leaf_name}'s TCB ({cert_tcb})"),
            reported.to_string(),
        ));
    }
    // As go-sev-guest: no chip-ID check when the chip ID is masked (all zero, e.g. on AWS).
    if signing_key == SigningKey::Vcek
        && !report.mask_chip_key()
        && report.chip_id.iter().any(|&b| b != 0)
    {
        let hwid = leaf.hwid.as_deref().unwrap_or_default();
        // Turin VCEKs carry an 8-byte hardware ID, the prefix of the 64-byte chip ID.
        let expected = if hwid.len() < 64 {
            report.chip_id.get(..hwid.len())
        } else {
            Some(&report.chip_id[..])
        };
        if hwid.is_empty() || expected != Some(hwid) {
            return Err(Reason::new(
                check::CHIP_ID,
                format!("chip_id equal to the VCEK's hwID {}", hex::encode(hwid)),
                hex::encode(report.chip_id),
            ));
        }
    }
    Ok(VerifiedReport {
        report: report.clone(),
        product,
        signing_key,
        leaf: leaf.clone(),
    })
}

/// What happens when the report's `id_key_digest` is not accepted (Go `idkeydigest`
/// enforcement policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdKeyPolicy {
    /// The digest is not looked at (AWS, GCP).
    #[default]
    NotChecked,
    /// Must be one of the accepted digests.
    Equal,
    /// Go asks Microsoft Azure Attestation instead. This validator cannot verify an MAA
    /// token offline, so a digest not in the list is refused with the reason saying so.
    MaaFallback,
    /// Only a warning.
    WarnOnly,
}

/// The policy of go-sev-guest's `validate.SnpAttestation` as Constellation configures it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpPolicy {
    pub allow_debug: bool,
    pub allow_migration_agent: bool,
    pub allow_smt: bool,
    /// Required VMPL (Constellation: 0).
    pub vmpl: Option<u32>,
    /// Every `launch_tcb` component must be at least this.
    pub minimum_launch_tcb: Tcb,
    /// Every `reported_tcb` component must be at least this (Azure).
    pub minimum_tcb: Option<Tcb>,
    /// `committed_tcb ≤ current_tcb` (true) or `==` (false).
    pub permit_provisional_firmware: bool,
    pub accepted_id_key_digests: Vec<[u8; 48]>,
    pub id_key_policy: IdKeyPolicy,
    /// Warnings to report with every result (e.g. a minimum version "latest" that cannot be
    /// resolved offline).
    pub notes: Vec<Reason>,
}

impl Default for SnpPolicy {
    /// Constellation's options: debug and migration agent forbidden, SMT allowed, VMPL 0,
    /// provisional firmware permitted, no minimum versions, no ID-key check.
    fn default() -> Self {
        Self {
            allow_debug: false,
            allow_migration_agent: false,
            allow_smt: true,
            vmpl: Some(0),
            minimum_launch_tcb: Tcb::default(),
            minimum_tcb: None,
            permit_provisional_firmware: true,
            accepted_id_key_digests: Vec::new(),
            id_key_policy: IdKeyPolicy::NotChecked,
            notes: Vec::new(),
        }
    }
}

/// The outcome of a policy check: refusals (any ⇒ refused) and warnings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyOutcome {
    pub refusals: Vec<Reason>,
    pub warnings: Vec<Reason>,
}

impl SnpPolicy {
    /// Checks a verified report; collects every failure.
    pub fn check(&self, v: &VerifiedReport) -> PolicyOutcome {
        let r = &v.report;
        let mut out = PolicyOutcome {
            warnings: self.notes.clone(),
            ..Default::default()
        };
        let mut refuse = |c, e: String, a: String| out.refusals.push(Reason::new(c, e, a));
        if r.debug_allowed() && !self.allow_debug {
            refuse(
                check::DEBUG,
                "guest policy without DEBUG (bit 19)".into(),
                format!("policy {:#x} allows debugging", r.policy),
            );
        }
        if r.migrate_ma_allowed() && !self.allow_migration_agent {
            refuse(
                check::MIGRATION_AGENT,
                "guest policy without MIGRATE_MA (bit 18)".into(),
                format!("policy {:#x} allows a migration agent", r.policy),
            );
        }
        if r.smt_allowed() && !self.allow_smt {
            refuse(
                check::SMT,
                "guest policy without SMT (bit 16)".into(),
                format!("policy {:#x} allows SMT", r.policy),
            );
        }
        if r.policy & report::policy_bits::CXL_ALLOW != 0 {
            refuse(
                check::CXL,
                "guest policy without CXL_ALLOW (bit 21)".into(),
                format!("policy {:#x} allows CXL-attached memory", r.policy),
            );
        }
        if r.policy & report::policy_bits::RESERVED_MBZ != 0 {
            refuse(
                check::POLICY_RESERVED,
                "guest policy bits 26..63 zero (reserved)".into(),
                format!("policy {:#x}", r.policy),
            );
        }
        if r.policy & report::policy_bits::RESERVED_ONE == 0 {
            refuse(
                check::POLICY_RESERVED,
                "guest policy bit 17 set (reserved, must be one)".into(),
                format!("policy {:#x}", r.policy),
            );
        }
        if let Some(want) = self.vmpl {
            if r.vmpl != want {
                refuse(check::VMPL, want.to_string(), r.vmpl.to_string());
            }
        }
        let (current, committed) = (v.current_tcb(), v.committed_tcb());
        let committed_ok = if self.permit_provisional_firmware {
            current.at_least(&committed)
        } else {
            current == committed
        };
        if !committed_ok {
            refuse(
                check::COMMITTED_TCB,
                format!(
                    "committed_tcb {} current_tcb ({current})",
                    if self.permit_provisional_firmware {
                        "≤"
                    } else {
                        "="
                    }
                ),
                committed.to_string(),
            );
        }
        // The certificate's TCB (= reported_tcb, checked in verify_report) ≤ current_tcb.
        let reported = v.reported_tcb();
        if !current.at_least(&reported) {
            refuse(
                check::CURRENT_TCB,
                format!("reported (certificate) TCB ≤ current_tcb ({current})"),
                reported.to_string(),
            );
        }
        // Firmware build and API version: committed ≤ current (provisional) or equal.
        let (cur_b, cur_min, cur_maj) = r.current_version;
        let (com_b, com_min, com_maj) = r.committed_version;
        let (cur_v, com_v) = ((cur_maj, cur_min), (com_maj, com_min));
        let version_ok = if self.permit_provisional_firmware {
            com_b <= cur_b && com_v <= cur_v
        } else {
            com_b == cur_b && com_v == cur_v
        };
        if !version_ok {
            refuse(
                check::FIRMWARE_VERSION,
                format!(
                    "committed firmware {} current {cur_maj}.{cur_min} build {cur_b}",
                    if self.permit_provisional_firmware {
                        "≤"
                    } else {
                        "="
                    }
                ),
                format!("{com_maj}.{com_min} build {com_b}"),
            );
        }
        if !v.launch_tcb().at_least(&self.minimum_launch_tcb) {
            refuse(
                check::MINIMUM_LAUNCH_TCB,
                format!("launch_tcb at least {}", self.minimum_launch_tcb),
                v.launch_tcb().to_string(),
            );
        }
        if let Some(min) = &self.minimum_tcb {
            if !v.reported_tcb().at_least(min) {
                refuse(
                    check::MINIMUM_TCB,
                    format!("reported_tcb at least {min}"),
                    v.reported_tcb().to_string(),
                );
            }
        }
        let accepted = self
            .accepted_id_key_digests
            .iter()
            .any(|d| crate::quote::ct_eq(d, &r.id_key_digest));
        let digest_reason = || {
            Reason::new(
                check::ID_KEY_DIGEST,
                format!(
                    "one of [{}]",
                    self.accepted_id_key_digests
                        .iter()
                        .map(hex::encode)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                hex::encode(r.id_key_digest),
            )
        };
        match self.id_key_policy {
            IdKeyPolicy::NotChecked => {}
            _ if accepted => {}
            IdKeyPolicy::Equal => out.refusals.push(digest_reason()),
            IdKeyPolicy::MaaFallback => {
                let mut reason = digest_reason();
                reason.expected.push_str(
                    " (enforcementPolicy MAAFallback: an MAA token cannot be verified offline)",
                );
                out.refusals.push(reason);
            }
            IdKeyPolicy::WarnOnly => out.warnings.push(digest_reason()),
        }
        out
    }
}

/// Checks `report_data` against the expected 64 bytes (shorter expectations are zero-padded,
/// as Go's `CompareExtraData`).
pub fn check_report_data(report: &Report, expected: &[u8]) -> Result<(), Reason> {
    let mut want = [0u8; 64];
    if expected.len() > 64 {
        return Err(Reason::new(
            check::REPORT_DATA,
            "at most 64 bytes of expected report data",
            format!("{} bytes", expected.len()),
        ));
    }
    want[..expected.len()].copy_from_slice(expected);
    if crate::quote::ct_eq(&want, &report.report_data) {
        Ok(())
    } else {
        Err(Reason::new(
            check::REPORT_DATA,
            hex::encode(want),
            hex::encode(report.report_data),
        ))
    }
}

/// Parses a report for the `report-format` check.
pub fn parse_report(bytes: &[u8]) -> Result<Report, Reason> {
    Report::parse(bytes).map_err(|e| {
        Reason::new(
            check::REPORT_FORMAT,
            "an SEV-SNP attestation report (1184 bytes, version 2, 3 or 5)",
            e.to_string(),
        )
    })
}

/// Parses certificates (PEM or DER) for the `certificate-format` check.
pub fn parse_certs(bytes: &[u8]) -> Result<Vec<AmdCert>, Reason> {
    AmdCert::parse_many(bytes).map_err(|e| {
        Reason::new(
            check::CERTIFICATE_FORMAT,
            "AMD SEV certificates (PEM or DER)",
            e.to_string(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_roots_are_hex_and_fingerprints_are_sha256() {
        let r = AmdRoots::builtin();
        for p in Product::ALL {
            assert_eq!(r.key(p).map(<[u8]>::len), Some(526), "{p}");
        }
        for fp in [
            roots::ARK_MILAN_SHA256,
            roots::ARK_GENOA_SHA256,
            roots::ARK_TURIN_SHA256,
        ] {
            assert_eq!(hex::decode(fp).unwrap().len(), 32);
        }
    }

    #[test]
    fn tcb_layouts() {
        let raw = u64::from_le_bytes([1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            Tcb::decode(raw, Product::Milan),
            Tcb {
                fmc: None,
                bootloader: 1,
                tee: 2,
                snp: 7,
                microcode: 8
            }
        );
        assert_eq!(
            Tcb::decode(raw, Product::Turin),
            Tcb {
                fmc: Some(1),
                bootloader: 2,
                tee: 3,
                snp: 4,
                microcode: 8
            }
        );
    }
}
