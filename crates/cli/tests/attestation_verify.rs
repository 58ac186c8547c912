//! `constellation attestation verify` through the real binary on the shared real evidence:
//! verdicts, exit status (0 genuine, 1 refused, 2 usage), the named check of each refusal.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_constellation");

fn vectors() -> Option<PathBuf> {
    let p = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/testvectors"
    ));
    if p.join("snp-azure-milan").is_dir() {
        Some(p)
    } else {
        eprintln!("SKIPPED: {} is absent", p.display());
        None
    }
}

fn run(args: &[&str]) -> (i32, serde_json::Value, String) {
    let o: Output = Command::new(BIN)
        .args(["attestation", "verify", "-o", "json"])
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run constellation");
    let json = serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null);
    (
        o.status.code().unwrap_or(-1),
        json,
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn checks(j: &serde_json::Value) -> Vec<String> {
    j["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["check"].as_str().unwrap().to_string())
        .collect()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

struct Snp {
    _dir: tempfile::TempDir,
    report: PathBuf,
    vcek: PathBuf,
    chain: PathBuf,
    v: PathBuf,
}

fn snp() -> Option<Snp> {
    let v = vectors()?;
    let dir = tempfile::tempdir().unwrap();
    // attestation.bin = the 1184-byte report + Azure's 20-byte IGVM header.
    let bytes = std::fs::read(v.join("snp-azure-milan/attestation.bin")).unwrap();
    let report = dir.path().join("report.bin");
    std::fs::write(&report, &bytes[..1184]).unwrap();
    Some(Snp {
        report,
        vcek: v.join("snp-azure-milan/vcek.cert"),
        chain: v.join("snp-azure-milan/certchain.pem"),
        _dir: dir,
        v,
    })
}

const AT: &str = "2025-01-01T00:00:00Z";

#[test]
fn snp_report_verdicts_and_exit_status() {
    let Some(t) = snp() else { return };
    let base = |report: &Path, at: &str, extra: &[&str]| {
        let mut a = vec![
            "--format",
            "snp-report",
            "--evidence",
            s(report),
            "--cert",
            s(&t.vcek),
            "--cert",
            s(&t.chain),
            "--at",
            at,
        ];
        a.extend_from_slice(extra);
        run(&a
            .iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>())
    };
    let (code, j, err) = base(&t.report, AT, &[]);
    assert_eq!(code, 0, "{j} {err}");
    assert_eq!(j["verdict"], "genuine");
    assert_eq!(j["claims"]["snp"]["product"], "Milan");
    assert_eq!(j["claims"]["snp"]["reported_tcb"]["microcode"], 93);
    assert_eq!(j["claims"]["snp"]["policy_debug"], false);
    // The report binds the Azure runtime data's hash: as a nonce it verifies, another does not.
    let rd = j["claims"]["snp"]["report_data"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(base(&t.report, AT, &["--nonce", &rd[..64]]).0, 0);
    let (code, j, _) = base(&t.report, AT, &["--nonce", "00ff"]);
    assert_eq!((code, checks(&j)), (1, vec!["snp-report-data".to_string()]));
    // Expired at the given time (VCEK valid until 2030-08-30).
    let (code, j, err) = base(&t.report, "2031-01-01T00:00:00Z", &[]);
    assert_eq!(
        (code, checks(&j)),
        (1, vec!["snp-cert-validity".to_string()])
    );
    assert!(err.contains("refused"), "{err}");
    // A changed byte of the signed part.
    let mut bytes = std::fs::read(&t.report).unwrap();
    bytes[0x90] ^= 1;
    let changed = t.report.with_file_name("changed.bin");
    std::fs::write(&changed, &bytes).unwrap();
    let (code, j, _) = base(&changed, AT, &[]);
    assert_eq!(
        (code, checks(&j)),
        (1, vec!["snp-report-signature".to_string()])
    );
    // Base64 text of the report is accepted.
    use base64::Engine;
    let b64 = t.report.with_file_name("report.b64");
    std::fs::write(
        &b64,
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(&t.report).unwrap()),
    )
    .unwrap();
    assert_eq!(base(&b64, AT, &[]).0, 0);
    // Another product family's chain.
    let genoa = t.v.join("amd-roots/ask_ark_genoa.pem");
    let (code, j, _) = run(&[
        "--format",
        "snp-report",
        "--evidence",
        s(&t.report),
        "--cert",
        s(&t.vcek),
        "--cert",
        s(&genoa),
        "--at",
        AT,
    ]);
    assert_eq!((code, checks(&j)), (1, vec!["snp-product".to_string()]));
    // Text output names the check, expected and actual.
    let o = Command::new(BIN)
        .args([
            "attestation",
            "verify",
            "--format",
            "snp-report",
            "--evidence",
            s(&t.report),
            "--cert",
            s(&t.vcek),
            "--cert",
            s(&t.chain),
            "--at",
            "2031-01-01T00:00:00Z",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("verdict: refused")
            && text.contains("refused by snp-cert-validity")
            && text.contains("expected: VCEK valid at"),
        "{text}"
    );
}

#[test]
fn azure_snp_vtpm_under_go_defaults_refuses_the_unlisted_id_key_digest() {
    let Some(v) = vectors() else { return };
    let ev = v.join("azure-snp-vtpm/evidence-v2.json");
    let ask = v.join("amd-roots/ask_ark_milan.pem");
    // trustee's v2 binding: the verifier's nonce is the first 48 bytes of the HCL user-data.
    let nonce = "982f5c6e45df0ed3f10b6f60b02f0c8390e281300f3805e2279c16168cd6ae9aa398f647caa2338748cd0fd9f5f819ef";
    let (code, j, _) = run(&[
        "--format",
        "azure-snp-vtpm",
        "--evidence",
        s(&ev),
        "--cert",
        s(&ask),
        "--at",
        "2025-06-01T00:00:00Z",
    ]);
    assert_eq!(code, 1);
    assert_eq!(checks(&j), ["snp-id-key-digest"]);
    assert!(j["reasons"][0]["expected"]
        .as_str()
        .unwrap()
        .contains("MAAFallback"));
    assert_eq!(j["claims"]["snp"]["report_version"], 3);
    assert_eq!(j["claims"]["pcrs"].as_object().unwrap().len(), 24);
    // With the right nonce the quote is fresh: the digest is the only refusal, no nonce warning.
    let (code, j, _) = run(&[
        "--format",
        "azure-snp-vtpm",
        "--evidence",
        s(&ev),
        "--cert",
        s(&ask),
        "--at",
        "2025-06-01T00:00:00Z",
        "--nonce",
        nonce,
    ]);
    assert_eq!(
        (code, checks(&j)),
        (1, vec!["snp-id-key-digest".to_string()])
    );
    assert!(!j["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w["check"] == "nonce"));
    // A nonce the quote does not carry adds a refusal.
    let (code, j, _) = run(&[
        "--format",
        "azure-snp-vtpm",
        "--evidence",
        s(&ev),
        "--cert",
        s(&ask),
        "--at",
        "2025-06-01T00:00:00Z",
        "--nonce",
        &nonce[..8],
    ]);
    assert_eq!(code, 1);
    assert_eq!(checks(&j), ["snp-id-key-digest", "nonce"]);
    // Before the VCEK's validity.
    let (_, j, _) = run(&[
        "--format",
        "azure-snp-vtpm",
        "--evidence",
        s(&ev),
        "--cert",
        s(&ask),
        "--at",
        "2025-01-01T00:00:00Z",
    ]);
    assert_eq!(checks(&j), ["snp-cert-validity"]);
}

#[test]
fn gce_vtpm_verifies_with_the_google_ca() {
    let Some(v) = vectors() else { return };
    let d = v.join("gce-vtpm");
    let pb = d.join("gce-cos-85-nonce9009.pb");
    let inter = d.join("tpm_ek_intermediate_2.crt");
    let root = d.join("tpm_ek_root_1.cer");
    let args = |nonce: &str| {
        vec![
            "--format".to_string(),
            "gce-vtpm".into(),
            "--evidence".into(),
            s(&pb).into(),
            "--cert".into(),
            s(&inter).into(),
            "--cert".into(),
            s(&root).into(),
            "--nonce".into(),
            nonce.into(),
            "--at".into(),
            AT.into(),
        ]
    };
    let a = args("9009");
    let (code, j, err) = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "{j} {err}");
    assert_eq!(j["claims"]["gce"]["gce_technology"], "AMD_SEV");
    let a = args("9008");
    let (code, j, _) = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!((code, checks(&j)), (1, vec!["nonce".to_string()]));
    let (code, j, _) = run(&[
        "--format",
        "gce-vtpm",
        "--evidence",
        s(&pb),
        "--cert",
        s(&inter),
        "--nonce",
        "9009",
    ]);
    assert_eq!((code, checks(&j)), (1, vec!["ak-trust".to_string()]));
}

#[test]
fn document_of_a_qemu_vtpm_node() {
    let dir = tempfile::tempdir().unwrap();
    let tpm = attestation::insecure_software_tpm::InsecureSoftwareTpm::generate(
        attestation::Variant::QemuVtpm,
    )
    .unwrap();
    let doc = dir.path().join("doc.json");
    std::fs::write(
        &doc,
        tpm.document(b"ud", b"\x01\x02", None).unwrap().to_json(),
    )
    .unwrap();
    let (code, j, err) = run(&[
        "--format",
        "document",
        "--variant",
        "qemu-vtpm",
        "--evidence",
        s(&doc),
        "--nonce",
        "0102",
    ]);
    assert_eq!(code, 0, "{j} {err}");
    assert_eq!(j["claims"]["user_data"], "7564");
    let (code, j, _) = run(&[
        "--format",
        "document",
        "--variant",
        "qemu-vtpm",
        "--evidence",
        s(&doc),
        "--nonce",
        "0103",
    ]);
    assert_eq!((code, checks(&j)), (1, vec!["nonce".to_string()]));
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x");
    std::fs::write(&f, b"x").unwrap();
    for args in [
        vec!["--format", "tpm-magic", "--evidence", s(&f)],
        vec![
            "--format",
            "snp-report",
            "--evidence",
            "/nonexistent/evidence",
        ],
        vec![
            "--format",
            "snp-report",
            "--evidence",
            s(&f),
            "--at",
            "yesterday",
        ],
        vec![
            "--format",
            "snp-report",
            "--evidence",
            s(&f),
            "--nonce",
            "xyz",
        ],
        vec![
            "--format",
            "document",
            "--evidence",
            s(&f),
            "--variant",
            "qemu-vtpm",
        ],
        vec!["--format", "document", "--evidence", s(&f), "--nonce", "00"],
        vec!["--evidence", s(&f)],
    ] {
        let (code, _, err) = run(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
    }
    // Garbage evidence is a refusal, not a usage error.
    let (code, j, _) = run(&["--format", "snp-report", "--evidence", s(&f)]);
    assert_eq!(
        (code, checks(&j)),
        (1, vec!["snp-report-format".to_string()])
    );
}

/// A minimal HTTP/1.1 file server on 127.0.0.1:0 for the KDS fetcher; counts requests; stopped
/// and joined on drop.
struct Kds {
    addr: std::net::SocketAddr,
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Every request's head (request line and headers), in order.
    requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Kds {
    fn start(files: std::collections::HashMap<String, Vec<u8>>) -> Self {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (hits2, stop2, requests2) = (hits.clone(), stop.clone(), requests.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut s) = stream else { continue };
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&req).into_owned();
                let path = text
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("/")
                    .trim_start_matches('/')
                    .to_string();
                hits2.fetch_add(1, Ordering::SeqCst);
                requests2.lock().unwrap().push(text.clone());
                let _ = match files.get(&path) {
                    Some(body) => write!(
                        s,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    )
                    .and_then(|_| s.write_all(body)),
                    None => write!(
                        s,
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    ),
                };
            }
        });
        Self {
            addr,
            hits,
            requests,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Kds {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `--fetch`: the VCEK and the ASK/ARK chain come from a (local) key distribution service, then
/// from the cache without it.
#[test]
fn fetch_fills_in_the_amd_certificates_and_caches_them() {
    let Some(t) = snp() else { return };
    let report = std::fs::read(&t.report).unwrap();
    let chip = hex::encode(&report[0x1A0..0x1E0]);
    let files = std::collections::HashMap::from([
        (
            format!("vcek/v1/Milan/{chip}?blSPL=2&teeSPL=0&snpSPL=6&ucodeSPL=93"),
            std::fs::read(&t.vcek).unwrap(),
        ),
        (
            "vcek/v1/Milan/cert_chain".to_string(),
            std::fs::read(&t.chain).unwrap(),
        ),
    ]);
    let cache = tempfile::tempdir().unwrap();
    let kds = Kds::start(files);
    let url = format!("http://{}", kds.addr);
    let args = |url: &str| {
        vec![
            "--format".to_string(),
            "snp-report".into(),
            "--evidence".into(),
            s(&t.report).into(),
            "--at".into(),
            AT.into(),
            "--fetch".into(),
            "--kds-url".into(),
            url.into(),
            "--cache-dir".into(),
            s(cache.path()).into(),
        ]
    };
    let a = args(&url);
    let (code, j, err) = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "{j} {err}");
    assert_eq!(kds.hits.load(std::sync::atomic::Ordering::SeqCst), 2);
    drop(kds);
    // A port nothing listens on (just released by this test).
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    // Served from the cache: no service needed.
    let a = args(&closed);
    let (code, j, err) = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "{j} {err}");
    // Without the service and the cache: refused for the missing VCEK, the fetch failure shown.
    let empty = tempfile::tempdir().unwrap();
    let (code, j, _) = run(&[
        "--format",
        "snp-report",
        "--evidence",
        s(&t.report),
        "--at",
        AT,
        "--fetch",
        "--kds-url",
        &closed,
        "--cache-dir",
        s(empty.path()),
    ]);
    assert_eq!((code, checks(&j)), (1, vec!["snp-cert-chain".to_string()]));
    assert!(j["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w["check"] == "collateral-fetch"));
}

/// A Go-format `aws-sev-snp` document checked with the policy of a real config file: the
/// config's `amdRootKey`/`amdSigningKey` (here the stand-in AMD hierarchy's ARK and ASVK), its
/// minimum versions and its measurements. The document is made here: quote by a fixed test RSA
/// AK, report and VLEK by `attestation::insecure_snp`.
#[test]
fn document_with_the_policy_of_a_config() {
    use attestation::cloud::{rsa_spki_der, SnpInstanceInfo};
    use attestation::document::{Attestation, AttestationDocument, Pcrs, Quote, HASH_SHA256};
    use attestation::insecure_snp::InsecureSnpSigner;
    use attestation::snp::{Product, SigningKey, Tcb};
    use attestation::tpm2::{HashAlg, Scheme, SigScheme, TpmsAttest, TpmtPublic, TpmtSignature};
    use ring::signature::{RsaKeyPair, RsaPublicKeyComponents};
    use sha2::{Digest, Sha512};

    let ws = tempfile::tempdir().unwrap();
    let o = Command::new(BIN)
        .arg("-C")
        .arg(ws.path())
        .args(["config", "generate", "aws", "-a", "aws-sev-snp"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cfg_path = ws.path().join("constellation-conf.yaml");
    let yaml = std::fs::read_to_string(&cfg_path)
        .unwrap()
        .replace("region: \"\"", "region: eu-central-1")
        .replace("zone: \"\"", "zone: eu-central-1a")
        .replace("iamProfileControlPlane: \"\"", "iamProfileControlPlane: cp")
        .replace("iamProfileWorkerNodes: \"\"", "iamProfileWorkerNodes: w");
    let cfg = config::Config::from_yaml(&yaml).unwrap();

    // The node: PCRs as the config expects, an RSA AK, a VLEK-signed report binding the AK.
    let key = RsaKeyPair::from_pkcs8(include_bytes!(
        "../../attestation/tests/data/test-rsa2048-ak.pk8"
    ))
    .unwrap();
    let n = RsaPublicKeyComponents::<Vec<u8>>::from(key.public()).n;
    let ak = TpmtPublic::ak_template_rsa(
        Scheme::WithHash {
            scheme: 0x0014,
            hash: 0x000B,
        },
        n.clone(),
    );
    let mut pcrs: std::collections::BTreeMap<u32, Vec<u8>> =
        (0..24).map(|i| (i, vec![0u8; 32])).collect();
    for (i, m) in cfg.measurements().iter() {
        pcrs.insert(i, m.expected.clone());
    }
    let tcb = Tcb {
        fmc: None,
        bootloader: 4,
        tee: 0,
        snp: 22,
        microcode: 0xD9,
    };
    let signer = InsecureSnpSigner::new(Product::Milan, SigningKey::Vlek, tcb).unwrap();
    let mut rd = [0u8; 64];
    rd.copy_from_slice(&Sha512::digest(rsa_spki_der(&n, 65537)));
    let info = SnpInstanceInfo {
        report_signer: Some(InsecureSnpSigner::pem(&signer.leaf_der).into_bytes()),
        attestation_report: Some(signer.report(&rd, 1 << 16, 0).unwrap()),
        ..Default::default()
    }
    .to_json();
    let nonce = b"verify nonce";
    let tpm_nonce = attestation::make_tpm_nonce(&info, &attestation::make_extra_data(b"ud", nonce));
    let attest = TpmsAttest::sha256_quote(ak.name(), tpm_nonce.to_vec(), &pcrs).encode();
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        &attest,
        &mut sig,
    )
    .unwrap();
    let doc = AttestationDocument {
        attestation: Attestation {
            ak_pub: ak.encode(),
            quotes: vec![Quote {
                quote: attest,
                raw_sig: TpmtSignature::Rsa {
                    scheme: SigScheme::RsaSsa,
                    hash: HashAlg::Sha256,
                    sig,
                }
                .encode(),
                pcrs: Pcrs {
                    hash: HASH_SHA256,
                    pcrs,
                },
            }],
            ..Default::default()
        },
        instance_info: Some(info),
        user_data: b"ud".to_vec(),
    };
    let doc_path = ws.path().join("doc.json");
    std::fs::write(&doc_path, doc.to_json()).unwrap();

    let with_keys = |yaml: &str, root: &[u8], ask: &[u8]| -> String {
        let pem = |d: &[u8]| serde_json::to_string(&InsecureSnpSigner::pem(d)).unwrap();
        yaml.lines()
            .map(|l| match l.trim_start() {
                t if t.starts_with("amdRootKey:") => format!("    amdRootKey: {}", pem(root)),
                t if t.starts_with("amdSigningKey:") => format!("    amdSigningKey: {}", pem(ask)),
                _ => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let verify = |yaml: String| {
        std::fs::write(&cfg_path, yaml).unwrap();
        run(&[
            "--format",
            "document",
            "--evidence",
            s(&doc_path),
            "--nonce",
            &hex::encode(nonce),
            "-c",
            s(&cfg_path),
            "--at",
            "2025-06-01T00:00:00Z",
        ])
    };
    // The config's amdRootKey is the stand-in ARK: genuine.
    let (code, j, err) = verify(with_keys(&yaml, &signer.ark_der, &signer.ask_der));
    assert_eq!(code, 0, "{j} {err}");
    assert_eq!(j["claims"]["snp"]["signing_key"], "VLEK");
    // The Go default amdRootKey (AMD's real ARK-Milan) does not vouch for it.
    let (code, j, _) = verify(with_keys(
        &yaml,
        &attestation::snp::parse_certs(config::GO_DEFAULT_AMD_ROOT_KEY.as_bytes()).unwrap()[0].der,
        &signer.ask_der,
    ));
    assert_eq!((code, checks(&j)), (1, vec!["snp-cert-chain".to_string()]));
    // A debug-enabled guest's report, with the same config: refused by default.
    std::fs::write(
        &cfg_path,
        with_keys(&yaml, &signer.ark_der, &signer.ask_der),
    )
    .unwrap();
    let dbg = ws.path().join("debug.bin");
    std::fs::write(&dbg, signer.report(&rd, (1 << 16) | (1 << 19), 0).unwrap()).unwrap();
    let vlek = ws.path().join("vlek.pem");
    std::fs::write(&vlek, InsecureSnpSigner::pem(&signer.leaf_der)).unwrap();
    let (code, j, _) = run(&[
        "--format",
        "snp-report",
        "--evidence",
        s(&dbg),
        "--cert",
        s(&vlek),
        "-c",
        s(&cfg_path),
        "--at",
        "2025-06-01T00:00:00Z",
    ]);
    assert_eq!(
        (code, checks(&j)),
        (1, vec!["snp-policy-debug".to_string()])
    );
    assert_eq!(j["claims"]["snp"]["policy_debug"], true);
    // A minimum microcode version above the report's.
    let strict = with_keys(&yaml, &signer.ark_der, &signer.ask_der)
        .replace("microcodeVersion: latest", "microcodeVersion: 220");
    let (code, j, _) = verify(strict);
    assert_eq!(
        (code, checks(&j)),
        (1, vec!["snp-minimum-launch-tcb".to_string()])
    );
}

/// `--fetch --thim-url`: the VCEK and ASK/ARK of an Azure SNP CVM come from (a local stand-in
/// for) Azure THIM, then from the cache without it; a garbage answer is a warning naming the
/// URL and the chain stays missing.
#[test]
fn fetch_gets_the_azure_vcek_chain_from_thim_and_caches_it() {
    let Some(v) = vectors() else { return };
    let ev = v.join("azure-snp-vtpm/evidence-v2.json");
    let answer = serde_json::json!({
        "vcekCert": std::fs::read_to_string(v.join("azure-snp-vtpm/vcek.pem")).unwrap(),
        "certificateChain": std::fs::read_to_string(v.join("amd-roots/ask_ark_milan.pem")).unwrap(),
        "tcbm": "DB18000000000003",
        "cacheControl": "86400",
    });
    let path = "metadata/THIM/amd/certification";
    let thim = Kds::start(std::collections::HashMap::from([(
        path.to_string(),
        serde_json::to_vec(&answer).unwrap(),
    )]));
    let cache = tempfile::tempdir().unwrap();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let args = |thim_url: &str, cache: &Path| {
        [
            "--format",
            "azure-snp-vtpm",
            "--evidence",
            s(&ev),
            "--at",
            "2025-06-01T00:00:00Z",
            "--fetch",
            "--thim-url",
            thim_url,
            // AMD KDS is not needed when THIM answers (and is unreachable here).
            "--kds-url",
            &closed,
            "--cache-dir",
            s(cache),
        ]
        .map(str::to_string)
    };
    let call = |a: &[String]| run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let url = format!("http://{}/{path}", thim.addr);
    // The chain verifies: what is left is the Go-default id-key digest refusal (as with --cert).
    let (code, j, err) = call(&args(&url, cache.path()));
    assert_eq!(
        (code, checks(&j)),
        (1, vec!["snp-id-key-digest".to_string()]),
        "{err}"
    );
    assert_eq!(thim.hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    // The instance metadata service answers only requests that carry `Metadata: true`.
    let head = thim.requests.lock().unwrap()[0].to_ascii_lowercase();
    assert!(head.contains("\r\nmetadata: true\r\n"), "{head}");
    drop(thim);
    // From the cache, THIM gone.
    let (code, j, err) = call(&args(&url, cache.path()));
    assert_eq!(
        (code, checks(&j)),
        (1, vec!["snp-id-key-digest".to_string()]),
        "{err}"
    );
    // A garbage answer: a warning naming the URL; without the chain the report is refused.
    let bad = Kds::start(std::collections::HashMap::from([(
        path.to_string(),
        b"<html>no</html>".to_vec(),
    )]));
    let bad_url = format!("http://{}/{path}", bad.addr);
    let empty = tempfile::tempdir().unwrap();
    let (code, j, _) = call(&args(&bad_url, empty.path()));
    assert_eq!(code, 1);
    assert_eq!(checks(&j), ["snp-cert-chain"]);
    let w = j["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| {
            w["check"] == "collateral-fetch" && w["expected"].as_str().unwrap().contains("THIM")
        })
        .unwrap_or_else(|| panic!("{j}"));
    assert!(
        w["actual"]
            .as_str()
            .unwrap()
            .starts_with(&format!("GET {bad_url}: not the THIM JSON")),
        "{w}"
    );
}
