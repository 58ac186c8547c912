//! The infrastructure phase of the local provider: make the local cloud match the wanted node
//! groups. Re-runnable: every step checks what exists, and the state file is saved after each
//! step, so an interrupted run is completed by the next one and nothing is created twice.
//!
//! Per node: a folder, a detached `swtpm` (its state kept across restarts), the vTPM's
//! attestation key recorded in the cloud state (the provider vouches for it), and the node
//! process, started through the launcher (`constellation-node launch`), which measures the image
//! into that TPM before the Bootstrapper runs.

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use attestation::Variant;
use tpm::swtpm::{Swtpm, SwtpmConfig};

use crate::cloud::{
    CloudError, CloudState, NodeRecord, Role, PORT_ETCD_CLIENT, PORT_ETCD_PEER, PORT_INIT,
    PORT_JOIN, PORT_KEYSERVICE, PORT_RECOVERY, PORT_VERIFY,
};
use crate::image::NodeImage;
use crate::process::{spawn_detached, ProcessError, ProcessRecord};

#[derive(Debug, thiserror::Error)]
pub enum InfraError {
    #[error(transparent)]
    Cloud(#[from] CloudError),
    #[error("starting the TPM of node {node}")]
    Swtpm {
        node: String,
        #[source]
        source: tpm::swtpm::SwtpmError,
    },
    #[error("reading the attestation key of node {node}'s TPM")]
    Ak {
        node: String,
        #[source]
        source: tpm::TpmError,
    },
    #[error("starting node {node}")]
    Process {
        node: String,
        #[source]
        source: ProcessError,
    },
    #[error(
        "address {addr} is in use by another program (another cluster on the same addresses?)"
    )]
    AddressInUse { addr: SocketAddrV4 },
    #[error("creating the folder {path}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("hashing the init secret")]
    Hash(#[from] bcrypt::BcryptError),
    #[error("the workspace's cluster uses variant {have}, the config asks for {want}")]
    VariantChanged { have: String, want: String },
    #[error("`{field}` cannot change on a running cluster: it is {have}, the config says {want}")]
    Unchangeable {
        field: &'static str,
        have: String,
        want: String,
    },
    #[error("interrupted between two steps; the local cloud state is consistent")]
    Interrupted,
    #[error("Kubernetes nodes need root (network and mount namespaces, cgroups); this runs as another user")]
    KubernetesNeedsRoot,
    #[error(
        "setting up the cluster network (namespaces under {})",
        crate::kubenet::RUN_ROOT
    )]
    Net(#[from] kube_node::net::NetError),
    #[error("no free cluster network under {0} (250 in use)")]
    NoFreeNetwork(PathBuf),
    #[error("stopping what node {node} left running in its namespaces")]
    Leftovers {
        node: String,
        #[source]
        source: kube_node::host::HostError,
    },
}

/// bcrypt cost of the init-secret hash (the secret is 32 random characters, so a low cost is
/// enough; ~60 ms).
const INIT_SECRET_BCRYPT_COST: u32 = 10;

/// What the config asks for.
#[derive(Debug, Clone)]
pub struct Wanted {
    pub name: String,
    /// The config's `image` (a version); nodes run the bundle in [`Wanted::image`].
    pub image_version: String,
    /// Whether the config names its node image bundle (`provider.local.nodeImage`) rather than
    /// the one built from this installation.
    pub image_configured: bool,
    pub variant: Variant,
    pub base_address: Ipv4Addr,
    /// (group name, role, count)
    pub groups: Vec<(String, Role, u32)>,
    pub image: NodeImage,
    /// The launcher ("firmware") binary on the host.
    pub launcher: PathBuf,
    /// When set (Ctrl-C), [`apply`] stops at its next step boundary with
    /// [`InfraError::Interrupted`].
    pub cancel: Option<&'static std::sync::atomic::AtomicBool>,
}

impl Wanted {
    fn check_cancel(&self) -> Result<(), InfraError> {
        match self.cancel {
            Some(c) if c.load(std::sync::atomic::Ordering::SeqCst) => Err(InfraError::Interrupted),
            _ => Ok(()),
        }
    }
}

/// Whether any node of the cloud was ever started (has a TPM or a process, or a recorded
/// attestation key): until then the cloud is only a plan, and every field may still change.
fn ever_started(state: &CloudState) -> bool {
    state
        .nodes
        .iter()
        .any(|n| n.ak_public.is_some() || n.swtpm.is_some() || n.process.is_some())
}

