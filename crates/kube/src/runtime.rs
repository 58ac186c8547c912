//! One containerd per node (Debian's 1.6), started inside the node's network and mount namespaces
//! with its own root, state, sockets and runc root, the CRI settings this host needs
//! (`restrict_oom_score_adj`: no CAP_SYS_RESOURCE here), the CNI plugins of `/usr/lib/cni` and a
//! per-node bridge conflist for the node's pod CIDR.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::cmd::{self, CommandError};
use crate::host::{self, HostError};
use crate::net::NodeNet;

/// Where Debian installs the CNI plugins.
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";
/// The containerd namespace the CRI plugin (kubelet) uses.
pub const K8S_NAMESPACE: &str = "k8s.io";
/// Longest unix socket path (sun_path without its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Starting, using or stopping a node's containerd failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("state folder {0} must be an absolute path (nsenter changes the working directory)")]
    RelativeDir(PathBuf),
    #[error("socket path {path} is {len} bytes, unix sockets allow {MAX_SOCKET_PATH}: use a shorter state folder")]
    SocketPathTooLong { path: PathBuf, len: usize },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("containerd of node {node} exited ({status}); log: {log}")]
    Exited {
        node: String,
        status: String,
        log: String,
    },
    #[error("containerd of node {node} did not answer on {socket} within {waited:?}; log: {log}")]
    NotReady {
        node: String,
        socket: PathBuf,
        waited: Duration,
        log: String,
    },
    #[error("CNI plugin result has no IPv4 address: {0}")]
    NoPodAddress(String),
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(transparent)]
    Host(#[from] HostError),
}

fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> RuntimeError + 'a {
    move |source| RuntimeError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Paths of one node's containerd below its state folder.
#[derive(Debug, Clone)]
pub struct RuntimePaths {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub cni_conf_dir: PathBuf,
    pub log: PathBuf,
}

impl RuntimePaths {
    pub fn new(dir: &Path) -> Result<Self, RuntimeError> {
        if !dir.is_absolute() {
            return Err(RuntimeError::RelativeDir(dir.to_path_buf()));
        }
        let socket = dir.join("containerd.sock");
        let len = socket.as_os_str().len() + ".ttrpc".len();
        if len > MAX_SOCKET_PATH {
            return Err(RuntimeError::SocketPathTooLong { path: socket, len });
        }
        Ok(RuntimePaths {
            dir: dir.to_path_buf(),
            config: dir.join("containerd.toml"),
            socket,
            cni_conf_dir: dir.join("cni/net.d"),
            log: dir.join("containerd.log"),
        })
    }
}

/// containerd 1.6's configuration for one node (reference §2.2).
pub fn render_config(paths: &RuntimePaths, sandbox_image: &str) -> String {
    let d = paths.dir.display();
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  address = "{d}/debug.sock"
[metrics]
  address = ""
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "{d}/opt"
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "{sandbox_image}"
    restrict_oom_score_adj = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "{CNI_BIN_DIR}"
      conf_dir = "{cni}"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
          Root = "{d}/runc"
"#,
        sock = paths.socket.display(),
        cni = paths.cni_conf_dir.display(),
    )
}

/// The CNI network name of a node's pods.
pub const CNI_NETWORK: &str = "constellation";

/// The bridge plugin's configuration for the node's pod CIDR (cni0 as the pods' gateway, host-local
/// leases kept in the node's state folder).
fn bridge_plugin(node: &NodeNet, paths: &RuntimePaths) -> serde_json::Value {
    let cidr = node.pod_cidr();
    serde_json::json!({
        "type": "bridge",
        "bridge": "cni0",
        "isGateway": true,
        "ipMasq": false,
        "hairpinMode": true,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": cidr.to_string()}]],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": paths.dir.join("cni/ipam").display().to_string(),
        },
    })
}

/// The node's CNI conflist (bridge + portmap), as the CRI plugin loads it.
pub fn render_cni_conflist(node: &NodeNet, paths: &RuntimePaths) -> String {
    let v = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": CNI_NETWORK,
        "plugins": [
            bridge_plugin(node, paths),
            {"type": "portmap", "capabilities": {"portMappings": true}},
        ],
    });
    serde_json::to_string_pretty(&v).unwrap_or_default()
}

