//! TCP forwarding out of a node's network namespace: a listener INSIDE the node's namespace
//! (e.g. `127.0.0.1:2379` of the node, where the API server looks for etcd) whose connections are
//! forwarded to targets in the host's network namespace (e.g. the cluster's etcd on the node's
//! host-side loopback address `127.50.0.2:2379`). The reverse of [`crate::endpoint::ApiProxy`].
//!
//! A socket keeps the network namespace it was created in. The listening socket is created by a
//! short-lived thread that entered the node's namespace (`setns`) and then ends; accepted
//! connections belong to the node's namespace, while the outgoing connections are made by tokio
//! tasks on the runtime's (host-namespace) threads. No thread stays in the node's namespace.
//!
//! TLS passes through untouched: a client inside the node verifies the target's certificate
//! against the address it dialled, so the target's server certificate needs a SAN for the
//! listen address (`127.0.0.1` for the example above; the Bootstrapper's node certificates carry
//! it), or the listener uses the target's own address (a 127.x.y.z address is local in every
//! namespace whose `lo` is up, so `127.50.0.2:2379` can be mirrored inside the node).

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sched::{setns, CloneFlags};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

/// How long one connection attempt to a target may take before the next target is tried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Starting a forwarder failed.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("no forwarding target given")]
    NoTargets,
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
    #[error("listen on {addr} inside network namespace {netns}: {source}")]
    Listen {
        addr: SocketAddr,
        netns: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the thread creating the listener in {0} ended without an answer")]
    ThreadGone(PathBuf),
}

/// A running forwarder. Dropping it (or [`Forwarder::stop`]) closes the listener and every
/// forwarded connection.
#[derive(Debug)]
pub struct Forwarder {
    local: SocketAddr,
    targets: Vec<SocketAddr>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Binds `listen` inside the network namespace `netns` (a pinned namespace file).
async fn bind_in(netns: &Path, listen: SocketAddr) -> Result<std::net::TcpListener, ForwardError> {
    let ns = std::fs::File::open(netns).map_err(|source| ForwardError::Namespace {
        path: netns.to_path_buf(),
        source,
    })?;
    let (tx, rx) = oneshot::channel();
    let path = netns.to_path_buf();
    // A thread of its own (not the blocking pool: a pooled thread would stay in the namespace).
    std::thread::spawn(move || {
        let r = setns(ns.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(|source| ForwardError::Setns {
                path: path.clone(),
                source,
            })
            .and_then(|()| {
                let l =
                    std::net::TcpListener::bind(listen).map_err(|source| ForwardError::Listen {
                        addr: listen,
                        netns: path.clone(),
                        source,
                    })?;
                l.set_nonblocking(true)
                    .map_err(|source| ForwardError::Listen {
                        addr: listen,
                        netns: path.clone(),
                        source,
                    })?;
                Ok(l)
            });
        let _ = tx.send(r);
    });
    rx.await
        .map_err(|_| ForwardError::ThreadGone(netns.to_path_buf()))?
}

/// The first of `targets` that accepts (each tried for [`CONNECT_TIMEOUT`]).
async fn connect_first(targets: &[SocketAddr]) -> Option<tokio::net::TcpStream> {
    for t in targets {
        if let Ok(Ok(s)) =
            tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(t)).await
        {
            return Some(s);
        }
    }
    None
}

impl Forwarder {
    /// Listens on `listen` inside the network namespace `netns` (port 0: any free port, see
    /// [`Forwarder::local_addr`]) and forwards every connection to the first of `targets` (host
    /// network namespace) that accepts; when none does, the client's connection is closed.
    pub async fn start(
        netns: &Path,
        listen: SocketAddr,
        targets: Vec<SocketAddr>,
    ) -> Result<Forwarder, ForwardError> {
        if targets.is_empty() {
            return Err(ForwardError::NoTargets);
        }
        let std_listener = bind_in(netns, listen).await?;
        let listen_err = |source| ForwardError::Listen {
            addr: listen,
            netns: netns.to_path_buf(),
            source,
        };
        let local = std_listener.local_addr().map_err(listen_err)?;
        let listener = tokio::net::TcpListener::from_std(std_listener).map_err(listen_err)?;
        let to = targets.clone();
        let task = tokio::spawn(async move {
            // Connections live in this set: dropping the task (abort) drops and closes them all.
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((mut client, _)) = accepted else {
                            // e.g. EMFILE: back off instead of spinning
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        };
                        let to = to.clone();
                        conns.spawn(async move {
                            if let Some(mut upstream) = connect_first(&to).await {
                                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                            }
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Ok(Forwarder {
            local,
            targets,
            task: Some(task),
        })
    }

    /// The address the forwarder listens on inside the node's namespace.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The host-side targets, in the order they are tried.
    pub fn targets(&self) -> &[SocketAddr] {
        &self.targets
    }

    /// Closes the listener and every forwarded connection, and waits until they are closed.
    pub async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
