//! Edge fetcher for AMD's Key Distribution Service (KDS), with an on-disk cache: the VCEK of a
//! chip at a TCB and the ASK/ASVK + ARK chain of a product. The validators stay pure: what is
//! fetched here is handed to them as certificates (collateral).
//!
//! URLs (AMD KDS interface specification 57230): `{base}/vcek/v1/{product}/{hwid}?blSPL=..&
//! teeSPL=..&snpSPL=..&ucodeSPL=..` (Turin: 8-byte hwID and `fmcSPL`), DER;
//! `{base}/{vcek|vlek}/v1/{product}/cert_chain`, PEM (ASK/ASVK then ARK). A cached answer is
//! used as is: certificates are immutable, and the verifier checks them anyway.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use attestation::snp::{self, AmdCert, Product, Report, SigningKey, Tcb};
use sha2::{Digest, Sha256};

/// AMD's public KDS.
pub const KDS_URL: &str = "https://kdsintf.amd.com";

#[derive(Debug, Clone)]
pub struct Kds {
    base: String,
    cache: PathBuf,
}

impl Kds {
    pub fn new(base: &str, cache: &Path) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            cache: cache.to_path_buf(),
        }
    }

    /// The default cache folder: `$XDG_CACHE_HOME/constellation/kds` or
    /// `~/.cache/constellation/kds`.
    pub fn default_cache() -> PathBuf {
        std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(std::env::temp_dir)
            .join("constellation/kds")
    }

    pub fn vcek_path(product: Product, chip_id: &[u8; 64], tcb: &Tcb) -> String {
        let hwid: &[u8] = if product == Product::Turin {
            &chip_id[..8]
        } else {
            chip_id
        };
        let mut q = format!(
            "vcek/v1/{product}/{}?blSPL={}&teeSPL={}&snpSPL={}&ucodeSPL={}",
            hex::encode(hwid),
            tcb.bootloader,
            tcb.tee,
            tcb.snp,
            tcb.microcode
        );
        if let Some(fmc) = tcb.fmc {
            q.push_str(&format!("&fmcSPL={fmc}"));
        }
        q
    }

    pub fn chain_path(product: Product, key: SigningKey) -> String {
        let kind = if key == SigningKey::Vlek {
            "vlek"
        } else {
            "vcek"
        };
        format!("{kind}/v1/{product}/cert_chain")
    }

    /// `path` from the cache, or fetched and cached.
    pub fn get(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        let file = self
            .cache
            .join(hex::encode(Sha256::digest(path.as_bytes())));
        if let Ok(b) = std::fs::read(&file) {
            tracing::debug!(path, "KDS cache hit");
            return Ok(b);
        }
        let url = format!("{}/{path}", self.base);
        let body = crate::fetch::fetch(&url).with_context(|| format!("fetching {url}"))?;
        std::fs::create_dir_all(&self.cache)
            .with_context(|| format!("creating {}", self.cache.display()))?;
        let tmp = file.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, &body).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &file).with_context(|| format!("writing {}", file.display()))?;
        Ok(body)
    }

    /// The certificates `report` needs that `have` lacks: the VCEK (VCEK-signed reports) and
    /// the ASK/ASVK + ARK chain. The product comes from the report's CPUID (v3+); for v2
    /// reports each product is tried in turn. Fetch failures are returned as warnings.
    pub fn missing_certs(&self, report: &Report, have: &[AmdCert]) -> (Vec<AmdCert>, Vec<String>) {
        let key = report.signing_key().unwrap_or(SigningKey::Vcek);
        let products = match report.cpuid_product() {
            Some(p) => vec![p],
            None => Product::ALL.to_vec(),
        };
        let mut warnings = Vec::new();
        for product in products {
            let mut got = Vec::new();
            let has_leaf = have
                .iter()
                .any(|c| matches!(c.role, snp::Role::Vcek | snp::Role::Vlek));
            if key == SigningKey::Vcek && !has_leaf {
                let tcb = Tcb::decode(report.reported_tcb, product);
                match self
                    .get(&Self::vcek_path(product, &report.chip_id, &tcb))
                    .and_then(|b| snp::parse_certs(&b).map_err(|r| anyhow::anyhow!("{r}")))
                {
                    Ok(c) => got.extend(c),
                    Err(e) => {
                        warnings.push(format!("{product} VCEK: {e:#}"));
                        continue;
                    }
                }
            }
            let has_inter = have
                .iter()
                .any(|c| matches!(c.role, snp::Role::Ask(p) | snp::Role::Asvk(p) if p == product));
            if !has_inter {
                match self
                    .get(&Self::chain_path(product, key))
                    .and_then(|b| snp::parse_certs(&b).map_err(|r| anyhow::anyhow!("{r}")))
                {
                    Ok(c) => got.extend(c),
                    Err(e) => warnings.push(format!("{product} chain: {e:#}")),
                }
            }
            return (got, warnings);
        }
        (Vec::new(), warnings)
    }
}
