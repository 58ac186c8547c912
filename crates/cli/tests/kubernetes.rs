#![allow(clippy::unwrap_used, clippy::expect_used)] // a failure is a test failure
//! Real Kubernetes through the real binary, as a user runs it: `constellation mini up` in an
//! empty folder brings up a control plane and a worker, attested and joined; kubectl through
//! `constellation-admin.conf` sees both Ready with their roles; a Deployment from the locally
//! built image spreads over both nodes; pods reach each other across nodes, through a ClusterIP
//! Service and by DNS (`kubernetes.default`); `status` reports both Ready; a second worker added
//! by `apply` becomes Ready; `terminate -y` leaves the host as found (no process, namespace, mount or cgroup of the cluster).
//!
//! Needs root and the Kubernetes build of `scripts/install-kubernetes.sh` (the test command
//! installs both); without them it prints SKIPPED.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod kube_support;

use kube_support::{kube_bin_or_skip, text, Cluster};

struct Kubectl {
    bin: PathBuf,
    conf: PathBuf,
}

impl Kubectl {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut c = Command::new(&self.bin)
            .arg("--kubeconfig")
            .arg(&self.conf)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = c.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
        drop(input);
        c.wait_with_output().unwrap()
    }
    /// Runs and returns stdout; panics with both streams on failure.
    fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let o = self.run(args, stdin);
        assert!(
            o.status.success(),
            "kubectl {}:\n{}{}",
            args.join(" "),
            text(&o.stdout),
            text(&o.stderr)
        );
        text(&o.stdout)
    }
}

/// The cluster's objects of this test.
const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      tolerations:
      - {key: node-role.kubernetes.io/control-plane, operator: Exists, effect: NoSchedule}
      topologySpreadConstraints:
      - maxSkew: 1
        topologyKey: kubernetes.io/hostname
        whenUnsatisfiable: DoNotSchedule
        labelSelector:
          matchLabels: {app: web}
      containers:
      - name: web
        image: localhost/constellation/busybox:local
        imagePullPolicy: Never
        command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - {port: 80, targetPort: 8080}
"#;

fn client_pod(node: &str, script: &str) -> String {
    let script = script.replace('"', "\\\"");
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: client
spec:
  nodeName: {node}
  restartPolicy: Never
  tolerations:
  - {{key: node-role.kubernetes.io/control-plane, operator: Exists, effect: NoSchedule}}
  containers:
  - name: client
    image: localhost/constellation/busybox:local
    imagePullPolicy: Never
    command: ["sh", "-c", "{script}"]
"#
    )
}

/// Every process whose command line or working directory names `dir`.
fn processes_naming(dir: &Path) -> Vec<String> {
    let want = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| {
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            cmd.contains(&want).then_some(cmd)
        })
        .collect()
}

