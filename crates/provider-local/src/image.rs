//! Node images: a directory holding `manifest.json` and the node's programs under `bin/`.
//!
//! ```text
//! <images>/<version>-<first 12 hex of SHA-256(manifest.json)>/
//!   manifest.json   {"version", "components": [{"name", "path", "sha256", "boot"}]}
//!   bin/constellation-node   the boot component (launcher target: Bootstrapper and services)
//!   bin/etcd                 etcd 3.6 from the Kubernetes build (see [`etcd_source`]), started by control-plane nodes
//! ```
//!
//! The directory name is derived from the manifest, and the manifest pins every component's
//! digest, so an image is content-addressed: [`NodeImage::build`] of the same inputs yields the
//! same directory, and any changed byte is visible as a changed PCR 11 at boot.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::pcr;

pub const MANIFEST: &str = "manifest.json";
pub const NODE_BINARY: &str = "constellation-node";
pub const ETCD_BINARY: &str = "etcd";

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a node image manifest")]
    BadManifest {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("node image {dir} has no boot component")]
    NoBootComponent { dir: PathBuf },
    #[error("component path {path:?} in {manifest} leaves the image directory")]
    PathEscapes { manifest: PathBuf, path: String },
    #[error("cannot find the node program {name:?}: looked in {looked}")]
    SourceMissing { name: String, looked: String },
    #[error("building the container images of the node image")]
    ContainerImage(#[source] kube_node::image::ImageError),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub version: String,
    pub components: Vec<Component>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    pub name: String,
    /// Relative to the image directory.
    pub path: String,
    /// Lowercase hex SHA-256 of the file at build time.
    pub sha256: String,
    /// The component the launcher hands control to (measured into PCR 4).
    #[serde(default)]
    pub boot: bool,
}

/// A loaded image: its directory, manifest and manifest digest.
#[derive(Debug, Clone)]
pub struct NodeImage {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub manifest_digest: [u8; 32],
}

/// The etcd a new image bundles, and where it was looked for: `$CONSTELLATION_ETCD` if set; else
/// etcd 3.6 from the newest complete build of `scripts/install-kubernetes.sh`
/// (`${CONSTELLATION_CACHE:-${XDG_CACHE_HOME:-~/.cache}/constellation}/kubernetes/<key>/bin`,
/// the same etcd Kubernetes runs on); else Debian's `/usr/bin/etcd` (3.4, too old for
/// Kubernetes, kept only as a fallback for installs without that build).
pub fn etcd_source() -> (Option<PathBuf>, String) {
    let mut looked = vec![];
    if let Some(p) = std::env::var_os("CONSTELLATION_ETCD") {
        let p = PathBuf::from(p);
        looked.push(format!("$CONSTELLATION_ETCD ({})", p.display()));
        return (p.is_file().then_some(p), looked.join(", "));
    }
    let (build, mut looked_build) = kube_build();
    looked.append(&mut looked_build);
    if let Some(bin) = build {
        return (Some(bin.join(ETCD_BINARY)), looked.join(", "));
    }
    let debian = PathBuf::from("/usr/bin/etcd");
    looked.push("/usr/bin/etcd (Debian package etcd-server)".into());
    (debian.is_file().then_some(debian), looked.join(", "))
}

/// The programs of the Kubernetes components a node image bundles (from the pinned build of
/// `scripts/install-kubernetes.sh`), measured and run like every other component.
pub const KUBE_BINARIES: &[&str] = &[
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "kubeadm",
    "kubectl",
    "coredns",
    "etcdctl",
];

/// The container images a Kubernetes node image bundles (names shared with the node:
/// [`cluster::ids::COMPONENT_IMAGE_ARCHIVES`]).
pub use cluster::ids::COMPONENT_IMAGE_ARCHIVES as KUBE_IMAGES;

/// Whether node images include Kubernetes: yes unless `CONSTELLATION_KUBERNETES=off` (the
/// fast mode for tests of the attestation core: the cluster state, JoinService and KeyService
/// without Kubernetes).
pub fn kubernetes_wanted() -> bool {
    !matches!(
        std::env::var("CONSTELLATION_KUBERNETES").as_deref(),
        Ok("off" | "0" | "false" | "no")
    )
}

