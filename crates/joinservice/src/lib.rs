//! The JoinService: admits nodes that proved, over attested TLS, that they run the expected
//! image and belong to no cluster yet (PCR 15 zero), and hands them their join ticket.
//!
//! ```text
//!  joining node ──aTLS (node attests)──► JoinValidator (measurements, PCR 15 = 0, provider AKs)
//!                                           │ verified attestation (AK fingerprint)
//!                                           ▼
//!                                   Admission::join / ::rejoin      (rules: this crate)
//!                                     ├─ Metadata   which node has this AK, its role
//!                                     ├─ KeySource  state-disk key, measurement secret
//!                                     ├─ CertIssuer node certificate, ticket files
//!                                     ├─ Membership control-plane joiners' etcd membership
//!                                     └─ Registry   node entries (written only on admission)
//! ```
//!
//! The rules live in [`admission`] and refuse with a typed [`Refusal`]; [`server`] maps it to a
//! gRPC status once. The node daemon implements the traits over etcd, the KeyService and the
//! cluster CA; the tests here implement them in memory.

#![forbid(unsafe_code)]

pub mod admission;
pub mod server;
pub mod validator;

pub use admission::{
    Admission, BackendError, CertIssuer, JoinRequest, KeySource, Membership, Refusal, Registry,
    RejoinTicket, Ticket,
};
pub use validator::{JoinPolicy, JoinValidator};
