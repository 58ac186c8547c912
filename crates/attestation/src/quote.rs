//! TPM quote verification: signature, freshness, PCR selection and PCR digest.
//!
//! What [`verify_quote`] checks, in order (go-tpm-tools `internal.VerifyQuote` semantics, but
//! for the one bank the caller names — never "the first quote that happens to verify"):
//! 1. `TPMS_ATTEST` decodes, `magic == TPM_GENERATED_VALUE`, `type == TPM_ST_ATTEST_QUOTE`;
//! 2. the signature verifies with the given key over the exact attest bytes (RSASSA-PKCS1-v1_5
//!    or RSASSA-PSS with SHA-256/384/512, ECDSA P-256/P-384; SHA-1 is refused);
//! 3. `extraData` equals the expected qualifying data (constant time);
//! 4. the quote selects exactly one bank, that bank is the caller's, and its PCR set equals the
//!    reported PCR map's index set; every reported value has the bank's digest length;
//! 5. `pcrDigest == H_sig(PCR values concatenated in index order)`, `H_sig` being the
//!    signature's hash (this is what a TPM computes; verified on real GCE evidence).
//!
//! What it trusts: the key it is given. Deciding whether that key belongs to a genuine TPM is
//! the caller's job (the validators in [`crate::vtpm`]).

use std::collections::{BTreeMap, BTreeSet};

use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};

use crate::tpm2::{
    DecodeError, EccCurve, HashAlg, PublicKey, SigScheme, TpmsAttest, TpmtPublic, TpmtSignature,
    TPM_ALG_NULL,
};

/// Why a quote was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuoteError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("signature scheme {scheme:?} with {hash} is not supported for a {key} key")]
    UnsupportedSignature {
        scheme: SigScheme,
        hash: HashAlg,
        key: &'static str,
    },
    #[error("signature uses scheme {sig_scheme:#06x}/{sig_hash:#06x} but the key is fixed to {key_scheme:#06x}/{key_hash:#06x}")]
    SchemeMismatch {
        key_scheme: u16,
        key_hash: u16,
        sig_scheme: u16,
        sig_hash: u16,
    },
    #[error("unusable public key: {0}")]
    BadKey(String),
    #[error("{scheme:?}-{hash} signature by the {key} key does not verify")]
    BadSignature {
        scheme: SigScheme,
        hash: HashAlg,
        key: String,
    },
    #[error("qualifying data {got} does not match the expected {want}")]
    QualifyingDataMismatch { want: String, got: String },
    #[error("quote selects banks {selected:?}, expected exactly the {want} bank")]
    BankMismatch {
        want: HashAlg,
        selected: Vec<HashAlg>,
    },
    #[error("quote selects PCRs {quoted:?} but the document reports PCRs {reported:?}")]
    SelectionMismatch {
        quoted: Vec<u32>,
        reported: Vec<u32>,
    },
    #[error("PCR {index} has {len} bytes, a {bank} PCR has {want}")]
    PcrValueLength {
        index: u32,
        len: usize,
        want: usize,
        bank: HashAlg,
    },
    #[error("quote's PCR digest {quoted} does not match {computed}, the {hash} of the reported {bank} PCR values")]
    DigestMismatch {
        bank: HashAlg,
        hash: HashAlg,
        quoted: String,
        computed: String,
    },
}

/// Constant-time equality (lengths are not secret).
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn strip_leading_zeros(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[first..]
}

fn left_pad(v: &[u8], len: usize) -> Option<Vec<u8>> {
    let v = strip_leading_zeros(v);
    if v.len() > len {
        return None;
    }
    let mut out = vec![0u8; len - v.len()];
    out.extend_from_slice(v);
    Some(out)
}

/// DER `SEQUENCE { INTEGER r, INTEGER s }` for ring's ASN.1 ECDSA algorithms. Inputs are at
/// most 48 bytes each, so every length fits the short form.
fn ecdsa_der(r: &[u8], s: &[u8]) -> Vec<u8> {
    fn int(out: &mut Vec<u8>, v: &[u8]) {
        let v = strip_leading_zeros(v);
        let pad = v.first().is_none_or(|&b| b & 0x80 != 0);
        out.push(0x02);
        out.push((v.len() + usize::from(pad)) as u8);
        if pad {
            out.push(0);
        }
        out.extend_from_slice(v);
    }
    let mut body = Vec::with_capacity(104);
    int(&mut body, r);
    int(&mut body, s);
    let mut out = vec![0x30, body.len() as u8];
    out.extend(body);
    out
}

