//! Helpers shared by the CLI's end-to-end tests (`tests/*.rs`: `mod support;`) and benchmarks
//! (`benches/*.rs`: `#[path]` module): a free loopback range for a cluster, the local cloud's
//! process records, and liveness that counts a zombie as dead (this machine's PID 1 does not
//! reap).

#![allow(dead_code)] // every includer uses a subset

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::Path;

/// Ports a node binds on its own address (swtpm command + control, Init, KeyService,
/// JoinService, etcd client + peer, verification service, recovery).
pub const NODE_PORTS: [u16; 9] = [2321, 2322, 9000, 9001, 30090, 2379, 2380, 30081, 9999];

/// 64 random bits without a dependency: `RandomState` is seeded from the OS.
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// A random 127.x.y.1 (x in 100..=249) whose first eight node addresses have every node port
/// free, so that concurrent tests and other clusters never share addresses.
pub fn random_base() -> Ipv4Addr {
    for _ in 0..50 {
        let r = random_u64();
        let base = Ipv4Addr::new(127, 100 + (r % 150) as u8, (r >> 8) as u8, 1);
        let free = (0..8u32).all(|i| {
            let a = Ipv4Addr::from(u32::from(base) + i);
            NODE_PORTS
                .iter()
                .all(|p| TcpListener::bind(SocketAddrV4::new(a, *p)).is_ok())
        });
        if free {
            return base;
        }
    }
    panic!("no free loopback base address found");
}

/// Running and not a zombie.
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.trim_start().to_string()))
        .is_some_and(|r| !r.starts_with('Z') && !r.starts_with('X'))
}

/// The local cloud's record of one node (`constellation-local/cloud.json`).
#[derive(Debug, Clone)]
pub struct NodePids {
    pub name: String,
    pub control_plane: bool,
    /// The node's process (launcher, then Bootstrapper; also its process group).
    pub process: u32,
    pub swtpm: u32,
}

/// Every node's process and TPM as the local cloud recorded them.
pub fn node_pids(ws: &Path) -> Vec<NodePids> {
    let c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ws.join("constellation-local/cloud.json")).unwrap())
            .unwrap();
    c["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| NodePids {
            name: n["name"].as_str().unwrap().to_string(),
            control_plane: n["role"] == "ControlPlane",
            process: n["process"]["pid"].as_u64().unwrap() as u32,
            swtpm: n["swtpm"]["pid"].as_u64().unwrap() as u32,
        })
        .collect()
}
