//! Kubernetes join credentials as data: what the JoinService puts into an attested node's ticket
//! and what the joining node consumes.
//!
//! * [`WorkerJoin`]: API server endpoint, the cluster CA certificate, and two client
//!   certificates signed by the cluster CA: `CN=system:node:<name>, O=system:nodes` for the
//!   kubelet (the Node authorizer and NodeRestriction confine it to its own Node object and pods)
//!   and `CN=system:kube-proxy` for kube-proxy (Kubernetes' default `system:node-proxier`
//!   binding). Certificates rather than a bootstrap token + CA hash: the JoinService signs them
//!   in Rust with the CA key it already holds, with no API round trip, no token to create and
//!   expire, no CSR approver, and the node's Kubernetes name is fixed by the JoinService (the
//!   attested node's cluster name), not chosen by the node. The price: no revocation but CA
//!   rotation, so the certificates are short-lived ([`CLIENT_CERT_DAYS`]).
//! * [`ControlPlaneJoin`]: the cluster's shared keys ([`crate::control_plane::SHARED_PKI_FILES`];
//!   without the etcd CA for external etcd) as bytes, the API server endpoint and, for stacked
//!   etcd, a member to join through.
//!
//! [`KubeCa`] signs in Rust (rcgen/ring) from kubeadm's `ca.crt`/`ca.key` (PKCS#1 RSA, SEC1 EC or
//! PKCS#8 keys). Files are written owner-only ([`write_private`]).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose};
use serde::{Deserialize, Serialize};

/// Validity of the client certificates in a [`WorkerJoin`] (kubelet runs with
/// `rotateCertificates: false`; a node rejoins through the JoinService for new ones).
pub const CLIENT_CERT_DAYS: i64 = 30;

/// Producing or consuming join credentials failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cluster CA key {path}: {reason}")]
    BadCaKey { path: PathBuf, reason: String },
    #[error("cluster CA certificate {path}: {reason}")]
    BadCaCert { path: PathBuf, reason: String },
    #[error("signing the client certificate of {client}: {reason}")]
    Sign { client: String, reason: String },
    #[error("node name {0:?} must be 1–63 characters of [a-z0-9-] (a Kubernetes node name)")]
    BadNodeName(String),
    #[error("join data field {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> JoinError + 'a {
    move |source| JoinError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// The ticket file (name in the join ticket's `(name, bytes)` files) holding a [`WorkerJoin`]
/// as JSON.
pub const WORKER_JOIN_FILE: &str = "kubernetes/worker-join.json";
/// The ticket file holding a [`ControlPlaneJoin`] as JSON (control-plane tickets only).
pub const CONTROL_PLANE_JOIN_FILE: &str = "kubernetes/control-plane-join.json";

fn ticket_file<'a>(
    files: &'a [(String, Vec<u8>)],
    name: &'static str,
) -> Result<&'a [u8], JoinError> {
    files
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, d)| d.as_slice())
        .ok_or(JoinError::Invalid {
            field: name,
            reason: "missing from the ticket".into(),
        })
}

fn from_json<T: serde::de::DeserializeOwned>(
    name: &'static str,
    data: &[u8],
) -> Result<T, JoinError> {
    serde_json::from_slice(data).map_err(|e| JoinError::Invalid {
        field: name,
        reason: format!("not a valid JSON document: {e}"),
    })
}

/// One file of the shared keys: a name below the certificates folder (`etcd/ca.key`) and its
/// contents (the ticket's `control_plane_cert_or_key`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PkiFile {
    pub name: String,
    pub data: Vec<u8>,
}

impl std::fmt::Debug for PkiFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PkiFile({}, {} bytes)", self.name, self.data.len())
    }
}

/// What a further control plane needs ([`crate::control_plane::ControlPlane::join_with`]).
/// Holds the cluster CA keys: only for attested control-plane nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlPlaneJoin {
    /// `<IP>:<port>` of a running API server.
    pub api_server: String,
    /// The shared keys.
    pub files: Vec<PkiFile>,
    /// Stacked etcd only: a member's client address to `member add` through.
    pub etcd_member: Option<std::net::SocketAddr>,
}

impl ControlPlaneJoin {
    /// As a join ticket file ([`CONTROL_PLANE_JOIN_FILE`]).
    pub fn to_ticket_file(&self) -> (String, Vec<u8>) {
        // serializing plain strings, bytes and addresses cannot fail
        let json = serde_json::to_vec(self).unwrap_or_default();
        (CONTROL_PLANE_JOIN_FILE.to_owned(), json)
    }

