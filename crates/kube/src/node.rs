//! One Kubernetes node as the Bootstrapper holds it: containerd, kubelet, kube-proxy and, on a
//! control plane, kube-apiserver, kube-controller-manager, kube-scheduler (and etcd in stacked
//! mode, or a [`Forwarder`] to the cluster's etcd on the host), all inside the node's network
//! and mount namespaces, which the provider created beforehand ([`crate::net::ClusterNet`]).
//!
//! ```text
//! init:   KubeNode::control_plane_init(&setup, &cluster)         -> node
//!         node.worker_join_for("worker-0", &api_servers)         -> WorkerJoin (into the ticket)
//!         node.control_plane_join_data()                         -> ControlPlaneJoin (ticket)
//! joiner: KubeNode::worker_join(&setup, &ticket_worker_join)     -> node
//!         KubeNode::control_plane_join(&setup, &cluster, &cpj)   -> node
//! always: node.health() -> Err(NotReady { component: "kubelet", .. }); node.stop().await
//! ```
//!
//! The host-wide sysctls kubelet needs ([`crate::host::HostSysctls::for_kubelet`]) are the
//! caller's: they are set once per host, not per node.
//!
//! ```no_run
//! # async fn wire(bins: kube_node::control_plane::KubeBinaries, cp_net: kube_node::net::NodeNet,
//! #     w_net: kube_node::net::NodeNet, pause_tar: std::path::PathBuf)
//! #     -> Result<(), Box<dyn std::error::Error>> {
//! use kube_node::node::{ClusterSpec, Etcd, HostEtcd, KubeNode, NodeSetup};
//! use std::time::Duration;
//! let setup = |net: kube_node::net::NodeNet, dir: &str| NodeSetup {
//!     bins: bins.clone(), net, dir: dir.into(), images: vec![pause_tar.clone()],
//!     deadline: Duration::from_secs(120),
//! };
//! let cluster = ClusterSpec {
//!     cluster_name: "mini".into(), extra_sans: vec!["127.50.0.1".into()], coredns: false,
//!     etcd: Etcd::Host(HostEtcd {
//!         members: vec!["127.50.0.2:2379".parse()?],
//!         ca_file: "/ws/cp-0/state/cp-ca.crt".into(),
//!         cert_file: "/ws/cp-0/state/node.crt".into(),
//!         key_file: "/ws/cp-0/state/node.key".into(),
//!     }),
//! };
//! // Bootstrapper of the first control plane (Init RPC)
//! let mut cp = KubeNode::control_plane_init(&setup(cp_net, "/ws/cp-0/kube"), &cluster).await?;
//! // JoinService, for an attested worker: into the ticket
//! let ticket = serde_json::to_vec(&cp.worker_join_for("worker-0", &[cp.api_server().unwrap()])?)?;
//! // Bootstrapper of the worker, from its ticket
//! let mut w = KubeNode::worker_join(&setup(w_net, "/ws/worker-0/kube"), &serde_json::from_slice(&ticket)?).await?;
//! if let Err(e) = w.health() { eprintln!("worker-0 not ready: {e}"); } // names the component
//! w.stop().await?;
//! cp.stop().await?;
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::control_plane::{
    ControlPlane, ControlPlaneError, ControlPlaneSpec, EtcdMode, KubeBinaries, KubeProxy, Kubelet,
};
use crate::forward::{ForwardError, Forwarder};
use crate::image::PAUSE_REFERENCE;
use crate::join::{self, ControlPlaneJoin, JoinError, KubeCa, WorkerJoin};
use crate::net::NodeNet;
use crate::runtime::{Containerd, RuntimeError};

/// Where a control plane's API server finds etcd, inside the node: `127.0.0.1:2379`, forwarded
/// to the cluster's etcd members in the host's network namespace.
pub const ETCD_IN_NODE: &str = "127.0.0.1:2379";

