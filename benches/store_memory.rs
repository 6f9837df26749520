//! Memory of the controller's spec store (issue 6): the resident set of a process whose
//! kube-runtime reflector store holds N generated `AseConnectivity` objects, statuses
//! included, as the operator's store does after its first reconcile of every spec.
//!
//! `cargo bench --bench store_memory [-- --specs 10000 --copies 8 --no-status --no-server-fields]`
//!
//! The parent generates the specs (benches/support/specgen.rs, the fleet of the resolve and
//! fleet benchmarks), resolves them to compute each spec's status as the controller writes
//! it (`controller::status::next_status`), adds what the API server adds to an object
//! applied with `kubectl apply` (`metadata.managedFields`, the
//! `kubectl.kubernetes.io/last-applied-configuration` annotation; `--no-server-fields`
//! leaves them out), and writes the objects as JSON lines, the shape the API server sends. A fresh child process (this binary again) then reads `VmRSS`,
//! feeds the objects one by one into a reflector `Writer` as `watcher::Event`s (no API
//! server needed), each shrunk by `controller::store::for_store` as the controller's watch
//! streams shrink them, and reads `VmRSS` again; the difference is the store. It then holds
//! what `--copies` concurrent reconciles of specs spread over the store hold: each its
//! component shared with the store (`reconcile::component_specs`), and per distinct
//! component one copy to plan from (the reconcile holding the component's locks), and
//! reports the resident set with those alive.
//! Target: <= 150 MiB with 10,000 specs.
//!
//! Beside the resident sets, bytes live on the heap as the allocator counts them (`cap`
//! around mimalloc: requested sizes, without the allocator's rounding or its free pages):
//! the store's, and, in a second table, what a plan of the whole fleet as one component
//! holds piece by piece (decoded specs, validated specs, desired state, plan) and what the
//! controller caches of it for the resync interval (`context::Shared`). The controller's
//! own heap over a run: the binary's `heap-stats` feature (docs/benchmarks.md).

#[allow(dead_code)]
#[path = "support/specgen.rs"]
mod specgen;

use std::collections::BTreeMap;
use std::io::{BufRead, BufWriter, Write};
use std::time::Instant;

use asenet::api::{AseConnectivity, Mode, PlanSummary};
use asenet::controller::index;
use asenet::controller::status::{all_owned_rules, next_status, Finding, PlannedFinding};
use asenet::controller::store;
use asenet::diff::{diff, Scope};
use asenet::resolver::SpecOutcome;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry, Time};
use kube::runtime::reflector;
use kube::runtime::watcher;

// The binary's allocator (src/main.rs), so that the figures are the binary's, wrapped to
// count the bytes live on the heap (requested sizes, without the allocator's rounding).
#[global_allocator]
static GLOBAL: cap::Cap<mimalloc::MiMalloc> = cap::Cap::new(mimalloc::MiMalloc, usize::MAX);

/// The bytes live on the heap now.
fn live() -> usize {
    GLOBAL.allocated()
}

/// The bytes dropping `value` frees.
fn freed<T>(value: T) -> usize {
    let at = live();
    drop(value);
    at.saturating_sub(live())
}

/// MiB of a number of bytes.
fn mib_of(bytes: usize) -> f64 {
    bytes as f64 / 1048576.0
}

