//! `constellation status`: the provider's nodes and what each reports.

use cluster::report::{NodePhase as Phase, NodeReport};
use serde::Serialize;

use crate::provider::Workspace;

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
    /// The node's Kubernetes components as it reports them: `Ready`, or `NotReady: <why>`
    /// (absent without Kubernetes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<String>,
    /// A fresh attestation checked against the config's measurements and the cluster ID:
    /// `verified`, or why not (filled by [`attach_attestation`]; `None` when not checked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attestation: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    pub name: String,
    pub uid: String,
    pub variant: String,
    pub image: String,
    pub initialized: bool,
    pub cluster_id: Option<String>,
    /// The state file: `ok`, `missing` or `unreadable: <why>`. When it is not `ok`, whether the
    /// cluster is initialized and its ID come from what the nodes report.
    pub state_file: String,
    pub nodes: Vec<NodeStatus>,
}

pub fn status(ws: &Workspace) -> anyhow::Result<Option<ClusterStatus>> {
    let Some(cloud) = ws.provider.view()? else {
        return Ok(None);
    };
    let state_path = ws.join(crate::STATE_FILE);
    let (state, state_file) = match config::state::State::load(&state_path) {
        Ok(s) => (Some(s), "ok".to_string()),
        Err(config::state::StateError::NotFound { .. }) => (None, "missing".to_string()),
        Err(e) => (None, format!("unreadable: {e}")),
    };
    // Without a usable state file, the nodes say whether (and which) cluster they are in.
    let reported = if state.is_none() {
        let m = crate::workspace::membership(ws)?;
        let one = (m.clusters.len() == 1)
            .then(|| m.clusters.keys().next().cloned())
            .flatten();
        Some((m.is_member_of_any(), one))
    } else {
        None
    };
    let cluster_id = match &reported {
        None => state
            .as_ref()
            .and_then(|s| s.cluster_id())
            .map(|c| c.to_hex()),
        Some((_, id)) => id.clone(),
    };
    let expected15 = cluster_id
        .as_deref()
        .and_then(|id| crate::verify::parse_cluster_id(id).ok())
        .map(|c| hex::encode(c.expected_pcr15()));
    let nodes = cloud
        .nodes
        .iter()
        .map(|n| {
            // A report from an earlier run of the node (before a restart) is not current.
            let s = n.report.clone().map(sanitized);
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
                running: n.running,
                tpm_running: n.tpm_running,
                phase: s.as_ref().map(|s| s.phase),
                cluster_id: s.as_ref().and_then(|s| s.cluster_id.clone()),
                pcr15: s.as_ref().and_then(|s| s.pcr15.clone()),
                services: s.as_ref().map(|s| s.services.clone()).unwrap_or_default(),
                error: s.as_ref().and_then(|s| s.error.clone()),
                kubernetes: s.as_ref().and_then(|s| s.kubernetes.clone()),
                admitted_by: s.and_then(|s| s.admitted_by),
                attestation: None,
            }
        })
        .collect();
    Ok(Some(ClusterStatus {
        name: cloud.info.name,
        uid: cloud.info.uid,
        variant: cloud.info.variant,
        image: cloud.image,
        initialized: match &reported {
            None => cluster_id.is_some(),
            Some((member, _)) => *member,
        },
        cluster_id,
        state_file,
        nodes,
    }))
}

/// A node's report with every string stripped of control characters (a node must not be able
/// to rewrite the owner's terminal).
fn sanitized(mut s: NodeReport) -> NodeReport {
    let clean = |o: &mut Option<String>| {
        if let Some(v) = o.as_mut() {
            *v = crate::sanitize(v);
        }
    };
    clean(&mut s.cluster_id);
    clean(&mut s.pcr15);
    clean(&mut s.error);
    clean(&mut s.admitted_by);
    clean(&mut s.kubernetes);
    for v in &mut s.services {
        *v = crate::sanitize(v);
    }
    s
}

/// Asks every running node for a fresh attestation (as `verify` does) and records the result
/// in each node's `attestation`: `verified`, or why not, e.g. a PCR that no longer matches the
/// config's measurements.
pub async fn attach_attestation(
    ws: &Workspace,
    cfg: &config::Config,
    st: &mut ClusterStatus,
) -> anyhow::Result<()> {
    let Some(id) = st.cluster_id.clone() else {
        return Ok(());
    };
    let report = crate::verify::verify(
        ws,
        cfg,
        &crate::verify::VerifyOptions {
            node_endpoint: None,
            cluster_id: Some(id),
        },
    )
    .await?;
    for n in &mut st.nodes {
        if !n.running {
            continue;
        }
        if let Some(v) = report.nodes.iter().find(|v| v.node == n.name) {
            n.attestation = Some(if v.verified {
                "verified".into()
            } else {
                crate::sanitize(v.error.as_deref().unwrap_or("not verified"))
            });
        }
    }
    Ok(())
}
