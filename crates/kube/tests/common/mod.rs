//! Shared test support: visible skips and a snapshot of the host state a cluster may touch.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// One line to the real stderr (not captured by the harness): progress and timings.
pub fn report(line: &str) {
    let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
}

/// A program on `PATH` (panics when absent: the tests check their tools first).
pub fn which(p: &str) -> std::path::PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(p))
        .find(|f| f.is_file())
        .unwrap_or_else(|| panic!("{p} is not on PATH"))
}

/// `$KUBE_BIN`, else the newest complete folder of scripts/install-kubernetes.sh's cache (never
/// builds: the build takes about 20 minutes).
pub fn kube_bin() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("KUBE_BIN") {
        return Some(std::path::PathBuf::from(p));
    }
    let cache = std::env::var_os("CONSTELLATION_CACHE")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(|x| std::path::PathBuf::from(x).join("constellation"))
        })
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| std::path::PathBuf::from(h).join(".cache/constellation"))
        })?;
    let mut dirs: Vec<std::path::PathBuf> = std::fs::read_dir(cache.join("kubernetes"))
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| kube_node::control_plane::KubeBinaries::locate(b).is_ok())
        .collect();
    dirs.sort();
    dirs.pop()
}

/// Prints `SKIPPED: <why>` to the real stderr (not captured by the harness).
pub fn skip(why: &str) {
    let _ = std::io::stderr().write_all(format!("SKIPPED: {why}\n").as_bytes());
}

fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

/// `Some(reason)` when the namespace tests cannot run here.
pub fn missing_root_or_tools(tools: &[&str]) -> Option<String> {
    let uid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX);
    if uid != 0 {
        return Some("needs root (namespaces, mounts)".into());
    }
    for t in tools {
        if !have(t) {
            return Some(format!(
                "program {t} not installed (scripts/install-deps.sh)"
            ));
        }
    }
    None
}

/// What a cluster could leave behind on the host.
#[derive(Debug, PartialEq, Eq)]
pub struct HostSnapshot {
    netns: String,
    links: BTreeSet<String>,
    mounts: BTreeSet<String>,
    sysctls: Vec<(String, String)>,
    paths: Vec<(String, bool)>,
    cgroups: BTreeSet<String>,
    processes: BTreeSet<String>,
    iptables: String,
}

const SYSCTLS: &[&str] = &[
    "net.ipv4.ip_forward",
    "net.bridge.bridge-nf-call-iptables",
    "fs.inotify.max_user_instances",
    "fs.inotify.max_user_watches",
    "kernel.panic",
    "kernel.panic_on_oops",
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
];

const PATHS: &[&str] = &[
    "/run/constellation-kube",
    "/run/containerd",
    "/run/netns",
    "/var/lib/cni",
    "/var/lib/containerd",
    "/etc/cni",
    "/var/lib/kubelet",
    "/etc/kubernetes",
];

impl HostSnapshot {
    /// `marker`: a string (cluster name, state folder) that the cluster's processes, mounts and
    /// cgroups carry.
    pub fn take(marker: &str) -> HostSnapshot {
        let out = |args: &[&str]| {
            std::process::Command::new(args[0])
                .args(&args[1..])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        let links = out(&["ip", "-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(':').nth(1).map(|s| s.trim().to_owned()))
            .collect();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                l.contains(" nsfs ")
                    || l.contains("constellation-kube")
                    || l.contains("/run/containerd")
                    || l.contains(marker)
            })
            // mount ids differ between runs; keep mount point, fs type, source
            .map(|l| l.split(' ').skip(4).collect::<Vec<_>>().join(" "))
            .collect();
        let sysctls = SYSCTLS
            .iter()
            .map(|k| {
                let p = Path::new("/proc/sys").join(k.replace('.', "/"));
                (
                    k.to_string(),
                    std::fs::read_to_string(p).unwrap_or_default(),
                )
            })
            .collect();
        let paths = PATHS
            .iter()
            .map(|p| (p.to_string(), Path::new(p).exists()))
            .collect();
        let mut cgroups = BTreeSet::new();
        if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
            for h in rd.flatten() {
                if let Ok(sub) = std::fs::read_dir(h.path()) {
                    for c in sub.flatten() {
                        // every top-level cgroup (kubelet's cgroupRoot, ctr's defaults, strays)
                        if c.file_type().is_ok_and(|t| t.is_dir()) {
                            cgroups.insert(c.path().display().to_string());
                        }
                    }
                }
            }
        }
        let me = std::process::id().to_string();
        let processes = std::fs::read_dir("/proc")
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_name().to_string_lossy() != me)
                    .filter_map(|e| {
                        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
                        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                        cmd.contains(marker)
                            .then(|| format!("{} {cmd}", e.file_name().to_string_lossy()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let iptables = ["filter", "nat", "mangle", "raw"]
            .iter()
            .map(|t| out(&["iptables", "-t", t, "-S"]))
            .collect();
        HostSnapshot {
            iptables,
            netns: out(&["ip", "netns", "list"]),
            links,
            mounts,
            sysctls,
            paths,
            cgroups,
            processes,
        }
    }
}

/// Runs `body`, then checks that the host looks as before, also when `body` panicked (the
/// panic is re-raised after the check).
pub fn guarded(marker: &str, body: impl FnOnce()) {
    let _serial = serial();
    let before = HostSnapshot::take(marker);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
    let after = HostSnapshot::take(marker);
    if before != after {
        let _ = std::io::stderr().write_all(
            format!("host not left as found:\nbefore: {before:#?}\nafter: {after:#?}\n").as_bytes(),
        );
    }
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
    assert_eq!(before, after, "host state changed by the test");
}

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Tests of one binary that snapshot the host run one at a time (the harness runs them on threads).
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A cluster name unique to this test process.
pub fn cluster_name(tag: &str) -> String {
    format!("t{}-{tag}", std::process::id())
}

/// The preconditions of a test that runs Kubernetes nodes: root, the node-runtime programs and
/// the Kubernetes build. `None` after printing why the test is skipped.
#[allow(dead_code)] // not every test file runs Kubernetes
pub fn kube_binaries_or_skip() -> Option<kube_node::control_plane::KubeBinaries> {
    if let Some(why) = missing_root_or_tools(&[
        "ip",
        "unshare",
        "nsenter",
        "containerd",
        "ctr",
        "runc",
        "busybox",
        "cc",
    ]) {
        skip(&why);
        return None;
    }
    let Some(bin) = kube_bin() else {
        skip("Kubernetes binaries not built (KUBE_BIN=$(scripts/install-kubernetes.sh))");
        return None;
    };
    match kube_node::control_plane::KubeBinaries::locate(&bin) {
        Ok(b) => Some(b),
        Err(e) => {
            skip(&e.to_string());
            None
        }
    }
}

/// Runs `f` to completion on a current-thread runtime.
#[allow(dead_code)]
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}
