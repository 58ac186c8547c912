//! Instance metadata for a local node: read from the local cloud's state file, which the
//! provider keeps current (self, peers, endpoint, init-secret hash).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use provider_local::cloud::{CloudState, NodeRecord, Role};

#[derive(Debug, Clone)]
pub struct Metadata {
    path: PathBuf,
}

impl Metadata {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn load(&self) -> anyhow::Result<CloudState> {
        CloudState::load(&self.path)?
            .with_context(|| format!("no local cloud state at {}", self.path.display()))
    }

    pub fn self_node(&self, name: &str) -> anyhow::Result<NodeRecord> {
        Ok(self.load()?.node(name)?.clone())
    }

    pub fn init_secret_hash(&self) -> anyhow::Result<String> {
        Ok(self.load()?.init_secret_hash)
    }

    /// Addresses of all control-plane nodes except `except` (JoinService endpoints).
    pub fn control_planes(&self, except: &str) -> anyhow::Result<Vec<Ipv4Addr>> {
        Ok(self
            .load()?
            .nodes
            .iter()
            .filter(|n| n.role == Role::ControlPlane && n.name != except)
            .map(|n| n.address)
            .collect())
    }
}
