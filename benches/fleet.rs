//! Fleet benchmark and chaos run (issue 6): converge N ASEs against the mock ARM at ARM's
//! throttling limits and measure the ARM calls and the time against the honest floor: the
//! larger of the busiest subscription's write-bucket floor and the longest chain of writes
//! ARM serialises (one VNet's subnet writes and their predecessor) times the operation time.
//!
//! `cargo bench --bench fleet -- [--sizes 10,100,1000] [--driver controller|batch|both]
//! [--chaos] [--clock-scale X] [--concurrency K] [--subscriptions S] [--phase-budget SECS]
//! [--max-attempts A] [--lro-secs S] [--no-nrp-limits] [--no-pacing] [--quick]`
//!
//! NRP timing by default: every long-running operation answers `Retry-After: 10` and takes
//! 10 ARM seconds (domain.md 4.5; `--lro-secs`), and NRP's per-subscription limits of 1,000
//! writes/deletes and 10,000 reads per 5 minutes apply on top of ARM's buckets (domain.md
//! 4.8; `--no-nrp-limits`). Phases are then separated by 300 ARM s so the window is empty.
//!
//! Per size N: the fleet of benches/support/fleet_world.rs (specgen's sharing, spread over
//! up to S subscriptions) seeds an in-process mock ARM (127.0.0.1, port 0) with throttling at
//! ARM's defaults (docs/domain.md 4.8: writes 200 + 10/s, reads 250 + 25/s per subscription)
//! and `clock_scale` X, so buckets, `Retry-After` and LRO delays all run X times faster than
//! real time while the arithmetic stays ARM's. Wall times are reported on the ARM clock
//! (real seconds × X). Three phases, buckets refilled before each (as after a quiet period):
//! converge from the seeded state, one resync of the converged fleet, change 5 % of the specs
//! and converge again.
//!
//! Two drivers:
//! - `controller`: the operator's code path. kube-runtime's `Controller` over a reflector
//!   store fed with watch events, the real `asenet::controller::reconcile` and
//!   `error_policy`, the dependents wiring of `controller::run`, `Context` with the
//!   `Pipeline` engine, bounded concurrency. The Kubernetes API is a stand-in
//!   (support/fleet_kube.rs) that answers status patches and events and echoes status
//!   changes back as watch events, as an API server does.
//! - `batch`: the CLI's code path (`asenet apply`): one `Pipeline::plan` over every spec, one
//!   `Pipeline::apply`, repeated until the plan is empty. It shows what the pipeline achieves
//!   when every dirty spec is planned together.
//!
//! `--chaos`: about 5 % of ARM writes fail (500, 429, LRO `Failed`, connection reset, armed
//! through the mock's fault injection as writes go by), and a foreign writer adds its own
//! rules to NSGs during both convergences (HTTP GET, then PUT with `If-Match` of the etag it
//! read). Afterwards: foreign rules lost (seeded and added ones, compared property by
//! property) and, from the mock's write history, NSG versions in which the asenet allow for
//! 454-455 of a V1/V2 ASE was missing after it had existed.
//!
//! Every phase has a real-time budget (`--phase-budget`), so the run always stops.
//!
//! `ASENET_PLAN_PART_SPECS=N` in the environment: the controller driver plans a component
//! of more than N specs in parts, as the binary's `--plan-part-specs N` (default: the
//! binary's default).
//!
//! `--trace`: after each phase, a timeline on stderr: when each plan and apply ran (and,
//! with the controller driver, when the last reconcile ended), per kind of write the first and last start and the latency (PUT to operation
//! done), writes started and in flight per 10 ARM seconds, and the subnet chains per VNet.

#[path = "support/fleet_kube.rs"]
mod fleet_kube;
#[path = "support/fleet_world.rs"]
mod fleet_world;
#[allow(dead_code)]
#[path = "support/specgen.rs"]
mod specgen;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use asenet::api::{AseConnectivity, AseVersion};
use asenet::azure::pacing::WritePacer;
use asenet::azure::{ArmClientOptions, RetryConfig};
use asenet::controller::{self, index, Context, Engine, Leadership, Metrics, Settings, Stores};
use asenet::diff::{apply_to_snapshot, diff, Plan, Scope};
use asenet::observe::ServiceTags;
use asenet::pipeline::{Pipeline, PipelineOptions};
use asenet::snapshot::Snapshot;
use futures::channel::mpsc;
use futures::{FutureExt, StreamExt};
use kube::runtime::controller::Config as ControllerConfig;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{predicates, watcher, Controller, WatchStreamExt};
use mock_arm::{FaultAction, FaultSpec, MockState};
use serde_json::{json, Value};

use fleet_kube::FakeApi;
use fleet_world::Fleet;

// The same allocator as the `asenet` binary (src/main.rs), so the client's CPU cost is the
// product's. The in-process mock ARM shares it (its CPU counts on the ARM clock here, not in
// Azure).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const WRITE_BUCKET: f64 = 200.0;
const WRITE_REFILL: f64 = 10.0;
/// NRP's writes (and deletes) per subscription per window, and the window (domain.md 4.8).
const NRP_WRITES: u64 = 1_000;
const NRP_WINDOW_SECS: f64 = 300.0;
/// Seconds (ARM clock) for an empty write bucket to fill again (200 / 10).
const REFILL_ARM_SECS: f64 = 20.0;
/// NRP's window (domain.md 4.8: per 5 minutes); the quiet time between phases with
/// `nrp_limits`, so each phase starts with an empty window.
const NRP_WINDOW_ARM_SECS: f64 = 300.0;

/// Real time to wait between phases: every bucket (and, with NRP's limits, the window) full.
fn quiet_between_phases(args: &Args) -> Duration {
    let arm = if args.nrp_limits {
        NRP_WINDOW_ARM_SECS.max(REFILL_ARM_SECS)
    } else {
        REFILL_ARM_SECS
    };
    Duration::from_secs_f64(arm / args.clock_scale)
}

// ---------------------------------------------------------------------------------------
// Arguments

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Driver {
    Controller,
    /// The controller with status-only changes filtered out of its trigger stream
    /// (`predicate_filter(predicates::generation)`): what `controller::run` would do with
    /// that one-line change.
    ControllerGeneration,
    Batch,
}

impl Driver {
    fn name(self) -> &'static str {
        match self {
            Driver::Controller => "controller",
            Driver::ControllerGeneration => "controller+generation-predicate",
            Driver::Batch => "batch",
        }
    }
}

#[derive(Debug, Clone)]
struct Args {
    sizes: Vec<usize>,
    drivers: Vec<Driver>,
    chaos: bool,
    clock_scale: f64,
    concurrency: u16,
    subscriptions: usize,
    phase_budget: Duration,
    /// ARM client attempts per request (the product default is 8).
    max_attempts: u32,
    /// `--trace`: print a timeline of every batch phase (plan, apply, writes) to stderr.
    trace: bool,
    /// ARM seconds each long-running operation takes and the `Retry-After` it answers
    /// (`--lro-secs`; NRP's 10 s by default, domain.md 4.5; the mock's own default is 1 s).
    lro_secs: f64,
    /// NRP's per-5-minute limits in the mock (`--no-nrp-limits` turns them off).
    nrp_limits: bool,
    /// `--no-pacing`: the client does not pace its writes under NRP's window (the mock's
    /// limits stay; ARM's 429s and `Retry-After` only).
    pacing: bool,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut args = Args {
        sizes: vec![10, 100, 1000],
        drivers: vec![Driver::Controller, Driver::Batch],
        chaos: false,
        clock_scale: 20.0,
        concurrency: 8,
        subscriptions: 3,
        phase_budget: Duration::from_secs(60),
        max_attempts: RetryConfig::default().max_attempts,
        trace: false,
        lro_secs: 10.0,
        nrp_limits: true,
        pacing: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--bench" => {}
            "--sizes" => {
                args.sizes = value("--sizes")?
                    .split(',')
                    .map(|s| {
                        s.trim()
                            .parse::<usize>()
                            .map_err(|e| format!("--sizes: {e}"))
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--driver" => {
                args.drivers = match value("--driver")?.as_str() {
                    "controller" => vec![Driver::Controller],
                    "batch" => vec![Driver::Batch],
                    "controller-generation" => vec![Driver::ControllerGeneration],
                    "both" => vec![Driver::Controller, Driver::Batch],
                    "all" => vec![
                        Driver::Controller,
                        Driver::ControllerGeneration,
                        Driver::Batch,
                    ],
                    other => return Err(format!("unknown --driver {other}")),
                }
            }
            "--chaos" => args.chaos = true,
            "--no-nrp-limits" => args.nrp_limits = false,
            "--no-pacing" => args.pacing = false,
            "--lro-secs" => {
                args.lro_secs = value("--lro-secs")?
                    .parse()
                    .map_err(|e| format!("--lro-secs: {e}"))?
            }
            "--trace" => args.trace = true,
            "--quick" => {
                args.sizes = vec![10, 100];
                args.phase_budget = Duration::from_secs(30);
            }
            "--clock-scale" => {
                args.clock_scale = value("--clock-scale")?
                    .parse()
                    .map_err(|e| format!("--clock-scale: {e}"))?
            }
            "--concurrency" => {
                args.concurrency = value("--concurrency")?
                    .parse()
                    .map_err(|e| format!("--concurrency: {e}"))?
            }
            "--subscriptions" => {
                args.subscriptions = value("--subscriptions")?
                    .parse()
                    .map_err(|e| format!("--subscriptions: {e}"))?
            }
            "--max-attempts" => {
                args.max_attempts = value("--max-attempts")?
                    .parse()
                    .map_err(|e| format!("--max-attempts: {e}"))?
            }
            "--phase-budget" => {
                let secs: u64 = value("--phase-budget")?
                    .parse()
                    .map_err(|e| format!("--phase-budget: {e}"))?;
                args.phase_budget = Duration::from_secs(secs);
            }
            // `cargo bench` passes a filter; another bench's name means "not us".
            other if !other.starts_with("--") && other != "fleet" => return Ok(None),
            _ => {}
        }
    }
    if !(args.clock_scale.is_finite() && args.clock_scale > 0.0) {
        return Err("--clock-scale must be positive".into());
    }
    if !(args.lro_secs.is_finite() && args.lro_secs >= 0.0) {
        return Err(format!(
            "--lro-secs must be a number of seconds >= 0, got {}",
            args.lro_secs
        ));
    }
    args.concurrency = args.concurrency.max(1);
    Ok(Some(args))
}

// ---------------------------------------------------------------------------------------
// Measurements

/// Peak resident set of this process (`VmHWM`), in MiB.
fn peak_rss_mib() -> f64 {
    proc_status_kib("VmHWM:") as f64 / 1024.0
}

fn proc_status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Linux's `USER_HZ`: `/proc` reports CPU times in these ticks (100 on every Linux ABI the
/// project builds for; `getconf CLK_TCK`).
const TICKS_PER_SEC: f64 = 100.0;

/// Names of the mock ARM's runtime threads, so its CPU time can be told from the client's.
const MOCK_THREAD: &str = "mock-arm";

/// utime + stime (seconds) of a `/proc/.../stat` line (fields 14 and 15; the command name
/// in parentheses may contain spaces, so fields are counted after its closing parenthesis).
fn stat_cpu_secs(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SEC)
}

