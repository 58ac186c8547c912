//! Real SEV-SNP evidence: an Azure CVM report (v2, Milan, VCEK) with its VCEK and ASK/ARK,
//! the report inside the Azure vTPM evidence (v3), and AMD's chains for every product.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use attestation::snp::{
    self, check, parse_certs, parse_report, verify_report, AmdCert, AmdRoots, IdKeyPolicy, Product,
    Role, SnpPolicy, Tcb,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

/// 2025-01-01T00:00:00Z: every certificate of the vectors is valid.
const NOW: i64 = 1_735_689_600;

fn dir(sub: &str) -> Option<PathBuf> {
    let d = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/testvectors"
    ))
    .join(sub);
    if d.is_dir() {
        Some(d)
    } else {
        eprintln!("SKIPPED: {} not found", d.display());
        None
    }
}

struct Milan {
    report: Vec<u8>,
    vcek: Vec<u8>,
    chain: Vec<u8>,
    runtime: Vec<u8>,
}

fn milan() -> Option<Milan> {
    let d = dir("snp-azure-milan")?;
    let read = |f: &str| std::fs::read(d.join(f)).unwrap();
    Some(Milan {
        report: read("attestation.bin")[..0x4A0].to_vec(),
        vcek: read("vcek.cert"),
        chain: read("certchain.pem"),
        runtime: read("runtimedata.bin"),
    })
}

fn certs(m: &Milan) -> Vec<AmdCert> {
    let mut c = parse_certs(&m.vcek).unwrap();
    c.extend(parse_certs(&m.chain).unwrap());
    c
}

fn verify(
    report: &[u8],
    certs: &[AmdCert],
    now: i64,
) -> Result<snp::VerifiedReport, attestation::Reason> {
    verify_report(&parse_report(report)?, certs, &AmdRoots::builtin(), now)
}

#[test]
fn azure_milan_report_verifies() {
    let Some(m) = milan() else { return };
    let v = verify(&m.report, &certs(&m), NOW).unwrap();
    assert_eq!(v.product, Product::Milan);
    assert_eq!(v.report.version, 2);
    assert_eq!(v.report.policy, 0x3001f);
    assert_eq!(v.report.vmpl, 0);
    assert_eq!(
        v.reported_tcb(),
        Tcb {
            fmc: None,
            bootloader: 2,
            tee: 0,
            snp: 6,
            microcode: 0x5d
        }
    );
    assert!(hex::encode(v.report.id_key_digest).starts_with("57e229e0"));
    // The HCL runtime data is bound into report_data[0..32].
    assert_eq!(Sha256::digest(&m.runtime)[..], v.report.report_data[..32]);
    // The PEM VCEK (from THIM) is the same certificate.
    let pem = std::fs::read(dir("snp-azure-milan").unwrap().join("vcek.pem")).unwrap();
    assert_eq!(parse_certs(&pem).unwrap()[0].der, m.vcek);
    // Go's default policy (debug off, SMT allowed, VMPL 0) accepts it.
    let out = SnpPolicy::default().check(&v);
    assert!(out.refusals.is_empty(), "{:?}", out.refusals);
}

#[test]
fn id_key_digest_enforcement_policies() {
    let Some(m) = milan() else { return };
    let v = verify(&m.report, &certs(&m), NOW).unwrap();
    let go_default: [u8; 48] = hex::decode("0356215882a825279a85b300b0b742931d113bf7e32dde2e50ffde7ec743ca491ecdd7f336dc28a6e0b2bb57af7a44a3").unwrap().try_into().unwrap();
    let policy = |p| SnpPolicy {
        accepted_id_key_digests: vec![go_default],
        id_key_policy: p,
        ..SnpPolicy::default()
    };
    for p in [IdKeyPolicy::Equal, IdKeyPolicy::MaaFallback] {
        let out = policy(p).check(&v);
        assert_eq!(out.refusals.len(), 1, "{p:?}");
        assert_eq!(out.refusals[0].check, check::ID_KEY_DIGEST);
        assert!(out.refusals[0].actual.starts_with("57e229e0"));
        assert!(out.refusals[0].expected.contains("035621"));
    }
    let out = policy(IdKeyPolicy::WarnOnly).check(&v);
    assert!(out.refusals.is_empty());
    assert_eq!(out.warnings[0].check, check::ID_KEY_DIGEST);
    let mut accept = policy(IdKeyPolicy::Equal);
    accept.accepted_id_key_digests.push(v.report.id_key_digest);
    assert!(accept.check(&v).refusals.is_empty());
}

