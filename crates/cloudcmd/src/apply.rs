//! `constellation apply`: infrastructure, then init.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use cluster::ports::INIT as PORT_INIT;
use cluster::report::NodePhase as Phase;
use cluster::Role;
use config::state::State;
use config::{Config, NodeRole};
use proto::init::{init_response, InitRequest};

use crate::provider::{Wanted, Workspace};
use crate::{Progress, ADMIN_CONF_FILE, MASTER_SECRET_FILE, STATE_FILE};

#[derive(Debug, Clone, Default)]
pub struct ApplyOptions {
    pub skip_infrastructure: bool,
    pub skip_init: bool,
    /// Do not push changed expected measurements to the cluster's join configuration.
    pub skip_attestation_config: bool,
    /// Changes to a running cluster (new expected measurements, fewer nodes) need a yes:
    /// `assume_yes`, or `confirm` answering the question. Without either they are refused.
    pub assume_yes: bool,
    pub confirm: Option<fn(&str) -> bool>,
    /// Set by the first Ctrl-C: the infrastructure phase stops at its next step boundary.
    pub cancel: Option<&'static std::sync::atomic::AtomicBool>,
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
    /// Nodes removed because their group shrank.
    pub removed: Vec<String>,
    /// Set when this apply pushed new expected measurements to the cluster.
    pub attestation_config: Option<AttestationConfigChange>,
}

/// What the `attestationconfig` phase changed.
#[derive(Debug, Clone)]
pub struct AttestationConfigChange {
    /// One line per changed PCR: `PCR 4: <old> -> <new>`.
    pub diff: Vec<String>,
    /// Nodes that do not match the new measurements, with the reason (they stay members until
    /// replaced; a JoinService would refuse them now).
    pub not_matching: Vec<(String, String)>,
}

/// Why `apply` stopped without changing the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{what}: not confirmed, nothing changed")]
    NotConfirmed { what: String },
    #[error("refusing to remove every control-plane node (node group {group} would have 0); a cluster needs at least one")]
    NoControlPlaneLeft { group: String },
}

