//! Validators for the Go system's cloud variants: `aws-nitro-tpm`, `aws-sev-snp`,
//! `azure-sev-snp`, `azure-trustedlaunch`, `gcp-sev-es`, `gcp-sev-snp` (reference
//! attestation.md §2). All share the vTPM flow of [`crate::vtpm`]; they differ in how they
//! decide to trust the attestation key (AK), given the document's `InstanceInfo`:
//!
//! | variant | AK trust |
//! |---|---|
//! | aws-sev-snp | SNP report (VLEK) with `report_data = SHA-512(PKIX(AK))` |
//! | azure-sev-snp | SNP report (VCEK) → `SHA-256(RuntimeData) == report_data[0..32]` → `HCLAkPub` == AK |
//! | gcp-sev-snp | SNP report with `report_data == extraData ‖ 0³²`; AK from the GCE API |
//! | gcp-sev-es | AK from the GCE API; event log says GCE firmware ≥ 1 and AMD SEV |
//! | azure-trustedlaunch | AK certificate → CA → a trusted root; certificate key == AK |
//! | aws-nitro-tpm | none (as in Go); the image must have TPM support per EC2 |
//!
//! The validators are pure: what Go fetches at validation time (VCEK/ASK from AMD KDS or
//! THIM, the GCE instance's AK, EC2 image data, the Trusted-Launch root) is passed in as a
//! [`Collateral`] value, and the time as [`crate::ValidatorPolicy::now`].

use std::collections::BTreeSet;

use serde::Deserialize;
use sha2::{Digest, Sha256, Sha512};

use crate::azure_hcl::{HclReport, REPORT_TYPE_SNP};
use crate::document::{b64, b64_opt};
use crate::eventlog::{EventLog, EV_NONHOST_INFO, EV_S_CRTM_VERSION};
use crate::snp::{self, AmdCert, AmdRoots, PolicyOutcome, SnpPolicy, VerifiedReport};
use crate::tpm2::{HashAlg, PublicKey};
use crate::vtpm::{validate_vtpm, TrustInput, TrustOutcome};
use crate::{Measurements, Reason, ValidationError, Validator, Variant, VerifiedAttestation};

/// Names of the AK-trust checks, as in [`Reason::check`].
pub mod check {
    pub const INSTANCE_INFO: &str = "instance-info-format";
    pub const AK_BINDING: &str = "ak-binding";
    pub const AK_TRUST: &str = "ak-trust";
    pub const RUNTIME_DATA: &str = "azure-runtime-data-binding";
    pub const GCE_MACHINE_STATE: &str = "gce-machine-state";
    pub const AWS_TPM_SUPPORT: &str = "aws-tpm-support";
}

/// Evidence a validator needs besides the document, fetched by an edge component (or given on
/// the command line) and passed in as a value.
#[derive(Debug, Clone, Default)]
pub struct Collateral {
    /// AMD certificates (VCEK/VLEK, ASK/ASVK) used when the document lacks them (Go: AMD KDS,
    /// Azure THIM).
    pub amd_certs: Vec<AmdCert>,
    /// AK public keys the cloud vouches for (GCE `getShieldedInstanceIdentity`).
    pub cloud_aks: Vec<PublicKey>,
    /// `azure-trustedlaunch`: trusted root certificates (DER) of the AK certificate chain
    /// (Go: the built-in AME root, expired 2026-05-24).
    pub trusted_launch_roots: Vec<Vec<u8>>,
    /// `aws-nitro-tpm`: AMI IDs for which EC2 `DescribeImages` reported `TpmSupport: v2.0`.
    pub aws_tpm_images: BTreeSet<String>,
}

/// The SEV-SNP part of a validator's policy, from the config (`amdRootKey`, `amdSigningKey`,
/// minimum versions, `firmwareSignerConfig`).
#[derive(Debug, Clone, Default)]
pub struct SnpValidation {
    pub policy: SnpPolicy,
    pub roots: AmdRoots,
    /// The config's `amdSigningKey` (ASK/ASVK), used when the document has none.
    pub signing_keys: Vec<AmdCert>,
}

