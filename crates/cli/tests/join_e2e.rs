#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Attested join end to end, driving the real `constellation` binary as a user would: a
//! `local` config with 3 control-plane nodes and 2 workers → `apply` → every node joined with
//! PCR 15 = the cluster's value, three etcd members (Debian's `etcdctl`); then `kill -9` of a
//! control-plane node while a worker is added, rejoin after restart, a node with one changed
//! byte in its image refused with the PCR named, and `terminate -y` leaving nothing running.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod support;

use support::{alive, node_pids, random_base};

const BIN: &str = env!("CARGO_BIN_EXE_constellation");

fn run(ws: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .env("CONSTELLATION_KUBERNETES", "off")
        .arg("-C")
        .arg(ws)
        .args(args)
        .output()
        .unwrap()
}

fn ok(ws: &Path, args: &[&str]) -> String {
    let o = run(ws, args);
    assert!(
        o.status.success(),
        "constellation {args:?} failed ({})\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// Terminates the cluster when the test ends, also on panic.
struct Cleanup(PathBuf);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = run(&self.0, &["terminate", "-y"]);
    }
}

/// Sets the node counts (control-plane group first in the generated file) and the base address.
fn edit_config(ws: &Path, cp: u32, workers: u32, base: &str) {
    let path = ws.join("constellation-conf.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut counts = [cp, workers].into_iter();
    let out: Vec<String> = text
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("initialCount:") {
                let indent = &l[..l.len() - l.trim_start().len()];
                format!("{indent}initialCount: {}", counts.next().unwrap())
            } else if l.trim_start().starts_with("baseAddress:") {
                let indent = &l[..l.len() - l.trim_start().len()];
                format!("{indent}baseAddress: {base}")
            } else {
                l.to_string()
            }
        })
        .collect();
    assert!(counts.next().is_none(), "both node groups were set");
    std::fs::write(&path, out.join("\n") + "\n").unwrap();
}

fn status(ws: &Path) -> serde_json::Value {
    serde_json::from_str(&ok(ws, &["status", "-o", "json"])).unwrap()
}

fn node<'a>(st: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    st["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == name)
        .unwrap_or_else(|| panic!("no node {name} in {st}"))
}

/// Every node is a member and its PCR 15 is the value derived from the cluster ID.
fn assert_all_joined(st: &serde_json::Value, expected_nodes: usize) {
    let id = st["cluster_id"].as_str().unwrap();
    let pcr15 = hex::encode(
        keys::ClusterId::from_slice(&hex::decode(id).unwrap())
            .unwrap()
            .expected_pcr15(),
    );
    let nodes = st["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), expected_nodes, "{st:#}");
    for n in nodes {
        let phase = n["phase"].as_str().unwrap_or("-");
        assert!(
            phase == "joined" || phase == "initialized",
            "{} is {phase}: {n}",
            n["name"]
        );
        assert_eq!(n["pcr15"].as_str(), Some(pcr15.as_str()), "{n}");
        assert_eq!(n["pcr15_state"], "cluster", "{n}");
        assert_eq!(n["cluster_id"].as_str(), Some(id), "{n}");
    }
}

/// Processes whose command line mentions `needle` (the workspace path).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() || !alive(pid) {
            continue;
        }
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                found.push(format!("{pid}: {cmd}"));
            }
        }
    }
    found
}

/// Debian's `etcdctl` with the owner's admin credentials (from the admin kubeconfig layout).
fn etcdctl(ws: &Path, endpoint: &str, args: &[&str]) -> Vec<u8> {
    let pki = cloudcmd::admin::write_pem_files(
        &cloudcmd::admin::load(&ws.join("constellation-admin.conf")).unwrap(),
        &ws.join("etcdctl"),
    )
    .unwrap();
    let o = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=https://{endpoint}:2379"))
        .arg(format!("--cacert={}", pki.ca.display()))
        .arg(format!("--cert={}", pki.cert.display()))
        .arg(format!("--key={}", pki.key.display()))
        .args(args)
        .output()
        .expect("etcdctl (Debian package etcd-client) must be installed: scripts/install-deps.sh");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o.stdout
}