/// A running containerd of one node.
#[derive(Debug)]
pub struct Containerd {
    node: NodeNet,
    paths: RuntimePaths,
    child: Option<tokio::process::Child>,
    startup: Duration,
}

impl Containerd {
    /// Writes the configuration and conflist, starts containerd inside the node's namespaces and
    /// waits (up to `deadline`) until its socket answers.
    pub async fn start(
        node: &NodeNet,
        dir: &Path,
        sandbox_image: &str,
        deadline: Duration,
    ) -> Result<Containerd, RuntimeError> {
        let paths = RuntimePaths::new(dir)?;
        std::fs::create_dir_all(&paths.cni_conf_dir)
            .map_err(io_err("create", &paths.cni_conf_dir))?;
        std::fs::write(&paths.config, render_config(&paths, sandbox_image))
            .map_err(io_err("write", &paths.config))?;
        let conflist = paths.cni_conf_dir.join("10-constellation.conflist");
        std::fs::write(&conflist, render_cni_conflist(node, &paths))
            .map_err(io_err("write", &conflist))?;
        let log = std::fs::File::create(&paths.log).map_err(io_err("create", &paths.log))?;
        let log2 = log.try_clone().map_err(io_err("open", &paths.log))?;
        let started = Instant::now();
        let mut c = node.tokio_command("containerd");
        c.envs(crate::control_plane::NODE_GO_ENV.iter().copied())
            .arg("--config")
            .arg(&paths.config)
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log2)
            .kill_on_drop(true);
        let child = c.spawn().map_err(|source| CommandError::Spawn {
            command: "containerd".into(),
            source,
        })?;
        let mut me = Containerd {
            node: node.clone(),
            paths,
            child: Some(child),
            startup: Duration::ZERO,
        };
        loop {
            if let Some(child) = me.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    me.child = None;
                    return Err(RuntimeError::Exited {
                        node: node.name().into(),
                        status: status.to_string(),
                        log: me.log_tail(),
                    });
                }
            }
            if tokio::net::UnixStream::connect(&me.paths.socket)
                .await
                .is_ok()
                && cmd::run_async(me.ctr(K8S_NAMESPACE).arg("version"))
                    .await
                    .is_ok()
            {
                break;
            }
            if started.elapsed() > deadline {
                let err = RuntimeError::NotReady {
                    node: node.name().into(),
                    socket: me.paths.socket.clone(),
                    waited: started.elapsed(),
                    log: me.log_tail(),
                };
                let _ = me.stop().await;
                return Err(err);
            }
            // polling the socket: containerd has no readiness notification without systemd
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        me.startup = started.elapsed();
        // The default socket path, inside the node's private /run, for clients that assume it
        // (cAdvisor in kubelet, crictl).
        cmd::run_async(node.tokio_command("sh").args([
            "-c",
            &format!(
                "mkdir -p /run/containerd && ln -sf {} /run/containerd/containerd.sock",
                me.paths.socket.display()
            ),
        ]))
        .await?;
        Ok(me)
    }

    /// Time from spawn until the socket answered.
    pub fn startup(&self) -> Duration {
        self.startup
    }
    pub fn paths(&self) -> &RuntimePaths {
        &self.paths
    }
    pub fn node(&self) -> &NodeNet {
        &self.node
    }
    /// containerd's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// `Err(Exited)` when containerd is no longer running (it is not restarted: its pods' shims
    /// outlive it, a new one would have to adopt them).
    pub fn check(&mut self) -> Result<(), RuntimeError> {
        let status = match self.child.as_mut() {
            None => "stopped".to_owned(),
            Some(c) => match c.try_wait() {
                Ok(None) => return Ok(()),
                Ok(Some(st)) => st.to_string(),
                Err(e) => e.to_string(),
            },
        };
        Err(RuntimeError::Exited {
            node: self.node.name().into(),
            status,
            log: self.log_tail(),
        })
    }

    fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.paths.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().rev().take(5).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
    }

    /// `ctr -a <socket> -n <namespace>` inside the node.
    pub fn ctr(&self, namespace: &str) -> tokio::process::Command {
        let mut c = self.node.tokio_command("ctr");
        c.arg("-a").arg(&self.paths.socket).arg("-n").arg(namespace);
        c
    }

    /// `ctr -n k8s.io images import <archive>` (the archive path must be visible inside the node).
    pub async fn import(&self, archive: &Path) -> Result<(), RuntimeError> {
        cmd::run_async(
            self.ctr(K8S_NAMESPACE)
                .args(["images", "import"])
                .arg(archive),
        )
        .await?;
        Ok(())
    }

    /// Stops containerd (SIGTERM, SIGKILL after 10 s), then kills its shims and every process in
    /// the node's cgroup parent, and removes that cgroup tree. Idempotent.
    pub async fn stop(&mut self) -> Result<(), RuntimeError> {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            }
            if tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .is_err()
            {
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
        }
        self.kill_leftovers()
    }

    fn kill_leftovers(&self) -> Result<(), RuntimeError> {
        let socket = self.paths.socket.to_string_lossy().into_owned();
        let cgroup = self.node.cgroup_parent();
        let mnt = host::ns_inode(self.node.mntns()).ok();
        host::kill_all(
            &format!("containers and shims of node {}", self.node.name()),
            Duration::from_secs(10),
            || {
                let mut pids = host::processes_in_cgroup(&cgroup);
                if let Some(m) = mnt {
                    pids.extend(
                        host::processes_in_namespaces(&[], &[m])
                            .into_iter()
                            .filter(|p| {
                                std::fs::read(format!("/proc/{p}/cmdline"))
                                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&socket))
                            }),
                    );
                }
                pids
            },
        )?;
        host::remove_cgroup_tree(&cgroup)?;
        Ok(())
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
        }
        let _ = self.kill_leftovers();
    }
}

