//! The Kubernetes control-plane strategy: on top of the cluster state (etcd, KeyService,
//! JoinService) every member runs a Kubernetes node in the namespaces its provider created
//! (crate `kube-node`): containerd, kubelet and kube-proxy everywhere; kube-apiserver,
//! kube-controller-manager and kube-scheduler on control planes, on the cluster's own etcd
//! (reached from inside the node through a forwarder to the host-side members).
//!
//! Who gets what: the first control plane initializes Kubernetes (kubeadm certificates,
//! CoreDNS); a joiner's ticket carries its credentials, issued by the JoinService's control
//! plane only after attestation: a worker gets a `system:node:<name>` kubelet certificate and
//! a kube-proxy certificate (`WorkerJoin`), a control plane the cluster's shared Kubernetes keys
//! (`ControlPlaneJoin`). A refused node gets neither and never appears in `kubectl get nodes`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cluster::inventory::NodeInfo;
use cluster::ports::{ETCD_CLIENT as PORT_ETCD_CLIENT, KUBE_API};
use cluster::Role;
use kube_node::control_plane::KubeBinaries;
use kube_node::join::{ControlPlaneJoin, WorkerJoin};
use kube_node::net::NodeNet;
use kube_node::node::{ClusterSpec, Etcd, HostEtcd, KubeNode, NodeSetup};

use crate::control_plane::{ControlPlane, Member};

/// Ticket file names of the Kubernetes join data (JSON; kube-node's names).
pub use kube_node::join::{
    CONTROL_PLANE_JOIN_FILE as TICKET_CONTROL_PLANE_JOIN, WORKER_JOIN_FILE as TICKET_WORKER_JOIN,
};

/// Finds this node's namespaces (created by the provider).
pub type NetResolver = Arc<dyn Fn() -> anyhow::Result<NodeNet> + Send + Sync>;

/// Where the node saves the host sysctls it changed (the provider restores them at terminate).
pub type SysctlRecord = Arc<dyn Fn() -> PathBuf + Send + Sync>;

pub struct Kubernetes {
    net: NetResolver,
    sysctls: SysctlRecord,
    node: tokio::sync::Mutex<Option<KubeNode>>,
}

impl std::fmt::Debug for Kubernetes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kubernetes")
    }
}

impl Kubernetes {
    pub fn new(net: NetResolver, sysctls: SysctlRecord) -> Self {
        Kubernetes {
            net,
            sysctls,
            node: tokio::sync::Mutex::new(None),
        }
    }

    fn setup(&self, member: &Member<'_>) -> anyhow::Result<NodeSetup> {
        let kubelet = member.env.components.path("kubelet")?;
        let bins = KubeBinaries::locate(kubelet.parent().context("kubelet has no folder")?)?;
        let images = cluster::ids::COMPONENT_IMAGE_ARCHIVES
            .iter()
            .map(|n| member.env.components.path(n))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(NodeSetup {
            bins,
            net: (self.net)()?,
            // Short: containerd's socket path must fit in 107 bytes.
            dir: member.dir.0.join("k"),
            images,
            deadline: Duration::from_secs(180),
        })
    }

    /// The host sysctls kubelet needs, set once; what changed is recorded for terminate.
    fn host_sysctls(&self) -> anyhow::Result<()> {
        let s = kube_node::host::HostSysctls::for_kubelet()?;
        if !s.changed().is_empty() {
            s.save(&(self.sysctls)())?;
        }
        s.detach();
        Ok(())
    }

    fn cluster_spec(&self, member: &Member<'_>, me: &NodeInfo) -> anyhow::Result<ClusterSpec> {
        let cluster = member.env.metadata.cluster()?;
        let pki = member.dir.pki();
        // This node's etcd member first, then the others.
        let mut members: Vec<SocketAddr> = vec![SocketAddr::from((me.address, PORT_ETCD_CLIENT))];
        members.extend(
            cluster
                .control_planes()
                .filter(|n| n.name != me.name)
                .map(|n| SocketAddr::from((n.address, PORT_ETCD_CLIENT))),
        );
        let endpoint = cluster.endpoint().unwrap_or(me.address);
        Ok(ClusterSpec {
            cluster_name: cluster.name.clone(),
            extra_sans: vec![endpoint.to_string(), me.address.to_string()],
            etcd: Etcd::Host(HostEtcd {
                members,
                ca_file: pki.join(format!("{}.crt", crate::services::CP_CA)),
                cert_file: pki.join("cp.crt"),
                key_file: pki.join("cp.key"),
            }),
            coredns: true,
        })
    }

    /// The ticket file `name` kept in the node's state ([`save_ticket_files`]), as the
    /// `(name, bytes)` pair kube-node's validating parsers take; `None`: the ticket had none.
    fn ticket_file(member: &Member<'_>, name: &str) -> anyhow::Result<Option<TicketFiles>> {
        match std::fs::read(saved_path(member.dir, name)) {
            Ok(data) => Ok(Some(vec![(name.to_string(), data)])),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::Error::new(e).context(format!("reading the ticket's {name}"))),
        }
    }
}

