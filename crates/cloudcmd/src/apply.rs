//! `constellation apply`: infrastructure, then init.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use attestation::Variant;
use config::state::State;
use config::{Config, NodeRole, Provider};
use proto::init::{init_response, InitRequest};
use provider_local::cloud::{CloudState, Role, PORT_INIT};
use provider_local::image::{NodeImage, Sources};

use crate::{Progress, ADMIN_CONF_FILE, MASTER_SECRET_FILE, STATE_FILE};

/// The node-image version built by this CLI.
pub fn image_version() -> String {
    format!("v{}", env!("CARGO_PKG_VERSION"))
}

/// Measurements of the node image `mini up`/`apply` will build from this installation
/// (`constellation-node` next to the CLI, Debian's etcd), computed without building it.
pub fn local_default_measurements(variant: Variant) -> anyhow::Result<measurements::Measurements> {
    let sources = Sources::default_for_exe(&image_version())?;
    Ok(sources.expected_measurements(variant)?)
}

#[derive(Debug, Clone, Default)]
pub struct ApplyOptions {
    pub skip_infrastructure: bool,
    pub skip_init: bool,
    /// How long to wait for the init node's Bootstrapper to answer.
    pub init_timeout: Option<Duration>,
    /// How long to wait for every node to become a member (default 120 s).
    pub join_timeout: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct ApplyOutcome {
    pub nodes_created: bool,
    pub initialized_now: bool,
    pub cluster_id: Option<String>,
    pub endpoint: String,
    pub timings: Vec<(String, Duration)>,
    /// Nodes that are cluster members after this apply.
    pub members: usize,
    pub nodes: usize,
}

/// The image the config points at, built from this installation when it names none.
fn node_image(ws: &Path, cfg: &Config) -> anyhow::Result<(NodeImage, PathBuf)> {
    let sources = Sources::default_for_exe(&image_version())?;
    let launcher = sources.node_binary.clone();
    let configured = cfg
        .local()
        .map(|l| l.node_image.clone())
        .unwrap_or_default();
    let image = if configured.is_empty() {
        let dir = ws.join(provider_local::cloud::STATE_DIR).join("images");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        NodeImage::build(&sources, &dir)?
    } else {
        let p = PathBuf::from(&configured);
        let p = if p.is_absolute() { p } else { ws.join(p) };
        NodeImage::load(&p)?
    };
    Ok((image, launcher))
}

fn random_init_secret() -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_%@";
    let mut r = rand::thread_rng();
    (0..32)
        .map(|_| CHARS[r.gen_range(0..CHARS.len())] as char)
        .collect()
}

