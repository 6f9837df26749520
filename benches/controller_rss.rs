//! Memory of the whole controller process (issue 14: "RSS with 10,000 specs, reconciles in
//! flight, ≤ 150 MiB"). The fleet bench runs the controller inside its own process, next to
//! the mock ARM and its bookkeeping, so its RSS says nothing about the controller; this one
//! runs the real `asenet controller` binary as a child process and reads the child's
//! `/proc/<pid>/status`.
//!
//! `cargo bench --bench controller_rss -- [--sizes 100,1000,10000] [--subscriptions 3]
//! [--clock-scale 20] [--budget SECS] [--resync SECS] [--lro-secs S]
//! [--max-concurrent-reconciles K] [--controller PATH] [--purge-delay MS|inherit]
//! [--allow-thp 0|1|inherit]`
//!
//! `--purge-delay` sets the child's `MIMALLOC_PURGE_DELAY`: `0` by default, as the image
//! (Dockerfile) and the chart (`controller.allocatorPurgeDelayMs`) run the operator;
//! `inherit` leaves this process's environment (mimalloc 3's own default is 1000 ms).
//! `--allow-thp` likewise sets `MIMALLOC_ALLOW_THP`: `0` (no transparent huge pages) by
//! default, as the image and the chart (`controller.allocatorHugePages: false`) do;
//! mimalloc's own default is 1.
//!
//! `ASENET_BENCH_PRINT_REPATCH=1` in the environment: the fake API server prints, on
//! stderr, each status patched a second time (before and after, without `rules`).
//!
//! `--controller PATH` runs another build of the binary (one built from another commit, or
//! a wrapper script that `exec`s it under a profiler); default: the `asenet` Cargo built
//! for this bench, with the bench (release) profile.
//!
//! Per size N, in this process: the fleet of benches/support/fleet_world.rs seeds a mock ARM
//! (127.0.0.1, its own runtime) with ARM's throttling buckets, NRP's operation timing
//! (`Retry-After: 10`, 10 ARM s per long-running operation; `--lro-secs`) and the clock
//! running `--clock-scale` times faster (the mock divides its `Retry-After` values and
//! delays by it, so the binary's unscaled client follows them at that speed). NRP's
//! per-5-minute limits are off: this bench measures memory, not the convergence time at
//! NRP's limits (benches/fleet.rs does). A fake Kubernetes API server
//! (support/kube_http.rs) holds the N specs, with the finalizer already on them, and records
//! the statuses the controller writes.
//!
//! The child: `asenet controller --endpoint <mock> --credential static --token fleet
//! --leader-election false --metrics-bind 127.0.0.1:<port> --service-tags <file>
//! --resync-seconds <resync> --nrp-write-limit 0` (no client-side pacing: the mock has no
//! NRP window here), `KUBECONFIG` pointing at the fake API server, its log in a
//! temporary file. Every 100 ms: VmRSS and VmHWM of `/proc/<pid>/status`, and `/metrics`
//! (reconciles in flight = `asenet_reconciles_total` summed over modes − the reconciles the
//! duration histogram observed, `asenet_reconcile_duration_seconds_count`: the counter is
//! taken at the start of a reconcile of the leader, the histogram at its end).
//!
//! Phases: (a) startup until `/readyz` answers 200 (the watch delivered the initial list of
//! N specs); (b) converge until every spec's status has `Ready=True`, or `--budget` real
//! seconds; (c) steady state for 1.25 × `--resync` + 5 s, so every spec is resynced at
//! least once (re-observed in Azure, nothing written). Then SIGTERM, and the time the child
//! takes to exit.
//!
//! The binary's own timers are real time and not scaled: the resync, the error backoff of
//! `error_policy` (5 s doubling) and the client's retry delays without a `Retry-After`. A
//! run without errors waits on none of them. Its pacing of writes on NRP's window (1,000
//! writes per subscription per 5 real minutes by default) is turned off with
//! `--nrp-write-limit 0`.

// Only `fleet()` of it is used here.
#[allow(dead_code)]
#[path = "support/fleet_world.rs"]
mod fleet_world;
#[path = "support/kube_http.rs"]
mod kube_http;
#[allow(dead_code)]
#[path = "support/specgen.rs"]
mod specgen;