fn key_description(key: &PublicKey) -> String {
    match key {
        PublicKey::Rsa { modulus, .. } => {
            format!("RSA-{}", strip_leading_zeros(modulus).len() * 8)
        }
        PublicKey::Ecc { curve, .. } => format!("ECC {curve:?}"),
    }
}

/// Verifies `sig` over `message` (the raw `TPMS_ATTEST` bytes) with `key`.
pub fn verify_signature(
    key: &PublicKey,
    message: &[u8],
    sig: &TpmtSignature,
) -> Result<(), QuoteError> {
    let hash = sig.hash();
    let scheme = sig.scheme();
    let bad = || QuoteError::BadSignature {
        scheme,
        hash,
        key: key_description(key),
    };
    match (key, sig) {
        (
            PublicKey::Rsa { modulus, exponent },
            TpmtSignature::Rsa {
                scheme, sig: bytes, ..
            },
        ) => {
            let params: &signature::RsaParameters = match (scheme, hash) {
                (SigScheme::RsaSsa, HashAlg::Sha256) => &signature::RSA_PKCS1_2048_8192_SHA256,
                (SigScheme::RsaSsa, HashAlg::Sha384) => &signature::RSA_PKCS1_2048_8192_SHA384,
                (SigScheme::RsaSsa, HashAlg::Sha512) => &signature::RSA_PKCS1_2048_8192_SHA512,
                (SigScheme::RsaPss, HashAlg::Sha256) => &signature::RSA_PSS_2048_8192_SHA256,
                (SigScheme::RsaPss, HashAlg::Sha384) => &signature::RSA_PSS_2048_8192_SHA384,
                (SigScheme::RsaPss, HashAlg::Sha512) => &signature::RSA_PSS_2048_8192_SHA512,
                _ => {
                    return Err(QuoteError::UnsupportedSignature {
                        scheme: *scheme,
                        hash,
                        key: "RSA",
                    })
                }
            };
            let e = exponent.to_be_bytes();
            let components = RsaPublicKeyComponents {
                n: strip_leading_zeros(modulus),
                e: strip_leading_zeros(&e),
            };
            components.verify(params, message, bytes).map_err(|_| bad())
        }
        (PublicKey::Ecc { curve, x, y }, TpmtSignature::Ecdsa { r, s, .. }) => {
            let n = curve.coordinate_len();
            let (Some(x), Some(y)) = (left_pad(x, n), left_pad(y, n)) else {
                return Err(QuoteError::BadKey(format!(
                    "{curve:?} point coordinates longer than {n} bytes"
                )));
            };
            let (Some(r), Some(s)) = (left_pad(r, n), left_pad(s, n)) else {
                return Err(bad());
            };
            let mut point = Vec::with_capacity(1 + 2 * n);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            let (alg, sig_bytes): (&signature::EcdsaVerificationAlgorithm, Vec<u8>) =
                match (curve, hash) {
                    (EccCurve::NistP256, HashAlg::Sha256) => {
                        (&signature::ECDSA_P256_SHA256_FIXED, [r, s].concat())
                    }
                    (EccCurve::NistP384, HashAlg::Sha384) => {
                        (&signature::ECDSA_P384_SHA384_FIXED, [r, s].concat())
                    }
                    (EccCurve::NistP256, HashAlg::Sha384) => {
                        (&signature::ECDSA_P256_SHA384_ASN1, ecdsa_der(&r, &s))
                    }
                    (EccCurve::NistP384, HashAlg::Sha256) => {
                        (&signature::ECDSA_P384_SHA256_ASN1, ecdsa_der(&r, &s))
                    }
                    _ => {
                        return Err(QuoteError::UnsupportedSignature {
                            scheme: SigScheme::Ecdsa,
                            hash,
                            key: "ECC",
                        })
                    }
                };
            UnparsedPublicKey::new(alg, &point)
                .verify(message, &sig_bytes)
                .map_err(|_| bad())
        }
        (PublicKey::Rsa { .. }, _) => Err(QuoteError::UnsupportedSignature {
            scheme,
            hash,
            key: "RSA",
        }),
        (PublicKey::Ecc { .. }, _) => Err(QuoteError::UnsupportedSignature {
            scheme,
            hash,
            key: "ECC",
        }),
    }
}

