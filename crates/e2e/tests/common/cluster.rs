//! A local cluster for tests and benchmarks: a `local` config with the measurements of the
//! node image this build makes, on a random loopback range, and a guard that terminates the
//! cluster when it goes out of scope (also on panic). Shared by `tests/*.rs` and
//! `benches/join.rs` (`#[path]` module).

use std::net::Ipv4Addr;
use std::path::Path;

use attestation::Variant;
use config::Provider;
use provider_local::provider::default_measurements as local_default_measurements;

/// A random 127.x.y.1 with x in `lo..lo + span`, so that concurrent tests and other clusters do
/// not share addresses (each test binary uses its own `lo`).
pub fn random_base(lo: u8, span: u8) -> Ipv4Addr {
    let r = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        ^ std::process::id().rotate_left(16);
    Ipv4Addr::new(127, lo + (r % u32::from(span)) as u8, (r >> 8) as u8, 1)
}

/// Writes `constellation-conf.yaml` for one control-plane node and `workers` workers at `base`.
pub fn write_local_config(ws: &Path, workers: u32, base: Ipv4Addr) -> config::Config {
    let m = local_default_measurements(Variant::LocalVtpm, false)
        .expect("constellation-node must be built (cargo build -p node)");
    let mut raw =
        config::Config::generate(Provider::Local, None, None, Default::default(), Some(m)).unwrap();
    raw.provider.local.as_mut().unwrap().base_address = base;
    raw.node_groups
        .get_mut("worker_default")
        .unwrap()
        .initial_count = workers;
    let text = raw.to_yaml();
    std::fs::write(ws.join(cloudcmd::CONFIG_FILE), &text).unwrap();
    config::Config::from_yaml(&text).unwrap()
}

/// Terminates the cluster of a workspace when dropped.
pub struct Cleanup<'a>(pub &'a Path);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = cloudcmd::terminate(
            &provider_local::workspace_without_kubernetes(self.0),
            &mut |_: &str| {},
        );
    }
}