/// Where a worker's kubelet and kube-proxy find the API, inside the node: `127.0.0.1:6443`, a
/// forwarder to every control plane's API server (the one that answered last first), so a
/// worker keeps its API while any one control plane is down. The API server certificates
/// carry a `127.0.0.1` SAN.
pub const LOCAL_API: &str = "127.0.0.1:6443";

/// What every node needs.
#[derive(Debug, Clone)]
pub struct NodeSetup {
    pub bins: KubeBinaries,
    /// The node's namespaces (created by the provider); its name is the Kubernetes node name.
    pub net: NodeNet,
    /// The node's state folder: absolute, visible in the node's mount namespace (not below
    /// `/run`, `/var/lib`, `/var/log`: those are the node's own tmpfs), short enough for
    /// containerd's socket (`<dir>/containerd/containerd.sock.ttrpc` ≤ 107 bytes).
    pub dir: PathBuf,
    /// OCI image tars imported into the node's containerd (at least the pause image,
    /// [`PAUSE_REFERENCE`]; the CoreDNS image on every node that may run CoreDNS).
    pub images: Vec<PathBuf>,
    /// Bound of each wait (containerd socket, API server ready, node Ready).
    pub deadline: Duration,
}

/// The cluster's etcd in the host's network namespace (the Bootstrapper's, TLS with the cluster's
/// control-plane CA).
#[derive(Debug, Clone)]
pub struct HostEtcd {
    /// Client addresses of the members (`127.x.y.z:2379`), tried in this order: this node's
    /// own member first.
    pub members: Vec<SocketAddr>,
    /// CA that signed the members' server certificates; every member's certificate needs a
    /// `127.0.0.1` SAN (the API server dials [`ETCD_IN_NODE`]).
    pub ca_file: PathBuf,
    /// A client certificate and key etcd accepts (e.g. the node's own certificate).
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Where the control plane keeps its state.
#[derive(Debug, Clone)]
pub enum Etcd {
    /// An etcd member per control plane, started by this crate (tests, stand-alone use).
    Stacked,
    /// The cluster's etcd on the host, reached through a [`Forwarder`].
    Host(HostEtcd),
}

/// The cluster's Kubernetes control plane, as every control-plane node is given it.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub cluster_name: String,
    /// Extra API server certificate SANs (e.g. the host-side endpoint's address).
    pub extra_sans: Vec<String>,
    pub etcd: Etcd,
    /// Deploy CoreDNS (kubeadm's addon) on init; every node needs the CoreDNS image then.
    pub coredns: bool,
}

/// A node is not (fully) running: which component, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{component} is not running: {reason}")]
pub struct NotReady {
    /// `containerd`, `kubelet`, `kube-proxy`, `kube-apiserver`, `etcd`, ...
    pub component: String,
    pub reason: String,
}

/// Bringing a node up failed.
#[derive(Debug, thiserror::Error)]
pub enum KubeNodeError {
    #[error("containerd of node {node}: {source}")]
    Runtime {
        node: String,
        #[source]
        source: RuntimeError,
    },
    #[error("node {node}: {source}")]
    ControlPlane {
        node: String,
        #[source]
        source: ControlPlaneError,
    },
    #[error("node {node}: forwarding to the cluster's etcd: {source}")]
    Forward {
        node: String,
        #[source]
        source: ForwardError,
    },
    #[error("node {node}: join data: {source}")]
    Join {
        node: String,
        #[source]
        source: JoinError,
    },
    #[error("node {node}: the join data is for node {expected:?}")]
    WrongNode { node: String, expected: String },
    #[error("node {0} is not a control plane")]
    NotControlPlane(String),
}

/// A running Kubernetes node. Dropping it kills its processes (use [`KubeNode::stop`] for an
/// orderly stop).
#[derive(Debug)]
pub struct KubeNode {
    // drop order = field order: kube-proxy, kubelet (and its pods), control plane, containerd
    kube_proxy: Option<KubeProxy>,
    kubelet: Option<Kubelet>,
    control_plane: Option<ControlPlane>,
    containerd: Option<Containerd>,
    forwarders: Vec<Forwarder>,
    net: NodeNet,
    dir: PathBuf,
}

