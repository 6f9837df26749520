//! `asenet controller` and `asenet crd`.
use std::process::ExitCode;

use kube::CustomResourceExt;

#[derive(Debug, clap::Args)]
pub struct ControllerArgs {}

pub fn run(_args: ControllerArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`asenet controller` is not built yet")
}

pub fn print_crd() -> anyhow::Result<ExitCode> {
    print!(
        "{}",
        serde_yaml::to_string(&crate::api::AseConnectivity::crd())?
    );
    Ok(ExitCode::SUCCESS)
}
