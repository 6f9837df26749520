//! `asenet controller` (the in-cluster operator) and `asenet crd` (the generated
//! CustomResourceDefinition, committed in `crds/` and `charts/asenet/crds/`).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{ArgAction, ValueEnum};
use kube::CustomResourceExt;

use super::AzureArgs;
use crate::controller::{self, Engine, LeaseSettings, Metrics, RunOptions, Settings};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, clap::Args)]
pub struct ControllerArgs {
    #[command(flatten)]
    pub azure: AzureArgs,
    /// Seconds between two reconciles of a spec that succeeded: re-observes Azure (drift,
    /// changed VIPs) and writes nothing when in sync.
    #[arg(long, env = "ASENET_RESYNC_SECONDS", default_value_t = 600)]
    pub resync_seconds: u64,
    /// At most this many reconciles in flight at once (0: unbounded). Reconciles of specs
    /// sharing an Azure parent run one after the other whatever this is.
    #[arg(long, env = "ASENET_MAX_CONCURRENT_RECONCILES", default_value_t = controller::DEFAULT_MAX_CONCURRENT_RECONCILES)]
    pub max_concurrent_reconciles: u16,
    /// Address of the /metrics, /healthz and /readyz endpoints.
    #[arg(long, env = "ASENET_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Watch only this namespace (repeatable, or comma-separated); default: every namespace.
    #[arg(long = "namespace", env = "ASENET_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// Watch only specs matching this label selector (e.g. `asenet.io/shard=a`).
    #[arg(long, env = "ASENET_LABEL_SELECTOR")]
    pub label_selector: Option<String>,
    /// Elect a leader on a Lease; only the leader writes. Turn off only with one replica.
    #[arg(long, env = "ASENET_LEADER_ELECTION", default_value_t = true, action = ArgAction::Set)]
    pub leader_election: bool,
    /// Name of the Lease.
    #[arg(long, env = "ASENET_LEASE_NAME", default_value = "asenet-controller")]
    pub lease_name: String,
    /// Namespace of the Lease (default: the pod's namespace, from POD_NAMESPACE, else the
    /// client's default namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Identity of this replica in the Lease and in events (default: POD_NAME, else the
    /// host name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Seconds a Lease stays valid after its last renewal.
    #[arg(long, default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// Seconds before expiry at which the leader renews.
    #[arg(long, default_value_t = 5)]
    pub lease_grace_seconds: u64,
    /// Log format: `json` (one object per line, for log collectors) or `text`.
    #[arg(long, env = "ASENET_LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,kube_runtime=warn,kube_client=warn"));
    // Colours only on a terminal: a log collector or a file would store the escape codes
    // (tracing-subscriber colours by default, whatever the output is).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // try_init: a subscriber installed earlier (tests) wins.
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("asenet-{}", uuid::Uuid::new_v4().simple()))
}

/// The pipeline against ARM, with every ARM response counted in `metrics`.
fn engine(args: &AzureArgs, metrics: Arc<Metrics>) -> anyhow::Result<Arc<dyn Engine>> {
    use crate::pipeline::{Pipeline, PipelineOptions};
    let arm = crate::azure::ArmClient::from_args(args)?.with_observer(metrics);
    Ok(Arc::new(Pipeline::new(
        arm,
        PipelineOptions::from_args(args)?,
    )))
}

pub fn run(args: ControllerArgs) -> anyhow::Result<ExitCode> {
    init_logging(args.log_format);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let client = kube::Client::try_default().await?;
        let metrics = Metrics::new();
        let engine = engine(&args.azure, metrics.clone())?;
        let identity = args.identity.clone().unwrap_or_else(host_name);
        let lease = args.leader_election.then(|| LeaseSettings {
            name: args.lease_name.clone(),
            namespace: args
                .lease_namespace
                .clone()
                .unwrap_or_else(|| client.default_namespace().to_string()),
            identity: identity.clone(),
            duration: args.lease_duration_seconds,
            grace: args.lease_grace_seconds,
        });
        let options = RunOptions {
            namespaces: args.namespaces.clone(),
            label_selector: args.label_selector.clone(),
            settings: Settings {
                resync: Duration::from_secs(args.resync_seconds.max(1)),
            },
            metrics_addr: args.metrics_addr,
            lease,
            instance: Some(identity),
            max_concurrent_reconciles: args.max_concurrent_reconciles,
        };
        controller::run(client, engine, metrics, options).await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The CRD as YAML, exactly as committed in `crds/aseconnectivities.asenet.io.yaml`.
pub fn crd_yaml() -> anyhow::Result<String> {
    let header = "# Generated by `asenet crd` from src/api.rs; do not edit.\n# Regenerate: cargo run -q -- crd > crds/aseconnectivities.asenet.io.yaml && cp crds/aseconnectivities.asenet.io.yaml charts/asenet/crds/\n";
    Ok(format!(
        "{header}{}",
        serde_yaml::to_string(&crate::api::AseConnectivity::crd())?
    ))
}

pub fn print_crd() -> anyhow::Result<ExitCode> {
    print!("{}", crd_yaml()?);
    Ok(ExitCode::SUCCESS)
}
