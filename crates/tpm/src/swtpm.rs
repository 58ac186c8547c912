//! `swtpm` processes: one software TPM 2.0 per node, with its state in the node's directory.
//!
//! # Transport
//! Debian 12's `libtss2-tcti-swtpm` 3.2.1 can talk to swtpm over a unix socket (`path=`), but
//! `tss-esapi` 7.7's `TctiNameConf` only carries `host=`/`port=` for the swtpm TCTI and drops
//! anything else, and this crate does not call the C loader directly (`forbid(unsafe_code)`).
//! So swtpm listens on TCP: the TPM command channel on `ip:port` and the control channel on
//! `ip:port+1` (the TCTI derives the control port that way; it cannot be chosen separately).
//! Every node has its own loopback address (any 127.x.y.z works on Linux), so the same ports can
//! be used by all nodes ([`DEFAULT_PORT`]).
//!
//! swtpm serves one connection at a time, but libtss2 3.2.1's swtpm TCTI opens a new
//! connection for every command (measured: connect, command, close), so several
//! [`crate::Tpm`] values, also in different processes of one node, can share one swtpm; their
//! commands interleave. There is no resource manager: [`crate::Tpm`] leaves no transient
//! object or session in the TPM between calls.
//!
//! # State
//! `dir/state/` holds the TPM's permanent state (seeds, persistent keys such as the AK, NV), so a
//! restarted swtpm on the same directory keeps its AK. A new state directory needs no
//! `swtpm_setup` run: swtpm manufactures the TPM on first start (measured: ~10 ms), with the
//! SHA-1 and SHA-256 PCR banks active; `swtpm_setup --pcr-banks sha256` costs ~0.56 s per node and
//! is not needed for SHA-256 quotes. swtpm is started with `--flags not-need-init,startup-clear`,
//! so every (re)start is a TPM reset: PCRs start at zero, as after a reboot.
//!
//! # Lifetimes
//! [`Swtpm::spawn_owned`] keeps the process as a child and kills it on drop (tests);
//! [`Swtpm::spawn_detached`] daemonises it (`--daemon`, own session, re-parented away from the
//! caller) and returns its pid; [`Swtpm::stop`] terminates it later.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Default TPM command port on a node's own loopback address (control channel: `port + 1`).
pub const DEFAULT_PORT: u16 = 2321;

/// How long a start may take before we give up (typical: ~10 ms).
const START_DEADLINE: Duration = Duration::from_secs(10);
/// How long swtpm gets to exit after SIGTERM before it is killed.
const TERM_DEADLINE: Duration = Duration::from_secs(5);
const KILL_DEADLINE: Duration = Duration::from_secs(5);

/// Where and how one node's swtpm runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwtpmConfig {
    /// The node's TPM directory: `state/` (TPM state), `swtpm.log`, `swtpm.pid` (detached).
    pub dir: PathBuf,
    /// The node's own loopback address.
    pub ip: Ipv4Addr,
    /// TPM command port; the control channel uses `port + 1`.
    pub port: u16,
}

impl SwtpmConfig {
    /// A config on `ip` with [`DEFAULT_PORT`].
    pub fn new(dir: impl Into<PathBuf>, ip: Ipv4Addr) -> Self {
        Self {
            dir: dir.into(),
            ip,
            port: DEFAULT_PORT,
        }
    }

    /// The TCTI string for [`crate::Tpm::open`].
    pub fn tcti(&self) -> String {
        format!("swtpm:host={},port={}", self.ip, self.port)
    }

    fn ctrl_port(&self) -> Result<u16, SwtpmError> {
        self.port
            .checked_add(1)
            .filter(|_| self.port != 0)
            .ok_or(SwtpmError::InvalidPort(self.port))
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("swtpm.log")
    }

    fn pid_path(&self) -> PathBuf {
        self.dir.join("swtpm.pid")
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.ip, self.port))
    }

    /// The `swtpm socket` arguments shared by both modes.
    fn args(&self) -> Result<Vec<String>, SwtpmError> {
        let ctrl = self.ctrl_port()?;
        if !self.ip.is_loopback() {
            return Err(SwtpmError::NotLoopback(self.ip));
        }
        let state = path_str(&self.state_dir())?;
        let log = path_str(&self.log_path())?;
        Ok(vec![
            "socket".into(),
            "--tpm2".into(),
            "--tpmstate".into(),
            format!("dir={state}"),
            "--server".into(),
            format!("type=tcp,port={},bindaddr={}", self.port, self.ip),
            "--ctrl".into(),
            format!("type=tcp,port={ctrl},bindaddr={}", self.ip),
            "--flags".into(),
            "not-need-init,startup-clear".into(),
            "--log".into(),
            format!("file={log}"),
        ])
    }

    fn prepare_dirs(&self) -> Result<(), SwtpmError> {
        let state = self.state_dir();
        fs::create_dir_all(&state).map_err(|source| SwtpmError::Io {
            what: "creating the TPM state directory",
            path: state.clone(),
            source,
        })?;
        restrict_permissions(&state)
    }
}

