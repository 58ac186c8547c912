//! Intel TDX DCAP quote, version 4 (Intel TDX DCAP Quoting Library API, appendix "Quote
//! format"; all integers little-endian):
//!
//! ```text
//! 0     header (48)   version u16 = 4, att_key_type u16 = 2 (ECDSA P-256), tee_type u32 = 0x81,
//!                     qe_svn u16, pce_svn u16, qe_vendor_id [16], user_data [20]
//! 48    TD report (584)  tee_tcb_svn [16], mr_seam [48], mr_signer_seam [48],
//!                     seam_attributes [8], td_attributes [8], xfam [8], mrtd [48],
//!                     mr_config_id [48], mr_owner [48], mr_owner_config [48], rtmr0..3 [48 each],
//!                     report_data [64]
//! 632   u32 signature data length, then:
//!       ECDSA signature r‖s (64) over bytes 0..632, attestation key x‖y (64),
//!       certification data type u16 = 6 (QE report certification data), size u32:
//!         QE report (384, SGX enclave report), QE report signature r‖s (64, by the PCK key),
//!         u16 QE authentication data length, QE authentication data,
//!         certification data type u16 = 5 (PCK chain, PEM), size u32, PEM text
//! ```
//!
//! The parser is strict: every length must agree with what it contains, and after the
//! signature data only zero padding may follow (real quotes carry some), so any changed byte
//! either changes a signed or checked value or makes the quote malformed.

use crate::cursor::{Cursor, Short};

use super::TdxError;

pub const HEADER_LEN: usize = 48;
pub const TD_REPORT_LEN: usize = 584;
pub const QE_REPORT_LEN: usize = 384;
/// `tee_type` of a TDX quote (SGX is 0).
pub const TEE_TYPE_TDX: u32 = 0x81;
/// `att_key_type` 2 = ECDSA-256-with-P-256.
pub const ATT_KEY_TYPE_ECDSA_P256: u16 = 2;
/// Certification data types.
pub const CERT_DATA_QE_REPORT: u16 = 6;
pub const CERT_DATA_PCK_CHAIN: u16 = 5;
/// Intel's QE vendor ID (`939a7233-f79c-4ca9-940a-0db3957f0607`).
pub const INTEL_QE_VENDOR_ID: [u8; 16] = [
    0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9, 0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07,
];

/// Quote header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub version: u16,
    pub att_key_type: u16,
    pub tee_type: u32,
    pub qe_svn: u16,
    pub pce_svn: u16,
    pub qe_vendor_id: [u8; 16],
    pub user_data: [u8; 20],
}

/// The TD report body (TDREPORT fields the TDX module vouches for).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdReport {
    pub tee_tcb_svn: [u8; 16],
    pub mr_seam: [u8; 48],
    pub mr_signer_seam: [u8; 48],
    pub seam_attributes: [u8; 8],
    pub td_attributes: [u8; 8],
    pub xfam: [u8; 8],
    pub mrtd: [u8; 48],
    pub mr_config_id: [u8; 48],
    pub mr_owner: [u8; 48],
    pub mr_owner_config: [u8; 48],
    pub rtmr: [[u8; 48]; 4],
    pub report_data: [u8; 64],
}

impl TdReport {
    /// `TD_ATTRIBUTES.DEBUG` (bit 0).
    pub fn debug(&self) -> bool {
        self.td_attributes[0] & 1 != 0
    }
}

/// The Quoting Enclave's SGX report (384 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QeReport {
    pub cpu_svn: [u8; 16],
    pub misc_select: u32,
    pub attributes: [u8; 16],
    pub mr_enclave: [u8; 32],
    pub mr_signer: [u8; 32],
    pub isv_prod_id: u16,
    pub isv_svn: u16,
    pub report_data: [u8; 64],
}

impl QeReport {
    fn parse(b: &[u8; QE_REPORT_LEN]) -> Self {
        let arr = |off: usize| -> [u8; 32] {
            let mut a = [0u8; 32];
            a.copy_from_slice(&b[off..off + 32]);
            a
        };
        let mut cpu_svn = [0u8; 16];
        cpu_svn.copy_from_slice(&b[..16]);
        let mut attributes = [0u8; 16];
        attributes.copy_from_slice(&b[48..64]);
        let mut report_data = [0u8; 64];
        report_data.copy_from_slice(&b[320..384]);
        Self {
            cpu_svn,
            misc_select: u32::from_le_bytes([b[16], b[17], b[18], b[19]]),
            attributes,
            mr_enclave: arr(64),
            mr_signer: arr(128),
            isv_prod_id: u16::from_le_bytes([b[256], b[257]]),
            isv_svn: u16::from_le_bytes([b[258], b[259]]),
            report_data,
        }
    }
}

/// A parsed TDX quote v4, borrowing the input bytes.
#[derive(Debug, Clone)]
pub struct Quote<'a> {
    pub header: Header,
    pub td_report: TdReport,
    /// Header ‖ TD report: what the attestation key signs.
    pub signed: &'a [u8],
    /// ECDSA P-256 signature r‖s by the attestation key.
    pub signature: [u8; 64],
    /// The attestation key, x‖y.
    pub attestation_key: [u8; 64],
    pub qe_report: QeReport,
    /// The QE report's bytes, what the PCK key signs.
    pub qe_report_raw: &'a [u8],
    /// ECDSA P-256 signature r‖s over the QE report by the PCK key.
    pub qe_report_signature: [u8; 64],
    pub qe_auth_data: &'a [u8],
    /// PEM text of the PCK chain (PCK leaf, PCK Platform/Processor CA, Intel SGX Root CA).
    pub pck_chain_pem: &'a [u8],
}

