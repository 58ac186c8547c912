//! The authorisation table: which caller may use which node service, and what proves it.
//!
//! | principle | how |
//! |---|---|
//! | workers reach nothing secret-bearing | etcd and the KeyService trust only the control-plane CA, whose certificates only control planes and the owner's admin credentials hold |
//! | a node proves its state before it gets anything | Join/Rejoin: the joiner attests (aTLS client); the JoinService checks its role against the provider's record |
//! | the owner sends secrets only to an attested node | Init/Recovery: the node attests (aTLS server) before the CLI sends the init secret or the master secret |
//!
//! Role-bearing identities by a separate CA rather than an EKU/OU per role: etcd can only
//! restrict clients by the CA it trusts (without etcd's own user/role auth), and a certificate
//! from the cluster CA, which every node holds, can then never be a control-plane identity,
//! whatever its extensions say; a worker's certificate keeps client auth for the day a
//! Kubernetes API server needs it.

use crate::{ports, Role};

/// A node service (or, for [`Service::AdminCredentials`], what the owner receives).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    Init,
    Join,
    Rejoin,
    KeyService,
    EtcdClient,
    EtcdPeer,
    Recovery,
    Verify,
    /// The admin credentials (`constellation-admin.conf`), issued by Init.
    AdminCredentials,
}

impl Service {
    pub const ALL: [Service; 9] = [
        Service::Init,
        Service::Join,
        Service::Rejoin,
        Service::KeyService,
        Service::EtcdClient,
        Service::EtcdPeer,
        Service::Recovery,
        Service::Verify,
        Service::AdminCredentials,
    ];
}

/// Who calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Caller {
    /// The cluster owner: the CLI with the init secret, the master secret or the admin
    /// credentials.
    Owner,
    /// A control-plane node (its control-plane certificate, or its attestation).
    ControlPlane,
    /// A worker node (its cluster certificate, or its attestation).
    Worker,
    /// Anyone who can reach the port.
    Anyone,
}

impl From<Role> for Caller {
    fn from(r: Role) -> Self {
        match r {
            Role::ControlPlane => Caller::ControlPlane,
            Role::Worker => Caller::Worker,
        }
    }
}

/// Which CA a TLS client certificate must come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCa {
    /// Signs control-plane nodes' certificates and the owner's admin certificate only.
    ControlPlane,
    /// Signs every node's certificate.
    Cluster,
}

/// How a caller proves who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// The node attests to the caller (aTLS server), and the caller proves a secret in the
    /// request.
    NodeAttestsCallerKnows(&'static str),
    /// The caller attests (aTLS client): its AK must be recorded by the provider for a node of
    /// this role, its PCRs must match the join policy.
    CallerAttests(&'static str),
    /// TLS client certificate from this CA.
    ClientCert(ClientCa),
    /// Nothing: what is served protects itself.
    None(&'static str),
}

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub service: Service,
    /// `None` for what is no network service.
    pub port: Option<u16>,
    pub callers: &'static [Caller],
    pub proof: Proof,
}

/// The table. Every service has exactly one row.
pub const TABLE: &[Rule] = &[
    Rule {
        service: Service::Init,
        port: Some(ports::INIT),
        callers: &[Caller::Owner],
        proof: Proof::NodeAttestsCallerKnows(
            "init secret (bcrypt hash in the provider's metadata)",
        ),
    },
    Rule {
        service: Service::Join,
        port: Some(ports::JOIN),
        callers: &[Caller::ControlPlane, Caller::Worker],
        proof: Proof::CallerAttests(
            "provider-recorded AK of a node with this role, join-policy PCRs, PCR 15 zero",
        ),
    },
    Rule {
        service: Service::Rejoin,
        port: Some(ports::JOIN),
        callers: &[Caller::ControlPlane, Caller::Worker],
        proof: Proof::CallerAttests(
            "as Join, plus the registry's entry for this node, disk and AK",
        ),
    },
    Rule {
        service: Service::KeyService,
        port: Some(ports::KEYSERVICE),
        callers: &[Caller::ControlPlane, Caller::Owner],
        proof: Proof::ClientCert(ClientCa::ControlPlane),
    },
    Rule {
        service: Service::EtcdClient,
        port: Some(ports::ETCD_CLIENT),
        callers: &[Caller::ControlPlane, Caller::Owner],
        proof: Proof::ClientCert(ClientCa::ControlPlane),
    },
    Rule {
        service: Service::EtcdPeer,
        port: Some(ports::ETCD_PEER),
        callers: &[Caller::ControlPlane],
        proof: Proof::ClientCert(ClientCa::ControlPlane),
    },
    Rule {
        service: Service::Recovery,
        port: Some(ports::RECOVERY),
        callers: &[Caller::Owner],
        proof: Proof::NodeAttestsCallerKnows("master secret (the node checks it against its disk)"),
    },
    Rule {
        service: Service::Verify,
        port: Some(ports::VERIFY),
        callers: &[Caller::Anyone],
        proof: Proof::None("nothing secret; a fresh document bound to the caller's nonce"),
    },
    Rule {
        service: Service::AdminCredentials,
        port: None,
        callers: &[Caller::Owner],
        proof: Proof::NodeAttestsCallerKnows(
            "returned by Init; certificate from the control-plane CA",
        ),
    },
];

/// The row of `service`.
pub fn rule(service: Service) -> &'static Rule {
    // Every service has a row (tested); the first row is a harmless fallback that allows only
    // the owner, never reached.
    TABLE
        .iter()
        .find(|r| r.service == service)
        .unwrap_or(&TABLE[0])
}

