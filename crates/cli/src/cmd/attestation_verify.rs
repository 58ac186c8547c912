//! `constellation attestation verify`: offline verification of captured evidence.
//!
//! Every format produces one [`EvidenceReport`] (verdict, reasons, warnings, claims); a new
//! format is one more arm in [`verify`] and one function returning an `EvidenceReport`.
//! Verdict "genuine" means the evidence is genuine *and* within the policy; any reason makes it
//! "refused". Exit status: 0 genuine, 1 refused, 2 usage error ([`UsageError`]).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use attestation::azure_hcl::HclReport;
use attestation::cloud::{Collateral, SnpValidation};
use attestation::quote::verify_quote;
use attestation::snp::{self, AmdCert, AmdRoots, SnpPolicy};
use attestation::tdx::{self, TdxPolicy};
use attestation::tpm2::{HashAlg, SigScheme, TpmsAttest, TpmtPublic, TpmtSignature};
use attestation::{Measurements, Reason, ValidatorPolicy, Variant};
use base64::Engine as _;
use config::Config;
use sha2::{Digest, Sha256};

use crate::args::AttestationVerifyArgs;
use crate::error::UsageError;

/// The outcome of verifying one piece of evidence, for every format.
#[derive(Debug, Clone, Default)]
pub struct EvidenceReport {
    /// Every failed check; empty = genuine and within policy.
    pub reasons: Vec<Reason>,
    /// Checks that only warn (and checks that could not be made offline).
    pub warnings: Vec<Reason>,
    /// Decoded claims (report fields, TCB versions, measurements, …).
    pub claims: serde_json::Map<String, serde_json::Value>,
}

impl EvidenceReport {
    pub fn genuine(&self) -> bool {
        self.reasons.is_empty()
    }
    fn refuse(&mut self, r: Reason) {
        self.reasons.push(r);
    }
    fn claim(&mut self, key: &str, v: serde_json::Value) {
        self.claims.insert(key.to_string(), v);
    }
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "verdict": if self.genuine() { "genuine" } else { "refused" },
            "reasons": self.reasons,
            "warnings": self.warnings,
            "claims": self.claims,
        })
    }
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "verdict: {}\n",
            if self.genuine() { "genuine" } else { "refused" }
        );
        for r in &self.reasons {
            out.push_str(&format!(
                "refused by {}:\n  expected: {}\n  actual:   {}\n",
                r.check, r.expected, r.actual
            ));
        }
        for r in &self.warnings {
            out.push_str(&format!(
                "warning {}:\n  expected: {}\n  actual:   {}\n",
                r.check, r.expected, r.actual
            ));
        }
        out.push_str("claims:\n");
        let pretty = serde_json::to_string_pretty(&self.claims).unwrap_or_default();
        for line in pretty.lines() {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
        out
    }
}

/// Everything a format needs besides the evidence bytes.
pub struct Inputs {
    pub certs: Vec<Vec<u8>>,
    pub collateral: Option<Vec<u8>>,
    pub nonce: Option<Vec<u8>>,
    /// Unix seconds.
    pub now: i64,
    pub config: Option<Config>,
    pub variant: Option<Variant>,
    /// Fetch missing AMD certificates (`--fetch`).
    pub kds: Option<crate::kds::Kds>,
    /// Fetch TDX collateral from Intel PCS when `--collateral` is absent (`--fetch`).
    pub pcs: Option<crate::pcs::Pcs>,
    /// Fetch the VCEK and chain of an Azure SNP CVM from THIM (`--fetch --thim-url`).
    pub thim: Option<crate::thim::Thim>,
}

#[derive(Debug, thiserror::Error)]
#[error("attestation evidence refused ({0} failed checks)")]
pub struct Refused(pub usize);

