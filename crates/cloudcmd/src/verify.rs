//! `constellation verify`: asks nodes for a fresh attestation and checks it against the
//! config's measurements and the cluster ID.
//!
//! For each node: a random 32-byte nonce → `/verify.API/GetAttestation` on `<node>:30081`
//! (plain gRPC; the document protects itself) → the variant's validator checks the
//! attestation key (the provider must vouch for it), the quote signature, the PCR digest and
//! the nonce, and that the document is bound to the user data `"VerifyService"` → the verified
//! PCRs are compared with the expected ones: the config's measurements plus PCR 15 =
//! `SHA256(0³² ‖ SHA256(cluster ID))`, which only a node that joined this cluster can hold.
//!
//! Every expected PCR is reported (expected and actual), not only the first that differs, so
//! that a failure explains itself.

use std::time::Duration;

use anyhow::{bail, Context};
use cluster::inventory::NodeInfo;
use cluster::ports::VERIFY as PORT_VERIFY;
use config::state::State;
use config::Config;
use measurements::{Measurement, Measurements};

use crate::provider::Workspace;
use serde::Serialize;

use crate::STATE_FILE;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Which nodes to verify, and against which cluster.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// One node, `HOST` or `HOST:PORT` (default port 30081); default: every node of the
    /// workspace's infrastructure.
    pub node_endpoint: Option<String>,
    /// The cluster ID (64 hex digits); default: the one in the state file.
    pub cluster_id: Option<String>,
}

/// One expected PCR and what the node's verified quote says.
#[derive(Debug, Clone, Serialize)]
pub struct PcrCheck {
    pub index: u32,
    pub expected: String,
    /// `None`: the quote does not contain this PCR.
    pub actual: Option<String>,
    pub warn_only: bool,
    pub matches: bool,
}

/// The verdict for one node.
#[derive(Debug, Clone, Serialize)]
pub struct NodeVerification {
    /// The node's name in the infrastructure state, or the endpoint when it is not recorded.
    pub node: String,
    pub endpoint: String,
    /// Attestation valid, bound to this request, and every enforced PCR as expected.
    pub verified: bool,
    /// Why not (`None` when verified).
    pub error: Option<String>,
    /// Every expected PCR, once the document itself verified (empty otherwise).
    pub pcrs: Vec<PcrCheck>,
    /// SHA-256 of the node's attestation key (TPMT_PUBLIC), hex.
    pub attestation_key: Option<String>,
    /// The attestation document as received (for `-o raw`).
    #[serde(skip)]
    pub document: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub cluster_id: String,
    pub variant: String,
    pub nodes: Vec<NodeVerification>,
}

impl VerifyReport {
    pub fn all_verified(&self) -> bool {
        self.nodes.iter().all(|n| n.verified)
    }
}

