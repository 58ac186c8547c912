//! One control-plane node: etcd 3.6, kube-apiserver, kube-controller-manager, kube-scheduler and
//! kubelet as supervised processes in the node's namespaces; `kubectl get nodes` shows it Ready.
//! Then a worker joins with a node credential and is Ready too; a pod from the locally built
//! busybox image on the worker fetches from a pod on the control-plane node. The host is left as
//! found.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure is a test failure

mod common;

use common::{report, which};

use std::path::Path;
use std::time::{Duration, Instant};

use kube_node::cmd::run_async;
use kube_node::control_plane::{
    ControlPlane, ControlPlaneSpec, EtcdMode, KubeBinaries, KubeProxy, Kubelet,
};
use kube_node::endpoint::ApiProxy;
use kube_node::host::{self, HostSysctls};
use kube_node::image::{self, BUSYBOX_REFERENCE, PAUSE_REFERENCE};
use kube_node::net::{ClusterNet, DEFAULT_RUN_ROOT};
use kube_node::runtime::Containerd;

#[test]
fn control_plane_node_and_a_worker_become_ready_and_their_pods_talk() {
    let Some(bins) = common::kube_binaries_or_skip() else {
        return;
    };
    let name = common::cluster_name("cp");
    common::guarded(&name, || common::block_on(body(&name, &bins)));
}