/// A key whose public area fixes a signing scheme only produces signatures of that scheme; a
/// signature claiming another one did not come from the TPM.
pub fn check_scheme(ak: &TpmtPublic, sig: &TpmtSignature) -> Result<(), QuoteError> {
    if let Some((key_scheme, key_hash)) = ak.signing_scheme() {
        let (sig_scheme, sig_hash) = (sig.scheme().tpm_id(), sig.hash().tpm_id());
        if key_scheme != sig_scheme || (key_hash != TPM_ALG_NULL && key_hash != sig_hash) {
            return Err(QuoteError::SchemeMismatch {
                key_scheme,
                key_hash,
                sig_scheme,
                sig_hash,
            });
        }
    }
    Ok(())
}

/// Verifies one quote for one PCR bank; see the module docs for the exact checks. Returns the
/// decoded `TPMS_ATTEST`. `pcrs` are the values the document reports for `bank`; on success
/// they are exactly the values the TPM signed.
pub fn verify_quote(
    ak: &PublicKey,
    attest: &[u8],
    sig: &TpmtSignature,
    bank: HashAlg,
    pcrs: &BTreeMap<u32, Vec<u8>>,
    qualifying_data: &[u8],
) -> Result<TpmsAttest, QuoteError> {
    let quote = TpmsAttest::decode(attest)?;
    if sig.hash() == HashAlg::Sha1 {
        return Err(QuoteError::UnsupportedSignature {
            scheme: sig.scheme(),
            hash: HashAlg::Sha1,
            key: match ak {
                PublicKey::Rsa { .. } => "RSA",
                PublicKey::Ecc { .. } => "ECC",
            },
        });
    }
    verify_signature(ak, attest, sig)?;
    if !ct_eq(&quote.extra_data, qualifying_data) {
        return Err(QuoteError::QualifyingDataMismatch {
            want: hex::encode(qualifying_data),
            got: hex::encode(&quote.extra_data),
        });
    }
    let banks = &quote.pcr_select.0;
    let [selection] = banks.as_slice() else {
        return Err(QuoteError::BankMismatch {
            want: bank,
            selected: banks.iter().map(|s| s.hash).collect(),
        });
    };
    if selection.hash != bank {
        return Err(QuoteError::BankMismatch {
            want: bank,
            selected: vec![selection.hash],
        });
    }
    let reported: BTreeSet<u32> = pcrs.keys().copied().collect();
    if selection.pcrs != reported {
        return Err(QuoteError::SelectionMismatch {
            quoted: selection.pcrs.iter().copied().collect(),
            reported: reported.into_iter().collect(),
        });
    }
    for (&index, value) in pcrs {
        if value.len() != bank.digest_len() {
            return Err(QuoteError::PcrValueLength {
                index,
                len: value.len(),
                want: bank.digest_len(),
                bank,
            });
        }
    }
    let computed = sig.hash().digest_parts(pcrs.values().map(|v| v.as_slice()));
    if !ct_eq(&computed, &quote.pcr_digest) {
        return Err(QuoteError::DigestMismatch {
            bank,
            hash: sig.hash(),
            quoted: hex::encode(&quote.pcr_digest),
            computed: hex::encode(computed),
        });
    }
    Ok(quote)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ct_eq_table() {
        for (a, b, want) in [
            (&b""[..], &b""[..], true),
            (b"ab", b"ab", true),
            (b"ab", b"ac", false),
            (b"ab", b"abc", false),
            (b"", b"\0", false),
        ] {
            assert_eq!(ct_eq(a, b), want, "{a:?} {b:?}");
        }
    }

    #[test]
    fn der_integers() {
        for (r, s, want) in [
            (&[0x01u8][..], &[0x7Fu8][..], "300602010102017f"),
            (&[0x80], &[0x00, 0x00, 0x05], "300702020080020105"),
            (&[], &[0xFF, 0x01], "3008020100020300ff01"),
        ] {
            assert_eq!(hex::encode(ecdsa_der(r, s)), want);
        }
    }

    #[test]
    fn rsa_key_with_ecdsa_signature_is_unsupported() {
        let key = PublicKey::Rsa {
            modulus: vec![0xC1; 256],
            exponent: 65537,
        };
        let sig = TpmtSignature::Ecdsa {
            hash: HashAlg::Sha256,
            r: vec![1],
            s: vec![1],
        };
        assert!(matches!(
            verify_signature(&key, b"m", &sig),
            Err(QuoteError::UnsupportedSignature { key: "RSA", .. })
        ));
    }
}
