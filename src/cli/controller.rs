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
use crate::controller::{self, Engine, Leadership, LeaseSettings, Metrics, RunOptions, Settings};
use crate::tenancy::TenancyMode;

pub use crate::logging::LogFormat;

#[derive(Debug, clap::Args)]
pub struct ControllerArgs {
    #[command(flatten)]
    pub azure: AzureArgs,
    /// Seconds between two reconciles of a spec that succeeded: re-observes Azure (drift,
    /// changed VIPs) and writes nothing when in sync.
    #[arg(long, env = "ASENET_RESYNC_SECONDS", default_value_t = 600)]
    pub resync_seconds: u64,
    /// Plan and write a component of more specs than this in parts of about this many, one
    /// after the other (0: always whole, the default). Parts hold less memory and cost more
    /// CPU and reads; the subnets of one VNet are spread over the parts so its chain of
    /// subnet writes is not lengthened (docs/operator.md).
    #[arg(long, env = "ASENET_PLAN_PART_SPECS", default_value_t = controller::context::DEFAULT_PLAN_PART_SPECS)]
    pub plan_part_specs: usize,
    /// At most this many reconciles in flight at once (0: unbounded). Reconciles of specs
    /// sharing an Azure parent run one after the other whatever this is.
    #[arg(long, env = "ASENET_MAX_CONCURRENT_RECONCILES", default_value_t = controller::DEFAULT_MAX_CONCURRENT_RECONCILES)]
    pub max_concurrent_reconciles: u16,
    /// Address of the /metrics endpoint (and of /healthz and /readyz unless
    /// `--probe-bind` names another). `127.0.0.1:PORT` keeps metrics inside the pod.
    #[arg(
        long = "metrics-bind",
        alias = "metrics-addr",
        env = "ASENET_METRICS_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub metrics_addr: SocketAddr,
    /// Address of the /healthz and /readyz endpoints, when they should have a listener of
    /// their own (the kubelet's probes; metrics then only on `--metrics-bind`).
    #[arg(long = "probe-bind", env = "ASENET_PROBE_BIND")]
    pub probe_bind: Option<SocketAddr>,
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
    /// Seconds another replica waits, after it last saw the Lease change, before taking it
    /// over. Must be longer than the renew deadline.
    #[arg(long, env = "ASENET_LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// Seconds after its last successful renewal at which the leader stops writing and steps
    /// down. Must be longer than the retry period.
    #[arg(
        long,
        env = "ASENET_LEASE_RENEW_DEADLINE_SECONDS",
        default_value_t = 10
    )]
    pub lease_renew_deadline_seconds: u64,
    /// Seconds between two renewals by the leader, or two acquire attempts by a follower.
    #[arg(long, env = "ASENET_LEASE_RETRY_PERIOD_SECONDS", default_value_t = 2)]
    pub lease_retry_period_seconds: u64,
    /// Seconds the operator takes at most to stop after SIGTERM (cancel in-flight reconciles
    /// and ARM retries, release the Lease). Keep it well below the pod's
    /// terminationGracePeriodSeconds.
    #[arg(long, env = "ASENET_SHUTDOWN_TIMEOUT", default_value_t = controller::DEFAULT_SHUTDOWN_TIMEOUT.as_secs())]
    pub shutdown_timeout: u64,
    /// Tenancy: `enforce` lets a spec write only the Azure scopes the AseTenancyPolicy
    /// objects give its namespace (and back-end NSGs an AseBackendGrant opens to it); with
    /// no policy objects nothing is allowed. `off`: any spec may write anything the
    /// operator's identity can reach (one team per cluster). The chart passes its value
    /// `tenancy.mode`, `enforce` unless set; the flag's own default keeps a bare
    /// `asenet controller` as it was before tenancy existed.
    #[arg(long, env = "ASENET_TENANCY", default_value = "off", value_parser = parse_tenancy)]
    pub tenancy: TenancyMode,
    /// Log format: `json` (one object per line, for log collectors) or `text`.
    #[arg(long, env = "ASENET_LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,
}

fn parse_tenancy(value: &str) -> Result<TenancyMode, String> {
    value
        .parse()
        .map_err(|e: crate::tenancy::ModeError| e.to_string())
}

fn init_logging(format: LogFormat) {
    let filter = crate::logging::env_filter(
        std::env::var("RUST_LOG").ok().as_deref(),
        "info,kube_runtime=warn,kube_client=warn",
    );
    let subscriber = crate::logging::subscriber(
        format,
        filter,
        std::io::stderr,
        std::io::stderr().is_terminal(),
    );
    // try_init (also bridges the `log` crate): a subscriber installed earlier (tests) wins.
    use tracing_subscriber::util::SubscriberInitExt;
    let _ = subscriber.try_init();
}

fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("asenet-{}", uuid::Uuid::new_v4().simple()))
}

