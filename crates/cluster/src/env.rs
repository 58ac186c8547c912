//! The node side of the provider seam: what the node daemon (the Bootstrapper) needs from
//! the machine it runs on, as four small traits. A provider implements them (the local
//! provider: `cloud.json`, a key-check file, the launcher's measured copies, `status.json`);
//! the node binary is the only place that wires a concrete environment.
//!
//! All four are synchronous: implementations read small files or local state. Async callers
//! use `spawn_blocking` or accept the short block.

use std::path::PathBuf;
use std::sync::Arc;

use crate::inventory::ClusterInfo;
use crate::report::NodeReport;

/// Instance metadata: the cluster as the provider knows it right now (self, peers, endpoint,
/// init-secret hash, the attestation keys the provider vouches for).
pub trait Metadata: Send + Sync {
    fn cluster(&self) -> Result<Arc<ClusterInfo>, MetadataError>;
}

/// The node's state disk: opened with a key derived from the master secret.
pub trait StateDisk: Send + Sync {
    /// The disk's UUID (not secret; readable before unlocking, as a LUKS UUID).
    fn uuid(&self) -> Result<String, DiskError>;
    /// Binds the disk to `key` on first use; afterwards checks that `key` is the one.
    fn open(&self, key: &[u8]) -> Result<(), DiskError>;
}

/// The measured components of the node image (etcd, and later the Kubernetes binaries).
pub trait Components: Send + Sync {
    /// The path of the measured copy of component `name`, to run.
    fn path(&self, name: &str) -> Result<PathBuf, ComponentError>;
}

/// Where the node's self-report goes (what `constellation status` shows).
pub trait Reporter: Send + Sync {
    fn report(&self, report: &NodeReport) -> Result<(), std::io::Error>;
}

/// Everything a node daemon gets from its provider.
#[derive(Clone)]
pub struct NodeEnvironment {
    pub metadata: Arc<dyn Metadata>,
    pub disk: Arc<dyn StateDisk>,
    pub components: Arc<dyn Components>,
    pub reporter: Arc<dyn Reporter>,
}

impl std::fmt::Debug for NodeEnvironment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeEnvironment")
    }
}

/// Metadata could not be read (transient: the node retries).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    #[error("instance metadata at {location} is unavailable")]
    Unavailable {
        location: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    NoSuchNode(#[from] crate::inventory::NoSuchNode),
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiskError {
    #[error("the state-disk key does not open this node's disk")]
    WrongKey,
    #[error("deriving the key check failed")]
    Derive,
    #[error("reading or writing the state disk failed")]
    Io(#[source] std::io::Error),
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ComponentError {
    #[error(
        "no measured copy of component {name} at {path} (was this node started by its launcher?)"
    )]
    Missing { name: String, path: PathBuf },
    #[error("locating the measured components failed")]
    Locate(#[source] std::io::Error),
}