#[test]
fn policy_refusals_name_the_check() {
    let Some(m) = milan() else { return };
    let v = verify(&m.report, &certs(&m), NOW).unwrap();
    let with = |f: &dyn Fn(&mut snp::VerifiedReport)| {
        let mut v = v.clone();
        f(&mut v);
        SnpPolicy::default()
            .check(&v)
            .refusals
            .iter()
            .map(|r| r.check)
            .collect::<Vec<_>>()
    };
    assert_eq!(with(&|v| v.report.policy |= 1 << 19), [check::DEBUG]);
    assert_eq!(
        with(&|v| v.report.policy |= 1 << 18),
        [check::MIGRATION_AGENT]
    );
    assert_eq!(
        with(&|v| v.report.policy &= !(1 << 17)),
        [check::POLICY_RESERVED]
    );
    assert_eq!(with(&|v| v.report.vmpl = 1), [check::VMPL]);
    assert_eq!(
        with(&|v| v.report.committed_tcb += 1 << 56),
        [check::COMMITTED_TCB]
    );
    let no_smt = SnpPolicy {
        allow_smt: false,
        ..SnpPolicy::default()
    };
    assert_eq!(no_smt.check(&v).refusals[0].check, check::SMT);
    let strict = SnpPolicy {
        permit_provisional_firmware: false,
        ..SnpPolicy::default()
    };
    assert!(strict.check(&v).refusals.is_empty());
    // Minimum versions: the report's launch TCB is bl 2, tee 0, snp 6, ucode 93.
    let min = |bl, snp, ucode| Tcb {
        fmc: None,
        bootloader: bl,
        tee: 0,
        snp,
        microcode: ucode,
    };
    let p = SnpPolicy {
        minimum_launch_tcb: min(2, 6, 93),
        minimum_tcb: Some(min(2, 6, 93)),
        ..SnpPolicy::default()
    };
    assert!(p.check(&v).refusals.is_empty());
    for (bl, snp, ucode) in [(3, 6, 93), (2, 7, 93), (2, 6, 94)] {
        let p = SnpPolicy {
            minimum_launch_tcb: min(bl, snp, ucode),
            minimum_tcb: Some(min(bl, snp, ucode)),
            ..SnpPolicy::default()
        };
        let checks: Vec<_> = p.check(&v).refusals.iter().map(|r| r.check).collect();
        assert_eq!(checks, [check::MINIMUM_LAUNCH_TCB, check::MINIMUM_TCB]);
    }
    // Debug allowed only when the policy says so.
    let mut dbg = v.clone();
    dbg.report.policy |= 1 << 19;
    assert!(SnpPolicy {
        allow_debug: true,
        ..SnpPolicy::default()
    }
    .check(&dbg)
    .refusals
    .is_empty());
}

#[test]
fn report_data_binding() {
    let Some(m) = milan() else { return };
    let r = parse_report(&m.report).unwrap();
    let mut want = r.report_data.to_vec();
    snp::check_report_data(&r, &want).unwrap();
    want[5] ^= 1;
    assert_eq!(
        snp::check_report_data(&r, &want).unwrap_err().check,
        check::REPORT_DATA
    );
    assert_eq!(
        snp::check_report_data(&r, &[0u8; 65]).unwrap_err().check,
        check::REPORT_DATA
    );
}

