//! Pure-Rust decoders (and matching encoders) for the few TPM 2.0 structures a verifier needs
//! (TPM 2.0 Library, Part 2; all integers big-endian): `TPMT_PUBLIC` (RSA and ECC keys),
//! `TPMS_ATTEST` (quotes only), `TPMT_SIGNATURE` (RSASSA, RSAPSS, ECDSA) and
//! `TPML_PCR_SELECTION`.
//!
//! Decoders take untrusted bytes: they never panic, bound every size field by the TPM's own
//! maximum, reject trailing bytes, and report the field and byte offset that failed. The
//! encoders exist so that tests, fuzzers and software issuers can build the same structures;
//! `decode(encode(x)) == x` for every value the decoders return.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use sha1::Sha1;
use sha2::{Digest, Sha256, Sha384, Sha512};

use crate::cursor::{Cursor, Short};

/// `TPM_GENERATED_VALUE`: the first four bytes of every structure the TPM signs itself.
pub const TPM_GENERATED_VALUE: u32 = 0xFF54_4347;
/// `TPM_ST_ATTEST_QUOTE`.
pub const TPM_ST_ATTEST_QUOTE: u16 = 0x8018;

pub const TPM_ALG_RSA: u16 = 0x0001;
pub const TPM_ALG_SHA1: u16 = 0x0004;
pub const TPM_ALG_SHA256: u16 = 0x000B;
pub const TPM_ALG_SHA384: u16 = 0x000C;
pub const TPM_ALG_SHA512: u16 = 0x000D;
pub const TPM_ALG_NULL: u16 = 0x0010;
pub const TPM_ALG_RSASSA: u16 = 0x0014;
pub const TPM_ALG_RSAES: u16 = 0x0015;
pub const TPM_ALG_RSAPSS: u16 = 0x0016;
pub const TPM_ALG_ECDSA: u16 = 0x0018;
pub const TPM_ALG_ECDAA: u16 = 0x001A;
pub const TPM_ALG_ECC: u16 = 0x0023;
pub const TPM_ECC_NIST_P256: u16 = 0x0003;
pub const TPM_ECC_NIST_P384: u16 = 0x0004;

/// `TPMA_OBJECT` bits the verifier looks at.
pub const TPMA_OBJECT_FIXED_TPM: u32 = 1 << 1;
pub const TPMA_OBJECT_RESTRICTED: u32 = 1 << 16;
pub const TPMA_OBJECT_SIGN: u32 = 1 << 18;

/// Largest digest any supported hash produces (`sizeof(TPMU_HA)`).
const MAX_DIGEST: usize = 64;
/// `sizeof(TPMT_HA)`: bound of `TPM2B_DATA` and of the digest part of `TPM2B_NAME`.
const MAX_HA: usize = 2 + MAX_DIGEST;
/// RSA keys up to 4096 bits (`TPM2B_PUBLIC_KEY_RSA`).
const MAX_RSA_BYTES: usize = 512;
/// ECC coordinates up to P-521 (`TPM2B_ECC_PARAMETER`).
const MAX_ECC_BYTES: usize = 66;
/// `TPML_PCR_SELECTION` with more banks than hash algorithms exist is nonsense.
const MAX_PCR_BANKS: u32 = 16;
/// Up to 64 PCRs per bank (`PCR_SELECT_MAX`; real TPMs have 24 → 3 bytes).
const MAX_PCR_SELECT: usize = 8;

/// A decoding failure: what was being read and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{structure}: field {field} at offset {offset} needs {need} bytes, {have} left")]
    Truncated {
        structure: &'static str,
        field: &'static str,
        offset: usize,
        need: usize,
        have: usize,
    },
    #[error("{structure}: field {field} at offset {offset} declares {size} bytes, at most {max} allowed")]
    TooLarge {
        structure: &'static str,
        field: &'static str,
        offset: usize,
        size: usize,
        max: usize,
    },
    #[error("{structure}: field {field} at offset {offset} has unsupported value {value:#06x}")]
    Unsupported {
        structure: &'static str,
        field: &'static str,
        offset: usize,
        value: u32,
    },
    #[error("{structure}: field {field} at offset {offset} is invalid: {reason}")]
    Invalid {
        structure: &'static str,
        field: &'static str,
        offset: usize,
        reason: String,
    },
    #[error("{structure}: {extra} unexpected trailing bytes at offset {offset}")]
    TrailingBytes {
        structure: &'static str,
        offset: usize,
        extra: usize,
    },
}

