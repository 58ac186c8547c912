//! Well-known identifiers that the node daemon and the CLI must spell the same way.

/// Data-key ID of the measurement secret (as the Go JoinService asks the KeyService).
pub const MEASUREMENT_SECRET_ID: &str = "measurementSecret";

/// User data a node binds into its `verify` attestation (the CLI requires it).
pub const VERIFY_USER_DATA: &[u8] = b"VerifyService";
/// Longest nonce a node accepts for `verify`.
pub const MAX_NONCE_LEN: usize = 64;

/// `admitted_by` of a node that the owner brought back with `constellation recover`.
pub const RECOVERED_BY: &str = "recover";

/// Names of `control_plane_files` in a join ticket.
pub mod ticket {
    /// The cluster CA certificate (every joiner).
    pub const CA_CERT: &str = "ca.crt";
    /// The cluster CA key (control planes only).
    pub const CA_KEY: &str = "ca.key";
    /// The control-plane CA (certificate and key), only in control-plane tickets.
    pub const CP_CA_CERT: &str = "cp-ca.crt";
    pub const CP_CA_KEY: &str = "cp-ca.key";
    /// `--initial-cluster` of the joiner's etcd member.
    pub const ETCD_INITIAL_CLUSTER: &str = "etcd/initial-cluster";
}

/// Component names of the node image manifest (measured into PCR 11, run from the measured
/// copies).
pub const COMPONENT_ETCD: &str = "etcd";

/// The container images (OCI archives) a Kubernetes node image bundles and every node imports:
/// the sandbox (pause), the workload image (busybox) and CoreDNS. No registry is reachable.
pub const COMPONENT_IMAGE_ARCHIVES: &[&str] =
    &["image-pause.tar", "image-busybox.tar", "image-coredns.tar"];
