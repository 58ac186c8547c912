//! The attestation policy a config section implies for a validator
//! ([`attestation::ValidatorPolicy`]), as the Go validators derive it from the config.
//!
//! SEV-SNP sections (`awsSEVSNP`, `gcpSEVSNP`, `azureSEVSNP`): `amdRootKey` (empty = the
//! pinned ARKs of Milan, Genoa and Turin; set = exactly that ARK), `amdSigningKey` (ASK/ASVK
//! used when the document has none), the minimum versions as minimum launch TCB (Azure also
//! as minimum reported TCB, as in Go), and on Azure `firmwareSignerConfig`. A minimum version
//! `latest` needs Constellation's online attestation-config API; offline it is not enforced
//! and a warning says so.

use attestation::cloud::SnpValidation;
use attestation::snp::{self, AmdRoots, IdKeyPolicy, SnpPolicy, Tcb as SnpTcb};
use attestation::{Reason, Variant};

use crate::raw::{AttestationConfig, EnforcementPolicy, Tcb};

fn version(name: &str, t: &Tcb<u8>, notes: &mut Vec<Reason>) -> u8 {
    match t {
        Tcb::Value(v) => *v,
        Tcb::Latest => {
            notes.push(Reason::new(
                "config-minimum-version",
                format!("{name}: a number (\"latest\" is resolved by the online attestation-config API)"),
                "latest: not enforced offline",
            ));
            0
        }
    }
}

fn common(
    bl: &Tcb<u8>,
    tee: &Tcb<u8>,
    snp_v: &Tcb<u8>,
    ucode: &Tcb<u8>,
    root: &str,
    ask: &str,
    now: i64,
) -> Result<(SnpValidation, SnpTcb), Reason> {
    let mut notes = Vec::new();
    let min = SnpTcb {
        fmc: None,
        bootloader: version("bootloaderVersion", bl, &mut notes),
        tee: version("teeVersion", tee, &mut notes),
        snp: version("snpVersion", snp_v, &mut notes),
        microcode: version("microcodeVersion", ucode, &mut notes),
    };
    let roots = if root.trim().is_empty() {
        AmdRoots::builtin()
    } else {
        AmdRoots::from_ark_pem(root.as_bytes(), now)?
    };
    let signing_keys = if ask.trim().is_empty() {
        Vec::new()
    } else {
        snp::parse_certs(ask.as_bytes())?
    };
    let policy = SnpPolicy {
        minimum_launch_tcb: min,
        notes,
        ..SnpPolicy::default()
    };
    Ok((
        SnpValidation {
            policy,
            roots,
            signing_keys,
        },
        min,
    ))
}

impl AttestationConfig {
    /// The SEV-SNP validation of `variant`'s section at time `now` (Unix seconds; the config's
    /// `amdRootKey` must be valid then). `Ok(None)` for sections without SEV-SNP or unset.
    pub fn snp_validation(
        &self,
        variant: Variant,
        now: i64,
    ) -> Result<Option<SnpValidation>, Reason> {
        let s = match variant {
            Variant::AwsSevSnp => self.aws_sev_snp.as_ref(),
            Variant::GcpSevSnp => self.gcp_sev_snp.as_ref(),
            Variant::AzureSevSnp => {
                let Some(a) = self.azure_sev_snp.as_ref() else {
                    return Ok(None);
                };
                let (mut v, min) = common(
                    &a.bootloader_version,
                    &a.tee_version,
                    &a.snp_version,
                    &a.microcode_version,
                    &a.amd_root_key,
                    &a.amd_signing_key,
                    now,
                )?;
                v.policy.minimum_tcb = Some(min);
                v.policy.accepted_id_key_digests =
                    a.firmware_signer_config.accepted_key_digests.0.clone();
                v.policy.id_key_policy = match a.firmware_signer_config.enforcement_policy {
                    EnforcementPolicy::Equal => IdKeyPolicy::Equal,
                    EnforcementPolicy::MaaFallback => IdKeyPolicy::MaaFallback,
                    EnforcementPolicy::WarnOnly => IdKeyPolicy::WarnOnly,
                };
                return Ok(Some(v));
            }
            _ => return Ok(None),
        };
        let Some(s) = s else { return Ok(None) };
        let (v, _) = common(
            &s.bootloader_version,
            &s.tee_version,
            &s.snp_version,
            &s.microcode_version,
            &s.amd_root_key,
            &s.amd_signing_key,
            now,
        )?;
        Ok(Some(v))
    }
}

