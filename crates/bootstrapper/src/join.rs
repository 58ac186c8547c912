//! The Bootstrapper's join path (lifecycle steps 7–10): find the JoinServices of the
//! control-plane nodes through metadata, attest to one of them as the aTLS client, receive
//! the join ticket, and become a member: derive the cluster ID, extend PCR 15, persist the
//! node state, open the disk, start services. A restarted member rejoins with
//! `IssueRejoinTicket` instead.
//!
//! Every control-plane endpoint is tried in random order; rounds repeat with exponential
//! backoff and jitter (100 ms doubling to 500 ms), so a node joins as soon as a JoinService
//! answers and many nodes do not hammer the same one in lockstep.

use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cluster::ids::ticket;
use cluster::inventory::NodeInfo;
use cluster::ports::JOIN as PORT_JOIN;
use cluster::report::{NodePhase as Phase, NodeState};
use cluster::Role;
use proto::join::api_client::ApiClient as JoinClient;
use proto::join::{IssueJoinTicketRequest, IssueJoinTicketResponse, IssueRejoinTicketRequest};
use rand::seq::SliceRandom;
use rand::Rng;
use rcgen::{CertificateParams, DnType, KeyPair};
use tonic::Code;

use crate::control_plane::start_control_plane;
use crate::pki::ClusterCa;
use crate::run::{Node, Report};
use crate::state::write_atomic;

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_millis(500);
/// Per-call limit (the handshake includes a TPM quote on this node).
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Self(BACKOFF_START)
    }
    /// Sleeps for the current delay with ±50 % jitter, then doubles it.
    async fn wait(&mut self) {
        let jitter = rand::thread_rng().gen_range(0.5..1.5);
        tokio::time::sleep(self.0.mul_f64(jitter)).await;
        self.0 = (self.0 * 2).min(BACKOFF_MAX);
    }
}

/// Why one attempt at one JoinService did not give a ticket.
enum Attempt {
    /// The JoinService refused this node (attestation, identity): worth reporting.
    Refused(String),
    /// Not reachable, not ready, or busy: try another one.
    Retry(String),
}

fn classify(s: tonic::Status) -> Attempt {
    match s.code() {
        Code::PermissionDenied | Code::NotFound | Code::InvalidArgument => {
            Attempt::Refused(s.message().to_string())
        }
        _ => Attempt::Retry(format!("{:?}: {}", s.code(), s.message())),
    }
}

async fn dial(node: &Node, ep: Ipv4Addr) -> Result<JoinClient<tonic::transport::Channel>, Attempt> {
    let cfg = atls::client::ClientConfig::new(Some(node.issuer.clone()), vec![]);
    let (channel, _) = atls::client::connect(&format!("{ep}:{PORT_JOIN}"), &cfg)
        .await
        .map_err(|e| Attempt::Retry(format!("{:#}", anyhow::Error::new(e))))?;
    Ok(JoinClient::new(channel))
}

/// Control-plane endpoints except this node, shuffled.
fn endpoints(node: &Node) -> anyhow::Result<Vec<(String, Ipv4Addr)>> {
    let cloud = node.env.metadata.cluster()?;
    let mut eps: Vec<(String, Ipv4Addr)> = cloud
        .control_planes()
        .filter(|n| n.name != node.args.name)
        .map(|n| (n.name.clone(), n.address))
        .collect();
    eps.shuffle(&mut rand::thread_rng());
    Ok(eps)
}

/// Tracks what the node last reported, so retries do not rewrite `status.json` each round.
struct Reporter<'a> {
    node: &'a Node,
    last: Option<String>,
}

impl Reporter<'_> {
    fn refused(&mut self, who: &str, why: &str) {
        self.phase(Phase::Refused, format!("join refused by {who}: {why}"));
    }

    fn phase(&mut self, phase: Phase, msg: String) {
        if self.last.as_deref() != Some(msg.as_str()) {
            tracing::warn!("{msg}");
            self.node.report(
                phase,
                Report {
                    error: Some(msg.clone()),
                    ..Report::default()
                },
            );
            self.last = Some(msg);
        }
    }
}

