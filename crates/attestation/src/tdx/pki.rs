//! Intel's ECDSA P-256 PKI: certificate chains to the pinned Intel SGX Root CA, CRLs, and the
//! SGX extension of PCK certificates (FMSPC, PCE ID, TCB components, PCE SVN).

use ring::signature::{self, UnparsedPublicKey};
use x509_parser::oid_registry::OID_SIG_ECDSA_WITH_SHA256;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

use super::der;
use super::{fmt_unix, Chain, TdxError};

/// A certificate chain that verified: leaf first, root last (DER, owned).
#[derive(Debug, Clone)]
pub(crate) struct VerifiedChain {
    pub(crate) ders: Vec<Vec<u8>>,
}

impl VerifiedChain {
    pub(crate) fn cert(&self, i: usize) -> Result<X509Certificate<'_>, TdxError> {
        let der = self
            .ders
            .get(i)
            .ok_or_else(|| TdxError::Quote(format!("no certificate #{i}")))?;
        X509Certificate::from_der(der)
            .map(|(_, c)| c)
            .map_err(|e| TdxError::Quote(format!("certificate #{i}: {e}")))
    }
}

fn position(i: usize, len: usize) -> String {
    match i {
        0 => "leaf".into(),
        i if i + 1 == len => "root".into(),
        i => format!("intermediate #{i}"),
    }
}

/// ECDSA P-256 SHA-256 over `msg`, signature DER-encoded (X.509, CRLs).
fn ecdsa_asn1_ok(key: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, key)
        .verify(msg, sig)
        .is_ok()
}

/// ECDSA P-256 SHA-256 with a raw r‖s signature (quotes, QE reports, collateral JSON).
pub(crate) fn ecdsa_fixed_ok(key: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, key)
        .verify(msg, sig)
        .is_ok()
}

/// The uncompressed P-256 point (65 B) of a certificate's key.
pub(crate) fn ec_key<'c>(cert: &'c X509Certificate<'_>) -> &'c [u8] {
    cert.public_key().subject_public_key.data.as_ref()
}

/// Verifies `ders` (leaf first) at `now`: each certificate parses without trailing bytes, is
/// valid at `now`, names the next one as issuer, is signed by it (ecdsa-with-SHA256), every
/// issuer is a CA, the last signs itself, and its key is `root_key`.
pub(crate) fn verify_chain(
    chain: Chain,
    ders: Vec<Vec<u8>>,
    root_key: &[u8],
    now: i64,
) -> Result<VerifiedChain, TdxError> {
    let fail = |reason: String| TdxError::Chain { chain, reason };
    let mut certs = Vec::with_capacity(ders.len());
    for (i, d) in ders.iter().enumerate() {
        let (rest, c) = X509Certificate::from_der(d).map_err(|e| {
            fail(format!(
                "{} certificate does not parse: {e}",
                position(i, ders.len())
            ))
        })?;
        if !rest.is_empty() {
            return Err(fail(format!(
                "{} certificate has {} trailing bytes",
                position(i, ders.len()),
                rest.len()
            )));
        }
        certs.push(c);
    }
    if certs.len() < 2 {
        return Err(fail(format!(
            "{} certificates, need at least 2",
            certs.len()
        )));
    }
    let n = certs.len();
    for (i, cert) in certs.iter().enumerate() {
        let w = position(i, n);
        let issuer = certs.get(i + 1).unwrap_or(cert);
        if cert.issuer().as_raw() != issuer.subject().as_raw() {
            return Err(fail(format!(
                "{w} certificate ({}) names issuer {}, but the next certificate is {}",
                cert.subject(),
                cert.issuer(),
                issuer.subject()
            )));
        }
        if !matches!(issuer.basic_constraints(), Ok(Some(bc)) if bc.value.ca) {
            return Err(fail(format!("issuer {} is not a CA", issuer.subject())));
        }
        let (tbs, sig) =
            der::signed_parts(&ders[i]).map_err(|e| fail(format!("{w} certificate: {e}")))?;
        if cert.signature_algorithm.algorithm != OID_SIG_ECDSA_WITH_SHA256
            || cert.tbs_certificate.signature.algorithm != OID_SIG_ECDSA_WITH_SHA256
        {
            return Err(fail(format!(
                "{w} certificate is signed with {}, not ecdsa-with-SHA256",
                cert.signature_algorithm.algorithm.to_id_string()
            )));
        }
        if !ecdsa_asn1_ok(ec_key(issuer), tbs, sig) {
            return Err(fail(format!(
                "{w} certificate's signature does not verify with the key of {}",
                issuer.subject()
            )));
        }
        let (nb, na) = (
            cert.validity().not_before.timestamp(),
            cert.validity().not_after.timestamp(),
        );
        if now < nb || now > na {
            return Err(TdxError::Expired {
                what: format!("{chain} {w} certificate ({})", cert.subject()),
                now: fmt_unix(now),
                not_before: fmt_unix(nb),
                not_after: fmt_unix(na),
            });
        }
    }
    let root = ec_key(&certs[n - 1]);
    if root != root_key {
        return Err(TdxError::UntrustedRoot {
            chain,
            expected: hex::encode(root_key),
            actual: hex::encode(root),
        });
    }
    drop(certs);
    Ok(VerifiedChain { ders })
}

