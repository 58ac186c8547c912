//! The attestation policy a config section implies for a validator
//! ([`attestation::ValidatorPolicy`]), as the Go validators derive it from the config.
//!
//! SEV-SNP sections (`awsSEVSNP`, `gcpSEVSNP`, `azureSEVSNP`): `amdRootKey` (empty = the
//! pinned ARKs of Milan, Genoa and Turin; set = exactly that ARK), `amdSigningKey` (ASK/ASVK
//! used when the document has none), the minimum versions as minimum launch TCB (Azure also
//! as minimum reported TCB, as in Go), and on Azure `firmwareSignerConfig`. A minimum version
//! `latest` needs Constellation's online attestation-config API; offline it is not enforced
//! and a warning says so.
//!
//! TDX (`azureTDX`; `qemuTDX` has only measurements): `qeSVN`, `pceSVN`, `teeTCBSVN`,
//! `qeVendorID`, `mrSeam`, `xfam` and `intelRootKey` become the [`TdxPolicy`]; `latest`
//! values are not enforced offline (a note says so). `qemu-tdx` gets the Go defaults (Intel's
//! root, UpToDate only), as Go's QEMU TDX validator uses no config values besides measurements.

use attestation::cloud::SnpValidation;
use attestation::snp::{self, AmdRoots, IdKeyPolicy, SnpPolicy, Tcb as SnpTcb};
use attestation::tdx::{self, TdxPolicy};
use attestation::{Reason, Variant};

use crate::raw::{AttestationConfig, EnforcementPolicy, HexOrLatest, Tcb};

/// The TDX policy of a config section and the notes on what it cannot enforce offline.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TdxValidation {
    pub policy: TdxPolicy,
    /// What the section asks for that is not enforced offline (`latest` values).
    pub notes: Vec<Reason>,
}

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

impl AttestationConfig {
    /// The TDX policy of `variant`'s section: `Ok(None)` for variants without TDX and for an
    /// unset `azureTDX` section; `qemu-tdx` always gets the Go defaults. An `intelRootKey`
    /// that is not a certificate is refused (check [`tdx::check::ROOT`]).
    pub fn tdx_validation(&self, variant: Variant) -> Result<Option<TdxValidation>, Reason> {
        match variant {
            Variant::QemuTdx => return Ok(Some(TdxValidation::default())),
            Variant::AzureTdx => {}
            _ => return Ok(None),
        }
        let Some(s) = self.azure_tdx.as_ref() else {
            return Ok(None);
        };
        let mut p = TdxPolicy::default();
        let mut latest = Vec::new();
        match s.qe_svn {
            Tcb::Value(v) => p.min_qe_svn = v,
            Tcb::Latest => latest.push("qeSVN"),
        }
        match s.pce_svn {
            Tcb::Value(v) => p.min_pce_svn = v,
            Tcb::Latest => latest.push("pceSVN"),
        }
        match s.tee_tcb_svn {
            HexOrLatest::Value(v) => p.min_tee_tcb_svn = v,
            HexOrLatest::Latest => latest.push("teeTCBSVN"),
        }
        // `latest` vendor ID: Intel's, the verifier's default.
        if let HexOrLatest::Value(v) = s.qe_vendor_id {
            p.qe_vendor_id = Some(v);
        }
        match s.xfam {
            HexOrLatest::Value(v) => p.xfam = Some(v),
            HexOrLatest::Latest => latest.push("xfam"),
        }
        p.mr_seam = s.mr_seam.0;
        if !s.intel_root_key.trim().is_empty() {
            p = p
                .with_root_certificate(s.intel_root_key.as_bytes())
                .map_err(|e| Reason::new(tdx::check::ROOT, "intelRootKey: a PEM certificate", e))?;
        }
        let notes = if latest.is_empty() {
            Vec::new()
        } else {
            vec![Reason::new(
                "config-minimum-version",
                format!(
                    "{} (\"latest\", resolved by the online attestation-config API)",
                    latest.join(", ")
                ),
                "latest: not enforced offline",
            )]
        };
        Ok(Some(TdxValidation { policy: p, notes }))
    }
}