pub fn run(a: &AttestationVerifyArgs) -> anyhow::Result<()> {
    let usage = |m: String| anyhow::Error::new(UsageError(m));
    if !matches!(a.output.as_str(), "text" | "json") {
        return Err(usage(format!(
            "unknown output format {:?} (text, json)",
            a.output
        )));
    }
    let read = |p: &Path, what: &str| {
        std::fs::read(p).map_err(|e| usage(format!("cannot read {what} {}: {e}", p.display())))
    };
    let evidence = read(&a.evidence, "evidence")?;
    let certs = a
        .certs
        .iter()
        .map(|p| read(p, "certificate"))
        .collect::<Result<Vec<_>, _>>()?;
    let collateral = a
        .collateral
        .as_deref()
        .map(|p| read(p, "collateral"))
        .transpose()?;
    let nonce = a
        .nonce
        .as_deref()
        .map(|n| hex::decode(n.trim()).map_err(|e| usage(format!("--nonce {n:?} is not hex: {e}"))))
        .transpose()?;
    let now = match &a.at {
        Some(t) => parse_rfc3339(t).ok_or_else(|| {
            usage(format!(
                "--at {t:?} is not an RFC 3339 time (e.g. 2025-06-01T00:00:00Z)"
            ))
        })?,
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
    };
    let config = a
        .config
        .as_deref()
        .map(|p| Config::load(p).with_context(|| format!("loading the config {}", p.display())))
        .transpose()
        .map_err(|e| usage(format!("{e:#}")))?;
    let variant = a
        .variant
        .as_deref()
        .map(|v| v.parse::<Variant>().map_err(|e| usage(e.to_string())))
        .transpose()?;
    let inputs = Inputs {
        certs,
        collateral,
        nonce,
        now,
        config,
        variant,
        kds: a.fetch.then(|| {
            let cache = a
                .cache_dir
                .clone()
                .unwrap_or_else(crate::kds::Kds::default_cache);
            crate::kds::Kds::new(&a.kds_url, &cache)
        }),
        pcs: a.fetch.then(|| {
            let cache = a
                .cache_dir
                .clone()
                .unwrap_or_else(crate::pcs::Pcs::default_cache);
            crate::pcs::Pcs::new(&a.pcs_url, &cache)
        }),
        thim: a.thim_url.as_deref().filter(|_| a.fetch).map(|url| {
            let cache = a
                .cache_dir
                .clone()
                .unwrap_or_else(crate::thim::Thim::default_cache);
            crate::thim::Thim::new(url, &cache)
        }),
    };
    let report = verify(&a.format, &evidence, &inputs)?;
    let text = if a.output == "json" {
        format!("{}\n", serde_json::to_string_pretty(&report.to_json())?)
    } else {
        report.to_text()
    };
    // A closed stdout (e.g. `| head`) must not turn a verdict into a panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
    if report.genuine() {
        Ok(())
    } else {
        Err(Refused(report.reasons.len()).into())
    }
}