impl KubeNode {
    fn new(setup: &NodeSetup) -> KubeNode {
        KubeNode {
            net: setup.net.clone(),
            dir: setup.dir.clone(),
            forwarders: Vec::new(),
            containerd: None,
            control_plane: None,
            kubelet: None,
            kube_proxy: None,
        }
    }

    fn name(&self) -> String {
        self.net.name().to_owned()
    }

    fn cp_err(&self) -> impl Fn(ControlPlaneError) -> KubeNodeError {
        let node = self.name();
        move |source| KubeNodeError::ControlPlane {
            node: node.clone(),
            source,
        }
    }

    fn join_err(&self) -> impl Fn(JoinError) -> KubeNodeError {
        let node = self.name();
        move |source| KubeNodeError::Join {
            node: node.clone(),
            source,
        }
    }

    async fn start_containerd(&mut self, setup: &NodeSetup) -> Result<(), KubeNodeError> {
        let rt_err = |source| KubeNodeError::Runtime {
            node: setup.net.name().to_owned(),
            source,
        };
        let c = Containerd::start(
            &setup.net,
            &self.dir.join("containerd"),
            PAUSE_REFERENCE,
            setup.deadline,
        )
        .await
        .map_err(rt_err)?;
        for image in &setup.images {
            c.import(image).await.map_err(rt_err)?;
        }
        self.containerd = Some(c);
        Ok(())
    }

    /// The etcd mode of the control plane; for [`Etcd::Host`] the client files are copied into
    /// the node's state folder (owner-only; visible in the node's mount namespace) and a
    /// forwarder `127.0.0.1:2379` → members starts inside the node.
    async fn etcd_mode(&mut self, etcd: &Etcd) -> Result<EtcdMode, KubeNodeError> {
        let host = match etcd {
            Etcd::Stacked => return Ok(EtcdMode::Stacked),
            Etcd::Host(h) => h,
        };
        let dir = self.dir.join("etcd-client");
        let copy = |from: &Path, to: &str| -> Result<PathBuf, KubeNodeError> {
            let to = dir.join(to);
            let data = std::fs::read(from).map_err(|source| {
                self.join_err()(JoinError::Io {
                    what: "read etcd client file",
                    path: from.to_path_buf(),
                    source,
                })
            })?;
            join::write_private(&to, &data).map_err(|source| {
                self.join_err()(JoinError::Io {
                    what: "write",
                    path: to.clone(),
                    source,
                })
            })?;
            Ok(to)
        };
        let mode = EtcdMode::External {
            endpoints: vec![format!("https://{ETCD_IN_NODE}")],
            ca_file: copy(&host.ca_file, "ca.crt")?,
            cert_file: copy(&host.cert_file, "client.crt")?,
            key_file: copy(&host.key_file, "client.key")?,
        };
        let listen: SocketAddr = ETCD_IN_NODE.parse().map_err(|_| {
            self.join_err()(JoinError::Invalid {
                field: "ETCD_IN_NODE",
                reason: ETCD_IN_NODE.into(),
            })
        })?;
        let fw = Forwarder::start(self.net.netns(), listen, host.members.clone())
            .await
            .map_err(|source| KubeNodeError::Forward {
                node: self.name(),
                source,
            })?;
        self.forwarders.push(fw);
        Ok(mode)
    }

