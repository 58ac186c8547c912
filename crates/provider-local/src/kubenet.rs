//! The node network of a local cluster that runs Kubernetes: a fabric network namespace with a
//! bridge, and per node a network namespace (address `198.18.C.N` on the bridge, its pod CIDR
//! routed between nodes) and a mount namespace, created by the provider as a cloud creates a
//! VPC and instances (crate `kube-node`, module `net`). The node's Kubernetes components run
//! inside them; its Bootstrapper stays on its host-loopback address, where the CLI reaches it.
//!
//! On the host the cluster's API is one endpoint, `<first control plane's address>:6443`,
//! served by a supervised proxy (`constellation-node api-proxy`) that connects into the fabric
//! namespace and tries every control plane, so the API answers while any one of them runs.
//!
//! Namespaces and mounts need root; `terminate` removes everything (namespaces, mounts,
//! cgroups, processes) and restores host sysctls the nodes changed.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use kube_node::net::{ClusterNet, NetError};
use serde::{Deserialize, Serialize};

use crate::process::ProcessRecord;

/// Where cluster networks live (a private bind mount per cluster).
pub const RUN_ROOT: &str = kube_node::net::DEFAULT_RUN_ROOT;

/// The API server port on the host-side endpoint and on every control plane.
pub const API_PORT: u16 = cluster::ports::KUBE_API;

/// The host sysctls a node changed for its kubelet, saved in its folder for `terminate`.
pub const SYSCTLS_FILE: &str = "host-sysctls.json";

/// What `cloud.json` records of a cluster network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeNetRecord {
    pub run_root: PathBuf,
    /// The network's name (`c<cloud uid>`).
    pub name: String,
    /// `C` of `198.18.C.0/24`.
    pub index: u8,
    /// The host-side API endpoint's proxy.
    #[serde(default)]
    pub api_proxy: Option<ProcessRecord>,
    /// The backends the running proxy was started with.
    #[serde(default)]
    pub api_backends: Vec<String>,
}

impl KubeNetRecord {
    pub fn fabric(&self) -> PathBuf {
        self.run_root.join(&self.name).join("fabric.net")
    }
}

/// Kubernetes nodes need root: network and mount namespaces, bind mounts, cgroups.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The lowest `C` (1..=250) no other cluster network under `run_root` uses.
pub fn free_index(run_root: &Path) -> Option<u8> {
    let used: Vec<u8> = std::fs::read_dir(run_root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("cluster")).ok())
        .filter_map(|t| t.lines().next()?.trim().parse().ok())
        .collect();
    (1..=250u8).find(|i| !used.contains(i))
}

/// Creates the cluster network `name`, or opens it when it exists; the caller detaches it.
pub fn create_or_open(record: &KubeNetRecord) -> Result<ClusterNet, NetError> {
    if record.run_root.join(&record.name).join("cluster").is_file() {
        ClusterNet::open(&record.run_root, &record.name)
    } else {
        ClusterNet::create(&record.run_root, &record.name, record.index)
    }
}

/// Adds node `name` if the network has none of that name; returns its address.
pub fn ensure_node(net: &mut ClusterNet, name: &str) -> Result<Ipv4Addr, NetError> {
    if let Some(n) = net.node(name) {
        return Ok(n.address());
    }
    Ok(net.add_node(name)?.address())
}

/// The namespaces of node `name` in the cluster network `record` (for its Bootstrapper).
pub fn node_net(
    run_root: &Path,
    name: &str,
    node: &str,
) -> Result<kube_node::net::NodeNet, NetError> {
    let net = ClusterNet::open(run_root, name)?;
    let found = net.node(node).cloned();
    net.detach();
    found.ok_or_else(|| NetError::NoSuchNode {
        cluster: name.into(),
        node: node.into(),
    })
}

/// Removes node `name` from the network (kills what runs in its namespaces and cgroup).
pub fn remove_node(record: &KubeNetRecord, name: &str) -> Result<(), NetError> {
    if !record.run_root.join(&record.name).exists() {
        return Ok(());
    }
    let mut net = ClusterNet::open(&record.run_root, &record.name)?;
    let r = net.remove_node(name);
    net.detach();
    r
}

/// Removes the whole network; idempotent.
pub fn teardown(record: &KubeNetRecord) -> Result<(), NetError> {
    if !record.run_root.join(&record.name).exists() {
        return Ok(());
    }
    let mut net = ClusterNet::open(&record.run_root, &record.name)?;
    net.teardown()
}

/// Restores the host sysctls the nodes of `node_dirs` changed (newest first).
pub fn restore_sysctls(node_dirs: &[PathBuf]) {
    for dir in node_dirs.iter().rev() {
        let path = dir.join(SYSCTLS_FILE);
        if !path.is_file() {
            continue;
        }
        match kube_node::host::HostSysctls::load(&path) {
            Ok(mut s) => {
                if let Err(e) = s.restore() {
                    tracing::warn!("restoring host sysctls from {}: {e}", path.display());
                }
            }
            Err(e) => tracing::warn!("reading {}: {e}", path.display()),
        }
    }
}

/// Stops whatever a dead node left running inside its namespaces and cgroup (kubelet,
/// containerd, containers), so that the restarted node starts from a clean machine, as after a
/// reboot. The namespaces themselves stay.
pub fn clear_node(record: &KubeNetRecord, name: &str) -> Result<(), kube_node::host::HostError> {
    use kube_node::host;
    let Ok(node) = node_net(&record.run_root, &record.name, name) else {
        return Ok(());
    };
    let (Ok(net), Ok(mnt)) = (host::ns_inode(node.netns()), host::ns_inode(node.mntns())) else {
        return Ok(());
    };
    let timeout = std::time::Duration::from_secs(10);
    host::kill_all(
        &format!("in the namespaces of node {name}"),
        timeout,
        || host::processes_in_namespaces(&[net], &[mnt]),
    )?;
    let cgroup = node.cgroup_parent();
    host::kill_all(&format!("in the cgroup {cgroup}"), timeout, || {
        host::processes_in_cgroup(&cgroup)
    })
}
