//! `constellation mini up` / `apply` / `status` / `terminate` end to end, driving the real
//! `constellation` binary as a user would, with real swtpm, real node processes and real etcd.
//!
//! Every test has its own temporary workspace and its own random loopback base address
//! (127.x.y.1), so tests never collide with each other or with a user's cluster. A guard
//! terminates the workspace's cluster when a test ends, also when it fails, and then kills any
//! process still naming the workspace in its command line.
//!
//! Synchronisation is by reading the CLI's progress lines and by polling conditions with a
//! deadline; never by sleeping. This machine's PID 1 may not reap zombies: a process in state
//! `Z` counts as gone.
//!
//! Needs `constellation-node` next to `constellation` (cargo builds both for
//! `cargo test --workspace`; for `cargo test -p cli` run `cargo build -p node` first).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure is a test failure

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod support;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use support::random_base;

const BIN: &str = env!("CARGO_BIN_EXE_constellation");
const CONFIG_FILE: &str = "constellation-conf.yaml";
const STATE_FILE: &str = "constellation-state.yaml";
const MASTER_SECRET_FILE: &str = "constellation-mastersecret.json";
const ADMIN_CONF_FILE: &str = "constellation-admin.conf";
const LOCAL_DIR: &str = "constellation-local";
/// How long any single wait may take before the test fails (generous: 2 loaded cores).
const DEADLINE: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// State and start time from `/proc/<pid>/stat`.
fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some((f.first()?.chars().next()?, f.get(19)?.parse().ok()?))
}

/// A process identified by pid and start time (as the local cloud records it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Proc {
    pid: u32,
    start: u64,
}

impl Proc {
    fn of(pid: u32) -> Option<Proc> {
        proc_stat(pid).map(|(_, start)| Proc { pid, start })
    }
    /// Alive and still the same process; a zombie is dead.
    fn alive(&self) -> bool {
        matches!(proc_stat(self.pid), Some((s, t)) if s != 'Z' && s != 'X' && t == self.start)
    }
    fn signal(&self, sig: Signal) {
        if self.alive() {
            let _ = kill(Pid::from_raw(self.pid as i32), sig);
        }
    }
}

/// Every live process (not zombie, not this test) whose command line names `ws`.
fn procs_naming(ws: &Path) -> Vec<(Proc, String)> {
    let needle = format!("{}/", ws.display());
    let me = std::process::id();
    let mut out = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
        if !cmd.contains(&needle) {
            continue;
        }
        if let Some(p) = Proc::of(pid).filter(Proc::alive) {
            out.push((p, cmd.trim().to_string()));
        }
    }
    out
}

/// Polls `cond` until it holds; panics with `what` after [`DEADLINE`].
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Node processes and TPMs recorded in the local cloud state (`constellation-local/cloud.json`).
#[derive(Debug, Clone)]
struct CloudNode {
    name: String,
    process: Option<Proc>,
    swtpm: Option<Proc>,
}

fn rec(v: &Value) -> Option<Proc> {
    Some(Proc {
        pid: v.get("pid")?.as_u64()? as u32,
        start: v.get("start_time")?.as_u64()?,
    })
}

fn cloud(ws: &Path) -> Option<(Value, Vec<CloudNode>)> {
    let bytes = std::fs::read(ws.join(LOCAL_DIR).join("cloud.json")).ok()?;
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    let nodes = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| CloudNode {
            name: n["name"].as_str().unwrap().to_string(),
            process: rec(&n["process"]),
            swtpm: rec(&n["swtpm"]),
        })
        .collect();
    Some((v, nodes))
}

// ---------------------------------------------------------------------------------------------
// Workspace
// ---------------------------------------------------------------------------------------------

/// A temporary workspace with a `local` config on a random base address. Dropping it
/// terminates its cluster and kills whatever still names the workspace.
struct Workspace {
    dir: tempfile::TempDir,
    base: Ipv4Addr,
    /// Processes the test stopped (SIGSTOP): continued before cleaning up.
    stopped: Vec<Proc>,
}

impl Workspace {
    /// `constellation config generate local`, then the base address set to a random one.
    fn new() -> Workspace {
        let dir = tempfile::Builder::new()
            .prefix("mini-e2e-")
            .tempdir()
            .unwrap();
        let ws = Workspace {
            dir,
            base: random_base(),
            stopped: vec![],
        };
        ws.ok(&["config", "generate", "local"]);
        let path = ws.path().join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).unwrap();
        let mut found = false;
        let edited: Vec<String> = text
            .lines()
            .map(|l| {
                if l.trim_start().starts_with("baseAddress:") {
                    found = true;
                    let indent = &l[..l.len() - l.trim_start().len()];
                    format!("{indent}baseAddress: \"{}\"", ws.base)
                } else {
                    l.to_string()
                }
            })
            .collect();
        assert!(found, "the generated config has no baseAddress:\n{text}");
        std::fs::write(&path, edited.join("\n") + "\n").unwrap();
        let cfg = config::Config::load(&path).unwrap();
        assert_eq!(cfg.local().unwrap().base_address, ws.base);
        ws
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Sets PCR `index`'s expected value in the config to `hex_value`; returns the config text
    /// before the change (to restore it) and the old value.
    fn replace_measurement(&self, index: u32, hex_value: &str) -> (String, String) {
        let path = self.file(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).unwrap();
        let old = config::Config::load(&path)
            .unwrap()
            .measurements()
            .get(index)
            .map(|m| hex::encode(&m.expected))
            .unwrap();
        std::fs::write(&path, text.replace(&old, hex_value)).unwrap();
        (text, old)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.path().join(name)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        // The fast mode without Kubernetes: these tests are about the attestation core and
        // the lifecycle (crates/cli/tests/kubernetes.rs runs Kubernetes).
        c.env("CONSTELLATION_KUBERNETES", "off");
        c.arg("-C")
            .arg(self.path())
            .args(args)
            .env_remove("RUST_LOG");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run constellation")
    }

