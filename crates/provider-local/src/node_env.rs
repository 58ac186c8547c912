//! The local provider's node environment (`cluster::env`): what a local node's Bootstrapper
//! gets from the machine it runs on.
//!
//! * Metadata: the local cloud's state file (`cloud.json`), which the provider keeps current
//!   (self, peers, endpoint, init-secret hash, the attestation keys it recorded). The parsed
//!   file is kept until the file changes (the provider replaces it atomically: a new inode,
//!   size or modification time), since the JoinService consults it on every handshake.
//! * State disk: the node's folder. Its UUID is `disk.uuid`; `disk.keycheck` (an HKDF of the
//!   key, never the key) stands in for a LUKS key slot. Not encrypted: a software TPM proves
//!   integrity of what was measured, not confidentiality from the host.
//! * Components: the launcher's measured copies next to the running program.
//! * Reports: `status.json` in the node's folder, read by the CLI through the provider.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use cluster::env::{
    ComponentError, Components, DiskError, Metadata, MetadataError, NodeEnvironment, Reporter,
    StateDisk,
};
use cluster::inventory::ClusterInfo;
use cluster::report::NodeReport;

use crate::cloud::CloudState;

/// The node's self-report inside its folder.
pub const REPORT_FILE: &str = "status.json";

/// What identifies one version of the file.
type Stamp = (u64, u64, Option<SystemTime>);
/// The last parsed version of the file.
type Cached = Option<(Stamp, Arc<ClusterInfo>)>;

/// Instance metadata from `cloud.json`.
#[derive(Debug, Clone)]
pub struct LocalMetadata {
    path: PathBuf,
    cache: Arc<Mutex<Cached>>,
}

impl LocalMetadata {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            cache: Arc::default(),
        }
    }
}

impl Metadata for LocalMetadata {
    fn cluster(&self) -> Result<Arc<ClusterInfo>, MetadataError> {
        use std::os::unix::fs::MetadataExt;
        let stamp = fs::metadata(&self.path)
            .map(|m| (m.ino(), m.len(), m.modified().ok()))
            .ok();
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let (Some(stamp), Some((cached, info))) = (stamp, cache.as_ref()) {
            if stamp == *cached {
                return Ok(info.clone());
            }
        }
        let unavailable =
            |source: Box<dyn std::error::Error + Send + Sync>| MetadataError::Unavailable {
                location: self.path.display().to_string(),
                source,
            };
        let state = CloudState::load(&self.path)
            .map_err(|e| unavailable(Box::new(e)))?
            .ok_or_else(|| unavailable("the file does not exist".into()))?;
        let info = Arc::new(state.info());
        *cache = stamp.map(|s| (s, info.clone()));
        Ok(info)
    }
}

/// The node's folder as its state disk.
#[derive(Debug, Clone)]
pub struct LocalDisk {
    dir: PathBuf,
}

impl LocalDisk {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LocalDisk { dir: dir.into() }
    }
    fn uuid_path(&self) -> PathBuf {
        self.dir.join("disk.uuid")
    }
    fn key_check_path(&self) -> PathBuf {
        self.dir.join("disk.keycheck")
    }
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    config::atomic::replace(path, bytes, mode).map_err(std::io::Error::other)
}

impl StateDisk for LocalDisk {
    /// Created on first use (random, version-4 layout, lowercase).
    fn uuid(&self) -> Result<String, DiskError> {
        if let Ok(s) = fs::read_to_string(self.uuid_path()) {
            let s = s.trim().to_string();
            if !s.is_empty() {
                return Ok(s);
            }
        }
        let mut b = [0u8; 16];
        rand::Rng::fill(&mut rand::thread_rng(), &mut b[..]);
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h = hex::encode(b);
        let uuid = format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        );
        write(&self.uuid_path(), uuid.as_bytes(), 0o644).map_err(DiskError::Io)?;
        Ok(uuid)
    }

    fn open(&self, key: &[u8]) -> Result<(), DiskError> {
        let check = hex::encode(
            keys::hkdf_sha256(key, &[], b"constellation-local-disk-keycheck", 32)
                .map_err(|_| DiskError::Derive)?
                .expose(),
        );
        match fs::read_to_string(self.key_check_path()) {
            Ok(existing) if existing.trim() == check => Ok(()),
            Ok(_) => Err(DiskError::WrongKey),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                write(&self.key_check_path(), check.as_bytes(), 0o600).map_err(DiskError::Io)
            }
            Err(e) => Err(DiskError::Io(e)),
        }
    }
}

/// The launcher's measured copies, next to the running program (the Bootstrapper runs from
/// the launcher's run folder).
#[derive(Debug, Clone, Default)]
pub struct LocalComponents;

impl Components for LocalComponents {
    fn path(&self, name: &str) -> Result<PathBuf, ComponentError> {
        let exe = std::env::current_exe().map_err(ComponentError::Locate)?;
        let dir = exe
            .parent()
            .ok_or_else(|| ComponentError::Locate(std::io::Error::other("no folder")))?;
        let path = dir.join(name);
        if !path.is_file() {
            return Err(ComponentError::Missing {
                name: name.into(),
                path,
            });
        }
        Ok(path)
    }
}

/// `status.json` in the node's folder.
#[derive(Debug, Clone)]
pub struct LocalReporter {
    dir: PathBuf,
}

impl Reporter for LocalReporter {
    fn report(&self, report: &NodeReport) -> Result<(), std::io::Error> {
        let bytes = serde_json::to_vec_pretty(report).map_err(std::io::Error::other)?;
        write(&self.dir.join(REPORT_FILE), &bytes, 0o644)
    }
}

/// The report a local node wrote into its folder (`None`: none yet, or unreadable).
pub fn read_report(node_dir: &Path) -> Option<NodeReport> {
    fs::read(node_dir.join(REPORT_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

/// The environment of the local node with folder `dir`, metadata from `cloud`.
pub fn environment(cloud: &Path, dir: &Path) -> NodeEnvironment {
    NodeEnvironment {
        metadata: Arc::new(LocalMetadata::new(cloud)),
        disk: Arc::new(LocalDisk::new(dir)),
        components: Arc::new(LocalComponents),
        reporter: Arc::new(LocalReporter { dir: dir.into() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_disk_opens_only_with_its_key() {
        let t = tempfile::tempdir().unwrap();
        let d = LocalDisk::new(t.path());
        let uuid = d.uuid().unwrap();
        assert_eq!(d.uuid().unwrap(), uuid);
        assert_eq!((uuid.len(), &uuid[14..15]), (36, "4"));
        d.open(b"first key").unwrap();
        d.open(b"first key").unwrap();
        assert!(matches!(d.open(b"other key"), Err(DiskError::WrongKey)));
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(t.path().join("disk.keycheck"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
