//! TDX checks the captured vector cannot reach, on quotes from a stand-in Intel PKI
//! (`support/tdx_pki.rs`): revoked PCK, TCB statuses, policy fields, measurements, report
//! data, the wrong root, and the `qemu-tdx` / `azure-tdx` validators end to end.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/tdx_pki.rs"]
mod tdx_pki;

use std::collections::BTreeMap;
use std::sync::Arc;

use attestation::insecure_software_tpm::InsecureSoftwareTpm;
use attestation::tdx::{
    self, AzureTdxInstanceInfo, AzureTdxValidator, Chain, Collateral, QemuTdxDocument,
    QemuTdxValidator, Quote, TcbStatus, TdxError, TdxPolicy,
};
use attestation::{
    make_extra_data, Measurement, Measurements, ValidationError, Validator, Variant,
};
use tdx_pki::{Options, TestIntel, NOW};

fn policy(pki: &TestIntel) -> TdxPolicy {
    TdxPolicy {
        root_key: pki.root_key(),
        ..TdxPolicy::default()
    }
}

fn run(quote: &[u8], c: &Collateral, p: &TdxPolicy) -> Result<tdx::TdxClaims, TdxError> {
    tdx::verify(&Quote::parse(quote)?, c, NOW, p)
}

#[test]
fn standin_quote_verifies_only_with_its_root() {
    let pki = TestIntel::new();
    let (q, c) = pki.quote(&Options::default());
    let claims = run(&q, &c, &policy(&pki)).unwrap();
    assert_eq!(claims.tcb_status, TcbStatus::UpToDate);
    assert_eq!(claims.module_tcb_status, Some(TcbStatus::UpToDate));
    assert_eq!(claims.advisory_ids, vec!["INTEL-SA-TEST1".to_string()]);
    // The default policy trusts Intel's root, not this one.
    let err = run(&q, &c, &TdxPolicy::default()).unwrap_err();
    assert!(
        matches!(
            err,
            TdxError::UntrustedRoot {
                chain: Chain::Pck,
                ..
            }
        ),
        "{err}"
    );
    assert!(err
        .to_string()
        .contains(&hex::encode(tdx::INTEL_SGX_ROOT_CA_KEY)));
    // intelRootKey given as a PEM certificate, as in Go's config.
    let p = TdxPolicy::default()
        .with_root_certificate(pki.root_pem().as_bytes())
        .unwrap();
    assert_eq!(p.root_key, pki.root_key());
    run(&q, &c, &p).unwrap();
    // Another stand-in's chain in the quote, this one's collateral: the PCK chain's root
    // is not the trusted one.
    let other = TestIntel::new();
    let (q2, _) = other.quote(&Options::default());
    assert!(matches!(
        run(&q2, &c, &policy(&pki)),
        Err(TdxError::UntrustedRoot {
            chain: Chain::Pck,
            ..
        })
    ));
    // This quote with another PKI's collateral: the collateral's chains are untrusted.
    let (_, c2) = other.quote(&Options::default());
    let err = run(&q, &c2, &policy(&pki)).unwrap_err();
    assert!(
        matches!(err, TdxError::Crl { .. } | TdxError::UntrustedRoot { .. }),
        "{err}"
    );
}

#[test]
fn revoked_pck_is_refused() {
    let pki = TestIntel::new();
    let (q, c) = pki.quote(&Options {
        revoke_pck: true,
        ..Options::default()
    });
    let err = run(&q, &c, &policy(&pki)).unwrap_err();
    let TdxError::Revoked {
        ref serial, crl, ..
    } = err
    else {
        panic!("{err}")
    };
    assert_eq!((serial.as_str(), crl), ("012345", "PCK CRL"));
}

