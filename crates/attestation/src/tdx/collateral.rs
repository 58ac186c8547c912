//! Quote verification collateral from Intel's PCS (or a PCCS/THIM cache), in the JSON layout
//! dcap-qvl and the shared vector use:
//!
//! ```json
//! {"pck_crl_issuer_chain": "<PEM>", "root_ca_crl": "<hex DER>", "pck_crl": "<hex DER>",
//!  "tcb_info_issuer_chain": "<PEM>", "tcb_info": "<JSON text>", "tcb_info_signature": "<hex r‖s>",
//!  "qe_identity_issuer_chain": "<PEM>", "qe_identity": "<JSON text>", "qe_identity_signature": "<hex r‖s>"}
//! ```
//!
//! `tcb_info` and `qe_identity` are kept as the exact text Intel signed; they are decoded
//! only after their signature verified.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::TdxError;

/// Upper bound for a collateral document (the real one is 16 KB).
pub const MAX_COLLATERAL_LEN: usize = 1024 * 1024;

/// The collateral for one quote, as a value (the validators never fetch it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Collateral {
    pub pck_crl_issuer_chain: String,
    #[serde(with = "hex_bytes")]
    pub root_ca_crl: Vec<u8>,
    #[serde(with = "hex_bytes")]
    pub pck_crl: Vec<u8>,
    pub tcb_info_issuer_chain: String,
    pub tcb_info: String,
    #[serde(with = "hex_bytes")]
    pub tcb_info_signature: Vec<u8>,
    pub qe_identity_issuer_chain: String,
    pub qe_identity: String,
    #[serde(with = "hex_bytes")]
    pub qe_identity_signature: Vec<u8>,
}

impl Collateral {
    /// Decodes the JSON layout above.
    pub fn from_json(bytes: &[u8]) -> Result<Self, TdxError> {
        if bytes.len() > MAX_COLLATERAL_LEN {
            return Err(TdxError::Collateral(format!(
                "{} bytes, at most {MAX_COLLATERAL_LEN} accepted",
                bytes.len()
            )));
        }
        serde_json::from_slice(bytes).map_err(|e| TdxError::Collateral(format!("JSON: {e}")))
    }
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising owned strings and byte vectors cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

mod hex_bytes {
    use super::*;
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s).map_err(serde::de::Error::custom)
    }
}

/// Intel's TCB status of a platform, QE or TDX module, from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TcbStatus {
    UpToDate,
    SWHardeningNeeded,
    ConfigurationNeeded,
    ConfigurationAndSWHardeningNeeded,
    OutOfDate,
    OutOfDateConfigurationNeeded,
    Revoked,
}

impl TcbStatus {
    pub const ALL: [TcbStatus; 7] = [
        TcbStatus::UpToDate,
        TcbStatus::SWHardeningNeeded,
        TcbStatus::ConfigurationNeeded,
        TcbStatus::ConfigurationAndSWHardeningNeeded,
        TcbStatus::OutOfDate,
        TcbStatus::OutOfDateConfigurationNeeded,
        TcbStatus::Revoked,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            TcbStatus::UpToDate => "UpToDate",
            TcbStatus::SWHardeningNeeded => "SWHardeningNeeded",
            TcbStatus::ConfigurationNeeded => "ConfigurationNeeded",
            TcbStatus::ConfigurationAndSWHardeningNeeded => "ConfigurationAndSWHardeningNeeded",
            TcbStatus::OutOfDate => "OutOfDate",
            TcbStatus::OutOfDateConfigurationNeeded => "OutOfDateConfigurationNeeded",
            TcbStatus::Revoked => "Revoked",
        }
    }

    /// The status of platform and QE together (Intel QVL's convergence): the worse one, except
    /// that an out-of-date QE on a platform needing configuration gives
    /// `OutOfDateConfigurationNeeded`.
    pub fn converge(self, other: TcbStatus) -> TcbStatus {
        use TcbStatus::*;
        match (self, other) {
            (ConfigurationNeeded | ConfigurationAndSWHardeningNeeded, OutOfDate)
            | (OutOfDate, ConfigurationNeeded | ConfigurationAndSWHardeningNeeded) => {
                OutOfDateConfigurationNeeded
            }
            (a, b) => a.max(b),
        }
    }
}

impl fmt::Display for TcbStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for TcbStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TcbStatus::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!(
                    "unknown TCB status {s:?} (known: {})",
                    TcbStatus::ALL.map(TcbStatus::as_str).join(", ")
                )
            })
    }
}

/// One SVN entry of a TCB level (`category`/`type` are informational).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Component {
    pub(crate) svn: u8,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct PlatformTcb {
    pub(crate) sgxtcbcomponents: Vec<Component>,
    pub(crate) pcesvn: u16,
    pub(crate) tdxtcbcomponents: Vec<Component>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TcbLevel<T> {
    pub(crate) tcb: T,
    pub(crate) tcb_date: String,
    pub(crate) tcb_status: TcbStatus,
    #[serde(rename = "advisoryIDs", default)]
    pub(crate) advisory_ids: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct IsvSvn {
    pub(crate) isvsvn: u16,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TdxModule {
    pub(crate) mrsigner: String,
    pub(crate) attributes: String,
    pub(crate) attributes_mask: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TdxModuleIdentity {
    pub(crate) id: String,
    pub(crate) mrsigner: String,
    pub(crate) attributes: String,
    pub(crate) attributes_mask: String,
    pub(crate) tcb_levels: Vec<TcbLevel<IsvSvn>>,
}

/// Intel's TCB info for one FMSPC (TDX, version 3).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TcbInfo {
    pub(crate) id: String,
    pub(crate) version: u32,
    pub(crate) issue_date: String,
    pub(crate) next_update: String,
    pub(crate) fmspc: String,
    pub(crate) pce_id: String,
    pub(crate) tcb_evaluation_data_number: u32,
    pub(crate) tdx_module: Option<TdxModule>,
    #[serde(default)]
    pub(crate) tdx_module_identities: Vec<TdxModuleIdentity>,
    pub(crate) tcb_levels: Vec<TcbLevel<PlatformTcb>>,
}

/// Intel's identity of the TD Quoting Enclave (`TD_QE`, version 2).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct QeIdentity {
    pub(crate) id: String,
    pub(crate) version: u32,
    pub(crate) issue_date: String,
    pub(crate) next_update: String,
    pub(crate) miscselect: String,
    pub(crate) miscselect_mask: String,
    pub(crate) attributes: String,
    pub(crate) attributes_mask: String,
    pub(crate) mrsigner: String,
    pub(crate) isvprodid: u16,
    pub(crate) tcb_levels: Vec<TcbLevel<IsvSvn>>,
}

/// Decodes `N` bytes of hex from a collateral field.
pub(crate) fn hex_field<const N: usize>(what: &str, s: &str) -> Result<[u8; N], TdxError> {
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out)
        .map_err(|e| TdxError::Collateral(format!("{what} {s:?} is not {N} bytes of hex: {e}")))?;
    Ok(out)
}