/// A CRL whose signature, issuer and validity window were checked; holds revoked serials.
#[derive(Debug, Clone)]
pub(crate) struct Crl {
    pub(crate) name: &'static str,
    revoked: Vec<Vec<u8>>,
}

impl Crl {
    /// Verifies `der` as a CRL issued by `issuer` (subject name and key) valid at `now`.
    pub(crate) fn verify(
        name: &'static str,
        der: &[u8],
        issuer_subject: &[u8],
        issuer_key: &[u8],
        now: i64,
    ) -> Result<Self, TdxError> {
        let fail = |reason: String| TdxError::Crl { crl: name, reason };
        let (tbs, sig) = der::signed_parts(der).map_err(fail)?;
        let (rest, crl) = CertificateRevocationList::from_der(der)
            .map_err(|e| fail(format!("does not parse: {e}")))?;
        if !rest.is_empty() {
            return Err(fail(format!("{} trailing bytes", rest.len())));
        }
        if crl.signature_algorithm.algorithm != OID_SIG_ECDSA_WITH_SHA256
            || crl.tbs_cert_list.signature.algorithm != OID_SIG_ECDSA_WITH_SHA256
        {
            return Err(fail(format!(
                "signed with {}, not ecdsa-with-SHA256",
                crl.signature_algorithm.algorithm.to_id_string()
            )));
        }
        if crl.issuer().as_raw() != issuer_subject {
            return Err(fail(format!(
                "issued by {}, not by the certificate's issuer",
                crl.issuer()
            )));
        }
        if !ecdsa_asn1_ok(issuer_key, tbs, sig) {
            return Err(fail(
                "signature does not verify with the issuer's key".into(),
            ));
        }
        let this = crl.last_update().timestamp();
        let next = crl
            .next_update()
            .ok_or_else(|| fail("has no nextUpdate".into()))?
            .timestamp();
        if now < this || now > next {
            return Err(TdxError::Expired {
                what: name.to_string(),
                now: fmt_unix(now),
                not_before: fmt_unix(this),
                not_after: fmt_unix(next),
            });
        }
        let revoked = crl
            .iter_revoked_certificates()
            .map(|r| strip_zeros(r.raw_serial()).to_vec())
            .collect();
        Ok(Self { name, revoked })
    }

    /// Refuses `cert` if its serial number is listed.
    pub(crate) fn check(&self, what: &str, cert: &X509Certificate<'_>) -> Result<(), TdxError> {
        let serial = strip_zeros(cert.raw_serial());
        if self.revoked.iter().any(|r| r == serial) {
            return Err(TdxError::Revoked {
                cert: format!("{what} ({})", cert.subject()),
                serial: hex::encode(serial),
                crl: self.name,
            });
        }
        Ok(())
    }
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[first..]
}

/// What the PCK certificate's SGX extension (OID 1.2.840.113741.1.13.1) says about the platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PckExtension {
    /// The 16 SGX TCB component SVNs (`.2.1` … `.2.16`).
    pub sgx_tcb_components: [u8; 16],
    /// PCE SVN (`.2.17`).
    pub pce_svn: u16,
    /// CPU SVN (`.2.18`).
    pub cpu_svn: [u8; 16],
    /// PCE ID (`.3`).
    pub pce_id: [u8; 2],
    /// FMSPC (`.4`): family-model-stepping-platform-customSKU, selects the TCB info.
    pub fmspc: [u8; 6],
}

