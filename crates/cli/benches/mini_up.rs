//! Benchmark of `constellation mini up` (infrastructure, init, join) on the local provider: wall
//! time, the per-phase breakdown, the CLI's peak memory and every node process's peak memory.
//!
//! Not a criterion benchmark: one `mini up` starts processes and takes ~1 s, so it runs a few
//! times (`MINI_UP_RUNS`, default 5, after one warm-up run that is not counted), each in a fresh
//! temporary workspace with a random loopback base address, and prints median/min/max.
//!
//! ```sh
//! cargo build --release --bins          # target/release/constellation-node must be current
//! cargo bench -p cli --bench mini_up    # runs target/release/constellation
//! ```
//!
//! Measured per run:
//! * wall time of the `constellation mini up` process (spawn to exit; the config exists, so this
//!   is `apply`: infrastructure, init, join), and of `config generate local` (offline image
//!   measurement) and `terminate -y` separately;
//! * the phases the CLI prints (`infrastructure: X s`, `init: Y s`) and, from its timestamped
//!   progress lines, the steps inside them;
//! * the CLI's peak RSS: `getrusage(RUSAGE_CHILDREN)` of a helper process (this binary
//!   re-executed) whose only child is the CLI (so it covers the CLI and the short-lived
//!   processes the CLI waits for, i.e. swtpm's foreground start-up process);
//! * per node, right after `mini up` returned: VmHWM (peak RSS) from `/proc/<pid>/status` of the
//!   node process (launcher, then Bootstrapper: the same pid), its swtpm and its etcd.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a failure is fatal

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../tests/support/mod.rs"]
mod support;

use support::random_base;

const BIN: &str = env!("CARGO_BIN_EXE_constellation");
const RUNNER: &str = "__mini_up_bench_runner";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(RUNNER) {
        runner(&args[2..]);
        return;
    }
    let runs: usize = std::env::var("MINI_UP_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let bin = Path::new(BIN);
    let node = bin.with_file_name("constellation-node");
    assert!(
        node.is_file(),
        "{} is missing: run `cargo build --release --bins` first",
        node.display()
    );
    let age = |p: &Path| {
        std::fs::metadata(p)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .map(|d| format!("{} s ago", d.as_secs()))
            .unwrap_or_default()
    };
    eprintln!("constellation:      {} (built {})", bin.display(), age(bin));
    eprintln!(
        "constellation-node: {} (built {})",
        node.display(),
        age(&node)
    );
    eprintln!("runs: {runs} (+1 warm-up)");

    let mut samples = vec![];
    for i in 0..=runs {
        let s = one_run();
        eprintln!(
            "run {i}{}: mini up {:.0} ms (infrastructure {:.0} ms, init {:.0} ms), CLI max RSS {:.1} MiB",
            if i == 0 { " (warm-up)" } else { "" },
            s.wall_ms,
            s.phase("infrastructure"),
            s.phase("init"),
            s.cli_maxrss_kb as f64 / 1024.0
        );
        if i > 0 {
            samples.push(s);
        }
    }
    report(&samples);
}

/// Runs the CLI as its only child and reports wall time and peak RSS of its children.
fn runner(args: &[String]) {
    let t = Instant::now();
    let status = Command::new(BIN).args(args).status().unwrap();
    let wall = t.elapsed();
    let ru = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).unwrap();
    println!(
        "{RUNNER} wall_us={} maxrss_kb={} ok={}",
        wall.as_micros(),
        ru.max_rss(),
        status.success()
    );
}

/// (name, ms) pairs.
type Timings = Vec<(String, f64)>;

#[derive(Debug, Clone, Default)]
struct Sample {
    generate_ms: f64,
    wall_ms: f64,
    terminate_ms: f64,
    cli_maxrss_kb: u64,
    /// The CLI's phases (`infrastructure: X s` lines), in output order: (name, ms).
    phases: Vec<(String, f64)>,
    /// Steps inside the phases, from the timestamped progress lines: (name, ms).
    steps: Vec<(String, f64)>,
    /// (node, process kind, VmHWM kB)
    node_mem: Vec<(String, String, u64)>,
}

impl Sample {
    fn phase(&self, name: &str) -> f64 {
        self.phases
            .iter()
            .chain(&self.steps)
            .find(|(n, _)| n == name)
            .map(|p| p.1)
            .unwrap_or(f64::NAN)
    }
}

/// A workspace whose cluster is terminated (and leftovers killed) on drop.
struct Ws(tempfile::TempDir);

