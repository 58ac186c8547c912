//! `constellation-state.yaml`, state **v1**: what the CLI knows about the cluster it created
//! (infrastructure outputs, cluster ID, measurement salt). Layout and key names are the Go
//! system's, so either CLI reads the other's file; `infrastructure.local` is this project's.
//!
//! Byte fields (`initSecret`, `measurementSalt`, `clusterID`) are lowercase hex strings; the
//! legacy form (a YAML sequence of byte values) is read too.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use zeroize::Zeroize;

use crate::atomic::{self, WriteError};
use crate::{load_with, parse_yaml, push, ParseError, Violation, Violations};

/// File name of the state in a workspace.
pub const STATE_FILE: &str = "constellation-state.yaml";
/// The state schema version this release reads and writes.
pub const STATE_VERSION: &str = "v1";

/// Bytes stored as lowercase hex (reads hex, or the legacy sequence of byte values).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct HexBytes(pub Vec<u8>);

impl fmt::Debug for HexBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", hex::encode(&self.0))
    }
}

impl HexBytes {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for HexBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for HexBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = HexBytes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a hex string (or a sequence of byte values)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HexBytes, E> {
                hex::decode(v)
                    .map(HexBytes)
                    .map_err(|_| E::custom(format!("{v:?} is not hex")))
            }
            fn visit_unit<E: de::Error>(self) -> Result<HexBytes, E> {
                Ok(HexBytes::default())
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<HexBytes, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(HexBytes(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// The init secret (hex of the ASCII secret). Redacted in `Debug`, zeroized on drop.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InitSecret(pub HexBytes);

impl Drop for InitSecret {
    fn drop(&mut self) {
        self.0 .0.zeroize();
    }
}

impl fmt::Debug for InitSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("InitSecret(empty)")
        } else {
            f.write_str("InitSecret(<redacted>)")
        }
    }
}

impl InitSecret {
    pub fn expose(&self) -> &[u8] {
        &self.0 .0
    }
}

/// The state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct State {
    pub version: String,
    #[serde(default)]
    pub infrastructure: Infrastructure,
    #[serde(default)]
    pub cluster_values: ClusterValues,
}

impl Default for State {
    fn default() -> Self {
        Self {
            version: STATE_VERSION.to_string(),
            infrastructure: Infrastructure::default(),
            cluster_values: ClusterValues::default(),
        }
    }
}

/// `infrastructure:`: outputs of creating the cluster's infrastructure.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Infrastructure {
    /// Short unique ID of the infrastructure (Go: 8 hex characters; QEMU: `qemu`).
    #[serde(default)]
    pub uid: String,
    /// Address (IP or DNS name) the CLI uses to reach the cluster.
    #[serde(default)]
    pub cluster_endpoint: String,
    /// Address nodes use to reach the control plane.
    #[serde(default)]
    pub in_cluster_endpoint: String,
    /// Secret the first Init request must prove knowledge of (its hash is in the metadata).
    #[serde(default)]
    pub init_secret: InitSecret,
    #[serde(default, rename = "apiServerCertSANs")]
    pub api_server_cert_sans: Vec<String>,
    /// `<config name>-<uid>`.
    #[serde(default)]
    pub name: String,
    /// Node network CIDR.
    #[serde(default)]
    pub ip_cidr_node: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<AzureInfrastructure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcp: Option<GcpInfrastructure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openstack: Option<OpenStackInfrastructure>,
    /// This project's local provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalInfrastructure>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AzureInfrastructure {
    #[serde(default)]
    pub resource_group: String,
    #[serde(default, rename = "subscriptionID")]
    pub subscription_id: String,
    #[serde(default)]
    pub network_security_group_name: String,
    #[serde(default)]
    pub load_balancer_name: String,
    #[serde(default)]
    pub user_assigned_identity: String,
    #[serde(default, rename = "attestationURL")]
    pub attestation_url: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GcpInfrastructure {
    #[serde(default, rename = "projectID")]
    pub project_id: String,
    #[serde(default)]
    pub ip_cidr_pod: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OpenStackInfrastructure {
    #[serde(default, rename = "networkID")]
    pub network_id: String,
    #[serde(default, rename = "subnetID")]
    pub subnet_id: String,
}

/// The local provider's infrastructure: where its cloud state lives and which addresses it
/// handed out. Node records themselves live in the local cloud's own state directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LocalInfrastructure {
    /// Directory of the local cloud's state, relative to the workspace.
    #[serde(default)]
    pub state_dir: String,
    /// First node address in use.
    #[serde(default)]
    pub base_address: String,
}

