//! Edge fetcher for Intel's Provisioning Certification Service (PCS, API v4), with an on-disk
//! cache: the TDX collateral of a quote's platform (TCB info for its FMSPC, the TD QE identity,
//! the PCK CRL of its PCK CA and the root CA CRL, each with its issuer chain). The validators
//! stay pure: what is fetched here is assembled into a [`tdx::Collateral`] value.
//!
//! URLs (Intel SGX/TDX PCS API v4):
//! * `{base}/tdx/certification/v4/tcb?fmspc=FMSPC`: `{"tcbInfo":{..},"signature":"hex"}`,
//!   header `TCB-Info-Issuer-Chain`;
//! * `{base}/tdx/certification/v4/qe/identity`: `{"enclaveIdentity":{..},"signature":"hex"}`,
//!   header `SGX-Enclave-Identity-Issuer-Chain`;
//! * `{base}/sgx/certification/v4/pckcrl?ca=platform|processor&encoding=der`: the CRL (DER),
//!   header `SGX-PCK-CRL-Issuer-Chain`;
//! * `{base}/sgx/certification/v4/rootcacrl`: the root CA CRL (hex-encoded DER; DER and PEM
//!   are accepted too).
//!
//! Issuer chains come URL-encoded (PEM). The signed JSON (`tcbInfo`, `enclaveIdentity`) is
//! kept byte for byte: the signature covers exactly those bytes.
//!
//! Cache: one JSON file per item (`tcb-FMSPC`, `qe-identity`, `pckcrl-CA`, `rootcacrl`),
//! expiring at the item's own `nextUpdate`, judged at the verification time: a cached item is
//! used while that time is before its `nextUpdate`, else fetched again. The cache does not
//! depend on the PCS URL (a PCCS serves Intel's signed data too). Nothing fetched is trusted
//! here; the verifier checks signatures, chains and validity windows.

use std::path::{Path, PathBuf};

use attestation::tdx;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Intel's public PCS.
pub const PCS_URL: &str = "https://api.trustedservices.intel.com";

/// Largest issuer chain header accepted (a chain is two certificates, about 2 kB).
const MAX_CHAIN_LEN: usize = 64 * 1024;

/// The CA that issued a platform's PCK certificate, which selects the PCK CRL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PckCa {
    Platform,
    Processor,
}

