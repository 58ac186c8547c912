//! Defaults of a new config (`config generate`), including the expected measurements.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use attestation::Variant;
use measurements::{Measurement, Measurements, PCR_LEN_SHA256};

use crate::provider::{resolve_kubernetes_version, Provider, DEFAULT_KUBERNETES_VERSION};
use crate::raw::*;
use crate::{Config, ConfigError};

/// The default first loopback address of the local provider's nodes. Any 127.x.y.z works on
/// Linux without set-up; this one stays clear of 127.0.0.1 and 127.0.1.1 (hostname entries).
pub const DEFAULT_LOCAL_BASE_ADDRESS: Ipv4Addr = Ipv4Addr::new(127, 20, 0, 1);
/// Name of a new cluster (the Go system's default).
pub const DEFAULT_NAME: &str = "constell";
/// Service CIDR of a new cluster.
pub const DEFAULT_SERVICE_CIDR: &str = "10.96.0.0/12";
/// Default Azure firmware signer key digest (the Go system's default).
pub const AZURE_DEFAULT_ACCEPTED_KEY_DIGEST: &str =
    "0356215882a825279a85b300b0b742931d113bf7e32dde2e50ffde7ec743ca491ecdd7f336dc28a6e0b2bb57af7a44a3";

/// The Go config's default `amdRootKey`: AMD's ARK-Milan certificate (public trust anchor;
/// SHA-256 of its DER is `attestation::snp::roots::ARK_MILAN_SHA256`).
pub const GO_DEFAULT_AMD_ROOT_KEY: &str = "-----BEGIN CERTIFICATE-----\n\
MIIGYzCCBBKgAwIBAgIDAQAAMEYGCSqGSIb3DQEBCjA5oA8wDQYJYIZIAWUDBAIC\n\
BQChHDAaBgkqhkiG9w0BAQgwDQYJYIZIAWUDBAICBQCiAwIBMKMDAgEBMHsxFDAS\n\
BgNVBAsMC0VuZ2luZWVyaW5nMQswCQYDVQQGEwJVUzEUMBIGA1UEBwwLU2FudGEg\n\
Q2xhcmExCzAJBgNVBAgMAkNBMR8wHQYDVQQKDBZBZHZhbmNlZCBNaWNybyBEZXZp\n\
Y2VzMRIwEAYDVQQDDAlBUkstTWlsYW4wHhcNMjAxMDIyMTcyMzA1WhcNNDUxMDIy\n\
MTcyMzA1WjB7MRQwEgYDVQQLDAtFbmdpbmVlcmluZzELMAkGA1UEBhMCVVMxFDAS\n\
BgNVBAcMC1NhbnRhIENsYXJhMQswCQYDVQQIDAJDQTEfMB0GA1UECgwWQWR2YW5j\n\
ZWQgTWljcm8gRGV2aWNlczESMBAGA1UEAwwJQVJLLU1pbGFuMIICIjANBgkqhkiG\n\
9w0BAQEFAAOCAg8AMIICCgKCAgEA0Ld52RJOdeiJlqK2JdsVmD7FktuotWwX1fNg\n\
W41XY9Xz1HEhSUmhLz9Cu9DHRlvgJSNxbeYYsnJfvyjx1MfU0V5tkKiU1EesNFta\n\
1kTA0szNisdYc9isqk7mXT5+KfGRbfc4V/9zRIcE8jlHN61S1ju8X93+6dxDUrG2\n\
SzxqJ4BhqyYmUDruPXJSX4vUc01P7j98MpqOS95rORdGHeI52Naz5m2B+O+vjsC0\n\
60d37jY9LFeuOP4Meri8qgfi2S5kKqg/aF6aPtuAZQVR7u3KFYXP59XmJgtcog05\n\
gmI0T/OitLhuzVvpZcLph0odh/1IPXqx3+MnjD97A7fXpqGd/y8KxX7jksTEzAOg\n\
bKAeam3lm+3yKIcTYMlsRMXPcjNbIvmsBykD//xSniusuHBkgnlENEWx1UcbQQrs\n\
+gVDkuVPhsnzIRNgYvM48Y+7LGiJYnrmE8xcrexekBxrva2V9TJQqnN3Q53kt5vi\n\
Qi3+gCfmkwC0F0tirIZbLkXPrPwzZ0M9eNxhIySb2npJfgnqz55I0u33wh4r0ZNQ\n\
eTGfw03MBUtyuzGesGkcw+loqMaq1qR4tjGbPYxCvpCq7+OgpCCoMNit2uLo9M18\n\
fHz10lOMT8nWAUvRZFzteXCm+7PHdYPlmQwUw3LvenJ/ILXoQPHfbkH0CyPfhl1j\n\
WhJFZasCAwEAAaN+MHwwDgYDVR0PAQH/BAQDAgEGMB0GA1UdDgQWBBSFrBrRQ/fI\n\
rFXUxR1BSKvVeErUUzAPBgNVHRMBAf8EBTADAQH/MDoGA1UdHwQzMDEwL6AtoCuG\n\
KWh0dHBzOi8va2RzaW50Zi5hbWQuY29tL3ZjZWsvdjEvTWlsYW4vY3JsMEYGCSqG\n\
SIb3DQEBCjA5oA8wDQYJYIZIAWUDBAICBQChHDAaBgkqhkiG9w0BAQgwDQYJYIZI\n\
AWUDBAICBQCiAwIBMKMDAgEBA4ICAQC6m0kDp6zv4Ojfgy+zleehsx6ol0ocgVel\n\
ETobpx+EuCsqVFRPK1jZ1sp/lyd9+0fQ0r66n7kagRk4Ca39g66WGTJMeJdqYriw\n\
STjjDCKVPSesWXYPVAyDhmP5n2v+BYipZWhpvqpaiO+EGK5IBP+578QeW/sSokrK\n\
dHaLAxG2LhZxj9aF73fqC7OAJZ5aPonw4RE299FVarh1Tx2eT3wSgkDgutCTB1Yq\n\
zT5DuwvAe+co2CIVIzMDamYuSFjPN0BCgojl7V+bTou7dMsqIu/TW/rPCX9/EUcp\n\
KGKqPQ3P+N9r1hjEFY1plBg93t53OOo49GNI+V1zvXPLI6xIFVsh+mto2RtgEX/e\n\
pmMKTNN6psW88qg7c1hTWtN6MbRuQ0vm+O+/2tKBF2h8THb94OvvHHoFDpbCELlq\n\
HnIYhxy0YKXGyaW1NjfULxrrmxVW4wcn5E8GddmvNa6yYm8scJagEi13mhGu4Jqh\n\
3QU3sf8iUSUr09xQDwHtOQUVIqx4maBZPBtSMf+qUDtjXSSq8lfWcd8bLr9mdsUn\n\
JZJ0+tuPMKmBnSH860llKk+VpVQsgqbzDIvOLvD6W1Umq25boxCYJ+TuBoa4s+HH\n\
CViAvgT9kf/rBq1d+ivj6skkHxuzcxbk1xv6ZGxrteJxVH7KlX7YRdZ6eARKwLe4\n\
AFZEAwoKCQ==\n\
-----END CERTIFICATE-----\n";

