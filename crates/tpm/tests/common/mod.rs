#![allow(dead_code)]

use tempfile::TempDir;
use tpm::{Swtpm, SwtpmConfig};

/// One swtpm in its own temporary directory. Fields drop in order:
/// the process is stopped before its directory is removed.
pub struct TestTpm {
    pub swtpm: Swtpm,
    pub dir: TempDir,
}

impl TestTpm {
    pub fn start() -> TestTpm {
        let dir = tempfile::tempdir().unwrap();
        let swtpm = Swtpm::spawn_owned(&config(&dir)).unwrap();
        TestTpm { swtpm, dir }
    }

    pub fn open(&self) -> tpm::Tpm {
        tpm::Tpm::open(&self.swtpm.tcti()).unwrap()
    }
}

pub fn config(dir: &TempDir) -> SwtpmConfig {
    SwtpmConfig::new(dir.path().join("tpm"))
}
