//! `constellation-node`: what runs on a local node. `launch` is the firmware/boot-loader
//! stand-in (measures, then execs the image's copy of this binary as `bootstrapper`).

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::Arc;

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
    /// Serve the cluster's Kubernetes API on the host: forward every connection to the first
    /// control plane (in the cluster network) that accepts (started by the local provider).
    ApiProxy {
        /// Host address to listen on (`<endpoint>:6443`).
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// The cluster network's fabric namespace (connections are made from inside it).
        #[arg(long)]
        netns: PathBuf,
        /// A control plane's API server (`<node IP>:6443`); repeat for each.
        #[arg(long = "backend", required = true)]
        backends: Vec<std::net::SocketAddr>,
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

/// Kubernetes when the measured image carries it, else the cluster state alone.
fn strategy(
    env: &cluster::env::NodeEnvironment,
    cloud: &std::path::Path,
    dir: &std::path::Path,
    name: &str,
) -> Arc<dyn bootstrapper::control_plane::ControlPlane> {
    if env.components.path("kubelet").is_err() {
        return Arc::new(bootstrapper::control_plane::EtcdOnly);
    }
    let (cloud, node) = (cloud.to_path_buf(), name.to_string());
    let net: bootstrapper::kubernetes::NetResolver = Arc::new(move || {
        let state = provider_local::cloud::CloudState::load(&cloud)?
            .ok_or_else(|| anyhow::anyhow!("no local cloud state at {}", cloud.display()))?;
        let k = state.kube.ok_or_else(|| {
            anyhow::anyhow!("the local cloud has no cluster network for Kubernetes")
        })?;
        Ok(provider_local::kubenet::node_net(
            &k.run_root,
            &k.name,
            &node,
        )?)
    });
    let record = dir.join(provider_local::kubenet::SYSCTLS_FILE);
    Arc::new(bootstrapper::kubernetes::Kubernetes::new(
        net,
        Arc::new(move || record.clone()),
    ))
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
        Cmd::ApiProxy {
            listen,
            netns,
            backends,
        } => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| {
                rt.block_on(async {
                    let p = kube_node::endpoint::ApiProxy::start(listen, &netns, backends).await?;
                    tracing::info!(addr = %p.local_addr(), "API endpoint serving");
                    std::future::pending::<()>().await;
                    Ok(())
                })
            }),
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
                let strategy = strategy(&env, &cloud, &dir, &name);
                rt.block_on(bootstrapper::run::run(
                    bootstrapper::run::Args {
                        name,
                        dir,
                        tcti,
                        variant,
                    },
                    env,
                    strategy,
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
