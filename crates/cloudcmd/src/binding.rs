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
use cluster::inventory::NodeInfo;
use cluster::Role;
use measurements::Measurements;

use crate::provider::CloudView;

/// The provider's record of the node at `address` (the one the CLI dials).
pub(crate) fn node_at<'a>(cloud: &'a CloudView, address: &str) -> anyhow::Result<&'a NodeInfo> {
    cloud
        .node_at(address)
        .map(|n| &n.info)
        .with_context(|| format!("the provider has no node at {address}"))
}

/// The fingerprint of the AK the provider recorded for `node`.
pub(crate) fn recorded_ak(node: &NodeInfo) -> anyhow::Result<AkFingerprint> {
    let public = node.ak_public.as_deref().with_context(|| {
        format!(
            "the provider recorded no attestation key for node {} (run `constellation apply`)",
            node.name
        )
    })?;
    Ok(AkFingerprint::of_tpmt_public(public))
}

/// The config's policy (SEV-SNP/TDX settings) trusting exactly `node`'s recorded attestation
/// key.
pub(crate) fn node_policy(
    cfg: &config::Config,
    node: &NodeInfo,
) -> anyhow::Result<ValidatorPolicy> {
    let from_config = cfg
        .validator_policy(None)
        .map_err(|r| anyhow::anyhow!("the config's attestation section: {r}"))?;
    Ok(ValidatorPolicy {
        trusted_aks: Default::default(),
        ..from_config
    }
    .trust_ak(recorded_ak(node)?))
}

/// `m` with PCR 15 enforced zero: the node has not joined a cluster.
pub(crate) fn with_pcr15_zero(m: &Measurements) -> anyhow::Result<Measurements> {
    Ok(cluster::state::with_pcr15_zero(m)?)
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
        node: &NodeInfo,
    ) -> anyhow::Result<NodeBound> {
        Ok(NodeBound {
            inner: validator_for(cfg.variant(), measurements, node_policy(cfg, node)?)?,
            node: node.name.clone(),
            ak: recorded_ak(node)?,
        })
    }

    /// An init validator: `node` must be a control plane, PCR 15 must be zero.
    pub(crate) fn for_init(
        cfg: &config::Config,
        cloud: &CloudView,
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use measurements::Measurement;

    fn cloud() -> CloudView {
        let node = |name: &str, role, last: u8, ak: u8| crate::provider::NodeView {
            info: NodeInfo {
                name: name.into(),
                role,
                group: "g".into(),
                address: std::net::Ipv4Addr::new(127, 9, 0, last),
                ak_public: Some(vec![ak]),
                internal_address: None,
            },
            running: true,
            tpm_running: true,
            report: None,
            last_report: None,
            has_cluster_state: false,
        };
        let nodes = vec![
            node("control-plane-0", Role::ControlPlane, 1, 1),
            node("worker-0", Role::Worker, 2, 2),
        ];
        CloudView {
            info: cluster::inventory::ClusterInfo {
                uid: "u".into(),
                name: "c".into(),
                variant: "local-vtpm".into(),
                init_secret_hash: String::new(),
                nodes: nodes.iter().map(|n| n.info.clone()).collect(),
            },
            image: "img".into(),
            nodes,
        }
    }

    fn config(pcr15: Measurement) -> config::Config {
        let mut m = Measurements::new([(4, Measurement::enforced(vec![4; 32]))].into()).unwrap();
        m.set(15, pcr15).unwrap();
        let raw = config::Config::generate(
            config::Provider::Local,
            None,
            None,
            Default::default(),
            Some(m),
        )
        .unwrap();
        config::Config::from_yaml(&raw.to_yaml()).unwrap()
    }

    #[test]
    fn init_only_on_a_control_plane() {
        let cfg = config(Measurement::enforced(vec![0; 32]));
        let e = NodeBound::for_init(&cfg, &cloud(), "127.9.0.2")
            .err()
            .unwrap();
        assert!(
            format!("{e:#}").contains("is node worker-0, a worker: only a control-plane node"),
            "{e:#}"
        );
        let e = NodeBound::for_init(&cfg, &cloud(), "127.9.0.7")
            .err()
            .unwrap();
        assert!(format!("{e:#}").contains("no node at 127.9.0.7"), "{e:#}");
        let v = NodeBound::for_init(&cfg, &cloud(), "127.9.0.1").unwrap();
        assert_eq!(v.node, "control-plane-0");
        assert_eq!(v.ak, AkFingerprint::of_tpmt_public(&[1]));
    }

    #[test]
    fn pcr15_is_zero_whatever_the_config_says() {
        for configured in [
            Measurement::warn_only(vec![0; 32]),
            Measurement::enforced(vec![7; 32]),
            Measurement::warn_only(vec![7; 32]),
        ] {
            let cfg = config(configured);
            let m = with_pcr15_zero(cfg.measurements()).unwrap();
            let got = m.iter().find(|(i, _)| *i == 15).unwrap().1;
            assert_eq!(got.expected, vec![0; 32]);
            assert!(!got.warn_only);
        }
    }

    #[test]
    fn insecure_variants_only_in_test_builds() {
        for v in [attestation::Variant::Dummy, attestation::Variant::QemuVtpm] {
            let r = validator_for(
                v,
                Measurements::new(Default::default()).unwrap(),
                ValidatorPolicy::default(),
            );
            if attestation::INSECURE_TEST_VARIANTS {
                eprintln!("SKIPPED: another crate of this build enabled insecure-test-variants");
                return;
            }
            let e = r.err().unwrap();
            assert!(e.to_string().contains("insecure test variant"), "{v}: {e}");
        }
    }
}
