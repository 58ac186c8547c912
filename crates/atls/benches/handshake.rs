//! Full aTLS handshakes over an in-memory duplex, next to the floor: a plain rustls TLS 1.3
//! handshake (no resumption) with a pre-made self-signed ECDSA P-256 certificate verified by
//! webpki. Both run on the same current-thread runtime; each iteration is one complete handshake
//! plus one byte each way.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use atls::client::ClientConfig;
use atls::server::ServerConfig;
use attestation::insecure_dummy::{InsecureDummyIssuer, InsecureDummyValidator};
use attestation::{Issuer, Validator};
use criterion::{criterion_group, criterion_main, Criterion};
use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn atls_once(client: &ClientConfig, server: &ServerConfig) {
    let (c, s) = duplex(16 * 1024);
    let (c, s) = tokio::join!(
        atls::client::handshake(c, client),
        atls::server::accept(s, server)
    );
    let (mut c, _) = c.unwrap();
    let mut s = s.unwrap();
    exchange(&mut c, &mut s).await;
}

async fn exchange<C, S>(c: &mut C, s: &mut S)
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let a = async {
        c.write_all(b"x").await.unwrap();
        c.flush().await.unwrap();
        c.read_exact(&mut [0u8; 1]).await.unwrap();
    };
    let b = async {
        s.read_exact(&mut [0u8; 1]).await.unwrap();
        s.write_all(b"y").await.unwrap();
        s.flush().await.unwrap();
    };
    tokio::join!(a, b);
}

fn plain_tls() -> (tokio_rustls::TlsConnector, tokio_rustls::TlsAcceptor) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let params = rcgen::CertificateParams::new(vec!["bench.example".to_string()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());

    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key_der)
        .unwrap();
    let mut server = server;
    server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    server.send_tls13_tickets = 0;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.resumption = rustls::client::Resumption::disabled();
    (
        tokio_rustls::TlsConnector::from(Arc::new(client)),
        tokio_rustls::TlsAcceptor::from(Arc::new(server)),
    )
}

fn handshakes(cr: &mut Criterion) {
    let rt = runtime();
    let issuer: Option<Arc<dyn Issuer>> = Some(Arc::new(InsecureDummyIssuer));
    let validators: Vec<Arc<dyn Validator>> = vec![Arc::new(InsecureDummyValidator)];
    let mut g = cr.benchmark_group("handshake");

    let (connector, acceptor) = plain_tls();
    g.bench_function("plain rustls TLS 1.3 (floor)", |b| {
        b.to_async(&rt).iter(|| async {
            let (c, s) = duplex(16 * 1024);
            let name = rustls::pki_types::ServerName::try_from("bench.example").unwrap();
            let (c, s) = tokio::join!(connector.connect(name, c), acceptor.accept(s));
            exchange(&mut c.unwrap(), &mut s.unwrap()).await;
        })
    });

    let modes = [
        (
            "aTLS server attests (dummy)",
            ClientConfig::new(None, validators.clone()),
            ServerConfig::new(issuer.clone(), vec![]),
        ),
        (
            "aTLS client attests (dummy)",
            ClientConfig::new(issuer.clone(), vec![]),
            ServerConfig::new(None, validators.clone()),
        ),
        (
            "aTLS mutual (dummy)",
            ClientConfig::new(issuer.clone(), validators.clone()),
            ServerConfig::new(issuer.clone(), validators.clone()),
        ),
    ];
    for (name, client, server) in &modes {
        g.bench_function(*name, |b| {
            b.to_async(&rt).iter(|| atls_once(client, server))
        });
    }
    g.finish();
}

criterion_group!(benches, handshakes);
criterion_main!(benches);
