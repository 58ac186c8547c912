//! `constellation attestation verify` for TDX evidence through the real binary on the shared
//! captured quote and collateral: `tdx-quote`, `azure-tdx-vtpm` and `document` (qemu-tdx).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_constellation");
/// Inside every window of the captured collateral.
const AT: &str = "2025-06-20T10:16:03Z";

struct Tdx {
    quote: PathBuf,
    collateral: PathBuf,
}

fn vectors() -> Option<Tdx> {
    let p = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/testvectors/tdx-dcap"
    ));
    if !p.is_dir() {
        eprintln!("SKIPPED: {} is absent", p.display());
        return None;
    }
    Some(Tdx {
        quote: p.join("tdx_quote"),
        collateral: p.join("tdx_quote_collateral.json"),
    })
}

fn run(args: &[&str]) -> (i32, serde_json::Value, String) {
    let o = Command::new(BIN)
        .args(["attestation", "verify", "-o", "json"])
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run constellation");
    (
        o.status.code().unwrap_or(-1),
        serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn checks(j: &serde_json::Value, key: &str) -> Vec<String> {
    j[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["check"].as_str().unwrap().to_string())
        .collect()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn tdx_quote_verdicts_claims_and_exit_status() {
    let Some(t) = vectors() else { return };
    let base = ["--format", "tdx-quote", "--evidence", s(&t.quote)];
    let col = ["--collateral", s(&t.collateral)];
    let (code, j, err) = run(&[&base[..], &col, &["--at", AT]].concat());
    assert_eq!(code, 0, "{j} {err}");
    assert_eq!(j["verdict"], "genuine");
    let c = &j["claims"]["tdx"];
    assert_eq!(c["tcb_status"], "UpToDate");
    assert_eq!(c["fmspc"], "b0c06f000000");
    assert_eq!(
        c["mrtd"],
        "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7"
    );
    let warned = checks(&j, "warnings");
    assert!(
        warned.contains(&"tdx-report-data".to_string()),
        "{warned:?}"
    );
    assert!(
        warned.contains(&"config-minimum-version".to_string()),
        "{warned:?}"
    );

    // Today the captured collateral has expired: refused unless --at says otherwise.
    let (code, j, _) = run(&[&base[..], &col].concat());
    assert_eq!(
        (code, checks(&j, "reasons")),
        (1, vec!["tdx-validity".to_string()])
    );
    // (Which window closes first depends on today: the root CA CRL's, or the PCK CRL's.)
    assert!(
        j["reasons"][0]["expected"]
            .as_str()
            .unwrap()
            .contains("CRL valid at"),
        "{j}"
    );

    // A nonce the report data does not carry.
    let (code, j, _) = run(&[&base[..], &col, &["--at", AT, "--nonce", "00"]].concat());
    assert_eq!(
        (code, checks(&j, "reasons")),
        (1, vec!["tdx-report-data".to_string()])
    );

    // One changed byte of the TD report.
    let dir = tempfile::tempdir().unwrap();
    let mut q = std::fs::read(&t.quote).unwrap();
    q[48 + 136] ^= 1; // MRTD
    let bad = dir.path().join("quote");
    std::fs::write(&bad, &q).unwrap();
    let (code, j, _) = run(&[
        "--format",
        "tdx-quote",
        "--evidence",
        s(&bad),
        "--collateral",
        s(&t.collateral),
        "--at",
        AT,
    ]);
    assert_eq!(
        (code, checks(&j, "reasons")),
        (1, vec!["tdx-quote-signature".to_string()])
    );

    // The quote as base64 text works like the raw bytes.
    use base64::Engine as _;
    let b64 = dir.path().join("quote.b64");
    std::fs::write(
        &b64,
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(&t.quote).unwrap()),
    )
    .unwrap();
    let (code, j, _) = run(&[
        "--format",
        "tdx-quote",
        "--evidence",
        s(&b64),
        "--collateral",
        s(&t.collateral),
        "--at",
        AT,
    ]);
    assert_eq!(code, 0, "{j}");

    // Without collateral, or with collateral that is not the JSON layout: usage errors.
    let (code, _, err) = run(&[&base[..], &["--at", AT]].concat());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--collateral"), "{err}");
    let (code, _, err) = run(&[&base[..], &["--collateral", s(&t.quote), "--at", AT]].concat());
    assert_eq!(code, 2, "{err}");
}

#[test]
fn azure_tdx_vtpm_checks_the_td_quote_then_the_hcl_binding() {
    let Some(t) = vectors() else { return };
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    // The captured TD quote with an HCL report whose runtime data it does not bind.
    let runtime = br#"{"keys":[{"kid":"HCLAkPub","kty":"RSA","e":"AQAB","n":"wMHC"}]}"#;
    let mut hcl = vec![0u8; 0x4D4];
    hcl[..4].copy_from_slice(b"HCLA");
    hcl[0x4C0 + 8..0x4C0 + 12].copy_from_slice(&4u32.to_le_bytes());
    hcl[0x4C0 + 16..0x4C0 + 20].copy_from_slice(&(runtime.len() as u32).to_le_bytes());
    hcl.extend(runtime);
    let quote = std::fs::read(&t.quote).unwrap();
    let evidence = serde_json::json!({
        "tpm_quote": {"signature": "00", "message": "00", "pcrs": ["00"]},
        "hcl_report": URL_SAFE_NO_PAD.encode(&hcl),
        "td_quote": URL_SAFE_NO_PAD.encode(&quote),
    });
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("evidence.json");
    std::fs::write(&f, serde_json::to_vec(&evidence).unwrap()).unwrap();
    let args = [
        "--format",
        "azure-tdx-vtpm",
        "--evidence",
        s(&f),
        "--collateral",
        s(&t.collateral),
    ];
    // Genuine TD quote (at AT), but the HCL report does not match it.
    let (code, j, err) = run(&[&args[..], &["--at", AT]].concat());
    assert_eq!(code, 1, "{j} {err}");
    assert_eq!(
        checks(&j, "reasons"),
        vec!["azure-runtime-data-binding".to_string()],
        "{j}"
    );
    // Today: the TD quote's collateral has expired first.
    let (code, j, _) = run(&args);
    assert_eq!(
        (code, checks(&j, "reasons")),
        (1, vec!["tdx-validity".to_string()])
    );
    // Not the layout.
    let (code, j, _) = run(&[
        "--format",
        "azure-tdx-vtpm",
        "--evidence",
        s(&t.quote),
        "--collateral",
        s(&t.collateral),
    ]);
    assert_eq!(
        (code, checks(&j, "reasons")),
        (1, vec!["evidence-format".to_string()])
    );
}

#[test]
fn qemu_tdx_document_binds_user_data_and_nonce() {
    let Some(t) = vectors() else { return };
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    let quote = std::fs::read(&t.quote).unwrap();
    let doc = serde_json::json!({"RawQuote": STANDARD.encode(&quote), "UserData": STANDARD.encode(b"ud")});
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("doc.json");
    std::fs::write(&f, serde_json::to_vec(&doc).unwrap()).unwrap();
    let args = [
        "--format",
        "document",
        "--variant",
        "qemu-tdx",
        "--evidence",
        s(&f),
        "--nonce",
        "0102",
    ];
    // The captured quote is genuine but was not made for this user data and nonce.
    let (code, j, err) =
        run(&[&args[..], &["--collateral", s(&t.collateral), "--at", AT]].concat());
    assert_eq!(
        (code, checks(&j, "reasons")),
        (1, vec!["nonce".to_string()]),
        "{err}"
    );
    let (code, j, _) = run(&[&args[..], &["--collateral", s(&t.collateral)]].concat());
    assert_eq!(
        (code, checks(&j, "reasons")),
        (1, vec!["tdx-validity".to_string()])
    );
    let (code, _, err) = run(&args);
    assert_eq!(code, 2, "{err}");
    // With --fetch the validator takes its collateral from (a stand-in for) Intel PCS.
    let pcs = PcsStandIn::start(pcs_routes(&t.collateral), None);
    let cache = tempfile::tempdir().unwrap();
    let url = pcs.url();
    let fetch = [
        "--fetch",
        "--pcs-url",
        &url,
        "--cache-dir",
        s(cache.path()),
        "--at",
        AT,
    ];
    let (code, j, err) = run(&[&args[..], &fetch].concat());
    assert_eq!(
        (code, checks(&j, "reasons")),
        (1, vec!["nonce".to_string()]),
        "{err}"
    );
    assert_eq!(pcs.hits(), 4);
}

/// Go's default `intelRootKey` (written by `config generate`) is the root the TDX verifier
/// pins.
#[test]
fn go_default_intel_root_key_is_the_pinned_root() {
    let p = attestation::tdx::TdxPolicy::default()
        .with_root_certificate(config::GO_DEFAULT_INTEL_ROOT_KEY.as_bytes())
        .unwrap();
    assert_eq!(p.root_key, attestation::tdx::INTEL_SGX_ROOT_CA_KEY.to_vec());
}

/// A minimal HTTP/1.1 server on 127.0.0.1:0 standing in for Intel PCS: answers each request
/// path (with query) from `routes` (body and headers), anything else with `fallback` (200) or
/// 404; counts requests; stopped and joined on drop.
struct PcsStandIn {
    addr: std::net::SocketAddr,
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

type Routes = std::collections::HashMap<String, (Vec<(String, String)>, Vec<u8>)>;

impl PcsStandIn {
    fn start(routes: Routes, fallback: Option<Vec<u8>>) -> Self {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (hits2, stop2) = (hits.clone(), stop.clone());
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
                let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
                hits2.fetch_add(1, Ordering::SeqCst);
                let answer = routes
                    .get(&path)
                    .cloned()
                    .or_else(|| fallback.clone().map(|b| (Vec::new(), b)));
                let _ = match answer {
                    Some((headers, body)) => {
                        let mut head = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n",
                            body.len()
                        );
                        for (k, v) in headers {
                            head.push_str(&format!("{k}: {v}\r\n"));
                        }
                        head.push_str("\r\n");
                        s.write_all(head.as_bytes())
                            .and_then(|_| s.write_all(&body))
                    }
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
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn hits(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for PcsStandIn {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Percent-encodes all but unreserved characters, as Intel PCS encodes its issuer chains.
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The PCS v4 answers that make up the shared collateral: signed JSON as Intel serves it,
/// URL-encoded issuer chains, the PCK CRL as DER, the root CA CRL as hex text.
fn pcs_routes(collateral: &Path) -> Routes {
    let c: serde_json::Value = serde_json::from_slice(&std::fs::read(collateral).unwrap()).unwrap();
    let f = |k: &str| c[k].as_str().unwrap().to_string();
    let chain = |h: &str, k: &str| vec![(h.to_string(), url_encode(&f(k)))];
    Routes::from([
        (
            "/tdx/certification/v4/tcb?fmspc=B0C06F000000".to_string(),
            (
                chain("TCB-Info-Issuer-Chain", "tcb_info_issuer_chain"),
                format!(
                    "{{\"tcbInfo\":{},\"signature\":\"{}\"}}",
                    f("tcb_info"),
                    f("tcb_info_signature")
                )
                .into_bytes(),
            ),
        ),
        (
            "/tdx/certification/v4/qe/identity".to_string(),
            (
                chain(
                    "SGX-Enclave-Identity-Issuer-Chain",
                    "qe_identity_issuer_chain",
                ),
                format!(
                    "{{\"enclaveIdentity\":{},\"signature\":\"{}\"}}",
                    f("qe_identity"),
                    f("qe_identity_signature")
                )
                .into_bytes(),
            ),
        ),
        (
            "/sgx/certification/v4/pckcrl?ca=platform&encoding=der".to_string(),
            (
                chain("SGX-PCK-CRL-Issuer-Chain", "pck_crl_issuer_chain"),
                hex::decode(f("pck_crl")).unwrap(),
            ),
        ),
        (
            "/sgx/certification/v4/rootcacrl".to_string(),
            (Vec::new(), f("root_ca_crl").into_bytes()),
        ),
    ])
}

/// A port nothing listens on (just released).
fn closed_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

/// `--fetch` for TDX: the collateral comes from (a local stand-in for) Intel PCS, then from the
/// cache without it; an item past its nextUpdate at the verification time is fetched again; a
/// server answering garbage is a refusal naming the URL.
#[test]
fn fetch_gets_tdx_collateral_from_pcs_and_caches_it_until_next_update() {
    let Some(t) = vectors() else { return };
    let cache = tempfile::tempdir().unwrap();
    let args = |format: &str, evidence: &Path, url: &str, cache: &Path, at: &str| {
        [
            "--format",
            format,
            "--evidence",
            s(evidence),
            "--fetch",
            "--pcs-url",
            url,
            "--cache-dir",
            s(cache),
            "--at",
            at,
        ]
        .map(str::to_string)
    };
    let call = |a: &[String]| run(&a.iter().map(String::as_str).collect::<Vec<_>>());

    // 1. Fetched: TCB info, QE identity, PCK CRL (platform CA), root CA CRL.
    let pcs = PcsStandIn::start(pcs_routes(&t.collateral), None);
    let (code, j, err) = call(&args("tdx-quote", &t.quote, &pcs.url(), cache.path(), AT));
    assert_eq!(code, 0, "{j} {err}");
    assert_eq!(j["claims"]["tdx"]["tcb_status"], "UpToDate");
    assert_eq!(pcs.hits(), 4);
    let mut cached: Vec<String> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    cached.sort();
    assert_eq!(
        cached,
        [
            "pckcrl-platform.json",
            "qe-identity.json",
            "rootcacrl.json",
            "tcb-B0C06F000000.json"
        ]
    );
    drop(pcs);

    // 2. From the cache, the service gone (same URL, nothing listening).
    let closed = closed_url();
    let (code, j, err) = call(&args("tdx-quote", &t.quote, &closed, cache.path(), AT));
    assert_eq!(code, 0, "{j} {err}");
    // azure-tdx-vtpm takes the same cached collateral for its TD quote: the quote verifies and
    // the (made-up) HCL report is what is refused.
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let ev = dir.path().join("azure-tdx-evidence.json");
    let quote = std::fs::read(&t.quote).unwrap();
    let mut hcl = vec![0u8; 0x4D4];
    hcl[..4].copy_from_slice(b"HCLA");
    std::fs::write(
        &ev,
        serde_json::to_vec(&serde_json::json!({
            "tpm_quote": {"signature": "00", "message": "00", "pcrs": ["00"]},
            "hcl_report": URL_SAFE_NO_PAD.encode(&hcl),
            "td_quote": URL_SAFE_NO_PAD.encode(&quote),
        }))
        .unwrap(),
    )
    .unwrap();
    let (code, j, err) = call(&args("azure-tdx-vtpm", &ev, &closed, cache.path(), AT));
    assert_eq!(code, 1, "{j} {err}");
    let reasons = checks(&j, "reasons");
    assert!(!reasons.contains(&"collateral-fetch".to_string()), "{j}");
    assert!(!reasons.iter().any(|r| r.starts_with("tdx-")), "{j}");

    // 3. At a time past the TCB info's, QE identity's and PCK CRL's nextUpdate (2025-07-19)
    //    those three are fetched again; the root CA CRL (next update 2026-04-03) is not. The
    //    refetched collateral is the same, so the quote is refused for expired collateral.
    let late = "2025-08-01T00:00:00Z";
    let pcs = PcsStandIn::start(pcs_routes(&t.collateral), None);
    let (code, j, err) = call(&args("tdx-quote", &t.quote, &pcs.url(), cache.path(), late));
    assert_eq!(pcs.hits(), 3, "{j} {err}");
    assert_eq!(
        (code, checks(&j, "reasons")),
        (1, vec!["tdx-validity".to_string()])
    );
    drop(pcs);

    // 4. Garbage answers: refused, the URL named.
    let bad = PcsStandIn::start(Routes::new(), Some(b"<html>maintenance</html>".to_vec()));
    let empty = tempfile::tempdir().unwrap();
    let (code, j, err) = call(&args("tdx-quote", &t.quote, &bad.url(), empty.path(), AT));
    assert_eq!(
        (code, checks(&j, "reasons")),
        (1, vec!["collateral-fetch".to_string()]),
        "{err}"
    );
    let actual = j["reasons"][0]["actual"].as_str().unwrap();
    let want = format!(
        "GET {}/tdx/certification/v4/tcb?fmspc=B0C06F000000",
        bad.url()
    );
    assert!(actual.starts_with(&want), "{actual}");
    assert!(actual.contains("tcbInfo"), "{actual}");
    // Nothing cached from a garbage answer.
    assert_eq!(std::fs::read_dir(empty.path()).unwrap().count(), 0);

    // 5. No service at all, nothing cached: refused, the URL named.
    let (code, j, _) = call(&args("tdx-quote", &t.quote, &closed, empty.path(), AT));
    assert_eq!(
        (code, checks(&j, "reasons")),
        (1, vec!["collateral-fetch".to_string()])
    );
    assert!(
        j["reasons"][0]["actual"]
            .as_str()
            .unwrap()
            .contains(&closed),
        "{j}"
    );
}
