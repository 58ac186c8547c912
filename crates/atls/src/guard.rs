//! Connection limits for node services: what keeps silent or slow peers from exhausting a node.
//!
//! Every accept loop of a node service (aTLS [`crate::server::AttestedIncoming`], the mTLS
//! KeyService, plain gRPC) admits connections through an [`Admission`]:
//!
//! * **connection cap**: a semaphore of [`Limits::max_connections`] permits; a connection holds
//!   its permit until it is closed, so the process never runs into its file-descriptor limit
//!   (an `accept` that fails anyway, e.g. `EMFILE`, backs off instead of spinning);
//! * **first-byte timeout**: a peer that sends nothing within [`Limits::first_byte_timeout`]
//!   (every real client speaks first: TLS ClientHello, HTTP/2 preface) is dropped, so a flood of
//!   idle connections frees its slots within seconds;
//! * **handshake timeout** for the rest of the TLS handshake.
//!
//! [`server`] gives the tonic server settings every node service uses: a deadline per request,
//! a cap of concurrent requests per connection, HTTP/2 keepalive and a maximum connection age
//! (an idle but well-formed HTTP/2 connection does not live forever).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::Connected;

/// Live connections per service (each node service; five services stay far below a process
/// limit of 20 000 descriptors; the node raises its soft limit to the hard one at start).
pub const DEFAULT_MAX_CONNECTIONS: usize = 2048;
/// A client speaks first (ClientHello, HTTP/2 preface) within this.
pub const DEFAULT_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(2);
/// Deadline of one gRPC request on a node service (Init with etcd start-up is the longest).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Concurrent requests on one connection.
pub const MAX_REQUESTS_PER_CONNECTION: usize = 32;
/// Longest life of one connection (clients reconnect transparently).
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(600);
/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// How many connections a service takes and how long a silent one may stay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub first_byte_timeout: Duration,
    pub handshake_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            first_byte_timeout: DEFAULT_FIRST_BYTE_TIMEOUT,
            handshake_timeout: crate::DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }
}

/// The tonic server settings of every node service (see the module docs).
pub fn server() -> tonic::transport::Server {
    server_with_timeout(REQUEST_TIMEOUT)
}

/// As [`server`], with another per-request deadline (Init brings up the whole control plane:
/// minutes on a slow machine, not seconds).
pub fn server_with_timeout(request_timeout: Duration) -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .timeout(request_timeout)
        .concurrency_limit_per_connection(MAX_REQUESTS_PER_CONNECTION)
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .max_connection_age(MAX_CONNECTION_AGE)
}

/// Admits connections from one listener under [`Limits`].
#[derive(Debug, Clone)]
pub struct Admission {
    permits: Arc<Semaphore>,
    limits: Limits,
}

impl Admission {
    pub fn new(limits: Limits) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            limits,
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Connections currently admitted.
    pub fn in_use(&self) -> usize {
        self.limits.max_connections.max(1) - self.permits.available_permits()
    }

    /// Waits for a free slot, then for a connection. Never fails: accept errors are logged and
    /// retried after a pause.
    pub async fn accept(
        &self,
        listener: &TcpListener,
    ) -> (TcpStream, SocketAddr, OwnedSemaphorePermit) {
        loop {
            let Ok(permit) = self.permits.clone().acquire_owned().await else {
                // The semaphore is never closed; wait a moment and try again anyway.
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                continue;
            };
            match listener.accept().await {
                Ok((tcp, peer)) => {
                    // Small answers must not wait for the peer's delayed ACK.
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::debug!(%peer, error = %e, "setting TCP_NODELAY failed");
                    }
                    return (tcp, peer, permit);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a TCP connection failed");
                    drop(permit);
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
            }
        }
    }

    /// True iff the peer sent something (or closed) within the first-byte timeout.
    pub async fn spoke(&self, tcp: &TcpStream) -> bool {
        let mut b = [0u8; 1];
        matches!(
            tokio::time::timeout(self.limits.first_byte_timeout, tcp.peek(&mut b)).await,
            Ok(Ok(n)) if n > 0
        )
    }
}

/// A connection with its admission permit (released when the connection is dropped).
pub struct Guarded<S> {
    inner: S,
    _permit: OwnedSemaphorePermit,
}

