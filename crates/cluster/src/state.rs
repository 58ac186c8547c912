//! The cluster's replicated state: the values the control plane keeps in etcd.
//!
//! | key | value |
//! |---|---|
//! | `/constellation/join-config` | [`JoinConfig`]: attestation variant, measurements, measurement salt |
//! | `/constellation/master-secret` | [`MasterSecretRecord`]: what the KeyService derives keys from |
//! | `/constellation/nodes/<name>` | [`NodeEntry`]: one per admitted node (the node registry) |
//!
//! Every value carries a `version` (absent = 1) and is read forward-compatibly: unknown fields
//! are ignored, so during a rolling upgrade nodes of two versions read what the other wrote.
//! A value whose version is newer than [`STATE_VERSION`] is still read (its known fields are
//! the same); [`check_version`] is for readers that must refuse what they cannot understand.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use measurements::Measurements;
use serde::{Deserialize, Serialize};

pub const KEY_JOIN_CONFIG: &str = "/constellation/join-config";
pub const KEY_MASTER_SECRET: &str = "/constellation/master-secret";
pub const PREFIX_NODES: &str = "/constellation/nodes/";

/// The format version this build writes.
pub const STATE_VERSION: u32 = 1;

fn v1() -> u32 {
    1
}

/// A cluster-state value written by a version this build cannot serve safely.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key} has format version {found}; this build understands up to {supported}: upgrade this node or CLI")]
pub struct VersionError {
    pub key: String,
    pub found: u32,
    pub supported: u32,
}

/// Refuses a value of a newer *major* format (a version that changed the meaning of known
/// fields would bump this; additions do not).
pub fn check_version(key: &str, found: u32, supported: u32) -> Result<(), VersionError> {
    if found > supported {
        return Err(VersionError {
            key: key.into(),
            found,
            supported,
        });
    }
    Ok(())
}

/// What the JoinService checks joining nodes against; set by Init from the owner's config
/// and by `apply` when the owner changes the measurements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinConfig {
    #[serde(default = "v1")]
    pub version: u32,
    /// Attestation variant name, e.g. `local-vtpm`.
    pub variant: String,
    pub measurements: Measurements,
    #[serde(with = "crate::serde_hex")]
    pub measurement_salt: Vec<u8>,
}

impl JoinConfig {
    pub fn new(variant: String, measurements: Measurements, measurement_salt: Vec<u8>) -> Self {
        JoinConfig {
            version: STATE_VERSION,
            variant,
            measurements,
            measurement_salt,
        }
    }
}

/// The master secret as the KeyService reads it (the Go system keeps it in the Kubernetes
/// Secret `constellation-mastersecret`). Zeroized on drop.
#[derive(Serialize, Deserialize)]
pub struct MasterSecretRecord {
    #[serde(default = "v1")]
    pub version: u32,
    pub key: String,
    pub salt: String,
}

/// The record does not hold a usable master secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MasterSecretRecordError {
    #[error("the master-secret record's {field} is not base64")]
    Encoding { field: &'static str },
    #[error("the master-secret record is not a valid master secret")]
    Invalid(#[source] keys::KeyError),
}

impl MasterSecretRecord {
    pub fn new(m: &keys::MasterSecret) -> Self {
        Self {
            version: STATE_VERSION,
            key: STANDARD.encode(m.key()),
            salt: STANDARD.encode(m.salt()),
        }
    }
    pub fn secret(&self) -> Result<keys::MasterSecret, MasterSecretRecordError> {
        let key = zeroize::Zeroizing::new(
            STANDARD
                .decode(&self.key)
                .map_err(|_| MasterSecretRecordError::Encoding { field: "key" })?,
        );
        let salt = STANDARD
            .decode(&self.salt)
            .map_err(|_| MasterSecretRecordError::Encoding { field: "salt" })?;
        keys::MasterSecret::new(key.to_vec(), salt).map_err(MasterSecretRecordError::Invalid)
    }
}

impl Drop for MasterSecretRecord {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.key.zeroize();
    }
}

/// One admitted node in the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeEntry {
    #[serde(default = "v1")]
    pub version: u32,
    pub name: String,
    /// `control-plane` or `worker`.
    pub role: String,
    pub address: String,
    pub disk_uuid: String,
    /// SHA-256 of the node's attestation key (TPMT_PUBLIC), hex.
    pub ak_fingerprint: String,
    /// `init` (the first node) or the JoinService node that admitted it.
    pub admitted_by: String,
    /// Unix seconds.
    pub admitted_at: u64,
    #[serde(default)]
    pub rejoins: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rejoin_at: Option<u64>,
}

/// The registry key of node `name`.
pub fn node_key(name: &str) -> String {
    format!("{PREFIX_NODES}{name}")
}

/// The one rule for a node that may not belong to any cluster yet (a joiner, a node being
/// initialized or recovered): the owner's measurements with PCR 15 enforced zero, whatever they
/// say for it.
pub fn with_pcr15_zero(m: &Measurements) -> Result<Measurements, measurements::MeasurementsError> {
    let mut m = m.clone();
    m.set(15, measurements::Measurement::enforced(vec![0u8; 32]))?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_of_the_first_and_of_newer_versions_are_read() {
        // The first version wrote no `version` field.
        let first: JoinConfig = serde_json::from_str(
            r#"{"variant":"local-vtpm","measurements":{},"measurementSalt":"00ff"}"#,
        )
        .unwrap();
        assert_eq!(first.version, 1);
        assert_eq!(first.measurement_salt, vec![0, 0xff]);
        // A newer version adds fields (say, a second accepted measurement set): still read.
        let newer: JoinConfig = serde_json::from_str(
            r#"{"version":2,"variant":"local-vtpm","measurements":{},"measurementSalt":"00","acceptedImages":["v2"]}"#,
        )
        .unwrap();
        assert_eq!(newer.version, 2);
        let e = check_version(KEY_JOIN_CONFIG, newer.version, STATE_VERSION).unwrap_err();
        assert_eq!((e.found, e.supported), (2, 1));
        let entry: NodeEntry = serde_json::from_str(
            r#"{"name":"worker-0","role":"worker","address":"127.1.0.3","diskUuid":"u","akFingerprint":"ab","admittedBy":"control-plane-0","admittedAt":5,"kubernetesName":"worker-0"}"#,
        )
        .unwrap();
        assert_eq!((entry.version, entry.rejoins), (1, 0));
    }

    #[test]
    fn master_secret_record_round_trips_and_names_bad_fields() {
        let m = keys::MasterSecret::new(vec![7; 32], vec![9; 32]).unwrap();
        let r = MasterSecretRecord::new(&m);
        let back = r.secret().unwrap();
        assert_eq!((back.key(), back.salt()), (m.key(), m.salt()));
        let bad = MasterSecretRecord {
            version: 1,
            key: "%%".into(),
            salt: String::new(),
        };
        assert!(matches!(
            bad.secret(),
            Err(MasterSecretRecordError::Encoding { field: "key" })
        ));
    }
}