#[test]
fn tcb_status_is_computed_and_judged_by_the_policy() {
    let pki = TestIntel::new();
    let cases = [
        ("UpToDate", "UpToDate", TcbStatus::UpToDate),
        (
            "SWHardeningNeeded",
            "UpToDate",
            TcbStatus::SWHardeningNeeded,
        ),
        ("OutOfDate", "UpToDate", TcbStatus::OutOfDate),
        ("UpToDate", "OutOfDate", TcbStatus::OutOfDate),
        (
            "ConfigurationNeeded",
            "OutOfDate",
            TcbStatus::OutOfDateConfigurationNeeded,
        ),
        ("Revoked", "UpToDate", TcbStatus::Revoked),
    ];
    for (platform, qe, want) in cases {
        let (q, c) = pki.quote(&Options {
            platform_status: platform,
            qe_status: qe,
            ..Options::default()
        });
        let default_ok = want == TcbStatus::UpToDate;
        match run(&q, &c, &policy(&pki)) {
            Ok(claims) => {
                assert!(default_ok, "{platform}/{qe} accepted");
                assert_eq!(claims.tcb_status, want);
            }
            Err(TdxError::TcbStatus { status, .. }) => {
                assert!(!default_ok, "{platform}/{qe} refused");
                assert_eq!(status, want);
            }
            Err(e) => panic!("{platform}/{qe}: {e}"),
        }
        // Accepting every status still refuses Revoked.
        let all = TdxPolicy {
            accepted_tcb_statuses: TcbStatus::ALL.into_iter().collect(),
            ..policy(&pki)
        };
        let r = run(&q, &c, &all);
        assert_eq!(
            r.is_ok(),
            want != TcbStatus::Revoked,
            "{platform}/{qe}: {r:?}"
        );
    }
    // TDX module SVN below its identity's UpToDate level; TEE TCB SVN below every level.
    let mut svn = tdx_pki::TEE_TCB_SVN;
    svn[0] = 3;
    let (q, c) = pki.quote(&Options {
        tee_tcb_svn: svn,
        ..Options::default()
    });
    assert!(matches!(
        run(&q, &c, &policy(&pki)),
        Err(TdxError::TcbStatus {
            status: TcbStatus::OutOfDate,
            ..
        })
    ));
    svn[0] = 1;
    let (q, c) = pki.quote(&Options {
        tee_tcb_svn: svn,
        ..Options::default()
    });
    assert!(matches!(
        run(&q, &c, &policy(&pki)),
        Err(TdxError::TcbInfo(_))
    ));
    // A module version without an identity in the TCB info.
    svn = tdx_pki::TEE_TCB_SVN;
    svn[1] = 7;
    let (q, c) = pki.quote(&Options {
        tee_tcb_svn: svn,
        ..Options::default()
    });
    let err = run(&q, &c, &policy(&pki)).unwrap_err();
    assert!(err.to_string().contains("TDX_07"), "{err}");
}

#[test]
fn policy_fields_measurements_and_report_data() {
    let pki = TestIntel::new();
    let rd = [0x42u8; 64];
    let (q, c) = pki.quote(&Options {
        report_data: rd,
        ..Options::default()
    });
    let base = TdxPolicy {
        mr_seam: Some(tdx_pki::MR_SEAM),
        xfam: Some(tdx_pki::XFAM),
        min_tee_tcb_svn: tdx_pki::TEE_TCB_SVN,
        mrtd: Some(tdx_pki::MRTD),
        rtmr: [0, 1, 2, 3].map(|i| Some(tdx_pki::rtmr(i))),
        report_data: Some(rd),
        ..policy(&pki)
    };
    run(&q, &c, &base).unwrap();
    let mut svn = tdx_pki::TEE_TCB_SVN;
    svn[2] = 4;
    let cases: Vec<(&str, TdxPolicy)> = vec![
        (
            "MRSEAM (mrSeam)",
            TdxPolicy {
                mr_seam: Some([1; 48]),
                ..base.clone()
            },
        ),
        (
            "XFAM (xfam)",
            TdxPolicy {
                xfam: Some([1; 8]),
                ..base.clone()
            },
        ),
        (
            "QE SVN (qeSVN)",
            TdxPolicy {
                min_qe_svn: 1,
                ..base.clone()
            },
        ),
        (
            "PCE SVN (pceSVN)",
            TdxPolicy {
                min_pce_svn: 1,
                ..base.clone()
            },
        ),
        (
            "TEE TCB SVN (teeTCBSVN)",
            TdxPolicy {
                min_tee_tcb_svn: svn,
                ..base.clone()
            },
        ),
        (
            "QE vendor ID (qeVendorID)",
            TdxPolicy {
                qe_vendor_id: Some([0; 16]),
                ..base.clone()
            },
        ),
    ];
    for (field, p) in cases {
        let err = run(&q, &c, &p).unwrap_err();
        assert!(
            matches!(err, TdxError::Policy { field: f, .. } if f == field),
            "{field}: {err}"
        );
    }
    for (i, register) in ["MRTD", "RTMR0", "RTMR1", "RTMR2", "RTMR3"]
        .into_iter()
        .enumerate()
    {
        let mut p = base.clone();
        if i == 0 {
            p.mrtd = Some([0; 48]);
        } else {
            p.rtmr[i - 1] = Some([0; 48]);
        }
        let err = run(&q, &c, &p).unwrap_err();
        assert!(
            matches!(err, TdxError::Measurement { register: r, .. } if r == register),
            "{err}"
        );
        assert!(err.to_string().contains(&"00".repeat(48)), "{err}");
    }
    let mut wrong = rd;
    wrong[63] ^= 1;
    let err = run(
        &q,
        &c,
        &TdxPolicy {
            report_data: Some(wrong),
            ..base.clone()
        },
    )
    .unwrap_err();
    assert!(matches!(err, TdxError::ReportData { .. }), "{err}");
}

