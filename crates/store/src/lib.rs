//! A client of the cluster's etcd: the control plane's replicated state ([`cluster::state`]
//! names the keys and values). Control-plane services and the owner's CLI connect with a
//! certificate from the control-plane CA; etcd refuses every other identity (the
//! authorisation table in [`cluster::authz`]).
//!
//! Values are read forward-compatibly (unknown fields are ignored, see [`cluster::state`]).

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use cluster::state::{node_key, NodeEntry, PREFIX_NODES};
use etcd_client::{Certificate, Client, ConnectOptions, GetOptions, Identity, TlsOptions};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Files of a TLS identity: the CA to trust, a certificate and its key (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("reading {what} {path}")]
    ReadPki {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to etcd at {endpoints}")]
    Connect {
        endpoints: String,
        #[source]
        source: etcd_client::Error,
    },
    #[error("{op} {key} in etcd")]
    Request {
        op: &'static str,
        key: String,
        #[source]
        source: etcd_client::Error,
    },
    #[error("etcd value of {key} is not what this version expects")]
    Decode {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("encoding the value of {key}")]
    Encode {
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

/// A client of the cluster's etcd.
#[derive(Clone)]
pub struct Store {
    client: Client,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

fn read(what: &'static str, path: &PathBuf) -> Result<Vec<u8>, StoreError> {
    std::fs::read(path).map_err(|source| StoreError::ReadPki {
        what,
        path: path.clone(),
        source,
    })
}

impl Store {
    /// Connects with the identity in `pki`. `endpoints`: `https://ip:2379` URLs.
    pub async fn connect(endpoints: &[String], pki: &PkiFiles) -> Result<Self, StoreError> {
        let ca = read("the CA certificate", &pki.ca)?;
        let cert = read("the client certificate", &pki.cert)?;
        let key = zeroize::Zeroizing::new(read("the client key", &pki.key)?);
        Self::connect_pem(endpoints, &ca, &cert, &key).await
    }

    /// Connects with a certificate and key given as PEM (the owner's admin credentials).
    pub async fn connect_pem(
        endpoints: &[String],
        ca: &[u8],
        cert: &[u8],
        key: &[u8],
    ) -> Result<Self, StoreError> {
        let tls = TlsOptions::new()
            .ca_certificate(Certificate::from_pem(ca))
            .identity(Identity::from_pem(cert, key));
        let opts = ConnectOptions::new()
            .with_tls(tls)
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(5));
        let client = Client::connect(endpoints, Some(opts))
            .await
            .map_err(|source| StoreError::Connect {
                endpoints: endpoints.join(","),
                source,
            })?;
        Ok(Self { client })
    }

    /// The underlying client (membership, watches).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    pub async fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        let resp =
            self.client
                .clone()
                .get(key, None)
                .await
                .map_err(|source| StoreError::Request {
                    op: "reading",
                    key: key.into(),
                    source,
                })?;
        match resp.kvs().first() {
            None => Ok(None),
            Some(kv) => serde_json::from_slice(kv.value())
                .map(Some)
                .map_err(|source| StoreError::Decode {
                    key: key.into(),
                    source,
                }),
        }
    }

    pub async fn put_json<T: Serialize>(&self, key: &str, value: &T) -> Result<(), StoreError> {
        let bytes = zeroize::Zeroizing::new(serde_json::to_vec(value).map_err(|source| {
            StoreError::Encode {
                key: key.into(),
                source,
            }
        })?);
        self.client
            .clone()
            .put(key, bytes.to_vec(), None)
            .await
            .map_err(|source| StoreError::Request {
                op: "writing",
                key: key.into(),
                source,
            })?;
        Ok(())
    }

    /// The node registry.
    pub async fn nodes(&self) -> Result<Vec<NodeEntry>, StoreError> {
        let resp = self
            .client
            .clone()
            .get(PREFIX_NODES, Some(GetOptions::new().with_prefix()))
            .await
            .map_err(|source| StoreError::Request {
                op: "reading",
                key: PREFIX_NODES.into(),
                source,
            })?;
        resp.kvs()
            .iter()
            .map(|kv| {
                serde_json::from_slice(kv.value()).map_err(|source| StoreError::Decode {
                    key: kv.key_str().unwrap_or("?").to_string(),
                    source,
                })
            })
            .collect()
    }

    pub async fn put_node(&self, entry: &NodeEntry) -> Result<(), StoreError> {
        self.put_json(&node_key(&entry.name), entry).await
    }

    /// Removes a node from the registry (the node was removed from the cluster).
    pub async fn delete_node(&self, name: &str) -> Result<(), StoreError> {
        let key = node_key(name);
        self.client
            .clone()
            .delete(key.as_str(), None)
            .await
            .map_err(|source| StoreError::Request {
                op: "deleting",
                key,
                source,
            })?;
        Ok(())
    }
}

/// Seconds since the Unix epoch (registry timestamps).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
