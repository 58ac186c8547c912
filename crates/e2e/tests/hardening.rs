#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The proven attacks of the security review, each on a real 1+1 local cluster (swtpm, node
//! processes, etcd), and each now failing:
//!
//! * a worker's own certificate reads the master secret from etcd, rewrites keys, and asks
//!   the KeyService for data keys → refused (separate client CA for control-plane services);
//! * `cloud.json` unreadable for 3 s kills the lone control plane → the cluster stays healthy;
//! * 3000 idle TCP connections exhaust a node → `verify` and a join still work;
//! * a node relays the nonce to another node's verification service → `verify` refuses it.
//!
//! One cluster for all of them (sections in order, the destructive one last), so the test
//! costs one cluster start.

mod common {
    pub mod cluster;
}

use std::net::SocketAddrV4;
use std::path::Path;
use std::time::Duration;

use bootstrapper::services::NodePki;
use cloudcmd::apply::{apply, ApplyOptions};
use cloudcmd::verify::{verify, VerifyOptions};
use cluster::state::{KEY_JOIN_CONFIG, KEY_MASTER_SECRET};
use cluster_store::Store;
use common::cluster::{random_base, write_local_config, Cleanup};
use provider_local::cloud::{CloudState, PORT_ETCD_CLIENT, PORT_JOIN, PORT_VERIFY};

/// How many idle connections this process can hold: raises its soft descriptor limit to the
/// hard one, keeps 512 descriptors for everything else, and says so when it must scale down.
fn idle_budget(wanted: usize) -> usize {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    }
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let budget = usize::try_from(soft.saturating_sub(512)).unwrap_or(usize::MAX);
    if budget < wanted {
        eprintln!(
            "SCALED: the descriptor limit ({soft}) allows {budget} of {wanted} idle connections"
        );
    }
    wanted.min(budget)
}

fn node_logs(ws: &Path) -> String {
    let mut out = String::new();
    for n in std::fs::read_dir(ws.join("constellation-local/nodes")).unwrap() {
        let p = n.unwrap().path().join("node.log");
        out += &format!(
            "--- {}:\n{}\n",
            p.display(),
            std::fs::read_to_string(&p).unwrap_or_default()
        );
    }
    out
}

/// Socket inodes of `pid`'s open file descriptors.
fn socket_inodes(pid: u32) -> std::collections::BTreeSet<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_str()?.to_string();
            l.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

/// Inodes of all TCP sockets of the host.
fn tcp_inodes() -> std::collections::BTreeSet<u64> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|t| {
            t.lines()
                .skip(1)
                .filter_map(|l| l.split_whitespace().nth(9)?.parse().ok())
                .collect::<Vec<u64>>()
        })
        .collect()
}

/// Executables of live processes that run from `dir`.
fn running_from(dir: &Path) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path().join("exe")).ok())
        .filter(|exe| exe.starts_with(dir))
        .map(|exe| exe.display().to_string())
        .collect()
}

async fn verify_all(ws: &Path, cfg: &config::Config) -> cloudcmd::verify::VerifyReport {
    verify(
        &provider_local::workspace_without_kubernetes(ws),
        cfg,
        &VerifyOptions::default(),
    )
    .await
    .unwrap()
}

/// Forwards `/verify.API/GetAttestation` to another node: what a tampered node that relays
/// the owner's nonce to a good node does.
struct Relay {
    to: String,
}

