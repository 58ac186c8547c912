//! `constellation recover`: gives restarted control-plane nodes their keys back after every
//! control-plane node went down (no JoinService left to ask), from the owner's master secret.
//!
//! For each control-plane node that is running but not a member: aTLS to its recovery server
//! (`<node>:9999`, the node attests; the config's measurements with PCR 15 = zero, i.e. a
//! freshly booted node, and an attestation key the provider recorded) → only then
//! `Recover{kms_uri}`. The node derives its disk key and the measurement secret, checks that
//! the key opens its disk, re-derives the cluster ID, extends PCR 15 and starts its services;
//! etcd comes back with its data once a quorum of members is recovered, so all control-plane
//! nodes are recovered at once. Workers then rejoin on their own. Finally this waits, like
//! `apply`, until every node is a member again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use cluster::ports::RECOVERY as PORT_RECOVERY;
use cluster::report::NodePhase as Phase;
use cluster::Role;
use config::state::State;
use config::Config;

use crate::provider::Workspace;
use serde::Serialize;

use crate::{Progress, MASTER_SECRET_FILE, STATE_FILE};

#[derive(Debug, Clone, Default)]
pub struct RecoverOptions {
    /// One control-plane node (`HOST`, port 9999), instead of every one that needs it.
    pub endpoint: Option<String>,
    /// How long to keep trying to reach a node's recovery server (default 30 s: a node that was
    /// just restarted needs a moment to serve it).
    pub connect_timeout: Option<Duration>,
    /// How long to wait for every node to be a member again (default 120 s).
    pub join_timeout: Option<Duration>,
}

/// What `recover` did for one control-plane node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RecoveryResult {
    /// Attested, and the master secret was pushed.
    Recovered,
    /// Already a member (or on its way back): needed nothing.
    Member,
    /// Not running, attestation refused, unreachable, or the node refused the secret.
    Failed,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeRecovery {
    pub node: String,
    pub result: RecoveryResult,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RecoverOutcome {
    pub nodes: Vec<NodeRecovery>,
    /// Members after recovery / all nodes.
    pub members: usize,
    pub total: usize,
}

impl RecoverOutcome {
    pub fn recovered(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| n.result == RecoveryResult::Recovered)
            .count()
    }
}

