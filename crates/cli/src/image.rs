//! The node image the local provider uses when the config does not name one.

use anyhow::Context as _;
use attestation::Variant;
use measurements::Measurements;

/// The expected measurements of the default local node image (the one `apply` builds from
/// this installation: `constellation-node` next to the CLI), predicted offline.
///
/// Fails when the image's programs are not installed; `config generate local` then fails too,
/// rather than writing measurements no node would match.
pub fn local_default_measurements(variant: Variant) -> anyhow::Result<Measurements> {
    provider_local::provider::default_measurements(
        variant,
        provider_local::image::kubernetes_wanted(),
    )
    .context("measuring the local node image")
}
