//! The cluster's replicated control-plane state, in etcd (one member per control-plane node,
//! TLS with certificates from the cluster CA).
//!
//! | key | value |
//! |---|---|
//! | `/constellation/join-config` | [`JoinConfig`]: attestation variant, measurements, measurement salt |
//! | `/constellation/master-secret` | [`MasterSecretRecord`]: what the KeyService derives keys from |
//! | `/constellation/nodes/<name>` | [`NodeEntry`]: one per admitted node (the node registry) |
//!
//! Only the JoinService writes node entries, and only for nodes it admitted: a refused join
//! leaves no trace here.

use std::time::Duration;

use anyhow::Context;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use etcd_client::{Certificate, Client, ConnectOptions, GetOptions, Identity, TlsOptions};
use measurements::Measurements;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::services::NodePki;

pub const KEY_JOIN_CONFIG: &str = "/constellation/join-config";
pub const KEY_MASTER_SECRET: &str = "/constellation/master-secret";
pub const PREFIX_NODES: &str = "/constellation/nodes/";

/// What the JoinService checks joining nodes against; set by Init from the owner's config.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JoinConfig {
    /// Attestation variant name, e.g. `local-vtpm`.
    pub variant: String,
    pub measurements: Measurements,
    #[serde(with = "hex_bytes")]
    pub measurement_salt: Vec<u8>,
}

/// The master secret as the KeyService reads it (the Go system keeps it in the Kubernetes
/// Secret `constellation-mastersecret`).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MasterSecretRecord {
    pub key: String,
    pub salt: String,
}

impl MasterSecretRecord {
    pub fn new(m: &keys::MasterSecret) -> Self {
        Self {
            key: STANDARD.encode(m.key()),
            salt: STANDARD.encode(m.salt()),
        }
    }
    pub fn secret(&self) -> anyhow::Result<keys::MasterSecret> {
        let key = zeroize::Zeroizing::new(STANDARD.decode(&self.key).context("master key")?);
        let salt = STANDARD.decode(&self.salt).context("master salt")?;
        Ok(keys::MasterSecret::new(key.to_vec(), salt)?)
    }
}

impl Drop for MasterSecretRecord {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.key.zeroize();
    }
}

/// One admitted node in the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeEntry {
    pub name: String,
    /// `control-plane` or `worker`.
    pub role: String,
    pub address: String,
    pub disk_uuid: String,
    /// SHA-256 of the node's attestation key (TPMT_PUBLIC), hex.
    pub ak_fingerprint: String,
    /// `init` (the first node) or the JoinService node that admitted it.
    pub admitted_by: String,
    /// Unix seconds.
    pub admitted_at: u64,
    #[serde(default)]
    pub rejoins: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rejoin_at: Option<u64>,
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A client of the cluster's etcd.
#[derive(Clone)]
pub struct Store {
    client: Client,
}

impl Store {
    /// Connects with this node's certificate. `endpoints`: `https://ip:2379` URLs.
    pub async fn connect(endpoints: &[String], pki: &NodePki) -> anyhow::Result<Self> {
        let ca = std::fs::read(&pki.ca).context("reading the cluster CA certificate")?;
        let cert = std::fs::read(&pki.cert).context("reading the node certificate")?;
        let key = zeroize::Zeroizing::new(std::fs::read(&pki.key).context("reading the node key")?);
        Self::connect_pem(endpoints, &ca, &cert, &key).await
    }

    /// Connects with a certificate and key given as PEM (the owner's admin credentials).
    pub async fn connect_pem(
        endpoints: &[String],
        ca: &[u8],
        cert: &[u8],
        key: &[u8],
    ) -> anyhow::Result<Self> {
        let tls = TlsOptions::new()
            .ca_certificate(Certificate::from_pem(ca))
            .identity(Identity::from_pem(cert, key));
        let opts = ConnectOptions::new()
            .with_tls(tls)
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(5));
        let client = Client::connect(endpoints, Some(opts))
            .await
            .with_context(|| format!("connecting to etcd at {}", endpoints.join(",")))?;
        Ok(Self { client })
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    pub async fn get_json<T: DeserializeOwned>(&self, key: &str) -> anyhow::Result<Option<T>> {
        let resp = self
            .client
            .clone()
            .get(key, None)
            .await
            .with_context(|| format!("reading {key} from etcd"))?;
        match resp.kvs().first() {
            None => Ok(None),
            Some(kv) => Ok(Some(serde_json::from_slice(kv.value()).with_context(
                || format!("etcd value of {key} is not what this version expects"),
            )?)),
        }
    }

    pub async fn put_json<T: Serialize>(&self, key: &str, value: &T) -> anyhow::Result<()> {
        let bytes = zeroize::Zeroizing::new(serde_json::to_vec(value)?);
        self.client
            .clone()
            .put(key, bytes.to_vec(), None)
            .await
            .with_context(|| format!("writing {key} to etcd"))?;
        Ok(())
    }

    pub async fn nodes(&self) -> anyhow::Result<Vec<NodeEntry>> {
        let resp = self
            .client
            .clone()
            .get(PREFIX_NODES, Some(GetOptions::new().with_prefix()))
            .await
            .context("reading the node registry from etcd")?;
        resp.kvs()
            .iter()
            .map(|kv| {
                serde_json::from_slice(kv.value())
                    .with_context(|| format!("registry entry {:?}", kv.key_str().unwrap_or("?")))
            })
            .collect()
    }

    pub async fn put_node(&self, entry: &NodeEntry) -> anyhow::Result<()> {
        self.put_json(&format!("{PREFIX_NODES}{}", entry.name), entry)
            .await
    }

    /// Removes a node from the registry (the node was removed from the cluster).
    pub async fn delete_node(&self, name: &str) -> anyhow::Result<()> {
        let key = format!("{PREFIX_NODES}{name}");
        self.client
            .clone()
            .delete(key.as_str(), None)
            .await
            .with_context(|| format!("deleting {key} from etcd"))?;
        Ok(())
    }
}

mod hex_bytes {
    pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s: String = serde::Deserialize::deserialize(d)?;
        hex::decode(s).map_err(serde::de::Error::custom)
    }
}
