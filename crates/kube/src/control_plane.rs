//! Kubernetes control plane and kubelet on a node, as supervised processes inside the node's
//! namespaces: etcd 3.6, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet. kubeadm
//! is used for what it is good at: `init phase certs all` and `init phase kubeconfig all` from a
//! kubeadm configuration (advertise address = node IP, cert SANs, `imageRepository`, version).
//!
//! Why processes and not static pods: the binaries exist on the host already (measured, in the
//! image), images would have to be built and imported per node first, and a process is supervised
//! (exit noticed, log kept, stopped) by the same code that runs containerd. Static pods stay
//! possible later because the kubeadm configuration and the certificates are kubeadm's.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cmd::{self, CommandError};
use crate::host::{self, HostError};
use crate::join::{ControlPlaneJoin, KubeCa, PkiFile, WorkerJoin};
use crate::net::NodeNet;
use crate::process::{ProcessError, Supervised};
use crate::runtime::Containerd;

/// The Kubernetes version the binaries are built at (third_party/kubernetes).
pub const KUBERNETES_VERSION: &str = "v1.36.3";
/// The service network (kubeadm's default); the API's ClusterIP is its first address.
pub const SERVICE_CIDR: &str = "10.96.0.0/12";
/// Cluster DNS address (the tenth address of the service network, kubeadm's convention).
pub const CLUSTER_DNS: &str = "10.96.0.10";
/// How often a supervised component is restarted after exiting before it counts as failed.
pub const MAX_RESTARTS: u32 = 20;
/// The API server port inside the node's network namespace.
pub const API_PORT: u16 = 6443;

/// Go runtime settings of every node's long-running Go processes (kubelet, kube-proxy,
/// containerd): `GOGC=25` lets the heap grow by 25 % over the live data between collections
/// instead of 100 %. Measured on a worker (BENCHMARKS.md): anonymous memory of the three 43 →
/// 36 MiB at idle, idle CPU 0.8 → 1.0 % of one core. No `GOMEMLIMIT`: a limit below a larger
/// cluster's live heap would make the collector run continuously.
pub const NODE_GO_ENV: &[(&str, &str)] = &[("GOGC", "25")];

/// Bringing up or stopping the control plane failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    #[error("Kubernetes binary {0} is missing (run scripts/install-kubernetes.sh)")]
    MissingBinary(PathBuf),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} not reached within {waited:?}: {detail}")]
    Timeout {
        what: String,
        waited: Duration,
        detail: String,
    },
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("shared key file {0:?} is not one of the cluster's shared keys (SHARED_PKI_FILES)")]
    UnexpectedPkiFile(String),
    #[error("the control-plane join data lacks shared key file {0:?}")]
    MissingPkiFile(String),
    #[error("a control plane with stacked etcd joins through an etcd member, and none was given")]
    NoEtcdMember,
    #[error(transparent)]
    Join(#[from] crate::join::JoinError),
}

fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> ControlPlaneError + 'a {
    move |source| ControlPlaneError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// The folder of the Kubernetes, etcd binaries (`scripts/install-kubernetes.sh` prints it).
#[derive(Debug, Clone)]
pub struct KubeBinaries {
    dir: PathBuf,
}

/// Binaries a control-plane node uses.
pub const REQUIRED_BINARIES: &[&str] = &[
    "kube-proxy",
    "etcd",
    "etcdctl",
    "kubeadm",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kubectl",
];

impl KubeBinaries {
    /// Checks that every binary of [`REQUIRED_BINARIES`] is in `dir`.
    pub fn locate(dir: &Path) -> Result<Self, ControlPlaneError> {
        for b in REQUIRED_BINARIES {
            let p = dir.join(b);
            if !p.is_file() {
                return Err(ControlPlaneError::MissingBinary(p));
            }
        }
        Ok(KubeBinaries {
            dir: dir.to_path_buf(),
        })
    }
    /// The absolute path of binary `name`.
    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

/// The keys every control plane of a cluster shares (relative to the certificates folder): the
/// cluster, front-proxy and etcd CAs and the service-account signing key. A joining control plane
/// gets them (the JoinService is to hand them out only to attested control-plane nodes).
pub const SHARED_PKI_FILES: &[&str] = &[
    "ca.crt",
    "ca.key",
    "sa.key",
    "sa.pub",
    "front-proxy-ca.crt",
    "front-proxy-ca.key",
    "etcd/ca.crt",
    "etcd/ca.key",
];

/// Where a joining control plane gets the cluster's keys and which etcd member it joins through.
#[derive(Debug, Clone)]
pub struct JoinFrom {
    /// A certificates folder holding [`SHARED_PKI_FILES`].
    pub shared_pki: PathBuf,
    /// Client address of an existing etcd member (`<node IP>:2379`).
    pub etcd_member: std::net::SocketAddr,
}

/// Where the Kubernetes API server keeps its state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum EtcdMode {
    /// An etcd 3.6 member per control plane, started here inside the node's namespaces, with
    /// its own CA (`etcd/ca.*`, generated by kubeadm, shared with joining control planes) and
    /// `etcdctl member add` on join.
    #[default]
    Stacked,
    /// An etcd cluster run by someone else (kubeadm's `etcd.external`), e.g. the cluster's own
    /// replicated etcd of the Bootstrapper. No etcd process is started, no member added, no etcd
    /// certificate issued; kubeadm never sees an etcd CA key. The files are read by the API
    /// server, which runs inside the node's namespaces: the endpoints must be reachable from
    /// there (see [`crate::forward::Forwarder`]) and the server certificate must name the
    /// endpoint's address (e.g. a `127.0.0.1` SAN for `https://127.0.0.1:2379`).
    External {
        /// Client URLs as seen from inside the node (`https://127.0.0.1:2379`).
        endpoints: Vec<String>,
        /// CA bundle that signed the etcd server certificates.
        ca_file: PathBuf,
        /// Client certificate and key the API server presents to etcd.
        cert_file: PathBuf,
        key_file: PathBuf,
    },
}

