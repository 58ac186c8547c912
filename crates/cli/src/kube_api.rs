//! The little of the Kubernetes API the CLI reads itself (no kubectl needed): which nodes are
//! registered and Ready, through the admin kubeconfig (its server, CA and client certificate).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use base64::Engine as _;

/// A node as the API server knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeNode {
    pub name: String,
    /// The `Ready` condition is `True`.
    pub ready: bool,
    /// Why not, from the `Ready` condition (`reason: message`).
    pub reason: Option<String>,
}

/// A client of the API server named in a kubeconfig (its first cluster and user).
pub struct Api {
    agent: ureq::Agent,
    server: String,
}

fn pem_items(pem: &[u8]) -> anyhow::Result<Vec<ureq::tls::PemItem<'static>>> {
    ureq::tls::parse_pem(pem)
        .collect::<Result<Vec<_>, _>>()
        .context("reading PEM data")
}

impl Api {
    pub fn from_kubeconfig(path: &Path) -> anyhow::Result<Api> {
        let text = zeroize::Zeroizing::new(
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        );
        let v: serde_norway::Value = serde_norway::from_str(&text)
            .with_context(|| format!("{} is not a kubeconfig", path.display()))?;
        let field = |section: &str, inner: &str, key: &str| -> anyhow::Result<String> {
            v[section][0][inner][key]
                .as_str()
                .map(String::from)
                .with_context(|| format!("{} has no {section}[0].{inner}.{key}", path.display()))
        };
        let b64 = |s: String| -> anyhow::Result<Vec<u8>> {
            base64::engine::general_purpose::STANDARD
                .decode(s.trim())
                .context("a kubeconfig field is not base64")
        };
        let server = field("clusters", "cluster", "server")?;
        let ca = b64(field("clusters", "cluster", "certificate-authority-data")?)?;
        let cert = b64(field("users", "user", "client-certificate-data")?)?;
        let key = zeroize::Zeroizing::new(b64(field("users", "user", "client-key-data")?)?);
        let roots: Vec<ureq::tls::Certificate<'static>> = pem_items(&ca)?
            .into_iter()
            .filter_map(|i| match i {
                ureq::tls::PemItem::Certificate(c) => Some(c),
                _ => None,
            })
            .collect();
        let chain: Vec<ureq::tls::Certificate<'static>> = pem_items(&cert)?
            .into_iter()
            .filter_map(|i| match i {
                ureq::tls::PemItem::Certificate(c) => Some(c),
                _ => None,
            })
            .collect();
        let key = pem_items(&key)?
            .into_iter()
            .find_map(|i| match i {
                ureq::tls::PemItem::PrivateKey(k) => Some(k),
                _ => None,
            })
            .context("the kubeconfig's client key holds no private key")?;
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::new_with_certs(&roots))
            .client_cert(Some(ureq::tls::ClientCert::new_with_certs(&chain, key)))
            .build();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .tls_config(tls)
            .timeout_connect(Some(Duration::from_secs(3)))
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        Ok(Api { agent, server })
    }

    /// `GET /api/v1/nodes`: every registered node and its Ready condition.
    pub fn nodes(&self) -> anyhow::Result<Vec<KubeNode>> {
        let url = format!("{}/api/v1/nodes", self.server.trim_end_matches('/'));
        let text = self
            .agent
            .get(&url)
            .call()
            .with_context(|| format!("GET {url}"))?
            .body_mut()
            .read_to_string()
            .context("reading the node list")?;
        let body: serde_json::Value =
            serde_json::from_str(&text).context("the node list is not JSON")?;
        Ok(body["items"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|n| {
                let cond = n["status"]["conditions"]
                    .as_array()
                    .and_then(|c| c.iter().find(|c| c["type"] == "Ready"));
                let ready = cond.is_some_and(|c| c["status"] == "True");
                KubeNode {
                    name: n["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    ready,
                    reason: cond.filter(|_| !ready).map(|c| {
                        format!(
                            "{}: {}",
                            c["reason"].as_str().unwrap_or("NotReady"),
                            c["message"].as_str().unwrap_or("")
                        )
                    }),
                }
            })
            .collect())
    }
}

/// Waits until every node of `expected` is registered and Ready; reports progress when the
/// count changes. Fails after `timeout`, naming the nodes that are not.
pub fn wait_ready(
    admin: &Path,
    expected: &[String],
    timeout: Duration,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<()> {
    let api = Api::from_kubeconfig(admin)?;
    let deadline = Instant::now() + timeout;
    let mut last = None;
    // A node turns Ready about a second after it joined: poll often (one small GET).
    let pause = Duration::from_millis(100);
    loop {
        let (ready, missing) = match api.nodes() {
            Ok(nodes) => {
                let missing: Vec<String> = expected
                    .iter()
                    .filter(|e| !nodes.iter().any(|n| &n.name == *e && n.ready))
                    .map(|e| {
                        match nodes
                            .iter()
                            .find(|n| &n.name == e)
                            .and_then(|n| n.reason.clone())
                        {
                            Some(r) => format!("{e} ({r})"),
                            None => format!("{e} (not registered)"),
                        }
                    })
                    .collect();
                (expected.len() - missing.len(), missing)
            }
            Err(e) => (0, vec![format!("API not answering: {e:#}")]),
        };
        if last != Some(ready) {
            progress(&format!(
                "kubernetes: {ready}/{} nodes Ready",
                expected.len()
            ));
            last = Some(ready);
        }
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "not every node became Ready in Kubernetes within {} s: {}; see `constellation status`",
                timeout.as_secs(),
                missing.join(", ")
            );
        }
        std::thread::sleep(pause);
    }
}
