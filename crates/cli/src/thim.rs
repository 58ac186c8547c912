//! Edge fetcher for Azure's Trusted Hardware Identity Management (THIM) service, with an
//! on-disk cache: the VCEK of the Azure SEV-SNP CVM it runs on and the ASK + ARK chain. The
//! validators stay pure: what is fetched here is handed to them as certificates.
//!
//! THIM answers on the instance metadata address only, from inside the CVM:
//! `GET http://169.254.169.254/metadata/THIM/amd/certification` with `Metadata: true`,
//! JSON `{"vcekCert": PEM, "certificateChain": PEM (ASK, ARK), "tcbm": hex, "cacheControl": ..}`.
//! The VCEK is that of the host at its current TCB, so the cache is keyed by the report's
//! `reported_tcb` (and the URL): a report at another TCB fetches again. Certificates are
//! immutable and checked by the verifier (chain to the pinned ARK, TCB extensions ==
//! `reported_tcb`), so a cached answer is used as is.

use std::path::{Path, PathBuf};

use attestation::snp::{self, AmdCert};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Azure's instance metadata THIM endpoint (reachable only inside an Azure VM).
pub const THIM_URL: &str = "http://169.254.169.254/metadata/THIM/amd/certification";

#[derive(Debug, thiserror::Error)]
pub enum ThimError {
    #[error(transparent)]
    Fetch(#[from] crate::fetch::FetchError),
    #[error("GET {url}: {what}")]
    Answer { url: String, what: String },
    #[error("cache {}: {what}", path.display())]
    Cache { path: PathBuf, what: String },
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    vcek_cert: String,
    certificate_chain: String,
}

/// The certificates of a THIM answer (VCEK, ASK, ARK); the error says what is wrong.
pub fn parse_answer(body: &[u8]) -> Result<Vec<AmdCert>, String> {
    let a: Answer = serde_json::from_slice(body)
        .map_err(|e| format!("not the THIM JSON {{\"vcekCert\", \"certificateChain\"}}: {e}"))?;
    let mut certs =
        snp::parse_certs(a.vcek_cert.as_bytes()).map_err(|r| format!("vcekCert: {}", r.actual))?;
    certs.extend(
        snp::parse_certs(a.certificate_chain.as_bytes())
            .map_err(|r| format!("certificateChain: {}", r.actual))?,
    );
    if !certs.iter().any(|c| c.role == snp::Role::Vcek) {
        return Err("vcekCert holds no VCEK".into());
    }
    Ok(certs)
}

#[derive(Debug, Clone)]
pub struct Thim {
    url: String,
    cache: PathBuf,
}

impl Thim {
    pub fn new(url: &str, cache: &Path) -> Self {
        Self {
            url: url.to_string(),
            cache: cache.to_path_buf(),
        }
    }

    /// The default cache folder: `$XDG_CACHE_HOME/constellation/thim` or
    /// `~/.cache/constellation/thim`.
    pub fn default_cache() -> PathBuf {
        std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(std::env::temp_dir)
            .join("constellation/thim")
    }

    /// VCEK, ASK and ARK for a report at `reported_tcb`: cached, or fetched and cached.
    pub fn certs(&self, reported_tcb: u64) -> Result<Vec<AmdCert>, ThimError> {
        let key = hex::encode(Sha256::digest(self.url.as_bytes()));
        let file = self
            .cache
            .join(format!("thim-{}-{reported_tcb:016x}.json", &key[..16]));
        if let Some(certs) = std::fs::read(&file)
            .ok()
            .and_then(|b| parse_answer(&b).ok())
        {
            tracing::debug!(file = %file.display(), "THIM cache hit");
            return Ok(certs);
        }
        let (body, _) =
            crate::fetch::fetch_url_with_headers(&self.url, &[("Metadata", "true")], &[])?;
        let certs = parse_answer(&body).map_err(|what| ThimError::Answer {
            url: self.url.clone(),
            what,
        })?;
        let cache_err = |what: String| ThimError::Cache {
            path: file.clone(),
            what,
        };
        std::fs::create_dir_all(&self.cache).map_err(|e| cache_err(e.to_string()))?;
        let tmp = file.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, &body).map_err(|e| cache_err(e.to_string()))?;
        std::fs::rename(&tmp, &file).map_err(|e| cache_err(e.to_string()))?;
        Ok(certs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_without_a_vcek_are_refused() {
        assert!(parse_answer(b"<html>")
            .unwrap_err()
            .starts_with("not the THIM JSON"));
        let e = parse_answer(br#"{"vcekCert":"","certificateChain":""}"#).unwrap_err();
        assert!(e.starts_with("vcekCert: "), "{e}");
    }
}