/// Big-endian reader of one TPM structure over untrusted bytes.
struct Reader<'a> {
    cur: Cursor<'a>,
    structure: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], structure: &'static str) -> Self {
        Self {
            cur: Cursor::new(buf),
            structure,
        }
    }

    fn pos(&self) -> usize {
        self.cur.pos()
    }

    fn truncated(&self, field: &'static str, short: Short) -> DecodeError {
        let Short { offset, need, have } = short;
        DecodeError::Truncated {
            structure: self.structure,
            field,
            offset,
            need,
            have,
        }
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        self.cur.take(n).map_err(|s| self.truncated(field, s))
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        self.cur.array().map_err(|s| self.truncated(field, s))
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }
    fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }
    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }
    fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    /// A `TPM2B_*`: u16 size, then that many bytes (at most `max`).
    fn tpm2b(&mut self, field: &'static str, max: usize) -> Result<Vec<u8>, DecodeError> {
        let offset = self.pos();
        let size = usize::from(self.u16(field)?);
        if size > max {
            return Err(DecodeError::TooLarge {
                structure: self.structure,
                field,
                offset,
                size,
                max,
            });
        }
        Ok(self.take(size, field)?.to_vec())
    }

    fn unsupported(
        &self,
        field: &'static str,
        offset: usize,
        value: impl Into<u32>,
    ) -> DecodeError {
        DecodeError::Unsupported {
            structure: self.structure,
            field,
            offset,
            value: value.into(),
        }
    }

    fn invalid(
        &self,
        field: &'static str,
        offset: usize,
        reason: impl Into<String>,
    ) -> DecodeError {
        DecodeError::Invalid {
            structure: self.structure,
            field,
            offset,
            reason: reason.into(),
        }
    }

    fn hash_alg(&mut self, field: &'static str) -> Result<HashAlg, DecodeError> {
        let offset = self.pos();
        let v = self.u16(field)?;
        HashAlg::from_tpm(v).ok_or_else(|| self.unsupported(field, offset, v))
    }

    fn finish(&self) -> Result<(), DecodeError> {
        let extra = self.cur.remaining();
        if extra != 0 {
            return Err(DecodeError::TrailingBytes {
                structure: self.structure,
                offset: self.pos(),
                extra,
            });
        }
        Ok(())
    }
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}
fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}
/// Writes a `TPM2B_*`. Sizes above `u16::MAX` are truncated to keep the output well-formed;
/// encoders are only fed values the decoders accepted or that tests built (all far smaller).
fn put_tpm2b(out: &mut Vec<u8>, v: &[u8]) {
    let len = u16::try_from(v.len()).unwrap_or(u16::MAX);
    put_u16(out, len);
    out.extend_from_slice(&v[..usize::from(len)]);
}

/// Hash algorithms (`TPMI_ALG_HASH`) the verifier supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HashAlg {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlg {
    pub fn from_tpm(id: u16) -> Option<Self> {
        match id {
            TPM_ALG_SHA1 => Some(Self::Sha1),
            TPM_ALG_SHA256 => Some(Self::Sha256),
            TPM_ALG_SHA384 => Some(Self::Sha384),
            TPM_ALG_SHA512 => Some(Self::Sha512),
            _ => None,
        }
    }
    pub fn tpm_id(self) -> u16 {
        match self {
            Self::Sha1 => TPM_ALG_SHA1,
            Self::Sha256 => TPM_ALG_SHA256,
            Self::Sha384 => TPM_ALG_SHA384,
            Self::Sha512 => TPM_ALG_SHA512,
        }
    }
    pub fn digest_len(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha1 => "SHA-1",
            Self::Sha256 => "SHA-256",
            Self::Sha384 => "SHA-384",
            Self::Sha512 => "SHA-512",
        }
    }
    /// Hashes the concatenation of `parts`.
    pub fn digest_parts<'a>(self, parts: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
        fn run<D: Digest>(parts: impl IntoIterator<Item = impl AsRef<[u8]>>) -> Vec<u8> {
            let mut h = D::new();
            for p in parts {
                h.update(p);
            }
            h.finalize().to_vec()
        }
        match self {
            Self::Sha1 => run::<Sha1>(parts),
            Self::Sha256 => run::<Sha256>(parts),
            Self::Sha384 => run::<Sha384>(parts),
            Self::Sha512 => run::<Sha512>(parts),
        }
    }
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        self.digest_parts([data])
    }
}

impl fmt::Display for HashAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// NIST curves the verifier supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EccCurve {
    NistP256,
    NistP384,
}

