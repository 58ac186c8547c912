//! Detached process trees. Each node (and each node's swtpm) runs in its own process group, so
//! it outlives the CLI that started it and can be stopped as a whole.
//!
//! A pid alone can be reused after a process ends; a [`ProcessRecord`] also keeps the process's
//! start time (from `/proc/<pid>/stat`) so that we never signal a stranger.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("starting {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("opening log file {path}")]
    Log {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("process group {pid} did not stop within {secs} s even after SIGKILL")]
    WontDie { pid: u32, secs: u64 },
}

/// Identifies one running process: pid plus its start time in clock ticks since boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    pub pid: u32,
    pub start_time: u64,
}

/// State and start time from `/proc/<pid>/stat`; `None` if there is no such process.
fn stat(pid: u32) -> Option<(char, u64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces: parse after it.
    let rest = &s[s.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

impl ProcessRecord {
    pub fn of(pid: u32) -> Option<Self> {
        stat(pid).map(|(_, start_time)| Self { pid, start_time })
    }

    /// Running (not a zombie) and still the same process.
    pub fn is_alive(&self) -> bool {
        matches!(stat(self.pid), Some((state, start)) if state != 'Z' && state != 'X' && start == self.start_time)
    }

    /// SIGTERM to the process group, then SIGKILL after `grace`; waits until the leader is gone.
    pub fn stop_group(&self, grace: Duration) -> Result<(), ProcessError> {
        let pgid = Pid::from_raw(self.pid as i32);
        if !self.is_alive() {
            // The leader is gone, but members of its group (e.g. the etcd of a killed node)
            // may live on. Linux does not hand out a pid that is still in use as a process
            // group id, so unless the pid now belongs to another process, the group is ours.
            let reused = matches!(stat(self.pid), Some((_, start)) if start != self.start_time);
            if !reused {
                let _ = killpg(pgid, Signal::SIGKILL);
            }
            return Ok(());
        }
        let _ = killpg(pgid, Signal::SIGTERM);
        let stopped = self.wait_dead(grace) || {
            let _ = killpg(pgid, Signal::SIGKILL);
            self.wait_dead(KILL_WAIT)
        };
        // Members of the group may outlive the leader a moment: make sure they go too.
        let _ = killpg(pgid, Signal::SIGKILL);
        if stopped {
            Ok(())
        } else {
            Err(ProcessError::WontDie {
                pid: self.pid,
                secs: (grace + KILL_WAIT).as_secs(),
            })
        }
    }

    /// Polls until the process is gone or `limit` passed; `true` if it is gone.
    fn wait_dead(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while !self.gone() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    /// Not alive, and no thread of it still exiting: the leader of a multi-threaded process is
    /// a zombie as soon as its own thread exits, while the other threads may still hold the
    /// process's files and sockets (a port the node's successor needs).
    fn gone(&self) -> bool {
        if self.is_alive() {
            return false;
        }
        match fs::read_dir(format!("/proc/{}/task", self.pid)) {
            Ok(tasks) if stat(self.pid).is_some_and(|(_, start)| start == self.start_time) => {
                tasks.count() <= 1
            }
            _ => true,
        }
    }
}

/// How long a SIGKILLed group leader may take to disappear.
const KILL_WAIT: Duration = Duration::from_secs(5);

impl ProcessRecord {
    /// SIGKILL to this one process; waits until it is gone.
    pub fn kill(&self) -> Result<(), ProcessError> {
        if !self.is_alive() {
            return Ok(());
        }
        let _ = nix::sys::signal::kill(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
        if self.wait_dead(KILL_WAIT) {
            Ok(())
        } else {
            Err(ProcessError::WontDie {
                pid: self.pid,
                secs: KILL_WAIT.as_secs(),
            })
        }
    }
}

/// Live processes (not zombies, not this process) with an argument that is `dir` or a path
/// inside it, also after a `key=` prefix (swtpm's `dir=<path>`); with their command name.
///
/// Every process of a local node (launcher, Bootstrapper, etcd, swtpm) names its node folder, so
/// this finds them even when their record was never saved: an apply killed right after it
/// started them.
pub fn naming_dir(dir: &Path) -> Vec<(ProcessRecord, String)> {
    use std::os::unix::ffi::OsStrExt;
    let dir = dir.as_os_str().as_bytes();
    let inside = |a: &[u8]| {
        a.strip_prefix(dir)
            .is_some_and(|r| r.is_empty() || r[0] == b'/')
    };
    let me = std::process::id();
    let mut out = vec![];
    let Ok(entries) = fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let names = cmdline.split(|b| *b == 0).any(|a| {
            inside(a)
                || a.iter()
                    .position(|b| *b == b'=')
                    .is_some_and(|i| inside(&a[i + 1..]))
        });
        if !names {
            continue;
        }
        if let Some(rec) = ProcessRecord::of(pid).filter(ProcessRecord::is_alive) {
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            out.push((rec, comm.trim().to_string()));
        }
    }
    out
}

/// Starts `cmd` in a new process group with stdin closed and stdout/stderr appended to `log`.
///
/// The child is not waited for: when the caller exits it is adopted by init. Callers that live
/// on (tests) should keep the returned `Child` and reap it after stopping.
pub fn spawn_detached(
    mut cmd: Command,
    log: &Path,
) -> Result<(ProcessRecord, std::process::Child), ProcessError> {
    use std::os::unix::process::CommandExt;
    let program = cmd.get_program().to_string_lossy().into_owned();
    let open = || {
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| ProcessError::Log {
                path: log.display().to_string(),
                source: e,
            })
    };
    cmd.stdin(Stdio::null())
        .stdout(open()?)
        .stderr(open()?)
        .process_group(0);
    let child = cmd.spawn().map_err(|e| ProcessError::Spawn {
        program: program.clone(),
        source: e,
    })?;
    let pid = child.id();
    let rec = ProcessRecord::of(pid).unwrap_or(ProcessRecord { pid, start_time: 0 });
    Ok((rec, child))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spawn_and_stop_group_including_children() {
        let t = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg("sleep 300 & echo $! > child.pid; wait");
        cmd.current_dir(t.path());
        let (rec, mut child) = spawn_detached(cmd, &t.path().join("log")).unwrap();
        assert!(rec.is_alive());
        let pidfile = t.path().join("child.pid");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !pidfile.exists() || fs::read_to_string(&pidfile).unwrap().trim().is_empty() {
            assert!(Instant::now() < deadline, "child never wrote its pid");
            std::thread::sleep(Duration::from_millis(5));
        }
        let grandchild: u32 = fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let gc = ProcessRecord::of(grandchild).unwrap();
        rec.stop_group(Duration::from_secs(5)).unwrap();
        let _ = child.wait();
        let deadline = Instant::now() + Duration::from_secs(5);
        while gc.is_alive() {
            assert!(Instant::now() < deadline, "grandchild survived");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!rec.is_alive());
    }

    #[test]
    fn stop_group_of_a_dead_leader_stops_its_remaining_members() {
        let t = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg("sleep 300 & echo $! > child.pid; wait");
        cmd.current_dir(t.path());
        let (rec, mut child) = spawn_detached(cmd, &t.path().join("log")).unwrap();
        let pidfile = t.path().join("child.pid");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !pidfile.exists() || fs::read_to_string(&pidfile).unwrap().trim().is_empty() {
            assert!(Instant::now() < deadline, "child never wrote its pid");
            std::thread::sleep(Duration::from_millis(5));
        }
        let gc = ProcessRecord::of(
            fs::read_to_string(&pidfile)
                .unwrap()
                .trim()
                .parse()
                .unwrap(),
        )
        .unwrap();
        // The leader dies alone (as a SIGKILLed node does); its child lives on.
        child.kill().unwrap();
        let _ = child.wait();
        assert!(!rec.is_alive() && gc.is_alive());
        rec.stop_group(Duration::from_secs(5)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while gc.is_alive() {
            assert!(Instant::now() < deadline, "the orphaned member survived");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_dead_pid_is_not_alive() {
        let rec = ProcessRecord {
            pid: u32::MAX - 1,
            start_time: 1,
        };
        assert!(!rec.is_alive());
        rec.stop_group(Duration::from_millis(10)).unwrap();
    }
}