/// Refuses changes the local cloud cannot make to nodes that exist: the cluster's name and its
/// address range (nodes, certificates and etcd members carry them). Before any node was
/// started, [`apply`] adopts both instead.
pub fn check_unchangeable(state: &CloudState, wanted: &Wanted) -> Result<(), InfraError> {
    if !ever_started(state) {
        return Ok(());
    }
    if state.name != wanted.name {
        return Err(InfraError::Unchangeable {
            field: "name",
            have: state.name.clone(),
            want: wanted.name.clone(),
        });
    }
    if state.base_address != wanted.base_address {
        return Err(InfraError::Unchangeable {
            field: "provider.local.baseAddress",
            have: state.base_address.to_string(),
            want: wanted.base_address.to_string(),
        });
    }
    // Until upgrades exist, the image of a running cluster stays what it was created with.
    if let Some(have) = state.image.as_ref().filter(|i| **i != wanted.image_version) {
        return Err(InfraError::Unchangeable {
            field: "image",
            have: have.clone(),
            want: wanted.image_version.clone(),
        });
    }
    if wanted.image_configured && state.image_dir != wanted.image.dir {
        return Err(InfraError::Unchangeable {
            field: "provider.local.nodeImage",
            have: state.image_dir.display().to_string(),
            want: wanted.image.dir.display().to_string(),
        });
    }
    Ok(())
}

/// The nodes beyond each group's wanted count, highest index first (the nodes `apply` would
/// remove). Groups the config no longer names are not touched.
pub fn surplus(state: &CloudState, groups: &[(String, Role, u32)]) -> Vec<NodeRecord> {
    let index = |n: &NodeRecord| {
        n.name
            .rsplit('-')
            .next()
            .and_then(|i| i.parse::<u32>().ok())
            .unwrap_or(0)
    };
    let mut out = vec![];
    for (group, _, count) in groups {
        let mut members: Vec<&NodeRecord> =
            state.nodes.iter().filter(|n| &n.group == group).collect();
        members.sort_by_key(|n| std::cmp::Reverse(index(n)));
        let extra = members.len().saturating_sub(*count as usize);
        out.extend(members.into_iter().take(extra).cloned());
    }
    out
}

/// Stops node `name` (its processes and TPM), deletes its folder and its record.
pub fn remove_node(workspace: &Path, name: &str) -> Result<CloudState, InfraError> {
    let path = CloudState::path(workspace);
    let mut state = CloudState::load(&path)?.ok_or_else(|| CloudError::NoSuchNode(name.into()))?;
    let Some(i) = state.nodes.iter().position(|n| n.name == name) else {
        return Ok(state);
    };
    let node = state.nodes[i].clone();
    stop_node(&node)?;
    if let Some(k) = &state.kube {
        crate::kubenet::remove_node(k, &node.name)?;
    }
    match std::fs::remove_dir_all(&node.dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(InfraError::Dir {
                path: node.dir.clone(),
                source: e,
            })
        }
    }
    state.nodes.remove(i);
    state.save(&path)?;
    Ok(state)
}

/// Stops a node's processes (its whole process group) and its TPM, and whatever an
/// interrupted apply started for it without recording it.
fn stop_node(node: &NodeRecord) -> Result<(), InfraError> {
    if let Some(p) = node.process {
        p.stop_group(Duration::from_secs(5))
            .map_err(|e| InfraError::Process {
                node: node.name.clone(),
                source: e,
            })?;
    }
    if let Some(p) = node.swtpm {
        if p.is_alive() {
            Swtpm::stop(p.pid).map_err(|e| InfraError::Swtpm {
                node: node.name.clone(),
                source: e,
            })?;
        }
    }
    stop_unrecorded(node, true, true);
    Ok(())
}

/// Progress callback: one line per step.
pub type Progress<'a> = &'a mut dyn FnMut(&str);

fn tcti_dir(node: &NodeRecord) -> PathBuf {
    node.dir.join("tpm")
}

fn swtpm_config(node: &NodeRecord) -> SwtpmConfig {
    SwtpmConfig::new(tcti_dir(node))
}

/// Fails if something other than our own processes listens on the node's address.
fn check_free(addr: Ipv4Addr, port: u16) -> Result<(), InfraError> {
    let a = SocketAddrV4::new(addr, port);
    TcpListener::bind(a)
        .map(drop)
        .map_err(|_| InfraError::AddressInUse { addr: a })
}

