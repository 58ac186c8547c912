//! The recovery server of a restarted control-plane node (reference §3.7, §4.4).
//!
//! A control-plane node that restarts with its state on disk needs its disk key and the
//! measurement secret back. Normally another control-plane node's JoinService gives them
//! ([`crate::join::rejoin`]); when every control-plane node went down, none can. While it tries,
//! the node also serves `/recoverproto.API/Recover` on `<node address>:9999` over aTLS (the node
//! attests; `constellation recover` checks it against the measurements with PCR 15 still zero
//! before it sends anything). The owner sends the master secret; the node derives its disk key
//! (`DEK(disk UUID)`) and the measurement secret from it, checks that the key opens its disk,
//! and continues as after a rejoin. Whichever comes first wins; the server then stops.

use std::net::SocketAddrV4;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use cluster::env::DiskError;
use cluster::ids::RECOVERED_BY;
use cluster::ports::RECOVERY as PORT_RECOVERY;
use cluster::report::NodePhase as Phase;
use proto::recoverproto::api_server::{Api, ApiServer};
use proto::recoverproto::{RecoverMessage, RecoverResponse};
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

use crate::run::{Node, Report};

/// The running recovery server; dropping it stops the server.
pub(crate) struct Recovery {
    recovered: oneshot::Receiver<keys::MeasurementSecret>,
    stop: Option<oneshot::Sender<()>>,
}

impl Recovery {
    /// Waits until the owner recovered this node: its disk is open, here is the measurement
    /// secret. Pending forever if the server stopped without a recovery.
    pub(crate) async fn recovered(&mut self) -> keys::MeasurementSecret {
        match (&mut self.recovered).await {
            Ok(ms) => ms,
            Err(_) => std::future::pending().await,
        }
    }
}

impl Drop for Recovery {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Binds `<address>:9999` and serves the recovery API until a recovery succeeds or the returned
/// [`Recovery`] is dropped.
pub(crate) async fn serve(
    node: Arc<Node>,
    address: std::net::Ipv4Addr,
    disk_uuid: String,
) -> anyhow::Result<Recovery> {
    let listener = tokio::net::TcpListener::bind(SocketAddrV4::new(address, PORT_RECOVERY))
        .await
        .with_context(|| format!("binding the recovery port {address}:{PORT_RECOVERY}"))?;
    let incoming = atls::server::AttestedIncoming::new(
        listener,
        atls::server::ServerConfig::new(Some(node.issuer.clone()), vec![]),
    )?;
    let (tx, recovered) = oneshot::channel();
    let (stop, stopped) = oneshot::channel::<()>();
    let svc = RecoverService {
        node,
        disk_uuid,
        done: Mutex::new(Some(tx)),
    };
    tokio::spawn(async move {
        let served = atls::guard::server()
            .add_service(ApiServer::new(svc))
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!("recovery server stopped: {e}");
        }
    });
    tracing::info!(%address, port = PORT_RECOVERY, "serving recovery until this node rejoins or is recovered");
    Ok(Recovery {
        recovered,
        stop: Some(stop),
    })
}

struct RecoverService {
    node: Arc<Node>,
    disk_uuid: String,
    done: Mutex<Option<oneshot::Sender<keys::MeasurementSecret>>>,
}

#[tonic::async_trait]
impl Api for RecoverService {
    async fn recover(
        &self,
        req: Request<RecoverMessage>,
    ) -> Result<Response<RecoverResponse>, Status> {
        let req = req.into_inner();
        let master = keys::MasterSecret::from_kms_uri(&req.kms_uri)
            .map_err(|e| Status::invalid_argument(format!("kms_uri: {e}")))?;
        let disk_key = master
            .data_key(&self.disk_uuid, 32)
            .map_err(|_| Status::internal("deriving the disk key failed"))?;
        let ms = master
            .measurement_secret()
            .map_err(|_| Status::internal("deriving the measurement secret failed"))?;
        let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        let Some(tx) = done.take() else {
            return Err(Status::failed_precondition(
                "this node is already recovered",
            ));
        };
        match self.node.env.disk.open(disk_key.expose()) {
            Ok(()) => {}
            Err(DiskError::WrongKey) => {
                *done = Some(tx);
                tracing::warn!(
                    "recovery refused: the master secret does not open this node's disk"
                );
                return Err(Status::permission_denied(
                    "this master secret does not open the node's disk: it belongs to another cluster",
                ));
            }
            Err(e) => {
                *done = Some(tx);
                return Err(Status::internal(format!("opening the disk: {e}")));
            }
        }
        tracing::info!("recovered by the owner: disk key accepted");
        // Reported before the answer: the CLI then sees a node on its way back, not one
        // still waiting (and a second `recover` leaves it alone).
        self.node.report(
            Phase::Joining,
            Report {
                admitted_by: Some(RECOVERED_BY.into()),
                ..Report::default()
            },
        );
        // The receiver is gone only if the node already rejoined meanwhile; nothing to undo.
        let _ = tx.send(ms);
        Ok(Response::new(RecoverResponse {}))
    }
}
