//! Two nodes, each with its own containerd in its namespaces; locally built images; a container
//! on node 1 serves HTTP, a container on node 2 pings and fetches it across nodes.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure is a test failure

mod common;

use common::{report, which};

use std::path::Path;
use std::time::{Duration, Instant};

use kube_node::cmd::run_async;
use kube_node::image::{self, BUSYBOX_REFERENCE, PAUSE_REFERENCE};
use kube_node::net::{ClusterNet, DEFAULT_RUN_ROOT};
use kube_node::runtime::{attach_pod, Containerd, K8S_NAMESPACE};

#[test]
fn containers_on_two_nodes_reach_each_other() {
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
    if !Path::new("/usr/lib/cni/bridge").exists() {
        return common::skip("CNI plugins missing in /usr/lib/cni (scripts/install-deps.sh)");
    }
    let name = common::cluster_name("rt");
    common::guarded(&name, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(body(&name));
    });
}

async fn body(name: &str) {
    let tmp = tempfile::Builder::new().prefix("ck").tempdir().unwrap();
    let t0 = Instant::now();
    let busybox = which("busybox");
    let (pause, bb) =
        image::build_standard_images(&tmp.path().join("img"), &busybox, "cc").unwrap();
    let (pause2, bb2) =
        image::build_standard_images(&tmp.path().join("img2"), &busybox, "cc").unwrap();
    assert_eq!(
        bb.manifest_digest, bb2.manifest_digest,
        "busybox image is reproducible"
    );
    assert_eq!(
        pause.manifest_digest, pause2.manifest_digest,
        "pause image is reproducible"
    );
    let t_images = t0.elapsed();

    let mut net = ClusterNet::create(Path::new(DEFAULT_RUN_ROOT), name, 9).unwrap();
    let n1 = net.add_node("n1").unwrap();
    let n2 = net.add_node("n2").unwrap();
    let t_net = t0.elapsed() - t_images;

    let mut rts = Vec::new();
    for n in [&n1, &n2] {
        let c = Containerd::start(
            n,
            &tmp.path().join(n.name()),
            PAUSE_REFERENCE,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        rts.push(c);
    }
    let t_start = t0.elapsed() - t_images - t_net;
    let t1 = Instant::now();
    for c in &rts {
        c.import(&pause.path).await.unwrap();
        c.import(&bb.path).await.unwrap();
        let list = run_async(c.ctr(K8S_NAMESPACE).args(["images", "ls", "-q"]))
            .await
            .unwrap();
        assert!(
            list.contains(PAUSE_REFERENCE) && list.contains(BUSYBOX_REFERENCE),
            "{list}"
        );
    }
    let t_import = t1.elapsed();

    // server on node 1
    let srv_net = attach_pod(&n1, rts[0].paths(), "srv").await.unwrap();
    assert_eq!(srv_net.address.octets()[..3], [10, 244, 1]);
    let t2 = Instant::now();
    run_async(
        rts[0]
            .ctr(K8S_NAMESPACE)
            .args(["run", "-d", "--cgroup"])
            .arg(format!("{}/srv", n1.cgroup_parent()))
            .arg("--with-ns")
            .arg(format!("network:{}", srv_net.netns.display()))
            .args([
                BUSYBOX_REFERENCE,
                "srv",
                "sh",
                "-c",
                "mkdir -p /www && echo hello-from-n1 > /www/index.html && exec httpd -f -p 8080 -h /www",
            ]),
    )
    .await
    .unwrap();
    let t_run = t2.elapsed();

    // client on node 2: ping, then fetch (retrying until httpd listens, with a deadline)
    let cli_net = attach_pod(&n2, rts[1].paths(), "cli").await.unwrap();
    assert_eq!(cli_net.address.octets()[..3], [10, 244, 2]);
    let ip = srv_net.address;
    let script = format!(
        "ping -c 1 -W 5 {ip} && i=0; while [ $i -lt 200 ]; do wget -qO- http://{ip}:8080/ && exit 0; i=$((i+1)); sleep 0.05; done; exit 1"
    );
    let out = run_async(
        rts[1]
            .ctr(K8S_NAMESPACE)
            .args(["run", "--rm", "--cgroup"])
            .arg(format!("{}/cli", n2.cgroup_parent()))
            .arg("--with-ns")
            .arg(format!("network:{}", cli_net.netns.display()))
            .args([BUSYBOX_REFERENCE, "cli", "sh", "-c", &script]),
    )
    .await
    .unwrap();
    assert!(out.contains("1 packets received"), "{out}");
    assert!(out.contains("hello-from-n1"), "{out}");

    let rss: Vec<String> = rts
        .iter()
        .map(|c| {
            format!(
                "{}={}KiB",
                c.node().name(),
                c.pid().and_then(kube_node::host::rss_kib).unwrap_or(0)
            )
        })
        .collect();
    report(&format!(
        "runtime timings: images (pause compile + 2 archives, twice) {t_images:?}, 2-node network {t_net:?}, 2 containerd up {t_start:?} (each: {:?}, {:?}), import 2 images x2 {t_import:?}, ctr run -d {t_run:?}; containerd RSS {}",
        rts[0].startup(),
        rts[1].startup(),
        rss.join(" ")
    ));

    for c in &mut rts {
        c.stop().await.unwrap();
        c.stop().await.unwrap(); // idempotent
    }
    net.teardown().unwrap();
}
