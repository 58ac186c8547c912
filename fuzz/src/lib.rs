//! Bodies of the fuzz targets, shared by the libFuzzer binaries (`fuzz_targets/`) and by the
//! seed-corpus test (`tests/seeds.rs`) that runs them on stable toolchains.
//!
//! Each body feeds untrusted bytes to one decoder and checks properties that must hold for
//! every input: no panic, for the TPM structures `encode(decode(x)) == x`, and for the files a
//! user keeps (config, state, master secret, image measurements) that whatever parses is
//! written back into text that parses to an equal value.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use attestation::azure_hcl::HclReport;
use attestation::eventlog::EventLog;
use attestation::gce;
use attestation::tdx;
use attestation::tpm2::{HashAlg, PcrSelectionList, TpmsAttest, TpmtPublic, TpmtSignature};
use attestation::{
    AkFingerprint, InsecureTrustAnyAkValidator, LocalVtpmValidator, Measurement, Measurements,
    Validator,
};
use config::state::State;
use config::{Config, RawConfig};
use measurements::image::{self, ImageMeasurements, ImageRef};

pub fn tpms_attest(data: &[u8]) {
    if let Ok(q) = TpmsAttest::decode(data) {
        assert_eq!(q.encode(), data, "TPMS_ATTEST does not round-trip");
    }
    if let Ok(sel) = PcrSelectionList::decode(data) {
        assert_eq!(sel.encode(), data, "TPML_PCR_SELECTION does not round-trip");
    }
}

pub fn tpmt_public(data: &[u8]) {
    if let Ok(k) = TpmtPublic::decode(data) {
        assert_eq!(k.encode(), data, "TPMT_PUBLIC does not round-trip");
        let _ = k.name();
        let _ = k.public_key();
        let _ = k.signing_scheme();
    }
}

pub fn tpmt_signature(data: &[u8]) {
    if let Ok(s) = TpmtSignature::decode(data) {
        assert_eq!(s.encode(), data, "TPMT_SIGNATURE does not round-trip");
        // Exercise the verification path on hostile signatures (must fail, never panic).
        let key = attestation::tpm2::PublicKey::Ecc {
            curve: attestation::tpm2::EccCurve::NistP256,
            x: vec![1; 32],
            y: vec![2; 32],
        };
        assert!(attestation::quote::verify_signature(&key, b"m", &s).is_err());
    }
}

/// The trusted AK of [`attestation_document`]'s `local-vtpm` validator: fixed, so a fuzzer can
/// never reach past the trust check there; the `qemu-vtpm` validator covers the rest.
const FIXED_AK: [u8; 32] = [0x5A; 32];

fn measurements() -> Measurements {
    let m: BTreeMap<u32, Measurement> = [(4u32, Measurement::enforced(vec![0u8; 32]))]
        .into_iter()
        .chain([(0, Measurement::warn_only(vec![1u8; 32]))])
        .collect();
    Measurements::new(m).unwrap_or_default()
}

pub fn attestation_document(data: &[u8]) {
    static V: OnceLock<(LocalVtpmValidator, InsecureTrustAnyAkValidator)> = OnceLock::new();
    let (local, any) = V.get_or_init(|| {
        (
            LocalVtpmValidator::new([AkFingerprint(FIXED_AK)], measurements()),
            InsecureTrustAnyAkValidator::new(measurements()),
        )
    });
    // The seed documents are issued for this nonce (see tests/seeds.rs).
    let _ = local.validate(data, SEED_NONCE);
    if let Ok(ok) = any.validate(data, SEED_NONCE) {
        assert_eq!(ok.pcrs().get(&4).map(Vec::as_slice), Some(&[0u8; 32][..]));
    }
}

/// Nonce the seed documents are bound to.
pub const SEED_NONCE: &[u8] = b"fuzz seed nonce";

pub fn eventlog(data: &[u8]) {
    if let Ok(log) = EventLog::parse(data) {
        for bank in [
            HashAlg::Sha1,
            HashAlg::Sha256,
            HashAlg::Sha384,
            HashAlg::Sha512,
        ] {
            if let Ok(pcrs) = log.replay(bank) {
                assert!(log.verify(bank, &pcrs).is_ok());
            }
        }
        for ev in &log.events {
            let _ = ev.digest_matches_data(HashAlg::Sha256);
        }
    }
}

