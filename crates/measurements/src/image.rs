//! Signed image measurements: the Go system's `ImageMeasurementsV2` JSON file and its
//! cosign-style signature (`measurements.json.sig`).
//!
//! ```text
//!  measurements.json ──┐
//!  measurements.json.sig (base64 DER ECDSA-P256/SHA-256 over the exact file bytes)
//!                      ├─► verify_and_parse(key) ─► ImageMeasurements ─► select(csp, variant)
//!  PEM public key ─────┘        (signature first, then strict JSON)
//! ```
//!
//! What is verified: the signature over the exact bytes, with the given key only; then the
//! layout (strict JSON, unknown fields rejected, every measurement valid). What is trusted: the
//! key the caller passes ([`DEFAULT_KEY_PEM`] unless the user chose another). Not done here:
//! fetching files (the CLI does I/O) and the Go system's optional Rekor transparency-log check.

use std::fmt;

use base64::Engine as _;
use serde::Deserialize;

use crate::Measurements;

/// The Go system's release key (stable stream; also published as `es.pub`). It signs the
/// measurements of the Go project's released images.
pub const GO_RELEASE_KEY_PEM: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEf8F1hpmwE+YCFXzjGtaQcrL6XZVT
JmEe5iSLvG1SyQSAew7WdMKF6o9t8e2TFuCkzlOhhlws2OHWbiFZnFWCFw==
-----END PUBLIC KEY-----
";

/// The key that verifies measurement files unless the user names another one.
///
/// This project has no release key of its own yet, so the default is the Go system's release
/// key ([`GO_RELEASE_KEY_PEM`]): it verifies the Go project's published measurements of its
/// stable images. Replace it when this project signs its own images.
pub const DEFAULT_KEY_PEM: &str = GO_RELEASE_KEY_PEM;

/// DER prefix of a `SubjectPublicKeyInfo` holding an uncompressed P-256 point:
/// SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING (0 unused bits, 65 bytes) }.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// Errors of this module. Each kind is distinguishable, so the CLI can tell the user whether
/// the file was tampered with, is not a measurements file, or does not cover their cluster.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("public key is not a PEM ECDSA P-256 key (-----BEGIN PUBLIC KEY----- with a prime256v1 point): {reason}")]
    BadPublicKey { reason: String },
    #[error("signature does not verify: {reason}")]
    SignatureInvalid { reason: &'static str },
    #[error("not a measurements file (signature is valid, but the content is not the v2 image-measurements JSON layout)")]
    NotMeasurementsFile {
        #[source]
        source: serde_json::Error,
    },
    #[error("no measurements for provider {csp:?} and attestation variant {variant:?} in this file (it has: {available})")]
    NoMeasurementsFor {
        csp: String,
        variant: String,
        available: String,
    },
    #[error("measurements file is for image {found}, not {want}")]
    WrongImage { found: String, want: String },
    #[error("image reference {0:?} is not vX.Y.Z, stream/<stream>/<version> or ref/<ref>/stream/<stream>/<version>")]
    BadImageRef(String),
}

/// An ECDSA P-256 public key that verifies measurement files.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// Uncompressed SEC1 point (65 bytes, `04 ‖ x ‖ y`).
    point: Vec<u8>,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey(P-256 {})", hex::encode(&self.point))
    }
}

impl PublicKey {
    /// Parses a PEM `PUBLIC KEY` (SPKI) block with an uncompressed P-256 point.
    pub fn from_pem(pem: &[u8]) -> Result<Self, ImageError> {
        use rustls_pki_types::pem::PemObject as _;
        let spki = rustls_pki_types::SubjectPublicKeyInfoDer::from_pem_slice(pem).map_err(|e| {
            ImageError::BadPublicKey {
                reason: e.to_string(),
            }
        })?;
        Self::from_spki_der(spki.as_ref())
    }