use std::fmt::Write as _;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use asenet::snapshot::Snapshot;
use kube_http::FakeApiServer;
use mock_arm::MockState;

/// The child binary, built by Cargo for benches of this package (with the bench profile).
const ASENET: &str = env!("CARGO_BIN_EXE_asenet");
/// Issue 14's limit for the whole process.
const LIMIT_MIB: f64 = 150.0;
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// How long phase (a) may take at most (the initial list of N specs).
const STARTUP_BUDGET: Duration = Duration::from_secs(120);
/// SIGTERM to exit: the binary's default `--shutdown-timeout` is 20 s.
const EXIT_BUDGET: Duration = Duration::from_secs(30);
/// `/proc/<pid>/stat` counts CPU time in clock ticks; Linux's USER_HZ is 100.
const TICKS_PER_SEC: f64 = 100.0;

// ---------------------------------------------------------------------------------------
// Arguments

#[derive(Debug, Clone)]
struct Args {
    sizes: Vec<usize>,
    subscriptions: usize,
    clock_scale: f64,
    /// Real seconds phase (b) may take.
    budget: Duration,
    /// `--resync-seconds` of the child.
    resync: u64,
    /// ARM seconds each long-running operation takes and its `Retry-After` (NRP: 10).
    lro_secs: f64,
    /// `--max-concurrent-reconciles` of the child; `None`: the binary's default.
    max_concurrent: Option<u16>,
    /// The binary to run (`--controller PATH`, e.g. one built from another commit);
    /// default: the one Cargo built for this bench.
    controller: String,
    /// `MIMALLOC_PURGE_DELAY` of the child (`--purge-delay MS`); default `0`, what the
    /// image (Dockerfile) and the chart (`controller.allocatorPurgeDelayMs`) set;
    /// `--purge-delay inherit`: this process's environment (mimalloc 3's default, 1000 ms,
    /// when unset).
    purge_delay: Option<String>,
    /// `MIMALLOC_ALLOW_THP` of the child (`--allow-thp 0|1`); default `0`, what the image and
    /// the chart set; `--allow-thp inherit`: this process's environment.
    allow_thp: Option<String>,
}

