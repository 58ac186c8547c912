//! Host-wide state a node touches: processes found by namespace or cgroup, cgroup trees, and
//! host-wide sysctls (set only when they differ, the old value recorded so it can be restored).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Failure to inspect or restore host state.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("processes {pids:?} ({what}) still alive {waited:?} after SIGKILL")]
    Survivors {
        what: String,
        pids: Vec<i32>,
        waited: Duration,
    },
    #[error(
        "sysctl {key}: value {value:?} does not look like a sysctl value (digits and spaces only)"
    )]
    BadSysctlValue { key: String, value: String },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> HostError + 'a {
    move |source| HostError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// The namespace inode of a namespace file (`/proc/PID/ns/net` or a bind-mounted pin).
pub fn ns_inode(path: &Path) -> Result<u64, HostError> {
    Ok(std::fs::metadata(path)
        .map_err(io("stat namespace", path))?
        .ino())
}

fn proc_pids() -> Vec<i32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .collect()
}

fn link_inode(pid: i32, ns: &str) -> Option<u64> {
    // "net:[4026532210]"
    let target = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).ok()?;
    let s = target.to_str()?;
    let inner = s.split_once('[')?.1.strip_suffix(']')?;
    inner.parse().ok()
}

/// Processes (other than this one) in any of the network or mount namespaces with these inodes.
pub fn processes_in_namespaces(net: &[u64], mnt: &[u64]) -> Vec<i32> {
    let me = std::process::id() as i32;
    proc_pids()
        .into_iter()
        .filter(|&pid| pid != me)
        .filter(|&pid| {
            link_inode(pid, "net").is_some_and(|i| net.contains(&i))
                || link_inode(pid, "mnt").is_some_and(|i| mnt.contains(&i))
        })
        .collect()
}

/// Processes in a cgroup at or below `/<parent>` in any v1 hierarchy (or the v2 one).
pub fn processes_in_cgroup(parent: &str) -> Vec<i32> {
    let prefix = format!("/{}", parent.trim_matches('/'));
    proc_pids()
        .into_iter()
        .filter(|&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|s| {
                s.lines().any(|l| {
                    l.splitn(3, ':')
                        .nth(2)
                        .is_some_and(|p| p == prefix || p.starts_with(&format!("{prefix}/")))
                })
            })
        })
        .collect()
}

/// SIGKILLs the processes `find` returns until it returns none, or fails after `deadline`.
pub fn kill_all(
    what: &str,
    deadline: Duration,
    mut find: impl FnMut() -> Vec<i32>,
) -> Result<(), HostError> {
    let start = Instant::now();
    loop {
        let pids = find();
        if pids.is_empty() {
            return Ok(());
        }
        if start.elapsed() > deadline {
            return Err(HostError::Survivors {
                what: what.to_owned(),
                pids,
                waited: start.elapsed(),
            });
        }
        for pid in &pids {
            // ESRCH (already gone) is fine; the next scan decides.
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        // Waiting for the kernel to reap killed processes (zombies of other parents vanish when
        // their parent reaps them; a bounded poll is the only portable wait here).
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Removes the cgroup directory tree `/<parent>` from every cgroup hierarchy mounted under
/// `/sys/fs/cgroup` (deepest first). Missing directories are fine.
pub fn remove_cgroup_tree(parent: &str) -> Result<(), HostError> {
    let parent = parent.trim_matches('/');
    if parent.is_empty() || parent.contains("..") {
        return Ok(());
    }
    let root = Path::new("/sys/fs/cgroup");
    let Ok(rd) = std::fs::read_dir(root) else {
        return Ok(());
    };
    for h in rd.flatten() {
        let dir = h.path().join(parent);
        if dir.is_dir() {
            remove_dirs_deepest_first(&dir)?;
        }
    }
    Ok(())
}

fn remove_dirs_deepest_first(dir: &Path) -> Result<(), HostError> {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_dirs_deepest_first(&e.path())?;
            }
        }
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(HostError::Io {
            what: "remove cgroup",
            path: dir.to_path_buf(),
            source: e,
        }),
    }
}

