//! The `patchbay` command: dispatches on the subcommand and turns the result into an exit code.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("patchbay: not built yet");
    ExitCode::from(2)
}
