//! `swtpm` processes: one software TPM 2.0 per node, owned by that node.
//!
//! # Transport and ownership
//! swtpm listens on two unix sockets in the node's TPM folder, which is owner-only (0700): the
//! TPM command channel `swtpm.sock` and the control channel `ctrl.sock` (reset, state blobs), both
//! created with mode 0600. Nothing listens on TCP, so no other user of the host can send the TPM
//! commands, reset it, or read its state through swtpm; the state files are owner-only as well.
//! The TPM speaks raw TPM 2.0 over `swtpm.sock` (see [`crate::wire`]).
//!
//! At its first start the TPM is taken into ownership ([`take_ownership`]): a random 32-byte
//! authorisation value is written to `auth` (0600) and becomes the owner, endorsement and lockout
//! hierarchies' authorisation; the attestation key is created with it as its `userAuth`
//! ([`crate::Tpm::attestation_key`]). A process that reaches the socket without the value can
//! neither quote with the AK, nor recreate it from the owner seed, nor reset the lockout.
//! [`SwtpmConfig::tcti`] is `swtpm:path=<dir>/swtpm.sock,auth=<dir>/auth`.
//!
//! swtpm serves one connection at a time; every command opens its own connection (connect,
//! command, close), so several [`crate::Tpm`] values, also in different processes of one node,
//! can share one swtpm; their commands interleave. There is no resource manager:
//! [`crate::Tpm`] leaves no transient object or session in the TPM between calls.
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
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use zeroize::Zeroizing;

use crate::wire;

/// How long a start may take before we give up (typical: ~10 ms).
const START_DEADLINE: Duration = Duration::from_secs(10);
/// How long swtpm gets to exit after SIGTERM before it is killed.
const TERM_DEADLINE: Duration = Duration::from_secs(5);
const KILL_DEADLINE: Duration = Duration::from_secs(5);
/// Length of the node's TPM authorisation value.
const AUTH_LEN: usize = 32;
/// `sun_path` holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// Where one node's swtpm runs: its TPM folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwtpmConfig {
    /// The node's TPM folder (0700): `state/` (TPM state), `swtpm.sock`, `ctrl.sock`, `auth`,
    /// `swtpm.log`, `swtpm.pid` (detached).
    pub dir: PathBuf,
}

impl SwtpmConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The TPM address for [`crate::Tpm::open`]: the command socket and the auth file.
    pub fn tcti(&self) -> String {
        format!(
            "swtpm:path={},auth={}",
            self.socket_path().display(),
            self.auth_path().display()
        )
    }

    /// The TPM command channel.
    pub fn socket_path(&self) -> PathBuf {
        self.dir.join("swtpm.sock")
    }

    /// The swtpm control channel (reset, state blobs, shutdown).
    pub fn ctrl_path(&self) -> PathBuf {
        self.dir.join("ctrl.sock")
    }

    /// The node's TPM authorisation value (0600).
    pub fn auth_path(&self) -> PathBuf {
        self.dir.join("auth")
    }

    /// The TPM's persistent state (seeds, AK, NV).
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("swtpm.log")
    }

    fn pid_path(&self) -> PathBuf {
        self.dir.join("swtpm.pid")
    }

    /// The `swtpm socket` arguments shared by both modes.
    fn args(&self) -> Result<Vec<String>, SwtpmError> {
        let state = path_str(&self.state_dir())?;
        let log = path_str(&self.log_path())?;
        let server = socket_str(&self.socket_path())?;
        let ctrl = socket_str(&self.ctrl_path())?;
        Ok(vec![
            "socket".into(),
            "--tpm2".into(),
            "--tpmstate".into(),
            format!("dir={state},mode=0600"),
            "--server".into(),
            format!("type=unixio,path={server},mode=0600"),
            "--ctrl".into(),
            format!("type=unixio,path={ctrl},mode=0600"),
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
        // The folder holds the sockets, the auth value and the state (the TPM's seeds): owner
        // only, both levels.
        restrict_permissions(&self.dir)?;
        restrict_permissions(&state)?;
        // A socket left by a killed swtpm would make the next one fail to bind; one that a
        // running swtpm answers on means the TPM is in use (a second swtpm would unlink and
        // steal its path).
        for sock in [self.socket_path(), self.ctrl_path()] {
            if UnixStream::connect(&sock).is_ok() {
                return Err(SwtpmError::InUse(sock));
            }
            match fs::remove_file(&sock) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(SwtpmError::Io {
                        what: "removing a stale socket",
                        path: sock,
                        source,
                    })
                }
            }
        }
        Ok(())
    }
}

