//! `constellation mini up` / `mini down`: a local cluster in one command.

use std::path::Path;

use anyhow::Context as _;
use config::{secret::MASTER_SECRET_FILE, CONFIG_FILE};

use crate::args::GenerateArgs;

pub fn up(ws: &Path, merge_kubeconfig: bool) -> anyhow::Result<()> {
    if !ws.join(CONFIG_FILE).exists() {
        let args = GenerateArgs {
            provider: "local".into(),
            attestation: None,
            kubernetes: None,
            tags: vec![],
        };
        super::config_generate::run_with(ws, &args, pick_free_addresses)?;
    }
    super::apply::run(
        ws,
        Default::default(),
        merge_kubeconfig,
        "constellation mini up",
    )
}

/// A new local config gets the first loopback range where every node port is free, so that
/// `mini up` works next to another cluster (or another program) on the default range.
fn pick_free_addresses(raw: &mut config::RawConfig) -> anyhow::Result<()> {
    let count: u32 = raw.node_groups.values().map(|g| g.initial_count).sum();
    let Some(local) = raw.provider.local.as_mut() else {
        return Ok(());
    };
    let preferred = local.base_address;
    let base = provider_local::infra::free_base_address(preferred, count).with_context(|| {
        format!("no free loopback range for {count} nodes from {preferred} on: stop other clusters (`constellation terminate`) or set provider.local.baseAddress")
    })?;
    if base != preferred {
        eprintln!("Addresses from {preferred} are in use; this cluster uses {base} (provider.local.baseAddress).");
        local.base_address = base;
    }
    Ok(())
}

pub fn down(ws: &Path, yes: bool) -> anyhow::Result<()> {
    super::terminate::run(ws, yes)?;
    match std::fs::remove_file(ws.join(MASTER_SECRET_FILE)) {
        Ok(()) => eprintln!("removed {}", cloudcmd::shown(MASTER_SECRET_FILE)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).context("removing the master secret"),
    }
    Ok(())
}
