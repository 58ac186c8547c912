//! Attested TLS (aTLS) on rustls: a TLS 1.3 handshake in which a peer's certificate carries an
//! attestation document that is bound to the certificate's key and to a fresh nonce chosen by
//! the verifying peer. Verification runs inside the rustls verifier callbacks, so a peer that
//! fails attestation never gets to exchange application data. [`server`] and [`client`] offer
//! the handshake on any stream and the glue for tonic (gRPC over HTTP/2, ALPN `h2`).
//!
//! What it does not do: decide policy (that is the [`attestation::Validator`]s the caller
//! configures), nor produce evidence (that is the [`attestation::Issuer`], e.g. crate `tpm`).
//!
//! # Wire format
//!
//! ```text
//!  client (verifier of the server: CLI)              server (attester: bootstrapper)
//!  ────────────────────────────────────              ───────────────────────────────
//!  nonce_c = 32 random bytes
//!  ClientHello
//!    certificate_authorities = [ CN=b64(nonce_c) ] ──►
//!                                                    key_s = fresh P-256 key
//!                                                    doc_s = issue(SHA-256(SPKI(key_s)), nonce_c)
//!                                                    (spawn_blocking; then a per-connection
//!                                                     rustls ServerConfig)
//!                                                    nonce_s = 32 random bytes  (if it verifies)
//!                        ◄── ServerHello, Certificate(cert_s ∋ ext[OID(variant)] = doc_s),
//!                            CertificateRequest(certificate_authorities = [ CN=b64(nonce_s) ]),
//!                            CertificateVerify(key_s), Finished
//!  verify cert_s: validator(OID).validate(doc_s, nonce_c),
//!    user_data == SHA-256(SPKI(cert_s)), validity window
//!  (if it attests) key_c, doc_c = issue(SHA-256(SPKI(key_c)), nonce_s)
//!  Certificate(cert_c), CertificateVerify(key_c), Finished ──►
//!                                                    verify cert_c with nonce_s likewise
//! ```
//!
//! - Certificates: self-signed ECDSA P-256, `CN=Constellation`, valid now−2 h … now+2 h, random
//!   serial; a fresh key per handshake on both sides. The document is the content of one
//!   non-critical extension whose OID is the issuer's [`attestation::Variant::oid`]. A peer
//!   that does not attest presents the same kind of certificate without the extension.
//! - Nonces travel as the single entry of a TLS 1.3 `certificate_authorities` list: a DER
//!   `Name` with one `commonName` = PrintableString(base64-std(nonce)). The server's nonce goes
//!   in the CertificateRequest exactly like Go's `AcceptableCAs`. The client's nonce goes in the
//!   ClientHello's `certificate_authorities` extension (rustls 0.23.46 sends it from
//!   `ServerCertVerifier::root_hint_subjects`, and the server reads it from
//!   `ClientHello::certificate_authorities` before choosing its configuration). We chose that
//!   over a DNS-safe encoding in SNI because it needs no abuse of the server name, uses one
//!   encoding for both directions, and is what the extension is for; the cost is TLS 1.3 only
//!   (the extension does not exist in TLS 1.2 ClientHellos). SNI is not sent.
//! - Session resumption and tickets are disabled: a resumed session would skip the
//!   attestation.
//! - Not wire-compatible with the Go system: Go puts the client nonce in SNI as base64, which
//!   rustls can neither send nor accept.
//! - Size: rustls caps a handshake message at 64 KiB, so a certificate (document included) is
//!   limited to [`MAX_CERT_SIZE`]; larger ones fail when they are made, with
//!   [`CertificateError::TooLarge`].
//!
//! # Blocking issuers
//!
//! The server issues in `tokio::task::spawn_blocking` before the handshake continues. The
//! client can only issue inside rustls's synchronous `ResolvesClientCert::resolve` (the server
//! nonce arrives mid-handshake); it calls the issuer there, wrapped in
//! `tokio::task::block_in_place` on a multi-threaded runtime (other tasks move to other
//! workers) and directly otherwise (a current-thread runtime stalls for the issuer's duration;
//! a `LocalSet` on a multi-threaded runtime is not supported by an attesting client).

#![forbid(unsafe_code)]

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

mod cert;
pub mod client;
pub mod guard;
mod nonce;
pub mod server;
mod verify;

#[cfg(test)]
mod tests;

pub use attestation::{Issuer, Validator, VerifiedAttestation};
pub use cert::{CertificateError, MAX_CERT_SIZE};
pub use nonce::NonceError;
pub use verify::VerifyError;

/// How long a whole handshake (TCP connect included, for [`client::connect`]) may take unless
/// configured otherwise.
pub const DEFAULT_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Errors of aTLS handshakes and connections.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The peer's certificate failed our verification (the typed reason is the source).
    #[error("the peer's attestation was rejected")]
    PeerRejected(#[source] VerifyError),
    /// The peer did not send a usable nonce, so we could not attest to it.
    #[error("cannot attest: the peer sent no usable nonce")]
    Nonce(#[source] NonceError),
    /// Making our own (attested) certificate failed.
    #[error("creating our certificate failed")]
    Certificate(#[source] CertificateError),
    /// The TLS handshake failed for another reason (including the peer rejecting us: it only
    /// sends an alert).
    #[error("TLS handshake failed")]
    Handshake(#[source] std::io::Error),
    #[error("the aTLS handshake did not finish within {0:?}")]
    Timeout(std::time::Duration),
    #[error("connecting to {addr} failed")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("building the TLS configuration failed")]
    Config(#[source] rustls::Error),
    #[error("setting up the gRPC channel failed")]
    Channel(#[source] tonic::transport::Error),
    /// The handshake finished but the verifier recorded no result; a bug in this crate.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

/// The ring provider, built once. We pass it explicitly so that the process-wide default
/// provider (or its absence) does not matter.
fn provider() -> Arc<CryptoProvider> {
    static P: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// ALPN: gRPC runs over HTTP/2.
const ALPN_H2: &[u8] = b"h2";