    /// Runs a command that must succeed; on failure panics with its output and the node logs.
    fn ok(&self, args: &[&str]) -> Output {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "`constellation {}` failed ({}):\n--- stdout\n{}--- stderr\n{}{}",
            args.join(" "),
            o.status,
            text(&o.stdout),
            text(&o.stderr),
            self.logs()
        );
        o
    }

    /// The node, TPM and etcd logs (for failure messages).
    fn logs(&self) -> String {
        let mut out = String::new();
        let Ok(nodes) = std::fs::read_dir(self.path().join(LOCAL_DIR).join("nodes")) else {
            return out;
        };
        for n in nodes.flatten() {
            for f in ["node.log", "etcd.log", "tpm/swtpm.log"] {
                let p = n.path().join(f);
                if let Ok(t) = std::fs::read_to_string(&p) {
                    out.push_str(&format!("--- {}\n{t}", p.display()));
                }
            }
        }
        out
    }

    fn status_json(&self) -> Value {
        let o = self.ok(&["status", "-o", "json"]);
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// The cluster ID in the state file, if any.
    fn state_cluster_id(&self) -> Option<String> {
        let p = self.file(STATE_FILE);
        if !p.exists() {
            return None;
        }
        config::state::State::load(&p)
            .unwrap()
            .cluster_id()
            .map(|c| c.to_hex())
    }

    fn cloud_nodes(&self) -> Vec<CloudNode> {
        cloud(self.path()).map(|c| c.1).unwrap_or_default()
    }

    fn node(&self, name: &str) -> CloudNode {
        self.cloud_nodes()
            .into_iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name} in cloud.json"))
    }

    /// Stops a process (SIGSTOP) and remembers to continue it on cleanup.
    fn freeze(&mut self, p: Proc) {
        assert!(p.alive(), "process {} to freeze is not running", p.pid);
        self.stopped.push(p);
        p.signal(Signal::SIGSTOP);
        wait_until("the frozen process to stop", || {
            matches!(proc_stat(p.pid), Some(('T', _)) | Some(('t', _)))
        });
    }

    /// `terminate -y` must succeed and leave no process of the cluster running: none of the
    /// recorded node processes and TPMs, nothing naming the workspace (etcd included).
    fn terminate_and_check_clean(&self) {
        let recorded: Vec<Proc> = self
            .cloud_nodes()
            .iter()
            .flat_map(|n| [n.process, n.swtpm])
            .flatten()
            .collect();
        let before = procs_naming(self.path());
        self.ok(&["terminate", "-y"]);
        for p in recorded.iter().chain(before.iter().map(|(p, _)| p)) {
            wait_until(&format!("process {} to end after terminate", p.pid), || {
                !p.alive()
            });
        }
        let left = procs_naming(self.path());
        assert!(
            left.is_empty(),
            "processes of the cluster survived terminate: {left:#?}"
        );
        assert!(
            !self.file(LOCAL_DIR).exists(),
            "constellation-local/ remains"
        );
        assert!(!self.file(STATE_FILE).exists());
        assert!(!self.file(ADMIN_CONF_FILE).exists());
        assert!(
            self.file(CONFIG_FILE).exists(),
            "terminate removed the config"
        );
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        for p in &self.stopped {
            p.signal(Signal::SIGCONT);
        }
        if self.file(LOCAL_DIR).exists() {
            let _ = self.command(&["terminate", "-y"]).output();
        }
        // Whatever terminate missed (only processes this test's cluster started name the
        // workspace): kill it, so a failing test leaves nothing behind.
        for (p, _) in procs_naming(self.path()) {
            p.signal(Signal::SIGKILL);
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The value after `Cluster ID:` in the CLI's output.
fn printed_cluster_id(stdout: &[u8]) -> String {
    text(stdout)
        .lines()
        .find_map(|l| l.strip_prefix("Cluster ID:").map(|v| v.trim().to_string()))
        .unwrap_or_else(|| panic!("no cluster ID printed:\n{}", text(stdout)))
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The value a node of cluster `id` has in PCR 15.
fn expected_pcr15(id: &str) -> String {
    let id = keys::ClusterId::from_slice(&hex::decode(id).unwrap()).unwrap();
    hex::encode(id.expected_pcr15())
}

/// PCR 15 read from control-plane-0's TPM itself (not from what the node reports), through
/// the node's own TPM folder.
fn tpm_pcr15(ws: &Workspace) -> String {
    let dir = ws
        .path()
        .join("constellation-local/nodes/control-plane-0/tpm");
    let t = tpm::Tpm::open(&tpm::SwtpmConfig::new(dir).tcti()).unwrap();
    hex::encode(t.read_pcrs_sha256().unwrap()[&15])
}

fn node_json<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == name)
        .unwrap_or_else(|| panic!("no node {name} in status: {status:#}"))
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

// ---------------------------------------------------------------------------------------------
// A running CLI whose progress lines the test follows
// ---------------------------------------------------------------------------------------------

struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    /// Starts `constellation` with SIGINT at its default action, as in a terminal: a test
    /// harness started in the background by a non-interactive shell inherits SIGINT ignored,
    /// and `exec` keeps that (coreutils' `env --default-signal` undoes it; the pid stays ours).
    fn start(ws: &Workspace, args: &[&str]) -> Running {
        let cmd = ws.command(args);
        let mut child = Command::new("env")
            .arg("--default-signal=INT")
            .env("CONSTELLATION_KUBERNETES", "off")
            .arg(cmd.get_program())
            .args(cmd.get_args())
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines: rx,
            seen: vec![],
        }
    }

    /// Reads progress lines until one contains `needle`; panics at EOF or after the deadline.
    fn wait_for_line(&mut self, needle: &str) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let hit = l.contains(needle);
                    self.seen.push(l);
                    if hit {
                        return;
                    }
                }
                Err(e) => panic!(
                    "no line containing {needle:?} ({e:?}); the CLI printed:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    fn kill(mut self, sig: Signal) -> (ExitStatus, Vec<String>) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), sig);
        let status = self.child.wait().unwrap();
        // The pipe closes with the process: collect the rest.
        while let Ok(l) = self.lines.recv_timeout(DEADLINE) {
            self.seen.push(l);
        }
        (status, std::mem::take(&mut self.seen))
    }
}