/// Creates the cgroup `/<parent>` in every hierarchy under `/sys/fs/cgroup` (kubelet requires its
/// `cgroupRoot` to exist); a new cpuset cgroup gets its parent's cpus and mems.
pub fn create_cgroup(parent: &str) -> Result<(), HostError> {
    let parent = parent.trim_matches('/');
    let root = Path::new("/sys/fs/cgroup");
    let rd = std::fs::read_dir(root).map_err(io("list cgroup hierarchies", root))?;
    for h in rd.flatten() {
        let hier = h.path();
        if !hier.join("cgroup.procs").exists() {
            continue;
        }
        let dir = hier.join(parent);
        std::fs::create_dir_all(&dir).map_err(io("create cgroup", &dir))?;
        for f in ["cpuset.cpus", "cpuset.mems"] {
            let own = dir.join(f);
            if own.exists() {
                let cur = std::fs::read_to_string(&own).unwrap_or_default();
                if cur.trim().is_empty() {
                    let v = std::fs::read_to_string(hier.join(f)).map_err(io("read", &own))?;
                    std::fs::write(&own, v.trim()).map_err(io("write", &own))?;
                }
            }
        }
    }
    Ok(())
}

/// Path of a sysctl key (`fs.inotify.max_user_instances`) under `/proc/sys`.
pub fn sysctl_path(key: &str) -> PathBuf {
    Path::new("/proc/sys").join(key.replace('.', "/"))
}

/// Reads a sysctl of the namespaces this process is in (the host's, for the host).
pub fn read_sysctl(key: &str) -> Result<String, HostError> {
    let p = sysctl_path(key);
    Ok(std::fs::read_to_string(&p)
        .map_err(io("read sysctl", &p))?
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" "))
}

fn write_sysctl(key: &str, value: &str) -> Result<(), HostError> {
    let p = sysctl_path(key);
    std::fs::write(&p, value).map_err(io("write sysctl", &p))
}

/// Host-wide sysctls a Kubernetes node needs, with the values it needs.
///
/// * `fs.inotify.max_user_instances` ≥ 512 and `fs.inotify.max_user_watches` ≥ 524288: several
///   kubelets and containerds share the host's inotify limits (kubemark and kind raise them too).
/// * `kernel.panic = 10`, `kernel.panic_on_oops = 1`, `vm.overcommit_memory = 1`,
///   `vm.panic_on_oom = 0`, `kernel.keys.root_maxkeys = 1000000`, `kernel.keys.root_maxbytes =
///   25000000`: kubelet's kernel tunables. Kubelet runs with `protectKernelDefaults: true`, so it
///   never writes them itself (it refuses to start if they differ); setting them here first records
///   the old values so teardown can put them back.
pub const KUBELET_SYSCTLS: &[(&str, Need)] = &[
    ("fs.inotify.max_user_instances", Need::AtLeast(512)),
    ("fs.inotify.max_user_watches", Need::AtLeast(524_288)),
    ("kernel.panic", Need::Exactly(10)),
    ("kernel.panic_on_oops", Need::Exactly(1)),
    ("vm.overcommit_memory", Need::Exactly(1)),
    ("vm.panic_on_oom", Need::Exactly(0)),
    ("kernel.keys.root_maxkeys", Need::Exactly(1_000_000)),
    ("kernel.keys.root_maxbytes", Need::Exactly(25_000_000)),
];

/// What a node needs of a numeric sysctl.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    AtLeast(u64),
    Exactly(u64),
}

/// Host sysctls changed by this process, with their old values; [`HostSysctls::restore`] (also run
/// on drop) writes the old values back. A value that already satisfies the need is not written.
#[derive(Debug, Default)]
pub struct HostSysctls {
    changed: Vec<(String, String)>,
}

impl HostSysctls {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every sysctl of [`KUBELET_SYSCTLS`] (on a failure, drop restores what was changed).
    pub fn for_kubelet() -> Result<Self, HostError> {
        let mut me = Self::new();
        for (key, need) in KUBELET_SYSCTLS {
            me.ensure(key, *need)?;
        }
        Ok(me)
    }

