//! `constellation recover` (logic in `cloudcmd::recover`).

use std::path::Path;

use cloudcmd::recover::RecoverOptions;
use config::{Config, CONFIG_FILE};

use crate::args::RecoverArgs;

pub fn run(ws: &Path, a: &RecoverArgs) -> anyhow::Result<()> {
    let cfg = Config::load(&super::workspace_file(ws, CONFIG_FILE))?;
    let opts = RecoverOptions {
        endpoint: a.endpoint.clone(),
        ..Default::default()
    };
    let mut p = super::progress_printer();
    let out = super::block_on(
        cloudcmd::recover::recover(&crate::workspace(ws), &cfg, &opts, &mut p),
        "constellation recover",
    )?;
    match out.recovered() {
        0 => println!("No control-plane nodes in need of recovery found."),
        n => println!("Recovered {n} control-plane node(s)."),
    }
    println!("Nodes: {}/{} cluster members", out.members, out.total);
    Ok(())
}
