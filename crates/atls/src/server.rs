//! Server side: [`accept`] one aTLS handshake on any stream; [`AttestedIncoming`] accepts TCP
//! connections and runs their handshakes concurrently for
//! `tonic::transport::Server::serve_with_incoming`.
//!
//! ```no_run
//! # async fn f(cfg: atls::server::ServerConfig, svc: proto::kms::api_server::ApiServer<impl proto::kms::api_server::Api>) -> Result<(), Box<dyn std::error::Error>> {
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:9000").await?;
//! let incoming = atls::server::AttestedIncoming::new(listener, cfg)?;
//! tonic::transport::Server::builder().add_service(svc).serve_with_incoming(incoming).await?;
//! # Ok(()) }
//! ```
//! Handlers read the client's verified attestation with [`peer_attestation`].

use std::convert::Infallible;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use attestation::{Issuer, Validator, VerifiedAttestation};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{Acceptor, NoServerSessionStorage, WebPkiClientVerifier};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_rustls::LazyConfigAcceptor;
use tonic::transport::server::Connected;

use crate::cert::{self, CertificateError, OwnCert};
use crate::nonce::Nonce;
use crate::verify::{chain, variants, AttestedClientVerifier, AttestedVerifier, Outcome};
use crate::{provider, Error, ALPN_H2, DEFAULT_HANDSHAKE_TIMEOUT};

/// What the server proves and what it demands, reusable across connections.
#[derive(Clone)]
pub struct ServerConfig {
    /// Attest to clients (bootstrapper, recovery). `None`: present a plain certificate.
    pub issuer: Option<Arc<dyn Issuer>>,
    /// Require clients to attest to one of these (JoinService). Empty: no client certificate.
    pub validators: Vec<Arc<dyn Validator>>,
    /// Limit for one handshake in [`AttestedIncoming`].
    pub handshake_timeout: Duration,
    /// Connection cap and first-byte timeout of [`AttestedIncoming`] (see [`crate::guard`]).
    pub max_connections: usize,
    pub first_byte_timeout: Duration,
    /// With validators: finish the handshake even when the client's attestation is rejected,
    /// and hand the reason to the application ([`require_peer_attestation`]), which refuses
    /// every request on that connection with it. The client then learns *why* it was refused
    /// (which PCR, expected and actual) instead of a bare TLS alert. Only for services whose
    /// every handler calls [`require_peer_attestation`] (the JoinService).
    pub explain_rejections: bool,
}

impl ServerConfig {
    pub fn new(issuer: Option<Arc<dyn Issuer>>, validators: Vec<Arc<dyn Validator>>) -> Self {
        Self {
            issuer,
            validators,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_connections: crate::guard::DEFAULT_MAX_CONNECTIONS,
            first_byte_timeout: crate::guard::DEFAULT_FIRST_BYTE_TIMEOUT,
            explain_rejections: false,
        }
    }

    /// See [`ServerConfig::explain_rejections`].
    pub fn explaining_rejections(mut self) -> Self {
        self.explain_rejections = true;
        self
    }
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("issuer", &self.issuer.as_ref().map(|i| i.variant()))
            .field("validators", &variants(&self.validators))
            .field("handshake_timeout", &self.handshake_timeout)
            .field("explain_rejections", &self.explain_rejections)
            .finish()
    }
}

/// What tonic puts into each request's extensions for an [`AttestedStream`].
#[derive(Debug, Clone, Default)]
pub struct AttestedConnectInfo {
    remote_addr: Option<SocketAddr>,
    peer_attestation: Option<Arc<VerifiedAttestation>>,
    /// Why the client's attestation was rejected ([`ServerConfig::explain_rejections`]).
    peer_rejection: Option<Arc<str>>,
}

impl AttestedConnectInfo {
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.remote_addr
    }
    /// The client's attestation, verified during the handshake; `None` if the server has no
    /// validators.
    pub fn peer_attestation(&self) -> Option<&VerifiedAttestation> {
        self.peer_attestation.as_deref()
    }
    /// Why the client's attestation was rejected, when the server explains rejections.
    pub fn peer_rejection(&self) -> Option<&str> {
        self.peer_rejection.as_deref()
    }
}

