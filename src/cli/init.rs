//! `patchbay init`.

use std::process::ExitCode;

use super::InitArgs;

pub fn run(_args: &InitArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`patchbay init` is not built yet")
}
