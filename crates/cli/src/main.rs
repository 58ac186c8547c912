//! `constellation`: parse arguments, set up logging, run, print the error chain.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    // A closed pipe (`constellation status -o json | head -c1`) ends the process quietly, as it
    // does for other command-line tools, instead of a "failed printing to stdout" panic.
    sigpipe::reset();
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
