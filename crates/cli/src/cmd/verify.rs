//! `constellation verify` (logic in `cloudcmd::verify`).

use std::path::Path;

use anyhow::bail;
use cloudcmd::verify::{NodeVerification, VerifyOptions, VerifyReport};
use config::{Config, CONFIG_FILE};

use crate::args::{VerifyArgs, VerifyOutput};

pub fn run(ws: &Path, a: &VerifyArgs) -> anyhow::Result<()> {
    let output = a.output;
    let cfg = Config::load(&super::workspace_file(ws, CONFIG_FILE))?;
    let opts = VerifyOptions {
        node_endpoint: a.node_endpoint.clone(),
        cluster_id: a.cluster_id.clone(),
    };
    let report = super::block_on(
        cloudcmd::verify::verify(&crate::workspace(ws), &cfg, &opts),
        "constellation verify",
    )?;
    match output {
        VerifyOutput::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        VerifyOutput::Raw => {
            for n in &report.nodes {
                if let Some(doc) = &n.document {
                    // One document per line: whatever a node sent, no control characters.
                    println!("{}", cloudcmd::sanitize(&String::from_utf8_lossy(doc)));
                }
            }
        }
        VerifyOutput::Table => print_table(&report, a.node_endpoint.is_some()),
    }
    let failed = report.nodes.iter().filter(|n| !n.verified).count();
    if failed > 0 {
        if output == VerifyOutput::Raw {
            for n in report.nodes.iter().filter(|n| !n.verified) {
                eprintln!(
                    "{}: {}",
                    n.node,
                    n.error.as_deref().unwrap_or("not verified")
                );
            }
        }
        bail!(
            "verification failed for {failed} of {} node(s)",
            report.nodes.len()
        );
    }
    eprintln!("Verification OK");
    Ok(())
}

fn print_table(r: &VerifyReport, per_pcr: bool) {
    println!("Cluster ID:  {}", r.cluster_id);
    println!("Attestation: {}", r.variant);
    println!();
    println!("{:<18} {:<22} {:<9} DETAIL", "NODE", "ENDPOINT", "RESULT");
    for n in &r.nodes {
        let (result, detail) = if n.verified {
            ("verified", matched_summary(n))
        } else {
            ("FAILED", n.error.clone().unwrap_or_default())
        };
        println!("{:<18} {:<22} {:<9} {}", n.node, n.endpoint, result, detail);
        for p in n.pcrs.iter().filter(|p| !p.matches && p.warn_only) {
            println!(
                "{:<18} warning: PCR {} differs (warnOnly): expected {}, got {}",
                "",
                p.index,
                p.expected,
                p.actual.as_deref().unwrap_or("nothing")
            );
        }
    }
    if per_pcr {
        for n in &r.nodes {
            if n.pcrs.is_empty() {
                continue;
            }
            println!();
            println!("{}:", n.node);
            for p in &n.pcrs {
                println!("  PCR {:>2}  expected {}", p.index, p.expected);
                println!(
                    "          actual   {}  {}",
                    p.actual.as_deref().unwrap_or("(not quoted)"),
                    match (p.matches, p.warn_only) {
                        (true, _) => "ok",
                        (false, true) => "differs (warnOnly)",
                        (false, false) => "DIFFERS",
                    }
                );
            }
        }
    }
}

fn matched_summary(n: &NodeVerification) -> String {
    let list: Vec<String> = n
        .pcrs
        .iter()
        .filter(|p| p.matches)
        .map(|p| p.index.to_string())
        .collect();
    format!("PCRs {} as expected", list.join(", "))
}
