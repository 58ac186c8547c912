//! The cluster as its provider knows it: which nodes exist, their roles and addresses, and the
//! attestation key the provider recorded for each (as a cloud's shielded-VM API vouches for
//! its vTPMs). Both sides read it: the node daemon as instance metadata, the CLI to find and
//! bind nodes. Providers produce it from their own records (the local provider from
//! `cloud.json`).

use std::net::Ipv4Addr;

use crate::Role;

/// One node as the provider created it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// `<role>-<index>`, e.g. `control-plane-0`.
    pub name: String,
    pub role: Role,
    /// The node group it belongs to (config `nodeGroups` key).
    pub group: String,
    pub address: Ipv4Addr,
    /// The attestation key's TPMT_PUBLIC as recorded when the node's TPM was created.
    pub ak_public: Option<Vec<u8>>,
    /// The node's address in the cluster network, where nodes reach each other's Kubernetes
    /// components (`None`: the cluster runs no Kubernetes, or the provider has one network).
    pub internal_address: Option<Ipv4Addr>,
}

impl NodeInfo {
    /// The SHA-256 fingerprint of the recorded attestation key.
    pub fn ak_fingerprint(&self) -> Option<[u8; 32]> {
        self.ak_public
            .as_deref()
            .map(|ak| attestation::vtpm::AkFingerprint::of_tpmt_public(ak).0)
    }
}

/// The provider's view of one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterInfo {
    /// The provider's ID of this cluster's infrastructure.
    pub uid: String,
    pub name: String,
    /// Attestation variant name the nodes were created with.
    pub variant: String,
    /// bcrypt hash of the init secret (the secret itself is only in the owner's state file).
    pub init_secret_hash: String,
    pub nodes: Vec<NodeInfo>,
}

/// No node of that name in the provider's records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no node named {0:?} in the provider's records")]
pub struct NoSuchNode(pub String);

impl ClusterInfo {
    pub fn node(&self, name: &str) -> Result<&NodeInfo, NoSuchNode> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| NoSuchNode(name.into()))
    }

    pub fn control_planes(&self) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.iter().filter(|n| n.role == Role::ControlPlane)
    }

    /// The cluster endpoint: the first control-plane node.
    pub fn endpoint(&self) -> Option<Ipv4Addr> {
        self.control_planes().next().map(|n| n.address)
    }

    /// The node the provider created with the attestation key of this fingerprint.
    pub fn node_with_ak(&self, fingerprint: &[u8; 32]) -> Option<&NodeInfo> {
        self.nodes
            .iter()
            .find(|n| n.ak_fingerprint().as_ref() == Some(fingerprint))
    }

    /// The node at this address.
    pub fn node_at(&self, address: Ipv4Addr) -> Option<&NodeInfo> {
        self.nodes.iter().find(|n| n.address == address)
    }

    /// Trust exactly the attestation keys the provider recorded (the `local-vtpm` policy).
    pub fn validator_policy(&self) -> attestation::ValidatorPolicy {
        self.nodes
            .iter()
            .filter_map(|n| n.ak_public.as_deref())
            .fold(attestation::ValidatorPolicy::default(), |p, ak| {
                p.trust_ak_public(ak)
            })
    }
}
