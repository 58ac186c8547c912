//! A host-side endpoint for the Kubernetes API: a TCP proxy listening in the host's network
//! namespace that connects to the API servers inside a cluster's fabric namespace (first backend
//! that accepts, in order; so it keeps answering while one of several control planes is down).
//! TLS passes through untouched: clients verify the API server's certificate, whose SANs must
//! name the proxy's address (`ControlPlaneSpec::extra_sans`).
//!
//! Sockets into the namespace are created by one thread that has entered the fabric namespace
//! (`setns`); a socket keeps the namespace it was created in, so the proxy's tokio tasks use it
//! from the host namespace.

use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use nix::sched::{setns, CloneFlags};
use tokio::sync::oneshot;

/// Starting the proxy failed.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("open network namespace {path}: {source}")]
    Namespace {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("enter network namespace {path}: {source}")]
    Setns {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("no API server backend given")]
    NoBackends,
}

type ConnectRequest = oneshot::Sender<std::io::Result<TcpStream>>;

/// A running proxy; dropping it stops accepting (open connections end with their peers).
#[derive(Debug)]
pub struct ApiProxy {
    local: SocketAddr,
    accept: tokio::task::JoinHandle<()>,
}

impl ApiProxy {
    /// Listens on `listen` (port 0: any free port) and forwards every connection to the first of
    /// `backends` that accepts within 1 s, connecting from inside the network namespace `netns`.
    pub async fn start(
        listen: SocketAddr,
        netns: &Path,
        backends: Vec<SocketAddr>,
    ) -> Result<ApiProxy, EndpointError> {
        if backends.is_empty() {
            return Err(EndpointError::NoBackends);
        }
        let ns = std::fs::File::open(netns).map_err(|source| EndpointError::Namespace {
            path: netns.to_path_buf(),
            source,
        })?;
        let (tx, rx) = mpsc::channel::<ConnectRequest>();
        let (ready_tx, ready_rx) = oneshot::channel::<Result<(), EndpointError>>();
        let path = netns.to_path_buf();
        std::thread::spawn(move || {
            if let Err(source) = setns(ns.as_fd(), CloneFlags::CLONE_NEWNET) {
                let _ = ready_tx.send(Err(EndpointError::Setns { path, source }));
                return;
            }
            let _ = ready_tx.send(Ok(()));
            // ends when the proxy (every sender) is gone
            while let Ok(reply) = rx.recv() {
                let mut last = std::io::Error::other("no backend");
                let mut result = None;
                for b in &backends {
                    match TcpStream::connect_timeout(b, Duration::from_secs(1)) {
                        Ok(s) => {
                            result = Some(s);
                            break;
                        }
                        Err(e) => last = e,
                    }
                }
                let _ = reply.send(result.ok_or(last));
            }
        });
        match ready_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(EndpointError::Namespace {
                    path: netns.to_path_buf(),
                    source: std::io::Error::other("connector thread ended"),
                })
            }
        }
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| EndpointError::Listen {
                addr: listen,
                source,
            })?;
        let local = listener
            .local_addr()
            .map_err(|source| EndpointError::Listen {
                addr: listen,
                source,
            })?;
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let (reply, answer) = oneshot::channel();
                if tx.send(reply).is_err() {
                    return;
                }
                tokio::spawn(async move {
                    let Ok(Ok(upstream)) = answer.await else {
                        return; // no backend reachable: the client sees the connection close
                    };
                    if upstream.set_nonblocking(true).is_err() {
                        return;
                    }
                    let Ok(mut upstream) = tokio::net::TcpStream::from_std(upstream) else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                });
            }
        });
        Ok(ApiProxy { local, accept })
    }

    /// The address the proxy listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for ApiProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
