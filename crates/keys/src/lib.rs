//! The master secret and every key derived from it.
//!
//! ```text
//!  MasterSecret {key, salt}  (owner's workspace: constellation-mastersecret.json)
//!     │ HKDF-SHA256(IKM = key, salt = salt, info = "key-" + id)
//!     ├─ data_key(<LUKS UUID>)        state-disk key of one node
//!     ├─ data_key("ca_emergency_ssh") SSH CA seed, …
//!     └─ measurement_secret()         = data_key("measurementSecret", 32)
//!           │ HKDF(IKM = measurementSecret, salt = measurementSalt, info = "key-clusterID")
//!           └─ cluster_id()  ──► expected_pcr15() = SHA-256(0³² ‖ SHA-256(clusterID))
//! ```
//!
//! All derivations are the Go system's (`internal/crypto.DeriveKey`), so a master secret moves
//! between the two implementations and yields the same keys and cluster ID.
//!
//! This crate is pure: no file or network I/O (the workspace file format lives in crate
//! `config`). Secrets are newtypes without `Debug`/`Clone`, zeroized on drop. The only
//! side effect is reading the operating system's random number generator in
//! [`MasterSecret::generate`] and [`random_bytes`].

#![forbid(unsafe_code)]

use std::fmt;

use base64::Engine as _;
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Length of a freshly generated master key.
pub const MASTER_KEY_LEN: usize = 32;
/// Length of a freshly generated master salt (also the minimum accepted).
pub const MASTER_SALT_LEN: usize = 32;
/// Shortest master key accepted (the Go KeyService's minimum).
pub const MIN_MASTER_KEY_LEN: usize = 16;
/// Shortest master salt accepted.
pub const MIN_MASTER_SALT_LEN: usize = 32;
/// Length of the measurement secret, the measurement salt and the cluster ID.
pub const MEASUREMENT_SECRET_LEN: usize = 32;
/// Length of the cluster ID.
pub const CLUSTER_ID_LEN: usize = 32;
/// Data-key ID of the measurement secret.
pub const MEASUREMENT_SECRET_ID: &str = "measurementSecret";
/// Data-key ID of the cluster ID (derived from the measurement secret, not the master key).
pub const CLUSTER_ID_ID: &str = "clusterID";

/// The KMS URI prefix of the cluster-internal KMS (the only one this project supports).
const KMS_URI_PREFIX: &str = "kms://cluster-kms?";

/// Errors of this crate. Messages never contain secret bytes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("master key has {len} bytes, need at least {MIN_MASTER_KEY_LEN}")]
    KeyTooShort { len: usize },
    #[error("master salt has {len} bytes, need at least {MIN_MASTER_SALT_LEN}")]
    SaltTooShort { len: usize },
    #[error("cannot derive {len} bytes with HKDF-SHA256 (at most 8160)")]
    DerivedKeyTooLong { len: usize },
    #[error("the operating system's random number generator failed")]
    Random,
    #[error(
        "not a cluster KMS URI: {reason} (want kms://cluster-kms?key=<base64url>&salt=<base64url>)"
    )]
    BadKmsUri { reason: &'static str },
    #[error("{what} has {len} bytes, want {want}")]
    BadLength {
        what: &'static str,
        len: usize,
        want: usize,
    },
}

/// Secret bytes derived from the master secret (a disk key, an SSH CA seed, …).
///
/// No `Debug`, `Clone` or `Serialize`; zeroized on drop. Read it with [`SecretKey::expose`]
/// right where it is used.
pub struct SecretKey(Zeroizing<Vec<u8>>);

impl SecretKey {
    /// The secret bytes. Do not log them; copy them only into zeroizing storage.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The owner's master secret: everything else derives from it.
///
/// No `Debug`, `Clone` or `Serialize`: it leaves memory only through [`MasterSecret::to_kms_uri`]
/// (for the init/recover request) and the workspace file writer in crate `config`.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct MasterSecret {
    key: Vec<u8>,
    salt: Vec<u8>,
}

