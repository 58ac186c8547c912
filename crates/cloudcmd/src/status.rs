//! `constellation status`: the local cloud's nodes and what each reports.

use std::path::Path;

use bootstrapper::state::{NodeDir, Phase};
use provider_local::cloud::CloudState;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    pub name: String,
    pub role: String,
    pub address: String,
    pub running: bool,
    pub tpm_running: bool,
    pub phase: Option<Phase>,
    pub cluster_id: Option<String>,
    pub pcr15: Option<String>,
    pub services: Vec<String>,
    pub error: Option<String>,
    /// Join decision: `init`, the admitting JoinService's node, or `<node> (rejoin)`.
    pub admitted_by: Option<String>,
    /// What the node's PCR 15 says: `cluster` (the value derived from this cluster's ID),
    /// `zero` (belongs to no cluster yet), `other` (another cluster's ID, or changed), or
    /// `unknown` (no report).
    pub pcr15_state: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    pub name: String,
    pub uid: String,
    pub variant: String,
    pub image: String,
    pub initialized: bool,
    pub cluster_id: Option<String>,
    pub nodes: Vec<NodeStatus>,
}

pub fn status(ws: &Path) -> anyhow::Result<Option<ClusterStatus>> {
    let Some(cloud) = CloudState::load(&CloudState::path(ws))? else {
        return Ok(None);
    };
    let state_path = ws.join(crate::STATE_FILE);
    let state = if state_path.exists() {
        Some(config::state::State::load(&state_path)?)
    } else {
        None
    };
    let cluster_id = state
        .as_ref()
        .and_then(|s| s.cluster_id())
        .map(|c| c.to_hex());
    let expected15 = state
        .as_ref()
        .and_then(|s| s.cluster_id())
        .map(|c| hex::encode(c.expected_pcr15()));
    let nodes = cloud
        .nodes
        .iter()
        .map(|n| {
            // A report from an earlier run of the node (before a restart) is not current.
            let s = NodeDir(n.dir.clone())
                .read_status()
                .filter(|s| n.process.is_some_and(|p| p.pid == s.pid));
            let pcr15 = s.as_ref().and_then(|s| s.pcr15.clone());
            let pcr15_state = match pcr15.as_deref() {
                None => "unknown",
                Some(v) if Some(v) == expected15.as_deref() => "cluster",
                Some(v) if v.bytes().all(|b| b == b'0') => "zero",
                Some(_) => "other",
            };
            NodeStatus {
                pcr15_state,
                name: n.name.clone(),
                role: n.role.as_str().into(),
                address: n.address.to_string(),
                running: n.process.is_some_and(|p| p.is_alive()),
                tpm_running: n.swtpm.is_some_and(|p| p.is_alive()),
                phase: s.as_ref().map(|s| s.phase),
                cluster_id: s.as_ref().and_then(|s| s.cluster_id.clone()),
                pcr15: s.as_ref().and_then(|s| s.pcr15.clone()),
                services: s.as_ref().map(|s| s.services.clone()).unwrap_or_default(),
                error: s.as_ref().and_then(|s| s.error.clone()),
                admitted_by: s.and_then(|s| s.admitted_by),
            }
        })
        .collect();
    let image = cloud
        .image_dir
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Some(ClusterStatus {
        name: cloud.name,
        uid: cloud.uid,
        variant: cloud.variant,
        image,
        initialized: cluster_id.is_some(),
        cluster_id,
        nodes,
    }))
}
