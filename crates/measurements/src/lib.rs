//! Expected measurements (PCR values) and how actual values are compared with them.
//!
//! A [`Measurements`] map is what the owner expects a node to have measured: PCR index →
//! [`Measurement`] `{expected, warnOnly}`. It is parsed strictly (hex only, 32 or 48 bytes, all
//! entries of one length; the legacy bare-string form means `warnOnly: false`) and serialised in
//! the Go system's layout, so a config written by either implementation loads in the other.
//!
//! [`Measurements::compare`] is the one place where actual PCR values meet the expectation: an
//! enforced mismatch is an error naming the PCR with expected and actual values, a `warnOnly`
//! mismatch is a warning. Extra actual PCRs are ignored.
//!
//! This crate does no I/O.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

pub mod image;

/// Length of a SHA-256 PCR value (vTPM banks).
pub const PCR_LEN_SHA256: usize = 32;
/// Length of a SHA-384 measurement (TDX MRTD/RTMR).
pub const PCR_LEN_SHA384: usize = 48;

/// The PCR that carries the cluster ID: zero until a node belongs to a cluster.
pub const PCR_CLUSTER_ID: u32 = 15;

/// One expected PCR value.
#[derive(Clone, PartialEq, Eq)]
pub struct Measurement {
    pub expected: Vec<u8>,
    /// `true`: a mismatch is only a warning; `false`: a mismatch refuses the node.
    pub warn_only: bool,
}

impl Measurement {
    pub fn enforced(expected: impl Into<Vec<u8>>) -> Self {
        Self {
            expected: expected.into(),
            warn_only: false,
        }
    }
    pub fn warn_only(expected: impl Into<Vec<u8>>) -> Self {
        Self {
            expected: expected.into(),
            warn_only: true,
        }
    }
}

impl fmt::Debug for Measurement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}",
            hex::encode(&self.expected),
            if self.warn_only { " (warnOnly)" } else { "" }
        )
    }
}

/// Errors in a measurements map.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MeasurementsError {
    #[error("PCR {index}: expected value is not hex: {value:?}")]
    NotHex { index: u32, value: String },
    #[error("PCR {index}: expected value has {len} bytes, want 32 (SHA-256 PCR) or 48 (SHA-384 measurement)")]
    BadLength { index: u32, len: usize },
    #[error("PCR {index}: value has {len} bytes but PCR {first_index} has {first_len}; all measurements must have one length")]
    MixedLengths {
        index: u32,
        len: usize,
        first_index: u32,
        first_len: usize,
    },
    #[error("PCR index {index} is out of range (0..=23 for a TPM)")]
    IndexOutOfRange { index: u32 },
    #[error("PCR {index}: value is the placeholder 12341234…; replace it with a real measurement (constellation config fetch-measurements)")]
    Placeholder { index: u32 },
}

/// PCR index → expected value. Always valid: built only through [`Measurements::new`] or
/// deserialisation, both of which check hex, lengths and indices.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Measurements(BTreeMap<u32, Measurement>);

impl fmt::Debug for Measurements {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.0.iter()).finish()
    }
}

impl Measurements {
    /// Checks every entry (lengths 32 or 48, one length for all, index ≤ 23 for 32-byte maps).
    pub fn new(map: BTreeMap<u32, Measurement>) -> Result<Self, MeasurementsError> {
        let mut first: Option<(u32, usize)> = None;
        for (&index, m) in &map {
            let len = m.expected.len();
            if len != PCR_LEN_SHA256 && len != PCR_LEN_SHA384 {
                return Err(MeasurementsError::BadLength { index, len });
            }
            if len == PCR_LEN_SHA256 && index > 23 {
                return Err(MeasurementsError::IndexOutOfRange { index });
            }
            match first {
                None => first = Some((index, len)),
                Some((first_index, first_len)) if first_len != len => {
                    return Err(MeasurementsError::MixedLengths {
                        index,
                        len,
                        first_index,
                        first_len,
                    })
                }
                Some(_) => {}
            }
        }
        Ok(Self(map))
    }

    /// Rejects the Go system's placeholder value (`1234` repeated), which means "not filled in".
    pub fn check_no_placeholders(&self) -> Result<(), MeasurementsError> {
        for (&index, m) in &self.0 {
            if !m.expected.is_empty() && m.expected.chunks(2).all(|c| c == [0x12, 0x34]) {
                return Err(MeasurementsError::Placeholder { index });
            }
        }
        Ok(())
    }

