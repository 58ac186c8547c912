//! OCI image-layout archives written in Rust (one uncompressed layer, ustar entries with mtime 0,
//! uid/gid 0, sorted paths, canonical JSON), so the same input always gives the same digests.
//! The archives are what `ctr -n k8s.io images import` takes (an `index.json` whose manifest carries
//! the `io.containerd.image.name` annotation).
//!
//! Images here:
//! * pause: one statically linked C program (`pause/pause.c`, compiled by [`compile_pause`] with
//!   `cc -O2 -static`; busybox has no applet that both reaps children and exits on SIGTERM, which a
//!   pod sandbox's init needs), tagged as kubeadm expects the sandbox image
//!   ([`PAUSE_REFERENCE`]).
//! * busybox: Debian's `busybox-static` binary plus one symlink per applet, minimal `/etc`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The image repository the cluster's locally built images are named under (kubeadm's
/// `imageRepository`).
pub const IMAGE_REPOSITORY: &str = "localhost/constellation";
/// The sandbox image, named as kubeadm v1.36 expects it under [`IMAGE_REPOSITORY`].
pub const PAUSE_REFERENCE: &str = "localhost/constellation/pause:3.10.2";
/// The workload image.
pub const BUSYBOX_REFERENCE: &str = "localhost/constellation/busybox:local";

/// CoreDNS, named as kubeadm v1.36 expects it under [`IMAGE_REPOSITORY`].
pub const COREDNS_REFERENCE: &str = "localhost/constellation/coredns:v1.14.2";

const PAUSE_SOURCE: &str = include_str!("../pause/pause.c");

/// Building an image failed.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("path {0:?} in the image is not a clean relative path (no '..', no empty parts)")]
    BadPath(String),
    #[error("tar entry {path:?}: {what} is {len} bytes, the ustar limit is {max}")]
    TooLong {
        path: String,
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("image reference {0:?} has no tag (name:tag)")]
    NoTag(String),
    #[error(transparent)]
    Command(#[from] crate::cmd::CommandError),
}

fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> ImageError + 'a {
    move |source| ImageError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// One file system entry of a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir { mode: u32 },
    File { mode: u32, data: Vec<u8> },
    Symlink { target: String },
}

/// A root file system, kept sorted by path.
#[derive(Debug, Clone, Default)]
pub struct Rootfs {
    entries: BTreeMap<String, Entry>,
}

fn clean(path: &str) -> Result<String, ImageError> {
    let p = path.trim_start_matches('/').trim_end_matches('/');
    if p.is_empty() || p.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err(ImageError::BadPath(path.to_owned()));
    }
    Ok(p.to_owned())
}

impl Rootfs {
    pub fn new() -> Self {
        Self::default()
    }

    fn parents(&mut self, path: &str) {
        let mut acc = String::new();
        let parts: Vec<&str> = path.split('/').collect();
        for c in &parts[..parts.len().saturating_sub(1)] {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(c);
            self.entries
                .entry(acc.clone())
                .or_insert(Entry::Dir { mode: 0o755 });
        }
    }

    /// Adds (or replaces) an entry; missing parent directories are added with mode 0755.
    pub fn add(&mut self, path: &str, entry: Entry) -> Result<&mut Self, ImageError> {
        let p = clean(path)?;
        self.parents(&p);
        self.entries.insert(p, entry);
        Ok(self)
    }

    pub fn dir(&mut self, path: &str, mode: u32) -> Result<&mut Self, ImageError> {
        self.add(path, Entry::Dir { mode })
    }