    /// Parses a DER `SubjectPublicKeyInfo` with an uncompressed P-256 point.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, ImageError> {
        match der.strip_prefix(&P256_SPKI_PREFIX[..]) {
            Some(point) if point.len() == 65 && point[0] == 0x04 => Ok(Self {
                point: point.to_vec(),
            }),
            _ => Err(ImageError::BadPublicKey {
                reason: format!(
                    "{}-byte key is not an uncompressed P-256 SubjectPublicKeyInfo",
                    der.len()
                ),
            }),
        }
    }

    /// The default trusted key ([`DEFAULT_KEY_PEM`]).
    pub fn default_key() -> Self {
        // Invariant: DEFAULT_KEY_PEM is a constant, valid P-256 SPKI (tested below).
        match Self::from_pem(DEFAULT_KEY_PEM.as_bytes()) {
            Ok(k) => k,
            Err(e) => unreachable!("embedded default key is invalid: {e}"),
        }
    }

    /// Verifies a cosign `sign-blob` signature: `sig_file` is the `.sig` file's content, the
    /// standard base64 (surrounding whitespace ignored) of an ASN.1 DER ECDSA-P256/SHA-256
    /// signature over exactly `message`.
    pub fn verify(&self, message: &[u8], sig_file: &[u8]) -> Result<(), ImageError> {
        let text = std::str::from_utf8(sig_file).map_err(|_| ImageError::SignatureInvalid {
            reason: "signature file is not base64 text",
        })?;
        let der = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| ImageError::SignatureInvalid {
                reason: "signature file is not base64 text",
            })?;
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_ASN1,
            &self.point,
        )
        .verify(message, &der)
        .map_err(|_| ImageError::SignatureInvalid {
            reason: "ECDSA P-256/SHA-256 check with the trusted key failed (file changed, or signed by another key)",
        })
    }
}

/// One entry of the file: the measurements of one (provider, attestation variant).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageMeasurementsEntry {
    /// Provider string: `AWS`, `Azure`, `GCP`, `OpenStack`, `QEMU`, `Unknown` in the Go
    /// system; `local` for this project's local provider.
    pub csp: String,
    #[serde(rename = "attestationVariant")]
    pub attestation_variant: String,
    pub measurements: Measurements,
}

/// `ImageMeasurementsV2`: the measurements of one image version, for every provider and
/// attestation variant it supports.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageMeasurements {
    pub version: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub stream: String,
    pub list: Vec<ImageMeasurementsEntry>,
}

impl ImageMeasurements {
    /// Parses the JSON strictly (unknown fields, bad hex, wrong lengths are errors). Call it only
    /// on verified bytes: use [`verify_and_parse`].
    pub fn parse(json: &[u8]) -> Result<Self, ImageError> {
        serde_json::from_slice(json).map_err(|source| ImageError::NotMeasurementsFile { source })
    }

    /// The first entry for `csp` and `variant` (exact string match, as in the Go system).
    pub fn select(&self, csp: &str, variant: &str) -> Result<&Measurements, ImageError> {
        self.list
            .iter()
            .find(|e| e.csp == csp && e.attestation_variant == variant)
            .map(|e| &e.measurements)
            .ok_or_else(|| ImageError::NoMeasurementsFor {
                csp: csp.to_string(),
                variant: variant.to_string(),
                available: if self.list.is_empty() {
                    "no entries".to_string()
                } else {
                    self.list
                        .iter()
                        .map(|e| format!("{}/{}", e.csp, e.attestation_variant))
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            })
    }

    /// Checks that the file is for `image` (a short image reference, see [`ImageRef`]), so an
    /// old signed file cannot stand in for the current image's.
    pub fn ensure_image(&self, image: &ImageRef) -> Result<(), ImageError> {
        let found = ImageRef {
            git_ref: self.git_ref.clone(),
            stream: self.stream.clone(),
            version: self.version.clone(),
        };
        if &found == image {
            Ok(())
        } else {
            Err(ImageError::WrongImage {
                found: found.to_string(),
                want: image.to_string(),
            })
        }
    }
}

/// Verifies `sig_file` over `json` with `key`, then parses the JSON. Nothing of the content is
/// looked at before the signature has verified.
pub fn verify_and_parse(
    key: &PublicKey,
    json: &[u8],
    sig_file: &[u8],
) -> Result<ImageMeasurements, ImageError> {
    key.verify(json, sig_file)?;
    ImageMeasurements::parse(json)
}

/// An image version as the Go system's versions API names it: `vX.Y.Z` (ref `-`, stream
/// `stable`), `stream/<stream>/<version>` (ref `-`), or `ref/<ref>/stream/<stream>/<version>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub git_ref: String,
    pub stream: String,
    pub version: String,
}

