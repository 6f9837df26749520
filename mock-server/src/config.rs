//! Runtime configuration of the mock (`--config FILE`, YAML).
//!
//! Defaults follow ARM: token buckets of domain.md 4.8 (reads 250 refilled 25/s, writes and
//! deletes 200 refilled 10/s), the api-versions the official SDKs send (domain.md 4.1, 1.5),
//! and a short long-running-operation delay (domain.md 4.5) so tests stay fast.
//! `clock_scale` speeds up the whole ARM clock: bucket refill, `Retry-After` values and LRO
//! delays all shrink by the same factor.

use std::time::Duration;

use serde::Deserialize;

use crate::faults::FaultSpec;

/// Configuration of a mock instance. Every field has a default; YAML keys are camelCase.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// Token-bucket throttling (domain.md 4.8).
    pub throttling: ThrottlingConfig,
    /// ARM clock speed: 1.0 = real time, 10.0 = ten times faster.
    pub clock_scale: f64,
    /// How long (ARM clock) a write stays `InProgress`/`Updating`; 0 completes at once.
    #[serde(with = "duration_secs")]
    pub lro_delay: Duration,
    /// The `Retry-After` (ARM clock) sent with LRO responses. NRP sends 10 s (domain.md 4.5;
    /// set `lroDelay` and `lroRetryAfter` to 10 for NRP's timing, as the fleet bench does);
    /// the default is 1 s to keep SDK-driven tests fast.
    #[serde(with = "duration_secs")]
    pub lro_retry_after: Duration,
    /// Items per page of every list operation (domain.md 4.9).
    pub page_size: usize,
    /// Accepted `api-version` values per resource-provider namespace.
    pub api_versions: ApiVersions,
    /// Request bodies larger than this are refused with 413.
    pub max_body_bytes: usize,
    /// Versions kept per resource in the write history (oldest dropped first).
    pub history_limit: usize,
    /// Faults armed at start (same shape as `POST /_admin/faults`).
    pub faults: Vec<FaultSpec>,
    /// The token `/_admin` requires (`X-Mock-Admin-Token` header); `None`: a random one,
    /// readable from `MockState::admin_token` (and printed by `mock-arm` at start).
    pub admin_token: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            throttling: ThrottlingConfig::default(),
            clock_scale: 1.0,
            lro_delay: Duration::from_secs(1),
            lro_retry_after: Duration::from_secs(1),
            page_size: 100,
            api_versions: ApiVersions::default(),
            max_body_bytes: 4 * 1024 * 1024,
            history_limit: 10_000,
            faults: Vec::new(),
            admin_token: None,
        }
    }
}

impl Config {
    /// Parse a YAML (or JSON) configuration document.
    pub fn from_yaml(text: &str) -> Result<Self, serde_yaml::Error> {
        serde_yaml::from_str(text)
    }

    /// Convert an ARM-clock duration into real time (saturating; never panics).
    pub fn real(&self, arm: Duration) -> Duration {
        Duration::try_from_secs_f64(arm.as_secs_f64() / self.scale()).unwrap_or(Duration::MAX)
    }

    /// The clock scale, guarded against zero/negative/NaN values.
    pub fn scale(&self) -> f64 {
        if self.clock_scale.is_finite() && self.clock_scale > 0.0 {
            self.clock_scale
        } else {
            1.0
        }
    }
}

/// Token buckets per subscription (domain.md 4.8).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct ThrottlingConfig {
    pub enabled: bool,
    pub reads: Bucket,
    pub writes: Bucket,
    pub deletes: Bucket,
    /// Microsoft.Network's own limits per subscription on top of ARM's buckets (off by
    /// default; checked only when `enabled` is true too).
    pub nrp: NrpLimits,
}

/// Microsoft.Network resource-provider limits (domain.md 4.8: "PUT writes/deletes 1,000
/// per 5 minutes, GET reads 10,000 per 5 minutes"), per subscription, as a sliding window
/// on the ARM clock. Writes (PUT, PATCH, POST) and deletes share one window, as the
/// sentence names them together. Only requests under `providers/Microsoft.Network` count,
/// operation polls included.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct NrpLimits {
    /// Off by default: SDK and protocol tests send bursts the window would slow down.
    pub enabled: bool,
    /// Window length (ARM seconds).
    #[serde(with = "duration_secs")]
    pub window: Duration,
    /// Writes and deletes admitted per window and subscription.
    pub writes: u32,
    /// Reads admitted per window and subscription.
    pub reads: u32,
}

