//! `constellation terminate`.

use std::io::IsTerminal as _;
use std::path::Path;

use anyhow::bail;

pub fn run(ws: &Path, yes: bool) -> anyhow::Result<()> {
    if !cloudcmd::has_cluster(&crate::workspace(ws)) {
        // Say so before asking anything.
        return Err(crate::error::with_hint(
            cloudcmd::NoCluster::new(&crate::workspace(ws).provider.records()),
            "check the workspace folder (-C DIR): terminate works where `apply` or `mini up` ran",
        ));
    }
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
    let ws2 = ws.to_path_buf();
    // When interrupted, the node being stopped is finished; a re-run stops the rest.
    let n = super::block_on(
        async move {
            tokio::task::spawn_blocking(move || {
                let mut p = super::progress_printer();
                cloudcmd::terminate(&crate::workspace(&ws2), &mut p)
            })
            .await?
        },
        "constellation terminate -y",
    )?;
    println!("Terminated {n} node(s).");
    Ok(())
}