    /// kubelet with the control plane's own `kubelet.conf`, Ready, labelled and tainted as a
    /// control plane; kube-proxy with a `system:kube-proxy` certificate.
    async fn start_control_plane_node(&mut self, setup: &NodeSetup) -> Result<(), KubeNodeError> {
        let cp_err = self.cp_err();
        let join_err = self.join_err();
        let (kubeconfig, ca, pki) = {
            let cp = self
                .control_plane
                .as_ref()
                .ok_or_else(|| KubeNodeError::NotControlPlane(self.name()))?;
            (
                cp.paths().kubeconfigs.join("kubelet.conf"),
                cp.paths().pki.join("ca.crt"),
                cp.paths().pki.clone(),
            )
        };
        let containerd = self
            .containerd
            .as_ref()
            .ok_or_else(|| KubeNodeError::Runtime {
                node: self.name(),
                source: RuntimeError::Exited {
                    node: self.name(),
                    status: "not started".into(),
                    log: String::new(),
                },
            })?;
        self.kubelet = Some(
            Kubelet::start(
                &setup.bins,
                &setup.net,
                containerd,
                &kubeconfig,
                &ca,
                &self.dir.join("kubelet"),
            )
            .map_err(&cp_err)?,
        );
        // kube-proxy's credential, signed here
        let kca = KubeCa::load(&pki).map_err(&join_err)?;
        let cred = kca
            .issue_client("system:kube-proxy", None)
            .map_err(&join_err)?;
        let cp = self
            .control_plane
            .as_mut()
            .ok_or_else(|| KubeNodeError::NotControlPlane(self.net.name().to_owned()))?;
        let server = format!("https://{}", cp.api_server());
        let kp_conf = self.dir.join("kube-proxy.conf");
        let text = join::render_kubeconfig(
            &cp.spec().cluster_name,
            &server,
            kca.cert_pem(),
            "system:kube-proxy",
            &cred,
        );
        join::write_private(&kp_conf, text.as_bytes()).map_err(|source| {
            join_err(JoinError::Io {
                what: "write",
                path: kp_conf.clone(),
                source,
            })
        })?;
        self.kube_proxy = Some(
            KubeProxy::start(
                &setup.bins,
                &setup.net,
                &kp_conf,
                &self.dir.join("kube-proxy"),
            )
            .map_err(&cp_err)?,
        );
        let name = self.net.name().to_owned();
        let cp = self
            .control_plane
            .as_mut()
            .ok_or_else(|| KubeNodeError::NotControlPlane(name.clone()))?;
        cp.wait_node_ready(&name, setup.deadline)
            .await
            .map_err(&cp_err)?;
        cp.mark_control_plane(&name).await.map_err(&cp_err)?;
        Ok(())
    }

    fn spec(cluster: &ClusterSpec, etcd: EtcdMode) -> ControlPlaneSpec {
        ControlPlaneSpec {
            cluster_name: cluster.cluster_name.clone(),
            extra_sans: cluster.extra_sans.clone(),
            etcd,
        }
    }

    /// The first control plane: containerd (+ images), kubeadm certificates, the control plane
    /// (etcd per `cluster.etcd`), kubelet until the node is Ready, the control-plane label and
    /// taint, kube-proxy, and CoreDNS when `cluster.coredns`.
    pub async fn control_plane_init(
        setup: &NodeSetup,
        cluster: &ClusterSpec,
    ) -> Result<KubeNode, KubeNodeError> {
        Self::start_control_plane(setup, cluster, None).await
    }

    /// A further control plane from the shared keys in `join` (an attested control-plane
    /// joiner's ticket); otherwise as [`KubeNode::control_plane_init`] (no CoreDNS: it exists).
    pub async fn control_plane_join(
        setup: &NodeSetup,
        cluster: &ClusterSpec,
        join: &ControlPlaneJoin,
    ) -> Result<KubeNode, KubeNodeError> {
        Self::start_control_plane(setup, cluster, Some(join)).await
    }

    /// Init (`join` `None`) or join of a control-plane node.
    async fn start_control_plane(
        setup: &NodeSetup,
        cluster: &ClusterSpec,
        join: Option<&ControlPlaneJoin>,
    ) -> Result<KubeNode, KubeNodeError> {
        let mut me = KubeNode::new(setup);
        me.start_containerd(setup).await?;
        let etcd = me.etcd_mode(&cluster.etcd).await?;
        let cp_err = me.cp_err();
        let socket = me
            .containerd
            .as_ref()
            .map(|c| c.paths().socket.clone())
            .unwrap_or_default();
        let dir = me.dir.join("control-plane");
        let spec = Self::spec(cluster, etcd);
        let (bins, net) = (&setup.bins, &setup.net);
        let cp = match join {
            None => ControlPlane::init(bins, net, &socket, &dir, &spec, setup.deadline).await,
            Some(j) => {
                ControlPlane::join_with(bins, net, &socket, &dir, &spec, j, setup.deadline).await
            }
        };
        me.control_plane = Some(cp.map_err(&cp_err)?);
        me.start_control_plane_node(setup).await?;
        // CoreDNS once, by the first control plane.
        if cluster.coredns && join.is_none() {
            if let Some(cp) = &me.control_plane {
                cp.deploy_coredns().await.map_err(&cp_err)?;
            }
        }
        Ok(me)
    }