    pub fn get(&self, index: u32) -> Option<&Measurement> {
        self.0.get(&index)
    }
    pub fn iter(&self) -> impl Iterator<Item = (u32, &Measurement)> {
        self.0.iter().map(|(k, v)| (*k, v))
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn into_inner(self) -> BTreeMap<u32, Measurement> {
        self.0
    }
    /// Replaces or inserts entries from `other` (the Go `CopyFrom` merge-overwrite by index).
    pub fn merge_from(&mut self, other: &Measurements) -> Result<(), MeasurementsError> {
        let mut merged = self.0.clone();
        for (k, v) in &other.0 {
            merged.insert(*k, v.clone());
        }
        *self = Self::new(merged)?;
        Ok(())
    }
    /// Sets one entry, keeping the map valid.
    pub fn set(&mut self, index: u32, m: Measurement) -> Result<(), MeasurementsError> {
        let mut merged = self.0.clone();
        merged.insert(index, m);
        *self = Self::new(merged)?;
        Ok(())
    }

    /// Compares actual PCR values (e.g. the verified SHA-256 quote's PCRs) with this map.
    ///
    /// For each expected index in ascending order: equal → fine; different or missing →
    /// [`Mismatch`] in `errors` when enforced, in `warnings` when `warnOnly`. Extra actual PCRs
    /// are ignored. The caller decides what to do with warnings (log them, show them).
    pub fn compare(&self, actual: &BTreeMap<u32, Vec<u8>>) -> Comparison {
        let mut out = Comparison::default();
        for (&index, m) in &self.0 {
            let got = actual.get(&index);
            if got.map(|g| g.as_slice()) == Some(m.expected.as_slice()) {
                continue;
            }
            let mismatch = Mismatch {
                index,
                expected: m.expected.clone(),
                actual: got.cloned(),
            };
            if m.warn_only {
                out.warnings.push(mismatch);
            } else {
                out.errors.push(mismatch);
            }
        }
        out
    }
}

/// One PCR whose actual value differs from the expected one.
#[derive(Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub index: u32,
    pub expected: Vec<u8>,
    /// `None`: the PCR was not in the attested set at all.
    pub actual: Option<Vec<u8>>,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.actual {
            Some(a) => write!(
                f,
                "PCR {}: expected {}, got {}",
                self.index,
                hex::encode(&self.expected),
                hex::encode(a)
            ),
            None => write!(
                f,
                "PCR {}: expected {}, but the PCR was not attested",
                self.index,
                hex::encode(&self.expected)
            ),
        }
    }
}

impl fmt::Debug for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Result of [`Measurements::compare`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Comparison {
    pub errors: Vec<Mismatch>,
    pub warnings: Vec<Mismatch>,
}

impl Comparison {
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// PCR_Event semantics on the SHA-256 bank: `new = SHA-256(old ‖ SHA-256(data))`.
pub fn extend_sha256(old: &[u8; 32], data: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let inner = Sha256::digest(data);
    let mut h = Sha256::new();
    h.update(old);
    h.update(inner);
    h.finalize().into()
}

/// Extends a digest that is already the measured value (`TPM2_PCR_Extend` with a SHA-256
/// digest): `new = SHA-256(old ‖ digest)`.
pub fn extend_digest_sha256(old: &[u8; 32], digest: &[u8; 32]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(old);
    h.update(digest);
    h.finalize().into()
}

// ---- serde: {"4": {"expected": "…", "warnOnly": false}} and the legacy bare-string form ----

/// One entry as written: `{expected, warnOnly}` (`warnOnly` defaults to `false`) or the legacy
/// bare hex string. Hand-written rather than an untagged enum: an untagged enum accepts unknown
/// keys (or, with `deny_unknown_fields`, reports only "did not match any variant"), and a
/// misspelt `warnOnly` must not silently turn a warning into enforcement or the other way round.
struct RawMeasurement {
    expected: String,
    warn_only: bool,
}

const ENTRY_FIELDS: &[&str] = &["expected", "warnOnly"];

impl<'de> Deserialize<'de> for RawMeasurement {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawMeasurementVisitor)
    }
}

struct RawMeasurementVisitor;

