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
use std::time::Duration;

use anyhow::Context;
use attestation::Variant;
use cluster::env::NodeEnvironment;
use cluster::inventory::NodeInfo;
use cluster::ports::INIT as PORT_INIT;
use cluster::report::{NodePhase as Phase, NodeReport, NodeState};
use cluster::state::{JoinConfig, NodeEntry};
use cluster_store::unix_now;
use proto::init::api_server::{Api, ApiServer};
use proto::init::{
    init_response, InitFailureResponse, InitRequest, InitResponse, InitSuccessResponse,
};
use tokio::sync::Mutex;
use tonic::{Request, Response, Status};

use crate::control_plane::{start_control_plane, InitData};
use crate::pki::ClusterCa;
use crate::services::{self, NodePki};
use crate::state::NodeDir;

#[derive(Debug, Clone)]
pub struct Args {
    pub name: String,
    pub dir: PathBuf,
    pub tcti: String,
    pub variant: Variant,
}

/// The Init request's deadline: it returns once the control plane (with Kubernetes: the API
/// server and this node Ready) runs.
const INIT_TIMEOUT: Duration = Duration::from_secs(300);

/// Everything the running node holds.
pub(crate) struct Node {
    pub(crate) args: Args,
    pub(crate) dir: NodeDir,
    /// What the provider gives this node: metadata, state disk, components, status sink.
    pub(crate) env: NodeEnvironment,
    /// How this node brings up what runs on top of the cluster state (crate::control_plane).
    pub(crate) strategy: Arc<dyn crate::control_plane::ControlPlane>,
    pub(crate) tpm: Arc<tpm::Tpm>,
    pub(crate) issuer: Arc<dyn attestation::Issuer>,
    /// One-shot: whoever takes it (Init or join) makes this node a cluster member.
    pub(crate) lock: AtomicBool,
    /// Long-running children and tasks, kept alive for the node's lifetime.
    pub(crate) keep: Mutex<Vec<Keep>>,
    /// The last report (the health watch re-reports it with new health).
    last_report: std::sync::Mutex<Option<(Phase, Report)>>,
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
    /// The Kubernetes admin's kubeconfig, when the control-plane strategy runs Kubernetes.
    kube_admin: Option<Vec<u8>>,
}

impl Initialized {
    /// What Init answers: (cluster ID, the owner's etcd credentials, the kubeconfig for
    /// kubectl: the Kubernetes admin's, or the etcd credentials without Kubernetes).
    fn answer(&self) -> anyhow::Result<InitAnswer> {
        let owner = self.admin_kubeconfig()?;
        Ok(InitAnswer {
            cluster_id: self.cluster_id.as_bytes().to_vec(),
            kubeconfig: self.kube_admin.clone().unwrap_or_else(|| owner.clone()),
            owner,
        })
    }

    /// Fresh admin credentials (a new admin certificate) in kubeconfig layout.
    fn admin_kubeconfig(&self) -> anyhow::Result<Vec<u8>> {
        let admin = self.ca.issue_admin(&self.cluster_name)?;
        let creds = cluster::admin::AdminCredentials {
            cluster: self.cluster_name.clone(),
            server: self.endpoint.clone(),
            ca_pem: self.ca.cert_pem.clone(),
            cert_pem: admin.cert_pem,
            key_pem: admin.key_pem,
        };
        Ok(creds.to_kubeconfig().as_bytes().to_vec())
    }
}

struct InitAnswer {
    cluster_id: Vec<u8>,
    owner: Vec<u8>,
    kubeconfig: Vec<u8>,
}

#[allow(dead_code)]
pub(crate) enum Keep {
    Child(tokio::process::Child),
    Task(tokio::task::JoinHandle<()>),
}

/// What a report to `status.json` says besides the phase.
#[derive(Default, Clone, PartialEq, Eq)]
pub(crate) struct Report {
    pub(crate) cluster_id: Option<String>,
    pub(crate) services: Vec<String>,
    pub(crate) error: Option<String>,
    pub(crate) admitted_by: Option<String>,
    pub(crate) kubernetes: Option<String>,
}

/// How often a member checks what its control-plane strategy runs.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);

impl Node {
    /// Re-reports every second the health of what the strategy runs (Kubernetes: Ready,
    /// or which component is down and why), keeping the rest of the last report.
    pub(crate) async fn watch_health(self: &Arc<Self>) {
        let node = self.clone();
        let task = tokio::spawn(async move {
            let mut first = true;
            loop {
                if !std::mem::take(&mut first) {
                    tokio::time::sleep(HEALTH_INTERVAL).await;
                }
                let health = match node.strategy.health().await {
                    None => continue,
                    Some(Ok(())) => "Ready".to_string(),
                    Some(Err(why)) => format!("NotReady: {why}"),
                };
                node.report_health(health);
            }
        });
        self.keep.lock().await.push(Keep::Task(task));
    }

    /// The last report again with new Kubernetes health, if it changed (one critical section
    /// with the write, so a concurrent report of the state machine is never overwritten by an
    /// older phase).
    fn report_health(&self, health: String) {
        let mut last = self
            .last_report
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some((phase, mut r)) = last.clone() else {
            return;
        };
        if r.kubernetes.as_deref() == Some(health.as_str()) {
            return;
        }
        if health != "Ready" {
            tracing::warn!("Kubernetes: {health}");
        }
        r.kubernetes = Some(health);
        *last = Some((phase, r.clone()));
        self.write_report(phase, r);
    }

