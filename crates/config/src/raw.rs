//! The config v4 schema as it is on disk: every key of the Go system's
//! `constellation-conf.yaml`, plus this project's `provider.local` and `attestation.localVTPM`.
//!
//! Parsing is strict (`deny_unknown_fields` everywhere, typed values), but a [`RawConfig`] is
//! not yet known to be usable: [`crate::Config::try_from`] checks the rules that span fields.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use measurements::Measurements;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// Top level of `constellation-conf.yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawConfig {
    pub version: String,
    #[serde(default)]
    pub image: String,
    pub name: String,
    pub kubernetes_version: String,
    #[serde(default)]
    pub microservice_version: String,
    pub debug_cluster: bool,
    #[serde(default)]
    pub custom_endpoint: String,
    #[serde(default)]
    pub internal_load_balancer: bool,
    #[serde(default, rename = "serviceCIDR")]
    pub service_cidr: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    pub provider: ProviderConfig,
    pub node_groups: BTreeMap<String, NodeGroup>,
    pub attestation: AttestationConfig,
}

/// `provider:`: exactly one section is set in a valid config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    #[serde(default)]
    pub aws: Option<AwsConfig>,
    #[serde(default)]
    pub azure: Option<AzureConfig>,
    #[serde(default)]
    pub gcp: Option<GcpConfig>,
    #[serde(default)]
    pub openstack: Option<OpenStackConfig>,
    #[serde(default)]
    pub qemu: Option<QemuConfig>,
    #[serde(default)]
    pub local: Option<LocalConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AwsConfig {
    pub region: String,
    pub zone: String,
    pub iam_profile_control_plane: String,
    pub iam_profile_worker_nodes: String,
    #[serde(rename = "deployCSIDriver")]
    pub deploy_csi_driver: bool,
    #[serde(default)]
    pub use_marketplace_image: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AzureConfig {
    pub subscription: String,
    pub tenant: String,
    pub location: String,
    pub resource_group: String,
    pub user_assigned_identity: String,
    #[serde(rename = "deployCSIDriver")]
    pub deploy_csi_driver: bool,
    pub secure_boot: bool,
    #[serde(default)]
    pub use_marketplace_image: bool,
    /// Removed in the Go system's v2.9; present only to give its dedicated error.
    #[serde(default, rename = "appClientID")]
    pub app_client_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GcpConfig {
    pub project: String,
    pub region: String,
    pub zone: String,
    pub service_account_key_path: String,
    #[serde(default, rename = "IAMServiceAccountVM")]
    pub iam_service_account_vm: String,
    #[serde(rename = "deployCSIDriver")]
    pub deploy_csi_driver: bool,
    #[serde(default)]
    pub use_marketplace_image: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OpenStackConfig {
    #[serde(default)]
    pub cloud: String,
    #[serde(default, rename = "cloudsYAMLPath")]
    pub clouds_yaml_path: String,
    pub availability_zone: String,
    #[serde(rename = "floatingIPPoolID")]
    pub floating_ip_pool_id: String,
    #[serde(default, rename = "stackitProjectID")]
    pub stackit_project_id: String,
    pub region_name: String,
    pub deploy_yawol_load_balancer: bool,
    #[serde(default, rename = "yawolImageID")]
    pub yawol_image_id: String,
    #[serde(default, rename = "yawolFlavorID")]
    pub yawol_flavor_id: String,
    #[serde(rename = "deployCSIDriver")]
    pub deploy_csi_driver: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct QemuConfig {
    #[serde(default = "default_image_format")]
    pub image_format: ImageFormat,
    pub vcpus: u32,
    pub memory: u32,
    #[serde(rename = "metadataAPIServer")]
    pub metadata_api_server: String,
    #[serde(default)]
    pub libvirt_socket: String,
    #[serde(default)]
    pub libvirt_container_image: String,
    pub nvram: String,
    #[serde(default)]
    pub firmware: String,
}

fn default_image_format() -> ImageFormat {
    ImageFormat::Raw
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    Raw,
    Qcow2,
}

impl ImageFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageFormat::Raw => "raw",
            ImageFormat::Qcow2 => "qcow2",
        }
    }
}

/// `provider.local`: this project's local provider (nodes are process trees on this machine).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LocalConfig {
    /// Directory of the node image bundle; empty = the bundle built next to the `constellation`
    /// binary.
    #[serde(default)]
    pub node_image: String,
    /// First loopback address; node `i` (counting from 0) gets `base + i`.
    pub base_address: Ipv4Addr,
}