/// Go's `snp.InstanceInfo` as `encoding/json` writes it (no json tags; `[]byte` as base64,
/// nil as `null`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct SnpInstanceInfo {
    /// VCEK/VLEK, PEM.
    #[serde(rename = "ReportSigner", with = "b64_opt", default)]
    pub report_signer: Option<Vec<u8>>,
    /// ASK (+ ARK), PEM.
    #[serde(rename = "CertChain", with = "b64_opt", default)]
    pub cert_chain: Option<Vec<u8>>,
    /// The 1184-byte report.
    #[serde(rename = "AttestationReport", with = "b64_opt", default)]
    pub attestation_report: Option<Vec<u8>>,
    #[serde(rename = "Azure", default)]
    pub azure: Option<AzureInstanceInfo>,
    #[serde(rename = "GCP", default)]
    pub gcp: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct AzureInstanceInfo {
    #[serde(rename = "RuntimeData", with = "b64_opt", default)]
    pub runtime_data: Option<Vec<u8>>,
    #[serde(rename = "MAAToken", default)]
    pub maa_token: String,
}

impl SnpInstanceInfo {
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain owned data into a Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// `azure-trustedlaunch` InstanceInfo.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct TrustedLaunchInfo {
    #[serde(rename = "AkCert", with = "b64")]
    pub ak_cert: Vec<u8>,
    #[serde(rename = "CA", with = "b64")]
    pub ca: Vec<u8>,
}

fn refused(
    check: &'static str,
    expected: impl std::fmt::Display,
    actual: impl std::fmt::Display,
) -> ValidationError {
    ValidationError::Refused(vec![Reason::new(check, expected, actual)])
}

fn instance_info<'a, T: Deserialize<'a>>(
    t: &'a TrustInput<'_>,
    what: &str,
) -> Result<T, ValidationError> {
    let bytes = t.doc.instance_info.as_deref().ok_or_else(|| {
        refused(
            check::INSTANCE_INFO,
            format!("InstanceInfo with {what}"),
            "none",
        )
    })?;
    serde_json::from_slice(bytes)
        .map_err(|e| refused(check::INSTANCE_INFO, format!("InstanceInfo with {what}"), e))
}

/// The report, certificates and policy outcome of an SNP `InstanceInfo`.
pub fn verify_snp_instance(
    info: &SnpInstanceInfo,
    snp: &SnpValidation,
    collateral: &Collateral,
    now: i64,
    expected_report_data: Option<&[u8]>,
) -> Result<(VerifiedReport, PolicyOutcome), ValidationError> {
    let one = |r: Reason| ValidationError::Refused(vec![r]);
    let report_bytes = info.attestation_report.as_deref().unwrap_or_default();
    let report = snp::parse_report(report_bytes).map_err(one)?;
    let mut certs = Vec::new();
    if let Some(pem) = info
        .report_signer
        .as_deref()
        .filter(|p| !p.trim_ascii().is_empty())
    {
        certs.extend(snp::parse_certs(pem).map_err(one)?);
    }
    if let Some(pem) = info
        .cert_chain
        .as_deref()
        .filter(|p| !p.trim_ascii().is_empty())
    {
        // As in Go, only the ASK/ASVK of the issuer's chain is used, never its ARK.
        certs.extend(
            snp::parse_certs(pem)
                .map_err(one)?
                .into_iter()
                .filter(|c| !matches!(c.role, snp::Role::Ark(_))),
        );
    }
    for c in snp.signing_keys.iter().chain(&collateral.amd_certs) {
        if !certs.iter().any(|have| have.role == c.role) {
            certs.push(c.clone());
        }
    }
    let verified = snp::verify_report(&report, &certs, &snp.roots, now).map_err(one)?;
    let mut outcome = snp.policy.check(&verified);
    if let Some(want) = expected_report_data {
        if let Err(r) = snp::check_report_data(&report, want) {
            outcome.refusals.push(r);
        }
    }
    if !outcome.refusals.is_empty() {
        return Err(ValidationError::Refused(outcome.refusals));
    }
    Ok((verified, outcome))
}