/// The Go config's default `intelRootKey`: the Intel SGX Root CA certificate (public trust
/// anchor, valid 2018-05-21 to 2049-12-31).
pub const GO_DEFAULT_INTEL_ROOT_KEY: &str = "-----BEGIN CERTIFICATE-----\n\
MIICjzCCAjSgAwIBAgIUImUM1lqdNInzg7SVUr9QGzknBqwwCgYIKoZIzj0EAwIw\n\
aDEaMBgGA1UEAwwRSW50ZWwgU0dYIFJvb3QgQ0ExGjAYBgNVBAoMEUludGVsIENv\n\
cnBvcmF0aW9uMRQwEgYDVQQHDAtTYW50YSBDbGFyYTELMAkGA1UECAwCQ0ExCzAJ\n\
BgNVBAYTAlVTMB4XDTE4MDUyMTEwNDUxMFoXDTQ5MTIzMTIzNTk1OVowaDEaMBgG\n\
A1UEAwwRSW50ZWwgU0dYIFJvb3QgQ0ExGjAYBgNVBAoMEUludGVsIENvcnBvcmF0\n\
aW9uMRQwEgYDVQQHDAtTYW50YSBDbGFyYTELMAkGA1UECAwCQ0ExCzAJBgNVBAYT\n\
AlVTMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEC6nEwMDIYZOj/iPWsCzaEKi7\n\
1OiOSLRFhWGjbnBVJfVnkY4u3IjkDYYL0MxO4mqsyYjlBalTVYxFP2sJBK5zlKOB\n\
uzCBuDAfBgNVHSMEGDAWgBQiZQzWWp00ifODtJVSv1AbOScGrDBSBgNVHR8ESzBJ\n\
MEegRaBDhkFodHRwczovL2NlcnRpZmljYXRlcy50cnVzdGVkc2VydmljZXMuaW50\n\
ZWwuY29tL0ludGVsU0dYUm9vdENBLmRlcjAdBgNVHQ4EFgQUImUM1lqdNInzg7SV\n\
Ur9QGzknBqwwDgYDVR0PAQH/BAQDAgEGMBIGA1UdEwEB/wQIMAYBAf8CAQEwCgYI\n\
KoZIzj0EAwIDSQAwRgIhAOW/5QkR+S9CiSDcNoowLuPRLsWGf/Yi7GSX94BgwTwg\n\
AiEA4J0lrHoMs+Xo5o/sX6O9QWxHRAvZUGOdRQ7cvqRXaqI=\n\
-----END CERTIFICATE-----\n";

