//! The Bootstrapper's main loop and its Init service.
//!
//! A node without state serves `/init.API/Init` over aTLS (this node attests) on
//! `<node address>:9000` and, at the same time, tries to join through the JoinServices of the
//! control-plane nodes it finds in metadata ([`crate::join`]). A one-shot node lock makes sure
//! that exactly one of the two wins. A node with state (restarted member) rejoins instead.
//!
//! Init: check the init secret against the bcrypt hash from metadata, derive the cluster ID
//! (master secret → measurement secret → HKDF with the measurement salt), extend it into
//! PCR 15, persist the node state, start the control-plane services (cluster CA, etcd,
//! KeyService, JoinService), store the join configuration and master-secret material in etcd,
//! and answer with the cluster ID and the admin credentials.

use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use attestation::Variant;
use proto::init::api_server::{Api, ApiServer};
use proto::init::{
    init_response, InitFailureResponse, InitRequest, InitResponse, InitSuccessResponse,
};
use provider_local::cloud::{NodeRecord, PORT_ETCD_CLIENT, PORT_ETCD_PEER, PORT_INIT};
use provider_local::image::ETCD_BINARY;
use tokio::sync::Mutex;
use tonic::{Request, Response, Status};

use crate::etcd::{
    unix_now, JoinConfig, MasterSecretRecord, NodeEntry, Store, KEY_JOIN_CONFIG, KEY_MASTER_SECRET,
};
use crate::metadata::Metadata;
use crate::pki::ClusterCa;
use crate::services::{self, NodePki};
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
pub(crate) struct Node {
    pub(crate) args: Args,
    pub(crate) dir: NodeDir,
    pub(crate) metadata: Metadata,
    pub(crate) tpm: Arc<tpm::Tpm>,
    pub(crate) issuer: Arc<dyn attestation::Issuer>,
    /// One-shot: whoever takes it (Init or join) makes this node a cluster member.
    pub(crate) lock: AtomicBool,
    /// Long-running children and tasks, kept alive for the node's lifetime.
    keep: Mutex<Vec<Keep>>,
    /// Serializes Init requests and remembers a successful one, so that a CLI that lost the
    /// answer (killed mid-RPC) can ask again and get the same cluster with fresh credentials.
    init: Mutex<Option<Initialized>>,
}

/// What a successful Init leaves for a repeated one.
struct Initialized {
    cluster_id: keys::ClusterId,
    cluster_name: String,
    endpoint: String,
    ca: Arc<ClusterCa>,
}

impl Initialized {
    /// Fresh admin credentials (a new admin certificate) in kubeconfig layout.
    fn admin_kubeconfig(&self) -> anyhow::Result<Vec<u8>> {
        let admin = self.ca.issue_admin(&self.cluster_name)?;
        let creds = crate::admin::AdminCredentials {
            cluster: self.cluster_name.clone(),
            server: self.endpoint.clone(),
            ca_pem: self.ca.cert_pem.clone(),
            cert_pem: admin.cert_pem,
            key_pem: admin.key_pem,
        };
        Ok(creds.to_kubeconfig().as_bytes().to_vec())
    }
}

#[allow(dead_code)]
enum Keep {
    Child(tokio::process::Child),
    Task(tokio::task::JoinHandle<()>),
}

/// What a report to `status.json` says besides the phase.
#[derive(Default)]
pub(crate) struct Report {
    pub(crate) cluster_id: Option<String>,
    pub(crate) services: Vec<String>,
    pub(crate) error: Option<String>,
    pub(crate) admitted_by: Option<String>,
}

impl Node {
    pub(crate) fn report(&self, phase: Phase, r: Report) {
        let pcr15 = self
            .tpm
            .read_pcrs_sha256()
            .ok()
            .and_then(|p| p.get(&15).map(hex::encode));
        let s = NodeStatus {
            phase,
            cluster_id: r.cluster_id,
            pcr15,
            services: r.services,
            error: r.error,
            admitted_by: r.admitted_by,
            pid: std::process::id(),
        };
        if let Err(e) = self.dir.write_status(&s) {
            tracing::warn!("writing status: {e}");
        }
    }

    /// Reports `failed` with the error chain.
    pub(crate) fn report_failure(&self, e: &anyhow::Error) {
        self.report(
            Phase::Failed,
            Report {
                error: Some(format!("{e:#}")),
                ..Report::default()
            },
        );
    }

    pub(crate) fn me(&self) -> anyhow::Result<NodeRecord> {
        self.metadata.self_node(&self.args.name)
    }