/// A pod network namespace set up by calling the node's CNI bridge plugin directly (what the CRI
/// plugin does for a sandbox), for containers started with `ctr run --with-ns network:<netns>`.
#[derive(Debug, Clone)]
pub struct PodNet {
    /// The pin inside the node's mount namespace (`/run/netns/<id>`).
    pub netns: PathBuf,
    pub address: Ipv4Addr,
}

/// Creates `/run/netns/<id>` inside the node and runs CNI ADD of the bridge plugin for it.
pub async fn attach_pod(
    node: &NodeNet,
    paths: &RuntimePaths,
    id: &str,
) -> Result<PodNet, RuntimeError> {
    let netns = PathBuf::from(format!("/run/netns/{id}"));
    cmd::run_async(node.tokio_command("sh").args([
        "-c",
        &format!(
            "mkdir -p /run/netns && touch {0} && unshare --net={0} true",
            netns.display()
        ),
    ]))
    .await?;
    let mut conf = bridge_plugin(node, paths);
    if let Some(o) = conf.as_object_mut() {
        o.insert("cniVersion".into(), "1.0.0".into());
        o.insert("name".into(), CNI_NETWORK.into());
    }
    let mut c = node.tokio_command(&format!("{CNI_BIN_DIR}/bridge"));
    c.env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", &netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", CNI_BIN_DIR)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let command = cmd::describe(c.as_std());
    let mut child = c.spawn().map_err(|source| CommandError::Spawn {
        command: command.clone(),
        source,
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        use tokio::io::AsyncWriteExt;
        stdin
            .write_all(conf.to_string().as_bytes())
            .await
            .map_err(|source| CommandError::Spawn {
                command: command.clone(),
                source,
            })?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|source| CommandError::Spawn {
            command: command.clone(),
            source,
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(CommandError::Failed {
            command,
            status: out.status.to_string(),
            stderr: format!("{stdout} {}", String::from_utf8_lossy(&out.stderr)),
        }
        .into());
    }
    let v: serde_json::Value =
        serde_json::from_str(&stdout).map_err(|_| RuntimeError::NoPodAddress(stdout.clone()))?;
    let address = v["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ip| {
            ip["address"]
                .as_str()?
                .split('/')
                .next()?
                .parse::<Ipv4Addr>()
                .ok()
        })
        .next()
        .ok_or_else(|| RuntimeError::NoPodAddress(stdout.clone()))?;
    Ok(PodNet { netns, address })
}
