#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A node's TPM belongs to that node: the attacks of the security review (reset the TPM over
//! its control channel, send it commands, download its state to clone it, quote with its AK)
//! fail for every process but the node's own.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};

use common::TestTpm;

/// The unprivileged user the attacker runs as (Debian's `nobody`).
const NOBODY: u32 = 65534;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Socket inodes of `pid`'s open file descriptors.
fn socket_inodes(pid: u32) -> BTreeSet<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_str()?.to_string();
            l.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

/// Inodes of all TCP sockets (v4 and v6) on the host, in any state.
fn tcp_inodes() -> BTreeSet<u64> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|t| {
            t.lines()
                .skip(1)
                .filter_map(|l| l.split_whitespace().nth(9)?.parse().ok())
                .collect::<Vec<u64>>()
        })
        .collect()
}

fn as_nobody(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .uid(NOBODY)
        .gid(NOBODY)
        .current_dir("/")
        .output()
        .unwrap()
}

#[test]
fn tpm_folder_and_state_are_owner_only_and_nothing_listens_on_tcp() {
    let t = TestTpm::start();
    let c = t.swtpm.config().clone();
    // The AK exists (as after the provider recorded it), so the state holds its seed.
    t.open().attestation_key().unwrap();
    assert_eq!(mode(&c.dir), 0o700, "TPM folder");
    assert_eq!(mode(&c.state_dir()), 0o700, "state folder");
    assert_eq!(mode(&c.auth_path()), 0o600, "auth value");
    assert_eq!(mode(&c.socket_path()), 0o600, "command socket");
    assert_eq!(mode(&c.ctrl_path()), 0o600, "control socket");
    let state: Vec<_> = std::fs::read_dir(c.state_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!state.is_empty());
    // swtpm's `.lock` (empty, 0640) is only a lock; the folder around it is 0700 anyway.
    for f in state.iter().filter(|f| !f.ends_with(".lock")) {
        assert_eq!(mode(f) & 0o077, 0, "{f:?} is readable by others");
    }
    let tcp: BTreeSet<u64> = socket_inodes(t.swtpm.pid())
        .intersection(&tcp_inodes())
        .copied()
        .collect();
    assert!(tcp.is_empty(), "swtpm holds TCP sockets {tcp:?}");
}

#[test]
fn another_user_can_neither_reset_nor_command_nor_clone_the_tpm() {
    // /proc/self belongs to the effective user.
    if std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) != 0 {
        eprintln!("SKIPPED: switching to another user (uid {NOBODY}) needs root");
        return;
    }
    let t = TestTpm::start();
    let c = t.swtpm.config().clone();
    let tpm = t.open();
    tpm.pcr_event(16, b"before the attack").unwrap();
    let before = tpm.read_pcrs_sha256().unwrap();
    let ctrl = c.ctrl_path();
    let ctrl = ctrl.to_str().unwrap();
    let blob = t.dir.path().join("stolen");
    let blob = blob.to_str().unwrap();

    // Reset (TPM_Init on the control channel): PCRs would start over.
    let reset = as_nobody("swtpm_ioctl", &["--unix", ctrl, "-i"]);
    // Clone: the permanent state blob (seeds, AK) over the control channel.
    let save = as_nobody(
        "swtpm_ioctl",
        &["--unix", ctrl, "--save", "permanent", blob],
    );
    // Clone: the state files themselves.
    let state_file = c.state_dir().join("tpm2-00.permall");
    assert!(state_file.exists());
    let copy = as_nobody("cat", &[state_file.to_str().unwrap()]);
    // Commands: connect to the command socket (TPM2_GetRandom).
    let script = format!(
        "import socket; s = socket.socket(socket.AF_UNIX); s.connect({:?}); \
         s.sendall(bytes.fromhex('80010000000c0000017b0008')); print(s.recv(64).hex())",
        c.socket_path().to_str().unwrap()
    );
    let command = as_nobody("/usr/bin/python3", &["-c", &script]);

    for (what, out) in [
        ("reset", &reset),
        ("state blob", &save),
        ("state file", &copy),
        ("TPM command", &command),
    ] {
        let err = String::from_utf8_lossy(&out.stderr);
        eprintln!("{what} as uid {NOBODY}: {:?}: {}", out.status, err.trim());
        assert!(!out.status.success(), "{what} succeeded for another user");
        assert!(
            err.contains("Permission denied") || err.contains("PermissionError"),
            "{what} failed for another reason: {err}"
        );
    }
    assert!(!Path::new(blob).exists());
    // Nothing changed: no reset, the TPM still answers its node.
    assert_eq!(tpm.read_pcrs_sha256().unwrap(), before);
    tpm.quote(b"after the attack").unwrap();
}

#[test]
fn the_ak_is_unusable_without_the_nodes_authorisation() {
    let t = TestTpm::start();
    let c = t.swtpm.config().clone();
    let ak = t.open().attestation_key().unwrap();
    // A process of the same user reaches the socket, but not the node's value.
    let intruder = tpm::Tpm::open(&format!("swtpm:path={}", c.socket_path().display())).unwrap();
    // It can read the AK's public part (that is public) ...
    assert_eq!(intruder.attestation_key().unwrap(), ak);
    // ... but not quote with it.
    let err = intruder.quote(b"relay me").unwrap_err();
    assert!(err.is_auth_failure(), "quote without the value: {err}");
    // Nor can it take the TPM over again with the empty value.
    let wrong = t.dir.path().join("wrong-auth");
    std::fs::write(&wrong, b"").unwrap();
    let err = tpm::Tpm::open(&format!(
        "swtpm:path={},auth={}",
        c.socket_path().display(),
        wrong.display()
    ))
    .unwrap()
    .quote(b"x")
    .unwrap_err();
    assert!(err.is_auth_failure(), "{err}");
    // The node, with its value, quotes.
    t.open().quote(b"the node").unwrap();
}
