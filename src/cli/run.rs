//! `patchbay run`.

use std::process::ExitCode;

use super::RunArgs;

pub fn run(_args: &RunArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`patchbay run` is not built yet")
}
