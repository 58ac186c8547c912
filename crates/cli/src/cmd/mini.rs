//! `constellation mini up` / `mini down`: a local cluster in one command.

use std::path::Path;

use anyhow::Context as _;
use config::{secret::MASTER_SECRET_FILE, CONFIG_FILE};

use crate::args::GenerateArgs;

pub fn up(ws: &Path) -> anyhow::Result<()> {
    if !ws.join(CONFIG_FILE).exists() {
        super::config_generate::run(
            ws,
            &GenerateArgs {
                provider: "local".into(),
                attestation: None,
                kubernetes: None,
                tags: vec![],
            },
        )?;
    }
    super::apply::run(ws, Default::default())
}

pub fn down(ws: &Path, yes: bool) -> anyhow::Result<()> {
    super::terminate::run(ws, yes)?;
    match std::fs::remove_file(ws.join(MASTER_SECRET_FILE)) {
        Ok(()) => eprintln!("removed {MASTER_SECRET_FILE}"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).context("removing the master secret"),
    }
    Ok(())
}
