//! The owner's access to the cluster's replicated state (etcd on the control-plane nodes),
//! authenticated with the admin credentials `apply` wrote (`constellation-admin.conf`).
//!
//! The CLI uses it for what only the owner may change: the join configuration (the expected
//! measurements every JoinService checks joining nodes against), the node registry and etcd
//! membership when control-plane nodes are removed.

use std::path::Path;

use anyhow::Context as _;
use cluster::ports::{ETCD_CLIENT as PORT_ETCD_CLIENT, ETCD_PEER as PORT_ETCD_PEER};
use cluster::state::{JoinConfig, KEY_JOIN_CONFIG};
pub use cluster_store::Store;

use crate::provider::CloudView;
use crate::ADMIN_CONF_FILE;

/// Connects to the etcd members of the cluster's running control-plane nodes.
pub async fn connect(ws: &Path, cloud: &CloudView) -> anyhow::Result<Store> {
    connect_except(ws, cloud, None).await
}

/// As [`connect`], but never through the member of node `except` (one that is being removed).
pub async fn connect_except(
    ws: &Path,
    cloud: &CloudView,
    except: Option<&str>,
) -> anyhow::Result<Store> {
    // Clusters initialized before the owner file existed have the etcd credentials in the
    // admin file.
    let file = [crate::OWNER_CONF_FILE, ADMIN_CONF_FILE]
        .into_iter()
        .find(|f| ws.join(f).exists())
        .unwrap_or(crate::OWNER_CONF_FILE);
    let creds = crate::admin::load(&ws.join(file))
        .with_context(|| format!("the owner's credentials {}", crate::shown(file)))?;
    let endpoints: Vec<String> = cloud
        .running_control_planes()
        .filter(|n| Some(n.name.as_str()) != except)
        .map(|n| format!("https://{}:{PORT_ETCD_CLIENT}", n.address))
        .collect();
    if endpoints.is_empty() {
        anyhow::bail!("no control-plane node is running: run `constellation apply` first");
    }
    Ok(Store::connect_pem(
        &endpoints,
        creds.ca_pem.as_bytes(),
        creds.cert_pem.as_bytes(),
        creds.key_pem.as_bytes(),
    )
    .await?)
}

/// The join configuration every JoinService uses.
pub async fn join_config(store: &Store) -> anyhow::Result<JoinConfig> {
    store
        .get_json::<JoinConfig>(KEY_JOIN_CONFIG)
        .await?
        .context("the cluster has no join configuration (it was never initialized)")
}

pub async fn put_join_config(store: &Store, cfg: &JoinConfig) -> anyhow::Result<()> {
    Ok(store.put_json(KEY_JOIN_CONFIG, cfg).await?)
}

/// Removes the etcd member of control-plane node `name` at `address` (found by name or by its
/// peer URL); a member that is already gone is fine. etcd refuses the change without a quorum
/// of the remaining members, so a removal never leaves the cluster without one.
pub async fn remove_member(
    store: &Store,
    name: &str,
    address: std::net::Ipv4Addr,
) -> anyhow::Result<bool> {
    let peer = format!("https://{address}:{PORT_ETCD_PEER}");
    let mut client = store.client();
    let list = client.member_list().await.context("listing etcd members")?;
    let Some(member) = list
        .members()
        .iter()
        .find(|m| m.name() == name || m.peer_urls().iter().any(|u| u == &peer))
    else {
        return Ok(false);
    };
    client
        .member_remove(member.id())
        .await
        .with_context(|| format!("removing {name}'s etcd member (needs a quorum of the others)"))?;
    Ok(true)
}