pub async fn recover(
    ws: &Workspace,
    cfg: &Config,
    opts: &RecoverOptions,
    progress: &mut dyn Progress,
) -> anyhow::Result<RecoverOutcome> {
    let ws = &Workspace::new(
        std::path::absolute(ws.dir()).context("resolving the workspace folder")?,
        ws.provider.clone(),
    );
    let state_path = ws.join(STATE_FILE);
    if !state_path.exists() {
        bail!(
            "no {}: there is no initialized cluster to recover in this workspace",
            crate::shown(STATE_FILE)
        );
    }
    let state = State::load(&state_path)?;
    let cluster_id = state.cluster_id().context(
        "the state file holds no cluster ID: the cluster was never initialized, so there is nothing to recover (run `constellation apply`)",
    )?;
    let secret_path = ws.join(MASTER_SECRET_FILE);
    if !secret_path.exists() {
        bail!("no {}: recovery needs the master secret `constellation apply` wrote when it initialized the cluster", crate::shown(MASTER_SECRET_FILE));
    }
    let loaded = config::secret::read(&secret_path)?;
    if let Some(w) = loaded.warning {
        progress.step(&format!("warning: {w}"));
    }
    let master = loaded.secret;
    // The master secret must be this cluster's (checked here, before any node sees it).
    if master
        .measurement_secret()?
        .cluster_id(&state.cluster_values.measurement_salt.0)
        != cluster_id
    {
        bail!("{} does not belong to the cluster in {} (its cluster ID differs): restore the master secret of this cluster", crate::shown(MASTER_SECRET_FILE), crate::shown(STATE_FILE));
    }
    let cloud = ws
        .provider
        .view()?
        .context("no infrastructure records in this workspace: nothing to recover")?;

    // A node waiting for recovery was just booted: PCR 15 must still be zero.
    let m = crate::binding::with_pcr15_zero(cfg.measurements())?;
    // Each node is validated against the attestation key recorded for it (crate::binding).

    let status = crate::status::status(ws)?.context("the local cloud state disappeared")?;
    let mut cps: Vec<_> = status
        .nodes
        .iter()
        .filter(|n| n.role == Role::ControlPlane.as_str())
        .collect();
    if let Some(ep) = &opts.endpoint {
        let host = ep.split(':').next().unwrap_or_default().trim();
        cps.retain(|n| n.address == host || n.name == host);
        if cps.is_empty() {
            bail!("{ep:?} is no control-plane node of this cluster (see `constellation status`)");
        }
    }

    let mut results = vec![];
    let mut attempts = vec![];
    for n in cps {
        let member = matches!(n.phase, Some(Phase::Joined | Phase::Initialized));
        let on_its_way = n.phase == Some(Phase::Joining)
            && n.admitted_by.as_deref() == Some(cluster::ids::RECOVERED_BY);
        if n.running && (member || on_its_way) {
            results.push(NodeRecovery {
                node: n.name.clone(),
                result: RecoveryResult::Member,
                detail: None,
            });
            continue;
        }
        if !n.running {
            results.push(NodeRecovery {
                node: n.name.clone(),
                result: RecoveryResult::Failed,
                detail: Some("not running: run `constellation apply` to restart it, then `constellation recover`".into()),
            });
            continue;
        }
        progress.step(&format!(
            "recover: {}: connecting to {}:{PORT_RECOVERY} over attested TLS",
            n.name, n.address
        ));
        let addr = format!("{}:{PORT_RECOVERY}", n.address);
        let bound = cloud
            .node(&n.name)
            .with_context(|| format!("the provider has no node {}", n.name))
            .and_then(|rec| crate::binding::NodeBound::new(cfg, m.clone(), &rec.info));
        let bound = match bound {
            Ok(v) => v,
            Err(e) => {
                results.push(NodeRecovery {
                    node: n.name.clone(),
                    result: RecoveryResult::Failed,
                    detail: Some(format!("{e:#}")),
                });
                continue;
            }
        };
        let cfg = atls::client::ClientConfig::new(None, vec![Arc::new(bound)]);
        let kms_uri = master.to_kms_uri();
        let deadline = Instant::now() + opts.connect_timeout.unwrap_or(Duration::from_secs(30));
        let name = n.name.clone();
        attempts.push((
            name,
            tokio::spawn(async move { push_key(&addr, &cfg, &kms_uri, deadline).await }),
        ));
    }
    for (node, task) in attempts {
        let r = task.await.context("recovery task failed")?;
        let (result, detail) = match r {
            Ok(()) => {
                progress.step(&format!("recover: {node}: pushed the recovery key"));
                (RecoveryResult::Recovered, None)
            }
            Err(e) => {
                let msg = format!("{e:#}");
                progress.step(&format!("recover: {node}: {msg}"));
                (RecoveryResult::Failed, Some(msg))
            }
        };
        results.push(NodeRecovery {
            node,
            result,
            detail,
        });
    }
    results.sort_by(|a, b| a.node.cmp(&b.node));

    let recovered = results
        .iter()
        .filter(|r| r.result == RecoveryResult::Recovered)
        .count();
    let failed: Vec<&NodeRecovery> = results
        .iter()
        .filter(|r| r.result == RecoveryResult::Failed)
        .collect();
    if !failed.is_empty() {
        let mut msg = format!(
            "{} control-plane node(s) could not be recovered ({recovered} recovered):",
            failed.len()
        );
        for f in failed {
            msg.push_str(&format!(
                "\n  {}: {}",
                f.node,
                f.detail.as_deref().unwrap_or("failed")
            ));
        }
        bail!(msg);
    }
    if recovered == 0 {
        progress.step("recover: no control-plane node needs recovery");
    }
    let apply_opts = crate::apply::ApplyOptions {
        join_timeout: opts.join_timeout,
        ..Default::default()
    };
    let (members, total) = crate::apply::wait_for_joins(ws, &apply_opts, progress).await?;
    Ok(RecoverOutcome {
        nodes: results,
        members,
        total,
    })
}

/// Dials the node's recovery server until it answers (it may still be booting), checks its
/// attestation, and only then sends the master secret.
async fn push_key(
    addr: &str,
    cfg: &atls::client::ClientConfig,
    kms_uri: &str,
    deadline: Instant,
) -> anyhow::Result<()> {
    let channel = match crate::dial_attested(addr, cfg, deadline).await {
        Ok((channel, _)) => channel,
        Err(crate::DialError::Rejected(e)) => {
            return Err(anyhow::Error::new(e)
                .context("the node failed attestation; nothing secret was sent"));
        }
        Err(crate::DialError::Unreachable(e)) => {
            return Err(anyhow::Error::new(e).context(format!(
                "no recovery server answered at {addr} (the node may have rejoined through another control-plane node; see `constellation status`)"
            )))
        }
    };
    let mut client = proto::recoverproto::api_client::ApiClient::new(channel);
    client
        .recover(proto::recoverproto::RecoverMessage {
            kms_uri: kms_uri.to_string(),
            storage_uri: "storage://no-store".into(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("the node refused: {}", s.message()))?;
    Ok(())
}
