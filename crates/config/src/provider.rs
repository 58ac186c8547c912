//! Providers, their attestation variants, and the supported Kubernetes versions.

use std::fmt;
use std::str::FromStr;

use attestation::Variant;

/// Where the cluster's nodes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Provider {
    /// This project's local provider: nodes are process trees on this machine.
    Local,
    Qemu,
    Aws,
    Azure,
    Gcp,
    OpenStack,
}

impl Provider {
    pub const ALL: [Provider; 6] = [
        Provider::Local,
        Provider::Qemu,
        Provider::Aws,
        Provider::Azure,
        Provider::Gcp,
        Provider::OpenStack,
    ];

    /// Name on the command line and key under `provider:` in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Local => "local",
            Provider::Qemu => "qemu",
            Provider::Aws => "aws",
            Provider::Azure => "azure",
            Provider::Gcp => "gcp",
            Provider::OpenStack => "openstack",
        }
    }

    /// The provider string in image-measurement files (`csp`): the Go system's for its
    /// providers, `local` (as in crate `provider-local`) for ours.
    pub fn csp_name(self) -> &'static str {
        match self {
            Provider::Local => "local",
            Provider::Qemu => "QEMU",
            Provider::Aws => "AWS",
            Provider::Azure => "Azure",
            Provider::Gcp => "GCP",
            Provider::OpenStack => "OpenStack",
        }
    }

    /// Variants a user may choose with `config generate -a`, the default first.
    pub fn selectable_variants(self) -> &'static [Variant] {
        match self {
            Provider::Local => &[Variant::LocalVtpm],
            Provider::Qemu | Provider::OpenStack => &[Variant::QemuVtpm],
            Provider::Aws => &[Variant::AwsSevSnp, Variant::AwsNitroTpm],
            Provider::Azure => &[
                Variant::AzureSevSnp,
                Variant::AzureTdx,
                Variant::AzureTrustedLaunch,
            ],
            Provider::Gcp => &[Variant::GcpSevSnp, Variant::GcpSevEs],
        }
    }

    /// The variant `config generate` uses without `-a`.
    pub fn default_variant(self) -> Variant {
        self.selectable_variants()[0]
    }

    /// Whether a config of this provider may use `variant` (the selectable ones, and
    /// `qemu-tdx` on QEMU, which the Go system accepts in a config but does not offer).
    pub fn accepts(self, variant: Variant) -> bool {
        self.selectable_variants().contains(&variant)
            || (self == Provider::Qemu && variant == Variant::QemuTdx)
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown provider {0:?} (known: local, qemu, aws, azure, gcp, openstack)")]
pub struct UnknownProvider(pub String);

impl FromStr for Provider {
    type Err = UnknownProvider;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Provider::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownProvider(s.to_string()))
    }
}

/// Kubernetes versions this release installs (exact patches).
pub const SUPPORTED_KUBERNETES_VERSIONS: [&str; 3] = ["v1.30.14", "v1.31.13", "v1.32.9"];
/// The default Kubernetes version of a new config.
pub const DEFAULT_KUBERNETES_VERSION: &str = "v1.31.13";

/// Resolves `-k` input: `vMAJOR.MINOR` (or without `v`) to the supported patch of that minor;
/// an exact supported patch to itself.
pub fn resolve_kubernetes_version(input: &str) -> Option<&'static str> {
    let v = input.strip_prefix('v').unwrap_or(input);
    SUPPORTED_KUBERNETES_VERSIONS.into_iter().find(|s| {
        let full = &s[1..];
        full == v || full.rsplit_once('.').map(|(mm, _)| mm) == Some(v)
    })
}

/// Whether a config's `kubernetesVersion` is acceptable: `vX.Y.Z` with a supported minor (any
/// patch, as in the Go system when parsing; creating a cluster needs an exact supported patch).
pub fn kubernetes_minor_supported(version: &str) -> bool {
    let Some(v) = version.strip_prefix('v') else {
        return false;
    };
    let parts: Vec<&str> = v.split('.').collect();
    if parts.len() != 3
        || parts
            .iter()
            .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    resolve_kubernetes_version(&format!("{}.{}", parts[0], parts[1])).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_versions() {
        let cases = [
            ("v1.31", Some("v1.31.13")),
            ("1.30", Some("v1.30.14")),
            ("v1.32.9", Some("v1.32.9")),
            ("v1.32.8", None),
            ("v1.29", None),
            ("v1.3", None),
            ("", None),
        ];
        for (i, want) in cases {
            assert_eq!(resolve_kubernetes_version(i), want, "{i}");
        }
    }

    #[test]
    fn minor_supported() {
        let cases = [
            ("v1.31.13", true),
            ("v1.31.2", true),
            ("v1.29.1", false),
            ("1.31.13", false),
            ("v1.31", false),
            ("v1.31.x", false),
        ];
        for (v, want) in cases {
            assert_eq!(kubernetes_minor_supported(v), want, "{v}");
        }
    }

    #[test]
    fn variants_per_provider() {
        for p in Provider::ALL {
            assert!(p.accepts(p.default_variant()));
            assert_eq!(p.as_str().parse::<Provider>().unwrap(), p);
        }
        assert_eq!(Provider::Local.default_variant(), Variant::LocalVtpm);
        assert!(!Provider::Local.accepts(Variant::QemuVtpm));
        assert!(!Provider::Aws.accepts(Variant::GcpSevSnp));
        assert!(Provider::Qemu.accepts(Variant::QemuTdx));
    }
}
