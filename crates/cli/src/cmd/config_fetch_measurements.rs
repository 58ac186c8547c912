//! `constellation config fetch-measurements`: fetches the image's signed measurements, verifies
//! the signature, takes the entry for the config's provider and attestation variant, and merges
//! it into the config (by PCR index). On every failure the config file is left as it was.

use std::path::Path;

use anyhow::Context as _;
use config::{Config, ConfigError, RawConfig, CONFIG_FILE};
use measurements::image::{self, ImageRef, PublicKey};

use crate::args::FetchMeasurementsArgs;
use crate::error::with_hint;
use crate::fetch;

/// Where the Go system publishes image measurements.
const GO_CDN: &str = "https://cdn.confidential.cloud/constellation/v2/";

pub fn run(ws: &Path, args: &FetchMeasurementsArgs) -> anyhow::Result<()> {
    let path = super::workspace_file(ws, CONFIG_FILE);
    let path = path.as_path();
    let mut raw = RawConfig::load(path)?;
    let (provider, variant) = raw.selected().map_err(|v| {
        anyhow::Error::new(ConfigError::InFile {
            path: path.to_path_buf(),
            source: Box::new(ConfigError::Invalid(v)),
        })
    })?;
    // As in the Go CLI, a config whose account fields are not filled in yet may still get its
    // measurements; other problems are shown, not fatal.
    let was_valid = match Config::try_from(raw.clone()) {
        Ok(_) => true,
        Err(e) => {
            eprintln!(
                "Warning: {} is not complete yet: {e}",
                cloudcmd::shown(CONFIG_FILE)
            );
            false
        }
    };

    let image_ref = ImageRef::parse(&raw.image).context("the config's `image`")?;
    let url = match &args.url {
        Some(u) => u.clone(),
        None if provider == config::Provider::Local => {
            return Err(with_hint(
                anyhow::anyhow!("no measurements location for the local provider"),
                "pass -u with the URL or path of the node image's measurements.json",
            ))
        }
        None => format!("{GO_CDN}{}", image_ref.measurements_path()),
    };
    let sig_url = args
        .signature_url
        .clone()
        .unwrap_or_else(|| format!("{url}.sig"));

    let json =
        fetch::fetch(&url).with_context(|| format!("cannot fetch measurements from {url}"))?;
    let file = if args.insecure {
        eprintln!(
            "WARNING: --insecure: the signature of {url} is NOT checked. Whoever can change that \
             file now decides which nodes your cluster trusts. Never use this for a real cluster."
        );
        image::ImageMeasurements::parse(&json)
    } else {
        let key = match &args.key {
            Some(p) => {
                let pem = std::fs::read(p)
                    .with_context(|| format!("cannot read public key {}", p.display()))?;
                PublicKey::from_pem(&pem).with_context(|| format!("public key {}", p.display()))?
            }
            None => PublicKey::default_key(),
        };
        let sig = fetch::fetch(&sig_url)
            .with_context(|| format!("cannot fetch the signature from {sig_url}"))?;
        image::verify_and_parse(&key, &json, &sig)
    }
    .with_context(|| format!("measurements from {url}"))?;

    let selected = file
        .select(provider.csp_name(), variant.as_str())
        .with_context(|| format!("measurements from {url}"))?;
    file.ensure_image(&image_ref)
        .with_context(|| format!("measurements from {url}"))?;

    let count = selected.len();
    let Some(target) = raw.measurements_mut(variant) else {
        anyhow::bail!(
            "the config has no attestation.{} section",
            variant.config_key()
        );
    };
    target
        .merge_from(selected)
        .context("the fetched measurements do not fit the config's")?;
    if was_valid {
        // Keep a valid config valid (e.g. no placeholders left over).
        Config::try_from(raw.clone())
            .context("the config would not be valid with these measurements")?;
    }
    raw.replace(path)
        .with_context(|| format!("cannot write {}", cloudcmd::shown(CONFIG_FILE)))?;
    println!(
        "Wrote {count} measurements for {}/{} of image {} into {}.",
        provider.csp_name(),
        variant,
        image_ref,
        cloudcmd::shown(CONFIG_FILE)
    );
    Ok(())
}
