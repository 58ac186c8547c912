//! Supervised long-running processes of a node (etcd, control-plane components, kubelet): spawned
//! inside the node's namespaces with their output in a log file, checked for unexpected exits,
//! stopped with SIGTERM then SIGKILL.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// A supervised process failed to start or died.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot start {name}: {source}")]
    Spawn {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open log {path}: {source}")]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{name} exited ({status}); last log lines: {log}")]
    Exited {
        name: String,
        status: String,
        log: String,
    },
}

/// One running process.
#[derive(Debug)]
pub struct Supervised {
    name: String,
    child: Option<tokio::process::Child>,
    log: PathBuf,
}

/// The last `n` lines of a log file, joined with " | ".
pub fn log_tail(path: &Path, n: usize) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().rev().take(n).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
}

impl Supervised {
    /// Spawns `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(
        name: &str,
        mut cmd: tokio::process::Command,
        log: &Path,
    ) -> Result<Supervised, ProcessError> {
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .map_err(|source| ProcessError::Log {
                    path: log.to_path_buf(),
                    source,
                })
        };
        cmd.stdin(std::process::Stdio::null())
            .stdout(open()?)
            .stderr(open()?)
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(|source| ProcessError::Spawn {
            name: name.to_owned(),
            source,
        })?;
        Ok(Supervised {
            name: name.to_owned(),
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn log(&self) -> &Path {
        &self.log
    }
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// `Err(Exited)` when the process is no longer running.
    pub fn check(&mut self) -> Result<(), ProcessError> {
        let status: Option<ExitStatus> = match self.child.as_mut() {
            None => None,
            Some(c) => match c.try_wait() {
                Ok(None) => return Ok(()),
                Ok(Some(s)) => Some(s),
                Err(_) => None,
            },
        };
        Err(ProcessError::Exited {
            name: self.name.clone(),
            status: status.map_or_else(|| "stopped".to_owned(), |s| s.to_string()),
            log: log_tail(&self.log, 8),
        })
    }

    /// SIGTERM, then SIGKILL after `grace`; idempotent.
    pub async fn stop(&mut self, grace: Duration) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            }
            if tokio::time::timeout(grace, child.wait()).await.is_err() {
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
        }
    }
}

impl Supervised {
    /// SIGKILL without waiting (for drop paths); the child is reaped by tokio.
    pub fn kill_now(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.kill_now();
    }
}
