//! The Bootstrapper's main loop and its Init service.
//!
//! On start it serves `/init.API/Init` over aTLS (this node attests with its TPM) on
//! `<node address>:9000`. A one-shot node lock makes sure that exactly one of Init and the join
//! path wins. Init: check the init secret against the bcrypt hash from metadata, derive the
//! cluster ID (master secret → measurement secret → HKDF with the measurement salt), extend it
//! into PCR 15, persist the node state, start the control-plane services, and answer with the
//! cluster ID and the admin credentials.

use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use attestation::Variant;
use proto::init::api_server::{Api, ApiServer};
use proto::init::{
    init_response, InitFailureResponse, InitRequest, InitResponse, InitSuccessResponse,
};
use provider_local::cloud::PORT_INIT;
use provider_local::image::{NodeImage, ETCD_BINARY};
use tokio::sync::Mutex;
use tonic::{Request, Response, Status};

use crate::metadata::Metadata;
use crate::pki::ClusterCa;
use crate::services;
use crate::state::{NodeDir, NodeState, Phase, Status as NodeStatus};

#[derive(Debug, Clone)]
pub struct Args {
    pub name: String,
    pub cloud: PathBuf,
    pub dir: PathBuf,
    pub tcti: String,
    pub variant: Variant,
}

/// Everything the running node holds.
struct Node {
    args: Args,
    dir: NodeDir,
    metadata: Metadata,
    tpm: Arc<tpm::Tpm>,
    /// One-shot: whoever takes it (Init or join) makes this node a cluster member.
    lock: AtomicBool,
    /// Long-running children and tasks, kept alive for the node's lifetime.
    keep: Mutex<Vec<Keep>>,
}

#[allow(dead_code)]
enum Keep {
    Child(tokio::process::Child),
    Task(tokio::task::JoinHandle<()>),
}

impl Node {
    fn status(
        &self,
        phase: Phase,
        cluster_id: Option<String>,
        services: Vec<String>,
        error: Option<String>,
    ) {
        let pcr15 = self
            .tpm
            .read_pcrs_sha256()
            .ok()
            .and_then(|p| p.get(&15).map(hex::encode));
        let s = NodeStatus {
            phase,
            cluster_id,
            pcr15,
            services,
            error,
            pid: std::process::id(),
        };
        if let Err(e) = self.dir.write_status(&s) {
            tracing::warn!("writing status: {e}");
        }
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let dir = NodeDir(args.dir.clone());
    let metadata = Metadata::new(&args.cloud);
    let me = metadata.self_node(&args.name)?;
    let tpm = {
        let tcti = args.tcti.clone();
        Arc::new(tokio::task::spawn_blocking(move || tpm::Tpm::open(&tcti)).await??)
    };
    let issuer: Arc<dyn attestation::Issuer> =
        Arc::new(tpm::TpmIssuer::new(tpm.clone(), args.variant)?);
    let node = Arc::new(Node {
        args: args.clone(),
        dir,
        metadata,
        tpm,
        lock: AtomicBool::new(false),
        keep: Mutex::new(vec![]),
    });

    if node.dir.read_node_state().is_some() {
        // A restarted member: rejoining through a JoinService is the join path's job.
        tracing::warn!("node state exists: this node was a cluster member; waiting to rejoin");
    }
    let listener = tokio::net::TcpListener::bind(SocketAddrV4::new(me.address, PORT_INIT))
        .await
        .with_context(|| format!("binding the Init port {}:{PORT_INIT}", me.address))?;
    let incoming = atls::server::AttestedIncoming::new(
        listener,
        atls::server::ServerConfig::new(Some(issuer), vec![]),
    )?;
    node.status(Phase::Waiting, None, vec![], None);
    tracing::info!(address = %me.address, "Bootstrapper waiting for Init");
    tonic::transport::Server::builder()
        .add_service(ApiServer::new(InitService { node: node.clone() }))
        .serve_with_incoming(incoming)
        .await
        .context("Init server stopped")?;
    Ok(())
}

struct InitService {
    node: Arc<Node>,
}

type InitStream =
    std::pin::Pin<Box<dyn futures_core::Stream<Item = Result<InitResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Api for InitService {
    type InitStream = InitStream;

    async fn init(&self, req: Request<InitRequest>) -> Result<Response<InitStream>, Status> {
        let req = req.into_inner();
        let node = self.node.clone();
        // Checks before taking the lock: a wrong secret must not burn the node.
        let hash = node
            .metadata
            .init_secret_hash()
            .map_err(|_| Status::internal("metadata unavailable"))?;
        let secret = req.init_secret.clone();
        let ok =
            tokio::task::spawn_blocking(move || bcrypt::verify(&secret, &hash).unwrap_or(false))
                .await
                .unwrap_or(false);
        if !ok {
            tracing::warn!("Init refused: wrong init secret");
            return Err(Status::permission_denied("init secret does not match"));
        }
        if node.lock.swap(true, Ordering::SeqCst) {
            return Err(Status::failed_precondition(
                "node is already being activated",
            ));
        }
        let result = initialize(&node, &req).await;
        let msg = match result {
            Ok((cluster_id, admin)) => InitResponse {
                kind: Some(init_response::Kind::InitSuccess(InitSuccessResponse {
                    kubeconfig: admin,
                    owner_id: vec![],
                    cluster_id,
                })),
            },
            Err(e) => {
                tracing::error!("Init failed: {e:#}");
                node.status(Phase::Failed, None, vec![], Some(format!("{e:#}")));
                InitResponse {
                    kind: Some(init_response::Kind::InitFailure(InitFailureResponse {
                        error: format!("{e:#}"),
                    })),
                }
            }
        };
        let stream = tokio_stream::once(Ok(msg));
        Ok(Response::new(Box::pin(stream)))
    }
}

async fn initialize(node: &Arc<Node>, req: &InitRequest) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let master =
        Arc::new(keys::MasterSecret::from_kms_uri(&req.kms_uri).context("reading the KMS URI")?);
    if req.measurement_salt.len() != 32 {
        anyhow::bail!(
            "measurement salt has {} bytes, want 32",
            req.measurement_salt.len()
        );
    }
    let ms = master
        .measurement_secret()
        .context("deriving the measurement secret")?;
    let cluster_id = ms.cluster_id(&req.measurement_salt);
    node.status(Phase::Initializing, Some(cluster_id.to_hex()), vec![], None);

