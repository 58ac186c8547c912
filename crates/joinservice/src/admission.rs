//! Admission rules: who gets a join or rejoin ticket, and what is in it.
//!
//! Every rule refuses with a typed [`Refusal`]; nothing is written to the [`Registry`] unless
//! the node is admitted. The caller has already validated the node's attestation
//! ([`crate::JoinValidator`]) and passes the fingerprint of the attestation key that signed it.

use std::net::Ipv4Addr;
use std::sync::Arc;

use cluster::authz::Service;
use cluster::env::Metadata;
use cluster::ids::{ticket, MEASUREMENT_SECRET_ID};
use cluster::inventory::NodeInfo;
use cluster::state::NodeEntry;
use cluster::Role;

use crate::validator::JoinPolicy;

/// A backend (registry, key source, issuer, membership) could not do its part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// Temporarily unavailable: the joiner should retry.
    #[error("{0}")]
    Unavailable(String),
    /// The request itself is unusable (e.g. a malformed certificate request).
    #[error("{0}")]
    Invalid(String),
}

/// Why a node gets no ticket.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    #[error("no node of this cluster has this attestation key")]
    UnknownKey,
    #[error("a {role} node may not use {service:?}")]
    RoleNotAllowed { role: Role, service: Service },
    #[error("disk_uuid must be a lowercase UUID (8-4-4-4-12 hex digits)")]
    BadDiskUuid,
    #[error(
        "node {node} is a {role} node in the provider's records, but asked to join as {asked}"
    )]
    RoleMismatch {
        node: String,
        role: Role,
        asked: Role,
    },
    #[error("certificate request: {0}")]
    BadCertificateRequest(String),
    #[error("node {node} with disk {disk_uuid} was never admitted to this cluster; it must join")]
    NeverAdmitted { node: String, disk_uuid: String },
    #[error("metadata unavailable; retry")]
    MetadataUnavailable,
    #[error("{what}: {reason}; retry")]
    Unavailable { what: &'static str, reason: String },
}

impl Refusal {
    fn backend(what: &'static str, e: BackendError) -> Refusal {
        match e {
            BackendError::Unavailable(reason) => Refusal::Unavailable { what, reason },
            BackendError::Invalid(reason) => Refusal::BadCertificateRequest(reason),
        }
    }
}

/// The node registry (etcd's `/constellation/nodes/`).
#[tonic::async_trait]
pub trait Registry: Send + Sync {
    async fn nodes(&self) -> Result<Vec<NodeEntry>, BackendError>;
    async fn put_node(&self, entry: &NodeEntry) -> Result<(), BackendError>;
}

/// Data keys derived from the master secret (the KeyService).
#[tonic::async_trait]
pub trait KeySource: Send + Sync {
    async fn data_key(&self, id: &str) -> Result<Vec<u8>, BackendError>;
}

/// The cluster's certificate authority.
#[tonic::async_trait]
pub trait CertIssuer: Send + Sync {
    /// A node certificate (PEM) for the key in `csr_der`; names come from the provider's
    /// records, never from the request.
    fn sign_node_csr(
        &self,
        csr_der: &[u8],
        name: &str,
        address: Ipv4Addr,
    ) -> Result<String, BackendError>;
    /// The ticket files for `node`: every joiner gets the CA certificate (to authenticate
    /// cluster services) and its credentials for what runs on top of the cluster state
    /// (Kubernetes); control-plane joiners also the CA keys.
    async fn ticket_files(&self, node: &NodeInfo) -> Result<Vec<(String, Vec<u8>)>, BackendError>;
}

/// The control plane's replicated store membership.
#[tonic::async_trait]
pub trait Membership: Send + Sync {
    /// Adds the node as a (learner) member, or finds it added by an earlier attempt; returns
    /// the `--initial-cluster` value it starts with.
    async fn add_control_plane(&self, node: &NodeInfo) -> Result<String, BackendError>;
}

/// What a joiner asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRequest {
    pub disk_uuid: String,
    /// DER PKCS#10 request for the node's TLS key.
    pub certificate_request: Vec<u8>,
    pub is_control_plane: bool,
}

/// What an admitted node gets.
#[derive(Clone, PartialEq, Eq)]
pub struct Ticket {
    pub node: String,
    pub state_disk_key: Vec<u8>,
    pub measurement_salt: Vec<u8>,
    pub measurement_secret: Vec<u8>,
    /// PEM.
    pub node_certificate: String,
    pub api_server_endpoint: String,
    pub files: Vec<(String, Vec<u8>)>,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.files.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Ticket")
            .field("node", &self.node)
            .field("files", &names)
            .finish_non_exhaustive()
    }
}

/// What a readmitted node gets.
#[derive(Clone, PartialEq, Eq)]
pub struct RejoinTicket {
    pub state_disk_key: Vec<u8>,
    pub measurement_secret: Vec<u8>,
}

impl std::fmt::Debug for RejoinTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RejoinTicket")
    }
}

/// The JoinService's decisions, over its backends.
pub struct Admission {
    /// This JoinService's node (recorded as `admitted_by`).
    pub me: String,
    /// The endpoint joiners are told to reach the cluster's API at.
    pub api_server_endpoint: String,
    pub policy: JoinPolicy,
    pub metadata: Arc<dyn Metadata>,
    pub registry: Arc<dyn Registry>,
    pub keys: Arc<dyn KeySource>,
    pub issuer: Arc<dyn CertIssuer>,
    pub membership: Arc<dyn Membership>,
    /// Serializes control-plane admissions (etcd allows one learner at a time).
    cp_lock: tokio::sync::Mutex<()>,
}