/// Name of the required control-plane group.
pub const CONTROL_PLANE_GROUP: &str = "control_plane_default";
/// Name of the required worker group.
pub const WORKER_GROUP: &str = "worker_default";

/// This release's version string as written into `image` and `microserviceVersion`.
pub fn release_version() -> String {
    format!("v{}", env!("CARGO_PKG_VERSION"))
}

/// PCRs whose expected value is zero in every vTPM variant: 8 (no GRUB), 12 (no boot-loader
/// overrides), 13 (no system extensions), 15 (cluster ID: only unbootstrapped nodes join).
const ZERO_ENFORCED: [u32; 4] = [8, 12, 13, 15];

/// The Go system's measurements of image v2.24.0 (reference §6.4): PCR 4, 9, 11 per variant.
fn go_v2_24_0(provider: Provider, variant: Variant) -> Option<[&'static str; 3]> {
    Some(match (provider, variant) {
        (Provider::Aws, Variant::AwsNitroTpm) => [
            "e41f2c4c6f44f9a0bb67db39b9a728295a3d7226a8d6fda0feb644c9c9cb4d26",
            "5570002a66cfeb3dd9d8d77cd3341380fa18862a14a0ae7ca8f1b5460f047377",
            "59ea7e654a992b7446044c5d5df1f2106aa59b2a50e0d9b438b1821a8abb5979",
        ],
        (Provider::Aws, Variant::AwsSevSnp) => [
            "26af34bd97da78339c046ddf656ff20303b6e53d902d39f7d817295a3f272312",
            "342e5dc054f16b09b5f5b5ddb6a16445e7cffbc1a0ca9eb6f4afebe18fdf05e9",
            "11cdf7dad72eebc81037f28dfa398ddcf862d4bcd3d8da091db299b0b8b370d7",
        ],
        (Provider::Azure, Variant::AzureSevSnp) => [
            "9b9297441883ed7624486bb01872d0ca10ae3b6ebd6963b4ca21347e39cbd8b6",
            "051a434902decbe9371f97674c513f694b116746b48a9fb4be1027dc71431cdc",
            "67f760727fe58eceebe42873c0c76aa2ba76665d958fe87ba5f0abc831ef8eaa",
        ],
        (Provider::Azure, Variant::AzureTdx) => [
            "668df95c0a26824b51f10c959800e0d6a3732a9144db0bbe2fa5e3258be823a9",
            "727145b6854ff4fba6757ebbea29dfdbb4d838addafd0cf585988ed39699f12d",
            "a68fec1206981dfac563d06b9b817878332dfaedf0742a219972a459b4cd96d5",
        ],
        (Provider::Gcp, Variant::GcpSevEs) => [
            "78dc5d86e5bd6e6187d819f0364df2250a31ed6a96ad4c0152ac5f85533468ff",
            "9b3fa1348aec0187efd7f206fa15bedeb9bbe38ef72589aa932fb67b2854da57",
            "a28cd28cb2f84265e24fb14d1d8e4ed8ef6e1e1079778865d58e30fa233b9cec",
        ],
        (Provider::Gcp, Variant::GcpSevSnp) => [
            "e2b6dbbc869267853cebccedf980e7ef13afb7d877a1ffc3c56005ccde17fc2b",
            "ea487fe9ff3a67419051fffab8734b2e30f50ce9c1a54da1091963e0026cfcb1",
            "b97d64143b3827dc0edec3a635c243485980abce7b5cbf09d2e91b18b2c0b28f",
        ],
        (Provider::OpenStack, Variant::QemuVtpm) => [
            "29fbf85234cb98bcd69653f01a4677371b4e64dc7aeac5050c801c63df32bc68",
            "a0a4076f16665e58c1a6d4e24a452b11c7bb6f89008ef0cb94eef2c7b4639b03",
            "e901d63df182020cc56727e457112f9d8c7f6ba56b2b1a731e6b465f47410dd0",
        ],
        (Provider::Qemu, Variant::QemuVtpm) => [
            "4e66d2be354e7d69bce0ea241bd55fb5c197b07e239fbad321316225f59195b6",
            "55f3434a11b50d56109a2963d3a853c1f900c4e826b8a64889e86410c15dcb15",
            "02725e0a5eb6b67dc2cd1a836e2ad78befc7fbf4895fe08f91c971addbc6a4ba",
        ],
        _ => return None,
    })
}