pub fn gce_pb(data: &[u8]) {
    let Ok(att) = gce::decode_attestation_pb(data) else {
        return;
    };
    let ak = TpmtPublic::decode(&att.ak_pub);
    for q in &att.quotes {
        let _ = TpmsAttest::decode(&q.quote);
        if let (Ok(ak), Ok(sig)) = (&ak, TpmtSignature::decode(&q.raw_sig)) {
            if let Some(bank) = HashAlg::from_tpm(q.pcrs.hash) {
                let _ = attestation::quote::verify_quote(
                    &ak.public_key(),
                    &q.quote,
                    &sig,
                    bank,
                    &q.pcrs.pcrs,
                    &[0x90, 0x09],
                );
            }
        }
    }
    if let Some(cert) = att.ak_cert.as_deref() {
        // X.509 parsing and a self-issued chain check on hostile bytes.
        let _ = gce::verify_rsa_cert_chain(&[cert], 1_717_200_000);
        if let Ok(ak) = &ak {
            let _ = gce::verify_ak_cert(cert, ak, &[], cert, 1_717_200_000);
        }
    }
    if let Some(log) = att.event_log.as_deref() {
        eventlog(log);
    }
}

pub fn azure_hcl(data: &[u8]) {
    if let Ok(r) = HclReport::parse(data) {
        let _ = r.check_runtime_data_binding();
        let _ = r.ak_public_key();
        let _ = r.user_data();
        assert_eq!(r.report_data().len(), 64);
    }
}

/// A TDX quote: the strict v4 parser, the accessors the validators use, and the PCK chain,
/// CRL and signature checks against empty collateral (refused, never a panic).
pub fn tdx_quote(data: &[u8]) {
    let Ok(q) = tdx::Quote::parse(data) else {
        return;
    };
    assert_eq!(q.signed.len(), tdx::HEADER_LEN + tdx::TD_REPORT_LEN);
    assert_eq!(q.qe_report_raw.len(), tdx::QE_REPORT_LEN);
    let _ = tdx::quote_fmspc(&q);
    let empty = tdx::Collateral {
        pck_crl_issuer_chain: String::new(),
        root_ca_crl: Vec::new(),
        pck_crl: Vec::new(),
        tcb_info_issuer_chain: String::new(),
        tcb_info: String::new(),
        tcb_info_signature: Vec::new(),
        qe_identity_issuer_chain: String::new(),
        qe_identity: String::new(),
        qe_identity_signature: Vec::new(),
    };
    assert!(tdx::verify(&q, &empty, TDX_SEED_TIME, &tdx::TdxPolicy::default()).is_err());
}

/// 2025-06-20T10:16:03Z, inside the windows of the captured TDX collateral (the seed).
pub const TDX_SEED_TIME: i64 = 1_750_414_563;

