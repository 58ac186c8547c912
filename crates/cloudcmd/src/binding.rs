//! Binding an attestation to the node the CLI meant to talk to.
//!
//! A document that validates proves "some TPM the provider vouches for is in this state"; the
//! CLI needs "*this* node is". So each call that checks one node trusts only the attestation
//! key the provider recorded for that node, and checks the verified document's key against it
//! again (the second check also holds for variants whose validator trusts any key). Init and
//! recovery talk to a node that must not have joined any cluster yet: PCR 15 is enforced zero
//! whatever the config says.

use anyhow::Context;
use attestation::{validator_for, AkFingerprint, ValidationError, Validator, ValidatorPolicy};
use measurements::{Measurement, Measurements};
use provider_local::cloud::{CloudState, NodeRecord, Role};

/// The provider's record of the node at `address` (the one the CLI dials).
pub(crate) fn node_at<'a>(cloud: &'a CloudState, address: &str) -> anyhow::Result<&'a NodeRecord> {
    let host = address.split(':').next().unwrap_or_default();
    cloud
        .nodes
        .iter()
        .find(|n| n.address.to_string() == host)
        .with_context(|| format!("the provider has no node at {address}"))
}

/// The fingerprint of the AK the provider recorded for `node`.
pub(crate) fn recorded_ak(node: &NodeRecord) -> anyhow::Result<AkFingerprint> {
    let public = node
        .ak_public
        .as_deref()
        .and_then(|h| hex::decode(h).ok())
        .with_context(|| {
            format!(
                "the provider recorded no attestation key for node {} (run `constellation apply`)",
                node.name
            )
        })?;
    Ok(AkFingerprint::of_tpmt_public(&public))
}

/// A policy trusting exactly `node`'s recorded attestation key.
pub(crate) fn node_policy(node: &NodeRecord) -> anyhow::Result<ValidatorPolicy> {
    Ok(ValidatorPolicy::default().trust_ak(recorded_ak(node)?))
}

/// `m` with PCR 15 enforced zero: the node has not joined a cluster.
pub(crate) fn with_pcr15_zero(m: &Measurements) -> anyhow::Result<Measurements> {
    let mut m = m.clone();
    m.set(15, Measurement::enforced(vec![0u8; 32]))?;
    Ok(m)
}

/// A validator that accepts only documents signed by `node`'s recorded AK.
pub(crate) struct NodeBound {
    inner: Box<dyn Validator>,
    node: String,
    ak: AkFingerprint,
}

impl NodeBound {
    pub(crate) fn new(
        cfg: &config::Config,
        measurements: Measurements,
        node: &NodeRecord,
    ) -> anyhow::Result<NodeBound> {
        Ok(NodeBound {
            inner: validator_for(cfg.variant(), measurements, node_policy(node)?)?,
            node: node.name.clone(),
            ak: recorded_ak(node)?,
        })
    }

    /// An init validator: `node` must be a control plane, PCR 15 must be zero.
    pub(crate) fn for_init(
        cfg: &config::Config,
        cloud: &CloudState,
        address: &str,
    ) -> anyhow::Result<NodeBound> {
        let node = node_at(cloud, address)?;
        if node.role != Role::ControlPlane {
            anyhow::bail!(
                "the cluster endpoint {address} is node {}, a {}: only a control-plane node may be initialized",
                node.name,
                node.role.as_str()
            );
        }
        NodeBound::new(cfg, with_pcr15_zero(cfg.measurements())?, node)
    }
}

impl Validator for NodeBound {
    fn variant(&self) -> attestation::Variant {
        self.inner.variant()
    }

    fn validate(
        &self,
        doc: &[u8],
        nonce: &[u8],
    ) -> Result<attestation::VerifiedAttestation, ValidationError> {
        let v = self.inner.validate(doc, nonce)?;
        check_ak(&v, &self.ak, &self.node)?;
        Ok(v)
    }
}

/// The verified document must carry `node`'s recorded AK.
pub(crate) fn check_ak(
    v: &attestation::VerifiedAttestation,
    recorded: &AkFingerprint,
    node: &str,
) -> Result<(), ValidationError> {
    if v.ak_fingerprint() != &recorded.0 {
        return Err(ValidationError::UntrustedKey(format!(
            "the document is signed by attestation key {}, not by the one the provider recorded for node {node} ({}): it comes from another TPM",
            hex::encode(v.ak_fingerprint()),
            recorded.to_hex()
        )));
    }
    Ok(())
}
