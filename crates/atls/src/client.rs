//! Client side: [`handshake`] on any stream; [`connect`] for a tonic [`Channel`].
//!
//! ```no_run
//! # async fn f(cfg: atls::client::ClientConfig) -> Result<(), Box<dyn std::error::Error>> {
//! let (channel, attestation) = atls::client::connect("10.0.0.2:9000", &cfg).await?;
//! // `attestation` was verified during the handshake, before any request is sent.
//! let mut kms = proto::kms::api_client::ApiClient::new(channel);
//! # Ok(()) }
//! ```

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use attestation::{Issuer, Validator, VerifiedAttestation};
use hyper_util::rt::TokioIo;
use rustls::client::{ResolvesClientCert, Resumption};
use rustls::pki_types::ServerName;
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::cert::{self, CertificateError};
use crate::nonce::Nonce;
use crate::verify::{variants, AttestedServerVerifier, AttestedVerifier, Outcome};
use crate::{provider, Error, ALPN_H2, DEFAULT_HANDSHAKE_TIMEOUT};

/// What the client proves and what it demands, reusable across connections.
#[derive(Clone)]
pub struct ClientConfig {
    /// Attest to servers that ask for it (node joining). `None`: present no certificate.
    pub issuer: Option<Arc<dyn Issuer>>,
    /// Require the server to attest to one of these (CLI). Empty: the server is not checked.
    pub validators: Vec<Arc<dyn Validator>>,
    /// Limit for TCP connect plus handshake in [`connect`] (and its reconnects).
    pub handshake_timeout: Duration,
    /// Deadline of every request on a [`connect`]ed channel.
    pub request_timeout: Duration,
}

/// Default deadline of one request (an Init that starts etcd takes a few seconds).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

impl ClientConfig {
    pub fn new(issuer: Option<Arc<dyn Issuer>>, validators: Vec<Arc<dyn Validator>>) -> Self {
        Self {
            issuer,
            validators,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("issuer", &self.issuer.as_ref().map(|i| i.variant()))
            .field("validators", &variants(&self.validators))
            .field("handshake_timeout", &self.handshake_timeout)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// Runs the client side of one aTLS handshake on `io` (no timeout: wrap it).
///
/// Sends a fresh nonce; with validators, the server's certificate must carry an attestation
/// for it, bound to the server's TLS key, and the verified attestation is returned. With an
/// issuer, answers the server's certificate request with an attested certificate for the
/// server's nonce.
///
/// TLS 1.3 clients finish before the server has checked their certificate: if the server
/// rejects our attestation, this returns `Ok` and the first read fails with the server's alert.
pub async fn handshake<IO>(
    io: IO,
    config: &ClientConfig,
) -> Result<
    (
        tokio_rustls::client::TlsStream<IO>,
        Option<VerifiedAttestation>,
    ),
    Error,
>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let provider = provider();
    let nonce = Nonce::random().map_err(Error::Nonce)?;
    let outcome = Outcome::default();
    let verifier = Arc::new(AttestedServerVerifier {
        attested: AttestedVerifier::new(
            config.validators.clone(),
            nonce,
            provider.signature_verification_algorithms,
            outcome.clone(),
        ),
    });
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(Error::Config)?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let issue_error = Arc::new(Mutex::new(None));
    let mut tls_config = match &config.issuer {
        Some(issuer) => builder.with_client_cert_resolver(Arc::new(AttestingResolver {
            issuer: Arc::clone(issuer),
            provider: Arc::clone(&provider),
            error: Arc::clone(&issue_error),
        })),
        None => builder.with_no_client_auth(),
    };
    tls_config.alpn_protocols = vec![ALPN_H2.to_vec()];
    // No resumption: a resumed session would skip attestation. SNI carries nothing for us.
    tls_config.resumption = Resumption::disabled();
    tls_config.enable_sni = false;

    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_config));
    let name = ServerName::try_from("atls.invalid")
        .map_err(|_| Error::Internal("placeholder server name is not a DNS name"))?;
    let result = connector.connect(name, io).await;