impl ImageRef {
    pub fn parse(s: &str) -> Result<Self, ImageError> {
        let bad = || ImageError::BadImageRef(s.to_string());
        let parts: Vec<&str> = s.split('/').collect();
        let (git_ref, stream, version) = match parts.as_slice() {
            [v] => ("-", "stable", *v),
            ["stream", st, v] => ("-", *st, *v),
            ["ref", r, "stream", st, v] => (*r, *st, *v),
            _ => return Err(bad()),
        };
        if !version.starts_with('v') || git_ref.is_empty() || stream.is_empty() {
            return Err(bad());
        }
        Ok(Self {
            git_ref: git_ref.to_string(),
            stream: stream.to_string(),
            version: version.to_string(),
        })
    }

    /// The URL path of the Go system's CDN below `constellation/v2/`:
    /// `ref/<ref>/stream/<stream>/<version>/image/measurements.json`.
    pub fn measurements_path(&self) -> String {
        format!(
            "ref/{}/stream/{}/{}/image/measurements.json",
            self.git_ref, self.stream, self.version
        )
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.git_ref.as_str(), self.stream.as_str()) {
            ("-", "stable") => f.write_str(&self.version),
            ("-", st) => write!(f, "stream/{st}/{}", self.version),
            (r, st) => write!(f, "ref/{r}/stream/{st}/{}", self.version),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn vectors() -> Option<PathBuf> {
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/testvectors/measurements-signing");
        if p.is_dir() {
            Some(p)
        } else {
            // Written to the real stderr (not captured by the test harness): a skip must be visible.
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!("SKIPPED (test vectors absent): {} is absent\n", p.display()).as_bytes(),
            );
            None
        }
    }

    fn read(dir: &std::path::Path, name: &str) -> Vec<u8> {
        std::fs::read(dir.join(name)).unwrap()
    }

    #[test]
    fn default_keys_parse() {
        PublicKey::default_key();
        PublicKey::from_pem(GO_RELEASE_KEY_PEM.as_bytes()).unwrap();
    }

    #[test]
    fn bad_keys_rejected() {
        let cases: [&[u8]; 3] = [
            b"",
            b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
            // A P-384 key (different curve OID).
            b"-----BEGIN PUBLIC KEY-----\nMHYwEAYHKoZIzj0CAQYFK4EEACIDYgAE\n-----END PUBLIC KEY-----\n",
        ];
        for pem in cases {
            assert!(
                matches!(
                    PublicKey::from_pem(pem),
                    Err(ImageError::BadPublicKey { .. })
                ),
                "{}",
                String::from_utf8_lossy(pem)
            );
        }
    }

    #[test]
    fn shared_vectors_verify_and_select() {
        let Some(dir) = vectors() else { return };
        let key = PublicKey::from_pem(&read(&dir, "cosign.pub")).unwrap();
        let json = read(&dir, "measurements.json");
        let sig = read(&dir, "measurements.json.sig");
        let m = verify_and_parse(&key, &json, &sig).unwrap();
        assert_eq!(m.version, "v1.0.0-test");
        let sel = m.select("Unknown", "dummy").unwrap();
        assert_eq!(sel.get(0).unwrap().expected, vec![0; 32]);
        let err = m.select("QEMU", "qemu-vtpm").unwrap_err();
        assert!(matches!(err, ImageError::NoMeasurementsFor { .. }));
        assert!(err.to_string().contains("Unknown/dummy"), "{err}");
        m.ensure_image(&ImageRef::parse("v1.0.0-test").unwrap())
            .unwrap();
        assert!(matches!(
            m.ensure_image(&ImageRef::parse("v2.24.0").unwrap()),
            Err(ImageError::WrongImage { .. })
        ));
        // The Go release key did not sign the test file.
        assert!(matches!(
            verify_and_parse(&PublicKey::default_key(), &json, &sig),
            Err(ImageError::SignatureInvalid { .. })
        ));
    }

