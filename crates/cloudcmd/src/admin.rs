//! The owner's admin credentials file (`constellation-admin.conf`); the format is
//! [`cluster::admin::AdminCredentials`].

use std::path::Path;

use anyhow::Context;
pub use cluster::admin::AdminCredentials;
use cluster_store::PkiFiles;
use zeroize::Zeroizing;

/// Reads the workspace's credentials file.
pub fn load(path: &Path) -> anyhow::Result<AdminCredentials> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
    );
    AdminCredentials::from_kubeconfig(&text)
        .with_context(|| format!("{} is not valid", path.display()))
}

/// Writes `ca.pem`, `admin.pem` and `admin.key` (0600) into `dir`, for tools such as
/// `etcdctl --cacert --cert --key`.
pub fn write_pem_files(creds: &AdminCredentials, dir: &Path) -> anyhow::Result<PkiFiles> {
    let pki = PkiFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join("admin.pem"),
        key: dir.join("admin.key"),
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    config::atomic::replace(&pki.ca, creds.ca_pem.as_bytes(), 0o644)?;
    config::atomic::replace(&pki.cert, creds.cert_pem.as_bytes(), 0o644)?;
    config::atomic::replace(&pki.key, creds.key_pem.as_bytes(), 0o600)?;
    Ok(pki)
}
