//! The launcher plays firmware and boot loader: it measures every component of the node image
//! into the node's TPM, then hands control to the boot component. Nothing runs unmeasured.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Context;
use attestation::Variant;
use provider_local::image::NodeImage;
use provider_local::pcr::Event;

/// What the provider tells the launcher (the local equivalent of a VM definition).
#[derive(Debug, Clone)]
pub struct LaunchArgs {
    pub image: PathBuf,
    pub tcti: String,
    pub variant: Variant,
    /// Arguments for the boot component.
    pub boot_args: Vec<String>,
}

/// Measures, then `exec`s the boot component. Returns only on error.
pub fn launch(args: &LaunchArgs) -> anyhow::Error {
    match measure(args) {
        Ok(boot) => {
            use std::os::unix::process::CommandExt;
            let err = Command::new(&boot).args(&args.boot_args).exec();
            anyhow::Error::new(err)
                .context(format!("starting the boot component {}", boot.display()))
        }
        Err(e) => e,
    }
}

/// Extends the measured-boot events into the TPM; returns the boot component's path.
pub fn measure(args: &LaunchArgs) -> anyhow::Result<PathBuf> {
    let image = NodeImage::load(&args.image).context("loading the node image")?;
    let events = image
        .measure_boot(args.variant)
        .context("measuring the node image")?;
    let boot = image
        .boot_path()
        .context("the node image has no boot component")?;
    // The TPM connection is closed before exec: swtpm serves one client at a time.
    let tpm = tpm::Tpm::open(&args.tcti).context("opening the node's TPM")?;
    let pcrs = tpm.read_pcrs_sha256().context("reading PCRs")?;
    if pcrs
        .get(&provider_local::pcr::PCR_BOOT)
        .is_some_and(|v| v != &[0u8; 32])
    {
        anyhow::bail!(
            "PCR 4 is not zero: this TPM was not reset since the last boot; restart its swtpm"
        );
    }
    for e in &events {
        match e {
            Event::Extend { pcr, digest, what } => {
                tracing::info!(pcr, digest = %hex::encode(digest), "measuring {what}");
                tpm.extend_sha256(*pcr, digest)
                    .with_context(|| format!("extending PCR {pcr}"))?;
            }
            Event::Event { pcr, data, what } => {
                tracing::info!(pcr, "measuring {what}");
                tpm.pcr_event(*pcr, data)
                    .with_context(|| format!("PCR_Event on PCR {pcr}"))?;
            }
        }
    }
    Ok(boot)
}
