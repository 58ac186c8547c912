//! The refusal rules, in memory: backends are maps, the attestation is a software TPM.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use attestation::insecure_software_tpm::InsecureSoftwareTpm;
use attestation::{Issuer, ValidationError, Validator, Variant};
use cluster::env::{Metadata, MetadataError};
use cluster::inventory::{ClusterInfo, NodeInfo};
use cluster::state::{JoinConfig, NodeEntry};

use super::*;
use crate::validator::{JoinPolicy, JoinValidator};

const UUID: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";

struct StaticMetadata(Arc<ClusterInfo>);
impl Metadata for StaticMetadata {
    fn cluster(&self) -> Result<Arc<ClusterInfo>, MetadataError> {
        Ok(self.0.clone())
    }
}

#[derive(Default)]
struct MemRegistry(Mutex<BTreeMap<String, NodeEntry>>);
#[tonic::async_trait]
impl Registry for MemRegistry {
    async fn nodes(&self) -> Result<Vec<NodeEntry>, BackendError> {
        Ok(self.0.lock().unwrap().values().cloned().collect())
    }
    async fn put_node(&self, e: &NodeEntry) -> Result<(), BackendError> {
        self.0.lock().unwrap().insert(e.name.clone(), e.clone());
        Ok(())
    }
}

struct MemKeys;
#[tonic::async_trait]
impl KeySource for MemKeys {
    async fn data_key(&self, id: &str) -> Result<Vec<u8>, BackendError> {
        Ok(format!("key-{id}").into_bytes())
    }
}

struct MemIssuer;
#[tonic::async_trait]
impl CertIssuer for MemIssuer {
    fn sign_node_csr(&self, csr: &[u8], name: &str, a: Ipv4Addr) -> Result<String, BackendError> {
        if csr.is_empty() {
            return Err(BackendError::Invalid("empty request".into()));
        }
        Ok(format!("CERT {name} {a}"))
    }
    async fn ticket_files(&self, node: &NodeInfo) -> Result<Vec<(String, Vec<u8>)>, BackendError> {
        let mut files = vec![(ticket::CA_CERT.into(), b"CA".to_vec())];
        if node.role == Role::ControlPlane {
            files.push((ticket::CA_KEY.into(), b"CA KEY".to_vec()));
        }
        Ok(files)
    }
}

#[derive(Default)]
struct MemMembers(Mutex<Vec<String>>);
#[tonic::async_trait]
impl Membership for MemMembers {
    async fn add_control_plane(&self, node: &NodeInfo) -> Result<String, BackendError> {
        let mut m = self.0.lock().unwrap();
        if !m.contains(&node.name) {
            m.push(node.name.clone());
        }
        Ok(m.join(","))
    }
}

struct World {
    admission: Admission,
    registry: Arc<MemRegistry>,
    cp: InsecureSoftwareTpm,
    worker: InsecureSoftwareTpm,
    stranger: InsecureSoftwareTpm,
    metadata: Arc<StaticMetadata>,
}

fn node(name: &str, role: Role, last: u8, tpm: &InsecureSoftwareTpm) -> NodeInfo {
    NodeInfo {
        name: name.into(),
        role,
        group: role.as_str().into(),
        address: Ipv4Addr::new(127, 9, 0, last),
        ak_public: Some(tpm.ak_public().to_vec()),
        internal_address: None,
    }
}

fn world() -> World {
    let cp = InsecureSoftwareTpm::generate(Variant::LocalVtpm).unwrap();
    let worker = InsecureSoftwareTpm::generate(Variant::LocalVtpm).unwrap();
    let stranger = InsecureSoftwareTpm::generate(Variant::LocalVtpm).unwrap();
    let cluster = ClusterInfo {
        uid: "u".into(),
        name: "c".into(),
        variant: "local-vtpm".into(),
        init_secret_hash: String::new(),
        nodes: vec![
            node("control-plane-0", Role::ControlPlane, 1, &cp),
            node("worker-0", Role::Worker, 2, &worker),
        ],
    };
    let metadata = Arc::new(StaticMetadata(Arc::new(cluster)));
    let registry = Arc::new(MemRegistry::default());
    let policy = JoinPolicy::new(JoinConfig::new(
        "local-vtpm".into(),
        measurements::Measurements::default(),
        vec![5; 32],
    ));
    let admission = Admission::new(
        "control-plane-0".into(),
        "127.9.0.1:6443".into(),
        policy,
        metadata.clone(),
        registry.clone(),
        Arc::new(MemKeys),
        Arc::new(MemIssuer),
        Arc::new(MemMembers::default()),
    );
    World {
        admission,
        registry,
        cp,
        worker,
        stranger,
        metadata,
    }
}

fn fp(t: &InsecureSoftwareTpm) -> [u8; 32] {
    t.ak_fingerprint().0
}

fn req(cp: bool) -> JoinRequest {
    JoinRequest {
        disk_uuid: UUID.into(),
        certificate_request: b"csr".to_vec(),
        is_control_plane: cp,
    }
}

fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn a_worker_gets_a_ticket_without_control_plane_keys() {
    let w = world();
    let t = block(w.admission.join(&fp(&w.worker), &req(false))).unwrap();
    assert_eq!(t.node, "worker-0");
    assert_eq!(t.node_certificate, "CERT worker-0 127.9.0.2");
    assert_eq!(t.state_disk_key, format!("key-{UUID}").into_bytes());
    assert_eq!(t.measurement_secret, b"key-measurementSecret".to_vec());
    assert_eq!(t.measurement_salt, vec![5; 32]);
    let names: Vec<&str> = t.files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, [ticket::CA_CERT]);
    let reg = w.registry.0.lock().unwrap();
    let e = &reg["worker-0"];
    assert_eq!(
        (e.role.as_str(), e.admitted_by.as_str()),
        ("worker", "control-plane-0")
    );
    assert_eq!(e.ak_fingerprint, hex::encode(fp(&w.worker)));
}

#[test]
fn a_control_plane_gets_keys_and_its_membership() {
    let w = world();
    let t = block(w.admission.join(&fp(&w.cp), &req(true))).unwrap();
    let names: Vec<&str> = t.files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            ticket::CA_CERT,
            ticket::CA_KEY,
            ticket::ETCD_INITIAL_CLUSTER
        ]
    );
}

#[test]
fn refusals_name_the_rule_and_leave_no_registry_entry() {
    let w = world();
    let cases: Vec<([u8; 32], JoinRequest, Refusal)> = vec![
        (fp(&w.stranger), req(false), Refusal::UnknownKey),
        (
            fp(&w.worker),
            req(true),
            Refusal::RoleMismatch {
                node: "worker-0".into(),
                role: Role::Worker,
                asked: Role::ControlPlane,
            },
        ),
        (
            fp(&w.cp),
            req(false),
            Refusal::RoleMismatch {
                node: "control-plane-0".into(),
                role: Role::ControlPlane,
                asked: Role::Worker,
            },
        ),
        (
            fp(&w.worker),
            JoinRequest {
                disk_uuid: "../../etc/passwd-aaaaaaaaaaaaaaaaaaaaa".into(),
                ..req(false)
            },
            Refusal::BadDiskUuid,
        ),
        (
            fp(&w.worker),
            JoinRequest {
                disk_uuid: UUID.to_uppercase(),
                ..req(false)
            },
            Refusal::BadDiskUuid,
        ),
        (
            fp(&w.worker),
            JoinRequest {
                certificate_request: vec![],
                ..req(false)
            },
            Refusal::BadCertificateRequest("empty request".into()),
        ),
    ];
    for (ak, r, want) in cases {
        let got = block(w.admission.join(&ak, &r)).unwrap_err();
        assert_eq!(got, want);
    }
    assert!(w.registry.0.lock().unwrap().is_empty());
}

#[test]
fn rejoin_needs_the_same_node_key_and_disk() {
    let w = world();
    // Never admitted.
    assert_eq!(
        block(w.admission.rejoin(&fp(&w.worker), UUID)).unwrap_err(),
        Refusal::NeverAdmitted {
            node: "worker-0".into(),
            disk_uuid: UUID.into()
        }
    );
    block(w.admission.join(&fp(&w.worker), &req(false))).unwrap();
    // Another disk.
    let other = "00000000-0000-4000-8000-000000000000";
    assert!(matches!(
        block(w.admission.rejoin(&fp(&w.worker), other)),
        Err(Refusal::NeverAdmitted { .. })
    ));
    // Another node's key.
    assert!(matches!(
        block(w.admission.rejoin(&fp(&w.cp), UUID)),
        Err(Refusal::NeverAdmitted { .. })
    ));
    let t = block(w.admission.rejoin(&fp(&w.worker), UUID)).unwrap();
    assert_eq!(t.state_disk_key, format!("key-{UUID}").into_bytes());
    assert_eq!(w.registry.0.lock().unwrap()["worker-0"].rejoins, 1);
}

#[test]
fn the_validator_forces_pcr15_zero_and_trusts_only_recorded_keys() {
    let w = world();
    let v = JoinValidator::new(w.admission.policy.clone(), w.metadata.clone()).unwrap();
    let nonce = [7u8; 32];
    // A fresh node (PCR 15 zero) with a recorded key passes.
    let doc = w.worker.issue(b"", &nonce).unwrap();
    v.validate(&doc, &nonce).unwrap();
    // A node that already belongs to a cluster is refused, naming PCR 15.
    let mut w2 = world();
    w2.worker.extend(15, &[1; 32]);
    let v2 = JoinValidator::new(w2.admission.policy.clone(), w2.metadata.clone()).unwrap();
    let doc = w2.worker.issue(b"", &nonce).unwrap();
    match v2.validate(&doc, &nonce) {
        Err(ValidationError::Measurements(m)) => assert_eq!(m[0].index, 15),
        other => panic!("expected a PCR 15 mismatch, got {other:?}"),
    }
    // A key the provider never recorded is refused.
    let doc = w.stranger.issue(b"", &nonce).unwrap();
    assert!(matches!(
        v.validate(&doc, &nonce),
        Err(ValidationError::UntrustedKey(_))
    ));
}
