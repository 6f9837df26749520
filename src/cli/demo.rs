//! `asenet demo`: the whole story against a mock ARM server embedded in this process, with
//! no Azure account: plan, apply, plan again (no changes, zero writes), a foreign edit that
//! deletes one of asenet's rules, the plan that shows the drift, the apply that repairs it,
//! and verify. Exits 0 only if every step behaved as expected.
//!
//! The mock (crate `mock_arm`) listens on a free loopback port over plain http and accepts
//! any static bearer token. By default the story is the one of `examples/seed/` (the specs)
//! and `examples/azure/seed/` (the mock seed, and the service tags of its snapshot), compiled
//! into the binary so that an installed binary or the container image runs it from any
//! directory. `--seed DIR` runs another story: the specs under DIR, the mock seeded from
//! `DIR/mock-seed.yaml`, or, when that file is absent, from `DIR/snapshot.yaml` through
//! `fixture::mock_seed`.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde_json::Value;

use crate::azure::{ArmClientOptions, RetryConfig};
use crate::diff::{Plan, ResourceKind};
use crate::observe::ServiceTags;
use crate::pipeline::{self, PipelineOptions};
use crate::report;

use super::plan::{render_apply_report, ProgressPrinter};

/// The built-in story's specs, by the path they are read from in the source tree (the
/// name errors show).
const EMBEDDED_SPECS: &[(&str, &str)] = &[
    (
        "examples/seed/ase-one.yaml",
        include_str!("../../examples/seed/ase-one.yaml"),
    ),
    (
        "examples/seed/ase-two.yaml",
        include_str!("../../examples/seed/ase-two.yaml"),
    ),
];
const EMBEDDED_MOCK_SEED: (&str, &str) = (
    "examples/azure/seed/mock-seed.yaml",
    include_str!("../../examples/azure/seed/mock-seed.yaml"),
);
const EMBEDDED_SNAPSHOT: &str = include_str!("../../examples/azure/seed/snapshot.yaml");

/// The built-in story: specs, mock seed and service tags, from the embedded files.
fn embedded_story() -> anyhow::Result<(
    Vec<crate::api::AseConnectivity>,
    mock_arm::Seed,
    ServiceTags,
)> {
    let mut specs = Vec::new();
    for (path, text) in EMBEDDED_SPECS {
        specs.extend(
            crate::load::parse_specs(Path::new(path), text)?
                .into_iter()
                .map(|l| l.spec),
        );
    }
    let (path, text) = EMBEDDED_MOCK_SEED;
    let seed = mock_arm::Seed::from_yaml(text).with_context(|| format!("parsing {path}"))?;
    let tags = ServiceTags::parse(EMBEDDED_SNAPSHOT).unwrap_or_else(|_| ServiceTags::embedded());
    Ok((specs, seed, tags))
}

/// A story from a folder (`--seed DIR`).
fn folder_story(
    dir: &Path,
) -> anyhow::Result<(
    Vec<crate::api::AseConnectivity>,
    mock_arm::Seed,
    ServiceTags,
)> {
    if !dir.is_dir() {
        bail!("--seed `{}`: not a folder", dir.display());
    }
    let specs: Vec<_> = crate::load::load_specs(&[dir.to_path_buf()])?
        .into_iter()
        .map(|l| l.spec)
        .collect();
    let (seed, tags) = load_seed(dir, &specs)?;
    Ok((specs, seed, tags))
}

/// The mock seed and service tags of a seed folder.
fn load_seed(
    dir: &Path,
    specs: &[crate::api::AseConnectivity],
) -> anyhow::Result<(mock_arm::Seed, ServiceTags)> {
    let snapshot_path = dir.join("snapshot.yaml");
    let tags = if snapshot_path.is_file() {
        ServiceTags::load(&snapshot_path).unwrap_or_else(|_| ServiceTags::embedded())
    } else {
        ServiceTags::embedded()
    };
    let seed_path = dir.join("mock-seed.yaml");
    let seed = if seed_path.is_file() {
        let text = std::fs::read_to_string(&seed_path)
            .with_context(|| format!("reading {}", seed_path.display()))?;
        mock_arm::Seed::from_yaml(&text)
            .with_context(|| format!("parsing {}", seed_path.display()))?
    } else {
        let snapshot = crate::load::load_snapshot(&snapshot_path)?;
        let (valid, _) = crate::validate::validate_all(specs);
        crate::fixture::mock_seed::seed(&snapshot, &valid).map_err(|e| {
            anyhow::anyhow!(
                "building the mock seed from {}: {e}",
                snapshot_path.display()
            )
        })?
    };
    Ok((seed, tags))
}