struct Reader<'a>(Cursor<'a>);

impl<'a> Reader<'a> {
    fn short(what: &'static str) -> impl Fn(Short) -> TdxError {
        move |s| {
            TdxError::Quote(format!(
                "truncated {what}: need {} bytes at offset {}, {} left",
                s.need, s.offset, s.have
            ))
        }
    }
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], TdxError> {
        self.0.take(n).map_err(Self::short(what))
    }
    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], TdxError> {
        self.0.array::<N>().map_err(Self::short(what))
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, TdxError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, TdxError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
}

fn len_mismatch(what: &str, claimed: u64, actual: u64) -> TdxError {
    TdxError::Quote(format!(
        "{what} length is {claimed}, its contents take {actual}"
    ))
}

impl<'a> Quote<'a> {
    /// Parses a TDX quote v4 (ECDSA P-256 attestation key, PCK chain certification data).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, TdxError> {
        let mut r = Reader(Cursor::new(bytes));
        let header = Header {
            version: r.u16("header")?,
            att_key_type: r.u16("header")?,
            tee_type: r.u32("header")?,
            qe_svn: r.u16("header")?,
            pce_svn: r.u16("header")?,
            qe_vendor_id: r.array("header")?,
            user_data: r.array("header")?,
        };
        if header.version != 4 {
            return Err(TdxError::Quote(format!(
                "quote version {} is not supported (only 4)",
                header.version
            )));
        }
        if header.att_key_type != ATT_KEY_TYPE_ECDSA_P256 {
            return Err(TdxError::Quote(format!(
                "attestation key type {} is not ECDSA P-256 (2)",
                header.att_key_type
            )));
        }
        if header.tee_type != TEE_TYPE_TDX {
            return Err(TdxError::Quote(format!(
                "TEE type {:#x} is not TDX (0x81)",
                header.tee_type
            )));
        }
        let td_report = TdReport {
            tee_tcb_svn: r.array("TD report")?,
            mr_seam: r.array("TD report")?,
            mr_signer_seam: r.array("TD report")?,
            seam_attributes: r.array("TD report")?,
            td_attributes: r.array("TD report")?,
            xfam: r.array("TD report")?,
            mrtd: r.array("TD report")?,
            mr_config_id: r.array("TD report")?,
            mr_owner: r.array("TD report")?,
            mr_owner_config: r.array("TD report")?,
            rtmr: [
                r.array("TD report")?,
                r.array("TD report")?,
                r.array("TD report")?,
                r.array("TD report")?,
            ],
            report_data: r.array("TD report")?,
        };
        let signed = &bytes[..HEADER_LEN + TD_REPORT_LEN];

        let sig_len = r.u32("signature data length")?;
        let sig_start = r.0.pos();
        let signature = r.array("quote signature")?;
        let attestation_key = r.array("attestation key")?;
        let cert_type = r.u16("certification data type")?;
        if cert_type != CERT_DATA_QE_REPORT {
            return Err(TdxError::Quote(format!(
                "certification data type {cert_type} is not QE report certification data (6)"
            )));
        }
        let qe_cd_len = r.u32("certification data size")?;
        let qe_cd_start = r.0.pos();
        let qe_report_raw = r.take(QE_REPORT_LEN, "QE report")?;
        let mut qe_bytes = [0u8; QE_REPORT_LEN];
        qe_bytes.copy_from_slice(qe_report_raw);
        let qe_report_signature = r.array("QE report signature")?;
        let auth_len = r.u16("QE authentication data length")?;
        let qe_auth_data = r.take(usize::from(auth_len), "QE authentication data")?;
        let pck_type = r.u16("PCK certification data type")?;
        if pck_type != CERT_DATA_PCK_CHAIN {
            return Err(TdxError::Quote(format!(
                "inner certification data type {pck_type} is not a PCK certificate chain (5)"
            )));
        }
        let pck_len = r.u32("PCK chain size")?;
        let pck_chain_pem = r.take(pck_len as usize, "PCK certificate chain")?;
        let qe_cd_actual = (r.0.pos() - qe_cd_start) as u64;
        if u64::from(qe_cd_len) != qe_cd_actual {
            return Err(len_mismatch(
                "QE report certification data",
                qe_cd_len.into(),
                qe_cd_actual,
            ));
        }
        let sig_actual = (r.0.pos() - sig_start) as u64;
        if u64::from(sig_len) != sig_actual {
            return Err(len_mismatch("signature data", sig_len.into(), sig_actual));
        }
        let end = r.0.pos();
        if let Some(p) = bytes[end..].iter().position(|&b| b != 0) {
            return Err(TdxError::Quote(format!(
                "non-zero byte {:#04x} at offset {} after the signature data (ends at {end})",
                bytes[end + p],
                end + p
            )));
        }
        Ok(Self {
            header,
            td_report,
            signed,
            signature,
            attestation_key,
            qe_report: QeReport::parse(&qe_bytes),
            qe_report_raw,
            qe_report_signature,
            qe_auth_data,
            pck_chain_pem,
        })
    }
}