impl crate::Config {
    /// The config's part of a validator policy for its variant: the SEV-SNP or TDX settings of
    /// its section (trusted AKs and cloud/TDX collateral are the caller's). `now` (Unix seconds) fixes
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
        let tdx = self
            .raw()
            .attestation
            .tdx_validation(self.variant())?
            .map(|t| t.policy)
            .unwrap_or_default();
        Ok(attestation::ValidatorPolicy {
            snp,
            tdx,
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

    fn azure_tdx() -> crate::raw::AzureTdx {
        crate::raw::AzureTdx {
            measurements: Default::default(),
            qe_svn: Tcb::Value(2),
            pce_svn: Tcb::Value(13),
            tee_tcb_svn: HexOrLatest::Value([3; 16]),
            qe_vendor_id: HexOrLatest::Value([0x93; 16]),
            mr_seam: crate::raw::OptHex(Some([0x5e; 48])),
            xfam: HexOrLatest::Value([0xe7, 0x02, 0x06, 0, 0, 0, 0, 0]),
            intel_root_key: crate::GO_DEFAULT_INTEL_ROOT_KEY.to_string(),
        }
    }

    #[test]
    fn azure_tdx_section_maps_to_tdx_policy() {
        let a = AttestationConfig {
            azure_tdx: Some(azure_tdx()),
            ..Default::default()
        };
        let v = a.tdx_validation(Variant::AzureTdx).unwrap().unwrap();
        assert!(v.notes.is_empty(), "{:?}", v.notes);
        let p = &v.policy;
        assert_eq!((p.min_qe_svn, p.min_pce_svn), (2, 13));
        assert_eq!(p.min_tee_tcb_svn, [3; 16]);
        assert_eq!(p.qe_vendor_id, Some([0x93; 16]));
        assert_eq!(p.mr_seam, Some([0x5e; 48]));
        assert_eq!(p.xfam, Some([0xe7, 0x02, 0x06, 0, 0, 0, 0, 0]));
        // Go's default intelRootKey is the Intel SGX Root CA the verifier pins by default.
        assert_eq!(p.root_key, TdxPolicy::default().root_key);
        assert_eq!(
            p.accepted_tcb_statuses,
            TdxPolicy::default().accepted_tcb_statuses
        );
        assert!(!p.allow_debug);

        // `latest` values: defaults, one note naming them.
        let mut s = azure_tdx();
        s.qe_svn = Tcb::Latest;
        s.tee_tcb_svn = HexOrLatest::Latest;
        s.xfam = HexOrLatest::Latest;
        s.qe_vendor_id = HexOrLatest::Latest;
        s.mr_seam = crate::raw::OptHex(None);
        s.intel_root_key = String::new();
        let a = AttestationConfig {
            azure_tdx: Some(s),
            ..Default::default()
        };
        let v = a.tdx_validation(Variant::AzureTdx).unwrap().unwrap();
        assert_eq!(v.policy.min_qe_svn, 0);
        assert_eq!(v.policy.min_pce_svn, 13);
        assert_eq!(v.policy.min_tee_tcb_svn, [0; 16]);
        assert_eq!((v.policy.xfam, v.policy.mr_seam), (None, None));
        assert_eq!(v.policy.qe_vendor_id, TdxPolicy::default().qe_vendor_id);
        assert_eq!(v.notes.len(), 1);
        assert_eq!(v.notes[0].check, "config-minimum-version");
        assert!(
            v.notes[0].expected.contains("qeSVN, teeTCBSVN, xfam"),
            "{:?}",
            v.notes[0]
        );

        // A bad root is refused with the root check named.
        let mut s = azure_tdx();
        s.intel_root_key = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into();
        let a = AttestationConfig {
            azure_tdx: Some(s),
            ..Default::default()
        };
        assert_eq!(
            a.tdx_validation(Variant::AzureTdx).unwrap_err().check,
            tdx::check::ROOT
        );
    }

    #[test]
    fn tdx_validation_per_variant() {
        let a = AttestationConfig::default();
        assert_eq!(a.tdx_validation(Variant::AzureTdx).unwrap(), None);
        assert_eq!(
            a.tdx_validation(Variant::QemuTdx).unwrap(),
            Some(TdxValidation::default())
        );
        for v in [Variant::AzureSevSnp, Variant::GcpSevSnp, Variant::QemuVtpm] {
            assert_eq!(a.tdx_validation(v).unwrap(), None, "{v}");
        }
    }

    /// `Config::validator_policy` carries the TDX section of a generated azure-tdx config
    /// (Go defaults: every SVN `latest`, Intel's root).
    #[test]
    fn validator_policy_covers_tdx_variants() {
        let c = crate::Config::generate(
            crate::Provider::Azure,
            Some(Variant::AzureTdx),
            None,
            Default::default(),
            None,
        )
        .unwrap();
        let mut y = c.to_yaml();
        for (from, to) in [
            ("qeSVN: latest", "qeSVN: 4"),
            ("pceSVN: latest", "pceSVN: 11"),
            (
                "subscription: \"\"",
                "subscription: \"00000000-0000-0000-0000-000000000001\"",
            ),
            (
                "tenant: \"\"",
                "tenant: \"00000000-0000-0000-0000-000000000002\"",
            ),
            ("location: \"\"", "location: westeurope"),
            ("resourceGroup: \"\"", "resourceGroup: rg"),
            ("userAssignedIdentity: \"\"", "userAssignedIdentity: uai"),
        ] {
            assert!(y.contains(from), "{from} in {y}");
            y = y.replace(from, to);
        }
        let c = crate::Config::try_from(crate::RawConfig::from_yaml(&y).unwrap()).unwrap();
        let p = c.validator_policy(Some(0)).unwrap();
        assert_eq!((p.tdx.min_qe_svn, p.tdx.min_pce_svn), (4, 11));
        assert_eq!(p.tdx.root_key, TdxPolicy::default().root_key);
        assert_eq!(p.now, Some(0));
    }
}