impl EccCurve {
    pub fn from_tpm(id: u16) -> Option<Self> {
        match id {
            TPM_ECC_NIST_P256 => Some(Self::NistP256),
            TPM_ECC_NIST_P384 => Some(Self::NistP384),
            _ => None,
        }
    }
    pub fn tpm_id(self) -> u16 {
        match self {
            Self::NistP256 => TPM_ECC_NIST_P256,
            Self::NistP384 => TPM_ECC_NIST_P384,
        }
    }
    /// Bytes of one coordinate / one signature half.
    pub fn coordinate_len(self) -> usize {
        match self {
            Self::NistP256 => 32,
            Self::NistP384 => 48,
        }
    }
}

/// `TPMT_SYM_DEF_OBJECT`: `NULL` for signing keys, or (algorithm, keyBits, mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SymDef {
    Null,
    Cipher {
        algorithm: u16,
        key_bits: u16,
        mode: u16,
    },
}

/// `TPMT_{RSA,ECC}_SCHEME` / `TPMT_KDF_SCHEME`: scheme id and its details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    Null,
    /// Schemes without details (RSAES).
    Bare(u16),
    /// Schemes whose details are one hash algorithm (RSASSA, RSAPSS, ECDSA, OAEP, KDFs, …).
    WithHash {
        scheme: u16,
        hash: u16,
    },
    /// ECDAA: hash and commit count.
    Ecdaa {
        hash: u16,
        count: u16,
    },
}

impl Scheme {
    fn decode(r: &mut Reader<'_>, field: &'static str) -> Result<Self, DecodeError> {
        let scheme = r.u16(field)?;
        Ok(match scheme {
            TPM_ALG_NULL => Scheme::Null,
            TPM_ALG_RSAES => Scheme::Bare(scheme),
            TPM_ALG_ECDAA => Scheme::Ecdaa {
                hash: r.u16(field)?,
                count: r.u16(field)?,
            },
            _ => Scheme::WithHash {
                scheme,
                hash: r.u16(field)?,
            },
        })
    }
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Scheme::Null => put_u16(out, TPM_ALG_NULL),
            Scheme::Bare(s) => put_u16(out, *s),
            Scheme::WithHash { scheme, hash } => {
                put_u16(out, *scheme);
                put_u16(out, *hash);
            }
            Scheme::Ecdaa { hash, count } => {
                put_u16(out, TPM_ALG_ECDAA);
                put_u16(out, *hash);
                put_u16(out, *count);
            }
        }
    }
}

/// The key material and algorithm parameters of a `TPMT_PUBLIC`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicParams {
    Rsa {
        symmetric: SymDef,
        scheme: Scheme,
        key_bits: u16,
        /// As stored: 0 means the default 65537 (see [`PublicParams::rsa_exponent`]).
        exponent: u32,
        /// Big-endian modulus (`unique.rsa`).
        modulus: Vec<u8>,
    },
    Ecc {
        symmetric: SymDef,
        scheme: Scheme,
        curve: EccCurve,
        kdf: Scheme,
        x: Vec<u8>,
        y: Vec<u8>,
    },
}

/// A decoded `TPMT_PUBLIC` (RSA or ECC object).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmtPublic {
    pub name_alg: HashAlg,
    pub object_attributes: u32,
    pub auth_policy: Vec<u8>,
    pub params: PublicParams,
}

/// `TPMA_OBJECT` of go-tpm-tools' AK templates: fixedTPM | fixedParent | sensitiveDataOrigin |
/// userWithAuth | restricted | sign.
const AK_TEMPLATE_ATTRIBUTES: u32 = 0x0005_0072;

impl TpmtPublic {
    /// go-tpm-tools `AKTemplateECC` (P-256, ECDSA-SHA256, SHA-256 name) with public point
    /// (`x`, `y`).
    pub fn ak_template_ecc(x: Vec<u8>, y: Vec<u8>) -> Self {
        Self {
            name_alg: HashAlg::Sha256,
            object_attributes: AK_TEMPLATE_ATTRIBUTES,
            auth_policy: Vec::new(),
            params: PublicParams::Ecc {
                symmetric: SymDef::Null,
                scheme: Scheme::WithHash {
                    scheme: TPM_ALG_ECDSA,
                    hash: TPM_ALG_SHA256,
                },
                curve: EccCurve::NistP256,
                kdf: Scheme::Null,
                x,
                y,
            },
        }
    }

    /// go-tpm-tools `AKTemplateRSA` layout (RSA-2048, exponent field 0 = 65537, SHA-256 name)
    /// with `modulus` and signing `scheme` (the real template fixes RSASSA-SHA256).
    pub fn ak_template_rsa(scheme: Scheme, modulus: Vec<u8>) -> Self {
        Self {
            name_alg: HashAlg::Sha256,
            object_attributes: AK_TEMPLATE_ATTRIBUTES,
            auth_policy: Vec::new(),
            params: PublicParams::Rsa {
                symmetric: SymDef::Null,
                scheme,
                key_bits: 2048,
                exponent: 0,
                modulus,
            },
        }
    }