/// The ports a node's services bind on its own address (control planes also run etcd, the
/// KeyService and the JoinService), checked before the node starts: a port taken by another
/// program fails here, with the address named, rather than inside the node after Init.
fn node_ports(role: Role) -> &'static [u16] {
    match role {
        Role::ControlPlane => &[
            PORT_INIT,
            PORT_KEYSERVICE,
            PORT_JOIN,
            PORT_ETCD_CLIENT,
            PORT_ETCD_PEER,
            PORT_VERIFY,
            PORT_RECOVERY,
        ],
        Role::Worker => &[PORT_INIT, PORT_VERIFY],
    }
}

/// Stops the processes of `node` that are not its live recorded ones (found by their node
/// folder, see [`crate::process::naming_dir`]): swtpm if `tpm`, node programs (launcher,
/// Bootstrapper, etcd) if `programs`. Other programs naming the folder (a user's `tail -f` of a
/// log) are left alone.
fn stop_unrecorded(node: &NodeRecord, tpm: bool, programs: bool) {
    let keep: Vec<ProcessRecord> = [node.swtpm, node.process]
        .into_iter()
        .flatten()
        .filter(|p| p.is_alive())
        .collect();
    // /proc/<pid>/comm holds at most 15 bytes of the program name.
    let node_comm = &crate::image::NODE_BINARY[..15.min(crate::image::NODE_BINARY.len())];
    for (p, comm) in crate::process::naming_dir(&node.dir) {
        if keep.contains(&p) {
            continue;
        }
        if comm == "swtpm" {
            if tpm {
                tracing::warn!(node = %node.name, pid = p.pid, "stopping an unrecorded TPM");
                let _ = Swtpm::stop(p.pid);
            }
        } else if programs && (comm == node_comm || comm == crate::image::ETCD_BINARY) {
            tracing::warn!(node = %node.name, pid = p.pid, %comm, "stopping a leftover node process");
            let _ = p.kill();
        }
    }
}

/// Whether every port a cluster of `count` nodes would use on `base`, `base + 1`, … is free
/// (nothing else listens there). Used to pick an address range for a new cluster.
pub fn address_range_free(base: Ipv4Addr, count: u32) -> bool {
    (0..count).all(|i| {
        let a = Ipv4Addr::from(u32::from(base).saturating_add(i));
        node_ports(Role::ControlPlane)
            .iter()
            .all(|p| check_free(a, *p).is_ok())
    })
}

/// The first address range at or after `preferred` (moving in steps of 127.x.0.0/16) where a
/// cluster of `count` nodes finds every port free.
pub fn free_base_address(preferred: Ipv4Addr, count: u32) -> Option<Ipv4Addr> {
    let [_, second, _, last] = preferred.octets();
    (0..64u8)
        .map(|step| Ipv4Addr::new(127, second.wrapping_add(step).clamp(1, 254), 0, last.max(1)))
        .find(|base| address_range_free(*base, count))
}