/// The `bin` folder of the newest complete build of `scripts/install-kubernetes.sh`
/// (`$KUBE_BIN` first), and where it looked.
pub fn kube_build() -> (Option<PathBuf>, Vec<String>) {
    let mut looked = vec![];
    if let Some(p) = std::env::var_os("KUBE_BIN") {
        let p = PathBuf::from(p);
        looked.push(format!("$KUBE_BIN ({})", p.display()));
        if p.join("kubelet").is_file() && p.join(ETCD_BINARY).is_file() {
            return (Some(p), looked);
        }
    }
    let cache = std::env::var_os("CONSTELLATION_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME").map(|x| PathBuf::from(x).join("constellation"))
        })
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/constellation"))
        });
    if let Some(root) = cache.map(|c| c.join("kubernetes")) {
        looked.push(format!("{}/<key>/bin/etcd", root.display()));
        // Complete builds only (a key folder exists only complete; temporary ones start with
        // a dot), newest first.
        let mut builds: Vec<(std::time::SystemTime, PathBuf)> = fs::read_dir(&root)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter_map(|e| {
                let etcd = e.path().join("bin").join(ETCD_BINARY);
                let built = fs::metadata(e.path().join("versions"))
                    .ok()?
                    .modified()
                    .ok()?;
                etcd.is_file().then_some((built, etcd))
            })
            .collect();
        builds.sort();
        if let Some((_, etcd)) = builds.pop() {
            return (etcd.parent().map(Path::to_path_buf), looked);
        }
    }
    (None, looked)
}

/// Where the Kubernetes components of a new image come from.
#[derive(Debug, Clone)]
pub struct KubeSources {
    /// The build's `bin` folder ([`KUBE_BINARIES`]).
    pub bin_dir: PathBuf,
    /// ([`KUBE_IMAGES`] name, OCI archive).
    pub images: Vec<(String, PathBuf)>,
}

impl KubeSources {
    /// The newest complete Kubernetes build, with the container images built from it (and from
    /// the host's busybox and C compiler) into a content-addressed cache next to it.
    pub fn find() -> Result<KubeSources, ImageError> {
        let (bin, looked) = kube_build();
        let bin_dir = bin.ok_or_else(|| ImageError::SourceMissing {
            name: "the Kubernetes binaries (run scripts/install-kubernetes.sh, or set CONSTELLATION_KUBERNETES=off for the mode without Kubernetes)".into(),
            looked: looked.join(", "),
        })?;
        for b in KUBE_BINARIES {
            if !bin_dir.join(b).is_file() {
                return Err(ImageError::SourceMissing {
                    name: (*b).into(),
                    looked: bin_dir.display().to_string(),
                });
            }
        }
        let images_dir = bin_dir.parent().unwrap_or(&bin_dir).join("images");
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .ok_or_else(|| ImageError::SourceMissing {
                name: "busybox (Debian package busybox-static)".into(),
                looked: "/bin/busybox, /usr/bin/busybox".into(),
            })?;
        let want: Vec<PathBuf> = KUBE_IMAGES.iter().map(|n| images_dir.join(n)).collect();
        if !want.iter().all(|p| p.is_file()) {
            let tmp = images_dir.with_extension(format!("tmp-{}", std::process::id()));
            let _ = fs::remove_dir_all(&tmp);
            let built = (|| {
                let (pause, bb) = kube_node::image::build_standard_images(&tmp, &busybox, "cc")?;
                let dns = kube_node::image::build_coredns_image(&tmp, &bin_dir.join("coredns"))?;
                fs::create_dir_all(&images_dir).map_err(|e| kube_node::image::ImageError::Io {
                    what: "create image folder",
                    path: images_dir.clone(),
                    source: e,
                })?;
                for (img, name) in [
                    (pause, KUBE_IMAGES[0]),
                    (bb, KUBE_IMAGES[1]),
                    (dns, KUBE_IMAGES[2]),
                ] {
                    fs::rename(&img.path, images_dir.join(name)).map_err(|e| {
                        kube_node::image::ImageError::Io {
                            what: "move image",
                            path: img.path.clone(),
                            source: e,
                        }
                    })?;
                }
                Ok::<(), kube_node::image::ImageError>(())
            })();
            let _ = fs::remove_dir_all(&tmp);
            built.map_err(ImageError::ContainerImage)?;
        }
        Ok(KubeSources {
            bin_dir,
            images: KUBE_IMAGES
                .iter()
                .map(|n| (n.to_string(), images_dir.join(n)))
                .collect(),
        })
    }
}

