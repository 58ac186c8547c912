//! What the Kubernetes end-to-end tests share: a workspace whose cluster is terminated when the
//! test ends (also on failure), the CLI run in it with Kubernetes on, and the preconditions.
#![allow(dead_code)] // each test file uses a part

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_constellation");

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The Kubernetes build's `bin` folder, or `None` after printing why the test is skipped (not
/// root, or no build).
pub fn kube_bin_or_skip() -> Option<PathBuf> {
    if !is_root() {
        eprintln!("SKIPPED: Kubernetes nodes need root (network namespaces)");
        return None;
    }
    let (bin, _) = provider_local::image::kube_build();
    if bin.is_none() {
        eprintln!("SKIPPED: the Kubernetes build is missing (scripts/install-kubernetes.sh)");
    }
    bin
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|u| u.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// A workspace; its cluster is terminated when dropped.
pub struct Cluster {
    pub dir: tempfile::TempDir,
}

impl Cluster {
    pub fn new(prefix: &str) -> Cluster {
        Cluster {
            dir: tempfile::Builder::new().prefix(prefix).tempdir().unwrap(),
        }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    /// `constellation -C <ws> …` with Kubernetes on and `$KUBECONFIG` inside the workspace.
    pub fn constellation(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("-C")
            .arg(self.path())
            .args(args)
            .env("KUBECONFIG", self.path().join("merged-kubeconfig"))
            .env_remove("CONSTELLATION_KUBERNETES")
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    }
    /// As [`Cluster::constellation`]; panics with the exit status and both streams on failure.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.constellation(args);
        assert!(
            o.status.success(),
            "constellation {} ({}):\n{}{}",
            args.join(" "),
            o.status,
            text(&o.stdout),
            text(&o.stderr)
        );
        text(&o.stdout)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.constellation(&["terminate", "-y"]);
    }
}