/// TDX collateral: `u32 LE quote length ‖ quote ‖ collateral JSON`. The JSON decoder must
/// round-trip, and the whole verification (chains, CRLs, signatures, TCB info and QE identity
/// decoding, TCB status) runs on the pair; whatever verifies must carry an accepted status.
pub fn tdx_collateral(data: &[u8]) {
    let Some((len, rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let len = u32::from_le_bytes(*len) as usize;
    let (quote, json) = rest.split_at(len.min(rest.len()));
    let Ok(c) = tdx::Collateral::from_json(json) else {
        return;
    };
    assert_eq!(
        tdx::Collateral::from_json(&c.to_json()).ok().as_ref(),
        Some(&c),
        "collateral does not round-trip"
    );
    let Ok(q) = tdx::Quote::parse(quote) else {
        return;
    };
    let policy = tdx::TdxPolicy::default();
    if let Ok(claims) = tdx::verify(&q, &c, TDX_SEED_TIME, &policy) {
        assert!(policy.accepted_tcb_statuses.contains(&claims.tcb_status));
        let _ = claims.to_json();
    }
}

/// Unix time the SEV-SNP targets verify at (2025-06-01; inside every seed's validity).
pub const SNP_NOW: i64 = 1_748_736_000;

/// The stand-in AMD hierarchy (Milan, VCEK) the SEV-SNP targets trust; its reports are the
/// seeds, so mutations reach the signature, TCB and policy checks.
pub fn snp_signer() -> &'static attestation::insecure_snp::InsecureSnpSigner {
    use attestation::insecure_snp::InsecureSnpSigner;
    use attestation::snp::{Product, SigningKey, Tcb};
    static S: OnceLock<InsecureSnpSigner> = OnceLock::new();
    S.get_or_init(|| {
        let tcb = Tcb {
            fmc: None,
            bootloader: 3,
            tee: 0,
            snp: 8,
            microcode: 115,
        };
        // Invariant: the built-in test key and a fresh P-384 key always work.
        InsecureSnpSigner::new(Product::Milan, SigningKey::Vcek, tcb)
            .unwrap_or_else(|e| panic!("stand-in AMD hierarchy: {e}"))
    })
}

/// An SEV-SNP report: parse, then the full verification with the stand-in chain and the
/// policy; a parsed report is exactly 1184 bytes.
pub fn snp_report(data: &[u8]) {
    use attestation::snp;
    let Ok(r) = snp::parse_report(data) else {
        return;
    };
    assert_eq!(r.bytes().len(), data.len());
    let s = snp_signer();
    let _ = r.signing_key();
    let _ = r.cpuid_product();
    if let Ok(v) = snp::verify_report(&r, &s.certs(), &s.roots(), SNP_NOW) {
        let _ = snp::SnpPolicy::default().check(&v);
        let _ = v.claims();
    }
    let _ = snp::check_report_data(&r, &[0u8; 32]);
}

/// AMD certificates (PEM bundles or DER): parse, classify, check signatures and validity.
pub fn snp_certs(data: &[u8]) {
    use attestation::snp;
    if let Ok(certs) = snp::parse_certs(data) {
        for c in &certs {
            let _ = c.product();
            let _ = c.verify_signed_by(&c.public_key);
            let _ = c.valid_at(SNP_NOW);
            let _ = c.spl.tcb();
        }
    }
    let _ = snp::AmdRoots::from_ark_pem(data, SNP_NOW);
}

/// Go's `snp.InstanceInfo` JSON (aws/azure/gcp-sev-snp): decode and verify with the stand-in
/// roots, as the cloud validators do before looking at the quote.
pub fn snp_instance_info(data: &[u8]) {
    use attestation::cloud::{verify_snp_instance, Collateral, SnpInstanceInfo, SnpValidation};
    let Ok(info) = serde_json::from_slice::<SnpInstanceInfo>(data) else {
        return;
    };
    let s = snp_signer();
    let v = SnpValidation {
        roots: s.roots(),
        ..Default::default()
    };
    let _ = verify_snp_instance(&info, &v, &Collateral::default(), SNP_NOW, Some(&[1u8; 32]));
    let _ = verify_snp_instance(&info, &v, &Collateral::default(), SNP_NOW, None);
}

/// `constellation-conf.yaml`: the strict schema parse, the emitter (a comment on every key),
/// and the rules of a valid config.
pub fn config_yaml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(raw) = RawConfig::from_yaml(text) else {
        return;
    };
    let emitted = raw.to_yaml();
    match RawConfig::from_yaml(&emitted) {
        Ok(again) => assert_eq!(again, raw, "config does not round-trip"),
        Err(e) => panic!("the emitted config does not parse: {e}\n{emitted}"),
    }
    if let Ok(c) = Config::try_from(raw) {
        let _ = c.raw().selected();
        let _ = c.measurements().check_no_placeholders();
        let again = Config::from_yaml(&c.to_yaml());
        assert_eq!(
            again.ok().as_ref(),
            Some(&c),
            "valid config does not round-trip"
        );
    }
}

/// `constellation-state.yaml`.
pub fn state_yaml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(state) = State::from_yaml(text) else {
        return;
    };
    let _ = state.check_pre_init();
    let _ = state.check_post_init();
    let _ = state.cluster_id();
    let _ = state.is_pre_create();
    let emitted = match state.to_yaml() {
        Ok(y) => y,
        Err(e) => panic!("a parsed state does not encode: {e}"),
    };
    match State::from_yaml(&emitted) {
        Ok(again) => assert_eq!(again, state, "state does not round-trip"),
        Err(e) => panic!("the emitted state does not parse: {e}\n{emitted}"),
    }
}

/// `constellation-mastersecret.json`.
pub fn master_secret(data: &[u8]) {
    let Ok(secret) = config::secret::decode(data) else {
        return;
    };
    let encoded = config::secret::encode(&secret);
    match config::secret::decode(encoded.as_bytes()) {
        Ok(again) => assert!(
            again.key() == secret.key() && again.salt() == secret.salt(),
            "master secret does not round-trip"
        ),
        // The error names no secret bytes, so it may be shown.
        Err(e) => panic!("the encoded master secret does not decode: {e}"),
    }
}