    /// A worker from a [`WorkerJoin`] (for this node's name): the join files written owner-only
    /// into `<dir>/join`, the local API forwarder ([`LOCAL_API`]), containerd (+ images),
    /// kubelet and kube-proxy. Whether the node
    /// becomes Ready is seen from the control plane ([`ControlPlane::wait_node_ready`]).
    pub async fn worker_join(
        setup: &NodeSetup,
        join: &WorkerJoin,
    ) -> Result<KubeNode, KubeNodeError> {
        let mut me = KubeNode::new(setup);
        if join.node_name != setup.net.name() {
            return Err(KubeNodeError::WrongNode {
                node: me.name(),
                expected: join.node_name.clone(),
            });
        }
        let files = join
            .install(&me.dir.join("join"), &format!("https://{LOCAL_API}"))
            .map_err(me.join_err())?;
        let servers = join.api_server_addrs().map_err(me.join_err())?;
        let listen: SocketAddr = LOCAL_API.parse().map_err(|_| {
            me.join_err()(JoinError::Invalid {
                field: "LOCAL_API",
                reason: LOCAL_API.into(),
            })
        })?;
        let fw = Forwarder::start_in(setup.net.netns(), listen, setup.net.netns(), servers)
            .await
            .map_err(|source| KubeNodeError::Forward {
                node: setup.net.name().to_owned(),
                source,
            })?;
        me.forwarders.push(fw);
        me.start_containerd(setup).await?;
        let cp_err = me.cp_err();
        let containerd = me
            .containerd
            .as_ref()
            .ok_or_else(|| KubeNodeError::Runtime {
                node: setup.net.name().to_owned(),
                source: RuntimeError::Exited {
                    node: setup.net.name().to_owned(),
                    status: "not started".into(),
                    log: String::new(),
                },
            })?;
        me.kubelet = Some(
            Kubelet::start(
                &setup.bins,
                &setup.net,
                containerd,
                &files.kubelet_kubeconfig,
                &files.ca,
                &me.dir.join("kubelet"),
            )
            .map_err(&cp_err)?,
        );
        me.kube_proxy = Some(
            KubeProxy::start(
                &setup.bins,
                &setup.net,
                &files.kube_proxy_kubeconfig,
                &me.dir.join("kube-proxy"),
            )
            .map_err(&cp_err)?,
        );
        Ok(me)
    }

    /// The control plane, on a control-plane node.
    pub fn control_plane(&self) -> Option<&ControlPlane> {
        self.control_plane.as_ref()
    }
    /// The control plane, on a control-plane node (waits, kubectl).
    pub fn control_plane_mut(&mut self) -> Option<&mut ControlPlane> {
        self.control_plane.as_mut()
    }

    /// Join credentials for worker `node_name` (control-plane nodes only) naming the API
    /// servers `api_servers` (`<node IP>:6443` of every control plane; empty: this one's).
    pub fn worker_join_for(
        &self,
        node_name: &str,
        api_servers: &[SocketAddr],
    ) -> Result<WorkerJoin, KubeNodeError> {
        let cp = self
            .control_plane
            .as_ref()
            .ok_or_else(|| KubeNodeError::NotControlPlane(self.name()))?;
        cp.worker_join(node_name, api_servers)
            .map_err(self.cp_err())
    }

    /// The API server's address on the fabric (`<node IP>:6443`), on a control-plane node.
    pub fn api_server(&self) -> Option<SocketAddr> {
        self.control_plane.as_ref().map(|c| c.api_server())
    }