/// `clusterValues:`: set once the cluster is initialized.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterValues {
    /// The 32-byte cluster ID (hex).
    #[serde(default, rename = "clusterID")]
    pub cluster_id: HexBytes,
    /// Always empty (owner ID is not implemented, as in the Go system).
    #[serde(default, rename = "ownerID")]
    pub owner_id: String,
    /// The 32-byte measurement salt (hex).
    #[serde(default)]
    pub measurement_salt: HexBytes,
}

/// Errors of the state file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{} does not exist", path.display())]
    NotFound { path: PathBuf },
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not a valid state v1 file", path.display())]
    InFile {
        path: PathBuf,
        #[source]
        source: Box<StateError>,
    },
    #[error("{0}")]
    Parse(ParseError),
    #[error("{0}")]
    Invalid(Violations),
    #[error("cannot encode the state as YAML: {0}")]
    Encode(String),
    #[error(transparent)]
    Write(#[from] WriteError),
}

impl State {
    /// A fresh state (`version: v1`, everything else empty).
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses state YAML strictly.
    pub fn from_yaml(text: &str) -> Result<Self, StateError> {
        let s: State = parse_yaml(text).map_err(StateError::Parse)?;
        if s.version != STATE_VERSION {
            return Err(StateError::Invalid(Violations(vec![Violation {
                path: "version".into(),
                message: format!(
                    "state version {:?} is not supported; this release reads {STATE_VERSION}",
                    s.version
                ),
                line: None,
            }])));
        }
        Ok(s)
    }

    pub fn to_yaml(&self) -> Result<String, StateError> {
        serde_norway::to_string(self).map_err(|e| StateError::Encode(e.to_string()))
    }

    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self, StateError> {
        load_with(path, Self::from_yaml)
    }

    /// Atomically writes (creates or replaces) the state file, mode 0600.
    pub fn write(&self, path: &Path) -> Result<(), StateError> {
        Ok(atomic::replace(
            path,
            self.to_yaml()?.as_bytes(),
            atomic::OWNER_ONLY,
        )?)
    }

    /// Writes a new state file; fails if it exists.
    pub fn write_new(&self, path: &Path) -> Result<(), StateError> {
        Ok(atomic::write_new(
            path,
            self.to_yaml()?.as_bytes(),
            atomic::OWNER_ONLY,
        )?)
    }

    /// Nothing created yet (the Go system's PreCreate constraints).
    pub fn is_pre_create(&self) -> bool {
        self.infrastructure == Infrastructure::default()
            && self.cluster_values == ClusterValues::default()
    }

    /// Infrastructure exists, cluster not initialized (the Go system's PreInit constraints).
    pub fn check_pre_init(&self) -> Result<(), Violations> {
        let mut out = self.infrastructure_violations();
        if self.cluster_values != ClusterValues::default() {
            push(
                &mut out,
                "clusterValues",
                "must be empty before the cluster is initialized",
            );
        }
        if out.is_empty() {
            Ok(())
        } else {
            Err(Violations(out))
        }
    }

    /// Cluster initialized (the Go system's PostInit constraints).
    pub fn check_post_init(&self) -> Result<(), Violations> {
        let mut out = self.infrastructure_violations();
        if self.cluster_values.cluster_id.0.len() != keys::CLUSTER_ID_LEN {
            push(
                &mut out,
                "clusterValues.clusterID",
                "must be 32 bytes of hex",
            );
        }
        if self.cluster_values.measurement_salt.is_empty() {
            push(&mut out, "clusterValues.measurementSalt", "required");
        }
        if out.is_empty() {
            Ok(())
        } else {
            Err(Violations(out))
        }
    }

    fn infrastructure_violations(&self) -> Vec<Violation> {
        let mut out = Vec::new();
        let i = &self.infrastructure;
        if i.uid.is_empty() {
            push(&mut out, "infrastructure.uid", "required");
        }
        if i.name.is_empty() {
            push(&mut out, "infrastructure.name", "required");
        }
        for (path, val) in [
            ("infrastructure.clusterEndpoint", &i.cluster_endpoint),
            ("infrastructure.inClusterEndpoint", &i.in_cluster_endpoint),
        ] {
            if !valid_endpoint(val) {
                push(
                    &mut out,
                    path,
                    format!("{val:?} is not an IP address or DNS name"),
                );
            }
        }
        if !valid_cidr(&i.ip_cidr_node) {
            push(
                &mut out,
                "infrastructure.ipCidrNode",
                format!("{:?} is not a CIDR", i.ip_cidr_node),
            );
        }
        out
    }

    /// The cluster ID, once the cluster is initialized.
    pub fn cluster_id(&self) -> Option<keys::ClusterId> {
        keys::ClusterId::from_slice(&self.cluster_values.cluster_id.0).ok()
    }

