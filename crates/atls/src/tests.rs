//! In-memory protocol tests: client and server over `tokio::io::duplex`, with tampering.

use std::sync::Arc;

use attestation::insecure_dummy::{InsecureDummyIssuer, InsecureDummyValidator};
use attestation::{
    IssueError, Issuer, Mismatch, ValidationError, Validator, Variant, VerifiedAttestation,
};
use rustls::pki_types::UnixTime;
use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt, DuplexStream};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::cert::{self, spki_hash};
use crate::client::{self, ClientConfig};
use crate::nonce::Nonce;
use crate::server::{self, AttestedStream, ServerConfig};
use crate::verify::{chain, verify_certificate};
use crate::{CertificateError, Error, NonceError, VerifyError, MAX_CERT_SIZE};

type ClientSide = (
    tokio_rustls::client::TlsStream<DuplexStream>,
    Option<VerifiedAttestation>,
);

fn dummy_issuer() -> Option<Arc<dyn Issuer>> {
    Some(Arc::new(InsecureDummyIssuer))
}
fn dummy_validators() -> Vec<Arc<dyn Validator>> {
    vec![Arc::new(InsecureDummyValidator)]
}

type Sides = (
    Result<ClientSide, Error>,
    Result<AttestedStream<DuplexStream>, Error>,
);

async fn run(client_cfg: &ClientConfig, server_cfg: &ServerConfig) -> Sides {
    let (c, s) = duplex(16 * 1024);
    tokio::join!(
        client::handshake(c, client_cfg),
        server::accept(s, server_cfg)
    )
}

/// One-way attestation: the client checks a server that attests with `server_issuer`.
async fn client_checks_server(server_issuer: Option<Arc<dyn Issuer>>) -> Sides {
    run(
        &ClientConfig::new(None, dummy_validators()),
        &ServerConfig::new(server_issuer, vec![]),
    )
    .await
}

/// One-way attestation: the server checks a client that attests with `client_issuer`.
async fn server_checks_client(client_issuer: Option<Arc<dyn Issuer>>) -> Sides {
    run(
        &ClientConfig::new(client_issuer, vec![]),
        &ServerConfig::new(None, dummy_validators()),
    )
    .await
}

/// Application data flows both ways after the handshake.
async fn ping_pong(client: &mut ClientSide, server: &mut AttestedStream<DuplexStream>) {
    let c = async {
        client.0.write_all(b"ping").await.unwrap();
        client.0.flush().await.unwrap();
        let mut b = [0u8; 4];
        client.0.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"pong");
    };
    let s = async {
        let mut b = [0u8; 4];
        server.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"ping");
        server.write_all(b"pong").await.unwrap();
        server.flush().await.unwrap();
    };
    tokio::join!(c, s);
}

fn peer_spki_hash(cert: &rustls::pki_types::CertificateDer<'_>) -> [u8; 32] {
    let (_, c) = X509Certificate::from_der(cert.as_ref()).unwrap();
    spki_hash(c.public_key().raw)
}

/// Issues dummy documents under another variant's OID (or with fixed user data, or padded).
struct TweakedIssuer {
    variant: Variant,
    fixed_user_data: Option<Vec<u8>>,
    padding: usize,
    fail: bool,
}
impl TweakedIssuer {
    fn dummy() -> Self {
        Self {
            variant: Variant::Dummy,
            fixed_user_data: None,
            padding: 0,
            fail: false,
        }
    }
    fn into_issuer(self) -> Option<Arc<dyn Issuer>> {
        Some(Arc::new(self))
    }
}
impl Issuer for TweakedIssuer {
    fn variant(&self) -> Variant {
        self.variant
    }
    fn issue(&self, user_data: &[u8], nonce: &[u8]) -> Result<Vec<u8>, IssueError> {
        if self.fail {
            return Err(IssueError::new("TPM is unreachable"));
        }
        let ud = self.fixed_user_data.as_deref().unwrap_or(user_data);
        let mut doc = InsecureDummyIssuer.issue(ud, nonce)?;
        // JSON allows trailing whitespace: a valid dummy document of any size.
        doc.resize(doc.len() + self.padding, b' ');
        Ok(doc)
    }
}