/// ARM client options for the local mock: short polls and backoffs.
pub fn fast_options() -> ArmClientOptions {
    ArmClientOptions {
        retry: RetryConfig {
            max_attempts: 10,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(500),
            max_retry_after: Duration::from_secs(5),
        },
        lro_default_poll: Duration::from_millis(100),
        lro_max_poll: Duration::from_secs(1),
        lro_timeout: Duration::from_secs(60),
        request_timeout: Duration::from_secs(30),
    }
}

pub fn run(args: super::DemoArgs) -> anyhow::Result<ExitCode> {
    let (specs, seed, tags) = match args.seed.as_deref() {
        Some(dir) => folder_story(dir)?,
        None => embedded_story()?,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(story(specs, seed, tags))
}

struct Steps {
    color: bool,
    failures: Vec<String>,
    n: usize,
}

impl Steps {
    fn heading(&mut self, title: &str) {
        self.n += 1;
        let text = format!("==> {}. {title}", self.n);
        if self.color {
            println!("\n\x1b[1;36m{text}\x1b[0m\n");
        } else {
            println!("\n{text}\n");
        }
    }
    /// The demo's verdict: every step behaved as expected, or the list of those that did not.
    fn conclude(&self) -> ExitCode {
        println!();
        if self.failures.is_empty() {
            println!("Demo complete: every step behaved as expected.");
            ExitCode::SUCCESS
        } else {
            println!("Demo FAILED:");
            for f in &self.failures {
                println!("  - {f}");
            }
            ExitCode::from(1)
        }
    }
    fn check(&mut self, ok: bool, what: &str) {
        let mark = if ok { "ok" } else { "FAILED" };
        println!("[{mark}] {what}");
        if !ok {
            self.failures.push(format!("step {}: {what}", self.n));
        }
    }
}

async fn story(
    specs: Vec<crate::api::AseConnectivity>,
    seed: mock_arm::Seed,
    tags: ServiceTags,
) -> anyhow::Result<ExitCode> {
    let color = std::io::stdout().is_terminal();
    let mut steps = Steps {
        color,
        failures: Vec::new(),
        n: 0,
    };
    let crate::fixture::harness::MockPipeline { mock, pipeline } = start_mock(seed, tags).await?;
    println!(
        "Mock ARM server listening on {} (seeded with {} specs' topology).",
        mock.base_url,
        specs.len()
    );
    let scope = pipeline::scope_of(&specs);
    let printer = ProgressPrinter::new(color);
    let progress = |e: crate::apply::ApplyEvent| printer.event(&e);
    let mock_state = mock.state.clone();

    // 1. Plan.
    steps.heading("asenet plan: what the specs need that Azure does not have yet");
    let first = pipeline.plan(&specs, &scope).await?;
    print!("{}", report::render_text(&first.plan, color));
    steps.check(first.plan.has_changes(), "the plan has changes");
    steps.check(first.plan.errors.is_empty(), "every spec resolved");

    // 2. Apply.
    steps.heading("asenet apply --auto-approve: one conditional PUT per changed resource");
    let changed = first.plan.changed().count();
    mock_state.reset_stats();
    let applied = pipeline
        .apply(&specs, &scope, first.clone(), &progress)
        .await?;
    println!();
    print!("{}", render_apply_report(&applied, color));
    let writes = mock_state.stats().writes();
    steps.check(
        writes as usize == changed,
        &format!("{writes} PUTs for {changed} changed resources"),
    );

    // 3. Plan again.
    steps.heading("asenet plan again: nothing to do, and nothing written");
    mock_state.reset_stats();
    let again = pipeline.plan(&specs, &scope).await?;
    print!("{}", report::render_text(&again.plan, color));
    let stats = mock_state.stats();
    println!(
        "\nMock ARM counters for this plan: {}",
        describe_stats(&stats)
    );
    steps.check(!again.plan.has_changes(), "the plan is empty");
    steps.check(stats.writes() == 0 && stats.deletes() == 0, "zero writes");

    // 4. A foreign edit deletes one of asenet's rules.
    steps.heading("someone deletes one of asenet's rules in the portal");
    let Some((nsg, rule)) = victim(&first.plan) else {
        bail!("the plan created no owned rule to delete");
    };
    delete_rule_as_another_client(&mock_state, &nsg, &rule)?;
    tokio::time::sleep(Duration::from_millis(400)).await;

    // 5. Plan shows the drift.
    steps.heading("asenet plan: the drift");
    let drift = pipeline.plan(&specs, &scope).await?;
    print!("{}", report::render_text(&drift.plan, color));
    let recreates = drift.plan.resource(&nsg).is_some_and(|r| {
        r.rules
            .create
            .iter()
            .any(|p| p.entry.name.eq_ignore_ascii_case(&rule))
    });
    steps.check(recreates, &format!("the plan re-creates `{rule}`"));
    steps.check(drift.plan.changed().count() == 1, "only that NSG changes");

    // 6. Apply repairs it.
    steps.heading("asenet apply --auto-approve: the repair");
    mock_state.reset_stats();
    let repaired = pipeline.apply(&specs, &scope, drift, &progress).await?;
    println!();
    print!("{}", render_apply_report(&repaired, color));
    let stats = mock_state.stats();
    steps.check(
        stats.writes() == 1,
        &format!("{} PUT (the NSG)", stats.writes()),
    );
    let after = pipeline.plan(&specs, &scope).await?;
    steps.check(!after.plan.has_changes(), "converged again");

    // 7. Verify.
    steps.heading("asenet verify: every required flow against the live NSGs");
    let verify = pipeline.verify(&specs).await?;
    print!("{}", report::verify::render_verify(&verify));
    steps.check(verify.passed(), "every required flow is allowed");

    mock.shutdown().await;
    Ok(steps.conclude())
}

/// The mock ARM server seeded with `seed`, its long-running operations slow enough to show
/// progress, and a pipeline against it.
async fn start_mock(
    seed: mock_arm::Seed,
    tags: ServiceTags,
) -> anyhow::Result<crate::fixture::harness::MockPipeline> {
    let config = mock_arm::Config {
        lro_delay: Duration::from_millis(300),
        lro_retry_after: Duration::from_millis(100),
        ..mock_arm::Config::default()
    };
    let options = PipelineOptions {
        service_tags: tags,
        ..PipelineOptions::default()
    };
    crate::fixture::harness::start(seed, config, fast_options(), options).await
}

/// A foreign edit: `rule` removed from `nsg` by a PUT of the whole NSG, as the portal does.
fn delete_rule_as_another_client(
    mock_state: &mock_arm::MockState,
    nsg: &crate::model::ResourceId,
    rule: &str,
) -> anyhow::Result<()> {
    let mut body = mock_state
        .get_resource(nsg.as_str())
        .with_context(|| format!("{nsg} is not in the mock"))?;
    if let Some(rules) = body
        .pointer_mut("/properties/securityRules")
        .and_then(Value::as_array_mut)
    {
        rules.retain(|r| {
            r.get("name")
                .and_then(Value::as_str)
                .is_none_or(|n| !n.eq_ignore_ascii_case(rule))
        });
    }
    mock_state
        .put_raw(nsg.as_str(), crate::apply::writable(&body))
        .map_err(|e| anyhow::anyhow!("foreign write: {e:?}"))?;
    println!(
        "Deleted rule `{rule}` from {} (a PUT by another client).",
        report::resource_title(nsg)
    );
    Ok(())
}

/// An NSG the first apply created rules in, and one of those rules.
fn victim(plan: &Plan) -> Option<(crate::model::ResourceId, String)> {
    plan.resources
        .iter()
        .filter(|r| r.kind == ResourceKind::NetworkSecurityGroup)
        .find_map(|r| {
            r.rules
                .create
                .iter()
                .find(|p| p.entry.name.starts_with(crate::resolver::OWNED_PREFIX))
                .map(|p| (r.id.clone(), p.entry.name.clone()))
        })
}

/// `6 reads (GET networkSecurityGroups 200: 2, ...), 0 writes`.
pub fn describe_stats(stats: &mock_arm::Stats) -> String {
    let detail: Vec<String> = stats
        .by_request
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    format!(
        "{} reads, {} writes, {} deletes ({})",
        stats.reads(),
        stats.writes(),
        stats.deletes(),
        detail.join(", ")
    )
}
