//! The local cloud's state: what a cloud control plane would know about its instances.
//!
//! Kept in the workspace at `constellation-local/cloud.json` (the local provider's
//! infrastructure state). The CLI writes it; nodes read it as their instance-metadata service
//! (self, peers, endpoint, init-secret hash), and validators read the recorded attestation keys,
//! as a cloud's shielded-VM API vouches for its vTPMs.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::process::ProcessRecord;

/// Folder of the local provider's infrastructure state inside a workspace.
pub const STATE_DIR: &str = "constellation-local";
pub const STATE_FILE: &str = "cloud.json";

/// Fixed ports (defined in the shared vocabulary, crate `cluster`); every node has its own
/// loopback address, so ports never collide between nodes.
pub use cluster::ports::{
    ETCD_CLIENT as PORT_ETCD_CLIENT, ETCD_PEER as PORT_ETCD_PEER, INIT as PORT_INIT,
    JOIN as PORT_JOIN, KEYSERVICE as PORT_KEYSERVICE, RECOVERY as PORT_RECOVERY,
    VERIFY as PORT_VERIFY,
};

#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    #[error("reading the local cloud state {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the local cloud state {path} is corrupt")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("writing the local cloud state {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no node named {0:?} in the local cloud")]
    NoSuchNode(String),
    #[error("no free loopback address after {base} (all {max} in use)")]
    NoAddress { base: Ipv4Addr, max: u32 },
}

/// The node role of the shared vocabulary (crate `cluster`).
pub use cluster::Role;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeRecord {
    /// `<role>-<index>`, e.g. `control-plane-0`.
    pub name: String,
    pub role: Role,
    /// The node group it belongs to (config `nodeGroups` key).
    pub group: String,
    pub address: Ipv4Addr,
    /// The node's own folder ("disks"): TPM state, node state, logs.
    pub dir: PathBuf,
    /// The vTPM's attestation key (TPMT_PUBLIC, hex) as recorded when the TPM was created.
    #[serde(default)]
    pub ak_public: Option<String>,
    #[serde(default)]
    pub swtpm: Option<ProcessRecord>,
    #[serde(default)]
    pub process: Option<ProcessRecord>,
    /// The node's address in the cluster network (Kubernetes clusters only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_address: Option<Ipv4Addr>,
}

