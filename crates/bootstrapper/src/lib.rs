//! The node daemon: the node state machine (wait for Init or join, rejoin after a restart,
//! recovery) and the services of a member. It runs in the environment its provider gives it
//! (`cluster::env::NodeEnvironment`: metadata, state disk, measured components, status) and
//! names no provider; the `constellation-node` binary wires the local one.
//!
//! ```text
//!  provider ──starts──► launcher ("firmware + boot loader", provider-local)
//!                         │ measures image components into the node's TPM (PCR 4, 9, 11)
//!                         ▼ exec
//!                       Bootstrapper ([`run`])
//!                         ├─ serves Init over aTLS (node attests)      ◄── constellation apply
//!                         ├─ serves GetAttestation ([`verify`])       ◄── constellation verify
//!                         └─ watches metadata for an initialized cluster (join path)
//!                       on Init: check init secret, derive cluster ID, extend PCR 15,
//!                       persist node state, start services ([`services`]): cluster CA,
//!                       KeyService, JoinService, etcd.
//! ```
//!
//! The node's "disk" is its folder: `state/` (node state, PKI) and `status.json` (what the
//! node reports to `constellation status`). On the local provider this folder is not encrypted:
//! a software TPM proves integrity of what was measured, not confidentiality from the host.

#![forbid(unsafe_code)]

pub mod backends;
pub mod control_plane;
pub mod join;
pub mod kubernetes;
pub mod pki;
pub mod recovery;
pub mod run;
pub mod services;
pub mod state;
pub mod verify;