    /// From a join ticket's files; the shared key names are checked against
    /// [`crate::control_plane::SHARED_PKI_FILES`] and the API server address parsed.
    pub fn from_ticket_files(files: &[(String, Vec<u8>)]) -> Result<Self, JoinError> {
        let j: ControlPlaneJoin = from_json(
            CONTROL_PLANE_JOIN_FILE,
            ticket_file(files, CONTROL_PLANE_JOIN_FILE)?,
        )?;
        if j.api_server.parse::<std::net::SocketAddr>().is_err() {
            return Err(JoinError::Invalid {
                field: "api_server",
                reason: format!("{:?} is not <IP>:<port>", j.api_server),
            });
        }
        if let Some(f) = j
            .files
            .iter()
            .find(|f| !crate::control_plane::SHARED_PKI_FILES.contains(&f.name.as_str()))
        {
            return Err(JoinError::Invalid {
                field: "files",
                reason: format!("{:?} is not a shared key file", f.name),
            });
        }
        Ok(j)
    }
}

/// A client certificate and its key, PEM.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientCredential {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for ClientCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredential")
            .field("cert_pem", &format!("{} bytes", self.cert_pem.len()))
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// What a worker needs to join: its kubelet and kube-proxy reach `api_server` with these
/// certificates and trust `ca_pem` for the API server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerJoin {
    /// kubeadm `clusterName` (names the cluster in the kubeconfigs).
    pub cluster_name: String,
    /// The node's Kubernetes name (the kubelet certificate's `system:node:<name>`).
    pub node_name: String,
    /// `<IP>:<port>` of every control plane's API server, as the node reaches them (the node's
    /// local forwarder tries them in order, see [`crate::node::LOCAL_API`]).
    pub api_servers: Vec<String>,
    /// The cluster CA certificate (PEM).
    pub ca_pem: String,
    /// `CN=system:node:<node_name>, O=system:nodes`.
    pub kubelet: ClientCredential,
    /// `CN=system:kube-proxy`.
    pub kube_proxy: ClientCredential,
}

/// Files of an installed [`WorkerJoin`].
#[derive(Debug, Clone)]
pub struct WorkerFiles {
    pub ca: PathBuf,
    pub kubelet_kubeconfig: PathBuf,
    pub kube_proxy_kubeconfig: PathBuf,
}

impl WorkerJoin {
    /// Checks the fields a joiner relies on (node name shape, endpoint, PEM blocks present).
    pub fn validate(&self) -> Result<(), JoinError> {
        if !valid_node_name(&self.node_name) {
            return Err(JoinError::BadNodeName(self.node_name.clone()));
        }
        if self.api_servers.is_empty() {
            return Err(JoinError::Invalid {
                field: "api_servers",
                reason: "empty".into(),
            });
        }
        self.api_server_addrs()?;
        for (field, pem, label) in [
            ("ca_pem", &self.ca_pem, "CERTIFICATE"),
            ("kubelet.cert_pem", &self.kubelet.cert_pem, "CERTIFICATE"),
            ("kubelet.key_pem", &self.kubelet.key_pem, "PRIVATE KEY"),
            (
                "kube_proxy.cert_pem",
                &self.kube_proxy.cert_pem,
                "CERTIFICATE",
            ),
            (
                "kube_proxy.key_pem",
                &self.kube_proxy.key_pem,
                "PRIVATE KEY",
            ),
        ] {
            if !pem.contains(&format!("-----BEGIN {label}-----")) {
                return Err(JoinError::Invalid {
                    field,
                    reason: format!("no PEM block {label}"),
                });
            }
        }
        Ok(())
    }

    /// As a join ticket file ([`WORKER_JOIN_FILE`]).
    pub fn to_ticket_file(&self) -> (String, Vec<u8>) {
        // serializing plain strings cannot fail
        let json = serde_json::to_vec(self).unwrap_or_default();
        (WORKER_JOIN_FILE.to_owned(), json)
    }

    /// From a join ticket's files, validated ([`WorkerJoin::validate`]).
    pub fn from_ticket_files(files: &[(String, Vec<u8>)]) -> Result<Self, JoinError> {
        let w: WorkerJoin = from_json(WORKER_JOIN_FILE, ticket_file(files, WORKER_JOIN_FILE)?)?;
        w.validate()?;
        Ok(w)
    }

    /// [`WorkerJoin::api_servers`] parsed.
    pub fn api_server_addrs(&self) -> Result<Vec<std::net::SocketAddr>, JoinError> {
        self.api_servers
            .iter()
            .map(|a| {
                a.parse().map_err(|_| JoinError::Invalid {
                    field: "api_servers",
                    reason: format!("{a:?} is not <IP>:<port>"),
                })
            })
            .collect()
    }