fn valid_disk_uuid(s: &str) -> bool {
    s.len() == 36
        && s.chars().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_digit() || ('a'..='f').contains(&c),
        })
}

impl Admission {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        me: String,
        api_server_endpoint: String,
        policy: JoinPolicy,
        metadata: Arc<dyn Metadata>,
        registry: Arc<dyn Registry>,
        keys: Arc<dyn KeySource>,
        issuer: Arc<dyn CertIssuer>,
        membership: Arc<dyn Membership>,
    ) -> Self {
        Admission {
            me,
            api_server_endpoint,
            policy,
            metadata,
            registry,
            keys,
            issuer,
            membership,
            cp_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The node the provider created with this attestation key, if the authorisation table
    /// lets its role use `service`.
    pub fn node_for(&self, ak: &[u8; 32], service: Service) -> Result<NodeInfo, Refusal> {
        let cluster = self
            .metadata
            .cluster()
            .map_err(|_| Refusal::MetadataUnavailable)?;
        let node = cluster
            .node_with_ak(ak)
            .cloned()
            .ok_or(Refusal::UnknownKey)?;
        if !cluster::authz::allows(service, node.role.into()) {
            return Err(Refusal::RoleNotAllowed {
                role: node.role,
                service,
            });
        }
        Ok(node)
    }

    async fn data_key(&self, id: &str) -> Result<Vec<u8>, Refusal> {
        self.keys
            .data_key(id)
            .await
            .map_err(|e| Refusal::backend("the KeyService", e))
    }

    /// A join ticket for the node whose attestation key has fingerprint `ak`.
    pub async fn join(&self, ak: &[u8; 32], req: &JoinRequest) -> Result<Ticket, Refusal> {
        let node = self.node_for(ak, Service::Join)?;
        if !valid_disk_uuid(&req.disk_uuid) {
            return Err(Refusal::BadDiskUuid);
        }
        let asked = if req.is_control_plane {
            Role::ControlPlane
        } else {
            Role::Worker
        };
        if asked != node.role {
            return Err(Refusal::RoleMismatch {
                node: node.name,
                role: node.role,
                asked,
            });
        }
        let cert = self
            .issuer
            .sign_node_csr(&req.certificate_request, &node.name, node.address)
            .map_err(|e| match e {
                BackendError::Invalid(m) => Refusal::BadCertificateRequest(m),
                e => Refusal::backend("the cluster CA", e),
            })?;
        let state_disk_key = self.data_key(&req.disk_uuid).await?;
        let measurement_secret = self.data_key(MEASUREMENT_SECRET_ID).await?;
        let mut files = self
            .issuer
            .ticket_files(&node)
            .await
            .map_err(|e| Refusal::backend("issuing the ticket's files", e))?;
        let _cp_guard;
        if node.role == Role::ControlPlane {
            _cp_guard = self.cp_lock.lock().await;
            let initial = self
                .membership
                .add_control_plane(&node)
                .await
                .map_err(|e| Refusal::backend("adding the etcd member", e))?;
            files.push((ticket::ETCD_INITIAL_CLUSTER.into(), initial.into_bytes()));
        }
        let entry = NodeEntry {
            version: cluster::state::STATE_VERSION,
            name: node.name.clone(),
            role: node.role.as_str().into(),
            address: node.address.to_string(),
            disk_uuid: req.disk_uuid.clone(),
            ak_fingerprint: hex::encode(ak),
            admitted_by: self.me.clone(),
            admitted_at: unix_now(),
            rejoins: 0,
            last_rejoin_at: None,
        };
        self.registry
            .put_node(&entry)
            .await
            .map_err(|e| Refusal::backend("the node registry", e))?;
        tracing::info!(node = %node.name, role = node.role.as_str(), "join ticket issued");
        Ok(Ticket {
            node: node.name,
            state_disk_key,
            measurement_salt: self.policy.get().measurement_salt,
            measurement_secret,
            node_certificate: cert,
            api_server_endpoint: self.api_server_endpoint.clone(),
            files,
        })
    }

    /// A rejoin ticket for a restarted member: the same node (name, attestation key) with the
    /// same disk it was admitted with.
    pub async fn rejoin(&self, ak: &[u8; 32], disk_uuid: &str) -> Result<RejoinTicket, Refusal> {
        let node = self.node_for(ak, Service::Rejoin)?;
        let fp = hex::encode(ak);
        let nodes = self
            .registry
            .nodes()
            .await
            .map_err(|e| Refusal::backend("the node registry", e))?;
        let Some(mut entry) = nodes
            .into_iter()
            .find(|e| e.name == node.name && e.disk_uuid == disk_uuid && e.ak_fingerprint == fp)
        else {
            return Err(Refusal::NeverAdmitted {
                node: node.name,
                disk_uuid: disk_uuid.into(),
            });
        };
        let state_disk_key = self.data_key(disk_uuid).await?;
        let measurement_secret = self.data_key(MEASUREMENT_SECRET_ID).await?;
        entry.rejoins += 1;
        entry.last_rejoin_at = Some(unix_now());
        self.registry
            .put_node(&entry)
            .await
            .map_err(|e| Refusal::backend("the node registry", e))?;
        tracing::info!(node = %node.name, "rejoin ticket issued");
        Ok(RejoinTicket {
            state_disk_key,
            measurement_secret,
        })
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