    pub fn file(&mut self, path: &str, mode: u32, data: Vec<u8>) -> Result<&mut Self, ImageError> {
        self.add(path, Entry::File { mode, data })
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> Result<&mut Self, ImageError> {
        self.add(
            path,
            Entry::Symlink {
                target: target.to_owned(),
            },
        )
    }

    /// The entries, sorted by path.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The layer: an uncompressed ustar archive.
    pub fn to_tar(&self) -> Result<Vec<u8>, ImageError> {
        let mut out = Vec::new();
        for (path, entry) in &self.entries {
            match entry {
                Entry::Dir { mode } => {
                    out.extend(header(&format!("{path}/"), *mode, 0, b'5', "")?);
                }
                Entry::File { mode, data } => {
                    out.extend(header(path, *mode, data.len() as u64, b'0', "")?);
                    out.extend_from_slice(data);
                    pad(&mut out);
                }
                Entry::Symlink { target } => {
                    out.extend(header(path, 0o777, 0, b'2', target)?);
                }
            }
        }
        out.extend_from_slice(&[0u8; 1024]);
        Ok(out)
    }
}

fn pad(out: &mut Vec<u8>) {
    let rem = out.len() % 512;
    if rem != 0 {
        out.resize(out.len() + 512 - rem, 0);
    }
}

fn octal(field: &mut [u8], value: u64) {
    // width-1 octal digits, NUL-terminated
    let s = format!("{:0width$o}", value, width = field.len() - 1);
    field[..s.len()].copy_from_slice(s.as_bytes());
}

/// A ustar header; long names are split into prefix (≤155) and name (≤100).
fn header(path: &str, mode: u32, size: u64, kind: u8, link: &str) -> Result<[u8; 512], ImageError> {
    let mut h = [0u8; 512];
    let (prefix, name) = if path.len() <= 100 {
        ("", path)
    } else {
        let split = path[..path.len().min(156)]
            .rfind('/')
            .filter(|&i| path.len() - i - 1 <= 100 && i <= 155);
        match split {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => {
                return Err(ImageError::TooLong {
                    path: path.to_owned(),
                    what: "path",
                    len: path.len(),
                    max: 255,
                })
            }
        }
    };
    if link.len() > 100 {
        return Err(ImageError::TooLong {
            path: path.to_owned(),
            what: "link target",
            len: link.len(),
            max: 100,
        });
    }
    if size >= 8u64.pow(11) {
        return Err(ImageError::TooLong {
            path: path.to_owned(),
            what: "file",
            len: size as usize,
            max: 8usize.pow(11) - 1,
        });
    }
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut h[100..108], u64::from(mode & 0o7777));
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 0);
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    Ok(h)
}

/// Name and process settings of an image.
#[derive(Debug, Clone)]
pub struct ImageConfig {
    /// `registry/name:tag`.
    pub reference: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    pub reference: String,
    /// `sha256:…` of the manifest: the image's identity.
    pub manifest_digest: String,
    pub config_digest: String,
    pub layer_digest: String,
    pub path: PathBuf,
}

fn sha(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

/// Writes `rootfs` as a single-layer OCI image-layout tar at `out`.
pub fn write_oci_archive(
    rootfs: &Rootfs,
    config: &ImageConfig,
    out: &Path,
) -> Result<BuiltImage, ImageError> {
    let tag = config
        .reference
        .rsplit_once(':')
        .filter(|(name, tag)| !tag.contains('/') && !name.is_empty() && !tag.is_empty())
        .map(|(_, t)| t.to_owned())
        .ok_or_else(|| ImageError::NoTag(config.reference.clone()))?;
    let layer = rootfs.to_tar()?;
    let layer_digest = sha(&layer);
    let mut process = serde_json::Map::new();
    process.insert(
        "Env".into(),
        serde_json::json!(["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]),
    );
    process.insert("WorkingDir".into(), serde_json::json!("/"));
    if !config.entrypoint.is_empty() {
        process.insert("Entrypoint".into(), serde_json::json!(config.entrypoint));
    }
    if !config.cmd.is_empty() {
        process.insert("Cmd".into(), serde_json::json!(config.cmd));
    }
    let cfg = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": process,
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created_by": "kube-node image::write_oci_archive"}],
    });
    // serialising a serde_json::Value cannot fail (string keys only)
    let cfg_b = serde_json::to_vec(&cfg).unwrap_or_default();
    let config_digest = sha(&cfg_b);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": cfg_b.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()}],
    });
    let man_b = serde_json::to_vec(&manifest).unwrap_or_default();
    let manifest_digest = sha(&man_b);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": man_b.len(),
            "annotations": {
                "io.containerd.image.name": config.reference,
                "org.opencontainers.image.ref.name": tag,
            },
            "platform": {"architecture": "amd64", "os": "linux"},
        }],
    });
    let index_b = serde_json::to_vec(&index).unwrap_or_default();

    let mut archive = Rootfs::new();
    archive.file(
        "oci-layout",
        0o644,
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    )?;
    for (digest, data) in [
        (&layer_digest, layer),
        (&config_digest, cfg_b),
        (&manifest_digest, man_b),
    ] {
        let hexpart = digest.trim_start_matches("sha256:");
        archive.file(&format!("blobs/sha256/{hexpart}"), 0o644, data)?;
    }
    archive.file("index.json", 0o644, index_b)?;
    let bytes = archive.to_tar()?;
    let mut f = std::fs::File::create(out).map_err(io_err("create image archive", out))?;
    f.write_all(&bytes)
        .map_err(io_err("write image archive", out))?;
    Ok(BuiltImage {
        reference: config.reference.clone(),
        manifest_digest,
        config_digest,
        layer_digest,
        path: out.to_path_buf(),
    })
}