#[cfg(unix)]
fn restrict_permissions(dir: &Path) -> Result<(), SwtpmError> {
    use std::os::unix::fs::PermissionsExt;
    // The state holds the TPM's seeds: owner only.
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|source| SwtpmError::Io {
        what: "restricting permissions of",
        path: dir.to_path_buf(),
        source,
    })
}

fn path_str(p: &Path) -> Result<String, SwtpmError> {
    match p.to_str() {
        // swtpm splits its option values at ','.
        Some(s) if !s.contains(',') => Ok(s.to_string()),
        _ => Err(SwtpmError::BadPath(p.to_path_buf())),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SwtpmError {
    #[error("port {0} is not usable for swtpm (needs port and port+1)")]
    InvalidPort(u16),
    #[error("swtpm must listen on a loopback address, not {0}")]
    NotLoopback(Ipv4Addr),
    #[error("path {0:?} is not usable for swtpm (must be UTF-8 without ',')")]
    BadPath(PathBuf),
    #[error("{what} {path:?}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("starting swtpm failed (is the `swtpm` package installed?)")]
    Spawn(#[source] std::io::Error),
    #[error("swtpm for {dir:?} exited during start-up ({status}); log: {log}")]
    Exited {
        dir: PathBuf,
        status: String,
        log: String,
    },
    #[error(
        "swtpm for {dir:?} did not accept connections on {addr} within {waited:?}; log: {log}"
    )]
    NotReady {
        dir: PathBuf,
        addr: SocketAddr,
        waited: Duration,
        log: String,
    },
    #[error("resetting the dictionary-attack lockout of the TPM at {addr} failed: {detail}")]
    Lockout { addr: SocketAddr, detail: String },
    #[error("pid file {path:?} does not hold a pid: {content:?}")]
    BadPidFile { path: PathBuf, content: String },
    #[error("process {pid} is {comm:?}, not swtpm; not stopping it")]
    NotSwtpm { pid: u32, comm: String },
    #[error("signalling swtpm process {pid}")]
    Signal {
        pid: u32,
        #[source]
        source: Errno,
    },
    #[error("swtpm process {pid} is still running {waited:?} after SIGKILL")]
    StillRunning { pid: u32, waited: Duration },
}

/// A running swtpm that is a child of this process and is killed when dropped.
#[derive(Debug)]
pub struct Swtpm {
    config: SwtpmConfig,
    child: Child,
    startup: Duration,
}

/// A daemonised swtpm that outlives its starter; stop it with [`Swtpm::stop`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetachedSwtpm {
    pub pid: u32,
    /// TCTI string for [`crate::Tpm::open`].
    pub tcti: String,
    /// From spawn to accepting connections.
    pub startup: Duration,
}

