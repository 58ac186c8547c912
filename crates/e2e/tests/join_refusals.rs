#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The JoinService refuses what it must, says why, and writes nothing to etcd for it. A real
//! one-node cluster (swtpm, node processes, etcd) and "rogue" joiners with their own real
//! swtpm, measured exactly as the launcher measures a node of this image:
//!
//! * an attestation key the provider never recorded (a machine outside this cluster) →
//!   `PermissionDenied`, "attestation key is not trusted";
//! * a vouched-for, correctly measured node that replays an attestation document made for an
//!   earlier handshake → `PermissionDenied`, "quote is not fresh";
//! * a vouched-for node whose PCR 15 already holds a cluster ID (it belongs to another
//!   cluster) → `PermissionDenied` naming PCR 15, expected zero;
//! * a vouched-for, unmeasured-into-any-cluster node → admitted (the positive control: the
//!   refusals above were for the stated reasons, not for anything else).

mod common {
    pub mod cluster;
    pub mod rogue;
}

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;

use attestation::Variant;
use cloudcmd::apply::{apply, ApplyOptions};
use cluster_store::Store;
use common::cluster::{random_base, write_local_config, Cleanup};
use common::rogue::Rogue;
use provider_local::cloud::{CloudState, PORT_ETCD_CLIENT};

const DISK: &str = "0f1e2d3c-4b5a-4978-8796-a5b4c3d2e1f0";

/// Hands out one document captured earlier (a genuine quote of this TPM, for another nonce
/// and another TLS key) instead of a fresh one.
struct Replaying(Vec<u8>);

impl attestation::Issuer for Replaying {
    fn variant(&self) -> Variant {
        Variant::LocalVtpm
    }
    fn issue(&self, _: &[u8], _: &[u8]) -> Result<Vec<u8>, attestation::IssueError> {
        Ok(self.0.clone())
    }
}

/// Names in the node registry, read with the owner's admin certificate.
async fn registry(ws: &Path, cp: Ipv4Addr) -> Vec<String> {
    let pki = cloudcmd::admin::write_pem_files(
        &cloudcmd::admin::load(&ws.join(cloudcmd::ADMIN_CONF_FILE)).unwrap(),
        &ws.join("admin-pki"),
    )
    .unwrap();
    let store = Store::connect(&[format!("https://{cp}:{PORT_ETCD_CLIENT}")], &pki)
        .await
        .unwrap();
    store
        .nodes()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_refusals_leave_no_trace() {
    let t = tempfile::tempdir().unwrap();
    let ws = t.path();
    let _c = Cleanup(ws);
    let cfg = write_local_config(ws, 0, random_base(200, 50));
    apply(
        &provider_local::workspace_without_kubernetes(ws),
        &cfg,
        &ApplyOptions::default(),
        &mut |_: &str| {},
    )
    .await
    .unwrap();
    let cloud = CloudState::load(&CloudState::path(ws)).unwrap().unwrap();
    let cp = cloud.endpoint().unwrap();
    let image = cloud.image_dir.clone();
    assert_eq!(registry(ws, cp).await, vec!["control-plane-0".to_string()]);

    // A machine the provider never created.
    let outsider = Rogue::boot(&ws.join("outsider"), &image);
    let s = outsider.join(cp, DISK).await.unwrap_err();
    assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}");
    assert!(
        s.message().contains("attestation key is not trusted"),
        "{}",
        s.message()
    );

    // A vouched-for, correctly measured machine replaying a document from an earlier session.
    let replayer = Rogue::boot(&ws.join("replayer"), &image);
    replayer.vouch(ws, "worker-7");
    let captured = attestation::Issuer::issue(
        &tpm::TpmIssuer::new(replayer.tpm.clone(), Variant::LocalVtpm).unwrap(),
        &[1u8; 32],
        &[2u8; 32],
    )
    .unwrap();
    let s = replayer
        .join_with(cp, Arc::new(Replaying(captured)), DISK)
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}");
    assert!(
        s.message().contains("quote is not fresh"),
        "{}",
        s.message()
    );

    // A vouched-for machine that already belongs to a cluster (PCR 15 holds a cluster ID).
    let member_elsewhere = Rogue::boot(&ws.join("other-cluster"), &image);
    member_elsewhere.vouch(ws, "worker-8");
    member_elsewhere.tpm.pcr_event(15, &[7u8; 32]).unwrap();
    let s = member_elsewhere.join(cp, DISK).await.unwrap_err();
    assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}");
    assert!(
        s.message().contains("PCR 15: expected 0000000000000000"),
        "{}",
        s.message()
    );

    // Nothing was written for any of them.
    assert_eq!(registry(ws, cp).await, vec!["control-plane-0".to_string()]);

    // The KeyService answers cluster members only: without a cluster certificate, no key.
    let ca = tonic::transport::Certificate::from_pem(
        std::fs::read(ws.join("admin-pki/ca.pem")).unwrap(),
    );
    let ep = tonic::transport::Endpoint::from_shared(format!(
        "https://{cp}:{}",
        provider_local::cloud::PORT_KEYSERVICE
    ))
    .unwrap()
    .tls_config(
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(ca)
            .domain_name(cp.to_string()),
    )
    .unwrap();
    let refused = match ep.connect().await {
        Err(_) => true,
        Ok(ch) => proto::kms::api_client::ApiClient::new(ch)
            .get_data_key(proto::kms::GetDataKeyRequest {
                data_key_id: "measurementSecret".into(),
                length: 32,
            })
            .await
            .is_err(),
    };
    assert!(
        refused,
        "the KeyService gave a key to a client without a cluster certificate"
    );

    // Positive control: a vouched-for machine with PCR 15 zero is admitted and registered.
    let fresh = Rogue::boot(&ws.join("fresh"), &image);
    fresh.vouch(ws, "worker-9");
    fresh.join(cp, DISK).await.unwrap();
    let mut names = registry(ws, cp).await;
    names.sort();
    assert_eq!(names, vec!["control-plane-0", "worker-9"]);
}
