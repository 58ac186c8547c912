//! The vTPM attestation document, in the Go system's JSON layout (reference §5.3):
//!
//! ```json
//! {"Attestation": {"ak_pub": "<b64 TPMT_PUBLIC>",
//!                  "quotes": [{"quote": "<b64 TPMS_ATTEST>", "raw_sig": "<b64 TPMT_SIGNATURE>",
//!                              "pcrs": {"hash": 11, "pcrs": {"0": "<b64>", …}}}],
//!                  "event_log": "<b64>", "TeeAttestation": null},
//!  "InstanceInfo": "<b64>" | null,
//!  "UserData": "<b64>"}
//! ```
//!
//! Byte fields are standard base64 with padding (Go `[]byte`), hash enums are numbers
//! (SHA1=4, SHA256=11, SHA384=12, SHA512=13), PCR map keys are decimal strings.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// TPM_ALG_ID values used in `pcrs.hash`.
pub const HASH_SHA1: u16 = 4;
pub const HASH_SHA256: u16 = 11;
pub const HASH_SHA384: u16 = 12;
pub const HASH_SHA512: u16 = 13;

/// Upper bound for a document we accept at all (far above any real document; keeps a hostile
/// peer from making us parse megabytes).
pub const MAX_DOCUMENT_LEN: usize = 256 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestationDocument {
    #[serde(rename = "Attestation")]
    pub attestation: Attestation,
    #[serde(rename = "InstanceInfo", with = "b64_opt", default)]
    pub instance_info: Option<Vec<u8>>,
    #[serde(rename = "UserData", with = "b64")]
    pub user_data: Vec<u8>,
}

/// go-tpm-tools `attest.Attestation` as Go's encoding/json writes it (fields we use).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Attestation {
    #[serde(with = "b64")]
    pub ak_pub: Vec<u8>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quotes: Vec<Quote>,
    #[serde(with = "b64_opt", default, skip_serializing_if = "Option::is_none")]
    pub event_log: Option<Vec<u8>>,
    #[serde(with = "b64_opt", default, skip_serializing_if = "Option::is_none")]
    pub ak_cert: Option<Vec<u8>>,
    /// Present in Go documents (`null` or an SNP/TDX report); never verified, kept opaque.
    #[serde(rename = "TeeAttestation", default)]
    pub tee_attestation: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    /// TPMS_ATTEST bytes.
    #[serde(with = "b64")]
    pub quote: Vec<u8>,
    /// TPMT_SIGNATURE bytes.
    #[serde(with = "b64")]
    pub raw_sig: Vec<u8>,
    pub pcrs: Pcrs,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pcrs {
    pub hash: u16,
    #[serde(with = "pcr_map")]
    pub pcrs: BTreeMap<u32, Vec<u8>>,
}

impl AttestationDocument {
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain owned data into a Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

pub(crate) mod b64 {
    use super::*;
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}

pub(crate) mod b64_opt {
    use super::*;
    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_str(&STANDARD.encode(v)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| STANDARD.decode(s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

mod pcr_map {
    use super::*;
    pub fn serialize<S: Serializer>(v: &BTreeMap<u32, Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(v.len()))?;
        for (k, val) in v {
            m.serialize_entry(&k.to_string(), &STANDARD.encode(val))?;
        }
        m.end()
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<u32, Vec<u8>>, D::Error> {
        let raw = BTreeMap::<String, String>::deserialize(d)?;
        let mut out = BTreeMap::new();
        for (k, v) in raw {
            let idx: u32 = k.parse().map_err(|_| {
                serde::de::Error::custom(format!("PCR index {k:?} is not a number"))
            })?;
            let val = STANDARD.decode(v).map_err(serde::de::Error::custom)?;
            out.insert(idx, val);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_layout() {
        let mut pcrs = BTreeMap::new();
        pcrs.insert(15, vec![0u8; 2]);
        let doc = AttestationDocument {
            attestation: Attestation {
                ak_pub: vec![1, 2],
                quotes: vec![Quote {
                    quote: vec![3],
                    raw_sig: vec![4],
                    pcrs: Pcrs {
                        hash: HASH_SHA256,
                        pcrs,
                    },
                }],
                ..Default::default()
            },
            instance_info: None,
            user_data: b"u".to_vec(),
        };
        let j = String::from_utf8(doc.to_json()).unwrap();
        assert_eq!(
            j,
            r#"{"Attestation":{"ak_pub":"AQI=","quotes":[{"quote":"Aw==","raw_sig":"BA==","pcrs":{"hash":11,"pcrs":{"15":"AAA="}}}],"TeeAttestation":null},"InstanceInfo":null,"UserData":"dQ=="}"#
        );
        assert_eq!(AttestationDocument::from_json(j.as_bytes()).unwrap(), doc);
    }
}