async fn body(name: &str, bins: &KubeBinaries) {
    let tmp = tempfile::Builder::new().prefix("ck").tempdir().unwrap();
    let total = Instant::now();
    let mut phases: Vec<(&str, Duration)> = Vec::new();

    let t = Instant::now();
    let busybox = which("busybox");
    let (pause, bb) =
        image::build_standard_images(&tmp.path().join("img"), &busybox, "cc").unwrap();
    let coredns =
        image::build_coredns_image(&tmp.path().join("img"), Path::new(&bins.path("coredns")))
            .unwrap();
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
    ctrd.import(&coredns.path).await.unwrap();
    phases.push(("containerd up + 3 images imported", t.elapsed()));

    let mut sysctls = HostSysctls::for_kubelet().unwrap();
    let spec = ControlPlaneSpec {
        cluster_name: name.to_owned(),
        extra_sans: vec!["127.10.0.1".into()],
        etcd: EtcdMode::Stacked,
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
    cp.mark_control_plane("n1").await.unwrap();
    cp.mark_control_plane("n1").await.unwrap(); // idempotent
    let to_ready = total.elapsed();

    let nodes = run_async(cp.kubectl().args(["get", "nodes", "-o", "wide"]))
        .await
        .unwrap();
    report(&format!("kubectl get nodes:\n{nodes}"));
    assert!(nodes.contains("n1") && nodes.contains(" Ready "), "{nodes}");
    assert!(nodes.contains("198.18.10.1"), "{nodes}");
    assert!(nodes.contains("v1.36.3"), "{nodes}");

    // a worker joins with a node credential signed by the cluster CA
    let t = Instant::now();
    let n2 = net.add_node("n2").unwrap();
    let w_dir = tmp.path().join("n2");
    let mut ctrd2 = Containerd::start(
        &n2,
        &w_dir.join("ctrd"),
        PAUSE_REFERENCE,
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    ctrd2.import(&pause.path).await.unwrap();
    ctrd2.import(&bb.path).await.unwrap();
    ctrd2.import(&coredns.path).await.unwrap();
    std::fs::create_dir_all(w_dir.join("kubelet")).unwrap();
    let w_kubeconfig = w_dir.join("kubelet.conf");
    cp.node_kubeconfig("n2", &w_kubeconfig).await.unwrap();
    let w_ca = w_dir.join("ca.crt");
    std::fs::copy(cp.paths().pki.join("ca.crt"), &w_ca).unwrap();
    let mut kubelet2 = Kubelet::start(
        bins,
        &n2,
        &ctrd2,
        &w_kubeconfig,
        &w_ca,
        &w_dir.join("kubelet"),
    )
    .unwrap();
    if let Err(e) = cp.wait_node_ready("n2", Duration::from_secs(180)).await {
        report(&format!(
            "kubelet n2 log tail: {}",
            kube_node::process::log_tail(&w_dir.join("kubelet/kubelet.log"), 30)
        ));
        panic!("worker not Ready: {e}");
    }
    phases.push((
        "worker: network + containerd + images + kubelet -> Ready",
        t.elapsed(),
    ));
    let nodes = run_async(cp.kubectl().args(["get", "nodes", "-o", "wide"]))
        .await
        .unwrap();
    report(&format!("kubectl get nodes:\n{nodes}"));
    assert!(nodes.contains("198.18.10.2"), "{nodes}");
    let roles: Vec<&str> = nodes
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().nth(2).unwrap_or(""))
        .collect();
    assert_eq!(roles, ["control-plane", "<none>"], "{nodes}");

    // the API from the host's own network namespace, through the host-side endpoint
    let proxy = ApiProxy::start(
        "127.0.0.1:0".parse().unwrap(),
        net.fabric(),
        vec![std::net::SocketAddr::from((n1.address(), 6443))],
    )
    .await
    .unwrap();
    let admin = std::fs::read_to_string(cp.paths().admin_kubeconfig()).unwrap();
    let server = format!("server: https://{}:6443", n1.address());
    assert!(admin.contains(&server), "{admin}");
    let host_conf = tmp.path().join("host-admin.conf");
    std::fs::write(
        &host_conf,
        admin.replace(&server, &format!("server: https://{}", proxy.local_addr())),
    )
    .unwrap();
    let from_host = run_async(
        tokio::process::Command::new(bins.path("kubectl"))
            .arg(format!("--kubeconfig={}", host_conf.display()))
            .args(["get", "nodes", "--request-timeout=10s"]),
    )
    .await
    .unwrap();
    assert!(
        from_host.contains("n1") && from_host.contains("n2"),
        "{from_host}"
    );
    drop(proxy);

    // kube-proxy (iptables mode) on both nodes, CoreDNS through kubeadm's addon phase
    let t = Instant::now();
    let kp_conf = tmp.path().join("kube-proxy.conf");
    cp.client_kubeconfig("system:kube-proxy", None, &kp_conf)
        .await
        .unwrap();
    let mut kp1 = KubeProxy::start(bins, &n1, &kp_conf, &node_dir.join("kube-proxy")).unwrap();
    let mut kp2 = KubeProxy::start(bins, &n2, &kp_conf, &w_dir.join("kube-proxy")).unwrap();
    cp.deploy_coredns().await.unwrap();
    phases.push(("kube-proxy x2 started + CoreDNS deployed", t.elapsed()));

    // pods from the locally built image (no registry) on both nodes; the one on n2 fetches from
    // the one on n1 over the pod network. The default service account appears when the
    // controller manager has run, so the first creation is retried until the deadline.
    let t = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(120);
    run_pod(
        &cp,
        "web",
        "n1",
        "mkdir -p /www && echo hello-from-n1 > /www/index.html && exec httpd -f -p 8080 -h /www",
        deadline,
    )
    .await;
    assert_eq!(
        wait_phase(&cp, "web", &["Running"], deadline).await,
        "Running"
    );
    let web_ip =
        run_async(
            cp.kubectl()
                .args(["get", "pod", "web", "-o", "jsonpath={.status.podIP}"]),
        )
        .await
        .unwrap();
    assert!(web_ip.starts_with("10.244.1."), "web pod IP {web_ip}");
    phases.push(("pod on n1 Running", t.elapsed()));
    run_async(cp.kubectl().args([
        "expose",
        "pod",
        "web",
        "--name=web",
        "--port=80",
        "--target-port=8080",
    ]))
    .await
    .unwrap();
    let svc_ip =
        run_async(
            cp.kubectl()
                .args(["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"]),
        )
        .await
        .unwrap();
    assert!(svc_ip.starts_with("10."), "service IP {svc_ip}");
    let t = Instant::now();
    // each step retried (with a bound) until the component it needs is up: the pod (httpd),
    // (`timeout 3 wget`: Debian busybox-static 1.35 segfaults on `wget -T`; its nslookup does not
    // apply the search path, hence full names)
    // kube-proxy's rules (ClusterIP), CoreDNS
    let retry = |cmd: &str| {
        format!("ok=; i=0; while [ $i -lt 300 ]; do if {cmd}; then ok=1; break; fi; i=$((i+1)); sleep 0.2; done; [ -n \"$ok\" ] || {{ echo FAILED: {cmd}; exit 1; }}")
    };
    let script = [
        retry(&format!("timeout 3 wget -qO- http://{web_ip}:8080/")),
        retry(&format!("timeout 3 wget -qO- http://{svc_ip}/")),
        retry("nslookup kubernetes.default.svc.cluster.local"),
        retry("nslookup web.default.svc.cluster.local"),
    ]
    .join("; ");
    run_pod(&cp, "client", "n2", &script, deadline).await;
    let phase = wait_phase(&cp, "client", &["Succeeded", "Failed"], deadline).await;
    let logs = run_async(cp.kubectl().args(["logs", "client"])).await;
    if phase != "Succeeded" {
        let pods = run_async(cp.kubectl().args(["get", "pods", "-A", "-o", "wide"])).await;
        report(&format!("pods: {pods:?}"));
        for d in [node_dir.join("kube-proxy"), w_dir.join("kube-proxy")] {
            report(&format!(
                "kube-proxy log: {}",
                kube_node::process::log_tail(&d.join("kube-proxy.log"), 15)
            ));
        }
    }
    assert_eq!(phase, "Succeeded", "client pod; logs: {logs:?}");
    let logs = logs.unwrap();
    report(&format!("client pod log:\n{logs}"));
    assert_eq!(
        logs.matches("hello-from-n1").count(),
        2,
        "pod IP and ClusterIP: {logs}"
    );
    assert!(
        logs.contains("10.96.0.1"),
        "kubernetes.default resolved: {logs}"
    );
    assert!(
        logs.contains(&svc_ip),
        "web resolved to its ClusterIP: {logs}"
    );
    let client_ip =
        run_async(
            cp.kubectl()
                .args(["get", "pod", "client", "-o", "jsonpath={.status.podIP}"]),
        )
        .await
        .unwrap();
    assert!(
        client_ip.starts_with("10.244.2."),
        "client pod IP {client_ip}"
    );
    phases.push(("pod on n2: pod IP, ClusterIP and DNS answered", t.elapsed()));

    let mut mem: Vec<String> = cp
        .memory()
        .into_iter()
        .map(|(n, _, kib)| format!("{n} {} MiB", kib / 1024))
        .collect();
    for (n, pid) in [
        ("kubelet n1", kubelet.pid()),
        ("containerd n1", ctrd.pid()),
        ("kubelet n2", kubelet2.pid()),
        ("containerd n2", ctrd2.pid()),
        ("kube-proxy n1", kp1.pid()),
    ] {
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

    kp1.check().unwrap();
    kp2.check().unwrap();
    kp2.stop().await;
    kp1.stop().await;
    kubelet2.stop().await.unwrap();
    ctrd2.stop().await.unwrap();
    kubelet.stop().await.unwrap();
    cp.stop().await;
    ctrd.stop().await.unwrap();
    sysctls.restore().unwrap();
    net.teardown().unwrap();
}

/// `kubectl run NAME` pinned to `node`, retried until the namespace's default ServiceAccount exists.
async fn run_pod(cp: &ControlPlane, name: &str, node: &str, script: &str, deadline: Instant) {
    loop {
        let r = run_async(cp.kubectl().args([
            "run",
            name,
            &format!("--image={BUSYBOX_REFERENCE}"),
            "--image-pull-policy=Never",
            "--restart=Never",
            &format!(r#"--overrides={{"apiVersion":"v1","spec":{{"nodeName":"{node}"}}}}"#),
            "--",
            "sh",
            "-c",
            script,
        ]))
        .await;
        match r {
            Ok(_) => return,
            Err(e) if Instant::now() < deadline && e.stderr().contains("serviceaccount") => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("kubectl run {name}: {e}"),
        }
    }
}

/// Polls the pod's phase until it is one of `want` or the deadline passes; returns the last phase.
async fn wait_phase(cp: &ControlPlane, name: &str, want: &[&str], deadline: Instant) -> String {
    loop {
        let p =
            run_async(
                cp.kubectl()
                    .args(["get", "pod", name, "-o", "jsonpath={.status.phase}"]),
            )
            .await
            .unwrap_or_default();
        if want.contains(&p.as_str()) || Instant::now() > deadline {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