impl MasterSecret {
    /// A fresh secret: 32 random key bytes and 32 random salt bytes.
    pub fn generate() -> Result<Self, KeyError> {
        let key = random_bytes(MASTER_KEY_LEN)?;
        let salt = random_bytes(MASTER_SALT_LEN)?;
        Self::new(key.to_vec(), salt.to_vec())
    }

    /// Wraps existing bytes (read from a file or a KMS URI). Key ≥ 16 bytes, salt ≥ 32 bytes.
    pub fn new(key: Vec<u8>, salt: Vec<u8>) -> Result<Self, KeyError> {
        // Build first so the bytes are zeroized even when a length check fails.
        let secret = Self { key, salt };
        if secret.key.len() < MIN_MASTER_KEY_LEN {
            return Err(KeyError::KeyTooShort {
                len: secret.key.len(),
            });
        }
        if secret.salt.len() < MIN_MASTER_SALT_LEN {
            return Err(KeyError::SaltTooShort {
                len: secret.salt.len(),
            });
        }
        Ok(secret)
    }

    /// The master key bytes (for the workspace file writer).
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The master salt bytes.
    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    /// `DEK(id) = HKDF-SHA256(IKM = key, salt = salt, info = "key-" + id, len)`: what the
    /// cluster KMS hands out for a data-key ID (a node's LUKS UUID, `ca_emergency_ssh`, …).
    pub fn data_key(&self, id: &str, len: usize) -> Result<SecretKey, KeyError> {
        derive_key(&self.key, &self.salt, id, len)
    }

    /// The measurement secret, `data_key("measurementSecret", 32)`.
    pub fn measurement_secret(&self) -> Result<MeasurementSecret, KeyError> {
        let k = self.data_key(MEASUREMENT_SECRET_ID, MEASUREMENT_SECRET_LEN)?;
        MeasurementSecret::from_slice(k.expose())
    }

    /// The secret as the Go system's KMS URI:
    /// `kms://cluster-kms?key=<base64url(key)>&salt=<base64url(salt)>` (URL-safe alphabet with
    /// `=` padding, not percent-escaped). The result is secret.
    pub fn to_kms_uri(&self) -> Zeroizing<String> {
        let e = &base64::engine::general_purpose::URL_SAFE;
        let key = Zeroizing::new(e.encode(&self.key));
        let salt = Zeroizing::new(e.encode(&self.salt));
        Zeroizing::new(format!(
            "{KMS_URI_PREFIX}key={}&salt={}",
            key.as_str(),
            salt.as_str()
        ))
    }

    /// Parses a KMS URI written by [`MasterSecret::to_kms_uri`] or the Go CLI.
    ///
    /// Accepts the parameters in either order, `%3D` for `=`, and nothing else: unknown or
    /// repeated parameters and unpadded base64 are errors.
    pub fn from_kms_uri(uri: &str) -> Result<Self, KeyError> {
        let bad = |reason| KeyError::BadKmsUri { reason };
        let query = uri
            .strip_prefix(KMS_URI_PREFIX)
            .ok_or(bad("does not start with kms://cluster-kms?"))?;
        let mut key: Option<Zeroizing<Vec<u8>>> = None;
        let mut salt: Option<Zeroizing<Vec<u8>>> = None;
        let mut decoded = Zeroizing::new(String::new());
        for pair in query.split('&') {
            let (name, value) = pair.split_once('=').ok_or(bad("parameter without `=`"))?;
            decoded.clear();
            decoded.push_str(value);
            if decoded.contains('%') {
                *decoded = decoded.replace("%3D", "=").replace("%3d", "=");
            }
            let bytes = Zeroizing::new(
                base64::engine::general_purpose::URL_SAFE
                    .decode(decoded.as_bytes())
                    .map_err(|_| bad("a value is not padded base64url"))?,
            );
            let slot = match name {
                "key" => &mut key,
                "salt" => &mut salt,
                _ => return Err(bad("unknown parameter")),
            };
            if slot.replace(bytes).is_some() {
                return Err(bad("repeated parameter"));
            }
        }
        let key = key.ok_or(bad("missing key"))?;
        let salt = salt.ok_or(bad("missing salt"))?;
        Self::new(key.to_vec(), salt.to_vec())
    }
}