/// Asks the JoinServices of all other control-plane nodes, shuffled, in rounds with backoff,
/// until one answers `call` with a ticket. Refusals are reported (status `refused`, with the
/// JoinService's reason); unreachable or busy ones are tried again. `None` once `stop()`.
/// `stuck`: what to report (phase `awaiting-recovery`) after a round in which no JoinService
/// answered at all, or when there is no other control-plane node to ask.
async fn ask_joinservices<T, F, Fut>(
    node: &Node,
    what: &str,
    stuck: Option<&str>,
    stop: impl Fn() -> bool,
    mut call: F,
) -> anyhow::Result<Option<(String, T)>>
where
    F: FnMut(JoinClient<tonic::transport::Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let mut backoff = Backoff::new();
    let mut reporter = Reporter { node, last: None };
    loop {
        // Checked before every round: a lone control plane has no endpoint to loop over, and
        // must still stop asking once Init made it a member.
        if stop() {
            return Ok(None);
        }
        let eps = match endpoints(node) {
            Ok(eps) => eps,
            Err(e) => {
                // Transient (the provider rewriting its file): report, wait, try again.
                if !stop() {
                    let phase = if stuck.is_some() {
                        Phase::Joining
                    } else {
                        Phase::Waiting
                    };
                    reporter.phase(phase, format!("metadata unavailable, retrying: {e:#}"));
                }
                backoff.wait().await;
                continue;
            }
        };
        let mut answered = false;
        for (who, ep) in eps {
            if stop() {
                return Ok(None);
            }
            let attempt = async { call(dial(node, ep).await?).await.map_err(classify) };
            match tokio::time::timeout(CALL_TIMEOUT, attempt).await {
                Ok(Ok(t)) => return Ok(Some((who, t))),
                Ok(Err(Attempt::Refused(why))) => {
                    answered = true;
                    reporter.refused(&who, &why);
                }
                Ok(Err(Attempt::Retry(why))) => tracing::debug!(%who, "{what}: {why}"),
                Err(_) => tracing::debug!(%who, "{what} timed out"),
            }
        }
        if let (false, Some(why)) = (answered, stuck) {
            reporter.phase(Phase::AwaitingRecovery, why.to_string());
        }
        backoff.wait().await;
    }
}

/// Joins as a new node; returns when this node is a member, or when Init took the node lock.
pub(crate) async fn join(node: &Arc<Node>) -> anyhow::Result<()> {
    let me = node.me_retrying().await;
    let disk_uuid = node.env.disk.uuid().context("creating the disk UUID")?;
    let key = KeyPair::generate().context("generating the node key")?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, &me.name);
    let req = IssueJoinTicketRequest {
        disk_uuid,
        certificate_request: params.serialize_request(&key)?.der().to_vec(),
        is_control_plane: me.role == Role::ControlPlane,
        ..Default::default()
    };
    let stop = || node.lock.load(Ordering::SeqCst);
    let asked = ask_joinservices(node, "join attempt", None, stop, |mut c| {
        let req = req.clone();
        async move { c.issue_join_ticket(req).await.map(|r| r.into_inner()) }
    })
    .await?;
    let Some((who, ticket)) = asked else {
        return Ok(());
    };
    if node.lock.swap(true, Ordering::SeqCst) {
        tracing::warn!("Init won the node lock; dropping the join ticket");
        return Ok(());
    }
    admit(node, &me, &who, ticket, &key).await
}

/// Becomes a member with a join ticket (the node lock is already taken).
async fn admit(
    node: &Arc<Node>,
    me: &NodeInfo,
    who: &str,
    t: IssueJoinTicketResponse,
    key: &KeyPair,
) -> anyhow::Result<()> {
    let ms = keys::MeasurementSecret::from_slice(&t.measurement_secret)
        .context("the ticket's measurement secret")?;
    let cluster_id = ms.cluster_id(&t.measurement_salt);
    node.report(
        Phase::Joining,
        Report {
            cluster_id: Some(cluster_id.to_hex()),
            admitted_by: Some(who.into()),
            ..Report::default()
        },
    );
    node.mark_member(&cluster_id).await?;
    node.env.disk.open(&t.state_disk_key)?;

    let file = |name: &str| {
        t.control_plane_files
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.data.clone())
    };
    let pki = node.pki();
    let is_cp = me.role == Role::ControlPlane;
    let ca_pem = file(ticket::CA_CERT).context("the ticket has no cluster CA certificate")?;
    write_atomic(&pki.ca, &ca_pem, 0o644)?;
    write_atomic(&pki.cert, &t.kubelet_cert, 0o644)?;
    write_atomic(&pki.key, key.serialize_pem().as_bytes(), 0o600)?;
    if is_cp {
        let ca_key = zeroize::Zeroizing::new(
            file(ticket::CA_KEY).context("the control-plane ticket has no CA key")?,
        );
        write_atomic(&node.dir.pki().join("ca.key"), &ca_key, 0o600)?;
        let cp_ca_key = zeroize::Zeroizing::new(
            file(ticket::CP_CA_KEY)
                .context("the control-plane ticket has no control-plane CA key")?,
        );
        let cp_ca = file(ticket::CP_CA_CERT)
            .context("the control-plane ticket has no control-plane CA certificate")?;
        write_atomic(&node.dir.pki().join(ticket::CP_CA_CERT), &cp_ca, 0o644)?;
        write_atomic(&node.dir.pki().join(ticket::CP_CA_KEY), &cp_ca_key, 0o600)?;
        let initial = file(ticket::ETCD_INITIAL_CLUSTER)
            .context("the control-plane ticket has no etcd membership")?;
        write_atomic(&node.dir.etcd_initial_cluster(), &initial, 0o644)?;
    }
    // What the control-plane strategy needs (Kubernetes join data), kept for restarts.
    let strategy_files: Vec<(String, Vec<u8>)> = t
        .control_plane_files
        .iter()
        .map(|f| (f.name.clone(), f.data.clone()))
        .collect();
    crate::kubernetes::save_ticket_files(&node.dir, &strategy_files)?;
    node.dir
        .write_node_state(&NodeState {
            role: if is_cp { "ControlPlane" } else { "Worker" }.into(),
            measurement_salt: t.measurement_salt.clone(),
        })
        .context("persisting the node state")?;
    serve_as_member(node, me, &cluster_id, who.to_string()).await
}