/// `SHA-256(0³² ‖ SHA-256(00000000))`: a PCR holding only the `EV_SEPARATOR` event.
const SEPARATOR_ONLY: &str = "3d458cfe55cc03ea1f443f1562beec8df51c75e14a9fcf9a7234a13f198e7969";
const ZERO_HEX: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The Go system's warn-only PCRs and their values (`measurements/overrides.go`): AWS 0, 2, 3,
/// 6, 14; Azure 1, 2, 3, 14; GCP 1, 2, 3, 6, 14; OpenStack 14; QEMU none.
fn go_warn_only(provider: Provider, variant: Variant) -> Vec<(u32, &'static str)> {
    let mut out = match provider {
        Provider::Aws => vec![
            (2, SEPARATOR_ONLY),
            (3, SEPARATOR_ONLY),
            (6, SEPARATOR_ONLY),
        ],
        Provider::Azure => vec![
            (1, SEPARATOR_ONLY),
            (2, SEPARATOR_ONLY),
            (3, SEPARATOR_ONLY),
        ],
        Provider::Gcp => vec![
            (
                1,
                "3695dcc55e3aa34027c27793c85c723c697d708c42d1f73bd6fa4f26608a5b24",
            ),
            (2, SEPARATOR_ONLY),
            (3, SEPARATOR_ONLY),
            (6, SEPARATOR_ONLY),
        ],
        _ => Vec::new(),
    };
    match variant {
        Variant::AwsNitroTpm => out.push((
            0,
            "737f767a12f54e70eecbc8684011323ae2fe2dd9f90785577969d7a2013e8c12",
        )),
        Variant::AwsSevSnp => out.push((
            0,
            "d6df855358f5b10f06f0fab3f408ad26cd165a2949bad69e2cc75692529e662a",
        )),
        _ => {}
    }
    if matches!(
        provider,
        Provider::Aws | Provider::Azure | Provider::Gcp | Provider::OpenStack
    ) {
        out.push((14, ZERO_HEX));
    }
    out
}