const CHILD_ENV: &str = "ASENET_STORE_MEMORY_FILE";

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The child: baseline, fill the store, measure.
fn child(path: &str, copies: usize) -> anyhow::Result<()> {
    let baseline = status_kib("VmRSS:");
    let heap_before = live();
    let (reader, mut writer) = reflector::store::<AseConnectivity>();
    let file = std::io::BufReader::new(std::fs::File::open(path)?);
    let started = Instant::now();
    writer.apply_watcher_event(&watcher::Event::Init);
    let mut n = 0usize;
    for line in file.lines() {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        let obj: AseConnectivity = serde_json::from_str(&line)?;
        // As `controller::run` does: the watch stream shrinks each object for the store.
        let event = watcher::Event::InitApply(obj).modify(store::for_store);
        writer.apply_watcher_event(&event);
        n += 1;
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    let filled = status_kib("VmRSS:");
    let store_heap = live().saturating_sub(heap_before);
    // Measured after the fill, so that neither the fill's time nor its RSS includes it.
    let mut stored_json = 0usize;
    for obj in reader.state() {
        stored_json += serde_json::to_string(&*obj)?.len();
    }
    let objects = reader.state().len();
    // What `copies` concurrent reconciles hold at once, for specs spread over the store: each
    // the connected component of its spec, shared with the store (`reconcile::component_specs`),
    // and, per distinct component, the one reconciling it (the others wait on its locks) a
    // copy to plan from (`reconcile::owned`).
    let state = reader.state();
    let waiting: Vec<Vec<std::sync::Arc<AseConnectivity>>> = (0..copies)
        .map(|i| index::component(&state[i * state.len() / copies.max(1)], &state))
        .collect();
    let mut planning: BTreeMap<Vec<index::Key>, Vec<AseConnectivity>> = BTreeMap::new();
    for component in &waiting {
        let mut members: Vec<index::Key> = component.iter().map(|o| index::key_of(o)).collect();
        members.sort();
        planning
            .entry(members)
            .or_insert_with(|| component.iter().map(|o| (**o).clone()).collect());
    }
    let copied: usize = planning.values().map(Vec::len).sum();
    let held = (waiting, planning);
    drop(state);
    let with_copies = status_kib("VmRSS:");
    let peak = status_kib("VmHWM:");
    println!(
        "{{\"objects\":{objects},\"lines\":{n},\"baselineKib\":{baseline},\"filledKib\":{filled},\"withCopiesKib\":{with_copies},\"peakKib\":{peak},\"copies\":{},\"copiedSpecs\":{copied},\"fillMs\":{},\"storeHeap\":{store_heap},\"storedJson\":{stored_json}}}",
        held.0.len(),
        started.elapsed().as_millis()
    );
    drop(held);
    Ok(())
}

/// What planning a component of all `n` specs holds on the heap, piece by piece, and what
/// the controller caches of it (`context::Shared`, held for the resync interval): bytes
/// live, counted by the allocator, with the controller's level of detail
/// (`diff::Detail::Writes`). Printed as a table.
fn outcome_heap(n: usize) {
    let world = specgen::generate(n);
    let mut rows: Vec<(&str, usize)> = Vec::new();
    let mut measure = |name, before: usize| rows.push((name, live().saturating_sub(before)));
    let at = live();
    let specs: Vec<std::sync::Arc<AseConnectivity>> = (world.specs.iter().cloned())
        .map(std::sync::Arc::new)
        .collect();
    measure("specs, decoded (without statuses)", at);
    let at = live();
    let snapshot = world.snapshot.clone();
    measure("snapshot of Azure (a copy)", at);
    let at = live();
    let (valid, _) = asenet::validate::validate_all(&specs);
    measure("validated specs", at);
    let at = live();
    let desired = asenet::resolver::resolve(&valid, &snapshot);
    measure("desired state", at);
    let scope = Scope::new(valid.iter().map(|v| v.key.clone()), []);
    drop(valid);
    let at = live();
    let plan = asenet::diff::diff_with(&desired, &snapshot, &scope, asenet::diff::Detail::Writes);
    measure("plan (the controller's detail)", at);
    let planned = asenet::pipeline::PlanOutcome {
        snapshot,
        desired,
        plan,
    };
    let shared = asenet::controller::context::Shared::new(planned, &specs);
    // Each piece of the cached outcome measured by what dropping it frees.
    let asenet::controller::context::Shared {
        planned,
        withheld,
        parts,
    } = shared;
    let parts_bytes = freed(parts);
    let withheld_bytes = freed(withheld);
    let asenet::pipeline::PlanOutcome { desired, plan, .. } = planned;
    let plan_bytes = freed(plan);
    let outcomes_bytes = freed(desired);
    println!("What a plan of one component of {n} specs holds on the heap (bytes live, counted by the allocator)");
    println!();
    println!("| piece | MiB |");
    println!("| --- | ---: |");
    for (name, bytes) in rows {
        println!("| {name} | {:.1} |", mib_of(bytes));
    }
    println!(
        "| cached outcome: owned rules and plan positions per spec (`Parts`) | {:.1} |",
        mib_of(parts_bytes)
    );
    println!(
        "| cached outcome: the rest of the desired state (per-spec outcomes, desired subnets) | {:.1} |",
        mib_of(outcomes_bytes)
    );
    println!(
        "| cached outcome: the plan's changed resources (here every change is pending; none once converged) | {:.1} |",
        mib_of(plan_bytes)
    );
    println!(
        "| cached outcome: withheld changes | {:.1} |",
        mib_of(withheld_bytes)
    );
    println!();
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `fieldsV1` of a managed-fields entry owning every field of `v`, as the API server
/// records it: `f:<key>` per object key (`.` for the object itself), lists atomic (the CRD
/// declares no list type, so a list is owned whole).
fn fields_v1(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::{Map, Value};
    match v {
        Value::Object(map) => {
            let mut out = Map::new();
            out.insert(".".into(), Value::Object(Map::new()));
            for (k, v) in map {
                out.insert(format!("f:{k}"), fields_v1(v));
            }
            Value::Object(out)
        }
        _ => Value::Object(Map::new()),
    }
}

fn managed(
    manager: &str,
    operation: &str,
    subresource: Option<&str>,
    fields: serde_json::Value,
    now: &Time,
) -> ManagedFieldsEntry {
    ManagedFieldsEntry {
        api_version: Some("asenet.io/v1alpha1".into()),
        fields_type: Some("FieldsV1".into()),
        fields_v1: Some(FieldsV1(fields)),
        manager: Some(manager.into()),
        operation: Some(operation.into()),
        subresource: subresource.map(str::to_string),
        time: Some(now.clone()),
    }
}

/// What the API server adds to an object applied with `kubectl apply -f` (client-side, its
/// default), given the asenet finalizer and, if any, a status written by asenet: the
/// `kubectl.kubernetes.io/last-applied-configuration` annotation (the applied manifest as a
/// JSON string) and `metadata.managedFields` (kubectl's fields, asenet's finalizer, asenet's
/// status).
fn add_server_fields(s: &mut AseConnectivity, now: &Time) -> anyhow::Result<()> {
    let spec = serde_json::to_value(&s.spec)?;
    let applied = serde_json::json!({
        "apiVersion": "asenet.io/v1alpha1",
        "kind": "AseConnectivity",
        "metadata": {
            "annotations": {},
            "name": s.metadata.name,
            "namespace": s.metadata.namespace,
        },
        "spec": spec,
    });
    s.metadata.annotations = Some(BTreeMap::from([(
        "kubectl.kubernetes.io/last-applied-configuration".to_string(),
        format!("{}\n", serde_json::to_string(&applied)?),
    )]));
    let mut entries = vec![
        managed(
            "kubectl-client-side-apply",
            "Update",
            None,
            serde_json::json!({
                "f:metadata": {"f:annotations": {".": {}, "f:kubectl.kubernetes.io/last-applied-configuration": {}}},
                "f:spec": fields_v1(&spec),
            }),
            now,
        ),
        managed(
            "asenet",
            "Update",
            None,
            serde_json::json!({"f:metadata": {"f:finalizers": {".": {}, "v:\"asenet.io/cleanup\"": {}}}}),
            now,
        ),
    ];
    if let Some(status) = &s.status {
        let mut fields = fields_v1(&serde_json::to_value(status)?);
        if let Some(map) = fields.as_object_mut() {
            map.remove(".");
        }
        entries.push(managed(
            "asenet",
            "Apply",
            Some("status"),
            serde_json::json!({ "f:status": fields }),
            now,
        ));
    }
    s.metadata.managed_fields = Some(entries);
    Ok(())
}

/// The objects as the API server would list them: spec, metadata (with what the API server
/// adds, unless `server_fields` is false), and the status the controller writes after a
/// converged reconcile.
fn objects(
    n: usize,
    with_status: bool,
    server_fields: bool,
) -> anyhow::Result<Vec<AseConnectivity>> {
    let world = specgen::generate(n);
    let (valid, _) = asenet::validate::validate_all(&world.specs);
    let desired = asenet::resolver::resolve(&valid, &world.snapshot);
    let scope = Scope::new(valid.iter().map(|v| v.key.clone()), []);
    let plan = diff(&desired, &world.snapshot, &scope);
    let _ = plan;
    // Every spec's owned rules in one pass (`owned_rules` of each spec would walk the whole
    // desired state once per spec).
    let mut rules: std::collections::HashMap<&asenet::model::SpecKey, Vec<_>> =
        std::collections::HashMap::new();
    for (owner, rule) in all_owned_rules(&desired) {
        rules.entry(owner).or_default().push(rule);
    }
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    world
        .specs
        .into_iter()
        .enumerate()
        .map(|(i, mut s)| -> anyhow::Result<AseConnectivity> {
            let key = asenet::model::SpecKey::new(
                s.metadata.namespace.clone().unwrap_or_default(),
                s.metadata.name.clone().unwrap_or_default(),
            );
            s.metadata.generation = Some(1);
            s.metadata.resource_version = Some(format!("{}", 1000 + i));
            s.metadata.uid = Some(format!("00000000-0000-0000-0000-{i:012}"));
            s.metadata.finalizers = Some(vec![asenet::controller::FINALIZER.to_string()]);
            s.metadata.creation_timestamp = Some(now.clone());
            if let (true, Some(SpecOutcome::Resolved(resolution))) =
                (with_status, desired.specs.get(&key))
            {
                let finding = Finding::Planned(PlannedFinding {
                    resolution,
                    rules: rules.remove(&key).unwrap_or_default(),
                    pending: PlanSummary::default(),
                    applied: PlanSummary::default(),
                    blocked: vec![],
                    conflicts: vec![],
                });
                s.status = Some(next_status(None, Some(1), Mode::Apply, &finding, &now));
            }
            if server_fields {
                add_server_fields(&mut s, &now)?;
            }
            Ok(s)
        })
        .collect()
}

fn main() -> anyhow::Result<()> {
    if std::env::args()
        .skip(1)
        .any(|a| !a.starts_with("--") && a != "store_memory" && a.parse::<usize>().is_err())
    {
        return Ok(());
    }
    let copies = arg("--copies", 8);
    if let Ok(path) = std::env::var(CHILD_ENV) {
        return child(&path, copies);
    }
    let n = arg("--specs", 10_000);
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("objects.jsonl");
    let no_status = std::env::args().any(|a| a == "--no-status");
    let server_fields = !std::env::args().any(|a| a == "--no-server-fields");
    let objects = objects(n, !no_status, server_fields)?;
    let mut bytes = 0usize;
    let with_status = objects.iter().filter(|o| o.status.is_some()).count();
    {
        let mut out = BufWriter::new(std::fs::File::create(&path)?);
        for o in &objects {
            let line = serde_json::to_string(o)?;
            bytes += line.len() + 1;
            out.write_all(line.as_bytes())?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
    }
    drop(objects);
    let exe = std::env::current_exe()?;
    let output = std::process::Command::new(exe)
        .env(CHILD_ENV, &path)
        .arg("--copies")
        .arg(copies.to_string())
        .output()?;
    if !output.status.success() {
        anyhow::bail!(
            "the measuring process failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let get = |k: &str| v[k].as_u64().unwrap_or(0);
    let store = get("filledKib").saturating_sub(get("baselineKib"));
    println!();
    println!(
        "asenet controller store memory ({n} AseConnectivity objects, {with_status} with status, {})",
        if server_fields {
            "with managedFields and last-applied-configuration"
        } else {
            "without managedFields and last-applied-configuration"
        }
    );
    println!();
    println!("| measure | value |");
    println!("| --- | ---: |");
    println!("| objects in the store | {} |", get("objects"));
    println!(
        "| JSON size of the objects | {:.1} MiB |",
        bytes as f64 / 1048576.0
    );
    println!(
        "| RSS before (fresh process) | {:.1} MiB |",
        mib(get("baselineKib"))
    );
    println!(
        "| RSS with the store filled | {:.1} MiB |",
        mib(get("filledKib"))
    );
    println!("| store (difference) | {:.1} MiB |", mib(store));
    println!(
        "| store, bytes live on the heap | {:.1} MiB |",
        mib_of(get("storeHeap") as usize)
    );
    println!(
        "| JSON size of the objects as stored | {:.1} MiB |",
        mib_of(get("storedJson") as usize)
    );
    println!(
        "| RSS with {} reconciles in flight (copied for planning: {} specs) | {:.1} MiB |",
        get("copies"),
        get("copiedSpecs"),
        mib(get("withCopiesKib"))
    );
    println!("| peak RSS (VmHWM) | {:.1} MiB |", mib(get("peakKib")));
    println!("| time to fill the store | {} ms |", get("fillMs"));
    let target = 150.0;
    let filled = mib(get("filledKib"));
    println!(
        "| target: process RSS with the store <= 150 MiB | {} ({filled:.1} MiB) |",
        if filled <= target { "met" } else { "MISSED" }
    );
    println!();
    outcome_heap(n);
    Ok(())
}
