//! The JoinService's backends on a control-plane node: the node registry and membership in
//! the cluster's etcd, data keys from the local KeyService, certificates from the cluster CA
//! (and the control-plane CA for control-plane joiners). The admission rules themselves are
//! in the `joinservice` crate.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cluster::ids::ticket;
use cluster::inventory::NodeInfo;
use cluster::ports::{
    ETCD_PEER as PORT_ETCD_PEER, JOIN as PORT_JOIN, KEYSERVICE as PORT_KEYSERVICE,
};
use cluster::state::{JoinConfig, NodeEntry, KEY_JOIN_CONFIG};
use cluster_store::Store;
use joinservice::{
    Admission, BackendError, CertIssuer, JoinPolicy, JoinValidator, KeySource, Membership, Registry,
};
use proto::kms::api_client::ApiClient as KmsClient;
use proto::kms::GetDataKeyRequest;
use tonic::transport::Channel;

use crate::pki::ClusterCa;
use crate::run::Node;
use crate::services::NodePki;

/// How often the JoinService re-reads the join configuration when the etcd watch is down.
const CONFIG_REFRESH: Duration = Duration::from_secs(2);

struct EtcdRegistry(Store);

#[tonic::async_trait]
impl Registry for EtcdRegistry {
    async fn nodes(&self) -> Result<Vec<NodeEntry>, BackendError> {
        self.0
            .nodes()
            .await
            .map_err(|e| BackendError::Unavailable(format!("{:#}", anyhow::Error::new(e))))
    }
    async fn put_node(&self, entry: &NodeEntry) -> Result<(), BackendError> {
        self.0
            .put_node(entry)
            .await
            .map_err(|e| BackendError::Unavailable(format!("{:#}", anyhow::Error::new(e))))
    }
}

struct Kms(KmsClient<Channel>);

#[tonic::async_trait]
impl KeySource for Kms {
    async fn data_key(&self, id: &str) -> Result<Vec<u8>, BackendError> {
        let r = self
            .0
            .clone()
            .get_data_key(GetDataKeyRequest {
                data_key_id: id.to_string(),
                length: 32,
            })
            .await
            .map_err(|s| {
                tracing::error!("KeyService: {}", s.message());
                BackendError::Unavailable("the KeyService is not reachable".into())
            })?;
        Ok(r.into_inner().data_key)
    }
}

struct Cas {
    ca: Arc<ClusterCa>,
    cp_ca: Arc<ClusterCa>,
    node: Arc<Node>,
    me: NodeInfo,
}

#[tonic::async_trait]
impl CertIssuer for Cas {
    fn sign_node_csr(
        &self,
        csr_der: &[u8],
        name: &str,
        address: Ipv4Addr,
    ) -> Result<String, BackendError> {
        self.ca
            .sign_node_csr(csr_der, name, address)
            .map_err(|e| BackendError::Invalid(format!("{e:#}")))
    }

    async fn ticket_files(
        &self,
        joiner: &NodeInfo,
    ) -> Result<Vec<(String, Vec<u8>)>, BackendError> {
        let mut files = vec![(
            ticket::CA_CERT.into(),
            self.ca.cert_pem.clone().into_bytes(),
        )];
        if joiner.role == cluster::Role::ControlPlane {
            files.extend([
                (ticket::CA_KEY.into(), self.ca.key_pem().as_bytes().to_vec()),
                (
                    ticket::CP_CA_CERT.into(),
                    self.cp_ca.cert_pem.clone().into_bytes(),
                ),
                (
                    ticket::CP_CA_KEY.into(),
                    self.cp_ca.key_pem().as_bytes().to_vec(),
                ),
            ]);
        }
        // What runs on top of the cluster state (Kubernetes credentials), from the strategy.
        let extra = self
            .node
            .strategy
            .ticket_files(self.node.member(&self.me), joiner)
            .await
            .map_err(|e| BackendError::Unavailable(format!("{e:#}")))?;
        files.extend(extra);
        Ok(files)
    }
}

struct EtcdMembers(Store);

#[tonic::async_trait]
impl Membership for EtcdMembers {
    /// Adds `node` as an etcd learner (so the cluster keeps its quorum while the new member
    /// catches up), or finds it already added by an earlier, interrupted attempt.
    async fn add_control_plane(&self, node: &NodeInfo) -> Result<String, BackendError> {
        let peer = format!("https://{}:{PORT_ETCD_PEER}", node.address);
        let mut client = self.0.client();
        let list = client
            .member_list()
            .await
            .map_err(|e| BackendError::Unavailable(format!("etcd member list: {e}")))?;
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
                return Err(BackendError::Unavailable(
                    "another control-plane node is joining etcd right now".into(),
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
                    BackendError::Unavailable(format!("adding the etcd member failed ({e})"))
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
    let ep = Endpoint::from_shared(format!("https://{addr}:{PORT_KEYSERVICE}"))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5));
    Ok(KmsClient::new(ep.connect_lazy()))
}

/// Starts the JoinService on `<me>:30090` over this node's backends, with the join
/// configuration from etcd kept current (an etcd watch, a periodic read as the fallback).
pub(crate) async fn serve_joinservice(
    node: &Arc<Node>,
    me: &NodeInfo,
    store: Store,
    ca: Arc<ClusterCa>,
    cp_ca: Arc<ClusterCa>,
    pki: &NodePki,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let config: JoinConfig = store
        .get_json(KEY_JOIN_CONFIG)
        .await?
        .context("the cluster has no join configuration in etcd")?;
    let policy = JoinPolicy::new(config);
    let validator = JoinValidator::new(policy.clone(), node.env.metadata.clone())?;
    let admission = Arc::new(Admission::new(
        me.name.clone(),
        node.strategy
            .admin_endpoint(me.address)
            .trim_start_matches("https://")
            .to_string(),
        policy.clone(),
        node.env.metadata.clone(),
        Arc::new(EtcdRegistry(store.clone())),
        Arc::new(Kms(keyservice_client(me.address, pki).await?)),
        Arc::new(Cas {
            ca,
            cp_ca,
            node: node.clone(),
            me: me.clone(),
        }),
        Arc::new(EtcdMembers(store.clone())),
    ));
    let refresh = tokio::spawn(async move {
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
                Ok(Some(c)) => policy.set(c),
                Ok(None) => tracing::warn!("join configuration missing in etcd"),
                Err(e) => tracing::debug!("refreshing the join configuration: {e}"),
            }
        }
    });
    let addr = SocketAddr::V4(SocketAddrV4::new(me.address, PORT_JOIN));
    let served = joinservice::server::serve(addr, admission, validator).await?;
    Ok(tokio::spawn(async move {
        let _ = served.await;
        refresh.abort();
    }))
}
