#![allow(clippy::unwrap_used, clippy::expect_used)]
//! End to end on the local provider with real swtpm, real node processes and real etcd:
//! apply (infrastructure + init) → status → PCR 15 → re-apply is a no-op → terminate leaves
//! nothing running. Needs `constellation-node` built next to the test binary (cargo does that
//! for `cargo test --workspace`).

mod common {
    pub mod cluster;
}

use cloudcmd::apply::{apply, ApplyOptions};
use common::cluster::{random_base, write_local_config, Cleanup};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_status_terminate() {
    let t = tempfile::tempdir().unwrap();
    let ws = t.path();
    let _c = Cleanup(ws);
    let cfg = write_local_config(ws, 1, random_base(100, 100));
    let mut lines = vec![];
    let out = apply(
        &provider_local::workspace_without_kubernetes(ws),
        &cfg,
        &ApplyOptions::default(),
        &mut |m: &str| lines.push(m.to_string()),
    )
    .await;
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            for n in std::fs::read_dir(ws.join("constellation-local/nodes")).unwrap() {
                let p = n.unwrap().path().join("node.log");
                eprintln!(
                    "--- {}:\n{}",
                    p.display(),
                    std::fs::read_to_string(&p).unwrap_or_default()
                );
            }
            panic!("apply failed: {e:#}\n{}", lines.join("\n"));
        }
    };
    let id = out.cluster_id.clone().unwrap();
    assert_eq!(id.len(), 64);

    // State file, master secret mode, admin credentials.
    let state = config::state::State::load(&ws.join(cloudcmd::STATE_FILE)).unwrap();
    assert_eq!(state.cluster_id().unwrap().to_hex(), id);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(ws.join(cloudcmd::MASTER_SECRET_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(ws.join(cloudcmd::ADMIN_CONF_FILE).exists());

    // Status: the init node reports initialized with PCR 15 = the value derived from the ID.
    let st = cloudcmd::status::status(&provider_local::workspace_without_kubernetes(ws))
        .unwrap()
        .unwrap();
    assert!(st.initialized);
    let cp = st
        .nodes
        .iter()
        .find(|n| n.name == "control-plane-0")
        .unwrap();
    assert!(cp.running && cp.tpm_running);
    let expected15 = hex::encode(state.cluster_id().unwrap().expected_pcr15());
    assert_eq!(cp.pcr15.as_deref(), Some(expected15.as_str()));
    assert_eq!(st.nodes.len(), 2);

    // Re-running apply creates nothing and does not re-initialize.
    let secret_before = std::fs::read(ws.join(cloudcmd::MASTER_SECRET_FILE)).unwrap();
    let again = apply(
        &provider_local::workspace_without_kubernetes(ws),
        &cfg,
        &ApplyOptions::default(),
        &mut |_: &str| {},
    )
    .await
    .unwrap();
    assert!(!again.initialized_now);
    assert_eq!(again.cluster_id.unwrap(), id);
    assert_eq!(
        std::fs::read(ws.join(cloudcmd::MASTER_SECRET_FILE)).unwrap(),
        secret_before
    );

    // The verification service of the init node: a document for the caller's nonce, bound to
    // "VerifyService", that validates against the cluster's PCR 15; refused for another nonce
    // (a replay); a missing or oversized nonce is refused by the node.
    let ep = format!(
        "http://{}:{}",
        state.infrastructure.cluster_endpoint,
        provider_local::cloud::PORT_VERIFY
    );
    let mut client = proto::verify::api_client::ApiClient::connect(ep)
        .await
        .unwrap();
    for bad in [vec![], vec![7u8; cluster::ids::MAX_NONCE_LEN + 1]] {
        let e = client
            .get_attestation(proto::verify::GetAttestationRequest { nonce: bad })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    }
    let nonce = [42u8; 32];
    let doc = client
        .get_attestation(proto::verify::GetAttestationRequest {
            nonce: nonce.to_vec(),
        })
        .await
        .unwrap()
        .into_inner()
        .attestation;
    let cloud_state =
        provider_local::cloud::CloudState::load(&provider_local::cloud::CloudState::path(ws))
            .unwrap()
            .unwrap();
    let policy = cloud_state.validator_policy();
    let mut m = cfg.measurements().clone();
    m.set(
        15,
        measurements::Measurement::enforced(state.cluster_id().unwrap().expected_pcr15().to_vec()),
    )
    .unwrap();
    let validator = attestation::validator_for(cfg.variant(), m, policy).unwrap();
    let verified = validator.validate(&doc, &nonce).unwrap();
    verified
        .require_user_data(cluster::ids::VERIFY_USER_DATA)
        .unwrap();
    let replay = validator.validate(&doc, &[43u8; 32]).unwrap_err();
    assert!(replay.to_string().contains("fresh"), "{replay}");

    // Terminate: no node process, no swtpm left.
    let cloud =
        provider_local::cloud::CloudState::load(&provider_local::cloud::CloudState::path(ws))
            .unwrap()
            .unwrap();
    let recs: Vec<_> = cloud
        .nodes
        .iter()
        .flat_map(|n| [n.process, n.swtpm])
        .flatten()
        .collect();
    assert_eq!(recs.len(), 4);
    cloudcmd::terminate(
        &provider_local::workspace_without_kubernetes(ws),
        &mut |_: &str| {},
    )
    .unwrap();
    for r in recs {
        assert!(!r.is_alive(), "process {} survived terminate", r.pid);
    }
    assert!(!ws.join(cloudcmd::STATE_FILE).exists());
    assert!(ws.join(cloudcmd::MASTER_SECRET_FILE).exists());
}