pub async fn apply(
    ws: &Path,
    cfg: &Config,
    opts: &ApplyOptions,
    progress: &mut dyn Progress,
) -> anyhow::Result<ApplyOutcome> {
    if cfg.provider() != Provider::Local {
        bail!(
            "provider {} cannot be reached from this machine: only the `local` provider creates clusters in this build",
            cfg.provider().as_str()
        );
    }
    let ws = &std::path::absolute(ws).context("resolving the workspace folder")?;
    let state_path = ws.join(STATE_FILE);
    let mut state = if state_path.exists() {
        State::load(&state_path)?
    } else {
        State::default()
    };
    let mut timings = vec![];
    let mut outcome = ApplyOutcome {
        nodes_created: false,
        initialized_now: false,
        cluster_id: None,
        endpoint: String::new(),
        timings: vec![],
        members: 0,
        nodes: 0,
    };

    // ---- infrastructure ----
    if !opts.skip_infrastructure {
        let t = Instant::now();
        progress.step("infrastructure: creating nodes");
        if state.infrastructure.init_secret.expose().is_empty() {
            state.infrastructure.init_secret = config::state::InitSecret(config::state::HexBytes(
                random_init_secret().into_bytes(),
            ));
            state.write(&state_path)?;
        }
        let secret = state.infrastructure.init_secret.expose().to_vec();
        let (image, launcher) = node_image(ws, cfg)?;
        let local = cfg
            .local()
            .context("the config has no provider.local section")?;
        let groups = cfg
            .node_groups()
            .iter()
            .map(|(name, g)| {
                (
                    name.clone(),
                    if g.role == NodeRole::ControlPlane {
                        Role::ControlPlane
                    } else {
                        Role::Worker
                    },
                    g.initial_count,
                )
            })
            .collect();
        let wanted = provider_local::infra::Wanted {
            name: cfg.name().to_string(),
            variant: cfg.variant(),
            base_address: local.base_address,
            groups,
            image,
            launcher,
        };
        let ws2 = ws.to_path_buf();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let job = tokio::task::spawn_blocking(move || {
            provider_local::infra::apply(&ws2, &wanted, &secret, &mut |m: &str| {
                let _ = tx.send(m.to_string());
            })
        });
        while let Some(m) = rx.recv().await {
            progress.step(&format!("infrastructure: {m}"));
        }
        let cloud = job.await??;
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
            state_dir: provider_local::cloud::STATE_DIR.into(),
            base_address: cloud.base_address.to_string(),
        });
        state.write(&state_path)?;
        outcome.nodes_created = true;
        timings.push(("infrastructure".to_string(), t.elapsed()));
    }

    outcome.endpoint = state.infrastructure.cluster_endpoint.clone();
    // ---- init ----
    if state.cluster_id().is_some() {
        progress.step("init: cluster already initialized, skipping");
        outcome.cluster_id = state.cluster_id().map(|c| c.to_hex());
    } else if !opts.skip_init {
        let t = Instant::now();
        let id = init(ws, cfg, &mut state, opts, progress).await?;
        outcome.cluster_id = Some(id);
        outcome.initialized_now = true;
        timings.push(("init".to_string(), t.elapsed()));
    }
    // ---- join: every other node joins through a JoinService on its own ----
    if outcome.cluster_id.is_some() {
        let t = Instant::now();
        let (members, nodes) = wait_for_joins(ws, opts, progress).await?;
        outcome.members = members;
        outcome.nodes = nodes;
        timings.push(("join".to_string(), t.elapsed()));
    }
    outcome.timings = timings;
    Ok(outcome)
}