impl EtcdMode {
    /// Whether an etcd member runs on each control plane.
    pub fn is_stacked(&self) -> bool {
        matches!(self, EtcdMode::Stacked)
    }
}

/// The etcd key prefix of the Kubernetes API (its default; the Bootstrapper's own keys must not
/// start with it when both share one etcd).
pub const ETCD_PREFIX: &str = "/registry";

/// What the cluster's control plane is made of.
#[derive(Debug, Clone)]
pub struct ControlPlaneSpec {
    /// kubeadm `clusterName` (in kubeconfigs).
    pub cluster_name: String,
    /// Extra API server certificate SANs (IPs or DNS names), e.g. the host-side endpoint through
    /// which the host reaches the API.
    pub extra_sans: Vec<String>,
    /// Stacked etcd (started here) or an external one.
    pub etcd: EtcdMode,
}

/// Files of a control-plane node below its state folder.
#[derive(Debug, Clone)]
pub struct ControlPlanePaths {
    pub dir: PathBuf,
    pub kubeadm_config: PathBuf,
    pub pki: PathBuf,
    pub kubeconfigs: PathBuf,
    pub etcd_data: PathBuf,
    pub logs: PathBuf,
}

impl ControlPlanePaths {
    pub fn new(dir: &Path) -> Self {
        ControlPlanePaths {
            dir: dir.to_path_buf(),
            kubeadm_config: dir.join("kubeadm.yaml"),
            pki: dir.join("pki"),
            kubeconfigs: dir.join("kubeconfig"),
            etcd_data: dir.join("etcd"),
            logs: dir.join("logs"),
        }
    }
    /// The cluster admin's kubeconfig (server = the node IP).
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.kubeconfigs.join("admin.conf")
    }
}

fn yaml_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

/// The kubeadm configuration (InitConfiguration + ClusterConfiguration, v1beta4).
pub fn render_kubeadm_config(
    node: &NodeNet,
    containerd_socket: &Path,
    paths: &ControlPlanePaths,
    spec: &ControlPlaneSpec,
) -> String {
    let ip = node.address().to_string();
    let mut sans = vec![ip.clone(), "127.0.0.1".to_owned(), node.name().to_owned()];
    sans.extend(spec.extra_sans.iter().cloned());
    let (pod_net, pod_prefix) = crate::net::POD_NETWORK;
    format!(
        r#"apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
localAPIEndpoint:
  advertiseAddress: "{ip}"
  bindPort: {API_PORT}
nodeRegistration:
  name: "{name}"
  criSocket: "unix://{sock}"
  imagePullPolicy: Never
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
clusterName: "{cluster}"
kubernetesVersion: "{KUBERNETES_VERSION}"
imageRepository: "{repo}"
certificatesDir: "{pki}"
controlPlaneEndpoint: "{ip}:{API_PORT}"
networking:
  serviceSubnet: "{SERVICE_CIDR}"
  podSubnet: "{pod_net}/{pod_prefix}"
  dnsDomain: "cluster.local"
apiServer:
  certSANs: {sans}
etcd:
{etcd}"#,
        name = node.name(),
        sock = containerd_socket.display(),
        cluster = spec.cluster_name,
        repo = crate::image::IMAGE_REPOSITORY,
        pki = paths.pki.display(),
        sans = yaml_list(&sans),
        etcd = render_etcd(&spec.etcd, paths),
    )
}

fn render_etcd(mode: &EtcdMode, paths: &ControlPlanePaths) -> String {
    match mode {
        EtcdMode::Stacked => format!(
            "  local:\n    dataDir: \"{}\"\n",
            paths.etcd_data.display()
        ),
        EtcdMode::External {
            endpoints,
            ca_file,
            cert_file,
            key_file,
        } => format!(
            "  external:\n    endpoints: {}\n    caFile: {:?}\n    certFile: {:?}\n    keyFile: {:?}\n",
            yaml_list(endpoints),
            ca_file.display().to_string(),
            cert_file.display().to_string(),
            key_file.display().to_string(),
        ),
    }
}

/// Durations of the bring-up phases.
#[derive(Debug, Clone, Default)]
pub struct Timings {
    pub phases: Vec<(&'static str, Duration)>,
}

impl std::fmt::Display for Timings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .phases
            .iter()
            .map(|(n, d)| format!("{n} {:.2}s", d.as_secs_f64()))
            .collect();
        write!(f, "{}", parts.join(", "))
    }
}