/// `nodeGroups.<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeGroup {
    pub role: NodeRole,
    #[serde(default)]
    pub zone: String,
    #[serde(default)]
    pub instance_type: String,
    #[serde(default, rename = "stateDiskSizeGB")]
    pub state_disk_size_gb: u32,
    #[serde(default)]
    pub state_disk_type: String,
    pub initial_count: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum NodeRole {
    #[serde(rename = "control-plane")]
    ControlPlane,
    #[serde(rename = "worker")]
    Worker,
}

impl NodeRole {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::ControlPlane => "control-plane",
            NodeRole::Worker => "worker",
        }
    }
}

/// `attestation:`: exactly one section is set in a valid config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestationConfig {
    #[serde(default, rename = "awsSEVSNP")]
    pub aws_sev_snp: Option<SevSnp>,
    #[serde(default, rename = "awsNitroTPM")]
    pub aws_nitro_tpm: Option<MeasurementsOnly>,
    #[serde(default, rename = "azureSEVSNP")]
    pub azure_sev_snp: Option<AzureSevSnp>,
    #[serde(default, rename = "azureTDX")]
    pub azure_tdx: Option<AzureTdx>,
    #[serde(default, rename = "azureTrustedLaunch")]
    pub azure_trusted_launch: Option<MeasurementsOnly>,
    #[serde(default, rename = "gcpSEVES")]
    pub gcp_sev_es: Option<MeasurementsOnly>,
    #[serde(default, rename = "gcpSEVSNP")]
    pub gcp_sev_snp: Option<SevSnp>,
    #[serde(default, rename = "qemuVTPM")]
    pub qemu_vtpm: Option<MeasurementsOnly>,
    #[serde(default, rename = "qemuTDX")]
    pub qemu_tdx: Option<MeasurementsOnly>,
    #[serde(default, rename = "localVTPM")]
    pub local_vtpm: Option<MeasurementsOnly>,
}

/// A section with nothing but measurements (`awsNitroTPM`, `azureTrustedLaunch`, `gcpSEVES`,
/// `qemuVTPM`, `qemuTDX`, `localVTPM`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasurementsOnly {
    pub measurements: Measurements,
}

/// `awsSEVSNP` and `gcpSEVSNP`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SevSnp {
    pub measurements: Measurements,
    #[serde(default)]
    pub bootloader_version: Tcb<u8>,
    #[serde(default)]
    pub tee_version: Tcb<u8>,
    #[serde(default)]
    pub snp_version: Tcb<u8>,
    #[serde(default)]
    pub microcode_version: Tcb<u8>,
    /// PEM of AMD's root key (ARK); empty = the validator's built-in ARK-Milan.
    #[serde(default)]
    pub amd_root_key: String,
    /// PEM of AMD's signing key (ASK); empty = fetched from AMD's key distribution service.
    #[serde(default)]
    pub amd_signing_key: String,
}

/// `azureSEVSNP`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AzureSevSnp {
    pub measurements: Measurements,
    #[serde(default)]
    pub bootloader_version: Tcb<u8>,
    #[serde(default)]
    pub tee_version: Tcb<u8>,
    #[serde(default)]
    pub snp_version: Tcb<u8>,
    #[serde(default)]
    pub microcode_version: Tcb<u8>,
    pub firmware_signer_config: FirmwareSignerConfig,
    #[serde(default)]
    pub amd_root_key: String,
    #[serde(default)]
    pub amd_signing_key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FirmwareSignerConfig {
    pub accepted_key_digests: KeyDigests,
    pub enforcement_policy: EnforcementPolicy,
    #[serde(default, rename = "maaURL")]
    pub maa_url: String,
}