    /// Writes `ca.crt`, `kubelet.conf` and `kube-proxy.conf` into `dir` (created 0700, files
    /// 0600); the kubeconfigs name `server` (`https://IP:port`: one of the API servers, or a
    /// local forwarder to them; the API server certificate must name its address).
    pub fn install(&self, dir: &Path, server: &str) -> Result<WorkerFiles, JoinError> {
        self.validate()?;
        create_private_dir(dir)?;
        let files = WorkerFiles {
            ca: dir.join("ca.crt"),
            kubelet_kubeconfig: dir.join("kubelet.conf"),
            kube_proxy_kubeconfig: dir.join("kube-proxy.conf"),
        };
        write_private(&files.ca, self.ca_pem.as_bytes()).map_err(io_err("write", &files.ca))?;
        for (path, user, cred) in [
            (
                &files.kubelet_kubeconfig,
                format!("system:node:{}", self.node_name),
                &self.kubelet,
            ),
            (
                &files.kube_proxy_kubeconfig,
                "system:kube-proxy".to_owned(),
                &self.kube_proxy,
            ),
        ] {
            let text = render_kubeconfig(&self.cluster_name, server, &self.ca_pem, &user, cred);
            write_private(path, text.as_bytes()).map_err(io_err("write", path))?;
        }
        Ok(files)
    }
}

fn valid_node_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A kubeconfig with embedded CA and client certificate.
pub fn render_kubeconfig(
    cluster: &str,
    server: &str,
    ca_pem: &str,
    user: &str,
    cred: &ClientCredential,
) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    format!(
        r#"apiVersion: v1
kind: Config
clusters:
- name: {cluster:?}
  cluster:
    server: {server:?}
    certificate-authority-data: {ca}
users:
- name: {user:?}
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
contexts:
- name: {ctx:?}
  context:
    cluster: {cluster:?}
    user: {user:?}
current-context: {ctx:?}
"#,
        ca = b64(ca_pem),
        cert = b64(&cred.cert_pem),
        key = b64(&cred.key_pem),
        ctx = format!("{user}@{cluster}"),
    )
}

/// Creates `dir` (and parents) and makes it owner-only.
pub fn create_private_dir(dir: &Path) -> Result<(), JoinError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err("create", dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io_err("restrict", dir))
}

/// Writes `data` to `path` with mode 0600 (also when the file existed with another mode),
/// creating the parent folder (0700) when missing.
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        if !parent.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)?;
        }
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(data)?;
    f.sync_all()
}

/// DER length octets.
fn der_len(n: usize) -> Vec<u8> {
    if n < 0x80 {
        return vec![n as u8];
    }
    let bytes: Vec<u8> = n
        .to_be_bytes()
        .into_iter()
        .skip_while(|b| *b == 0)
        .collect();
    let mut out = vec![0x80 | bytes.len() as u8];
    out.extend(bytes);
    out
}

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend(der_len(content.len()));
    out.extend_from_slice(content);
    out
}

/// A PKCS#8 PrivateKeyInfo around a PKCS#1 (RSA) or SEC1 (EC) key with algorithm identifier
/// `alg_id` (DER of the AlgorithmIdentifier SEQUENCE).
fn wrap_pkcs8(alg_id: &[u8], inner: &[u8]) -> Vec<u8> {
    let mut body = vec![0x02, 0x01, 0x00]; // version 0
    body.extend_from_slice(alg_id);
    body.extend(der(0x04, inner));
    der(0x30, &body)
}

/// rsaEncryption, NULL parameters.
const RSA_ALG_ID: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
];
/// id-ecPublicKey with prime256v1.
const EC_P256_ALG_ID: &[u8] = &[
    0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48,
    0xce, 0x3d, 0x03, 0x01, 0x07,
];
/// id-ecPublicKey with secp384r1.
const EC_P384_ALG_ID: &[u8] = &[
    0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b, 0x81, 0x04,
    0x00, 0x22,
];