/// Waits until every node is a cluster member. Fails, naming each node and why, when a node
/// was refused (its attestation did not match, e.g. a changed image), failed, or stopped; the
/// members stay up.
pub(crate) async fn wait_for_joins(
    ws: &Path,
    opts: &ApplyOptions,
    progress: &mut dyn Progress,
) -> anyhow::Result<(usize, usize)> {
    use bootstrapper::state::Phase;
    let deadline = Instant::now() + opts.join_timeout.unwrap_or(Duration::from_secs(120));
    let mut last = None;
    loop {
        let st = crate::status::status(ws)?.context("the local cloud state disappeared")?;
        let total = st.nodes.len();
        let members = st
            .nodes
            .iter()
            .filter(|n| n.running && matches!(n.phase, Some(Phase::Joined | Phase::Initialized)))
            .count();
        let problems: Vec<String> =
            st.nodes
                .iter()
                .filter_map(|n| match n.phase {
                    _ if !n.running => Some(format!("{}: not running", n.name)),
                    Some(Phase::Joined | Phase::Initialized) => None,
                    Some(Phase::Refused | Phase::Failed | Phase::AwaitingRecovery) => Some(
                        format!("{}: {}", n.name, n.error.as_deref().unwrap_or("refused")),
                    ),
                    _ => None,
                })
                .collect();
        if last != Some(members) {
            progress.step(&format!(
                "join: {members}/{total} nodes are cluster members"
            ));
            last = Some(members);
        }
        if members == total {
            return Ok((members, total));
        }
        let pending = total - members - problems.len();
        // Nobody can admit the waiting nodes when every control-plane node is down or refused
        // (e.g. the only one restarted: its rejoin needs another one, or `recover`).
        let mut cps = st
            .nodes
            .iter()
            .filter(|n| n.role == provider_local::cloud::Role::ControlPlane.as_str())
            .peekable();
        let no_joinservice = cps.peek().is_some()
            && cps.all(|n| {
                !n.running
                    || matches!(
                        n.phase,
                        Some(Phase::Refused | Phase::Failed | Phase::AwaitingRecovery)
                    )
            });
        let needs_recovery = st
            .nodes
            .iter()
            .any(|n| n.phase == Some(Phase::AwaitingRecovery));
        if pending == 0 || no_joinservice || Instant::now() > deadline {
            let mut msg = format!(
                "{} of {total} nodes did not join the cluster (the {members} members keep running):",
                total - members
            );
            for p in &problems {
                msg.push_str("\n  ");
                msg.push_str(p);
            }
            if pending > 0 {
                msg.push_str(&format!(
                    "\n  {pending} node(s) still waiting after the join timeout"
                ));
            }
            if no_joinservice && needs_recovery {
                bail!("{msg}\nno control-plane node holds the cluster's keys (a full control-plane outage): run `constellation recover` to give them back from your master secret");
            }
            bail!("{msg}\nsee `constellation status` for each node's join decision");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The init node's policy: the config's measurements (PCR 15 zero), or, when resuming an
/// interrupted init, the same with PCR 15 = this cluster's value.
struct InitValidator {
    fresh: Box<dyn attestation::Validator>,
    resumed: Option<Box<dyn attestation::Validator>>,
}

impl attestation::Validator for InitValidator {
    fn variant(&self) -> Variant {
        self.fresh.variant()
    }
    fn validate(
        &self,
        doc: &[u8],
        nonce: &[u8],
    ) -> Result<attestation::VerifiedAttestation, attestation::ValidationError> {
        match (self.fresh.validate(doc, nonce), &self.resumed) {
            (Err(attestation::ValidationError::Measurements(m)), Some(resumed))
                if m.iter().all(|x| x.index == 15) =>
            {
                resumed.validate(doc, nonce)
            }
            (r, _) => r,
        }
    }
}

async fn init(
    ws: &Path,
    cfg: &Config,
    state: &mut State,
    opts: &ApplyOptions,
    progress: &mut dyn Progress,
) -> anyhow::Result<String> {
    if state.infrastructure.cluster_endpoint.is_empty() {
        bail!("no infrastructure to initialize: run `constellation apply` without --skip-phases infrastructure first");
    }
    // The master secret is written before the RPC and never replaced.
    let secret_path = ws.join(MASTER_SECRET_FILE);
    let master = if secret_path.exists() {
        let loaded = config::secret::read(&secret_path)?;
        if let Some(w) = loaded.warning {
            progress.step(&format!("warning: {w}"));
        }
        progress.step(&format!(
            "init: using the existing master secret {MASTER_SECRET_FILE}"
        ));
        loaded.secret
    } else {
        let m = keys::MasterSecret::generate()?;
        config::secret::write_new(&secret_path, &m)?;
        progress.step(&format!(
            "init: wrote a new master secret to {MASTER_SECRET_FILE} (mode 0600)"
        ));
        m
    };
    // The salt is recorded before the RPC: if this run dies after the node took the request,
    // the next run resumes with the same salt (and so the same cluster ID).
    let resumed = state.cluster_values.measurement_salt.0.len() == 32;
    let salt = if resumed {
        progress.step("init: resuming an interrupted initialization (same measurement salt)");
        state.cluster_values.measurement_salt.0.clone()
    } else {
        let mut salt = vec![0u8; 32];
        rand::Rng::fill(&mut rand::thread_rng(), &mut salt[..]);
        state.cluster_values.measurement_salt = config::state::HexBytes(salt.clone());
        state.write(&ws.join(STATE_FILE))?;
        salt
    };
    let expected = master.measurement_secret()?.cluster_id(&salt);

    // Validator: the config's measurements with PCR 15 enforced zero (an uninitialized node,
    // whatever the config says), and only the attestation key the provider recorded for the
    // control-plane node at the endpoint (crate::binding).
    let cloud = CloudState::load(&CloudState::path(ws))?
        .context("no local cloud state: run `constellation apply` first")?;
    let fresh: Box<dyn attestation::Validator> = Box::new(crate::binding::NodeBound::for_init(
        cfg,
        &cloud,
        &state.infrastructure.cluster_endpoint,
    )?);
    // When resuming, the node may already have taken the lost request: its PCR 15 then holds
    // exactly this cluster's ID (only the measured Bootstrapper extends it, and only on Init
    // or join), and the node answers a repeated Init for the same cluster.
    let resumed_validator = if resumed {
        let mut m = cfg.measurements().clone();
        m.set(
            15,
            measurements::Measurement::enforced(expected.expected_pcr15().to_vec()),
        )?;
        let node = crate::binding::node_at(&cloud, &state.infrastructure.cluster_endpoint)?;
        Some(Box::new(crate::binding::NodeBound::new(cfg, m, node)?)
            as Box<dyn attestation::Validator>)
    } else {
        None
    };
    let validator = InitValidator {
        fresh,
        resumed: resumed_validator,
    };
    let atls_cfg = atls::client::ClientConfig::new(None, vec![std::sync::Arc::new(validator)]);
    let addr = format!("{}:{PORT_INIT}", state.infrastructure.cluster_endpoint);

    progress.step(&format!(
        "init: connecting to the Bootstrapper at {addr} over attested TLS"
    ));
    let deadline = Instant::now() + opts.init_timeout.unwrap_or(Duration::from_secs(60));
    let (channel, verified) = match crate::dial_attested(&addr, &atls_cfg, deadline).await {
        Ok(c) => c,
        Err(crate::DialError::Rejected(e)) => {
            return Err(anyhow::Error::new(e).context(format!(
                "the node at {addr} failed attestation; nothing secret was sent"
            )));
        }
        Err(crate::DialError::Unreachable(e)) => {
            return Err(anyhow::Error::new(e)
                .context(format!("the Bootstrapper at {addr} did not answer in time")))
        }
    };
    let verified = verified.context("internal error: no attestation result for the init node")?;
    for w in verified.warnings() {
        progress.step(&format!("warning: {w} (warnOnly)"));
    }
    progress.step("init: node attestation verified; sending the master secret");

    let mut client = proto::init::api_client::ApiClient::new(channel);
    let req = InitRequest {
        kms_uri: master.to_kms_uri().to_string(),
        storage_uri: "storage://no-store".into(),
        measurement_salt: salt.clone(),
        kubernetes_version: cfg.kubernetes_version().to_string(),
        conformance_mode: false,
        kubernetes_components: vec![],
        init_secret: state.infrastructure.init_secret.expose().to_vec(),
        cluster_name: state.infrastructure.name.clone(),
        apiserver_cert_sans: state.infrastructure.api_server_cert_sans.clone(),
        service_cidr: cfg.raw().service_cidr.clone(),
        attestation_config: serde_json::json!({
            "variant": cfg.variant().as_str(),
            "measurements": cfg.measurements(),
        })
        .to_string(),
    };
    let mut stream = client
        .init(req)
        .await
        .map_err(|s| anyhow::anyhow!("Init refused: {}", s.message()))?
        .into_inner();
    let first = stream
        .message()
        .await
        .map_err(|s| anyhow::anyhow!("Init failed: {}", s.message()))?
        .context("Init returned no answer")?;
    let success = match first.kind {
        Some(init_response::Kind::InitSuccess(s)) => s,
        Some(init_response::Kind::InitFailure(f)) => {
            bail!("the node failed to initialize the cluster: {}", f.error)
        }
        _ => bail!("Init returned an unexpected message"),
    };
    if success.cluster_id != expected.as_bytes() {
        bail!(
            "the node returned cluster ID {} but the master secret gives {}",
            hex::encode(&success.cluster_id),
            expected.to_hex()
        );
    }
    config::atomic::replace(&ws.join(ADMIN_CONF_FILE), &success.kubeconfig, 0o600)?;
    state.set_cluster_values(&expected, &salt);
    state.write(&ws.join(STATE_FILE))?;
    progress.step(&format!(
        "init: cluster initialized, cluster ID {}",
        expected.to_hex()
    ));
    Ok(expected.to_hex())
}
