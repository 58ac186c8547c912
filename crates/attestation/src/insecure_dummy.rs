//! The Go system's `dummy` variant: a document that merely *states* user data and nonce.
//!
//! It proves nothing and exists so that protocol code (aTLS, gRPC services) can be tested
//! without a TPM. Its name says so; no config or release default selects it.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::{IssueError, Issuer, ValidationError, Validator, Variant, VerifiedAttestation};

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    #[serde(rename = "UserData")]
    user_data: String,
    #[serde(rename = "Nonce")]
    nonce: String,
}

/// Issues `{"UserData": b64, "Nonce": b64}`. Insecure: for tests only.
#[derive(Debug, Default, Clone)]
pub struct InsecureDummyIssuer;

impl Issuer for InsecureDummyIssuer {
    fn variant(&self) -> Variant {
        Variant::Dummy
    }
    fn issue(&self, user_data: &[u8], nonce: &[u8]) -> Result<Vec<u8>, IssueError> {
        serde_json::to_vec(&Doc {
            user_data: STANDARD.encode(user_data),
            nonce: STANDARD.encode(nonce),
        })
        .map_err(|e| IssueError::with_source("encoding dummy document", e))
    }
}

/// Accepts any dummy document whose nonce matches. Insecure: for tests only.
#[derive(Debug, Default, Clone)]
pub struct InsecureDummyValidator;

impl Validator for InsecureDummyValidator {
    fn variant(&self) -> Variant {
        Variant::Dummy
    }
    fn validate(&self, doc: &[u8], nonce: &[u8]) -> Result<VerifiedAttestation, ValidationError> {
        let d: Doc =
            serde_json::from_slice(doc).map_err(|e| ValidationError::Malformed(e.to_string()))?;
        let got_nonce = STANDARD
            .decode(d.nonce)
            .map_err(|e| ValidationError::Malformed(e.to_string()))?;
        if got_nonce != nonce {
            return Err(ValidationError::NonceMismatch);
        }
        let user_data = STANDARD
            .decode(d.user_data)
            .map_err(|e| ValidationError::Malformed(e.to_string()))?;
        Ok(VerifiedAttestation::new(
            Variant::Dummy,
            user_data,
            Default::default(),
            vec![],
            [0; 32],
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_replay() {
        let doc = InsecureDummyIssuer.issue(b"ud", b"n1").unwrap();
        assert_eq!(
            InsecureDummyValidator
                .validate(&doc, b"n1")
                .unwrap()
                .user_data(),
            b"ud"
        );
        assert!(matches!(
            InsecureDummyValidator.validate(&doc, b"n2"),
            Err(ValidationError::NonceMismatch)
        ));
        assert!(InsecureDummyValidator.validate(b"{", b"n1").is_err());
    }
}
