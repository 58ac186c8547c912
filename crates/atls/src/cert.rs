//! Our own certificate: self-signed ECDSA P-256, optionally carrying an attestation document.

use attestation::{IssueError, Issuer, Variant};
use rcgen::{
    CertificateParams, CustomExtension, DnType, KeyPair, PublicKeyData, SerialNumber,
    PKCS_ECDSA_P256_SHA256,
};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

use crate::nonce::Nonce;

/// Largest certificate we present. rustls rejects handshake messages over 65535 bytes
/// (`InvalidMessage::HandshakePayloadTooLarge`); the TLS 1.3 Certificate message adds 9 bytes
/// of framing, and we keep a margin so the failure happens here, with a clear message, rather
/// than as a decode error at the peer.
pub const MAX_CERT_SIZE: usize = 60 * 1024;

/// Validity is now − 2 h … now + 2 h, as in the Go system (tolerates clock skew, limits reuse).
const VALIDITY: time::Duration = time::Duration::hours(2);

/// Why we could not make our own certificate.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("the {variant} issuer failed")]
    Issue {
        variant: Variant,
        #[source]
        source: IssueError,
    },
    #[error("certificate with the {variant} attestation document is {size} bytes (document {doc_size} bytes), over the {limit}-byte limit for one TLS handshake message")]
    TooLarge {
        variant: Variant,
        size: usize,
        doc_size: usize,
        limit: usize,
    },
    #[error("generating the certificate failed")]
    Generate(#[source] rcgen::Error),
    #[error("loading the generated key into rustls failed")]
    Key(#[source] rustls::Error),
    #[error("the system random number generator failed")]
    Random,
    #[error("the blocking issuer task did not complete")]
    Task(#[source] tokio::task::JoinError),
}

/// A certificate and its private key, made for one handshake.
pub(crate) struct OwnCert {
    pub(crate) cert: CertificateDer<'static>,
    pub(crate) key: PrivateKeyDer<'static>,
}

/// SHA-256 of the DER SubjectPublicKeyInfo: the user data that binds an attestation to a key.
pub(crate) fn spki_hash(spki_der: &[u8]) -> [u8; 32] {
    Sha256::digest(spki_der).into()
}

/// Makes a fresh key and self-signed certificate. With `attest`, calls the issuer (this may
/// block on a TPM: call from a blocking context) with user data = SHA-256(SPKI) and the
/// verifier's nonce, and embeds the document as a non-critical extension with the variant's OID.
pub(crate) fn create(attest: Option<(&dyn Issuer, &Nonce)>) -> Result<OwnCert, CertificateError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(CertificateError::Generate)?;

    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "Constellation");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - VALIDITY;
    params.not_after = now + VALIDITY;
    let mut serial = [0u8; 16];
    SystemRandom::new()
        .fill(&mut serial)
        .map_err(|_| CertificateError::Random)?;
    serial[0] &= 0x7f; // a positive INTEGER < 2^127 without a leading zero byte
    params.serial_number = Some(SerialNumber::from_slice(&serial));

    let mut doc_info = None;
    if let Some((issuer, nonce)) = attest {
        let variant = issuer.variant();
        let user_data = spki_hash(&key.subject_public_key_info());
        let doc = issuer
            .issue(&user_data, nonce.as_bytes())
            .map_err(|source| CertificateError::Issue { variant, source })?;
        let doc_size = doc.len();
        if doc_size > MAX_CERT_SIZE {
            return Err(CertificateError::TooLarge {
                variant,
                size: doc_size,
                doc_size,
                limit: MAX_CERT_SIZE,
            });
        }
        // from_oid_content: the extension value is the document itself (OCTET STRING content),
        // non-critical.
        params
            .custom_extensions
            .push(CustomExtension::from_oid_content(variant.oid(), doc));
        doc_info = Some((variant, doc_size));
    }

    let cert = params
        .self_signed(&key)
        .map_err(CertificateError::Generate)?;
    let der = cert.der().clone();
    if let Some((variant, doc_size)) = doc_info {
        if der.len() > MAX_CERT_SIZE {
            return Err(CertificateError::TooLarge {
                variant,
                size: der.len(),
                doc_size,
                limit: MAX_CERT_SIZE,
            });
        }
    }
    Ok(OwnCert {
        cert: der,
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use attestation::insecure_dummy::InsecureDummyIssuer;
    use x509_parser::prelude::{FromDer, X509Certificate};

    #[test]
    fn certificate_shape() {
        let nonce = Nonce::random().unwrap();
        let own = create(Some((&InsecureDummyIssuer, &nonce))).unwrap();
        let (_, c) = X509Certificate::from_der(own.cert.as_ref()).unwrap();
        assert_eq!(
            c.subject()
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .unwrap(),
            "Constellation"
        );
        assert_eq!(c.issuer(), c.subject());
        let span = c.validity().not_after.timestamp() - c.validity().not_before.timestamp();
        assert_eq!(span, 4 * 3600);
        let ext: Vec<_> = c.extensions().iter().collect();
        assert_eq!(ext.len(), 1);
        assert_eq!(ext[0].oid.to_id_string(), "1.3.9900.1.1");
        assert!(!ext[0].critical);
        // The document binds SHA-256 of this certificate's SPKI and the nonce.
        let want_ud = spki_hash(c.public_key().raw);
        let doc = InsecureDummyIssuer
            .issue(&want_ud, nonce.as_bytes())
            .unwrap();
        assert_eq!(ext[0].value, doc.as_slice());

        // Without an issuer: plain certificate, no extensions.
        let plain = create(None).unwrap();
        let (_, c) = X509Certificate::from_der(plain.cert.as_ref()).unwrap();
        assert!(c.extensions().is_empty());
    }
}