    pub(crate) fn report(&self, phase: Phase, mut r: Report) {
        // Held until the file is written: reports from the health watch and the state machine
        // never interleave (the last one in memory is the one on disk).
        let mut last = self
            .last_report
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // The health watch's last finding stays until it finds otherwise.
        if r.kubernetes.is_none() {
            r.kubernetes = last.as_ref().and_then(|(_, l)| l.kubernetes.clone());
        }
        *last = Some((phase, r.clone()));
        self.write_report(phase, r);
    }

    fn write_report(&self, phase: Phase, r: Report) {
        let pcr15 = self
            .tpm
            .read_pcrs_sha256()
            .ok()
            .and_then(|p| p.get(&15).map(hex::encode));
        let s = NodeReport {
            cluster_id: r.cluster_id,
            pcr15,
            services: r.services,
            error: r.error,
            admitted_by: r.admitted_by,
            pid: std::process::id(),
            measurement_salt: self
                .dir
                .read_node_state()
                .map(|s| hex::encode(s.measurement_salt)),
            kubernetes: r.kubernetes,
            ..NodeReport::new(phase)
        };
        if let Err(e) = self.env.reporter.report(&s) {
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

    pub(crate) fn me(&self) -> anyhow::Result<NodeInfo> {
        Ok(self.env.metadata.cluster()?.node(&self.args.name)?.clone())
    }

    /// This node as a control-plane strategy sees it.
    pub(crate) fn member<'a>(&'a self, me: &'a NodeInfo) -> crate::control_plane::Member<'a> {
        crate::control_plane::Member {
            me,
            dir: &self.dir,
            env: &self.env,
        }
    }

    /// This node's record, waiting out transient errors (the provider's metadata briefly
    /// unavailable): retries with backoff from 50 ms doubling to 2 s, for as long as it
    /// takes, logging each new error. A node never exits because its metadata hiccupped.
    pub(crate) async fn me_retrying(&self) -> NodeInfo {
        let mut pause = Duration::from_millis(50);
        let mut last = String::new();
        loop {
            match self.me() {
                Ok(n) => return n,
                Err(e) => {
                    let msg = format!("{e:#}");
                    if msg != last {
                        tracing::warn!("metadata unavailable, retrying: {msg}");
                        last = msg;
                    }
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
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

/// Runs the node daemon in the environment its provider gives it, bringing up the control
/// plane with `strategy`.
pub async fn run(
    args: Args,
    env: NodeEnvironment,
    strategy: Arc<dyn crate::control_plane::ControlPlane>,
) -> anyhow::Result<()> {
    raise_fd_limit();
    let dir = NodeDir(args.dir.clone());
    let tpm = {
        let tcti = args.tcti.clone();
        Arc::new(tokio::task::spawn_blocking(move || tpm::Tpm::open(&tcti)).await??)
    };
    let issuer: Arc<dyn attestation::Issuer> =
        Arc::new(tpm::TpmIssuer::new(tpm.clone(), args.variant)?);
    let node = Arc::new(Node {
        args: args.clone(),
        dir,
        env,
        strategy,
        tpm,
        issuer,
        lock: AtomicBool::new(false),
        keep: Mutex::new(vec![]),
        last_report: std::sync::Mutex::new(None),
        init: Mutex::new(None),
    });
    let me = node.me_retrying().await;

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
    let served = atls::guard::server_with_timeout(INIT_TIMEOUT)
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
            .env
            .metadata
            .cluster()
            .map_err(|_| Status::unavailable("metadata unavailable"))?
            .init_secret_hash
            .clone();
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
            Ok(a) => InitResponse {
                kind: Some(init_response::Kind::InitSuccess(InitSuccessResponse {
                    kubeconfig: a.kubeconfig,
                    owner_id: vec![],
                    cluster_id: a.cluster_id,
                    owner_credentials: a.owner,
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
) -> Result<Result<InitAnswer, String>, Status> {
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
        let answer = prev
            .answer()
            .map_err(|e| Status::internal(format!("{e:#}")))?;
        return Ok(Ok(answer));
    }
    if node.lock.swap(true, Ordering::SeqCst) {
        return Err(Status::failed_precondition(
            "node is already being activated",
        ));
    }
    match initialize(node, req).await {
        Ok(init) => {
            let answer = init
                .answer()
                .map_err(|e| Status::internal(format!("{e:#}")))?;
            *done = Some(init);
            Ok(Ok(answer))
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

async fn initialize(node: &Arc<Node>, req: &InitRequest) -> anyhow::Result<Initialized> {
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
    let disk_uuid = node.env.disk.uuid().context("reading the disk UUID")?;
    let disk_key = master.data_key(&disk_uuid, 32)?;
    node.env.disk.open(disk_key.expose())?;
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
        join_config: JoinConfig::new(
            policy.variant,
            policy.measurements,
            req.measurement_salt.clone(),
        ),
        master,
        entry: NodeEntry {
            version: cluster::state::STATE_VERSION,
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
    let kube_admin = node.strategy.admin_kubeconfig(node.member(&me)).await?;

    // The owner's admin certificate comes from the control-plane CA: it reaches etcd.
    let done = Initialized {
        cluster_id,
        cluster_name,
        endpoint: node.strategy.admin_endpoint(me.address),
        ca: cp_ca,
        kube_admin,
    };
    report(Phase::Initialized, services);
    node.watch_health().await;
    Ok(done)
}