impl NodeRecord {
    /// The provider-neutral view (crate `cluster`) of this node.
    pub fn info(&self) -> cluster::inventory::NodeInfo {
        cluster::inventory::NodeInfo {
            name: self.name.clone(),
            role: self.role,
            group: self.group.clone(),
            address: self.address,
            ak_public: self.ak_public.as_deref().and_then(|h| hex::decode(h).ok()),
            internal_address: self.internal_address,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudState {
    pub version: String,
    pub uid: String,
    pub name: String,
    pub variant: String,
    pub image_dir: PathBuf,
    /// bcrypt hash of the init secret (the secret itself is only in the CLI's state file).
    pub init_secret_hash: String,
    pub base_address: Ipv4Addr,
    /// The config's `image` when the cloud was created (absent in clouds of earlier versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The cluster network, when the nodes run Kubernetes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube: Option<crate::kubenet::KubeNetRecord>,
    pub nodes: Vec<NodeRecord>,
}

impl CloudState {
    pub fn path(workspace: &Path) -> PathBuf {
        workspace.join(STATE_DIR).join(STATE_FILE)
    }

    pub fn load(path: &Path) -> Result<Option<CloudState>, CloudError> {
        match fs::read(path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| CloudError::Corrupt {
                    path: path.into(),
                    source: e,
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CloudError::Read {
                path: path.into(),
                source: e,
            }),
        }
    }

    /// Atomic (temp file, fsync, rename: [`config::atomic::replace`]). Readable by the node
    /// processes; holds no secret (only the bcrypt hash of the init secret).
    pub fn save(&self, path: &Path) -> Result<(), CloudError> {
        let dir = path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(|e| CloudError::Write {
            path: path.into(),
            source: e,
        })?;
        let bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        config::atomic::replace(path, &bytes, 0o644).map_err(|e| CloudError::Write {
            path: path.into(),
            source: std::io::Error::other(e),
        })
    }

    pub fn node(&self, name: &str) -> Result<&NodeRecord, CloudError> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| CloudError::NoSuchNode(name.into()))
    }

    pub fn node_mut(&mut self, name: &str) -> Result<&mut NodeRecord, CloudError> {
        self.nodes
            .iter_mut()
            .find(|n| n.name == name)
            .ok_or_else(|| CloudError::NoSuchNode(name.into()))
    }

    pub fn control_planes(&self) -> impl Iterator<Item = &NodeRecord> {
        self.nodes.iter().filter(|n| n.role == Role::ControlPlane)
    }

    /// The cluster endpoint: the first control-plane node (the local cloud has no load balancer).
    pub fn endpoint(&self) -> Option<Ipv4Addr> {
        self.control_planes().next().map(|n| n.address)
    }

    /// Lowest loopback address at or after the base that no node uses.
    pub fn free_address(&self) -> Result<Ipv4Addr, CloudError> {
        let base = u32::from(self.base_address);
        const MAX: u32 = 250;
        (0..MAX)
            .map(|i| Ipv4Addr::from(base + i))
            .find(|a| !self.nodes.iter().any(|n| n.address == *a))
            .ok_or(CloudError::NoAddress {
                base: self.base_address,
                max: MAX,
            })
    }

    /// Lowest unused index for node names of this role (`control-plane-<i>`, `worker-<i>`).
    pub fn free_name(&self, role: Role) -> String {
        (0..)
            .map(|i| format!("{}-{i}", role.as_str()))
            .find(|n| !self.nodes.iter().any(|x| &x.name == n))
            .unwrap_or_default()
    }

    /// The provider-neutral view (crate `cluster`) of this cloud.
    pub fn info(&self) -> cluster::inventory::ClusterInfo {
        cluster::inventory::ClusterInfo {
            uid: self.uid.clone(),
            name: self.name.clone(),
            variant: self.variant.clone(),
            init_secret_hash: self.init_secret_hash.clone(),
            nodes: self.nodes.iter().map(NodeRecord::info).collect(),
        }
    }

    /// Attestation keys the provider vouches for (TPMT_PUBLIC bytes).
    pub fn trusted_aks(&self) -> Vec<Vec<u8>> {
        self.nodes
            .iter()
            .filter_map(|n| n.ak_public.as_deref())
            .filter_map(|h| hex::decode(h).ok())
            .collect()
    }

    /// The `local-vtpm` validators' policy: trust exactly the attestation keys this provider
    /// recorded when it created each node's TPM (as a cloud's shielded-VM API vouches for its
    /// vTPMs).
    pub fn validator_policy(&self) -> attestation::ValidatorPolicy {
        self.trusted_aks()
            .iter()
            .fold(attestation::ValidatorPolicy::default(), |p, ak| {
                p.trust_ak_public(ak)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, role: Role, a: [u8; 4]) -> NodeRecord {
        NodeRecord {
            name: name.into(),
            role,
            group: "g".into(),
            address: Ipv4Addr::from(a),
            dir: "/x".into(),
            ak_public: Some("0102".into()),
            swtpm: None,
            process: None,
            internal_address: None,
        }
    }

    #[test]
    fn save_load_and_allocation() {
        let t = tempfile::tempdir().unwrap();
        let path = CloudState::path(t.path());
        assert!(CloudState::load(&path).unwrap().is_none());
        let s = CloudState {
            version: "v1".into(),
            uid: "abcd".into(),
            name: "mini".into(),
            variant: "local-vtpm".into(),
            image_dir: "/img".into(),
            init_secret_hash: "$2b$".into(),
            base_address: Ipv4Addr::new(127, 20, 0, 1),
            image: Some("v0.1.0".into()),
            kube: None,
            nodes: vec![
                node("worker-0", Role::Worker, [127, 20, 0, 1]),
                node("control-plane-0", Role::ControlPlane, [127, 20, 0, 2]),
            ],
        };
        assert_eq!(s.free_address().unwrap(), Ipv4Addr::new(127, 20, 0, 3));
        assert_eq!(s.free_name(Role::ControlPlane), "control-plane-1");
        assert_eq!(s.endpoint(), Some(Ipv4Addr::new(127, 20, 0, 2)));
        assert_eq!(s.trusted_aks(), vec![vec![1, 2], vec![1, 2]]);
        s.save(&path).unwrap();
        assert_eq!(CloudState::load(&path).unwrap().unwrap(), s);
        fs::write(&path, b"{").unwrap();
        assert!(matches!(
            CloudState::load(&path),
            Err(CloudError::Corrupt { .. })
        ));
    }
}
