//! Kubernetes node runtime for the local provider's process-tree nodes.
//!
//! * [`net`]: a cluster's fabric network namespace (one bridge) and per node a persistent network
//!   namespace (veth into the bridge, a non-loopback address, routes to every other node's pod CIDR)
//!   plus a persistent mount namespace with a private `/run`. Nothing is added to the host's own
//!   network namespace.
//! * [`host`]: host-wide state a node touches (sysctls recorded and restored, processes found by
//!   namespace, cgroup trees).
//! * [`image`]: OCI image-layout tars written in Rust (pause, busybox) with reproducible digests.
//! * [`runtime`]: one containerd per node, started inside the node's namespaces.
//!
//! Everything that needs root reports it through the error types; nothing here panics on input.

pub mod cmd;
pub mod control_plane;
pub mod endpoint;
pub mod forward;
pub mod host;
pub mod image;
pub mod join;
pub mod net;
pub mod node;
pub mod process;
pub mod runtime;

pub use cmd::CommandError;
