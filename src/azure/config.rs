//! How to reach Azure Resource Manager: endpoint, credential, CA, concurrency and the
//! service-tags source. A clap `Args` struct so the CLI and the operator flatten it into
//! their flags, while the ARM layer that reads it depends on nothing above it (issue 15:
//! the ARM layer must not import the command line).

use std::path::PathBuf;

use clap::{Args, ValueEnum};

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
    /// write waits for its long-running operation, about 10 s at NRP (domain.md 4.5), so
    /// about 100 must be in flight to use the refill).
    #[arg(long, default_value_t = 128)]
    pub max_write_concurrency: usize,
    /// Writes (PUTs and DELETEs) per subscription that Microsoft.Network accepts per
    /// `--nrp-window-seconds` (domain.md 4.8: 1,000 per 5 minutes). asenet paces its own
    /// writes under it, keeping slots for the subnet writes other writes wait for. 0: no
    /// pacing (ARM's 429s and `Retry-After` only).
    #[arg(long, env = "ASENET_NRP_WRITE_LIMIT", default_value_t = crate::azure::pacing::NRP_WRITES)]
    pub nrp_write_limit: usize,
    /// The window of `--nrp-write-limit`, in seconds.
    #[arg(long, env = "ASENET_NRP_WINDOW_SECONDS", default_value_t = crate::azure::pacing::NRP_WINDOW.as_secs())]
    pub nrp_window_seconds: u64,
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
