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
    /// Print the AseConnectivity CustomResourceDefinition as YAML.
    Crd,
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
    /// Azure service tags JSON (`ServiceTags_Public_*.json`) or a snapshot file; the
    /// prefixes forced-tunneling routes need. Default: a trimmed fixture built in.
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
    #[command(flatten)]
    pub azure: AzureArgs,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
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

/// Runs a parsed command line and maps the outcome to an exit code.
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Resolve(a) => resolve::run(a),
        Command::Plan(a) => plan::run_plan(a),
        Command::Apply(a) => plan::run_apply(a),
        Command::Verify(a) => plan::run_verify(a),
        Command::Demo(a) => demo::run(a),
        Command::Controller(a) => controller::run(a),
        Command::Crd => controller::print_crd(),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