/// `etcdctl member list`: (name, is learner).
fn etcd_members(ws: &Path, endpoint: &str) -> Vec<(String, bool)> {
    let v: serde_json::Value =
        serde_json::from_slice(&etcdctl(ws, endpoint, &["member", "list", "-w", "json"])).unwrap();
    v["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap_or("").to_string(),
                m["isLearner"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

/// The node registry's keys in etcd (`/constellation/nodes/<name>`, one per line).
fn registry_keys(ws: &Path, endpoint: &str) -> String {
    String::from_utf8(etcdctl(
        ws,
        endpoint,
        &["get", "--prefix", "/constellation/nodes/", "--keys-only"],
    ))
    .unwrap()
}

/// A folder with a `local` config for `cp` + `workers` nodes on a random base address, applied:
/// every node joined. The cluster is terminated if applying fails.
fn applied_cluster(cp: u32, workers: u32) -> (tempfile::TempDir, String) {
    let t = tempfile::tempdir().unwrap();
    let ws = t.path().to_path_buf();
    let cleanup = Cleanup(ws.clone());
    let base = random_base().to_string();
    ok(&ws, &["config", "generate", "local"]);
    edit_config(&ws, cp, workers, &base);
    let out = ok(&ws, &["apply"]);
    let n = cp + workers;
    assert!(
        out.contains(&format!("{n}/{n} attested and joined")),
        "{out}"
    );
    std::mem::forget(cleanup);
    (t, base)
}

#[test]
fn three_plus_two_join_kill_rejoin_tamper_terminate() {
    // 3 + 2 from an empty folder.
    let (t, base) = applied_cluster(3, 2);
    let ws = t.path().to_path_buf();
    let _c = Cleanup(ws.clone());
    let st = status(&ws);
    assert_all_joined(&st, 5);
    assert_eq!(node(&st, "control-plane-0")["admitted_by"], "init");
    for n in ["control-plane-1", "control-plane-2", "worker-0", "worker-1"] {
        let by = node(&st, n)["admitted_by"].as_str().unwrap().to_string();
        assert!(by.starts_with("control-plane-"), "{n}: {by}");
    }
    let cp0 = node(&st, "control-plane-0")["address"]
        .as_str()
        .unwrap()
        .to_string();
    let members = etcd_members(&ws, &cp0);
    assert_eq!(members.len(), 3, "{members:?}");
    assert!(
        members.iter().all(|(n, learner)| !n.is_empty() && !learner),
        "{members:?}"
    );

    // kill -9 the first control-plane node (init node, cluster endpoint, first etcd member)
    // while a worker is being added: the worker is admitted by the other JoinServices.
    edit_config(&ws, 3, 3, &base);
    let victim = node_pids(&ws)
        .into_iter()
        .find(|n| n.name == "control-plane-0")
        .unwrap()
        .process;
    let mut apply = Command::new(BIN)
        .env("CONSTELLATION_KUBERNETES", "off")
        .arg("-C")
        .arg(&ws)
        .arg("apply")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(apply.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "apply ended early:\n{seen}"
        );
        seen.push_str(&line);
        if line.contains("started worker-2") {
            break;
        }
    }
    // kill -9 of the node's process group (no `kill` program needed: procps may be absent).
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(victim as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    std::io::Read::read_to_string(&mut stderr, &mut seen).unwrap();
    let res = apply.wait().unwrap();
    // The killed node is reported, the new worker joined anyway.
    assert!(!res.success(), "{seen}");
    assert!(seen.contains("control-plane-0: not running"), "{seen}");
    let st = status(&ws);
    assert_eq!(node(&st, "worker-2")["phase"], "joined", "{st:#}");
    let by = node(&st, "worker-2")["admitted_by"].as_str().unwrap();
    assert!(by == "control-plane-1" || by == "control-plane-2", "{by}");

    // apply restarts the killed node, which rejoins (IssueRejoinTicket) with its disk intact.
    let out = ok(&ws, &["apply"]);
    assert!(out.contains("6/6 attested and joined"), "{out}");
    let st = status(&ws);
    assert_all_joined(&st, 6);
    let by = node(&st, "control-plane-0")["admitted_by"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(by.ends_with("(rejoin)"), "{by}");
    let members = etcd_members(&ws, &cp0);
    assert_eq!(members.len(), 3, "{members:?}");

    // One changed byte in an image component: a new node measures it into PCR 11 and is
    // refused; the members are unaffected. (Replace the file: etcd runs from it.)
    let images = ws.join("constellation-local/images");
    let image = std::fs::read_dir(&images)
        .unwrap()
        .flatten()
        .find(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .unwrap()
        .path();
    let etcd = image.join("bin/etcd");
    let mut bytes = std::fs::read(&etcd).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let tmp = image.join("bin/.etcd.tampered");
    std::fs::write(&tmp, &bytes).unwrap();
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, &etcd).unwrap();
    edit_config(&ws, 3, 4, &base);
    let o = run(&ws, &["apply"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("worker-3: join refused by control-plane-"),
        "{err}"
    );
    assert!(err.contains("PCR 11: expected"), "{err}");
    let st = status(&ws);
    let w3 = node(&st, "worker-3");
    assert_eq!(w3["phase"], "refused", "{w3}");
    assert!(w3["error"].as_str().unwrap().contains("PCR 11"), "{w3}");
    assert_eq!(
        w3["pcr15"],
        "0".repeat(64),
        "a refused node holds no cluster ID: {w3}"
    );
    // Nothing was written to etcd for the refused node; the admitted ones are registered.
    let registry = registry_keys(&ws, &cp0);
    assert!(
        registry.contains("/constellation/nodes/worker-2"),
        "{registry}"
    );
    assert!(!registry.contains("worker-3"), "{registry}");
    for n in st["nodes"].as_array().unwrap() {
        if n["name"] != "worker-3" {
            assert!(
                matches!(n["phase"].as_str(), Some("joined" | "initialized")),
                "{n}"
            );
        }
    }

    // terminate: nothing of the cluster keeps running.
    let before = node_pids(&ws);
    ok(&ws, &["terminate", "-y"]);
    for n in before {
        assert!(
            !alive(n.process),
            "{} (pid {}) still runs",
            n.name,
            n.process
        );
        assert!(
            !alive(n.swtpm),
            "swtpm of {} (pid {}) still runs",
            n.name,
            n.swtpm
        );
    }
    let left = processes_mentioning(&ws.to_string_lossy());
    assert!(left.is_empty(), "left running: {left:#?}");
}

/// A full outage of all three control-plane nodes (each killed with its etcd): `apply` restarts
/// them and, since none holds the cluster's keys, says to run `recover`; `recover` gives all
/// three their keys back at once, etcd regains its quorum with its data (three members, the
/// registry intact), every node is a member with this cluster's PCR 15, and a new worker joins.
#[test]
fn full_outage_of_three_control_planes_then_recover() {
    let (t, base) = applied_cluster(3, 1);
    let ws = t.path().to_path_buf();
    let _c = Cleanup(ws.clone());

    for n in node_pids(&ws) {
        if n.control_plane {
            nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(n.process as i32),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
        }
    }
    let o = run(&ws, &["apply"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("run `constellation recover`"), "{err}");
    let st = status(&ws);
    for n in ["control-plane-0", "control-plane-1", "control-plane-2"] {
        assert_eq!(node(&st, n)["phase"], "awaiting-recovery", "{st:#}");
    }

    let out = ok(&ws, &["recover"]);
    assert!(out.contains("Recovered 3 control-plane node(s)."), "{out}");
    assert!(out.contains("4/4 cluster members"), "{out}");
    let st = status(&ws);
    assert_all_joined(&st, 4);
    for n in ["control-plane-0", "control-plane-1", "control-plane-2"] {
        assert_eq!(node(&st, n)["admitted_by"], "recover", "{st:#}");
    }
    let cp0 = node(&st, "control-plane-0")["address"]
        .as_str()
        .unwrap()
        .to_string();
    let members = etcd_members(&ws, &cp0);
    assert_eq!(members.len(), 3, "{members:?}");
    let registry = registry_keys(&ws, &cp0);
    assert!(
        registry.contains("/constellation/nodes/worker-0"),
        "{registry}"
    );

    edit_config(&ws, 3, 2, &base);
    let out = ok(&ws, &["apply"]);
    assert!(out.contains("5/5 attested and joined"), "{out}");
    ok(&ws, &["verify"]);
}

/// Scaling down and up again (issue: "a 3-control-plane cluster scaled down to 1 and back to 3
/// keeps its data"): each removed control plane leaves etcd first, so the one left keeps a
/// quorum; the key written before is readable after the cluster grew back to three members.
#[test]
fn three_control_planes_down_to_one_and_back_keeps_data() {
    let (t, base) = applied_cluster(3, 1);
    let ws = t.path().to_path_buf();
    let _c = Cleanup(ws.clone());
    let cp0 = base.clone();
    etcdctl(&ws, &cp0, &["put", "/test/kept", "written-before-scaling"]);
    assert_eq!(etcd_members(&ws, &cp0).len(), 3);

    // Without -y and without a terminal, removing nodes is refused and nothing changes.
    edit_config(&ws, 1, 0, &base);
    let o = run(&ws, &["apply"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(err.contains("not confirmed") && err.contains("-y"), "{err}");
    assert_eq!(status(&ws)["nodes"].as_array().unwrap().len(), 4);

    let out = ok(&ws, &["apply", "-y"]);
    let removed = out
        .lines()
        .find_map(|l| l.strip_prefix("Removed nodes: "))
        .unwrap_or_else(|| panic!("no removed nodes printed:\n{out}"));
    for n in ["control-plane-1", "control-plane-2", "worker-0"] {
        assert!(removed.contains(n), "{removed}");
    }
    let st = status(&ws);
    assert_all_joined(&st, 1);
    let members = etcd_members(&ws, &cp0);
    assert_eq!(members.len(), 1, "{members:?}");
    assert_eq!(
        String::from_utf8(etcdctl(
            &ws,
            &cp0,
            &["get", "/test/kept", "--print-value-only"]
        ))
        .unwrap()
        .trim(),
        "written-before-scaling"
    );
    assert!(!registry_keys(&ws, &cp0).contains("control-plane-1"));

    // Never below one control plane: the config itself refuses a control-plane group of 0
    // (apply's own `NoControlPlaneLeft` guard is behind it), and nothing changes.
    edit_config(&ws, 0, 0, &base);
    let o = run(&ws, &["apply", "-y"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        err.contains("initialCount") && err.contains("at least 1"),
        "{err}"
    );
    assert_eq!(status(&ws)["nodes"].as_array().unwrap().len(), 1);

    // Back to three: two new control planes join etcd one after the other.
    edit_config(&ws, 3, 1, &base);
    let out = ok(&ws, &["apply"]);
    assert!(out.contains("4/4 attested and joined"), "{out}");
    assert_all_joined(&status(&ws), 4);
    let members = etcd_members(&ws, &cp0);
    assert_eq!(members.len(), 3, "{members:?}");
    assert!(members.iter().all(|(_, learner)| !learner), "{members:?}");
    for m in &members {
        let addr = node(&status(&ws), &m.0)["address"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            String::from_utf8(etcdctl(
                &ws,
                &addr,
                &["get", "/test/kept", "--print-value-only"]
            ))
            .unwrap()
            .trim(),
            "written-before-scaling",
            "read through {}",
            m.0
        );
    }
}
