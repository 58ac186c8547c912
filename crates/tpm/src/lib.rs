//! Node-side TPM access: the node's software TPM (`swtpm`) process, its attestation key, PCR
//! measurements and quotes, and the vTPM attestation [`Issuer`](attestation::Issuer).
//!
//! ```text
//!  provider ── Swtpm::spawn_detached(dir) ──► swtpm (unix sockets + state in dir, 0700)
//!     │            Tpm::open(tcti).attestation_key() ──► records AK public (TPMT_PUBLIC)
//!  node launcher ─ Tpm::pcr_event(pcr, component) ────► PCR 4/9/11 …  (before each start)
//!  bootstrapper ── Tpm::pcr_event(15, cluster id)
//!  aTLS / verify ─ TpmIssuer::issue(userData, nonce) ─► quote(SHA-256 PCRs 0..=23, tpmNonce)
//!                                                      → AttestationDocument JSON
//! ```
//!
//! What it does not do: verify anything (crate `attestation` does, in pure Rust, without
//! `libtss2`), create an endorsement key, or replay event logs (the local launcher keeps none).
//! All TPM calls are blocking; async callers use `spawn_blocking`. The crate speaks raw TPM 2.0
//! commands on swtpm's unix socket (`wire`): libtss2's swtpm TCTI can use a unix socket, but
//! tss-esapi 7.7 can only hand it `host=`/`port=`, and TCP would let any local user drive the
//! TPM. No FFI and no `unsafe`.

#![forbid(unsafe_code)]

mod device;
mod issuer;
pub mod swtpm;
mod wire;

/// Re-exported so callers can name PCR banks from [`Tpm::banks`].
pub use attestation::tpm2::HashAlg;
pub use device::{
    Quote, Tpm, TpmError, AK_HANDLE, AK_PUBLIC_LEN, MAX_AUTH_LEN, MAX_QUALIFYING_DATA, PCR_COUNT,
};
pub use issuer::{TpmIssuer, UnsupportedVariant};
pub use swtpm::{DetachedSwtpm, Swtpm, SwtpmConfig, SwtpmError};
