//! A stand-in for Intel's PKI and a TDX platform, for tests only: a self-made root CA, PCK
//! platform CA, TCB signing certificate, a PCK certificate with the SGX extension, CRLs, an
//! attestation key, QE report and TD quote v4, and TCB info / QE identity signed like Intel's.
//! Quotes from here verify only with a policy that trusts [`TestIntel::root_key`]; they let
//! tests reach the checks the captured vector cannot (revoked PCK, other TCB statuses, debug
//! TDs, report data the test chooses).

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use attestation::tdx::Collateral;
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertificateRevocationListParams,
    CertifiedIssuer, CustomExtension, DnType, IsCa, KeyIdMethod, KeyPair, RevokedCertParams,
    SerialNumber,
};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use sha2::{Digest, Sha256};

pub const FMSPC: [u8; 6] = [0xB0, 0xC0, 0x6F, 0, 0, 0];
pub const QE_MRSIGNER: [u8; 32] = [0xDC; 32];
pub const PCK_SERIAL: [u8; 3] = [0x01, 0x23, 0x45];
pub const MRTD: [u8; 48] = [0xAA; 48];
pub const TD_ATTRIBUTES: [u8; 8] = [0, 0, 0, 0x10, 0, 0, 0, 0];
pub const XFAM: [u8; 8] = [0xE7, 0x02, 0x06, 0, 0, 0, 0, 0];
pub const TEE_TCB_SVN: [u8; 16] = [6, 1, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
pub const MR_SEAM: [u8; 48] = [0x5B; 48];
/// 2026-01-01T00:00:00Z: inside every window of the generated collateral.
pub const NOW: i64 = 1_767_225_600;

pub fn rtmr(i: usize) -> [u8; 48] {
    [0xB0 + i as u8; 48]
}

/// What to vary in a generated quote and its collateral.
#[derive(Debug, Clone)]
pub struct Options {
    pub report_data: [u8; 64],
    pub td_attributes: [u8; 8],
    pub tee_tcb_svn: [u8; 16],
    /// Status of the platform TCB level the quote matches.
    pub platform_status: &'static str,
    pub qe_status: &'static str,
    pub revoke_pck: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            report_data: [0; 64],
            td_attributes: TD_ATTRIBUTES,
            tee_tcb_svn: TEE_TCB_SVN,
            platform_status: "UpToDate",
            qe_status: "UpToDate",
            revoke_pck: false,
        }
    }
}

pub struct TestIntel {
    root: CertifiedIssuer<'static, KeyPair>,
    pck_ca: CertifiedIssuer<'static, KeyPair>,
    tcb: CertifiedIssuer<'static, KeyPair>,
    tcb_signer: EcdsaKeyPair,
    pck_params: CertificateParams,
}

fn dn(params: &mut CertificateParams, cn: &str) {
    params.distinguished_name.push(DnType::CommonName, cn);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Test stand-in for Intel");
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    dn(&mut p, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.not_before = date_time_ymd(2020, 1, 1);
    p.not_after = date_time_ymd(2040, 1, 1);
    p.key_identifier_method = KeyIdMethod::Sha256;
    p
}

fn ring_key(k: &KeyPair) -> EcdsaKeyPair {
    EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        &k.serialize_der(),
        &SystemRandom::new(),
    )
    .unwrap()
}

fn sign(k: &EcdsaKeyPair, msg: &[u8]) -> Vec<u8> {
    k.sign(&SystemRandom::new(), msg).unwrap().as_ref().to_vec()
}

// Minimal DER writer for the SGX extension.
fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    if body.len() < 0x80 {
        out.push(body.len() as u8);
    } else if body.len() < 0x100 {
        out.extend([0x81, body.len() as u8]);
    } else {
        out.extend([0x82, (body.len() >> 8) as u8, body.len() as u8]);
    }
    out.extend_from_slice(body);
    out
}
const SGX_OID: [u8; 9] = [0x2A, 0x86, 0x48, 0x86, 0xF8, 0x4D, 0x01, 0x0D, 0x01];
fn entry(arcs: &[u8], value: Vec<u8>) -> Vec<u8> {
    let oid = tlv(0x06, &[&SGX_OID[..], arcs].concat());
    tlv(0x30, &[oid, value].concat())
}
fn int(v: u32) -> Vec<u8> {
    let mut b: Vec<u8> = v
        .to_be_bytes()
        .into_iter()
        .skip_while(|&x| x == 0)
        .collect();
    if b.is_empty() || b[0] & 0x80 != 0 {
        b.insert(0, 0);
    }
    tlv(0x02, &b)
}

