//! Google Compute Engine vTPM evidence: go-tpm-tools' protobuf `attest.Attestation` and the
//! AK certificate chain to Google's TPM CA.
//!
//! - [`decode_attestation_pb`] reads the protobuf wire format (a ~50-line reader, no codegen)
//!   into the same [`crate::document::Attestation`] the JSON document carries, so the quote and event
//!   log code is shared.
//! - [`verify_rsa_cert_chain`] checks an X.509 chain whose certificates are all signed with
//!   RSASSA-PKCS1-v1_5 (SHA-256/384/512), at an explicit time: each signature, issuer/subject
//!   linkage, CA basic constraints of issuers, validity windows. webpki cannot be used here
//!   (the GCE AK certificate has an empty subject and a critical directory-name SAN).
//! - [`verify_ak_cert`] additionally requires the leaf's RSA key to be the AK's.
//!
//! Field numbers (go-tpm-tools `proto/attest.proto`, `proto/tpm.proto`): `Attestation {1
//! ak_pub, 2 quotes, 3 event_log, 4 instance_info, 5 canonical_event_log, 6 ak_cert}`,
//! `Quote {1 quote, 2 raw_sig, 3 pcrs}`, `PCRs {1 hash, 2 map<uint32, bytes> pcrs}`; fields
//! not listed in [`crate::document::Attestation`] are skipped. (`ak_cert` is field 6: confirmed on the
//! captured GCE evidence, whose field 6 is the DER certificate.)

use std::collections::BTreeMap;

use ring::signature::{self, UnparsedPublicKey};
use x509_parser::oid_registry::{
    OID_PKCS1_SHA256WITHRSA, OID_PKCS1_SHA384WITHRSA, OID_PKCS1_SHA512WITHRSA,
};
use x509_parser::prelude::{ASN1Time, FromDer, X509Certificate};

use crate::document::{Attestation, Pcrs, Quote};
use crate::tpm2::{PublicKey, TpmtPublic};

/// A protobuf wire-format error: what was read and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PbError {
    #[error("protobuf {message}: truncated {what} at offset {offset}")]
    Truncated {
        message: &'static str,
        what: &'static str,
        offset: usize,
    },
    #[error("protobuf {message}: varint at offset {offset} is longer than 64 bits")]
    VarintOverflow {
        message: &'static str,
        offset: usize,
    },
    #[error("protobuf {message}: field {field} at offset {offset} has wire type {wire_type}, expected {expected}")]
    WireType {
        message: &'static str,
        field: u64,
        offset: usize,
        wire_type: u8,
        expected: u8,
    },
    #[error("protobuf {message}: field {field} at offset {offset}: {reason}")]
    Invalid {
        message: &'static str,
        field: u64,
        offset: usize,
        reason: String,
    },
}

/// One field's value on the wire.
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

struct Pb<'a> {
    buf: &'a [u8],
    pos: usize,
    message: &'static str,
}

impl<'a> Pb<'a> {
    fn new(buf: &'a [u8], message: &'static str) -> Self {
        Self {
            buf,
            pos: 0,
            message,
        }
    }

    fn varint(&mut self) -> Result<u64, PbError> {
        let start = self.pos;
        let mut v: u64 = 0;
        for i in 0..10u32 {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(PbError::Truncated {
                    message: self.message,
                    what: "varint",
                    offset: start,
                });
            };
            self.pos += 1;
            if i == 9 && b > 1 {
                break;
            }
            v |= u64::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(PbError::VarintOverflow {
            message: self.message,
            offset: start,
        })
    }

    fn skip(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], PbError> {
        let offset = self.pos;
        let end = offset
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(PbError::Truncated {
                message: self.message,
                what,
                offset,
            })?;
        self.pos = end;
        Ok(&self.buf[offset..end])
    }