/// The pipeline against ARM, with every ARM response counted in `metrics` and every write
/// fenced on this replica's leadership. Service tags read from ARM are reused for
/// `service_tag_max_age` (one read per location per resync, re-parsed only when the
/// `changeNumber` moves; a tag change is repaired at the next resync).
fn engine(
    args: &AzureArgs,
    metrics: Arc<Metrics>,
    leadership: &Leadership,
    service_tag_max_age: Duration,
) -> anyhow::Result<Arc<dyn Engine>> {
    use crate::pipeline::{Pipeline, PipelineOptions};
    let arm = crate::azure::ArmClient::from_args(args)?
        .with_observer(metrics)
        .with_write_fence(Arc::new(leadership.clone()));
    let options = PipelineOptions {
        service_tag_max_age,
        ..PipelineOptions::from_args(args)?
    };
    Ok(Arc::new(Pipeline::new(arm, options)))
}

/// The Lease timings of the flags, checked (`duration > renew deadline > retry period`)
/// before anything starts.
fn lease_timings(args: &ControllerArgs) -> anyhow::Result<(Duration, Duration, Duration)> {
    let timings = LeaseSettings {
        name: args.lease_name.clone(),
        namespace: String::new(),
        identity: String::new(),
        duration: Duration::from_secs(args.lease_duration_seconds),
        renew_deadline: Duration::from_secs(args.lease_renew_deadline_seconds),
        retry_period: Duration::from_secs(args.lease_retry_period_seconds),
    };
    timings.check()?;
    Ok((
        timings.duration,
        timings.renew_deadline,
        timings.retry_period,
    ))
}

pub fn run(args: ControllerArgs) -> anyhow::Result<ExitCode> {
    init_logging(args.log_format);
    let (duration, renew_deadline, retry_period) = lease_timings(&args)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let client = kube::Client::try_default().await?;
        let metrics = Metrics::new();
        let resync = Duration::from_secs(args.resync_seconds.max(1));
        let identity = args.identity.clone().unwrap_or_else(host_name);
        let lease = args.leader_election.then(|| LeaseSettings {
            name: args.lease_name.clone(),
            namespace: args
                .lease_namespace
                .clone()
                .unwrap_or_else(|| client.default_namespace().to_string()),
            identity: identity.clone(),
            duration,
            renew_deadline,
            retry_period,
        });
        let leadership = Leadership::follower();
        // Half the resync: every resync then sees tags at most that old.
        let engine = engine(&args.azure, metrics.clone(), &leadership, resync / 2)?;
        let options = RunOptions {
            namespaces: args.namespaces.clone(),
            label_selector: args.label_selector.clone(),
            settings: Settings {
                resync,
                tenancy: args.tenancy,
                plan_part_specs: args.plan_part_specs,
            },
            metrics_addr: args.metrics_addr,
            probe_addr: args.probe_bind,
            lease,
            instance: Some(identity),
            max_concurrent_reconciles: args.max_concurrent_reconciles,
            leadership,
            shutdown_timeout: Duration::from_secs(args.shutdown_timeout),
        };
        controller::run(client, engine, metrics, options).await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Which CustomResourceDefinition `asenet crd` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CrdKind {
    #[value(name = "AseConnectivity")]
    Connectivity,
    #[value(name = "AseTenancyPolicy")]
    TenancyPolicy,
    #[value(name = "AseBackendGrant")]
    BackendGrant,
}

impl CrdKind {
    /// The committed file name, in `crds/` and `charts/asenet/crds/`.
    pub fn file_name(self) -> &'static str {
        match self {
            CrdKind::Connectivity => "aseconnectivities.asenet.io.yaml",
            CrdKind::TenancyPolicy => "asetenancypolicies.asenet.io.yaml",
            CrdKind::BackendGrant => "asebackendgrants.asenet.io.yaml",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct CrdArgs {
    /// Which CRD.
    #[arg(long, value_enum, default_value = "AseConnectivity")]
    pub kind: CrdKind,
}

/// The CRD as YAML, exactly as committed in `crds/` (and `charts/asenet/crds/`).
pub fn crd_yaml(kind: CrdKind) -> anyhow::Result<String> {
    let (crd, source, flag) = match kind {
        CrdKind::Connectivity => (crate::api::AseConnectivity::crd(), "src/api.rs", ""),
        CrdKind::TenancyPolicy => (
            crate::tenancy::AseTenancyPolicy::crd(),
            "src/tenancy/api.rs",
            " --kind AseTenancyPolicy",
        ),
        CrdKind::BackendGrant => (
            crate::tenancy::AseBackendGrant::crd(),
            "src/tenancy/api.rs",
            " --kind AseBackendGrant",
        ),
    };
    let file = kind.file_name();
    let header = format!(
        "# Generated by `asenet crd{flag}` from {source}; do not edit.\n# Regenerate: cargo run -q -- crd{flag} > crds/{file} && cp crds/{file} charts/asenet/crds/\n"
    );
    Ok(format!("{header}{}", serde_yaml::to_string(&crd)?))
}

pub fn print_crd(args: CrdArgs) -> anyhow::Result<ExitCode> {
    print!("{}", crd_yaml(args.kind)?);
    Ok(ExitCode::SUCCESS)
}