#[test]
fn mini_up_runs_kubernetes_workloads_across_nodes_and_terminate_leaves_the_host_clean() {
    let Some(kube_bin) = kube_bin_or_skip() else {
        return;
    };
    let cluster = Cluster::new("k8s-e2e-");
    let up = cluster.constellation(&["mini", "up"]);
    let err = text(&up.stderr);
    assert!(up.status.success(), "mini up:\n{}{err}", text(&up.stdout));
    let out = text(&up.stdout);
    assert!(out.contains("Kubernetes:  kubectl --kubeconfig"), "{out}");
    assert!(out.contains("2/2 attested and joined"), "{out}");
    // mini up merged the kubeconfig (into $KUBECONFIG here).
    let merged = std::fs::read_to_string(cluster.path().join("merged-kubeconfig")).unwrap();
    assert!(merged.contains("current-context"), "{merged}");

    let k = Kubectl {
        bin: kube_bin.join("kubectl"),
        conf: cluster.path().join("constellation-admin.conf"),
    };
    // Every node Ready with its role; a node's Kubernetes name is its cluster name.
    k.ok(
        &[
            "wait",
            "--for=condition=Ready",
            "node",
            "--all",
            "--timeout=120s",
        ],
        None,
    );
    let nodes = k.ok(&["get", "nodes", "--no-headers"], None);
    let rows: Vec<Vec<&str>> = nodes
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let summary: Vec<(&str, &str, &str)> = rows.iter().map(|r| (r[0], r[1], r[2])).collect();
    assert_eq!(
        summary,
        [
            ("control-plane-0", "Ready", "control-plane"),
            ("worker-0", "Ready", "<none>")
        ],
        "{nodes}"
    );

    // A Deployment over both nodes, a Service in front of it.
    k.ok(&["apply", "-f", "-"], Some(WEB));
    k.ok(
        &["rollout", "status", "deployment/web", "--timeout=180s"],
        None,
    );
    let pods = k.ok(
        &[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={range .items[*]}{.spec.nodeName} {.status.podIP}{\"\\n\"}{end}",
        ],
        None,
    );
    let mut placed: Vec<(&str, &str)> = pods.lines().filter_map(|l| l.split_once(' ')).collect();
    placed.sort();
    assert_eq!(
        placed.iter().map(|p| p.0).collect::<Vec<_>>(),
        ["control-plane-0", "worker-0"],
        "{pods}"
    );
    let svc = k.ok(
        &["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"],
        None,
    );

    // From the worker: both pods by IP (one across nodes), the Service, and cluster DNS.
    // Each step is retried within a bound until what it needs (kube-proxy rules, CoreDNS) is up.
    let retry = |cmd: &str| {
        format!("ok=; i=0; while [ $i -lt 300 ]; do if {cmd}; then ok=1; break; fi; i=$((i+1)); sleep 0.2; done; [ -n \"$ok\" ] || {{ echo FAILED: {cmd}; exit 1; }}")
    };
    let mut steps: Vec<String> = placed
        .iter()
        .map(|(_, ip)| retry(&format!("timeout 3 wget -qO- http://{ip}:8080/")))
        .collect();
    steps.push(retry(&format!("timeout 3 wget -qO- http://{svc}/")));
    steps.push(retry("nslookup kubernetes.default.svc.cluster.local"));
    steps.push(retry("nslookup web.default.svc.cluster.local"));
    k.ok(
        &["apply", "-f", "-"],
        Some(&client_pod("worker-0", &steps.join("; "))),
    );
    let done = k.run(
        &[
            "wait",
            "--for=jsonpath={.status.phase}=Succeeded",
            "pod/client",
            "--timeout=180s",
        ],
        None,
    );
    let logs = k.run(&["logs", "client"], None);
    assert!(
        done.status.success(),
        "client pod did not succeed: {}{}\nlogs: {}{}",
        text(&done.stdout),
        text(&done.stderr),
        text(&logs.stdout),
        text(&logs.stderr)
    );
    let logs = text(&logs.stdout);
    let web_names = k.ok(
        &[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ],
        None,
    );
    for name in web_names.split_whitespace() {
        assert!(logs.contains(name), "no answer from pod {name}: {logs}");
    }
    assert!(
        logs.contains("10.96.0.1"),
        "kubernetes.default not resolved: {logs}"
    );
    assert!(
        logs.contains(svc.trim()),
        "web not resolved to its ClusterIP: {logs}"
    );

    // status: both nodes Ready next to their attestation.
    let st = cluster.constellation(&["status", "-o", "json"]);
    assert!(st.status.success(), "{}", text(&st.stderr));
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    for n in v["nodes"].as_array().unwrap() {
        assert_eq!(n["kubernetes"], "Ready", "{n}");
        assert_eq!(n["attestation"], "verified", "{n}");
    }

    // Scale-out: one more worker, attested and joined by `apply`, Ready in Kubernetes.
    let conf = cluster.path().join("constellation-conf.yaml");
    let original = std::fs::read_to_string(&conf).unwrap();
    let mut seen = 0;
    let scaled_conf: String = original
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("initialCount:") {
                seen += 1;
                if seen == 2 {
                    let indent = &l[..l.len() - l.trim_start().len()];
                    return format!("{indent}initialCount: 2\n");
                }
            }
            format!("{l}\n")
        })
        .collect();
    std::fs::write(&conf, scaled_conf).unwrap();
    let scaled = cluster.constellation(&["apply", "-y"]);
    assert!(
        scaled.status.success(),
        "scale-out:\n{}{}",
        text(&scaled.stdout),
        text(&scaled.stderr)
    );
    let nodes = k.ok(&["get", "nodes", "--no-headers"], None);
    assert!(
        nodes
            .lines()
            .any(|l| l.starts_with("worker-1 ") && l.contains(" Ready ")),
        "{nodes}"
    );

    // terminate leaves nothing of the cluster on the host.
    let cloud: serde_json::Value = serde_json::from_slice(
        &std::fs::read(cluster.path().join("constellation-local/cloud.json")).unwrap(),
    )
    .unwrap();
    let net = cloud["kube"]["name"].as_str().unwrap().to_string();
    let run_root = PathBuf::from(cloud["kube"]["run_root"].as_str().unwrap());
    let t = cluster.constellation(&["terminate", "-y"]);
    assert!(t.status.success(), "{}", text(&t.stderr));
    assert_eq!(processes_naming(cluster.path()), Vec::<String>::new());
    assert!(!run_root.join(&net).exists(), "cluster network folder left");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&net) && !mounts.contains(&*cluster.path().to_string_lossy()),
        "mounts left:\n{mounts}"
    );
    for ctl in ["memory", "cpu", "pids"] {
        let left: Vec<String> = std::fs::read_dir(format!("/sys/fs/cgroup/{ctl}"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(&net))
            .collect();
        assert!(left.is_empty(), "cgroups left in {ctl}: {left:?}");
    }
}
