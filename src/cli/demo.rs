//! `patchbay demo`.

use std::process::ExitCode;

use super::DemoArgs;

pub fn run(_args: &DemoArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`patchbay demo` is not built yet")
}