/// Rejoins after a restart: the node's disk is provisioned; a JoinService gives back the disk
/// key and the measurement secret after checking the node's attestation and registry entry.
pub(crate) async fn rejoin(node: &Arc<Node>, state: &NodeState) -> anyhow::Result<()> {
    let me = node.me_retrying().await;
    let disk_uuid = node.env.disk.uuid().context("reading the disk UUID")?;
    let req = IssueRejoinTicketRequest {
        disk_uuid: disk_uuid.clone(),
    };
    node.report(Phase::Joining, Report::default());
    // A control-plane node can also be given its keys by the owner (all control planes down).
    let mut recovery = match me.role {
        Role::ControlPlane => {
            Some(crate::recovery::serve(node.clone(), me.address, disk_uuid).await?)
        }
        Role::Worker => None,
    };
    let stuck = recovery.as_ref().map(|_| {
        "no JoinService answered; if every control-plane node went down, run `constellation recover`"
    });
    let ask = ask_joinservices(
        node,
        "rejoin attempt",
        stuck,
        || false,
        |mut c| {
            let req = req.clone();
            async move { c.issue_rejoin_ticket(req).await.map(|r| r.into_inner()) }
        },
    );
    let recovered = async {
        match recovery.as_mut() {
            Some(r) => r.recovered().await,
            None => std::future::pending().await,
        }
    };
    let (who, ms) = tokio::select! {
        asked = ask => {
            let Some((who, ticket)) = asked? else {
                anyhow::bail!("internal error: the rejoin loop stopped without a ticket");
            };
            node.env.disk.open(&ticket.state_disk_key)?;
            let ms = keys::MeasurementSecret::from_slice(&ticket.measurement_secret)
                .context("the ticket's measurement secret")?;
            (format!("{who} (rejoin)"), ms)
        }
        ms = recovered => (cluster::ids::RECOVERED_BY.to_string(), ms),
    };
    drop(recovery);
    let cluster_id = ms.cluster_id(&state.measurement_salt);
    node.lock.store(true, Ordering::SeqCst);
    node.mark_member(&cluster_id).await?;
    serve_as_member(node, &me, &cluster_id, who).await
}

/// The common end of join and rejoin (PCR 15 extended, disk open, PKI on disk): a control-plane
/// node starts its services (etcd membership from `state/etcd-initial-cluster`), then the node
/// reports `joined`.
async fn serve_as_member(
    node: &Arc<Node>,
    me: &NodeInfo,
    cluster_id: &keys::ClusterId,
    admitted_by: String,
) -> anyhow::Result<()> {
    let services = if me.role == Role::ControlPlane {
        let ca = Arc::new(ClusterCa::load(&node.dir.pki())?);
        let initial = std::fs::read_to_string(node.dir.etcd_initial_cluster()).ok();
        start_control_plane(node, me, ca, initial.as_deref(), None).await?
    } else {
        node.strategy.start_worker(node.member(me)).await?
    };
    tracing::info!(%admitted_by, "member of the cluster");
    node.watch_health().await;
    node.report(
        Phase::Joined,
        Report {
            cluster_id: Some(cluster_id.to_hex()),
            services: services.into_iter().map(String::from).collect(),
            admitted_by: Some(admitted_by),
            ..Report::default()
        },
    );
    Ok(())
}