impl Drop for Running {
    /// A test that fails while following the CLI must not leave it running.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// The acceptance path: `mini up` → `status` shows an initialized control-plane node whose PCR 15
/// is derived from the cluster ID → `terminate -y` leaves no process behind.
#[test]
fn mini_up_status_terminate() {
    let ws = Workspace::new();
    let up = ws.ok(&["mini", "up"]);
    let id = printed_cluster_id(&up.stdout);

    // Files: master secret 0600, state file with a 64-hex cluster ID, admin credentials 0600.
    assert_eq!(mode(&ws.file(MASTER_SECRET_FILE)), 0o600);
    assert_eq!(mode(&ws.file(ADMIN_CONF_FILE)), 0o600);
    let state_id = ws
        .state_cluster_id()
        .expect("no cluster ID in the state file");
    assert!(is_hex64(&state_id), "cluster ID {state_id:?} is not 64 hex");
    assert_eq!(state_id, id);
    let state_text = std::fs::read_to_string(ws.file(STATE_FILE)).unwrap();
    assert!(
        state_text.contains(&format!("clusterID: {id}")),
        "{state_text}"
    );

    // status (table).
    let table = text(&ws.ok(&["status"]).stdout);
    assert!(table.contains("Initialized: yes"), "{table}");
    assert!(table.contains(&format!("Cluster ID:  {id}")), "{table}");
    let cp_line = table
        .lines()
        .find(|l| l.starts_with("control-plane-0"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(cp_line.contains("control-plane"), "{cp_line}");
    assert!(cp_line.contains(&ws.base.to_string()), "{cp_line}");
    assert!(cp_line.contains("initialized"), "{cp_line}");

    // status -o json: the control-plane node is initialized, PCR 15 derived from the ID.
    let st = ws.status_json();
    assert_eq!(st["initialized"], true, "{st:#}");
    assert_eq!(st["cluster_id"], id.as_str());
    assert_eq!(st["variant"], "local-vtpm");
    let cp = node_json(&st, "control-plane-0");
    assert_eq!(cp["role"], "control-plane");
    assert_eq!(cp["address"], ws.base.to_string().as_str());
    assert_eq!(cp["running"], true);
    assert_eq!(cp["tpm_running"], true);
    assert_eq!(cp["phase"], "initialized", "{cp:#}");
    assert_eq!(cp["cluster_id"], id.as_str());
    let pcr15 = expected_pcr15(&id);
    assert_eq!(cp["pcr15"], pcr15.as_str(), "{cp:#}");
    // … and the TPM itself agrees with what the node reports.
    assert_eq!(tpm_pcr15(&ws), pcr15);

    // Every process of the cluster names the workspace; etcd runs on the control plane, from
    // the node's measured copy.
    let procs = procs_naming(ws.path());
    assert!(
        procs.iter().any(|(_, c)| c.contains("/boot/etcd ")),
        "no etcd process: {procs:#?}"
    );
    let nodes = ws.cloud_nodes();
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    for n in &nodes {
        for p in [n.process.unwrap(), n.swtpm.unwrap()] {
            assert!(p.alive(), "{} process {} is not running", n.name, p.pid);
            assert!(
                procs.iter().any(|(q, _)| q == &p),
                "{}'s process {} does not name the workspace",
                n.name,
                p.pid
            );
        }
    }

    ws.terminate_and_check_clean();
    assert!(
        ws.file(MASTER_SECRET_FILE).exists(),
        "terminate removed the master secret"
    );
    let st = ws.run(&["status"]);
    assert!(
        text(&st.stdout).contains("No cluster"),
        "{}",
        text(&st.stdout)
    );
}

/// One changed byte in a component of the image the node boots: the node's PCR 11 differs from
/// the config's measurements, apply refuses and names the PCR, and no secret reaches the node.
#[test]
fn tampered_image_component_is_refused() {
    let ws = Workspace::new();
    let cfg = config::Config::load(&ws.file(CONFIG_FILE)).unwrap();
    let expected11 = hex::encode(&cfg.measurements().get(11).unwrap().expected);

    // The content-addressed image `apply` builds for this installation (crate provider-local,
    // as `cloudcmd::apply` does), built ahead of apply and then tampered with: apply finds and
    // boots it. The config's measurements were computed from the untampered programs.
    let sources = provider_local::image::Sources::default_for_exe(
        &provider_local::provider::image_version(),
        false,
    )
    .unwrap();
    let images = ws.path().join(LOCAL_DIR).join("images");
    std::fs::create_dir_all(&images).unwrap();
    let image = provider_local::image::NodeImage::build(&sources, &images).unwrap();
    let etcd = image
        .component_path(provider_local::image::ETCD_BINARY)
        .unwrap();
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&etcd)
        .unwrap();
    let at = f.metadata().unwrap().len() / 2;
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&[b[0] ^ 0x01]).unwrap();
    drop(f);
    let actual11 = {
        let events = image.measure_boot(attestation::Variant::LocalVtpm).unwrap();
        let m = provider_local::pcr::measurements_from_events(&events);
        hex::encode(&m.get(11).unwrap().expected)
    };
    assert_ne!(expected11, actual11);

    let out = ws.run(&["apply"]);
    let err = text(&out.stderr);
    assert!(
        !out.status.success(),
        "apply accepted a tampered node:\n{err}"
    );
    assert!(err.contains("failed attestation"), "{err}");
    assert!(err.contains("nothing secret was sent"), "{err}");
    assert!(
        err.contains("PCR 11"),
        "the error does not name PCR 11:\n{err}"
    );
    assert!(err.contains(&expected11), "no expected value:\n{err}");
    assert!(err.contains(&actual11), "no actual value:\n{err}");
    assert!(!err.contains("PCR 4:"), "only PCR 11 differs:\n{err}");

    // The node booted the tampered image and never got the master secret.
    let (cloud_json, _) = cloud(ws.path()).unwrap();
    assert_eq!(
        Path::new(cloud_json["image_dir"].as_str().unwrap()),
        image.dir,
        "the node did not boot the tampered image"
    );
    assert_eq!(ws.state_cluster_id(), None);
    // The node writes its first status report after it starts serving: wait for it.
    let mut st = ws.status_json();
    wait_until("the node's first status report", || {
        st = ws.status_json();
        !node_json(&st, "control-plane-0")["phase"].is_null()
    });
    assert_eq!(st["initialized"], false);
    let cp = node_json(&st, "control-plane-0");
    assert_eq!(cp["phase"], "waiting", "{cp:#}");
    assert_eq!(cp["cluster_id"], Value::Null);
    assert_eq!(tpm_pcr15(&ws), "00".repeat(32));
    assert!(!ws.file(ADMIN_CONF_FILE).exists());

    // Re-running does not change the verdict.
    let again = ws.run(&["apply"]);
    assert!(!again.status.success());
    assert!(text(&again.stderr).contains("PCR 11"));
    assert_eq!(ws.state_cluster_id(), None);

    ws.terminate_and_check_clean();
}

/// Occupies `port` on the control-plane node's address; apply must fail naming it and saying
/// what to do. Returns the failed apply's stderr.
fn apply_fails_on_busy_port(ws: &Workspace, port: u16, l: &TcpListener) -> String {
    assert_eq!(l.local_addr().unwrap().port(), port);
    let out = ws.run(&["apply"]);
    let err = text(&out.stderr);
    assert!(
        !out.status.success(),
        "apply succeeded although {}:{port} is taken:\n{err}{}",
        ws.base,
        ws.logs()
    );
    assert!(
        err.contains(&format!("{}:{port}", ws.base)),
        "the error does not name {}:{port}:\n{err}",
        ws.base
    );
    assert!(err.contains("in use"), "{err}");
    assert!(
        err.contains("hint:") && err.contains("baseAddress"),
        "no hint what to do:\n{err}"
    );
    assert_eq!(ws.state_cluster_id(), None);
    assert!(!ws.file(ADMIN_CONF_FILE).exists());
    err
}

/// The Init port of the control-plane node is taken: apply fails clearly; terminate after the
/// half-done apply leaves nothing; with the port free again, apply completes.
#[test]
fn init_port_in_use_then_terminate_then_apply() {
    let ws = Workspace::new();
    let l = TcpListener::bind(SocketAddrV4::new(ws.base, 9000)).unwrap();
    apply_fails_on_busy_port(&ws, 9000, &l);
    ws.terminate_and_check_clean();
    drop(l);
    let up = ws.ok(&["apply"]);
    let id = printed_cluster_id(&up.stdout);
    assert_eq!(ws.state_cluster_id().as_deref(), Some(id.as_str()));
    assert_eq!(tpm_pcr15(&ws), expected_pcr15(&id));
    ws.terminate_and_check_clean();
}

/// etcd's client port on the control-plane node is taken: apply fails before any secret is
/// sent (the node would otherwise be initialized without its etcd); freeing the port and
/// re-running apply (no terminate in between) completes.
#[test]
fn etcd_port_in_use_then_apply_again() {
    let ws = Workspace::new();
    let l = TcpListener::bind(SocketAddrV4::new(ws.base, 2379)).unwrap();
    apply_fails_on_busy_port(&ws, 2379, &l);
    let st = ws.status_json();
    assert_eq!(st["initialized"], false);
    drop(l);
    let up = ws.ok(&["apply"]);
    let id = printed_cluster_id(&up.stdout);
    let st = ws.status_json();
    let cp = node_json(&st, "control-plane-0");
    assert_eq!(cp["phase"], "initialized", "{cp:#}");
    assert!(
        procs_naming(ws.path())
            .iter()
            .any(|(_, c)| c.contains("/boot/etcd ")),
        "etcd is not running"
    );
    assert_eq!(tpm_pcr15(&ws), expected_pcr15(&id));
    ws.terminate_and_check_clean();
}

/// `apply` interrupted twice (Ctrl-C during the infrastructure phase, SIGKILL while it waits for
/// the Bootstrapper, whose node was also killed): the next run completes, the master secret
/// written by the interrupted run is kept byte for byte, and the cluster is initialized once.
#[test]
fn interrupted_apply_completes_on_rerun() {
    let mut ws = Workspace::new();

    // 1. Ctrl-C once the first node has been started.
    let mut run = Running::start(&ws, &["apply"]);
    run.wait_for_line("infrastructure: started control-plane-0");
    let (status, lines) = run.kill(Signal::SIGINT);
    // The first Ctrl-C stops apply cleanly: exit status 130, the command to re-run named, and
    // no temporary file left in the workspace.
    assert_eq!(
        status.code(),
        Some(130),
        "apply was not interrupted cleanly ({status}):\n{}",
        lines.join("\n")
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("run `constellation apply` again")),
        "{}",
        lines.join("\n")
    );
    assert_eq!(temp_files(ws.path()), Vec::<PathBuf>::new());
    assert_eq!(ws.state_cluster_id(), None);
    let secret_1 = std::fs::read(ws.file(MASTER_SECRET_FILE)).ok();

