//! End-to-end tests of the `constellation` binary, run as a user would, in a temporary
//! workspace. Measurement-signing vectors come from `../shared/testvectors`; tests that need
//! them skip with a message when it is absent.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure is a test failure

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use config::{Config, Provider, CONFIG_FILE};

const BIN: &str = env!("CARGO_BIN_EXE_constellation");

fn constellation(ws: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .env("CONSTELLATION_KUBERNETES", "off")
        .arg("-C")
        .arg(ws)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run constellation")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn vectors() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/testvectors/measurements-signing");
    if p.is_dir() {
        Some(p)
    } else {
        // Written to the real stderr (not captured by the test harness): a skip must be visible.
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            format!("SKIPPED (test vectors absent): {} is absent\n", p.display()).as_bytes(),
        );
        None
    }
}

/// Writes a valid local config through the library (independent of an installed node image).
fn write_local_config(ws: &Path) -> Vec<u8> {
    let raw = Config::generate(Provider::Local, None, None, BTreeMap::new(), None).unwrap();
    raw.write_new(&ws.join(CONFIG_FILE)).unwrap();
    std::fs::read(ws.join(CONFIG_FILE)).unwrap()
}

fn config_bytes(ws: &Path) -> Vec<u8> {
    std::fs::read(ws.join(CONFIG_FILE)).unwrap()
}

/// Copies the signing vectors into `ws` (so tests can tamper with copies).
fn copy_vectors(src: &Path, ws: &Path) {
    for f in [
        "cosign.pub",
        "measurements.json",
        "measurements.json.sig",
        "not-json.txt",
        "not-json.txt.sig",
    ] {
        std::fs::copy(src.join(f), ws.join(f)).unwrap();
    }
}

fn path_str(ws: &Path, name: &str) -> String {
    ws.join(name).display().to_string()
}