/// Brings the local cloud to `wanted`. A new cloud records the bcrypt hash of `init_secret`
/// (its metadata, as a cloud's instance tags carry it); an existing one keeps its hash.
pub fn apply(
    workspace: &Path,
    wanted: &Wanted,
    init_secret: &[u8],
    progress: Progress<'_>,
) -> Result<CloudState, InfraError> {
    // Node processes and daemons change directory: every recorded path must be absolute.
    let workspace = &absolute(workspace)?;
    let path = CloudState::path(workspace);
    let mut state = match CloudState::load(&path)? {
        Some(mut s) => {
            if s.variant != wanted.variant.as_str() {
                return Err(InfraError::VariantChanged {
                    have: s.variant,
                    want: wanted.variant.to_string(),
                });
            }
            check_unchangeable(&s, wanted)?;
            if !ever_started(&s) && (s.base_address != wanted.base_address || s.name != wanted.name)
            {
                // Only planned so far: re-plan on the new addresses (e.g. after the first
                // range was found taken) and under the new name.
                s.base_address = wanted.base_address;
                s.name = wanted.name.clone();
                s.image = Some(wanted.image_version.clone());
                s.image_dir = wanted.image.dir.clone();
                s.nodes.clear();
                s.save(&path)?;
                progress(&format!(
                    "re-planning nodes on {} (nothing was started yet)",
                    wanted.base_address
                ));
            }
            s
        }
        None => {
            let uid: u32 = rand::random();
            let s = CloudState {
                version: "v1".into(),
                uid: format!("{uid:08x}"),
                name: wanted.name.clone(),
                variant: wanted.variant.to_string(),
                image_dir: wanted.image.dir.clone(),
                init_secret_hash: bcrypt::hash(init_secret, INIT_SECRET_BCRYPT_COST)?,
                base_address: wanted.base_address,
                image: Some(wanted.image_version.clone()),
                kube: None,
                nodes: vec![],
            };
            s.save(&path)?;
            s
        }
    };
    let nodes_dir = workspace.join(crate::cloud::STATE_DIR).join("nodes");

    // 1. Records for missing nodes (control planes first: the first one is the endpoint).
    let mut groups = wanted.groups.clone();
    groups.sort_by_key(|g| g.1 != Role::ControlPlane);
    for (group, role, count) in &groups {
        let have = state.nodes.iter().filter(|n| &n.group == group).count() as u32;
        for _ in have..*count {
            let name = state.free_name(*role);
            let address = state.free_address()?;
            let dir = nodes_dir.join(&name);
            state.nodes.push(NodeRecord {
                name: name.clone(),
                role: *role,
                group: group.clone(),
                address,
                dir,
                ak_public: None,
                swtpm: None,
                process: None,
                internal_address: None,
            });
            state.save(&path)?;
            progress(&format!(
                "planned node {name} ({}) at {address}",
                role.as_str()
            ));
        }
    }

    // 2. Every node that will be started finds its ports free, checked before anything starts:
    //    a range taken by another program fails here, while the cloud is still only a plan (so
    //    a new baseAddress still takes effect). What a dead node left running (its etcd), or a
    //    node process an interrupted apply started without recording it, is stopped first.
    for node in state
        .nodes
        .iter()
        .filter(|n| !n.process.is_some_and(|p| p.is_alive()))
    {
        stop_unrecorded(node, false, true);
        for port in node_ports(node.role) {
            check_free(node.address, *port)?;
        }
    }

    // 2b. With Kubernetes in the image: the cluster network and every node's namespaces.
    let kubernetes = wanted.image.component_path("kubelet").is_some();
    if kubernetes {
        ensure_network(&mut state, &path, progress)?;
    }

    // 3. TPMs and their attestation keys.
    for i in 0..state.nodes.len() {
        wanted.check_cancel()?;
        let node = state.nodes[i].clone();
        let tpm_alive = node.swtpm.is_some_and(|p| p.is_alive());
        let node_alive = node.process.is_some_and(|p| p.is_alive());
        if tpm_alive && node_alive {
            continue;
        }
        std::fs::create_dir_all(&node.dir).map_err(|e| InfraError::Dir {
            path: node.dir.clone(),
            source: e,
        })?;
        if tpm_alive {
            // The node died but its TPM runs on: reset it (a reboot resets PCRs).
            if let Some(p) = node.swtpm {
                let _ = Swtpm::stop(p.pid);
            }
        }
        // A TPM an interrupted apply started without recording it would hold the TPM's socket,
        // and a node process it started would measure itself into the new TPM: stop both.
        stop_unrecorded(&node, true, true);
        let cfg = swtpm_config(&node);
        let d = Swtpm::spawn_detached(&cfg).map_err(|e| InfraError::Swtpm {
            node: node.name.clone(),
            source: e,
        })?;
        state.nodes[i].swtpm = ProcessRecord::of(d.pid);
        state.save(&path)?;
        // As the platform owning the TPM: a node that died did not shut its TPM down in order,
        // which counts against the TPM's dictionary-attack limit; clear it at every start.
        tpm::swtpm::reset_dictionary_attack_lockout(&cfg).map_err(|e| InfraError::Swtpm {
            node: node.name.clone(),
            source: e,
        })?;
        if node.ak_public.is_none() {
            let ak = {
                let t = tpm::Tpm::open(&d.tcti).map_err(|e| InfraError::Ak {
                    node: node.name.clone(),
                    source: e,
                })?;
                t.attestation_key().map_err(|e| InfraError::Ak {
                    node: node.name.clone(),
                    source: e,
                })?
            };
            state.nodes[i].ak_public = Some(hex::encode(ak));
            state.save(&path)?;
        }
        progress(&format!(
            "TPM of {} ready ({} ms)",
            node.name,
            d.startup.as_millis()
        ));
    }

    // 4. Node processes, through the launcher.
    let cloud_file = path.clone();
    for i in 0..state.nodes.len() {
        wanted.check_cancel()?;
        let node = state.nodes[i].clone();
        if node.process.is_some_and(|p| p.is_alive()) {
            continue;
        }
        // What a dead node left running (its etcd), or a node process an interrupted apply
        // started without recording it, would hold the node's ports.
        stop_unrecorded(&state.nodes[i], false, true);
        if let Some(k) = &state.kube {
            crate::kubenet::clear_node(k, &node.name).map_err(|e| InfraError::Leftovers {
                node: node.name.clone(),
                source: e,
            })?;
        }
        for port in node_ports(node.role) {
            check_free(node.address, *port)?;
        }
        let mut cmd = Command::new(&wanted.launcher);
        cmd.arg("launch")
            .arg("--image")
            .arg(&state.image_dir)
            .arg("--tcti")
            .arg(swtpm_config(&node).tcti())
            .arg("--variant")
            .arg(wanted.variant.as_str())
            // The measured copies run from the node's own folder (see bootstrapper::launcher).
            .arg("--run-dir")
            .arg(node.dir.join("boot"))
            .arg("--")
            .arg("bootstrapper")
            .arg("--name")
            .arg(&node.name)
            .arg("--cloud")
            .arg(&cloud_file)
            .arg("--dir")
            .arg(&node.dir)
            .arg("--tcti")
            .arg(swtpm_config(&node).tcti())
            .arg("--variant")
            .arg(wanted.variant.as_str());
        let log = node.dir.join("node.log");
        let (rec, _child) = spawn_detached(cmd, &log).map_err(|e| InfraError::Process {
            node: node.name.clone(),
            source: e,
        })?;
        state.nodes[i].process = Some(rec);
        state.save(&path)?;
        progress(&format!(
            "started {} ({}, {})",
            node.name,
            node.role.as_str(),
            node.address
        ));
    }
    if kubernetes {
        ensure_api_proxy(&mut state, &path, &wanted.launcher, progress)?;
    }
    Ok(state)
}

