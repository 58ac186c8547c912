//! What a node reports about itself (`constellation status` reads it through the provider),
//! and the node state it keeps on its disk once it belongs to a cluster.
//!
//! [`NodeReport`] carries a `version`; readers accept unknown fields, so a node of a newer
//! version can report to a CLI of an older one during a rolling upgrade.

use serde::{Deserialize, Serialize};

/// The report format this version writes.
pub const REPORT_VERSION: u32 = 1;

/// Where a node is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum NodePhase {
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
    /// A phase written by a newer version that this one does not know.
    #[serde(other, rename = "unknown")]
    Unknown,
}

impl NodePhase {
    /// The node belongs to a cluster (initialized it or was admitted).
    pub fn is_member(self) -> bool {
        matches!(self, NodePhase::Initialized | NodePhase::Joined)
    }
}

/// A node's self-report. Never contains secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReport {
    /// [`REPORT_VERSION`] of the writer (absent in reports of the first version: 1).
    #[serde(default = "v1")]
    pub version: u32,
    pub phase: NodePhase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// PCR 15 (SHA-256 bank), hex.
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
    /// The measurement salt this member's state disk holds (hex; not secret: the owner's
    /// state file has it too). Lets the owner rebuild a lost state file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measurement_salt: Option<String>,
    /// The node's Kubernetes components: `Ready`, or `NotReady: <component> …: <why>`
    /// (absent without Kubernetes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<String>,
}

fn v1() -> u32 {
    1
}

impl NodeReport {
    pub fn new(phase: NodePhase) -> Self {
        NodeReport {
            version: REPORT_VERSION,
            phase,
            cluster_id: None,
            pcr15: None,
            services: vec![],
            error: None,
            admitted_by: None,
            pid: 0,
            measurement_salt: None,
            kubernetes: None,
        }
    }
}

/// Where a node keeps its [`NodeState`], relative to its state folder (the provider reads
/// whether it exists: the disk holds cluster state).
pub const NODE_STATE_FILE: &str = "state/node_state.json";

/// What a cluster member keeps on its state disk (the Go system's `node_state.json` layout:
/// `{"Role": "ControlPlane"|"Worker", "MeasurementSalt": "<std base64>"}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    #[serde(rename = "Role")]
    pub role: String,
    #[serde(rename = "MeasurementSalt", with = "crate::serde_b64")]
    pub measurement_salt: Vec<u8>,
}

impl NodeState {
    /// The Go layout: tab-indented JSON.
    pub fn to_go_json(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
        let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
        // Serialising a struct of strings into a Vec cannot fail.
        let _ = Serialize::serialize(self, &mut ser);
        buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_of_other_versions_are_read() {
        // The first version wrote no `version`; a newer one may add fields and phases.
        let old: NodeReport = serde_json::from_str(r#"{"phase":"joined","pid":7}"#).unwrap();
        assert_eq!((old.version, old.phase, old.pid), (1, NodePhase::Joined, 7));
        let newer: NodeReport =
            serde_json::from_str(r#"{"version":2,"phase":"draining","disk":{"encrypted":true}}"#)
                .unwrap();
        assert_eq!((newer.version, newer.phase), (2, NodePhase::Unknown));
    }

    #[test]
    fn node_state_is_go_layout() {
        let s = NodeState {
            role: "ControlPlane".into(),
            measurement_salt: vec![0xff; 32],
        };
        let text = String::from_utf8(s.to_go_json()).unwrap();
        assert!(
            text.contains(
                "\t\"MeasurementSalt\": \"//////////////////////////////////////////8=\""
            ),
            "{text}"
        );
        let back: NodeState = serde_json::from_str(&text).unwrap();
        assert_eq!(back, s);
    }
}