impl Swtpm {
    /// Starts swtpm as a child of this process; dropping the value terminates it.
    pub fn spawn_owned(config: &SwtpmConfig) -> Result<Swtpm, SwtpmError> {
        let start = Instant::now();
        config.prepare_dirs()?;
        let (log, log_from) = open_log(config)?;
        let mut child = Command::new("swtpm")
            .args(config.args()?)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(SwtpmError::Spawn)?;
        let ready = wait_ready(config, start, log_from, || match child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("unknown ({e})")),
        });
        if let Err(e) = ready {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        let startup = start.elapsed();
        tracing::debug!(dir = ?config.dir, pid = child.id(), ?startup, "swtpm started");
        Ok(Swtpm {
            config: config.clone(),
            child,
            startup,
        })
    }

    /// Starts swtpm as a daemon in its own session (it is re-parented away from this process and
    /// survives it). Returns once it accepts connections.
    pub fn spawn_detached(config: &SwtpmConfig) -> Result<DetachedSwtpm, SwtpmError> {
        let start = Instant::now();
        config.prepare_dirs()?;
        let pid_path = config.pid_path();
        match fs::remove_file(&pid_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(SwtpmError::Io {
                    what: "removing stale pid file",
                    path: pid_path,
                    source,
                })
            }
        }
        let (log, log_from) = open_log(config)?;
        let mut args = config.args()?;
        args.extend([
            "--daemon".into(),
            "--pid".into(),
            format!("file={}", path_str(&pid_path)?),
        ]);
        // The foreground swtpm forks the daemon and exits once its sockets are bound.
        let mut parent = Command::new("swtpm")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(SwtpmError::Spawn)?;
        let status = poll_until(start + START_DEADLINE, || parent.try_wait().transpose());
        let status = match status {
            Some(Ok(status)) => status,
            other => {
                let _ = parent.kill();
                let _ = parent.wait();
                return Err(match other {
                    Some(Err(source)) => SwtpmError::Spawn(source),
                    _ => SwtpmError::NotReady {
                        dir: config.dir.clone(),
                        addr: config.addr(),
                        waited: start.elapsed(),
                        log: log_tail(config, log_from),
                    },
                });
            }
        };
        if !status.success() {
            return Err(SwtpmError::Exited {
                dir: config.dir.clone(),
                status: status.to_string(),
                log: log_tail(config, log_from),
            });
        }
        let pid = read_pid(&pid_path)?;
        let ready = wait_ready(config, start, log_from, || {
            (!is_alive(pid)).then(|| "daemon exited".to_string())
        });
        if let Err(e) = ready {
            let _ = Swtpm::stop(pid);
            return Err(e);
        }
        let startup = start.elapsed();
        tracing::debug!(dir = ?config.dir, pid, ?startup, "detached swtpm started");
        Ok(DetachedSwtpm {
            pid,
            tcti: config.tcti(),
            startup,
        })
    }

    /// Terminates a detached swtpm: SIGTERM, then SIGKILL if it has not exited within 5 s.
    /// Succeeds if the process is already gone; refuses to signal a process that is not swtpm
    /// (the pid may have been reused).
    pub fn stop(pid: u32) -> Result<(), SwtpmError> {
        let Some(comm) = process_name(pid) else {
            return Ok(());
        };
        if comm != "swtpm" {
            return Err(SwtpmError::NotSwtpm { pid, comm });
        }
        let raw = i32::try_from(pid).map_err(|_| SwtpmError::Signal {
            pid,
            source: Errno::ESRCH,
        })?;
        for (signal, deadline) in [
            (Signal::SIGTERM, TERM_DEADLINE),
            (Signal::SIGKILL, KILL_DEADLINE),
        ] {
            match kill(Pid::from_raw(raw), signal) {
                Ok(()) => {}
                Err(Errno::ESRCH) => return Ok(()),
                Err(source) => return Err(SwtpmError::Signal { pid, source }),
            }
            let until = Instant::now() + deadline;
            if poll_until(until, || (!is_alive(pid)).then_some(())).is_some() {
                return Ok(());
            }
        }
        Err(SwtpmError::StillRunning {
            pid,
            waited: TERM_DEADLINE + KILL_DEADLINE,
        })
    }

    /// TCTI string for [`crate::Tpm::open`].
    pub fn tcti(&self) -> String {
        self.config.tcti()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn config(&self) -> &SwtpmConfig {
        &self.config
    }

    /// From spawn to accepting connections.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// Terminates the process (as dropping does) and reports how that went.
    pub fn shutdown(mut self) -> Result<(), SwtpmError> {
        self.terminate()
    }

    fn terminate(&mut self) -> Result<(), SwtpmError> {
        let pid = self.child.id();
        if let Ok(Some(_)) = self.child.try_wait() {
            return Ok(());
        }
        // SIGTERM first so swtpm closes its state files cleanly.
        if let Ok(raw) = i32::try_from(pid) {
            let _ = kill(Pid::from_raw(raw), Signal::SIGTERM);
            let until = Instant::now() + TERM_DEADLINE;
            if poll_until(until, || self.child.try_wait().ok().flatten()).is_some() {
                return Ok(());
            }
        }
        let _ = self.child.kill();
        self.child
            .wait()
            .map(|_| ())
            .map_err(|source| SwtpmError::Io {
                what: "waiting for swtpm of",
                path: self.config.dir.clone(),
                source,
            })
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        if let Err(e) = self.terminate() {
            tracing::warn!(error = %e, "stopping swtpm");
        }
    }
}