/// The measurements `config generate` writes for `provider` + `variant` when the caller has
/// none:
///
/// * Go variants with published values (reference §6.4, image v2.24.0): PCR 4, 9, 11 with those
///   values, 8, 12, 13, 15 = zero, all enforced; PCR 14 = zero warn-only on AWS, Azure, GCP and
///   OpenStack (not QEMU), as in the Go system.
/// * `azure-trustedlaunch` (no published values): the Go OSS build's placeholders: 8, 11, 13,
///   15 = zero, 4, 9, 12 = the placeholder `1234…`. Loading such a config fails until
///   `config fetch-measurements` has filled in real values, exactly as in the Go system.
/// * `local-vtpm`: zero-valued, enforced PCR 4, 8, 9, 11, 12, 13, 15. This is a stand-in until
///   the CLI passes the node image's predicted measurements; it fails closed (a booted node
///   never has a zero PCR 4, 9 or 11, so no node is accepted).
/// * `qemu-tdx`: the Go OSS placeholders (MRTD, RTMR0, RTMR1 placeholder; RTMR2, RTMR3 zero).
pub fn default_measurements(provider: Provider, variant: Variant) -> Measurements {
    let mut map = BTreeMap::new();
    let zero = || Measurement::enforced(vec![0u8; PCR_LEN_SHA256]);
    if let Some([p4, p9, p11]) = go_v2_24_0(provider, variant) {
        for (idx, h) in [(4, p4), (9, p9), (11, p11)] {
            // Invariant: the table above holds 64-character lowercase hex constants (tested).
            let bytes = hex::decode(h).unwrap_or_default();
            map.insert(idx, Measurement::enforced(bytes));
        }
        for idx in ZERO_ENFORCED {
            map.insert(idx, zero());
        }
        for (idx, value) in go_warn_only(provider, variant) {
            // Invariant: the table holds 64-character lowercase hex constants (tested).
            map.insert(
                idx,
                Measurement::warn_only(hex::decode(value).unwrap_or_default()),
            );
        }
    } else if variant == Variant::QemuTdx {
        let placeholder = || Measurement::enforced([0x12, 0x34].repeat(24));
        for idx in [0, 1, 2] {
            map.insert(idx, placeholder());
        }
        for idx in [3, 4] {
            map.insert(idx, Measurement::enforced(vec![0u8; 48]));
        }
    } else if variant == Variant::LocalVtpm {
        for idx in [4, 8, 9, 11, 12, 13, 15] {
            map.insert(idx, zero());
        }
    } else {
        let placeholder = || Measurement::enforced([0x12, 0x34].repeat(16));
        for idx in [8, 11, 13, 15] {
            map.insert(idx, zero());
        }
        for idx in [4, 9, 12] {
            map.insert(idx, placeholder());
        }
    }
    // Invariant: every entry above has one length (32, or 48 for TDX) and an index ≤ 23.
    Measurements::new(map).unwrap_or_default()
}

fn only(measurements: Measurements) -> Option<MeasurementsOnly> {
    Some(MeasurementsOnly { measurements })
}

fn sev_snp(measurements: Measurements) -> Option<SevSnp> {
    Some(SevSnp {
        measurements,
        bootloader_version: Tcb::Latest,
        tee_version: Tcb::Latest,
        snp_version: Tcb::Latest,
        microcode_version: Tcb::Latest,
        amd_root_key: GO_DEFAULT_AMD_ROOT_KEY.to_string(),
        amd_signing_key: String::new(),
    })
}

