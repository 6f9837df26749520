//! `asenet demo`.
use std::process::ExitCode;

pub fn run(_args: super::DemoArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`asenet demo` is not built yet")
}
