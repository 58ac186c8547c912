//! The join policy the JoinService validates joiners against: the owner's measurements with
//! PCR 15 forced to zero (a node that already belongs to a cluster cannot join another), and
//! only attestation keys the provider currently vouches for.

use std::sync::{Arc, PoisonError, RwLock};

use attestation::{validator_for, ValidationError, Validator, Variant, VerifiedAttestation};
use cluster::env::Metadata;
use cluster::state::JoinConfig;

/// The join configuration as the JoinService currently knows it (replaced when the owner's
/// `apply` writes a new one).
#[derive(Clone)]
pub struct JoinPolicy(Arc<RwLock<JoinConfig>>);

impl std::fmt::Debug for JoinPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JoinPolicy")
    }
}

impl JoinPolicy {
    pub fn new(config: JoinConfig) -> Self {
        JoinPolicy(Arc::new(RwLock::new(config)))
    }
    pub fn get(&self) -> JoinConfig {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
    pub fn set(&self, config: JoinConfig) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = config;
    }
}

/// Validates joining nodes against the current [`JoinPolicy`] and the provider's AKs.
pub struct JoinValidator {
    variant: Variant,
    policy: JoinPolicy,
    metadata: Arc<dyn Metadata>,
}

/// The join configuration names a variant this build does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the join configuration's attestation variant {0:?} is unknown")]
pub struct UnknownVariant(pub String);

impl JoinValidator {
    pub fn new(policy: JoinPolicy, metadata: Arc<dyn Metadata>) -> Result<Self, UnknownVariant> {
        let name = policy.get().variant;
        let variant = Variant::from_config_key(&name)
            .or_else(|| name.parse().ok())
            .ok_or(UnknownVariant(name))?;
        Ok(JoinValidator {
            variant,
            policy,
            metadata,
        })
    }
}

impl Validator for JoinValidator {
    fn variant(&self) -> Variant {
        self.variant
    }
    fn validate(&self, doc: &[u8], nonce: &[u8]) -> Result<VerifiedAttestation, ValidationError> {
        let m = cluster::state::with_pcr15_zero(&self.policy.get().measurements)
            .map_err(|e| ValidationError::Malformed(format!("join configuration: {e}")))?;
        let cluster = self
            .metadata
            .cluster()
            .map_err(|e| ValidationError::Other(format!("metadata unavailable: {e}")))?;
        let v = validator_for(self.variant, m, cluster.validator_policy())
            .map_err(|e| ValidationError::Malformed(e.to_string()))?;
        v.validate(doc, nonce)
    }
}