    /// Join data for a further control plane (control-plane nodes only).
    pub fn control_plane_join_data(&self) -> Result<ControlPlaneJoin, KubeNodeError> {
        let cp = self
            .control_plane
            .as_ref()
            .ok_or_else(|| KubeNodeError::NotControlPlane(self.name()))?;
        cp.control_plane_join().map_err(self.cp_err())
    }

    /// `Err` naming the first component that is not running: containerd (not restarted), or a
    /// supervised process that is between a crash and its restart or gave up.
    pub fn health(&mut self) -> Result<(), NotReady> {
        let down = |component: &str, reason: String| NotReady {
            component: component.to_owned(),
            reason,
        };
        match self.containerd.as_mut() {
            None => return Err(down("containerd", "stopped".into())),
            Some(c) => {
                if let Err(e) = c.check() {
                    return Err(down("containerd", e.to_string()));
                }
            }
        }
        if let Some(cp) = self.control_plane.as_mut() {
            if let Err(e) = cp.check() {
                let component = match &e {
                    ControlPlaneError::Process(crate::process::ProcessError::Exited {
                        name,
                        ..
                    }) => name.clone(),
                    _ => "control plane".into(),
                };
                return Err(down(&component, e.to_string()));
            }
            for (name, pid) in cp.pids() {
                if pid.is_none() {
                    return Err(down(&name, "exited; restarting".into()));
                }
            }
        }
        match self.kubelet.as_mut() {
            None => return Err(down("kubelet", "stopped".into())),
            Some(k) => {
                k.check().map_err(|e| down("kubelet", e.to_string()))?;
                if k.pid().is_none() {
                    return Err(down("kubelet", "exited; restarting".into()));
                }
            }
        }
        if let Some(p) = self.kube_proxy.as_mut() {
            p.check().map_err(|e| down("kube-proxy", e.to_string()))?;
            if p.pid().is_none() {
                return Err(down("kube-proxy", "exited; restarting".into()));
            }
        }
        Ok(())
    }

    /// Name, pid and resident memory (KiB) of every process of the node.
    pub fn memory(&self) -> Vec<(String, u32, u64)> {
        let mut out = Vec::new();
        let mut add = |name: &str, pid: Option<u32>| {
            if let Some(pid) = pid {
                out.push((name.to_owned(), pid, crate::host::rss_kib(pid).unwrap_or(0)));
            }
        };
        add("containerd", self.containerd.as_ref().and_then(|c| c.pid()));
        add("kubelet", self.kubelet.as_ref().and_then(|k| k.pid()));
        add("kube-proxy", self.kube_proxy.as_ref().and_then(|k| k.pid()));
        if let Some(cp) = &self.control_plane {
            out.extend(cp.memory());
        }
        out
    }

    /// containerd's process id (e.g. for a fault test).
    pub fn containerd_pid(&self) -> Option<u32> {
        self.containerd.as_ref().and_then(|c| c.pid())
    }

    /// Stops kube-proxy, kubelet (and its pods), the control plane, containerd, the etcd
    /// forwarder, in that order. Idempotent; the first error is returned after all were tried.
    pub async fn stop(&mut self) -> Result<(), KubeNodeError> {
        let mut first: Option<KubeNodeError> = None;
        if let Some(mut p) = self.kube_proxy.take() {
            p.stop().await;
        }
        if let Some(mut k) = self.kubelet.take() {
            if let Err(e) = k.stop().await {
                first.get_or_insert(self.cp_err()(e));
            }
        }
        if let Some(mut cp) = self.control_plane.take() {
            cp.stop().await;
        }
        if let Some(mut c) = self.containerd.take() {
            if let Err(source) = c.stop().await {
                first.get_or_insert(KubeNodeError::Runtime {
                    node: self.name(),
                    source,
                });
            }
        }
        for mut f in self.forwarders.drain(..) {
            f.stop().await;
        }
        first.map_or(Ok(()), Err)
    }
}