impl Default for NrpLimits {
    fn default() -> Self {
        Self {
            enabled: false,
            window: Duration::from_secs(300),
            writes: 1_000,
            reads: 10_000,
        }
    }
}

impl Default for ThrottlingConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            reads: Bucket {
                size: 250,
                refill_per_sec: 25.0,
            },
            writes: Bucket {
                size: 200,
                refill_per_sec: 10.0,
            },
            deletes: Bucket {
                size: 200,
                refill_per_sec: 10.0,
            },
            nrp: NrpLimits::default(),
        }
    }
}

/// One token bucket: capacity and refill rate (tokens per ARM second).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Bucket {
    pub size: u32,
    pub refill_per_sec: f64,
}

/// Accepted api-versions per namespace (domain.md 4.1 and 1.5; issue 3).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiVersions {
    pub network: Vec<String>,
    pub web: Vec<String>,
    pub resources: Vec<String>,
}

/// The `api-version` that each current Microsoft Network SDK sends on every
/// `Microsoft.Network` call, read from the published package itself (issue 11 item 3):
///
/// - Rust `azure_mgmt_network` 0.21.0 (crates.io, feature `default_tag` = `package-2024-03`):
///   `src/package_2024_03/mod.rs` appends `api-version=2024-03-01`.
/// - Python `azure-mgmt-network` 33.1.0 (PyPI wheel): every operation in
///   `operations/_operations.py` defaults to `"2026-03-01"`.
/// - JavaScript `@azure/arm-network` 39.0.0 (npm tarball, modular client): every operation in
///   `dist/*/api/*/operations.js` sends `"api%2Dversion": "2026-01-01"`.
///
/// All three also send `2018-10-01`, but only for `Microsoft.Compute/virtualMachineScaleSets`
/// paths (VMSS NICs and public IPs), which the mock does not serve. A version outside the
/// accepted list stays 400 `InvalidApiVersionParameter` (domain.md 4.1, 4.7).
pub const SDK_NETWORK_API_VERSIONS: &[(&str, &str)] = &[
    ("azure_mgmt_network 0.21.0 (Rust)", "2024-03-01"),
    ("azure-mgmt-network 33.1.0 (Python)", "2026-03-01"),
    ("@azure/arm-network 39.0.0 (JavaScript)", "2026-01-01"),
];

impl Default for ApiVersions {
    fn default() -> Self {
        let list = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect();
        Self {
            // Every default of SDK_NETWORK_API_VERSIONS (the swagger in azure-specs is
            // 2024-03-01 too), the versions the Python 33.1.0 operations accept when a caller
            // pins `api_version` (its `api_versions_list`: 2025-05-01 .. 2026-03-01), and the
            // stable versions between them that earlier SDK majors sent. The request and
            // response shapes of the resources served are the same in all of them for every
            // field the mock models; README "API versions" lists the later additions it ignores.
            network: list(&[
                "2023-09-01",
                "2023-11-01",
                "2024-01-01",
                "2024-03-01",
                "2024-05-01",
                "2024-07-01",
                "2024-10-01",
                "2025-01-01",
                "2025-05-01",
                "2025-07-01",
                "2025-09-01",
                "2026-01-01",
                "2026-03-01",
            ]),
            web: list(&[
                "2016-09-01",
                "2021-03-01",
                "2022-03-01",
                "2023-12-01",
                "2024-04-01",
                "2025-05-01",
            ]),
            resources: list(&["2021-04-01", "2022-09-01", "2024-03-01", "2025-04-01"]),
        }
    }
}

/// (De)serialize a [`Duration`] as (fractional) seconds.
mod duration_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sdk_default_network_version_is_accepted_by_default() {
        let accepted = ApiVersions::default().network;
        for (sdk, version) in SDK_NETWORK_API_VERSIONS {
            assert!(
                accepted.iter().any(|v| v == version),
                "{sdk} sends {version}, which the default list lacks"
            );
        }
    }
}