    /// The next `(field number, offset, value)`, or `None` at the end of the message.
    fn next_field(&mut self) -> Result<Option<(u64, usize, Value<'a>)>, PbError> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let offset = self.pos;
        let key = self.varint()?;
        let field = key >> 3;
        let value = match (key & 7) as u8 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.skip(8, "fixed64")?;
                Value::Fixed
            }
            2 => {
                let len = self.varint()?;
                let len = usize::try_from(len).unwrap_or(usize::MAX);
                Value::Bytes(self.skip(len, "length-delimited field")?)
            }
            5 => {
                self.skip(4, "fixed32")?;
                Value::Fixed
            }
            wire_type => {
                return Err(PbError::WireType {
                    message: self.message,
                    field,
                    offset,
                    wire_type,
                    expected: 2,
                })
            }
        };
        Ok(Some((field, offset, value)))
    }

    fn wire_error(&self, field: u64, offset: usize, expected: u8, got: &Value<'_>) -> PbError {
        PbError::WireType {
            message: self.message,
            field,
            offset,
            wire_type: match got {
                Value::Varint(_) => 0,
                Value::Bytes(_) => 2,
                Value::Fixed => 1,
            },
            expected,
        }
    }

    fn bytes(&self, field: u64, offset: usize, v: Value<'a>) -> Result<&'a [u8], PbError> {
        match v {
            Value::Bytes(b) => Ok(b),
            other => Err(self.wire_error(field, offset, 2, &other)),
        }
    }
}

/// Decodes a binary go-tpm-tools `attest.Attestation` (e.g. GCE's `.pb` evidence).
pub fn decode_attestation_pb(bytes: &[u8]) -> Result<Attestation, PbError> {
    let mut pb = Pb::new(bytes, "Attestation");
    let mut out = Attestation::default();
    while let Some((field, offset, v)) = pb.next_field()? {
        match field {
            1 => out.ak_pub = pb.bytes(field, offset, v)?.to_vec(),
            2 => out.quotes.push(decode_quote(pb.bytes(field, offset, v)?)?),
            3 => out.event_log = Some(pb.bytes(field, offset, v)?.to_vec()),
            6 => out.ak_cert = Some(pb.bytes(field, offset, v)?.to_vec()),
            _ => {}
        }
    }
    Ok(out)
}

fn decode_quote(bytes: &[u8]) -> Result<Quote, PbError> {
    let mut pb = Pb::new(bytes, "Quote");
    let mut quote = Vec::new();
    let mut raw_sig = Vec::new();
    let mut pcrs = Pcrs {
        hash: 0,
        pcrs: BTreeMap::new(),
    };
    while let Some((field, offset, v)) = pb.next_field()? {
        match field {
            1 => quote = pb.bytes(field, offset, v)?.to_vec(),
            2 => raw_sig = pb.bytes(field, offset, v)?.to_vec(),
            3 => pcrs = decode_pcrs(pb.bytes(field, offset, v)?)?,
            _ => {}
        }
    }
    Ok(Quote {
        quote,
        raw_sig,
        pcrs,
    })
}

fn decode_pcrs(bytes: &[u8]) -> Result<Pcrs, PbError> {
    let mut pb = Pb::new(bytes, "PCRs");
    let mut out = Pcrs {
        hash: 0,
        pcrs: BTreeMap::new(),
    };
    while let Some((field, offset, v)) = pb.next_field()? {
        match (field, v) {
            (1, Value::Varint(h)) => {
                out.hash = u16::try_from(h).map_err(|_| PbError::Invalid {
                    message: "PCRs",
                    field,
                    offset,
                    reason: format!("hash algorithm {h} out of range"),
                })?;
            }
            (2, Value::Bytes(entry)) => {
                let mut e = Pb::new(entry, "PCRs.pcrs entry");
                let (mut key, mut value) = (0u32, Vec::new());
                while let Some((f, off, v)) = e.next_field()? {
                    match (f, v) {
                        (1, Value::Varint(k)) => {
                            key = u32::try_from(k).map_err(|_| PbError::Invalid {
                                message: "PCRs.pcrs entry",
                                field: f,
                                offset: off,
                                reason: format!("PCR index {k} out of range"),
                            })?;
                        }
                        (2, v) => value = e.bytes(f, off, v)?.to_vec(),
                        (1, v) => return Err(e.wire_error(f, off, 0, &v)),
                        _ => {}
                    }
                }
                out.pcrs.insert(key, value);
            }
            (1, v) => return Err(pb.wire_error(field, offset, 0, &v)),
            (2, v) => return Err(pb.wire_error(field, offset, 2, &v)),
            _ => {}
        }
    }
    Ok(out)
}

