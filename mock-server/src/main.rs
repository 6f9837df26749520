//! `mock-arm`: run the mock Azure Resource Manager (see mock-server/README.md).

#![forbid(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use mock_arm::{start, Config, MockState, Seed, ServeOptions};

/// A mock Azure Resource Manager (Microsoft.Network subset) on 127.0.0.1.
#[derive(Debug, Parser)]
#[command(name = "mock-arm", version)]
struct Args {
    /// Port on 127.0.0.1 (0 = any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Seed topology (YAML).
    #[arg(long)]
    seed: Option<PathBuf>,
    /// State file: loaded if it exists, rewritten atomically after every write.
    #[arg(long)]
    state: Option<PathBuf>,
    /// Serve HTTPS with a generated certificate; the CA file path is printed.
    #[arg(long)]
    tls: bool,
    /// Configuration file (YAML): throttling, clock scale, LRO delay, paging, faults, ...
    #[arg(long)]
    config: Option<PathBuf>,
    /// Token the admin API (`/_admin`) requires in `X-Mock-Admin-Token`; default: a random
    /// one, printed at start.
    #[arg(long, env = "MOCK_ARM_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
}

fn read(path: &PathBuf, what: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("failed to read {what} {}", path.display()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut config = match &args.config {
        Some(path) => Config::from_yaml(&read(path, "config")?)
            .with_context(|| format!("invalid config {}", path.display()))?,
        None => Config::default(),
    };
    if args.admin_token.is_some() {
        config.admin_token = args.admin_token.clone();
    }
    let generated = config.admin_token.is_none();
    let seed = match &args.seed {
        Some(path) => Seed::from_yaml(&read(path, "seed")?)
            .with_context(|| format!("invalid seed {}", path.display()))?,
        None => Seed::default(),
    };
    let state = MockState::new(config, seed)?;
    let admin_token = state.admin_token().to_owned();
    let running = start(
        state,
        ServeOptions {
            port: args.port,
            tls: args.tls,
            state_file: args.state.clone(),
            cert_dir: None,
        },
    )
    .await?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on {}", running.base_url)?;
    if let Some(path) = &running.ca_cert_path {
        writeln!(stdout, "ca certificate: {}", path.display())?;
    }
    // A token the caller chose is not echoed; a generated one is the only way to learn it.
    if generated {
        writeln!(stdout, "admin token: {admin_token}")?;
    }
    stdout.flush()?;
    drop(stdout);
    tokio::signal::ctrl_c()
        .await
        .context("failed to wait for ctrl-c")?;
    running.shutdown().await;
    Ok(())
}