/// The client's verified attestation for the connection a tonic request arrived on. `None` if
/// the server does not verify clients or the request did not come through [`AttestedIncoming`].
pub fn peer_attestation<T>(request: &tonic::Request<T>) -> Option<&VerifiedAttestation> {
    request
        .extensions()
        .get::<AttestedConnectInfo>()?
        .peer_attestation()
}

/// The client's verified attestation, or the gRPC error to answer with: `PermissionDenied`
/// with the reason the attestation was rejected (servers with
/// [`ServerConfig::explain_rejections`]), or `Unauthenticated` when there is none.
pub fn require_peer_attestation<T>(
    request: &tonic::Request<T>,
) -> Result<&VerifiedAttestation, tonic::Status> {
    let info = request.extensions().get::<AttestedConnectInfo>();
    if let Some(v) = info.and_then(|i| i.peer_attestation()) {
        return Ok(v);
    }
    match info.and_then(|i| i.peer_rejection()) {
        Some(why) => Err(tonic::Status::permission_denied(format!(
            "attestation rejected: {why}"
        ))),
        None => Err(tonic::Status::unauthenticated(
            "this service requires an attested client",
        )),
    }
}

/// A server-side TLS stream whose handshake (and client attestation, if required) succeeded.
pub struct AttestedStream<IO> {
    inner: tokio_rustls::server::TlsStream<IO>,
    info: AttestedConnectInfo,
    /// The connection's admission slot ([`AttestedIncoming`]), released on drop.
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl<IO> AttestedStream<IO> {
    pub fn peer_attestation(&self) -> Option<&VerifiedAttestation> {
        self.info.peer_attestation()
    }
    pub fn connect_info(&self) -> &AttestedConnectInfo {
        &self.info
    }
    pub fn get_ref(&self) -> &tokio_rustls::server::TlsStream<IO> {
        &self.inner
    }
    pub fn into_inner(self) -> tokio_rustls::server::TlsStream<IO> {
        self.inner
    }
}

impl<IO> fmt::Debug for AttestedStream<IO> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttestedStream")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl<IO> Connected for AttestedStream<IO> {
    type ConnectInfo = AttestedConnectInfo;
    fn connect_info(&self) -> AttestedConnectInfo {
        self.info.clone()
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for AttestedStream<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for AttestedStream<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Runs the server side of one aTLS handshake on `io` (no timeout: wrap it).
///
/// Reads the client's nonce from the ClientHello, issues our certificate for it on a blocking
/// thread (if we attest), then finishes the handshake with a configuration made for this
/// connection alone. With validators, the client must present a certificate whose attestation
/// verifies against a nonce we chose for this connection; the result is in the returned stream.
pub async fn accept<IO>(io: IO, config: &ServerConfig) -> Result<AttestedStream<IO>, Error>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let start = LazyConfigAcceptor::new(Acceptor::default(), io)
        .await
        .map_err(Error::Handshake)?;

    let own = match &config.issuer {
        Some(issuer) => {
            let hello = start.client_hello();
            let names = hello.certificate_authorities().unwrap_or_default();
            let client_nonce =
                Nonce::from_names(names.iter().map(|n| n.as_ref())).map_err(Error::Nonce)?;
            let issuer = Arc::clone(issuer);
            tokio::task::spawn_blocking(move || cert::create(Some((&*issuer, &client_nonce))))
                .await
                .map_err(|e| Error::Certificate(CertificateError::Task(e)))?
        }
        None => cert::create(None),
    }
    .map_err(Error::Certificate)?;

    let outcome = Outcome::default();
    let tls_config = rustls_config(config, own, &outcome)?;
    let tls = match start.into_stream(Arc::new(tls_config)).await {
        Ok(tls) => tls,
        Err(e) => {
            return Err(match outcome.take_error() {
                Some(v) => Error::PeerRejected(v),
                None => Error::Handshake(e),
            })
        }
    };
    let peer_attestation = outcome.take_verified();
    let peer_rejection = outcome.take_error().map(|e| Arc::from(chain(&e)));
    if !config.validators.is_empty() && peer_attestation.is_none() && peer_rejection.is_none() {
        return Err(Error::Internal(
            "client certificate was required but no verification result was recorded",
        ));
    }
    Ok(AttestedStream {
        inner: tls,
        info: AttestedConnectInfo {
            remote_addr: None,
            peer_attestation: peer_attestation.map(Arc::new),
            peer_rejection,
        },
        _permit: None,
    })
}

fn rustls_config(
    config: &ServerConfig,
    own: OwnCert,
    outcome: &Outcome,
) -> Result<rustls::ServerConfig, Error> {
    let provider = provider();
    let verifier: Arc<dyn ClientCertVerifier> = if config.validators.is_empty() {
        WebPkiClientVerifier::no_client_auth()
    } else {
        let nonce = Nonce::random().map_err(Error::Nonce)?;
        Arc::new(AttestedClientVerifier {
            attested: AttestedVerifier::new(
                config.validators.clone(),
                nonce,
                provider.signature_verification_algorithms,
                outcome.clone(),
            ),
            defer_rejection: config.explain_rejections,
        })
    };
    let mut c = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(Error::Config)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![own.cert], own.key)
        .map_err(|e| Error::Certificate(CertificateError::Key(e)))?;
    c.alpn_protocols = vec![ALPN_H2.to_vec()];
    // No resumption: a resumed session would skip attestation.
    c.session_storage = Arc::new(NoServerSessionStorage {});
    c.send_tls13_tickets = 0;
    Ok(c)
}

