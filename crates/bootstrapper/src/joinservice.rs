//! The JoinService: admits nodes that proved, over attested TLS, that they run the expected
//! image and belong to no cluster yet (PCR 15 zero), and hands them their join ticket.
//!
//! The joining node is the aTLS *client* and attests; the JoinService checks the attestation
//! inside the handshake against the cluster's join configuration (from etcd) and the attestation
//! keys the local provider vouches for (re-read from metadata on every handshake, so nodes
//! added later are admitted without a restart). A rejected attestation finishes the handshake
//! but every call on that connection answers `PermissionDenied` with the reason (which PCR,
//! expected and actual), so that the refused node can report it.
//!
//! Ticket: state-disk key = KeyService data key for the disk UUID, measurement secret and salt,
//! a certificate from the cluster CA for the node's CSR key (names from metadata, not from the
//! CSR), and for control-plane nodes the CA and their etcd membership (added as a learner, so
//! the cluster keeps its quorum while the new member catches up).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use attestation::{
    validator_for, ValidationError, Validator, ValidatorPolicy, Variant, VerifiedAttestation,
};
use measurements::{Measurement, Measurements};
use proto::join::api_server::{Api, ApiServer};
use proto::join::{
    ControlPlaneCertOrKey, IssueJoinTicketRequest, IssueJoinTicketResponse,
    IssueRejoinTicketRequest, IssueRejoinTicketResponse,
};
use proto::kms::api_client::ApiClient as KmsClient;
use proto::kms::GetDataKeyRequest;
use provider_local::cloud::{NodeRecord, Role, PORT_ETCD_CLIENT, PORT_ETCD_PEER, PORT_JOIN};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::etcd::{unix_now, JoinConfig, NodeEntry, Store, KEY_JOIN_CONFIG};
use crate::metadata::Metadata;
use crate::pki::ClusterCa;
use crate::services::NodePki;
use cluster::authz::Service;

/// Data-key ID of the measurement secret (as the Go JoinService asks the KeyService).
pub const MEASUREMENT_SECRET_ID: &str = "measurementSecret";
/// `control_plane_files` names for what a control-plane joiner needs beyond the Go set.
pub const FILE_ETCD_INITIAL_CLUSTER: &str = "etcd/initial-cluster";
pub const FILE_CA_CERT: &str = "ca.crt";
pub const FILE_CA_KEY: &str = "ca.key";
/// The control-plane CA (certificate and key), only in control-plane tickets.
pub const FILE_CP_CA_CERT: &str = "cp-ca.crt";
pub const FILE_CP_CA_KEY: &str = "cp-ca.key";

/// How often the JoinService re-reads the join configuration from etcd (the Go JoinService
/// watches its ConfigMap).
const CONFIG_REFRESH: Duration = Duration::from_secs(2);

/// Validates joining nodes: the join configuration's measurements with PCR 15 forced to zero
/// (a node that already belongs to a cluster cannot join another), and only attestation keys
/// the provider currently vouches for.
pub struct JoinValidator {
    variant: Variant,
    measurements: Arc<RwLock<Measurements>>,
    metadata: Metadata,
}

impl JoinValidator {
    fn policy(&self) -> Result<(Measurements, ValidatorPolicy), ValidationError> {
        let mut m = self
            .measurements
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let zero = vec![0u8; 32];
        m.set(15, Measurement::enforced(zero))
            .map_err(|e| ValidationError::Malformed(format!("join configuration: {e}")))?;
        let cloud = self
            .metadata
            .load()
            .map_err(|e| ValidationError::Malformed(format!("metadata unavailable: {e:#}")))?;
        let policy = cloud.validator_policy();
        Ok((m, policy))
    }
}

impl Validator for JoinValidator {
    fn variant(&self) -> Variant {
        self.variant
    }
    fn validate(&self, doc: &[u8], nonce: &[u8]) -> Result<VerifiedAttestation, ValidationError> {
        let (m, policy) = self.policy()?;
        let v = validator_for(self.variant, m, policy)
            .map_err(|e| ValidationError::Malformed(e.to_string()))?;
        v.validate(doc, nonce)
    }
}

/// Everything the JoinService needs, shared by its handlers.
pub struct JoinService {
    me: NodeRecord,
    metadata: Metadata,
    store: Store,
    ca: Arc<ClusterCa>,
    /// The control-plane CA: handed only to control-plane joiners.
    cp_ca: Arc<ClusterCa>,
    keyservice: KmsClient<Channel>,
    config: Arc<RwLock<JoinConfig>>,
    /// Serializes control-plane admissions from this JoinService (etcd allows one learner).
    cp_lock: tokio::sync::Mutex<()>,
}