/// Why a certificate chain was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error("{which} certificate does not parse: {reason}")]
    Parse { which: String, reason: String },
    #[error("{which} certificate ({subject}) is not valid at unix time {now}: valid {not_before} to {not_after}")]
    Expired {
        which: String,
        subject: String,
        now: i64,
        not_before: String,
        not_after: String,
    },
    #[error("{which} certificate is signed with {oid}, only sha{{256,384,512}}WithRSAEncryption are supported")]
    UnsupportedAlgorithm { which: String, oid: String },
    #[error(
        "{which} certificate ({subject}) names issuer {issuer}, but the next certificate is {next}"
    )]
    IssuerMismatch {
        which: String,
        subject: String,
        issuer: String,
        next: String,
    },
    #[error("{which} certificate's signature does not verify with its issuer's key ({issuer})")]
    BadSignature { which: String, issuer: String },
    #[error("{which} certificate ({subject}) issues certificates but is not a CA")]
    NotCa { which: String, subject: String },
    #[error("invalid time {0}")]
    Time(i64),
    #[error("leaf certificate key is not the attestation key: {0}")]
    KeyMismatch(String),
}

fn which(i: usize, len: usize) -> String {
    match i {
        0 => "leaf".into(),
        i if i + 1 == len => "root".into(),
        i => format!("intermediate #{i}"),
    }
}

fn check_signature(
    cert: &X509Certificate<'_>,
    issuer: &X509Certificate<'_>,
    which: &str,
) -> Result<(), CertError> {
    let alg = &cert.signature_algorithm.algorithm;
    let params: &signature::RsaParameters = if *alg == OID_PKCS1_SHA256WITHRSA {
        &signature::RSA_PKCS1_2048_8192_SHA256
    } else if *alg == OID_PKCS1_SHA384WITHRSA {
        &signature::RSA_PKCS1_2048_8192_SHA384
    } else if *alg == OID_PKCS1_SHA512WITHRSA {
        &signature::RSA_PKCS1_2048_8192_SHA512
    } else {
        return Err(CertError::UnsupportedAlgorithm {
            which: which.into(),
            oid: alg.to_id_string(),
        });
    };
    let key = &issuer.public_key().subject_public_key.data;
    UnparsedPublicKey::new(params, key)
        .verify(cert.tbs_certificate.as_ref(), &cert.signature_value.data)
        .map_err(|_| CertError::BadSignature {
            which: which.into(),
            issuer: issuer.subject().to_string(),
        })
}

