//! `constellation state rebuild`: a lost or damaged state file, rebuilt from the running
//! cluster, but only after the cluster proved it is the owner's.
//!
//! 1. The nodes report one cluster ID, and a control-plane node's disk holds the measurement
//!    salt (both public values).
//! 2. The owner's master secret must derive exactly that cluster ID from that salt: the state
//!    file is never rebuilt for a cluster whose secret the owner does not hold.
//! 3. Every node must pass `verify` against the config's measurements and that cluster ID
//!    (PCR 15), with a fresh nonce: a node cannot just claim an ID.
//!
//! Only then is the state file written (a damaged one is first moved to `….damaged`).

use anyhow::{bail, Context as _};
use cluster::Role;
use config::state::State;
use config::Config;

use crate::provider::Workspace;

use crate::workspace::{damaged_state_path, membership, WorkspaceError};
use crate::{shown, Progress, MASTER_SECRET_FILE, STATE_FILE};

#[derive(Debug, Clone)]
pub struct RebuildOutcome {
    pub cluster_id: String,
    pub nodes_verified: usize,
    /// Where a damaged state file was kept, if there was one.
    pub damaged_copy: Option<String>,
}

pub async fn rebuild(
    ws: &Workspace,
    cfg: &Config,
    force: bool,
    progress: &mut dyn Progress,
) -> anyhow::Result<RebuildOutcome> {
    let state_path = ws.join(STATE_FILE);
    let damaged = match State::load(&state_path) {
        Ok(_) => bail!(
            "{} is present and valid: there is nothing to rebuild",
            shown(STATE_FILE)
        ),
        Err(config::state::StateError::NotFound { .. }) => false,
        Err(e) if force => {
            progress.step(&format!("{} cannot be read ({e}); it will be kept as {}", shown(STATE_FILE), damaged_state_path(ws).display()));
            true
        }
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!(
                "{} exists but cannot be read; pass --force to replace it (it is kept as {STATE_FILE}.damaged)",
                shown(STATE_FILE)
            )))
        }
    };
    let cloud = ws.provider.view()?.context(
        "no infrastructure records in this workspace: there is no cluster to rebuild the state from",
    )?;

    // 1. The cluster ID the nodes report and the salt on a control plane's disk.
    let m = membership(ws)?;
    let (cluster_id, reporters) = match m.clusters.len() {
        0 => bail!("no node of this workspace reports a cluster ID: start them with `constellation apply --skip-phases init` (it restarts stopped nodes), then run this again"),
        1 => m.clusters.iter().next().map(|(k, v)| (k.clone(), v.clone())).context("internal: one cluster")?,
        _ => {
            return Err(WorkspaceError::ConflictingClusterIds {
                ids: m.clusters.keys().cloned().collect::<Vec<_>>().join(", "),
            }
            .into())
        }
    };
    progress.step(&format!(
        "nodes {} report cluster ID {cluster_id}",
        reporters.join(", ")
    ));
    let mut salts = cloud
        .nodes
        .iter()
        .filter(|n| n.role == Role::ControlPlane)
        .filter_map(|n| n.last_report.as_ref()?.measurement_salt.as_deref())
        .filter_map(|s| hex::decode(s).ok());
    let salt = salts
        .next()
        .context("no control-plane node's disk holds the cluster's measurement salt")?;
    if salts.any(|s| s != salt) {
        bail!("the control-plane nodes hold different measurement salts; refusing to guess");
    }

    // 2. The owner's master secret must derive that ID.
    let secret =
        config::secret::read(&ws.join(MASTER_SECRET_FILE)).map_err(|source| match source {
            config::secret::SecretFileError::NotFound { .. } => {
                WorkspaceError::MasterSecretMissing {
                    path: shown(MASTER_SECRET_FILE),
                }
            }
            source => WorkspaceError::MasterSecretUnreadable {
                path: shown(MASTER_SECRET_FILE),
                source,
            },
        })?;
    let derived = secret.secret.measurement_secret()?.cluster_id(&salt);
    if derived.to_hex() != cluster_id {
        return Err(WorkspaceError::MasterSecretForeign {
            path: shown(MASTER_SECRET_FILE),
            derived: derived.to_hex(),
            expected: cluster_id,
        }
        .into());
    }
    progress.step(&format!(
        "{} derives this cluster ID from the salt on the control-plane disk",
        shown(MASTER_SECRET_FILE)
    ));

    // 3. Every node proves it with a fresh attestation.
    let report = crate::verify::verify(
        ws,
        cfg,
        &crate::verify::VerifyOptions {
            node_endpoint: None,
            cluster_id: Some(cluster_id.clone()),
        },
    )
    .await?;
    let failed: Vec<String> = report
        .nodes
        .iter()
        .filter(|n| !n.verified)
        .map(|n| {
            format!(
                "{}: {}",
                n.node,
                n.error.as_deref().unwrap_or("not verified")
            )
        })
        .collect();
    if !failed.is_empty() {
        bail!(
            "not rebuilding {}: {} node(s) failed verification against cluster ID {cluster_id}:\n  {}",
            shown(STATE_FILE),
            failed.len(),
            failed.join("\n  ")
        );
    }
    progress.step(&format!(
        "all {} node(s) verified against the config's measurements and this cluster ID",
        report.nodes.len()
    ));

    let mut state = State::default();
    ws.provider.fill_infrastructure(&mut state)?;
    state.set_cluster_values(&derived, &salt);
    let damaged_copy = if damaged {
        let to = damaged_state_path(ws);
        std::fs::rename(&state_path, &to)
            .with_context(|| format!("keeping the damaged state file as {}", to.display()))?;
        Some(format!("{}.damaged", shown(STATE_FILE)))
    } else {
        None
    };
    state.write_new(&state_path)?;
    Ok(RebuildOutcome {
        cluster_id,
        nodes_verified: report.nodes.len(),
        damaged_copy,
    })
}