/// `1.2.840.113741.1.13.1` as DER OID content.
const SGX_EXT_OID: [u8; 9] = [0x2A, 0x86, 0x48, 0x86, 0xF8, 0x4D, 0x01, 0x0D, 0x01];

fn octets<const N: usize>(t: &der::Tlv<'_>, what: &str) -> Result<[u8; N], String> {
    if t.tag != der::TAG_OCTET_STRING || t.value.len() != N {
        return Err(format!(
            "{what}: expected a {N}-byte OCTET STRING, got tag {:#04x} with {} bytes",
            t.tag,
            t.value.len()
        ));
    }
    let mut out = [0u8; N];
    out.copy_from_slice(t.value);
    Ok(out)
}

impl PckExtension {
    /// Reads the SGX extension of a PCK certificate.
    pub fn from_cert(cert: &X509Certificate<'_>) -> Result<Self, TdxError> {
        let fail = |reason: String| TdxError::Chain {
            chain: Chain::Pck,
            reason: format!("PCK certificate SGX extension: {reason}"),
        };
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid.as_bytes() == SGX_EXT_OID)
            .ok_or_else(|| fail("missing".into()))?;
        Self::parse(ext.value).map_err(fail)
    }

    /// Parses the extension value (a SEQUENCE of `SEQUENCE {OID, value}`).
    pub fn parse(value: &[u8]) -> Result<Self, String> {
        let (seq, rest) = der::expect(value, der::TAG_SEQUENCE, "extension")?;
        if !rest.is_empty() {
            return Err(format!("{} trailing bytes", rest.len()));
        }
        let (mut comps, mut pce_svn, mut cpu_svn, mut pce_id, mut fmspc) =
            ([None::<u8>; 16], None, None, None, None);
        for entry in der::elements(seq.value)? {
            let (oid, val) = pair(&entry)?;
            let Some(arc) = oid.strip_prefix(&SGX_EXT_OID[..]) else {
                continue;
            };
            match arc {
                [2] => {
                    let (tcb, _) = der::expect(val.raw, der::TAG_SEQUENCE, "TCB")?;
                    for c in der::elements(tcb.value)? {
                        let (oid, v) = pair(&c)?;
                        match oid.strip_prefix(&SGX_EXT_OID[..]) {
                            Some([2, n @ 1..=16]) => {
                                let svn = der::uint(&v, "TCB component")?;
                                comps[usize::from(*n) - 1] = Some(
                                    u8::try_from(svn)
                                        .map_err(|_| format!("TCB component {n} = {svn} > 255"))?,
                                );
                            }
                            Some([2, 17]) => {
                                let svn = der::uint(&v, "PCESVN")?;
                                pce_svn = Some(
                                    u16::try_from(svn)
                                        .map_err(|_| format!("PCESVN {svn} > 65535"))?,
                                );
                            }
                            Some([2, 18]) => cpu_svn = Some(octets::<16>(&v, "CPUSVN")?),
                            _ => {}
                        }
                    }
                }
                [3] => pce_id = Some(octets::<2>(&val, "PCE-ID")?),
                [4] => fmspc = Some(octets::<6>(&val, "FMSPC")?),
                _ => {}
            }
        }
        let mut sgx_tcb_components = [0u8; 16];
        for (i, c) in comps.iter().enumerate() {
            sgx_tcb_components[i] = c.ok_or_else(|| format!("TCB component {} missing", i + 1))?;
        }
        Ok(Self {
            sgx_tcb_components,
            pce_svn: pce_svn.ok_or("PCESVN missing")?,
            cpu_svn: cpu_svn.ok_or("CPUSVN missing")?,
            pce_id: pce_id.ok_or("PCE-ID missing")?,
            fmspc: fmspc.ok_or("FMSPC missing")?,
        })
    }
}

/// `SEQUENCE { OID, value }` → (OID content, value element).
fn pair<'a>(entry: &der::Tlv<'a>) -> Result<(&'a [u8], der::Tlv<'a>), String> {
    if entry.tag != der::TAG_SEQUENCE {
        return Err(format!("entry tag {:#04x} is not a SEQUENCE", entry.tag));
    }
    let (oid, rest) = der::expect(entry.value, der::TAG_OID, "entry OID")?;
    let (val, rest) = der::tlv(rest)?;
    if !rest.is_empty() {
        return Err("entry has more than OID and value".into());
    }
    Ok((oid.value, val))
}
