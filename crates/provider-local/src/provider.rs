//! The local provider behind the CLI's seam ([`cloudcmd::Provider`]): records in
//! `<workspace>/constellation-local/cloud.json`, nodes as process trees with their own swtpm,
//! node reports read from each node's folder.

use std::path::{Path, PathBuf};

use anyhow::Context;
use attestation::Variant;
use cloudcmd::provider::{CloudView, NodeView, Provider, Wanted};
use cluster::inventory::NodeInfo;

use crate::cloud::{CloudState, STATE_DIR, STATE_FILE};
use crate::image::{NodeImage, Sources};
use crate::infra;

/// The node-image version built by this installation.
pub fn image_version() -> String {
    format!("v{}", env!("CARGO_PKG_VERSION"))
}

/// Measurements of the node image `mini up`/`apply` will build from this installation
/// (`constellation-node` next to the CLI, etcd from [`crate::image::etcd_source`], with
/// `kubernetes` the Kubernetes components), computed without building it.
pub fn default_measurements(
    variant: Variant,
    kubernetes: bool,
) -> anyhow::Result<measurements::Measurements> {
    let sources = Sources::default_for_exe(&image_version(), kubernetes)?;
    Ok(sources.expected_measurements(variant)?)
}

/// The local provider of one workspace.
#[derive(Debug, Clone)]
pub struct LocalProvider {
    ws: PathBuf,
    /// Whether images built for this workspace run Kubernetes.
    kubernetes: bool,
}

impl LocalProvider {
    /// The provider of the workspace at `workspace`. Node processes change directory, so every
    /// path the provider records is made absolute.
    pub fn new(workspace: impl Into<PathBuf>) -> Self {
        let ws = workspace.into();
        LocalProvider {
            ws: std::path::absolute(&ws).unwrap_or(ws),
            kubernetes: crate::image::kubernetes_wanted(),
        }
    }

    /// Nodes with or without Kubernetes (default: [`crate::image::kubernetes_wanted`]).
    pub fn with_kubernetes(mut self, kubernetes: bool) -> Self {
        self.kubernetes = kubernetes;
        self
    }

    fn load(&self) -> anyhow::Result<Option<CloudState>> {
        Ok(CloudState::load(&CloudState::path(&self.ws))?)
    }

    /// The image the config points at, built from this installation when it names none.
    fn node_image(&self, cfg: &config::Config) -> anyhow::Result<(NodeImage, PathBuf)> {
        let sources = Sources::default_for_exe(&image_version(), self.kubernetes)?;
        let launcher = sources.node_binary.clone();
        let configured = cfg
            .local()
            .map(|l| l.node_image.clone())
            .unwrap_or_default();
        let image = if configured.is_empty() {
            let dir = self.ws.join(STATE_DIR).join("images");
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            NodeImage::build(&sources, &dir)?
        } else {
            let p = PathBuf::from(&configured);
            let p = if p.is_absolute() { p } else { self.ws.join(p) };
            NodeImage::load(&p)?
        };
        Ok((image, launcher))
    }

    fn wanted(&self, w: &Wanted, with_image: bool) -> anyhow::Result<infra::Wanted> {
        let cfg = &w.config;
        let local = cfg
            .local()
            .context("the config has no provider.local section")?;
        // A configured image is only loaded (cheap, and `check_unchangeable` compares its
        // folder); the one built from this installation only when nodes are to be started.
        let (image, launcher) = if with_image || !local.node_image.is_empty() {
            self.node_image(cfg)?
        } else {
            let none = NodeImage {
                dir: PathBuf::new(),
                manifest: crate::image::Manifest {
                    version: image_version(),
                    components: vec![],
                },
                manifest_digest: [0; 32],
            };
            (none, PathBuf::new())
        };
        Ok(infra::Wanted {
            name: cfg.name().to_string(),
            image_version: cfg.raw().image.clone(),
            image_configured: !local.node_image.is_empty(),
            variant: cfg.variant(),
            base_address: local.base_address,
            groups: w.groups.clone(),
            image,
            launcher,
            cancel: w.cancel,
        })
    }
}

