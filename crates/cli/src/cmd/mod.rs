//! One module per command. [`dispatch`] is the only place that maps arguments to commands.

use std::path::Path;

use crate::args::{AttestationCommand, Command, ConfigCommand, MiniCommand, StateCommand};

pub mod apply;
pub mod attestation_verify;
pub mod config_fetch_measurements;
pub mod config_generate;
pub mod mini;
pub mod recover;
pub mod state;
pub mod status;
pub mod terminate;
pub mod verify;
pub mod version;

/// The lifecycle commands that change the cluster: one at a time per workspace.
fn lock_name(command: &Command) -> Option<&'static str> {
    Some(match command {
        Command::Apply(_) => "apply",
        Command::Create => "create",
        Command::Init => "init",
        Command::Mini(MiniCommand::Up(_)) => "mini up",
        Command::Mini(MiniCommand::Down(_)) => "mini down",
        Command::Terminate(_) => "terminate",
        Command::Recover(_) => "recover",
        Command::State(StateCommand::Rebuild(_)) => "state rebuild",
        _ => return None,
    })
}

/// Runs the command in the current directory (the workspace).
pub fn dispatch(command: Command) -> anyhow::Result<()> {
    let ws = Path::new(".");
    let _lock = match lock_name(&command) {
        Some(name) => Some(crate::lock::acquire(ws, name).map_err(|e| {
            crate::error::with_hint(
                e,
                "wait until it has finished (lifecycle commands run one at a time per workspace)",
            )
        })?),
        None => None,
    };
    match command {
        Command::Version => version::run(),
        Command::Config(ConfigCommand::Generate(a)) => config_generate::run(ws, &a),
        Command::Config(ConfigCommand::FetchMeasurements(a)) => {
            config_fetch_measurements::run(ws, &a)
        }
        Command::Apply(a) => apply::run_apply(ws, &a),
        Command::Create => apply::run(
            ws,
            cloudcmd::apply::ApplyOptions {
                skip_init: true,
                ..Default::default()
            },
            false,
            "constellation create",
        ),
        Command::Init => apply::run(
            ws,
            cloudcmd::apply::ApplyOptions {
                skip_infrastructure: true,
                ..Default::default()
            },
            false,
            "constellation init",
        ),
        Command::Mini(MiniCommand::Up(a)) => mini::up(ws, a.merge_kubeconfig),
        Command::Mini(MiniCommand::Down(a)) => mini::down(ws, a.yes),
        Command::Status(a) => status::run(ws, a.output),
        Command::Terminate(a) => terminate::run(ws, a.yes),
        Command::Verify(a) => verify::run(ws, &a),
        Command::Recover(a) => recover::run(ws, &a),
        Command::State(StateCommand::Rebuild(a)) => state::rebuild(ws, &a),
        Command::Completion(a) => {
            completion(a.shell);
            Ok(())
        }
        Command::Attestation(AttestationCommand::Verify(a)) => attestation_verify::run(&a),
    }
}

/// Prints the completion script for `shell` on stdout.
fn completion(shell: crate::args::CompletionShell) {
    use clap::CommandFactory as _;
    use clap_complete::Shell;
    let shell = match shell {
        crate::args::CompletionShell::Bash => Shell::Bash,
        crate::args::CompletionShell::Zsh => Shell::Zsh,
        crate::args::CompletionShell::Fish => Shell::Fish,
    };
    let mut cmd = crate::args::Cli::command();
    clap_complete::generate(shell, &mut cmd, "constellation", &mut std::io::stdout());
}

/// Runs a command's async work on [`runtime`], stopping cleanly at the first Ctrl-C (see
/// [`crate::interrupt`]): the error then names `rerun`, the command that continues the work.
pub(crate) fn block_on<T>(
    fut: impl std::future::Future<Output = anyhow::Result<T>>,
    rerun: &str,
) -> anyhow::Result<T> {
    let rt = runtime()?;
    let out = rt.block_on(async {
        tokio::select! {
            r = fut => Some(r),
            () = crate::interrupt::wait() => None,
        }
    });
    match out {
        Some(r) => r,
        None => {
            // Blocking work (the infrastructure phase) stops at its next step boundary.
            rt.shutdown_timeout(std::time::Duration::from_secs(60));
            Err(crate::interrupt::Interrupted {
                rerun: rerun.to_string(),
            }
            .into())
        }
    }
}

/// The async runtime of commands that talk to nodes (two workers: the machine's size).
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// `name` in the workspace, without a `./` prefix in messages when the workspace is `.`.
pub(crate) fn workspace_file(ws: &Path, name: &str) -> std::path::PathBuf {
    if ws == Path::new(".") {
        std::path::PathBuf::from(name)
    } else {
        ws.join(name)
    }
}

/// Whether stderr may carry colour and other escape codes: a terminal, and `NO_COLOR` unset
/// (<https://no-color.org>).
pub(crate) fn stderr_styled() -> bool {
    use std::io::IsTerminal as _;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Progress lines on stderr with the elapsed time (dimmed on a terminal).
pub(crate) fn progress_printer() -> impl FnMut(&str) {
    let tty = stderr_styled();
    let start = std::time::Instant::now();
    move |m: &str| {
        if tty {
            eprintln!(
                "\x1b[2m[{:>5.2}s]\x1b[0m {m}",
                start.elapsed().as_secs_f64()
            );
        } else {
            eprintln!("[{:>5.2}s] {m}", start.elapsed().as_secs_f64());
        }
    }
}
