//! One lifecycle command per workspace at a time.
//!
//! `apply`, `create`, `init`, `terminate`, `recover`, `mini up/down` and `state rebuild` take an
//! exclusive `flock` on the workspace folder itself (the lock goes away with the process, also
//! when it is killed: no stale lock to clean up). Who holds it is written, for the message of
//! the command that is refused, to `.constellation.lock` (removed when the holder ends).

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

pub const LOCK_INFO_FILE: &str = ".constellation.lock";

/// Held for the duration of a command.
pub struct WorkspaceLock {
    _dir: Flock<File>,
    info: PathBuf,
}

impl Drop for WorkspaceLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.info);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another constellation command is working on this workspace ({holder})")]
    Held { holder: String },
    #[error("locking the workspace {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Takes the workspace lock for `command`, or says who holds it.
pub fn acquire(ws: &Path, command: &str) -> Result<WorkspaceLock, LockError> {
    let io = |source| LockError::Io {
        path: ws.to_path_buf(),
        source,
    };
    let dir = File::open(ws).map_err(io)?;
    let locked = match Flock::lock(dir, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
            let holder = std::fs::read_to_string(ws.join(LOCK_INFO_FILE))
                .map(|s| cloudcmd::sanitize(s.trim()))
                .ok()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "holder unknown".into());
            return Err(LockError::Held { holder });
        }
        Err((_, e)) => return Err(io(std::io::Error::from(e))),
    };
    let info = ws.join(LOCK_INFO_FILE);
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // Best effort: the lock itself is the flock, this file only names the holder.
    let _ = std::fs::write(
        &info,
        format!(
            "`constellation {command}`, pid {}, started at unix time {started}",
            std::process::id()
        ),
    );
    Ok(WorkspaceLock { _dir: locked, info })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_and_named() {
        let d = tempfile::tempdir().unwrap();
        let first = acquire(d.path(), "apply").unwrap();
        match acquire(d.path(), "terminate") {
            Err(LockError::Held { holder }) => {
                assert!(holder.contains("`constellation apply`"), "{holder}");
                assert!(holder.contains(&std::process::id().to_string()), "{holder}");
            }
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("second lock taken"),
        }
        drop(first);
        assert!(!d.path().join(LOCK_INFO_FILE).exists());
        let _again = acquire(d.path(), "terminate").unwrap();
    }
}