/// Asks for a yes to `question` as the options say.
fn confirmed(opts: &ApplyOptions, question: &str) -> Result<(), ApplyError> {
    if opts.assume_yes || opts.confirm.is_some_and(|f| f(question)) {
        Ok(())
    } else {
        Err(ApplyError::NotConfirmed {
            what: question.trim_end_matches('?').to_string(),
        })
    }
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
    ws: &Workspace,
    cfg: &Config,
    opts: &ApplyOptions,
    progress: &mut dyn Progress,
) -> anyhow::Result<ApplyOutcome> {
    if cfg.provider().as_str() != ws.provider.name() {
        bail!(
            "provider {} cannot be reached from this machine: only the `{}` provider creates clusters in this build",
            cfg.provider().as_str(),
            ws.provider.name()
        );
    }
    let ws = &Workspace::new(
        std::path::absolute(ws.dir()).context("resolving the workspace folder")?,
        ws.provider.clone(),
    );
    let state_path = ws.join(STATE_FILE);
    // A missing or unreadable state file while the nodes belong to a cluster is refused here:
    // never initialize again on top of a running cluster.
    let mut state = crate::workspace::load_state_for_apply(ws)?;
    // An initialized cluster needs the owner's files: checked before anything changes.
    crate::workspace::check_owner_files(ws, &state)?;
    let mut timings = vec![];
    let mut outcome = ApplyOutcome {
        nodes_created: false,
        initialized_now: false,
        cluster_id: None,
        endpoint: String::new(),
        timings: vec![],
        members: 0,
        nodes: 0,
        removed: vec![],
        attestation_config: None,
    };

    // ---- attestationconfig: the config's expected measurements become the cluster's before
    // any node is created, so that new nodes are checked against them. With no control plane
    // running (an outage), it runs after the infrastructure phase restarted them. ----
    let mut attestation_config_pending = false;
    if state.cluster_id().is_some() && !opts.skip_attestation_config {
        let cp_running = ws
            .provider
            .view()?
            .is_some_and(|c| c.running_control_planes().next().is_some());
        if cp_running {
            let t = Instant::now();
            outcome.attestation_config = push_attestation_config(ws, cfg, opts, progress).await?;
            timings.push(("attestationconfig".to_string(), t.elapsed()));
        } else {
            attestation_config_pending = true;
        }
    }
    // ---- infrastructure ----
    if !opts.skip_infrastructure {
        let t = Instant::now();
        progress.step("infrastructure: reconciling nodes");
        if state.infrastructure.init_secret.expose().is_empty() {
            state.infrastructure.init_secret = config::state::InitSecret(config::state::HexBytes(
                random_init_secret().into_bytes(),
            ));
            state.write(&state_path)?;
        }
        let secret = state.infrastructure.init_secret.expose().to_vec();
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
        let wanted = Wanted {
            config: cfg.clone(),
            groups,
            init_secret: secret,
            cancel: opts.cancel,
        };
        // Fields a running cluster cannot change are refused before anything changes.
        let surplus = ws.provider.plan(&wanted)?;
        if !surplus.is_empty() {
            outcome.removed = remove_surplus(ws, &state, surplus, opts, progress).await?;
        }
        let provider = ws.provider.clone();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let job = tokio::task::spawn_blocking(move || {
            provider.apply(&wanted, &mut |m: &str| {
                let _ = tx.send(m.to_string());
            })
        });
        while let Some(m) = rx.recv().await {
            progress.step(&format!("infrastructure: {m}"));
        }
        job.await??;
        ws.provider.fill_infrastructure(&mut state)?;
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
    // ---- attestationconfig, when no control plane ran before the infrastructure phase ----
    if attestation_config_pending && outcome.cluster_id.is_some() {
        let t = Instant::now();
        outcome.attestation_config = push_attestation_config(ws, cfg, opts, progress).await?;
        timings.push(("attestationconfig".to_string(), t.elapsed()));
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

/// Removes the nodes of shrunk groups, highest index first. In an initialized cluster a
/// control-plane node first leaves etcd (one at a time: etcd itself refuses a removal without a
/// quorum of the others) and every node leaves the node registry; then its processes, TPM and
/// folder go.
async fn remove_surplus(
    ws: &Workspace,
    state: &State,
    surplus: Vec<cluster::inventory::NodeInfo>,
    opts: &ApplyOptions,
    progress: &mut dyn Progress,
) -> anyhow::Result<Vec<String>> {
    let cloud = ws
        .provider
        .view()?
        .context("the provider's records disappeared")?;
    for g in surplus.iter().filter(|n| n.role == Role::ControlPlane) {
        let left = cloud
            .nodes
            .iter()
            .map(|n| &n.info)
            .filter(|n| n.role == Role::ControlPlane && !surplus.contains(n))
            .count();
        if left == 0 {
            return Err(ApplyError::NoControlPlaneLeft {
                group: g.group.clone(),
            }
            .into());
        }
    }
    let names: Vec<String> = surplus.iter().map(|n| n.name.clone()).collect();
    confirmed(
        opts,
        &format!(
            "Remove {} node(s) ({}) from the cluster and delete their state?",
            names.len(),
            names.join(", ")
        ),
    )?;
    let initialized = state.cluster_id().is_some();
    let mut removed = vec![];
    for node in surplus {
        if initialized {
            // The current cloud (without the nodes removed so far) says whom to talk to.
            let now = ws
                .provider
                .view()?
                .context("the provider's records disappeared")?;
            let store = crate::cluster_store::connect_except(ws, &now, Some(&node.name)).await?;
            store.delete_node(&node.name).await?;
            if node.role == Role::ControlPlane
                && crate::cluster_store::remove_member(&store, &node.name, node.address).await?
            {
                progress.step(&format!("infrastructure: {} left etcd", node.name));
            }
        }
        let provider = ws.provider.clone();
        let name = node.name.clone();
        tokio::task::spawn_blocking(move || provider.remove_node(&name)).await??;
        progress.step(&format!("infrastructure: removed {}", node.name));
        removed.push(node.name);
    }
    Ok(removed)
}

/// The `attestationconfig` phase: when the config's expected measurements differ from the
/// cluster's join configuration, show the difference, ask, and push them; every JoinService
/// uses them within seconds. Then name the nodes that no longer match.
async fn push_attestation_config(
    ws: &Workspace,
    cfg: &Config,
    opts: &ApplyOptions,
    progress: &mut dyn Progress,
) -> anyhow::Result<Option<AttestationConfigChange>> {
    let cloud = ws
        .provider
        .view()?
        .context("the provider's records disappeared")?;
    // The cluster's state may be unreachable (its control plane waits for `recover`): then
    // the phase says so and is done by a later apply; it never passes silently.
    let read = async {
        let store = crate::cluster_store::connect(ws, &cloud).await?;
        let join = crate::cluster_store::join_config(&store).await?;
        anyhow::Ok((store, join))
    };
    let (store, mut join) = match read.await {
        Ok(r) => r,
        Err(e) => {
            progress.step(&format!(
                "attestationconfig: not checked, the cluster's state is unreachable ({e:#}); run `constellation apply` again once the control plane is back"
            ));
            return Ok(None);
        }
    };
    let want = cfg.measurements();
    if &join.measurements == want {
        return Ok(None);
    }
    let diff = measurement_diff(&join.measurements, want);
    progress.step(&format!(
        "attestationconfig: the config's expected measurements differ from the cluster's:\n    {}",
        diff.join("\n    ")
    ));
    confirmed(
        opts,
        "Push the config's expected measurements to the cluster (nodes that join from now on must match them)?",
    )?;
    join.measurements = want.clone();
    crate::cluster_store::put_join_config(&store, &join).await?;
    progress.step(
        "attestationconfig: the cluster's join configuration now holds the config's measurements",
    );
    let report = crate::verify::verify(ws, cfg, &crate::verify::VerifyOptions::default()).await?;
    let not_matching = report
        .nodes
        .iter()
        .filter(|n| !n.verified)
        .map(|n| {
            (
                n.node.clone(),
                n.error.clone().unwrap_or_else(|| "not verified".into()),
            )
        })
        .collect();
    Ok(Some(AttestationConfigChange { diff, not_matching }))
}

/// One line per PCR whose expectation differs between `old` and `new`.
pub fn measurement_diff(
    old: &measurements::Measurements,
    new: &measurements::Measurements,
) -> Vec<String> {
    let show = |m: Option<&measurements::Measurement>| match m {
        None => "(not checked)".to_string(),
        Some(m) if m.warn_only => format!("{} (warnOnly)", hex::encode(&m.expected)),
        Some(m) => hex::encode(&m.expected),
    };
    let indices: std::collections::BTreeSet<u32> =
        old.iter().chain(new.iter()).map(|(i, _)| i).collect();
    indices
        .into_iter()
        .filter(|i| old.get(*i) != new.get(*i))
        .map(|i| format!("PCR {i}: {} -> {}", show(old.get(i)), show(new.get(i))))
        .collect()
}

/// Waits until every node is a cluster member. Fails, naming each node and why, when a node
/// was refused (its attestation did not match, e.g. a changed image), failed, or stopped; the
/// members stay up.
pub(crate) async fn wait_for_joins(
    ws: &Workspace,
    opts: &ApplyOptions,
    progress: &mut dyn Progress,
) -> anyhow::Result<(usize, usize)> {
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
            .filter(|n| n.role == Role::ControlPlane.as_str())
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
    fn variant(&self) -> attestation::Variant {
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
    ws: &Workspace,
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
            "init: using the existing master secret {}",
            crate::shown(MASTER_SECRET_FILE)
        ));
        loaded.secret
    } else {
        let m = keys::MasterSecret::generate()?;
        config::secret::write_new(&secret_path, &m)?;
        progress.step(&format!(
            "init: wrote a new master secret to {} (mode 0600)",
            crate::shown(MASTER_SECRET_FILE)
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
    let cloud = ws
        .provider
        .view()?
        .context("no infrastructure records: run `constellation apply` first")?;
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
    let mut atls_cfg = atls::client::ClientConfig::new(None, vec![std::sync::Arc::new(validator)]);
    // Init returns once the node's control plane runs (with Kubernetes: its API server, and the
    // node Ready).
    atls_cfg.request_timeout = Duration::from_secs(300);
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
    if !success.owner_credentials.is_empty() {
        config::atomic::replace(
            &ws.join(crate::OWNER_CONF_FILE),
            &success.owner_credentials,
            0o600,
        )?;
    }
    state.set_cluster_values(&expected, &salt);
    state.write(&ws.join(STATE_FILE))?;
    progress.step(&format!(
        "init: cluster initialized, cluster ID {}",
        expected.to_hex()
    ));
    Ok(expected.to_hex())
}
