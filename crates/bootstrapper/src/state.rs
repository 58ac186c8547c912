//! What a node keeps on its "disk" (its folder) and what it reports.
//!
//! * `state/node_state.json`: the Go system's layout `{"Role": "ControlPlane"|"Worker",
//!   "MeasurementSalt": "<std base64>"}`; written once the node belongs to a cluster.
//! * `status.json`: the node's self-report for `constellation status` (phase, cluster ID,
//!   PCR 15, last error). Never contains secrets.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Measured and waiting for Init or for a cluster to join.
    #[serde(rename = "waiting")]
    Waiting,
    #[serde(rename = "initializing")]
    Initializing,
    /// This node initialized the cluster.
    #[serde(rename = "initialized")]
    Initialized,
    #[serde(rename = "joining")]
    Joining,
    #[serde(rename = "joined")]
    Joined,
    /// A JoinService refused this node; `error` says why (e.g. which PCR differed).
    #[serde(rename = "refused")]
    Refused,
    #[serde(rename = "failed")]
    Failed,
    /// A restarted control-plane node that no JoinService answered: if every control-plane
    /// node went down, only the owner can give its keys back (`constellation recover`).
    #[serde(rename = "awaiting-recovery")]
    AwaitingRecovery,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub phase: Phase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pcr15: Option<String>,
    /// Services this node runs (e.g. "keyservice", "joinservice", "etcd").
    #[serde(default)]
    pub services: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The join decision: who admitted this node (`init` for the first node, else the
    /// JoinService's node) and whether it was a rejoin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admitted_by: Option<String>,
    #[serde(default)]
    pub pid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    #[serde(rename = "Role")]
    pub role: String,
    #[serde(rename = "MeasurementSalt", with = "b64")]
    pub measurement_salt: Vec<u8>,
}

mod b64 {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}

/// Paths inside a node's folder.
#[derive(Debug, Clone)]
pub struct NodeDir(pub PathBuf);

impl NodeDir {
    pub fn state(&self) -> PathBuf {
        self.0.join("state")
    }
    pub fn node_state(&self) -> PathBuf {
        self.state().join("node_state.json")
    }
    pub fn status(&self) -> PathBuf {
        self.0.join("status.json")
    }
    pub fn pki(&self) -> PathBuf {
        self.state().join("pki")
    }
    pub fn etcd_data(&self) -> PathBuf {
        self.state().join("etcd")
    }
    pub fn log(&self) -> PathBuf {
        self.0.join("node.log")
    }
    /// The state disk's UUID (as a LUKS UUID: not secret, readable before unlocking).
    pub fn disk_uuid_path(&self) -> PathBuf {
        self.0.join("disk.uuid")
    }
    /// Proof that a state-disk key opens this disk (a LUKS key slot's stand-in): HKDF of the
    /// key, never the key.
    pub fn key_check_path(&self) -> PathBuf {
        self.0.join("disk.keycheck")
    }
    /// `--initial-cluster` of this node's etcd member, from its join ticket.
    pub fn etcd_initial_cluster(&self) -> PathBuf {
        self.state().join("etcd-initial-cluster")
    }

    /// The disk UUID, created on first use (random, version-4 layout, lowercase).
    pub fn disk_uuid(&self) -> std::io::Result<String> {
        if let Ok(s) = fs::read_to_string(self.disk_uuid_path()) {
            let s = s.trim().to_string();
            if !s.is_empty() {
                return Ok(s);
            }
        }
        let mut b = [0u8; 16];
        rand::Rng::fill(&mut rand::thread_rng(), &mut b[..]);
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h = hex::encode(b);
        let uuid = format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        );
        write_atomic(&self.disk_uuid_path(), uuid.as_bytes(), 0o644)?;
        Ok(uuid)
    }

    /// Binds the disk to `key` on first use; afterwards checks that `key` is the one.
    pub fn open_disk(&self, key: &[u8]) -> Result<(), DiskKeyError> {
        let check = hex::encode(
            keys::hkdf_sha256(key, &[], b"constellation-local-disk-keycheck", 32)
                .map_err(|_| DiskKeyError::Derive)?
                .expose(),
        );
        match fs::read_to_string(self.key_check_path()) {
            Ok(existing) if existing.trim() == check => Ok(()),
            Ok(_) => Err(DiskKeyError::WrongKey),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                write_atomic(&self.key_check_path(), check.as_bytes(), 0o600)
                    .map_err(DiskKeyError::Io)
            }
            Err(e) => Err(DiskKeyError::Io(e)),
        }
    }

    pub fn read_status(&self) -> Option<Status> {
        fs::read(self.status())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    }

    pub fn write_status(&self, s: &Status) -> std::io::Result<()> {
        write_atomic(
            &self.status(),
            &serde_json::to_vec_pretty(s).unwrap_or_default(),
            0o644,
        )
    }

    pub fn read_node_state(&self) -> Option<NodeState> {
        fs::read(self.node_state())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    }

    pub fn write_node_state(&self, s: &NodeState) -> std::io::Result<()> {
        // Go writes this with tab indentation.
        let v = serde_json::to_value(s).unwrap_or_default();
        let mut buf = Vec::new();
        let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
        let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
        serde::Serialize::serialize(&v, &mut ser).map_err(std::io::Error::other)?;
        write_atomic(&self.node_state(), &buf, 0o600)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DiskKeyError {
    #[error("the state-disk key does not open this node's disk")]
    WrongKey,
    #[error("deriving the key check failed")]
    Derive,
    #[error("reading or writing the key check failed")]
    Io(#[source] std::io::Error),
}

/// Creates the parent folder, then writes atomically with `mode` (shared implementation:
/// [`config::atomic::replace`]).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    config::atomic::replace(path, bytes, mode).map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_state_is_go_layout() {
        let t = tempfile::tempdir().unwrap();
        let d = NodeDir(t.path().into());
        d.write_node_state(&NodeState {
            role: "ControlPlane".into(),
            measurement_salt: vec![0xff; 32],
        })
        .unwrap();
        let s = fs::read_to_string(d.node_state()).unwrap();
        assert!(
            s.contains("\t\"MeasurementSalt\": \"//////////////////////////////////////////8=\""),
            "{s}"
        );
        assert_eq!(
            d.read_node_state().unwrap().measurement_salt,
            vec![0xff; 32]
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(d.node_state()).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