    // 2. Freeze the control-plane node, so the next apply deterministically waits for its
    //    Bootstrapper; kill apply there, then kill the node too.
    let cp = ws.node("control-plane-0").process.unwrap();
    ws.freeze(cp);
    let mut run = Running::start(&ws, &["apply"]);
    run.wait_for_line("init: connecting to the Bootstrapper");
    let (status, lines) = run.kill(Signal::SIGKILL);
    assert_eq!(status.signal(), Some(Signal::SIGKILL as i32), "{status}");
    assert!(
        !lines.iter().any(|l| l.contains("started control-plane-0")),
        "apply restarted a running node:\n{}",
        lines.join("\n")
    );
    let secret_2 = std::fs::read(ws.file(MASTER_SECRET_FILE))
        .expect("the master secret is written before init connects");
    if let Some(s1) = &secret_1 {
        assert_eq!(s1, &secret_2, "the master secret was replaced");
    }
    assert_eq!(mode(&ws.file(MASTER_SECRET_FILE)), 0o600);
    assert_eq!(ws.state_cluster_id(), None);
    cp.signal(Signal::SIGKILL);
    wait_until("the killed node to end", || !cp.alive());

    // 3. Re-run: restarts the killed node and completes.
    let up = ws.ok(&["apply"]);
    let err = text(&up.stderr);
    assert!(
        err.contains("started control-plane-0"),
        "the killed node was not restarted:\n{err}"
    );
    assert!(
        err.contains("init: using the existing master secret"),
        "{err}"
    );
    let id = printed_cluster_id(&up.stdout);
    assert_eq!(ws.state_cluster_id().as_deref(), Some(id.as_str()));
    assert_eq!(
        std::fs::read(ws.file(MASTER_SECRET_FILE)).unwrap(),
        secret_2
    );
    let st = ws.status_json();
    assert_eq!(node_json(&st, "control-plane-0")["phase"], "initialized");