/// How the report shows a variable the child gets: the value the bench sets, or the one it
/// inherits.
fn child_env(name: &str, set: &Option<String>) -> String {
    match set {
        Some(v) => format!("`{v}`"),
        None => format!(
            "inherited: {}",
            std::env::var(name).unwrap_or_else(|_| "unset".into())
        ),
    }
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut args = Args {
        sizes: vec![100],
        subscriptions: 3,
        clock_scale: 20.0,
        budget: Duration::from_secs(600),
        resync: 30,
        lro_secs: 10.0,
        max_concurrent: None,
        controller: ASENET.to_string(),
        purge_delay: Some("0".into()),
        allow_thp: Some("0".into()),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        fn number<T: std::str::FromStr>(name: &str, v: String) -> Result<T, String>
        where
            T::Err: std::fmt::Display,
        {
            v.parse().map_err(|e| format!("{name} `{v}`: {e}"))
        }
        match a.as_str() {
            "--bench" => {}
            "--sizes" => {
                args.sizes = value("--sizes")?
                    .split(',')
                    .map(|s| number("--sizes", s.trim().to_string()))
                    .collect::<Result<_, _>>()?
            }
            "--subscriptions" => args.subscriptions = number(&a, value(&a)?)?,
            "--clock-scale" => args.clock_scale = number(&a, value(&a)?)?,
            "--budget" => args.budget = Duration::from_secs(number(&a, value(&a)?)?),
            "--resync" => args.resync = number(&a, value(&a)?)?,
            "--lro-secs" => args.lro_secs = number(&a, value(&a)?)?,
            "--max-concurrent-reconciles" => args.max_concurrent = Some(number(&a, value(&a)?)?),
            "--controller" => args.controller = value(&a)?,
            "--purge-delay" => {
                let v = value(&a)?;
                args.purge_delay = if v == "inherit" {
                    None
                } else {
                    Some(number::<i64>(&a, v)?.to_string())
                };
            }
            "--allow-thp" => {
                let v = value(&a)?;
                args.allow_thp = match v.as_str() {
                    "inherit" => None,
                    "0" | "1" => Some(v),
                    _ => return Err(format!("--allow-thp `{v}`: expected 0, 1 or inherit")),
                };
            }
            // `cargo bench` passes a filter; another bench's name means "not us".
            other if !other.starts_with("--") && other != "controller_rss" => return Ok(None),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if !(args.clock_scale.is_finite() && args.clock_scale > 0.0) {
        return Err("--clock-scale must be positive".into());
    }
    if !(args.lro_secs.is_finite() && args.lro_secs >= 0.0) {
        return Err("--lro-secs must be a number of seconds >= 0".into());
    }
    args.resync = args.resync.max(1);
    Ok(Some(args))
}

// ---------------------------------------------------------------------------------------
// Samples of the child

/// One look at the child.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    rss_kib: u64,
    hwm_kib: u64,
    /// The parts of `VmRSS`: heap and stacks, and the mapped binary and libraries.
    anon_kib: u64,
    file_kib: u64,
    threads: u64,
    cpu_secs: f64,
    /// From `/metrics`; `None` when it did not answer.
    reconciles: Option<u64>,
    in_flight: Option<u64>,
    /// `asenet_component_plans_total`: components resolved and diffed, and components kept
    /// unchanged (Azure held what their outcome was planned from).
    plans: Option<Plans>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Plans {
    planned: u64,
    unchanged: u64,
}

/// `VmRSS`, `VmHWM`, `RssAnon`, `RssFile` (KiB) and `Threads` of `/proc/<pid>/status`.
fn proc_memory(pid: u32) -> Option<[u64; 5]> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some([
        field("VmRSS:")?,
        field("VmHWM:")?,
        field("RssAnon:")?,
        field("RssFile:")?,
        field("Threads:")?,
    ])
}

/// utime + stime of `/proc/<pid>/stat`, in seconds.
fn proc_cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it start with the state (field 3),
    // so utime (14) and stime (15) are the 12th and 13th after the closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    Some((ticks(11)? + ticks(12)?) as f64 / TICKS_PER_SEC)
}

/// `(reconciles started, reconciles in flight, component plans)` from the exposition text.
fn reconcile_counts(metrics: &str) -> Option<(u64, u64, Plans)> {
    let mut started = None::<u64>;
    let mut finished = None::<u64>;
    let mut plans = Plans::default();
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        let mut parts = line.split_whitespace();
        let (Some(name), Some(value)) = (parts.next(), parts.next()) else {
            continue;
        };
        let value = value.parse::<f64>().ok()? as u64;
        if name.starts_with("asenet_reconciles_total") {
            *started.get_or_insert(0) += value;
        } else if name == "asenet_reconcile_duration_seconds_count" {
            finished = Some(value);
        } else if name.starts_with("asenet_component_plans_total") {
            if name.contains("\"unchanged\"") {
                plans.unchanged += value;
            } else {
                plans.planned += value;
            }
        }
    }
    let started = started.unwrap_or(0);
    Some((
        started,
        started.saturating_sub(finished.unwrap_or(0)),
        plans,
    ))
}

struct Probe {
    pid: u32,
    http: reqwest::Client,
    base: String,
}

impl Probe {
    async fn sample(&self) -> Sample {
        let [rss_kib, hwm_kib, anon_kib, file_kib, threads] =
            proc_memory(self.pid).unwrap_or_default();
        let counts = match self.get("/metrics").await {
            Some((200, text)) => reconcile_counts(&text),
            _ => None,
        };
        Sample {
            rss_kib,
            hwm_kib,
            anon_kib,
            file_kib,
            threads,
            cpu_secs: proc_cpu_secs(self.pid).unwrap_or_default(),
            reconciles: counts.map(|c| c.0),
            in_flight: counts.map(|c| c.1),
            plans: counts.map(|c| c.2),
        }
    }

