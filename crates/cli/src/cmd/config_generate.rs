//! `constellation config generate <provider>`: writes `constellation-conf.yaml` with defaults.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use attestation::Variant;
use config::{Config, ConfigError, Provider, CONFIG_FILE};

use crate::args::GenerateArgs;
use crate::error::with_hint;

/// Parses `-t` values (`key=value`).
pub fn parse_tags(tags: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for t in tags {
        let (k, v) = t.split_once('=').ok_or_else(|| {
            with_hint(
                anyhow::anyhow!("tag {t:?} is not key=value"),
                "write tags as -t key=value (repeat -t or separate with commas)",
            )
        })?;
        if k.trim().is_empty() {
            anyhow::bail!("tag {t:?} has an empty key");
        }
        if out.insert(k.to_string(), v.to_string()).is_some() {
            anyhow::bail!("tag key {k:?} is given twice");
        }
    }
    Ok(out)
}

pub fn run(ws: &Path, args: &GenerateArgs) -> anyhow::Result<()> {
    run_with(ws, args, |_| Ok(()))
}

/// Generates the config, lets `adjust` change it (`mini up` picks a free address range), and
/// writes it.
pub fn run_with(
    ws: &Path,
    args: &GenerateArgs,
    adjust: impl FnOnce(&mut config::RawConfig) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let provider: Provider = args.provider.parse()?;
    let variant = match &args.attestation {
        None => None,
        Some(a) => Some(a.parse::<Variant>().map_err(|e| {
            let allowed: Vec<_> = provider
                .selectable_variants()
                .iter()
                .map(|v| v.as_str())
                .collect();
            with_hint(e, format!("for {provider} use: {}", allowed.join(", ")))
        })?),
    };
    let tags = parse_tags(&args.tags)?;
    let measurements = match provider {
        Provider::Local => Some(crate::image::local_default_measurements(
            variant.unwrap_or(provider.default_variant()),
        )?),
        _ => None,
    };
    let mut raw = Config::generate(
        provider,
        variant,
        args.kubernetes.as_deref(),
        tags,
        measurements,
    )?;
    adjust(&mut raw)?;
    let path = super::workspace_file(ws, CONFIG_FILE);
    raw.write_new(&path)
        .with_context(|| format!("cannot write {}", cloudcmd::shown(CONFIG_FILE)))?;
    println!("Config file written to {}.", cloudcmd::shown(CONFIG_FILE));

    // Tell the user what is left to fill in (clouds: account fields; some variants: values).
    if let Err(ConfigError::Invalid(vs)) = Config::try_from(raw) {
        println!("Before `apply`, fill in:");
        for v in &vs.0 {
            println!("  - {}: {}", v.path, v.message);
        }
        if vs.0.iter().any(|v| v.message.contains("placeholder")) {
            println!("Measurements: run `constellation config fetch-measurements`.");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        let ok = parse_tags(&["a=1".into(), "b=x=y".into(), "c=".into()]).unwrap();
        assert_eq!(ok.get("b").map(String::as_str), Some("x=y"));
        assert_eq!(ok.get("c").map(String::as_str), Some(""));
        for bad in [
            vec!["a".to_string()],
            vec!["=1".into()],
            vec!["a=1".into(), "a=2".into()],
        ] {
            assert!(parse_tags(&bad).is_err(), "{bad:?}");
        }
    }
}
