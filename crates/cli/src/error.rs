//! How the CLI shows a failure:
//!
//! ```text
//! Error: <outermost message>
//!   caused by: <its cause>
//!   caused by: …
//!   hint: <what the user can do>
//! ```
//!
//! Hints come from a [`Hinted`] wrapper a command attached, or from the error types of the
//! library crates ([`hint_for`]).

use std::error::Error as StdError;
use std::fmt;

use config::{ConfigError, ParseErrorKind, WriteError};
use measurements::image::ImageError;

/// An error with a hint for the user. Displays as the wrapped error (the hint is shown last).
pub struct Hinted {
    pub hint: String,
    pub inner: anyhow::Error,
}

impl fmt::Debug for Hinted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} (hint: {})", self.inner, self.hint)
    }
}

impl fmt::Display for Hinted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

impl StdError for Hinted {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner.source()
    }
}

/// Attaches a hint to an error.
pub fn with_hint(inner: impl Into<anyhow::Error>, hint: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Hinted {
        hint: hint.into(),
        inner: inner.into(),
    })
}

fn config_hint(e: &ConfigError) -> Option<String> {
    // The `config generate` command whose output shows a valid section at `path`.
    let generate = |path: &str| {
        let provider = path
            .strip_prefix("provider.")
            .and_then(|p| p.split('.').next())
            .unwrap_or("local");
        format!("`constellation config generate {provider}` in an empty folder")
    };
    match e.content() {
        ConfigError::NotFound { .. } => Some(
            "run `constellation config generate local` first (or `constellation mini up`), or point -C at your workspace".into(),
        ),
        ConfigError::Parse(p) => Some(match p.kind {
            ParseErrorKind::UnknownKey => format!("remove the key or check its spelling; {} shows a valid config", generate(&p.path)),
            ParseErrorKind::MissingKey => format!("add the key; {} shows a valid config", generate(&p.path)),
            ParseErrorKind::BadValue => format!(
                "fix the value; the comment above each key in a generated config says what it takes ({})",
                generate(&p.path)
            ),
            ParseErrorKind::Syntax => "fix the YAML syntax at that position".into(),
        }),
        ConfigError::Invalid(_) => Some("fix the listed fields in constellation-conf.yaml".into()),
        ConfigError::Write(WriteError::AlreadyExists { path }) => Some(format!(
            "keep the existing file, or move {} away first (or use another workspace with -C)",
            path.display()
        )),
        _ => None,
    }
}

fn image_hint(e: &ImageError) -> Option<String> {
    Some(match e {
        ImageError::SignatureInvalid { .. } => {
            "the file was changed or signed by another key: check -u/-s and --key; do not use the file".into()
        }
        ImageError::NotMeasurementsFile { .. } => {
            "-u must point at an image measurements file (measurements.json), not at another signed file".into()
        }
        ImageError::NoMeasurementsFor { .. } => {
            "use the measurements file of the image for this provider and attestation variant".into()
        }
        ImageError::WrongImage { .. } => {
            "set `image` in constellation-conf.yaml to the file's image, or fetch the file of your image".into()
        }
        ImageError::BadPublicKey { .. } => "--key must be a PEM ECDSA P-256 public key".into(),
        ImageError::BadImageRef(_) => "set `image` to vX.Y.Z (or stream/<stream>/<version>)".into(),
    })
}

fn workspace_hint(e: &cloudcmd::workspace::WorkspaceError) -> String {
    use cloudcmd::workspace::WorkspaceError as W;
    match e {
        W::StateMissing { state, .. } => format!(
            "the nodes keep running; restore {state} from a backup, or rebuild it with `constellation state rebuild` (it checks the nodes against your master secret first)"
        ),
        W::StateUnreadable { state, cluster_running: true, .. } => format!(
            "the nodes keep running; restore {state} from a backup, or rebuild it with `constellation state rebuild --force` (the damaged file is kept)"
        ),
        W::StateUnreadable { state, .. } => {
            format!("fix {state} (the cause is above), or restore it from a backup")
        }
        W::ConflictingClusterIds { .. } => {
            "check each node with `constellation status`; this workspace should hold one cluster".into()
        }
        W::MasterSecretMissing { path } => format!(
            "restore {path} from your backup; apply changes nothing without it"
        ),
        W::MasterSecretUnreadable { path, .. } => {
            format!("restore {path} from your backup (the cluster keeps running)")
        }
        W::MasterSecretExposed { path, .. } => format!(
            "restrict it with `chmod 600 {path}`, then re-run; treat the secret as leaked if others could read it"
        ),
        W::MasterSecretForeign { path, .. } => format!(
            "{path} is from another cluster: restore this cluster's master secret from your backup"
        ),
        W::AdminCredentialsMissing { path } => format!(
            "restore {path} from your backup; the cluster keeps running"
        ),
    }
}

fn infra_hint(e: &provider_local::infra::InfraError) -> Option<String> {
    use provider_local::infra::InfraError as I;
    Some(match e {
        I::AddressInUse { .. } => "another cluster or program uses these loopback addresses: terminate it, or set provider.local.baseAddress to a free 127.x.y.z (it takes effect as long as no node was started); `constellation mini up` in a new folder picks a free range by itself".into(),
        I::Unchangeable { field, .. } => format!(
            "set `{field}` back in constellation-conf.yaml; to change it, terminate the cluster and create a new one"
        ),
        I::VariantChanged { .. } => "set the attestation variant back in constellation-conf.yaml; to change it, terminate the cluster and create a new one".into(),
        I::KubernetesNeedsRoot => "run it as root (sudo), or set CONSTELLATION_KUBERNETES=off for the mode without Kubernetes (the cluster state and attestation only)".into(),
        _ => return None,
    })
}