    async fn get(&self, path: &str) -> Option<(u16, String)> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .timeout(Duration::from_secs(1))
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.ok()?))
    }
}

// ---------------------------------------------------------------------------------------
// Phases

/// When a phase ends.
#[derive(Debug, Clone, Copy)]
enum Until {
    /// `/readyz` answers 200.
    Ready,
    /// Every spec's status says `Ready=True`.
    Converged,
    /// This long after the phase started.
    Elapsed(Duration),
}

/// What one phase measured.
#[derive(Debug, Clone, Default)]
struct Phase {
    name: &'static str,
    /// The phase's condition was met (not cut by its budget).
    done: bool,
    elapsed: Duration,
    peak_rss_kib: u64,
    peak_anon_kib: u64,
    end: Sample,
    max_in_flight: u64,
    reconciles: u64,
    /// Component plans during the phase: (resolved and diffed, kept unchanged).
    plans: (u64, u64),
    status_patches: u64,
    cpu_secs: f64,
    /// Specs `Ready=True` at the end.
    ready: usize,
}

struct Run<'a> {
    probe: Probe,
    child: &'a mut tokio::process::Child,
    api: &'a FakeApiServer,
    last: Sample,
}

impl Run<'_> {
    /// Samples every 100 ms until `until` holds or `budget` passes; fails if the child exits.
    async fn phase(
        &mut self,
        name: &'static str,
        until: Until,
        budget: Duration,
    ) -> anyhow::Result<Phase> {
        let started = Instant::now();
        let first = self.last;
        let patches = || {
            self.api
                .counters()
                .status_patches
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        let patches_at_start = patches();
        let mut p = Phase {
            name,
            ..Phase::default()
        };
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("the controller exited during phase {name}: {status}");
            }
            let s = self.probe.sample().await;
            p.peak_rss_kib = p.peak_rss_kib.max(s.rss_kib);
            p.peak_anon_kib = p.peak_anon_kib.max(s.anon_kib);
            p.max_in_flight = p.max_in_flight.max(s.in_flight.unwrap_or(0));
            self.last = Sample {
                reconciles: s.reconciles.or(self.last.reconciles),
                plans: s.plans.or(self.last.plans),
                ..s
            };
            p.done = match until {
                Until::Ready => matches!(self.probe.get("/readyz").await, Some((200, _))),
                Until::Converged => {
                    let r = self.api.readiness();
                    r.ready == r.specs
                }
                Until::Elapsed(d) => started.elapsed() >= d,
            };
            if p.done || started.elapsed() >= budget {
                break;
            }
        }
        p.elapsed = started.elapsed();
        p.end = self.last;
        p.reconciles = self.last.reconciles.unwrap_or(0) - first.reconciles.unwrap_or(0);
        let (now, before) = (
            self.last.plans.unwrap_or_default(),
            first.plans.unwrap_or_default(),
        );
        p.plans = (
            now.planned - before.planned,
            now.unchanged - before.unchanged,
        );
        p.status_patches = patches() - patches_at_start;
        p.cpu_secs = self.last.cpu_secs - first.cpu_secs;
        p.ready = self.api.readiness().ready;
        Ok(p)
    }
}

/// Everything measured for one size.
struct Row {
    n: usize,
    phases: Vec<Phase>,
    exit: String,
    exit_secs: f64,
    arm_reads: u64,
    arm_writes: u64,
    arm_throttled: u64,
    /// 412 answers: a write whose `If-Match` etag was stale (re-read and re-planned).
    arm_stale: u64,
    kube_lists: u64,
    kube_watches: u64,
    kube_gets: u64,
    kube_events: u64,
    kube_unknown: u64,
    not_ready: std::collections::BTreeMap<String, usize>,
    with_status: usize,
    log_bytes: u64,
}

// ---------------------------------------------------------------------------------------
// One size

fn mock_runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("mock-arm")
            .enable_all()
            .build()
            // No runtime, no benchmark: nothing to recover to.
            .expect("controller_rss: cannot start the mock ARM's runtime")
    })
}