/// The measurement secret: input of the cluster ID; handed to joining nodes in the join ticket.
///
/// No `Debug`/`Clone`; zeroized on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct MeasurementSecret([u8; MEASUREMENT_SECRET_LEN]);

impl MeasurementSecret {
    /// Wraps received bytes (a join ticket's `measurement_secret`); must be 32 bytes.
    pub fn from_slice(b: &[u8]) -> Result<Self, KeyError> {
        let arr: [u8; MEASUREMENT_SECRET_LEN] = b.try_into().map_err(|_| KeyError::BadLength {
            what: "measurement secret",
            len: b.len(),
            want: MEASUREMENT_SECRET_LEN,
        })?;
        Ok(Self(arr))
    }
    /// The secret bytes (for the join ticket). Never log them.
    pub fn expose(&self) -> &[u8; MEASUREMENT_SECRET_LEN] {
        &self.0
    }
    /// The cluster ID for `measurement_salt`; see [`cluster_id`].
    pub fn cluster_id(&self, measurement_salt: &[u8]) -> ClusterId {
        cluster_id(self, measurement_salt)
    }
}

/// The cluster's identity: measured into PCR 15 of every node of the cluster. Public (it is
/// stored in the state file and printed as lowercase hex).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClusterId(pub [u8; CLUSTER_ID_LEN]);

impl ClusterId {
    pub fn from_slice(b: &[u8]) -> Result<Self, KeyError> {
        let arr: [u8; CLUSTER_ID_LEN] = b.try_into().map_err(|_| KeyError::BadLength {
            what: "cluster ID",
            len: b.len(),
            want: CLUSTER_ID_LEN,
        })?;
        Ok(Self(arr))
    }
    pub fn as_bytes(&self) -> &[u8; CLUSTER_ID_LEN] {
        &self.0
    }
    /// Lowercase hex, as stored in `constellation-state.yaml`.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    /// The PCR 15 value of a node of this cluster; see [`expected_pcr15`].
    pub fn expected_pcr15(&self) -> [u8; 32] {
        expected_pcr15(self)
    }
}

impl fmt::Debug for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterId({})", self.to_hex())
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Raw HKDF-SHA256 (RFC 5869): extract with `salt`, expand with `info` to `len` bytes.
pub fn hkdf_sha256(
    ikm: &[u8],
    salt: &[u8],
    info: &[u8],
    len: usize,
) -> Result<SecretKey, KeyError> {
    let hk = Hkdf::<Sha256>::new(Some(salt), ikm);
    let mut out = Zeroizing::new(vec![0u8; len]);
    hk.expand(info, &mut out)
        .map_err(|_| KeyError::DerivedKeyTooLong { len })?;
    Ok(SecretKey(out))
}

/// The Go system's `DeriveKey(secret, salt, info, len)`:
/// HKDF-SHA256 with info `"key-" + id`.
pub fn derive_key(secret: &[u8], salt: &[u8], id: &str, len: usize) -> Result<SecretKey, KeyError> {
    let info = format!("key-{id}");
    hkdf_sha256(secret, salt, info.as_bytes(), len)
}

