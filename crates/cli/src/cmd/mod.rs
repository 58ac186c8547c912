//! One module per command. [`dispatch`] is the only place that maps arguments to commands.

use std::path::Path;

use crate::args::{AttestationCommand, Command, ConfigCommand, MiniCommand};

pub mod apply;
pub mod attestation_verify;
pub mod config_fetch_measurements;
pub mod config_generate;
pub mod mini;
pub mod recover;
pub mod status;
pub mod terminate;
pub mod verify;
pub mod version;

/// Runs the command in the current directory (the workspace).
pub fn dispatch(command: Command) -> anyhow::Result<()> {
    let ws = Path::new(".");
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
        ),
        Command::Init => apply::run(
            ws,
            cloudcmd::apply::ApplyOptions {
                skip_infrastructure: true,
                ..Default::default()
            },
        ),
        Command::Mini(MiniCommand::Up) => mini::up(ws),
        Command::Mini(MiniCommand::Down(a)) => mini::down(ws, a.yes),
        Command::Status(a) => status::run(ws, &a.output),
        Command::Terminate(a) => terminate::run(ws, a.yes),
        Command::Verify(a) => verify::run(ws, &a),
        Command::Recover(a) => recover::run(ws, &a),
        Command::Attestation(AttestationCommand::Verify(a)) => attestation_verify::run(&a),
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

/// Progress lines on stderr with the elapsed time (dimmed on a terminal).
pub(crate) fn progress_printer() -> impl FnMut(&str) {
    use std::io::IsTerminal as _;
    let tty = std::io::stderr().is_terminal();
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
