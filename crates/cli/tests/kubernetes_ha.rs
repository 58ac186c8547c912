#![allow(clippy::unwrap_used, clippy::expect_used)] // a failure is a test failure
//! Kubernetes through bad moments, through the real binary: three control planes and a worker.
//! `kill -9` of a whole control-plane node leaves `kubectl get nodes` answering through the same
//! kubeconfig, and the next `apply` brings the node back Ready; a worker whose containerd dies is
//! reported NotReady by `status`, naming containerd (checked last: the node stays so); after a
//! full control-plane outage, `recover` brings the cluster back with a ConfigMap written before
//! it.
//!
//! Needs root and the Kubernetes build (the test command installs both); else SKIPPED.

use std::path::Path;
use std::process::{Command, Output};

mod kube_support;

use kube_support::{kube_bin_or_skip, text, Cluster};

/// What this test does with a cluster beyond the shared harness.
trait Faults {
    fn kubectl(&self, kube_bin: &Path, args: &[&str]) -> Output;
    fn node_pid(&self, name: &str) -> i32;
    fn kill_node(&self, name: &str);
    fn status_json(&self) -> serde_json::Value;
}

impl Faults for Cluster {
    fn kubectl(&self, kube_bin: &Path, args: &[&str]) -> Output {
        Command::new(kube_bin.join("kubectl"))
            .arg("--kubeconfig")
            .arg(self.path().join("constellation-admin.conf"))
            .arg("--request-timeout=20s")
            .args(args)
            .output()
            .unwrap()
    }
    /// The recorded process-group leader of node `name`.
    fn node_pid(&self, name: &str) -> i32 {
        let cloud: serde_json::Value = serde_json::from_slice(
            &std::fs::read(self.path().join("constellation-local/cloud.json")).unwrap(),
        )
        .unwrap();
        cloud["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .and_then(|n| n["process"]["pid"].as_i64())
            .unwrap() as i32
    }
    /// `kill -9` of node `name`'s whole process group (Bootstrapper, etcd, the control plane).
    fn kill_node(&self, name: &str) {
        let pid = self.node_pid(name);
        nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    }
    fn status_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["status", "-o", "json"])).unwrap()
    }
}

/// The pid of the containerd of node `node` (its command line names the node's folder).
fn containerd_of(ws: &Path, node: &str) -> Option<i32> {
    let needle = ws
        .join("constellation-local/nodes")
        .join(node)
        .to_string_lossy()
        .into_owned();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_string_lossy().parse().ok()?;
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        (cmd.starts_with("containerd ") && cmd.contains(&needle)).then_some(pid)
    })
}

#[test]
fn control_plane_loss_worker_runtime_loss_and_full_outage_with_kubernetes() {
    let Some(kube_bin) = kube_bin_or_skip() else {
        return;
    };
    let cluster = Cluster::new("k8s-ha-");
    cluster.ok(&["config", "generate", "local"]);
    let conf = cluster.path().join("constellation-conf.yaml");
    let mut first = true;
    let text3: String = std::fs::read_to_string(&conf)
        .unwrap()
        .lines()
        .map(|l| {
            if first && l.trim_start().starts_with("initialCount:") {
                first = false;
                let indent = &l[..l.len() - l.trim_start().len()];
                return format!("{indent}initialCount: 3\n");
            }
            format!("{l}\n")
        })
        .collect();
    std::fs::write(&conf, text3).unwrap();
    let up = cluster.ok(&["mini", "up"]);
    assert!(up.contains("4/4 attested and joined"), "{up}");
    let cm = cluster.kubectl(
        &kube_bin,
        &[
            "create",
            "configmap",
            "before-outage",
            "--from-literal=kept=yes",
        ],
    );
    assert!(cm.status.success(), "{}", text(&cm.stderr));

    // kill -9 of one control plane: the API keeps answering through the same kubeconfig.
    cluster.kill_node("control-plane-0");
    let nodes = cluster.kubectl(&kube_bin, &["get", "nodes", "--no-headers"]);
    assert!(
        nodes.status.success(),
        "kubectl after kill -9 of control-plane-0: {}",
        text(&nodes.stderr)
    );
    assert_eq!(
        text(&nodes.stdout).lines().count(),
        4,
        "{}",
        text(&nodes.stdout)
    );
    // The next apply restarts it; it rejoins and is Ready again.
    let again = cluster.ok(&["apply", "-y"]);
    assert!(again.contains("4/4 attested and joined"), "{again}");
    let st = cluster.status_json();
    let cp0 = st["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "control-plane-0")
        .unwrap()
        .clone();
    assert_eq!(cp0["running"], true, "{cp0}");

    // Full control-plane outage: every control plane killed; apply restarts them, they wait
    // for recovery; recover gives the keys back; the ConfigMap written before is there.
    for n in ["control-plane-0", "control-plane-1", "control-plane-2"] {
        cluster.kill_node(n);
    }
    let a = cluster.constellation(&["apply", "-y"]);
    let err = text(&a.stderr);
    assert!(
        err.contains("constellation recover"),
        "apply after a full outage:\n{}{err}",
        text(&a.stdout)
    );
    let rec = cluster.ok(&["recover"]);
    assert!(rec.contains("Recovered 3 control-plane node(s)"), "{rec}");
    let wait = cluster.kubectl(
        &kube_bin,
        &[
            "wait",
            "--for=condition=Ready",
            "node",
            "--all",
            "--timeout=180s",
        ],
    );
    assert!(wait.status.success(), "{}", text(&wait.stderr));
    let kept = cluster.kubectl(
        &kube_bin,
        &[
            "get",
            "configmap",
            "before-outage",
            "-o",
            "jsonpath={.data.kept}",
        ],
    );
    assert_eq!(text(&kept.stdout), "yes", "{}", text(&kept.stderr));

    // A worker whose containerd dies: status says NotReady and names containerd.
    let pid = containerd_of(cluster.path(), "worker-0").expect("worker-0's containerd");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let mut seen = None;
    for _ in 0..100 {
        let st = cluster.status_json();
        let w = st["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == "worker-0")
            .unwrap()
            .clone();
        let k = w["kubernetes"].as_str().unwrap_or_default().to_string();
        if k.starts_with("NotReady") {
            seen = Some(k);
            break;
        }
        // The node checks its components every second.
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let seen = seen.expect("status never reported worker-0 NotReady after its containerd died");
    assert!(seen.contains("containerd"), "{seen}");
}
