//! Supervised long-running processes of a node (etcd, control-plane components, kubelet,
//! kube-proxy): spawned inside the node's namespaces with their output appended to a log file,
//! restarted when they exit (up to a budget, with a short backoff; kube-controller-manager and
//! kube-scheduler exit by design when they lose their leader lease), stopped with SIGTERM then
//! SIGKILL.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::sync::watch;

/// A supervised process failed to start or died for good.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot open log {path}: {source}")]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{name} exited ({status}) after {restarts} restarts; last log lines: {log}")]
    Exited {
        name: String,
        status: String,
        restarts: u32,
        log: String,
    },
}

/// Builds the command line of one run (called again for every restart).
pub type CommandFactory = Box<dyn Fn() -> tokio::process::Command + Send + Sync>;

#[derive(Debug, Default)]
struct State {
    pid: Option<u32>,
    restarts: u32,
    last_exit: Option<String>,
    finished: bool,
}

/// One supervised process (restarted on exit until its budget is used up).
#[derive(Debug)]
pub struct Supervised {
    name: String,
    log: PathBuf,
    state: Arc<Mutex<State>>,
    stop: watch::Sender<Option<Duration>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// The last `n` lines of a log file, joined with " | ".
pub fn log_tail(path: &Path, n: usize) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().rev().take(n).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    // a poisoned lock only means a panic elsewhere; the state itself stays consistent
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl Supervised {
    /// Starts `factory()` with stdout and stderr appended to `log`; restarts it up to
    /// `max_restarts` times when it exits.
    pub fn spawn(
        name: &str,
        factory: CommandFactory,
        log: &Path,
        max_restarts: u32,
    ) -> Result<Supervised, ProcessError> {
        let open = {
            let log = log.to_path_buf();
            move || {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .map_err(|source| ProcessError::Log {
                        path: log.clone(),
                        source,
                    })
            }
        };
        // fail early on an unusable log folder
        drop(open()?);
        let state = Arc::new(Mutex::new(State::default()));
        let (stop, mut stop_rx) = watch::channel(None::<Duration>);
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let mut cmd = factory();
                let (Ok(out), Ok(err)) = (open(), open()) else {
                    lock(&st).last_exit = Some("cannot open log".into());
                    break;
                };
                cmd.stdin(std::process::Stdio::null())
                    .stdout(out)
                    .stderr(err)
                    .kill_on_drop(true);
                let mut child = match cmd.spawn() {
                    Ok(c) => c,
                    Err(e) => {
                        lock(&st).last_exit = Some(format!("cannot start: {e}"));
                        break;
                    }
                };
                lock(&st).pid = child.id();
                tokio::select! {
                    biased;
                    _ = stop_rx.changed() => {
                        let grace = (*stop_rx.borrow()).unwrap_or_default();
                        if let Some(pid) = child.id() {
                            let sig = if grace.is_zero() { Signal::SIGKILL } else { Signal::SIGTERM };
                            let _ = kill(Pid::from_raw(pid as i32), sig);
                        }
                        if tokio::time::timeout(grace.max(Duration::from_millis(1)), child.wait()).await.is_err() {
                            let _ = child.start_kill();
                            let _ = child.wait().await;
                        }
                        lock(&st).pid = None;
                        break;
                    }
                    status = child.wait() => {
                        let mut s = lock(&st);
                        s.pid = None;
                        s.last_exit = Some(status.map_or_else(|e| e.to_string(), |s| s.to_string()));
                        if s.restarts >= max_restarts {
                            break;
                        }
                        s.restarts += 1;
                    }
                }
                // backoff before the restart, unless a stop arrives meanwhile
                tokio::select! {
                    biased;
                    _ = stop_rx.changed() => break,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
            lock(&st).finished = true;
        });
        Ok(Supervised {
            name: name.to_owned(),
            log: log.to_path_buf(),
            state,
            stop,
            task: Some(task),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn log(&self) -> &Path {
        &self.log
    }
    /// The current process id (none between a crash and its restart, or after a stop).
    pub fn pid(&self) -> Option<u32> {
        lock(&self.state).pid
    }
    /// How often the process was restarted after exiting.
    pub fn restarts(&self) -> u32 {
        lock(&self.state).restarts
    }

    /// `Err(Exited)` when the process is gone for good (restart budget used up, or stopped).
    pub fn check(&mut self) -> Result<(), ProcessError> {
        let s = lock(&self.state);
        if !s.finished {
            return Ok(());
        }
        Err(ProcessError::Exited {
            name: self.name.clone(),
            status: s.last_exit.clone().unwrap_or_else(|| "stopped".into()),
            restarts: s.restarts,
            log: log_tail(&self.log, 8),
        })
    }

    /// SIGTERM, then SIGKILL after `grace`; no restart afterwards. Idempotent.
    pub async fn stop(&mut self, grace: Duration) {
        let _ = self.stop.send(Some(grace.max(Duration::from_millis(1))));
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// SIGKILL now and no restart (a crash, or a drop path); does not wait.
    pub fn kill_now(&mut self) {
        if let Some(pid) = self.pid() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        let _ = self.stop.send(Some(Duration::ZERO));
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.kill_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn sh(script: &'static str) -> CommandFactory {
        Box::new(move || {
            let mut c = tokio::process::Command::new("sh");
            c.args(["-c", script]);
            c
        })
    }

    async fn until_finished(p: &mut Supervised) -> ProcessError {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Err(e) = p.check() {
                return e;
            }
            assert!(Instant::now() < deadline, "{} still supervised", p.name());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_crashing_process_is_restarted_until_its_budget_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("crash.log");
        let mut p = Supervised::spawn("crasher", sh("echo run; exit 3"), &log, 2).unwrap();
        let err = until_finished(&mut p).await;
        assert!(
            matches!(&err, ProcessError::Exited { restarts: 2, status, .. } if status.contains("3")),
            "{err}"
        );
        // three runs: the first and two restarts, all logged
        assert_eq!(
            std::fs::read_to_string(&log)
                .unwrap()
                .matches("run")
                .count(),
            3
        );
    }

    #[tokio::test]
    async fn stop_ends_a_running_process_without_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Supervised::spawn(
            "sleeper",
            sh("exec sleep 100"),
            &dir.path().join("s.log"),
            5,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while p.pid().is_none() {
            assert!(Instant::now() < deadline, "no pid");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let pid = p.pid().unwrap();
        p.stop(Duration::from_secs(5)).await;
        assert_eq!(p.restarts(), 0);
        assert!(matches!(
            p.check(),
            Err(ProcessError::Exited { restarts: 0, .. })
        ));
        assert!(
            !Path::new(&format!("/proc/{pid}/cmdline")).exists() || {
                // a reused pid would be some other program
                !std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                    .unwrap_or_default()
                    .contains("sleep")
            }
        );
    }
}