    // 4. A third run is a no-op: same cluster ID, same secret, and PCR 15 extended exactly once.
    let again = ws.ok(&["apply"]);
    let err = text(&again.stderr);
    assert!(err.contains("cluster already initialized"), "{err}");
    assert!(!err.contains("started "), "apply created something:\n{err}");
    assert_eq!(printed_cluster_id(&again.stdout), id);
    assert_eq!(ws.state_cluster_id().as_deref(), Some(id.as_str()));
    assert_eq!(
        std::fs::read(ws.file(MASTER_SECRET_FILE)).unwrap(),
        secret_2
    );
    assert_eq!(tpm_pcr15(&ws), expected_pcr15(&id));

    ws.terminate_and_check_clean();
}

/// A node killed after init leaves its children (etcd) running in its process group;
/// terminate must still stop every one of them.
#[test]
fn killed_node_then_terminate_leaves_nothing() {
    let ws = Workspace::new();
    ws.ok(&["mini", "up"]);
    let cp = ws.node("control-plane-0").process.unwrap();
    let etcd: Vec<Proc> = procs_naming(ws.path())
        .into_iter()
        .filter(|(_, c)| c.contains("/boot/etcd "))
        .map(|(p, _)| p)
        .collect();
    assert_eq!(etcd.len(), 1, "one etcd expected");
    cp.signal(Signal::SIGKILL);
    wait_until("the killed node to end", || !cp.alive());
    let st = ws.status_json();
    assert_eq!(node_json(&st, "control-plane-0")["running"], false);
    ws.terminate_and_check_clean();
}

/// A full control-plane outage (the only control-plane node crashes with its etcd): `apply`
/// restarts it and says to run `recover`. `recover` refuses the master secret of another
/// cluster before any node sees it, and a node whose measurements differ without sending
/// anything; then it recovers the node, which comes back with its data (a new worker joins
/// through it) and PCR 15 of the same cluster. A second `recover` does nothing.
#[test]
fn full_control_plane_outage_then_recover() {
    let ws = Workspace::new();
    let up = ws.ok(&["apply"]);
    let id = printed_cluster_id(&up.stdout);
    let cp = ws.node("control-plane-0").process.unwrap();
    let _ = kill(Pid::from_raw(-(cp.pid as i32)), Signal::SIGKILL);
    wait_until("the killed node to end", || !cp.alive());

    let o = ws.run(&["apply"]);
    let err = text(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("started control-plane-0"), "{err}");
    assert!(err.contains("run `constellation recover`"), "{err}");
    let st = ws.status_json();
    let n = node_json(&st, "control-plane-0");
    assert_eq!(n["phase"], "awaiting-recovery", "{n:#}");
    assert_eq!(n["pcr15_state"], "zero", "{n:#}");

    // Another cluster's master secret: refused here, nothing changes.
    let secret = std::fs::read(ws.file(MASTER_SECRET_FILE)).unwrap();
    let state = std::fs::read(ws.file(STATE_FILE)).unwrap();
    std::fs::remove_file(ws.file(MASTER_SECRET_FILE)).unwrap();
    config::secret::write_new(
        &ws.file(MASTER_SECRET_FILE),
        &keys::MasterSecret::generate().unwrap(),
    )
    .unwrap();
    let o = ws.run(&["recover"]);
    let err = text(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("does not belong to the cluster"), "{err}");
    assert!(!err.contains("connecting"), "a node was contacted:\n{err}");
    std::fs::write(ws.file(MASTER_SECRET_FILE), &secret).unwrap();

    // A measurement the node does not meet: attestation refused, nothing sent.
    let cfg_path = ws.file(CONFIG_FILE);
    let (cfg, _) = ws.replace_measurement(9, &"9".repeat(64));
    let o = ws.run(&["recover"]);
    let err = text(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("PCR 9") && err.contains("nothing secret was sent"),
        "{err}"
    );
    assert_eq!(
        node_json(&ws.status_json(), "control-plane-0")["phase"],
        "awaiting-recovery"
    );
    std::fs::write(&cfg_path, &cfg).unwrap();

    // Recovery.
    let o = ws.ok(&["recover"]);
    let out = text(&o.stdout);
    assert!(out.contains("Recovered 1 control-plane node(s)."), "{out}");
    assert!(out.contains("2/2 cluster members"), "{out}");
    let st = ws.status_json();
    let n = node_json(&st, "control-plane-0");
    assert_eq!(n["phase"], "joined", "{n:#}");
    assert_eq!(n["admitted_by"], "recover", "{n:#}");
    assert_eq!(tpm_pcr15(&ws), expected_pcr15(&id));
    ws.ok(&["verify"]);
    assert_eq!(std::fs::read(ws.file(MASTER_SECRET_FILE)).unwrap(), secret);
    assert_eq!(std::fs::read(ws.file(STATE_FILE)).unwrap(), state);

    // The recovered control plane admits a new node (its etcd data and master secret are back).
    let cfg = std::fs::read_to_string(&cfg_path).unwrap();
    let (head, tail) = cfg.split_once("\n  worker_default:").unwrap();
    let tail = tail.replacen("initialCount: 1", "initialCount: 2", 1);
    std::fs::write(&cfg_path, format!("{head}\n  worker_default:{tail}")).unwrap();
    let o = ws.ok(&["apply"]);
    assert!(text(&o.stdout).contains("3/3 attested and joined"));

    let o = ws.ok(&["recover"]);
    let out = text(&o.stdout);
    assert!(
        out.contains("No control-plane nodes in need of recovery found."),
        "{out}"
    );
    ws.terminate_and_check_clean();
}