/// SGX extension: TCB components 3,3,2,2,4,1,0,5,0…, PCESVN 11, PCE-ID 0000, FMSPC.
pub fn sgx_extension() -> Vec<u8> {
    let comps = [3u32, 3, 2, 2, 4, 1, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0];
    let mut tcb = Vec::new();
    for (i, c) in comps.iter().enumerate() {
        tcb.extend(entry(&[2, i as u8 + 1], int(*c)));
    }
    tcb.extend(entry(&[2, 17], int(11)));
    tcb.extend(entry(
        &[2, 18],
        tlv(0x04, &[3, 3, 2, 2, 4, 1, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0]),
    ));
    let body = [
        entry(&[1], tlv(0x04, &[0x11; 16])),
        entry(&[2], tlv(0x30, &tcb)),
        entry(&[3], tlv(0x04, &[0, 0])),
        entry(&[4], tlv(0x04, &FMSPC)),
        entry(&[5], tlv(0x0A, &[1])),
    ]
    .concat();
    tlv(0x30, &body)
}

fn components(svns: &[u8]) -> serde_json::Value {
    serde_json::Value::Array(svns.iter().map(|s| serde_json::json!({"svn": s})).collect())
}

impl TestIntel {
    pub fn new() -> Self {
        let root = CertifiedIssuer::self_signed(
            ca_params("Test SGX Root CA"),
            KeyPair::generate().unwrap(),
        )
        .unwrap();
        let pck_ca = CertifiedIssuer::signed_by(
            ca_params("Test SGX PCK Platform CA"),
            KeyPair::generate().unwrap(),
            &root,
        )
        .unwrap();
        let mut tcb_params = ca_params("Test SGX TCB Signing");
        tcb_params.is_ca = IsCa::ExplicitNoCa;
        let tcb_key = KeyPair::generate().unwrap();
        let tcb_signer = ring_key(&tcb_key);
        let tcb = CertifiedIssuer::signed_by(tcb_params, tcb_key, &root).unwrap();
        let mut pck_params = CertificateParams::default();
        dn(&mut pck_params, "Test SGX PCK Certificate");
        pck_params.not_before = date_time_ymd(2021, 1, 1);
        pck_params.not_after = date_time_ymd(2039, 1, 1);
        pck_params.serial_number = Some(SerialNumber::from_slice(&PCK_SERIAL));
        pck_params.custom_extensions = vec![CustomExtension::from_oid_content(
            &[1, 2, 840, 113741, 1, 13, 1],
            sgx_extension(),
        )];
        Self {
            root,
            pck_ca,
            tcb,
            tcb_signer,
            pck_params,
        }
    }

    /// The stand-in root's key (uncompressed P-256 point), for `TdxPolicy::root_key`.
    pub fn root_key(&self) -> Vec<u8> {
        self.root.key().public_key_raw().to_vec()
    }

    pub fn root_pem(&self) -> String {
        self.root.pem()
    }

    /// A quote and the collateral that goes with it.
    pub fn quote(&self, o: &Options) -> (Vec<u8>, Collateral) {
        let pck_key = KeyPair::generate().unwrap();
        let pck_signer = ring_key(&pck_key);
        let pck = self.pck_params.signed_by(&pck_key, &self.pck_ca).unwrap();
        let att =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap();
        let att = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            att.as_ref(),
            &SystemRandom::new(),
        )
        .unwrap();
        let att_xy = &att.public_key().as_ref()[1..];
        let auth_data = [0x5Au8; 32];

        let mut header = Vec::new();
        header.extend(4u16.to_le_bytes());
        header.extend(2u16.to_le_bytes());
        header.extend(0x81u32.to_le_bytes());
        header.extend([0u8; 4]); // QE SVN, PCE SVN
        header.extend(attestation::tdx::INTEL_QE_VENDOR_ID);
        header.extend([0u8; 20]);
        let mut body = Vec::new();
        body.extend(o.tee_tcb_svn);
        body.extend(MR_SEAM);
        body.extend([0u8; 48]); // mr_signer_seam (Intel's module signer is all zero)
        body.extend([0u8; 8]); // seam attributes
        body.extend(o.td_attributes);
        body.extend(XFAM);
        body.extend(MRTD);
        body.extend([0u8; 48 * 3]); // mr_config_id, mr_owner, mr_owner_config
        for i in 0..4 {
            body.extend(rtmr(i));
        }
        body.extend(o.report_data);
        let signed = [header, body].concat();
        let quote_sig = sign(&att, &signed);

        let mut qe = vec![0u8; 384];
        qe[48] = 0x11; // attributes
        qe[128..160].copy_from_slice(&QE_MRSIGNER);
        qe[256..258].copy_from_slice(&2u16.to_le_bytes()); // ISVPRODID
        qe[258..260].copy_from_slice(&4u16.to_le_bytes()); // ISVSVN
        let mut h = Sha256::new();
        h.update(att_xy);
        h.update(auth_data);
        qe[320..352].copy_from_slice(&h.finalize());
        let qe_sig = sign(&pck_signer, &qe);
        let pem = format!("{}{}{}", pck.pem(), self.pck_ca.pem(), self.root.pem());