fn socket_str(p: &Path) -> Result<String, SwtpmError> {
    let s = path_str(p)?;
    if s.len() > MAX_SOCKET_PATH {
        return Err(SwtpmError::SocketPathTooLong(p.to_path_buf()));
    }
    Ok(s)
}

fn restrict_permissions(dir: &Path) -> Result<(), SwtpmError> {
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
    #[error("a TPM already answers on {0:?} (another swtpm runs on this folder)")]
    InUse(PathBuf),
    #[error("socket path {0:?} is longer than a unix socket address allows (107 bytes)")]
    SocketPathTooLong(PathBuf),
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
        "swtpm for {dir:?} did not accept connections on {socket:?} within {waited:?}; log: {log}"
    )]
    NotReady {
        dir: PathBuf,
        socket: PathBuf,
        waited: Duration,
        log: String,
    },
    #[error("resetting the dictionary-attack lockout of the TPM in {dir:?}")]
    Lockout {
        dir: PathBuf,
        #[source]
        source: crate::TpmError,
    },
    #[error("taking ownership of the TPM in {dir:?} ({step})")]
    Ownership {
        dir: PathBuf,
        step: &'static str,
        #[source]
        source: crate::TpmError,
    },
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
        if let Err(e) = ready.and_then(|()| take_ownership(config)) {
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
                        socket: config.socket_path(),
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
        if let Err(e) = ready.and_then(|()| take_ownership(config)) {
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

/// TPM2_DictionaryAttackLockReset with the lockout hierarchy's authorisation (the node's
/// value in `auth`): clears the TPM's failed-authorization counter.
///
/// Each unorderly end of a TPM (its node killed, swtpm stopped without TPM2_Shutdown) counts as
/// a failed authorization at the next start-up once a DA-protected key (our attestation key,
/// as go-tpm-tools' template) was used; after a few the TPM refuses to quote
/// (TPM_RC_LOCKOUT) for a long recovery time. Clouds manage their vTPMs' lockout; the local
/// provider, which owns these TPMs' lockout hierarchy, calls this after every TPM start.
pub fn reset_dictionary_attack_lockout(config: &SwtpmConfig) -> Result<(), SwtpmError> {
    let fail = |source| SwtpmError::Lockout {
        dir: config.dir.clone(),
        source,
    };
    let auth = crate::device::read_auth(&config.auth_path()).map_err(fail)?;
    wire::execute(
        &config.socket_path(),
        &wire::Command {
            name: "DictionaryAttackLockReset",
            code: wire::CC_DA_LOCK_RESET,
            handles: &[wire::TPM_RH_LOCKOUT],
            auth: Some(&auth),
            params: Vec::new(),
        },
        0,
    )
    .map(drop)
    .map_err(fail)
}

/// Makes the TPM the node's: creates the node's authorisation value (`auth`, 0600, 32 random
/// bytes from the TPM) unless it exists, and sets it as the lockout, endorsement and owner
/// hierarchies' authorisation if they still have the empty one (a new TPM). Idempotent: a TPM
/// whose owner hierarchy already takes the value is left alone (the owner hierarchy is changed
/// last and is not dictionary-attack protected, so probing it is free).
pub fn take_ownership(config: &SwtpmConfig) -> Result<(), SwtpmError> {
    let fail = |step| {
        let dir = config.dir.clone();
        move |source| SwtpmError::Ownership { dir, step, source }
    };
    let socket = config.socket_path();
    let auth_path = config.auth_path();
    let auth = match crate::device::read_auth(&auth_path) {
        Ok(a) => a,
        Err(crate::TpmError::AuthFile { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            let value = Zeroizing::new(
                crate::device::get_random(&socket, AUTH_LEN as u16)
                    .map_err(fail("drawing the authorisation value"))?,
            );
            if value.len() != AUTH_LEN {
                return Err(fail("drawing the authorisation value")(
                    crate::TpmError::Unexpected(format!(
                        "GetRandom returned {} of {AUTH_LEN} bytes",
                        value.len()
                    )),
                ));
            }
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&auth_path)
                .and_then(|mut f| f.write_all(&value).and_then(|()| f.sync_all()).map(|()| f))
                .map_err(|source| SwtpmError::Io {
                    what: "writing the TPM authorisation value",
                    path: auth_path.clone(),
                    source,
                })?;
            let _ = f.flush();
            value
        }
        Err(e) => return Err(fail("reading the authorisation value")(e)),
    };
    let change = |hierarchy: u32, current: &[u8], name| {
        let mut params = Vec::with_capacity(2 + auth.len());
        wire::put_tpm2b(&mut params, &auth);
        wire::execute(
            &socket,
            &wire::Command {
                name,
                code: wire::CC_HIERARCHY_CHANGE_AUTH,
                handles: &[hierarchy],
                auth: Some(current),
                params,
            },
            0,
        )
        .map(drop)
    };
    match change(wire::TPM_RH_OWNER, &auth, "HierarchyChangeAuth(owner)") {
        Ok(()) => return Ok(()),
        Err(e) if e.is_auth_failure() => {}
        Err(e) => return Err(fail("probing the owner hierarchy")(e)),
    }
    change(wire::TPM_RH_LOCKOUT, &[], "HierarchyChangeAuth(lockout)")
        .map_err(fail("lockout hierarchy"))?;
    change(
        wire::TPM_RH_ENDORSEMENT,
        &[],
        "HierarchyChangeAuth(endorsement)",
    )
    .map_err(fail("endorsement hierarchy"))?;
    change(wire::TPM_RH_OWNER, &[], "HierarchyChangeAuth(owner)")
        .map_err(fail("owner hierarchy"))?;
    tracing::debug!(dir = ?config.dir, "took ownership of the TPM");
    Ok(())
}

/// A loopback address unique to this process and call (127.128-255.x.y, derived from the pid
/// and a counter), for tests and benchmarks that start several swtpm instances side by side.
/// The local provider assigns node addresses itself.
pub fn unique_loopback_ip() -> std::net::Ipv4Addr {
    static NEXT: AtomicU8 = AtomicU8::new(0);
    let pid = std::process::id();
    // 1..=254: never .0 or .255; repeats after 254 calls.
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % 254 + 1;
    // pid_max is at most 2^22; fold it into 15 bits (collisions need two live test processes
    // whose pids agree modulo 2^15).
    let folded = (pid ^ (pid >> 15)) & 0x7fff;
    let [_, _, hi, lo] = folded.to_be_bytes();
    std::net::Ipv4Addr::new(127, 128 | hi, lo, n)
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
    let socket = config.socket_path();
    let deadline = start + START_DEADLINE;
    let outcome = poll_until(deadline, || {
        if probe(&socket, deadline) {
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
            socket,
            waited: start.elapsed(),
            log: log_tail(config, log_from),
        }),
    }
}

/// TPM2_GetRandom(8): tag NO_SESSIONS, size 12, command code 0x17B, bytesRequested 8.
const GET_RANDOM_8: [u8; 12] = [0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7B, 0, 8];

/// One raw TPM command on a fresh connection: true iff the TPM answers with success (it
/// answers TPM_RC_INITIALIZE before TPM2_Startup).
fn probe(socket: &Path, deadline: Instant) -> bool {
    let budget = deadline
        .saturating_duration_since(Instant::now())
        .clamp(Duration::from_millis(1), Duration::from_secs(2));
    let Ok(mut stream) = UnixStream::connect(socket) else {
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
    fn tcti_and_arguments() {
        let c = SwtpmConfig::new("/tmp/n1/tpm");
        assert_eq!(
            c.tcti(),
            "swtpm:path=/tmp/n1/tpm/swtpm.sock,auth=/tmp/n1/tpm/auth"
        );
        let args = c.args().unwrap().join(" ");
        // Both channels are unix sockets; nothing on TCP.
        assert!(args.contains("--server type=unixio,path=/tmp/n1/tpm/swtpm.sock,mode=0600"));
        assert!(args.contains("--ctrl type=unixio,path=/tmp/n1/tpm/ctrl.sock,mode=0600"));
        assert!(!args.contains("tcp"), "{args}");
        let long = SwtpmConfig::new(format!("/{}", "x".repeat(120)));
        assert!(matches!(long.args(), Err(SwtpmError::SocketPathTooLong(_))));
    }

    #[test]
    fn rejects_commas_in_paths() {
        let c = SwtpmConfig::new("/tmp/a,b");
        assert!(matches!(c.args(), Err(SwtpmError::BadPath(_))));
    }

    #[test]
    fn unique_ips_differ_and_are_loopback() {
        let a = unique_loopback_ip();
        let b = unique_loopback_ip();
        assert_ne!(a, b);
        assert!(a.is_loopback() && b.is_loopback());
        assert_ne!(a, std::net::Ipv4Addr::LOCALHOST);
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