/// Polls `probe` until it returns `Ok`, or fails with the last error after `deadline`; every
/// round also checks that the supervised processes still run.
async fn wait_for<F, Fut>(
    what: &str,
    deadline: Duration,
    procs: &mut [Supervised],
    mut probe: F,
) -> Result<(), ControlPlaneError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let start = Instant::now();
    loop {
        for p in procs.iter_mut() {
            p.check()?;
        }
        let last = match probe().await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if start.elapsed() > deadline {
            return Err(ControlPlaneError::Timeout {
                what: what.to_owned(),
                waited: start.elapsed(),
                detail: last,
            });
        }
        // polling: these components have no readiness notification
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A running control plane (etcd, API server, controller manager, scheduler) on one node.
#[derive(Debug)]
pub struct ControlPlane {
    node: NodeNet,
    bins: KubeBinaries,
    paths: ControlPlanePaths,
    spec: ControlPlaneSpec,
    procs: Vec<Supervised>,
    timings: Timings,
}

/// Writes shared key files ([`SHARED_PKI_FILES`] names only) below `pki`, owner-only.
pub(crate) fn write_shared_pki(pki: &Path, files: &[PkiFile]) -> Result<(), ControlPlaneError> {
    for f in files {
        if !SHARED_PKI_FILES.contains(&f.name.as_str()) {
            return Err(ControlPlaneError::UnexpectedPkiFile(f.name.clone()));
        }
        let to = pki.join(&f.name);
        crate::join::write_private(&to, &f.data).map_err(io_err("write shared key", &to))?;
    }
    Ok(())
}

/// Reads the shared key files an `etcd` mode needs ([`SHARED_PKI_FILES`]; without the etcd CA
/// for [`EtcdMode::External`]) from a certificates folder.
pub fn read_shared_pki(pki: &Path, etcd: &EtcdMode) -> Result<Vec<PkiFile>, ControlPlaneError> {
    shared_pki_names(etcd)
        .map(|name| {
            let p = pki.join(name);
            let data = std::fs::read(&p).map_err(io_err("read shared key", &p))?;
            Ok(PkiFile {
                name: (*name).to_owned(),
                data,
            })
        })
        .collect()
}

/// The [`SHARED_PKI_FILES`] a mode needs (external etcd: no etcd CA).
pub fn shared_pki_names(etcd: &EtcdMode) -> impl Iterator<Item = &'static &'static str> {
    let stacked = etcd.is_stacked();
    SHARED_PKI_FILES
        .iter()
        .filter(move |n| stacked || !n.starts_with("etcd/"))
}

impl ControlPlane {
    /// kubeadm certificates and kubeconfigs, then etcd (stacked mode), kube-apiserver (until
    /// `/readyz` answers), kube-controller-manager and kube-scheduler, each inside the node's
    /// namespaces. `deadline` bounds each wait.
    pub async fn init(
        bins: &KubeBinaries,
        node: &NodeNet,
        containerd_socket: &Path,
        dir: &Path,
        spec: &ControlPlaneSpec,
        deadline: Duration,
    ) -> Result<ControlPlane, ControlPlaneError> {
        Self::bring_up(bins, node, containerd_socket, dir, spec, None, deadline).await
    }

    /// A further control plane: the cluster's shared keys ([`SHARED_PKI_FILES`], copied from
    /// `join.shared_pki`) make kubeadm issue this node's certificates from the same CAs; in
    /// stacked mode its etcd joins the existing members (`etcdctl member add` through
    /// `join.etcd_member`); then its API server, controller manager and scheduler (leader
    /// election) start on it.
    pub async fn join(
        bins: &KubeBinaries,
        node: &NodeNet,
        containerd_socket: &Path,
        dir: &Path,
        spec: &ControlPlaneSpec,
        join: &JoinFrom,
        deadline: Duration,
    ) -> Result<ControlPlane, ControlPlaneError> {
        let files = read_shared_pki(&join.shared_pki, &spec.etcd)?;
        Self::bring_up(
            bins,
            node,
            containerd_socket,
            dir,
            spec,
            Some((&files, Some(join.etcd_member))),
            deadline,
        )
        .await
    }

    /// [`ControlPlane::join`] from a [`ControlPlaneJoin`] (the shared keys as data, e.g. from a
    /// join ticket); written owner-only below `dir`.
    pub async fn join_with(
        bins: &KubeBinaries,
        node: &NodeNet,
        containerd_socket: &Path,
        dir: &Path,
        spec: &ControlPlaneSpec,
        join: &ControlPlaneJoin,
        deadline: Duration,
    ) -> Result<ControlPlane, ControlPlaneError> {
        Self::bring_up(
            bins,
            node,
            containerd_socket,
            dir,
            spec,
            Some((&join.files, join.etcd_member)),
            deadline,
        )
        .await
    }

    /// The folder holding this control plane's certificates (the source of
    /// [`JoinFrom::shared_pki`]).
    pub fn pki_dir(&self) -> &Path {
        &self.paths.pki
    }

    /// This control plane's etcd client URL address (stacked mode).
    pub fn etcd_member(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from((self.node.address(), 2379))
    }

    /// The API server's address as other nodes reach it (`<node IP>:6443`).
    pub fn api_server(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from((self.node.address(), API_PORT))
    }

    /// The spec this control plane was brought up with.
    pub fn spec(&self) -> &ControlPlaneSpec {
        &self.spec
    }

    /// What another control plane needs to join: the shared keys of this one's certificates
    /// folder, its API server and (stacked mode) its etcd member. Hand it out only to attested
    /// control-plane nodes: it holds the cluster CA keys.
    pub fn control_plane_join(&self) -> Result<ControlPlaneJoin, ControlPlaneError> {
        Ok(ControlPlaneJoin {
            api_server: self.api_server().to_string(),
            files: read_shared_pki(&self.paths.pki, &self.spec.etcd)?,
            etcd_member: self.spec.etcd.is_stacked().then(|| self.etcd_member()),
        })
    }

    /// What worker `node_name` needs to join (cluster CA, kubelet and kube-proxy client
    /// certificates signed here, in Rust, by the cluster CA) with the API servers
    /// `api_servers` (every control plane's; empty: this one's). Hand it out only to attested
    /// nodes.
    pub fn worker_join(
        &self,
        node_name: &str,
        api_servers: &[std::net::SocketAddr],
    ) -> Result<WorkerJoin, ControlPlaneError> {
        let ca = KubeCa::load(&self.paths.pki)?;
        let own = [self.api_server()];
        let servers = if api_servers.is_empty() {
            &own[..]
        } else {
            api_servers
        };
        Ok(ca.worker_join(&self.spec.cluster_name, servers, node_name)?)
    }

    async fn bring_up(
        bins: &KubeBinaries,
        node: &NodeNet,
        containerd_socket: &Path,
        dir: &Path,
        spec: &ControlPlaneSpec,
        join: Option<(&[PkiFile], Option<std::net::SocketAddr>)>,
        deadline: Duration,
    ) -> Result<ControlPlane, ControlPlaneError> {
        let paths = ControlPlanePaths::new(dir);
        if let Some((files, _)) = join {
            for name in shared_pki_names(&spec.etcd) {
                if !files.iter().any(|f| f.name == *name) {
                    return Err(ControlPlaneError::MissingPkiFile((*name).to_owned()));
                }
            }
            write_shared_pki(&paths.pki, files)?;
        }
        for d in [&paths.dir, &paths.logs] {
            std::fs::create_dir_all(d).map_err(io_err("create", d))?;
        }
        std::fs::write(
            &paths.kubeadm_config,
            render_kubeadm_config(node, containerd_socket, &paths, spec),
        )
        .map_err(io_err("write", &paths.kubeadm_config))?;
        let mut cp = ControlPlane {
            node: node.clone(),
            bins: bins.clone(),
            paths,
            spec: spec.clone(),
            procs: Vec::new(),
            timings: Timings::default(),
        };
        let cfg = cp.paths.kubeadm_config.display().to_string();

        let t = Instant::now();
        cmd::run_async(
            cp.node
                .tokio_command(&bins.path("kubeadm"))
                .args(["init", "phase", "certs", "all", "--config", &cfg]),
        )
        .await?;
        cp.timings.phases.push(("kubeadm certs", t.elapsed()));

        let t = Instant::now();
        let kc = cp.paths.kubeconfigs.display().to_string();
        cmd::run_async(cp.node.tokio_command(&bins.path("kubeadm")).args([
            "init",
            "phase",
            "kubeconfig",
            "all",
            "--config",
            &cfg,
            "--kubeconfig-dir",
            &kc,
        ]))
        .await?;
        cp.timings.phases.push(("kubeadm kubeconfigs", t.elapsed()));

        if spec.etcd.is_stacked() {
            cp.stacked_etcd(join.map(|(_, m)| m), deadline).await?;
        }

        let t = Instant::now();
        cp.start_apiserver()?;
        let mut probe = cp.kubectl_probe();
        wait_for("kube-apiserver /readyz", deadline, &mut cp.procs, || {
            let mut c = probe();
            c.args(["get", "--raw", "/readyz"]);
            async move {
                cmd::run_async(&mut c)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        })
        .await?;
        cp.timings.phases.push(("apiserver ready", t.elapsed()));

        // What `kubeadm init` does once the API answers: admin.conf's group
        // kubeadm:cluster-admins becomes cluster-admin (through super-admin.conf, system:masters).
        // The API server's kubelet client (CN kube-apiserver-kubelet-client, no group) gets the
        // built-in role system:kubelet-api-admin (logs, exec, port-forward through kubelets).
        let t = Instant::now();
        let super_admin = cp.kubeconfig("super-admin.conf");
        for (binding, role, subject) in [
            (
                "kubeadm:cluster-admins",
                "cluster-admin",
                "--group=kubeadm:cluster-admins",
            ),
            (
                "constellation:apiserver-kubelet-client",
                "system:kubelet-api-admin",
                "--user=kube-apiserver-kubelet-client",
            ),
        ] {
            let r = cmd::run_async(
                tokio::process::Command::from(cp.node.net_command(&bins.path("kubectl"))).args([
                    &format!("--kubeconfig={super_admin}"),
                    "create",
                    "clusterrolebinding",
                    binding,
                    &format!("--clusterrole={role}"),
                    subject,
                ]),
            )
            .await;
            match r {
                Err(e) if !e.stderr().contains("already exists") => return Err(e.into()),
                _ => {}
            }
        }
        cp.timings.phases.push(("RBAC bindings", t.elapsed()));

        let t = Instant::now();
        cp.start_controller_manager_and_scheduler()?;
        cp.timings
            .phases
            .push(("kcm + scheduler started", t.elapsed()));
        Ok(cp)
    }

    /// Stacked mode: `member add` (joining) and start this node's etcd, wait until healthy.
    /// `join`: `Some(member)` for a joining control plane.
    async fn stacked_etcd(
        &mut self,
        join: Option<Option<std::net::SocketAddr>>,
        deadline: Duration,
    ) -> Result<(), ControlPlaneError> {
        let t = Instant::now();
        let initial_cluster = match join {
            None => format!("{}=https://{}:2380", self.node.name(), self.node.address()),
            Some(member) => {
                let member = member.ok_or(ControlPlaneError::NoEtcdMember)?;
                let c = self.etcd_member_add(member).await?;
                self.timings.phases.push(("etcd member add", t.elapsed()));
                c
            }
        };
        let t = Instant::now();
        self.start_etcd(&initial_cluster, join.is_some())?;
        let pki = self.paths.pki.clone();
        let etcdctl = self.bins.path("etcdctl");
        let node2 = self.node.clone();
        wait_for("etcd healthy", deadline, &mut self.procs, || {
            let mut c = node2.tokio_command(&etcdctl);
            c.arg("--endpoints=https://127.0.0.1:2379")
                .arg(format!("--cacert={}", pki.join("etcd/ca.crt").display()))
                .arg(format!(
                    "--cert={}",
                    pki.join("etcd/healthcheck-client.crt").display()
                ))
                .arg(format!(
                    "--key={}",
                    pki.join("etcd/healthcheck-client.key").display()
                ))
                .args([
                    "--dial-timeout=1s",
                    "--command-timeout=2s",
                    "endpoint",
                    "health",
                ]);
            async move {
                cmd::run_async(&mut c)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        })
        .await?;
        self.timings.phases.push(("etcd healthy", t.elapsed()));
        Ok(())
    }

    fn spawn(&mut self, name: &str, args: Vec<String>) -> Result<(), ControlPlaneError> {
        let node = self.node.clone();
        let program = self.bins.path(name);
        let factory = Box::new(move || {
            let mut c = node.tokio_command(&program);
            c.args(&args);
            c
        });
        let log = self.paths.logs.join(format!("{name}.log"));
        self.procs
            .push(Supervised::spawn(name, factory, &log, MAX_RESTARTS)?);
        Ok(())
    }

    fn pki(&self, f: &str) -> String {
        self.paths.pki.join(f).display().to_string()
    }
    fn kubeconfig(&self, f: &str) -> String {
        self.paths.kubeconfigs.join(f).display().to_string()
    }

    /// `etcdctl member add` at an existing member; returns the `--initial-cluster` value etcd
    /// prints for the new member.
    async fn etcd_member_add(
        &self,
        member: std::net::SocketAddr,
    ) -> Result<String, ControlPlaneError> {
        let out = cmd::run_async(
            self.node
                .tokio_command(&self.bins.path("etcdctl"))
                .arg(format!("--endpoints=https://{member}"))
                .arg(format!("--cacert={}", self.pki("etcd/ca.crt")))
                .arg(format!(
                    "--cert={}",
                    self.pki("etcd/healthcheck-client.crt")
                ))
                .arg(format!("--key={}", self.pki("etcd/healthcheck-client.key")))
                .args(["member", "add", self.node.name()])
                .arg(format!("--peer-urls=https://{}:2380", self.node.address())),
        )
        .await?;
        out.lines()
            .find_map(|l| l.strip_prefix("ETCD_INITIAL_CLUSTER="))
            .map(|v| v.trim_matches('"').to_owned())
            .ok_or_else(|| ControlPlaneError::Timeout {
                what: "etcd member add output with ETCD_INITIAL_CLUSTER".into(),
                waited: Duration::ZERO,
                detail: out.clone(),
            })
    }

    fn start_etcd(
        &mut self,
        initial_cluster: &str,
        existing: bool,
    ) -> Result<(), ControlPlaneError> {
        let ip = self.node.address();
        let name = self.node.name().to_owned();
        let args = vec![
            format!("--name={name}"),
            format!("--data-dir={}", self.paths.etcd_data.display()),
            format!("--advertise-client-urls=https://{ip}:2379"),
            format!("--listen-client-urls=https://127.0.0.1:2379,https://{ip}:2379"),
            format!("--initial-advertise-peer-urls=https://{ip}:2380"),
            format!("--listen-peer-urls=https://{ip}:2380"),
            format!("--initial-cluster={initial_cluster}"),
            format!(
                "--initial-cluster-state={}",
                if existing { "existing" } else { "new" }
            ),
            format!("--cert-file={}", self.pki("etcd/server.crt")),
            format!("--key-file={}", self.pki("etcd/server.key")),
            format!("--trusted-ca-file={}", self.pki("etcd/ca.crt")),
            "--client-cert-auth=true".into(),
            format!("--peer-cert-file={}", self.pki("etcd/peer.crt")),
            format!("--peer-key-file={}", self.pki("etcd/peer.key")),
            format!("--peer-trusted-ca-file={}", self.pki("etcd/ca.crt")),
            "--peer-client-cert-auth=true".into(),
            "--listen-metrics-urls=http://127.0.0.1:2381".into(),
            "--snapshot-count=10000".into(),
            "--log-level=warn".into(),
        ];
        self.spawn("etcd", args)
    }

    fn start_apiserver(&mut self) -> Result<(), ControlPlaneError> {
        let ip = self.node.address();
        let mut args = vec![
            format!("--advertise-address={ip}"),
            format!("--secure-port={API_PORT}"),
            "--allow-privileged=true".into(),
            "--authorization-mode=Node,RBAC".into(),
            format!("--client-ca-file={}", self.pki("ca.crt")),
            "--enable-admission-plugins=NodeRestriction".into(),
            "--enable-bootstrap-token-auth=true".into(),
            format!("--etcd-prefix={ETCD_PREFIX}"),
            format!(
                "--kubelet-client-certificate={}",
                self.pki("apiserver-kubelet-client.crt")
            ),
            format!(
                "--kubelet-client-key={}",
                self.pki("apiserver-kubelet-client.key")
            ),
            "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname".into(),
            format!(
                "--proxy-client-cert-file={}",
                self.pki("front-proxy-client.crt")
            ),
            format!(
                "--proxy-client-key-file={}",
                self.pki("front-proxy-client.key")
            ),
            "--requestheader-allowed-names=front-proxy-client".into(),
            format!(
                "--requestheader-client-ca-file={}",
                self.pki("front-proxy-ca.crt")
            ),
            "--requestheader-extra-headers-prefix=X-Remote-Extra-".into(),
            "--requestheader-group-headers=X-Remote-Group".into(),
            "--requestheader-username-headers=X-Remote-User".into(),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-account-key-file={}", self.pki("sa.pub")),
            format!("--service-account-signing-key-file={}", self.pki("sa.key")),
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            format!("--tls-cert-file={}", self.pki("apiserver.crt")),
            format!("--tls-private-key-file={}", self.pki("apiserver.key")),
            format!(
                "--cert-dir={}",
                self.paths.dir.join("apiserver-certs").display()
            ),
        ];
        args.extend(match &self.spec.etcd {
            EtcdMode::Stacked => vec![
                format!("--etcd-cafile={}", self.pki("etcd/ca.crt")),
                format!("--etcd-certfile={}", self.pki("apiserver-etcd-client.crt")),
                format!("--etcd-keyfile={}", self.pki("apiserver-etcd-client.key")),
                "--etcd-servers=https://127.0.0.1:2379".into(),
            ],
            EtcdMode::External {
                endpoints,
                ca_file,
                cert_file,
                key_file,
            } => vec![
                format!("--etcd-cafile={}", ca_file.display()),
                format!("--etcd-certfile={}", cert_file.display()),
                format!("--etcd-keyfile={}", key_file.display()),
                format!("--etcd-servers={}", endpoints.join(",")),
            ],
        });
        self.spawn("kube-apiserver", args)
    }

    fn start_controller_manager_and_scheduler(&mut self) -> Result<(), ControlPlaneError> {
        let kcm = self.kubeconfig("controller-manager.conf");
        let args = vec![
            format!("--kubeconfig={kcm}"),
            format!("--authentication-kubeconfig={kcm}"),
            format!("--authorization-kubeconfig={kcm}"),
            "--bind-address=127.0.0.1".into(),
            format!("--client-ca-file={}", self.pki("ca.crt")),
            format!("--cluster-signing-cert-file={}", self.pki("ca.crt")),
            format!("--cluster-signing-key-file={}", self.pki("ca.key")),
            "--controllers=*,bootstrapsigner,tokencleaner".into(),
            format!(
                "--requestheader-client-ca-file={}",
                self.pki("front-proxy-ca.crt")
            ),
            format!("--root-ca-file={}", self.pki("ca.crt")),
            format!("--service-account-private-key-file={}", self.pki("sa.key")),
            "--use-service-account-credentials=true".into(),
            format!(
                "--flex-volume-plugin-dir={}",
                self.paths.dir.join("flexvolume").display()
            ),
        ];
        self.spawn("kube-controller-manager", args)?;
        let sch = self.kubeconfig("scheduler.conf");
        let args = vec![
            format!("--kubeconfig={sch}"),
            format!("--authentication-kubeconfig={sch}"),
            format!("--authorization-kubeconfig={sch}"),
            "--bind-address=127.0.0.1".into(),
        ];
        self.spawn("kube-scheduler", args)
    }

    /// A closure making `kubectl --kubeconfig admin.conf` commands inside the node's network.
    fn kubectl_probe(&self) -> impl FnMut() -> tokio::process::Command {
        let node = self.node.clone();
        let kubectl = self.bins.path("kubectl");
        let admin = self.paths.admin_kubeconfig();
        move || {
            let mut c = tokio::process::Command::from(node.net_command(&kubectl));
            c.arg(format!("--kubeconfig={}", admin.display()))
                .arg("--request-timeout=5s");
            c
        }
    }

    /// `kubectl --kubeconfig <admin.conf>` inside the node's network namespace.
    pub fn kubectl(&self) -> tokio::process::Command {
        (self.kubectl_probe())()
    }

    /// Writes to `out` a kubeconfig for the kubelet of node `name`: a client certificate
    /// `CN=system:node:<name>, O=system:nodes` signed by the cluster CA (`kubeadm kubeconfig
    /// user`), server = the control-plane endpoint. This is the credential a joining node gets
    /// (the JoinService is to hand it out only to attested nodes).
    pub async fn node_kubeconfig(&self, name: &str, out: &Path) -> Result<(), ControlPlaneError> {
        self.client_kubeconfig(&format!("system:node:{name}"), Some("system:nodes"), out)
            .await
    }

    /// Writes to `out` a kubeconfig with a client certificate for user `client` (and group
    /// `org`) signed by the cluster CA, server = the control-plane endpoint.
    pub async fn client_kubeconfig(
        &self,
        client: &str,
        org: Option<&str>,
        out: &Path,
    ) -> Result<(), ControlPlaneError> {
        let cfg = self.paths.kubeadm_config.display().to_string();
        let mut c = self.node.tokio_command(&self.bins.path("kubeadm"));
        c.args([
            "kubeconfig",
            "user",
            "--config",
            &cfg,
            "--client-name",
            client,
        ]);
        if let Some(o) = org {
            c.args(["--org", o]);
        }
        let kubeconfig = cmd::run_async(&mut c).await?;
        std::fs::write(out, kubeconfig).map_err(io_err("write", out))?;
        Ok(())
    }

    /// What `kubeadm init phase mark-control-plane` does (that phase only talks through
    /// `/etc/kubernetes/admin.conf`): the role label `node-role.kubernetes.io/control-plane` and
    /// the `NoSchedule` taint of that name on node `name`. Idempotent.
    pub async fn mark_control_plane(&self, name: &str) -> Result<(), ControlPlaneError> {
        cmd::run_async(self.kubectl().args([
            "label",
            "--overwrite",
            "node",
            name,
            "node-role.kubernetes.io/control-plane=",
        ]))
        .await?;
        cmd::run_async(self.kubectl().args([
            "taint",
            "--overwrite",
            "node",
            name,
            "node-role.kubernetes.io/control-plane:NoSchedule",
        ]))
        .await?;
        Ok(())
    }

    /// `kubeadm init phase addon coredns`: the CoreDNS Deployment (image
    /// [`crate::image::COREDNS_REFERENCE`], which every node must have imported), its ConfigMap,
    /// RBAC and the `kube-dns` Service at [`CLUSTER_DNS`].
    pub async fn deploy_coredns(&self) -> Result<(), ControlPlaneError> {
        let cfg = self.paths.kubeadm_config.display().to_string();
        let admin = self.paths.admin_kubeconfig().display().to_string();
        cmd::run_async(self.node.tokio_command(&self.bins.path("kubeadm")).args([
            "init",
            "phase",
            "addon",
            "coredns",
            "--config",
            &cfg,
            "--kubeconfig",
            &admin,
        ]))
        .await?;
        Ok(())
    }

    pub fn paths(&self) -> &ControlPlanePaths {
        &self.paths
    }
    pub fn timings(&self) -> &Timings {
        &self.timings
    }

    /// Name, pid and resident memory (KiB) of every process.
    pub fn memory(&self) -> Vec<(String, u32, u64)> {
        self.procs
            .iter()
            .filter_map(|p| {
                let pid = p.pid()?;
                Some((p.name().to_owned(), pid, host::rss_kib(pid).unwrap_or(0)))
            })
            .collect()
    }

    /// Name and current pid of every process (`None` between a crash and its restart).
    pub fn pids(&self) -> Vec<(String, Option<u32>)> {
        self.procs
            .iter()
            .map(|p| (p.name().to_owned(), p.pid()))
            .collect()
    }

    /// `Err` naming the first process that is no longer running.
    pub fn check(&mut self) -> Result<(), ControlPlaneError> {
        for p in &mut self.procs {
            p.check()?;
        }
        Ok(())
    }

    /// Waits until node `name` reports Ready (and the control plane keeps running).
    pub async fn wait_node_ready(
        &mut self,
        name: &str,
        deadline: Duration,
    ) -> Result<(), ControlPlaneError> {
        let mut probe = self.kubectl_probe();
        let name = name.to_owned();
        wait_for(
            &format!("node {name} Ready"),
            deadline,
            &mut self.procs,
            || {
                let mut c = probe();
                c.args([
                    "get",
                    "node",
                    &name,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                ]);
                async move {
                    match cmd::run_async(&mut c).await {
                        Ok(s) if s.trim() == "True" => Ok(()),
                        Ok(s) => Err(format!("Ready={:?}", s.trim())),
                        Err(e) => Err(e.to_string()),
                    }
                }
            },
        )
        .await
    }

    /// SIGKILLs every process of this control plane at once (a crash, `kill -9`).
    pub fn kill(&mut self) {
        for p in &mut self.procs {
            p.kill_now();
        }
        self.procs.clear();
    }

    /// Stops scheduler, controller manager, API server, etcd (reverse start order); idempotent.
    pub async fn stop(&mut self) {
        while let Some(mut p) = self.procs.pop() {
            p.stop(Duration::from_secs(10)).await;
        }
    }
}

/// The kubelet configuration of a node (`failCgroupV1: false`, cgroupfs, its own cgroupRoot,
/// eviction and image GC off because every node shares the host's disk, the node's containerd).
pub fn render_kubelet_config(
    node: &NodeNet,
    containerd_socket: &Path,
    dir: &Path,
    ca: &Path,
) -> String {
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: "{cgroup}"
failSwapOn: false
containerRuntimeEndpoint: "unix://{sock}"
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: "{ca}"
authorization:
  mode: Webhook
clusterDomain: cluster.local
clusterDNS: ["{CLUSTER_DNS}"]
healthzBindAddress: 127.0.0.1
podLogsDir: "{dir}/pod-logs"
volumePluginDir: "{dir}/volume-plugins"
imageGCHighThresholdPercent: 100
evictionHard:
  memory.available: "0%"
  nodefs.available: "0%"
  nodefs.inodesFree: "0%"
  imagefs.available: "0%"
  imagefs.inodesFree: "0%"
protectKernelDefaults: true
maxOpenFiles: 20000
rotateCertificates: false
resolvConf: /etc/resolv.conf
"#,
        cgroup = node.cgroup_parent(),
        sock = containerd_socket.display(),
        ca = ca.display(),
        dir = dir.display(),
    )
}

/// A node's kubelet.
#[derive(Debug)]
pub struct Kubelet {
    proc: Supervised,
    node: NodeNet,
}

impl Kubelet {
    /// Starts kubelet in the node's namespaces with `kubeconfig` (a node credential) and the CA
    /// that signs API clients. The host sysctls of [`host::KUBELET_SYSCTLS`] must be in place
    /// (see [`host::HostSysctls::for_kubelet`]); the node's cgroupRoot is created here.
    pub fn start(
        bins: &KubeBinaries,
        node: &NodeNet,
        containerd: &Containerd,
        kubeconfig: &Path,
        client_ca: &Path,
        dir: &Path,
    ) -> Result<Kubelet, ControlPlaneError> {
        std::fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        host::create_cgroup(&node.cgroup_parent())?;
        let config = dir.join("config.yaml");
        std::fs::write(
            &config,
            render_kubelet_config(node, &containerd.paths().socket, dir, client_ca),
        )
        .map_err(io_err("write", &config))?;
        let args = vec![
            format!("--config={}", config.display()),
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--root-dir={}", dir.join("root").display()),
            format!("--node-ip={}", node.address()),
            format!("--hostname-override={}", node.name()),
            "--v=1".to_owned(),
        ];
        let (n, program) = (node.clone(), bins.path("kubelet"));
        let factory = Box::new(move || {
            let mut c = n.tokio_command(&program);
            c.args(&args).envs(NODE_GO_ENV.iter().copied());
            c
        });
        let proc = Supervised::spawn("kubelet", factory, &dir.join("kubelet.log"), MAX_RESTARTS)?;
        Ok(Kubelet {
            proc,
            node: node.clone(),
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }
    pub fn check(&mut self) -> Result<(), ControlPlaneError> {
        Ok(self.proc.check()?)
    }

    /// Stops kubelet, kills what remains in the node's cgroupRoot (pods) and removes it.
    pub async fn stop(&mut self) -> Result<(), ControlPlaneError> {
        self.proc.stop(Duration::from_secs(10)).await;
        self.remove_pods()
    }

    fn remove_pods(&self) -> Result<(), ControlPlaneError> {
        let cg = self.node.cgroup_parent();
        host::kill_all("pods of kubelet", Duration::from_secs(10), || {
            host::processes_in_cgroup(&cg)
        })?;
        host::remove_cgroup_tree(&cg)?;
        Ok(())
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        // kubelet first (it would recreate pod cgroups), then its pods in the cgroupRoot
        self.proc.kill_now();
        let _ = self.remove_pods();
    }
}

/// kube-proxy's configuration: iptables mode (IPVS is impossible here: no `IP_VS` in the kernel;
/// nftables mode emits a priority nft 1.0.6 rejects), `conntrack.maxPerCore: 0` (the conntrack
/// table size is global and not writable from a node's network namespace).
pub fn render_kube_proxy_config(node: &NodeNet, kubeconfig: &Path) -> String {
    let (pod_net, pod_prefix) = crate::net::POD_NETWORK;
    format!(
        r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clusterCIDR: "{pod_net}/{pod_prefix}"
hostnameOverride: "{name}"
healthzBindAddress: "127.0.0.1:10256"
metricsBindAddress: "127.0.0.1:10249"
clientConnection:
  kubeconfig: "{kubeconfig}"
conntrack:
  maxPerCore: 0
"#,
        name = node.name(),
        kubeconfig = kubeconfig.display(),
    )
}

/// A node's kube-proxy (iptables rules inside the node's network namespace only).
#[derive(Debug)]
pub struct KubeProxy {
    proc: Supervised,
}

impl KubeProxy {
    /// Starts kube-proxy in the node's namespaces. `kubeconfig` authenticates as
    /// `system:kube-proxy` (bound to `system:node-proxier` by Kubernetes' default RBAC), e.g. from
    /// [`ControlPlane::client_kubeconfig`].
    pub fn start(
        bins: &KubeBinaries,
        node: &NodeNet,
        kubeconfig: &Path,
        dir: &Path,
    ) -> Result<KubeProxy, ControlPlaneError> {
        std::fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        let config = dir.join("kube-proxy.yaml");
        std::fs::write(&config, render_kube_proxy_config(node, kubeconfig))
            .map_err(io_err("write", &config))?;
        let (n, program) = (node.clone(), bins.path("kube-proxy"));
        let arg = format!("--config={}", config.display());
        let factory = Box::new(move || {
            let mut c = n.tokio_command(&program);
            c.arg(&arg).envs(NODE_GO_ENV.iter().copied());
            c
        });
        let proc = Supervised::spawn(
            "kube-proxy",
            factory,
            &dir.join("kube-proxy.log"),
            MAX_RESTARTS,
        )?;
        Ok(KubeProxy { proc })
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }
    pub fn check(&mut self) -> Result<(), ControlPlaneError> {
        Ok(self.proc.check()?)
    }
    pub async fn stop(&mut self) {
        self.proc.stop(Duration::from_secs(10)).await;
    }
}