/// A key pair from a PEM private key as kubeadm writes them (`RSA PRIVATE KEY` PKCS#1,
/// `EC PRIVATE KEY` SEC1 P-256/P-384) or `PRIVATE KEY` (PKCS#8).
pub fn key_pair_from_pem(pem: &str) -> Result<KeyPair, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::PrivateKeyDer;
    let key = PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| format!("no PEM private key: {e}"))?;
    let candidates: Vec<Vec<u8>> = match &key {
        PrivateKeyDer::Pkcs8(k) => vec![k.secret_pkcs8_der().to_vec()],
        PrivateKeyDer::Pkcs1(k) => vec![wrap_pkcs8(RSA_ALG_ID, k.secret_pkcs1_der())],
        PrivateKeyDer::Sec1(k) => vec![
            wrap_pkcs8(EC_P256_ALG_ID, k.secret_sec1_der()),
            wrap_pkcs8(EC_P384_ALG_ID, k.secret_sec1_der()),
        ],
        _ => return Err("unknown private key form".into()),
    };
    let mut last = String::new();
    for der in candidates {
        match KeyPair::try_from(der.as_slice()) {
            Ok(k) => return Ok(k),
            Err(e) => last = e.to_string(),
        }
    }
    Err(format!("unsupported key: {last}"))
}

/// The cluster CA (kubeadm's `ca.crt`/`ca.key`) as a signer of client certificates.
pub struct KubeCa {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for KubeCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KubeCa")
    }
}

impl KubeCa {
    /// Reads `ca.crt` and `ca.key` from a certificates folder.
    pub fn load(pki: &Path) -> Result<KubeCa, JoinError> {
        let crt = pki.join("ca.crt");
        let key = pki.join("ca.key");
        let cert_pem = std::fs::read_to_string(&crt).map_err(io_err("read", &crt))?;
        let key_pem =
            zeroize::Zeroizing::new(std::fs::read_to_string(&key).map_err(io_err("read", &key))?);
        Self::from_pem(&cert_pem, &key_pem, &crt, &key)
    }

