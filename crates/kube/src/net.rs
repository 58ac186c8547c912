//! A cluster's node network, built from namespaces only (nothing in the host's network namespace).
//!
//! Address scheme (documented in ARCHITECTURE.md):
//! * fabric: one network namespace per cluster holding the bridge `br0` with the gateway address
//!   `198.18.C.254/24`, where `C` is the cluster's index (0–255). 198.18.0.0/15 is reserved for
//!   network benchmarking (RFC 2544) and is used by no real network; besides, these addresses exist
//!   only inside the cluster's own namespaces, so they never enter the host's routing table and
//!   two clusters cannot see each other even with equal indexes.
//! * node `N` (1–253): network namespace with `eth0 198.18.C.N/24` (a veth whose peer `vN` is a
//!   port of `br0`), `lo` up, default route via `198.18.C.254`, `net.ipv4.ip_forward = 1` (in the
//!   node's namespace only), and the pod CIDR `10.244.N.0/24` (Kubernetes' default pod network
//!   10.244.0.0/16, one /24 per node). Every node has a route `10.244.M.0/24 via 198.18.C.M` to
//!   every other node M, the fabric has one to every node (replies to pods, e.g. from the gateway).
//! * per node also a persistent mount namespace whose `/run`, `/var/lib` and `/var/log` are
//!   private tmpfs ([`NODE_PRIVATE_DIRS`]): containerd's shim sockets, fifos, runc state, CNI netns
//!   pins and caches, kubelet's hard-coded folders land there and vanish with the namespace.
//!
//! Namespaces are kept alive by bind mounts on files under `<run_root>/<cluster>/` (a private bind
//! mount of its own), not under `/run/netns`. [`ClusterNet::teardown`] (also run on drop) kills every
//! process still in a namespace of the cluster, unmounts and removes everything it created.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::cmd::{self, CommandError};
use crate::host::{self, HostError};

/// The default folder under which clusters keep their namespace pins.
pub const DEFAULT_RUN_ROOT: &str = "/run/constellation-kube";
/// Kubernetes' pod network; node N gets `10.244.N.0/24`.
pub const POD_NETWORK: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 244, 0, 0), 16);
const GATEWAY_HOST: u8 = 254;
/// Folders a node sees as its own empty tmpfs (in its mount namespace only): `/run` (containerd's
/// shim sockets, fifos, runc state, CNI netns pins), `/var/lib` (libcni's cache `/var/lib/cni`,
/// kubelet's hard-coded device-plugin folder `/var/lib/kubelet/device-plugins`), `/var/log`
/// (kubelet's hard-coded `/var/log/containers`). Everything that needs to persist lives in the
/// node's state folder instead.
pub const NODE_PRIVATE_DIRS: &[&str] = &["/run", "/var/lib", "/var/log"];
const MAX_NODE: u8 = 253;