#[test]
fn certificate_validity_uses_the_given_time() {
    let Some(m) = milan() else { return };
    // The VCEK is valid 2023-08-30 .. 2030-08-30.
    for now in [1_693_000_000 - 86_400 * 10, 1_930_000_000] {
        let err = verify(&m.report, &certs(&m), now).unwrap_err();
        assert_eq!(err.check, check::CERT_VALIDITY, "{err}");
        assert!(err.expected.contains("VCEK"), "{err}");
    }
}

#[test]
fn missing_or_foreign_chain_is_refused() {
    let Some(m) = milan() else { return };
    let Some(roots) = dir("amd-roots") else {
        return;
    };
    let vcek = parse_certs(&m.vcek).unwrap();
    // No ASK.
    assert_eq!(
        verify(&m.report, &vcek, NOW).unwrap_err().check,
        check::CERT_CHAIN
    );
    // No VCEK.
    assert_eq!(
        verify(&m.report, &parse_certs(&m.chain).unwrap(), NOW)
            .unwrap_err()
            .check,
        check::CERT_CHAIN
    );
    // Another product family's chain.
    for file in ["ask_ark_genoa.pem", "ask_ark_turin_vcek.pem"] {
        let mut c = vcek.clone();
        c.extend(parse_certs(&std::fs::read(roots.join(file)).unwrap()).unwrap());
        let err = verify(&m.report, &c, NOW).unwrap_err();
        assert_eq!(err.check, check::PRODUCT, "{file}: {err}");
    }
    // Milan ASK with the Genoa ARK.
    let mut c = certs(&m);
    c.retain(|c| !matches!(c.role, Role::Ark(_)));
    c.push(
        parse_certs(&std::fs::read(roots.join("ask_ark_genoa.pem")).unwrap()).unwrap()[1].clone(),
    );
    assert_eq!(
        verify(&m.report, &c, NOW).unwrap_err().check,
        check::PRODUCT
    );
    // The VLEK chain (ASVK) does not vouch for a VCEK-signed report.
    let mut c = vcek.clone();
    c.extend(parse_certs(&std::fs::read(roots.join("ask_ark_milan_vlek.pem")).unwrap()).unwrap());
    assert_eq!(
        verify(&m.report, &c, NOW).unwrap_err().check,
        check::CERT_CHAIN
    );
    // Roots that only trust Genoa.
    let genoa = AmdRoots::from_ark_pem(
        &std::fs::read(roots.join("ask_ark_genoa.pem")).unwrap()[..],
        NOW,
    );
    // (that file's first certificate is an ASK, which amdRootKey must not be)
    assert_eq!(genoa.unwrap_err().check, check::CERT_CHAIN);
}

#[test]
fn every_amd_chain_is_signed_by_its_pinned_ark() {
    let Some(d) = dir("amd-roots") else { return };
    let builtin = AmdRoots::builtin();
    for (file, product, vlek) in [
        ("ask_ark_milan.pem", Product::Milan, false),
        ("ask_ark_milan_vlek.pem", Product::Milan, true),
        ("ask_ark_genoa.pem", Product::Genoa, false),
        ("ask_ark_genoa_vlek.pem", Product::Genoa, true),
        ("ask_ark_turin_vcek.pem", Product::Turin, false),
        ("ask_ark_turin_vlek.pem", Product::Turin, true),
    ] {
        let c = parse_certs(&std::fs::read(d.join(file)).unwrap()).unwrap();
        assert_eq!(c.len(), 2, "{file}");
        let want = if vlek {
            Role::Asvk(product)
        } else {
            Role::Ask(product)
        };
        assert_eq!(c[0].role, want, "{file}");
        assert_eq!(c[1].role, Role::Ark(product), "{file}");
        let key = builtin.key(product).unwrap();
        assert_eq!(c[1].public_key, key, "{file}: pinned key");
        let fp = hex::encode(Sha256::digest(&c[1].der));
        let pinned = match product {
            Product::Milan => snp::roots::ARK_MILAN_SHA256,
            Product::Genoa => snp::roots::ARK_GENOA_SHA256,
            Product::Turin => snp::roots::ARK_TURIN_SHA256,
        };
        assert_eq!(fp, pinned, "{file}");
        c[0].verify_signed_by(key).unwrap();
        c[1].verify_signed_by(key).unwrap();
        // A config amdRootKey with this ARK trusts exactly this product.
        let ark_pem = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            base64::engine::general_purpose::STANDARD.encode(&c[1].der)
        );
        let roots = AmdRoots::from_ark_pem(ark_pem.as_bytes(), NOW).unwrap();
        assert_eq!(roots.products(), [product]);
        // Another product's ARK does not sign this intermediate.
        for other in Product::ALL.into_iter().filter(|p| *p != product) {
            assert!(c[0].verify_signed_by(builtin.key(other).unwrap()).is_err());
        }
    }
}

