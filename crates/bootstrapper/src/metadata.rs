//! Instance metadata for a local node: read from the local cloud's state file, which the
//! provider keeps current (self, peers, endpoint, init-secret hash).
//!
//! The JoinService consults it on every handshake (which attestation keys the provider
//! vouches for, which node has this key), so the parsed file is kept until the file changes
//! (the provider replaces it atomically: a new inode, size or modification time).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use provider_local::cloud::{CloudState, NodeRecord};

/// What identifies one version of the file.
type Stamp = (u64, u64, Option<SystemTime>);
/// The last parsed version of the file.
type Cached = Option<(Stamp, Arc<CloudState>)>;

#[derive(Debug, Clone)]
pub struct Metadata {
    path: PathBuf,
    cache: Arc<Mutex<Cached>>,
}

impl Metadata {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            cache: Arc::default(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn load(&self) -> anyhow::Result<Arc<CloudState>> {
        use std::os::unix::fs::MetadataExt;
        let stamp = std::fs::metadata(&self.path)
            .map(|m| (m.ino(), m.len(), m.modified().ok()))
            .ok();
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let (Some(stamp), Some((cached, state))) = (stamp, cache.as_ref()) {
            if stamp == *cached {
                return Ok(state.clone());
            }
        }
        let state = Arc::new(
            CloudState::load(&self.path)?
                .with_context(|| format!("no local cloud state at {}", self.path.display()))?,
        );
        *cache = stamp.map(|s| (s, state.clone()));
        Ok(state)
    }

    pub fn self_node(&self, name: &str) -> anyhow::Result<NodeRecord> {
        Ok(self.load()?.node(name)?.clone())
    }

    /// This node's record, waiting out transient errors (the provider's file briefly missing
    /// or unreadable): retries with backoff from 50 ms doubling to 2 s, for as long as it
    /// takes, logging each new error. A node never exits because its metadata hiccupped.
    pub async fn self_node_retrying(&self, name: &str) -> NodeRecord {
        let mut pause = Duration::from_millis(50);
        let mut last = String::new();
        loop {
            match self.self_node(name) {
                Ok(n) => return n,
                Err(e) => {
                    let msg = format!("{e:#}");
                    if msg != last {
                        tracing::warn!("metadata unavailable, retrying: {msg}");
                        last = msg;
                    }
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }

    pub fn init_secret_hash(&self) -> anyhow::Result<String> {
        Ok(self.load()?.init_secret_hash.clone())
    }
}