    /// Extends the cluster ID into PCR 15: from now on this node belongs to that cluster.
    pub(crate) async fn mark_member(&self, cluster_id: &keys::ClusterId) -> anyhow::Result<()> {
        let tpm = self.tpm.clone();
        let id = *cluster_id.as_bytes();
        tokio::task::spawn_blocking(move || tpm.pcr_event(15, &id))
            .await?
            .context("extending PCR 15")
    }

    /// This node's TLS identity files under `state/pki/`.
    pub(crate) fn pki(&self) -> NodePki {
        let d = self.dir.pki();
        NodePki {
            ca: d.join("ca.crt"),
            cert: d.join("node.crt"),
            key: d.join("node.key"),
        }
    }
}

/// Raises the soft limit of open file descriptors to the hard limit (as Go programs do at
/// start): the node's services cap their connections far below it (atls::guard), so a flood
/// of connections is refused by the caps, not by `EMFILE` in an accept loop.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!("raising the file-descriptor limit from {soft} to {hard}: {e}");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("reading the file-descriptor limit: {e}"),
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    raise_fd_limit();
    let dir = NodeDir(args.dir.clone());
    let metadata = Metadata::new(&args.cloud);
    let me = metadata.self_node_retrying(&args.name).await;
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
        issuer,
        lock: AtomicBool::new(false),
        keep: Mutex::new(vec![]),
        init: Mutex::new(None),
    });

    // Every node, member or not, answers `constellation verify` from its start.
    let verify = crate::verify::serve(me.address, node.issuer.clone()).await?;
    node.keep.lock().await.push(Keep::Task(verify));

    if let Some(state) = node.dir.read_node_state() {
        // A restarted member: its disk is provisioned; it needs its key back (rejoin).
        tracing::info!("node state found: rejoining the cluster");
        if let Err(e) = crate::join::rejoin(&node, &state).await {
            node.report_failure(&e);
            return Err(e);
        }
        std::future::pending::<()>().await;
        return Ok(());
    }

    let listener = tokio::net::TcpListener::bind(SocketAddrV4::new(me.address, PORT_INIT))
        .await
        .with_context(|| format!("binding the Init port {}:{PORT_INIT}", me.address))?;
    let incoming = atls::server::AttestedIncoming::new(
        listener,
        atls::server::ServerConfig::new(Some(node.issuer.clone()), vec![]),
    )?;
    node.report(Phase::Waiting, Report::default());
    tracing::info!(address = %me.address, "Bootstrapper waiting for Init or a JoinService");
    let joiner = {
        let node = node.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::join::join(&node).await {
                tracing::error!("joining failed: {e:#}");
                node.report_failure(&e);
                // As the Go node reboots after a failure past the node lock.
                std::process::exit(1);
            }
        })
    };
    let served = atls::guard::server()
        .add_service(ApiServer::new(InitService { node: node.clone() }))
        .serve_with_incoming(incoming)
        .await
        .context("Init server stopped");
    joiner.abort();
    served
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
        // In its own task: the initialization finishes even if the client goes away, and a
        // repeated Init waits for it.
        let result = tokio::spawn(async move { init_once(&node, &req).await })
            .await
            .map_err(|_| Status::internal("Init task failed"))??;
        let msg = match result {
            Ok((cluster_id, admin)) => InitResponse {
                kind: Some(init_response::Kind::InitSuccess(InitSuccessResponse {
                    kubeconfig: admin,
                    owner_id: vec![],
                    cluster_id,
                })),
            },
            Err(e) => InitResponse {
                kind: Some(init_response::Kind::InitFailure(InitFailureResponse {
                    error: e,
                })),
            },
        };
        let stream = tokio_stream::once(Ok(msg));
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Runs Init once; a repeated Init for the same cluster (same master secret and salt) gets the
/// cluster ID and fresh admin credentials, one for another cluster is refused.
async fn init_once(
    node: &Arc<Node>,
    req: &InitRequest,
) -> Result<Result<(Vec<u8>, Vec<u8>), String>, Status> {
    let mut done = node.init.lock().await;
    if let Some(prev) = done.as_ref() {
        let same = keys::MasterSecret::from_kms_uri(&req.kms_uri)
            .ok()
            .and_then(|m| m.measurement_secret().ok())
            .map(|ms| ms.cluster_id(&req.measurement_salt))
            .is_some_and(|id| id == prev.cluster_id);
        if !same {
            return Err(Status::failed_precondition(
                "this node already initialized another cluster",
            ));
        }
        tracing::info!("repeated Init for this cluster: issuing fresh admin credentials");
        let conf = prev
            .admin_kubeconfig()
            .map_err(|e| Status::internal(format!("{e:#}")))?;
        return Ok(Ok((prev.cluster_id.as_bytes().to_vec(), conf)));
    }
    if node.lock.swap(true, Ordering::SeqCst) {
        return Err(Status::failed_precondition(
            "node is already being activated",
        ));
    }
    match initialize(node, req).await {
        Ok((init, admin)) => {
            let id = init.cluster_id.as_bytes().to_vec();
            *done = Some(init);
            Ok(Ok((id, admin)))
        }
        Err(e) => {
            tracing::error!("Init failed: {e:#}");
            node.report_failure(&e);
            Ok(Err(format!("{e:#}")))
        }
    }
}