impl<'de> serde::de::Visitor<'de> for RawMeasurementVisitor {
    type Value = RawMeasurement;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a hex string or a mapping with the keys `expected` and `warnOnly`")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawMeasurement, E> {
        Ok(RawMeasurement {
            expected: v.to_owned(),
            warn_only: false,
        })
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> Result<RawMeasurement, A::Error> {
        use serde::de::Error;
        let mut expected: Option<String> = None;
        let mut warn_only: Option<bool> = None;
        // Keys as strings, not a derived field identifier: that would also accept the
        // integer keys 0 and 1 as `expected` and `warnOnly`.
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "expected" if expected.is_some() => {
                    return Err(A::Error::duplicate_field("expected"))
                }
                "expected" => expected = Some(map.next_value()?),
                "warnOnly" if warn_only.is_some() => {
                    return Err(A::Error::duplicate_field("warnOnly"))
                }
                "warnOnly" => warn_only = Some(map.next_value()?),
                other => return Err(A::Error::unknown_field(other, ENTRY_FIELDS)),
            }
        }
        Ok(RawMeasurement {
            expected: expected.ok_or_else(|| A::Error::missing_field("expected"))?,
            warn_only: warn_only.unwrap_or(false),
        })
    }
}

#[derive(Serialize)]
struct OutMeasurement<'a> {
    expected: String,
    #[serde(rename = "warnOnly")]
    warn_only: bool,
    #[serde(skip)]
    _p: std::marker::PhantomData<&'a ()>,
}

/// Hex in either case (the Go CLI accepts both); written back in lowercase.
fn decode_hex(index: u32, value: &str) -> Result<Vec<u8>, MeasurementsError> {
    hex::decode(value).map_err(|_| MeasurementsError::NotHex {
        index,
        value: value.to_string(),
    })
}

impl<'de> Deserialize<'de> for Measurements {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        // Keys arrive as integers from YAML and as strings from JSON; accept both.
        #[derive(Deserialize, PartialEq, Eq, PartialOrd, Ord)]
        #[serde(untagged)]
        enum Key {
            Int(u32),
            Str(String),
        }
        let raw: BTreeMap<Key, RawMeasurement> = BTreeMap::deserialize(d)?;
        let mut map = BTreeMap::new();
        for (k, v) in raw {
            let index = match k {
                Key::Int(i) => i,
                Key::Str(s) => s.parse::<u32>().map_err(|_| {
                    D::Error::custom(format!("measurement index {s:?} is not a PCR number"))
                })?,
            };
            let RawMeasurement {
                expected,
                warn_only,
            } = v;
            let bytes = decode_hex(index, &expected).map_err(D::Error::custom)?;
            if map
                .insert(
                    index,
                    Measurement {
                        expected: bytes,
                        warn_only,
                    },
                )
                .is_some()
            {
                return Err(D::Error::custom(format!(
                    "measurement index {index} appears twice"
                )));
            }
        }
        Measurements::new(map).map_err(D::Error::custom)
    }
}

impl Serialize for Measurements {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(
                k,
                &OutMeasurement {
                    expected: hex::encode(&v.expected),
                    warn_only: v.warn_only,
                    _p: std::marker::PhantomData,
                },
            )?;
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex32(b: u8) -> String {
        hex::encode([b; 32])
    }

    #[test]
    fn yaml_full_and_legacy_forms() {
        let y = format!(
            "4:\n  expected: \"{}\"\n  warnOnly: true\n9: \"{}\"\n",
            hex32(1),
            hex32(2)
        );
        let m: Measurements = serde_norway::from_str(&y).unwrap();
        assert_eq!(m.get(4).unwrap(), &Measurement::warn_only([1; 32]));
        assert_eq!(m.get(9).unwrap(), &Measurement::enforced([2; 32]));
    }