/// `clusterID = HKDF-SHA256(IKM = measurementSecret, salt = measurementSalt,
/// info = "key-clusterID", 32)`.
pub fn cluster_id(secret: &MeasurementSecret, measurement_salt: &[u8]) -> ClusterId {
    let hk = Hkdf::<Sha256>::new(Some(measurement_salt), &secret.0);
    let mut out = [0u8; CLUSTER_ID_LEN];
    // Invariant: 32 bytes is far below HKDF-SHA256's 8160-byte limit, so expand cannot fail.
    let info = format!("key-{CLUSTER_ID_ID}");
    if hk.expand(info.as_bytes(), &mut out).is_err() {
        unreachable!("HKDF-SHA256 expand of 32 bytes cannot fail");
    }
    ClusterId(out)
}

/// PCR 15 of a node that belongs to the cluster: starting at 32 zero bytes, the cluster ID is
/// extended with `TPM2_PCR_Event`, i.e. `SHA-256(0³² ‖ SHA-256(clusterID))`.
pub fn expected_pcr15(cluster_id: &ClusterId) -> [u8; 32] {
    measurements::extend_sha256(&[0u8; 32], &cluster_id.0)
}

/// `n` bytes from the operating system's random number generator.
pub fn random_bytes(n: usize) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    use ring::rand::SecureRandom as _;
    let mut buf = Zeroizing::new(vec![0u8; n]);
    ring::rand::SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| KeyError::Random)?;
    Ok(buf)
}