/// CPU seconds used so far: (the whole process, the mock ARM's threads).
fn cpu_secs() -> (f64, f64) {
    let total = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| stat_cpu_secs(&s))
        .unwrap_or(0.0);
    let mut mock = 0.0;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                continue;
            };
            let comm = stat
                .find('(')
                .zip(stat.rfind(')'))
                .map(|(a, b)| &stat[a + 1..b])
                .unwrap_or_default();
            if comm.starts_with(MOCK_THREAD) {
                mock += stat_cpu_secs(&stat).unwrap_or(0.0);
            }
        }
    }
    (total, mock)
}

/// The mock ARM's own runtime (threads named [`MOCK_THREAD`]): its CPU is ARM's, not the
/// client's, and is reported apart.
fn mock_runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(MOCK_THREAD)
            .enable_all()
            .build()
            // No runtime, no benchmark: nothing to recover to.
            .expect("fleet: cannot start the mock ARM's runtime")
    })
}

/// Resident set now (`VmRSS`), in MiB.
fn rss_mib() -> f64 {
    proc_status_kib("VmRSS:") as f64 / 1024.0
}

/// What the foreign writer did (subtracted from the mock's counters).
#[derive(Default)]
struct ForeignCounters {
    reads: AtomicU64,
    writes: AtomicU64,
    throttled: AtomicU64,
    other: AtomicU64,
}

/// One phase's figures.
#[derive(Debug, Default, Clone)]
struct Phase {
    /// ARM reads answered (not 429), asenet only, by resource type.
    reads_by_kind: BTreeMap<String, u64>,
    reads: u64,
    /// PUTs answered 200/201 (asenet only).
    writes: u64,
    /// PUTs refused 412 (the resource changed since it was read).
    precondition_failed: u64,
    throttled: u64,
    faults: u64,
    arm_secs: f64,
    converged: bool,
    /// Parents with changes in the offline plan of this phase (what must be written).
    changed_parents: usize,
    /// Writes per subscription, from the mock's write history.
    writes_by_sub: BTreeMap<String, u64>,
    reconciles: u64,
    reconcile_errors: u64,
    note: String,
    /// The longest chain of serialised writes of the phase (see [`longest_chain`]).
    chain: Chain,
    /// ARM seconds one long-running operation takes in the mock (its `lroDelay`).
    op_secs: f64,
    /// CPU seconds of the phase: the client (everything but the mock ARM's threads: the
    /// driver, pipeline, controller, kube stand-in) and the mock ARM.
    cpu_client: f64,
    cpu_mock: f64,
    /// Whole-process `VmRSS` and `VmHWM` at the end of the phase (MiB).
    rss_end: f64,
    hwm_end: f64,
    /// Whether the mock applied NRP's per-5-minute limits in this phase.
    nrp_limits: bool,
}

/// The longest chain of writes that ARM serialises in one phase: a VNet's subnet writes
/// (one at a time per VNet, `AnotherOperationInProgress`, domain.md 4.4) plus, when every
/// one of them waits for an NSG or route table written in the same phase, that predecessor.
#[derive(Debug, Default, Clone)]
struct Chain {
    vnet: String,
    subnet_writes: u64,
    predecessor: bool,
}

impl Chain {
    fn len(&self) -> u64 {
        self.subnet_writes + u64::from(self.predecessor)
    }
}

impl Phase {
    /// Total writes over one write bucket. NOT a floor when the fleet spans several
    /// subscriptions (ARM has one bucket per subscription, domain.md 4.8); kept only to
    /// compare with earlier figures.
    fn single_bucket_figure(&self) -> f64 {
        (self.writes as f64 - WRITE_BUCKET).max(0.0) / WRITE_REFILL
    }
    /// The busiest subscription's `(writes - 200) / 10`: its write bucket cannot go faster.
    /// With NRP's limits on, also its window: no more than 1,000 writes in any 5 minutes,
    /// so write `k` (from 0) starts no earlier than `floor(k / 1000) * 300` s (domain.md
    /// 4.8).
    fn floor_per_sub(&self) -> f64 {
        self.writes_by_sub
            .values()
            .map(|w| {
                let bucket = (*w as f64 - WRITE_BUCKET).max(0.0) / WRITE_REFILL;
                let window = if self.nrp_limits && *w > 0 {
                    ((*w - 1) / NRP_WRITES) as f64 * NRP_WINDOW_SECS
                } else {
                    0.0
                };
                bucket.max(window)
            })
            .fold(0.0, f64::max)
    }
    /// The longest serialised chain times the operation time: no schedule is shorter.
    fn floor_chain(&self) -> f64 {
        // Any write at all is a chain of one operation.
        self.chain.len().max(u64::from(self.writes > 0)) as f64 * self.op_secs
    }
    /// The honest floor: the larger of the two bounds.
    fn floor(&self) -> f64 {
        self.floor_per_sub().max(self.floor_chain())
    }
}

/// A subnet's NSG and route table ids (lower case) as a VNet body shows them.
fn subnet_dependencies(subnet: &Value) -> Vec<String> {
    ["networkSecurityGroup", "routeTable"]
        .iter()
        .filter_map(|k| {
            let v = &subnet["properties"][*k];
            v["id"].as_str().or(v.as_str()).map(str::to_ascii_lowercase)
        })
        .collect()
}

/// A subnet's properties without `provisioningState` (which a write changes by itself).
fn subnet_content(subnet: &Value) -> Value {
    let mut props = subnet["properties"].clone();
    if let Some(o) = props.as_object_mut() {
        o.remove("provisioningState");
    }
    props
}

/// The longest chain of serialised writes of a phase, from the mock's write history: per
/// VNet, the versions written in the phase (each one subnet write), the subnets each changed
/// (compared with the version before), and whether every one of those subnets points at an
/// NSG or route table that was itself written in the phase (then the chain's first subnet
/// write had to wait for that write; if some subnet had no such predecessor, a schedule could
/// start the chain with it and overlap the predecessor, so it is not counted).
fn longest_chain(
    mock: &MockState,
    hist_before: &HashMap<String, usize>,
    parents: &BTreeMap<String, String>,
    written: &BTreeSet<String>,
) -> Chain {
    let mut best = Chain::default();
    for (key, id) in parents {
        if !key.contains("/virtualnetworks/") {
            continue;
        }
        let history = mock.history(id);
        let before = hist_before.get(key).copied().unwrap_or(0);
        if history.len() <= before {
            continue;
        }
        let mut subnet_writes = 0u64;
        let mut all_wait = true;
        for i in before..history.len() {
            let version = &history[i];
            if version.pointer("/properties/provisioningState") == Some(&json!("Failed")) {
                continue;
            }
            subnet_writes += 1;
            let previous: HashMap<String, Value> = i
                .checked_sub(1)
                .and_then(|p| history[p]["properties"]["subnets"].as_array().cloned())
                .unwrap_or_default()
                .into_iter()
                .filter_map(|s| Some((s["name"].as_str()?.to_ascii_lowercase(), s)))
                .collect();
            for subnet in version["properties"]["subnets"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                let name = subnet["name"].as_str().unwrap_or_default();
                let unchanged = previous
                    .get(&name.to_ascii_lowercase())
                    .is_some_and(|p| subnet_content(p) == subnet_content(subnet));
                if !unchanged
                    && !subnet_dependencies(subnet)
                        .iter()
                        .any(|d| written.contains(d))
                {
                    all_wait = false;
                }
            }
        }
        let chain = Chain {
            vnet: id.rsplit('/').next().unwrap_or(id).to_string(),
            subnet_writes,
            predecessor: subnet_writes > 0 && all_wait,
        };
        if chain.len() > best.len() {
            best = chain;
        }
    }
    best
}