    /// Decodes exactly one `TPMT_PUBLIC` (as in go-tpm-tools' `ak_pub`; no `TPM2B` size prefix).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes, "TPMT_PUBLIC");
        let type_off = r.pos();
        let object_type = r.u16("type")?;
        let name_alg = r.hash_alg("nameAlg")?;
        let object_attributes = r.u32("objectAttributes")?;
        let auth_policy = r.tpm2b("authPolicy", MAX_DIGEST)?;
        let symmetric = {
            let alg = r.u16("parameters.symmetric")?;
            if alg == TPM_ALG_NULL {
                SymDef::Null
            } else {
                SymDef::Cipher {
                    algorithm: alg,
                    key_bits: r.u16("parameters.symmetric.keyBits")?,
                    mode: r.u16("parameters.symmetric.mode")?,
                }
            }
        };
        let scheme = Scheme::decode(&mut r, "parameters.scheme")?;
        let params = match object_type {
            TPM_ALG_RSA => {
                let key_bits = r.u16("parameters.keyBits")?;
                let exponent = r.u32("parameters.exponent")?;
                let mod_off = r.pos();
                let modulus = r.tpm2b("unique.rsa", MAX_RSA_BYTES)?;
                if modulus.len() * 8 != usize::from(key_bits) {
                    return Err(r.invalid(
                        "unique.rsa",
                        mod_off,
                        format!(
                            "modulus has {} bytes but keyBits is {key_bits}",
                            modulus.len()
                        ),
                    ));
                }
                PublicParams::Rsa {
                    symmetric,
                    scheme,
                    key_bits,
                    exponent,
                    modulus,
                }
            }
            TPM_ALG_ECC => {
                let curve_off = r.pos();
                let curve_id = r.u16("parameters.curveID")?;
                let curve = EccCurve::from_tpm(curve_id)
                    .ok_or_else(|| r.unsupported("parameters.curveID", curve_off, curve_id))?;
                let kdf = Scheme::decode(&mut r, "parameters.kdf")?;
                let x_off = r.pos();
                let x = r.tpm2b("unique.ecc.x", MAX_ECC_BYTES)?;
                let y = r.tpm2b("unique.ecc.y", MAX_ECC_BYTES)?;
                let n = curve.coordinate_len();
                if x.len() > n || y.len() > n {
                    return Err(r.invalid(
                        "unique.ecc",
                        x_off,
                        format!(
                            "coordinates of {} and {} bytes for a {n}-byte curve",
                            x.len(),
                            y.len()
                        ),
                    ));
                }
                PublicParams::Ecc {
                    symmetric,
                    scheme,
                    curve,
                    kdf,
                    x,
                    y,
                }
            }
            other => return Err(r.unsupported("type", type_off, other)),
        };
        r.finish()?;
        Ok(Self {
            name_alg,
            object_attributes,
            auth_policy,
            params,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(320);
        let (ty, symmetric, scheme) = match &self.params {
            PublicParams::Rsa {
                symmetric, scheme, ..
            } => (TPM_ALG_RSA, symmetric, scheme),
            PublicParams::Ecc {
                symmetric, scheme, ..
            } => (TPM_ALG_ECC, symmetric, scheme),
        };
        put_u16(&mut out, ty);
        put_u16(&mut out, self.name_alg.tpm_id());
        put_u32(&mut out, self.object_attributes);
        put_tpm2b(&mut out, &self.auth_policy);
        match symmetric {
            SymDef::Null => put_u16(&mut out, TPM_ALG_NULL),
            SymDef::Cipher {
                algorithm,
                key_bits,
                mode,
            } => {
                put_u16(&mut out, *algorithm);
                put_u16(&mut out, *key_bits);
                put_u16(&mut out, *mode);
            }
        }
        scheme.encode(&mut out);
        match &self.params {
            PublicParams::Rsa {
                key_bits,
                exponent,
                modulus,
                ..
            } => {
                put_u16(&mut out, *key_bits);
                put_u32(&mut out, *exponent);
                put_tpm2b(&mut out, modulus);
            }
            PublicParams::Ecc {
                curve, kdf, x, y, ..
            } => {
                put_u16(&mut out, curve.tpm_id());
                kdf.encode(&mut out);
                put_tpm2b(&mut out, x);
                put_tpm2b(&mut out, y);
            }
        }
        out
    }

    /// The object's TPM name: `nameAlg ‖ H_nameAlg(TPMT_PUBLIC)` over the encoded bytes.
    pub fn name(&self) -> Vec<u8> {
        let mut out = self.name_alg.tpm_id().to_be_bytes().to_vec();
        out.extend(self.name_alg.digest(&self.encode()));
        out
    }

    /// The key used for signature verification.
    pub fn public_key(&self) -> PublicKey {
        match &self.params {
            PublicParams::Rsa {
                exponent, modulus, ..
            } => PublicKey::Rsa {
                modulus: modulus.clone(),
                exponent: if *exponent == 0 { 65537 } else { *exponent },
            },
            PublicParams::Ecc { curve, x, y, .. } => PublicKey::Ecc {
                curve: *curve,
                x: x.clone(),
                y: y.clone(),
            },
        }
    }

    /// The signing scheme fixed in the key (`None` when the key leaves it open).
    pub fn signing_scheme(&self) -> Option<(u16, u16)> {
        let scheme = match &self.params {
            PublicParams::Rsa { scheme, .. } | PublicParams::Ecc { scheme, .. } => scheme,
        };
        match scheme {
            Scheme::WithHash { scheme, hash } => Some((*scheme, *hash)),
            Scheme::Ecdaa { hash, .. } => Some((TPM_ALG_ECDAA, *hash)),
            Scheme::Bare(s) => Some((*s, TPM_ALG_NULL)),
            Scheme::Null => None,
        }
    }

    /// A restricted signing key: the TPM refuses to sign external data that starts with
    /// [`TPM_GENERATED_VALUE`] with it, so only such keys make quotes meaningful.
    pub fn is_restricted_signing_key(&self) -> bool {
        let need = TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_SIGN;
        self.object_attributes & need == need
    }
}

/// The verification key of an attestation key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// RSA; `exponent` is the real exponent (the TPM's 0 already mapped to 65537).
    Rsa { modulus: Vec<u8>, exponent: u32 },
    Ecc {
        curve: EccCurve,
        x: Vec<u8>,
        y: Vec<u8>,
    },
}