/// `azureTDX`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AzureTdx {
    pub measurements: Measurements,
    #[serde(default, rename = "qeSVN")]
    pub qe_svn: Tcb<u16>,
    #[serde(default, rename = "pceSVN")]
    pub pce_svn: Tcb<u16>,
    #[serde(default, rename = "teeTCBSVN")]
    pub tee_tcb_svn: HexOrLatest<16>,
    #[serde(default, rename = "qeVendorID")]
    pub qe_vendor_id: HexOrLatest<16>,
    /// 48 bytes hex, or empty (not checked).
    #[serde(default)]
    pub mr_seam: OptHex<48>,
    #[serde(default)]
    pub xfam: HexOrLatest<8>,
    /// PEM of Intel's SGX root CA; empty = the validator's built-in one.
    #[serde(default)]
    pub intel_root_key: String,
}

/// A TCB component version: a number, or `latest` (resolved when the config is used).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tcb<T> {
    #[default]
    Latest,
    Value(T),
}

impl<T: fmt::Display> fmt::Display for Tcb<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tcb::Latest => f.write_str("latest"),
            Tcb::Value(v) => v.fmt(f),
        }
    }
}

impl<'de, T> Deserialize<'de> for Tcb<T>
where
    T: TryFrom<u64> + Bounded,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<T: TryFrom<u64> + Bounded> Visitor<'_> for V<T> {
            type Value = Tcb<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "\"latest\" or a number from 0 to {}", T::MAX)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                T::try_from(v)
                    .map(Tcb::Value)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                match u64::try_from(v) {
                    Ok(u) => self.visit_u64(u),
                    Err(_) => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                if v == "latest" {
                    Ok(Tcb::Latest)
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(v), &self))
                }
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// Upper bound of a TCB number type, for error messages.
pub trait Bounded {
    const MAX: u64;
}
impl Bounded for u8 {
    const MAX: u64 = u8::MAX as u64;
}
impl Bounded for u16 {
    const MAX: u64 = u16::MAX as u64;
}

/// `N` bytes as lowercase hex, or `latest`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum HexOrLatest<const N: usize> {
    #[default]
    Latest,
    Value([u8; N]),
}

impl<const N: usize> fmt::Display for HexOrLatest<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HexOrLatest::Latest => f.write_str("latest"),
            HexOrLatest::Value(v) => f.write_str(&hex::encode(v)),
        }
    }
}

fn decode_hex_n<const N: usize, E: de::Error>(v: &str) -> Result<[u8; N], E> {
    let bytes = hex::decode(v)
        .map_err(|_| E::custom(format!("{v:?} is not hex (want {N} bytes as hex)")))?;
    bytes
        .as_slice()
        .try_into()
        .map_err(|_| E::custom(format!("hex value has {} bytes, want {N}", bytes.len())))
}

impl<'de, const N: usize> Deserialize<'de> for HexOrLatest<N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "latest" {
            Ok(HexOrLatest::Latest)
        } else {
            decode_hex_n::<N, D::Error>(&s).map(HexOrLatest::Value)
        }
    }
}

/// `N` bytes as hex, or empty.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OptHex<const N: usize>(pub Option<[u8; N]>);

impl<'de, const N: usize> Deserialize<'de> for OptHex<N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() {
            Ok(OptHex(None))
        } else {
            decode_hex_n::<N, D::Error>(&s).map(|v| OptHex(Some(v)))
        }
    }
}

/// Accepted firmware signer key digests (48 bytes each). The legacy form is a single string.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyDigests(pub Vec<[u8; 48]>);

impl<'de> Deserialize<'de> for KeyDigests {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            One(String),
            Many(Vec<String>),
        }
        let list = match Form::deserialize(d)? {
            Form::One(s) => vec![s],
            Form::Many(v) => v,
        };
        list.iter()
            .map(|s| decode_hex_n::<48, D::Error>(s))
            .collect::<Result<_, _>>()
            .map(KeyDigests)
    }
}

/// What the Azure SEV-SNP validator does when the firmware signer digest is not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnforcementPolicy {
    Equal,
    MaaFallback,
    WarnOnly,
}

impl EnforcementPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            // The Go CLI's spelling (its stringer); reading is case-insensitive as in Go.
            EnforcementPolicy::Equal => "Equal",
            EnforcementPolicy::MaaFallback => "MAAFallback",
            EnforcementPolicy::WarnOnly => "WarnOnly",
        }
    }
}