impl PckCa {
    pub fn as_str(self) -> &'static str {
        match self {
            PckCa::Platform => "platform",
            PckCa::Processor => "processor",
        }
    }

    /// The CA named by the issuer of the quote's PCK certificate ("Intel SGX PCK Platform CA"
    /// or "Intel SGX PCK Processor CA").
    pub fn of_quote(quote: &tdx::Quote<'_>) -> Result<Self, PcsError> {
        use x509_parser::prelude::FromDer as _;
        let leaf = x509_parser::pem::Pem::iter_from_buffer(quote.pck_chain_pem)
            .next()
            .and_then(Result::ok)
            .ok_or_else(|| PcsError::Quote("no PEM certificate in the PCK chain".into()))?;
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&leaf.contents)
            .map_err(|e| PcsError::Quote(format!("PCK certificate does not parse: {e}")))?;
        let issuer = cert.issuer().to_string();
        if issuer.contains("Processor CA") {
            Ok(PckCa::Processor)
        } else if issuer.contains("Platform CA") {
            Ok(PckCa::Platform)
        } else {
            Err(PcsError::Quote(format!(
                "PCK certificate issuer {issuer:?} is neither the PCK Platform CA nor the \
                 PCK Processor CA"
            )))
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PcsError {
    #[error("the quote does not name its platform: {0}")]
    Quote(String),
    #[error(transparent)]
    Fetch(#[from] crate::fetch::FetchError),
    #[error("GET {url}: {what}")]
    Answer { url: String, what: String },
    #[error("cache {}: {what}", path.display())]
    Cache { path: PathBuf, what: String },
}

/// One cached collateral item.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Item {
    url: String,
    /// Unix seconds; the item is used while the verification time is before it.
    next_update: i64,
    /// Signed JSON (TCB info, QE identity) as served, or a CRL as hex DER.
    data: String,
    /// Hex signature over `data` (JSON items; empty for CRLs).
    signature: String,
    issuer_chain: String,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    /// JSON `{"<field>": {...}, "signature": "hex"}`.
    Signed(&'static str),
    Crl,
}

#[derive(Debug, Clone)]
pub struct Pcs {
    base: String,
    cache: PathBuf,
}

impl Pcs {
    pub fn new(base: &str, cache: &Path) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            cache: cache.to_path_buf(),
        }
    }

    /// The default cache folder: `$XDG_CACHE_HOME/constellation/pcs` or
    /// `~/.cache/constellation/pcs`.
    pub fn default_cache() -> PathBuf {
        std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(std::env::temp_dir)
            .join("constellation/pcs")
    }

    /// The collateral of the platform `fmspc` whose PCK certificate `ca` issued, for a
    /// verification at `now` (Unix seconds): each item from the cache while `now` is before its
    /// `nextUpdate`, otherwise fetched (and cached).
    pub fn collateral(
        &self,
        fmspc: [u8; 6],
        ca: PckCa,
        now: i64,
    ) -> Result<tdx::Collateral, PcsError> {
        let fmspc = hex::encode_upper(fmspc);
        let tcb = self.item(
            &format!("tcb-{fmspc}"),
            &format!("tdx/certification/v4/tcb?fmspc={fmspc}"),
            Kind::Signed("tcbInfo"),
            Some("TCB-Info-Issuer-Chain"),
            now,
        )?;
        let qe = self.item(
            "qe-identity",
            "tdx/certification/v4/qe/identity",
            Kind::Signed("enclaveIdentity"),
            Some("SGX-Enclave-Identity-Issuer-Chain"),
            now,
        )?;
        let pck_crl = self.item(
            &format!("pckcrl-{}", ca.as_str()),
            &format!(
                "sgx/certification/v4/pckcrl?ca={}&encoding=der",
                ca.as_str()
            ),
            Kind::Crl,
            Some("SGX-PCK-CRL-Issuer-Chain"),
            now,
        )?;
        let root_crl = self.item(
            "rootcacrl",
            "sgx/certification/v4/rootcacrl",
            Kind::Crl,
            None,
            now,
        )?;
        let unhex = |item: &Item, what: &str, v: &str| {
            hex::decode(v).map_err(|e| PcsError::Answer {
                url: item.url.clone(),
                what: format!("{what} is not hex: {e}"),
            })
        };
        Ok(tdx::Collateral {
            pck_crl_issuer_chain: pck_crl.issuer_chain.clone(),
            root_ca_crl: unhex(&root_crl, "data", &root_crl.data)?,
            pck_crl: unhex(&pck_crl, "data", &pck_crl.data)?,
            tcb_info_issuer_chain: tcb.issuer_chain.clone(),
            tcb_info: tcb.data.clone(),
            tcb_info_signature: unhex(&tcb, "signature", &tcb.signature)?,
            qe_identity_issuer_chain: qe.issuer_chain.clone(),
            qe_identity: qe.data.clone(),
            qe_identity_signature: unhex(&qe, "signature", &qe.signature)?,
        })
    }

    fn item(
        &self,
        name: &str,
        path: &str,
        kind: Kind,
        chain_header: Option<&str>,
        now: i64,
    ) -> Result<Item, PcsError> {
        let file = self.cache.join(format!("{name}.json"));
        let url = format!("{}/{path}", self.base);
        if let Some(item) = std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice::<Item>(&b).ok())
        {
            if now < item.next_update {
                tracing::debug!(name, "PCS cache hit");
                return Ok(item);
            }
            tracing::debug!(
                name,
                next_update = item.next_update,
                now,
                "PCS cache expired"
            );
        }
        let names: Vec<&str> = chain_header.into_iter().collect();
        let (body, headers) = crate::fetch::fetch_url_with_headers(&url, &names)?;
        let item = parse_answer(
            &url,
            &body,
            headers.first().cloned().flatten(),
            kind,
            chain_header,
        )?;
        let cache_err = |what: String| PcsError::Cache {
            path: file.clone(),
            what,
        };
        std::fs::create_dir_all(&self.cache).map_err(|e| cache_err(e.to_string()))?;
        let tmp = file.with_extension(format!("tmp{}", std::process::id()));
        let json = serde_json::to_vec_pretty(&item).map_err(|e| cache_err(e.to_string()))?;
        std::fs::write(&tmp, json).map_err(|e| cache_err(e.to_string()))?;
        std::fs::rename(&tmp, &file).map_err(|e| cache_err(e.to_string()))?;
        Ok(item)
    }
}

