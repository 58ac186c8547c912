//! One control-plane node: etcd 3.6, kube-apiserver, kube-controller-manager, kube-scheduler and
//! kubelet as supervised processes in the node's namespaces; `kubectl get nodes` shows it Ready and
//! a pod from the locally built busybox image runs. The host is left as found.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure is a test failure

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kube_node::cmd::run_async;
use kube_node::control_plane::{ControlPlane, ControlPlaneSpec, KubeBinaries, Kubelet};
use kube_node::host::{self, HostSysctls};
use kube_node::image::{self, BUSYBOX_REFERENCE, PAUSE_REFERENCE};
use kube_node::net::{ClusterNet, DEFAULT_RUN_ROOT};
use kube_node::runtime::Containerd;

fn report(line: &str) {
    let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
}

/// `$KUBE_BIN`, else the newest complete folder of scripts/install-kubernetes.sh's cache (never
/// builds: the build takes about 20 minutes).
fn kube_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("KUBE_BIN") {
        return Some(PathBuf::from(p));
    }
    let cache = std::env::var_os("CONSTELLATION_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME").map(|x| PathBuf::from(x).join("constellation"))
        })
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/constellation"))
        })?;
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(cache.join("kubernetes"))
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| KubeBinaries::locate(b).is_ok())
        .collect();
    dirs.sort();
    dirs.pop()
}

#[test]
fn control_plane_node_becomes_ready_and_runs_a_pod() {
    if let Some(why) = common::missing_root_or_tools(&[
        "ip",
        "unshare",
        "nsenter",
        "containerd",
        "ctr",
        "runc",
        "busybox",
        "cc",
    ]) {
        return common::skip(&why);
    }
    let Some(bin) = kube_bin() else {
        return common::skip(
            "Kubernetes binaries not built (KUBE_BIN=$(scripts/install-kubernetes.sh))",
        );
    };
    let bins = match KubeBinaries::locate(&bin) {
        Ok(b) => b,
        Err(e) => return common::skip(&e.to_string()),
    };
    let name = common::cluster_name("cp");
    common::guarded(&name, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(body(&name, &bins));
    });
}

async fn body(name: &str, bins: &KubeBinaries) {
    let tmp = tempfile::Builder::new().prefix("ck").tempdir().unwrap();
    let total = Instant::now();
    let mut phases: Vec<(&str, Duration)> = Vec::new();

    let t = Instant::now();
    let busybox = which("busybox");
    let (pause, bb) =
        image::build_standard_images(&tmp.path().join("img"), &busybox, "cc").unwrap();
    phases.push(("images built", t.elapsed()));

    let t = Instant::now();
    let mut net = ClusterNet::create(Path::new(DEFAULT_RUN_ROOT), name, 10).unwrap();
    let n1 = net.add_node("n1").unwrap();
    phases.push(("node network", t.elapsed()));

    let t = Instant::now();
    let node_dir = tmp.path().join("n1");
    let mut ctrd = Containerd::start(
        &n1,
        &node_dir.join("ctrd"),
        PAUSE_REFERENCE,
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    ctrd.import(&pause.path).await.unwrap();
    ctrd.import(&bb.path).await.unwrap();
    phases.push(("containerd up + 2 images imported", t.elapsed()));

    let mut sysctls = HostSysctls::for_kubelet().unwrap();
    let spec = ControlPlaneSpec {
        cluster_name: name.to_owned(),
        extra_sans: vec!["127.10.0.1".into()],
    };
    let t = Instant::now();
    let mut cp = ControlPlane::init(
        bins,
        &n1,
        &ctrd.paths().socket,
        &node_dir.join("cp"),
        &spec,
        Duration::from_secs(120),
    )
    .await
    .unwrap();
    phases.push(("control plane (certs..apiserver ready)", t.elapsed()));

    let t = Instant::now();
    let mut kubelet = Kubelet::start(
        bins,
        &n1,
        &ctrd,
        &cp.paths().kubeconfigs.join("kubelet.conf"),
        &cp.paths().pki.join("ca.crt"),
        &node_dir.join("kubelet"),
    )
    .unwrap();
    let ready = cp.wait_node_ready("n1", Duration::from_secs(180)).await;
    if let Err(e) = &ready {
        report(&format!(
            "kubelet log tail: {}",
            kube_node::process::log_tail(&node_dir.join("kubelet/kubelet.log"), 30)
        ));
        let _ = kubelet.check();
        panic!("node not Ready: {e}");
    }
    phases.push(("kubelet start -> node Ready", t.elapsed()));
    let to_ready = total.elapsed();

    let nodes = run_async(cp.kubectl().args(["get", "nodes", "-o", "wide"]))
        .await
        .unwrap();
    report(&format!("kubectl get nodes:\n{nodes}"));
    assert!(nodes.contains("n1") && nodes.contains(" Ready "), "{nodes}");
    assert!(nodes.contains("198.18.10.1"), "{nodes}");
    assert!(nodes.contains("v1.36.3"), "{nodes}");

    // a pod from the locally built image (no registry): the default service account appears when
    // the controller manager has run, so creation is retried until the deadline
    let t = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = run_async(cp.kubectl().args([
            "run",
            "probe",
            &format!("--image={BUSYBOX_REFERENCE}"),
            "--image-pull-policy=Never",
            "--restart=Never",
            "--",
            "sh",
            "-c",
            "echo ok-from-pod",
        ]))
        .await;
        match r {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("kubectl run: {e}"),
        }
    }
    let phase = loop {
        let p =
            run_async(
                cp.kubectl()
                    .args(["get", "pod", "probe", "-o", "jsonpath={.status.phase}"]),
            )
            .await
            .unwrap_or_default();
        if p == "Succeeded" || p == "Failed" || Instant::now() > deadline {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let logs = run_async(cp.kubectl().args(["logs", "probe"])).await;
    assert_eq!(phase, "Succeeded", "pod phase; logs: {logs:?}");
    assert_eq!(logs.unwrap().trim(), "ok-from-pod");
    phases.push(("pod created -> Succeeded", t.elapsed()));

    let mut mem: Vec<String> = cp
        .memory()
        .into_iter()
        .map(|(n, _, kib)| format!("{n} {} MiB", kib / 1024))
        .collect();
    for (n, pid) in [("kubelet", kubelet.pid()), ("containerd", ctrd.pid())] {
        mem.push(format!(
            "{n} {} MiB",
            pid.and_then(host::rss_kib).unwrap_or(0) / 1024
        ));
    }
    let phase_text: Vec<String> = phases
        .iter()
        .map(|(n, d)| format!("{n} {:.2}s", d.as_secs_f64()))
        .collect();
    report(&format!(
        "control-plane timings: {}; inside control plane: {}; total to Ready {:.2}s; RSS: {}",
        phase_text.join(", "),
        cp.timings(),
        to_ready.as_secs_f64(),
        mem.join(", ")
    ));

    kubelet.stop().await.unwrap();
    cp.stop().await;
    ctrd.stop().await.unwrap();
    sysctls.restore().unwrap();
    net.teardown().unwrap();
}

fn which(p: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap();
    std::env::split_paths(&path)
        .map(|d| d.join(p))
        .find(|f| f.is_file())
        .unwrap()
}
