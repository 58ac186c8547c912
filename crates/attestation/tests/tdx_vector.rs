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
