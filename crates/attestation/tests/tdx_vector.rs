//! Real evidence: an Intel TDX DCAP quote v4 with its PCS collateral (FMSPC B0C06F000000),
//! verified offline at 2025-06-20T10:16:03Z (inside every window of the captured collateral).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use attestation::tdx::{
    self, parse_rfc3339, Chain, Collateral, Quote, TcbStatus, TdxError, TdxPolicy,
};

struct Vector {
    quote: Vec<u8>,
    collateral: Collateral,
}

fn load() -> Option<Vector> {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/testvectors/tdx-dcap"
    );
    let Ok(quote) = std::fs::read(format!("{dir}/tdx_quote")) else {
        eprintln!("SKIPPED: {dir} not found");
        return None;
    };
    let json = std::fs::read(format!("{dir}/tdx_quote_collateral.json")).unwrap();
    Some(Vector {
        quote,
        collateral: Collateral::from_json(&json).unwrap(),
    })
}

fn now() -> i64 {
    parse_rfc3339("2025-06-20T10:16:03Z").unwrap()
}

fn check(quote: &[u8], c: &Collateral, at: i64, p: &TdxPolicy) -> Result<tdx::TdxClaims, TdxError> {
    tdx::verify(&Quote::parse(quote)?, c, at, p)
}

#[test]
fn tdx_quote_verifies_up_to_date() {
    let Some(v) = load() else { return };
    let claims = check(&v.quote, &v.collateral, now(), &TdxPolicy::default()).unwrap();
    assert_eq!(claims.tcb_status, TcbStatus::UpToDate);
    assert_eq!(claims.platform_tcb_status, TcbStatus::UpToDate);
    assert_eq!(claims.qe_tcb_status, TcbStatus::UpToDate);
    assert_eq!(claims.module_tcb_status, Some(TcbStatus::UpToDate));
    assert_eq!(hex::encode_upper(claims.pck.fmspc), "B0C06F000000");
    assert_eq!(claims.pck.pce_svn, 11);
    assert_eq!(claims.tcb_date, "2024-03-13T00:00:00Z");
    assert_eq!(claims.tcb_evaluation_data_number, 17);
    assert_eq!(
        hex::encode(claims.td_report.mrtd),
        "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7"
    );
    assert_eq!(
        hex::encode(claims.td_report.tee_tcb_svn),
        "06010300000000000000000000000000"
    );
    assert!(!claims.td_report.debug());
    // The PCK CRL's nextUpdate is the first window to close.
    assert_eq!(
        tdx::fmt_unix(claims.collateral_valid_until),
        "2025-07-19T10:00:35Z"
    );
    let json = claims.to_json();
    assert_eq!(json["tcb_status"], "UpToDate");
    assert_eq!(json["xfam"], "e702060000000000");
}

/// Which check a one-byte change at `pos` of the quote must trip.
fn expected_check(pos: usize, e: &TdxError) -> bool {
    match pos {
        // version, attestation key type, TEE type
        0..=7 => matches!(e, TdxError::Quote(_)),
        // the rest of the header and the TD report are signed by the attestation key
        8..=631 => matches!(e, TdxError::QuoteSignature),
        // signature data length
        632..=635 => matches!(e, TdxError::Quote(_)),
        636..=699 => matches!(e, TdxError::QuoteSignature),
        // attestation key: its hash no longer matches the QE report data
        700..=763 => matches!(e, TdxError::QeBinding { .. }),
        // certification data type and size
        764..=769 => matches!(e, TdxError::Quote(_)),
        // QE report and its signature
        770..=1217 => matches!(e, TdxError::QeReportSignature),
        // QE auth data length
        1218..=1219 => matches!(e, TdxError::Quote(_)),
        // QE auth data
        1220..=1251 => matches!(e, TdxError::QeBinding { .. }),
        // PCK chain type and size
        1252..=1257 => matches!(e, TdxError::Quote(_)),
        // PEM text of the PCK chain (incl. its NUL terminator)
        1258..=4935 => matches!(
            e,
            TdxError::Chain {
                chain: Chain::Pck,
                ..
            }
        ),
        // zero padding after the signature data
        _ => matches!(e, TdxError::Quote(_)),
    }
}