    /// Records the result of initialization.
    pub fn set_cluster_values(&mut self, cluster_id: &keys::ClusterId, measurement_salt: &[u8]) {
        self.cluster_values = ClusterValues {
            cluster_id: HexBytes(cluster_id.as_bytes().to_vec()),
            owner_id: String::new(),
            measurement_salt: HexBytes(measurement_salt.to_vec()),
        };
    }
}

fn valid_endpoint(s: &str) -> bool {
    s.parse::<std::net::IpAddr>().is_ok() || crate::valid_hostname(s)
}

fn valid_cidr(s: &str) -> bool {
    let Some((addr, bits)) = s.split_once('/') else {
        return false;
    };
    match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => bits.parse::<u8>().is_ok_and(|b| b <= 32),
        Ok(std::net::IpAddr::V6(_)) => bits.parse::<u8>().is_ok_and(|b| b <= 128),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const GO_STATE: &str = r#"version: v1
infrastructure:
  uid: 1a2b3c4d
  clusterEndpoint: 203.0.113.10
  inClusterEndpoint: 203.0.113.10
  initSecret: 5f2540
  apiServerCertSANs:
    - 203.0.113.10
    - my.custom.dns
  name: constell-1a2b3c4d
  ipCidrNode: 192.168.176.0/20
  azure:
    resourceGroup: rg
    subscriptionID: sub
    networkSecurityGroupName: nsg
    loadBalancerName: lb
    userAssignedIdentity: uami
    attestationURL: https://x.attest.azure.net
clusterValues:
  clusterID: 128c164378fe8767f998fbdfe4b4d6463ec5ae1b664ea5999bc27417607ae9b6
  ownerID: ""
  measurementSalt: [1, 2, 3]
"#;

    #[test]
    fn go_state_loads_and_roundtrips() {
        let s = State::from_yaml(GO_STATE).unwrap();
        assert_eq!(s.infrastructure.init_secret.expose(), &[0x5f, 0x25, 0x40]);
        assert_eq!(s.cluster_values.measurement_salt.0, vec![1, 2, 3]);
        assert_eq!(
            s.cluster_id().unwrap().to_hex(),
            "128c164378fe8767f998fbdfe4b4d6463ec5ae1b664ea5999bc27417607ae9b6"
        );
        assert_eq!(
            s.infrastructure.azure.as_ref().unwrap().attestation_url,
            "https://x.attest.azure.net"
        );
        let y = s.to_yaml().unwrap();
        assert!(
            y.contains("measurementSalt: '010203'") || y.contains("measurementSalt: \"010203\""),
            "{y}"
        );
        assert_eq!(State::from_yaml(&y).unwrap(), s);
        s.check_post_init().unwrap();
        assert!(format!("{s:?}").contains("<redacted>"));
        assert!(!format!("{s:?}").contains("5f2540"));
    }

    #[test]
    fn strictness() {
        let cases = [
            ("version: v1\nfoo: 1\n", "unknown key `foo`"),
            (
                "version: v1\ninfrastructure:\n  uid: x\n  bogus: 1\n",
                "unknown key `infrastructure.bogus`",
            ),
            (
                "version: v1\nclusterValues:\n  measurementSalt: xyz\n",
                "clusterValues.measurementSalt",
            ),
            ("version: v2\n", "not supported"),
            ("infrastructure: {}\n", "missing required key `version`"),
        ];
        for (y, want) in cases {
            let e = State::from_yaml(y).unwrap_err().to_string();
            assert!(e.contains(want), "{y}: {e}");
        }
    }

    #[test]
    fn constraints() {
        let mut s = State::new();
        assert!(s.is_pre_create());
        assert!(s.check_pre_init().is_err());
        s.infrastructure.uid = "local".into();
        s.infrastructure.name = "constell-local".into();
        s.infrastructure.cluster_endpoint = "127.20.0.1".into();
        s.infrastructure.in_cluster_endpoint = "127.20.0.1".into();
        s.infrastructure.ip_cidr_node = "127.20.0.0/16".into();
        s.check_pre_init().unwrap();
        assert!(s.check_post_init().is_err());
        s.set_cluster_values(&keys::ClusterId([7; 32]), &[9; 32]);
        s.check_post_init().unwrap();
        assert!(s.check_pre_init().is_err());
    }

    #[test]
    fn write_is_owner_only() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(STATE_FILE);
        let s = State::new();
        s.write_new(&p).unwrap();
        assert!(s.write_new(&p).is_err());
        s.write(&p).unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(State::load(&p).unwrap(), s);
    }
}