/// Every one-byte change of the report is refused, and the reason names the check.
#[test]
fn every_report_byte_is_covered() {
    let Some(m) = milan() else { return };
    let c = certs(&m);
    for pos in 0..m.report.len() {
        let mut r = m.report.clone();
        r[pos] ^= 0x01;
        let err = verify(&r, &c, NOW).unwrap_err();
        let allowed: &[&str] = match pos {
            0x00..=0x03 | 0x34..=0x37 => &[check::REPORT_FORMAT, check::REPORT_SIGNATURE],
            0x48..=0x4B => &[
                check::SIGNING_KEY,
                check::CERT_CHAIN,
                check::REPORT_SIGNATURE,
            ],
            0x2A0..=0x2CF | 0x2E8..=0x317 => &[check::REPORT_SIGNATURE],
            0x2D0..=0x2E7 | 0x318.. => &[check::REPORT_FORMAT],
            _ => &[check::REPORT_SIGNATURE],
        };
        assert!(allowed.contains(&err.check), "byte {pos:#x}: {err}");
    }
    // Truncated and extended reports.
    for len in [0, 1, 0x2A0, 0x49F, 0x4A1] {
        let mut r = m.report.clone();
        r.resize(len, 0);
        assert_eq!(verify(&r, &c, NOW).unwrap_err().check, check::REPORT_FORMAT);
    }
}

/// Every one-byte change of the VCEK, ASK and ARK is refused, naming the check.
#[test]
fn every_certificate_byte_is_covered() {
    let Some(m) = milan() else { return };
    let chain = parse_certs(&m.chain).unwrap();
    let ders = [m.vcek.clone(), chain[0].der.clone(), chain[1].der.clone()];
    for which in 0..3 {
        for pos in 0..ders[which].len() {
            let mut d = ders.clone();
            d[which][pos] ^= 0x01;
            let result = d
                .iter()
                .map(|der| AmdCert::from_der(der))
                .collect::<Result<Vec<_>, _>>();
            let err = match result {
                Err(_) => {
                    // What every caller sees: the certificate-format check.
                    let r = d
                        .iter()
                        .map(|der| parse_certs(der))
                        .find_map(Result::err)
                        .unwrap();
                    assert_eq!(
                        r.check,
                        check::CERTIFICATE_FORMAT,
                        "cert {which} byte {pos}"
                    );
                    continue;
                }
                Ok(c) => verify(&m.report, &c, NOW).unwrap_err(),
            };
            let allowed = [
                check::CERT_CHAIN,
                check::CERT_VALIDITY,
                check::PRODUCT,
                check::REPORT_SIGNATURE,
                check::REPORTED_TCB,
                check::CHIP_ID,
            ];
            assert!(
                allowed.contains(&err.check),
                "cert {which} byte {pos}: {err}"
            );
        }
    }
}