/// A fresh 32-byte measurement salt (the CLI makes one per cluster).
pub fn generate_measurement_salt() -> Result<[u8; 32], KeyError> {
    let b = random_bytes(32)?;
    let mut out = [0u8; 32];
    out.copy_from_slice(&b);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(from: u8, n: u8) -> Vec<u8> {
        (from..from + n).collect()
    }

    /// testvectors/README.md, "Key-derivation vectors", every row (and the Go vectors).
    #[test]
    fn hkdf_vectors() {
        type Row = (Vec<u8>, Vec<u8>, &'static str, usize, &'static str);
        let cases: [Row; 3] = [
            (
                seq(0x00, 32),
                seq(0x20, 32),
                "clusterID",
                32,
                "128c164378fe8767f998fbdfe4b4d6463ec5ae1b664ea5999bc27417607ae9b6",
            ),
            (
                seq(0x40, 32),
                seq(0x60, 32),
                "measurementSecret",
                32,
                "4790578891f3fe6cc22cb661ecdc1b7e33121b1287546a52ba33a9136719c213",
            ),
            (
                vec![0; 32],
                vec![0; 32],
                "00000000-0000-0000-0000-000000000000",
                32,
                // Go `HKDFZero`; the reference quotes only its ends.
                "2b5c829f…0b6d0665",
            ),
        ];
        for (ikm, salt, id, len, want) in cases {
            let got = hex::encode(derive_key(&ikm, &salt, id, len).unwrap().expose());
            let (head, tail) = want.split_once('…').unwrap_or((want, ""));
            assert!(
                got.len() == 2 * len && got.starts_with(head) && got.ends_with(tail),
                "{id}: got {got}, want {want}"
            );
            if tail.is_empty() {
                assert_eq!(got, want, "{id}");
            }
        }
    }

    #[test]
    fn rfc5869_a1() {
        let ikm = [0x0b; 22];
        let salt = seq(0x00, 13);
        let info = seq(0xf0, 10);
        let okm = hkdf_sha256(&ikm, &salt, &info, 42).unwrap();
        assert_eq!(
            hex::encode(okm.expose()),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
        );
    }

    #[test]
    fn cluster_id_and_pcr15_vector() {
        // Row 1 through the typed API: the measurement secret 00..1f, salt 20..3f.
        let ms = MeasurementSecret::from_slice(&seq(0x00, 32)).unwrap();
        let id = ms.cluster_id(&seq(0x20, 32));
        assert_eq!(
            id.to_hex(),
            "128c164378fe8767f998fbdfe4b4d6463ec5ae1b664ea5999bc27417607ae9b6"
        );
        assert_eq!(
            hex::encode(id.expected_pcr15()),
            "23400370357e846478cce7cc0c76cdfe4da077cc57b36dee0f665ede2c8b3f2f"
        );
    }

    #[test]
    fn measurement_secret_is_data_key() {
        // Row 2 through the typed API: master key 40..5f, master salt 60..7f.
        let m = MasterSecret::new(seq(0x40, 32), seq(0x60, 32)).unwrap();
        assert_eq!(
            hex::encode(m.measurement_secret().unwrap().expose()),
            "4790578891f3fe6cc22cb661ecdc1b7e33121b1287546a52ba33a9136719c213"
        );
        assert_eq!(
            m.data_key("measurementSecret", 32).unwrap().expose(),
            m.measurement_secret().unwrap().expose()
        );
    }

    #[test]
    fn lengths_checked() {
        let cases = [
            (15, 32, Some(KeyError::KeyTooShort { len: 15 })),
            (16, 31, Some(KeyError::SaltTooShort { len: 31 })),
            (16, 32, None),
            (32, 64, None),
        ];
        for (k, s, want) in cases {
            assert_eq!(MasterSecret::new(vec![1; k], vec![2; s]).err(), want);
        }
        assert_eq!(
            derive_key(&[0; 32], &[0; 32], "x", 8161).err(),
            Some(KeyError::DerivedKeyTooLong { len: 8161 })
        );
    }

    #[test]
    fn generate_is_random() {
        let a = MasterSecret::generate().unwrap();
        let b = MasterSecret::generate().unwrap();
        assert_eq!((a.key().len(), a.salt().len()), (32, 32));
        assert_ne!(a.key(), b.key());
        assert_ne!(a.key(), a.salt());
    }

    #[test]
    fn kms_uri_roundtrip_and_format() {
        let m = MasterSecret::new(vec![0xfb; 32], vec![0xff; 32]).unwrap();
        let uri = m.to_kms_uri();
        // URL-safe alphabet ('-', '_'), '=' padding, no percent-escaping.
        assert_eq!(
            uri.as_str(),
            "kms://cluster-kms?key=-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_s=&salt=__________________________________________8="
        );
        let back = MasterSecret::from_kms_uri(&uri).unwrap();
        assert_eq!((back.key(), back.salt()), (m.key(), m.salt()));
    }

    #[test]
    fn kms_uri_variants() {
        let key = "AAAAAAAAAAAAAAAAAAAAAA=="; // 16 bytes
        let salt = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="; // 32 bytes
        let ok = [
            format!("kms://cluster-kms?key={key}&salt={salt}"),
            format!("kms://cluster-kms?salt={salt}&key={key}"),
            format!(
                "kms://cluster-kms?key={}&salt={salt}",
                key.replace('=', "%3D")
            ),
        ];
        for u in ok {
            MasterSecret::from_kms_uri(&u).unwrap_or_else(|e| panic!("{u}: {e}"));
        }
        let bad = [
            (
                format!("kms://other?key={key}&salt={salt}"),
                "does not start",
            ),
            (format!("kms://cluster-kms?key={key}"), "missing salt"),
            (
                format!("kms://cluster-kms?key={key}&salt={salt}&x=AA=="),
                "unknown parameter",
            ),
            (
                format!("kms://cluster-kms?key={key}&key={key}&salt={salt}"),
                "repeated",
            ),
            (
                format!(
                    "kms://cluster-kms?key={}&salt={salt}",
                    key.trim_end_matches('=')
                ),
                "padded base64url",
            ),
            (
                format!("kms://cluster-kms?key=AAAA&salt={salt}"),
                "at least 16",
            ),
        ];
        for (u, want) in bad {
            let e = MasterSecret::from_kms_uri(&u).err().map(|e| e.to_string());
            assert!(e.as_deref().is_some_and(|e| e.contains(want)), "{u}: {e:?}");
        }
    }
}
