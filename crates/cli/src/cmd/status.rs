//! `constellation status`.

use std::path::Path;

use anyhow::bail;

pub fn run(ws: &Path, output: &str) -> anyhow::Result<()> {
    let st = cloudcmd::status::status(ws)?;
    match output {
        "json" => {
            println!("{}", serde_json::to_string_pretty(&st)?);
            Ok(())
        }
        "table" => {
            let Some(st) = st else {
                println!("No cluster in this workspace.");
                return Ok(());
            };
            println!("Cluster:     {} (uid {})", st.name, st.uid);
            println!("Initialized: {}", if st.initialized { "yes" } else { "no" });
            if let Some(id) = &st.cluster_id {
                println!("Cluster ID:  {id}");
            }
            println!("Image:       {}", st.image);
            println!("Attestation: {}", st.variant);
            println!();
            println!("PCR15: cluster = holds this cluster's ID (a member), zero = in no cluster yet, other = another cluster's ID");
            println!(
                "{:<18} {:<14} {:<15} {:<8} {:<17} {:<8} DETAIL",
                "NODE", "ROLE", "ADDRESS", "RUNNING", "PHASE", "PCR15"
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
                let detail = match (&n.error, &n.admitted_by) {
                    (Some(e), _) => e.clone(),
                    (None, Some(by)) if n.services.is_empty() => format!("admitted by {by}"),
                    (None, Some(by)) => format!("admitted by {by}; runs {}", n.services.join(",")),
                    (None, None) => n.services.join(","),
                };
                println!(
                    "{:<18} {:<14} {:<15} {:<8} {:<17} {:<8} {}",
                    n.name,
                    n.role,
                    n.address,
                    if n.running { "yes" } else { "no" },
                    phase,
                    n.pcr15_state,
                    detail
                );
            }
            Ok(())
        }
        other => bail!("unknown output format {other:?} (table, json)"),
    }
}