/// TPM2_DictionaryAttackLockReset with the lockout hierarchy's (empty) password: clears the
/// TPM's failed-authorization counter.
///
/// Each unorderly end of a TPM (its node killed, swtpm stopped without TPM2_Shutdown) counts as
/// a failed authorization at the next start-up once a DA-protected key (our attestation key,
/// as go-tpm-tools' template) was used; after a few the TPM refuses to quote
/// (TPM_RC_LOCKOUT) for a long recovery time. Clouds manage their vTPMs' lockout; the local
/// provider, which owns these TPMs' lockout hierarchy, calls this after every TPM start.
/// tss-esapi 7 has no binding for the command, so it is sent as raw bytes on the TPM port.
pub fn reset_dictionary_attack_lockout(addr: SocketAddr) -> Result<(), SwtpmError> {
    const TPM_ST_SESSIONS: u16 = 0x8002;
    const TPM_CC_DICTIONARY_ATTACK_LOCK_RESET: u32 = 0x0000_0139;
    const TPM_RH_LOCKOUT: u32 = 0x4000_000A;
    const TPM_RS_PW: u32 = 0x4000_0009;
    let fail = |detail: String| SwtpmError::Lockout { addr, detail };
    // Password session: handle, empty nonce, attributes 0, empty password.
    let mut session = TPM_RS_PW.to_be_bytes().to_vec();
    session.extend_from_slice(&0u16.to_be_bytes());
    session.push(0);
    session.extend_from_slice(&0u16.to_be_bytes());
    let mut body = TPM_CC_DICTIONARY_ATTACK_LOCK_RESET.to_be_bytes().to_vec();
    body.extend_from_slice(&TPM_RH_LOCKOUT.to_be_bytes());
    body.extend_from_slice(&(session.len() as u32).to_be_bytes());
    body.extend_from_slice(&session);
    let mut cmd = TPM_ST_SESSIONS.to_be_bytes().to_vec();
    cmd.extend_from_slice(&((2 + 4 + body.len()) as u32).to_be_bytes());
    cmd.extend_from_slice(&body);

    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| fail(format!("connecting: {e}")))?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| fail(e.to_string()))?;
    conn.write_all(&cmd)
        .map_err(|e| fail(format!("sending the command: {e}")))?;
    let mut header = [0u8; 10];
    conn.read_exact(&mut header)
        .map_err(|e| fail(format!("reading the response: {e}")))?;
    let rc = u32::from_be_bytes([header[6], header[7], header[8], header[9]]);
    if rc != 0 {
        return Err(fail(format!("the TPM answered response code 0x{rc:03X}")));
    }
    Ok(())
}

/// A loopback address unique to this process and call (127.128-255.x.y, derived from the pid
/// and a counter), for tests and benchmarks that start several swtpm instances side by side.
/// The local provider assigns node addresses itself.
pub fn unique_loopback_ip() -> Ipv4Addr {
    static NEXT: AtomicU8 = AtomicU8::new(0);
    let pid = std::process::id();
    // 1..=254: never .0 or .255; repeats after 254 calls.
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % 254 + 1;
    // pid_max is at most 2^22; fold it into 15 bits (collisions need two live test processes
    // whose pids agree modulo 2^15).
    let folded = (pid ^ (pid >> 15)) & 0x7fff;
    let [_, _, hi, lo] = folded.to_be_bytes();
    Ipv4Addr::new(127, 128 | hi, lo, n)
}

/// The log file (appended to across starts) and its length before this start.
fn open_log(config: &SwtpmConfig) -> Result<(File, u64), SwtpmError> {
    let path = config.log_path();
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|source| SwtpmError::Io {
            what: "opening swtpm log",
            path,
            source,
        })?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    Ok((file, len))
}

/// What this start wrote to the log (at most its last ~600 bytes), for error messages.
fn log_tail(config: &SwtpmConfig, from: u64) -> String {
    let mut buf = Vec::new();
    if File::open(config.log_path())
        .and_then(|mut f| f.read_to_end(&mut buf))
        .is_err()
    {
        return "(no log)".into();
    }
    let from = usize::try_from(from).unwrap_or(usize::MAX).min(buf.len());
    let start = from.max(buf.len().saturating_sub(600));
    let text = String::from_utf8_lossy(&buf[start..]).trim().to_string();
    if text.is_empty() {
        "(empty)".into()
    } else {
        text
    }
}