fn read(path: &Path) -> Result<Vec<u8>, ImageError> {
    std::fs::read(path).map_err(io_err("read", path))
}

/// A busybox root file system from a static busybox binary: `/bin/busybox`, one symlink per
/// applet it lists (`busybox --list`), `/etc/passwd`, `/etc/group`, `/tmp` (1777), `/root`.
pub fn busybox_rootfs(busybox: &Path) -> Result<Rootfs, ImageError> {
    let list = crate::cmd::run(std::process::Command::new(busybox).arg("--list"))?;
    let mut fs = Rootfs::new();
    fs.file("bin/busybox", 0o755, read(busybox)?)?;
    for applet in list.lines().map(str::trim) {
        if applet.is_empty() || applet == "busybox" || applet.contains('/') {
            continue;
        }
        fs.symlink(&format!("bin/{applet}"), "busybox")?;
    }
    fs.file(
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
            .to_vec(),
    )?;
    fs.file(
        "etc/group",
        0o644,
        b"root:x:0:\nnogroup:x:65534:\n".to_vec(),
    )?;
    fs.dir("tmp", 0o1777)?;
    fs.dir("root", 0o700)?;
    Ok(fs)
}

/// Compiles the pause program with `cc -O2 -static` into `out`.
pub fn compile_pause(cc: &str, out: &Path) -> Result<(), ImageError> {
    let src = out.with_extension("c");
    std::fs::write(&src, PAUSE_SOURCE).map_err(io_err("write pause source", &src))?;
    let result = crate::cmd::run(
        std::process::Command::new(cc)
            .args(["-O2", "-static", "-s", "-o"])
            .arg(out)
            .arg(&src),
    );
    let _ = std::fs::remove_file(&src);
    result?;
    Ok(())
}

/// The pause image's root file system: `/pause` only.
pub fn pause_rootfs(pause: &Path) -> Result<Rootfs, ImageError> {
    let mut fs = Rootfs::new();
    fs.file("pause", 0o755, read(pause)?)?;
    Ok(fs)
}

/// Builds the pause image (compiling the program) and the busybox image into `dir`.
pub fn build_standard_images(
    dir: &Path,
    busybox: &Path,
    cc: &str,
) -> Result<(BuiltImage, BuiltImage), ImageError> {
    std::fs::create_dir_all(dir).map_err(io_err("create image folder", dir))?;
    let pause_bin = dir.join("pause");
    compile_pause(cc, &pause_bin)?;
    let pause = write_oci_archive(
        &pause_rootfs(&pause_bin)?,
        &ImageConfig {
            reference: PAUSE_REFERENCE.into(),
            entrypoint: vec!["/pause".into()],
            cmd: vec![],
        },
        &dir.join("pause.oci.tar"),
    )?;
    let bb = write_oci_archive(
        &busybox_rootfs(busybox)?,
        &ImageConfig {
            reference: BUSYBOX_REFERENCE.into(),
            entrypoint: vec![],
            cmd: vec!["/bin/sh".into()],
        },
        &dir.join("busybox.oci.tar"),
    )?;
    Ok((pause, bb))
}

