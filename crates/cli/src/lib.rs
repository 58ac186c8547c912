//! The `constellation` command-line tool: the owner's side of the cluster.
//!
//! Layout (one place per concern, so a command is added without touching the others):
//!
//! * [`args`]: every clap structure (flags, subcommands) and nothing else.
//! * [`cmd`]: one module per command; [`cmd::dispatch`] maps parsed arguments to them.
//! * [`error`]: how failures are shown: the whole cause chain, one per line, plus a hint.
//! * [`fetch`]: reading a file from an `http(s)://` URL (timeouts, bounded retries) or a path.
//! * [`image`]: the node image the local provider uses by default.
//! * [`kds`]: AMD key distribution service fetcher with an on-disk cache (SEV-SNP collateral).
//! * [`pcs`]: Intel PCS fetcher with an on-disk cache (TDX collateral).
//! * [`thim`]: Azure THIM fetcher with an on-disk cache (VCEK and chain of an Azure SNP CVM).
//!
//! Commands work on the workspace, the current directory (`-C` changes into another one
//! first). The lifecycle logic lives in crate `cloudcmd`, files and formats in `config`,
//! measurements in `measurements`.

#![forbid(unsafe_code)]

pub mod args;
pub mod cmd;
pub mod error;
pub mod fetch;
pub mod image;
pub mod interrupt;
pub mod kds;
pub mod kube_api;
pub mod kubeconfig;
pub mod lock;
pub mod pcs;
pub mod thim;

use anyhow::Context as _;

pub use args::Cli;

/// Sets up logging to stderr: warnings by default, debug with `--debug`; `RUST_LOG` (an
/// `EnvFilter` directive) overrides both.
pub fn init_tracing(debug: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(if debug { "debug" } else { "warn" }));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs one parsed command line.
pub fn run(args: Cli) -> anyhow::Result<()> {
    if let Some(ws) = &args.workspace {
        // Never create it: a typo in -C must not leave a new, empty workspace behind.
        match std::fs::metadata(ws) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(error::with_hint(
                    anyhow::anyhow!("workspace {} is not a folder", ws.display()),
                    "point -C at the folder that holds constellation-conf.yaml",
                ))
            }
            Err(e) => {
                return Err(error::with_hint(
                    anyhow::Error::new(e)
                        .context(format!("workspace {} does not exist", ws.display())),
                    format!(
                        "create it first (mkdir -p {}), or check the path given to -C",
                        ws.display()
                    ),
                ))
            }
        }
        std::env::set_current_dir(ws)
            .with_context(|| format!("entering workspace {}", ws.display()))?;
        cloudcmd::set_display_workspace(ws);
        tracing::debug!(workspace = %ws.display(), "entered workspace");
    }
    cmd::dispatch(args.command)
}

/// The hint for an error, if the user can act on it (see [`error::hint_for`]).
pub fn hint(e: &anyhow::Error) -> Option<String> {
    error::hint_for(e)
}

/// The workspace at `dir` with its provider. The CLI binary is where a provider is named: the
/// local provider is the only one this build creates clusters with.
pub fn workspace(dir: &std::path::Path) -> cloudcmd::Workspace {
    provider_local::workspace(dir)
}
