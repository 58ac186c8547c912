//! Intel PCS (API v4) answers, sans I/O: the form of each answer that makes up TDX collateral
//! ([`Collateral`](super::Collateral)), for an edge fetcher to check before it caches or uses
//! an answer. No trust decision is made here: [`verify`](super::verify) checks signatures,
//! chains and validity windows.
//!
//! * TCB info (`/tdx/certification/v4/tcb?fmspc=`): `{"tcbInfo":{..},"signature":"hex"}`,
//!   header `TCB-Info-Issuer-Chain`;
//! * QE identity (`/tdx/certification/v4/qe/identity`):
//!   `{"enclaveIdentity":{..},"signature":"hex"}`, header `SGX-Enclave-Identity-Issuer-Chain`;
//! * PCK CRL (`/sgx/certification/v4/pckcrl?ca=..&encoding=der`): DER, header
//!   `SGX-PCK-CRL-Issuer-Chain`;
//! * root CA CRL (`/sgx/certification/v4/rootcacrl`): hex-encoded DER (DER and PEM accepted).
//!
//! Issuer chains come URL-encoded (PEM). The signed JSON is kept byte for byte: the signature
//! covers exactly those bytes.

use serde::Deserialize;
use serde_json::value::RawValue;

/// Largest issuer chain header accepted (a chain is two certificates, about 2 kB).
pub const MAX_CHAIN_LEN: usize = 64 * 1024;

/// Which PCS answer a body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PcsAnswer {
    TcbInfo,
    QeIdentity,
    PckCrl,
    RootCaCrl,
}

impl PcsAnswer {
    /// The response header carrying the issuer chain, if any.
    pub fn chain_header(self) -> Option<&'static str> {
        match self {
            PcsAnswer::TcbInfo => Some("TCB-Info-Issuer-Chain"),
            PcsAnswer::QeIdentity => Some("SGX-Enclave-Identity-Issuer-Chain"),
            PcsAnswer::PckCrl => Some("SGX-PCK-CRL-Issuer-Chain"),
            PcsAnswer::RootCaCrl => None,
        }
    }
}

/// One collateral item from a PCS answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcsItem {
    /// Unix seconds: the item's `nextUpdate` (`i64::MIN` for a CRL without one).
    pub next_update: i64,
    /// The signed JSON as served (TCB info, QE identity), or the CRL as hex DER.
    pub data: String,
    /// Hex signature over `data` (JSON items; empty for CRLs).
    pub signature: String,
    /// PEM issuer chain (empty for the root CA CRL).
    pub issuer_chain: String,
}

/// Checks the form of the PCS answer `kind` (`body` and the value of its issuer chain header,
/// as received) and returns the item; the error says what is wrong.
pub fn parse_answer(kind: PcsAnswer, body: &[u8], chain: Option<&str>) -> Result<PcsItem, String> {
    let chain_header = kind.chain_header();
    let mut item = match kind {
        PcsAnswer::TcbInfo | PcsAnswer::QeIdentity => {
            let field = if kind == PcsAnswer::TcbInfo {
                "tcbInfo"
            } else {
                "enclaveIdentity"
            };
            let shape = || format!("not the JSON {{\"{field}\": {{..}}, \"signature\": \"hex\"}}");
            let map: std::collections::BTreeMap<String, &RawValue> =
                serde_json::from_slice(body).map_err(|e| format!("{}: {e}", shape()))?;
            let (Some(signed), Some(sig)) = (map.get(field), map.get("signature")) else {
                return Err(shape());
            };
            let signature: String = serde_json::from_str(sig.get())
                .map_err(|e| format!("signature is not a string: {e}"))?;
            if hex::decode(&signature).is_err() {
                return Err(format!("signature {signature:?} is not hex"));
            }
            let data = signed.get().to_string();
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct Dates {
                next_update: String,
            }
            let d: Dates = serde_json::from_str(&data)
                .map_err(|e| format!("{field} has no nextUpdate: {e}"))?;
            let next_update = super::parse_rfc3339(&d.next_update).ok_or_else(|| {
                format!(
                    "{field}.nextUpdate {:?} is not an RFC 3339 time",
                    d.next_update
                )
            })?;
            PcsItem {
                next_update,
                data,
                signature,
                issuer_chain: String::new(),
            }
        }
        PcsAnswer::PckCrl | PcsAnswer::RootCaCrl => {
            let der = crl_der(body).ok_or_else(|| {
                format!(
                    "not a CRL (DER, hex DER or PEM; {} bytes starting {:?})",
                    body.len(),
                    String::from_utf8_lossy(&body[..body.len().min(16)])
                )
            })?;
            let (_, crl) = x509_parser::parse_x509_crl(&der)
                .map_err(|e| format!("CRL does not parse: {e}"))?;
            // Without nextUpdate the CRL is fetched again each time.
            let next_update = crl.next_update().map_or(i64::MIN, |t| t.timestamp());
            PcsItem {
                next_update,
                data: hex::encode(&der),
                signature: String::new(),
                issuer_chain: String::new(),
            }
        }
    };
    item.issuer_chain = match (chain_header, chain) {
        (None, _) => String::new(),
        (Some(h), None) => return Err(format!("no {h} header")),
        (Some(h), Some(v)) => {
            if v.len() > MAX_CHAIN_LEN {
                return Err(format!("{h} header is {} bytes", v.len()));
            }
            let pem = url_decode(v).ok_or_else(|| format!("{h} is not URL-encoded text"))?;
            if !pem.contains("-----BEGIN CERTIFICATE-----") {
                return Err(format!("{h} holds no PEM certificate"));
            }
            pem
        }
    };
    Ok(item)
}