/// Polls until swtpm answers a TPM command, failing early if `exited` reports an exit.
///
/// An accepting socket is not enough: swtpm binds its sockets before it initialises (and may
/// then fail to lock) the TPM state, so readiness is a successful TPM2_GetRandom.
fn wait_ready(
    config: &SwtpmConfig,
    start: Instant,
    log_from: u64,
    mut exited: impl FnMut() -> Option<String>,
) -> Result<(), SwtpmError> {
    let addr = config.addr();
    let deadline = start + START_DEADLINE;
    let outcome = poll_until(deadline, || {
        if probe(&addr, deadline) {
            return Some(Ok(()));
        }
        exited().map(Err)
    });
    match outcome {
        Some(Ok(())) => Ok(()),
        Some(Err(status)) => Err(SwtpmError::Exited {
            dir: config.dir.clone(),
            status,
            log: log_tail(config, log_from),
        }),
        None => Err(SwtpmError::NotReady {
            dir: config.dir.clone(),
            addr,
            waited: start.elapsed(),
            log: log_tail(config, log_from),
        }),
    }
}

/// TPM2_GetRandom(8): tag NO_SESSIONS, size 12, command code 0x17B, bytesRequested 8.
const GET_RANDOM_8: [u8; 12] = [0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7B, 0, 8];

/// One raw TPM command on a fresh connection: true iff the TPM answers with success (it
/// answers TPM_RC_INITIALIZE before TPM2_Startup).
fn probe(addr: &SocketAddr, deadline: Instant) -> bool {
    let budget = deadline
        .saturating_duration_since(Instant::now())
        .clamp(Duration::from_millis(1), Duration::from_secs(2));
    let Ok(mut stream) = TcpStream::connect_timeout(addr, budget) else {
        return false;
    };
    let mut header = [0u8; 10];
    let answered = stream.set_read_timeout(Some(budget)).is_ok()
        && stream.write_all(&GET_RANDOM_8).is_ok()
        && stream.read_exact(&mut header).is_ok();
    // header: tag u16, size u32, responseCode u32.
    answered && header[6..10] == [0, 0, 0, 0]
}

/// Evaluates `check` until it yields a value or `deadline` passes; the pause between checks
/// grows from 0.2 ms to 10 ms so fast events are seen fast without spinning.
fn poll_until<T>(deadline: Instant, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let mut pause = Duration::from_micros(200);
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

fn read_pid(path: &Path) -> Result<u32, SwtpmError> {
    let content = fs::read_to_string(path).map_err(|source| SwtpmError::Io {
        what: "reading pid file",
        path: path.to_path_buf(),
        source,
    })?;
    content.trim().parse().map_err(|_| SwtpmError::BadPidFile {
        path: path.to_path_buf(),
        content,
    })
}

/// `comm` of a live process, `None` if there is none (or only a zombie).
fn process_name(pid: u32) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ..."; comm may itself contain ')' so split at the last one.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let state = stat.get(close + 1..)?.trim_start().chars().next()?;
    (state != 'Z' && state != 'X').then_some(comm)
}

fn is_alive(pid: u32) -> bool {
    process_name(pid).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcti_and_ports() {
        let c = SwtpmConfig::new("/tmp/n1", Ipv4Addr::new(127, 1, 2, 3));
        assert_eq!(c.tcti(), "swtpm:host=127.1.2.3,port=2321");
        assert_eq!(c.ctrl_port().unwrap(), 2322);
        let bad = SwtpmConfig {
            port: u16::MAX,
            ..c.clone()
        };
        assert!(matches!(
            bad.ctrl_port(),
            Err(SwtpmError::InvalidPort(65535))
        ));
        let remote = SwtpmConfig {
            ip: Ipv4Addr::new(10, 0, 0, 1),
            ..c
        };
        assert!(matches!(remote.args(), Err(SwtpmError::NotLoopback(_))));
    }

    #[test]
    fn rejects_commas_in_paths() {
        let c = SwtpmConfig::new("/tmp/a,b", Ipv4Addr::LOCALHOST);
        assert!(matches!(c.args(), Err(SwtpmError::BadPath(_))));
    }

    #[test]
    fn unique_ips_differ_and_are_loopback() {
        let a = unique_loopback_ip();
        let b = unique_loopback_ip();
        assert_ne!(a, b);
        assert!(a.is_loopback() && b.is_loopback());
        assert_ne!(a, Ipv4Addr::LOCALHOST);
    }

    #[test]
    fn process_name_of_self_and_of_nobody() {
        assert!(process_name(std::process::id()).is_some());
        // pid_max is at most 2^22.
        assert_eq!(process_name(1 << 23), None);
    }

    #[test]
    fn stop_refuses_other_processes() {
        let me = std::process::id();
        assert!(matches!(Swtpm::stop(me), Err(SwtpmError::NotSwtpm { .. })));
        assert!(Swtpm::stop(1 << 23).is_ok());
    }
}