/// Where the programs of a new image come from.
#[derive(Debug, Clone)]
pub struct Sources {
    pub node_binary: PathBuf,
    pub etcd_binary: PathBuf,
    /// The Kubernetes components, when the image runs Kubernetes.
    pub kube: Option<KubeSources>,
    pub version: String,
}

impl Sources {
    /// The default sources: `constellation-node` next to the running executable (as cargo and
    /// installs place it), etcd from [`etcd_source`], and with `kubernetes` the Kubernetes
    /// components ([`KubeSources::find`]).
    pub fn default_for_exe(version: &str, kubernetes: bool) -> Result<Self, ImageError> {
        let exe = std::env::current_exe().map_err(|e| ImageError::Read {
            path: "current executable".into(),
            source: e,
        })?;
        let mut looked = vec![];
        let mut node = None;
        if let Some(dir) = exe.parent() {
            // `cargo test` runs binaries from target/<profile>/deps; the binary is one level up.
            for d in [dir.to_path_buf(), dir.join(".."), dir.join("../..")] {
                let p = d.join(NODE_BINARY);
                looked.push(p.display().to_string());
                if p.is_file() {
                    node = Some(p);
                    break;
                }
            }
        }
        let node_binary = node.ok_or_else(|| ImageError::SourceMissing {
            name: NODE_BINARY.into(),
            looked: looked.join(", "),
        })?;
        let (etcd_binary, looked) = etcd_source();
        let etcd_binary = etcd_binary.ok_or_else(|| ImageError::SourceMissing {
            name: ETCD_BINARY.into(),
            looked,
        })?;
        let kube = if kubernetes {
            Some(KubeSources::find()?)
        } else {
            None
        };
        Ok(Self {
            node_binary,
            etcd_binary,
            kube,
            version: version.to_string(),
        })
    }

    /// (source file, manifest path, component name, boot) of every component, in manifest order.
    fn files(&self) -> Vec<(PathBuf, String, String, bool)> {
        let mut v = vec![
            (
                self.node_binary.clone(),
                format!("bin/{NODE_BINARY}"),
                NODE_BINARY.to_string(),
                true,
            ),
            (
                self.etcd_binary.clone(),
                format!("bin/{ETCD_BINARY}"),
                ETCD_BINARY.to_string(),
                false,
            ),
        ];
        if let Some(k) = &self.kube {
            for b in KUBE_BINARIES {
                v.push((k.bin_dir.join(b), format!("bin/{b}"), b.to_string(), false));
            }
            for (name, path) in &k.images {
                v.push((path.clone(), format!("images/{name}"), name.clone(), false));
            }
        }
        v
    }

    fn manifest(&self) -> Result<Manifest, ImageError> {
        let components = self
            .files()
            .into_iter()
            .map(|(src, path, name, boot)| {
                Ok(Component {
                    name,
                    path,
                    sha256: hex::encode(sha256_file(&src)?),
                    boot,
                })
            })
            .collect::<Result<Vec<_>, ImageError>>()?;
        Ok(Manifest {
            version: self.version.clone(),
            components,
        })
    }

    /// Measurements of the image these sources would build, without building it.
    pub fn expected_measurements(
        &self,
        variant: attestation::Variant,
    ) -> Result<measurements::Measurements, ImageError> {
        let manifest = self.manifest()?;
        let bytes = manifest_bytes(&manifest);
        Ok(expected_for(
            &manifest,
            Sha256::digest(&bytes).into(),
            variant,
        ))
    }
}

