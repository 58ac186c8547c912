//! Azure confidential-VM HCL report (TPM NV index `0x01400001`): the paravisor's hardware
//! report plus the runtime-data JSON that names the vTPM's attestation key (reference
//! attestation.md §4.4).
//!
//! ```text
//! 0x000 "HCLA" header (32 B) │ 0x020 SNP report (1184 B) or TDREPORT (1024 B)
//! 0x4C0 IGVM request data: data_size, version, report_type (2 SNP, 4 TDX), hash_type,
//!       variable_data_size (u32 LE each) │ 0x4D4 runtime-data JSON (variable_data_size B)
//! ```
//!
//! This module checks the binding `SHA-256(runtime data) == report_data[0..32]` and extracts
//! the AK (`kid == "HCLAkPub"`, exponent big-endian — not Go's `keys[0]` with a little-endian
//! exponent). It does not verify the hardware report's signature (SNP/TDX chains live with
//! their variants).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::quote::ct_eq;
use crate::tpm2::PublicKey;

const MAGIC: &[u8; 4] = b"HCLA";
const HW_REPORT_OFFSET: usize = 0x20;
const IGVM_OFFSET: usize = 0x4C0;
const RUNTIME_DATA_OFFSET: usize = 0x4D4;
/// `report_type` values in the IGVM request header.
pub const REPORT_TYPE_SNP: u32 = 2;
pub const REPORT_TYPE_TDX: u32 = 4;
const SNP_REPORT_LEN: usize = 0x4A0;
const TDREPORT_LEN: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HclError {
    #[error("HCL report has {len} bytes, need at least {need} ({what})")]
    Truncated {
        len: usize,
        need: usize,
        what: &'static str,
    },
    #[error("HCL report starts with {0:02x?}, not \"HCLA\"")]
    Magic([u8; 4]),
    #[error("HCL report type {0} is neither SNP (2) nor TDX (4)")]
    ReportType(u32),
    #[error("SHA-256 of the runtime data is {runtime}, the hardware report binds {bound}")]
    Binding { runtime: String, bound: String },
    #[error("runtime data: {0}")]
    RuntimeData(String),
}

/// A parsed HCL report (borrowing the input).
#[derive(Debug, Clone, Copy)]
pub struct HclReport<'a> {
    pub report_type: u32,
    /// SNP attestation report (1184 B) or TDREPORT (1024 B).
    pub hw_report: &'a [u8],
    /// The runtime-data JSON.
    pub runtime_data: &'a [u8],
}

