//! `asenet plan`, `apply` and `verify`.
use std::process::ExitCode;

pub fn run_plan(_args: super::PlanArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`asenet plan` is not built yet")
}
pub fn run_apply(_args: super::ApplyArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`asenet apply` is not built yet")
}
pub fn run_verify(_args: super::VerifyArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`asenet verify` is not built yet")
}
