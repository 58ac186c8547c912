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
//! The form of each answer is checked by the pure [`tdx::pcs::parse_answer`] (issuer chains
//! URL-decoded, the signed JSON kept byte for byte) before it is cached.
//!
//! Cache: one JSON file per item (`tcb-FMSPC`, `qe-identity`, `pckcrl-CA`, `rootcacrl`),
//! expiring at the item's own `nextUpdate`, judged at the verification time: a cached item is
//! used while that time is before its `nextUpdate`, else fetched again. The cache does not
//! depend on the PCS URL (a PCCS serves Intel's signed data too). Nothing fetched is trusted
//! here; the verifier checks signatures, chains and validity windows.

use std::path::{Path, PathBuf};

use attestation::tdx;
use attestation::tdx::pcs::PcsAnswer;
use serde::{Deserialize, Serialize};

/// Intel's public PCS.
pub const PCS_URL: &str = "https://api.trustedservices.intel.com";

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
            PcsAnswer::TcbInfo,
            now,
        )?;
        let qe = self.item(
            "qe-identity",
            "tdx/certification/v4/qe/identity",
            PcsAnswer::QeIdentity,
            now,
        )?;
        let pck_crl = self.item(
            &format!("pckcrl-{}", ca.as_str()),
            &format!(
                "sgx/certification/v4/pckcrl?ca={}&encoding=der",
                ca.as_str()
            ),
            PcsAnswer::PckCrl,
            now,
        )?;
        let root_crl = self.item(
            "rootcacrl",
            "sgx/certification/v4/rootcacrl",
            PcsAnswer::RootCaCrl,
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

    fn item(&self, name: &str, path: &str, kind: PcsAnswer, now: i64) -> Result<Item, PcsError> {
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
        let names: Vec<&str> = kind.chain_header().into_iter().collect();
        let (body, headers) = crate::fetch::fetch_url_with_headers(&url, &[], &names)?;
        let chain = headers.first().and_then(Option::as_deref);
        let item = parse_answer(&url, &body, chain, kind)?;
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

/// [`tdx::pcs::parse_answer`] with the URL in its error.
fn parse_answer(
    url: &str,
    body: &[u8],
    chain: Option<&str>,
    kind: PcsAnswer,
) -> Result<Item, PcsError> {
    let it = tdx::pcs::parse_answer(kind, body, chain).map_err(|what| PcsError::Answer {
        url: url.to_string(),
        what,
    })?;
    Ok(Item {
        url: url.to_string(),
        next_update: it.next_update,
        data: it.data,
        signature: it.signature,
        issuer_chain: it.issuer_chain,
    })
}

/// Intel PCS as the collateral source of the TDX validators (`document` with `--fetch`), at a
/// fixed verification time.
#[derive(Debug, Clone)]
pub struct PcsSource {
    pub pcs: Pcs,
    /// Unix seconds, judges the cache.
    pub now: i64,
}

impl tdx::CollateralSource for PcsSource {
    /// Without the quote: the PCK CRL of the platform CA.
    fn collateral(&self, fmspc: [u8; 6]) -> Result<tdx::Collateral, String> {
        self.pcs
            .collateral(fmspc, PckCa::Platform, self.now)
            .map_err(|e| e.to_string())
    }

    fn collateral_for_quote(
        &self,
        quote: &tdx::Quote<'_>,
        fmspc: [u8; 6],
    ) -> Result<tdx::Collateral, String> {
        let ca = PckCa::of_quote(quote).map_err(|e| e.to_string())?;
        self.pcs
            .collateral(fmspc, ca, self.now)
            .map_err(|e| e.to_string())
    }
}