/// The mock ARM seeded with the fleet's snapshot (as benches/fleet.rs `setup` does, minus
/// NRP's limits), on its own runtime.
async fn start_mock(
    args: &Args,
    fleet: &fleet_world::Fleet,
) -> anyhow::Result<mock_arm::RunningMock> {
    let (valid, _) = asenet::validate::validate_all(&fleet.specs);
    let seed =
        asenet::fixture::mock_seed::seed(&fleet.snapshot, &valid).map_err(anyhow::Error::msg)?;
    let mut config = mock_arm::Config {
        clock_scale: args.clock_scale,
        // NRP's timing (domain.md 4.5): the operation takes `Retry-After` seconds.
        lro_delay: Duration::from_secs_f64(args.lro_secs),
        lro_retry_after: Duration::from_secs_f64(args.lro_secs),
        ..mock_arm::Config::default()
    };
    config.throttling.nrp.enabled = false;
    let state = MockState::new(config, seed)?;
    let options = mock_arm::ServeOptions {
        port: 0,
        ..Default::default()
    };
    mock_runtime()
        .spawn(mock_arm::start(state, options))
        .await?
}

/// A free port on 127.0.0.1 for the child's `/metrics` (free when this returns; the child
/// binds it a moment later).
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn spawn_controller(
    args: &Args,
    dir: &Path,
    mock_url: &str,
    metrics_port: u16,
) -> anyhow::Result<tokio::process::Child> {
    let log = std::fs::File::create(dir.join("controller.log"))?;
    let mut command = tokio::process::Command::new(&args.controller);
    command
        .arg("controller")
        .args(["--endpoint", mock_url])
        .args(["--credential", "static", "--token", "fleet"])
        .args(["--leader-election", "false"])
        .args(["--metrics-bind", &format!("127.0.0.1:{metrics_port}")])
        .arg("--service-tags")
        .arg(dir.join("service-tags.json"))
        .args(["--resync-seconds", &args.resync.to_string()])
        // The mock runs without NRP's limits here (this bench measures memory), so there is
        // no window to pace for; a real-time 5-minute window would stall a scaled clock.
        .args(["--nrp-write-limit", "0"]);
    if let Some(k) = args.max_concurrent {
        command.args(["--max-concurrent-reconciles", &k.to_string()]);
    }
    if let Some(ms) = &args.purge_delay {
        command.env("MIMALLOC_PURGE_DELAY", ms);
    }
    if let Some(allow) = &args.allow_thp {
        command.env("MIMALLOC_ALLOW_THP", allow);
    }
    command
        .env("KUBECONFIG", dir.join("kubeconfig"))
        .env("HOSTNAME", "controller-rss")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // A bench that fails half-way leaves no controller behind.
        .kill_on_drop(true);
    Ok(command.spawn()?)
}

/// SIGTERM (the pod's stop), then the time to exit; SIGKILL after `EXIT_BUDGET`.
async fn stop(child: &mut tokio::process::Child) -> anyhow::Result<(String, f64)> {
    let started = Instant::now();
    if let Some(pid) = child.id() {
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
    }
    let status = match tokio::time::timeout(EXIT_BUDGET, child.wait()).await {
        Ok(status) => status?.to_string(),
        Err(_) => {
            child.kill().await?;
            "killed after the exit budget".to_string()
        }
    };
    Ok((status, started.elapsed().as_secs_f64()))
}