/// Verifies `evidence` in `format`. Errors are usage errors (unknown format, unreadable
/// input); everything about the evidence itself is in the report.
pub fn verify(format: &str, evidence: &[u8], inputs: &Inputs) -> anyhow::Result<EvidenceReport> {
    match format {
        "snp-report" => Ok(snp_report(evidence, inputs)),
        "azure-snp-vtpm" => Ok(azure_snp_vtpm(evidence, inputs)),
        "gce-vtpm" => Ok(gce_vtpm(evidence, inputs)),
        "tdx-quote" => tdx_quote(evidence, inputs),
        "azure-tdx-vtpm" => azure_tdx_vtpm(evidence, inputs),
        "document" => document(evidence, inputs),
        other => Err(UsageError(format!(
            "unknown evidence format {other:?} (snp-report, tdx-quote, azure-snp-vtpm, \
             azure-tdx-vtpm, gce-vtpm, document)"
        ))
        .into()),
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` → Unix seconds (the one parser, shared with the
/// TDX collateral's dates).
pub use attestation::tdx::parse_rfc3339;

/// AMD certificates from `--cert` and `--collateral` (PEM bundles or DER).
fn amd_certs(inputs: &Inputs, report: &mut EvidenceReport) -> Vec<AmdCert> {
    let mut out = Vec::new();
    for bytes in inputs.certs.iter().chain(inputs.collateral.iter()) {
        match snp::parse_certs(bytes) {
            Ok(c) => out.extend(c),
            Err(r) => report.refuse(r),
        }
    }
    out
}

/// The SEV-SNP policy: the config's section for its variant, or the Go defaults.
fn snp_validation(inputs: &Inputs, variant: Variant, report: &mut EvidenceReport) -> SnpValidation {
    if let Some(cfg) = &inputs.config {
        let v = if cfg.variant() == variant || matches!(variant, Variant::Dummy) {
            cfg.variant()
        } else {
            variant
        };
        match cfg.raw().attestation.snp_validation(v, inputs.now) {
            Ok(Some(s)) => return s,
            Ok(None) => report.warnings.push(Reason::new(
                "config",
                format!("an SEV-SNP section for {v}"),
                format!("config is for {}; Go defaults used", cfg.variant()),
            )),
            Err(r) => report.refuse(r),
        }
    }
    let mut policy = SnpPolicy::default();
    policy.notes.push(Reason::new(
        "config-minimum-version",
        "minimum bootloader/TEE/SNP/microcode versions (Go default: \"latest\", resolved online)",
        "not enforced offline",
    ));
    if variant == Variant::AzureSevSnp {
        let mut d = [0u8; 48];
        if hex::decode_to_slice(config::AZURE_DEFAULT_ACCEPTED_KEY_DIGEST, &mut d).is_ok() {
            policy.accepted_id_key_digests.push(d);
        }
        policy.id_key_policy = snp::IdKeyPolicy::MaaFallback;
    }
    SnpValidation {
        policy,
        roots: AmdRoots::builtin(),
        signing_keys: Vec::new(),
    }
}

/// With `--fetch`: adds the certificates `report_bytes` needs that `certs` lacks, from AMD KDS.
fn fetch_missing(
    report_bytes: &[u8],
    certs: &mut Vec<AmdCert>,
    inputs: &Inputs,
    report: &mut EvidenceReport,
) {
    let (Some(kds), Ok(r)) = (&inputs.kds, snp::Report::parse(report_bytes)) else {
        return;
    };
    let (more, warnings) = kds.missing_certs(&r, certs);
    for w in warnings {
        report.warnings.push(Reason::new(
            "collateral-fetch",
            "AMD certificates from the key distribution service",
            w,
        ));
    }
    certs.extend(more);
}

/// With `--fetch --thim-url`: adds the certificates (VCEK, ASK, ARK) of the Azure CVM's THIM
/// answer that `certs` lacks (a role already given is kept). A failure is a warning naming the
/// URL; AMD KDS may still fill in what is missing.
fn fetch_from_thim(
    report_bytes: &[u8],
    certs: &mut Vec<AmdCert>,
    inputs: &Inputs,
    report: &mut EvidenceReport,
) {
    let (Some(thim), Ok(r)) = (&inputs.thim, snp::Report::parse(report_bytes)) else {
        return;
    };
    let has_chain = certs.iter().any(|c| matches!(c.role, snp::Role::Ark(_)))
        && certs.iter().any(|c| matches!(c.role, snp::Role::Ask(_)));
    let has_leaf = certs.iter().any(|c| c.role == snp::Role::Vcek);
    if has_chain && has_leaf {
        return;
    }
    match thim.certs(r.reported_tcb) {
        Ok(more) => {
            for c in more {
                if !certs.iter().any(|h| h.role == c.role) {
                    certs.push(c);
                }
            }
        }
        Err(e) => report.warnings.push(Reason::new(
            "collateral-fetch",
            "the VCEK and ASK/ARK from Azure THIM",
            e,
        )),
    }
}

/// Verifies a parsed SNP report with certificates and policy; records claims and reasons.
fn check_snp(
    report_bytes: &[u8],
    certs: &[AmdCert],
    v: &SnpValidation,
    now: i64,
    report: &mut EvidenceReport,
) -> Option<snp::VerifiedReport> {
    let parsed = match snp::parse_report(report_bytes) {
        Ok(r) => r,
        Err(r) => {
            report.refuse(r);
            return None;
        }
    };
    let mut all = certs.to_vec();
    for c in &v.signing_keys {
        if !all.iter().any(|h| h.role == c.role) {
            all.push(c.clone());
        }
    }
    match snp::verify_report(&parsed, &all, &v.roots, now) {
        Ok(verified) => {
            let out = v.policy.check(&verified);
            report.reasons.extend(out.refusals);
            report.warnings.extend(out.warnings);
            report.claim("snp", verified.claims());
            Some(verified)
        }
        Err(r) => {
            report.refuse(r);
            None
        }
    }
}

fn snp_report(evidence: &[u8], inputs: &Inputs) -> EvidenceReport {
    let mut report = EvidenceReport::default();
    let bytes = if evidence.len() == snp::report::REPORT_LEN {
        evidence.to_vec()
    } else {
        let text: Vec<u8> = evidence
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        base64::engine::general_purpose::STANDARD
            .decode(&text)
            .unwrap_or_else(|_| evidence.to_vec())
    };
    let variant = inputs
        .variant
        .or(inputs.config.as_ref().map(Config::variant))
        .unwrap_or(Variant::Dummy);
    let v = snp_validation(inputs, variant, &mut report);
    let mut certs = amd_certs(inputs, &mut report);
    fetch_missing(&bytes, &mut certs, inputs, &mut report);
    if let Some(verified) = check_snp(&bytes, &certs, &v, inputs.now, &mut report) {
        match &inputs.nonce {
            Some(n) => {
                if let Err(r) = snp::check_report_data(&verified.report, n) {
                    report.refuse(r);
                }
            }
            None => report.warnings.push(Reason::new(
                snp::check::REPORT_DATA,
                "a nonce (--nonce) to compare report_data with",
                "not checked",
            )),
        }
    }
    report
}

fn measurements_of(inputs: &Inputs) -> Option<Measurements> {
    inputs.config.as_ref().map(|c| c.measurements().clone())
}

fn compare_pcrs(pcrs: &BTreeMap<u32, Vec<u8>>, inputs: &Inputs, report: &mut EvidenceReport) {
    report.claim(
        "pcrs",
        serde_json::Value::Object(
            pcrs.iter()
                .map(|(i, v)| (i.to_string(), hex::encode(v).into()))
                .collect(),
        ),
    );
    match measurements_of(inputs) {
        Some(m) => {
            let cmp = m.compare(pcrs);
            let err = attestation::ValidationError::Measurements(cmp.errors);
            if !matches!(&err, attestation::ValidationError::Measurements(e) if e.is_empty()) {
                report.reasons.extend(err.reasons());
            }
            report
                .warnings
                .extend(attestation::ValidationError::Measurements(cmp.warnings).reasons());
        }
        None => report.warnings.push(Reason::new(
            "measurement",
            "expected measurements (from -c CONFIG)",
            "not compared",
        )),
    }
}

/// The qualifying data the quote must carry: `--nonce`, or (with a warning) its own.
fn quote_nonce(quote: &[u8], inputs: &Inputs, report: &mut EvidenceReport) -> Vec<u8> {
    match &inputs.nonce {
        Some(n) => n.clone(),
        None => {
            report.warnings.push(Reason::new(
                "nonce",
                "a nonce (--nonce) the quote must carry",
                "not checked: freshness unknown",
            ));
            TpmsAttest::decode(quote)
                .map(|a| a.extra_data)
                .unwrap_or_default()
        }
    }
}

/// `(quote, signature, PCRs, HCL report, VCEK)` of the azure-snp-vtpm JSON.
type AzureEvidence = (Vec<u8>, Vec<u8>, BTreeMap<u32, Vec<u8>>, Vec<u8>, Vec<u8>);

fn azure_snp_vtpm(evidence: &[u8], inputs: &Inputs) -> EvidenceReport {
    let mut report = EvidenceReport::default();
    let fmt = |e: String| {
        Reason::new(
            "evidence-format",
            "azure-snp-vtpm JSON (tpm_quote, hcl_report, vcek)",
            e,
        )
    };
    let parsed: Result<AzureEvidence, String> = (|| {
        let v: serde_json::Value = serde_json::from_slice(evidence).map_err(|e| e.to_string())?;
        let q = &v["tpm_quote"];
        let hexf = |v: &serde_json::Value, n: &str| -> Result<Vec<u8>, String> {
            hex::decode(v.as_str().ok_or(format!("{n} missing"))?).map_err(|e| format!("{n}: {e}"))
        };
        let b64u = |n: &str| -> Result<Vec<u8>, String> {
            let s = v[n].as_str().ok_or(format!("{n} missing"))?;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(s.trim_end_matches('='))
                .map_err(|e| format!("{n}: {e}"))
        };
        let pcrs = q["pcrs"]
            .as_array()
            .ok_or("tpm_quote.pcrs missing")?
            .iter()
            .enumerate()
            .map(|(i, p)| Ok((i as u32, hexf(p, "pcr")?)))
            .collect::<Result<_, String>>()?;
        Ok((
            hexf(&q["message"], "tpm_quote.message")?,
            hexf(&q["signature"], "tpm_quote.signature")?,
            pcrs,
            b64u("hcl_report")?,
            b64u("vcek")?,
        ))
    })();
    let (quote, sig, pcrs, hcl, vcek) = match parsed {
        Ok(p) => p,
        Err(e) => {
            report.refuse(fmt(e));
            return report;
        }
    };
    let hcl = match HclReport::parse(&hcl) {
        Ok(h) => h,
        Err(e) => {
            report.refuse(Reason::new(
                "azure-hcl-report",
                "an HCL report with an SNP report",
                e,
            ));
            return report;
        }
    };
    let v = snp_validation(inputs, Variant::AzureSevSnp, &mut report);
    let mut certs = amd_certs(inputs, &mut report);
    match snp::parse_certs(&vcek) {
        Ok(c) => certs.extend(c),
        Err(r) => report.refuse(r),
    }
    fetch_from_thim(hcl.hw_report, &mut certs, inputs, &mut report);
    fetch_missing(hcl.hw_report, &mut certs, inputs, &mut report);
    if check_snp(hcl.hw_report, &certs, &v, inputs.now, &mut report).is_none() {
        return report;
    }
    let bound = &hcl.report_data()[..32];
    let h = Sha256::digest(hcl.runtime_data);
    if h.as_slice() != bound {
        report.refuse(Reason::new(
            attestation::cloud::check::RUNTIME_DATA,
            format!(
                "report_data[0..32] = SHA-256(runtime data) = {}",
                hex::encode(h)
            ),
            hex::encode(bound),
        ));
        return report;
    }
    let ak = match hcl.ak_public_key() {
        Ok(ak) => ak,
        Err(e) => {
            report.refuse(Reason::new(
                attestation::cloud::check::AK_BINDING,
                "HCLAkPub in the runtime data",
                e,
            ));
            return report;
        }
    };
    let nonce = quote_nonce(&quote, inputs, &mut report);
    let sig = TpmtSignature::Rsa {
        scheme: SigScheme::RsaSsa,
        hash: HashAlg::Sha256,
        sig,
    };
    match verify_quote(&ak, &quote, &sig, HashAlg::Sha256, &pcrs, &nonce) {
        Ok(_) => compare_pcrs(&pcrs, inputs, &mut report),
        Err(e) => report.refuse(quote_reason(e)),
    }
    report
}

/// The TDX collateral of `--collateral` (Intel PCS TCB info, QE identity, CRLs; JSON).
fn tdx_collateral(inputs: &Inputs, format: &str) -> anyhow::Result<tdx::Collateral> {
    let bytes = inputs.collateral.as_deref().ok_or_else(|| {
        UsageError(format!(
            "format {format} needs the quote's collateral (--collateral FILE: JSON with \
             tcb_info, qe_identity, CRLs and their issuer chains; or --fetch)"
        ))
    })?;
    tdx::Collateral::from_json(bytes).map_err(|e| UsageError(format!("--collateral: {e}")).into())
}

/// The collateral for `quote`: `--collateral`, or with `--fetch` from Intel PCS (cached) for
/// the quote's FMSPC and PCK CA. A failed fetch is a refusal (check `collateral-fetch`) naming
/// the URL; `None` then.
fn tdx_collateral_for(
    quote: &[u8],
    inputs: &Inputs,
    format: &str,
    report: &mut EvidenceReport,
) -> anyhow::Result<Option<tdx::Collateral>> {
    let Some(pcs) = inputs.pcs.as_ref().filter(|_| inputs.collateral.is_none()) else {
        return tdx_collateral(inputs, format).map(Some);
    };
    let fetched = tdx::Quote::parse(quote)
        .map_err(|e| crate::pcs::PcsError::Quote(e.to_string()))
        .and_then(|q| {
            let fmspc =
                tdx::quote_fmspc(&q).map_err(|e| crate::pcs::PcsError::Quote(e.to_string()))?;
            let ca = crate::pcs::PckCa::of_quote(&q)?;
            pcs.collateral(fmspc, ca, inputs.now)
        });
    match fetched {
        Ok(c) => Ok(Some(c)),
        Err(crate::pcs::PcsError::Quote(e)) => {
            report.refuse(Reason::new(
                tdx::check::QUOTE_FORMAT,
                "a TDX quote v4 naming its platform (FMSPC, PCK CA)",
                e,
            ));
            Ok(None)
        }
        Err(e) => {
            report.refuse(Reason::new(
                "collateral-fetch",
                "TDX collateral (TCB info, QE identity, CRLs) from Intel PCS",
                e,
            ));
            Ok(None)
        }
    }
}

/// The TDX policy: the config's section ([`config::TdxValidation`]: `azureTDX`, or the Go
/// defaults for `qemu-tdx`), or the Go defaults. `latest` values are resolved online by the
/// Go CLI; offline they are not enforced (a warning says so).
fn tdx_policy(inputs: &Inputs, report: &mut EvidenceReport) -> TdxPolicy {
    let Some(cfg) = &inputs.config else {
        report.warnings.push(Reason::new(
            "config-minimum-version",
            "qeSVN, pceSVN, teeTCBSVN, xfam (Go default: \"latest\", resolved online)",
            "not enforced offline",
        ));
        return TdxPolicy::default();
    };
    let v = match cfg.variant() {
        v @ (Variant::AzureTdx | Variant::QemuTdx) => v,
        _ => inputs.variant.unwrap_or(Variant::AzureTdx),
    };
    match cfg.raw().attestation.tdx_validation(v) {
        Ok(Some(t)) => {
            report.warnings.extend(t.notes);
            return t.policy;
        }
        Ok(None) => report.warnings.push(Reason::new(
            "config",
            format!("a TDX section for {v}"),
            format!("config is for {}; Go defaults used", cfg.variant()),
        )),
        Err(r) => report.refuse(r),
    }
    TdxPolicy::default()
}

/// Compares `report_data` with `--nonce` as Go's `CompareExtraData` does (zero padded).
fn tdx_report_data(claims: &tdx::TdxClaims, inputs: &Inputs, report: &mut EvidenceReport) {
    let rd = &claims.td_report.report_data;
    match &inputs.nonce {
        Some(n) => {
            let mut want = [0u8; 64];
            let len = n.len().min(64);
            want[..len].copy_from_slice(&n[..len]);
            if n.len() > 64 || want != *rd {
                report.refuse(Reason::new(
                    tdx::check::REPORT_DATA,
                    format!("{} (the nonce, zero padded)", hex::encode(want)),
                    hex::encode(rd),
                ));
            }
        }
        None => report.warnings.push(Reason::new(
            tdx::check::REPORT_DATA,
            "a nonce (--nonce) to compare report_data with",
            "not checked",
        )),
    }
}

/// `tdx-quote`: a raw TDX quote (or its base64) with `--collateral`.
fn tdx_quote(evidence: &[u8], inputs: &Inputs) -> anyhow::Result<EvidenceReport> {
    let mut report = EvidenceReport::default();
    let bytes = if tdx::Quote::parse(evidence).is_ok() {
        evidence.to_vec()
    } else {
        let text: Vec<u8> = evidence
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        base64::engine::general_purpose::STANDARD
            .decode(&text)
            .unwrap_or_else(|_| evidence.to_vec())
    };
    let Some(collateral) = tdx_collateral_for(&bytes, inputs, "tdx-quote", &mut report)? else {
        return Ok(report);
    };
    let policy = tdx_policy(inputs, &mut report);
    let claims = match tdx::Quote::parse(&bytes)
        .and_then(|q| tdx::verify(&q, &collateral, inputs.now, &policy))
    {
        Ok(c) => c,
        Err(e) => {
            report.refuse(e.reason());
            return Ok(report);
        }
    };
    report.claim("tdx", claims.to_json());
    tdx_report_data(&claims, inputs, &mut report);
    // MRTD and RTMR0..3 are measurements 0..4 of qemu-tdx; other variants measure vTPM PCRs.
    let qemu_tdx = inputs
        .variant
        .or(inputs.config.as_ref().map(Config::variant));
    if qemu_tdx == Some(Variant::QemuTdx) {
        compare_pcrs(&tdx::tdx_measurements(&claims), inputs, &mut report);
    } else {
        report.warnings.push(Reason::new(
            "measurement",
            "a qemu-tdx config (-c) whose measurements 0..4 are MRTD, RTMR0..3",
            "not compared",
        ));
    }
    Ok(report)
}

/// `azure-tdx-vtpm`: the JSON evidence layout of `azure-snp-vtpm` with a TD quote
/// (`tpm_quote`, `hcl_report`, `td_quote`), with `--collateral` for the TD quote.
fn azure_tdx_vtpm(evidence: &[u8], inputs: &Inputs) -> anyhow::Result<EvidenceReport> {
    use tdx::AzureTdxEvidenceError as E;
    if inputs.pcs.is_none() {
        tdx_collateral(inputs, "azure-tdx-vtpm")?;
    }
    let mut report = EvidenceReport::default();
    let e = match tdx::AzureTdxEvidence::from_json(evidence) {
        Ok(e) => e,
        Err(err) => {
            report.refuse(Reason::new(
                "evidence-format",
                "azure-tdx-vtpm JSON (tpm_quote, hcl_report, td_quote)",
                err,
            ));
            return Ok(report);
        }
    };
    let Some(collateral) = tdx_collateral_for(&e.td_quote, inputs, "azure-tdx-vtpm", &mut report)?
    else {
        return Ok(report);
    };
    let policy = tdx_policy(inputs, &mut report);
    if inputs.nonce.is_none() {
        report.warnings.push(Reason::new(
            "nonce",
            "a nonce (--nonce) the quote must carry",
            "not checked: freshness unknown",
        ));
    }
    match tdx::verify_azure_tdx_evidence(
        &e,
        &collateral,
        inputs.now,
        &policy,
        inputs.nonce.as_deref(),
    ) {
        Ok(claims) => {
            report.claim("tdx", claims.tdx.to_json());
            report.claim("tpm_nonce", hex::encode(&claims.tpm_nonce).into());
            compare_pcrs(&claims.pcrs, inputs, &mut report);
        }
        Err(E::Tdx(t)) => report.refuse(t.reason()),
        Err(E::TpmQuote(q)) => report.refuse(quote_reason(q)),
        Err(E::Nonce { expected, actual }) => report.refuse(Reason::new("nonce", expected, actual)),
        Err(other @ (E::Hcl(_) | E::Binding(_))) => report.refuse(Reason::new(
            attestation::cloud::check::RUNTIME_DATA,
            "an HCL report whose runtime data the TD quote binds, naming HCLAkPub",
            other,
        )),
        Err(other @ E::Malformed(_)) => report.refuse(Reason::new(
            "evidence-format",
            "azure-tdx-vtpm JSON (tpm_quote, hcl_report, td_quote)",
            other,
        )),
    }
    Ok(report)
}

fn quote_reason(e: attestation::quote::QuoteError) -> Reason {
    use attestation::quote::QuoteError as Q;
    let check = match &e {
        Q::QualifyingDataMismatch { .. } => "nonce",
        Q::DigestMismatch { .. } => "pcr-digest",
        Q::BadSignature { .. }
        | Q::UnsupportedSignature { .. }
        | Q::SchemeMismatch { .. }
        | Q::BadKey(_) => "quote-signature",
        Q::Decode(_) => "quote-format",
        _ => "pcr-selection",
    };
    Reason::new(check, "a TPM quote that verifies", e)
}

fn gce_vtpm(evidence: &[u8], inputs: &Inputs) -> EvidenceReport {
    let mut report = EvidenceReport::default();
    let att = match attestation::gce::decode_attestation_pb(evidence) {
        Ok(a) => a,
        Err(e) => {
            report.refuse(Reason::new(
                "evidence-format",
                "a go-tpm-tools Attestation protobuf",
                e,
            ));
            return report;
        }
    };
    let ak = match TpmtPublic::decode(&att.ak_pub) {
        Ok(a) => a,
        Err(e) => {
            report.refuse(Reason::new("evidence-format", "ak_pub as TPMT_PUBLIC", e));
            return report;
        }
    };
    // AK trust: the AK certificate chains to a given self-signed root.
    let is_root = |der: &[u8]| {
        use x509_parser::prelude::FromDer;
        x509_parser::certificate::X509Certificate::from_der(der)
            .map(|(_, c)| c.subject().as_raw() == c.issuer().as_raw())
            .unwrap_or(false)
    };
    let ders: Vec<Vec<u8>> = inputs.certs.iter().map(|c| pem_or_der(c)).collect();
    let (roots, inters): (Vec<&Vec<u8>>, Vec<&Vec<u8>>) = ders.iter().partition(|d| is_root(d));
    let inters: Vec<&[u8]> = inters.iter().map(|d| d.as_slice()).collect();
    match (&att.ak_cert, roots.first()) {
        (Some(cert), Some(root)) => {
            if let Err(e) = attestation::gce::verify_ak_cert(cert, &ak, &inters, root, inputs.now) {
                report.refuse(Reason::new(
                    attestation::cloud::check::AK_TRUST,
                    "AK certificate → given CA chain, certificate key = AK",
                    e,
                ));
                return report;
            }
        }
        (None, _) => report.refuse(Reason::new(
            attestation::cloud::check::AK_TRUST,
            "an AK certificate in the evidence",
            "none",
        )),
        (_, None) => report.refuse(Reason::new(
            attestation::cloud::check::AK_TRUST,
            "a root certificate (--cert) for the AK certificate",
            "none given",
        )),
    }
    if !report.genuine() {
        return report;
    }
    let Some(q) = att
        .quotes
        .iter()
        .find(|q| q.pcrs.hash == attestation::document::HASH_SHA256)
    else {
        report.refuse(Reason::new("evidence-format", "a SHA-256 quote", "none"));
        return report;
    };
    let nonce = quote_nonce(&q.quote, inputs, &mut report);
    let verified = TpmtSignature::decode(&q.raw_sig)
        .map_err(|e| Reason::new("quote-format", "a TPMT_SIGNATURE", e))
        .and_then(|sig| {
            verify_quote(
                &ak.public_key(),
                &q.quote,
                &sig,
                HashAlg::Sha256,
                &q.pcrs.pcrs,
                &nonce,
            )
            .map_err(quote_reason)
        });
    if let Err(r) = verified {
        report.refuse(r);
        return report;
    }
    if let Some(log) = att.event_log.as_deref().filter(|l| !l.is_empty()) {
        if let Err(e) = attestation::eventlog::EventLog::parse(log)
            .and_then(|l| l.verify(HashAlg::Sha256, &q.pcrs.pcrs))
        {
            report.refuse(Reason::new(
                "event-log",
                "a log replaying to the quoted PCRs",
                e,
            ));
            return report;
        }
    }
    match attestation::cloud::gce_machine_state(att.event_log.as_deref()) {
        Ok(c) => report.claim("gce", c),
        Err(e) => report.reasons.extend(e.reasons()),
    }
    compare_pcrs(&q.pcrs.pcrs, inputs, &mut report);
    report
}

fn pem_or_der(b: &[u8]) -> Vec<u8> {
    if b.first() == Some(&0x30) {
        return b.to_vec();
    }
    x509_parser::pem::Pem::iter_from_buffer(b)
        .next()
        .and_then(Result::ok)
        .map(|p| p.contents)
        .unwrap_or_else(|| b.to_vec())
}

fn document(evidence: &[u8], inputs: &Inputs) -> anyhow::Result<EvidenceReport> {
    let variant = inputs
        .variant
        .or(inputs.config.as_ref().map(Config::variant))
        .ok_or_else(|| {
            UsageError("format document needs the variant: -c CONFIG or --variant".into())
        })?;
    let nonce = inputs.nonce.clone().ok_or_else(|| {
        UsageError("format document needs the nonce the document was made for (--nonce)".into())
    })?;
    let mut report = EvidenceReport::default();
    let is_tdx = matches!(variant, Variant::AzureTdx | Variant::QemuTdx);
    let (snp, collateral, tdx_policy, tdx_collateral) = if is_tdx {
        let c: std::sync::Arc<dyn tdx::CollateralSource> =
            match inputs.pcs.as_ref().filter(|_| inputs.collateral.is_none()) {
                Some(pcs) => std::sync::Arc::new(crate::pcs::PcsSource {
                    pcs: pcs.clone(),
                    now: inputs.now,
                }),
                None => std::sync::Arc::new(tdx_collateral(inputs, "document")?),
            };
        (
            SnpValidation::default(),
            Collateral::default(),
            tdx_policy(inputs, &mut report),
            Some(c),
        )
    } else {
        let snp = snp_validation(inputs, variant, &mut report);
        let collateral = Collateral {
            amd_certs: amd_certs(inputs, &mut report),
            ..Default::default()
        };
        (snp, collateral, TdxPolicy::default(), None)
    };
    let measurements = measurements_of(inputs).unwrap_or_default();
    if inputs.config.is_none() {
        report.warnings.push(Reason::new(
            "measurement",
            "expected measurements (from -c CONFIG)",
            "not compared",
        ));
    }
    let policy = ValidatorPolicy {
        snp,
        collateral,
        tdx: tdx_policy,
        tdx_collateral,
        now: Some(inputs.now),
        ..Default::default()
    };
    let validator = attestation::validator_for(variant, measurements, policy)
        .map_err(|e| UsageError(e.to_string()))?;
    match validator.validate(evidence, &nonce) {
        Ok(v) => {
            report
                .warnings
                .extend(v.evidence_warnings().iter().cloned());
            report.warnings.extend(
                attestation::ValidationError::Measurements(v.warnings().to_vec()).reasons(),
            );
            if let Some(o) = v.claims().as_object() {
                report.claims.extend(o.clone());
            }
            report.claim("user_data", hex::encode(v.user_data()).into());
            report.claim("ak_fingerprint", hex::encode(v.ak_fingerprint()).into());
            report.claim(
                "pcrs",
                serde_json::Value::Object(
                    v.pcrs()
                        .iter()
                        .map(|(i, p)| (i.to_string(), hex::encode(p).into()))
                        .collect(),
                ),
            );
        }
        Err(e) => report.reasons.extend(e.reasons()),
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2025-06-20T10:16:03Z"), Some(1_750_414_563));
        assert_eq!(
            parse_rfc3339("2025-06-20T12:16:03.5+02:00"),
            Some(1_750_414_563)
        );
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00Z"), Some(951_782_400));
        for bad in [
            "2025-06-20",
            "2025-13-01T00:00:00Z",
            "2025-06-20T10:16:03",
            "x025-06-20T10:16:03Z",
            "2025-06-20T10:16:03+0200",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