#[test]
fn debug_td_is_refused_unless_allowed() {
    let pki = TestIntel::new();
    let mut attrs = tdx_pki::TD_ATTRIBUTES;
    attrs[0] |= 1;
    let (q, c) = pki.quote(&Options {
        td_attributes: attrs,
        ..Options::default()
    });
    assert!(matches!(
        run(&q, &c, &policy(&pki)),
        Err(TdxError::Debug { .. })
    ));
    let claims = run(
        &q,
        &c,
        &TdxPolicy {
            allow_debug: true,
            ..policy(&pki)
        },
    )
    .unwrap();
    assert!(claims.td_report.debug());
}

const NONCE: &[u8] = b"nonce from the verifier";
const USER_DATA: &[u8] = b"sha256 of the aTLS key";

fn tdx_measurements(warn_rtmr3: bool) -> Measurements {
    let mut m = BTreeMap::new();
    m.insert(0, Measurement::enforced(tdx_pki::MRTD));
    m.insert(1, Measurement::enforced(tdx_pki::rtmr(0)));
    m.insert(3, Measurement::enforced(tdx_pki::rtmr(2)));
    if warn_rtmr3 {
        m.insert(4, Measurement::warn_only([0x77; 48]));
    }
    Measurements::new(m).unwrap()
}