async fn run_size(args: &Args, n: usize) -> anyhow::Result<Row> {
    let fleet = fleet_world::fleet(n, args.subscriptions).map_err(anyhow::Error::msg)?;
    let mock = start_mock(args, &fleet).await?;
    let api = FakeApiServer::start(&fleet.specs).await?;
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("kubeconfig"), api.kubeconfig())?;
    // The fleet's tags (the snapshot's, which the mock's fixture may not match), as a
    // snapshot file holding only `serviceTags`.
    let tags = Snapshot {
        service_tags: fleet.snapshot.service_tags.clone(),
        ..Snapshot::default()
    };
    std::fs::write(
        dir.path().join("service-tags.json"),
        serde_json::to_vec(&tags)?,
    )?;
    drop(fleet);
    let metrics_port = free_port()?;
    let mut child = spawn_controller(args, dir.path(), &mock.base_url, metrics_port)?;
    let pid = child
        .id()
        .ok_or_else(|| anyhow::anyhow!("the controller exited at once"))?;
    let mut run = Run {
        probe: Probe {
            pid,
            http: reqwest::Client::new(),
            base: format!("http://127.0.0.1:{metrics_port}"),
        },
        child: &mut child,
        api: &api,
        last: Sample::default(),
    };
    let result = phases(args, &mut run).await;
    let (exit, exit_secs) = stop(&mut child).await?;
    let log = dir.path().join("controller.log");
    let phases = match result {
        Ok(p) => p,
        Err(e) => {
            print_log_tail(&log);
            return Err(e);
        }
    };
    let stats = mock.state.stats();
    let c = api.counters();
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    Ok(Row {
        n,
        phases,
        exit,
        exit_secs,
        arm_reads: stats.reads(),
        arm_writes: stats.writes(),
        arm_throttled: stats.throttled(),
        arm_stale: stats.by_status.get(&412).copied().unwrap_or(0),
        kube_lists: load(&c.lists),
        kube_watches: load(&c.watches),
        kube_gets: load(&c.gets),
        kube_events: load(&c.events),
        kube_unknown: load(&c.unknown),
        not_ready: api.not_ready_reasons(),
        with_status: api.readiness().with_status,
        log_bytes: std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0),
    })
}

async fn phases(args: &Args, run: &mut Run<'_>) -> anyhow::Result<Vec<Phase>> {
    let startup = run.phase("startup", Until::Ready, STARTUP_BUDGET).await?;
    if !startup.done {
        anyhow::bail!("/readyz did not answer 200 within {STARTUP_BUDGET:?}");
    }
    let converge = run.phase("converge", Until::Converged, args.budget).await?;
    let steady_for = Duration::from_secs(args.resync).mul_f64(1.25) + Duration::from_secs(5);
    let steady = run
        .phase("steady", Until::Elapsed(steady_for), steady_for)
        .await?;
    Ok(vec![startup, converge, steady])
}

fn print_log_tail(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    eprintln!("controller_rss: last lines of the controller's log:");
    for line in &lines[lines.len().saturating_sub(30)..] {
        eprintln!("  {line}");
    }
}

