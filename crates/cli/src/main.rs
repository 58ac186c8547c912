//! `constellation`: parse arguments, set up logging, run, print the error chain.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser as _;

/// A panic from writing to a closed stdout or stderr ends the process with status 141 (as
/// SIGPIPE would), without a message; every other panic is reported as usual.
fn quiet_on_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

fn main() -> ExitCode {
    // A closed pipe (`constellation status -o json | head -c1`) ends the process quietly, as
    // it does for other command-line tools, instead of a "failed printing to stdout" panic.
    // Not by restoring SIGPIPE's default action: that would also kill the CLI when a node closes
    // a TCP connection while the gRPC stack writes to it (vectored writes have no MSG_NOSIGNAL;
    // `recover` died so, silently, when a recovered node stopped its recovery server).
    quiet_on_closed_pipe();
    cli::interrupt::install();
    let args = cli::Cli::parse();
    cli::init_tracing(args.debug);
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprint!("{}", cli::error::render(&e));
            if e.downcast_ref::<cli::interrupt::Interrupted>().is_some() {
                ExitCode::from(cli::interrupt::EXIT_INTERRUPTED)
            } else {
                ExitCode::from(cli::error::exit_code(&e))
            }
        }
    }
}