impl Config {
    /// A new config with strong defaults (what `config generate` writes).
    ///
    /// * `attestation`: `None` = the provider's default variant (`local` → `local-vtpm`).
    /// * `kubernetes`: `None` = [`DEFAULT_KUBERNETES_VERSION`]; otherwise `vMAJOR.MINOR` (resolved
    ///   to the supported patch) or an exact supported patch.
    /// * `measurements`: expected measurements of the chosen variant; `None` =
    ///   [`default_measurements`] (the Go system's published values where they exist).
    ///
    /// Node groups are the Go defaults (3 control-plane + 1 worker, CSP instance and disk
    /// types), except `local`: 1 control-plane + 1 worker (cheap enough for any laptop; raise
    /// `initialCount` for more) with `stateDiskSizeGB: 0` (a node's disk is a directory without
    /// quota). Returns a [`RawConfig`] because cloud configs need account fields (region,
    /// project, …) filled in before they validate, as with the Go CLI; `local` and `qemu`
    /// configs convert into a valid `Config` as generated.
    pub fn generate(
        provider: Provider,
        attestation: Option<Variant>,
        kubernetes: Option<&str>,
        tags: BTreeMap<String, String>,
        measurements: Option<Measurements>,
    ) -> Result<RawConfig, ConfigError> {
        let variant = attestation.unwrap_or_else(|| provider.default_variant());
        if !provider.selectable_variants().contains(&variant) {
            return Err(ConfigError::UnsupportedVariant {
                provider,
                variant,
                allowed: provider
                    .selectable_variants()
                    .iter()
                    .map(|v| v.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let k8s = match kubernetes {
            None => DEFAULT_KUBERNETES_VERSION,
            Some(k) => {
                resolve_kubernetes_version(k).ok_or_else(|| ConfigError::UnsupportedKubernetes {
                    version: k.to_string(),
                })?
            }
        };
        let measurements = match measurements {
            Some(m) => m,
            None => default_measurements(provider, variant),
        };

        let mut p = ProviderConfig::default();
        // (control-plane count, state disk GB, instance type, disk type); one worker everywhere.
        let (cp_count, disk, instance, disk_type) = match provider {
            Provider::Local => {
                p.local = Some(LocalConfig {
                    node_image: String::new(),
                    base_address: DEFAULT_LOCAL_BASE_ADDRESS,
                });
                (1, 0, "", "")
            }
            Provider::Qemu => {
                p.qemu = Some(QemuConfig {
                    image_format: ImageFormat::Raw,
                    vcpus: 2,
                    memory: 2048,
                    metadata_api_server:
                        "ghcr.io/edgelesssys/constellation/qemu-metadata-api:v2.24.0".to_string(),
                    libvirt_socket: String::new(),
                    libvirt_container_image: "ghcr.io/edgelesssys/constellation/libvirt:v2.24.0"
                        .to_string(),
                    nvram: "production".to_string(),
                    firmware: String::new(),
                });
                (3, 10, "", "")
            }
            Provider::Aws => {
                p.aws = Some(AwsConfig {
                    region: String::new(),
                    zone: String::new(),
                    iam_profile_control_plane: String::new(),
                    iam_profile_worker_nodes: String::new(),
                    deploy_csi_driver: true,
                    use_marketplace_image: false,
                });
                (3, 30, "m6a.xlarge", "gp3")
            }
            Provider::Azure => {
                p.azure = Some(AzureConfig {
                    subscription: String::new(),
                    tenant: String::new(),
                    location: String::new(),
                    resource_group: String::new(),
                    user_assigned_identity: String::new(),
                    deploy_csi_driver: true,
                    secure_boot: false,
                    use_marketplace_image: false,
                    app_client_id: None,
                });
                let instance = if variant == Variant::AzureTdx {
                    "Standard_DC4es_v5"
                } else {
                    "Standard_DC4as_v5"
                };
                (3, 30, instance, "Premium_LRS")
            }
            Provider::Gcp => {
                p.gcp = Some(GcpConfig {
                    project: String::new(),
                    region: String::new(),
                    zone: String::new(),
                    service_account_key_path: String::new(),
                    iam_service_account_vm: String::new(),
                    deploy_csi_driver: true,
                    use_marketplace_image: false,
                });
                (3, 30, "n2d-standard-4", "pd-ssd")
            }
            Provider::OpenStack => {
                p.openstack = Some(OpenStackConfig {
                    cloud: String::new(),
                    clouds_yaml_path: "clouds.yaml".to_string(),
                    availability_zone: String::new(),
                    floating_ip_pool_id: String::new(),
                    stackit_project_id: String::new(),
                    region_name: String::new(),
                    deploy_yawol_load_balancer: true,
                    yawol_image_id: String::new(),
                    yawol_flavor_id: String::new(),
                    deploy_csi_driver: true,
                });
                (3, 30, "", "")
            }
        };

        let mut a = AttestationConfig::default();
        match variant {
            Variant::AwsSevSnp => a.aws_sev_snp = sev_snp(measurements),
            Variant::GcpSevSnp => a.gcp_sev_snp = sev_snp(measurements),
            Variant::AwsNitroTpm => a.aws_nitro_tpm = only(measurements),
            Variant::AzureTrustedLaunch => a.azure_trusted_launch = only(measurements),
            Variant::GcpSevEs => a.gcp_sev_es = only(measurements),
            Variant::QemuVtpm => a.qemu_vtpm = only(measurements),
            Variant::QemuTdx => a.qemu_tdx = only(measurements),
            Variant::LocalVtpm => a.local_vtpm = only(measurements),
            Variant::AzureSevSnp => {
                let mut digest = [0u8; 48];
                // Invariant: the constant is 96 hex characters (tested).
                let _ = hex::decode_to_slice(AZURE_DEFAULT_ACCEPTED_KEY_DIGEST, &mut digest);
                a.azure_sev_snp = Some(AzureSevSnp {
                    measurements,
                    bootloader_version: Tcb::Latest,
                    tee_version: Tcb::Latest,
                    snp_version: Tcb::Latest,
                    microcode_version: Tcb::Latest,
                    firmware_signer_config: FirmwareSignerConfig {
                        accepted_key_digests: KeyDigests(vec![digest]),
                        enforcement_policy: EnforcementPolicy::MaaFallback,
                        maa_url: String::new(),
                    },
                    amd_root_key: GO_DEFAULT_AMD_ROOT_KEY.to_string(),
                    amd_signing_key: String::new(),
                })
            }
            Variant::AzureTdx => {
                a.azure_tdx = Some(AzureTdx {
                    measurements,
                    qe_svn: Tcb::Latest,
                    pce_svn: Tcb::Latest,
                    tee_tcb_svn: HexOrLatest::Latest,
                    qe_vendor_id: HexOrLatest::Latest,
                    mr_seam: OptHex(None),
                    xfam: HexOrLatest::Latest,
                    intel_root_key: GO_DEFAULT_INTEL_ROOT_KEY.to_string(),
                })
            }
            Variant::Dummy => {
                return Err(ConfigError::UnsupportedVariant {
                    provider,
                    variant,
                    allowed: String::new(),
                })
            }
        }

        let group = |role, initial_count| NodeGroup {
            role,
            zone: String::new(),
            instance_type: instance.to_string(),
            state_disk_size_gb: disk,
            state_disk_type: disk_type.to_string(),
            initial_count,
        };
        let node_groups = BTreeMap::from([
            (
                CONTROL_PLANE_GROUP.to_string(),
                group(NodeRole::ControlPlane, cp_count),
            ),
            (WORKER_GROUP.to_string(), group(NodeRole::Worker, 1)),
        ]);

        Ok(RawConfig {
            version: crate::CONFIG_VERSION.to_string(),
            image: release_version(),
            name: DEFAULT_NAME.to_string(),
            kubernetes_version: k8s.to_string(),
            microservice_version: release_version(),
            debug_cluster: false,
            custom_endpoint: String::new(),
            internal_load_balancer: false,
            service_cidr: DEFAULT_SERVICE_CIDR.to_string(),
            tags,
            provider: p,
            node_groups,
            attestation: a,
        })
    }
}