// ---------------------------------------------------------------------------------------
// Report

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn report(args: &Args, rows: &[Row]) -> String {
    let mut out = String::new();
    let command: Vec<String> = std::env::args().collect();
    let _ = writeln!(
        out,
        "\n## Controller process memory (issue 14: ≤ {LIMIT_MIB} MiB)\n"
    );
    let _ = writeln!(out, "Command: `{}`  ", command.join(" "));
    let rest: Vec<&str> = command
        .iter()
        .skip(1)
        .map(String::as_str)
        .filter(|a| *a != "--bench")
        .collect();
    let _ = writeln!(
        out,
        "Same as: `cargo bench --bench controller_rss -- {}`  ",
        rest.join(" ")
    );
    let _ = writeln!(
        out,
        "Child: `{}` ({}, `MIMALLOC_PURGE_DELAY` {}, `MIMALLOC_ALLOW_THP` {}), its own process; mock ARM and fake API server in the bench process.  ",
        args.controller,
        // Cargo's layout: `target/release/` for the release and bench profiles. A binary
        // elsewhere (a copy kept for an A/B run, a wrapper) may be either.
        if args.controller.contains("/release/") {
            "release build"
        } else if args.controller.contains("/debug/") {
            "NOT a release build"
        } else {
            "profile not known from its path"
        },
        child_env("MIMALLOC_PURGE_DELAY", &args.purge_delay),
        child_env("MIMALLOC_ALLOW_THP", &args.allow_thp),
    );
    let _ = writeln!(
        out,
        "Mock ARM: clock ×{}, LRO {} ARM s with `Retry-After: {}`, ARM's buckets, NRP's per-5-min limits OFF (this bench measures memory). Resync {} s; subscriptions ≤ {}; converge budget {} s.\n",
        args.clock_scale, args.lro_secs, args.lro_secs, args.resync, args.subscriptions, args.budget.as_secs()
    );
    let _ = writeln!(
        out,
        "| N | Ready | startup s | converge s | peak RSS startup MiB | peak RSS converge MiB | peak RSS steady MiB | RSS end MiB | VmHWM end MiB | max in flight | CPU s | ≤ {LIMIT_MIB} MiB |"
    );
    let _ = writeln!(
        out,
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|"
    );
    for r in rows {
        let [a, b, c] = [&r.phases[0], &r.phases[1], &r.phases[2]];
        let hwm = mib(c.end.hwm_kib);
        let _ = writeln!(
            out,
            "| {} | {}/{} | {:.1} | {:.1}{} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {:.1} | {} |",
            r.n,
            c.ready,
            r.n,
            a.elapsed.as_secs_f64(),
            b.elapsed.as_secs_f64(),
            if b.done { "" } else { " (budget)" },
            mib(a.peak_rss_kib),
            mib(b.peak_rss_kib),
            mib(c.peak_rss_kib),
            mib(c.end.rss_kib),
            hwm,
            a.max_in_flight.max(b.max_in_flight).max(c.max_in_flight),
            a.cpu_secs + b.cpu_secs + c.cpu_secs,
            if hwm <= LIMIT_MIB { "yes" } else { "NO" },
        );
    }
    let _ = writeln!(out, "\nPer phase:\n");
    let _ = writeln!(
        out,
        "| N | phase | done | real s | peak VmRSS MiB | peak RssAnon MiB | VmRSS end MiB (anon + file) | VmHWM end MiB | threads | max in flight | reconciles | component plans (planned / kept) | status patches | CPU s | Ready |"
    );
    let _ = writeln!(
        out,
        "|---:|---|:---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in rows {
        for p in &r.phases {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} ({:.1} + {:.1}) | {:.1} | {} | {} | {} | {} / {} | {} | {:.1} | {} |",
                r.n,
                p.name,
                if p.done { "yes" } else { "budget" },
                p.elapsed.as_secs_f64(),
                mib(p.peak_rss_kib),
                mib(p.peak_anon_kib),
                mib(p.end.rss_kib),
                mib(p.end.anon_kib),
                mib(p.end.file_kib),
                mib(p.end.hwm_kib),
                p.end.threads,
                p.max_in_flight,
                p.reconciles,
                p.plans.0,
                p.plans.1,
                p.status_patches,
                p.cpu_secs,
                p.ready,
            );
        }
    }
    let _ = writeln!(out);
    for r in rows {
        let _ = writeln!(
            out,
            "N={}: {} specs with a status; ARM {} reads, {} writes, {} throttled (429), {} stale etags (412); API server {} lists, {} watches, {} gets, {} events, {} unanswered; SIGTERM → exit in {:.1} s ({}); log {} KiB{}",
            r.n,
            r.with_status,
            r.arm_reads,
            r.arm_writes,
            r.arm_throttled,
            r.arm_stale,
            r.kube_lists,
            r.kube_watches,
            r.kube_gets,
            r.kube_events,
            r.kube_unknown,
            r.exit_secs,
            r.exit,
            r.log_bytes / 1024,
            if r.not_ready.is_empty() {
                String::new()
            } else {
                format!("; not Ready by reason: {:?}", r.not_ready)
            }
        );
    }
    out
}

fn main() {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => return,
        Err(e) => {
            eprintln!("controller_rss: {e}");
            std::process::exit(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("controller_rss: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let mut rows = Vec::new();
    let mut failed = false;
    for &n in &args.sizes {
        eprintln!("controller_rss: N={n}...");
        let started = Instant::now();
        match runtime.block_on(run_size(&args, n)) {
            Ok(row) => rows.push(row),
            Err(e) => {
                failed = true;
                eprintln!("controller_rss: N={n} failed: {e:#}");
            }
        }
        eprintln!(
            "controller_rss: N={n} took {:.0} s real",
            started.elapsed().as_secs_f64()
        );
    }
    print!("{}", report(&args, &rows));
    runtime.shutdown_timeout(Duration::from_secs(1));
    if failed {
        std::process::exit(1);
    }
}
