//! The `patchbay` command: parses the command line, runs it, turns the result into an exit code.

use std::process::ExitCode;

use clap::Parser;
use patchbay::cli::{dispatch, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PATCHBAY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match dispatch(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("patchbay: {error:#}");
            ExitCode::from(2)
        }
    }
}