/// Hints for a node whose attestation the CLI refused (typed: the validator's reason, found in
/// the error chain below atls' `PeerRejected`).
fn attestation_hint(err: &anyhow::Error) -> Option<String> {
    let rejected = err.chain().any(|e| {
        matches!(
            e.downcast_ref::<atls::Error>(),
            Some(atls::Error::PeerRejected(_))
        )
    });
    if !rejected {
        return None;
    }
    let reason = err
        .chain()
        .find_map(|e| e.downcast_ref::<attestation::ValidationError>());
    if let Some(attestation::ValidationError::Measurements(m)) = reason {
        if m.iter()
            .any(|x| x.index == 15 && x.expected.iter().all(|b| *b == 0))
        {
            return Some("the node already belongs to a cluster (PCR 15 is set): an earlier apply was probably interrupted while the node initialized; `constellation terminate -y`, then `constellation apply`, starts over (the master secret is kept)".into());
        }
    }
    Some("the node runs other software than the config's measurements expect: rebuild the image or update the measurements".into())
}

/// The hint for an error: an attached [`Hinted`] first, else one derived from known types.
pub fn hint_for(err: &anyhow::Error) -> Option<String> {
    for e in err.chain() {
        if let Some(h) = e.downcast_ref::<Hinted>() {
            return Some(h.hint.clone());
        }
        if let Some(w) = e.downcast_ref::<cloudcmd::workspace::WorkspaceError>() {
            return Some(workspace_hint(w));
        }
        if let Some(i) = e.downcast_ref::<provider_local::infra::InfraError>() {
            if let Some(h) = infra_hint(i) {
                return Some(h);
            }
        }
        if let Some(a) = e.downcast_ref::<cloudcmd::apply::ApplyError>() {
            return Some(match a {
                cloudcmd::apply::ApplyError::NotConfirmed { .. } => {
                    "run `constellation apply` on a terminal to answer, or pass -y to accept".into()
                }
                cloudcmd::apply::ApplyError::NoControlPlaneLeft { .. } => {
                    "keep initialCount of the control-plane group at 1 or more".into()
                }
            });
        }
    }
    if let Some(h) = attestation_hint(err) {
        return Some(h);
    }
    for e in err.chain() {
        if let Some(c) = e.downcast_ref::<ConfigError>() {
            if let Some(h) = config_hint(c) {
                return Some(h);
            }
        }
        if let Some(i) = e.downcast_ref::<ImageError>() {
            return image_hint(i);
        }
    }
    None
}

/// The text printed for a failed command.
/// A command line that cannot be run as given (exit status 2, like clap's own usage errors).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The process exit status for an error: 2 for [`UsageError`], 1 otherwise (including
/// refused attestation evidence).
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if err.downcast_ref::<UsageError>().is_some() {
        2
    } else {
        1
    }
}

pub fn render(err: &anyhow::Error) -> String {
    let mut out = String::new();
    let mut chain = err.chain();
    if let Some(first) = chain.next() {
        out.push_str(&format!("Error: {first}\n"));
    }
    for cause in chain {
        out.push_str(&format!("  caused by: {cause}\n"));
    }
    if let Some(h) = hint_for(err) {
        out.push_str(&format!("  hint: {h}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_and_hint() {
        let inner = ConfigError::NotFound {
            path: "constellation-conf.yaml".into(),
        };
        let e = anyhow::Error::new(inner).context("loading the config");
        assert_eq!(
            render(&e),
            "Error: loading the config\n  caused by: constellation-conf.yaml does not exist\n  hint: run `constellation config generate local` first (or `constellation mini up`), or point -C at your workspace\n"
        );
        let e = with_hint(anyhow::anyhow!("root").context("outer"), "do this");
        assert_eq!(
            render(&e),
            "Error: outer\n  caused by: root\n  hint: do this\n"
        );
    }

    #[test]
    fn pcr15_set_hints_at_an_interrupted_init() {
        let refused = |index: u32, expected: u8| {
            let m = measurements::Mismatch {
                index,
                expected: vec![expected; 32],
                actual: Some(vec![0xab; 32]),
            };
            anyhow::Error::new(atls::Error::PeerRejected(atls::VerifyError::Validation {
                variant: attestation::Variant::LocalVtpm,
                source: attestation::ValidationError::Measurements(vec![m]),
            }))
            .context("the node at 127.0.0.1:9000 failed attestation; nothing secret was sent")
        };
        assert!(hint_for(&refused(15, 0)).unwrap().contains("terminate -y"));
        assert!(hint_for(&refused(11, 0))
            .unwrap()
            .contains("rebuild the image"));
        // The same words without the typed refusal get no attestation hint.
        let e = anyhow::anyhow!("PCR 15: expected {}, got 01", "00".repeat(32))
            .context("failed attestation");
        assert_eq!(hint_for(&e), None);
    }
}