/// Verifies the selected nodes concurrently; a node that fails is reported, not an error.
/// Errors are for what stops verification as a whole (no cluster ID, no provider record).
pub async fn verify(
    ws: &Workspace,
    cfg: &Config,
    opts: &VerifyOptions,
) -> anyhow::Result<VerifyReport> {
    let cluster_id = match &opts.cluster_id {
        Some(hex_id) => parse_cluster_id(hex_id)?,
        None => {
            let path = ws.join(STATE_FILE);
            if !path.exists() {
                bail!("no {}, so no cluster ID to verify against: run `constellation apply` first, or pass --cluster-id", crate::shown(STATE_FILE));
            }
            State::load(&path)?.cluster_id().context(
                "the state file holds no cluster ID (the cluster is not initialized): run `constellation apply`, or pass --cluster-id",
            )?
        }
    };
    let cloud = ws.provider.view()?.context(
        "no infrastructure records in this workspace: verify trusts only attestation keys the provider recorded when it created each node's TPM",
    )?;

    let mut expected = cfg.measurements().clone();
    expected.set(
        15,
        Measurement::enforced(cluster_id.expected_pcr15().to_vec()),
    )?;
    // The validator checks key, signature, digest, nonce; every PCR is compared here, so that
    // all differences are reported, not only the first.
    let report_all = Measurements::new(
        expected
            .iter()
            .map(|(i, m)| (i, Measurement::warn_only(m.expected.clone())))
            .collect(),
    )?;
    // Each node's document must be signed by the attestation key the provider recorded for
    // *that* node (crate::binding): a node relaying the nonce to another node, or presenting
    // another node's document, fails. An endpoint the provider has no node for fails too.
    let validator_of = |node: Option<&NodeInfo>, endpoint: &str| {
        let node = node.with_context(|| {
            format!("the provider has no node at {endpoint}, so no attestation key to trust")
        })?;
        crate::binding::NodeBound::new(cfg, report_all.clone(), node)
            .map(|v| std::sync::Arc::new(v) as std::sync::Arc<dyn attestation::Validator>)
    };
    let targets: Vec<(String, String, Result<_, String>)> = match &opts.node_endpoint {
        Some(ep) => {
            // A node name of this workspace's cluster, or HOST[:PORT].
            let by_name = cloud.node(ep.trim()).map(|n| &n.info);
            let endpoint = match by_name {
                Some(n) => format!("{}:{PORT_VERIFY}", n.address),
                None => with_default_port(ep)?,
            };
            let node = by_name.or_else(|| {
                cloud
                    .nodes
                    .iter()
                    .find(|n| endpoint == format!("{}:{PORT_VERIFY}", n.address))
                    .map(|n| &n.info)
            });
            let name = node.map_or_else(|| endpoint.clone(), |n| n.name.clone());
            let v = validator_of(node, &endpoint).map_err(|e| format!("{e:#}"));
            vec![(name, endpoint, v)]
        }
        None => cloud
            .nodes
            .iter()
            .map(|n| {
                let endpoint = format!("{}:{PORT_VERIFY}", n.address);
                let v = validator_of(Some(&n.info), &endpoint).map_err(|e| format!("{e:#}"));
                (n.name.clone(), endpoint, v)
            })
            .collect(),
    };
    if targets.is_empty() {
        bail!("the infrastructure state lists no nodes: run `constellation apply`");
    }
    let expected = std::sync::Arc::new(expected);
    let tasks: Vec<_> = targets
        .into_iter()
        .map(|(node, endpoint, validator)| {
            let expected = expected.clone();
            tokio::spawn(async move {
                match validator {
                    Ok(v) => verify_node(node, endpoint, &*v, &expected).await,
                    Err(e) => NodeVerification {
                        node,
                        endpoint,
                        verified: false,
                        error: Some(e),
                        pcrs: vec![],
                        attestation_key: None,
                        document: None,
                    },
                }
            })
        })
        .collect();
    let mut nodes = Vec::with_capacity(tasks.len());
    for t in tasks {
        nodes.push(t.await.context("verification task failed")?);
    }
    Ok(VerifyReport {
        cluster_id: cluster_id.to_hex(),
        variant: cfg.variant().as_str().into(),
        nodes,
    })
}