#[test]
fn qemu_tdx_validator_end_to_end() {
    let pki = TestIntel::new();
    let mut rd = [0u8; 64];
    rd[..32].copy_from_slice(&make_extra_data(USER_DATA, NONCE));
    let (q, c) = pki.quote(&Options {
        report_data: rd,
        ..Options::default()
    });
    let doc = serde_json::to_vec(&QemuTdxDocument {
        raw_quote: q.clone(),
        user_data: USER_DATA.to_vec(),
    })
    .unwrap();
    let v = QemuTdxValidator::new(
        tdx_measurements(true),
        policy(&pki),
        Arc::new(c.clone()),
        Some(NOW),
    );
    let ok = v.validate(&doc, NONCE).unwrap();
    assert_eq!(ok.variant(), Variant::QemuTdx);
    assert_eq!(ok.user_data(), USER_DATA);
    assert_eq!(ok.pcrs()[&0], tdx_pki::MRTD.to_vec());
    assert_eq!(ok.pcrs()[&4], tdx_pki::rtmr(3).to_vec());
    assert_eq!(ok.warnings().len(), 1);
    assert_eq!(ok.warnings()[0].index, 4);
    // Another nonce, or other user data: report data does not bind them.
    assert!(matches!(
        v.validate(&doc, b"another nonce"),
        Err(ValidationError::NonceMismatch)
    ));
    let other = serde_json::to_vec(&QemuTdxDocument {
        raw_quote: q.clone(),
        user_data: b"other".to_vec(),
    })
    .unwrap();
    assert!(matches!(
        v.validate(&other, NONCE),
        Err(ValidationError::NonceMismatch)
    ));
    // An enforced measurement that differs.
    let mut m = tdx_measurements(false).into_inner();
    m.insert(2, Measurement::enforced([0x99; 48]));
    let strict = QemuTdxValidator::new(
        Measurements::new(m).unwrap(),
        policy(&pki),
        Arc::new(c.clone()),
        Some(NOW),
    );
    let err = strict.validate(&doc, NONCE).unwrap_err();
    assert!(
        matches!(err, ValidationError::Measurements(ref mm) if mm[0].index == 2),
        "{err}"
    );
    // Expired collateral with the system clock far after its window is refused; so is the
    // default (Intel) root.
    let late = QemuTdxValidator::new(
        tdx_measurements(false),
        policy(&pki),
        Arc::new(c.clone()),
        Some(NOW + 400 * 86400),
    );
    let err = late.validate(&doc, NONCE).unwrap_err();
    assert!(
        matches!(err, ValidationError::Refused(ref r) if r[0].check == tdx::check::VALIDITY),
        "{err}"
    );
    let intel = QemuTdxValidator::new(
        tdx_measurements(false),
        TdxPolicy::default(),
        Arc::new(c),
        Some(NOW),
    );
    let err = intel.validate(&doc, NONCE).unwrap_err();
    assert!(
        matches!(err, ValidationError::Refused(ref r) if r[0].check == tdx::check::ROOT),
        "{err}"
    );
    // The claims travel with the verified attestation.
    assert_eq!(ok.claims()["tcb_status"], "UpToDate");
    assert_eq!(ok.claims()["mrtd"], hex::encode(tdx_pki::MRTD));
    for junk in [
        &b""[..],
        b"{}",
        b"{\"RawQuote\":\"AAAA\",\"UserData\":\"\"}",
    ] {
        assert!(matches!(
            v.validate(junk, NONCE),
            Err(ValidationError::Malformed(_))
        ));
    }
}

