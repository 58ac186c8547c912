//! The verifier's fresh nonce and its encoding as a distinguished name.
//!
//! Both directions carry the nonce the same way: as the single entry of a TLS 1.3
//! `certificate_authorities` list (ClientHello for the client's nonce, CertificateRequest for the
//! server's nonce). The entry is a DER `Name` (RDNSequence, with its outer SEQUENCE) holding one
//! attribute, `commonName` (2.5.4.3) = PrintableString(base64-std(nonce)), 44 characters. That is
//! the DN Go's aTLS puts in `AcceptableCAs`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};
use rustls::DistinguishedName;
use x509_parser::prelude::FromDer;
use x509_parser::x509::X509Name;

pub(crate) const NONCE_LEN: usize = 32;

/// A fresh 32-byte nonce chosen by the verifier for one handshake.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Nonce([u8; NONCE_LEN]);

/// Why the peer's nonce could not be read.
#[derive(Debug, thiserror::Error)]
pub enum NonceError {
    #[error(
        "peer sent {count} certificate-authority names, expected exactly one carrying the nonce"
    )]
    Count { count: usize },
    #[error("nonce name is malformed: {0}")]
    Malformed(String),
    #[error("nonce has {len} bytes, expected {NONCE_LEN}")]
    Length { len: usize },
    #[error("the system random number generator failed")]
    Random,
}

/// DER tag-length-value for contents shorter than 128 bytes (all our encodings are: the
/// longest content is the 53-byte SET).
fn short_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    debug_assert!(content.len() < 0x80);
    let mut v = Vec::with_capacity(content.len() + 2);
    v.push(tag);
    v.push(content.len() as u8);
    v.extend_from_slice(content);
    v
}

impl Nonce {
    pub(crate) fn random() -> Result<Self, NonceError> {
        let mut b = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut b)
            .map_err(|_| NonceError::Random)?;
        Ok(Self(b))
    }

    pub(crate) fn as_bytes(&self) -> &[u8; NONCE_LEN] {
        &self.0
    }

    /// `Name ::= SEQUENCE { SET { SEQUENCE { OID 2.5.4.3, PrintableString b64 } } }`.
    pub(crate) fn to_distinguished_name(self) -> DistinguishedName {
        const OID_CN: [u8; 5] = [0x06, 0x03, 0x55, 0x04, 0x03];
        let b64 = STANDARD.encode(self.0);
        let mut atv = OID_CN.to_vec();
        atv.extend(short_tlv(0x13, b64.as_bytes()));
        let name = short_tlv(0x30, &short_tlv(0x31, &short_tlv(0x30, &atv)));
        DistinguishedName::from(name)
    }

    /// Reads the nonce from the peer's certificate-authority names: exactly one name with
    /// exactly one common name, base64 of 32 bytes.
    pub(crate) fn from_names<'a>(
        names: impl ExactSizeIterator<Item = &'a [u8]>,
    ) -> Result<Self, NonceError> {
        let count = names.len();
        let mut names = names;
        let (Some(der), 1) = (names.next(), count) else {
            return Err(NonceError::Count { count });
        };
        let (rest, name) =
            X509Name::from_der(der).map_err(|e| NonceError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(NonceError::Malformed(format!(
                "{} trailing bytes after the name",
                rest.len()
            )));
        }
        let cns: Vec<_> = name.iter_common_name().collect();
        let [cn] = cns.as_slice() else {
            return Err(NonceError::Malformed(format!(
                "{} common names, expected one",
                cns.len()
            )));
        };
        let text = cn
            .as_str()
            .map_err(|e| NonceError::Malformed(format!("common name is not a string: {e}")))?;
        let raw = STANDARD
            .decode(text)
            .map_err(|e| NonceError::Malformed(format!("common name is not base64: {e}")))?;
        let bytes: [u8; NONCE_LEN] = raw
            .as_slice()
            .try_into()
            .map_err(|_| NonceError::Length { len: raw.len() })?;
        Ok(Self(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_rejections() {
        let n = Nonce::random().unwrap();
        let dn = n.to_distinguished_name();
        // Parses as a standard X.509 Name with CN = base64(nonce).
        let (_, name) = X509Name::from_der(dn.as_ref()).unwrap();
        assert_eq!(
            name.iter_common_name().next().unwrap().as_str().unwrap(),
            STANDARD.encode(n.as_bytes())
        );
        assert!(Nonce::from_names([dn.as_ref()].into_iter()).unwrap() == n);

        let cases: Vec<(Vec<&[u8]>, &str)> = vec![
            (vec![], "0 certificate-authority names"),
            (
                vec![dn.as_ref(), dn.as_ref()],
                "2 certificate-authority names",
            ),
            (vec![b"\x30\x00junk"], "trailing bytes"),
            (vec![b"\x30\x00"], "0 common names"),
        ];
        for (names, want) in cases {
            let err = Nonce::from_names(names.into_iter())
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }

        // A 16-byte nonce is rejected with its length.
        let short = STANDARD.encode([7u8; 16]);
        let mut atv = vec![0x06, 0x03, 0x55, 0x04, 0x03];
        atv.extend(short_tlv(0x13, short.as_bytes()));
        let der = short_tlv(0x30, &short_tlv(0x31, &short_tlv(0x30, &atv)));
        assert!(matches!(
            Nonce::from_names([der.as_slice()].into_iter()),
            Err(NonceError::Length { len: 16 })
        ));
    }

    impl std::fmt::Debug for Nonce {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "Nonce({})", hex::encode(self.0))
        }
    }
}
