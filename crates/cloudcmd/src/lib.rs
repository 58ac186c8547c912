//! The cluster lifecycle as the CLI runs it, provider by provider (today: `local`).
//!
//! * [`apply`]: phases `infrastructure` → `init`, each skipped when already done, so an
//!   interrupted run is completed by running it again: nodes are never created twice, an
//!   initialized cluster is never initialized again, and the master secret is never replaced.
//! * [`recover`]: gives restarted control-plane nodes their keys back from the master secret
//!   after a full control-plane outage.
//! * [`status`]: what every node reports, plus whether its processes are alive.
//! * [`verify`]: a fresh attestation from each node, checked against the measurements and the
//!   cluster ID (PCR 15).
//! * [`terminate`]: stops everything and removes infrastructure state and admin credentials;
//!   keeps config and master secret.

#![forbid(unsafe_code)]

pub mod admin;
pub mod apply;
mod binding;
pub mod cluster_store;
/// The admin credentials file's layout (written by the first control-plane node).
pub mod provider;
pub mod recover;
pub mod state_rebuild;
pub mod status;
pub mod verify;
pub mod workspace;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub use provider::{Provider, Workspace};

pub const CONFIG_FILE: &str = "constellation-conf.yaml";
pub const STATE_FILE: &str = "constellation-state.yaml";
pub const MASTER_SECRET_FILE: &str = "constellation-mastersecret.json";
pub const ADMIN_CONF_FILE: &str = "constellation-admin.conf";
/// The owner's credentials for the cluster state (etcd, control-plane CA); with Kubernetes,
/// `constellation-admin.conf` is the Kubernetes admin's kubeconfig instead.
pub const OWNER_CONF_FILE: &str = "constellation-owner.conf";

static DISPLAY_WORKSPACE: OnceLock<PathBuf> = OnceLock::new();

/// Sets the workspace prefix that messages put before workspace files (the `-C` folder as the
/// user typed it), as the Go CLI does. Set once, by the CLI, before any command runs.
pub fn set_display_workspace(prefix: &Path) {
    let _ = DISPLAY_WORKSPACE.set(prefix.to_path_buf());
}

/// A workspace file's name as messages show it: with the `-C` prefix when one was given.
pub fn shown(name: &str) -> String {
    match DISPLAY_WORKSPACE.get() {
        Some(p) if p != Path::new(".") => p.join(name).display().to_string(),
        _ => name.to_string(),
    }
}

/// Strips control characters (terminal escapes, newlines) from a string a node wrote, before it
/// is printed: a node must not be able to rewrite the owner's terminal or forge output lines.
pub fn sanitize(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).collect()
}

/// Progress lines for long work (the CLI prints them; tests collect them).
pub trait Progress {
    fn step(&mut self, msg: &str);
}

impl<F: FnMut(&str)> Progress for F {
    fn step(&mut self, msg: &str) {
        self(msg)
    }
}

/// Why [`dial_attested`] gave up.
pub(crate) enum DialError {
    /// The node answered but its attestation was rejected: retrying cannot help.
    Rejected(atls::Error),
    /// Nothing usable answered before the deadline (the last error).
    Unreachable(atls::Error),
}

/// Dials a node over aTLS until it answers or `deadline` passes (a node that was just started
/// needs a moment), with backoff from 20 ms doubling to 500 ms. A rejected attestation ends
/// the attempts at once. Only a verified channel comes back: callers send secrets on it.
pub(crate) async fn dial_attested(
    addr: &str,
    cfg: &atls::client::ClientConfig,
    deadline: std::time::Instant,
) -> Result<(tonic::transport::Channel, Option<atls::VerifiedAttestation>), DialError> {
    let mut backoff = std::time::Duration::from_millis(20);
    loop {
        match atls::client::connect(addr, cfg).await {
            Ok(c) => return Ok(c),
            Err(e @ atls::Error::PeerRejected(_)) => return Err(DialError::Rejected(e)),
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::debug!("{addr} not ready yet: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_millis(500));
            }
            Err(e) => return Err(DialError::Unreachable(e)),
        }
    }
}

/// `terminate` found nothing to terminate.
#[derive(Debug, thiserror::Error)]
#[error("no cluster in this workspace (no {cloud}, {state} or {admin})")]
pub struct NoCluster {
    pub cloud: String,
    pub state: String,
    pub admin: String,
}

impl NoCluster {
    /// `records`: where the provider keeps its records, relative to the workspace.
    pub fn new(records: &Path) -> Self {
        Self {
            cloud: shown(&records.display().to_string()),
            state: shown(STATE_FILE),
            admin: shown(ADMIN_CONF_FILE),
        }
    }
}

/// Whether the workspace's cluster runs Kubernetes: its admin kubeconfig is the Kubernetes
/// admin's, not the owner's cluster-state credentials.
pub fn runs_kubernetes(ws: &Path) -> bool {
    match (
        std::fs::read(ws.join(ADMIN_CONF_FILE)),
        std::fs::read(ws.join(OWNER_CONF_FILE)),
    ) {
        (Ok(a), Ok(o)) => a != o,
        _ => false,
    }
}

/// Whether the workspace holds anything `terminate` would remove.
pub fn has_cluster(ws: &Workspace) -> bool {
    ws.provider.exists()
        || ws.join(STATE_FILE).exists()
        || ws.join(ADMIN_CONF_FILE).exists()
        || ws.join(OWNER_CONF_FILE).exists()
}

/// Stops all nodes and TPMs; removes the local cloud, admin credentials and state file. A
/// workspace without any of them is a [`NoCluster`] error.
pub fn terminate(ws: &Workspace, progress: &mut dyn Progress) -> anyhow::Result<usize> {
    if !has_cluster(ws) {
        return Err(NoCluster::new(&ws.provider.records()).into());
    }
    let n = ws.provider.destroy(&mut |m: &str| progress.step(m))?;
    for f in [ADMIN_CONF_FILE, OWNER_CONF_FILE, STATE_FILE] {
        match std::fs::remove_file(ws.join(f)) {
            Ok(()) => progress.step(&format!("removed {}", shown(f))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(anyhow::Error::new(e).context(format!("removing {}", shown(f)))),
        }
    }
    Ok(n)
}
