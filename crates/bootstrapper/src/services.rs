//! Control-plane services a node starts once it belongs to a cluster: the cluster CA, etcd
//! (Debian's `etcd` from the node image, with TLS from the control-plane CA), the KeyService
//! (mutual TLS: only holders of a control-plane certificate) and the JoinService endpoint.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use cluster::ports::{
    ETCD_CLIENT as PORT_ETCD_CLIENT, ETCD_PEER as PORT_ETCD_PEER, KEYSERVICE as PORT_KEYSERVICE,
};
use tokio::process::{Child, Command};

use crate::pki::{pem_to_der, ClusterCa};
use crate::state::{write_atomic, NodeDir};

/// Files of one node's TLS identity under `state/pki/`.
pub type NodePki = cluster_store::PkiFiles;

/// Writes CA (cert + key) and this node's certificate; returns the paths.
pub fn setup_pki(
    dir: &NodeDir,
    ca: &ClusterCa,
    name: &str,
    addr: Ipv4Addr,
) -> anyhow::Result<NodePki> {
    let pki = dir.pki();
    ca.save(&pki)?;
    let node = ca.issue_node(name, &[addr])?;
    write_atomic(&pki.join("node.crt"), node.cert_pem.as_bytes(), 0o644)?;
    write_atomic(&pki.join("node.key"), node.key_pem.as_bytes(), 0o600)?;
    Ok(NodePki {
        ca: pki.join("ca.crt"),
        cert: pki.join("node.crt"),
        key: pki.join("node.key"),
    })
}

/// File stem of the control-plane CA under `state/pki/` (`cp-ca.crt`, `cp-ca.key`).
pub const CP_CA: &str = "cp-ca";

/// This control-plane node's identity for control-plane services: the control-plane CA (from
/// `state/pki/cp-ca.*`, written by Init or from a control-plane join ticket) and a
/// certificate from it for this node (`cp.crt`/`cp.key`, issued at every start). etcd (client
/// and peer side) and the KeyService trust only this CA: a worker, whose certificate comes
/// from the cluster CA, reaches neither (the authorisation table in ARCHITECTURE.md).
pub fn control_plane_pki(
    dir: &NodeDir,
    name: &str,
    addr: Ipv4Addr,
) -> anyhow::Result<(Arc<ClusterCa>, NodePki)> {
    // etcd (client and peer side) trusts the CA the authorisation table names for it.
    anyhow::ensure!(
        [
            cluster::authz::Service::EtcdClient,
            cluster::authz::Service::EtcdPeer
        ]
        .iter()
        .all(|s| cluster::authz::client_ca(*s) == Some(cluster::authz::ClientCa::ControlPlane)),
        "the authorisation table no longer gives etcd the control-plane CA: update start_etcd"
    );
    let pki = dir.pki();
    let ca = ClusterCa::load_as(&pki, CP_CA).context("loading the control-plane CA")?;
    // 127.0.0.1 too: a Kubernetes API server reaches this etcd member through a forwarder on
    // its node's own loopback (kube-node's ETCD_IN_NODE).
    let own = ca.issue_node(name, &[addr, Ipv4Addr::LOCALHOST])?;
    write_atomic(&pki.join("cp.crt"), own.cert_pem.as_bytes(), 0o644)?;
    write_atomic(&pki.join("cp.key"), own.key_pem.as_bytes(), 0o600)?;
    Ok((
        Arc::new(ca),
        NodePki {
            ca: pki.join(format!("{CP_CA}.crt")),
            cert: pki.join("cp.crt"),
            key: pki.join("cp.key"),
        },
    ))
}