/// The report inside the Azure vTPM evidence (v3, Milan).
#[test]
fn azure_vtpm_evidence_report_verifies() {
    let Some(d) = dir("azure-snp-vtpm") else {
        return;
    };
    let Some(roots) = dir("amd-roots") else {
        return;
    };
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("evidence-v2.json")).unwrap()).unwrap();
    let hcl = URL_SAFE_NO_PAD
        .decode(v["hcl_report"].as_str().unwrap().trim_end_matches('='))
        .unwrap();
    let vcek = URL_SAFE_NO_PAD
        .decode(v["vcek"].as_str().unwrap().trim_end_matches('='))
        .unwrap();
    let mut c = parse_certs(&vcek).unwrap();
    c.extend(parse_certs(&std::fs::read(roots.join("ask_ark_milan.pem")).unwrap()).unwrap());
    // This VCEK is valid from 2025-01-28.
    let r = verify(&hcl[0x20..0x20 + 0x4A0], &c, 1_748_736_000).unwrap();
    assert_eq!(r.report.version, 3);
    assert_eq!(r.product, Product::Milan);
    assert_eq!(r.report.cpuid.map(|c| c.0), Some(0x19));
    assert!(SnpPolicy::default().check(&r).refusals.is_empty());
}

/// Report versions 2, 3 and 5 verify; 4 and others are refused as malformed. Made with the
/// stand-in AMD hierarchy (no real v5 report here), for each product and both signing keys.
#[test]
fn report_versions_products_and_signing_keys() {
    use attestation::insecure_snp::InsecureSnpSigner;
    use attestation::snp::SigningKey;
    for product in Product::ALL {
        for key in [SigningKey::Vcek, SigningKey::Vlek] {
            let tcb = Tcb {
                fmc: (product == Product::Turin).then_some(2),
                bootloader: 9,
                tee: 1,
                snp: 24,
                microcode: 0xD9,
            };
            let s = InsecureSnpSigner::new(product, key, tcb).unwrap();
            let base = s.report(&[3u8; 64], 1 << 16, 0).unwrap();
            for (version, ok) in [(2u32, true), (3, true), (4, false), (5, true), (6, false)] {
                let mut r = base.clone();
                r[0..4].copy_from_slice(&version.to_le_bytes());
                s.sign(&mut r).unwrap();
                let res =
                    parse_report(&r).and_then(|r| verify_report(&r, &s.certs(), &s.roots(), NOW));
                match res {
                    Ok(v) => {
                        assert!(ok, "{product} {key:?} v{version}");
                        assert_eq!(v.reported_tcb(), tcb);
                        assert_eq!(v.signing_key, key);
                        assert_eq!(v.product, product);
                    }
                    Err(e) => {
                        assert!(!ok, "{product} {key:?} v{version}: {e}");
                        assert_eq!(e.check, check::REPORT_FORMAT);
                    }
                }
            }
            // A report whose TCB differs from the certificate's, correctly signed.
            let mut r = base.clone();
            r[0x187] ^= 1; // reported_tcb microcode
            s.sign(&mut r).unwrap();
            let e =
                verify_report(&parse_report(&r).unwrap(), &s.certs(), &s.roots(), NOW).unwrap_err();
            assert_eq!(e.check, check::REPORTED_TCB, "{product} {key:?}");
            // Another chip's report (VCEK only: VLEKs are not per chip).
            let mut r = base.clone();
            r[0x1A0] ^= 1;
            s.sign(&mut r).unwrap();
            let res = verify_report(&parse_report(&r).unwrap(), &s.certs(), &s.roots(), NOW);
            match key {
                SigningKey::Vcek => assert_eq!(res.unwrap_err().check, check::CHIP_ID),
                _ => assert!(res.is_ok()),
            }
            // CPUID of another family.
            let mut r = base.clone();
            r[0x188] = if product == Product::Turin {
                0x19
            } else {
                0x1A
            };
            s.sign(&mut r).unwrap();
            let e =
                verify_report(&parse_report(&r).unwrap(), &s.certs(), &s.roots(), NOW).unwrap_err();
            assert_eq!(e.check, check::PRODUCT, "{product} {key:?}");
            // The report claims the other signing key.
            let mut r = base.clone();
            r[0x48] ^= 0b100;
            s.sign(&mut r).unwrap();
            let e =
                verify_report(&parse_report(&r).unwrap(), &s.certs(), &s.roots(), NOW).unwrap_err();
            assert_eq!(e.check, check::CERT_CHAIN, "{product} {key:?}");
        }
    }
}