    // Mark the node as a member of this cluster before anything else.
    let tpm = node.tpm.clone();
    let id = *cluster_id.as_bytes();
    tokio::task::spawn_blocking(move || tpm.pcr_event(15, &id))
        .await?
        .context("extending PCR 15")?;
    node.dir
        .write_node_state(&NodeState {
            role: "ControlPlane".into(),
            measurement_salt: req.measurement_salt.clone(),
        })
        .context("persisting the node state")?;

    let me = node.metadata.self_node(&node.args.name)?;
    let cluster_name = if req.cluster_name.is_empty() {
        "constellation".to_string()
    } else {
        req.cluster_name.clone()
    };
    let ca = ClusterCa::generate(&cluster_name)?;
    let pki = services::setup_pki(&node.dir, &ca, &me.name, me.address)?;
    let image_dir = node.metadata.load()?.image_dir;
    let image = NodeImage::load(&image_dir)?;
    let etcd_bin = image
        .component_path(ETCD_BINARY)
        .context("the node image has no etcd")?;
    let etcd = services::start_etcd(&etcd_bin, &node.dir, &me.name, me.address, &pki).await?;
    let ks = services::serve_keyservice(me.address, &ca, &pki, master.clone()).await?;
    node.keep
        .lock()
        .await
        .extend([Keep::Child(etcd), Keep::Task(ks)]);

    let admin = ca.issue_admin(&cluster_name)?;
    let endpoint = format!(
        "https://{}:{}",
        me.address,
        provider_local::cloud::PORT_ETCD_CLIENT
    );
    let kubeconfig = admin_config(
        &cluster_name,
        &endpoint,
        &ca.cert_pem,
        &admin.cert_pem,
        &admin.key_pem,
    );
    node.status(
        Phase::Initialized,
        Some(cluster_id.to_hex()),
        vec!["ca".into(), "etcd".into(), "keyservice".into()],
        None,
    );
    Ok((cluster_id.as_bytes().to_vec(), kubeconfig.into_bytes()))
}

/// Admin credentials in kubeconfig layout. Without Kubernetes the server is the cluster's etcd;
/// the same certificate authenticates the owner to every cluster service.
fn admin_config(cluster: &str, server: &str, ca: &str, cert: &str, key: &str) -> String {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {cluster}\n  cluster:\n    server: {server}\n    certificate-authority-data: {}\ncontexts:\n- name: {cluster}-admin@{cluster}\n  context:\n    cluster: {cluster}\n    user: {cluster}-admin\ncurrent-context: {cluster}-admin@{cluster}\nusers:\n- name: {cluster}-admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
        STANDARD.encode(ca),
        STANDARD.encode(cert),
        STANDARD.encode(key)
    )
}
