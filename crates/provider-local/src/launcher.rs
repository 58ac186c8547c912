//! The launcher plays firmware and boot loader: it measures every component of the node image
//! into the node's TPM, then hands control to the boot component. Nothing runs unmeasured.
//!
//! Run what was measured: each component (the boot component and etcd alike, as the image
//! manifest lists them) is read **once** into memory, hashed from those bytes, and written to
//! the node-owned run folder (`--run-dir`, 0700, files 0500, replaced at every boot). The
//! launcher execs the copy of the boot component, and the Bootstrapper starts etcd from the
//! copy next to itself ([`crate::node_env::LocalComponents`]); nothing is ever run from the image folder, so changing
//! the image after the measurement changes nothing that runs.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::image::NodeImage;
use crate::pcr::Event;
use anyhow::Context;
use attestation::Variant;
use sha2::Digest as _;

/// What the provider tells the launcher (the local equivalent of a VM definition).
#[derive(Debug, Clone)]
pub struct LaunchArgs {
    pub image: PathBuf,
    pub tcti: String,
    pub variant: Variant,
    /// The node-owned folder the measured copies are written to and run from.
    pub run_dir: PathBuf,
    /// Arguments for the boot component.
    pub boot_args: Vec<String>,
}

/// A component name usable as a file name in the run folder.
fn check_name(name: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !name.is_empty()
            && name != "."
            && name != ".."
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
        "component name {name:?} is not a plain file name"
    );
    Ok(())
}

/// Creates the run folder afresh (0700) and writes `bytes` as `name` (0500) into it.
fn write_copy(dir: &Path, name: &str, bytes: &[u8]) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o500)
        .open(&path)
        .with_context(|| format!("creating the measured copy {}", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing the measured copy {}", path.display()))?;
    Ok(path)
}

fn fresh_run_dir(dir: &Path) -> anyhow::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(anyhow::Error::new(e).context(format!("clearing {}", dir.display()))),
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating the run folder {}", dir.display()))
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

/// Copies every component into the run folder, extends the measured-boot events computed from
/// exactly the copied bytes into the TPM, and returns the boot component's copy.
pub fn measure(args: &LaunchArgs) -> anyhow::Result<PathBuf> {
    let image = NodeImage::load(&args.image).context("loading the node image")?;
    fresh_run_dir(&args.run_dir)?;
    let mut comps = Vec::with_capacity(image.manifest.components.len());
    let mut boot = None;
    for c in &image.manifest.components {
        check_name(&c.name)?;
        let src = image.dir.join(&c.path);
        let bytes = std::fs::read(&src).with_context(|| format!("reading {}", src.display()))?;
        let digest: [u8; 32] = sha2::Sha256::digest(&bytes).into();
        let copy = write_copy(&args.run_dir, &c.name, &bytes)?;
        if c.boot {
            boot = Some((digest, copy));
        }
        comps.push((c.name.clone(), digest));
    }
    let (boot_digest, boot) = boot.context("the node image has no boot component")?;
    let events = crate::pcr::boot_events(
        image.manifest_digest,
        &comps,
        boot_digest,
        &crate::pcr::cmdline(args.variant),
    );
    // The TPM connection is closed before exec: swtpm serves one client at a time.
    let tpm = tpm::Tpm::open(&args.tcti).context("opening the node's TPM")?;
    let pcrs = tpm.read_pcrs_sha256().context("reading PCRs")?;
    if pcrs
        .get(&crate::pcr::PCR_BOOT)
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
