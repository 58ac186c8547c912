//! What a node keeps in its state folder (its state disk, once opened).
//!
//! * `state/node_state.json`: [`cluster::report::NodeState`] in the Go system's layout;
//!   written once the node belongs to a cluster.
//! * `state/pki/`: the node's TLS identities and, on control planes, the CAs.
//! * `state/etcd/`: a control plane's etcd member.
//!
//! The disk's UUID and key check, and where the node's self-report goes, are the provider's
//! (crate `cluster`, `env`).

use std::fs;
use std::path::{Path, PathBuf};

pub use cluster::report::NodeState;

/// Paths inside a node's folder.
#[derive(Debug, Clone)]
pub struct NodeDir(pub PathBuf);

impl NodeDir {
    pub fn state(&self) -> PathBuf {
        self.0.join("state")
    }
    pub fn node_state(&self) -> PathBuf {
        self.0.join(cluster::report::NODE_STATE_FILE)
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
    /// `--initial-cluster` of this node's etcd member, from its join ticket.
    pub fn etcd_initial_cluster(&self) -> PathBuf {
        self.state().join("etcd-initial-cluster")
    }

    pub fn read_node_state(&self) -> Option<NodeState> {
        fs::read(self.node_state())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    }

    pub fn write_node_state(&self, s: &NodeState) -> std::io::Result<()> {
        write_atomic(&self.node_state(), &s.to_go_json(), 0o600)
    }
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
    fn node_state_is_owner_only() {
        let t = tempfile::tempdir().unwrap();
        let d = NodeDir(t.path().into());
        d.write_node_state(&NodeState {
            role: "ControlPlane".into(),
            measurement_salt: vec![0xff; 32],
        })
        .unwrap();
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
