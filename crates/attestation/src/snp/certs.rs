//! AMD certificates: the VCEK/VLEK (leaf, ECDSA P-384 key), the ASK/ASVK (intermediate) and
//! the ARK (root), all signed with RSASSA-PSS (SHA-384, MGF1-SHA-384, salt 48).
//!
//! Certificates are classified by their subject common name: `SEV-VCEK`, `SEV-VLEK`,
//! `SEV-<Product>` (ASK), `SEV-VLEK-<Product>` (ASVK), `ARK-<Product>`. VCEK/VLEK extensions
//! under `1.3.6.1.4.1.3704.1`: `.2` product name (IA5String, e.g. `Milan-B0`), `.3.1` bl,
//! `.3.2` tee, `.3.3` snp, `.3.8` ucode, `.3.9` fmc (Turin) SPLs (DER INTEGERs), `.4` hwID
//! (chip ID; raw bytes or an OCTET STRING).

use ring::signature::{self, UnparsedPublicKey};
use x509_parser::der_parser::ber::BerObjectContent;
use x509_parser::der_parser::der::parse_der;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::report::Tcb;
use super::Product;

const OID_RSASSA_PSS: &str = "1.2.840.113549.1.1.10";
const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_SECP384R1: &str = "1.3.132.0.34";
const EXT_PRODUCT_NAME: &str = "1.3.6.1.4.1.3704.1.2";
const EXT_BL: &str = "1.3.6.1.4.1.3704.1.3.1";
const EXT_TEE: &str = "1.3.6.1.4.1.3704.1.3.2";
const EXT_SNP: &str = "1.3.6.1.4.1.3704.1.3.3";
const EXT_UCODE: &str = "1.3.6.1.4.1.3704.1.3.8";
const EXT_FMC: &str = "1.3.6.1.4.1.3704.1.3.9";
const EXT_HWID: &str = "1.3.6.1.4.1.3704.1.4";

/// What role an AMD certificate plays, from its subject CN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Vcek,
    Vlek,
    Ask(Product),
    Asvk(Product),
    Ark(Product),
}

impl Role {
    pub fn from_common_name(cn: &str) -> Option<Role> {
        match cn {
            "SEV-VCEK" => return Some(Role::Vcek),
            "SEV-VLEK" => return Some(Role::Vlek),
            _ => {}
        }
        if let Some(p) = cn.strip_prefix("SEV-VLEK-") {
            return Product::from_name(p).map(Role::Asvk);
        }
        if let Some(p) = cn.strip_prefix("ARK-") {
            return Product::from_name(p).map(Role::Ark);
        }
        cn.strip_prefix("SEV-")
            .and_then(Product::from_name)
            .map(Role::Ask)
    }

    pub fn name(self) -> String {
        match self {
            Role::Vcek => "VCEK".into(),
            Role::Vlek => "VLEK".into(),
            Role::Ask(p) => format!("ASK ({p})"),
            Role::Asvk(p) => format!("ASVK ({p})"),
            Role::Ark(p) => format!("ARK ({p})"),
        }
    }
}

/// A parsed AMD certificate (owning its DER).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmdCert {
    pub der: Vec<u8>,
    pub role: Role,
    pub subject_cn: String,
    pub issuer_cn: String,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// The subject public key bits (RSA: PKCS#1 `RSAPublicKey`; EC: uncompressed point).
    pub public_key: Vec<u8>,
    pub key_is_p384: bool,
    pub signature_is_pss: bool,
    tbs: Vec<u8>,
    signature: Vec<u8>,
    /// Leaf extensions.
    pub product_name: Option<String>,
    pub spl: Spl,
    pub hwid: Option<Vec<u8>>,
}

/// The SPL (security patch level) extensions of a VCEK/VLEK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Spl {
    pub bl: Option<u8>,
    pub tee: Option<u8>,
    pub snp: Option<u8>,
    pub ucode: Option<u8>,
    pub fmc: Option<u8>,
}

impl Spl {
    /// The TCB the certificate was issued for, if the four common SPLs are present.
    pub fn tcb(&self) -> Option<Tcb> {
        Some(Tcb {
            fmc: self.fmc,
            bootloader: self.bl?,
            tee: self.tee?,
            snp: self.snp?,
            microcode: self.ucode?,
        })
    }
}