/// Accepts the document like the dummy validator, then reports a PCR mismatch.
struct PcrRejectingValidator;
impl Validator for PcrRejectingValidator {
    fn variant(&self) -> Variant {
        Variant::Dummy
    }
    fn validate(&self, doc: &[u8], nonce: &[u8]) -> Result<VerifiedAttestation, ValidationError> {
        InsecureDummyValidator.validate(doc, nonce)?;
        Err(ValidationError::Measurements(vec![Mismatch {
            index: 4,
            expected: vec![0xaa; 32],
            actual: Some(vec![0xbb; 32]),
        }]))
    }
}

#[tokio::test]
async fn server_attests() {
    let (c, s) = client_checks_server(dummy_issuer()).await;
    let mut c = c.unwrap();
    let mut s = s.unwrap();
    let att = c.1.as_ref().expect("client verified the server");
    assert_eq!(att.variant(), Variant::Dummy);
    // Bound to the key the server used in this TLS session.
    let server_cert = &c.0.get_ref().1.peer_certificates().unwrap()[0];
    assert_eq!(att.user_data(), peer_spki_hash(server_cert));
    assert!(s.peer_attestation().is_none());
    assert_eq!(c.0.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    ping_pong(&mut c, &mut s).await;
}

#[tokio::test]
async fn client_attests() {
    let (c, s) = server_checks_client(dummy_issuer()).await;
    let mut c = c.unwrap();
    let mut s = s.unwrap();
    assert!(c.1.is_none());
    let att = s.peer_attestation().expect("server verified the client");
    let client_cert = &s.get_ref().get_ref().1.peer_certificates().unwrap()[0];
    assert_eq!(att.user_data(), peer_spki_hash(client_cert));
    ping_pong(&mut c, &mut s).await;
}

#[tokio::test]
async fn mutual() {
    let (c, s) = run(
        &ClientConfig::new(dummy_issuer(), dummy_validators()),
        &ServerConfig::new(dummy_issuer(), dummy_validators()),
    )
    .await;
    let mut c = c.unwrap();
    let mut s = s.unwrap();
    assert!(c.1.is_some());
    assert!(s.peer_attestation().is_some());
    ping_pong(&mut c, &mut s).await;
}

#[tokio::test]
async fn rejected_measurement_is_named_on_the_client() {
    let (c, s) = run(
        &ClientConfig::new(None, vec![Arc::new(PcrRejectingValidator)]),
        &ServerConfig::new(dummy_issuer(), vec![]),
    )
    .await;
    let err = c.unwrap_err();
    let msg = chain(&err);
    assert!(
        matches!(
            &err,
            Error::PeerRejected(VerifyError::Validation {
                variant: Variant::Dummy,
                source: ValidationError::Measurements(m)
            }) if m[0].index == 4
        ),
        "{msg}"
    );
    assert!(msg.contains("PCR 4: expected aaaa"), "{msg}");
    // The server only learns that the client refused its certificate.
    let s_msg = chain(&s.unwrap_err());
    assert!(s_msg.contains("CertificateUnknown"), "{s_msg}");
    assert!(!s_msg.contains("PCR"), "{s_msg}");
}

#[tokio::test]
async fn rejected_client_is_named_on_the_server_only() {
    let (c, s) = run(
        &ClientConfig::new(dummy_issuer(), vec![]),
        &ServerConfig::new(None, vec![Arc::new(PcrRejectingValidator)]),
    )
    .await;
    let msg = chain(&s.unwrap_err());
    assert!(msg.contains("PCR 4"), "{msg}");
    // TLS 1.3: the client's handshake completes; the server's alert arrives on the first read.
    let (mut tls, _) = c.unwrap();
    let mut b = [0u8; 1];
    let read_err = tls.read(&mut b).await.unwrap_err().to_string();
    assert!(read_err.contains("CertificateUnknown"), "{read_err}");
    assert!(!read_err.contains("PCR"), "{read_err}");
}

#[tokio::test]
async fn explained_rejection_reaches_the_application() {
    let (c, s) = run(
        &ClientConfig::new(dummy_issuer(), vec![]),
        &ServerConfig::new(None, vec![Arc::new(PcrRejectingValidator)]).explaining_rejections(),
    )
    .await;
    assert!(c.is_ok());
    let s = s.unwrap();
    assert!(s.peer_attestation().is_none());
    let why = s.connect_info().peer_rejection().unwrap();
    assert!(why.contains("PCR 4: expected aaaa"), "{why}");
    // What a handler answers on such a connection.
    let mut req = tonic::Request::new(());
    req.extensions_mut().insert(s.connect_info().clone());
    let status = server::require_peer_attestation(&req).unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(status.message().contains("PCR 4"), "{}", status.message());
}

#[tokio::test]
async fn wrong_variant_lists_seen_oids() {
    let issuer = TweakedIssuer {
        variant: Variant::QemuVtpm,
        ..TweakedIssuer::dummy()
    };
    let (c, _s) = client_checks_server(issuer.into_issuer()).await;
    let err = c.unwrap_err();
    match &err {
        Error::PeerRejected(VerifyError::NoAttestation { expected, seen }) => {
            assert_eq!(expected, &["1.3.9900.1.1 (dummy)"]);
            assert_eq!(seen, &["1.3.9900.5.1"]);
        }
        other => panic!("unexpected: {}", chain(other)),
    }
    // A server that does not attest at all: no extensions.
    let (c, _s) = client_checks_server(None).await;
    let msg = chain(&c.unwrap_err());
    assert!(
        msg.contains("no attestation for 1.3.9900.1.1 (dummy); extensions present: []"),
        "{msg}"
    );
}

#[tokio::test]
async fn replayed_certificate_is_rejected() {
    // An attacker holds a certificate and key whose attestation was issued for an earlier
    // nonce, and presents it to every client.
    let old_nonce = Nonce::random().unwrap();
    let captured = cert::create(Some((&InsecureDummyIssuer, &old_nonce))).unwrap();
    // It is a genuine certificate for that old nonce ...
    verify_certificate(
        captured.cert.as_ref(),
        UnixTime::now(),
        &dummy_validators(),
        &old_nonce,
    )
    .unwrap();
    let replay_server = rustls::ServerConfig::builder_with_provider(crate::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![captured.cert.clone()], captured.key.clone_key())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(replay_server));
    for _ in 0..2 {
        let (c, s) = duplex(16 * 1024);
        let cfg = ClientConfig::new(None, dummy_validators());
        let (res, _) = tokio::join!(client::handshake(c, &cfg), acceptor.accept(s));
        // ... but not fresh for this client's nonce.
        let err = res.unwrap_err();
        assert!(
            matches!(
                err,
                Error::PeerRejected(VerifyError::Validation {
                    source: ValidationError::NonceMismatch,
                    ..
                })
            ),
            "{}",
            chain(&err)
        );
    }
}

