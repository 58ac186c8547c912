//! The verification service: `/verify.API/GetAttestation` on `<node address>:30081`, served by
//! every node from its start, so that the owner (`constellation verify`) can check any node at
//! any time against the expected measurements and the cluster ID in PCR 15.
//!
//! Plain gRPC, as in the Go system: the answer is an attestation document bound to the
//! caller's nonce and to the user data `"VerifyService"`, signed by the node's attestation key;
//! a network attacker can withhold or replay it, but a replay fails the nonce check and a
//! forgery fails the signature. Nothing secret is served.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use anyhow::Context;
use cluster::ids::{MAX_NONCE_LEN, VERIFY_USER_DATA as USER_DATA};
use cluster::ports::VERIFY as PORT_VERIFY;
use proto::verify::api_server::{Api, ApiServer};
use proto::verify::{GetAttestationRequest, GetAttestationResponse};
use tonic::{Request, Response, Status};

/// Binds `<address>:30081` (a bind error fails the caller, with the address named) and serves
/// the verification API in a task until the node ends.
pub(crate) async fn serve(
    address: Ipv4Addr,
    issuer: Arc<dyn attestation::Issuer>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(SocketAddrV4::new(address, PORT_VERIFY))
        .await
        .with_context(|| format!("binding the verification port {address}:{PORT_VERIFY}"))?;
    // Connection cap and first-byte timeout (atls::guard); no Nagle: a small answer must not
    // wait for the client's delayed ACK (40 ms per call).
    let incoming = atls::guard::incoming(listener, atls::guard::Limits::default());
    Ok(tokio::spawn(async move {
        let served = atls::guard::server()
            .add_service(ApiServer::new(VerifyService { issuer }))
            .serve_with_incoming(incoming)
            .await;
        if let Err(e) = served {
            tracing::error!("verification service stopped: {e}");
        }
    }))
}

struct VerifyService {
    issuer: Arc<dyn attestation::Issuer>,
}

#[tonic::async_trait]
impl Api for VerifyService {
    async fn get_attestation(
        &self,
        req: Request<GetAttestationRequest>,
    ) -> Result<Response<GetAttestationResponse>, Status> {
        let nonce = req.into_inner().nonce;
        if nonce.is_empty() || nonce.len() > MAX_NONCE_LEN {
            return Err(Status::invalid_argument(format!(
                "nonce must be 1 to {MAX_NONCE_LEN} bytes, got {}",
                nonce.len()
            )));
        }
        let issuer = self.issuer.clone();
        let doc = tokio::task::spawn_blocking(move || issuer.issue(USER_DATA, &nonce))
            .await
            .map_err(|_| Status::internal("attestation task failed"))?
            .map_err(|e| {
                tracing::error!("issuing a verification document: {e}");
                Status::internal(format!("issuing the attestation document: {e}"))
            })?;
        Ok(Response::new(GetAttestationResponse { attestation: doc }))
    }
}
