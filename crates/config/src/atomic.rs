//! Atomic file writes with explicit permissions, shared by every workspace file.
//!
//! A reader sees either the old file or the complete new one, never a partial write: the bytes
//! go to a temporary file in the same directory (created `O_EXCL` with the final mode), which is
//! fsynced and then put in place. [`write_new`] puts it in place with a hard link, which fails
//! if the target exists (the `O_EXCL` semantics of the Go CLI, but atomic); [`replace`] renames
//! over the target. The directory is fsynced afterwards so the new name survives a crash.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Mode of every file the CLI writes into the workspace (owner read/write only).
pub const OWNER_ONLY: u32 = 0o600;

/// Errors of atomic writes. The path is the target, not the temporary file.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{} already exists; refusing to overwrite it", path.display())]
    AlreadyExists { path: PathBuf },
    #[error("writing {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl WriteError {
    fn io(path: &Path, source: io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Removes the temporary file unless the write completed.
struct TempGuard {
    path: PathBuf,
    armed: bool,
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Writes `bytes` to a fresh temporary file next to `path` with `mode`, fsynced.
fn write_temp(path: &Path, bytes: &[u8], mode: u32) -> Result<TempGuard, WriteError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = parent_dir(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".to_string());
    let mut attempt = 0;
    loop {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let tmp = dir.join(format!(
            ".{name}.tmp-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp);
        let mut file: File = match file {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 16 => {
                attempt += 1;
                continue;
            }
            Err(e) => return Err(WriteError::io(path, e)),
        };
        let guard = TempGuard {
            path: tmp,
            armed: true,
        };
        // The umask may have narrowed the mode; set it exactly (it never widens beyond `mode`).
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| WriteError::io(path, e))?;
        file.write_all(bytes).map_err(|e| WriteError::io(path, e))?;
        file.sync_all().map_err(|e| WriteError::io(path, e))?;
        return Ok(guard);
    }
}

fn sync_dir(path: &Path) -> Result<(), WriteError> {
    let dir = parent_dir(path);
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| WriteError::io(path, e))
}

/// Creates `path` with `bytes` and `mode`; fails with [`WriteError::AlreadyExists`] if it exists
/// (then the existing file is untouched). Atomic: the file appears complete or not at all.
pub fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), WriteError> {
    if path.symlink_metadata().is_ok() {
        return Err(WriteError::AlreadyExists {
            path: path.to_path_buf(),
        });
    }
    let mut guard = write_temp(path, bytes, mode)?;
    match fs::hard_link(&guard.path, path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(WriteError::AlreadyExists {
                path: path.to_path_buf(),
            })
        }
        Err(e) => return Err(WriteError::io(path, e)),
    }
    // The target now holds the content; the temporary name goes (the guard removes it).
    let _ = fs::remove_file(&guard.path);
    guard.armed = false;
    sync_dir(path)
}

/// Replaces (or creates) `path` with `bytes` and `mode`, atomically.
pub fn replace(path: &Path, bytes: &[u8], mode: u32) -> Result<(), WriteError> {
    let mut guard = write_temp(path, bytes, mode)?;
    fs::rename(&guard.path, path).map_err(|e| WriteError::io(path, e))?;
    guard.armed = false;
    sync_dir(path)
}

/// The permission bits of `path` that give access to group or others (0 when owner-only).
pub fn group_other_bits(meta: &fs::Metadata) -> u32 {
    meta.permissions().mode() & 0o077
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect()
    }

    #[test]
    fn write_new_creates_once() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f.yaml");
        write_new(&p, b"one", OWNER_ONLY).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"one");
        assert_eq!(mode(&p), 0o600);
        let e = write_new(&p, b"two", OWNER_ONLY).unwrap_err();
        assert!(matches!(e, WriteError::AlreadyExists { .. }), "{e}");
        assert_eq!(fs::read(&p).unwrap(), b"one");
        assert!(leftovers(d.path()).is_empty());
    }

    #[test]
    fn write_new_refuses_dangling_symlink() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("link");
        std::os::unix::fs::symlink(d.path().join("nowhere"), &p).unwrap();
        assert!(matches!(
            write_new(&p, b"x", OWNER_ONLY),
            Err(WriteError::AlreadyExists { .. })
        ));
        assert!(!d.path().join("nowhere").exists());
    }

    #[test]
    fn replace_overwrites_and_sets_mode() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        fs::write(&p, b"old").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        replace(&p, b"new", OWNER_ONLY).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new");
        assert_eq!(mode(&p), 0o600);
        assert!(leftovers(d.path()).is_empty());
    }

    #[test]
    fn failure_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        // Target is a non-empty directory: rename fails, the temp file must go.
        let p = d.path().join("dir");
        fs::create_dir(&p).unwrap();
        fs::write(p.join("x"), b"x").unwrap();
        assert!(replace(&p, b"new", OWNER_ONLY).is_err());
        assert!(leftovers(d.path()).is_empty());
    }
}
