//! `constellation apply`, `create`, `init`: the lifecycle phases (logic in crate `cloudcmd`).

use std::io::IsTerminal as _;
use std::path::Path;

use config::{Config, CONFIG_FILE};

use crate::args::{ApplyArgs, Phase};

/// `apply` with `--skip-phases` and `-y`.
pub fn run_apply(ws: &Path, a: &ApplyArgs) -> anyhow::Result<()> {
    let mut o = cloudcmd::apply::ApplyOptions {
        assume_yes: a.yes,
        ..Default::default()
    };
    for p in &a.skip_phases {
        match p {
            Phase::Infrastructure => o.skip_infrastructure = true,
            Phase::Init => o.skip_init = true,
            Phase::Attestationconfig => o.skip_attestation_config = true,
            // Phases of the Go CLI with nothing to do in this build.
            Phase::Certsans | Phase::Helm | Phase::Image | Phase::K8s => {}
        }
    }
    run(ws, o, a.merge_kubeconfig, "constellation apply")
}

/// Asks on the terminal; `apply` passes this only when stdin is one.
fn ask(question: &str) -> bool {
    eprint!("{question} [y/N] ");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).is_ok() && matches!(line.trim(), "y" | "Y" | "yes")
}

pub fn run(
    ws: &Path,
    mut opts: cloudcmd::apply::ApplyOptions,
    merge_kubeconfig: bool,
    rerun: &str,
) -> anyhow::Result<()> {
    let cfg = Config::load(&super::workspace_file(ws, CONFIG_FILE))?;
    if !opts.assume_yes && std::io::stdin().is_terminal() {
        opts.confirm = Some(ask);
    }
    opts.cancel = Some(crate::interrupt::flag());
    let mut p = super::progress_printer();
    let mut out = super::block_on(
        cloudcmd::apply::apply(&crate::workspace(ws), &cfg, &opts, &mut p),
        rerun,
    )?;
    // With Kubernetes, done means every node Ready in the API (kubectl works right away).
    if out.cluster_id.is_some() && cloudcmd::runs_kubernetes(ws) {
        let t = std::time::Instant::now();
        let names: Vec<String> = crate::workspace(ws)
            .provider
            .view()?
            .map(|c| c.nodes.into_iter().map(|n| n.info.name).collect())
            .unwrap_or_default();
        crate::kube_api::wait_ready(
            &ws.join(cloudcmd::ADMIN_CONF_FILE),
            &names,
            std::time::Duration::from_secs(180),
            &mut |m| cloudcmd::Progress::step(&mut p, m),
        )?;
        out.timings
            .push(("kubernetes nodes Ready".into(), t.elapsed()));
    }
    for (phase, d) in &out.timings {
        eprintln!("{phase}: {:.2} s", d.as_secs_f64());
    }
    if let Some(change) = &out.attestation_config {
        println!(
            "Expected measurements updated ({} PCR(s) changed).",
            change.diff.len()
        );
        for (node, why) in &change.not_matching {
            println!(
                "Warning: {node} no longer matches the expected measurements: {}",
                cloudcmd::sanitize(why)
            );
        }
    }
    if !out.removed.is_empty() {
        println!("Removed nodes: {}", out.removed.join(", "));
    }
    if let Some(id) = out.cluster_id {
        println!("Your Constellation cluster is initialized.");
        println!("Cluster ID:  {id}");
        println!("Endpoint:    {}", out.endpoint);
        println!(
            "Nodes:       {}/{} attested and joined",
            out.members, out.nodes
        );
        let admin = cloudcmd::shown(cloudcmd::ADMIN_CONF_FILE);
        if cloudcmd::runs_kubernetes(ws) {
            println!("Kubernetes:  kubectl --kubeconfig {admin} get nodes");
            println!(
                "Owner credentials (cluster state): {}",
                cloudcmd::shown(cloudcmd::OWNER_CONF_FILE)
            );
            if merge_kubeconfig {
                let target = crate::kubeconfig::default_path()?;
                crate::kubeconfig::merge(&ws.join(cloudcmd::ADMIN_CONF_FILE), &target)?;
                println!(
                    "Merged into {} (its current context is this cluster).",
                    target.display()
                );
            }
        } else {
            println!(
                "Admin credentials: {admin} (cluster CA and admin client certificate; the mode without Kubernetes)"
            );
        }
        println!("Note: a software TPM proves the integrity of what was measured, not confidentiality from this host.");
    } else {
        println!(
            "Infrastructure ready at {}; run `constellation apply` to initialize.",
            out.endpoint
        );
    }
    Ok(())
}
