//! The owner's admin credentials (`constellation-admin.conf`): kubeconfig layout, as the Go
//! system writes it, with the cluster CA and an admin client certificate from the cluster CA.
//! Without Kubernetes the server is the cluster's etcd; the same certificate authenticates
//! the owner to every cluster service (etcd, KeyService).

use std::path::Path;

use anyhow::Context;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use zeroize::Zeroizing;

use crate::services::NodePki;
use crate::state::write_atomic;

pub struct AdminCredentials {
    pub cluster: String,
    /// `https://<first control-plane address>:2379`.
    pub server: String,
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: Zeroizing<String>,
}

const CA: &str = "certificate-authority-data:";
const CERT: &str = "client-certificate-data:";
const KEY: &str = "client-key-data:";

impl AdminCredentials {
    pub fn to_kubeconfig(&self) -> Zeroizing<String> {
        let (cluster, server) = (&self.cluster, &self.server);
        Zeroizing::new(format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {cluster}\n  cluster:\n    server: {server}\n    {CA} {}\ncontexts:\n- name: {cluster}-admin@{cluster}\n  context:\n    cluster: {cluster}\n    user: {cluster}-admin\ncurrent-context: {cluster}-admin@{cluster}\nusers:\n- name: {cluster}-admin\n  user:\n    {CERT} {}\n    {KEY} {}\n",
            STANDARD.encode(&self.ca_pem),
            STANDARD.encode(&self.cert_pem),
            STANDARD.encode(self.key_pem.as_bytes())
        ))
    }

    /// Reads what [`Self::to_kubeconfig`] wrote.
    pub fn from_kubeconfig(text: &str) -> anyhow::Result<Self> {
        let value = |key: &str| {
            text.lines()
                .find_map(|l| l.trim_start().strip_prefix(key))
                .map(str::trim)
                .with_context(|| format!("the admin credentials have no `{key}` line"))
        };
        let data = |key: &str| -> anyhow::Result<String> {
            let bytes = STANDARD
                .decode(value(key)?)
                .with_context(|| format!("`{key}` is not base64"))?;
            String::from_utf8(bytes).with_context(|| format!("`{key}` is not PEM text"))
        };
        Ok(Self {
            cluster: value("- name:")?.to_string(),
            server: value("server:")?.to_string(),
            ca_pem: data(CA)?,
            cert_pem: data(CERT)?,
            key_pem: Zeroizing::new(data(KEY)?),
        })
    }

    /// Reads the workspace's credentials file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = Zeroizing::new(
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        );
        Self::from_kubeconfig(&text).with_context(|| format!("{} is not valid", path.display()))
    }

    /// Writes `ca.pem`, `admin.pem` and `admin.key` (0600) into `dir`, for tools such as
    /// `etcdctl --cacert --cert --key`.
    pub fn write_pem_files(&self, dir: &Path) -> anyhow::Result<NodePki> {
        let pki = NodePki {
            ca: dir.join("ca.pem"),
            cert: dir.join("admin.pem"),
            key: dir.join("admin.key"),
        };
        write_atomic(&pki.ca, self.ca_pem.as_bytes(), 0o644)?;
        write_atomic(&pki.cert, self.cert_pem.as_bytes(), 0o644)?;
        write_atomic(&pki.key, self.key_pem.as_bytes(), 0o600)?;
        Ok(pki)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_roundtrip() {
        let a = AdminCredentials {
            cluster: "mini-abc".into(),
            server: "https://127.20.0.1:2379".into(),
            ca_pem: "CA PEM\n".into(),
            cert_pem: "CERT PEM\n".into(),
            key_pem: Zeroizing::new("KEY PEM\n".into()),
        };
        let text = a.to_kubeconfig();
        assert!(text.contains("current-context: mini-abc-admin@mini-abc"));
        let b = AdminCredentials::from_kubeconfig(&text).unwrap();
        assert_eq!(
            (
                b.cluster,
                b.server,
                b.ca_pem,
                b.cert_pem,
                b.key_pem.as_str()
            ),
            (a.cluster, a.server, a.ca_pem, a.cert_pem, "KEY PEM\n")
        );
        let Err(err) = AdminCredentials::from_kubeconfig("apiVersion: v1\n") else {
            panic!("a file without the credentials parsed");
        };
        assert!(format!("{err:#}").contains("no `- name:` line"), "{err:#}");
    }
}
