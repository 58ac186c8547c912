//! The gRPC adapter: `/join.API/IssueJoinTicket` and `IssueRejoinTicket` over attested TLS.
//! A rejected attestation finishes the handshake, but every call on that connection answers
//! `PermissionDenied` with the reason (which PCR, expected and actual), so the refused node
//! can report it.

use std::net::SocketAddr;
use std::sync::Arc;

use proto::join::api_server::{Api, ApiServer};
use proto::join::{
    ControlPlaneCertOrKey, IssueJoinTicketRequest, IssueJoinTicketResponse,
    IssueRejoinTicketRequest, IssueRejoinTicketResponse,
};
use tonic::{Request, Response, Status};

use crate::admission::{Admission, JoinRequest, Refusal};
use crate::validator::JoinValidator;

/// The one mapping of refusals to gRPC codes.
impl From<Refusal> for Status {
    fn from(r: Refusal) -> Status {
        let msg = r.to_string();
        match r {
            Refusal::UnknownKey | Refusal::RoleNotAllowed { .. } | Refusal::RoleMismatch { .. } => {
                Status::permission_denied(msg)
            }
            Refusal::BadDiskUuid | Refusal::BadCertificateRequest(_) => {
                Status::invalid_argument(msg)
            }
            Refusal::NeverAdmitted { .. } => Status::not_found(msg),
            Refusal::MetadataUnavailable | Refusal::Unavailable { .. } => Status::unavailable(msg),
        }
    }
}

struct Service {
    admission: Arc<Admission>,
}

impl Service {
    /// The fingerprint of the caller's verified attestation key; refusals are logged with the
    /// peer address.
    fn attested<T>(&self, req: &Request<T>, what: &str) -> Result<[u8; 32], Status> {
        let found = atls::server::require_peer_attestation(req).map(|v| *v.ak_fingerprint());
        if let Err(s) = &found {
            tracing::warn!(peer = ?req.remote_addr(), "{what} refused: {}", s.message());
        }
        found
    }
}

fn logged<T>(r: Result<T, Refusal>, what: &str) -> Result<T, Status> {
    r.map_err(|e| {
        tracing::warn!("{what} refused: {e}");
        Status::from(e)
    })
}

#[tonic::async_trait]
impl Api for Service {
    async fn issue_join_ticket(
        &self,
        req: Request<IssueJoinTicketRequest>,
    ) -> Result<Response<IssueJoinTicketResponse>, Status> {
        let ak = self.attested(&req, "join")?;
        let r = req.into_inner();
        let t = logged(
            self.admission
                .join(
                    &ak,
                    &JoinRequest {
                        disk_uuid: r.disk_uuid,
                        certificate_request: r.certificate_request,
                        is_control_plane: r.is_control_plane,
                    },
                )
                .await,
            "join",
        )?;
        Ok(Response::new(IssueJoinTicketResponse {
            state_disk_key: t.state_disk_key,
            measurement_salt: t.measurement_salt,
            measurement_secret: t.measurement_secret,
            kubelet_cert: t.node_certificate.into_bytes(),
            api_server_endpoint: t.api_server_endpoint,
            control_plane_files: t
                .files
                .into_iter()
                .map(|(name, data)| ControlPlaneCertOrKey { name, data })
                .collect(),
            ..Default::default()
        }))
    }

    async fn issue_rejoin_ticket(
        &self,
        req: Request<IssueRejoinTicketRequest>,
    ) -> Result<Response<IssueRejoinTicketResponse>, Status> {
        let ak = self.attested(&req, "rejoin")?;
        let r = req.into_inner();
        let t = logged(self.admission.rejoin(&ak, &r.disk_uuid).await, "rejoin")?;
        Ok(Response::new(IssueRejoinTicketResponse {
            state_disk_key: t.state_disk_key,
            measurement_secret: t.measurement_secret,
        }))
    }
}

/// The JoinService's listener could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error("binding the JoinService port {0}")]
    Bind(SocketAddr, #[source] std::io::Error),
    #[error("setting up attested TLS")]
    Atls(#[source] std::io::Error),
}

/// Serves the JoinService on `addr` (the validator checks every joiner inside the handshake);
/// returns the serving task.
pub async fn serve(
    addr: SocketAddr,
    admission: Arc<Admission>,
    validator: JoinValidator,
) -> Result<tokio::task::JoinHandle<()>, ServeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| ServeError::Bind(addr, e))?;
    let cfg =
        atls::server::ServerConfig::new(None, vec![Arc::new(validator)]).explaining_rejections();
    let incoming = atls::server::AttestedIncoming::new(listener, cfg).map_err(ServeError::Atls)?;
    tracing::info!(%addr, "JoinService serving");
    Ok(tokio::spawn(async move {
        if let Err(e) = atls::guard::server()
            .add_service(ApiServer::new(Service { admission }))
            .serve_with_incoming(incoming)
            .await
        {
            tracing::error!("JoinService stopped: {e}");
        }
    }))
}