/// The signed image-measurements JSON (`measurements.json`) and its signature check.
pub fn image_measurements(data: &[u8]) {
    static KEY: OnceLock<image::PublicKey> = OnceLock::new();
    let key = KEY.get_or_init(image::PublicKey::default_key);
    // Hostile bytes as signature file, as key, and as the signed content.
    assert!(
        image::verify_and_parse(key, data, data).is_err(),
        "bytes verified as their own signature"
    );
    let _ = image::PublicKey::from_pem(data);
    let Ok(m) = ImageMeasurements::parse(data) else {
        return;
    };
    for e in &m.list {
        assert!(m.select(&e.csp, &e.attestation_variant).is_ok());
        let _ = e.measurements.check_no_placeholders();
        let json = serde_json::to_vec(&e.measurements).unwrap_or_default();
        let again: Result<Measurements, _> = serde_json::from_slice(&json);
        assert_eq!(
            again.ok().as_ref(),
            Some(&e.measurements),
            "measurements do not round-trip"
        );
    }
    let _ = m.select("local", "local-vtpm");
    if let Ok(r) = ImageRef::parse(&m.version) {
        let _ = m.ensure_image(&r);
        let _ = r.measurements_path();
    }
}

/// Intel PCS answers: `kind byte ‖ issuer chain header ‖ 0 ‖ body` (no 0: no header). Whatever
/// is accepted is an item the collateral can carry: signed JSON that parses as an object with
/// a `nextUpdate`, or a CRL as hex DER; the URL decoder never panics either.
pub fn pcs_answer(data: &[u8]) {
    use attestation::tdx::pcs::{self, PcsAnswer};
    let Some((kind, rest)) = data.split_first() else {
        return;
    };
    let kind = [
        PcsAnswer::TcbInfo,
        PcsAnswer::QeIdentity,
        PcsAnswer::PckCrl,
        PcsAnswer::RootCaCrl,
    ][usize::from(kind % 4)];
    let (chain, body) = match rest.iter().position(|b| *b == 0) {
        Some(i) => (std::str::from_utf8(&rest[..i]).ok(), &rest[i + 1..]),
        None => (None, rest),
    };
    if let Some(c) = chain {
        let _ = pcs::url_decode(c);
    }
    let Ok(item) = pcs::parse_answer(kind, body, chain) else {
        return;
    };
    assert_eq!(item.issuer_chain.is_empty(), kind.chain_header().is_none());
    match kind {
        PcsAnswer::TcbInfo | PcsAnswer::QeIdentity => {
            let v: serde_json::Value =
                serde_json::from_str(&item.data).expect("accepted signed JSON parses");
            assert!(
                v.get("nextUpdate").is_some(),
                "accepted JSON has nextUpdate"
            );
        }
        PcsAnswer::PckCrl | PcsAnswer::RootCaCrl => {
            assert!(item.signature.is_empty());
            assert!(
                pcs::crl_der(item.data.as_bytes()).is_some(),
                "accepted CRL is hex DER"
            );
        }
    }
}

/// The Kubernetes join data of a ticket (bytes from the JoinService, parsed and validated on
/// the joining node): worker and control-plane forms; what validates must round-trip.
pub fn kube_join(data: &[u8]) {
    use kube_node::join::{
        ControlPlaneJoin, WorkerJoin, CONTROL_PLANE_JOIN_FILE, WORKER_JOIN_FILE,
    };
    let files = [
        (WORKER_JOIN_FILE.to_string(), data.to_vec()),
        (CONTROL_PLANE_JOIN_FILE.to_string(), data.to_vec()),
    ];
    if let Ok(w) = WorkerJoin::from_ticket_files(&files) {
        let again = WorkerJoin::from_ticket_files(&[w.to_ticket_file()]);
        assert!(again.is_ok_and(|a| a == w), "worker join data does not round-trip");
    }
    if let Ok(c) = ControlPlaneJoin::from_ticket_files(&files) {
        let again = ControlPlaneJoin::from_ticket_files(&[c.to_ticket_file()]);
        assert!(again.is_ok_and(|a| a == c), "control-plane join data does not round-trip");
    }
}
