//! Checking the peer's certificate, inside the rustls verifier callbacks.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use attestation::{ValidationError, Validator, Variant, VerifiedAttestation};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::cert::spki_hash;
use crate::nonce::Nonce;

/// Why the peer's certificate was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("peer certificate cannot be parsed: {0}")]
    BadCertificate(String),
    #[error(
        "peer certificate is not valid now (unix time {now}; valid {not_before} to {not_after})"
    )]
    NotValidNow {
        now: i64,
        not_before: i64,
        not_after: i64,
    },
    #[error("peer certificate carries no attestation for {}; extensions present: [{}]", .expected.join(", "), .seen.join(", "))]
    NoAttestation {
        /// The OIDs we have validators for, e.g. `1.3.9900.4.1 (azure-sev-snp)`.
        expected: Vec<String>,
        /// The extension OIDs the certificate has.
        seen: Vec<String>,
    },
    #[error("{variant} attestation rejected")]
    Validation {
        variant: Variant,
        #[source]
        source: ValidationError,
    },
    #[error("attestation is bound to another key: its user data is {got}, SHA-256 of the certificate's public key is {want}")]
    KeyBinding { want: String, got: String },
}

/// Verifies `der` as an aTLS certificate for `nonce`. Trusts nothing in the certificate except
/// through a validator: the certificate's self-signature is not checked (it proves nothing; the
/// TLS CertificateVerify proves possession of the key), its validity window is checked against
/// `now`, and the first extension whose OID matches a validator's variant must validate with
/// `nonce` and carry user data = SHA-256(the certificate's SubjectPublicKeyInfo).
pub(crate) fn verify_certificate(
    der: &[u8],
    now: UnixTime,
    validators: &[Arc<dyn Validator>],
    nonce: &Nonce,
) -> Result<VerifiedAttestation, VerifyError> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| VerifyError::BadCertificate(e.to_string()))?;
    if !rest.is_empty() {
        return Err(VerifyError::BadCertificate(format!(
            "{} trailing bytes",
            rest.len()
        )));
    }
    let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();
    if now < not_before || now > not_after {
        return Err(VerifyError::NotValidNow {
            now,
            not_before,
            not_after,
        });
    }
    let key_hash = spki_hash(cert.public_key().raw);

    let mut seen = Vec::new();
    for ext in cert.extensions() {
        let matching = validators.iter().find(|v| {
            ext.oid
                .iter()
                .is_some_and(|arcs| arcs.eq(v.variant().oid().iter().copied()))
        });
        let Some(validator) = matching else {
            seen.push(ext.oid.to_id_string());
            continue;
        };
        let variant = validator.variant();
        let verified = validator
            .validate(ext.value, nonce.as_bytes())
            .map_err(|source| VerifyError::Validation { variant, source })?;
        if verified.user_data() != key_hash.as_slice() {
            return Err(VerifyError::KeyBinding {
                want: hex::encode(key_hash),
                got: hex::encode(verified.user_data()),
            });
        }
        return Ok(verified);
    }
    Err(VerifyError::NoAttestation {
        expected: validators
            .iter()
            .map(|v| {
                let oid: Vec<String> = v.variant().oid().iter().map(u64::to_string).collect();
                format!("{} ({})", oid.join("."), v.variant())
            })
            .collect(),
        seen,
    })
}

/// The error chain on one line, for places that only carry a string (rustls errors, logs).
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The rustls-side error for a rejected certificate. Its message is the whole chain, so that
/// users of the raw rustls/tokio-rustls error also see which check failed. The peer receives
/// only the generic `certificate_unknown` alert.
#[derive(Debug)]
struct Rejected(String);
impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Rejected {}

fn rejected(e: &VerifyError) -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::Other(OtherError(Arc::new(
        Rejected(chain(e)),
    ))))
}

/// One handshake's verification outcome, shared between the rustls verifier (which runs inside
/// the handshake) and the code that drives the handshake (which reads it afterwards).
#[derive(Clone, Default)]
pub(crate) struct Outcome(Arc<Mutex<OutcomeInner>>);

#[derive(Default)]
struct OutcomeInner {
    verified: Option<VerifiedAttestation>,
    error: Option<VerifyError>,
}