/// Go `x509.MarshalPKIXPublicKey` of an RSA key: `SubjectPublicKeyInfo` DER with
/// `rsaEncryption` and NULL parameters.
pub fn rsa_spki_der(modulus: &[u8], exponent: u32) -> Vec<u8> {
    fn len(n: usize) -> Vec<u8> {
        match n {
            0..=0x7F => vec![n as u8],
            0x80..=0xFF => vec![0x81, n as u8],
            _ => vec![0x82, (n >> 8) as u8, n as u8],
        }
    }
    fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend(len(body.len()));
        out.extend_from_slice(body);
        out
    }
    fn integer(be: &[u8]) -> Vec<u8> {
        let digits: Vec<u8> = be.iter().copied().skip_while(|&b| b == 0).collect();
        let mut body = Vec::with_capacity(digits.len() + 1);
        if digits.first().is_none_or(|&b| b & 0x80 != 0) {
            body.push(0);
        }
        body.extend(digits);
        tlv(0x02, &body)
    }
    let rsa_key = tlv(
        0x30,
        &[integer(modulus), integer(&exponent.to_be_bytes())].concat(),
    );
    let mut bits = vec![0u8];
    bits.extend(rsa_key);
    let alg = [
        0x30, 0x0D, 0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    tlv(0x30, &[&alg[..], &tlv(0x03, &bits)].concat())
}

fn claims_of(v: &VerifiedReport, extra: &[(&str, serde_json::Value)]) -> serde_json::Value {
    let mut c = v.claims();
    if let Some(o) = c.as_object_mut() {
        for (k, val) in extra {
            o.insert((*k).to_string(), val.clone());
        }
    }
    serde_json::json!({ "snp": c })
}

fn ak_in(list: &[PublicKey], ak: &PublicKey, source: &str) -> Result<(), ValidationError> {
    if list.iter().any(|k| k == ak) {
        Ok(())
    } else {
        Err(refused(
            check::AK_TRUST,
            format!("an AK vouched for by {source} ({} keys given)", list.len()),
            "the document's AK is not among them",
        ))
    }
}

/// A validator for one of the cloud variants.
#[derive(Debug, Clone)]
pub struct CloudValidator {
    variant: Variant,
    measurements: Measurements,
    snp: SnpValidation,
    collateral: Collateral,
    now: Option<i64>,
}

impl CloudValidator {
    /// `variant` must be one of the six cloud variants this module implements.
    pub fn new(
        variant: Variant,
        measurements: Measurements,
        snp: SnpValidation,
        collateral: Collateral,
        now: Option<i64>,
    ) -> Option<Self> {
        matches!(
            variant,
            Variant::AwsNitroTpm
                | Variant::AwsSevSnp
                | Variant::AzureSevSnp
                | Variant::AzureTrustedLaunch
                | Variant::GcpSevEs
                | Variant::GcpSevSnp
        )
        .then_some(Self {
            variant,
            measurements,
            snp,
            collateral,
            now,
        })
    }

