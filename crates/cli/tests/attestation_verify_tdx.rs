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
