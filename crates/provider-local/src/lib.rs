//! The local provider: a cluster whose nodes are process trees on this machine.
//!
//! * [`image`]: the node image, a versioned, content-addressed bundle of the node's programs plus
//!   a manifest, and [`image::NodeImage::expected_measurements`], which predicts PCRs offline.
//! * [`pcr`]: the measured-boot plan shared by the offline prediction and the node launcher
//!   (the launcher plays firmware and boot loader: it measures before it runs).
//! * [`cloud`]: the local cloud's state (nodes, addresses, AK records, init-secret hash),
//!   kept in the workspace under `constellation-local/`. Nodes read it as their instance
//!   metadata service; the CLI writes it.
//! * [`process`]: detached process trees (one process group per node) and their termination.
//! * [`launcher`]: the node's firmware and boot-loader stand-in (measures, then runs exactly
//!   the measured copies).
//! * [`node_env`]: the node side of the seam (`cluster::env`): metadata from `cloud.json`, the
//!   node folder as state disk, the measured components, `status.json`.
//! * [`provider`]: the CLI side of the seam (`cloudcmd::provider::Provider`).

#![forbid(unsafe_code)]

pub mod cloud;
pub mod image;
pub mod infra;
pub mod kubenet;
pub mod launcher;
pub mod node_env;
pub mod pcr;
pub mod process;
pub mod provider;

pub use provider::{workspace, workspace_without_kubernetes, LocalProvider};

/// The provider string used in node command lines and measurement files.
pub const CSP: &str = "local";
