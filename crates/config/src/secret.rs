//! `constellation-mastersecret.json`: the owner's master secret in the Go system's layout,
//!
//! ```json
//! {
//!     "key": "<std base64, ≥ 16 bytes>",
//!     "salt": "<std base64, ≥ 32 bytes>"
//! }
//! ```
//!
//! tab-indented, no trailing newline, mode 0600, written once and never overwritten.

use std::fmt;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use keys::MasterSecret;
use serde::Deserialize;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::atomic::{self, WriteError};
use crate::FileError as _;

/// File name of the master secret in a workspace.
pub const MASTER_SECRET_FILE: &str = "constellation-mastersecret.json";

/// Errors of the master secret file. Messages never contain secret bytes.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    #[error("{} does not exist", path.display())]
    NotFound { path: PathBuf },
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not a master secret file", path.display())]
    InFile {
        path: PathBuf,
        #[source]
        source: Box<SecretFileError>,
    },
    #[error("not JSON of the form {{\"key\": \"<base64>\", \"salt\": \"<base64>\"}} (line {line}, column {column})")]
    Json { line: usize, column: usize },
    #[error("`{field}` is not standard base64")]
    Base64 { field: &'static str },
    #[error(transparent)]
    Key(#[from] keys::KeyError),
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// The secret file is readable or writable by group or others. The secret is still returned;
/// the CLI shows this warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionWarning {
    pub path: PathBuf,
    pub mode: u32,
}

impl fmt::Display for PermissionWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is accessible by group or others (mode {:04o}); restrict it with `chmod 600 {}`",
            self.path.display(),
            self.mode & 0o7777,
            self.path.display()
        )
    }
}

/// A master secret read from disk, with a warning if its file's permissions are too wide.
pub struct LoadedSecret {
    pub secret: MasterSecret,
    pub warning: Option<PermissionWarning>,
}

#[derive(Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(deny_unknown_fields)]
struct FileRepr {
    key: String,
    salt: String,
}

/// Parses the file content.
pub fn decode(bytes: &[u8]) -> Result<MasterSecret, SecretFileError> {
    let repr: FileRepr = serde_json::from_slice(bytes).map_err(|e| SecretFileError::Json {
        line: e.line(),
        column: e.column(),
    })?;
    let std = &base64::engine::general_purpose::STANDARD;
    let key = std
        .decode(repr.key.as_bytes())
        .map_err(|_| SecretFileError::Base64 { field: "key" })?;
    let salt = std
        .decode(repr.salt.as_bytes())
        .map_err(|_| SecretFileError::Base64 { field: "salt" })?;
    Ok(MasterSecret::new(key, salt)?)
}

/// The file content (Go `json.MarshalIndent` with tab indent). Secret.
pub fn encode(secret: &MasterSecret) -> Zeroizing<String> {
    let std = &base64::engine::general_purpose::STANDARD;
    let key = Zeroizing::new(std.encode(secret.key()));
    let salt = Zeroizing::new(std.encode(secret.salt()));
    Zeroizing::new(format!(
        "{{\n\t\"key\": \"{}\",\n\t\"salt\": \"{}\"\n}}",
        key.as_str(),
        salt.as_str()
    ))
}

/// Reads the master secret file at `path`.
pub fn read(path: &Path) -> Result<LoadedSecret, SecretFileError> {
    let mut file =
        std::fs::File::open(path).map_err(|source| SecretFileError::opening(path, source))?;
    let read_err = |source| SecretFileError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = file.metadata().map_err(read_err)?;
    let mut buf = Zeroizing::new(Vec::new());
    // A master secret file is ~100 bytes; refuse to slurp anything large.
    (&mut file)
        .take(64 * 1024)
        .read_to_end(&mut buf)
        .map_err(read_err)?;
    let secret = decode(&buf).map_err(|e| e.in_file_at(path))?;
    let mode = meta.permissions().mode();
    let warning = (atomic::group_other_bits(&meta) != 0).then(|| PermissionWarning {
        path: path.to_path_buf(),
        mode,
    });
    Ok(LoadedSecret { secret, warning })
}

/// Writes a new master secret file (mode 0600); never overwrites an existing one.
pub fn write_new(path: &Path, secret: &MasterSecret) -> Result<(), SecretFileError> {
    let text = encode(secret);
    Ok(atomic::write_new(
        path,
        text.as_bytes(),
        atomic::OWNER_ONLY,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_layout_roundtrip() {
        let m = MasterSecret::new(vec![0xfb; 32], (0..32).collect()).unwrap();
        let text = encode(&m);
        assert_eq!(
            text.as_str(),
            "{\n\t\"key\": \"+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/s=\",\n\t\"salt\": \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"\n}"
        );
        let back = decode(text.as_bytes()).unwrap();
        assert_eq!((back.key(), back.salt()), (m.key(), m.salt()));
    }

    #[test]
    fn rejects_bad_files() {
        let salt = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        let cases = [
            ("{}".to_string(), "not JSON of the form"),
            (
                format!(r#"{{"key":"AAAAAAAAAAAAAAAAAAAAAA==","salt":"{salt}","x":1}}"#),
                "not JSON",
            ),
            (
                format!(r#"{{"key":"-_-_","salt":"{salt}"}}"#),
                "`key` is not standard base64",
            ),
            (
                format!(r#"{{"key":"AAAA","salt":"{salt}"}}"#),
                "at least 16",
            ),
            (
                r#"{"key":"AAAAAAAAAAAAAAAAAAAAAA==","salt":"AAAA"}"#.to_string(),
                "at least 32",
            ),
        ];
        for (j, want) in cases {
            let e = decode(j.as_bytes())
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains(want), "{j}: {e}");
        }
    }

    #[test]
    fn write_once_and_permission_warning() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(MASTER_SECRET_FILE);
        let m = MasterSecret::generate().unwrap();
        write_new(&p, &m).unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let before = std::fs::read(&p).unwrap();
        let other = MasterSecret::generate().unwrap();
        assert!(matches!(
            write_new(&p, &other),
            Err(SecretFileError::Write(WriteError::AlreadyExists { .. }))
        ));
        assert_eq!(std::fs::read(&p).unwrap(), before);

        let l = read(&p).unwrap();
        assert!(l.warning.is_none());
        assert_eq!(l.secret.key(), m.key());

        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        let l = read(&p).unwrap();
        assert_eq!(l.secret.key(), m.key());
        let w = l.warning.unwrap().to_string();
        assert!(w.contains("mode 0640") && w.contains("chmod 600"), "{w}");
    }
}