    fn now(&self) -> i64 {
        self.now.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
        })
    }

    fn trust(&self, t: &TrustInput<'_>) -> Result<TrustOutcome, ValidationError> {
        let ak = t.ak.public_key();
        let now = self.now();
        match self.variant {
            Variant::AwsSevSnp => {
                let info: SnpInstanceInfo = instance_info(t, "an SNP report")?;
                let PublicKey::Rsa { modulus, exponent } = &ak else {
                    return Err(refused(check::AK_BINDING, "an RSA AK", "an ECC AK"));
                };
                let digest = Sha512::digest(rsa_spki_der(modulus, *exponent));
                let (v, out) =
                    verify_snp_instance(&info, &self.snp, &self.collateral, now, Some(&digest))?;
                Ok(TrustOutcome {
                    warnings: out.warnings,
                    claims: claims_of(&v, &[]),
                })
            }
            Variant::AzureSevSnp => {
                let info: SnpInstanceInfo = instance_info(t, "an SNP report")?;
                let runtime = info
                    .azure
                    .as_ref()
                    .and_then(|a| a.runtime_data.as_deref())
                    .ok_or_else(|| refused(check::INSTANCE_INFO, "Azure.RuntimeData", "none"))?;
                let (v, out) = verify_snp_instance(&info, &self.snp, &self.collateral, now, None)?;
                let h = Sha256::digest(runtime);
                if !crate::quote::ct_eq(&h, &v.report.report_data[..32]) {
                    return Err(refused(
                        check::RUNTIME_DATA,
                        format!(
                            "report_data[0..32] = SHA-256(runtime data) = {}",
                            hex::encode(h)
                        ),
                        hex::encode(&v.report.report_data[..32]),
                    ));
                }
                let hcl_ak = HclReport {
                    report_type: REPORT_TYPE_SNP,
                    hw_report: &[],
                    runtime_data: runtime,
                }
                .ak_public_key()
                .map_err(|e| {
                    refused(check::AK_BINDING, "an HCLAkPub key in the runtime data", e)
                })?;
                if hcl_ak != ak {
                    return Err(refused(
                        check::AK_BINDING,
                        "the document's AK equal to the runtime data's HCLAkPub",
                        "a different key",
                    ));
                }
                Ok(TrustOutcome {
                    warnings: out.warnings,
                    claims: claims_of(&v, &[]),
                })
            }
            Variant::GcpSevSnp => {
                let info: SnpInstanceInfo = instance_info(t, "an SNP report")?;
                let (v, out) = verify_snp_instance(
                    &info,
                    &self.snp,
                    &self.collateral,
                    now,
                    Some(t.extra_data),
                )?;
                ak_in(&self.collateral.cloud_aks, &ak, "the GCE API")?;
                Ok(TrustOutcome {
                    warnings: out.warnings,
                    claims: claims_of(&v, &[]),
                })
            }
            Variant::GcpSevEs => {
                ak_in(&self.collateral.cloud_aks, &ak, "the GCE API")?;
                let claims = gce_machine_state(t.doc.attestation.event_log.as_deref())?;
                Ok(TrustOutcome {
                    warnings: Vec::new(),
                    claims,
                })
            }
            Variant::AzureTrustedLaunch => {
                let info: TrustedLaunchInfo = instance_info(t, "AkCert and CA")?;
                let mut errors = Vec::new();
                for root in &self.collateral.trusted_launch_roots {
                    match crate::gce::verify_ak_cert(&info.ak_cert, t.ak, &[&info.ca], root, now) {
                        Ok(()) => return Ok(TrustOutcome::default()),
                        Err(e) => errors.push(e.to_string()),
                    }
                }
                Err(refused(
                    check::AK_TRUST,
                    format!(
                        "AK certificate → CA → one of {} trusted roots, certificate key = AK",
                        self.collateral.trusted_launch_roots.len()
                    ),
                    if errors.is_empty() {
                        "no trusted root given".to_string()
                    } else {
                        errors.join("; ")
                    },
                ))
            }
            Variant::AwsNitroTpm => {
                #[derive(Deserialize)]
                struct Iid {
                    #[serde(rename = "imageId")]
                    image_id: String,
                    #[serde(default)]
                    region: String,
                }
                let iid: Iid = instance_info(t, "the EC2 instance identity document")?;
                if !self.collateral.aws_tpm_images.contains(&iid.image_id) {
                    return Err(refused(
                        check::AWS_TPM_SUPPORT,
                        "an image with TpmSupport v2.0 (EC2 DescribeImages)",
                        format!(
                            "image {} in {:?} not known to support TPM",
                            iid.image_id, iid.region
                        ),
                    ));
                }
                Ok(TrustOutcome::default())
            }
            other => Err(ValidationError::Other(format!(
                "{other} is not a cloud variant"
            ))),
        }
    }
}

impl Validator for CloudValidator {
    fn variant(&self) -> Variant {
        self.variant
    }
    fn validate(&self, doc: &[u8], nonce: &[u8]) -> Result<VerifiedAttestation, ValidationError> {
        validate_vtpm(self.variant, doc, nonce, &self.measurements, |t| {
            self.trust(t)
        })
    }
}

