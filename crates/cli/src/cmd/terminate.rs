//! `constellation terminate`.

use std::io::IsTerminal as _;
use std::path::Path;

use anyhow::bail;

pub fn run(ws: &Path, yes: bool) -> anyhow::Result<()> {
    if !yes {
        if !std::io::stdin().is_terminal() {
            bail!("refusing to terminate without confirmation: pass -y/--yes");
        }
        eprint!("Terminate the cluster in this workspace? All nodes and their state are deleted. [y/N] ");
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        if !matches!(line.trim(), "y" | "Y" | "yes") {
            bail!("aborted");
        }
    }
    let mut p = super::progress_printer();
    let n = cloudcmd::terminate(ws, &mut p)?;
    println!("Terminated {n} node(s).");
    Ok(())
}