/// Why a certificate could not be read (the `certificate-format` check).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("certificate {what}: {reason}")]
pub struct CertError {
    pub what: String,
    pub reason: String,
}

fn common_name(name: &x509_parser::x509::X509Name<'_>) -> String {
    name.iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// A DER INTEGER extension value that fits a byte (`02 01 5d`, also `02 02 00 d9`).
fn spl_value(value: &[u8]) -> Result<u8, String> {
    let (rest, obj) = parse_der(value).map_err(|e| format!("not DER: {e}"))?;
    if !rest.is_empty() {
        return Err(format!("{} trailing bytes", rest.len()));
    }
    let n = obj
        .as_u64()
        .map_err(|e| format!("not an unsigned INTEGER: {e}"))?;
    u8::try_from(n).map_err(|_| format!("{n} does not fit a byte"))
}

/// `(header length, content length)` of the DER TLV at the start of `b` (definite lengths up
/// to 4 bytes).
fn tlv(b: &[u8]) -> Option<(usize, usize)> {
    let first = *b.get(1)?;
    if first < 0x80 {
        return Some((2, usize::from(first)));
    }
    let n = usize::from(first & 0x7F);
    if n == 0 || n > 4 {
        return None;
    }
    let len = b
        .get(2..2 + n)?
        .iter()
        .fold(0usize, |acc, &x| (acc << 8) | usize::from(x));
    Some((2 + n, len))
}

/// The whole TLV at the start of `b` and the rest.
fn split_tlv(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let (h, l) = tlv(b)?;
    let end = h.checked_add(l)?;
    (end <= b.len()).then(|| b.split_at(end))
}

/// RFC 5280 §4.1.1.2: the outer `signatureAlgorithm` must equal the signed
/// `tbsCertificate.signature`, byte for byte (a lenient parser would otherwise accept a changed
/// tag or parameters outside the signed bytes).
fn same_signature_algorithm_bytes(der: &[u8]) -> bool {
    let inner = || -> Option<bool> {
        let (h, _) = tlv(der)?;
        let (tbs, rest) = split_tlv(der.get(h..)?)?;
        let (outer_alg, _) = split_tlv(rest)?;
        let (th, _) = tlv(tbs)?;
        let mut fields = tbs.get(th..)?;
        if fields.first() == Some(&0xA0) {
            fields = split_tlv(fields)?.1; // version
        }
        let fields = split_tlv(fields)?.1; // serial number
        let (inner_alg, _) = split_tlv(fields)?;
        Some(inner_alg == outer_alg && outer_alg.first() == Some(&0x30))
    };
    inner().unwrap_or(false)
}

impl AmdCert {
    /// Parses one DER certificate; its CN must name an AMD role.
    pub fn from_der(der: &[u8]) -> Result<Self, CertError> {
        let err = |reason: String| CertError {
            what: "(unparsed)".into(),
            reason,
        };
        let (rest, cert) =
            X509Certificate::from_der(der).map_err(|e| err(format!("not X.509 DER: {e}")))?;
        if !rest.is_empty() {
            return Err(err(format!("{} bytes after the certificate", rest.len())));
        }
        let subject_cn = common_name(cert.subject());
        let role = Role::from_common_name(&subject_cn).ok_or_else(|| CertError {
            what: format!("{subject_cn:?}"),
            reason: "subject CN is not an AMD SEV certificate (SEV-VCEK, SEV-VLEK, SEV-<product>, SEV-VLEK-<product>, ARK-<product>)".into(),
        })?;
        let what = role.name();
        let err = |reason: String| CertError {
            what: what.clone(),
            reason,
        };
        let spki = cert.public_key();
        let key_alg = spki.algorithm.algorithm.to_id_string();
        let key_is_p384 = key_alg == OID_EC_PUBLIC_KEY
            && spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string())
                .as_deref()
                == Some(OID_SECP384R1);
        let mut c = AmdCert {
            der: der.to_vec(),
            role,
            issuer_cn: common_name(cert.issuer()),
            subject_cn,
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            public_key: spki.subject_public_key.data.to_vec(),
            key_is_p384,
            // RFC 5280: the outer algorithm must equal the signed one (else its parameters
            // could change unnoticed).
            signature_is_pss: cert.signature_algorithm.algorithm.to_id_string() == OID_RSASSA_PSS
                && same_signature_algorithm_bytes(der)
                && cert.signature_value.unused_bits == 0,
            tbs: cert.tbs_certificate.as_ref().to_vec(),
            signature: cert.signature_value.data.to_vec(),
            product_name: None,
            spl: Spl::default(),
            hwid: None,
        };
        if matches!(role, Role::Vcek | Role::Vlek) {
            for ext in cert.extensions() {
                let value = ext.value;
                let oid = ext.oid.to_id_string();
                let slot = match oid.as_str() {
                    EXT_BL => Some(&mut c.spl.bl),
                    EXT_TEE => Some(&mut c.spl.tee),
                    EXT_SNP => Some(&mut c.spl.snp),
                    EXT_UCODE => Some(&mut c.spl.ucode),
                    EXT_FMC => Some(&mut c.spl.fmc),
                    _ => None,
                };
                if let Some(slot) = slot {
                    *slot =
                        Some(spl_value(value).map_err(|e| err(format!("extension {oid}: {e}")))?);
                    continue;
                }
                match oid.as_str() {
                    EXT_PRODUCT_NAME => {
                        let name = match parse_der(value) {
                            Ok(([], obj)) => match obj.content {
                                BerObjectContent::IA5String(s)
                                | BerObjectContent::UTF8String(s)
                                | BerObjectContent::PrintableString(s) => s.to_string(),
                                _ => return Err(err("product name is not a string".into())),
                            },
                            _ => return Err(err("product name is not DER".into())),
                        };
                        c.product_name = Some(name);
                    }
                    EXT_HWID => {
                        let id = match parse_der(value) {
                            Ok(([], obj)) => match obj.content {
                                BerObjectContent::OctetString(s) => s.to_vec(),
                                _ => value.to_vec(),
                            },
                            _ => value.to_vec(),
                        };
                        c.hwid = Some(id);
                    }
                    _ => {}
                }
            }
        }
        Ok(c)
    }

    /// Parses PEM text with one or more certificates, or a single DER certificate.
    pub fn parse_many(bytes: &[u8]) -> Result<Vec<AmdCert>, CertError> {
        if bytes.starts_with(&[0x30]) {
            return Ok(vec![AmdCert::from_der(bytes)?]);
        }
        let mut out = Vec::new();
        for pem in x509_parser::pem::Pem::iter_from_buffer(bytes) {
            let pem = pem.map_err(|e| CertError {
                what: "(PEM)".into(),
                reason: e.to_string(),
            })?;
            if pem.label == "CERTIFICATE" {
                out.push(AmdCert::from_der(&pem.contents)?);
            }
        }
        if out.is_empty() {
            return Err(CertError {
                what: "(PEM)".into(),
                reason: "no CERTIFICATE block".into(),
            });
        }
        Ok(out)
    }

    /// The product this certificate belongs to, if its CN or product name says.
    pub fn product(&self) -> Option<Product> {
        match self.role {
            Role::Ask(p) | Role::Asvk(p) | Role::Ark(p) => Some(p),
            Role::Vcek | Role::Vlek => self
                .product_name
                .as_deref()
                .and_then(|n| Product::from_name(n.split('-').next().unwrap_or_default())),
        }
    }

    /// Verifies this certificate's RSASSA-PSS SHA-384 signature with `issuer_key`
    /// (PKCS#1 `RSAPublicKey` DER).
    pub fn verify_signed_by(&self, issuer_key: &[u8]) -> Result<(), String> {
        if !self.signature_is_pss {
            return Err("signature algorithm is not RSASSA-PSS".into());
        }
        UnparsedPublicKey::new(&signature::RSA_PSS_2048_8192_SHA384, issuer_key)
            .verify(&self.tbs, &self.signature)
            .map_err(|_| "RSASSA-PSS SHA-384 signature does not verify".into())
    }

    /// The validity window check at `now` (Unix seconds).
    pub fn valid_at(&self, now: i64) -> bool {
        self.not_before <= now && now <= self.not_after
    }
}