    if let Some(e) = issue_error
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
    {
        return Err(e);
    }
    let tls = result.map_err(|e| match outcome.take_error() {
        Some(v) => Error::PeerRejected(v),
        None => Error::Handshake(e),
    })?;
    let verified = outcome.take_verified();
    if !config.validators.is_empty() && verified.is_none() {
        return Err(Error::Internal(
            "server attestation was required but no verification result was recorded",
        ));
    }
    Ok((tls, verified))
}

/// Issues the client certificate when the server asks for one.
struct AttestingResolver {
    issuer: Arc<dyn Issuer>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    /// rustls can only be told "no certificate"; the reason goes here for [`handshake`].
    error: Arc<Mutex<Option<Error>>>,
}

impl fmt::Debug for AttestingResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttestingResolver")
            .field("issuer", &self.issuer.variant())
            .finish_non_exhaustive()
    }
}

impl AttestingResolver {
    fn certified_key(&self, root_hint_subjects: &[&[u8]]) -> Result<CertifiedKey, Error> {
        let nonce = Nonce::from_names(root_hint_subjects.iter().copied()).map_err(Error::Nonce)?;
        let own = run_blocking(|| cert::create(Some((&*self.issuer, &nonce))))
            .map_err(Error::Certificate)?;
        let key = self
            .provider
            .key_provider
            .load_private_key(own.key)
            .map_err(|e| Error::Certificate(CertificateError::Key(e)))?;
        Ok(CertifiedKey::new(vec![own.cert], key))
    }
}

impl ResolvesClientCert for AttestingResolver {
    fn resolve(
        &self,
        root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        match self.certified_key(root_hint_subjects) {
            Ok(k) => Some(Arc::new(k)),
            Err(e) => {
                *self.error.lock().unwrap_or_else(PoisonError::into_inner) = Some(e);
                None
            }
        }
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Runs a blocking issuer call from inside a synchronous rustls callback (see the crate docs).
fn run_blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Dials `addr` over TCP and runs [`handshake`], all within `config.handshake_timeout`.
pub async fn dial(
    addr: &str,
    config: &ClientConfig,
) -> Result<
    (
        tokio_rustls::client::TlsStream<TcpStream>,
        Option<VerifiedAttestation>,
    ),
    Error,
> {
    let attempt = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|source| Error::Connect {
                addr: addr.to_owned(),
                source,
            })?;
        // Latency matters more than throughput for small gRPC messages; failure is harmless.
        let _ = tcp.set_nodelay(true);
        handshake(tcp, config).await
    };
    tokio::time::timeout(config.handshake_timeout, attempt)
        .await
        .map_err(|_| Error::Timeout(config.handshake_timeout))?
}

type PendingStream = Arc<Mutex<Option<tokio_rustls::client::TlsStream<TcpStream>>>>;

/// Connects a tonic [`Channel`] to `addr` ("host:port") over aTLS.
///
/// The first connection is made here, and its verified server attestation (if `config` has
/// validators) is returned: check it before sending secrets. The channel uses that very
/// connection. If it later reconnects, each new connection runs a fresh aTLS handshake with a
/// new nonce and the same validators, so every connection's peer has passed the same policy.
pub async fn connect(
    addr: &str,
    config: &ClientConfig,
) -> Result<(Channel, Option<VerifiedAttestation>), Error> {
    let (first, attestation) = dial(addr, config).await?;
    let first: PendingStream = Arc::new(Mutex::new(Some(first)));
    let target = addr.to_owned();
    let cfg = config.clone();
    let connector = tower::service_fn(move |_: Uri| {
        let first = Arc::clone(&first);
        let target = target.clone();
        let cfg = cfg.clone();
        async move {
            let pending = first.lock().unwrap_or_else(PoisonError::into_inner).take();
            let tls = match pending {
                Some(tls) => tls,
                None => dial(&target, &cfg).await?.0,
            };
            Ok::<_, Error>(TokioIo::new(tls))
        }
    });
    // The URI only names the HTTP/2 authority; the connector above decides where to dial.
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .or_else(|_| Endpoint::from_shared("http://atls.invalid"))
        .map_err(Error::Channel)?
        .timeout(config.request_timeout);
    let channel = endpoint
        .connect_with_connector(connector)
        .await
        .map_err(Error::Channel)?;
    Ok((channel, attestation))
}
