//! The node-level façade on an external etcd, as the Bootstrapper is to use it: an etcd 3.6
//! with TLS (its own CA, made here with rcgen) runs in the host's network namespace on a
//! loopback address; the first control plane (`KubeNode::control_plane_init`, etcd mode
//! `Etcd::Host`) reaches it through a forwarder on 127.0.0.1:2379 inside its node and starts no
//! etcd of its own; a worker joins with nothing but a `WorkerJoin` round-tripped through JSON and
//! becomes Ready; a second control plane joins from a `ControlPlaneJoin` (no etcd CA in it) on the
//! same etcd; `health` names containerd after it is killed. The host is left as found.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure is a test failure

mod common;

use common::{report, which};

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kube_node::cmd::run_async;
use kube_node::control_plane::KubeBinaries;
use kube_node::host::HostSysctls;
use kube_node::image;
use kube_node::join::{ControlPlaneJoin, WorkerJoin};
use kube_node::net::{ClusterNet, DEFAULT_RUN_ROOT};
use kube_node::node::{ClusterSpec, Etcd, HostEtcd, KubeNode, NodeSetup};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

#[test]
fn control_planes_on_an_external_etcd_and_a_worker_from_join_data() {
    let Some(bins) = common::kube_binaries_or_skip() else {
        return;
    };
    let name = common::cluster_name("wire");
    common::guarded(&name, || common::block_on(body(&name, &bins)));
}

/// The etcd CA, a server certificate (SANs 127.0.0.1 and the member's address) and a client
/// certificate, written into `dir`.
struct EtcdPki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn etcd_pki(dir: &Path, member: Ipv4Addr) -> EtcdPki {
    std::fs::create_dir_all(dir).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name
        .push(DnType::CommonName, "test control-plane CA");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = p.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(p, ca_key);
    let leaf = |cn: &str, ips: &[Ipv4Addr], eku: Vec<ExtendedKeyUsagePurpose>| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.subject_alt_names = ips
            .iter()
            .map(|ip| SanType::IpAddress(IpAddr::V4(*ip)))
            .collect();
        p.extended_key_usages = eku;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        (
            p.signed_by(&key, &issuer).unwrap().pem(),
            key.serialize_pem(),
        )
    };
    let (server_pem, server_key_pem) = leaf(
        "etcd",
        &[Ipv4Addr::LOCALHOST, member],
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    );
    let (client_pem, client_key_pem) = leaf(
        "kube-apiserver-etcd-client",
        &[],
        vec![ExtendedKeyUsagePurpose::ClientAuth],
    );
    let pki = EtcdPki {
        ca: dir.join("ca.crt"),
        server_cert: dir.join("server.crt"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.crt"),
        client_key: dir.join("client.key"),
    };
    for (p, d) in [
        (&pki.ca, ca_cert.pem()),
        (&pki.server_cert, server_pem),
        (&pki.server_key, server_key_pem),
        (&pki.client_cert, client_pem),
        (&pki.client_key, client_key_pem),
    ] {
        std::fs::write(p, d).unwrap();
    }
    pki
}

/// The host-side etcd; killed and reaped on drop (also when the test panics).
struct HostEtcdProcess(std::process::Child);

impl Drop for HostEtcdProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn etcdctl(bins: &KubeBinaries, pki: &EtcdPki, endpoint: SocketAddr) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(bins.path("etcdctl"));
    c.arg(format!("--endpoints=https://{endpoint}"))
        .arg(format!("--cacert={}", pki.ca.display()))
        .arg(format!("--cert={}", pki.client_cert.display()))
        .arg(format!("--key={}", pki.client_key.display()))
        .args(["--dial-timeout=1s", "--command-timeout=3s"]);
    c
}

