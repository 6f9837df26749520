//! Command-line interface. Each subcommand lives in its own file and returns the process
//! exit code; errors are printed here, once, with their whole chain.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

mod controller;
mod demo;
mod plan;
mod resolve;

#[derive(Debug, Parser)]
#[command(
    name = "asenet",
    version,
    about = "Keeps the NSG rules and routes of Azure App Service Environments correct"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Compute the desired rules and routes from specs and a snapshot file (no Azure access).
    Resolve(ResolveArgs),
    /// Show what would change in Azure (exit 0: no changes, 2: changes, 1: error).
    Plan(PlanArgs),
    /// Apply the plan to Azure.
    Apply(ApplyArgs),
    /// Evaluate every required flow against the live NSGs (exit 1 if any is denied).
    Verify(VerifyArgs),
    /// Run the whole story against an embedded mock ARM seeded with examples/seed (built in).
    Demo(DemoArgs),
    /// Run the Kubernetes operator.
    Controller(controller::ControllerArgs),
    /// Print a CustomResourceDefinition as YAML (default: AseConnectivity).
    Crd(controller::CrdArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
    Markdown,
}

#[derive(Debug, Args)]
pub struct ResolveArgs {
    /// A spec file or a directory of them (repeatable).
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// Snapshot of the Azure state (YAML or JSON). Without it, the resolver sees an empty
    /// subscription.
    #[arg(long)]
    pub snapshot: Option<PathBuf>,
    #[arg(long, short = 'o', value_enum, default_value = "text")]
    pub output: OutputFormat,
    /// Tenancy policy file (`AseTenancyPolicy` and `AseBackendGrant` documents;
    /// repeatable): specs writing outside what it allows their namespace are refused, as by
    /// the operator with `--tenancy enforce`. Without it, tenancy is off.
    #[arg(long = "policy")]
    pub policy: Vec<PathBuf>,
}

/// How to reach Azure Resource Manager.
#[derive(Debug, Clone, Args)]
pub struct AzureArgs {
    /// ARM endpoint.
    #[arg(
        long,
        env = "ASENET_ENDPOINT",
        default_value = "https://management.azure.com"
    )]
    pub endpoint: String,
    /// Which credential to use.
    #[arg(long, env = "ASENET_CREDENTIAL", value_enum, default_value = "auto")]
    pub credential: CredentialKind,
    /// Bearer token for `--credential static` (for the mock ARM server).
    #[arg(long, env = "ASENET_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Extra CA certificate (PEM) to trust, e.g. the mock ARM server's.
    #[arg(long, env = "ASENET_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Maximum concurrent ARM reads.
    #[arg(long, default_value_t = 8)]
    pub max_concurrency: usize,
    /// Maximum concurrent ARM writes per subscription (ARM refills 10 writes/s; each
    /// write waits for its long-running operation, so many must be in flight).
    #[arg(long, default_value_t = 64)]
    pub max_write_concurrency: usize,
    /// Azure service tags JSON (`ServiceTags_Public_*.json`) or a snapshot file: the
    /// prefixes forced-tunneling routes need, instead of ARM's Service Tags API (air-gapped
    /// use). Default: ARM (`ServiceTags_List`, once per location per run).
    #[arg(long, env = "ASENET_SERVICE_TAGS")]
    pub service_tags: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CredentialKind {
    Auto,
    WorkloadIdentity,
    ManagedIdentity,
    ClientSecret,
    AzureCli,
    Static,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// Tenancy policy file (`AseTenancyPolicy` and `AseBackendGrant` documents;
    /// repeatable): specs writing outside what it allows their namespace are refused, as by
    /// the operator with `--tenancy enforce`. Without it, tenancy is off.
    #[arg(long = "policy")]
    pub policy: Vec<PathBuf>,
    #[arg(long, short = 'o', value_enum, default_value = "text")]
    pub output: OutputFormat,
    #[command(flatten)]
    pub azure: AzureArgs,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// Apply without asking.
    #[arg(long)]
    pub auto_approve: bool,
    /// Tenancy policy file (`AseTenancyPolicy` and `AseBackendGrant` documents;
    /// repeatable): specs writing outside what it allows their namespace are refused, as by
    /// the operator with `--tenancy enforce`. Without it, tenancy is off.
    #[arg(long = "policy")]
    pub policy: Vec<PathBuf>,
    #[command(flatten)]
    pub azure: AzureArgs,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// Tenancy policy file (`AseTenancyPolicy` and `AseBackendGrant` documents;
    /// repeatable): specs writing outside what it allows their namespace are refused, as by
    /// the operator with `--tenancy enforce`. Without it, tenancy is off.
    #[arg(long = "policy")]
    pub policy: Vec<PathBuf>,
    #[arg(long, short = 'o', value_enum, default_value = "text")]
    pub output: OutputFormat,
    #[command(flatten)]
    pub azure: AzureArgs,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Run another story: a folder holding specs and a `mock-seed.yaml` or `snapshot.yaml`
    /// (default: the built-in story of examples/seed, compiled into the binary).
    #[arg(long)]
    pub seed: Option<PathBuf>,
}

/// The tenancy policy of a CLI run: the `--policy` files, else off.
pub fn policy_of(paths: &[PathBuf]) -> anyhow::Result<crate::tenancy::PolicySet> {
    Ok(if paths.is_empty() {
        crate::tenancy::PolicySet::off()
    } else {
        crate::load::load_policy(paths)?
    })
}

/// Runs a parsed command line and maps the outcome to an exit code.
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Resolve(a) => resolve::run(a),
        Command::Plan(a) => plan::run_plan(a),
        Command::Apply(a) => plan::run_apply(a),
        Command::Verify(a) => plan::run_verify(a),
        Command::Demo(a) => demo::run(a),
        Command::Controller(a) => controller::run(a),
        Command::Crd(a) => controller::print_crd(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // The chain quotes values from specs and from Azure: no control character
            // of theirs reaches the terminal (issue 13).
            eprintln!(
                "error: {}",
                crate::report::escape::terminal(&error_text(&e))
            );
            ExitCode::from(1)
        }
    }
}

/// An error and its causes, each printed once. Many errors show their cause in their own
/// message (`writing X: PUT X: HTTP 500 ...`) and also return it from `source()`, so
/// anyhow's `{:#}` would print it twice (issue 12); a cause whose text is already in the
/// line is skipped.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let t = cause.to_string();
        if !t.is_empty() && !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("PUT nsg: HTTP 500 InternalServerError: injected fault")]
    struct Http;

    #[derive(Debug, thiserror::Error)]
    #[error("writing nsg: {0}")]
    struct Write(#[source] Http);

    #[derive(Debug, thiserror::Error)]
    #[error("cannot reach ARM")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn each_cause_of_an_error_is_printed_once() {
        let e = anyhow::Error::new(Write(Http)).context("apply failed");
        let text = error_text(&e);
        assert_eq!(
            text,
            "apply failed: writing nsg: PUT nsg: HTTP 500 InternalServerError: injected fault"
        );
        assert_eq!(text.matches("HTTP 500").count(), 1);
        // What `{:#}`, the old way of printing, gave: the cause twice.
        assert_eq!(format!("{e:#}").matches("HTTP 500").count(), 2);
    }

    #[test]
    fn causes_not_in_the_message_are_still_printed() {
        let e = anyhow::Error::new(Outer(std::io::Error::other("connection refused")));
        assert_eq!(error_text(&e), "cannot reach ARM: connection refused");
    }
}