/// The CoreDNS image: the static `coredns` binary as `/coredns` (the entrypoint kubeadm's
/// Deployment expects; its arguments come from the manifest).
pub fn build_coredns_image(dir: &Path, coredns: &Path) -> Result<BuiltImage, ImageError> {
    std::fs::create_dir_all(dir).map_err(io_err("create image folder", dir))?;
    let mut fs = Rootfs::new();
    fs.file("coredns", 0o755, read(coredns)?)?;
    fs.dir("tmp", 0o1777)?;
    write_oci_archive(
        &fs,
        &ImageConfig {
            reference: COREDNS_REFERENCE.into(),
            entrypoint: vec!["/coredns".into()],
            cmd: vec![],
        },
        &dir.join("coredns.oci.tar"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_checked() {
        let mut fs = Rootfs::new();
        assert!(
            matches!(fs.file("a/../b", 0o644, vec![]), Err(ImageError::BadPath(p)) if p == "a/../b")
        );
        assert!(matches!(fs.dir("", 0o755), Err(ImageError::BadPath(_))));
    }

    #[test]
    fn reference_needs_a_tag() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ImageConfig {
            reference: "localhost:5000/x".into(),
            entrypoint: vec![],
            cmd: vec![],
        };
        let err = write_oci_archive(&Rootfs::new(), &cfg, &dir.path().join("o.tar")).unwrap_err();
        assert!(
            matches!(err, ImageError::NoTag(ref r) if r == "localhost:5000/x"),
            "{err}"
        );
    }

    #[test]
    fn same_input_same_digest_and_tar_lists_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut fs = Rootfs::new();
        fs.file("bin/hello", 0o755, b"#!/bin/sh\necho hi\n".to_vec())
            .unwrap()
            .symlink("bin/hi", "hello")
            .unwrap()
            .file(&format!("deep/{}/f", "d".repeat(120)), 0o600, vec![7; 1000])
            .unwrap();
        let cfg = ImageConfig {
            reference: "localhost/constellation/t:1".into(),
            entrypoint: vec!["/bin/hello".into()],
            cmd: vec![],
        };
        let a = write_oci_archive(&fs, &cfg, &dir.path().join("a.tar")).unwrap();
        let b = write_oci_archive(&fs, &cfg, &dir.path().join("b.tar")).unwrap();
        assert_eq!(a.manifest_digest, b.manifest_digest);
        assert_eq!(
            std::fs::read(&a.path).unwrap(),
            std::fs::read(&b.path).unwrap()
        );
        // GNU tar reads both the archive and the layer (ustar with prefix for the long path)
        let listing =
            crate::cmd::run(std::process::Command::new("tar").arg("-tvf").arg(&a.path)).unwrap();
        assert!(listing.contains("index.json"), "{listing}");
        let layer = dir.path().join("layer.tar");
        std::fs::write(&layer, fs.to_tar().unwrap()).unwrap();
        let listing =
            crate::cmd::run(std::process::Command::new("tar").arg("-tvf").arg(&layer)).unwrap();
        assert!(
            listing.contains(&format!("deep/{}/f", "d".repeat(120))),
            "{listing}"
        );
        assert!(listing.contains("bin/hi -> hello"), "{listing}");
        // pinned: a change of the archive format changes this digest
        assert_eq!(a.manifest_digest, PINNED_DIGEST, "manifest digest changed");
    }

    const PINNED_DIGEST: &str =
        "sha256:8750f14bcebac4a22898e515dbc4cabc4e050b78b6cd6f658eaa0fdff0a818eb";
}