/// Starts this node's etcd member and waits until it listens. `join`: the `--initial-cluster`
/// from the join ticket (the member was added as a learner); `None` on the first
/// control-plane node, which starts a new single-member cluster. A member with data on disk
/// restarts from it.
pub async fn start_etcd(
    etcd: &Path,
    dir: &NodeDir,
    name: &str,
    addr: Ipv4Addr,
    pki: &NodePki,
    join: Option<&str>,
) -> anyhow::Result<Child> {
    let client = format!("https://{addr}:{PORT_ETCD_CLIENT}");
    let peer = format!("https://{addr}:{PORT_ETCD_PEER}");
    let data = dir.etcd_data();
    std::fs::create_dir_all(&data).context("creating the etcd data folder")?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700))
            .context("restricting the etcd data folder")?;
    }
    let own = format!("{name}={peer}");
    let (state, initial) = if data.join("member").exists() {
        ("existing", own)
    } else if let Some(cluster) = join {
        ("existing", cluster.to_string())
    } else {
        ("new", own)
    };
    let mut cmd = Command::new(etcd);
    cmd.arg("--name")
        .arg(name)
        .arg("--data-dir")
        .arg(&data)
        .arg("--listen-client-urls")
        .arg(&client)
        .arg("--advertise-client-urls")
        .arg(&client)
        .arg("--listen-peer-urls")
        .arg(&peer)
        .arg("--initial-advertise-peer-urls")
        .arg(&peer)
        .arg("--initial-cluster")
        .arg(initial)
        .arg("--initial-cluster-state")
        .arg(state)
        .arg("--cert-file")
        .arg(&pki.cert)
        .arg("--key-file")
        .arg(&pki.key)
        .arg("--trusted-ca-file")
        .arg(&pki.ca)
        .arg("--client-cert-auth")
        .arg("--peer-cert-file")
        .arg(&pki.cert)
        .arg("--peer-key-file")
        .arg(&pki.key)
        .arg("--peer-trusted-ca-file")
        .arg(&pki.ca)
        .arg("--peer-client-cert-auth")
        // Loopback latency is microseconds: a shorter election timeout than etcd's 1 s default
        // lets a new cluster elect its leader (and a survivor take over) sooner.
        .arg("--heartbeat-interval")
        .arg("50")
        .arg("--election-timeout")
        .arg("500")
        // Members are only ever added as learners (no vote, no quorum change) and promoted
        // once etcd says they caught up; the strict check would also hold learner additions
        // back until the leader saw all voters connected for 5 s.
        .arg("--strict-reconfig-check=false")
        .arg("--listen-metrics-urls")
        .arg("")
        .arg("--log-level")
        .arg("warn")
        .arg("--logger")
        .arg("zap")
        .kill_on_drop(true);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.0.join("etcd.log"))
        .context("opening etcd.log")?;
    cmd.stdout(log.try_clone()?).stderr(log);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", etcd.display()))?;
    let target = SocketAddr::V4(SocketAddrV4::new(addr, PORT_ETCD_CLIENT));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if tokio::net::TcpStream::connect(target).await.is_ok() {
            return Ok(child);
        }
        if let Some(status) = child.try_wait()? {
            anyhow::bail!(
                "etcd exited during start-up ({status}); see {}",
                dir.0.join("etcd.log").display()
            );
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "etcd did not listen on {target} within 20 s; see {}",
                dir.0.join("etcd.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Serves the KeyService on the node's address behind mutual TLS: clients need a certificate
/// from `ca`, the control-plane CA (control-plane nodes and the owner's admin only).
pub async fn serve_keyservice(
    addr: Ipv4Addr,
    ca: &ClusterCa,
    pki: &NodePki,
    master: Arc<keys::MasterSecret>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(pem_to_der(&ca.cert_pem)?))?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()?;
    let certs = vec![CertificateDer::from_pem_file(&pki.cert)?];
    let key = PrivateKeyDer::from_pem_file(&pki.key)?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind(SocketAddrV4::new(addr, PORT_KEYSERVICE))
        .await
        .context("binding the KeyService port")?;
    let incoming = async_stream_tls(listener, acceptor);
    let svc = proto::kms::api_server::ApiServer::new(keyservice::KeyService::new(master));
    Ok(tokio::spawn(async move {
        if let Err(e) = atls::guard::server()
            .add_service(svc)
            .serve_with_incoming(incoming)
            .await
        {
            tracing::error!("KeyService stopped: {e}");
        }
    }))
}

/// TLS-accepting stream for tonic under the node's connection limits ([`atls::guard`]);
/// silent peers and failed handshakes are dropped.
fn async_stream_tls(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
) -> impl futures_core::Stream<Item = Result<atls::guard::Guarded<TlsConn>, std::io::Error>> {
    atls::guard::incoming_with(listener, atls::guard::Limits::default(), move |tcp| {
        let acceptor = acceptor.clone();
        async move { acceptor.accept(tcp).await.map(TlsConn) }
    })
}

/// A server-side TLS connection tonic can serve (tonic's own impl needs its TLS feature).
pub struct TlsConn(pub tokio_rustls::server::TlsStream<tokio::net::TcpStream>);

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl tokio::io::AsyncRead for TlsConn {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TlsConn {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