impl crate::Config {
    /// The config's part of a validator policy for its variant: the SEV-SNP settings of its
    /// section (trusted AKs and cloud collateral are the caller's). `now` (Unix seconds) fixes
    /// the validation time; `None` = the system clock at each validation.
    pub fn validator_policy(
        &self,
        now: Option<i64>,
    ) -> Result<attestation::ValidatorPolicy, Reason> {
        let at = now.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
        });
        let snp = self
            .raw()
            .attestation
            .snp_validation(self.variant(), at)?
            .unwrap_or_default();
        Ok(attestation::ValidatorPolicy {
            snp,
            now,
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defaults::AZURE_DEFAULT_ACCEPTED_KEY_DIGEST;
    use crate::raw::{AzureSevSnp, FirmwareSignerConfig, KeyDigests, SevSnp};

    #[test]
    fn sections_map_to_snp_policies() {
        let mut digest = [0u8; 48];
        hex::decode_to_slice(AZURE_DEFAULT_ACCEPTED_KEY_DIGEST, &mut digest).unwrap();
        let a = AttestationConfig {
            azure_sev_snp: Some(AzureSevSnp {
                measurements: Default::default(),
                bootloader_version: Tcb::Value(3),
                tee_version: Tcb::Value(0),
                snp_version: Tcb::Latest,
                microcode_version: Tcb::Value(115),
                firmware_signer_config: FirmwareSignerConfig {
                    accepted_key_digests: KeyDigests(vec![digest]),
                    enforcement_policy: EnforcementPolicy::WarnOnly,
                    maa_url: String::new(),
                },
                amd_root_key: String::new(),
                amd_signing_key: String::new(),
            }),
            gcp_sev_snp: Some(SevSnp {
                measurements: Default::default(),
                bootloader_version: Tcb::Value(1),
                tee_version: Tcb::Value(2),
                snp_version: Tcb::Value(3),
                microcode_version: Tcb::Value(4),
                amd_root_key: "not a pem".into(),
                amd_signing_key: String::new(),
            }),
            ..Default::default()
        };
        let v = a.snp_validation(Variant::AzureSevSnp, 0).unwrap().unwrap();
        assert_eq!(v.policy.minimum_launch_tcb.microcode, 115);
        assert_eq!(v.policy.minimum_tcb, Some(v.policy.minimum_launch_tcb));
        assert_eq!(v.policy.id_key_policy, IdKeyPolicy::WarnOnly);
        assert_eq!(v.policy.accepted_id_key_digests, vec![digest]);
        assert_eq!(v.policy.notes.len(), 1, "snpVersion latest");
        assert_eq!(v.roots, AmdRoots::builtin());
        assert!(!v.policy.allow_debug);
        let err = a.snp_validation(Variant::GcpSevSnp, 0).unwrap_err();
        assert_eq!(err.check, snp::check::CERTIFICATE_FORMAT);
        assert!(a.snp_validation(Variant::AwsSevSnp, 0).unwrap().is_none());
        assert!(a.snp_validation(Variant::QemuVtpm, 0).unwrap().is_none());
    }

    /// `config generate` writes Go's default roots; they are the pinned ARK-Milan and the
    /// Intel SGX Root CA, and the generated SNP sections trust exactly ARK-Milan.
    #[test]
    fn generated_defaults_carry_the_go_root_keys() {
        use sha2::{Digest, Sha256};
        let ark = snp::parse_certs(crate::GO_DEFAULT_AMD_ROOT_KEY.as_bytes()).unwrap();
        assert_eq!(ark.len(), 1);
        assert_eq!(
            hex::encode(Sha256::digest(&ark[0].der)),
            snp::roots::ARK_MILAN_SHA256
        );
        let (_, pem) =
            x509_parser::pem::parse_x509_pem(crate::GO_DEFAULT_INTEL_ROOT_KEY.as_bytes()).unwrap();
        let cert = pem.parse_x509().unwrap();
        assert_eq!(cert.subject().to_string(), cert.issuer().to_string());
        assert!(cert.subject().to_string().contains("Intel SGX Root CA"));
        for (p, v) in [
            (crate::Provider::Aws, Variant::AwsSevSnp),
            (crate::Provider::Gcp, Variant::GcpSevSnp),
            (crate::Provider::Azure, Variant::AzureSevSnp),
        ] {
            let c = crate::Config::generate(p, Some(v), None, Default::default(), None).unwrap();
            let back = crate::RawConfig::from_yaml(&c.to_yaml()).unwrap();
            let s = back
                .attestation
                .snp_validation(v, 1_750_000_000)
                .unwrap()
                .unwrap();
            assert_eq!(s.roots.products(), [snp::Product::Milan], "{p}/{v}");
        }
    }
}
