//! `constellation-node`: what runs on a local node. `launch` is the firmware/boot-loader
//! stand-in (measures, then execs the image's copy of this binary as `bootstrapper`).

#![forbid(unsafe_code)]

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "constellation-node",
    version,
    about = "Node programs of the local provider"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Measure the node image into the TPM, then start its boot component.
    Launch {
        #[arg(long)]
        image: PathBuf,
        #[arg(long)]
        tcti: String,
        #[arg(long)]
        variant: attestation::Variant,
        /// The node-owned folder the measured copies of the components run from.
        #[arg(long)]
        run_dir: PathBuf,
        /// Arguments for the boot component.
        #[arg(last = true)]
        boot_args: Vec<String>,
    },
    /// Run the Bootstrapper (started by `launch`).
    Bootstrapper {
        #[arg(long)]
        name: String,
        #[arg(long)]
        cloud: PathBuf,
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        tcti: String,
        #[arg(long)]
        variant: attestation::Variant,
    },
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Node output goes to node.log, not a terminal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Launch {
            image,
            tcti,
            variant,
            run_dir,
            boot_args,
        } => Err(provider_local::launcher::launch(
            &provider_local::launcher::LaunchArgs {
                image,
                tcti,
                variant,
                run_dir,
                boot_args,
            },
        )),
        Cmd::Bootstrapper {
            name,
            cloud,
            dir,
            tcti,
            variant,
        } => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| {
                // The only place that names a provider: the local node environment.
                let env = provider_local::node_env::environment(&cloud, &dir);
                rt.block_on(bootstrapper::run::run(
                    bootstrapper::run::Args {
                        name,
                        dir,
                        tcti,
                        variant,
                    },
                    env,
                    std::sync::Arc::new(bootstrapper::control_plane::EtcdOnly),
                ))
            }),
    };
    match res {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