/// Building or tearing down a cluster network failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cluster name {0:?} must be 1–24 characters of [a-z0-9-]")]
    BadClusterName(String),
    #[error("node name {0:?} must be 1–63 characters of [a-z0-9-]")]
    BadNodeName(String),
    #[error("node {0:?} already exists in this cluster")]
    DuplicateNode(String),
    #[error("a cluster has at most {MAX_NODE} nodes")]
    TooManyNodes,
    #[error("cluster folder {0} already exists (another cluster with this name, or a leftover of a crashed one)")]
    ClusterExists(PathBuf),
    #[error("the cluster network was torn down")]
    TornDown,
    #[error("no cluster network at {0}")]
    NoCluster(PathBuf),
    #[error("the cluster network {cluster} has no node {node} (its provider did not create it)")]
    NoSuchNode { cluster: String, node: String },
    #[error("cluster registry {path}: line {line:?} is not `<index> <node name>`")]
    BadRegistry { path: PathBuf, line: String },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {path}: {source}")]
    Mount {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(transparent)]
    Host(#[from] HostError),
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> NetError + 'a {
    move |source| NetError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

fn valid_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// An IPv4 network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// One node's namespaces and addresses.
#[derive(Debug, Clone)]
pub struct NodeNet {
    cluster: String,
    name: String,
    index: u8,
    netns: PathBuf,
    mntns: PathBuf,
    address: Ipv4Addr,
    pod_cidr: Cidr,
    gateway: Ipv4Addr,
}

impl NodeNet {
    /// The node's name (its Kubernetes name later).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The cgroup (in every hierarchy) under which the node's containers and pods live
    /// (kubelet's `cgroupRoot`): `/constellation-kube-<cluster>-<node>`.
    pub fn cgroup_parent(&self) -> String {
        format!("/constellation-kube-{}-{}", self.cluster, self.name)
    }
    /// Node number N (1–253): the last octet of its address and third octet of its pod CIDR.
    pub fn index(&self) -> u8 {
        self.index
    }
    /// The pinned network namespace (`nsenter --net=` argument).
    pub fn netns(&self) -> &Path {
        &self.netns
    }
    /// The pinned mount namespace (`nsenter --mount=` argument).
    pub fn mntns(&self) -> &Path {
        &self.mntns
    }
    /// `198.18.C.N`: the node IP (kubelet `--node-ip`, apiserver advertise address).
    pub fn address(&self) -> Ipv4Addr {
        self.address
    }
    /// `10.244.N.0/24`.
    pub fn pod_cidr(&self) -> Cidr {
        self.pod_cidr
    }
    /// The fabric gateway `198.18.C.254` (the node's default route).
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }
    /// `nsenter --net=<netns> --mount=<mntns> <program>`: runs `program` inside the node
    /// (absolute paths only: nsenter changes the working directory to the namespace's root).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.netns.display()))
            .arg(format!("--mount={}", self.mntns.display()))
            .arg("--")
            .arg(program);
        c
    }
    /// [`NodeNet::command`] for tokio.
    pub fn tokio_command(&self, program: &str) -> tokio::process::Command {
        tokio::process::Command::from(self.command(program))
    }
    /// Like [`NodeNet::command`] but only entering the network namespace.
    pub fn net_command(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.netns.display()))
            .arg("--")
            .arg(program);
        c
    }
}

/// A cluster's fabric and nodes. Dropping it tears everything down.
#[derive(Debug)]
pub struct ClusterNet {
    name: String,
    index: u8,
    dir: PathBuf,
    fabric: PathBuf,
    nodes: Vec<NodeNet>,
    torn_down: bool,
    detached: bool,
}

/// An empty file to bind a namespace onto.
fn touch(path: &Path) -> Result<(), NetError> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map(|_| ())
        .map_err(io_err("create namespace pin", path))
}

fn in_net(ns: &Path, program: &str) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net={}", ns.display()))
        .arg("--")
        .arg(program);
    c
}

fn ip(ns: &Path, args: &[&str]) -> Result<(), NetError> {
    cmd::run(in_net(ns, "ip").args(args))?;
    Ok(())
}

fn is_mountpoint(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy();
    info.lines()
        .any(|l| l.split(' ').nth(4).is_some_and(|mp| mp == want))
}

fn unmount_all(path: &Path) -> Result<(), NetError> {
    // A path may carry several stacked mounts; unmount until none is left.
    for _ in 0..8 {
        if !is_mountpoint(path) {
            return Ok(());
        }
        umount2(path, MntFlags::empty())
            .or_else(|_| umount2(path, MntFlags::MNT_DETACH))
            .map_err(|source| NetError::Mount {
                what: "unmount",
                path: path.to_path_buf(),
                source,
            })?;
    }
    Ok(())
}

