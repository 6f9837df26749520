//! Sustained GET and PUT throughput of the mock on loopback, throttling off.
//!
//! `cargo run --release -p mock-server --example load [-- SECONDS]`
//! Starts the seeded mock in-process on 127.0.0.1:0, then for each concurrency level runs
//! closed-loop clients (keep-alive HTTP/1.1) for a bounded time and prints requests/second
//! and latency percentiles. Traffic goes only to 127.0.0.1 and stops by itself.

use std::time::{Duration, Instant};

use mock_arm::{start, Config, MockState, Seed, ServeOptions};
use serde_json::json;

const SUB: &str = "00000000-0000-0000-0000-000000000001";

#[derive(Clone, Copy)]
enum Kind {
    Get,
    Put,
}

async fn run(
    base: &str,
    kind: Kind,
    clients: usize,
    duration: Duration,
) -> (u64, u64, Vec<Duration>) {
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for client in 0..clients {
        let base = base.to_owned();
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let nsg = format!("{base}/subscriptions/{SUB}/resourceGroups/network/providers/Microsoft.Network/networkSecurityGroups/load-{client}?api-version=2024-03-01");
            let (mut ok, mut failed, mut latencies) = (0u64, 0u64, Vec::new());
            let mut i = 0u32;
            while Instant::now() < deadline {
                i += 1;
                let started = Instant::now();
                let request = match kind {
                    Kind::Get => http.get(&nsg),
                    Kind::Put => http.put(&nsg).json(&json!({
                        "location": "westeurope",
                        "properties": {"securityRules": [{"name": "r", "properties": {
                            "protocol": "Tcp", "sourcePortRange": "*", "destinationPortRange": (1000 + i % 1000).to_string(),
                            "sourceAddressPrefix": "10.0.0.0/8", "destinationAddressPrefix": "*",
                            "access": "Allow", "priority": 100, "direction": "Inbound"}}]}
                    })),
                };
                match request.bearer_auth("t").send().await {
                    Ok(response) if response.status().is_success() => {
                        let _ = response.bytes().await;
                        ok += 1;
                    }
                    _ => failed += 1,
                }
                latencies.push(started.elapsed());
            }
            (ok, failed, latencies)
        }));
    }
    let (mut ok, mut failed, mut latencies) = (0, 0, Vec::new());
    for task in tasks {
        if let Ok((o, f, l)) = task.await {
            ok += o;
            failed += f;
            latencies.extend(l);
        }
    }
    latencies.sort();
    (ok, failed, latencies)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
        .clamp(1, 30);
    let duration = Duration::from_secs(seconds);
    let mut config = Config::default();
    config.throttling.enabled = false;
    config.lro_delay = Duration::ZERO;
    config.history_limit = 16;
    let seed = Seed::from_yaml(include_str!("../tests/fixtures/seed.yaml"))?;
    let mock = start(MockState::new(config, seed)?, ServeOptions::default()).await?;

    // Create the NSGs the clients read.
    let http = reqwest::Client::new();
    for client in 0..16 {
        http.put(format!("{}/subscriptions/{SUB}/resourceGroups/network/providers/Microsoft.Network/networkSecurityGroups/load-{client}?api-version=2024-03-01", mock.base_url))
            .bearer_auth("t")
            .json(&json!({"location": "westeurope"}))
            .send()
            .await?;
    }

    println!(
        "mock-arm load on {} ({seconds} s per row, throttling off, NSG bodies ~5 KB)",
        mock.base_url
    );
    println!(
        "{:<5} {:>8} {:>10} {:>8} {:>10} {:>10} {:>10}",
        "op", "clients", "requests", "errors", "req/s", "p50 ms", "p99 ms"
    );
    for kind in [Kind::Get, Kind::Put] {
        for clients in [4, 16] {
            let (ok, failed, latencies) = run(&mock.base_url, kind, clients, duration).await;
            println!(
                "{:<5} {:>8} {:>10} {:>8} {:>10.0} {:>10.2} {:>10.2}",
                match kind {
                    Kind::Get => "GET",
                    Kind::Put => "PUT",
                },
                clients,
                ok,
                failed,
                ok as f64 / duration.as_secs_f64(),
                percentile(&latencies, 0.5).as_secs_f64() * 1000.0,
                percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
            );
        }
    }
    mock.shutdown().await;
    Ok(())
}