#[test]
fn version_prints_build_info() {
    let d = tempfile::tempdir().unwrap();
    let o = constellation(d.path(), &["version"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for key in [
        "Version:   v",
        "GitCommit:",
        "Rustc:     rustc ",
        "Platform:  linux/",
    ] {
        assert!(out.contains(key), "{out}");
    }
}

#[test]
fn generate_then_refuse_overwrite() {
    let d = tempfile::tempdir().unwrap();
    let o = constellation(
        d.path(),
        &[
            "config", "generate", "qemu", "-k", "v1.30", "-t", "a=1,b=2", "-t", "c=3",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let path = d.path().join(CONFIG_FILE);
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let before = std::fs::read(&path).unwrap();
    let c = Config::load(&path).unwrap();
    assert_eq!(c.kubernetes_version(), "v1.30.14");
    assert_eq!(c.raw().tags.len(), 3);

    for provider in ["qemu", "aws"] {
        let o = constellation(d.path(), &["config", "generate", provider]);
        assert_eq!(o.status.code(), Some(1));
        let err = stderr(&o);
        assert!(
            err.contains("already exists; refusing to overwrite it"),
            "{err}"
        );
        assert!(err.contains("  hint: "), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), before, "config changed");
    }
}

#[test]
fn generate_rejects_bad_flags() {
    let d = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 4] = [
        (&["config", "generate", "mars"], "unknown provider \"mars\""),
        (
            &["config", "generate", "aws", "-a", "qemu-vtpm"],
            "not available on provider aws",
        ),
        (
            &["config", "generate", "qemu", "-k", "v1.20"],
            "\"v1.20\" is not supported",
        ),
        (
            &["config", "generate", "qemu", "-t", "novalue"],
            "is not key=value",
        ),
    ];
    for (args, want) in cases {
        let o = constellation(d.path(), args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
        assert!(
            !d.path().join(CONFIG_FILE).exists(),
            "{args:?} wrote a config"
        );
    }
}

#[test]
fn unknown_key_is_rejected_with_path_line_and_hint() {
    let d = tempfile::tempdir().unwrap();
    let text = String::from_utf8(write_local_config(d.path())).unwrap();
    let bad = text.replace("    baseAddress:", "    foo: 1\n    baseAddress:");
    std::fs::write(d.path().join(CONFIG_FILE), &bad).unwrap();
    let line = bad.lines().position(|l| l == "    foo: 1").unwrap() + 1;
    let o = constellation(
        d.path(),
        &[
            "config",
            "fetch-measurements",
            "--insecure",
            "-u",
            "/nonexistent",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.starts_with("Error: constellation-conf.yaml is not a valid config v4 file\n"),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "  caused by: unknown key `provider.local.foo` at line {line}, column 5"
        )),
        "{err}"
    );
    assert!(err.contains("  hint: remove the key or check its spelling; `constellation config generate local` in an empty folder shows a valid config"), "{err}");
    assert_eq!(config_bytes(d.path()), bad.as_bytes());
}

/// The Go system's layout (reference §2.2, qemu example with the v2.24.0 values) loads.
const GO_QEMU: &str = include_str!("../../config/testdata/go-qemu-v2.24.0.yaml");

/// A Go-layout config is read, updated from an (unsigned, --insecure) measurements file for
/// its provider and image, and rewritten so that it still loads with every value preserved.
#[test]
fn go_layout_config_loads_and_updates() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join(CONFIG_FILE), GO_QEMU).unwrap();
    let before = Config::from_yaml(GO_QEMU).unwrap();
    let new4 = "ab".repeat(32);
    let file = format!(
        r#"{{"version":"v2.24.0","ref":"-","stream":"stable","list":[{{"csp":"QEMU","attestationVariant":"qemu-vtpm","measurements":{{"4":{{"expected":"{new4}","warnOnly":false}},"14":{{"expected":"{}","warnOnly":true}}}}}}]}}"#,
        "00".repeat(32)
    );
    std::fs::write(d.path().join("m.json"), &file).unwrap();
    let o = constellation(
        d.path(),
        &[
            "config",
            "fetch-measurements",
            "--insecure",
            "-u",
            &path_str(d.path(), "m.json"),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("WARNING: --insecure"), "{}", stderr(&o));
    let after = Config::load(&d.path().join(CONFIG_FILE)).unwrap();
    assert_eq!(hex(&after.measurements().get(4).unwrap().expected), new4);
    assert!(after.measurements().get(14).unwrap().warn_only);
    assert_eq!(after.measurements().get(9), before.measurements().get(9));
    assert_eq!(after.measurements().len(), 8);
    let mut expected_raw = before.raw().clone();
    *expected_raw
        .measurements_mut(attestation::Variant::QemuVtpm)
        .unwrap() = after.measurements().clone();
    assert_eq!(after.raw(), &expected_raw, "other values changed");
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A local config gets measurements from a local-provider file (`--insecure`: no key of ours
/// signs test files); merge by index, atomic write.
#[test]
fn fetch_measurements_updates_local_config() {
    let d = tempfile::tempdir().unwrap();
    write_local_config(d.path());
    let file = format!(
        r#"{{"version":"v{}","ref":"-","stream":"stable","list":[{{"csp":"local","attestationVariant":"local-vtpm","measurements":{{"4":{{"expected":"{}","warnOnly":false}}}}}}]}}"#,
        env!("CARGO_PKG_VERSION"),
        "cd".repeat(32)
    );
    std::fs::write(d.path().join("m.json"), &file).unwrap();
    let o = constellation(
        d.path(),
        &["config", "fetch-measurements", "--insecure", "-u", "m.json"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let c = Config::load(&d.path().join(CONFIG_FILE)).unwrap();
    assert_eq!(c.measurements().get(4).unwrap().expected, vec![0xcd; 32]);
    assert_eq!(c.measurements().len(), 7);
    let mode = std::fs::metadata(d.path().join(CONFIG_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

struct Case {
    name: &'static str,
    json: &'static str,
    sig: &'static str,
    tamper: Option<(&'static str, usize)>,
    use_key: bool,
    want: &'static str,
}

/// Signed vectors: every failure names its kind and leaves the config byte-identical.
#[test]
fn fetch_measurements_with_signed_vectors() {
    let Some(src) = vectors() else { return };
    let cases = [
        Case {
            name: "valid pair, vector is for another provider",
            json: "measurements.json",
            sig: "measurements.json.sig",
            tamper: None,
            use_key: true,
            want: "no measurements for provider \"local\" and attestation variant \"local-vtpm\"",
        },
        Case {
            name: "flipped byte in measurements.json",
            json: "measurements.json",
            sig: "measurements.json.sig",
            tamper: Some(("measurements.json", 40)),
            use_key: true,
            want: "signature does not verify",
        },
        Case {
            name: "flipped byte in the signature",
            json: "measurements.json",
            sig: "measurements.json.sig",
            tamper: Some(("measurements.json.sig", 20)),
            use_key: true,
            want: "signature does not verify",
        },
        Case {
            name: "valid signature over something else",
            json: "not-json.txt",
            sig: "not-json.txt.sig",
            tamper: None,
            use_key: true,
            want: "not a measurements file",
        },
        Case {
            name: "default (release) key did not sign the vector",
            json: "measurements.json",
            sig: "measurements.json.sig",
            tamper: None,
            use_key: false,
            want: "signature does not verify",
        },
    ];
    for case in cases {
        let d = tempfile::tempdir().unwrap();
        let before = write_local_config(d.path());
        copy_vectors(&src, d.path());
        if let Some((file, at)) = case.tamper {
            let mut b = std::fs::read(d.path().join(file)).unwrap();
            // Stay within the base64 alphabet for the signature so the DER breaks, not the text.
            b[at] = if b[at] == b'A' { b'B' } else { b'A' };
            std::fs::write(d.path().join(file), b).unwrap();
        }
        let json = path_str(d.path(), case.json);
        let sig = path_str(d.path(), case.sig);
        let key = path_str(d.path(), "cosign.pub");
        let mut args = vec!["config", "fetch-measurements", "-u", &json, "-s", &sig];
        if case.use_key {
            args.extend(["--key", &key]);
        }
        let o = constellation(d.path(), &args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{}: {err}", case.name);
        assert!(err.contains(case.want), "{}: {err}", case.name);
        assert!(err.contains("  hint: "), "{}: {err}", case.name);
        assert_eq!(
            config_bytes(d.path()),
            before,
            "{}: config changed",
            case.name
        );
    }
}

/// A tiny HTTP/1.1 file server on 127.0.0.1:0, stopped (and joined) on drop.
struct FileServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FileServer {
    fn start(files: HashMap<String, Vec<u8>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut s) = stream else { continue };
                let _ = serve_one(&mut s, &files);
            }
        });
        Self {
            addr,
            stop,
            thread: Some(thread),
        }
    }
    fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr)
    }
}

fn serve_one(s: &mut TcpStream, files: &HashMap<String, Vec<u8>>) -> std::io::Result<()> {
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        req.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&req);
    let path = text
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .trim_start_matches('/');
    match files.get(path) {
        Some(body) => {
            write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            s.write_all(body)?;
        }
        None => write!(
            s,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?,
    }
    s.flush()
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so the thread sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn fetch_measurements_over_http() {
    let Some(src) = vectors() else { return };
    let mut files = HashMap::new();
    for f in ["measurements.json", "measurements.json.sig"] {
        files.insert(format!("img/{f}"), std::fs::read(src.join(f)).unwrap());
    }
    let server = FileServer::start(files);
    let d = tempfile::tempdir().unwrap();
    let before = write_local_config(d.path());
    let key = src.join("cosign.pub").display().to_string();

    // The signature URL defaults to the measurements URL + ".sig".
    let url = server.url("img/measurements.json");
    let o = constellation(
        d.path(),
        &["config", "fetch-measurements", "-u", &url, "--key", &key],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no measurements for provider \"local\""),
        "{err}"
    );
    assert!(!err.contains("signature does not verify"), "{err}");
    assert_eq!(config_bytes(d.path()), before);

    let missing = server.url("img/other.json");
    let o = constellation(
        d.path(),
        &[
            "config",
            "fetch-measurements",
            "-u",
            &missing,
            "--key",
            &key,
        ],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("HTTP status 404"), "{err}");
    assert_eq!(config_bytes(d.path()), before);
}

#[test]
fn fetch_measurements_without_config() {
    let d = tempfile::tempdir().unwrap();
    let o = constellation(d.path(), &["config", "fetch-measurements", "-u", "x.json"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err.contains("constellation-conf.yaml does not exist"),
        "{err}"
    );
    assert!(
        err.contains("hint: run `constellation config generate local` first"),
        "{err}"
    );
}

/// `-C` with a folder that does not exist is an error that creates nothing.
#[test]
fn workspace_must_exist_and_is_never_created() {
    let t = tempfile::tempdir().unwrap();
    let missing = t.path().join("no/such/ws");
    for args in [
        &["status"][..],
        &["config", "generate", "local"],
        &["mini", "up"],
    ] {
        let o = constellation(&missing, args);
        assert!(!o.status.success(), "{args:?}");
        assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
        assert!(stderr(&o).contains("mkdir -p"), "{}", stderr(&o));
        assert!(!t.path().join("no").exists(), "{args:?} created a folder");
    }
}

/// Usage errors (exit 2) for values clap knows: output formats, phases, completion shells.
#[test]
fn bad_values_are_usage_errors() {
    let t = tempfile::tempdir().unwrap();
    for args in [
        &["status", "-o", "yaml"][..],
        &["verify", "-o", "xml"],
        &["apply", "--skip-phases", "infrastructure,bogus"],
        &["completion", "tcsh"],
    ] {
        let o = constellation(t.path(), args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("possible values"), "{}", stderr(&o));
    }
    let help = stdout(&constellation(t.path(), &["apply", "--help"]));
    for phase in ["infrastructure", "init", "attestationconfig"] {
        assert!(help.contains(phase), "{help}");
    }
}

/// `completion bash|zsh|fish` prints a script; bash accepts the bash one.
#[test]
fn completion_scripts() {
    let t = tempfile::tempdir().unwrap();
    let o = constellation(t.path(), &["completion", "bash"]);
    assert!(o.status.success());
    let script = t.path().join("c.bash");
    std::fs::write(&script, &o.stdout).unwrap();
    let check = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(stdout(&o).contains("constellation"));
    for shell in ["zsh", "fish"] {
        let o = constellation(t.path(), &["completion", shell]);
        assert!(o.status.success() && !o.stdout.is_empty(), "{shell}");
    }
}

/// A closed pipe ends the command quietly (no panic message), as `status -o json | head -c1`.
#[test]
fn closed_stdout_pipe_is_quiet() {
    let t = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .arg("-C")
        .arg(t.path())
        .args(["completion", "bash"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read one byte, then close the pipe while the script (tens of KiB) is still being written.
    let mut out = child.stdout.take().unwrap();
    let mut one = [0u8; 1];
    out.read_exact(&mut one).unwrap();
    drop(out);
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe"),
        "{err}"
    );
}

/// `terminate` and `mini down` in a folder without a cluster say so and fail; nothing is removed.
#[test]
fn terminate_without_a_cluster_fails() {
    let t = tempfile::tempdir().unwrap();
    write_local_config(t.path());
    let before = config_bytes(t.path());
    for args in [&["terminate", "-y"][..], &["mini", "down", "-y"]] {
        let o = constellation(t.path(), args);
        assert!(!o.status.success(), "{args:?}");
        assert!(
            stderr(&o).contains("no cluster in this workspace"),
            "{}",
            stderr(&o)
        );
    }
    assert_eq!(config_bytes(t.path()), before);
}