/// GCE firmware version and CVM technology from PCR 0 of the event log (go-tpm-tools
/// `MachineState.Platform`): `EV_S_CRTM_VERSION` = UCS-2 "GCE Virtual Firmware v<N>",
/// `EV_NONHOST_INFO` = "GCE NonHostInfo\0" + technology byte (1 = AMD SEV). Go's gcp-sev-es
/// requires version ≥ 1 and technology AMD_SEV. The event digests must be the hashes of the
/// data (the log itself is then checked against the quote by the vTPM flow).
pub fn gce_machine_state(log: Option<&[u8]>) -> Result<serde_json::Value, ValidationError> {
    let fail = |e: &str, a: String| refused(check::GCE_MACHINE_STATE, e, a);
    let log = log
        .filter(|l| !l.is_empty())
        .ok_or_else(|| fail("an event log with GCE platform events", "none".into()))?;
    let log = EventLog::parse(log).map_err(|e| ValidationError::EventLog(e.to_string()))?;
    let mut version = None;
    let mut tech = None;
    for e in log.events.iter().filter(|e| e.pcr == 0) {
        if !e.digest_matches_data(HashAlg::Sha256) {
            continue;
        }
        if e.event_type == EV_S_CRTM_VERSION {
            let units: Vec<u16> = e
                .data
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .take_while(|&u| u != 0)
                .collect();
            let s = String::from_utf16_lossy(&units);
            if let Some(v) = s.strip_prefix("GCE Virtual Firmware v") {
                version = v.parse::<u32>().ok();
            }
        } else if e.event_type == EV_NONHOST_INFO && e.data.starts_with(b"GCE NonHostInfo\0") {
            tech = e.data.get(16).copied();
        }
    }
    match version {
        Some(v) if v >= 1 => {}
        other => return Err(fail("GCE firmware version ≥ 1", format!("{other:?}"))),
    }
    if tech != Some(1) {
        return Err(fail(
            "confidential technology AMD_SEV (1)",
            format!("{tech:?}"),
        ));
    }
    Ok(serde_json::json!({ "gce_firmware_version": version, "gce_technology": "AMD_SEV" }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventlog::tests::agile_log;
    use crate::insecure_software_tpm::InsecureSoftwareTpm;
    use crate::{validator_for, ValidatorPolicy};

    fn crtm(version: &str) -> Vec<u8> {
        let s = format!("GCE Virtual Firmware {version}\0");
        s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
    }

    fn nonhost(tech: u8) -> Vec<u8> {
        let mut d = b"GCE NonHostInfo\0".to_vec();
        d.push(tech);
        d.resize(32, 0);
        d
    }

    /// gcp-sev-es: AK from the GCE API, firmware version and AMD SEV from the event log.
    #[test]
    fn gcp_sev_es_checks_the_api_ak_and_the_machine_state() {
        type Case = (&'static str, Vec<u8>, Vec<u8>, Option<&'static str>);
        let cases: [Case; 4] = [
            ("sev", crtm("v1"), nonhost(1), None),
            (
                "sev-snp tech",
                crtm("v1"),
                nonhost(4),
                Some(check::GCE_MACHINE_STATE),
            ),
            (
                "firmware v0",
                crtm("v0"),
                nonhost(1),
                Some(check::GCE_MACHINE_STATE),
            ),
            (
                "no version",
                b"other".to_vec(),
                nonhost(1),
                Some(check::GCE_MACHINE_STATE),
            ),
        ];
        for (name, c, n, want) in cases {
            let mut t = InsecureSoftwareTpm::generate(Variant::GcpSevEs).unwrap();
            t.extend(0, &c);
            t.extend(0, &n);
            let mut d = t.document(b"ud", b"nonce", Some(b"{}".to_vec())).unwrap();
            d.attestation.event_log = Some(agile_log(&[
                (0, EV_S_CRTM_VERSION, &c),
                (0, EV_NONHOST_INFO, &n),
            ]));
            let ak = crate::tpm2::TpmtPublic::decode(t.ak_public())
                .unwrap()
                .public_key();
            let policy = ValidatorPolicy {
                collateral: Collateral {
                    cloud_aks: vec![ak],
                    ..Default::default()
                },
                ..Default::default()
            };
            let v = validator_for(Variant::GcpSevEs, Measurements::default(), policy).unwrap();
            let r = v.validate(&d.to_json(), b"nonce");
            match want {
                None => assert_eq!(r.unwrap().claims()["gce_technology"], "AMD_SEV", "{name}"),
                Some(c) => assert_eq!(r.unwrap_err().reasons()[0].check, c, "{name}"),
            }
            // Without the API's word the AK is refused; without a log, the machine state is.
            let v = validator_for(
                Variant::GcpSevEs,
                Measurements::default(),
                ValidatorPolicy::default(),
            )
            .unwrap();
            assert_eq!(
                v.validate(&d.to_json(), b"nonce").unwrap_err().reasons()[0].check,
                check::AK_TRUST
            );
        }
    }
}