fn collect_phase(
    mock: &MockState,
    foreign: &ForeignCounters,
    hist_before: &HashMap<String, usize>,
    parents: &BTreeMap<String, String>,
    foreign_by_sub: &Mutex<BTreeMap<String, u64>>,
) -> Phase {
    let stats = mock.stats();
    let mut p = Phase::default();
    for (key, count) in &stats.by_request {
        let mut parts = key.split(' ');
        let (Some(method), Some(kind), Some(status)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let status: u16 = status.parse().unwrap_or(0);
        match (method, status) {
            (_, 429) => p.throttled += count,
            ("GET", _) => {
                p.reads += count;
                *p.reads_by_kind.entry(kind.to_string()).or_default() += count;
            }
            ("PUT", 200 | 201) => p.writes += count,
            ("PUT", 412) => p.precondition_failed += count,
            _ => {}
        }
    }
    let f_reads = foreign.reads.swap(0, Ordering::Relaxed);
    let f_writes = foreign.writes.swap(0, Ordering::Relaxed);
    let f_throttled = foreign.throttled.swap(0, Ordering::Relaxed);
    foreign.other.swap(0, Ordering::Relaxed);
    p.reads = p.reads.saturating_sub(f_reads);
    if let Some(n) = p.reads_by_kind.get_mut("networkSecurityGroups") {
        *n = n.saturating_sub(f_reads);
    }
    p.writes = p.writes.saturating_sub(f_writes);
    p.throttled = p.throttled.saturating_sub(f_throttled);
    p.faults = stats.faults_injected;
    let mut foreign_subs = foreign_by_sub
        .lock()
        .map(|mut m| std::mem::take(&mut *m))
        .unwrap_or_default();
    let mut written = BTreeSet::new();
    for (key, id) in parents {
        let history = mock.history(id);
        let before = hist_before.get(key).copied().unwrap_or(0);
        let new = history
            .iter()
            .skip(before)
            .filter(|v| v.pointer("/properties/provisioningState") != Some(&json!("Failed")))
            .count() as u64;
        if new > 0 {
            *p.writes_by_sub
                .entry(fleet_world::subscription_of(id))
                .or_default() += new;
            written.insert(key.clone());
        }
    }
    p.chain = longest_chain(mock, hist_before, parents, &written);
    p.op_secs = mock.config().lro_delay.as_secs_f64();
    for (sub, n) in p.writes_by_sub.iter_mut() {
        *n = n.saturating_sub(foreign_subs.remove(sub).unwrap_or(0));
    }
    p
}

fn history_lengths(mock: &MockState, parents: &BTreeMap<String, String>) -> HashMap<String, usize> {
    parents
        .iter()
        .map(|(k, id)| (k.clone(), mock.history(id).len()))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Offline expectations (pure: resolve + diff against the modelled state)

struct Expected {
    touched: usize,
    first: Plan,
    after_first: Snapshot,
}

fn plan_offline(specs: &[AseConnectivity], snapshot: &Snapshot) -> Plan {
    let (valid, _) = asenet::validate::validate_all(specs);
    let desired = asenet::resolver::resolve(&valid, snapshot);
    let scope = Scope::new(valid.iter().map(|v| v.key.clone()), []);
    diff(&desired, snapshot, &scope)
}

fn expected(fleet: &Fleet) -> Expected {
    let first = plan_offline(&fleet.specs, &fleet.snapshot);
    let after_first = apply_to_snapshot(&first, &fleet.snapshot);
    Expected {
        touched: first.resources.len(),
        first,
        after_first,
    }
}

// ---------------------------------------------------------------------------------------
// Chaos: fault injection and a foreign writer

/// Arms one fault for every 20 ARM write attempts (5 %), cycling through the kinds.
async fn inject_faults(mock: MockState, stop: Arc<AtomicBool>) {
    let kinds = [
        FaultAction::Error {
            status: 500,
            code: None,
            message: None,
            retry_after: None,
        },
        FaultAction::Error {
            status: 429,
            code: None,
            message: None,
            retry_after: Some(2.0),
        },
        FaultAction::LroFailed {
            code: "InternalServerError".into(),
            message: "injected by the fleet benchmark".into(),
            keep_write: false,
        },
        FaultAction::Reset,
    ];
    let mut last = mock.stats().writes();
    let mut armed = 0usize;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let now = mock.stats().writes();
        if now < last {
            last = now; // stats were reset between phases
        }
        while now >= last + 20 {
            last += 20;
            mock.inject_fault(FaultSpec {
                method: Some("PUT".into()),
                path: None,
                count: 1,
                action: kinds[armed % kinds.len()].clone(),
            });
            armed += 1;
        }
    }
    mock.clear_faults();
}

/// A foreign rule the foreign writer added, to be found unchanged at the end.
#[derive(Debug, Clone)]
struct ForeignRule {
    nsg: String,
    name: String,
    properties: Value,
}

/// Another team's tool: reads an NSG, adds one rule of its own outside asenet's bands, PUTs
/// it back with `If-Match`; on 412/409/429/5xx it reads again and retries.
#[allow(clippy::too_many_arguments)]
async fn foreign_writer(
    base: String,
    nsgs: Vec<String>,
    edits: usize,
    interval: Duration,
    stop: Arc<AtomicBool>,
    counters: Arc<ForeignCounters>,
    by_sub: Arc<Mutex<BTreeMap<String, u64>>>,
    added: Arc<Mutex<Vec<ForeignRule>>>,
    start_index: usize,
) {
    let Ok(http) = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
    else {
        return;
    };
    let api = "api-version=2024-03-01";
    let mut k = start_index;
    let mut done = 0;
    while done < edits && !stop.load(Ordering::Relaxed) && !nsgs.is_empty() {
        tokio::time::sleep(interval).await;
        let nsg = &nsgs[(k * 7919) % nsgs.len()];
        k += 1;
        let name = format!("team-foreign-{k}");
        let url = format!("{base}{nsg}?{api}");
        for _attempt in 0..6 {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let got = http.get(&url).bearer_auth("foreign").send().await;
            let Ok(resp) = got else { break };
            match resp.status().as_u16() {
                200 => counters.reads.fetch_add(1, Ordering::Relaxed),
                429 => {
                    counters.throttled.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(interval).await;
                    continue;
                }
                _ => {
                    counters.other.fetch_add(1, Ordering::Relaxed);
                    break; // absent (asenet creates it later) or failing: another NSG
                }
            };
            let Ok(mut body) = resp.json::<Value>().await else {
                break;
            };
            let etag = body["etag"].as_str().unwrap_or_default().to_string();
            let priority = 2100 + (k % 800) as u64;
            let properties = json!({
                "protocol": "Tcp",
                "sourcePortRange": "*",
                "destinationPortRange": format!("{}", 20000 + k % 10000),
                "sourceAddressPrefix": "10.200.0.0/24",
                "destinationAddressPrefix": "*",
                "access": "Allow",
                "priority": priority,
                "direction": "Inbound",
                "description": "owned by the platform team"
            });
            let Some(rules) = body
                .pointer_mut("/properties/securityRules")
                .and_then(Value::as_array_mut)
            else {
                break;
            };
            if rules
                .iter()
                .any(|r| r.pointer("/properties/priority") == Some(&json!(priority)))
            {
                break; // priority taken: pick another NSG next time
            }
            rules.push(json!({ "name": name, "properties": properties }));
            let put = http
                .put(&url)
                .bearer_auth("foreign")
                .header("if-match", etag)
                .json(&body)
                .send()
                .await;
            let Ok(resp) = put else { break };
            match resp.status().as_u16() {
                200 | 201 => {
                    counters.writes.fetch_add(1, Ordering::Relaxed);
                    let operation = resp
                        .headers()
                        .get("azure-asyncoperation")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let reply = resp.json::<Value>().await.ok();
                    // Like any careful writer, wait for the operation: a write whose
                    // operation failed (an injected fault hits the foreign writer's PUTs
                    // too) was rolled back and never stored, so it cannot be lost.
                    if let Some(op) = operation {
                        if !operation_succeeded(&http, &op, interval, &stop, &counters).await {
                            tokio::time::sleep(interval).await;
                            continue;
                        }
                    }
                    // What ARM stored (normalised by the server) is what must survive.
                    let stored = reply.and_then(|b| {
                        rules_of(&b)
                            .into_iter()
                            .find(|r| r["name"].as_str() == Some(name.as_str()))
                            .map(|r| r["properties"].clone())
                    });
                    let properties = stored.unwrap_or(properties);
                    if let Ok(mut m) = by_sub.lock() {
                        *m.entry(fleet_world::subscription_of(nsg)).or_default() += 1;
                    }
                    if let Ok(mut a) = added.lock() {
                        a.push(ForeignRule {
                            nsg: nsg.clone(),
                            name: name.clone(),
                            properties,
                        });
                    }
                    done += 1;
                    break;
                }
                429 => {
                    counters.throttled.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(interval).await;
                }
                _ => {
                    counters.other.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(interval).await;
                }
            }
        }
    }
}

/// Polls an `Azure-AsyncOperation` URL until it ends; true when it ended `Succeeded`.
async fn operation_succeeded(
    http: &reqwest::Client,
    url: &str,
    interval: Duration,
    stop: &AtomicBool,
    counters: &ForeignCounters,
) -> bool {
    for _ in 0..200 {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        tokio::time::sleep(interval / 4).await;
        let Ok(resp) = http.get(url).bearer_auth("foreign").send().await else {
            continue;
        };
        if resp.status().as_u16() != 200 {
            counters.throttled.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        counters.reads.fetch_add(1, Ordering::Relaxed);
        let status = resp
            .json::<Value>()
            .await
            .ok()
            .and_then(|b| b["status"].as_str().map(str::to_owned));
        match status.as_deref() {
            Some("Succeeded") => return true,
            Some("Failed" | "Canceled") => return false,
            _ => {}
        }
    }
    false
}

/// Properties compared for "unchanged": everything but the read-only fields.
fn comparable(props: &Value) -> Value {
    let mut p = props.clone();
    if let Some(o) = p.as_object_mut() {
        o.remove("provisioningState");
    }
    p
}

fn rules_of(body: &Value) -> Vec<Value> {
    body.pointer("/properties/securityRules")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// Foreign rules (seeded, and added by the foreign writer) missing or changed now.
fn foreign_rules_lost(
    mock: &MockState,
    seeded: &[ForeignRule],
    added: &[ForeignRule],
) -> (usize, usize) {
    let mut lost = 0;
    let total = seeded.len() + added.len();
    for f in seeded.iter().chain(added) {
        let now = mock
            .get_resource(&f.nsg)
            .map(|b| rules_of(&b))
            .unwrap_or_default();
        let found = now.iter().any(|r| {
            r["name"].as_str() == Some(f.name.as_str())
                && comparable(&r["properties"]) == comparable(&f.properties)
        });
        if !found {
            lost += 1;
            let same_name = now
                .iter()
                .find(|r| r["name"].as_str() == Some(f.name.as_str()));
            eprintln!(
                "fleet: foreign rule lost: {} {} (expected {}, now {})",
                f.nsg,
                f.name,
                comparable(&f.properties),
                same_name.map_or("absent".into(), |r| comparable(&r["properties"])
                    .to_string())
            );
        }
    }
    (lost, total)
}

fn seeded_foreign(mock: &MockState, nsgs: &BTreeSet<String>) -> Vec<ForeignRule> {
    let mut out = Vec::new();
    for id in nsgs {
        if let Some(body) = mock.get_resource(id) {
            for r in rules_of(&body) {
                let name = r["name"].as_str().unwrap_or_default().to_string();
                if !name.to_ascii_lowercase().starts_with("asenet-") {
                    out.push(ForeignRule {
                        nsg: id.clone(),
                        name,
                        properties: r["properties"].clone(),
                    });
                }
            }
        }
    }
    out
}

fn ranges_of(props: &Value) -> Vec<String> {
    let mut out: Vec<String> = props["destinationPortRanges"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if let Some(r) = props["destinationPortRange"].as_str() {
        out.push(r.to_string());
    }
    out
}

fn covers_management(range: &str) -> bool {
    let (lo, hi) = match range.split_once('-') {
        Some((a, b)) => (a.trim().parse::<u32>(), b.trim().parse::<u32>()),
        None => (range.trim().parse::<u32>(), range.trim().parse::<u32>()),
    };
    matches!((lo, hi), (Ok(lo), Ok(hi)) if lo <= 454 && hi >= 455) || range.trim() == "*"
}

fn has_management_allow(version: &Value) -> bool {
    rules_of(version).iter().any(|r| {
        let p = &r["properties"];
        r["name"]
            .as_str()
            .is_some_and(|n| n.to_ascii_lowercase().starts_with("asenet-"))
            && p["access"].as_str() == Some("Allow")
            && p["direction"].as_str() == Some("Inbound")
            && ranges_of(p).iter().any(|x| covers_management(x))
    })
}

/// NSG versions (V1/V2 ASE NSGs) without the management allow after one that had it.
fn management_gaps(mock: &MockState, fleet: &Fleet) -> (usize, usize) {
    let mut gaps = 0;
    let mut checked = 0;
    for s in &fleet.specs {
        if !matches!(s.spec.environment.version, AseVersion::V1 | AseVersion::V2) {
            continue;
        }
        checked += 1;
        let mut seen = false;
        for v in mock.history(&s.spec.network_security_group.resource_id) {
            let has = has_management_allow(&v);
            if seen && !has {
                gaps += 1;
            }
            seen |= has;
        }
    }
    (gaps, checked)
}

// ---------------------------------------------------------------------------------------
// The controller driver

/// Reconciles in flight, finished, failed; when the last one ended.
struct Tracker {
    in_flight: AtomicUsize,
    started: AtomicU64,
    errors: AtomicU64,
    last_end: Mutex<Instant>,
    /// Specs whose last reconcile failed with a backoff retry pending.
    backing_off: Mutex<BTreeSet<(String, String)>>,
}

impl Tracker {
    fn new() -> Arc<Self> {
        Arc::new(Tracker {
            in_flight: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            last_end: Mutex::new(Instant::now()),
            backing_off: Mutex::default(),
        })
    }
    fn idle_since(&self) -> Option<Instant> {
        let pending = self.backing_off.lock().map(|b| b.len()).unwrap_or(0);
        if self.in_flight.load(Ordering::SeqCst) == 0 && pending == 0 {
            self.last_end.lock().ok().map(|t| *t)
        } else {
            None
        }
    }
}

/// Waits until no reconcile ran for `quiet` (real) and none is in flight or backing off, or
/// `budget` passed. Returns the instant the last reconcile ended and whether it converged.
async fn wait_idle(
    tracker: &Tracker,
    since: Instant,
    budget: Duration,
    quiet: Duration,
    progress: impl Fn(),
) -> (Instant, bool) {
    let mut last_report = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let started = tracker.started.load(Ordering::SeqCst);
        if let Some(t) = tracker.idle_since() {
            if started > 0 && t > since && t.elapsed() >= quiet {
                return (t, true);
            }
        }
        if since.elapsed() > budget {
            return (Instant::now(), false);
        }
        if last_report.elapsed() > Duration::from_secs(15) {
            progress();
            last_report = Instant::now();
        }
    }
}

// ---------------------------------------------------------------------------------------
// One size

struct Row {
    driver: Driver,
    n: usize,
    subscriptions: usize,
    touched: usize,
    converge: Phase,
    resync: Phase,
    change: Phase,
    changed_specs: usize,
    rss_mib: f64,
    rss_setup: f64,
    chaos: Option<ChaosResult>,
}

struct ChaosResult {
    foreign_lost: usize,
    foreign_total: usize,
    foreign_added: usize,
    gaps: usize,
    nsgs_checked: usize,
    faults: u64,
    converged: bool,
}

fn arm_options(scale: f64, max_attempts: u32) -> ArmClientOptions {
    // The client's own delays run on the ARM clock too (ARM's values divided by the scale).
    let s = |d: Duration| d.div_f64(scale);
    ArmClientOptions {
        retry: RetryConfig {
            max_attempts,
            base_delay: s(Duration::from_millis(500)),
            max_delay: s(Duration::from_secs(30)),
            max_retry_after: s(Duration::from_secs(120)),
        },
        lro_default_poll: s(Duration::from_secs(5)),
        lro_max_poll: s(Duration::from_secs(60)),
        lro_timeout: Duration::from_secs(600),
        request_timeout: Duration::from_secs(60),
    }
}

/// Everything one size needs, built once.
struct Setup {
    fleet: Fleet,
    exp: Expected,
    mock: mock_arm::RunningMock,
    pipeline: Pipeline,
    parents: BTreeMap<String, String>,
    all_nsgs: BTreeSet<String>,
    seeded: Vec<ForeignRule>,
    changed_list: Vec<AseConnectivity>,
    changed_only: Vec<AseConnectivity>,
    expected_change: Plan,
    /// `cpu_secs()` at the start of the running phase.
    cpu_mark: Mutex<(f64, f64)>,
    /// Whole-process `VmRSS` once the fleet, offline plans and seeded mock exist (MiB).
    rss_setup: f64,
    /// `--no-nrp-limits` not given.
    nrp_limits: bool,
}

async fn setup(args: &Args, n: usize) -> anyhow::Result<Setup> {
    let scale = args.clock_scale;
    let fleet = fleet_world::fleet(n, args.subscriptions).map_err(anyhow::Error::msg)?;
    let exp = expected(&fleet);
    let (valid, _) = asenet::validate::validate_all(&fleet.specs);
    let seed =
        asenet::fixture::mock_seed::seed(&fleet.snapshot, &valid).map_err(anyhow::Error::msg)?;
    let mut config = mock_arm::Config {
        clock_scale: scale,
        history_limit: 100_000,
        // NRP's timing (domain.md 4.5): the operation takes `Retry-After` seconds.
        lro_delay: Duration::from_secs_f64(args.lro_secs),
        lro_retry_after: Duration::from_secs_f64(args.lro_secs),
        ..mock_arm::Config::default()
    };
    // NRP's own per-5-minute limits (domain.md 4.8) on top of ARM's buckets.
    config.throttling.nrp.enabled = args.nrp_limits;
    let state = MockState::new(config, seed)?;
    let mock = mock_runtime()
        .spawn(mock_arm::start(
            state,
            mock_arm::ServeOptions {
                port: 0,
                ..Default::default()
            },
        ))
        .await??;
    let http: Arc<dyn azure_core::HttpClient> =
        Arc::new(asenet::azure::http_client(None, Duration::from_secs(60))?);
    let arm = asenet::azure::ArmClient::new(
        &mock.base_url,
        Arc::new(asenet::azure::credential::StaticToken::new("fleet")),
        http,
        arm_options(scale, args.max_attempts),
    )?;
    let tags = ServiceTags(fleet.snapshot.service_tags.values().cloned().collect());
    // Not `fixture::harness`: the mock runs on a runtime of its own here, so that the
    // bench can count the client's CPU apart from the mock's.
    let pipeline = Pipeline::new(
        arm,
        PipelineOptions {
            service_tags: tags,
            max_concurrency: usize::from(args.concurrency),
            // The client paces its writes under NRP's window as in production, on the
            // bench's clock; without the mock's NRP limits there is no window to pace for.
            write_pacer: if args.nrp_limits && args.pacing {
                WritePacer::new(
                    NRP_WRITES as usize,
                    Duration::from_secs_f64(NRP_WINDOW_SECS / scale),
                )
            } else {
                WritePacer::off()
            },
            ..PipelineOptions::default()
        },
    );
    let parents = fleet_world::parents(&fleet);
    let all_nsgs: BTreeSet<String> = fleet
        .specs
        .iter()
        .flat_map(|s| {
            std::iter::once(s.spec.network_security_group.resource_id.clone()).chain(
                s.spec
                    .backends
                    .iter()
                    .map(|b| b.network_security_group.resource_id.clone()),
            )
        })
        .collect();
    let seeded = seeded_foreign(&mock.state, &all_nsgs);
    let (changed_list, _) = fleet_world::change_five_percent(&fleet.specs);
    let changed_only: Vec<AseConnectivity> = changed_list
        .iter()
        .zip(&fleet.specs)
        .filter(|(a, b)| a.metadata.generation != b.metadata.generation)
        .map(|(a, _)| a.clone())
        .collect();
    let expected_change = plan_offline(&changed_list, &exp.after_first);
    Ok(Setup {
        fleet,
        exp,
        mock,
        pipeline,
        parents,
        all_nsgs,
        seeded,
        changed_list,
        changed_only,
        expected_change,
        cpu_mark: Mutex::new(cpu_secs()),
        rss_setup: rss_mib(),
        nrp_limits: args.nrp_limits,
    })
}

/// Chaos actors of one phase.
struct Chaos {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

struct ChaosShared {
    counters: Arc<ForeignCounters>,
    by_sub: Arc<Mutex<BTreeMap<String, u64>>>,
    added: Arc<Mutex<Vec<ForeignRule>>>,
}

impl ChaosShared {
    fn new() -> Self {
        ChaosShared {
            counters: Arc::default(),
            by_sub: Arc::default(),
            added: Arc::default(),
        }
    }
}

fn start_chaos(
    args: &Args,
    s: &Setup,
    shared: &ChaosShared,
    phase: usize,
    foreign_writer_on: bool,
) -> Chaos {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    if !args.chaos {
        return Chaos { stop, tasks };
    }
    tasks.push(tokio::spawn(inject_faults(
        s.mock.state.clone(),
        stop.clone(),
    )));
    if foreign_writer_on {
        let edits = (s.fleet.specs.len() / 4).clamp(3, 40);
        // About one edit every 2 ARM seconds: spread over the convergence.
        let interval = Duration::from_secs_f64(2.0 / args.clock_scale);
        tasks.push(tokio::spawn(foreign_writer(
            s.mock.base_url.clone(),
            s.all_nsgs.iter().cloned().collect(),
            edits,
            interval,
            stop.clone(),
            shared.counters.clone(),
            shared.by_sub.clone(),
            shared.added.clone(),
            phase * 100_000,
        )));
    }
    Chaos { stop, tasks }
}

async fn stop_chaos(c: Chaos) {
    c.stop.store(true, Ordering::Relaxed);
    for t in c.tasks {
        let _ = t.await;
    }
}

fn phase_start(s: &Setup) -> (HashMap<String, usize>, Instant) {
    let hist = history_lengths(&s.mock.state, &s.parents);
    s.mock.state.reset_stats();
    if let Ok(mut mark) = s.cpu_mark.lock() {
        *mark = cpu_secs();
    }
    (hist, Instant::now())
}

fn phase_end(s: &Setup, shared: &ChaosShared, hist: &HashMap<String, usize>) -> Phase {
    // CPU and memory first: the bookkeeping below is the bench's, not the phase's.
    let (total, mock) = cpu_secs();
    let (total0, mock0) = s.cpu_mark.lock().map(|m| *m).unwrap_or((total, mock));
    let (rss_end, hwm_end) = (rss_mib(), peak_rss_mib());
    let mut p = collect_phase(
        &s.mock.state,
        &shared.counters,
        hist,
        &s.parents,
        &shared.by_sub,
    );
    p.cpu_mock = (mock - mock0).max(0.0);
    p.cpu_client = ((total - total0) - p.cpu_mock).max(0.0);
    p.rss_end = rss_end;
    p.hwm_end = hwm_end;
    p.nrp_limits = s.nrp_limits;
    p
}

/// What `--trace` records of a batch phase.
#[derive(Debug, Clone)]
enum Mark {
    PlanStart,
    PlanEnd,
    ApplyStart,
    ApplyEnd,
    /// Controller driver: the last reconcile of the phase ended.
    ReconcilesEnd,
    Start(String),
    Done(String),
    Replan,
}

/// `--trace` with the controller driver: the pipeline as the controller's engine, its plans
/// and applies marked on a timeline.
struct TracedEngine {
    pipeline: Pipeline,
    timeline: Arc<Timeline>,
}

impl Engine for TracedEngine {
    fn plan<'a>(
        &'a self,
        specs: &'a [Arc<AseConnectivity>],
        scope: &'a Scope,
    ) -> futures::future::BoxFuture<
        'a,
        Result<asenet::pipeline::PlanOutcome, asenet::pipeline::PipelineError>,
    > {
        async move {
            self.timeline.mark(Mark::PlanStart);
            let planned = self.pipeline.plan(specs, scope).await;
            self.timeline.mark(Mark::PlanEnd);
            planned
        }
        .boxed()
    }

    fn apply<'a>(
        &'a self,
        specs: &'a [Arc<AseConnectivity>],
        scope: &'a Scope,
        snapshot: &'a Snapshot,
        plan: &'a Plan,
    ) -> futures::future::BoxFuture<
        'a,
        Result<asenet::pipeline::ApplyReport, asenet::pipeline::PipelineError>,
    > {
        async move {
            self.timeline.mark(Mark::ApplyStart);
            let progress = |e: asenet::pipeline::ApplyEvent| self.timeline.on_event(&e);
            let applied = self
                .pipeline
                .apply_plan(
                    specs,
                    scope,
                    std::borrow::Cow::Borrowed(snapshot),
                    plan,
                    &progress,
                )
                .await;
            self.timeline.mark(Mark::ApplyEnd);
            applied
        }
        .boxed()
    }
}

/// `--trace`: timestamped marks of one phase.
#[derive(Default)]
struct Timeline {
    marks: Mutex<Vec<(Instant, Mark)>>,
}

impl Timeline {
    fn mark(&self, m: Mark) {
        self.mark_at(Instant::now(), m);
    }

    fn mark_at(&self, at: Instant, m: Mark) {
        if let Ok(mut v) = self.marks.lock() {
            v.push((at, m));
        }
    }

    fn clear(&self) {
        if let Ok(mut v) = self.marks.lock() {
            v.clear();
        }
    }

    fn on_event(&self, e: &asenet::pipeline::ApplyEvent) {
        use asenet::pipeline::ApplyEvent as E;
        match e {
            E::Started { id, .. } => self.mark(Mark::Start(id.to_string())),
            E::Done { id, .. } => self.mark(Mark::Done(id.to_string())),
            E::Replanning { .. } => self.mark(Mark::Replan),
            _ => {}
        }
    }

    /// Prints the timeline (ARM seconds from `t0`) to stderr.
    fn print(&self, name: &str, t0: Instant, scale: f64) {
        let marks = self.marks.lock().map(|m| m.clone()).unwrap_or_default();
        let at = |t: Instant| t.saturating_duration_since(t0).as_secs_f64() * scale;
        eprintln!("  trace {name}:");
        for (t, m) in &marks {
            match m {
                Mark::PlanStart => eprintln!("    {:7.1} plan start", at(*t)),
                Mark::PlanEnd => eprintln!("    {:7.1} plan end", at(*t)),
                Mark::ApplyStart => eprintln!("    {:7.1} apply start", at(*t)),
                Mark::ApplyEnd => eprintln!("    {:7.1} apply end", at(*t)),
                Mark::ReconcilesEnd => eprintln!("    {:7.1} last reconcile end", at(*t)),
                _ => {}
            }
        }
        let kind = |id: &str| {
            let l = id.to_ascii_lowercase();
            if l.contains("/subnets/") {
                "subnet"
            } else if l.contains("/routetables/") {
                "rt"
            } else {
                "nsg"
            }
        };
        // Writes: start -> done (the last start of an id, after a re-plan).
        let mut open: HashMap<String, f64> = HashMap::new();
        let mut writes: Vec<(String, f64, f64)> = Vec::new();
        let mut replans = 0;
        for (t, m) in &marks {
            match m {
                Mark::Start(id) => {
                    open.insert(id.clone(), at(*t));
                }
                Mark::Done(id) => {
                    if let Some(s) = open.remove(id) {
                        writes.push((id.clone(), s, at(*t)));
                    }
                }
                Mark::Replan => replans += 1,
                _ => {}
            }
        }
        eprintln!(
            "    writes done {}, unfinished {}, replans {replans}",
            writes.len(),
            open.len()
        );
        for k in ["nsg", "rt", "subnet"] {
            let mut w: Vec<&(String, f64, f64)> =
                writes.iter().filter(|(id, _, _)| kind(id) == k).collect();
            if w.is_empty() {
                continue;
            }
            w.sort_by(|a, b| a.1.total_cmp(&b.1));
            let mut lat: Vec<f64> = w.iter().map(|(_, s, e)| e - s).collect();
            lat.sort_by(f64::total_cmp);
            let mean = lat.iter().sum::<f64>() / lat.len() as f64;
            let last_done = w.iter().map(|x| x.2).fold(0.0, f64::max);
            eprintln!(
                "    {k:6} n={:5} first start {:6.1} last start {:6.1} last done {:6.1} latency mean {:.2} p50 {:.2} p90 {:.2} max {:.2}",
                w.len(),
                w[0].1,
                w[w.len() - 1].1,
                last_done,
                mean,
                lat[lat.len() / 2],
                lat[lat.len() * 9 / 10],
                lat[lat.len() - 1]
            );
        }
        // Per 10 ARM s: writes started and the mean in flight.
        let end = writes.iter().map(|x| x.2).fold(0.0, f64::max);
        let mut line = String::new();
        let mut b = 0.0;
        while b < end {
            let started = writes.iter().filter(|x| x.1 >= b && x.1 < b + 10.0).count();
            let busy: f64 = writes
                .iter()
                .map(|x| (x.2.min(b + 10.0) - x.1.max(b)).max(0.0))
                .sum::<f64>()
                / 10.0;
            line.push_str(&format!(" [{b:.0}: {started} st, {busy:.0} fl]"));
            b += 10.0;
        }
        eprintln!("    per 10 s:{line}");
        // Subnet chains per VNet.
        let mut chains: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for (id, s, e) in &writes {
            if kind(id) == "subnet" {
                let vnet = id.rsplit_once("/subnets/").map(|x| x.0).unwrap_or(id);
                let short = vnet.rsplit('/').next().unwrap_or(vnet).to_string();
                chains.entry(short).or_default().push((*s, *e));
            }
        }
        for (vnet, mut c) in chains {
            c.sort_by(|a, b| a.0.total_cmp(&b.0));
            let busy: f64 = c.iter().map(|(s, e)| e - s).sum();
            let span = c[c.len() - 1].1 - c[0].0;
            eprintln!(
                "    vnet {vnet}: {} subnet writes, {:.1}..{:.1} (span {span:.1}, busy {busy:.1}, mean {:.2})",
                c.len(),
                c[0].0,
                c[c.len() - 1].1,
                busy / c.len() as f64
            );
        }
    }
}

/// The CLI path: plan every spec, apply, until an apply completes (or the budget ends).
/// Returns (converged, end instant, rounds, last error).
async fn batch_converge(
    pipeline: &Pipeline,
    specs: &[AseConnectivity],
    budget: Duration,
    only_plan: bool,
    trace: Option<&Timeline>,
) -> (bool, Instant, u64, String) {
    let scope = asenet::pipeline::scope_of(specs);
    let started = Instant::now();
    let mut rounds = 0;
    let mut last_error = String::new();
    let mark = |m: Mark| {
        if let Some(t) = trace {
            t.mark(m);
        }
    };
    while started.elapsed() < budget && rounds < 20 {
        rounds += 1;
        mark(Mark::PlanStart);
        let outcome = match pipeline.plan(specs, &scope).await {
            Ok(o) => o,
            Err(e) => {
                last_error = e.to_string();
                continue;
            }
        };
        mark(Mark::PlanEnd);
        if only_plan || !outcome.plan.has_changes() {
            return (
                !outcome.plan.has_changes(),
                Instant::now(),
                rounds,
                last_error,
            );
        }
        mark(Mark::ApplyStart);
        let progress = |e: asenet::pipeline::ApplyEvent| {
            if let Some(t) = trace {
                t.on_event(&e);
            }
        };
        let applied = pipeline.apply(specs, &scope, outcome, &progress).await;
        mark(Mark::ApplyEnd);
        match applied {
            Ok(_) => return (true, Instant::now(), rounds, last_error),
            Err(e) => last_error = e.to_string(),
        }
    }
    (false, Instant::now(), rounds, last_error)
}

/// Whether Azure now matches `specs` (a plan with no changes). Not counted in any phase.
async fn verify(s: &Setup, specs: &[AseConnectivity]) -> bool {
    let scope = asenet::pipeline::scope_of(specs);
    match s.pipeline.plan(specs, &scope).await {
        Ok(o) => !o.plan.has_changes(),
        Err(e) => {
            eprintln!("    verification plan failed: {e}");
            false
        }
    }
}

async fn run_batch(
    args: &Args,
    s: &Setup,
    shared: &ChaosShared,
) -> anyhow::Result<(Phase, Phase, Phase, bool)> {
    let scale = args.clock_scale;
    let refill = quiet_between_phases(args);
    let budget = args.phase_budget;

    // 1. Converge.
    let (hist, t0) = phase_start(s);
    let chaos = start_chaos(args, s, shared, 1, true);
    let tl = Timeline::default();
    let trace = args.trace.then_some(&tl);
    let (ok1, end1, rounds1, err1) =
        batch_converge(&s.pipeline, &s.fleet.specs, budget, false, trace).await;
    stop_chaos(chaos).await;
    if args.trace {
        tl.print("converge", t0, scale);
    }
    let mut p1 = phase_end(s, shared, &hist);
    p1.arm_secs = (end1 - t0).as_secs_f64() * scale;
    p1.converged = ok1;
    p1.reconciles = rounds1;
    p1.changed_parents = s.exp.first.changed().count();
    p1.note = err1;
    tokio::time::sleep(refill).await;

    // 2. Resync: one plan of the converged fleet.
    let (hist, t0) = phase_start(s);
    let tl = Timeline::default();
    let trace = args.trace.then_some(&tl);
    let (ok2, end2, rounds2, err2) =
        batch_converge(&s.pipeline, &s.fleet.specs, budget, true, trace).await;
    if args.trace {
        tl.print("resync", t0, scale);
    }
    let mut p2 = phase_end(s, shared, &hist);
    p2.arm_secs = (end2 - t0).as_secs_f64() * scale;
    p2.converged = ok2;
    p2.reconciles = rounds2;
    p2.note = err2;
    tokio::time::sleep(refill).await;

    // 3. 5 % of the specs change.
    let (hist, t0) = phase_start(s);
    let chaos = start_chaos(args, s, shared, 3, true);
    let tl = Timeline::default();
    let trace = args.trace.then_some(&tl);
    let (ok3, end3, rounds3, err3) =
        batch_converge(&s.pipeline, &s.changed_list, budget, false, trace).await;
    stop_chaos(chaos).await;
    if args.trace {
        tl.print("5 % change", t0, scale);
    }
    let mut p3 = phase_end(s, shared, &hist);
    p3.arm_secs = (end3 - t0).as_secs_f64() * scale;
    p3.reconciles = rounds3;
    p3.changed_parents = s.expected_change.changed().count();
    p3.note = err3;
    tokio::time::sleep(refill).await;
    p3.converged = ok3 && verify(s, &s.changed_list).await;
    let converged = p3.converged;
    Ok((p1, p2, p3, converged))
}

/// The controller path. Returns the three phases and whether the fleet ended converged.
async fn run_controller(
    args: &Args,
    s: &Setup,
    shared: &ChaosShared,
    generation_predicate: bool,
) -> anyhow::Result<(Phase, Phase, Phase, bool)> {
    let scale = args.clock_scale;
    let refill = quiet_between_phases(args);
    let budget = args.phase_budget;
    let quiet = Duration::from_millis(500);

    let (watch_tx, watch_rx) = mpsc::unbounded::<watcher::Event<AseConnectivity>>();
    let api = FakeApi::new(watch_tx);
    let (all_tx, all_rx) = mpsc::unbounded::<()>();
    let tracker = Tracker::new();
    let (stop_tx, stop_rx) = futures::channel::oneshot::channel::<()>();
    let timeline = Arc::new(Timeline::default());
    let engine: Arc<dyn Engine> = if args.trace {
        Arc::new(TracedEngine {
            pipeline: s.pipeline.clone(),
            timeline: timeline.clone(),
        })
    } else {
        Arc::new(s.pipeline.clone())
    };
    let trace_phase = |name: &str, t0: Instant, end: Instant| {
        if args.trace {
            timeline.mark_at(end, Mark::ReconcilesEnd);
            timeline.print(name, t0, scale);
            timeline.clear();
        }
    };
    let (reader, writer) = reflector::store::<AseConnectivity>();
    let stores = Stores::new(vec![reader.clone()]).versioned();
    let ctx = Context::new(
        api.client(),
        stores.clone(),
        engine,
        Metrics::new(),
        Leadership::always(),
        Settings {
            // Resyncs are triggered by the benchmark, not by the clock.
            resync: Duration::from_secs(86_400),
            // As the binary reads it (`--plan-part-specs`), so that one bench binary
            // measures both ways of planning a large component.
            plan_part_specs: std::env::var("ASENET_PLAN_PART_SPECS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(controller::context::DEFAULT_PLAN_PART_SPECS),
            ..Settings::default()
        },
        Some("fleet-bench".into()),
    );
    let (deps_tx, deps_rx) = mpsc::unbounded::<ObjectRef<AseConnectivity>>();
    // As `controller::run`: objects shrunk before the store (`store::for_store`); a change of
    // a spec wakes the spec and its dependents, a change of its status alone wakes nobody
    // (`controller::spec_changes`). The `controller-generation` driver filters with kube's
    // generation predicate instead (the candidate measured before `spec_changes` existed).
    let versioned = stores.clone();
    let touched = reflector::reflector(
        writer,
        watch_rx
            .map(Ok::<_, watcher::Error>)
            .modify(controller::store::for_store),
    )
    // As `controller::run`: the stores' version bumped after each applied event, with the
    // key it stored.
    .inspect(move |event| {
        if let Ok(event) = event {
            versioned.applied_event(event);
        }
    })
    .touched_objects();
    let touched = if generation_predicate {
        touched
            .predicate_filter(predicates::generation, Default::default())
            .boxed()
    } else {
        controller::spec_changes(touched).boxed()
    };
    let trigger = touched.inspect(move |event| {
        if let Ok(changed) = event {
            for dependent in index::dependent_refs(changed, &stores.all()) {
                let _ = deps_tx.unbounded_send(dependent);
            }
        }
    });
    let t1 = tracker.clone();
    let t2 = tracker.clone();
    let outcomes = ctx.clone();
    let controller_fut = Controller::for_stream(trigger, reader)
        .with_config(ControllerConfig::default().concurrency(args.concurrency))
        .reconcile_on(deps_rx)
        .reconcile_all_on(all_rx)
        .graceful_shutdown_on(async move {
            let _ = stop_rx.await;
        })
        .run(
            move |obj: Arc<AseConnectivity>, ctx: Arc<Context>| {
                let t = t1.clone();
                t.in_flight.fetch_add(1, Ordering::SeqCst);
                t.started.fetch_add(1, Ordering::SeqCst);
                async move {
                    let key = (
                        obj.metadata.namespace.clone().unwrap_or_default(),
                        obj.metadata.name.clone().unwrap_or_default(),
                    );
                    let result = controller::reconcile(obj, ctx).await;
                    if result.is_ok() {
                        if let Ok(mut b) = t.backing_off.lock() {
                            b.remove(&key);
                        }
                    } else if let Err(e) = &result {
                        let seen = t.errors.fetch_add(1, Ordering::SeqCst);
                        if std::env::var_os("FLEET_DEBUG").is_some() && seen < 5 {
                            eprintln!("    reconcile failed: {e:?}");
                        }
                    }
                    if let Ok(mut l) = t.last_end.lock() {
                        *l = Instant::now();
                    }
                    t.in_flight.fetch_sub(1, Ordering::SeqCst);
                    result
                }
            },
            move |obj: Arc<AseConnectivity>, error: &controller::Error, ctx: Arc<Context>| {
                let key = (
                    obj.metadata.namespace.clone().unwrap_or_default(),
                    obj.metadata.name.clone().unwrap_or_default(),
                );
                if error.policy() == controller::reconcile::Policy::Backoff {
                    if let Ok(mut b) = t2.backing_off.lock() {
                        b.insert(key);
                    }
                }
                controller::error_policy(obj, error, ctx)
            },
            ctx,
        )
        .for_each(|_| async {});

    let progress = |label: &str, t0: Instant| {
        let st = s.mock.state.stats();
        eprintln!(
            "    [{label}] {:.0} ARM s: {} reconciles ({} in flight, {} failed), {} GET, {} PUT, {} x 429",
            t0.elapsed().as_secs_f64() * scale,
            tracker.started.load(Ordering::SeqCst),
            tracker.in_flight.load(Ordering::SeqCst),
            tracker.errors.load(Ordering::SeqCst),
            st.reads(),
            st.writes(),
            st.throttled()
        );
    };

    let driver = async {
        let counts = |t: &Tracker| {
            (
                t.started.load(Ordering::SeqCst),
                t.errors.load(Ordering::SeqCst),
            )
        };
        // 1. Converge: the initial list arrives.
        let (hist, t0) = phase_start(s);
        let (r0, e0) = counts(&tracker);
        let chaos = start_chaos(args, s, shared, 1, true);
        api.init(&s.fleet.specs);
        let (end, ok1) = wait_idle(&tracker, t0, budget, quiet, || progress("converge", t0)).await;
        stop_chaos(chaos).await;
        let mut p1 = phase_end(s, shared, &hist);
        p1.arm_secs = (end - t0).as_secs_f64() * scale;
        p1.converged = ok1;
        trace_phase("converge", t0, end);
        let (r1, e1) = counts(&tracker);
        p1.reconciles = r1 - r0;
        p1.reconcile_errors = e1 - e0;
        p1.changed_parents = s.exp.first.changed().count();
        if !ok1 {
            p1.note = format!("budget of {}s real reached", budget.as_secs());
        }
        tokio::time::sleep(refill).await;

        // 2. Resync of the converged fleet: every spec reconciles once, its component's
        // cached outcome forgotten, so the resync is a full re-plan (what the controller's
        // resync does when Azure changed; one that finds Azure unchanged keeps the
        // outcome by its digest and plans nothing).
        let (hist, t0) = phase_start(s);
        outcomes.outcomes.clear();
        let _ = all_tx.unbounded_send(());
        let (end, ok2) = wait_idle(&tracker, t0, budget, quiet, || progress("resync", t0)).await;
        let mut p2 = phase_end(s, shared, &hist);
        p2.arm_secs = (end - t0).as_secs_f64() * scale;
        p2.converged = ok2 && p2.writes == 0;
        trace_phase("resync", t0, end);
        let (r2, e2) = counts(&tracker);
        p2.reconciles = r2 - r1;
        p2.reconcile_errors = e2 - e1;
        if !ok2 {
            p2.note = format!("budget of {}s real reached", budget.as_secs());
        }
        tokio::time::sleep(refill).await;

        // 3. 5 % of the specs change (kubectl apply).
        let (hist, t0) = phase_start(s);
        let chaos = start_chaos(args, s, shared, 3, true);
        api.edit(&s.changed_only);
        let (end, ok3) = wait_idle(&tracker, t0, budget, quiet, || progress("change", t0)).await;
        stop_chaos(chaos).await;
        let mut p3 = phase_end(s, shared, &hist);
        p3.arm_secs = (end - t0).as_secs_f64() * scale;
        trace_phase("5 % change", t0, end);
        let (r3, e3) = counts(&tracker);
        p3.reconciles = r3 - r2;
        p3.reconcile_errors = e3 - e2;
        p3.changed_parents = s.expected_change.changed().count();
        if !ok3 {
            p3.note = format!("budget of {}s real reached", budget.as_secs());
        }
        let _ = stop_tx.send(());
        tokio::time::sleep(refill).await;
        p3.converged = ok3 && verify(s, &s.changed_list).await;
        let converged = p3.converged;
        (p1, p2, p3, converged)
    };
    // The driver ends the run; a controller still busy (budget reached) is dropped with it.
    let controller_fut = controller_fut.boxed_local();
    let driver = driver.boxed_local();
    let outcome = match futures::future::select(driver, controller_fut).await {
        futures::future::Either::Left((result, _)) => Ok(result),
        // The controller stops when told to (end of the last phase); the driver then only
        // verifies.
        futures::future::Either::Right((_, driver)) => Ok(driver.await),
    };
    outcome
}

async fn run_size(args: &Args, driver: Driver, n: usize) -> anyhow::Result<Row> {
    let s = setup(args, n).await?;
    let shared = ChaosShared::new();
    let (converge, resync, change, converged) = match driver {
        Driver::Batch => run_batch(args, &s, &shared).await?,
        Driver::Controller => run_controller(args, &s, &shared, false).await?,
        Driver::ControllerGeneration => run_controller(args, &s, &shared, true).await?,
    };
    let chaos = if args.chaos {
        let added = shared.added.lock().map(|a| a.clone()).unwrap_or_default();
        let (lost, total) = foreign_rules_lost(&s.mock.state, &s.seeded, &added);
        let (gaps, checked) = management_gaps(&s.mock.state, &s.fleet);
        Some(ChaosResult {
            foreign_lost: lost,
            foreign_total: total,
            foreign_added: added.len(),
            gaps,
            nsgs_checked: checked,
            faults: converge.faults + change.faults,
            converged,
        })
    } else {
        None
    };
    let row = Row {
        driver,
        n,
        subscriptions: s.fleet.subscriptions,
        touched: s.exp.touched,
        converge,
        resync,
        change,
        changed_specs: s.changed_only.len(),
        rss_mib: peak_rss_mib(),
        rss_setup: s.rss_setup,
        chaos,
    };
    s.mock.shutdown().await;
    Ok(row)
}

// ---------------------------------------------------------------------------------------
// Output

fn kinds(p: &Phase) -> String {
    let short = |k: &str| {
        match k {
            "networkSecurityGroups" => "nsg",
            "routeTables" => "rt",
            "virtualNetworks" => "vnet",
            "subnets" => "subnet",
            "operations" => "lro",
            "operationResults" => "lro-result",
            "virtualip" | "capacities" => "ase",
            other => other,
        }
        .to_string()
    };
    p.reads_by_kind
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{} {n}", short(k)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn ratio(time: f64, floor: f64) -> String {
    if floor > 0.0 {
        format!("{:.2}", time / floor)
    } else {
        "n/a (floor 0)".into()
    }
}

fn chain_text(p: &Phase) -> String {
    let c = &p.chain;
    if c.len() == 0 {
        if p.writes > 0 {
            "1 (no subnet write)"
        } else {
            "0"
        }
        .into()
    } else if c.predecessor {
        format!("{} + 1 ({})", c.subnet_writes, c.vnet)
    } else {
        format!("{} ({})", c.subnet_writes, c.vnet)
    }
}

fn per_parent(writes: u64, parents: usize) -> String {
    if parents == 0 {
        "n/a".into()
    } else {
        format!("{:.2}", writes as f64 / parents as f64)
    }
}

fn print_rows(args: &Args, rows: &[Row]) {
    println!();
    println!(
        "asenet fleet benchmark: clock scale {}, ARM client attempts {}, concurrency {}, up to {} subscriptions, operations {} ARM s (Retry-After {}), NRP limits {}{}",
        args.clock_scale,
        args.max_attempts,
        args.concurrency,
        args.subscriptions,
        args.lro_secs,
        args.lro_secs,
        if args.nrp_limits {
            "on (1,000 writes/deletes, 10,000 reads per 5 min per subscription)"
        } else {
            "off"
        },
        if args.chaos { ", CHAOS" } else { "" }
    );
    if args.nrp_limits && !args.pacing {
        println!("client-side pacing under NRP's window: off (--no-pacing)");
    }
    println!();
    println!("Convergence from the seeded state (time on the ARM clock). Honest floor = the larger of the bucket floor (the busiest subscription's max(0, writes_s - 200) / 10 s, and with NRP limits on floor((writes_s - 1) / 1000) * 300 s, domain.md 4.8) and the chain floor (the longest chain of serialised writes: one VNet's subnet writes, plus their NSG/route-table predecessor when every one waits for it, times the operation time). 'single bucket' = all writes over one bucket: NOT a floor with several subscriptions, shown for comparison with earlier figures only:");
    println!();
    println!("| driver | specs | subs | touched parents | changed parents | ARM reads | writes | 412s | 429s | writes / changed parent | time (ARM s) | bucket floor (s) | longest chain (writes, VNet) | chain floor (s) | **honest floor (s)** | **time / honest floor** | single bucket (s, not a floor) | reconciles (failed) | converged | peak RSS (MiB) |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |");
    for r in rows {
        let p = &r.converge;
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {:.1} | {} | {:.1} | {:.1} | {} | {:.1} | {} ({}) | {} | {:.0} |",
            r.driver.name(),
            r.n,
            r.subscriptions,
            r.touched,
            p.changed_parents,
            p.reads,
            p.writes,
            p.precondition_failed,
            p.throttled,
            per_parent(p.writes, p.changed_parents),
            p.arm_secs,
            p.floor_per_sub(),
            chain_text(p),
            p.floor_chain(),
            p.floor(),
            ratio(p.arm_secs, p.floor()),
            p.single_bucket_figure(),
            p.reconciles,
            p.reconcile_errors,
            if p.converged { "yes" } else { "NO" },
            r.rss_mib
        );
    }
    println!();
    println!(
        "Steady state (one resync of the converged fleet) and the 5 % change (floors as above):"
    );
    println!();
    println!("| driver | specs | resync reads | resync reads / touched parent | resync writes | resync time (ARM s) | resync reconciles | changed specs | changed parents | writes | writes / changed parent | 429s | time (ARM s) | bucket floor (s) | longest chain | chain floor (s) | honest floor (s) | time / honest floor | converged |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | --- |");
    for r in rows {
        let (q, c) = (&r.resync, &r.change);
        println!(
            "| {} | {} | {} | {} | {} | {:.1} | {} | {} | {} | {} | {} | {} | {:.1} | {:.1} | {} | {:.1} | {:.1} | {} | {} |",
            r.driver.name(),
            r.n,
            q.reads,
            per_parent(q.reads, r.touched),
            q.writes,
            q.arm_secs,
            q.reconciles,
            r.changed_specs,
            c.changed_parents,
            c.writes,
            per_parent(c.writes, c.changed_parents),
            c.throttled,
            c.arm_secs,
            c.floor_per_sub(),
            chain_text(c),
            c.floor_chain(),
            c.floor(),
            ratio(c.arm_secs, c.floor()),
            if c.converged { "yes" } else { "NO" }
        );
    }
    println!();
    println!("CPU seconds per phase (/proc/self/stat utime+stime; client = every thread but the mock ARM's, i.e. driver, pipeline, controller, kube stand-in; mock = the in-process mock ARM's runtime) and whole-process memory (/proc/self/status, MiB, mock ARM and its write history included; setup = after the fleet, offline plans and seeded mock exist, before the driver starts; RSS = VmRSS at the end of the phase; HWM = VmHWM, the peak so far, reconciles in flight included):");
    println!();
    println!("| driver | specs | converge CPU client / mock (s) | resync CPU client / mock (s) | 5 % change CPU client / mock (s) | RSS setup | RSS after converge / resync / change | HWM after converge / resync / change |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for r in rows {
        let (a, b, c) = (&r.converge, &r.resync, &r.change);
        println!(
            "| {} | {} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} / {:.2} | {:.0} | {:.0} / {:.0} / {:.0} | {:.0} / {:.0} / {:.0} |",
            r.driver.name(),
            r.n,
            a.cpu_client,
            a.cpu_mock,
            b.cpu_client,
            b.cpu_mock,
            c.cpu_client,
            c.cpu_mock,
            r.rss_setup,
            a.rss_end,
            b.rss_end,
            c.rss_end,
            a.hwm_end,
            b.hwm_end,
            c.hwm_end
        );
    }
    println!();
    println!("ARM reads by kind (asenet's only; lro = operation status polls):");
    println!();
    println!("| driver | specs | converge | resync | 5 % change |");
    println!("| --- | ---: | --- | --- | --- |");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} |",
            r.driver.name(),
            r.n,
            kinds(&r.converge),
            kinds(&r.resync),
            kinds(&r.change)
        );
    }
    let notes: Vec<String> = rows
        .iter()
        .flat_map(|r| {
            [
                ("converge", &r.converge),
                ("resync", &r.resync),
                ("change", &r.change),
            ]
            .into_iter()
            .filter(|(_, p)| !p.note.is_empty())
            .map(move |(name, p)| format!("- {} N={} {name}: {}", r.driver.name(), r.n, p.note))
        })
        .collect();
    if !notes.is_empty() {
        println!();
        println!("Notes:");
        for n in notes {
            println!("{n}");
        }
    }
    if args.chaos {
        println!();
        println!("Chaos (5 % of writes failed by injection; a foreign writer edits NSGs during both convergences):");
        println!();
        println!("| driver | specs | faults injected | foreign rules added | foreign rules checked | foreign rules lost | V1/V2 NSGs checked | management gaps | converged |");
        println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
        for r in rows {
            if let Some(c) = &r.chaos {
                println!(
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    r.driver.name(),
                    r.n,
                    c.faults,
                    c.foreign_added,
                    c.foreign_total,
                    c.foreign_lost,
                    c.nsgs_checked,
                    c.gaps,
                    if c.converged { "yes" } else { "NO" }
                );
            }
        }
    }
    println!();
}

fn main() {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => return,
        Err(e) => {
            eprintln!("fleet: {e}");
            std::process::exit(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("fleet: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if args.trace {
        // The pipeline's own timings (validate, observe, resolve + diff), real milliseconds.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "asenet::pipeline=debug,asenet::controller::timing=debug",
            ))
            .with_writer(std::io::stderr)
            .try_init();
    }
    let mut rows = Vec::new();
    for &n in &args.sizes {
        for &driver in &args.drivers {
            eprintln!("fleet: N={n}, driver {}...", driver.name());
            let started = Instant::now();
            match runtime.block_on(run_size(&args, driver, n)) {
                Ok(row) => rows.push(row),
                Err(e) => eprintln!("fleet: N={n} {} failed: {e:#}", driver.name()),
            }
            eprintln!(
                "fleet: N={n}, driver {} took {:.0}s real",
                driver.name(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    print_rows(&args, &rows);
    // Leftover reconciles of a run cut by its budget may still be blocked on a mock that
    // is gone; do not wait for them.
    runtime.shutdown_timeout(Duration::from_secs(1));
}
