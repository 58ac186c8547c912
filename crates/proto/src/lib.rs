//! gRPC protocol types, generated from `proto/*.proto`.
//!
//! Package names are part of the gRPC method paths and match the Go system
//! (`/init.API/Init`, `/join.API/IssueJoinTicket`, `/kms.API/GetDataKey`,
//! `/verify.API/GetAttestation`, `/recoverproto.API/Recover`), so either side can talk to the
//! other's implementation.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

pub mod components {
    tonic::include_proto!("components");
}
pub mod init {
    tonic::include_proto!("init");
}
pub mod join {
    tonic::include_proto!("join");
}
pub mod kms {
    tonic::include_proto!("kms");
}
pub mod verify {
    tonic::include_proto!("verify");
}
pub mod recoverproto {
    tonic::include_proto!("recoverproto");
}