        let mut cert_data = Vec::new();
        cert_data.extend(&qe);
        cert_data.extend(&qe_sig);
        cert_data.extend((auth_data.len() as u16).to_le_bytes());
        cert_data.extend(auth_data);
        cert_data.extend(5u16.to_le_bytes());
        cert_data.extend((pem.len() as u32).to_le_bytes());
        cert_data.extend(pem.as_bytes());
        let mut sig_data = Vec::new();
        sig_data.extend(&quote_sig);
        sig_data.extend(att_xy);
        sig_data.extend(6u16.to_le_bytes());
        sig_data.extend((cert_data.len() as u32).to_le_bytes());
        sig_data.extend(cert_data);
        let mut quote = signed;
        quote.extend((sig_data.len() as u32).to_le_bytes());
        quote.extend(sig_data);

        (quote, self.collateral(o))
    }

    fn crl(&self, issuer: &CertifiedIssuer<'static, KeyPair>, revoked: &[&[u8]]) -> Vec<u8> {
        CertificateRevocationListParams {
            this_update: date_time_ymd(2025, 1, 1),
            next_update: date_time_ymd(2027, 1, 1),
            crl_number: SerialNumber::from_slice(&[1]),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(s),
                    revocation_time: date_time_ymd(2025, 1, 1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(issuer)
        .unwrap()
        .der()
        .to_vec()
    }

    fn collateral(&self, o: &Options) -> Collateral {
        let sgx = [2u8, 2, 2, 2, 3, 1, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0];
        let tdx = [5u8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let tcb_info = serde_json::json!({
            "id": "TDX", "version": 3,
            "issueDate": "2025-01-01T00:00:00Z", "nextUpdate": "2027-01-01T00:00:00Z",
            "fmspc": hex::encode_upper(FMSPC), "pceId": "0000", "tcbType": 0,
            "tcbEvaluationDataNumber": 17,
            "tdxModule": {"mrsigner": "00".repeat(48), "attributes": "0000000000000000",
                          "attributesMask": "FFFFFFFFFFFFFFFF"},
            "tdxModuleIdentities": [{"id": "TDX_01", "mrsigner": "00".repeat(48),
                "attributes": "0000000000000000", "attributesMask": "FFFFFFFFFFFFFFFF",
                "tcbLevels": [
                    {"tcb": {"isvsvn": 4}, "tcbDate": "2024-03-13T00:00:00Z", "tcbStatus": "UpToDate"},
                    {"tcb": {"isvsvn": 2}, "tcbDate": "2023-08-09T00:00:00Z", "tcbStatus": "OutOfDate"}]}],
            "tcbLevels": [
                {"tcb": {"sgxtcbcomponents": components(&sgx), "pcesvn": 11,
                         "tdxtcbcomponents": components(&tdx)},
                 "tcbDate": "2024-03-13T00:00:00Z", "tcbStatus": o.platform_status,
                 "advisoryIDs": ["INTEL-SA-TEST1"]},
                {"tcb": {"sgxtcbcomponents": components(&sgx), "pcesvn": 5,
                         "tdxtcbcomponents": components(&[0; 16])},
                 "tcbDate": "2018-01-04T00:00:00Z", "tcbStatus": "OutOfDate"}]
        })
        .to_string();
        let qe_identity = serde_json::json!({
            "id": "TD_QE", "version": 2,
            "issueDate": "2025-01-01T00:00:00Z", "nextUpdate": "2027-01-01T00:00:00Z",
            "tcbEvaluationDataNumber": 17,
            "miscselect": "00000000", "miscselectMask": "FFFFFFFF",
            "attributes": "11000000000000000000000000000000",
            "attributesMask": "FBFFFFFFFFFFFFFF0000000000000000",
            "mrsigner": hex::encode_upper(QE_MRSIGNER), "isvprodid": 2,
            "tcbLevels": [{"tcb": {"isvsvn": 4}, "tcbDate": "2024-03-13T00:00:00Z", "tcbStatus": o.qe_status}]
        })
        .to_string();
        let tcb_chain = format!("{}{}", self.tcb.pem(), self.root.pem());
        let revoked: Vec<&[u8]> = if o.revoke_pck {
            vec![&PCK_SERIAL[..]]
        } else {
            vec![]
        };
        Collateral {
            pck_crl_issuer_chain: format!("{}{}", self.pck_ca.pem(), self.root.pem()),
            root_ca_crl: self.crl(&self.root, &[]),
            pck_crl: self.crl(&self.pck_ca, &revoked),
            tcb_info_issuer_chain: tcb_chain.clone(),
            tcb_info_signature: sign(&self.tcb_signer, tcb_info.as_bytes()),
            tcb_info,
            qe_identity_issuer_chain: tcb_chain,
            qe_identity_signature: sign(&self.tcb_signer, qe_identity.as_bytes()),
            qe_identity,
        }
    }
}
