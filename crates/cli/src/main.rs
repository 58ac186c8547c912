//! `constellation`: parse arguments, set up logging, run, print the error chain.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::init_tracing(args.debug);
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprint!("{}", cli::error::render(&e));
            ExitCode::from(cli::error::exit_code(&e))
        }
    }
}