fn ec_runtime_data(tpm: &InsecureSoftwareTpm) -> Vec<u8> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let ak = attestation::tpm2::TpmtPublic::decode(tpm.ak_public()).unwrap();
    let attestation::tpm2::PublicKey::Ecc { x, y, .. } = ak.public_key() else {
        unreachable!()
    };
    serde_json::json!({
        "keys": [{"kid": "HCLAkPub", "kty": "EC", "crv": "P-256",
                  "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)}],
        "vm-configuration": {"console-enabled": true}
    })
    .to_string()
    .into_bytes()
}

#[test]
fn azure_tdx_validator_end_to_end() {
    use sha2::{Digest, Sha256};
    let pki = TestIntel::new();
    let mut tpm = InsecureSoftwareTpm::generate(Variant::AzureTdx).unwrap();
    tpm.extend(4, b"kernel");
    let runtime = ec_runtime_data(&tpm);
    let mut rd = [0u8; 64];
    rd[..32].copy_from_slice(&Sha256::digest(&runtime));
    let (q, c) = pki.quote(&Options {
        report_data: rd,
        ..Options::default()
    });
    let info = |quote: &[u8], runtime: &[u8]| {
        serde_json::to_vec(&AzureTdxInstanceInfo {
            attestation_report: quote.to_vec(),
            runtime_data: runtime.to_vec(),
        })
        .unwrap()
    };
    let mut m = BTreeMap::new();
    m.insert(4, Measurement::enforced(tpm.pcrs()[&4].clone()));
    let v = AzureTdxValidator::new(
        Measurements::new(m).unwrap(),
        policy(&pki),
        Arc::new(c),
        Some(NOW),
    );
    let doc = tpm
        .document(USER_DATA, NONCE, Some(info(&q, &runtime)))
        .unwrap()
        .to_json();
    let ok = v.validate(&doc, NONCE).unwrap();
    assert_eq!(ok.variant(), Variant::AzureTdx);
    assert_eq!(ok.user_data(), USER_DATA);
    assert_eq!(ok.ak_fingerprint(), &tpm.ak_fingerprint().0);
    assert_eq!(ok.claims()["tcb_status"], "UpToDate");
    let (_, claims) = v.trusted_ak(&info(&q, &runtime)).unwrap();
    assert_eq!(claims.tcb_status, TcbStatus::UpToDate);
    // Stale nonce.
    assert!(matches!(
        v.validate(&doc, b"next"),
        Err(ValidationError::NonceMismatch)
    ));
    // Runtime data not bound by the quote (another AK swapped in).
    let other = InsecureSoftwareTpm::generate(Variant::AzureTdx).unwrap();
    let swapped = ec_runtime_data(&other);
    let doc2 = tpm
        .document(USER_DATA, NONCE, Some(info(&q, &swapped)))
        .unwrap()
        .to_json();
    let err = v.validate(&doc2, NONCE).unwrap_err();
    assert!(
        matches!(err, ValidationError::UntrustedKey(ref m) if m.contains("runtime data")),
        "{err}"
    );
    // The HCL names another AK than the one that signed the TPM quote.
    let doc3 = other
        .document(USER_DATA, NONCE, Some(info(&q, &runtime)))
        .unwrap()
        .to_json();
    let err = v.validate(&doc3, NONCE).unwrap_err();
    assert!(
        matches!(err, ValidationError::UntrustedKey(ref m) if m.contains("HCLAkPub")),
        "{err}"
    );
    // No instance info.
    let doc4 = tpm.document(USER_DATA, NONCE, None).unwrap().to_json();
    assert!(matches!(
        v.validate(&doc4, NONCE),
        Err(ValidationError::Malformed(_))
    ));
}

#[test]
fn validator_for_builds_tdx_validators_only_with_collateral() {
    use attestation::{validator_for, ValidatorPolicy};
    let pki = TestIntel::new();
    let mut rd = [0u8; 64];
    rd[..32].copy_from_slice(&make_extra_data(USER_DATA, NONCE));
    let (q, c) = pki.quote(&Options {
        report_data: rd,
        ..Options::default()
    });
    let doc = serde_json::to_vec(&QemuTdxDocument {
        raw_quote: q,
        user_data: USER_DATA.to_vec(),
    })
    .unwrap();
    for variant in [Variant::QemuTdx, Variant::AzureTdx] {
        let err = validator_for(variant, tdx_measurements(false), ValidatorPolicy::default())
            .err()
            .unwrap();
        assert!(err.to_string().contains("collateral"), "{err}");
    }
    let policy = ValidatorPolicy {
        tdx: policy(&pki),
        tdx_collateral: Some(Arc::new(c)),
        now: Some(NOW),
        ..ValidatorPolicy::default()
    };
    let v = validator_for(Variant::QemuTdx, tdx_measurements(false), policy.clone()).unwrap();
    assert_eq!(v.variant(), Variant::QemuTdx);
    v.validate(&doc, NONCE).unwrap();
    let v = validator_for(Variant::AzureTdx, tdx_measurements(false), policy).unwrap();
    assert_eq!(v.variant(), Variant::AzureTdx);
    assert!(matches!(
        v.validate(&doc, NONCE),
        Err(ValidationError::Malformed(_))
    ));
}

/// Trustee-layout Azure TDX evidence from the stand-in PKI and the fixed test RSA AK.
fn azure_evidence(pki: &TestIntel, nonce: &[u8], tamper: &str) -> (Vec<u8>, Collateral) {
    use attestation::tpm2::TpmsAttest;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use ring::signature::{RsaKeyPair, RsaPublicKeyComponents};
    use sha2::{Digest, Sha256};
    let key = RsaKeyPair::from_pkcs8(include_bytes!("data/test-rsa2048-ak.pk8")).unwrap();
    let c = RsaPublicKeyComponents::<Vec<u8>>::from(key.public());
    let runtime = serde_json::json!({"keys": [{"kid": "HCLAkPub", "kty": "RSA",
        "e": URL_SAFE_NO_PAD.encode(&c.e), "n": URL_SAFE_NO_PAD.encode(&c.n)}]})
    .to_string();
    let mut rd = [0u8; 64];
    rd[..32].copy_from_slice(&Sha256::digest(runtime.as_bytes()));
    let (td_quote, col) = pki.quote(&Options {
        report_data: rd,
        ..Options::default()
    });
    let mut hcl = vec![0u8; 0x4D4];
    hcl[..4].copy_from_slice(b"HCLA");
    hcl[0x20 + 128..0x20 + 192].copy_from_slice(&rd);
    if tamper == "tdreport" {
        hcl[0x20 + 190] ^= 1;
    }
    hcl[0x4C0 + 8..0x4C0 + 12].copy_from_slice(&4u32.to_le_bytes());
    hcl[0x4C0 + 16..0x4C0 + 20].copy_from_slice(&(runtime.len() as u32).to_le_bytes());
    hcl.extend(runtime.as_bytes());
    if tamper == "runtime" {
        let n = hcl.len();
        hcl[n - 3] ^= 1;
    }
    let pcrs: BTreeMap<u32, Vec<u8>> = (0..24).map(|i| (i, vec![i as u8; 32])).collect();
    // The qualified signer (the AK's TPM name) is not checked by this layout's verifier.
    let attest = TpmsAttest::sha256_quote(vec![0; 34], nonce.to_vec(), &pcrs).encode();
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        &attest,
        &mut sig,
    )
    .unwrap();
    if tamper == "signature" {
        sig[7] ^= 1;
    }
    let evidence = serde_json::json!({
        "tpm_quote": {"signature": hex::encode(&sig), "message": hex::encode(&attest),
                      "pcrs": pcrs.values().map(hex::encode).collect::<Vec<_>>()},
        "hcl_report": URL_SAFE_NO_PAD.encode(&hcl),
        "td_quote": URL_SAFE_NO_PAD.encode(&td_quote),
    });
    (serde_json::to_vec(&evidence).unwrap(), col)
}