/// May `caller` use `service`?
pub fn allows(service: Service, caller: Caller) -> bool {
    let callers = rule(service).callers;
    callers.contains(&caller) || callers.contains(&Caller::Anyone)
}

/// The CA a TLS client certificate for `service` must come from, if it takes certificates.
pub fn client_ca(service: Service) -> Option<ClientCa> {
    match rule(service).proof {
        Proof::ClientCert(ca) => Some(ca),
        _ => None,
    }
}

/// The table as Markdown (as in `ARCHITECTURE.md`).
pub fn markdown() -> String {
    let mut out = String::from("| service | port | who may call | proof |\n|---|---|---|---|\n");
    for r in TABLE {
        let port = r.port.map_or("—".to_string(), |p| p.to_string());
        let callers: Vec<String> = r.callers.iter().map(|c| format!("{c:?}")).collect();
        let proof = match r.proof {
            Proof::NodeAttestsCallerKnows(what) => {
                format!("node attests; caller proves the {what}")
            }
            Proof::CallerAttests(what) => format!("caller attests: {what}"),
            Proof::ClientCert(ClientCa::ControlPlane) => {
                "client certificate from the control-plane CA".to_string()
            }
            Proof::ClientCert(ClientCa::Cluster) => {
                "client certificate from the cluster CA".to_string()
            }
            Proof::None(why) => format!("none: {why}"),
        };
        out += &format!(
            "| {:?} | {port} | {} | {proof} |\n",
            r.service,
            callers.join(", ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_service_has_exactly_one_rule() {
        for s in Service::ALL {
            assert_eq!(TABLE.iter().filter(|r| r.service == s).count(), 1, "{s:?}");
        }
        assert_eq!(TABLE.len(), Service::ALL.len());
    }

    #[test]
    fn walk_the_table() {
        use Caller::*;
        use Service::*;
        let expect = [
            (Init, [true, false, false]),
            (Join, [false, true, true]),
            (Rejoin, [false, true, true]),
            (KeyService, [true, true, false]),
            (EtcdClient, [true, true, false]),
            (EtcdPeer, [false, true, false]),
            (Recovery, [true, false, false]),
            (Verify, [true, true, true]),
            (AdminCredentials, [true, false, false]),
        ];
        for (service, [owner, cp, worker]) in expect {
            assert_eq!(allows(service, Owner), owner, "{service:?} owner");
            assert_eq!(
                allows(service, ControlPlane),
                cp,
                "{service:?} control plane"
            );
            assert_eq!(allows(service, Worker), worker, "{service:?} worker");
        }
    }

    #[test]
    fn workers_and_strangers_reach_nothing_secret() {
        for s in [Service::KeyService, Service::EtcdClient, Service::EtcdPeer] {
            assert!(!allows(s, Caller::Worker), "{s:?}");
            assert!(!rule(s).callers.contains(&Caller::Anyone), "{s:?}");
            assert_eq!(client_ca(s), Some(ClientCa::ControlPlane), "{s:?}");
        }
        // Only the verification service is open, and it serves nothing secret.
        for r in TABLE {
            if r.callers.contains(&Caller::Anyone) {
                assert_eq!(r.service, Service::Verify);
            }
        }
    }

    #[test]
    fn ports_are_distinct_except_join_and_rejoin() {
        let mut seen = std::collections::BTreeMap::new();
        for r in TABLE {
            if let Some(p) = r.port {
                if let Some(prev) = seen.insert(p, r.service) {
                    assert_eq!((prev, r.service), (Service::Join, Service::Rejoin));
                }
            }
        }
    }

    #[test]
    fn architecture_md_shows_this_table() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../ARCHITECTURE.md");
        let doc = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            doc.contains(&markdown()),
            "ARCHITECTURE.md must contain the authorisation table exactly as rendered:\n{}",
            markdown()
        );
    }
}