    #[test]
    fn every_flipped_byte_fails_signature() {
        let Some(dir) = vectors() else { return };
        let key = PublicKey::from_pem(&read(&dir, "cosign.pub")).unwrap();
        let json = read(&dir, "measurements.json");
        let sig = read(&dir, "measurements.json.sig");
        for i in 0..json.len() {
            let mut j = json.clone();
            j[i] ^= 0x01;
            assert!(
                matches!(
                    verify_and_parse(&key, &j, &sig),
                    Err(ImageError::SignatureInvalid { .. })
                ),
                "json byte {i}"
            );
        }
        let sig_text = std::str::from_utf8(&sig).unwrap().trim().to_string();
        for i in 0..sig_text.len() {
            let mut s = sig_text.clone().into_bytes();
            // Stay inside the base64 alphabet so the DER (not the base64) is what breaks.
            s[i] = if s[i] == b'A' { b'B' } else { b'A' };
            if s == sig_text.as_bytes() {
                continue;
            }
            assert!(
                matches!(
                    verify_and_parse(&key, &json, &s),
                    Err(ImageError::SignatureInvalid { .. })
                ),
                "sig char {i}"
            );
        }
    }

    #[test]
    fn valid_signature_over_non_measurements_is_refused() {
        let Some(dir) = vectors() else { return };
        let key = PublicKey::from_pem(&read(&dir, "cosign.pub")).unwrap();
        let txt = read(&dir, "not-json.txt");
        let sig = read(&dir, "not-json.txt.sig");
        key.verify(&txt, &sig).unwrap();
        assert!(matches!(
            verify_and_parse(&key, &txt, &sig),
            Err(ImageError::NotMeasurementsFile { .. })
        ));
    }

    #[test]
    fn strict_layout() {
        let z = "0".repeat(64);
        #[allow(clippy::useless_format)] // one form for all rows
        let cases = [
            (
                format!(r#"{{"version":"v1","ref":"-","stream":"stable","list":[]}}"#),
                true,
            ),
            (
                format!(r#"{{"version":"v1","ref":"-","stream":"stable","list":[],"extra":1}}"#),
                false,
            ),
            (format!(r#"{{"version":"v1","ref":"-","list":[]}}"#), false),
            (
                format!(
                    r#"{{"version":"v1","ref":"-","stream":"s","list":[{{"csp":"QEMU","attestationVariant":"qemu-vtpm","measurements":{{"4":{{"expected":"{z}","warnOnly":false}}}}}}]}}"#
                ),
                true,
            ),
            (
                format!(
                    r#"{{"version":"v1","ref":"-","stream":"s","list":[{{"csp":"QEMU","attestationVariant":"qemu-vtpm","measurements":{{"4":{{"expected":"00","warnOnly":false}}}}}}]}}"#
                ),
                false,
            ),
            ("[1,2]".to_string(), false),
        ];
        for (j, ok) in cases {
            assert_eq!(ImageMeasurements::parse(j.as_bytes()).is_ok(), ok, "{j}");
        }
    }

    #[test]
    fn image_refs() {
        let cases = [
            ("v2.24.0", Some(("-", "stable", "v2.24.0"))),
            (
                "stream/nightly/v2.25.0-pre",
                Some(("-", "nightly", "v2.25.0-pre")),
            ),
            (
                "ref/main/stream/nightly/v2.25.0-pre.0",
                Some(("main", "nightly", "v2.25.0-pre.0")),
            ),
            ("2.24.0", None),
            ("ref/main/v2.24.0", None),
            ("", None),
        ];
        for (s, want) in cases {
            let got = ImageRef::parse(s).ok();
            assert_eq!(
                got.as_ref()
                    .map(|r| (r.git_ref.as_str(), r.stream.as_str(), r.version.as_str())),
                want,
                "{s}"
            );
            if let Some(r) = got {
                assert_eq!(r.to_string(), s);
            }
        }
        assert_eq!(
            ImageRef::parse("v2.24.0").unwrap().measurements_path(),
            "ref/-/stream/stable/v2.24.0/image/measurements.json"
        );
    }
}