impl<'de> Deserialize<'de> for EnforcementPolicy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = EnforcementPolicy;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("Equal, MAAFallback or WarnOnly (any case)")
            }
            // Legacy form: true = equal, false = warnOnly.
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(if v {
                    EnforcementPolicy::Equal
                } else {
                    EnforcementPolicy::WarnOnly
                })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                match v.to_ascii_lowercase().as_str() {
                    "equal" => Ok(EnforcementPolicy::Equal),
                    "maafallback" => Ok(EnforcementPolicy::MaaFallback),
                    "warnonly" => Ok(EnforcementPolicy::WarnOnly),
                    _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// `variant`'s section of the [`AttestationConfig`] `$a`, mapped to its measurements: `$as` is
/// `as_ref`, or `as_mut` followed by `mut`. The variant -> section table for both accessors.
macro_rules! section_measurements {
    ($a:expr, $variant:expr, $as:ident $(, $mut:tt)?) => {{
        use attestation::Variant as V;
        match $variant {
            V::AwsSevSnp => $a.aws_sev_snp.$as().map(|s| &$($mut)? s.measurements),
            V::AwsNitroTpm => $a.aws_nitro_tpm.$as().map(|s| &$($mut)? s.measurements),
            V::AzureSevSnp => $a.azure_sev_snp.$as().map(|s| &$($mut)? s.measurements),
            V::AzureTdx => $a.azure_tdx.$as().map(|s| &$($mut)? s.measurements),
            V::AzureTrustedLaunch => {
                $a.azure_trusted_launch.$as().map(|s| &$($mut)? s.measurements)
            }
            V::GcpSevEs => $a.gcp_sev_es.$as().map(|s| &$($mut)? s.measurements),
            V::GcpSevSnp => $a.gcp_sev_snp.$as().map(|s| &$($mut)? s.measurements),
            V::QemuVtpm => $a.qemu_vtpm.$as().map(|s| &$($mut)? s.measurements),
            V::QemuTdx => $a.qemu_tdx.$as().map(|s| &$($mut)? s.measurements),
            V::LocalVtpm => $a.local_vtpm.$as().map(|s| &$($mut)? s.measurements),
            V::Dummy => None,
        }
    }};
}

impl AttestationConfig {
    /// Every section's variant, in the order of the struct's fields (and of error messages).
    const SECTIONS: [attestation::Variant; 10] = {
        use attestation::Variant as V;
        [
            V::AwsSevSnp,
            V::AwsNitroTpm,
            V::AzureSevSnp,
            V::AzureTdx,
            V::AzureTrustedLaunch,
            V::GcpSevEs,
            V::GcpSevSnp,
            V::QemuVtpm,
            V::QemuTdx,
            V::LocalVtpm,
        ]
    };

    /// The sections that are set, with their variant.
    pub fn set_variants(&self) -> Vec<attestation::Variant> {
        // Every section has measurements, so a section is set iff its measurements are.
        Self::SECTIONS
            .into_iter()
            .filter(|&v| self.measurements(v).is_some())
            .collect()
    }

    /// The measurements of `variant`'s section, if that section is set.
    pub fn measurements(&self, variant: attestation::Variant) -> Option<&Measurements> {
        section_measurements!(self, variant, as_ref)
    }

    /// Mutable measurements of `variant`'s section, if that section is set.
    pub fn measurements_mut(&mut self, variant: attestation::Variant) -> Option<&mut Measurements> {
        section_measurements!(self, variant, as_mut, mut)
    }
}

impl ProviderConfig {
    /// The sections that are set.
    pub fn set_providers(&self) -> Vec<crate::Provider> {
        use crate::Provider as P;
        let present = [
            (self.aws.is_some(), P::Aws),
            (self.azure.is_some(), P::Azure),
            (self.gcp.is_some(), P::Gcp),
            (self.openstack.is_some(), P::OpenStack),
            (self.qemu.is_some(), P::Qemu),
            (self.local.is_some(), P::Local),
        ];
        present
            .into_iter()
            .filter_map(|(set, p)| set.then_some(p))
            .collect()
    }
}