impl<S> Guarded<S> {
    pub fn new(inner: S, permit: OwnedSemaphorePermit) -> Self {
        Self {
            inner,
            _permit: permit,
        }
    }
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: Connected> Connected for Guarded<S> {
    type ConnectInfo = S::ConnectInfo;
    fn connect_info(&self) -> S::ConnectInfo {
        self.inner.connect_info()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
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

/// Admitted connections after `handshake` (e.g. a TLS accept, bounded by the handshake
/// timeout), as a stream for `tonic::transport::Server::serve_with_incoming`. Silent peers are
/// dropped at debug level (a flood must not flood the log), failed handshakes at warn. The
/// accept task ends when the stream is dropped.
pub fn incoming_with<S, F, Fut>(
    listener: TcpListener,
    limits: Limits,
    handshake: F,
) -> impl futures_core::Stream<Item = Result<Guarded<S>, io::Error>>
where
    S: Send + 'static,
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = io::Result<S>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(16);
    let admission = Admission::new(limits);
    let handshake = Arc::new(handshake);
    tokio::spawn(async move {
        loop {
            let (tcp, peer, permit) = tokio::select! {
                a = admission.accept(&listener) => a,
                _ = tx.closed() => return,
            };
            let (admission, handshake, tx) = (admission.clone(), handshake.clone(), tx.clone());
            tokio::spawn(async move {
                if !admission.spoke(&tcp).await {
                    tracing::debug!(%peer, "dropping a connection that sent nothing");
                    return;
                }
                match tokio::time::timeout(admission.limits.handshake_timeout, handshake(tcp)).await
                {
                    Ok(Ok(s)) => {
                        let _ = tx.send(Ok(Guarded::new(s, permit))).await;
                    }
                    // A peer that spoke and failed (e.g. a client certificate from the wrong
                    // CA) is worth a line; silent ones above are not.
                    Ok(Err(e)) => tracing::warn!(%peer, "handshake failed: {e}"),
                    Err(_) => tracing::debug!(%peer, "handshake timed out"),
                }
            });
        }
    });
    ReceiverStream(rx)
}

/// Admitted plain TCP connections (see [`incoming_with`]).
pub fn incoming(
    listener: TcpListener,
    limits: Limits,
) -> impl futures_core::Stream<Item = Result<Guarded<TcpStream>, io::Error>> {
    incoming_with(listener, limits, |tcp| async move { Ok(tcp) })
}

struct ReceiverStream<T>(mpsc::Receiver<T>);

impl<T> futures_core::Stream for ReceiverStream<T> {
    type Item = T;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use futures_core::Stream;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn next<S: Stream + Unpin>(s: &mut S) -> Option<S::Item> {
        std::future::poll_fn(|cx| Pin::new(&mut *s).poll_next(cx)).await
    }

    fn limits(max: usize) -> Limits {
        Limits {
            max_connections: max,
            first_byte_timeout: Duration::from_millis(200),
            handshake_timeout: Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn silent_peers_are_dropped_and_speaking_ones_served() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = Box::pin(incoming(listener, limits(16)));
        // Ten silent connections, then one that speaks.
        let mut silent = Vec::new();
        for _ in 0..10 {
            silent.push(TcpStream::connect(addr).await.unwrap());
        }
        let mut talker = TcpStream::connect(addr).await.unwrap();
        talker.write_all(b"hello").await.unwrap();
        let mut served = next(&mut incoming).await.unwrap().unwrap();
        let mut buf = [0u8; 5];
        served.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello");
        // The silent ones are closed by the node (read returns 0) after the first-byte timeout.
        for mut s in silent {
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                .await
                .expect("a silent connection was kept open")
                .unwrap_or(0);
            assert_eq!(n, 0);
        }
    }

    #[tokio::test]
    async fn the_cap_holds_until_a_connection_ends() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let admission = Admission::new(limits(2));
        let accept = {
            let admission = admission.clone();
            tokio::spawn(async move {
                let mut held = Vec::new();
                for _ in 0..3 {
                    held.push(admission.accept(&listener).await);
                }
                held
            })
        };
        let _a = TcpStream::connect(addr).await.unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        let _c = TcpStream::connect(addr).await.unwrap();
        // Two are admitted; the third waits for a permit (in the kernel's backlog).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while admission.in_use() < 2 {
            assert!(tokio::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(admission.in_use(), 2);
        assert!(!accept.is_finished());
        accept.abort();
        let _ = accept.await;
        // Aborting the holder released its permits.
        assert_eq!(admission.in_use(), 0);
    }
}