/// Verifies `chain` (leaf first, root last; the root must sign itself) at `now_unix` seconds.
/// Trust comes from the caller: the last element must be the root the caller pinned. Returns
/// the leaf's SubjectPublicKeyInfo DER.
pub fn verify_rsa_cert_chain(chain: &[&[u8]], now_unix: i64) -> Result<Vec<u8>, CertError> {
    let now = ASN1Time::from_timestamp(now_unix).map_err(|_| CertError::Time(now_unix))?;
    let mut certs = Vec::with_capacity(chain.len());
    for (i, der) in chain.iter().enumerate() {
        let (rest, cert) = X509Certificate::from_der(der).map_err(|e| CertError::Parse {
            which: which(i, chain.len()),
            reason: e.to_string(),
        })?;
        if !rest.is_empty() {
            return Err(CertError::Parse {
                which: which(i, chain.len()),
                reason: format!("{} trailing bytes", rest.len()),
            });
        }
        certs.push(cert);
    }
    let Some(leaf) = certs.first() else {
        return Err(CertError::Parse {
            which: "leaf".into(),
            reason: "empty chain".into(),
        });
    };
    for (i, cert) in certs.iter().enumerate() {
        let w = which(i, certs.len());
        if !cert.validity().is_valid_at(now) {
            return Err(CertError::Expired {
                which: w,
                subject: cert.subject().to_string(),
                now: now_unix,
                not_before: cert.validity().not_before.to_string(),
                not_after: cert.validity().not_after.to_string(),
            });
        }
        let issuer = certs.get(i + 1).unwrap_or(cert);
        if cert.issuer().as_raw() != issuer.subject().as_raw() {
            return Err(CertError::IssuerMismatch {
                which: w,
                subject: cert.subject().to_string(),
                issuer: cert.issuer().to_string(),
                next: issuer.subject().to_string(),
            });
        }
        let is_ca = matches!(issuer.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
        if !is_ca {
            return Err(CertError::NotCa {
                which: which((i + 1).min(certs.len() - 1), certs.len()),
                subject: issuer.subject().to_string(),
            });
        }
        check_signature(cert, issuer, &w)?;
    }
    Ok(leaf.public_key().raw.to_vec())
}

/// Verifies the AK certificate chain (`ak_cert` → `intermediates` → `root`) at `now_unix` and
/// that the certificate's RSA key is the AK.
pub fn verify_ak_cert(
    ak_cert: &[u8],
    ak_pub: &TpmtPublic,
    intermediates: &[&[u8]],
    root: &[u8],
    now_unix: i64,
) -> Result<(), CertError> {
    let mut chain = vec![ak_cert];
    chain.extend_from_slice(intermediates);
    chain.push(root);
    verify_rsa_cert_chain(&chain, now_unix)?;
    let (_, cert) = X509Certificate::from_der(ak_cert).map_err(|e| CertError::Parse {
        which: "leaf".into(),
        reason: e.to_string(),
    })?;
    let spki = cert
        .public_key()
        .parsed()
        .map_err(|e| CertError::KeyMismatch(format!("certificate key does not parse: {e}")))?;
    let x509_parser::public_key::PublicKey::RSA(rsa) = spki else {
        return Err(CertError::KeyMismatch("certificate key is not RSA".into()));
    };
    let PublicKey::Rsa { modulus, exponent } = ak_pub.public_key() else {
        return Err(CertError::KeyMismatch("AK is not an RSA key".into()));
    };
    let cert_e = rsa
        .try_exponent()
        .map_err(|e| CertError::KeyMismatch(format!("certificate exponent: {e}")))?;
    let strip = |b: &[u8]| -> Vec<u8> { b.iter().skip_while(|&&x| x == 0).copied().collect() };
    if strip(rsa.modulus) != strip(&modulus) || cert_e != u64::from(exponent) {
        return Err(CertError::KeyMismatch(format!(
            "certificate modulus starts {}, AK modulus starts {}",
            hex::encode(strip(rsa.modulus).get(..8).unwrap_or_default()),
            hex::encode(strip(&modulus).get(..8).unwrap_or_default())
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7F) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    fn field_bytes(f: u64, b: &[u8], out: &mut Vec<u8>) {
        varint(f << 3 | 2, out);
        varint(b.len() as u64, out);
        out.extend_from_slice(b);
    }

    fn sample() -> Vec<u8> {
        let mut entry = Vec::new();
        varint(1 << 3, &mut entry);
        varint(15, &mut entry);
        field_bytes(2, &[0xAA; 32], &mut entry);
        let mut pcrs = Vec::new();
        varint(1 << 3, &mut pcrs);
        varint(11, &mut pcrs);
        field_bytes(2, &entry, &mut pcrs);
        let mut quote = Vec::new();
        field_bytes(1, b"attest", &mut quote);
        field_bytes(2, b"sig", &mut quote);
        field_bytes(3, &pcrs, &mut quote);
        let mut att = Vec::new();
        field_bytes(1, b"akpub", &mut att);
        field_bytes(2, &quote, &mut att);
        varint(9 << 3 | 5, &mut att); // unknown fixed32 field: skipped
        att.extend([1, 2, 3, 4]);
        field_bytes(3, b"log", &mut att);
        att
    }

    #[test]
    fn decodes_fields_and_skips_unknown() {
        let a = decode_attestation_pb(&sample()).unwrap();
        assert_eq!(a.ak_pub, b"akpub");
        assert_eq!(a.event_log.as_deref(), Some(&b"log"[..]));
        assert_eq!(a.ak_cert, None);
        assert_eq!(a.quotes.len(), 1);
        assert_eq!(a.quotes[0].quote, b"attest");
        assert_eq!(a.quotes[0].raw_sig, b"sig");
        assert_eq!(a.quotes[0].pcrs.hash, 11);
        assert_eq!(
            a.quotes[0].pcrs.pcrs,
            BTreeMap::from([(15, vec![0xAA; 32])])
        );
    }

    #[test]
    fn malformed_inputs_are_errors() {
        let full = sample();
        for cut in 1..full.len() {
            // Cuts at a top-level field boundary are valid shorter messages; all others fail.
            let _ = decode_attestation_pb(&full[..cut]);
        }
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("truncated length", vec![0x0A, 0x05, 1]),
            (
                "overlong varint",
                vec![0x08; 1].into_iter().chain([0xFF; 11]).collect(),
            ),
            ("group wire type", vec![0x0B]),
            ("ak_pub as varint", vec![0x08, 0x01]),
            ("huge length", vec![0x0A, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F]),
        ];
        for (name, bytes) in cases {
            assert!(decode_attestation_pb(&bytes).is_err(), "{name}");
        }
    }
}
