//! Three control planes: the first initialises, two join (shared CAs, etcd member add); every node
//! is Ready with the control-plane role; through one host-side endpoint `kubectl` keeps answering
//! and a ConfigMap written before is still there after the first control plane is killed.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure is a test failure

mod common;

use common::{report, which};

use std::path::Path;
use std::time::{Duration, Instant};

use kube_node::cmd::run_async;
use kube_node::control_plane::{
    ControlPlane, ControlPlaneSpec, EtcdMode, JoinFrom, KubeBinaries, Kubelet,
};
use kube_node::endpoint::ApiProxy;
use kube_node::host::HostSysctls;
use kube_node::image::{self, PAUSE_REFERENCE};
use kube_node::net::{ClusterNet, DEFAULT_RUN_ROOT};
use kube_node::runtime::Containerd;

#[test]
fn three_control_planes_survive_the_loss_of_one() {
    let Some(bins) = common::kube_binaries_or_skip() else {
        return;
    };
    let name = common::cluster_name("ha");
    common::guarded(&name, || common::block_on(body(&name, &bins)));
}

async fn body(name: &str, bins: &KubeBinaries) {
    let tmp = tempfile::Builder::new().prefix("ck").tempdir().unwrap();
    let total = Instant::now();
    let (pause, _) =
        image::build_standard_images(&tmp.path().join("img"), &which("busybox"), "cc").unwrap();
    let mut net = ClusterNet::create(Path::new(DEFAULT_RUN_ROOT), name, 13).unwrap();
    let mut sysctls = HostSysctls::for_kubelet().unwrap();
    let spec = ControlPlaneSpec {
        cluster_name: name.to_owned(),
        extra_sans: vec!["127.0.0.1".into()],
        etcd: EtcdMode::Stacked,
    };
    let mut nodes = Vec::new();
    let mut ctrds = Vec::new();
    let mut cps: Vec<ControlPlane> = Vec::new();
    let mut kubelets = Vec::new();
    let mut times = Vec::new();
    for n in ["c1", "c2", "c3"] {
        let t = Instant::now();
        let node = net.add_node(n).unwrap();
        let dir = tmp.path().join(n);
        let ctrd = Containerd::start(
            &node,
            &dir.join("ctrd"),
            PAUSE_REFERENCE,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        ctrd.import(&pause.path).await.unwrap();
        let cp = match cps.first() {
            None => ControlPlane::init(
                bins,
                &node,
                &ctrd.paths().socket,
                &dir.join("cp"),
                &spec,
                Duration::from_secs(120),
            )
            .await
            .unwrap(),
            Some(first) => {
                let join = JoinFrom {
                    shared_pki: first.pki_dir().to_path_buf(),
                    etcd_member: first.etcd_member(),
                };
                ControlPlane::join(
                    bins,
                    &node,
                    &ctrd.paths().socket,
                    &dir.join("cp"),
                    &spec,
                    &join,
                    Duration::from_secs(120),
                )
                .await
                .unwrap()
            }
        };
        let kubelet = Kubelet::start(
            bins,
            &node,
            &ctrd,
            &cp.paths().kubeconfigs.join("kubelet.conf"),
            &cp.paths().pki.join("ca.crt"),
            &dir.join("kubelet"),
        )
        .unwrap();
        times.push(format!(
            "{n} {:.2}s ({})",
            t.elapsed().as_secs_f64(),
            cp.timings()
        ));
        nodes.push(node);
        ctrds.push(ctrd);
        cps.push(cp);
        kubelets.push(kubelet);
    }
    for n in ["c1", "c2", "c3"] {
        cps[0]
            .wait_node_ready(n, Duration::from_secs(180))
            .await
            .unwrap();
        cps[0].mark_control_plane(n).await.unwrap();
    }
    let to_ready = total.elapsed();

    // one endpoint on the host for all three API servers
    let backends = nodes
        .iter()
        .map(|n| std::net::SocketAddr::from((n.address(), 6443)))
        .collect();
    let proxy = ApiProxy::start("127.0.0.1:0".parse().unwrap(), net.fabric(), backends)
        .await
        .unwrap();
    let admin = std::fs::read_to_string(cps[0].paths().admin_kubeconfig()).unwrap();
    let host_conf = tmp.path().join("host-admin.conf");
    std::fs::write(
        &host_conf,
        admin.replace(
            &format!("server: https://{}:6443", nodes[0].address()),
            &format!("server: https://{}", proxy.local_addr()),
        ),
    )
    .unwrap();
    let kubectl = |args: &[&str]| {
        let mut c = tokio::process::Command::new(bins.path("kubectl"));
        c.arg(format!("--kubeconfig={}", host_conf.display()))
            .arg("--request-timeout=10s")
            .args(args);
        c
    };
    let out = run_async(&mut kubectl(&["get", "nodes"])).await.unwrap();
    report(&out);
    assert_eq!(out.matches(" Ready ").count(), 3, "{out}");
    assert_eq!(out.matches("control-plane").count(), 3, "{out}");
    run_async(&mut kubectl(&[
        "create",
        "configmap",
        "before-outage",
        "--from-literal=k=v",
    ]))
    .await
    .unwrap();

    // kill -9 the first control plane (etcd, API server, controller manager, scheduler)
    let t = Instant::now();
    cps[0].kill();
    let deadline = Instant::now() + Duration::from_secs(60);
    let got = loop {
        match run_async(&mut kubectl(&[
            "get",
            "configmap",
            "before-outage",
            "-o",
            "jsonpath={.data.k}",
        ]))
        .await
        {
            Ok(v) => break v,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("API through the endpoint after losing c1: {e}"),
        }
    };
    assert_eq!(got, "v");
    let out = run_async(&mut kubectl(&["get", "nodes"])).await.unwrap();
    assert!(out.contains("c2") && out.contains("c3"), "{out}");
    report(&format!(
        "ha timings: {}; all 3 Ready {:.2}s; API answered again {:.2}s after kill -9 of c1",
        times.join("; "),
        to_ready.as_secs_f64(),
        t.elapsed().as_secs_f64()
    ));

    drop(proxy);
    for k in &mut kubelets {
        k.stop().await.unwrap();
    }
    for cp in &mut cps {
        cp.stop().await;
    }
    for c in &mut ctrds {
        c.stop().await.unwrap();
    }
    sysctls.restore().unwrap();
    net.teardown().unwrap();
}