/// `verify` asks every node for a fresh attestation: all verify against the cluster ID, with
/// PCR 15 as derived from it. Against another cluster ID, a changed measurement in the config,
/// or with a node down, verify fails (exit 1) and says for which node and PCR, expected and
/// actual; the other PCRs and nodes are still reported. Nothing in the workspace changes.
#[test]
fn verify_every_node_and_explain_failures() {
    let ws = Workspace::new();
    let up = ws.ok(&["apply"]);
    let id = printed_cluster_id(&up.stdout);
    let pcr15 = expected_pcr15(&id);
    let before = workspace_digest(ws.path());

    let out = ws.ok(&["verify", "-o", "json"]);
    assert!(text(&out.stderr).contains("Verification OK"));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["cluster_id"], id.as_str());
    let nodes = report["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2, "{report:#}");
    for n in nodes {
        assert_eq!(n["verified"], true, "{n:#}");
        let p15 = pcr(n, 15);
        assert_eq!(p15["actual"], pcr15.as_str(), "{n:#}");
        assert_eq!(p15["expected"], pcr15.as_str());
        assert!(n["pcrs"].as_array().unwrap().len() > 3, "{n:#}");
    }

    // Another cluster ID: PCR 15 differs on every node, each PCR still listed.
    let other = "ab".repeat(32);
    let o = ws.run(&["verify", "--cluster-id", &other]);
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(
        err.contains("verification failed for 2 of 2 node(s)"),
        "{err}"
    );
    for name in ["control-plane-0", "worker-0"] {
        let line = out.lines().find(|l| l.starts_with(name)).unwrap();
        assert!(line.contains("FAILED"), "{line}");
        assert!(
            line.contains(&format!("PCR 15: expected {}", expected_pcr15(&other)))
                && line.contains(&format!("got {pcr15}"))
                && line.contains("another cluster"),
            "{line}"
        );
    }

    // A changed measurement in the config: named with both values; nothing else fails.
    let cfg_path = ws.file(CONFIG_FILE);
    let wrong9 = "9".repeat(64);
    let (cfg, pcr9) = ws.replace_measurement(9, &wrong9);
    let o = ws.run(&["verify", "-e", &ws.base.to_string()]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("control-plane-0"))
        .unwrap();
    assert!(
        line.contains(&format!("PCR 9: expected {wrong9}, got {pcr9}")),
        "{line}"
    );
    assert!(!line.contains("PCR 15"), "{line}");
    assert!(out.contains("DIFFERS") && out.contains(" ok"), "{out}");
    std::fs::write(&cfg_path, &cfg).unwrap();

    // A node down: reported as unreachable; the other still verifies.
    let w = ws.node("worker-0").process.unwrap();
    w.signal(Signal::SIGKILL);
    wait_until("the killed node to end", || !w.alive());
    let o = ws.run(&["verify", "-o", "json"]);
    assert_eq!(o.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    let by_name = |name: &str| {
        report["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(by_name("control-plane-0")["verified"], true);
    let w0 = by_name("worker-0");
    assert_eq!(w0["verified"], false);
    assert!(
        w0["error"]
            .as_str()
            .unwrap()
            .contains("cannot reach the verification service"),
        "{w0:#}"
    );

    // Bad input changes nothing.
    let o = ws.run(&["verify", "--cluster-id", "abc"]);
    assert!(
        text(&o.stderr).contains("64 hex digits"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(
        workspace_digest(ws.path()),
        before,
        "verify changed the workspace"
    );
    ws.terminate_and_check_clean();
}

fn pcr(node: &Value, index: u64) -> Value {
    node["pcrs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["index"] == index)
        .unwrap_or_else(|| panic!("no PCR {index}: {node:#}"))
        .clone()
}

/// Names and contents of the workspace's top-level files (config, state, secrets, credentials).
fn workspace_digest(ws: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(ws)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Drops the process records of `node` from cloud.json, as when apply is killed between
/// starting the node's TPM and node process and saving their records. Returns the dropped ones.
fn forget_records(ws: &Workspace, node: &str) -> Vec<Proc> {
    let path = ws.path().join(LOCAL_DIR).join("cloud.json");
    let (mut v, nodes) = cloud(ws.path()).unwrap();
    let n = nodes.iter().find(|n| n.name == node).unwrap();
    let dropped: Vec<Proc> = [n.process, n.swtpm].into_iter().flatten().collect();
    for rec in v["nodes"].as_array_mut().unwrap() {
        if rec["name"] == node {
            rec["process"] = Value::Null;
            rec["swtpm"] = Value::Null;
        }
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    dropped
}

/// An apply killed right after it started a node, before it saved the node's records, leaves
/// processes the cloud state does not know. The next apply must stop them (they hold the
/// node's ports and an old TPM) and complete; terminate must stop them too.
#[test]
fn unrecorded_node_processes_are_stopped_by_apply_and_terminate() {
    let ws = Workspace::new();
    ws.ok(&["create"]);
    let old = forget_records(&ws, "worker-0");
    assert_eq!(old.len(), 2);
    let up = ws.ok(&["apply"]);
    printed_cluster_id(&up.stdout);
    for p in &old {
        wait_until("the unrecorded process to be stopped", || !p.alive());
    }
    let w = ws.node("worker-0");
    assert!(w.process.unwrap().alive() && w.swtpm.unwrap().alive());
    // And terminate stops unrecorded processes as well (here: the control plane and its etcd).
    let cp_before: Vec<Proc> = procs_naming(ws.path())
        .into_iter()
        .filter(|(_, c)| c.contains("/nodes/control-plane-0"))
        .map(|(p, _)| p)
        .collect();
    assert!(
        cp_before.len() >= 3,
        "node, swtpm and etcd expected: {cp_before:?}"
    );
    forget_records(&ws, "control-plane-0");
    ws.terminate_and_check_clean();
    for p in &cp_before {
        assert!(
            !p.alive(),
            "unrecorded process {} survived terminate",
            p.pid
        );
    }
}

/// Apply dies after the node accepted Init but before the CLI recorded the result: the next
/// apply resumes with the recorded measurement salt, accepts the node's PCR 15 = this cluster's
/// value, and the node answers the repeated Init with the same cluster ID and fresh
/// credentials.
#[test]
fn apply_killed_during_init_rpc_completes_on_rerun() {
    let ws = Workspace::new();
    let mut run = Running::start(&ws, &["apply"]);
    run.wait_for_line("init: node attestation verified; sending the master secret");
    // Freeze the CLI once the node has taken the Init request, let the node finish, kill.
    let cli = Proc::of(run.child.id()).unwrap();
    let status_file = ws
        .path()
        .join(LOCAL_DIR)
        .join("nodes/control-plane-0/status.json");
    let phase = || -> String {
        std::fs::read(&status_file)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v["phase"].as_str().map(String::from))
            .unwrap_or_default()
    };
    wait_until("the node to start initializing", || phase() != "waiting");
    cli.signal(Signal::SIGSTOP);
    wait_until("the node to finish initializing", || {
        phase() == "initialized"
    });
    let _ = run.kill(Signal::SIGKILL);
    let up = ws.ok(&["apply"]);
    let id = printed_cluster_id(&up.stdout);
    assert_eq!(tpm_pcr15(&ws), expected_pcr15(&id));
    ws.terminate_and_check_clean();
}

/// Pids of every node process and TPM, to check that a refused command stopped nothing.
fn pids(ws: &Workspace) -> Vec<Proc> {
    ws.cloud_nodes()
        .iter()
        .flat_map(|n| [n.process, n.swtpm])
        .flatten()
        .collect()
}

/// Temporary files an atomic write left behind (`.<name>.tmp-…`), anywhere in the workspace.
fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(temp_files(&p));
        } else if e.file_name().to_string_lossy().contains(".tmp-") {
            out.push(p);
        }
    }
    out
}

/// The state file is lost (then damaged) while a 1+1 cluster runs: `status` still says the
/// cluster is initialized, `apply` refuses (naming how to restore) and stops nothing, and
/// `state rebuild` restores it after checking the master secret and every node.
#[test]
fn lost_or_damaged_state_file_never_leads_to_init_or_terminate() {
    let ws = Workspace::new();
    let up = ws.ok(&["mini", "up"]);
    let id = printed_cluster_id(&up.stdout);
    let before = pids(&ws);
    let state_bytes = std::fs::read(ws.file(STATE_FILE)).unwrap();

    std::fs::remove_file(ws.file(STATE_FILE)).unwrap();
    let st = ws.status_json();
    assert_eq!(st["initialized"], true, "{st:#}");
    assert_eq!(st["state_file"], "missing");
    assert_eq!(st["cluster_id"].as_str(), Some(id.as_str()));
    let table = text(&ws.ok(&["status"]).stdout);
    assert!(!table.contains("Initialized: no"), "{table}");

    let o = ws.run(&["apply"]);
    let err = text(&o.stderr);
    assert!(
        !o.status.success(),
        "apply succeeded without the state file:\n{err}"
    );
    assert!(
        err.contains("refusing to initialize again") && err.contains(&id),
        "{err}"
    );
    assert!(
        err.contains("state rebuild"),
        "no way to restore named:\n{err}"
    );
    assert!(
        !err.contains("terminate"),
        "a destructive step is suggested:\n{err}"
    );
    assert!(!ws.file(STATE_FILE).exists(), "apply wrote a state file");
    assert!(before.iter().all(Proc::alive), "apply stopped a node");
    assert_eq!(tpm_pcr15(&ws), expected_pcr15(&id));

    let rebuilt = ws.ok(&["state", "rebuild"]);
    assert!(
        text(&rebuilt.stdout).contains(&id),
        "{}",
        text(&rebuilt.stdout)
    );
    assert_eq!(ws.state_cluster_id().as_deref(), Some(id.as_str()));
    assert_eq!(mode(&ws.file(STATE_FILE)), 0o600);

    // Damaged: refused the same way; rebuild needs --force and keeps the damaged copy.
    std::fs::write(ws.file(STATE_FILE), b"version: v1\ninfrastructure: [\n").unwrap();
    let o = ws.run(&["apply"]);
    let err = text(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("state rebuild --force"), "{err}");
    assert!(!ws.run(&["state", "rebuild"]).status.success());
    ws.ok(&["state", "rebuild", "--force"]);
    assert!(ws.file(&format!("{STATE_FILE}.damaged")).exists());
    assert_eq!(ws.state_cluster_id().as_deref(), Some(id.as_str()));
    let again = ws.ok(&["apply"]);
    assert_eq!(printed_cluster_id(&again.stdout), id);
    assert!(before.iter().all(Proc::alive), "a node was restarted");
    drop(state_bytes);
    ws.terminate_and_check_clean();
}

/// The owner's files of an initialized cluster are checked by `apply` against the cluster ID:
/// a missing, corrupt, world-readable or foreign master secret and missing admin credentials
/// each fail with a clear error, and nothing changes.
#[test]
fn apply_checks_the_owners_files_against_the_cluster() {
    let ws = Workspace::new();
    let up = ws.ok(&["mini", "up"]);
    let id = printed_cluster_id(&up.stdout);
    let before = pids(&ws);
    let secret = ws.file(MASTER_SECRET_FILE);
    let good = std::fs::read(&secret).unwrap();
    let foreign = {
        let m = keys::MasterSecret::generate().unwrap();
        config::secret::encode(&m).as_bytes().to_vec()
    };
    type Breaker<'a> = Box<dyn Fn() + 'a>;
    let cases: Vec<(&str, Breaker, &str)> = vec![
        (
            "missing",
            Box::new(|| std::fs::remove_file(&secret).unwrap()),
            "is missing",
        ),
        (
            "corrupt",
            Box::new(|| std::fs::write(&secret, b"{\"key\": 1}").unwrap()),
            "cannot be used",
        ),
        (
            "world-readable",
            Box::new(|| {
                std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap()
            }),
            "chmod 600",
        ),
        (
            "foreign",
            Box::new(|| std::fs::write(&secret, &foreign).unwrap()),
            "belongs to another cluster",
        ),
    ];
    for (what, break_it, expect) in cases {
        break_it();
        let o = ws.run(&["apply"]);
        let err = text(&o.stderr);
        assert!(!o.status.success(), "{what}: apply succeeded:\n{err}");
        assert!(err.contains(expect), "{what}: {err}");
        assert!(
            !text(&o.stdout).contains("initialized"),
            "{what}: reported success"
        );
        std::fs::write(&secret, &good).unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    std::fs::rename(ws.file(ADMIN_CONF_FILE), ws.file("admin.bak")).unwrap();
    let o = ws.run(&["apply"]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains(ADMIN_CONF_FILE),
        "{}",
        text(&o.stderr)
    );
    std::fs::rename(ws.file("admin.bak"), ws.file(ADMIN_CONF_FILE)).unwrap();
    assert!(
        before.iter().all(Proc::alive),
        "a refused apply stopped a node"
    );
    assert_eq!(printed_cluster_id(&ws.ok(&["apply"]).stdout), id);
    ws.terminate_and_check_clean();
}

/// A changed expected PCR in the config: apply shows the difference and asks (refused without
/// a terminal or -y); with -y it is pushed, apply and status name the nodes that no longer
/// match, verify fails on them, and a JoinService refuses a new node with the new policy.
#[test]
fn changed_measurements_are_pushed_to_the_cluster() {
    let ws = Workspace::new();
    ws.ok(&["mini", "up"]);
    let (_, old) = ws.replace_measurement(4, &"11".repeat(32));

    let o = ws.run(&["apply"]);
    let err = text(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains(&format!("PCR 4: {old} -> {}", "11".repeat(32))),
        "{err}"
    );
    assert!(err.contains("not confirmed") && err.contains("-y"), "{err}");

    let o = ws.ok(&["apply", "-y"]);
    let out = text(&o.stdout);
    for n in ["control-plane-0", "worker-0"] {
        assert!(
            out.contains(&format!("Warning: {n} no longer matches")),
            "{out}"
        );
    }
    let st = ws.status_json();
    for n in ["control-plane-0", "worker-0"] {
        let a = node_json(&st, n)["attestation"]
            .as_str()
            .unwrap_or("")
            .to_string();
        assert!(a.contains("PCR 4"), "{n}: {a}");
    }
    let v = ws.run(&["verify"]);
    assert!(!v.status.success());
    assert!(
        text(&v.stdout).contains("PCR 4: expected 1111"),
        "{}",
        text(&v.stdout)
    );

    // A new worker is checked against the pushed policy.
    let path = ws.file(CONFIG_FILE);
    let cfg = std::fs::read_to_string(&path).unwrap();
    let pos = cfg.rfind("initialCount: 1").unwrap();
    std::fs::write(
        &path,
        format!("{}initialCount: 2{}", &cfg[..pos], &cfg[pos + 15..]),
    )
    .unwrap();
    let o = ws.run(&["apply", "-y"]);
    let err = text(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("worker-1") && err.contains("PCR 4: expected 1111"),
        "{err}"
    );
    ws.terminate_and_check_clean();
}

/// Another program holds the cluster's first address: apply fails with a hint that works:
/// changing baseAddress before any node ran takes effect.
#[test]
fn busy_range_then_changed_base_address_takes_effect() {
    let ws = Workspace::new();
    let l = TcpListener::bind(SocketAddrV4::new(ws.base, 9000)).unwrap();
    let o = ws.run(&["apply"]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("baseAddress"),
        "{}",
        text(&o.stderr)
    );
    let new_base = random_base();
    let path = ws.file(CONFIG_FILE);
    let cfg = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        cfg.replace(&ws.base.to_string(), &new_base.to_string()),
    )
    .unwrap();
    let up = ws.ok(&["apply"]);
    assert!(
        text(&up.stdout).contains(&format!("Endpoint:    {new_base}")),
        "{}",
        text(&up.stdout)
    );
    drop(l);
    // Once nodes ran, the address range cannot change.
    let cfg = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        cfg.replace(&new_base.to_string(), &ws.base.to_string()),
    )
    .unwrap();
    let o = ws.run(&["apply"]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("`provider.local.baseAddress` cannot change"),
        "{}",
        text(&o.stderr)
    );
    // Nor can the image (until upgrades exist), nor the name.
    for (from, to, field) in [
        ("image: v", "image: v9.9.", "`image`"),
        ("name: ", "name: renamed", "`name`"),
    ] {
        let changed = cfg.replacen(from, to, 1);
        assert_ne!(changed, cfg, "{from}");
        std::fs::write(&path, &changed).unwrap();
        let o = ws.run(&["apply"]);
        assert!(!o.status.success());
        let err = text(&o.stderr);
        assert!(err.contains(&format!("{field} cannot change")), "{err}");
    }
    std::fs::write(&path, cfg).unwrap();
    ws.terminate_and_check_clean();
}

/// Lifecycle commands take the workspace lock: a second one is refused and told who holds it.
#[test]
fn concurrent_lifecycle_commands_are_refused() {
    let mut ws = Workspace::new();
    let mut run = Running::start(&ws, &["apply"]);
    run.wait_for_line("infrastructure: reconciling nodes");
    // Stopped while it holds the lock, so the others meet it deterministically.
    let holder = Proc::of(run.child.id()).unwrap();
    ws.freeze(holder);
    for cmd in [
        &["apply"][..],
        &["terminate", "-y"],
        &["recover"],
        &["mini", "down", "-y"],
    ] {
        let o = ws.run(cmd);
        let err = text(&o.stderr);
        assert!(!o.status.success(), "{cmd:?} ran beside apply:\n{err}");
        assert!(
            err.contains("another constellation command")
                && err.contains("`constellation apply`")
                && err.contains(&format!("pid {}", holder.pid)),
            "{cmd:?}: {err}"
        );
    }
    // Read-only commands are not locked out.
    assert!(ws.run(&["status"]).status.success());
    holder.signal(Signal::SIGCONT);
    let status = run.child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(!ws.file(".constellation.lock").exists());
    ws.ok(&["apply"]);
    ws.terminate_and_check_clean();
}