/// Starts the JoinService on `<me>:30090`; returns the serving task.
pub async fn serve(
    me: NodeRecord,
    metadata: Metadata,
    store: Store,
    ca: Arc<ClusterCa>,
    cp_ca: Arc<ClusterCa>,
    pki: &NodePki,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let config: JoinConfig = store
        .get_json(KEY_JOIN_CONFIG)
        .await?
        .context("the cluster has no join configuration in etcd")?;
    let variant = Variant::from_config_key(&config.variant)
        .or_else(|| config.variant.parse().ok())
        .with_context(|| format!("unknown attestation variant {:?}", config.variant))?;
    let measurements = Arc::new(RwLock::new(config.measurements.clone()));
    let config = Arc::new(RwLock::new(config));
    let validator = JoinValidator {
        variant,
        measurements: measurements.clone(),
        metadata: metadata.clone(),
    };
    let keyservice = keyservice_client(me.address, pki).await?;
    let svc = Arc::new(JoinService {
        me: me.clone(),
        metadata,
        store: store.clone(),
        ca,
        cp_ca,
        keyservice,
        config: config.clone(),
        cp_lock: tokio::sync::Mutex::new(()),
    });
    let listener = tokio::net::TcpListener::bind(SocketAddrV4::new(me.address, PORT_JOIN))
        .await
        .with_context(|| format!("binding the JoinService port {}:{PORT_JOIN}", me.address))?;
    let atls_cfg =
        atls::server::ServerConfig::new(None, vec![Arc::new(validator)]).explaining_rejections();
    let incoming = atls::server::AttestedIncoming::new(listener, atls_cfg)?;
    // Hot reload of the join configuration.
    let refresh = {
        let store = store.clone();
        tokio::spawn(async move {
            // An etcd watch delivers the owner's changes at once; the periodic read is the
            // fallback when the watch cannot be set up or breaks.
            let mut watch = store.client().watch(KEY_JOIN_CONFIG, None).await.ok();
            loop {
                match watch.as_mut() {
                    Some(stream) => {
                        tokio::select! {
                            m = stream.message() => if !matches!(m, Ok(Some(_))) {
                                watch = None;
                            },
                            () = tokio::time::sleep(CONFIG_REFRESH) => {}
                        }
                    }
                    None => tokio::time::sleep(CONFIG_REFRESH).await,
                }
                match store.get_json::<JoinConfig>(KEY_JOIN_CONFIG).await {
                    Ok(Some(c)) => {
                        *measurements
                            .write()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) =
                            c.measurements.clone();
                        *config
                            .write()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) = c;
                    }
                    Ok(None) => tracing::warn!("join configuration missing in etcd"),
                    Err(e) => tracing::debug!("refreshing the join configuration: {e:#}"),
                }
            }
        })
    };
    tracing::info!(address = %me.address, "JoinService serving");
    Ok(tokio::spawn(async move {
        let r = atls::guard::server()
            .add_service(ApiServer::from_arc(svc))
            .serve_with_incoming(incoming)
            .await;
        refresh.abort();
        if let Err(e) = r {
            tracing::error!("JoinService stopped: {e}");
        }
    }))
}

/// A client of this node's KeyService (mutual TLS with the node's control-plane certificate).
pub async fn keyservice_client(
    addr: Ipv4Addr,
    pki: &NodePki,
) -> anyhow::Result<KmsClient<Channel>> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let ca = std::fs::read(&pki.ca).context("reading the CA certificate")?;
    let cert = std::fs::read(&pki.cert).context("reading the node certificate")?;
    let key = zeroize::Zeroizing::new(std::fs::read(&pki.key).context("reading the node key")?);
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .identity(Identity::from_pem(cert, &*key))
        .domain_name(addr.to_string());
    let ep = Endpoint::from_shared(format!(
        "https://{addr}:{}",
        provider_local::cloud::PORT_KEYSERVICE
    ))?
    .tls_config(tls)?
    .connect_timeout(Duration::from_secs(2))
    .timeout(Duration::from_secs(5));
    Ok(KmsClient::new(ep.connect_lazy()))
}