    #[test]
    fn json_roundtrip_uses_string_keys() {
        let mut map = BTreeMap::new();
        map.insert(11, Measurement::enforced([0xab; 32]));
        let m = Measurements::new(map).unwrap();
        let j = serde_json::to_string(&m).unwrap();
        assert_eq!(
            j,
            format!(
                "{{\"11\":{{\"expected\":\"{}\",\"warnOnly\":false}}}}",
                hex32(0xab)
            )
        );
        let back: Measurements = serde_json::from_str(&j).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn rejects_bad_values() {
        let cases = [
            (format!("4: \"{}\"", "zz".repeat(32)), "not hex"),
            (format!("4: \"{}\"", "ab".repeat(31)), "31 bytes"),
            (
                format!("4: \"{}\"\n5: \"{}\"", hex32(1), "ab".repeat(48)),
                "all measurements must have one length",
            ),
            (format!("24: \"{}\"", hex32(1)), "out of range"),
        ];
        for (y, want) in cases {
            let err = serde_norway::from_str::<Measurements>(&y)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{y}: {err}");
        }
    }

    #[test]
    fn entry_with_unknown_key_is_an_error_naming_the_key() {
        let yaml = [
            format!(
                "4:\n  expected: \"{}\"\n  warnOnly: false\n  foo: 1\n",
                hex32(1)
            ),
            // A misspelling must not silently fall back to `warnOnly: false`.
            format!("4:\n  expected: \"{}\"\n  warnonly: true\n", hex32(1)),
            format!("4:\n  expected: \"{}\"\n  0: x\n", hex32(1)),
        ];
        for (y, key) in yaml.iter().zip(["foo", "warnonly", "0"]) {
            let err = serde_norway::from_str::<Measurements>(y)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("unknown field `{key}`")),
                "{y}: {err}"
            );
            assert!(
                err.contains("`expected`") && err.contains("`warnOnly`"),
                "{err}"
            );
        }
        let json = format!(
            "{{\"4\":{{\"expected\":\"{}\",\"warnOnly\":false,\"foo\":1}}}}",
            hex32(1)
        );
        let err = serde_json::from_str::<Measurements>(&json)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `foo`"), "{err}");
    }

    #[test]
    fn entry_shapes() {
        let h = hex32(3);
        let ok = [
            (format!("4: \"{h}\""), Measurement::enforced([3; 32])),
            (
                format!("4: {{expected: \"{h}\"}}"),
                Measurement::enforced([3; 32]),
            ),
            (
                format!("4: {{warnOnly: true, expected: \"{h}\"}}"),
                Measurement::warn_only([3; 32]),
            ),
        ];
        for (y, want) in ok {
            let m: Measurements = serde_norway::from_str(&y).unwrap();
            assert_eq!(m.get(4), Some(&want), "{y}");
        }
        let bad = [
            (
                "4: {warnOnly: true}".to_string(),
                "missing field `expected`",
            ),
            (
                format!("4: {{expected: \"{h}\", expected: \"{h}\"}}"),
                "duplicate",
            ),
            (
                format!("4: {{expected: \"{h}\", warnOnly: \"yes\"}}"),
                "invalid type",
            ),
            ("4: 5".to_string(), "hex string or a mapping"),
            ("4: [1, 2]".to_string(), "hex string or a mapping"),
        ];
        for (y, want) in bad {
            let err = serde_norway::from_str::<Measurements>(&y)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{y}: {err}");
        }
        let dup_json = format!("{{\"4\":{{\"expected\":\"{h}\",\"expected\":\"{h}\"}}}}");
        let err = serde_json::from_str::<Measurements>(&dup_json)
            .unwrap_err()
            .to_string();
        assert!(err.contains("duplicate field `expected`"), "{err}");
    }

    #[test]
    fn compare_separates_errors_and_warnings() {
        let mut map = BTreeMap::new();
        map.insert(4, Measurement::enforced([1; 32]));
        map.insert(9, Measurement::enforced([2; 32]));
        map.insert(14, Measurement::warn_only([0; 32]));
        map.insert(15, Measurement::enforced([0; 32]));
        let m = Measurements::new(map).unwrap();
        let mut actual = BTreeMap::new();
        actual.insert(4, vec![1; 32]);
        actual.insert(9, vec![3; 32]);
        actual.insert(14, vec![5; 32]);
        actual.insert(20, vec![7; 32]);
        let c = m.compare(&actual);
        assert_eq!(
            c.errors.iter().map(|e| e.index).collect::<Vec<_>>(),
            vec![9, 15]
        );
        assert_eq!(
            c.warnings.iter().map(|e| e.index).collect::<Vec<_>>(),
            vec![14]
        );
        assert!(c.errors[0].to_string().contains(&format!(
            "expected {}, got {}",
            hex32(2),
            hex32(3)
        )));
        assert!(c.errors[1].to_string().contains("not attested"));
    }

    #[test]
    fn extend_matches_reference_vector() {
        let id = hex::decode("128c164378fe8767f998fbdfe4b4d6463ec5ae1b664ea5999bc27417607ae9b6")
            .unwrap();
        assert_eq!(
            hex::encode(extend_sha256(&[0; 32], &id)),
            "23400370357e846478cce7cc0c76cdfe4da077cc57b36dee0f665ede2c8b3f2f"
        );
        // A lone EV_SEPARATOR of four zero bytes.
        assert_eq!(
            hex::encode(extend_sha256(&[0; 32], &[0, 0, 0, 0])),
            "3d458cfe55cc03ea1f443f1562beec8df51c75e14a9fcf9a7234a13f198e7969"
        );
    }
}