impl Outcome {
    fn record(&self, r: Result<VerifiedAttestation, VerifyError>) -> Result<(), rustls::Error> {
        let mut g = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match r {
            Ok(v) => {
                g.verified = Some(v);
                Ok(())
            }
            Err(e) => {
                let tls = rejected(&e);
                g.error = Some(e);
                Err(tls)
            }
        }
    }
    /// Records the result without failing the handshake (the server explains rejections to
    /// the client at the application layer, see `ServerConfig::explain_rejections`).
    fn record_deferred(&self, r: Result<VerifiedAttestation, VerifyError>) {
        let mut g = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match r {
            Ok(v) => g.verified = Some(v),
            Err(e) => g.error = Some(e),
        }
    }
    pub(crate) fn take_verified(&self) -> Option<VerifiedAttestation> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .verified
            .take()
    }
    pub(crate) fn take_error(&self) -> Option<VerifyError> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .error
            .take()
    }
}

/// The validators' variants, for `Debug` output.
pub(crate) fn variants(validators: &[Arc<dyn Validator>]) -> Vec<Variant> {
    validators.iter().map(|v| v.variant()).collect()
}

/// What both verifiers share: the peer's validators, our nonce (also sent as the only
/// `certificate_authorities` hint), the handshake signature algorithms, and where the result goes.
pub(crate) struct AttestedVerifier {
    validators: Vec<Arc<dyn Validator>>,
    nonce: Nonce,
    hints: Vec<DistinguishedName>,
    algorithms: WebPkiSupportedAlgorithms,
    outcome: Outcome,
}

impl AttestedVerifier {
    pub(crate) fn new(
        validators: Vec<Arc<dyn Validator>>,
        nonce: Nonce,
        algorithms: WebPkiSupportedAlgorithms,
        outcome: Outcome,
    ) -> Self {
        Self {
            validators,
            nonce,
            hints: vec![nonce.to_distinguished_name()],
            algorithms,
            outcome,
        }
    }

    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        now: UnixTime,
    ) -> Result<VerifiedAttestation, VerifyError> {
        verify_certificate(end_entity.as_ref(), now, &self.validators, &self.nonce)
    }

    /// `Debug` for the verifier named `name` (which wraps `self`).
    fn debug(&self, name: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(name)
            .field("validators", &variants(&self.validators))
            .finish_non_exhaustive()
    }
}

/// The handshake-signature methods, identical in `ServerCertVerifier` and `ClientCertVerifier`:
/// the plain rustls checks with the provider's algorithms. Expands inside an `impl` of either
/// trait for a type whose `attested` field is an [`AttestedVerifier`].
macro_rules! handshake_signature_checks {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.attested.algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.attested.algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.attested.algorithms.supported_schemes()
        }
    };
}

/// Client side: verifies the server's certificate against the client's nonce, and sends that
/// nonce in the ClientHello's `certificate_authorities` extension.
pub(crate) struct AttestedServerVerifier {
    pub(crate) attested: AttestedVerifier,
}

impl fmt::Debug for AttestedServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.attested.debug("AttestedServerVerifier", f)
    }
}

impl ServerCertVerifier for AttestedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // Without validators the client does not check the server (node → JoinService); the
        // handshake signature is still checked below.
        if !self.attested.validators.is_empty() {
            self.attested
                .outcome
                .record(self.attested.verify(end_entity, now))?;
        }
        Ok(ServerCertVerified::assertion())
    }

    handshake_signature_checks!();

    fn root_hint_subjects(&self) -> Option<&[DistinguishedName]> {
        Some(&self.attested.hints)
    }
}

/// Server side: requires a client certificate, verifies it against the server's nonce, and
/// sends that nonce in the CertificateRequest's `certificate_authorities`.
pub(crate) struct AttestedClientVerifier {
    pub(crate) attested: AttestedVerifier,
    /// Let the handshake finish when the attestation fails; the result is in the outcome.
    pub(crate) defer_rejection: bool,
}

impl fmt::Debug for AttestedClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.attested.debug("AttestedClientVerifier", f)
    }
}

impl ClientCertVerifier for AttestedClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.attested.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let result = self.attested.verify(end_entity, now);
        if self.defer_rejection {
            self.attested.outcome.record_deferred(result);
        } else {
            self.attested.outcome.record(result)?;
        }
        Ok(ClientCertVerified::assertion())
    }

    handshake_signature_checks!();
}
