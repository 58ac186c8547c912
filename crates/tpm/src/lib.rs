//! Node-side TPM access: the node's software TPM (`swtpm`) process, its attestation key, PCR
//! measurements and quotes, and the vTPM attestation [`Issuer`](attestation::Issuer).
//!
//! ```text
//!  provider ── Swtpm::spawn_detached(dir, 127.x.y.z) ──► swtpm (state in dir/state)
//!     │            Tpm::open(tcti).attestation_key() ──► records AK public (TPMT_PUBLIC)
//!  node launcher ─ Tpm::pcr_event(pcr, component) ────► PCR 4/9/11 …  (before each start)
//!  bootstrapper ── Tpm::pcr_event(15, cluster id)
//!  aTLS / verify ─ TpmIssuer::issue(userData, nonce) ─► quote(SHA-256 PCRs 0..=23, tpmNonce)
//!                                                      → AttestationDocument JSON
//! ```
//!
//! What it does not do: verify anything (crate `attestation` does, in pure Rust, without
//! `libtss2`), create an endorsement key, or replay event logs (the local launcher keeps none).
//! All TPM calls are blocking; async callers use `spawn_blocking`. The crate talks to the TPM
//! through `tss-esapi` (which wraps `libtss2`) and needs no `unsafe` of its own.

#![forbid(unsafe_code)]

mod device;
mod issuer;
pub mod swtpm;

pub use device::{Quote, Tpm, TpmError, AK_HANDLE, AK_PUBLIC_LEN, MAX_QUALIFYING_DATA, PCR_COUNT};
pub use issuer::{TpmIssuer, UnsupportedVariant};
pub use swtpm::{DetachedSwtpm, Swtpm, SwtpmConfig, SwtpmError};
/// Re-exported so callers can name PCR banks from [`Tpm::banks`].
pub use tss_esapi::interface_types::algorithm::HashingAlgorithm;