/// Creates (or completes) the cluster network and a namespace pair per node.
fn ensure_network(
    state: &mut CloudState,
    path: &Path,
    progress: Progress<'_>,
) -> Result<(), InfraError> {
    if !crate::kubenet::is_root() {
        return Err(InfraError::KubernetesNeedsRoot);
    }
    let record = match state.kube.clone() {
        Some(r) => r,
        None => {
            let run_root = PathBuf::from(crate::kubenet::RUN_ROOT);
            let index = crate::kubenet::free_index(&run_root)
                .ok_or_else(|| InfraError::NoFreeNetwork(run_root.clone()))?;
            let r = crate::kubenet::KubeNetRecord {
                run_root,
                name: format!("c{}", state.uid),
                index,
                api_proxy: None,
                api_backends: vec![],
            };
            state.kube = Some(r.clone());
            state.save(path)?;
            r
        }
    };
    let mut net = crate::kubenet::create_or_open(&record)?;
    let result = (|| {
        for i in 0..state.nodes.len() {
            let name = state.nodes[i].name.clone();
            let address = crate::kubenet::ensure_node(&mut net, &name)?;
            if state.nodes[i].internal_address != Some(address) {
                state.nodes[i].internal_address = Some(address);
                state.save(path)?;
                progress(&format!("network of {name} ready ({address})"));
            }
        }
        Ok::<(), InfraError>(())
    })();
    // The network outlives this process (terminate tears it down).
    net.detach();
    result
}