fn manifest_bytes(m: &Manifest) -> Vec<u8> {
    // Plain data: serialisation cannot fail.
    let mut v = serde_json::to_vec_pretty(m).unwrap_or_default();
    v.push(b'\n');
    v
}

fn expected_for(
    manifest: &Manifest,
    manifest_digest: [u8; 32],
    variant: attestation::Variant,
) -> measurements::Measurements {
    let comps: Vec<(String, [u8; 32])> = manifest
        .components
        .iter()
        .map(|c| (c.name.clone(), parse_digest(&c.sha256).unwrap_or([0; 32])))
        .collect();
    let boot = manifest
        .components
        .iter()
        .find(|c| c.boot)
        .and_then(|c| parse_digest(&c.sha256))
        .unwrap_or([0; 32]);
    pcr::measurements_from_events(&pcr::boot_events(
        manifest_digest,
        &comps,
        boot,
        &pcr::cmdline(variant),
    ))
}

fn parse_digest(s: &str) -> Option<[u8; 32]> {
    hex::decode(s).ok()?.try_into().ok()
}

pub fn sha256_file(path: &Path) -> Result<[u8; 32], ImageError> {
    let mut f = fs::File::open(path).map_err(|e| ImageError::Read {
        path: path.into(),
        source: e,
    })?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| ImageError::Read {
            path: path.into(),
            source: e,
        })?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

impl NodeImage {
    /// Builds (or finds, when it already exists) the image for `sources` under `images_dir`.
    pub fn build(sources: &Sources, images_dir: &Path) -> Result<NodeImage, ImageError> {
        let manifest = sources.manifest()?;
        let bytes = manifest_bytes(&manifest);
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        let dir = images_dir.join(format!(
            "{}-{}",
            manifest.version,
            &hex::encode(digest)[..12]
        ));
        if dir.join(MANIFEST).is_file() {
            return NodeImage::load(&dir);
        }
        let tmp = images_dir.join(format!(
            ".tmp-{}-{}",
            &hex::encode(digest)[..12],
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&tmp);
        let w = |p: &Path, e| ImageError::Write {
            path: p.to_path_buf(),
            source: e,
        };
        for (src, path, _, _) in sources.files() {
            let dst = tmp.join(&path);
            if let Some(d) = dst.parent() {
                fs::create_dir_all(d).map_err(|e| w(d, e))?;
            }
            // A copy, never a hard link: whoever changes the bundle (a test tampering with it,
            // say) must not change the sources (the shared Kubernetes build).
            fs::copy(&src, &dst).map_err(|e| w(&dst, e))?;
        }
        fs::write(tmp.join(MANIFEST), &bytes).map_err(|e| w(&tmp, e))?;
        match fs::rename(&tmp, &dir) {
            Ok(()) => {}
            // Another build won the race: use its (identical) result.
            Err(_) if dir.join(MANIFEST).is_file() => {
                let _ = fs::remove_dir_all(&tmp);
            }
            Err(e) => return Err(w(&dir, e)),
        }
        NodeImage::load(&dir)
    }

    /// Loads an image directory. Does not re-hash components: that is the launcher's job, and
    /// the result goes into PCRs rather than into a yes/no here.
    pub fn load(dir: &Path) -> Result<NodeImage, ImageError> {
        let path = dir.join(MANIFEST);
        let bytes = fs::read(&path).map_err(|e| ImageError::Read {
            path: path.clone(),
            source: e,
        })?;
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| ImageError::BadManifest {
                path: path.clone(),
                source: e,
            })?;
        for c in &manifest.components {
            if c.path.starts_with('/') || c.path.split('/').any(|s| s == "..") {
                return Err(ImageError::PathEscapes {
                    manifest: path,
                    path: c.path.clone(),
                });
            }
        }
        if !manifest.components.iter().any(|c| c.boot) {
            return Err(ImageError::NoBootComponent { dir: dir.into() });
        }
        Ok(NodeImage {
            dir: dir.into(),
            manifest,
            manifest_digest: Sha256::digest(&bytes).into(),
        })
    }

