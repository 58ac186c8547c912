//! gRPC over aTLS on loopback: a real tonic server on `AttestedIncoming` and a client channel from
//! `atls::client::connect`, in each direction of attestation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use atls::client::ClientConfig;
use atls::server::{AttestedConnectInfo, AttestedIncoming, ServerConfig};
use attestation::insecure_dummy::{InsecureDummyIssuer, InsecureDummyValidator};
use attestation::{Issuer, Mismatch, ValidationError, Validator, Variant, VerifiedAttestation};
use common::chain;
use proto::kms::api_client::ApiClient;
use proto::kms::api_server::{Api, ApiServer};
use proto::kms::{GetDataKeyRequest, GetDataKeyResponse};
use tonic::{Request, Response, Status};

/// Answers with the client's verified attestation user data (empty if the client did not
/// attest) and echoes the requested id, so the test sees what the handler saw.
struct TestKms;

#[tonic::async_trait]
impl Api for TestKms {
    async fn get_data_key(
        &self,
        request: Request<GetDataKeyRequest>,
    ) -> Result<Response<GetDataKeyResponse>, Status> {
        let info = request
            .extensions()
            .get::<AttestedConnectInfo>()
            .ok_or_else(|| Status::internal("no aTLS connect info"))?;
        if info.remote_addr().is_none() {
            return Err(Status::internal("no remote address"));
        }
        let mut data_key = request.get_ref().data_key_id.clone().into_bytes();
        if let Some(att) = atls::server::peer_attestation(&request) {
            data_key.push(b':');
            data_key.extend_from_slice(att.user_data());
        }
        Ok(Response::new(GetDataKeyResponse { data_key }))
    }
}

async fn start(config: ServerConfig) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let incoming = AttestedIncoming::new(listener, config).unwrap();
    let addr = incoming.local_addr().to_string();
    let task = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(ApiServer::new(TestKms))
            .serve_with_incoming(incoming)
            .await
            .unwrap();
    });
    (addr, task)
}

fn issuer() -> Option<Arc<dyn Issuer>> {
    Some(Arc::new(InsecureDummyIssuer))
}
fn validators() -> Vec<Arc<dyn Validator>> {
    vec![Arc::new(InsecureDummyValidator)]
}

async fn get(channel: tonic::transport::Channel, id: &str) -> Result<Vec<u8>, Status> {
    let resp = ApiClient::new(channel)
        .get_data_key(GetDataKeyRequest {
            data_key_id: id.to_string(),
            length: 32,
        })
        .await?;
    Ok(resp.into_inner().data_key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_attests_over_grpc() {
    let (addr, server) = start(ServerConfig::new(issuer(), vec![])).await;
    let (channel, att) = atls::client::connect(&addr, &ClientConfig::new(None, validators()))
        .await
        .unwrap();
    let att = att.expect("server attestation verified before any request");
    assert_eq!(att.variant(), Variant::Dummy);
    assert_eq!(att.user_data().len(), 32);
    // The server does not verify clients: the handler sees no attestation.
    assert_eq!(get(channel.clone(), "disk").await.unwrap(), b"disk");
    assert_eq!(get(channel, "again").await.unwrap(), b"again");
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_attests_over_grpc_and_handler_sees_it() {
    let (addr, server) = start(ServerConfig::new(None, validators())).await;
    let (channel, att) = atls::client::connect(&addr, &ClientConfig::new(issuer(), vec![]))
        .await
        .unwrap();
    assert!(att.is_none());
    let key = get(channel, "join").await.unwrap();
    let (id, user_data) = key.split_at(5);
    assert_eq!(id, b"join:");
    // SHA-256 of the client's TLS public key, as verified by the server.
    assert_eq!(user_data.len(), 32);
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unattested_client_gets_no_answer() {
    let (addr, server) = start(ServerConfig::new(None, validators())).await;
    match atls::client::connect(&addr, &ClientConfig::new(None, vec![])).await {
        Err(_) => {}
        Ok((channel, _)) => {
            // The server's alert closes the connection (code Cancelled or Unavailable,
            // depending on timing); the handler never runs.
            assert!(get(channel, "x").await.is_err());
        }
    }
    server.abort();
}

struct Pcr9Mismatch;
impl Validator for Pcr9Mismatch {
    fn variant(&self) -> Variant {
        Variant::Dummy
    }
    fn validate(&self, doc: &[u8], nonce: &[u8]) -> Result<VerifiedAttestation, ValidationError> {
        InsecureDummyValidator.validate(doc, nonce)?;
        Err(ValidationError::Measurements(vec![Mismatch {
            index: 9,
            expected: vec![1; 32],
            actual: Some(vec![2; 32]),
        }]))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_learns_which_pcr_failed_before_sending_anything() {
    let (addr, server) = start(ServerConfig::new(issuer(), vec![])).await;
    let err = atls::client::connect(
        &addr,
        &ClientConfig::new(None, vec![Arc::new(Pcr9Mismatch)]),
    )
    .await
    .unwrap_err();
    let msg = chain(&err);
    assert!(matches!(err, atls::Error::PeerRejected(_)), "{msg}");
    assert!(msg.contains("PCR 9: expected 0101"), "{msg}");
    server.abort();
}
