//! `constellation state rebuild` (logic in `cloudcmd::state_rebuild`).

use std::path::Path;

use config::{Config, CONFIG_FILE};

use crate::args::StateRebuildArgs;

pub fn rebuild(ws: &Path, a: &StateRebuildArgs) -> anyhow::Result<()> {
    let cfg = Config::load(&super::workspace_file(ws, CONFIG_FILE))?;
    let mut p = super::progress_printer();
    let out = super::block_on(
        cloudcmd::state_rebuild::rebuild(&crate::workspace(ws), &cfg, a.force, &mut p),
        "constellation state rebuild",
    )?;
    if let Some(copy) = &out.damaged_copy {
        println!("The damaged state file was kept as {copy}.");
    }
    println!(
        "Rebuilt {} for cluster ID {} ({} node(s) verified).",
        cloudcmd::shown(cloudcmd::STATE_FILE),
        out.cluster_id,
        out.nodes_verified
    );
    Ok(())
}