#[tokio::test]
async fn attestation_for_another_key_is_rejected() {
    let issuer = TweakedIssuer {
        fixed_user_data: Some(vec![0x11; 32]),
        ..TweakedIssuer::dummy()
    };
    let (c, _s) = client_checks_server(issuer.into_issuer()).await;
    let err = c.unwrap_err();
    match &err {
        Error::PeerRejected(VerifyError::KeyBinding { got, .. }) => {
            assert_eq!(got, &"11".repeat(32))
        }
        other => panic!("unexpected: {}", chain(other)),
    }
}

#[tokio::test]
async fn certificate_size_limit() {
    // Near the limit: works in both directions (rustls's 64 KiB cap is not hit).
    let big = || {
        TweakedIssuer {
            padding: MAX_CERT_SIZE - 1024,
            ..TweakedIssuer::dummy()
        }
        .into_issuer()
    };
    let (c, s) = run(
        &ClientConfig::new(big(), dummy_validators()),
        &ServerConfig::new(big(), dummy_validators()),
    )
    .await;
    let (mut c, mut s) = (c.unwrap(), s.unwrap());
    let server_cert_len = c.0.get_ref().1.peer_certificates().unwrap()[0].len();
    assert!(server_cert_len > MAX_CERT_SIZE - 1024 && server_cert_len <= MAX_CERT_SIZE);
    ping_pong(&mut c, &mut s).await;

    // Over the limit: fails where the certificate is made, saying why.
    let huge = || {
        TweakedIssuer {
            padding: MAX_CERT_SIZE,
            ..TweakedIssuer::dummy()
        }
        .into_issuer()
    };
    let (c, s) = client_checks_server(huge()).await;
    let err = s.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Certificate(CertificateError::TooLarge { size, limit: MAX_CERT_SIZE, .. })
                if size > MAX_CERT_SIZE
        ),
        "{}",
        chain(&err)
    );
    assert!(chain(&err).contains("over the 61440-byte limit"));
    assert!(matches!(c.unwrap_err(), Error::Handshake(_)));

    let (c, _s) = server_checks_client(huge()).await;
    let err = c.unwrap_err();
    assert!(
        matches!(err, Error::Certificate(CertificateError::TooLarge { .. })),
        "{}",
        chain(&err)
    );
}

