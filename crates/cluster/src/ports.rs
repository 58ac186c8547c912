//! Well-known ports. Every node has its own address (on the local provider: its own loopback
//! address), so the same ports serve every node.

/// `/init.API/Init` over aTLS (the node attests).
pub const INIT: u16 = 9000;
/// `/kms.API/GetDataKey` over mutual TLS (control-plane CA).
pub const KEYSERVICE: u16 = 9001;
/// `/recoverproto.API/Recover` over aTLS while a control plane waits for recovery.
pub const RECOVERY: u16 = 9999;
/// The JoinService over aTLS (the joiner attests).
pub const JOIN: u16 = 30090;
/// `/verify.API/GetAttestation`, plain gRPC (the documents protect themselves).
pub const VERIFY: u16 = 30081;
/// etcd's client port (mutual TLS, control-plane CA).
pub const ETCD_CLIENT: u16 = 2379;
/// etcd's peer port (mutual TLS, control-plane CA).
pub const ETCD_PEER: u16 = 2380;
/// The Kubernetes API server, on every control plane (in its node network) and on the
/// provider's host-side endpoint.
pub const KUBE_API: u16 = 6443;

/// Every port a node of `role` binds.
pub fn of(role: crate::Role) -> &'static [u16] {
    match role {
        crate::Role::ControlPlane => &[
            INIT,
            KEYSERVICE,
            JOIN,
            ETCD_CLIENT,
            ETCD_PEER,
            VERIFY,
            RECOVERY,
        ],
        crate::Role::Worker => &[INIT, VERIFY],
    }
}