impl JoinService {
    async fn data_key(&self, id: &str) -> Result<Vec<u8>, Status> {
        let r = self
            .keyservice
            .clone()
            .get_data_key(GetDataKeyRequest {
                data_key_id: id.to_string(),
                length: 32,
            })
            .await
            .map_err(|s| {
                tracing::error!("KeyService: {}", s.message());
                Status::unavailable("the KeyService is not reachable; retry")
            })?;
        Ok(r.into_inner().data_key)
    }

    /// The caller's verified attestation and the provider's record of the node with its AK;
    /// refusals are logged with the peer address.
    fn attested_node<T>(
        &self,
        req: &Request<T>,
        what: &str,
    ) -> Result<(VerifiedAttestation, NodeRecord), Status> {
        let found = atls::server::require_peer_attestation(req)
            .and_then(|v| Ok((v.clone(), self.node_for(v)?)));
        if let Err(s) = &found {
            tracing::warn!(peer = ?req.remote_addr(), "{what} refused: {}", s.message());
        }
        found
    }

    /// The node the provider created with this attestation key.
    fn node_for(&self, v: &VerifiedAttestation) -> Result<NodeRecord, Status> {
        let fp = v.ak_fingerprint();
        let cloud = self
            .metadata
            .load()
            .map_err(|_| Status::unavailable("metadata unavailable"))?;
        cloud
            .nodes
            .iter()
            .find(|n| {
                n.ak_public
                    .as_deref()
                    .and_then(|h| hex::decode(h).ok())
                    .is_some_and(|ak| {
                        attestation::vtpm::AkFingerprint::of_tpmt_public(&ak).0 == *fp
                    })
            })
            .cloned()
            .ok_or_else(|| {
                Status::permission_denied("no node of this cluster has this attestation key")
            })
    }

    fn salt(&self) -> Vec<u8> {
        self.config
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .measurement_salt
            .clone()
    }

    /// Adds `node` as an etcd learner (or finds it already added by an earlier, interrupted
    /// attempt) and returns the `--initial-cluster` value it starts with.
    async fn add_etcd_member(&self, node: &NodeRecord) -> Result<String, Status> {
        let peer = format!("https://{}:{PORT_ETCD_PEER}", node.address);
        let mut client = self.store.client();
        let list = client
            .member_list()
            .await
            .map_err(|e| Status::unavailable(format!("etcd member list: {e}")))?;
        let mut members: BTreeMap<String, String> = BTreeMap::new();
        let mut present = false;
        for m in list.members() {
            let url = m.peer_urls().first().cloned().unwrap_or_default();
            if url == peer {
                present = true;
                members.insert(node.name.clone(), url);
            } else if !m.name().is_empty() {
                members.insert(m.name().to_string(), url);
            } else if m.is_learner() {
                return Err(Status::unavailable(
                    "another control-plane node is joining etcd right now; retry",
                ));
            }
        }
        if !present {
            client
                .member_add(
                    [peer.clone()],
                    Some(etcd_client::MemberAddOptions::new().with_is_learner()),
                )
                .await
                .map_err(|e| {
                    Status::unavailable(format!("adding the etcd member failed ({e}); retry"))
                })?;
            members.insert(node.name.clone(), peer);
        }
        Ok(members
            .iter()
            .map(|(n, u)| format!("{n}={u}"))
            .collect::<Vec<_>>()
            .join(","))
    }
}

/// The authorisation table (crate `cluster`) must let a node of this role use `service`.
fn authorise(service: Service, node: &NodeRecord) -> Result<(), Status> {
    if cluster::authz::allows(service, node.role.into()) {
        Ok(())
    } else {
        Err(Status::permission_denied(format!(
            "a {} node may not use {service:?}",
            node.role.as_str()
        )))
    }
}

fn valid_disk_uuid(s: &str) -> bool {
    s.len() == 36
        && s.chars().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_digit() || ('a'..='f').contains(&c),
        })
}