impl Drop for Ws {
    fn drop(&mut self) {
        if self.0.path().join("constellation-local").exists() {
            let _ = cli(self.0.path(), &["terminate", "-y"]).output();
        }
        let needle = format!("{}/", self.0.path().display());
        for (pid, cmd) in all_procs() {
            if cmd.contains(&needle) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

fn cli(ws: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.arg("-C").arg(ws).args(args).env_remove("RUST_LOG");
    c
}

fn run_ok(ws: &Path, args: &[&str]) -> Duration {
    let t = Instant::now();
    let o = cli(ws, args).output().unwrap();
    let d = t.elapsed();
    assert!(
        o.status.success(),
        "constellation {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    d
}

/// `MINI_UP_CONTROL_PLANES` and `MINI_UP_WORKERS` (default 1 and 1: the default cluster).
fn counts() -> (u32, u32) {
    let get = |k: &str| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1)
    };
    (get("MINI_UP_CONTROL_PLANES"), get("MINI_UP_WORKERS"))
}

fn one_run() -> Sample {
    let ws = Ws(tempfile::Builder::new()
        .prefix("mini-bench-")
        .tempdir()
        .unwrap());
    let dir = ws.0.path().to_path_buf();
    let mut s = Sample {
        generate_ms: run_ok(&dir, &["config", "generate", "local"]).as_secs_f64() * 1e3,
        ..Default::default()
    };
    let conf = dir.join("constellation-conf.yaml");
    let text = std::fs::read_to_string(&conf).unwrap();
    let base = random_base();
    // Node counts: the control-plane group comes first in the generated file.
    let (cps, workers) = counts();
    let mut counts = [cps, workers].into_iter();
    let text: Vec<String> = text
        .lines()
        .map(|l| {
            let indent = &l[..l.len() - l.trim_start().len()];
            if l.trim_start().starts_with("baseAddress:") {
                format!("{indent}baseAddress: \"{base}\"")
            } else if l.trim_start().starts_with("initialCount:") {
                format!("{indent}initialCount: {}", counts.next().unwrap_or(1))
            } else {
                l.to_string()
            }
        })
        .collect();
    std::fs::write(&conf, text.join("\n") + "\n").unwrap();

    // mini up through the runner (its only child is the CLI).
    let o = Command::new(std::env::current_exe().unwrap())
        .arg(RUNNER)
        .arg("-C")
        .arg(&dir)
        .args(["mini", "up"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let summary = out
        .lines()
        .find(|l| l.starts_with(RUNNER))
        .unwrap_or_else(|| panic!("runner printed no summary:\n{out}{err}"));
    let field = |k: &str| -> String {
        summary
            .split_whitespace()
            .find_map(|f| f.strip_prefix(&format!("{k}=")).map(String::from))
            .unwrap()
    };
    assert_eq!(field("ok"), "true", "mini up failed:\n{out}{err}");
    s.wall_ms = field("wall_us").parse::<f64>().unwrap() / 1e3;
    s.cli_maxrss_kb = field("maxrss_kb").parse().unwrap();
    (s.phases, s.steps) = phases(&err);

    // Peak memory of every node process, right after mini up.
    s.node_mem = node_memory(&dir);

    s.terminate_ms = run_ok(&dir, &["terminate", "-y"]).as_secs_f64() * 1e3;
    s
}

/// `infrastructure: X s` / `init: Y s` / … lines, and steps from `[ t.tts] message` lines.
fn phases(stderr: &str) -> (Timings, Timings) {
    let mut out = vec![];
    let mut steps = vec![];
    let mut marks: Vec<(f64, String)> = vec![];
    for l in stderr.lines() {
        if let Some(rest) = l.strip_prefix('[') {
            if let Some((t, msg)) = rest.split_once("s] ") {
                if let Ok(t) = t.trim().parse::<f64>() {
                    marks.push((t * 1e3, msg.to_string()));
                }
            }
        } else if let Some((name, v)) = l.split_once(": ") {
            if let Some(secs) = v.strip_suffix(" s").and_then(|v| v.parse::<f64>().ok()) {
                out.push((name.to_string(), secs * 1e3));
            }
        }
    }
    let first = |p: &str| marks.iter().find(|(_, m)| m.contains(p)).map(|m| m.0);
    let last = |p: &str| marks.iter().rev().find(|(_, m)| m.contains(p)).map(|m| m.0);
    let defs = [
        (
            "infrastructure: image build, init-secret hash, plan",
            first("infrastructure: creating nodes"),
            last("infrastructure: planned node"),
        ),
        (
            "infrastructure: swtpm start + AK read (all nodes)",
            last("infrastructure: planned node"),
            last(" ready ("),
        ),
        (
            "infrastructure: node processes spawned",
            last(" ready ("),
            last("infrastructure: started "),
        ),
        (
            "init: master secret written",
            last("infrastructure: started "),
            first("init: connecting"),
        ),
        (
            "init: node boot (measure) + aTLS + attestation",
            first("init: connecting"),
            first("init: node attestation verified"),
        ),
        (
            "init: Init RPC (PCR 15, CA, etcd, KeyService)",
            first("init: node attestation verified"),
            first("init: cluster initialized"),
        ),
    ];
    for (name, a, b) in defs {
        if let (Some(a), Some(b)) = (a, b) {
            steps.push((name.to_string(), b - a));
        }
    }
    (out, steps)
}

fn all_procs() -> Vec<(u32, String)> {
    let mut out = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            out.push((pid, String::from_utf8_lossy(&raw).replace('\0', " ")));
        }
    }
    out
}

fn ppid(pid: u32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s[s.rfind(')')? + 2..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn vm_hwm_kb(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

fn node_memory(ws: &Path) -> Vec<(String, String, u64)> {
    let cloud: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ws.join("constellation-local/cloud.json")).unwrap())
            .unwrap();
    let procs = all_procs();
    let mut out = vec![];
    for n in cloud["nodes"].as_array().unwrap() {
        let name = n["name"].as_str().unwrap().to_string();
        let pid = |k: &str| n[k]["pid"].as_u64().map(|p| p as u32);
        if let Some(p) = pid("process") {
            out.push((
                name.clone(),
                "bootstrapper".into(),
                vm_hwm_kb(p).unwrap_or(0),
            ));
            for (c, cmd) in &procs {
                if ppid(*c) == Some(p) {
                    let first = cmd.split_whitespace().next().unwrap_or("?");
                    let kind = Path::new(first)
                        .file_name()
                        .map(|f| f.to_string_lossy().into_owned())
                        .unwrap_or_else(|| first.to_string());
                    out.push((name.clone(), kind, vm_hwm_kb(*c).unwrap_or(0)));
                }
            }
        }
        if let Some(p) = pid("swtpm") {
            out.push((name.clone(), "swtpm".into(), vm_hwm_kb(p).unwrap_or(0)));
        }
    }
    out
}

fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let med = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    (med, v[0], v[n - 1])
}

fn report(samples: &[Sample]) {
    let row = |name: &str, v: Vec<f64>, unit: &str, digits: usize| {
        let (med, min, max) = stats(v);
        println!("| {name} | {med:.digits$} | {min:.digits$} | {max:.digits$} | {unit} |");
    };
    println!();
    let (cps, workers) = counts();
    println!(
        "`constellation mini up`, {cps} control-plane + {workers} worker nodes, {} runs:",
        samples.len()
    );
    println!();
    println!("| measure | median | min | max | unit |");
    println!("|---|---:|---:|---:|---|");
    row(
        "**mini up wall time** (process spawn to exit)",
        samples.iter().map(|s| s.wall_ms).collect(),
        "ms",
        0,
    );
    row(
        "infrastructure + init (the CLI's phase timings)",
        samples
            .iter()
            .map(|s| s.phase("infrastructure") + s.phase("init"))
            .collect(),
        "ms",
        0,
    );
    for name in samples[0].phases.iter().map(|p| &p.0) {
        row(
            &format!("phase `{name}`"),
            samples.iter().map(|s| s.phase(name)).collect(),
            "ms",
            0,
        );
        for step in samples[0].steps.iter().map(|p| &p.0) {
            if step.starts_with(&format!("{name}:")) {
                row(
                    &format!("  ↳ {step}"),
                    samples.iter().map(|s| s.phase(step)).collect(),
                    "ms",
                    0,
                );
            }
        }
    }
    row(
        "CLI start-up, config load, output (wall − all phases)",
        samples
            .iter()
            .map(|s| s.wall_ms - s.phases.iter().map(|p| p.1).sum::<f64>())
            .collect(),
        "ms",
        0,
    );
    row(
        "`config generate local` (offline image measurement)",
        samples.iter().map(|s| s.generate_ms).collect(),
        "ms",
        0,
    );
    row(
        "`terminate -y`",
        samples.iter().map(|s| s.terminate_ms).collect(),
        "ms",
        0,
    );
    row(
        "**CLI peak RSS** (getrusage RUSAGE_CHILDREN)",
        samples
            .iter()
            .map(|s| s.cli_maxrss_kb as f64 / 1024.0)
            .collect(),
        "MiB",
        1,
    );
    let mut keys: Vec<(String, String)> = samples[0]
        .node_mem
        .iter()
        .map(|(n, k, _)| (n.clone(), k.clone()))
        .collect();
    keys.dedup();
    for (node, kind) in &keys {
        row(
            &format!("{node} `{kind}` peak RSS (VmHWM)"),
            samples
                .iter()
                .map(|s| {
                    s.node_mem
                        .iter()
                        .find(|(n, k, _)| n == node && k == kind)
                        .map(|m| m.2 as f64 / 1024.0)
                        .unwrap_or(f64::NAN)
                })
                .collect(),
            "MiB",
            1,
        );
    }
    let mut nodes: Vec<String> = keys.iter().map(|k| k.0.clone()).collect();
    nodes.dedup();
    for node in &nodes {
        row(
            &format!("{node} total (sum of its processes' VmHWM)"),
            samples
                .iter()
                .map(|s| {
                    s.node_mem
                        .iter()
                        .filter(|(n, _, _)| n == node)
                        .map(|m| m.2 as f64 / 1024.0)
                        .sum()
                })
                .collect(),
            "MiB",
            1,
        );
    }
}