/// Checks the form of one PCS answer and turns it into a cache item (no trust decision).
fn parse_answer(
    url: &str,
    body: &[u8],
    chain: Option<String>,
    kind: Kind,
    chain_header: Option<&str>,
) -> Result<Item, PcsError> {
    let bad = |what: String| PcsError::Answer {
        url: url.to_string(),
        what,
    };
    let mut item = match kind {
        Kind::Signed(field) => {
            let shape = || format!("not the JSON {{\"{field}\": {{..}}, \"signature\": \"hex\"}}");
            let map: std::collections::BTreeMap<String, &RawValue> =
                serde_json::from_slice(body).map_err(|e| bad(format!("{}: {e}", shape())))?;
            let (Some(signed), Some(sig)) = (map.get(field), map.get("signature")) else {
                return Err(bad(shape()));
            };
            let signature: String = serde_json::from_str(sig.get())
                .map_err(|e| bad(format!("signature is not a string: {e}")))?;
            if hex::decode(&signature).is_err() {
                return Err(bad(format!("signature {signature:?} is not hex")));
            }
            let data = signed.get().to_string();
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct Dates {
                next_update: String,
            }
            let d: Dates = serde_json::from_str(&data)
                .map_err(|e| bad(format!("{field} has no nextUpdate: {e}")))?;
            let next_update = tdx::parse_rfc3339(&d.next_update).ok_or_else(|| {
                bad(format!(
                    "{field}.nextUpdate {:?} is not an RFC 3339 time",
                    d.next_update
                ))
            })?;
            Item {
                url: url.to_string(),
                next_update,
                data,
                signature,
                issuer_chain: String::new(),
            }
        }
        Kind::Crl => {
            let der = crl_der(body).ok_or_else(|| {
                bad(format!(
                    "not a CRL (DER, hex DER or PEM; {} bytes starting {:?})",
                    body.len(),
                    String::from_utf8_lossy(&body[..body.len().min(16)])
                ))
            })?;
            let (_, crl) = x509_parser::parse_x509_crl(&der)
                .map_err(|e| bad(format!("CRL does not parse: {e}")))?;
            // Without nextUpdate the CRL is fetched again each time.
            let next_update = crl.next_update().map_or(i64::MIN, |t| t.timestamp());
            Item {
                url: url.to_string(),
                next_update,
                data: hex::encode(&der),
                signature: String::new(),
                issuer_chain: String::new(),
            }
        }
    };
    item.issuer_chain = match (chain_header, chain) {
        (None, _) => String::new(),
        (Some(h), None) => return Err(bad(format!("no {h} header"))),
        (Some(h), Some(v)) => {
            if v.len() > MAX_CHAIN_LEN {
                return Err(bad(format!("{h} header is {} bytes", v.len())));
            }
            let pem = url_decode(&v).ok_or_else(|| bad(format!("{h} is not URL-encoded text")))?;
            if !pem.contains("-----BEGIN CERTIFICATE-----") {
                return Err(bad(format!("{h} holds no PEM certificate")));
            }
            pem
        }
    };
    Ok(item)
}

/// A CRL body as DER: DER itself, hex text of DER, or PEM.
fn crl_der(body: &[u8]) -> Option<Vec<u8>> {
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
fn url_decode(s: &str) -> Option<String> {
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
        let chain = "-----BEGIN%20CERTIFICATE-----%0Ax".to_string();
        let it = parse_answer(
            "u",
            body,
            Some(chain),
            Kind::Signed("tcbInfo"),
            Some("TCB-Info-Issuer-Chain"),
        )
        .unwrap();
        assert_eq!(
            it.data,
            r#"{"b":1, "nextUpdate":"2025-07-19T10:16:03Z","a":[ 1,2 ]}"#
        );
        assert_eq!(it.next_update, 1_752_920_163);
        assert_eq!(it.issuer_chain, "-----BEGIN CERTIFICATE-----\nx");
        let e = parse_answer(
            "http://pcs/x",
            body,
            None,
            Kind::Signed("tcbInfo"),
            Some("TCB-Info-Issuer-Chain"),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(e, "GET http://pcs/x: no TCB-Info-Issuer-Chain header");
        let e = parse_answer("http://pcs/x", b"<html>", None, Kind::Crl, None)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("GET http://pcs/x: not a CRL"), "{e}");
    }
}