    fn from_pem(
        cert_pem: &str,
        key_pem: &str,
        crt: &Path,
        key: &Path,
    ) -> Result<KubeCa, JoinError> {
        let kp = key_pair_from_pem(key_pem).map_err(|reason| JoinError::BadCaKey {
            path: key.to_path_buf(),
            reason,
        })?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, kp).map_err(|e| JoinError::BadCaCert {
            path: crt.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(KubeCa {
            cert_pem: cert_pem.to_owned(),
            issuer,
        })
    }

    /// The CA certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A fresh ECDSA P-256 key and a client certificate `CN=<client>` (`O=<org>` when given),
    /// client auth only, valid for [`CLIENT_CERT_DAYS`].
    pub fn issue_client(
        &self,
        client: &str,
        org: Option<&str>,
    ) -> Result<ClientCredential, JoinError> {
        let sign_err = |e: rcgen::Error| JoinError::Sign {
            client: client.to_owned(),
            reason: e.to_string(),
        };
        let key = KeyPair::generate().map_err(sign_err)?;
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(sign_err)?;
        p.distinguished_name.push(DnType::CommonName, client);
        if let Some(o) = org {
            p.distinguished_name.push(DnType::OrganizationName, o);
        }
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let now = time::OffsetDateTime::now_utc();
        // a little backdated: clocks of the nodes are the host's, but the API server checks
        p.not_before = now - time::Duration::minutes(5);
        p.not_after = now + time::Duration::days(CLIENT_CERT_DAYS);
        let cert = p.signed_by(&key, &self.issuer).map_err(sign_err)?;
        Ok(ClientCredential {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The [`WorkerJoin`] of node `node_name` for the API servers `api_servers` (`IP:port`).
    pub fn worker_join(
        &self,
        cluster_name: &str,
        api_servers: &[std::net::SocketAddr],
        node_name: &str,
    ) -> Result<WorkerJoin, JoinError> {
        if !valid_node_name(node_name) {
            return Err(JoinError::BadNodeName(node_name.to_owned()));
        }
        let w = WorkerJoin {
            cluster_name: cluster_name.to_owned(),
            node_name: node_name.to_owned(),
            api_servers: api_servers.iter().map(|a| a.to_string()).collect(),
            ca_pem: self.cert_pem.clone(),
            kubelet: self
                .issue_client(&format!("system:node:{node_name}"), Some("system:nodes"))?,
            kube_proxy: self.issue_client("system:kube-proxy", None)?,
        };
        w.validate()?;
        Ok(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_lengths() {
        assert_eq!(der_len(5), vec![5]);
        assert_eq!(der_len(0x80), vec![0x81, 0x80]);
        assert_eq!(der_len(1190), vec![0x82, 0x04, 0xa6]);
    }

    #[test]
    fn a_worker_join_from_a_generated_ca_validates_and_installs_owner_only() {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, "kubernetes");
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = p.self_signed(&key).unwrap();
        let ca = KubeCa::from_pem(
            &cert.pem(),
            &key.serialize_pem(),
            Path::new("c"),
            Path::new("k"),
        )
        .unwrap();
        let w = ca
            .worker_join("c", &["198.18.0.1:6443".parse().unwrap()], "worker-0")
            .unwrap();
        let back: WorkerJoin = serde_json::from_str(&serde_json::to_string(&w).unwrap()).unwrap();
        assert_eq!(back, w);
        let (_, parsed) = x509_parser::pem::parse_x509_pem(w.kubelet.cert_pem.as_bytes()).unwrap();
        let c = parsed.parse_x509().unwrap();
        assert_eq!(
            c.subject().to_string(),
            "CN=system:node:worker-0, O=system:nodes"
        );
        assert!(!format!("{:?}", w.kubelet).contains("PRIVATE"));

        let dir = tempfile::tempdir().unwrap();
        let files = w
            .install(&dir.path().join("join"), "https://198.18.0.1:6443")
            .unwrap();
        for f in [
            &files.ca,
            &files.kubelet_kubeconfig,
            &files.kube_proxy_kubeconfig,
        ] {
            let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", f.display());
        }
        let kc = std::fs::read_to_string(&files.kubelet_kubeconfig).unwrap();
        assert!(kc.contains("server: \"https://198.18.0.1:6443\""), "{kc}");

        // through a ticket's files
        let files = vec![("other".to_owned(), vec![1, 2]), w.to_ticket_file()];
        assert_eq!(WorkerJoin::from_ticket_files(&files).unwrap(), w);
        let err = WorkerJoin::from_ticket_files(&files[..1]).unwrap_err();
        assert!(
            matches!(&err, JoinError::Invalid { field, reason } if *field == WORKER_JOIN_FILE && reason.contains("missing")),
            "{err}"
        );
        let garbage = vec![(WORKER_JOIN_FILE.to_owned(), b"{\"node_name\": 1}".to_vec())];
        let err = WorkerJoin::from_ticket_files(&garbage).unwrap_err();
        assert!(
            matches!(&err, JoinError::Invalid { reason, .. } if reason.contains("not a valid JSON")),
            "{err}"
        );
        let cpj = ControlPlaneJoin {
            api_server: "198.18.0.1:6443".into(),
            files: vec![PkiFile {
                name: "../../etc/passwd".into(),
                data: vec![],
            }],
            etcd_member: None,
        };
        let err = ControlPlaneJoin::from_ticket_files(&[cpj.to_ticket_file()]).unwrap_err();
        assert!(
            matches!(&err, JoinError::Invalid { field: "files", reason } if reason.contains("passwd")),
            "{err}"
        );

        let mut bad = w.clone();
        bad.node_name = "Worker_0".into();
        assert!(matches!(bad.validate(), Err(JoinError::BadNodeName(n)) if n == "Worker_0"));
        let mut bad = w;
        bad.api_servers = vec!["198.18.0.1:6443".into(), "nowhere".into()];
        assert!(
            matches!(bad.validate(), Err(JoinError::Invalid { field: "api_servers", reason }) if reason.contains("nowhere"))
        );
        bad.api_servers.clear();
        assert!(
            matches!(bad.validate(), Err(JoinError::Invalid { field: "api_servers", reason }) if reason == "empty")
        );
    }

    #[test]
    fn kubeadm_style_keys_are_read() {
        // kubeadm's PKCS#1 RSA ca.key is exercised by the integration tests (ring cannot
        // generate RSA keys); here: a non-key is refused, a SEC1 EC key is read
        let bad =
            key_pair_from_pem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
                .unwrap_err();
        assert!(bad.contains("no PEM private key"), "{bad}");
        let p256 = KeyPair::generate().unwrap();
        assert!(key_pair_from_pem(&p256.serialize_pem()).is_ok());
        // the same key as SEC1 ("EC PRIVATE KEY"): the PKCS#8 body's inner OCTET STRING
        let der = p256.serialize_der();
        // ring's P-256 PKCS#8: ... 04 6d <109-byte ECPrivateKey>
        assert_eq!(&der[der.len() - 111..der.len() - 109], &[0x04, 0x6d]);
        let inner = &der[der.len() - 109..];
        let sec1 = format!(
            "-----BEGIN EC PRIVATE KEY-----\n{}\n-----END EC PRIVATE KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(inner)
        );
        let back = key_pair_from_pem(&sec1).unwrap();
        assert_eq!(back.public_key_raw(), p256.public_key_raw());
    }
}