#[tokio::test]
async fn issuer_failure_is_reported_locally() {
    let failing = || {
        TweakedIssuer {
            fail: true,
            ..TweakedIssuer::dummy()
        }
        .into_issuer()
    };
    let (_c, s) = client_checks_server(failing()).await;
    let msg = chain(&s.unwrap_err());
    assert!(msg.contains("dummy issuer failed"), "{msg}");
    assert!(msg.contains("TPM is unreachable"), "{msg}");

    let (c, s) = server_checks_client(failing()).await;
    let msg = chain(&c.unwrap_err());
    assert!(msg.contains("TPM is unreachable"), "{msg}");
    assert!(matches!(s.unwrap_err(), Error::Handshake(_)));
}

#[tokio::test]
async fn peers_without_what_the_other_needs() {
    // A plain rustls client sends no nonce: an attesting server cannot attest.
    let plain_client = rustls::ClientConfig::builder_with_provider(crate::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let (c, s) = duplex(16 * 1024);
    let connector = tokio_rustls::TlsConnector::from(Arc::new(plain_client));
    let name = rustls::pki_types::ServerName::try_from("example.com").unwrap();
    let cfg = ServerConfig::new(dummy_issuer(), vec![]);
    let (_, res) = tokio::join!(
        async move {
            let r = connector.connect(name, c).await;
            drop(r);
        },
        server::accept(s, &cfg)
    );
    assert!(matches!(
        res.unwrap_err(),
        Error::Nonce(NonceError::Count { count: 0 })
    ));

    // A client without an issuer cannot join a server that requires attestation.
    let (c, s) = server_checks_client(None).await;
    let msg = chain(&s.unwrap_err());
    assert!(msg.contains("peer sent no certificates"), "{msg}");
    let (mut tls, _) = c.unwrap();
    assert!(tls.read(&mut [0u8; 1]).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attested_incoming_serves_despite_silent_peer() {
    use futures_core::Stream;
    use std::pin::pin;
    use std::time::Duration;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut cfg = ServerConfig::new(dummy_issuer(), dummy_validators());
    cfg.handshake_timeout = Duration::from_secs(2);
    let incoming = server::AttestedIncoming::new(listener, cfg).unwrap();
    let addr = incoming.local_addr().to_string();

    // A peer that connects and never speaks.
    let mut silent = tokio::net::TcpStream::connect(&addr).await.unwrap();

    let client_cfg = ClientConfig::new(dummy_issuer(), dummy_validators());
    let mut incoming = pin!(incoming);
    let next = std::future::poll_fn(|cx| incoming.as_mut().poll_next(cx));
    let (dialed, accepted) = tokio::join!(client::dial(&addr, &client_cfg), next);
    let (_tls, server_att) = dialed.unwrap();
    assert!(server_att.is_some());
    let accepted = accepted.unwrap().unwrap();
    assert!(accepted.peer_attestation().is_some());
    assert!(accepted.connect_info().remote_addr().is_some());

    // The silent peer is disconnected once its handshake times out.
    let mut b = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut b))
        .await
        .expect("server closes the silent connection after its handshake timeout");
    assert!(matches!(closed, Ok(0) | Err(_)));
}