/// A CRL body as DER: DER itself, hex text of DER, or PEM.
pub fn crl_der(body: &[u8]) -> Option<Vec<u8>> {
    if body.first() == Some(&0x30) {
        return Some(body.to_vec());
    }
    let text = std::str::from_utf8(body).ok()?.trim();
    if text.starts_with("-----BEGIN") {
        return x509_parser::pem::Pem::iter_from_buffer(text.as_bytes())
            .next()
            .and_then(Result::ok)
            .map(|p| p.contents);
    }
    hex::decode(text).ok().filter(|d| d.first() == Some(&0x30))
}

/// Decodes `%XX` escapes and `+` (a space, as in query strings and Go's `QueryUnescape`).
pub fn url_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let h = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(h, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_decoding() {
        assert_eq!(
            url_decode("-----BEGIN%20CERTIFICATE-----%0AMII%2B%2F+x").as_deref(),
            Some("-----BEGIN CERTIFICATE-----\nMII+/ x")
        );
        assert_eq!(url_decode("%4"), None);
        assert_eq!(url_decode("%zz"), None);
        assert_eq!(url_decode("%ff"), None, "not UTF-8");
    }

    #[test]
    fn signed_json_is_kept_byte_for_byte() {
        let body = br#"{"tcbInfo":{"b":1, "nextUpdate":"2025-07-19T10:16:03Z","a":[ 1,2 ]},"signature":"0a0B"}"#;
        let chain = "-----BEGIN%20CERTIFICATE-----%0Ax";
        let it = parse_answer(PcsAnswer::TcbInfo, body, Some(chain)).unwrap();
        assert_eq!(
            it.data,
            r#"{"b":1, "nextUpdate":"2025-07-19T10:16:03Z","a":[ 1,2 ]}"#
        );
        assert_eq!(it.next_update, 1_752_920_163);
        assert_eq!(it.issuer_chain, "-----BEGIN CERTIFICATE-----\nx");
        let e = parse_answer(PcsAnswer::TcbInfo, body, None).unwrap_err();
        assert_eq!(e, "no TCB-Info-Issuer-Chain header");
        let e = parse_answer(PcsAnswer::QeIdentity, body, Some(chain)).unwrap_err();
        assert!(e.starts_with("not the JSON {\"enclaveIdentity\""), "{e}");
        let e = parse_answer(PcsAnswer::RootCaCrl, b"<html>", None).unwrap_err();
        assert!(e.starts_with("not a CRL"), "{e}");
        let e = parse_answer(
            PcsAnswer::TcbInfo,
            br#"{"tcbInfo":{},"signature":"zz"}"#,
            Some(chain),
        )
        .unwrap_err();
        assert_eq!(e, "signature \"zz\" is not hex");
    }
}