/// A cluster ID as `apply` prints it (64 hex digits) or in base64 (standard or URL-safe, as
/// the Go CLI accepts it).
pub fn parse_cluster_id(s: &str) -> anyhow::Result<keys::ClusterId> {
    use base64::Engine as _;
    let t = s.trim();
    let engines = [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::URL_SAFE,
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    let bytes = hex::decode(t)
        .ok()
        .filter(|b| b.len() == keys::CLUSTER_ID_LEN)
        .or_else(|| {
            engines
                .iter()
                .find_map(|e| e.decode(t).ok())
                .filter(|b| b.len() == keys::CLUSTER_ID_LEN)
        })
        .with_context(|| {
            format!(
                "--cluster-id {s:?} is not a cluster ID: expected {} hex digits (as printed by `constellation apply`) or its base64 form",
                2 * keys::CLUSTER_ID_LEN
            )
        })?;
    Ok(keys::ClusterId::from_slice(&bytes)?)
}

fn with_default_port(ep: &str) -> anyhow::Result<String> {
    let ep = ep.trim();
    if ep.is_empty() {
        bail!("--node-endpoint is empty: give HOST or HOST:PORT (default port {PORT_VERIFY})");
    }
    Ok(match ep.parse::<std::net::IpAddr>() {
        Ok(ip) => std::net::SocketAddr::new(ip, PORT_VERIFY).to_string(),
        Err(_) if !ep.contains(':') => format!("{ep}:{PORT_VERIFY}"),
        Err(_) => ep.to_string(),
    })
}

async fn verify_node(
    node: String,
    endpoint: String,
    validator: &dyn attestation::Validator,
    expected: &Measurements,
) -> NodeVerification {
    let mut out = NodeVerification {
        node,
        endpoint,
        verified: false,
        error: None,
        pcrs: vec![],
        attestation_key: None,
        document: None,
    };
    let mut nonce = [0u8; 32];
    rand::Rng::fill(&mut rand::thread_rng(), &mut nonce[..]);
    let doc = match fetch_document(&out.endpoint, &nonce).await {
        Ok(doc) => doc,
        Err(e) => {
            out.error = Some(format!("{e:#}"));
            return out;
        }
    };
    out.document = Some(doc.clone());
    let verified = match validator.validate(&doc, &nonce).and_then(|v| {
        v.require_user_data(cluster::ids::VERIFY_USER_DATA)
            .map(|()| v)
    }) {
        Ok(v) => v,
        Err(e) => {
            out.error = Some(format!("attestation rejected: {e}"));
            return out;
        }
    };
    out.attestation_key = Some(hex::encode(verified.ak_fingerprint()));
    let actual = verified.pcrs();
    let mut differs = vec![];
    for (index, m) in expected.iter() {
        let got = actual.get(&index);
        let matches = got.is_some_and(|g| g == &m.expected);
        if !matches && !m.warn_only {
            differs.push(describe_mismatch(
                index,
                &m.expected,
                got.map(Vec::as_slice),
            ));
        }
        out.pcrs.push(PcrCheck {
            index,
            expected: hex::encode(&m.expected),
            actual: got.map(hex::encode),
            warn_only: m.warn_only,
            matches,
        });
    }
    if differs.is_empty() {
        out.verified = true;
    } else {
        out.error = Some(differs.join("; "));
    }
    out
}

fn describe_mismatch(index: u32, expected: &[u8], actual: Option<&[u8]>) -> String {
    let Some(actual) = actual else {
        return format!(
            "PCR {index}: expected {}, not in the quote",
            hex::encode(expected)
        );
    };
    let mut s = format!(
        "PCR {index}: expected {}, got {}",
        hex::encode(expected),
        hex::encode(actual)
    );
    if index == 15 {
        s.push_str(if actual.iter().all(|&b| b == 0) {
            " (zero: the node has not joined any cluster)"
        } else {
            " (the node holds another cluster's ID)"
        });
    }
    s
}

async fn fetch_document(endpoint: &str, nonce: &[u8]) -> anyhow::Result<Vec<u8>> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{endpoint}"))
        .with_context(|| format!("{endpoint:?} is not a HOST:PORT endpoint"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT)
        .connect()
        .await
        .with_context(|| {
            format!("cannot reach the verification service at {endpoint} (is the node running? see `constellation status`)")
        })?;
    let mut client = proto::verify::api_client::ApiClient::new(channel);
    let resp = client
        .get_attestation(proto::verify::GetAttestationRequest {
            nonce: nonce.to_vec(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("{}: {}", s.code(), s.message()))
        .with_context(|| format!("GetAttestation at {endpoint}"))?;
    Ok(resp.into_inner().attestation)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_gets_the_verification_port_when_it_has_none() {
        for (given, want) in [
            ("127.20.0.2", "127.20.0.2:30081"),
            (" 127.20.0.2:4000 ", "127.20.0.2:4000"),
            ("node.example", "node.example:30081"),
            ("node.example:4000", "node.example:4000"),
            ("::1", "[::1]:30081"),
            ("[::1]:4000", "[::1]:4000"),
        ] {
            assert_eq!(with_default_port(given).unwrap(), want, "{given}");
        }
        assert!(with_default_port("  ").is_err());
    }

    #[test]
    fn cluster_id_is_64_hex_digits_or_base64() {
        use base64::Engine as _;
        let id = "0f".repeat(32);
        assert_eq!(parse_cluster_id(&id).unwrap().to_hex(), id);
        let raw = hex::decode("fb".repeat(32)).unwrap();
        for e in [
            &base64::engine::general_purpose::STANDARD,
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ] {
            let b64 = e.encode(&raw);
            assert_eq!(
                parse_cluster_id(&b64).unwrap().to_hex(),
                "fb".repeat(32),
                "{b64}"
            );
        }
        // 31 bytes in base64 is no cluster ID either.
        let short = base64::engine::general_purpose::STANDARD.encode([1u8; 31]);
        assert!(parse_cluster_id(&short).is_err());
        for bad in [
            "",
            "abc",
            &"0f".repeat(31),
            &"zz".repeat(32),
            &"0f".repeat(33),
        ] {
            let e = format!("{:#}", parse_cluster_id(bad).unwrap_err());
            assert!(e.contains("64 hex digits"), "{bad}: {e}");
        }
    }

    #[test]
    fn pcr15_mismatch_says_whether_the_node_is_in_no_cluster_or_another() {
        let zero = describe_mismatch(15, &[1; 32], Some(&[0; 32]));
        assert!(zero.contains("has not joined any cluster"), "{zero}");
        let other = describe_mismatch(15, &[1; 32], Some(&[2; 32]));
        assert!(other.contains("another cluster"), "{other}");
        let missing = describe_mismatch(4, &[1; 32], None);
        assert!(missing.contains("not in the quote"), "{missing}");
    }
}
