//! `constellation apply`, `create`, `init`: the lifecycle phases (logic in crate `cloudcmd`).

use std::path::Path;

use anyhow::bail;
use config::{Config, CONFIG_FILE};

use crate::args::ApplyArgs;

/// `apply` with `--skip-phases`.
pub fn run_apply(ws: &Path, a: &ApplyArgs) -> anyhow::Result<()> {
    let mut o = cloudcmd::apply::ApplyOptions::default();
    for p in &a.skip_phases {
        match p.to_ascii_lowercase().as_str() {
            "infrastructure" => o.skip_infrastructure = true,
            "init" => o.skip_init = true,
            "attestationconfig" | "certsans" | "helm" | "image" | "k8s" => {}
            other => {
                bail!("unknown phase {other:?} in --skip-phases (phases: infrastructure, init)")
            }
        }
    }
    run(ws, o)
}

pub fn run(ws: &Path, opts: cloudcmd::apply::ApplyOptions) -> anyhow::Result<()> {
    let cfg = Config::load(&super::workspace_file(ws, CONFIG_FILE))?;
    let rt = super::runtime()?;
    let mut p = super::progress_printer();
    let out = rt.block_on(cloudcmd::apply::apply(ws, &cfg, &opts, &mut p))?;
    for (phase, d) in &out.timings {
        eprintln!("{phase}: {:.2} s", d.as_secs_f64());
    }
    if let Some(id) = out.cluster_id {
        println!("Your Constellation cluster is initialized.");
        println!("Cluster ID:  {id}");
        println!("Endpoint:    {}", out.endpoint);
        println!(
            "Nodes:       {}/{} attested and joined",
            out.members, out.nodes
        );
        println!(
            "Admin credentials: {} (cluster CA and admin client certificate; no Kubernetes on the local provider)",
            cloudcmd::ADMIN_CONF_FILE
        );
        println!("Note: a software TPM proves the integrity of what was measured, not confidentiality from this host.");
    } else {
        println!(
            "Infrastructure ready at {}; run `constellation apply` to initialize.",
            out.endpoint
        );
    }
    Ok(())
}