/// `TPMS_PCR_SELECTION`: one bank and its selected PCR indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrSelection {
    pub hash: HashAlg,
    /// Bytes in the bitmap (3 for a 24-PCR TPM); kept so encoding round-trips.
    pub size_of_select: u8,
    pub pcrs: BTreeSet<u32>,
}

/// `TPML_PCR_SELECTION`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PcrSelectionList(pub Vec<PcrSelection>);

impl PcrSelectionList {
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let count_off = r.pos();
        let count = r.u32("pcrSelect.count")?;
        if count > MAX_PCR_BANKS {
            return Err(DecodeError::TooLarge {
                structure: r.structure,
                field: "pcrSelect.count",
                offset: count_off,
                size: count as usize,
                max: MAX_PCR_BANKS as usize,
            });
        }
        let mut banks = Vec::new();
        for _ in 0..count {
            let hash = r.hash_alg("pcrSelect.hash")?;
            let size_off = r.pos();
            let size_of_select = r.u8("pcrSelect.sizeofSelect")?;
            if usize::from(size_of_select) > MAX_PCR_SELECT {
                return Err(DecodeError::TooLarge {
                    structure: r.structure,
                    field: "pcrSelect.sizeofSelect",
                    offset: size_off,
                    size: usize::from(size_of_select),
                    max: MAX_PCR_SELECT,
                });
            }
            let bitmap = r.take(usize::from(size_of_select), "pcrSelect.pcrSelect")?;
            let mut pcrs = BTreeSet::new();
            for (byte_idx, byte) in bitmap.iter().enumerate() {
                for bit in 0..8u32 {
                    if byte & (1 << bit) != 0 {
                        // byte_idx < MAX_PCR_SELECT, so this stays far below u32::MAX.
                        pcrs.insert(byte_idx as u32 * 8 + bit);
                    }
                }
            }
            banks.push(PcrSelection {
                hash,
                size_of_select,
                pcrs,
            });
        }
        Ok(Self(banks))
    }

    /// Decodes exactly one `TPML_PCR_SELECTION`.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes, "TPML_PCR_SELECTION");
        let out = Self::decode_from(&mut r)?;
        r.finish()?;
        Ok(out)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        put_u32(out, u32::try_from(self.0.len()).unwrap_or(u32::MAX));
        for sel in &self.0 {
            put_u16(out, sel.hash.tpm_id());
            out.push(sel.size_of_select);
            let mut bitmap = vec![0u8; usize::from(sel.size_of_select)];
            for &pcr in &sel.pcrs {
                if let Some(b) = bitmap.get_mut((pcr / 8) as usize) {
                    *b |= 1 << (pcr % 8);
                }
            }
            out.extend_from_slice(&bitmap);
        }
    }
}

