//! The cluster's shared vocabulary, used by the node daemon, the CLI and the providers alike:
//! node [`Role`]s, the well-known [`ports`], and the one authorisation table ([`authz`]) that
//! says which caller may use which service, and how it proves who it is.
//!
//! Synchronous and free of I/O: plain data and lookups. The services consult [`authz`] (the
//! KeyService and etcd pick the client CA they trust from it; the JoinService checks a
//! joiner's role against it); `ARCHITECTURE.md` shows the same table, rendered by
//! [`authz::markdown`] and checked by a test.

#![forbid(unsafe_code)]

pub mod admin;
pub mod authz;
pub mod env;
pub mod ids;
pub mod inventory;
pub mod ports;
pub mod report;
mod serde_fmt;
pub mod state;

pub(crate) use serde_fmt::{serde_b64, serde_hex};

use serde::{Deserialize, Serialize};

/// A node's role. Serialised as `ControlPlane`/`Worker` (serde: the provider's state file and
/// the node state, as in the Go system's `role.Role`); [`Role::as_str`] is the spelling of
/// names, etcd registry entries and messages (`control-plane`, `worker`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    ControlPlane,
    Worker,
}

impl Role {
    pub const ALL: [Role; 2] = [Role::ControlPlane, Role::Worker];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::ControlPlane => "control-plane",
            Role::Worker => "worker",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role spelling that is neither `control-plane`/`ControlPlane` nor `worker`/`Worker`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown node role {0:?} (expected control-plane or worker)")]
pub struct UnknownRole(pub String);

impl std::str::FromStr for Role {
    type Err = UnknownRole;
    /// Accepts both spellings (`control-plane` and `ControlPlane`, `worker` and `Worker`).
    fn from_str(s: &str) -> Result<Self, UnknownRole> {
        match s {
            "control-plane" | "ControlPlane" => Ok(Role::ControlPlane),
            "worker" | "Worker" => Ok(Role::Worker),
            other => Err(UnknownRole(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_spellings_round_trip() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
            let json = format!("{r:?}");
            assert_eq!(json.parse::<Role>(), Ok(r));
        }
        assert_eq!(
            "master".parse::<Role>(),
            Err(UnknownRole("master".to_string()))
        );
    }
}
