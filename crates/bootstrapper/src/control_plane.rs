//! Control-plane bring-up: the cluster-state services every control-plane node runs (its
//! etcd member, the KeyService, the JoinService), then whatever the node's [`ControlPlane`]
//! strategy runs on top of that state.
//!
//! Strategies: [`EtcdOnly`] (the cluster state and its services, nothing more: the fast mode
//! for tests of the attestation core); a Kubernetes strategy adds the API server, controller
//! manager, scheduler and kubelet on the same etcd.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster::inventory::NodeInfo;
use cluster::ports::{ETCD_CLIENT as PORT_ETCD_CLIENT, ETCD_PEER as PORT_ETCD_PEER};
use cluster::state::{
    JoinConfig, MasterSecretRecord, NodeEntry, KEY_JOIN_CONFIG, KEY_MASTER_SECRET,
};
use cluster_store::Store;

use crate::pki::ClusterCa;
use crate::run::{Keep, Node};
use crate::services::{self, NodePki};

/// A member node as a strategy sees it.
#[derive(Debug, Clone, Copy)]
pub struct Member<'a> {
    pub me: &'a NodeInfo,
    /// The node's state folder (its state disk, open).
    pub dir: &'a crate::state::NodeDir,
    pub env: &'a cluster::env::NodeEnvironment,
}

/// What runs on a member node on top of the cluster state.
#[tonic::async_trait]
pub trait ControlPlane: Send + Sync {
    /// Short name (in status and logs).
    fn name(&self) -> &'static str;
    /// Starts this strategy's control-plane components on a control-plane node whose etcd
    /// member, KeyService and JoinService run; returns the names of what it started.
    async fn start_control_plane(&self, member: Member<'_>) -> anyhow::Result<Vec<&'static str>>;
    /// Starts this strategy's components on an admitted worker.
    async fn start_worker(&self, member: Member<'_>) -> anyhow::Result<Vec<&'static str>>;
    /// After Init on the first control plane: the kubeconfig for the owner's kubectl, when
    /// this strategy runs an API of its own (`None`: the owner's etcd credentials serve).
    async fn admin_kubeconfig(&self, member: Member<'_>) -> anyhow::Result<Option<Vec<u8>>>;
    /// What a joiner's ticket carries for this strategy (e.g. Kubernetes credentials), issued
    /// on the control plane `member` for `joiner`.
    async fn ticket_files(
        &self,
        member: Member<'_>,
        joiner: &NodeInfo,
    ) -> anyhow::Result<Vec<(String, Vec<u8>)>>;
    /// Whether what this strategy runs on the node is healthy (`None`: nothing to watch).
    async fn health(&self) -> Option<Result<(), String>> {
        None
    }
    /// The server of the owner's admin credentials for a cluster whose first control plane
    /// has `address`.
    fn admin_endpoint(&self, address: Ipv4Addr) -> String;
}

/// The cluster state and its services only: the admin credentials reach etcd.
#[derive(Debug, Default)]
pub struct EtcdOnly;

#[tonic::async_trait]
impl ControlPlane for EtcdOnly {
    fn name(&self) -> &'static str {
        "etcd-only"
    }
    async fn start_control_plane(&self, _: Member<'_>) -> anyhow::Result<Vec<&'static str>> {
        Ok(vec![])
    }
    async fn start_worker(&self, _: Member<'_>) -> anyhow::Result<Vec<&'static str>> {
        Ok(vec![])
    }
    async fn admin_kubeconfig(&self, _: Member<'_>) -> anyhow::Result<Option<Vec<u8>>> {
        Ok(None)
    }
    async fn ticket_files(
        &self,
        _: Member<'_>,
        _: &NodeInfo,
    ) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        Ok(vec![])
    }
    fn admin_endpoint(&self, address: Ipv4Addr) -> String {
        format!("https://{address}:{PORT_ETCD_CLIENT}")
    }
}

/// What only the first control-plane node puts into etcd.
pub(crate) struct InitData {
    pub(crate) join_config: JoinConfig,
    pub(crate) master: Arc<keys::MasterSecret>,
    pub(crate) entry: NodeEntry,
}

/// Starts this control-plane node's services: its etcd member (new cluster on the first node,
/// `etcd_join` = the ticket's `--initial-cluster` on a joiner, data on disk on a restart),
/// promotion from learner to voting member, the KeyService (master secret from etcd; `init`
/// puts it there first) and the JoinService.
pub(crate) async fn start_control_plane(
    node: &Arc<Node>,
    me: &NodeInfo,
    ca: Arc<ClusterCa>,
    etcd_join: Option<&str>,
    init: Option<InitData>,
) -> anyhow::Result<Vec<&'static str>> {
    // Control-plane services speak with the control-plane identity only.
    let (cp_ca, pki) = services::control_plane_pki(&node.dir, &me.name, me.address)?;
    // etcd is a component of the image manifest: started from the launcher's measured copy,
    // never from the image folder.
    let etcd_bin = node.env.components.path(cluster::ids::COMPONENT_ETCD)?;
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
    // The strategy before the JoinService: tickets carry what the strategy issues (Kubernetes
    // credentials), so no node is admitted before it runs.
    let started = node.strategy.start_control_plane(node.member(me)).await?;
    let js = crate::backends::serve_joinservice(node, me, store, ca, cp_ca, &pki).await?;
    node.keep.lock().await.push(Keep::Task(js));
    let mut services = vec!["ca", "etcd", "keyservice", "joinservice"];
    services.extend(started);
    Ok(services)
}

/// Reads the master secret from etcd; a freshly started member may need a moment.
async fn read_master_secret(store: &Store) -> anyhow::Result<keys::MasterSecret> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match store
            .get_json::<MasterSecretRecord>(KEY_MASTER_SECRET)
            .await
        {
            Ok(Some(r)) => return Ok(r.secret()?),
            Ok(None) => anyhow::bail!(
                "etcd holds no master secret: the cluster was not initialized by this version"
            ),
            Err(e) if Instant::now() < deadline => {
                tracing::debug!("reading the master secret: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Promotes this node's etcd member from learner to voting member once it caught up, through
/// the other members (a learner serves no client requests).
async fn promote(me: &NodeInfo, cluster: &str, pki: &NodePki) -> anyhow::Result<()> {
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