    /// Makes `key` satisfy `need`, recording the old value when it had to change.
    pub fn ensure(&mut self, key: &str, need: Need) -> Result<(), HostError> {
        let old = read_sysctl(key)?;
        let current: Option<u64> = old.parse().ok();
        let target = match (need, current) {
            (Need::AtLeast(n), Some(c)) if c >= n => return Ok(()),
            (Need::Exactly(n), Some(c)) if c == n => return Ok(()),
            (Need::AtLeast(n) | Need::Exactly(n), _) => n,
        };
        if !old
            .chars()
            .all(|c| c.is_ascii_digit() || c == ' ' || c == '-')
        {
            return Err(HostError::BadSysctlValue {
                key: key.to_owned(),
                value: old,
            });
        }
        write_sysctl(key, &target.to_string())?;
        self.changed.push((key.to_owned(), old));
        Ok(())
    }

    /// The sysctls changed so far with their old values.
    pub fn changed(&self) -> &[(String, String)] {
        &self.changed
    }

    /// Writes the recorded old values to `path` (`<key> <old value>` lines), for a later
    /// [`HostSysctls::load`] by another process (e.g. `terminate` after `up`).
    pub fn save(&self, path: &Path) -> Result<(), HostError> {
        let text: String = self
            .changed
            .iter()
            .map(|(k, v)| format!("{k} {v}\n"))
            .collect();
        std::fs::write(path, text).map_err(io("write sysctl record", path))
    }

    /// Reads a record written by [`HostSysctls::save`]; a missing file is an empty record.
    pub fn load(path: &Path) -> Result<Self, HostError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io("read sysctl record", path)(e)),
        };
        let mut changed = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (k, v) = line.split_once(' ').unwrap_or((line, ""));
            let key_ok = !k.is_empty()
                && k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_');
            let value_ok = !v.is_empty()
                && v.chars()
                    .all(|c| c.is_ascii_digit() || c == ' ' || c == '-');
            if !key_ok || !value_ok {
                return Err(HostError::BadSysctlValue {
                    key: k.to_owned(),
                    value: v.to_owned(),
                });
            }
            changed.push((k.to_owned(), v.to_owned()));
        }
        Ok(HostSysctls { changed })
    }

    /// Forgets the record without restoring (after [`HostSysctls::save`]: another process
    /// restores).
    pub fn detach(mut self) {
        self.changed.clear();
    }

    /// Writes every recorded old value back (latest first); idempotent.
    pub fn restore(&mut self) -> Result<(), HostError> {
        while let Some((key, old)) = self.changed.pop() {
            write_sysctl(&key, &old)?;
        }
        Ok(())
    }
}

impl Drop for HostSysctls {
    fn drop(&mut self) {
        let _ = self.restore();
    }
}

/// Resident set size of a process in KiB (`VmRSS` of `/proc/PID/status`), if it exists.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Resident memory of a process split as `/proc/PID/status` reports it (KiB).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rss {
    /// `VmRSS`: everything resident.
    pub total: u64,
    /// `RssAnon`: heap, stacks, Go runtime (private to the process).
    pub anon: u64,
    /// `RssFile`: pages of mapped files, mostly the binary's text (shared by every process
    /// running the same binary file).
    pub file: u64,
    /// `VmHWM`: the peak of `total`.
    pub peak: u64,
    /// `Pss` of `/proc/PID/smaps_rollup`: private pages plus each shared page divided by the
    /// number of processes mapping it (the binary's text of N nodes counts 1/N per process).
    pub pss: u64,
    /// `Private_Clean + Private_Dirty`: what ending the process gives back.
    pub private: u64,
}

/// [`Rss`] of a process, if it exists.
pub fn rss(pid: u32) -> Option<Rss> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        s.lines()
            .find_map(|l| l.strip_prefix(name))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let roll = |name: &str| -> u64 {
        rollup
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    Some(Rss {
        total: field("VmRSS:")?,
        anon: field("RssAnon:").unwrap_or(0),
        file: field("RssFile:").unwrap_or(0),
        peak: field("VmHWM:").unwrap_or(0),
        pss: roll("Pss:"),
        private: roll("Private_Clean:") + roll("Private_Dirty:"),
    })
}

/// CPU time (user + system) a process has used so far, from `/proc/PID/stat`.
pub fn cpu_time(pid: u32) -> Option<std::time::Duration> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // fields after the command name (which may contain spaces) start after the last ')'
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // /proc reports clock ticks of USER_HZ, which the kernel ABI fixes at 100 on Linux
    let hz = 100;
    Some(std::time::Duration::from_millis(ticks * 1000 / hz))
}