/// `(name, bytes)` files of a join ticket.
type TicketFiles = Vec<(String, Vec<u8>)>;

fn saved_path(dir: &crate::state::NodeDir, name: &str) -> PathBuf {
    dir.state().join(name.replace('/', "-"))
}

/// Writes the strategy's ticket files into the node's state (owner-only), for its start and
/// its restarts.
pub fn save_ticket_files(
    dir: &crate::state::NodeDir,
    files: &[(String, Vec<u8>)],
) -> anyhow::Result<()> {
    for (name, data) in files {
        if name == TICKET_WORKER_JOIN || name == TICKET_CONTROL_PLANE_JOIN {
            crate::state::write_atomic(&saved_path(dir, name), data, 0o600)?;
        }
    }
    Ok(())
}

#[tonic::async_trait]
impl ControlPlane for Kubernetes {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    async fn start_control_plane(&self, member: Member<'_>) -> anyhow::Result<Vec<&'static str>> {
        self.host_sysctls()?;
        let setup = self.setup(&member)?;
        let spec = self.cluster_spec(&member, member.me)?;
        let node = if let Some(files) = Self::ticket_file(&member, TICKET_CONTROL_PLANE_JOIN)? {
            let data = ControlPlaneJoin::from_ticket_files(&files)
                .context("the ticket's Kubernetes control-plane join data")?;
            KubeNode::control_plane_join(&setup, &spec, &data).await?
        } else {
            KubeNode::control_plane_init(&setup, &spec).await?
        };
        *self.node.lock().await = Some(node);
        tracing::info!("Kubernetes control plane running");
        Ok(vec![
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kubelet",
            "kube-proxy",
            "containerd",
        ])
    }

    async fn start_worker(&self, member: Member<'_>) -> anyhow::Result<Vec<&'static str>> {
        let Some(files) = Self::ticket_file(&member, TICKET_WORKER_JOIN)? else {
            // Admitted by a control plane without Kubernetes: nothing to run.
            return Ok(vec![]);
        };
        let data = WorkerJoin::from_ticket_files(&files)
            .context("the ticket's Kubernetes worker join data")?;
        self.host_sysctls()?;
        let setup = self.setup(&member)?;
        let node = KubeNode::worker_join(&setup, &data).await?;
        *self.node.lock().await = Some(node);
        tracing::info!("Kubernetes worker running");
        Ok(vec!["kubelet", "kube-proxy", "containerd"])
    }

    async fn admin_kubeconfig(&self, member: Member<'_>) -> anyhow::Result<Option<Vec<u8>>> {
        let guard = self.node.lock().await;
        let Some(cp) = guard.as_ref().and_then(|n| n.control_plane()) else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(cp.paths().admin_kubeconfig())
            .context("reading the Kubernetes admin kubeconfig")?;
        // The owner reaches the API through the provider's host-side endpoint.
        let cluster = member.env.metadata.cluster()?;
        let endpoint = cluster.endpoint().unwrap_or(member.me.address);
        let server = format!("https://{endpoint}:{KUBE_API}");
        let out: String = text
            .lines()
            .map(|l| match l.trim_start().strip_prefix("server:") {
                Some(_) => {
                    let indent = &l[..l.len() - l.trim_start().len()];
                    format!("{indent}server: {server}\n")
                }
                None => format!("{l}\n"),
            })
            .collect();
        Ok(Some(out.into_bytes()))
    }

    async fn ticket_files(
        &self,
        member: Member<'_>,
        joiner: &NodeInfo,
    ) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        let guard = self.node.lock().await;
        let Some(node) = guard.as_ref() else {
            return Ok(vec![]);
        };
        if node.control_plane().is_none() {
            return Ok(vec![]);
        }
        match joiner.role {
            Role::Worker => {
                let cluster = member.env.metadata.cluster()?;
                let servers: Vec<SocketAddr> = cluster
                    .control_planes()
                    .filter_map(|n| n.internal_address)
                    .map(|a: Ipv4Addr| SocketAddr::from((a, KUBE_API)))
                    .collect();
                Ok(vec![node
                    .worker_join_for(&joiner.name, &servers)?
                    .to_ticket_file()])
            }
            Role::ControlPlane => Ok(vec![node.control_plane_join_data()?.to_ticket_file()]),
        }
    }

    async fn health(&self) -> Option<Result<(), String>> {
        let mut guard = self.node.lock().await;
        let node = guard.as_mut()?;
        Some(node.health().map_err(|e| e.to_string()))
    }

    fn admin_endpoint(&self, address: Ipv4Addr) -> String {
        format!("https://{address}:{PORT_ETCD_CLIENT}")
    }
}
