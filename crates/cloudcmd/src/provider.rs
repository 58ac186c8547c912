//! The CLI side of the provider seam: what `apply`, `status`, `verify`, `recover` and
//! `terminate` need from the infrastructure, as one trait. `cloudcmd` names no provider; the
//! CLI binary hands it one inside a [`Workspace`].
//!
//! A provider keeps its own records (the local provider: `constellation-local/cloud.json` in the
//! workspace) and answers for them: which nodes exist, which run, what each last reported, and
//! the attestation key it recorded for each when it created the node's TPM (the only keys the
//! CLI trusts, as a cloud's shielded-VM API vouches for its vTPMs).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cluster::inventory::{ClusterInfo, NodeInfo};
use cluster::report::NodeReport;
use cluster::Role;

/// One node as its provider sees it now.
#[derive(Debug, Clone)]
pub struct NodeView {
    pub info: NodeInfo,
    /// The node's programs run.
    pub running: bool,
    /// The node's TPM runs.
    pub tpm_running: bool,
    /// The node's report from its current run (`None`: none yet, or only one from before a
    /// restart).
    pub report: Option<NodeReport>,
    /// The node's last report, current or not.
    pub last_report: Option<NodeReport>,
    /// The node's state disk holds cluster state (it was a member at some point).
    pub has_cluster_state: bool,
}

impl std::ops::Deref for NodeView {
    type Target = NodeInfo;
    fn deref(&self) -> &NodeInfo {
        &self.info
    }
}

/// The cluster's infrastructure as its provider sees it now.
#[derive(Debug, Clone)]
pub struct CloudView {
    pub info: ClusterInfo,
    /// The node image the nodes run (a name for messages).
    pub image: String,
    pub nodes: Vec<NodeView>,
}

impl CloudView {
    pub fn node(&self, name: &str) -> Option<&NodeView> {
        self.nodes.iter().find(|n| n.name == name)
    }
    /// The node at `address` (`host` or `host:port`).
    pub fn node_at(&self, address: &str) -> Option<&NodeView> {
        let host = address.split(':').next().unwrap_or_default();
        self.nodes.iter().find(|n| n.address.to_string() == host)
    }
    pub fn control_planes(&self) -> impl Iterator<Item = &NodeView> {
        self.nodes.iter().filter(|n| n.role == Role::ControlPlane)
    }
    /// Control-plane nodes whose programs run.
    pub fn running_control_planes(&self) -> impl Iterator<Item = &NodeView> {
        self.control_planes().filter(|n| n.running)
    }
    /// The cluster endpoint: the first control-plane node.
    pub fn endpoint(&self) -> Option<Ipv4Addr> {
        self.control_planes().next().map(|n| n.address)
    }
}

/// What the owner's config asks the infrastructure to be.
#[derive(Debug, Clone)]
pub struct Wanted {
    pub config: config::Config,
    /// (group name, role, count)
    pub groups: Vec<(String, Role, u32)>,
    /// The init secret whose hash the nodes get as metadata.
    pub init_secret: Vec<u8>,
    /// When set (Ctrl-C), `apply` stops at its next step boundary.
    pub cancel: Option<&'static std::sync::atomic::AtomicBool>,
}

/// A cluster's infrastructure, as the CLI drives it. Synchronous: callers run the slow calls
/// (`apply`, `remove_node`, `destroy`) on a blocking thread.
pub trait Provider: Send + Sync {
    /// The provider's name in the config (`local`).
    fn name(&self) -> &'static str;
    /// Where the provider keeps its records, relative to the workspace (for messages).
    fn records(&self) -> PathBuf;
    /// Whether the workspace holds anything of this provider (records or node folders).
    fn exists(&self) -> bool;
    /// The infrastructure now (`None`: none was created).
    fn view(&self) -> anyhow::Result<Option<CloudView>>;
    /// Writes the state file's infrastructure section from the provider's records.
    fn fill_infrastructure(&self, state: &mut config::state::State) -> anyhow::Result<()>;
    /// Checks `wanted` against what exists (fields a running cluster cannot change are
    /// refused) and returns the nodes it would remove (groups that shrank), highest index
    /// first. Changes nothing.
    fn plan(&self, wanted: &Wanted) -> anyhow::Result<Vec<NodeInfo>>;
    /// Creates, restarts and records nodes until the infrastructure is as wanted (except for
    /// surplus nodes: [`Provider::remove_node`]).
    fn apply(&self, wanted: &Wanted, progress: &mut dyn FnMut(&str)) -> anyhow::Result<()>;
    /// Stops node `name` and deletes it and its state.
    fn remove_node(&self, name: &str) -> anyhow::Result<()>;
    /// Stops every node and deletes the provider's records; returns how many nodes it stopped.
    fn destroy(&self, progress: &mut dyn FnMut(&str)) -> anyhow::Result<usize>;
}

/// A workspace folder (the owner's files) and the provider of its cluster. Dereferences to the
/// folder's path.
#[derive(Clone)]
pub struct Workspace {
    dir: PathBuf,
    pub provider: Arc<dyn Provider>,
}

impl std::fmt::Debug for Workspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workspace")
            .field("dir", &self.dir)
            .field("provider", &self.provider.name())
            .finish()
    }
}

impl Workspace {
    pub fn new(dir: impl Into<PathBuf>, provider: Arc<dyn Provider>) -> Self {
        Workspace {
            dir: dir.into(),
            provider,
        }
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl std::ops::Deref for Workspace {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.dir
    }
}

impl AsRef<Path> for Workspace {
    fn as_ref(&self) -> &Path {
        &self.dir
    }
}