fn remove_file(path: &Path) -> Result<(), NetError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(NetError::Io {
            what: "remove",
            path: path.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

impl ClusterNet {
    /// Creates the cluster folder `<run_root>/<name>` (a private bind mount) and the fabric
    /// namespace with its bridge. `index` is the third octet `C` of `198.18.C.0/24`.
    pub fn create(run_root: &Path, name: &str, index: u8) -> Result<ClusterNet, NetError> {
        if !valid_name(name, 24) {
            return Err(NetError::BadClusterName(name.to_owned()));
        }
        let dir = run_root.join(name);
        if dir.exists() {
            return Err(NetError::ClusterExists(dir));
        }
        std::fs::create_dir_all(run_root).map_err(io_err("create run root", run_root))?;
        std::fs::create_dir(&dir).map_err(io_err("create cluster folder", &dir))?;
        let mut net = ClusterNet {
            name: name.to_owned(),
            index,
            fabric: dir.join("fabric.net"),
            dir,
            nodes: Vec::new(),
            torn_down: false,
            detached: false,
        };
        // From here on, a failure tears down what exists (drop).
        net.init_fabric()?;
        net.save_registry()?;
        Ok(net)
    }

    const REGISTRY: &'static str = "cluster";

    /// `<dir>/cluster`: the cluster index, then one `<index> <name>` line per node, so that
    /// another process can [`ClusterNet::open`] the network (e.g. `terminate` after `up`).
    fn save_registry(&self) -> Result<(), NetError> {
        let mut text = format!("{}\n", self.index);
        for n in &self.nodes {
            text.push_str(&format!("{} {}\n", n.index, n.name));
        }
        let path = self.dir.join(Self::REGISTRY);
        let tmp = self.dir.join(".cluster.tmp");
        std::fs::write(&tmp, text).map_err(io_err("write cluster registry", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io_err("write cluster registry", &path))
    }

    /// Opens the cluster network `name` created (and [`ClusterNet::detach`]ed) by another
    /// process, to add or remove nodes or tear it down.
    pub fn open(run_root: &Path, name: &str) -> Result<ClusterNet, NetError> {
        if !valid_name(name, 24) {
            return Err(NetError::BadClusterName(name.to_owned()));
        }
        let dir = run_root.join(name);
        let path = dir.join(Self::REGISTRY);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(NetError::NoCluster(dir))
            }
            Err(e) => return Err(io_err("read cluster registry", &path)(e)),
        };
        let bad = |line: &str| NetError::BadRegistry {
            path: path.clone(),
            line: line.to_owned(),
        };
        let mut lines = text.lines();
        let first = lines.next().unwrap_or_default();
        let index: u8 = first.trim().parse().map_err(|_| bad(first))?;
        let mut net = ClusterNet {
            name: name.to_owned(),
            index,
            fabric: dir.join("fabric.net"),
            dir,
            nodes: Vec::new(),
            torn_down: false,
            detached: true, // until the registry parsed: a bad file must not tear anything down
        };
        for line in lines {
            let (i, n) = line.split_once(' ').ok_or_else(|| bad(line))?;
            let i: u8 = i.parse().map_err(|_| bad(line))?;
            if !valid_name(n, 63) || i == 0 || i > MAX_NODE {
                return Err(bad(line));
            }
            let node = net.node_net(n, i);
            net.nodes.push(node);
        }
        net.detached = false;
        Ok(net)
    }

    /// Leaves the network in place when this value is dropped (another process opens it later
    /// with [`ClusterNet::open`]).
    pub fn detach(mut self) {
        self.detached = true;
    }

    fn node_net(&self, name: &str, index: u8) -> NodeNet {
        NodeNet {
            cluster: self.name.clone(),
            name: name.to_owned(),
            index,
            netns: self.dir.join(format!("{name}.net")),
            mntns: self.dir.join(format!("{name}.mnt")),
            address: Ipv4Addr::new(198, 18, self.index, index),
            pod_cidr: Cidr {
                addr: Ipv4Addr::new(10, 244, index, 0),
                prefix: 24,
            },
            gateway: self.gateway(),
        }
    }

    fn init_fabric(&mut self) -> Result<(), NetError> {
        // A private bind mount of the folder onto itself: a mount namespace can only be pinned on a
        // mount that does not propagate into it.
        let mnt = |what, flags, src: Option<&Path>| {
            mount(src, &self.dir, None::<&str>, flags, None::<&str>).map_err(|source| {
                NetError::Mount {
                    what,
                    path: self.dir.clone(),
                    source,
                }
            })
        };
        mnt(
            "bind-mount cluster folder",
            MsFlags::MS_BIND,
            Some(&self.dir),
        )?;
        mnt("make private", MsFlags::MS_PRIVATE, None)?;
        touch(&self.fabric)?;
        cmd::run(
            Command::new("unshare")
                .arg(format!("--net={}", self.fabric.display()))
                .arg("true"),
        )?;
        let gw = format!("{}/24", self.gateway());
        ip(&self.fabric, &["link", "set", "lo", "up"])?;
        ip(&self.fabric, &["link", "add", "br0", "type", "bridge"])?;
        ip(&self.fabric, &["addr", "add", &gw, "dev", "br0"])?;
        ip(&self.fabric, &["link", "set", "br0", "up"])?;
        Ok(())
    }

    /// The cluster's name (folder under the run root).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The cluster folder holding the namespace pins.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The fabric network namespace pin.
    pub fn fabric(&self) -> &Path {
        &self.fabric
    }
    /// `198.18.C.254`.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.index, GATEWAY_HOST)
    }
    /// The nodes created so far.
    pub fn nodes(&self) -> &[NodeNet] {
        &self.nodes
    }
    /// A node by name.
    pub fn node(&self, name: &str) -> Option<&NodeNet> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Adds node `name` with the next free number: its network and mount namespaces, veth,
    /// address, routes (also in every other node and the fabric).
    pub fn add_node(&mut self, name: &str) -> Result<NodeNet, NetError> {
        if self.torn_down {
            return Err(NetError::TornDown);
        }
        if !valid_name(name, 63) {
            return Err(NetError::BadNodeName(name.to_owned()));
        }
        if self.node(name).is_some() {
            return Err(NetError::DuplicateNode(name.to_owned()));
        }
        let index = (1..=MAX_NODE)
            .find(|i| !self.nodes.iter().any(|n| n.index == *i))
            .ok_or(NetError::TooManyNodes)?;
        let node = self.node_net(name, index);
        // Registered first so that teardown removes a half-built node too.
        self.nodes.push(node.clone());
        self.save_registry()?;
        self.build_node(&node)?;
        Ok(node)
    }

    fn build_node(&self, node: &NodeNet) -> Result<(), NetError> {
        touch(&node.netns)?;
        cmd::run(
            Command::new("unshare")
                .arg(format!("--net={}", node.netns.display()))
                .arg("true"),
        )?;
        touch(&node.mntns)?;
        cmd::run(
            Command::new("unshare")
                .arg(format!("--mount={}", node.mntns.display()))
                .args(["--propagation", "private", "true"]),
        )?;
        // Inside the node's mount namespace: drop the copy of the cluster folder (it would keep the
        // other nodes' network namespaces alive) and give the node a private /run.
        cmd::run(
            Command::new("nsenter")
                .arg(format!("--mount={}", node.mntns.display()))
                .args(["--", "umount", "-l"])
                .arg(&self.dir),
        )?;
        for dir in NODE_PRIVATE_DIRS {
            cmd::run(
                Command::new("nsenter")
                    .arg(format!("--mount={}", node.mntns.display()))
                    .args([
                        "--",
                        "mount",
                        "-t",
                        "tmpfs",
                        "-o",
                        "mode=0755",
                        "tmpfs",
                        dir,
                    ]),
            )?;
        }

        let port = format!("v{}", node.index);
        let netns = node.netns.to_string_lossy().into_owned();
        ip(
            &self.fabric,
            &[
                "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &netns,
            ],
        )?;
        ip(&self.fabric, &["link", "set", &port, "master", "br0", "up"])?;
        let addr = format!("{}/24", node.address);
        ip(&node.netns, &["link", "set", "lo", "up"])?;
        ip(&node.netns, &["addr", "add", &addr, "dev", "eth0"])?;
        ip(&node.netns, &["link", "set", "eth0", "up"])?;
        ip(
            &node.netns,
            &["route", "add", "default", "via", &node.gateway.to_string()],
        )?;
        cmd::run(in_net(&node.netns, "sh").args(["-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"]))?;
        ip(
            &self.fabric,
            &[
                "route",
                "add",
                &node.pod_cidr.to_string(),
                "via",
                &node.address.to_string(),
            ],
        )?;
        for other in self.nodes.iter().filter(|o| o.index != node.index) {
            ip(
                &node.netns,
                &[
                    "route",
                    "add",
                    &other.pod_cidr.to_string(),
                    "via",
                    &other.address.to_string(),
                ],
            )?;
            ip(
                &other.netns,
                &[
                    "route",
                    "add",
                    &node.pod_cidr.to_string(),
                    "via",
                    &node.address.to_string(),
                ],
            )?;
        }
        Ok(())
    }

    /// Kills every process left in one of the node's namespaces and removes the node.
    pub fn remove_node(&mut self, name: &str) -> Result<(), NetError> {
        let Some(pos) = self.nodes.iter().position(|n| n.name == name) else {
            return Ok(());
        };
        let node = self.nodes[pos].clone();
        Self::destroy_node(&node)?;
        self.nodes.remove(pos);
        self.save_registry()?;
        let cidr = node.pod_cidr.to_string();
        for other in &self.nodes {
            let _ = ip(&other.netns, &["route", "del", &cidr]);
        }
        let _ = ip(&self.fabric, &["route", "del", &cidr]);
        Ok(())
    }

    fn destroy_node(node: &NodeNet) -> Result<(), NetError> {
        let mut net = Vec::new();
        let mut mnt = Vec::new();
        if is_mountpoint(&node.netns) {
            net.push(host::ns_inode(&node.netns)?);
        }
        if is_mountpoint(&node.mntns) {
            mnt.push(host::ns_inode(&node.mntns)?);
        }
        if !net.is_empty() || !mnt.is_empty() {
            host::kill_all(
                &format!("in the namespaces of node {}", node.name),
                Duration::from_secs(10),
                || host::processes_in_namespaces(&net, &mnt),
            )?;
        }
        // Containers live in their own namespaces but in the node's cgroup tree.
        let cgroup = node.cgroup_parent();
        host::kill_all(
            &format!("in the cgroup {cgroup}"),
            Duration::from_secs(10),
            || host::processes_in_cgroup(&cgroup),
        )?;
        host::remove_cgroup_tree(&cgroup)?;
        unmount_all(&node.mntns)?;
        remove_file(&node.mntns)?;
        // The veth pair goes with the network namespace.
        unmount_all(&node.netns)?;
        remove_file(&node.netns)?;
        Ok(())
    }

    /// Removes everything the cluster network created; idempotent (also run on drop).
    pub fn teardown(&mut self) -> Result<(), NetError> {
        let mut first_err = None;
        while let Some(node) = self.nodes.pop() {
            if let Err(e) = Self::destroy_node(&node) {
                first_err.get_or_insert(e);
            }
        }
        if self.dir.exists() {
            let fabric = || -> Result<(), NetError> {
                if is_mountpoint(&self.fabric) {
                    let inode = host::ns_inode(&self.fabric)?;
                    host::kill_all("in the fabric namespace", Duration::from_secs(10), || {
                        host::processes_in_namespaces(&[inode], &[])
                    })?;
                }
                unmount_all(&self.fabric)?;
                remove_file(&self.fabric)?;
                remove_file(&self.dir.join(Self::REGISTRY))?;
                unmount_all(&self.dir)?;
                match std::fs::remove_dir(&self.dir) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(NetError::Io {
                            what: "remove cluster folder",
                            path: self.dir.clone(),
                            source: e,
                        })
                    }
                    _ => {}
                }
                // The run root goes when the last cluster is gone (another cluster's folder keeps it).
                if let Some(root) = self.dir.parent() {
                    let _ = std::fs::remove_dir(root);
                }
                Ok(())
            };
            if let Err(e) = fabric() {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => {
                self.torn_down = true;
                Ok(())
            }
        }
    }
}

impl Drop for ClusterNet {
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        if let Err(e) = self.teardown() {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "kube-node: teardown of cluster {}: {e}",
                self.name
            );
        }
    }
}