/// The owner's attestation policy as sent in `InitRequest.attestation_config`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AttestationConfig {
    variant: String,
    measurements: measurements::Measurements,
}

/// What only the first control-plane node puts into etcd.
pub(crate) struct InitData {
    join_config: JoinConfig,
    master: Arc<keys::MasterSecret>,
    entry: NodeEntry,
}

async fn initialize(node: &Arc<Node>, req: &InitRequest) -> anyhow::Result<(Initialized, Vec<u8>)> {
    let master =
        Arc::new(keys::MasterSecret::from_kms_uri(&req.kms_uri).context("reading the KMS URI")?);
    if req.measurement_salt.len() != 32 {
        anyhow::bail!(
            "measurement salt has {} bytes, want 32",
            req.measurement_salt.len()
        );
    }
    let policy: AttestationConfig = serde_json::from_str(&req.attestation_config)
        .context("the Init request carries no valid attestation_config (join policy)")?;
    let ms = master
        .measurement_secret()
        .context("deriving the measurement secret")?;
    let cluster_id = ms.cluster_id(&req.measurement_salt);
    let report = |phase, services: Vec<&str>| {
        node.report(
            phase,
            Report {
                cluster_id: Some(cluster_id.to_hex()),
                services: services.into_iter().map(String::from).collect(),
                admitted_by: Some("init".into()),
                ..Report::default()
            },
        )
    };
    report(Phase::Initializing, vec![]);

    // Mark the node as a member of this cluster before anything else.
    node.mark_member(&cluster_id).await?;
    let disk_uuid = node.dir.disk_uuid().context("reading the disk UUID")?;
    let disk_key = master.data_key(&disk_uuid, 32)?;
    node.dir.open_disk(disk_key.expose())?;
    node.dir
        .write_node_state(&NodeState {
            role: "ControlPlane".into(),
            measurement_salt: req.measurement_salt.clone(),
        })
        .context("persisting the node state")?;

    let me = node.me()?;
    let cluster_name = if req.cluster_name.is_empty() {
        "constellation".to_string()
    } else {
        req.cluster_name.clone()
    };
    let ca = Arc::new(ClusterCa::generate(&cluster_name)?);
    services::setup_pki(&node.dir, &ca, &me.name, me.address)?;
    let cp_ca = Arc::new(ClusterCa::generate_control_plane(&cluster_name)?);
    cp_ca.save_as(&node.dir.pki(), services::CP_CA)?;
    let ak = {
        let tpm = node.tpm.clone();
        tokio::task::spawn_blocking(move || tpm.attestation_key()).await??
    };
    let init = InitData {
        join_config: JoinConfig {
            variant: policy.variant,
            measurements: policy.measurements,
            measurement_salt: req.measurement_salt.clone(),
        },
        master,
        entry: NodeEntry {
            name: me.name.clone(),
            role: me.role.as_str().into(),
            address: me.address.to_string(),
            disk_uuid,
            ak_fingerprint: attestation::vtpm::AkFingerprint::of_tpmt_public(&ak).to_hex(),
            admitted_by: "init".into(),
            admitted_at: unix_now(),
            rejoins: 0,
            last_rejoin_at: None,
        },
    };
    let services = start_control_plane(node, &me, ca, None, Some(init)).await?;

    // The owner's admin certificate comes from the control-plane CA: it reaches etcd.
    let done = Initialized {
        cluster_id,
        cluster_name,
        endpoint: format!("https://{}:{PORT_ETCD_CLIENT}", me.address),
        ca: cp_ca,
    };
    let kubeconfig = done.admin_kubeconfig()?;
    report(Phase::Initialized, services);
    Ok((done, kubeconfig))
}