fn le32(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

impl<'a> HclReport<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Self, HclError> {
        let truncated = |need, what| HclError::Truncated {
            len: bytes.len(),
            need,
            what,
        };
        if bytes.len() < RUNTIME_DATA_OFFSET {
            return Err(truncated(RUNTIME_DATA_OFFSET, "header"));
        }
        if &bytes[..4] != MAGIC {
            return Err(HclError::Magic([bytes[0], bytes[1], bytes[2], bytes[3]]));
        }
        let report_type =
            le32(bytes, IGVM_OFFSET + 8).ok_or(truncated(IGVM_OFFSET + 12, "report type"))?;
        let hw_len = match report_type {
            REPORT_TYPE_SNP => SNP_REPORT_LEN,
            REPORT_TYPE_TDX => TDREPORT_LEN,
            other => return Err(HclError::ReportType(other)),
        };
        let var_size = le32(bytes, IGVM_OFFSET + 16)
            .ok_or(truncated(RUNTIME_DATA_OFFSET, "variable data size"))?;
        let end = RUNTIME_DATA_OFFSET.saturating_add(var_size as usize);
        let runtime_data = bytes
            .get(RUNTIME_DATA_OFFSET..end)
            .ok_or(truncated(end, "runtime data"))?;
        Ok(Self {
            report_type,
            hw_report: &bytes[HW_REPORT_OFFSET..HW_REPORT_OFFSET + hw_len],
            runtime_data,
        })
    }

    /// The hardware report's 64-byte report data (SNP at 0x50, TDREPORT `REPORTDATA` at 128).
    pub fn report_data(&self) -> &'a [u8] {
        let off = if self.report_type == REPORT_TYPE_SNP {
            0x50
        } else {
            128
        };
        &self.hw_report[off..off + 64]
    }

    /// `SHA-256(runtime data) == report_data[0..32]`.
    pub fn check_runtime_data_binding(&self) -> Result<(), HclError> {
        let h = Sha256::digest(self.runtime_data);
        let bound = &self.report_data()[..32];
        if ct_eq(&h, bound) {
            Ok(())
        } else {
            Err(HclError::Binding {
                runtime: hex::encode(h),
                bound: hex::encode(bound),
            })
        }
    }

    fn json(&self) -> Result<serde_json::Value, HclError> {
        serde_json::from_slice(self.runtime_data)
            .map_err(|e| HclError::RuntimeData(format!("not JSON: {e}")))
    }

    /// The vTPM attestation key: the JWK with `kid == "HCLAkPub"`.
    pub fn ak_public_key(&self) -> Result<PublicKey, HclError> {
        let json = self.json()?;
        let keys = json
            .get("keys")
            .and_then(|k| k.as_array())
            .ok_or_else(|| HclError::RuntimeData("no \"keys\" array".into()))?;
        let jwk = keys
            .iter()
            .find(|k| k.get("kid").and_then(|v| v.as_str()) == Some("HCLAkPub"))
            .ok_or_else(|| HclError::RuntimeData("no key with kid \"HCLAkPub\"".into()))?;
        if jwk.get("kty").and_then(|v| v.as_str()) != Some("RSA") {
            return Err(HclError::RuntimeData("HCLAkPub is not an RSA key".into()));
        }
        let field = |name: &str| -> Result<Vec<u8>, HclError> {
            let s = jwk
                .get(name)
                .and_then(|v| v.as_str())
                .ok_or_else(|| HclError::RuntimeData(format!("HCLAkPub has no \"{name}\"")))?;
            URL_SAFE_NO_PAD
                .decode(s.trim_end_matches('='))
                .map_err(|e| HclError::RuntimeData(format!("HCLAkPub \"{name}\": {e}")))
        };
        let modulus = field("n")?;
        let e = field("e")?;
        let e_digits: Vec<u8> = e.iter().copied().skip_while(|&b| b == 0).collect();
        if e_digits.is_empty() || e_digits.len() > 4 {
            return Err(HclError::RuntimeData(format!(
                "HCLAkPub exponent {} does not fit 32 bits",
                hex::encode(&e)
            )));
        }
        let exponent = e_digits
            .iter()
            .fold(0u32, |acc, &b| (acc << 8) | u32::from(b));
        Ok(PublicKey::Rsa { modulus, exponent })
    }

    /// The `user-data` field (hex string) of the runtime data, if present.
    pub fn user_data(&self) -> Result<Option<Vec<u8>>, HclError> {
        match self.json()?.get("user-data").and_then(|v| v.as_str()) {
            None => Ok(None),
            Some(s) => hex::decode(s)
                .map(Some)
                .map_err(|e| HclError::RuntimeData(format!("user-data is not hex: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(runtime: &[u8], bind: bool) -> Vec<u8> {
        let mut r = vec![0u8; RUNTIME_DATA_OFFSET];
        r[..4].copy_from_slice(MAGIC);
        r[IGVM_OFFSET + 8..IGVM_OFFSET + 12].copy_from_slice(&2u32.to_le_bytes());
        r[IGVM_OFFSET + 16..IGVM_OFFSET + 20]
            .copy_from_slice(&(runtime.len() as u32).to_le_bytes());
        if bind {
            let h = Sha256::digest(runtime);
            r[0x20 + 0x50..0x20 + 0x70].copy_from_slice(&h);
        }
        r.extend_from_slice(runtime);
        r
    }

    #[test]
    fn extracts_ak_by_kid_big_endian() {
        let rt = br#"{"keys":[{"kid":"HCLEkPub","kty":"RSA","e":"AQAB","n":"AAAA"},{"kid":"HCLAkPub","kty":"RSA","e":"AAEAAQ","n":"wMHC"}],"user-data":"00ff"}"#;
        let bytes = report(rt, true);
        let r = HclReport::parse(&bytes).unwrap();
        r.check_runtime_data_binding().unwrap();
        assert_eq!(
            r.ak_public_key().unwrap(),
            PublicKey::Rsa {
                modulus: vec![0xC0, 0xC1, 0xC2],
                exponent: 65537
            }
        );
        assert_eq!(r.user_data().unwrap(), Some(vec![0, 0xFF]));
        let unbound = report(rt, false);
        assert!(matches!(
            HclReport::parse(&unbound)
                .unwrap()
                .check_runtime_data_binding(),
            Err(HclError::Binding { .. })
        ));
    }

    #[test]
    fn rejects_bad_reports() {
        let good = report(b"{}", true);
        let mut bad_magic = good.clone();
        bad_magic[0] = b'X';
        let mut bad_type = good.clone();
        bad_type[IGVM_OFFSET + 8] = 3;
        let mut long_var = good.clone();
        long_var[IGVM_OFFSET + 16..IGVM_OFFSET + 20].copy_from_slice(&u32::MAX.to_le_bytes());
        for (name, bytes) in [
            ("short", good[..100].to_vec()),
            ("magic", bad_magic),
            ("type", bad_type),
            ("var size", long_var),
        ] {
            assert!(HclReport::parse(&bytes).is_err(), "{name}");
        }
        let no_ak = HclReport::parse(&good).unwrap();
        assert!(no_ak.ak_public_key().is_err());
    }
}