#[tonic::async_trait]
impl proto::verify::api_server::Api for Relay {
    async fn get_attestation(
        &self,
        req: tonic::Request<proto::verify::GetAttestationRequest>,
    ) -> Result<tonic::Response<proto::verify::GetAttestationResponse>, tonic::Status> {
        let mut c = proto::verify::api_client::ApiClient::connect(self.to.clone())
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        c.get_attestation(req.into_inner()).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proven_attacks_fail() {
    let t = tempfile::tempdir().unwrap();
    let ws = t.path();
    let _c = Cleanup(ws);
    let base = random_base(60, 30);
    let cfg = write_local_config(ws, 1, base);
    if let Err(e) = apply(
        &provider_local::workspace_without_kubernetes(ws),
        &cfg,
        &ApplyOptions::default(),
        &mut |_: &str| {},
    )
    .await
    {
        panic!("apply failed: {e:#}\n{}", node_logs(ws));
    }
    let cloud = CloudState::load(&CloudState::path(ws)).unwrap().unwrap();
    let cp = cloud.node("control-plane-0").unwrap().clone();
    let worker = cloud.node("worker-0").unwrap().clone();
    let report = verify_all(ws, &cfg).await;
    assert!(report.all_verified(), "{report:#?}");

    // --- Every TPM belongs to its node; what runs is what was measured ---------------------
    let tcp = tcp_inodes();
    for n in &cloud.nodes {
        let pid = n.swtpm.unwrap().pid;
        let held: Vec<u64> = socket_inodes(pid).intersection(&tcp).copied().collect();
        assert!(
            held.is_empty(),
            "the swtpm of {} holds TCP sockets {held:?}",
            n.name
        );
    }
    let running: Vec<String> = running_from(&cp.dir.join("boot"));
    assert!(
        running.iter().any(|e| e.ends_with("/etcd"))
            && running.iter().any(|e| e.ends_with("/constellation-node")),
        "control-plane-0's etcd and Bootstrapper must run from its measured copies: {running:?}"
    );

    // --- A worker's credentials reach neither etcd nor the KeyService -----------------------
    // The attacker holds worker-0's own node certificate and key, and trusts control-plane-0's
    // server certificate whatever CA it comes from (the CA certificate is no secret): the
    // refusal must come from the services, not from the attacker's TLS client.
    let wpki = worker.dir.join("state/pki");
    let cpki = cp.dir.join("state/pki");
    let as_worker = NodePki {
        ca: cpki.join("cp-ca.crt"),
        cert: wpki.join("node.crt"),
        key: wpki.join("node.key"),
    };
    let etcd = vec![format!("https://{}:{PORT_ETCD_CLIENT}", cp.address)];
    let worker_etcd = async {
        let store = Store::connect(&etcd, &as_worker).await?;
        let got = store.get_json::<serde_json::Value>(KEY_MASTER_SECRET).await;
        let put = store
            .put_json(KEY_JOIN_CONFIG, &serde_json::json!({"rewritten": true}))
            .await;
        anyhow::Ok((got.map(|_| ()), put))
    }
    .await;
    let refusal = match worker_etcd {
        Err(e) => format!("{e:#}"),
        Ok((Err(g), Err(p))) => format!("get: {g:#}; put: {p:#}"),
        Ok((g, p)) => panic!("etcd served worker-0: get {g:?}, put {p:?}"),
    };
    eprintln!("etcd refused worker-0: {refusal}");
    // etcd says why in its log: the client certificate is not from a CA it trusts.
    let etcd_log = std::fs::read_to_string(cp.dir.join("state/etcd.log"))
        .or_else(|_| std::fs::read_to_string(cp.dir.join("etcd.log")))
        .unwrap_or_default();
    let why: Vec<&str> = etcd_log
        .lines()
        .filter(|l| l.contains("rejected connection"))
        .collect();
    eprintln!("etcd log: {why:?}");
    assert!(
        why.iter().any(|l| l.contains("unknown authority")),
        "etcd refused worker-0 for another reason: {refusal}\n{etcd_log}"
    );
    // The same with etcd's own client, as an attacker on the host would run it.
    let etcdctl = |pki: &NodePki, args: &[&str]| {
        std::process::Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(&etcd[0])
            .arg("--cacert")
            .arg(&pki.ca)
            .arg("--cert")
            .arg(&pki.cert)
            .arg("--key")
            .arg(&pki.key)
            .arg("--command-timeout=3s")
            .args(args)
            .output()
    };
    if let Ok(out) = etcdctl(&as_worker, &["get", KEY_MASTER_SECRET]) {
        assert!(
            !out.status.success(),
            "etcdctl as worker-0 read the master secret"
        );
        assert!(
            out.stdout.is_empty(),
            "etcdctl as worker-0 printed {:?}",
            out.stdout
        );
        let put = etcdctl(&as_worker, &["put", "/constellation/x", "y"]).unwrap();
        assert!(!put.status.success(), "etcdctl as worker-0 wrote a key");
    } else {
        eprintln!("SKIPPED: etcdctl is not installed (the etcd-client checks above ran)");
    }
    // The KeyService: worker-0 asks for control-plane-0's disk key.
    let mut ks = bootstrapper::backends::keyservice_client(cp.address, &as_worker)
        .await
        .unwrap();
    let denied = ks
        .get_data_key(proto::kms::GetDataKeyRequest {
            data_key_id: "measurementSecret".into(),
            length: 32,
        })
        .await
        .unwrap_err();
    eprintln!("KeyService refused worker-0: {denied}");
    // Why: the client certificate's issuer is not trusted. The client may see the alert
    // (UnknownCA); the node logs the reason (UnknownIssuer), possibly just after the client
    // saw the connection end, so its log is polled with a deadline.
    let seen_by_client = format!("{denied:?}").contains("UnknownCA");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let logged = loop {
        let node_log = std::fs::read_to_string(cp.dir.join("node.log")).unwrap_or_default();
        if node_log
            .lines()
            .any(|l| l.contains("handshake failed") && l.contains("UnknownIssuer"))
        {
            break true;
        }
        if std::time::Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        logged,
        "KeyService refused worker-0 for another reason: {denied:?} (client saw UnknownCA: {seen_by_client})"
    );
    // Positive controls: control-plane-0's control-plane identity and the owner's admin
    // credentials still work for both.
    let as_cp = NodePki {
        ca: cpki.join("cp-ca.crt"),
        cert: cpki.join("cp.crt"),
        key: cpki.join("cp.key"),
    };
    let mut ks = bootstrapper::backends::keyservice_client(cp.address, &as_cp)
        .await
        .unwrap();
    let key = ks
        .get_data_key(proto::kms::GetDataKeyRequest {
            data_key_id: "measurementSecret".into(),
            length: 32,
        })
        .await
        .unwrap();
    assert_eq!(key.into_inner().data_key.len(), 32);
    let admin = cloudcmd::admin::write_pem_files(
        &cloudcmd::admin::load(&ws.join(cloudcmd::ADMIN_CONF_FILE)).unwrap(),
        &ws.join("admin-pki"),
    )
    .unwrap();
    for who in [&as_cp, &admin] {
        let store = Store::connect(&etcd, who).await.unwrap();
        assert!(store
            .get_json::<serde_json::Value>(KEY_MASTER_SECRET)
            .await
            .unwrap()
            .is_some());
        assert!(store
            .get_json::<serde_json::Value>(KEY_JOIN_CONFIG)
            .await
            .unwrap()
            .is_some());
    }

    // --- cloud.json unreadable for 3 s ----------------------------------------------------
    // The lone control plane used to keep polling it after Init and exit(1) on the first read
    // error, orphaning etcd. Now it has stopped its join loop, and member nodes wait out
    // metadata errors.
    let cloud_json = CloudState::path(ws);
    let away = cloud_json.with_extension("away");
    std::fs::rename(&cloud_json, &away).unwrap();
    // The fault lasts 3 s (a duration of the scenario, not a synchronisation).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let alive_during = (
        cp.process.unwrap().is_alive(),
        worker.process.unwrap().is_alive(),
    );
    std::fs::rename(&away, &cloud_json).unwrap();
    assert_eq!(alive_during, (true, true), "{}", node_logs(ws));
    let report = verify_all(ws, &cfg).await;
    assert!(
        report.all_verified(),
        "after the metadata outage: {report:#?}"
    );

    // --- 3000 idle connections -------------------------------------------------------------
    // Silent TCP connections to control-plane-0's verification and join ports, re-opened as
    // soon as the node drops them, held while the owner verifies and a new worker joins.
    let wanted = 3000usize;
    let n = idle_budget(wanted);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let live = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut flood = Vec::with_capacity(n);
    for i in 0..n {
        let port = if i % 2 == 0 { PORT_VERIFY } else { PORT_JOIN };
        let addr = SocketAddrV4::new(cp.address, port);
        let (stop, live) = (stop.clone(), live.clone());
        flood.push(tokio::spawn(async move {
            use std::sync::atomic::Ordering::SeqCst;
            while !stop.load(SeqCst) {
                let Ok(s) = tokio::net::TcpStream::connect(addr).await else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                live.fetch_add(1, SeqCst);
                let mut b = [0u8; 1];
                // Returns when the node closes the connection (or on stop).
                tokio::select! {
                    _ = s.readable() => { let _ = s.try_read(&mut b); }
                    _ = async { while !stop.load(SeqCst) { tokio::time::sleep(Duration::from_millis(100)).await } } => {}
                }
                live.fetch_sub(1, SeqCst);
            }
        }));
    }
    // Wait until the flood stands (a condition, with a deadline).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while live.load(std::sync::atomic::Ordering::SeqCst) < n * 9 / 10 {
        assert!(
            std::time::Instant::now() < deadline,
            "the flood did not stand up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let during = live.load(std::sync::atomic::Ordering::SeqCst);
    let t0 = std::time::Instant::now();
    let report = verify_all(ws, &cfg).await;
    let verify_took = t0.elapsed();
    assert!(
        report.all_verified(),
        "verify under {during} idle connections: {report:#?}"
    );
    // A join: scale the workers from 1 to 2.
    let cfg2 = write_local_config(ws, 2, base);
    let t0 = std::time::Instant::now();
    if let Err(e) = apply(
        &provider_local::workspace_without_kubernetes(ws),
        &cfg2,
        &ApplyOptions::default(),
        &mut |_: &str| {},
    )
    .await
    {
        panic!("join under the flood failed: {e:#}\n{}", node_logs(ws));
    }
    let join_took = t0.elapsed();
    let still = live.load(std::sync::atomic::Ordering::SeqCst);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for f in flood {
        let _ = f.await;
    }
    eprintln!(
        "{n} idle connections ({during} live at the start, {still} at the end): verify {verify_took:?}, join of worker-1 {join_took:?}"
    );
    assert!(cp.process.unwrap().is_alive());
    let report = verify_all(ws, &cfg2).await;
    assert!(report.all_verified(), "after the flood: {report:#?}");
    assert_eq!(report.nodes.len(), 3);

    // --- Relay (last: it takes the worker's place) ---------------------------------------
    // worker-0 is replaced by a process that relays the owner's nonce to control-plane-0: the
    // answer is a genuine, fresh document of a good node, with this cluster's PCR 15.
    worker
        .process
        .unwrap()
        .stop_group(Duration::from_secs(5))
        .unwrap();
    let listener = tokio::net::TcpListener::bind(SocketAddrV4::new(worker.address, PORT_VERIFY))
        .await
        .unwrap();
    let relay = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(proto::verify::api_server::ApiServer::new(Relay {
                to: format!("http://{}:{PORT_VERIFY}", cp.address),
            }))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let report = verify_all(ws, &cfg).await;
    relay.abort();
    let by_name = |n: &str| report.nodes.iter().find(|x| x.node == n).unwrap().clone();
    assert!(by_name("control-plane-0").verified, "{report:#?}");
    let w = by_name("worker-0");
    assert!(!w.verified, "the relayed document was accepted: {w:#?}");
    let err = w.error.unwrap();
    // Only worker-0's recorded AK is trusted for worker-0 (control-plane-0's is not).
    assert!(
        err.contains("attestation key is not trusted") && err.contains("1 AKs are trusted"),
        "refused for another reason: {err}"
    );
}
