//! `asenet resolve`.
use std::process::ExitCode;

pub fn run(_args: super::ResolveArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`asenet resolve` is not built yet")
}