#[test]
fn every_quote_byte_is_checked() {
    let Some(v) = load() else { return };
    let p = TdxPolicy::default();
    let mut tally = std::collections::BTreeMap::<String, usize>::new();
    for pos in 0..v.quote.len() {
        let flip = 0x01u8;
        let mut q = v.quote.clone();
        q[pos] ^= flip;
        let Err(err) = check(&q, &v.collateral, now(), &p) else {
            panic!("byte {pos} ^ {flip:#04x} went unnoticed")
        };
        assert!(expected_check(pos, &err), "byte {pos} ^ {flip:#04x}: {err}");
        let name = format!("{err:?}");
        *tally
            .entry(name[..name.find([' ', '(', '{']).unwrap_or(name.len())].to_string())
            .or_default() += 1;
    }
    eprintln!("one-byte changes of the quote, by refusing check: {tally:?}");
    // Truncations never panic and are refused.
    for cut in 0..v.quote.len() {
        if v.quote[cut..].iter().any(|&b| b != 0) {
            assert!(
                check(&v.quote[..cut], &v.collateral, now(), &p).is_err(),
                "cut {cut}"
            );
        }
    }
}

/// Flips every byte of one decoded collateral field; `ok` accepts the check that must refuse.
fn flip_field(
    v: &Vector,
    name: &str,
    get: fn(&mut Collateral) -> &mut Vec<u8>,
    ok: fn(&TdxError) -> bool,
) -> usize {
    let p = TdxPolicy::default();
    let mut base = v.collateral.clone();
    let len = get(&mut base).len();
    for pos in 0..len {
        let mut c = v.collateral.clone();
        get(&mut c)[pos] ^= 0x01;
        let Err(err) = check(&v.quote, &c, now(), &p) else {
            panic!("{name} byte {pos} went unnoticed")
        };
        assert!(ok(&err), "{name} byte {pos}: {err}");
    }
    len
}

#[test]
fn every_signed_collateral_byte_is_checked() {
    let Some(v) = load() else { return };
    let mut total = 0;
    total += flip_field(
        &v,
        "root_ca_crl",
        |c| &mut c.root_ca_crl,
        |e| {
            matches!(
                e,
                TdxError::Crl {
                    crl: "root CA CRL",
                    ..
                }
            )
        },
    );
    total += flip_field(
        &v,
        "pck_crl",
        |c| &mut c.pck_crl,
        |e| matches!(e, TdxError::Crl { crl: "PCK CRL", .. }),
    );
    total += flip_field(
        &v,
        "tcb_info_signature",
        |c| &mut c.tcb_info_signature,
        |e| matches!(e, TdxError::CollateralSignature { what: "TCB info" }),
    );
    total += flip_field(
        &v,
        "qe_identity_signature",
        |c| &mut c.qe_identity_signature,
        |e| {
            matches!(
                e,
                TdxError::CollateralSignature {
                    what: "QE identity"
                }
            )
        },
    );
    // Text fields: every byte (ASCII; bit 0 flips keep them ASCII).
    type Text = fn(&Collateral) -> &String;
    type SetText = fn(&mut Collateral, String);
    type Check = fn(&TdxError) -> bool;
    let texts: [(&str, Text, SetText, Check); 5] = [
        (
            "pck_crl_issuer_chain",
            |c| &c.pck_crl_issuer_chain,
            |c, s| c.pck_crl_issuer_chain = s,
            |e| {
                matches!(
                    e,
                    TdxError::Chain {
                        chain: Chain::PckCrlIssuer,
                        ..
                    }
                )
            },
        ),
        (
            "tcb_info_issuer_chain",
            |c| &c.tcb_info_issuer_chain,
            |c, s| c.tcb_info_issuer_chain = s,
            |e| {
                matches!(
                    e,
                    TdxError::Chain {
                        chain: Chain::TcbInfoIssuer,
                        ..
                    }
                )
            },
        ),
        (
            "qe_identity_issuer_chain",
            |c| &c.qe_identity_issuer_chain,
            |c, s| c.qe_identity_issuer_chain = s,
            |e| {
                matches!(
                    e,
                    TdxError::Chain {
                        chain: Chain::QeIdentityIssuer,
                        ..
                    }
                )
            },
        ),
        (
            "tcb_info",
            |c| &c.tcb_info,
            |c, s| c.tcb_info = s,
            |e| matches!(e, TdxError::CollateralSignature { what: "TCB info" }),
        ),
        (
            "qe_identity",
            |c| &c.qe_identity,
            |c, s| c.qe_identity = s,
            |e| {
                matches!(
                    e,
                    TdxError::CollateralSignature {
                        what: "QE identity"
                    }
                )
            },
        ),
    ];
    let p = TdxPolicy::default();
    for (name, get, set, ok) in texts {
        let text = get(&v.collateral).clone().into_bytes();
        assert!(text.is_ascii(), "{name}");
        for pos in 0..text.len() {
            let mut t = text.clone();
            t[pos] ^= 0x01;
            let mut c = v.collateral.clone();
            set(&mut c, String::from_utf8(t).unwrap());
            let Err(err) = check(&v.quote, &c, now(), &p) else {
                panic!("{name} byte {pos} went unnoticed")
            };
            assert!(ok(&err), "{name} byte {pos}: {err}");
        }
        total += text.len();
    }
    eprintln!("{total} collateral bytes flipped, each refused by its check");
    assert!(total > 10_000, "{total}");
}

