//! `constellation status`.

use std::path::Path;

use config::{Config, CONFIG_FILE};

use crate::args::StatusOutput;

pub fn run(ws: &Path, output: StatusOutput) -> anyhow::Result<()> {
    let mut st = cloudcmd::status::status(&crate::workspace(ws))?;
    // A fresh attestation of each node against the config (when there is a cluster and a
    // valid config): shows nodes that no longer match new expected measurements.
    if let (Some(s), Ok(cfg)) = (
        st.as_mut(),
        Config::load(&super::workspace_file(ws, CONFIG_FILE)),
    ) {
        let rt = super::runtime()?;
        if let Err(e) = rt.block_on(cloudcmd::status::attach_attestation(
            &crate::workspace(ws),
            &cfg,
            s,
        )) {
            tracing::debug!("attestation not checked: {e:#}");
        }
    }
    match output {
        StatusOutput::Json => {
            println!("{}", serde_json::to_string_pretty(&st)?);
            Ok(())
        }
        StatusOutput::Table => {
            let Some(st) = st else {
                println!("No cluster in this workspace.");
                return Ok(());
            };
            println!("Cluster:     {} (uid {})", st.name, st.uid);
            if st.state_file == "ok" {
                println!("Initialized: {}", if st.initialized { "yes" } else { "no" });
            } else {
                println!(
                    "State file:  {} {}",
                    cloudcmd::shown(cloudcmd::STATE_FILE),
                    st.state_file
                );
                println!(
                    "Initialized: {} (as the nodes report it)",
                    if st.initialized { "yes" } else { "no" }
                );
                if st.initialized {
                    println!("             restore the state file from a backup, or run `constellation state rebuild` (checks the nodes against your master secret)");
                }
            }
            if let Some(id) = &st.cluster_id {
                println!("Cluster ID:  {id}");
            }
            println!("Image:       {}", st.image);
            println!("Attestation: {}", st.variant);
            println!();
            println!("PCR15: cluster = holds this cluster's ID (a member), zero = in no cluster yet, other = another cluster's ID");
            let kube = st.nodes.iter().any(|n| n.kubernetes.is_some());
            let kube_head = if kube {
                format!("{:<11} ", "KUBERNETES")
            } else {
                String::new()
            };
            println!(
                "{:<18} {:<14} {:<15} {:<8} {:<17} {:<8} {:<11} {kube_head}DETAIL",
                "NODE", "ROLE", "ADDRESS", "RUNNING", "PHASE", "PCR15", "ATTESTATION"
            );
            for n in &st.nodes {
                let phase = n
                    .phase
                    .map(|p| {
                        serde_json::to_value(p)
                            .ok()
                            .and_then(|v| v.as_str().map(String::from))
                            .unwrap_or_default()
                    })
                    .unwrap_or_else(|| "-".into());
                let (att, att_detail) = match n.attestation.as_deref() {
                    None => ("-", None),
                    Some("verified") => ("verified", None),
                    Some(why) => ("FAILED", Some(why)),
                };
                let mut detail = match (&n.error, &n.admitted_by) {
                    (Some(e), _) => e.clone(),
                    (None, Some(by)) if n.services.is_empty() => format!("admitted by {by}"),
                    (None, Some(by)) => format!("admitted by {by}; runs {}", n.services.join(",")),
                    (None, None) => n.services.join(","),
                };
                if let Some(why) = att_detail {
                    detail = format!("attestation: {why}; {detail}");
                }
                let kube_col = if kube {
                    let (state, why) = match n.kubernetes.as_deref() {
                        None => ("-", None),
                        Some("Ready") if n.running => ("Ready", None),
                        Some(_) if !n.running => ("NotReady", Some("the node is not running")),
                        Some(other) => (
                            "NotReady",
                            Some(other.strip_prefix("NotReady: ").unwrap_or(other)),
                        ),
                    };
                    if let Some(why) = why {
                        detail = format!("kubernetes: {why}; {detail}");
                    }
                    format!("{state:<11} ")
                } else {
                    String::new()
                };
                println!(
                    "{:<18} {:<14} {:<15} {:<8} {:<17} {:<8} {:<11} {kube_col}{}",
                    n.name,
                    n.role,
                    n.address,
                    if n.running { "yes" } else { "no" },
                    phase,
                    n.pcr15_state,
                    att,
                    detail
                );
            }
            Ok(())
        }
    }
}
