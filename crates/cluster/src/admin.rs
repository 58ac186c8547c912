//! The owner's admin credentials (`constellation-admin.conf`) in kubeconfig layout, as the Go
//! system writes it: the server, the CA that signed the server's certificate, and an admin
//! client certificate. Format only; reading and writing the file is the CLI's.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use zeroize::Zeroizing;

pub struct AdminCredentials {
    pub cluster: String,
    /// The endpoint the credentials are for (`https://<address>:<port>`).
    pub server: String,
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: Zeroizing<String>,
}

impl std::fmt::Debug for AdminCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminCredentials")
            .field("cluster", &self.cluster)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// The text is not admin credentials of this layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdminFormatError {
    #[error("the admin credentials have no `{0}` line")]
    Missing(&'static str),
    #[error("`{0}` is not base64")]
    Base64(&'static str),
    #[error("`{0}` is not PEM text")]
    NotText(&'static str),
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
    pub fn from_kubeconfig(text: &str) -> Result<Self, AdminFormatError> {
        let value = |key: &'static str| {
            text.lines()
                .find_map(|l| l.trim_start().strip_prefix(key))
                .map(str::trim)
                .ok_or(AdminFormatError::Missing(key))
        };
        let data = |key: &'static str| -> Result<String, AdminFormatError> {
            let bytes = STANDARD
                .decode(value(key)?)
                .map_err(|_| AdminFormatError::Base64(key))?;
            String::from_utf8(bytes).map_err(|_| AdminFormatError::NotText(key))
        };
        Ok(Self {
            cluster: value("- name:")?.to_string(),
            server: value("server:")?.to_string(),
            ca_pem: data(CA)?,
            cert_pem: data(CERT)?,
            key_pem: Zeroizing::new(data(KEY)?),
        })
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
        assert_eq!(
            AdminCredentials::from_kubeconfig("apiVersion: v1\n").unwrap_err(),
            AdminFormatError::Missing("- name:")
        );
    }
}