async fn body(name: &str, bins: &KubeBinaries) {
    let tmp = tempfile::Builder::new().prefix("ck").tempdir().unwrap();
    let total = Instant::now();
    let mut phases: Vec<(&str, Duration)> = Vec::new();

    // etcd 3.6 on a loopback address of its own in the host namespace (like a Bootstrapper's)
    let t = Instant::now();
    let pid = std::process::id();
    let member_ip = Ipv4Addr::new(127, 60 + (pid % 60) as u8, ((pid / 60) % 250) as u8, 2);
    let member = SocketAddr::from((member_ip, 2379));
    let pki = etcd_pki(&tmp.path().join("etcd-pki"), member_ip);
    let etcd_log = std::fs::File::create(tmp.path().join("etcd.log")).unwrap();
    let etcd = std::process::Command::new(bins.path("etcd"))
        .arg(format!("--name={name}"))
        .arg(format!("--data-dir={}", tmp.path().join("etcd").display()))
        .arg(format!("--listen-client-urls=https://{member}"))
        .arg(format!("--advertise-client-urls=https://{member}"))
        .arg(format!("--listen-peer-urls=http://{member_ip}:2380"))
        .arg(format!(
            "--initial-advertise-peer-urls=http://{member_ip}:2380"
        ))
        .arg(format!("--initial-cluster={name}=http://{member_ip}:2380"))
        .arg(format!("--cert-file={}", pki.server_cert.display()))
        .arg(format!("--key-file={}", pki.server_key.display()))
        .arg(format!("--trusted-ca-file={}", pki.ca.display()))
        .args(["--client-cert-auth", "--log-level=warn"])
        .stdin(std::process::Stdio::null())
        .stdout(etcd_log.try_clone().unwrap())
        .stderr(etcd_log)
        .spawn()
        .unwrap();
    let _etcd = HostEtcdProcess(etcd);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = run_async(etcdctl(bins, &pki, member).args(["endpoint", "health"])).await;
        match r {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!(
                "host etcd not healthy: {e}; log: {}",
                kube_node::process::log_tail(&tmp.path().join("etcd.log"), 10)
            ),
        }
    }
    phases.push(("host etcd 3.6 (TLS) healthy", t.elapsed()));

    let t = Instant::now();
    let (pause, _) =
        image::build_standard_images(&tmp.path().join("img"), &which("busybox"), "cc").unwrap();
    phases.push(("images built", t.elapsed()));

    let mut net = ClusterNet::create(Path::new(DEFAULT_RUN_ROOT), name, 15).unwrap();
    let mut sysctls = HostSysctls::for_kubelet().unwrap();
    let setup = |n: &str, net: &mut ClusterNet| NodeSetup {
        bins: bins.clone(),
        net: net.add_node(n).unwrap(),
        dir: tmp.path().join(n),
        images: vec![pause.path.clone()],
        deadline: Duration::from_secs(120),
    };
    let cluster = ClusterSpec {
        cluster_name: name.to_owned(),
        extra_sans: vec![],
        etcd: Etcd::Host(HostEtcd {
            members: vec![member],
            ca_file: pki.ca.clone(),
            cert_file: pki.client_cert.clone(),
            key_file: pki.client_key.clone(),
        }),
        coredns: false,
    };

    // 1. the first control plane on the host etcd
    let t = Instant::now();
    let s1 = setup("c1", &mut net);
    let mut c1 = KubeNode::control_plane_init(&s1, &cluster).await.unwrap();
    phases.push(("c1: control_plane_init (node Ready)", t.elapsed()));
    let cp = c1.control_plane().unwrap();
    assert!(
        !cp.pids().iter().any(|(n, _)| n == "etcd"),
        "no etcd of its own: {:?}",
        cp.pids()
    );
    assert!(
        !cp.pki_dir().join("etcd").exists(),
        "kubeadm made no etcd certificates"
    );
    // the API's objects are in the host etcd
    let keys = run_async(etcdctl(bins, &pki, member).args([
        "get",
        "/registry/namespaces/",
        "--prefix",
        "--keys-only",
    ]))
    .await
    .unwrap();
    assert!(keys.contains("/registry/namespaces/default"), "{keys}");

    // 2. a second control plane from join data (shared keys without an etcd CA)
    let t = Instant::now();
    let ticket = vec![c1.control_plane_join_data().unwrap().to_ticket_file()];
    let cpj = ControlPlaneJoin::from_ticket_files(&ticket).unwrap();
    let mut names: Vec<&str> = cpj.files.iter().map(|f| f.name.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "ca.crt",
            "ca.key",
            "front-proxy-ca.crt",
            "front-proxy-ca.key",
            "sa.key",
            "sa.pub"
        ]
    );
    assert_eq!(cpj.etcd_member, None);
    let s3 = setup("c2", &mut net);
    let mut c2 = KubeNode::control_plane_join(&s3, &cluster, &cpj)
        .await
        .unwrap();
    phases.push(("c2: control_plane_join (node Ready)", t.elapsed()));
    // 3. a worker with nothing but the join data, through JSON, naming both API servers
    let t = Instant::now();
    // (as a join ticket's (name, bytes) file: serde_json inside)
    let ticket = vec![c1
        .worker_join_for("w1", &[c1.api_server().unwrap(), c2.api_server().unwrap()])
        .unwrap()
        .to_ticket_file()];
    let join = WorkerJoin::from_ticket_files(&ticket).unwrap();
    let s2 = setup("w1", &mut net);
    let mut w1 = KubeNode::worker_join(&s2, &join).await.unwrap();
    c1.control_plane_mut()
        .unwrap()
        .wait_node_ready("w1", Duration::from_secs(120))
        .await
        .unwrap();
    phases.push(("w1: worker_join -> Ready", t.elapsed()));
    let other = {
        let mut j = join.clone();
        j.node_name = "w2".into();
        j
    };
    let err = KubeNode::worker_join(&s2, &other).await.unwrap_err();
    assert!(
        matches!(&err, kube_node::node::KubeNodeError::WrongNode { expected, .. } if expected == "w2"),
        "{err}"
    );

    let nodes = run_async(
        c2.control_plane()
            .unwrap()
            .kubectl()
            .args(["get", "nodes", "-o", "wide"]),
    )
    .await
    .unwrap();
    report(&format!("kubectl get nodes (through c2):\n{nodes}"));
    let roles: Vec<(String, String)> = nodes
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_owned(), format!("{} {}", f[1], f[2]))
        })
        .collect();
    assert_eq!(
        roles,
        [
            ("c1".to_owned(), "Ready control-plane".to_owned()),
            ("c2".to_owned(), "Ready control-plane".to_owned()),
            ("w1".to_owned(), "Ready <none>".to_owned()),
        ],
        "{nodes}"
    );
    for n in [&mut c1, &mut w1, &mut c2] {
        n.health().unwrap();
    }

    let mem: Vec<String> = [("w1", &w1), ("c2", &c2)]
        .iter()
        .flat_map(|(node, n)| {
            n.memory().into_iter().map(move |(p, pid, _)| {
                let r = kube_node::host::rss(pid).unwrap_or_default();
                format!(
                    "{node}/{p} {} MiB (anon {}, file {})",
                    r.total / 1024,
                    r.anon / 1024,
                    r.file / 1024
                )
            })
        })
        .collect();
    // a worker's Kubernetes processes, settled: containerd + kubelet + kube-proxy
    let settle = Instant::now()
        + Duration::from_secs(
            std::env::var("WIRE_SETTLE_SECS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
        );
    let cpu = |n: &KubeNode| -> Duration {
        n.memory()
            .iter()
            .filter_map(|(_, pid, _)| kube_node::host::cpu_time(*pid))
            .sum()
    };
    let (cpu0, settle0) = (cpu(&w1), Instant::now());
    while Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let idle_cpu =
        (cpu(&w1).as_secs_f64() - cpu0.as_secs_f64()) / settle0.elapsed().as_secs_f64().max(0.001);
    let worker: Vec<(String, kube_node::host::Rss)> = w1
        .memory()
        .into_iter()
        .map(|(p, pid, _)| (p, kube_node::host::rss(pid).unwrap_or_default()))
        .collect();
    let sum = |f: fn(&kube_node::host::Rss) -> u64| -> u64 {
        worker.iter().map(|(_, r)| f(r)).sum::<u64>() / 1024
    };
    report(&format!(
        "worker w1 memory (MiB, total/anon/file/pss/private): {}; sum RSS {} (anon {}, file {}), PSS {}, private {}, peak RSS {}; idle CPU {:.1} %",
        worker
            .iter()
            .map(|(p, r)| format!(
                "{p} {}/{}/{}/{}/{}",
                r.total / 1024,
                r.anon / 1024,
                r.file / 1024,
                r.pss / 1024,
                r.private / 1024
            ))
            .collect::<Vec<_>>()
            .join(", "),
        sum(|r| r.total),
        sum(|r| r.anon),
        sum(|r| r.file),
        sum(|r| r.pss),
        sum(|r| r.private),
        sum(|r| r.peak),
        idle_cpu * 100.0,
    ));

    // 4. the first control plane goes away: the worker's kubelet renews its lease through c2
    // (its local API forwarder skips the dead API server)
    let t = Instant::now();
    let renew = |c2: &KubeNode| {
        let mut c = c2.control_plane().unwrap().kubectl();
        c.args([
            "get",
            "lease",
            "-n",
            "kube-node-lease",
            "w1",
            "-o",
            "jsonpath={.spec.renewTime}",
        ]);
        c
    };
    c1.stop().await.unwrap();
    phases.push(("c1 stopped", t.elapsed()));
    let t = Instant::now();
    let stopped_at = run_async(&mut renew(&c2)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = run_async(&mut renew(&c2)).await.unwrap_or_default();
        if !now.is_empty() && now != stopped_at {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "w1's lease not renewed since {stopped_at} with c1 down"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    w1.health().unwrap();
    phases.push(("then w1's lease renewed via c2", t.elapsed()));

    // the same node comes back on its state folder (what a restarted Bootstrapper does):
    // kubeadm keeps the existing certificates, the node is Ready again
    let t = Instant::now();
    let ca_before = std::fs::read(s1.dir.join("control-plane/pki/ca.crt")).unwrap();
    let mut c1 = KubeNode::control_plane_init(&s1, &cluster).await.unwrap();
    assert_eq!(
        std::fs::read(c1.control_plane().unwrap().pki_dir().join("ca.crt")).unwrap(),
        ca_before,
        "the cluster CA survives a restart"
    );
    c1.health().unwrap();
    phases.push(("c1 restarted on its state folder -> Ready", t.elapsed()));

    // 5. health names a dead containerd
    let pid = w1.containerd_pid().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let not_ready = loop {
        match w1.health() {
            Err(e) => break e,
            Ok(()) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Ok(()) => panic!("containerd killed, health still Ok"),
        }
    };
    assert_eq!(not_ready.component, "containerd", "{not_ready}");
    assert!(not_ready.reason.contains("signal: 9"), "{not_ready}");

    let phase_text: Vec<String> = phases
        .iter()
        .map(|(n, d)| format!("{n} {:.2}s", d.as_secs_f64()))
        .collect();
    report(&format!(
        "wire timings: {}; total {:.2}s; RSS: {}",
        phase_text.join(", "),
        total.elapsed().as_secs_f64(),
        mem.join(", ")
    ));

    w1.stop().await.unwrap();
    c2.stop().await.unwrap();
    c1.stop().await.unwrap();
    sysctls.restore().unwrap();
    net.teardown().unwrap();
}