#[tonic::async_trait]
impl Api for JoinService {
    async fn issue_join_ticket(
        &self,
        req: Request<IssueJoinTicketRequest>,
    ) -> Result<Response<IssueJoinTicketResponse>, Status> {
        let (verified, node) = self.attested_node(&req, "join")?;
        authorise(Service::Join, &node)?;
        let r = req.into_inner();
        if !valid_disk_uuid(&r.disk_uuid) {
            return Err(Status::invalid_argument(
                "disk_uuid must be a lowercase UUID (8-4-4-4-12 hex digits)",
            ));
        }
        let is_cp = node.role == Role::ControlPlane;
        if r.is_control_plane != is_cp {
            return Err(Status::permission_denied(format!(
                "node {} is a {} node in the provider's records, but asked to join as {}",
                node.name,
                node.role.as_str(),
                if r.is_control_plane {
                    "control plane"
                } else {
                    "worker"
                }
            )));
        }
        let cert = self
            .ca
            .sign_node_csr(&r.certificate_request, &node.name, node.address)
            .map_err(|e| Status::invalid_argument(format!("certificate request: {e:#}")))?;
        let state_disk_key = self.data_key(&r.disk_uuid).await?;
        let measurement_secret = self.data_key(MEASUREMENT_SECRET_ID).await?;

        // Every node gets the CA certificate (to authenticate cluster services); control-plane
        // nodes also get the CA key and their etcd membership.
        let mut files = vec![ControlPlaneCertOrKey {
            name: FILE_CA_CERT.into(),
            data: self.ca.cert_pem.clone().into_bytes(),
        }];
        let _cp_guard;
        if is_cp {
            _cp_guard = self.cp_lock.lock().await;
            let initial = self.add_etcd_member(&node).await?;
            files.push(ControlPlaneCertOrKey {
                name: FILE_CA_KEY.into(),
                data: self.ca.key_pem().as_bytes().to_vec(),
            });
            files.push(ControlPlaneCertOrKey {
                name: FILE_CP_CA_CERT.into(),
                data: self.cp_ca.cert_pem.clone().into_bytes(),
            });
            files.push(ControlPlaneCertOrKey {
                name: FILE_CP_CA_KEY.into(),
                data: self.cp_ca.key_pem().as_bytes().to_vec(),
            });
            files.push(ControlPlaneCertOrKey {
                name: FILE_ETCD_INITIAL_CLUSTER.into(),
                data: initial.into_bytes(),
            });
        }
        let entry = NodeEntry {
            name: node.name.clone(),
            role: node.role.as_str().into(),
            address: node.address.to_string(),
            disk_uuid: r.disk_uuid.clone(),
            ak_fingerprint: hex::encode(verified.ak_fingerprint()),
            admitted_by: self.me.name.clone(),
            admitted_at: unix_now(),
            rejoins: 0,
            last_rejoin_at: None,
        };
        self.store
            .put_node(&entry)
            .await
            .map_err(|e| Status::unavailable(format!("{e:#}; retry")))?;
        tracing::info!(node = %node.name, role = node.role.as_str(), "join ticket issued");
        Ok(Response::new(IssueJoinTicketResponse {
            state_disk_key,
            measurement_salt: self.salt(),
            measurement_secret,
            kubelet_cert: cert.into_bytes(),
            api_server_endpoint: format!("{}:{PORT_ETCD_CLIENT}", self.me.address),
            control_plane_files: files,
            ..Default::default()
        }))
    }

    async fn issue_rejoin_ticket(
        &self,
        req: Request<IssueRejoinTicketRequest>,
    ) -> Result<Response<IssueRejoinTicketResponse>, Status> {
        let (verified, node) = self.attested_node(&req, "rejoin")?;
        authorise(Service::Rejoin, &node)?;
        let r = req.into_inner();
        let fp = hex::encode(verified.ak_fingerprint());
        let nodes = self
            .store
            .nodes()
            .await
            .map_err(|e| Status::unavailable(format!("{e:#}; retry")))?;
        let Some(mut entry) = nodes
            .into_iter()
            .find(|e| e.name == node.name && e.disk_uuid == r.disk_uuid && e.ak_fingerprint == fp)
        else {
            return Err(Status::not_found(format!(
                "node {} with disk {} was never admitted to this cluster; it must join",
                node.name, r.disk_uuid
            )));
        };
        let state_disk_key = self.data_key(&r.disk_uuid).await?;
        let measurement_secret = self.data_key(MEASUREMENT_SECRET_ID).await?;
        entry.rejoins += 1;
        entry.last_rejoin_at = Some(unix_now());
        self.store
            .put_node(&entry)
            .await
            .map_err(|e| Status::unavailable(format!("{e:#}; retry")))?;
        tracing::info!(node = %node.name, "rejoin ticket issued");
        Ok(Response::new(IssueRejoinTicketResponse {
            state_disk_key,
            measurement_secret,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_uuid_format() {
        assert!(valid_disk_uuid("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"));
        assert!(!valid_disk_uuid("0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0"));
        assert!(!valid_disk_uuid("0f1e2d3c4b5a69788796a5b4c3d2e1f0"));
        assert!(!valid_disk_uuid("../../etc/passwd-aaaaaaaaaaaaaaaaaaaaa"));
    }
}
