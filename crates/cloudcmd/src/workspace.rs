//! Checks that keep a lost or damaged workspace from leading to a destructive step.
//!
//! The state file says whether the cluster is initialized. When it is missing or unreadable
//! while the nodes belong to a cluster (they report its ID, and their disks hold the
//! measurement salt), `apply` must neither initialize again nor suggest `terminate`: it refuses
//! and says how to restore the file ([`crate::state_rebuild`]). Once the cluster is
//! initialized, `apply` also checks the files the owner must keep: the master secret (present,
//! owner-only, and the one that derives this cluster's ID) and the admin credentials.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::provider::Workspace;
use config::secret::SecretFileError;
use config::state::{State, StateError};

use crate::{shown, ADMIN_CONF_FILE, MASTER_SECRET_FILE, STATE_FILE};

/// Why the workspace cannot be used as it is. The CLI attaches the hint by variant.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("{state} is missing, but the nodes of this workspace belong to an initialized cluster (cluster ID {cluster_id}, reported by {nodes}); refusing to initialize again")]
    StateMissing {
        state: String,
        cluster_id: String,
        nodes: String,
    },
    #[error("{state} cannot be read")]
    StateUnreadable {
        state: String,
        /// Whether nodes of an initialized cluster run in this workspace.
        cluster_running: bool,
        #[source]
        source: StateError,
    },
    #[error("the nodes of this workspace report different cluster IDs ({ids}); refusing to guess")]
    ConflictingClusterIds { ids: String },
    #[error("{path} is missing: the cluster's keys derive from it, and only it can recover the cluster after a full control-plane outage")]
    MasterSecretMissing { path: String },
    #[error("{path} cannot be used")]
    MasterSecretUnreadable {
        path: String,
        #[source]
        source: SecretFileError,
    },
    #[error("{path} is accessible by group or others (mode {mode:04o})")]
    MasterSecretExposed { path: String, mode: u32 },
    #[error("{path} belongs to another cluster: with this cluster's measurement salt it derives cluster ID {derived}, but the cluster's ID is {expected}")]
    MasterSecretForeign {
        path: String,
        derived: String,
        expected: String,
    },
    #[error("{path} is missing: it holds the owner's credentials for the cluster")]
    AdminCredentialsMissing { path: String },
}

/// What the nodes of the workspace say about their cluster: cluster ID → node names.
#[derive(Debug, Default, Clone)]
pub struct Membership {
    pub clusters: BTreeMap<String, Vec<String>>,
    /// Nodes whose disk holds cluster state (a measurement salt) but that report no ID now.
    pub with_cluster_disk: Vec<String>,
}

impl Membership {
    pub fn is_member_of_any(&self) -> bool {
        !self.clusters.is_empty() || !self.with_cluster_disk.is_empty()
    }
}

/// Reads what each node of the local cloud reports (its last self-report, current or not) and
/// whether its disk holds cluster state.
pub fn membership(ws: &Workspace) -> anyhow::Result<Membership> {
    let mut m = Membership::default();
    let Some(cloud) = ws.provider.view()? else {
        return Ok(m);
    };
    for n in &cloud.nodes {
        match n.last_report.as_ref().and_then(|s| s.cluster_id.clone()) {
            Some(id) => m
                .clusters
                .entry(crate::sanitize(&id))
                .or_default()
                .push(n.name.clone()),
            None if n.has_cluster_state => m.with_cluster_disk.push(n.name.clone()),
            None => {}
        }
    }
    Ok(m)
}

/// Loads the state file for `apply`: a missing file is fine only when no node belongs to a
/// cluster; an unreadable one is never silently replaced.
pub fn load_state_for_apply(ws: &Workspace) -> Result<State, anyhow::Error> {
    let path = ws.join(STATE_FILE);
    if path.exists() {
        return State::load(&path).map_err(|source| {
            let cluster_running = membership(ws)
                .map(|m| m.is_member_of_any())
                .unwrap_or(false);
            WorkspaceError::StateUnreadable {
                state: shown(STATE_FILE),
                cluster_running,
                source,
            }
            .into()
        });
    }
    let m = membership(ws)?;
    if m.clusters.len() > 1 {
        return Err(WorkspaceError::ConflictingClusterIds {
            ids: m.clusters.keys().cloned().collect::<Vec<_>>().join(", "),
        }
        .into());
    }
    if let Some((id, nodes)) = m.clusters.iter().next() {
        return Err(WorkspaceError::StateMissing {
            state: shown(STATE_FILE),
            cluster_id: id.clone(),
            nodes: nodes.join(", "),
        }
        .into());
    }
    if !m.with_cluster_disk.is_empty() {
        return Err(WorkspaceError::StateMissing {
            state: shown(STATE_FILE),
            cluster_id: "unknown".into(),
            nodes: m.with_cluster_disk.join(", "),
        }
        .into());
    }
    Ok(State::default())
}

/// For an initialized cluster: the master secret is present, owner-only and derives the
/// cluster's ID from its measurement salt; the admin credentials are present.
pub fn check_owner_files(ws: &Path, state: &State) -> Result<(), WorkspaceError> {
    let Some(expected) = state.cluster_id() else {
        return Ok(());
    };
    let path = ws.join(MASTER_SECRET_FILE);
    let loaded = match config::secret::read(&path) {
        Ok(l) => l,
        Err(SecretFileError::NotFound { .. }) => {
            return Err(WorkspaceError::MasterSecretMissing {
                path: shown(MASTER_SECRET_FILE),
            })
        }
        Err(source) => {
            return Err(WorkspaceError::MasterSecretUnreadable {
                path: shown(MASTER_SECRET_FILE),
                source,
            })
        }
    };
    if let Some(w) = loaded.warning {
        return Err(WorkspaceError::MasterSecretExposed {
            path: shown(MASTER_SECRET_FILE),
            mode: w.mode & 0o7777,
        });
    }
    let derived = loaded
        .secret
        .measurement_secret()
        .map_err(|e| WorkspaceError::MasterSecretUnreadable {
            path: shown(MASTER_SECRET_FILE),
            source: SecretFileError::Key(e),
        })?
        .cluster_id(&state.cluster_values.measurement_salt.0);
    if derived.as_bytes() != expected.as_bytes() {
        return Err(WorkspaceError::MasterSecretForeign {
            path: shown(MASTER_SECRET_FILE),
            derived: derived.to_hex(),
            expected: expected.to_hex(),
        });
    }
    if !ws.join(ADMIN_CONF_FILE).exists() {
        return Err(WorkspaceError::AdminCredentialsMissing {
            path: shown(ADMIN_CONF_FILE),
        });
    }
    Ok(())
}

/// Path of the copy a damaged state file is moved to before it is rebuilt.
pub fn damaged_state_path(ws: &Path) -> PathBuf {
    ws.join(format!("{STATE_FILE}.damaged"))
}