    pub fn component_path(&self, name: &str) -> Option<PathBuf> {
        self.manifest
            .components
            .iter()
            .find(|c| c.name == name)
            .map(|c| self.dir.join(&c.path))
    }

    pub fn boot_path(&self) -> Option<PathBuf> {
        self.manifest
            .components
            .iter()
            .find(|c| c.boot)
            .map(|c| self.dir.join(&c.path))
    }

    /// Measurements predicted offline from the manifest (what an untampered node reports).
    pub fn expected_measurements(
        &self,
        variant: attestation::Variant,
    ) -> measurements::Measurements {
        expected_for(&self.manifest, self.manifest_digest, variant)
    }

    /// The launcher's events: digests of the files as they are *now* on disk.
    pub fn measure_boot(
        &self,
        variant: attestation::Variant,
    ) -> Result<Vec<pcr::Event>, ImageError> {
        let mut comps = vec![];
        let mut boot = None;
        for c in &self.manifest.components {
            let d = sha256_file(&self.dir.join(&c.path))?;
            if c.boot {
                boot = Some(d);
            }
            comps.push((c.name.clone(), d));
        }
        let boot = boot.ok_or_else(|| ImageError::NoBootComponent {
            dir: self.dir.clone(),
        })?;
        Ok(pcr::boot_events(
            self.manifest_digest,
            &comps,
            boot,
            &pcr::cmdline(variant),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use attestation::Variant;

    fn sources(dir: &Path) -> Sources {
        fs::write(dir.join("node"), b"node program").unwrap();
        fs::write(dir.join("etcd"), b"etcd program").unwrap();
        Sources {
            node_binary: dir.join("node"),
            etcd_binary: dir.join("etcd"),
            kube: None,
            version: "v0.1.0".into(),
        }
    }

    #[test]
    fn build_is_content_addressed_and_prediction_matches_measurement() {
        let t = tempfile::tempdir().unwrap();
        let s = sources(t.path());
        let a = NodeImage::build(&s, &t.path().join("images")).unwrap();
        let b = NodeImage::build(&s, &t.path().join("images")).unwrap();
        assert_eq!(a.dir, b.dir);
        let v = Variant::LocalVtpm;
        let measured = pcr::measurements_from_events(&a.measure_boot(v).unwrap());
        assert_eq!(measured, a.expected_measurements(v));
        assert_eq!(
            s.expected_measurements(v).unwrap(),
            a.expected_measurements(v)
        );
    }

    #[test]
    fn one_changed_byte_changes_pcr_11() {
        let t = tempfile::tempdir().unwrap();
        let img = NodeImage::build(&sources(t.path()), &t.path().join("images")).unwrap();
        let etcd = img.component_path(ETCD_BINARY).unwrap();
        let mut bytes = fs::read(&etcd).unwrap();
        bytes[0] ^= 1;
        fs::write(&etcd, bytes).unwrap();
        let measured =
            pcr::measurements_from_events(&img.measure_boot(Variant::LocalVtpm).unwrap());
        let expected = img.expected_measurements(Variant::LocalVtpm);
        let cmp = expected.compare(
            &measured
                .iter()
                .map(|(i, m)| (i, m.expected.clone()))
                .collect(),
        );
        assert_eq!(
            cmp.errors.iter().map(|m| m.index).collect::<Vec<_>>(),
            vec![pcr::PCR_IMAGE]
        );
    }

    #[test]
    fn rejects_escaping_paths() {
        let t = tempfile::tempdir().unwrap();
        fs::write(
            t.path().join(MANIFEST),
            r#"{"version":"v","components":[{"name":"x","path":"../x","sha256":"00","boot":true}]}"#,
        )
        .unwrap();
        assert!(matches!(
            NodeImage::load(t.path()),
            Err(ImageError::PathEscapes { .. })
        ));
    }
}
