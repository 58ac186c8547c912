//! Benchmark of a full control-plane outage and `constellation recover`, next to the time it
//! took to create the same cluster from nothing (the floor a re-creation would cost, without
//! the data).
//!
//! One 3 control-plane + 1 worker cluster; then `RECOVER_RUNS` (default 10) times: `kill -9`
//! of every control-plane node's process group (node and etcd), `apply` (restarts them with
//! reset TPMs and reports that they await recovery; expected to fail), `recover` (attests each
//! node, pushes the master secret to all three at once, waits until all 4 nodes are members).
//!
//! ```sh
//! cargo build --release --bins
//! cargo bench -p cli --bench recover
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a failure is fatal

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

#[path = "../tests/support/mod.rs"]
mod support;

const BIN: &str = env!("CARGO_BIN_EXE_constellation");

fn cli(ws: &Path, args: &[&str]) -> (Output, Duration) {
    let t = Instant::now();
    let o = Command::new(BIN)
        .env("CONSTELLATION_KUBERNETES", "off")
        .arg("-C")
        .arg(ws)
        .args(args)
        .output()
        .unwrap();
    (o, t.elapsed())
}

fn ok(ws: &Path, args: &[&str]) -> Duration {
    let (o, d) = cli(ws, args);
    assert!(
        o.status.success(),
        "constellation {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    d
}

fn median_ms(mut v: Vec<Duration>) -> (f64, f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (ms(v[v.len() / 2]), ms(v[0]), ms(v[v.len() - 1]))
}

fn main() {
    let runs: usize = std::env::var("RECOVER_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let t = tempfile::tempdir().unwrap();
    let ws = t.path();
    ok(ws, &["config", "generate", "local"]);
    let path = ws.join("constellation-conf.yaml");
    let base = support::random_base();
    let text = std::fs::read_to_string(&path).unwrap();
    let mut counts = ["3", "1"].into_iter();
    let edited: Vec<String> = text
        .lines()
        .map(|l| {
            let indent = &l[..l.len() - l.trim_start().len()];
            if l.trim_start().starts_with("initialCount:") {
                format!("{indent}initialCount: {}", counts.next().unwrap())
            } else if l.trim_start().starts_with("baseAddress:") {
                format!("{indent}baseAddress: \"{base}\"")
            } else {
                l.to_string()
            }
        })
        .collect();
    std::fs::write(&path, edited.join("\n") + "\n").unwrap();

    let create = ok(ws, &["apply"]);
    let (mut detect, mut recover) = (vec![], vec![]);
    for _ in 0..runs {
        let pids: Vec<u32> = support::node_pids(ws)
            .into_iter()
            .filter(|n| n.control_plane)
            .map(|n| n.process)
            .collect();
        assert_eq!(pids.len(), 3);
        for pid in &pids {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(*pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while pids.iter().any(|p| support::alive(*p)) {
            assert!(Instant::now() < deadline, "killed nodes do not end");
            std::thread::sleep(Duration::from_millis(5));
        }
        let (o, d) = cli(ws, &["apply"]);
        assert!(!o.status.success(), "apply did not report the outage");
        assert!(String::from_utf8_lossy(&o.stderr).contains("constellation recover"));
        detect.push(d);
        recover.push(ok(ws, &["recover"]));
    }
    let _ = cli(ws, &["terminate", "-y"]);

    let (c, _, _) = median_ms(vec![create]);
    let (dm, dmin, dmax) = median_ms(detect);
    let (rm, rmin, rmax) = median_ms(recover);
    println!(
        "full control-plane outage, 3 control planes + 1 worker, {runs} runs (median, min-max):"
    );
    println!("  create the cluster from nothing (apply, once):        {c:.0} ms");
    println!(
        "  apply after the outage (restart, report):            {dm:.0} ms ({dmin:.0}-{dmax:.0})"
    );
    println!(
        "  recover (attest 3 nodes, push keys, all 4 members):  {rm:.0} ms ({rmin:.0}-{rmax:.0})"
    );
    println!(
        "  outage to working cluster (apply + recover) / create: {:.2}x",
        (dm + rm) / c
    );
}