/// Accepted and attested connections from a TCP listener, as a `Stream` for
/// `tonic::transport::Server::serve_with_incoming`.
///
/// A background task admits connections under the connection cap ([`crate::guard`]) and runs
/// each handshake in its own task: a peer silent for [`ServerConfig::first_byte_timeout`] is
/// dropped, the rest of the handshake is bounded by [`ServerConfig::handshake_timeout`], so a
/// slow or silent peer does not hold up others and a flood of idle connections cannot exhaust
/// the node.
/// Failed handshakes are logged (with the peer address and the full reason) and dropped; the
/// stream yields only successful ones and never an error. Dropping it stops the task and
/// aborts handshakes in flight.
pub struct AttestedIncoming {
    rx: mpsc::Receiver<AttestedStream<TcpStream>>,
    local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl AttestedIncoming {
    /// Starts accepting on `listener`. Must be called within a tokio runtime.
    pub fn new(listener: TcpListener, config: ServerConfig) -> io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(16);
        let task = tokio::spawn(accept_loop(listener, Arc::new(config), tx));
        Ok(Self {
            rx,
            local_addr,
            task,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl fmt::Debug for AttestedIncoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttestedIncoming")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Drop for AttestedIncoming {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl futures_core::Stream for AttestedIncoming {
    type Item = Result<AttestedStream<TcpStream>, Infallible>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|o| o.map(Ok))
    }
}

async fn accept_loop(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    tx: mpsc::Sender<AttestedStream<TcpStream>>,
) {
    let admission = crate::guard::Admission::new(crate::guard::Limits {
        max_connections: config.max_connections,
        first_byte_timeout: config.first_byte_timeout,
        handshake_timeout: config.handshake_timeout,
    });
    let mut handshakes = JoinSet::new();
    loop {
        while handshakes.try_join_next().is_some() {}
        let (tcp, peer, permit) = tokio::select! {
            a = admission.accept(&listener) => a,
            _ = tx.closed() => return,
        };
        let config = Arc::clone(&config);
        let (tx, admission) = (tx.clone(), admission.clone());
        handshakes.spawn(async move {
            if !admission.spoke(&tcp).await {
                tracing::debug!(%peer, "dropping a connection that sent nothing");
                return;
            }
            match tokio::time::timeout(config.handshake_timeout, accept(tcp, &config)).await {
                Ok(Ok(mut stream)) => {
                    stream.info.remote_addr = Some(peer);
                    stream._permit = Some(permit);
                    // Err only if the server is gone; the connection is dropped then.
                    let _ = tx.send(stream).await;
                }
                Ok(Err(e)) => {
                    tracing::warn!(%peer, error = %chain(&e), "aTLS handshake failed");
                }
                Err(_) => {
                    tracing::warn!(%peer, timeout = ?config.handshake_timeout, "aTLS handshake timed out");
                }
            }
        });
    }
}
