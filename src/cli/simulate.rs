//! `patchbay simulate`.

use std::process::ExitCode;

use super::SimulateArgs;

pub fn run(_args: &SimulateArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`patchbay simulate` is not built yet")
}