#[test]
fn collateral_outside_its_window_is_refused_unless_now_says_otherwise() {
    let Some(v) = load() else { return };
    let p = TdxPolicy::default();
    let at = |s: &str| check(&v.quote, &v.collateral, parse_rfc3339(s).unwrap(), &p);
    // After the PCK CRL's nextUpdate (2025-07-19T10:00:35Z).
    let err = at("2025-07-19T10:00:36Z").unwrap_err();
    assert!(
        matches!(err, TdxError::Expired { ref what, .. } if what == "PCK CRL"),
        "{err}"
    );
    assert!(err.to_string().contains("2025-07-19T10:00:35Z"), "{err}");
    // Before the QE identity was issued (2025-06-19T10:32:27Z); the TCB info already was.
    let err = at("2025-06-19T10:20:00Z").unwrap_err();
    assert!(
        matches!(err, TdxError::Expired { ref what, .. } if what == "QE identity"),
        "{err}"
    );
    // Before the TCB signing certificate (2025-05-06) existed.
    let err = at("2025-05-01T00:00:00Z").unwrap_err();
    assert!(matches!(err, TdxError::Expired { .. }), "{err}");
    // Today the captured collateral is stale; verifying "as of" its window works.
    assert!(at("2026-11-29T00:00:00Z").is_err());
    assert_eq!(
        at("2025-07-19T10:00:00Z").unwrap().tcb_status,
        TcbStatus::UpToDate
    );
}

#[test]
fn wrong_root_is_refused() {
    let Some(v) = load() else { return };
    // A policy trusting another root key.
    let mut other = TdxPolicy::default();
    other.root_key[10] ^= 1;
    let err = check(&v.quote, &v.collateral, now(), &other).unwrap_err();
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
    // The pinned constant is the captured chain's root.
    let q = Quote::parse(&v.quote).unwrap();
    let pem = String::from_utf8_lossy(q.pck_chain_pem).to_string();
    let root_pem = &pem[pem.rfind("-----BEGIN").unwrap()..];
    let from_pem = TdxPolicy::default()
        .with_root_certificate(root_pem.trim_end_matches('\0').as_bytes())
        .unwrap();
    assert_eq!(from_pem.root_key, tdx::INTEL_SGX_ROOT_CA_KEY.to_vec());
}

#[test]
fn malformed_collateral_json_is_refused() {
    let Some(v) = load() else { return };
    let json = v.collateral.to_json();
    assert_eq!(Collateral::from_json(&json).unwrap(), v.collateral);
    for cut in (0..json.len()).step_by(97) {
        assert!(matches!(
            Collateral::from_json(&json[..cut]),
            Err(TdxError::Collateral(_))
        ));
    }
    let big = vec![b' '; tdx::MAX_COLLATERAL_LEN + 1];
    assert!(matches!(
        Collateral::from_json(&big),
        Err(TdxError::Collateral(_))
    ));
    let odd_hex = String::from_utf8(json.clone()).unwrap().replacen(
        "\"root_ca_crl\":\"",
        "\"root_ca_crl\":\"0",
        1,
    );
    assert!(matches!(
        Collateral::from_json(odd_hex.as_bytes()),
        Err(TdxError::Collateral(_))
    ));
}