/// `TPMS_CLOCK_INFO`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClockInfo {
    pub clock: u64,
    pub reset_count: u32,
    pub restart_count: u32,
    pub safe: bool,
}

/// A decoded `TPMS_ATTEST` of type `TPM_ST_ATTEST_QUOTE` (the only type a verifier accepts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmsAttest {
    pub qualified_signer: Vec<u8>,
    /// The qualifying data the caller passed to `TPM2_Quote` (Constellation: the tpmNonce).
    pub extra_data: Vec<u8>,
    pub clock_info: ClockInfo,
    pub firmware_version: u64,
    pub pcr_select: PcrSelectionList,
    pub pcr_digest: Vec<u8>,
}

impl TpmsAttest {
    /// A quote of the SHA-256 bank `pcrs` (24-PCR bitmap) by `qualified_signer` over
    /// `extra_data`; zero clock and firmware version (override them with struct update syntax).
    pub fn sha256_quote(
        qualified_signer: Vec<u8>,
        extra_data: Vec<u8>,
        pcrs: &BTreeMap<u32, Vec<u8>>,
    ) -> Self {
        Self {
            qualified_signer,
            extra_data,
            clock_info: ClockInfo::default(),
            firmware_version: 0,
            pcr_select: PcrSelectionList(vec![PcrSelection {
                hash: HashAlg::Sha256,
                size_of_select: 3,
                pcrs: pcrs.keys().copied().collect(),
            }]),
            pcr_digest: HashAlg::Sha256.digest_parts(pcrs.values().map(|v| v.as_slice())),
        }
    }

    /// Decodes a quote. Anything else — wrong magic (not TPM-generated), another attestation
    /// type (certify, …) — is an error, so a signed non-quote can never pass as a quote.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes, "TPMS_ATTEST");
        let magic = r.u32("magic")?;
        if magic != TPM_GENERATED_VALUE {
            return Err(r.invalid(
                "magic",
                0,
                format!("{magic:#010x}, want {TPM_GENERATED_VALUE:#010x} (TPM_GENERATED_VALUE)"),
            ));
        }
        let ty = r.u16("type")?;
        if ty != TPM_ST_ATTEST_QUOTE {
            return Err(r.invalid(
                "type",
                4,
                format!("{ty:#06x}, want {TPM_ST_ATTEST_QUOTE:#06x} (TPM_ST_ATTEST_QUOTE)"),
            ));
        }
        let qualified_signer = r.tpm2b("qualifiedSigner", MAX_HA)?;
        let extra_data = r.tpm2b("extraData", MAX_HA)?;
        let clock = r.u64("clockInfo.clock")?;
        let reset_count = r.u32("clockInfo.resetCount")?;
        let restart_count = r.u32("clockInfo.restartCount")?;
        let safe_off = r.pos();
        let safe = match r.u8("clockInfo.safe")? {
            0 => false,
            1 => true,
            v => return Err(r.unsupported("clockInfo.safe", safe_off, v)),
        };
        let firmware_version = r.u64("firmwareVersion")?;
        let pcr_select = PcrSelectionList::decode_from(&mut r)?;
        let pcr_digest = r.tpm2b("pcrDigest", MAX_DIGEST)?;
        r.finish()?;
        Ok(Self {
            qualified_signer,
            extra_data,
            clock_info: ClockInfo {
                clock,
                reset_count,
                restart_count,
                safe,
            },
            firmware_version,
            pcr_select,
            pcr_digest,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(160);
        put_u32(&mut out, TPM_GENERATED_VALUE);
        put_u16(&mut out, TPM_ST_ATTEST_QUOTE);
        put_tpm2b(&mut out, &self.qualified_signer);
        put_tpm2b(&mut out, &self.extra_data);
        out.extend_from_slice(&self.clock_info.clock.to_be_bytes());
        put_u32(&mut out, self.clock_info.reset_count);
        put_u32(&mut out, self.clock_info.restart_count);
        out.push(u8::from(self.clock_info.safe));
        out.extend_from_slice(&self.firmware_version.to_be_bytes());
        self.pcr_select.encode_into(&mut out);
        put_tpm2b(&mut out, &self.pcr_digest);
        out
    }
}

/// Signature schemes the verifier accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigScheme {
    RsaSsa,
    RsaPss,
    Ecdsa,
}

impl SigScheme {
    pub fn tpm_id(self) -> u16 {
        match self {
            Self::RsaSsa => TPM_ALG_RSASSA,
            Self::RsaPss => TPM_ALG_RSAPSS,
            Self::Ecdsa => TPM_ALG_ECDSA,
        }
    }
}

