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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
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
    let thread = std::thread::spawn(move || {
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
    let r = rx.await;
    // it ends right after sending; joined so that no thread in the namespace outlives this call
    let _ = thread.join();
    r.map_err(|_| ForwardError::ThreadGone(netns.to_path_buf()))?
}

/// The order to try `n` targets in: the one that last worked first, then the others in order.
fn order(n: usize, preferred: usize) -> impl Iterator<Item = usize> {
    let p = if preferred < n { preferred } else { 0 };
    std::iter::once(p).chain((0..n).filter(move |i| *i != p))
}

type ConnectReply = oneshot::Sender<Option<std::net::TcpStream>>;

/// Where outgoing connections are made.
#[derive(Clone)]
enum Connector {
    /// From the runtime's threads (the host's network namespace).
    Host,
    /// From a thread that entered another network namespace (ends with the last sender).
    Netns(std::sync::mpsc::Sender<ConnectReply>),
}

/// A thread inside `netns` that connects to the first of `targets` that accepts, per request.
fn connector_in(
    netns: &Path,
    targets: Vec<SocketAddr>,
    preferred: Arc<AtomicUsize>,
) -> Result<std::sync::mpsc::Sender<ConnectReply>, ForwardError> {
    let ns = std::fs::File::open(netns).map_err(|source| ForwardError::Namespace {
        path: netns.to_path_buf(),
        source,
    })?;
    let (tx, rx) = std::sync::mpsc::channel::<ConnectReply>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let path = netns.to_path_buf();
    std::thread::spawn(move || {
        if let Err(source) = setns(ns.as_fd(), CloneFlags::CLONE_NEWNET) {
            let _ = ready_tx.send(Err(ForwardError::Setns { path, source }));
            return;
        }
        let _ = ready_tx.send(Ok(()));
        // ends when the forwarder (every sender) is gone
        while let Ok(reply) = rx.recv() {
            let mut found = None;
            for i in order(targets.len(), preferred.load(Ordering::Relaxed)) {
                if let Ok(s) = std::net::TcpStream::connect_timeout(&targets[i], CONNECT_TIMEOUT) {
                    preferred.store(i, Ordering::Relaxed);
                    found = Some(s);
                    break;
                }
            }
            let _ = reply.send(found);
        }
    });
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(tx),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ForwardError::ThreadGone(netns.to_path_buf())),
    }
}

impl Connector {
    /// The first of `targets` that accepts (each tried for [`CONNECT_TIMEOUT`]), starting with
    /// the one that worked last.
    async fn connect(
        &self,
        targets: &[SocketAddr],
        preferred: &AtomicUsize,
    ) -> Option<tokio::net::TcpStream> {
        match self {
            Connector::Host => {
                for i in order(targets.len(), preferred.load(Ordering::Relaxed)) {
                    let c = tokio::net::TcpStream::connect(targets[i]);
                    if let Ok(Ok(s)) = tokio::time::timeout(CONNECT_TIMEOUT, c).await {
                        preferred.store(i, Ordering::Relaxed);
                        return Some(s);
                    }
                }
                None
            }
            Connector::Netns(tx) => {
                let (reply, answer) = oneshot::channel();
                tx.send(reply).ok()?;
                let s = answer.await.ok()??;
                s.set_nonblocking(true).ok()?;
                tokio::net::TcpStream::from_std(s).ok()
            }
        }
    }
}

impl Forwarder {
    /// Listens on `listen` inside the network namespace `netns` (port 0: any free port, see
    /// [`Forwarder::local_addr`]) and forwards every connection to the first of `targets` (host
    /// network namespace) that accepts, starting with the one that worked last; when none does,
    /// the client's connection is closed.
    pub async fn start(
        netns: &Path,
        listen: SocketAddr,
        targets: Vec<SocketAddr>,
    ) -> Result<Forwarder, ForwardError> {
        Self::start_with(netns, listen, None, targets).await
    }

    /// Like [`Forwarder::start`], but the connections to `targets` are made from inside the
    /// network namespace `connect_netns` (by one thread that entered it and ends with the
    /// forwarder). With `connect_netns == netns`: a local load balancer inside a node, e.g.
    /// `127.0.0.1:6443` → every control plane's API server on the fabric.
    pub async fn start_in(
        netns: &Path,
        listen: SocketAddr,
        connect_netns: &Path,
        targets: Vec<SocketAddr>,
    ) -> Result<Forwarder, ForwardError> {
        Self::start_with(netns, listen, Some(connect_netns), targets).await
    }

    async fn start_with(
        netns: &Path,
        listen: SocketAddr,
        connect_netns: Option<&Path>,
        targets: Vec<SocketAddr>,
    ) -> Result<Forwarder, ForwardError> {
        if targets.is_empty() {
            return Err(ForwardError::NoTargets);
        }
        let preferred = Arc::new(AtomicUsize::new(0));
        let connector = match connect_netns {
            None => Connector::Host,
            Some(ns) => Connector::Netns(connector_in(ns, targets.clone(), preferred.clone())?),
        };
        let std_listener = bind_in(netns, listen).await?;
        let listen_err = |source| ForwardError::Listen {
            addr: listen,
            netns: netns.to_path_buf(),
            source,
        };
        let local = std_listener.local_addr().map_err(listen_err)?;
        let listener = tokio::net::TcpListener::from_std(std_listener).map_err(listen_err)?;
        let to = Arc::new(targets.clone());
        let task = tokio::spawn(async move {
            // Connections live in this set: dropping the task (abort) drops and closes them all,
            // and the connector (thread) with them.
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((mut client, _)) = accepted else {
                            // e.g. EMFILE: back off instead of spinning
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        };
                        let (to, connector, preferred) = (to.clone(), connector.clone(), preferred.clone());
                        conns.spawn(async move {
                            if let Some(mut upstream) = connector.connect(&to, &preferred).await {
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

    /// The targets, in the order given.
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