#[test]
fn azure_tdx_evidence_layout_verifies_and_names_each_failure() {
    use attestation::tdx::{verify_azure_tdx_evidence, AzureTdxEvidence, AzureTdxEvidenceError};
    let pki = TestIntel::new();
    let nonce = b"challenge";
    let (json, col) = azure_evidence(&pki, nonce, "");
    let e = AzureTdxEvidence::from_json(&json).unwrap();
    let claims = verify_azure_tdx_evidence(&e, &col, NOW, &policy(&pki), Some(nonce)).unwrap();
    assert_eq!(claims.tpm_nonce, nonce);
    assert_eq!(claims.tdx.tcb_status, TcbStatus::UpToDate);
    assert_eq!(claims.pcrs.len(), 24);
    assert_eq!(claims.to_json()["ak"]["bits"], 2048);
    // Without a nonce the quote's is reported; with another one it is refused.
    verify_azure_tdx_evidence(&e, &col, NOW, &policy(&pki), None).unwrap();
    assert!(matches!(
        verify_azure_tdx_evidence(&e, &col, NOW, &policy(&pki), Some(b"other")),
        Err(AzureTdxEvidenceError::Nonce { .. })
    ));
    assert!(matches!(
        verify_azure_tdx_evidence(&e, &col, NOW, &TdxPolicy::default(), Some(nonce)),
        Err(AzureTdxEvidenceError::Tdx(TdxError::UntrustedRoot { .. }))
    ));
    let mut pcrs = e.clone();
    pcrs.pcrs.get_mut(&7).unwrap()[0] ^= 1;
    assert!(matches!(
        verify_azure_tdx_evidence(&pcrs, &col, NOW, &policy(&pki), Some(nonce)),
        Err(AzureTdxEvidenceError::TpmQuote(_))
    ));
    for (tamper, check) in [
        ("tdreport", "binding"),
        ("runtime", "runtime"),
        ("signature", "vTPM quote"),
    ] {
        let (json, col) = azure_evidence(&pki, nonce, tamper);
        let e = AzureTdxEvidence::from_json(&json).unwrap();
        let err = verify_azure_tdx_evidence(&e, &col, NOW, &policy(&pki), Some(nonce)).unwrap_err();
        assert!(err.to_string().contains(check), "{tamper}: {err}");
    }
    for junk in [&b"{}"[..], b"[]", b"{\"tpm_quote\":{}}"] {
        assert!(matches!(
            AzureTdxEvidence::from_json(junk),
            Err(AzureTdxEvidenceError::Malformed(_))
        ));
    }
}