/// A decoded `TPMT_SIGNATURE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TpmtSignature {
    /// RSASSA-PKCS1-v1_5 or RSASSA-PSS; `sig` is the raw big-endian signature.
    Rsa {
        scheme: SigScheme,
        hash: HashAlg,
        sig: Vec<u8>,
    },
    /// ECDSA; `r` and `s` big-endian, possibly shorter than the curve size.
    Ecdsa {
        hash: HashAlg,
        r: Vec<u8>,
        s: Vec<u8>,
    },
}

impl TpmtSignature {
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes, "TPMT_SIGNATURE");
        let alg = r.u16("sigAlg")?;
        let out = match alg {
            TPM_ALG_RSASSA | TPM_ALG_RSAPSS => {
                let hash = r.hash_alg("signature.hash")?;
                let sig = r.tpm2b("signature.sig", MAX_RSA_BYTES)?;
                let scheme = if alg == TPM_ALG_RSASSA {
                    SigScheme::RsaSsa
                } else {
                    SigScheme::RsaPss
                };
                TpmtSignature::Rsa { scheme, hash, sig }
            }
            TPM_ALG_ECDSA => {
                let hash = r.hash_alg("signature.hash")?;
                let rr = r.tpm2b("signature.signatureR", MAX_ECC_BYTES)?;
                let s = r.tpm2b("signature.signatureS", MAX_ECC_BYTES)?;
                TpmtSignature::Ecdsa { hash, r: rr, s }
            }
            other => return Err(r.unsupported("sigAlg", 0, other)),
        };
        r.finish()?;
        Ok(out)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(262);
        match self {
            TpmtSignature::Rsa { scheme, hash, sig } => {
                put_u16(&mut out, scheme.tpm_id());
                put_u16(&mut out, hash.tpm_id());
                put_tpm2b(&mut out, sig);
            }
            TpmtSignature::Ecdsa { hash, r, s } => {
                put_u16(&mut out, TPM_ALG_ECDSA);
                put_u16(&mut out, hash.tpm_id());
                put_tpm2b(&mut out, r);
                put_tpm2b(&mut out, s);
            }
        }
        out
    }

    pub fn scheme(&self) -> SigScheme {
        match self {
            TpmtSignature::Rsa { scheme, .. } => *scheme,
            TpmtSignature::Ecdsa { .. } => SigScheme::Ecdsa,
        }
    }

    pub fn hash(&self) -> HashAlg {
        match self {
            TpmtSignature::Rsa { hash, .. } | TpmtSignature::Ecdsa { hash, .. } => *hash,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// go-tpm-tools `AKTemplateRSA` public area with a dummy modulus (280 bytes).
    fn rsa_ak() -> TpmtPublic {
        TpmtPublic::ak_template_rsa(
            Scheme::WithHash {
                scheme: TPM_ALG_RSASSA,
                hash: TPM_ALG_SHA256,
            },
            vec![0xC5; 256],
        )
    }

    fn ecc_ak() -> TpmtPublic {
        TpmtPublic::ak_template_ecc(vec![1; 32], vec![2; 32])
    }

    fn quote() -> TpmsAttest {
        TpmsAttest {
            qualified_signer: vec![0, 0x0B, 7, 7, 7],
            extra_data: vec![0x90, 0x09],
            clock_info: ClockInfo {
                clock: 1,
                reset_count: 2,
                restart_count: 3,
                safe: true,
            },
            firmware_version: 0x2020_0312_0012_0003,
            pcr_select: PcrSelectionList(vec![PcrSelection {
                hash: HashAlg::Sha256,
                size_of_select: 3,
                pcrs: (0..24).collect(),
            }]),
            pcr_digest: vec![0xAB; 32],
        }
    }

    #[test]
    fn rsa_ak_layout_matches_go_tpm_tools() {
        let bytes = rsa_ak().encode();
        assert_eq!(bytes.len(), 280);
        assert_eq!(
            hex::encode(&bytes[..22]),
            "0001000b00050072000000100014000b080000000000"
        );
        assert!(rsa_ak().is_restricted_signing_key());
        assert_eq!(
            rsa_ak().public_key(),
            PublicKey::Rsa {
                modulus: vec![0xC5; 256],
                exponent: 65537
            }
        );
        assert_eq!(rsa_ak().name().len(), 34);
        assert_eq!(&rsa_ak().name()[..2], &[0, 0x0B]);
    }

    #[test]
    fn round_trips() {
        for key in [rsa_ak(), ecc_ak()] {
            assert_eq!(TpmtPublic::decode(&key.encode()).unwrap(), key);
        }
        let q = quote();
        let qb = q.encode();
        assert_eq!(qb.len(), 113 + 2 - 34 + 5); // 113 B + extraData, with a 5-byte name not 34
        assert_eq!(TpmsAttest::decode(&qb).unwrap(), q);
        for sig in [
            TpmtSignature::Rsa {
                scheme: SigScheme::RsaSsa,
                hash: HashAlg::Sha256,
                sig: vec![9; 256],
            },
            TpmtSignature::Rsa {
                scheme: SigScheme::RsaPss,
                hash: HashAlg::Sha384,
                sig: vec![9; 256],
            },
            TpmtSignature::Ecdsa {
                hash: HashAlg::Sha256,
                r: vec![1; 32],
                s: vec![2; 31],
            },
        ] {
            assert_eq!(TpmtSignature::decode(&sig.encode()).unwrap(), sig);
        }
        let sel = q.pcr_select;
        assert_eq!(hex::encode(sel.encode()), "00000001000b03ffffff");
        assert_eq!(PcrSelectionList::decode(&sel.encode()).unwrap(), sel);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let inputs: [(&str, Vec<u8>); 4] = [
            ("rsa", rsa_ak().encode()),
            ("ecc", ecc_ak().encode()),
            ("quote", quote().encode()),
            (
                "sig",
                TpmtSignature::Ecdsa {
                    hash: HashAlg::Sha256,
                    r: vec![1; 32],
                    s: vec![2; 32],
                }
                .encode(),
            ),
        ];
        for (name, full) in inputs {
            for cut in 0..full.len() {
                let part = &full[..cut];
                let res = match name {
                    "rsa" | "ecc" => TpmtPublic::decode(part).map(|_| ()),
                    "quote" => TpmsAttest::decode(part).map(|_| ()),
                    _ => TpmtSignature::decode(part).map(|_| ()),
                };
                assert!(
                    matches!(res, Err(DecodeError::Truncated { .. })),
                    "{name} cut at {cut}: {res:?}"
                );
            }
        }
    }

    #[test]
    fn rejects_with_field_and_offset() {
        let q = quote().encode();
        let mut trailing = q.clone();
        trailing.push(0);
        let mut bad_magic = q.clone();
        bad_magic[0] = 0;
        let mut certify = q.clone();
        certify[5] = 0x17; // TPM_ST_ATTEST_CERTIFY
        let mut big_extra = q.clone();
        // extraData's size field follows magic(4) type(2) signer(2+5).
        big_extra[13..15].copy_from_slice(&200u16.to_be_bytes());
        let mut bad_safe = q.clone();
        bad_safe[33] = 2;
        let mut sha3_bank = q.clone();
        let sel_off = q.len() - 2 - 32 - 10;
        sha3_bank[sel_off + 4..sel_off + 6].copy_from_slice(&0x0027u16.to_be_bytes());
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("trailing", trailing, "TPMS_ATTEST: 1 unexpected trailing bytes at offset 86"),
            ("magic", bad_magic, "TPMS_ATTEST: field magic at offset 0 is invalid: 0x00544347, want 0xff544347 (TPM_GENERATED_VALUE)"),
            ("type", certify, "TPMS_ATTEST: field type at offset 4 is invalid: 0x8017, want 0x8018 (TPM_ST_ATTEST_QUOTE)"),
            ("extra", big_extra, "TPMS_ATTEST: field extraData at offset 13 declares 200 bytes, at most 66 allowed"),
            ("safe", bad_safe, "TPMS_ATTEST: field clockInfo.safe at offset 33 has unsupported value 0x0002"),
            ("bank", sha3_bank, "TPMS_ATTEST: field pcrSelect.hash at offset 46 has unsupported value 0x0027"),
        ];
        for (name, bytes, want) in cases {
            let err = TpmsAttest::decode(&bytes).unwrap_err();
            assert_eq!(err.to_string(), want, "{name}");
        }

        let mut k = rsa_ak().encode();
        k[0..2].copy_from_slice(&0x0008u16.to_be_bytes()); // TPM_ALG_KEYEDHASH
        assert_eq!(
            TpmtPublic::decode(&k).unwrap_err().to_string(),
            "TPMT_PUBLIC: field type at offset 0 has unsupported value 0x0008"
        );
        let mut k = rsa_ak().encode();
        k[16..18].copy_from_slice(&1024u16.to_be_bytes()); // keyBits
        assert!(matches!(
            TpmtPublic::decode(&k),
            Err(DecodeError::Invalid {
                field: "unique.rsa",
                ..
            })
        ));
        assert!(matches!(
            TpmtSignature::decode(&[0x00, 0x10]),
            Err(DecodeError::Unsupported {
                field: "sigAlg",
                value: 0x10,
                ..
            })
        ));
    }
}
