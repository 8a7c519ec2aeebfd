//! `patchbay check`.

use std::process::ExitCode;

use super::CheckArgs;

pub fn run(_args: &CheckArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`patchbay check` is not built yet")
}