fn view_of(state: CloudState) -> CloudView {
    let nodes = state
        .nodes
        .iter()
        .map(|n| {
            let last = crate::node_env::read_report(&n.dir);
            NodeView {
                info: n.info(),
                running: n.process.is_some_and(|p| p.is_alive()),
                tpm_running: n.swtpm.is_some_and(|p| p.is_alive()),
                // A report from an earlier run of the node (before a restart) is not current.
                report: last
                    .clone()
                    .filter(|r| n.process.is_some_and(|p| p.pid == r.pid)),
                last_report: last,
                has_cluster_state: n.dir.join(cluster::report::NODE_STATE_FILE).exists(),
            }
        })
        .collect();
    let image = state
        .image_dir
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    CloudView {
        info: state.info(),
        image,
        nodes,
    }
}

impl Provider for LocalProvider {
    fn name(&self) -> &'static str {
        crate::CSP
    }

    fn records(&self) -> PathBuf {
        Path::new(STATE_DIR).join(STATE_FILE)
    }

    fn exists(&self) -> bool {
        CloudState::path(&self.ws).exists() || self.ws.join(STATE_DIR).exists()
    }

    fn view(&self) -> anyhow::Result<Option<CloudView>> {
        Ok(self.load()?.map(view_of))
    }

    fn fill_infrastructure(&self, state: &mut config::state::State) -> anyhow::Result<()> {
        let cloud = self
            .load()?
            .context("no local cloud state: run `constellation apply` first")?;
        let endpoint = cloud
            .endpoint()
            .context("the cluster has no control-plane node")?
            .to_string();
        state.infrastructure.uid = cloud.uid.clone();
        state.infrastructure.name = format!("{}-{}", cloud.name, cloud.uid);
        state.infrastructure.cluster_endpoint = endpoint.clone();
        state.infrastructure.in_cluster_endpoint = endpoint.clone();
        state.infrastructure.ip_cidr_node = "127.0.0.0/8".into();
        state.infrastructure.api_server_cert_sans = vec![endpoint];
        state.infrastructure.local = Some(config::state::LocalInfrastructure {
            state_dir: STATE_DIR.into(),
            base_address: cloud.base_address.to_string(),
        });
        Ok(())
    }

    fn plan(&self, wanted: &Wanted) -> anyhow::Result<Vec<NodeInfo>> {
        let Some(cloud) = self.load()? else {
            return Ok(vec![]);
        };
        let w = self.wanted(wanted, false)?;
        infra::check_unchangeable(&cloud, &w)?;
        Ok(infra::surplus(&cloud, &w.groups)
            .iter()
            .map(|n| n.info())
            .collect())
    }

    fn apply(&self, wanted: &Wanted, progress: &mut dyn FnMut(&str)) -> anyhow::Result<()> {
        let w = self.wanted(wanted, true)?;
        infra::apply(&self.ws, &w, &wanted.init_secret, progress)?;
        Ok(())
    }

    fn remove_node(&self, name: &str) -> anyhow::Result<()> {
        infra::remove_node(&self.ws, name)?;
        Ok(())
    }

    fn destroy(&self, progress: &mut dyn FnMut(&str)) -> anyhow::Result<usize> {
        Ok(infra::destroy(&self.ws, progress)?)
    }
}

/// The workspace at `dir` with the local provider.
pub fn workspace(dir: &Path) -> cloudcmd::Workspace {
    cloudcmd::Workspace::new(dir, std::sync::Arc::new(LocalProvider::new(dir)))
}

/// The workspace at `dir` with the local provider in the mode without Kubernetes.
pub fn workspace_without_kubernetes(dir: &Path) -> cloudcmd::Workspace {
    cloudcmd::Workspace::new(
        dir,
        std::sync::Arc::new(LocalProvider::new(dir).with_kubernetes(false)),
    )
}