/// Runs the host-side API endpoint (`<endpoint>:6443`) over every control plane; restarted
/// when the control planes changed.
fn ensure_api_proxy(
    state: &mut CloudState,
    path: &Path,
    launcher: &Path,
    progress: Progress<'_>,
) -> Result<(), InfraError> {
    let Some(mut record) = state.kube.clone() else {
        return Ok(());
    };
    let Some(endpoint) = state.endpoint() else {
        return Ok(());
    };
    let backends: Vec<String> = state
        .control_planes()
        .filter_map(|n| n.internal_address)
        .map(|a| format!("{a}:{}", crate::kubenet::API_PORT))
        .collect();
    let alive = record.api_proxy.is_some_and(|p| p.is_alive());
    if alive && record.api_backends == backends {
        return Ok(());
    }
    if let Some(p) = record.api_proxy.take() {
        let _ = p.stop_group(Duration::from_secs(5));
    }
    check_free(endpoint, crate::kubenet::API_PORT)?;
    let mut cmd = Command::new(launcher);
    cmd.arg("api-proxy")
        .arg("--listen")
        .arg(format!("{endpoint}:{}", crate::kubenet::API_PORT))
        .arg("--netns")
        .arg(record.fabric());
    for b in &backends {
        cmd.arg("--backend").arg(b);
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let (rec, _child) =
        spawn_detached(cmd, &dir.join("api-proxy.log")).map_err(|e| InfraError::Process {
            node: "api-proxy".into(),
            source: e,
        })?;
    record.api_proxy = Some(rec);
    record.api_backends = backends;
    state.kube = Some(record);
    state.save(path)?;
    progress(&format!(
        "Kubernetes API endpoint {endpoint}:{} ready",
        crate::kubenet::API_PORT
    ));
    Ok(())
}

fn absolute(p: &Path) -> Result<PathBuf, InfraError> {
    std::path::absolute(p).map_err(|e| InfraError::Dir {
        path: p.to_path_buf(),
        source: e,
    })
}

/// Stops every node process and TPM of the workspace's local cloud and removes its state.
/// Works on half-created clouds too; a missing cloud is not an error.
pub fn destroy(workspace: &Path, progress: Progress<'_>) -> Result<usize, InfraError> {
    let path = CloudState::path(workspace);
    let Some(state) = CloudState::load(&path)? else {
        return Ok(0);
    };
    for node in &state.nodes {
        stop_node(node)?;
        progress(&format!("stopped {}", node.name));
    }
    if let Some(k) = &state.kube {
        if let Some(p) = k.api_proxy {
            let _ = p.stop_group(Duration::from_secs(5));
        }
        crate::kubenet::teardown(k)?;
        let dirs: Vec<PathBuf> = state.nodes.iter().map(|n| n.dir.clone()).collect();
        crate::kubenet::restore_sysctls(&dirs);
        progress("removed the cluster network");
    }
    let dir = workspace.join(crate::cloud::STATE_DIR);
    std::fs::remove_dir_all(&dir).map_err(|e| InfraError::Dir {
        path: dir,
        source: e,
    })?;
    Ok(state.nodes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(name: &str, role: Role, group: &str) -> NodeRecord {
        NodeRecord {
            name: name.into(),
            role,
            group: group.into(),
            address: Ipv4Addr::new(127, 20, 0, 1),
            dir: PathBuf::from("/n").join(name),
            ak_public: None,
            swtpm: None,
            process: None,
            internal_address: None,
        }
    }

    #[test]
    fn surplus_takes_the_highest_indices_of_each_shrunk_group() {
        let state = CloudState {
            version: "v1".into(),
            uid: "u".into(),
            name: "c".into(),
            variant: "local-vtpm".into(),
            image_dir: "/img".into(),
            init_secret_hash: String::new(),
            base_address: Ipv4Addr::new(127, 20, 0, 1),
            image: None,
            kube: None,
            nodes: vec![
                rec("control-plane-0", Role::ControlPlane, "cp"),
                rec("control-plane-10", Role::ControlPlane, "cp"),
                rec("control-plane-2", Role::ControlPlane, "cp"),
                rec("worker-0", Role::Worker, "w"),
                rec("worker-1", Role::Worker, "w"),
            ],
        };
        let names = |groups: &[(String, Role, u32)]| -> Vec<String> {
            surplus(&state, groups)
                .into_iter()
                .map(|n| n.name)
                .collect()
        };
        let g = |cp: u32, w: u32| {
            vec![
                ("cp".to_string(), Role::ControlPlane, cp),
                ("w".to_string(), Role::Worker, w),
            ]
        };
        assert_eq!(names(&g(3, 2)), Vec::<String>::new());
        assert_eq!(names(&g(1, 2)), ["control-plane-10", "control-plane-2"]);
        assert_eq!(names(&g(3, 0)), ["worker-1", "worker-0"]);
        // A group the config no longer names is left alone; a larger count removes nothing.
        assert_eq!(
            names(&[("w".to_string(), Role::Worker, 5)]),
            Vec::<String>::new()
        );
        assert!(!ever_started(&state));
    }
}