/// Starts this control-plane node's services: its etcd member (new cluster on the first node,
/// `etcd_join` = the ticket's `--initial-cluster` on a joiner, data on disk on a restart),
/// promotion from learner to voting member, the KeyService (master secret from etcd; `init`
/// puts it there first) and the JoinService.
pub(crate) async fn start_control_plane(
    node: &Arc<Node>,
    me: &NodeRecord,
    ca: Arc<ClusterCa>,
    etcd_join: Option<&str>,
    init: Option<InitData>,
) -> anyhow::Result<Vec<&'static str>> {
    // Control-plane services speak with the control-plane identity only.
    let (cp_ca, pki) = services::control_plane_pki(&node.dir, &me.name, me.address)?;
    // etcd is a component of the image manifest: started from the launcher's measured copy,
    // never from the image folder.
    let etcd_bin = crate::launcher::component(ETCD_BINARY)?;
    let etcd =
        services::start_etcd(&etcd_bin, &node.dir, &me.name, me.address, &pki, etcd_join).await?;
    node.keep.lock().await.push(Keep::Child(etcd));
    if let Some(cluster) = etcd_join {
        promote(me, cluster, &pki).await?;
    }
    let own = vec![format!("https://{}:{PORT_ETCD_CLIENT}", me.address)];
    let store = Store::connect(&own, &pki).await?;
    let master = match init {
        Some(init) => {
            store.put_json(KEY_JOIN_CONFIG, &init.join_config).await?;
            store
                .put_json(KEY_MASTER_SECRET, &MasterSecretRecord::new(&init.master))
                .await?;
            store.put_node(&init.entry).await?;
            init.master
        }
        None => Arc::new(read_master_secret(&store).await?),
    };
    // The KeyService trusts client certificates from the CA the authorisation table names.
    let ks_ca = match cluster::authz::client_ca(cluster::authz::Service::KeyService) {
        Some(cluster::authz::ClientCa::ControlPlane) => &cp_ca,
        Some(cluster::authz::ClientCa::Cluster) => &ca,
        None => anyhow::bail!("the authorisation table gives the KeyService no client CA"),
    };
    let ks = services::serve_keyservice(me.address, ks_ca, &pki, master).await?;
    node.keep.lock().await.push(Keep::Task(ks));
    let js = crate::joinservice::serve(me.clone(), node.metadata.clone(), store, ca, cp_ca, &pki)
        .await?;
    node.keep.lock().await.push(Keep::Task(js));
    Ok(vec!["ca", "etcd", "keyservice", "joinservice"])
}

/// Reads the master secret from etcd; a freshly started member may need a moment.
async fn read_master_secret(store: &Store) -> anyhow::Result<keys::MasterSecret> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match store
            .get_json::<MasterSecretRecord>(KEY_MASTER_SECRET)
            .await
        {
            Ok(Some(r)) => return r.secret(),
            Ok(None) => anyhow::bail!(
                "etcd holds no master secret: the cluster was not initialized by this version"
            ),
            Err(e) if Instant::now() < deadline => {
                tracing::debug!("reading the master secret: {e:#}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Promotes this node's etcd member from learner to voting member once it caught up, through
/// the other members (a learner serves no client requests).
async fn promote(me: &NodeRecord, cluster: &str, pki: &NodePki) -> anyhow::Result<()> {
    let my_peer = format!("https://{}:{PORT_ETCD_PEER}", me.address);
    let others: Vec<String> = cluster
        .split(',')
        .filter_map(|m| m.split_once('=').map(|(_, url)| url))
        .filter(|url| *url != my_peer)
        .map(|url| {
            url.replace(
                &format!(":{PORT_ETCD_PEER}"),
                &format!(":{PORT_ETCD_CLIENT}"),
            )
        })
        .collect();
    if others.is_empty() {
        return Ok(());
    }
    let store = Store::connect(&others, pki).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    while Instant::now() < deadline {
        let mut c = store.client();
        match c.member_list().await {
            Ok(list) => {
                let Some(m) = list
                    .members()
                    .iter()
                    .find(|m| m.peer_urls().contains(&my_peer))
                else {
                    anyhow::bail!("this node's etcd member {my_peer} is not in the member list");
                };
                if !m.is_learner() {
                    return Ok(());
                }
                match c.member_promote(m.id()).await {
                    Ok(_) => {
                        tracing::info!("etcd member promoted to voting member");
                        return Ok(());
                    }
                    Err(e) => last = e.to_string(),
                }
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the etcd member did not catch up within 60 s: {last}")
}
