//! The pipeline against the in-process mock ARM server (port 0, plain http, static token):
//! convergence of every example, minimal writes, foreign entries byte for byte, 412 races,
//! injected faults, invalid specs, removal, and the `asenet` binary's exit codes.
//!
//! "Byte for byte" for a foreign rule or route: its JSON after apply equals its JSON before,
//! except `etag` (ARM stamps a new etag on every child when the parent is written,
//! docs/domain.md 4.6) — `provisioningState` is compared too, once the operation settled.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use asenet::api::AseConnectivity;
use asenet::azure::credential::StaticToken;
use asenet::azure::pacing::WritePacer;
use asenet::azure::{ArmClient, ArmClientOptions, RetryConfig};
use asenet::diff::Scope;
use asenet::model::{ResourceId, SpecKey};
use asenet::observe::{ServiceTags, Targets};
use asenet::pipeline::{self, ApplyEvent, Pipeline, PipelineOptions};
use mock_arm::{FaultAction, FaultSpec, RunningMock};
use serde_json::{json, Value};

const SUB: &str =
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/network/providers";

pub(crate) fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

/// What Azure holds for an example: `snapshot.yaml` (and, for `seed`, `mock-seed.yaml`),
/// kept apart from the spec folders, which `kubectl apply` takes whole.
fn azure(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/azure")
        .join(name)
}

pub(crate) fn id(path: &str) -> ResourceId {
    ResourceId::parse(&format!("{SUB}/{path}")).unwrap()
}

fn specs_of(dir: &Path) -> Vec<AseConnectivity> {
    asenet::load::load_specs(&[dir.to_path_buf()])
        .unwrap()
        .into_iter()
        .map(|l| l.spec)
        .collect()
}

/// Mock config: fast LROs and a fast ARM clock (Retry-After of injected faults shrinks too).
fn mock_config() -> mock_arm::Config {
    mock_arm::Config {
        clock_scale: 20.0,
        lro_delay: Duration::from_secs(1),
        lro_retry_after: Duration::from_millis(500),
        ..mock_arm::Config::default()
    }
}

fn fast_options() -> ArmClientOptions {
    ArmClientOptions {
        retry: RetryConfig {
            max_attempts: 10,
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
            max_retry_after: Duration::from_secs(2),
        },
        lro_default_poll: Duration::from_millis(30),
        lro_max_poll: Duration::from_millis(300),
        lro_timeout: Duration::from_secs(20),
        request_timeout: Duration::from_secs(10),
    }
}

pub(crate) struct Env {
    pub(crate) mock: RunningMock,
    pub(crate) pipeline: Pipeline,
    pub(crate) specs: Vec<AseConnectivity>,
    pub(crate) scope: Scope,
}

impl Env {
    pub(crate) fn state(&self) -> &mock_arm::MockState {
        &self.mock.state
    }
    pub(crate) async fn plan(&self) -> pipeline::PlanOutcome {
        self.pipeline.plan(&self.specs, &self.scope).await.unwrap()
    }
    pub(crate) async fn apply(&self) -> pipeline::ApplyReport {
        let outcome = self.plan().await;
        self.pipeline
            .apply(&self.specs, &self.scope, outcome, &|_| {})
            .await
            .unwrap()
    }
    pub(crate) async fn converge(&self) {
        self.apply().await;
        let again = self.plan().await;
        assert!(
            !again.plan.has_changes(),
            "not converged: {:#?}",
            again.plan
        );
    }
    fn set_specs(&mut self, specs: Vec<AseConnectivity>) {
        self.scope = pipeline::scope_of(&specs);
        self.specs = specs;
    }
}

/// A mock seeded from an example's snapshot (through `fixture::mock_seed`), and a pipeline.
async fn env_with(name: &str, tweak: impl FnOnce(&mut Value)) -> Env {
    env_custom(name, tweak, mock_config(), PipelineOptions::default()).await
}

/// [`env_with`] with the mock's configuration and the pipeline's options given.
async fn env_custom(
    name: &str,
    tweak: impl FnOnce(&mut Value),
    config: mock_arm::Config,
    options: PipelineOptions,
) -> Env {
    let dir = example(name);
    let specs = specs_of(&dir);
    let snapshot = asenet::load::load_snapshot(&azure(name).join("snapshot.yaml")).unwrap();
    let (valid, _) = asenet::validate::validate_all(&specs);
    let mut seed = asenet::fixture::mock_seed::seed_value(&snapshot, &valid);
    tweak(&mut seed);
    let seed: mock_arm::Seed = serde_json::from_value(seed).unwrap();
    let tags = ServiceTags::load(&azure(name).join("snapshot.yaml"))
        .unwrap_or_else(|_| ServiceTags::embedded());
    let asenet::fixture::harness::MockPipeline { mock, pipeline } =
        asenet::fixture::harness::start(
            seed,
            config,
            fast_options(),
            PipelineOptions {
                service_tags: tags,
                ..options
            },
        )
        .await
        .unwrap();
    let scope = pipeline::scope_of(&specs);
    Env {
        mock,
        pipeline,
        specs,
        scope,
    }
}

pub(crate) async fn env(name: &str) -> Env {
    env_with(name, |_| {}).await
}

fn rule_json<'a>(nsg: &'a Value, name: &str) -> Option<&'a Value> {
    nsg.pointer("/properties/securityRules")?
        .as_array()?
        .iter()
        .find(|r| {
            r["name"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
}

fn without_etag(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("etag");
    }
    v
}

pub(crate) fn names(nsg: &Value) -> Vec<String> {
    nsg.pointer("/properties/securityRules")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|r| r["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The first resource group of the first subscription of a seed value.
fn group(seed: &mut Value) -> &mut Value {
    &mut seed["subscriptions"][0]["resourceGroups"][0]
}

#[tokio::test]
async fn every_example_converges_and_a_second_plan_reads_once_and_writes_nothing() {
    for name in ["seed", "layered", "v3"] {
        let env = env(name).await;
        let first = env.plan().await;
        assert!(
            first.plan.errors.is_empty(),
            "{name}: {:?}",
            first.plan.errors
        );
        assert!(first.plan.has_changes(), "{name}: nothing to do from empty");
        let changed = first.plan.changed().count() as u64;
        env.state().reset_stats();
        let report = env
            .pipeline
            .apply(&env.specs, &env.scope, first, &|_| {})
            .await
            .unwrap();
        let converge = env.state().stats();
        assert_eq!(
            converge.writes(),
            changed,
            "{name}: one PUT per changed resource"
        );
        assert_eq!(report.writes() as u64, changed);

        env.state().reset_stats();
        let again = env.plan().await;
        let stats = env.state().stats();
        assert!(!again.plan.has_changes(), "{name}: {:#?}", again.plan);
        assert_eq!(stats.writes() + stats.deletes(), 0, "{name}: zero writes");
        let (valid, _) = asenet::validate::validate_all(&env.specs);
        let t = Targets::of(&valid);
        let reads = |ty: &str| stats.count("GET", ty, 200) + stats.count("GET", ty, 404);
        assert!(
            reads("networkSecurityGroups") <= t.network_security_groups.len() as u64,
            "{name}: {stats:?}"
        );
        assert!(
            reads("routeTables") <= t.route_tables.len() as u64,
            "{name}: {stats:?}"
        );
        assert_eq!(
            reads("subnets"),
            0,
            "{name}: subnets come inline with their VNet"
        );
        assert!(
            reads("virtualNetworks") <= t.virtual_networks().len() as u64,
            "{name}"
        );
        let budget = t.network_security_groups.len()
            + t.route_tables.len()
            + t.virtual_networks().len()
            + t.environments.len();
        assert!(
            stats.reads() <= budget as u64,
            "{name}: {} reads > {budget}: {stats:?}",
            stats.reads()
        );
        eprintln!(
            "{name}: converge {} reads / {} writes; re-plan {} reads / 0 writes",
            converge.reads(),
            converge.writes(),
            stats.reads()
        );
    }
}

/// NRP accepts a limited number of writes per subscription per window (domain.md 4.8:
/// 1,000 per 5 minutes); asenet paces its own writes under it (`azure::pacing`). Here the
/// mock's window admits 3 writes per 4 ARM seconds: the paced apply is never throttled
/// and writes each changed resource once; the same apply unpaced is throttled.
#[tokio::test]
async fn a_paced_apply_stays_inside_nrps_write_window_and_an_unpaced_one_does_not() {
    const LIMIT: u32 = 3;
    let window = Duration::from_secs(4);
    let run = |pacer: WritePacer| async move {
        let mut config = mock_config();
        config.throttling.nrp = mock_arm::config::NrpLimits {
            enabled: true,
            window,
            writes: LIMIT,
            reads: 10_000,
        };
        let options = PipelineOptions {
            write_pacer: pacer,
            ..PipelineOptions::default()
        };
        let env = env_custom("seed", |_| {}, config, options).await;
        let first = env.plan().await;
        let changed = first.plan.changed().count() as u64;
        env.state().reset_stats();
        env.pipeline
            .apply(&env.specs, &env.scope, first, &|_| {})
            .await
            .unwrap();
        let stats = env.state().stats();
        assert!(!env.plan().await.plan.has_changes(), "converged");
        (changed, stats.writes(), stats.throttled())
    };
    // The client's window on the real clock: the mock's ARM seconds run 20 times faster.
    let real_window = window.div_f64(mock_config().clock_scale);
    let (changed, writes, throttled) = run(WritePacer::new(LIMIT as usize, real_window)).await;
    assert!(
        changed > 2 * u64::from(LIMIT),
        "{changed} writes: the test needs more than two windows"
    );
    assert_eq!(writes, changed, "one PUT per changed resource");
    assert_eq!(throttled, 0, "a paced apply stays inside the window");
    let (_, _, unpaced) = run(WritePacer::off()).await;
    assert!(unpaced > 0, "the same apply unpaced is throttled");
}

#[tokio::test]
async fn a_change_to_one_spec_puts_each_changed_parent_exactly_once() {
    let mut env = env("seed").await;
    env.converge().await;
    // ase-two additionally admits FTP from a partner range.
    let mut specs = env.specs.clone();
    let two = specs
        .iter_mut()
        .find(|s| s.metadata.name.as_deref() == Some("ase-two"))
        .unwrap();
    two.spec.inbound.push(
        serde_json::from_value(
            json!({"name": "ftp", "service": "Ftp", "from": [{"cidr": "203.0.113.0/24"}]}),
        )
        .unwrap(),
    );
    env.set_specs(specs);
    let outcome = env.plan().await;
    let changed: Vec<ResourceId> = outcome.plan.changed().map(|r| r.id.clone()).collect();
    assert_eq!(
        changed,
        vec![id("Microsoft.Network/networkSecurityGroups/ase-two-nsg")]
    );
    let before: BTreeMap<_, _> = changed
        .iter()
        .map(|i| (i.clone(), env.state().history(i.as_str()).len()))
        .collect();
    env.state().reset_stats();
    env.pipeline
        .apply(&env.specs, &env.scope, outcome, &|_| {})
        .await
        .unwrap();
    let stats = env.state().stats();
    assert_eq!(stats.writes(), changed.len() as u64);
    for (i, n) in before {
        assert_eq!(env.state().history(i.as_str()).len(), n + 1, "{i}");
    }
    assert!(!env.plan().await.plan.has_changes());
}

#[tokio::test]
async fn foreign_rules_and_routes_are_unchanged_byte_for_byte_after_apply() {
    let env = env_with("seed", |seed| {
        let g = group(seed);
        // A second foreign rule with plural fields, and a route table that exists with a
        // foreign route (ase-two-rt: asenet adds its route next to it).
        g["networkSecurityGroups"][0]["securityRules"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "corp-mon", "properties": {
                "priority": 3100, "direction": "Inbound", "access": "Allow", "protocol": "*",
                "sourceAddressPrefixes": ["172.16.5.0/24", "172.16.6.0/24"], "sourcePortRange": "*",
                "destinationAddressPrefix": "*", "destinationPortRanges": ["161", "10050-10051"],
                "description": "monitoring"}}));
        g["routeTables"] = json!([{"name": "ase-two-rt", "routes": [
            {"name": "corp-onprem", "properties": {"addressPrefix": "172.16.0.0/12", "nextHopType": "VirtualNetworkGateway"}}
        ]}]);
    })
    .await;
    let sql = id("Microsoft.Network/networkSecurityGroups/sql-nsg");
    let rt = id("Microsoft.Network/routeTables/ase-two-rt");
    let before_nsg = env.state().get_resource(sql.as_str()).unwrap();
    let before_rt = env.state().get_resource(rt.as_str()).unwrap();
    env.converge().await;
    let after_nsg = env.state().get_resource(sql.as_str()).unwrap();
    let after_rt = env.state().get_resource(rt.as_str()).unwrap();
    for name in ["corp-rdp", "corp-mon"] {
        assert_eq!(
            without_etag(rule_json(&before_nsg, name).unwrap()),
            without_etag(rule_json(&after_nsg, name).unwrap()),
            "{name}"
        );
    }
    assert!(names(&after_nsg).iter().any(|n| n.starts_with("asenet-")));
    let route = |rt: &Value| {
        rt["properties"]["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "corp-onprem")
            .cloned()
            .unwrap()
    };
    assert_eq!(
        without_etag(&route(&before_rt)),
        without_etag(&route(&after_rt))
    );
    assert!(after_rt["properties"]["routes"].as_array().unwrap().len() >= 2);
    // Every other property of the NSG is carried too.
    assert_eq!(before_nsg["location"], after_nsg["location"]);
    assert_eq!(before_nsg["tags"], after_nsg["tags"]);
}

#[tokio::test]
async fn a_foreign_write_between_plan_and_apply_is_kept() {
    let env = env("seed").await;
    let outcome = env.plan().await;
    let sql = id("Microsoft.Network/networkSecurityGroups/sql-nsg");
    // Someone adds a rule after asenet read the NSG: its etag changes, asenet's If-Match fails.
    let mut body = asenet::apply::writable(&env.state().get_resource(sql.as_str()).unwrap());
    body["properties"]["securityRules"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "late-foreign", "properties": {
            "priority": 3200, "direction": "Inbound", "access": "Deny", "protocol": "Udp",
            "sourceAddressPrefix": "*", "sourcePortRange": "*",
            "destinationAddressPrefix": "*", "destinationPortRange": "5000"}}));
    env.state().put_raw(sql.as_str(), body).unwrap();
    let events = std::sync::Mutex::new(Vec::new());
    let report = env
        .pipeline
        .apply(&env.specs, &env.scope, outcome, &|e| {
            if let ApplyEvent::Replanning { id, .. } = &e {
                events.lock().unwrap().push(id.clone());
            }
        })
        .await
        .unwrap();
    assert!(report.replans >= 1);
    assert!(events.lock().unwrap().contains(&sql));
    let after = env.state().get_resource(sql.as_str()).unwrap();
    let n = names(&after);
    assert!(n.iter().any(|x| x == "late-foreign"), "{n:?}");
    assert!(n.iter().any(|x| x == "corp-rdp"), "{n:?}");
    assert!(n.iter().any(|x| x.starts_with("asenet-")), "{n:?}");
    assert!(!env.plan().await.plan.has_changes());
}

/// Names of the required rules per NSG, from the desired state.
fn required_rules(outcome: &pipeline::PlanOutcome) -> BTreeMap<ResourceId, Vec<String>> {
    outcome
        .desired
        .network_security_groups
        .iter()
        .map(|(id, n)| {
            (
                id.clone(),
                n.rules
                    .iter()
                    .filter(|r| r.required)
                    .map(|r| r.rule.name.to_ascii_lowercase())
                    .collect(),
            )
        })
        .collect()
}

/// Once an NSG version held every required rule, every later version does.
fn assert_required_rules_never_lost(env: &Env, required: &BTreeMap<ResourceId, Vec<String>>) {
    for (nsg, rules) in required {
        if rules.is_empty() {
            continue;
        }
        let mut had_them = false;
        for (i, version) in env.state().history(nsg.as_str()).iter().enumerate() {
            let present: Vec<String> = names(version)
                .iter()
                .map(|n| n.to_ascii_lowercase())
                .collect();
            let all = rules.iter().all(|r| present.contains(r));
            assert!(
                !had_them || all,
                "{nsg}: version {i} lost a required rule: {present:?}"
            );
            had_them |= all;
        }
        assert!(had_them, "{nsg} never got its required rules");
    }
}

#[tokio::test]
async fn injected_faults_end_in_convergence_without_losing_required_rules() {
    let faults: Vec<(&str, FaultSpec)> = vec![
        (
            "429 storm",
            FaultSpec {
                method: Some("PUT".into()),
                path: Some("networkSecurityGroups".into()),
                count: 6,
                action: FaultAction::Error {
                    status: 429,
                    code: None,
                    message: None,
                    retry_after: Some(1.0),
                },
            },
        ),
        (
            "500s",
            FaultSpec {
                method: None,
                path: Some("routeTables".into()),
                count: 3,
                action: FaultAction::Error {
                    status: 500,
                    code: None,
                    message: None,
                    retry_after: None,
                },
            },
        ),
        (
            "connection reset",
            FaultSpec {
                method: Some("PUT".into()),
                path: Some("networkSecurityGroups".into()),
                count: 2,
                action: FaultAction::Reset,
            },
        ),
        (
            "409 AnotherOperationInProgress",
            FaultSpec {
                method: Some("PUT".into()),
                path: Some("subnets".into()),
                count: 3,
                action: FaultAction::Error {
                    status: 409,
                    code: Some("AnotherOperationInProgress".into()),
                    message: None,
                    retry_after: Some(1.0),
                },
            },
        ),
        (
            "LRO ends Failed (transient)",
            FaultSpec {
                method: Some("PUT".into()),
                path: Some("networkSecurityGroups/ase-one-nsg".into()),
                count: 1,
                action: FaultAction::LroFailed {
                    code: "InternalServerError".into(),
                    message: "injected".into(),
                    keep_write: false,
                },
            },
        ),
    ];
    for (what, fault) in faults {
        let env = env("seed").await;
        // Converge once, then change every NSG under the fault; subnet faults need the
        // first apply (associations are only written then).
        let from_empty = fault.path.as_deref() == Some("subnets");
        if !from_empty {
            env.converge().await;
        }
        env.state().inject_fault(fault);
        let mut specs = env.specs.clone();
        for s in &mut specs {
            s.spec.inbound.push(
                serde_json::from_value(json!({"name": "extra", "service": "Https", "from": [{"cidr": "198.51.100.0/24"}]}))
                    .unwrap(),
            );
        }
        let env = Env {
            specs: specs.clone(),
            scope: pipeline::scope_of(&specs),
            ..env
        };
        let outcome = env.plan().await;
        let required = required_rules(&outcome);
        let result = env
            .pipeline
            .apply(&env.specs, &env.scope, outcome, &|_| {})
            .await;
        if let Err(e) = &result {
            // A clear error is acceptable; a second run must converge.
            eprintln!("{what}: first apply failed: {e}");
            env.apply().await;
        }
        assert!(
            !env.plan().await.plan.has_changes(),
            "{what}: not converged"
        );
        assert!(
            env.state().stats().faults_injected > 0,
            "{what}: fault never fired"
        );
        assert_required_rules_never_lost(&env, &required);
    }
}

/// Makes the operation of the first PUT of NSG `nsg` fail (`SecurityRuleConflict`, the
/// write rolled back), applies the plan and returns the apply's error.
async fn apply_with_failed_nsg(env: &Env, nsg: &str) -> asenet::pipeline::PipelineError {
    env.state().inject_fault(FaultSpec {
        method: Some("PUT".into()),
        path: Some(format!("networkSecurityGroups/{nsg}")),
        count: 1,
        action: FaultAction::LroFailed {
            code: "SecurityRuleConflict".into(),
            message: "rule collides with a policy".into(),
            keep_write: false,
        },
    });
    env.pipeline
        .apply(&env.specs, &env.scope, env.plan().await, &|_| {})
        .await
        .unwrap_err()
}

#[tokio::test]
async fn a_permanently_failed_operation_surfaces_azure_code_and_message() {
    let env = env("seed").await;
    let err = apply_with_failed_nsg(&env, "ase-one-nsg").await;
    let text = format!("{err}");
    assert!(
        text.contains("SecurityRuleConflict") && text.contains("rule collides with a policy"),
        "{text}"
    );
    assert_eq!(err.category(), asenet::azure::ErrorCategory::Permanent);
    // Run again: converges.
    env.converge().await;
}

#[tokio::test]
async fn invalid_specs_write_nothing() {
    // The invalid examples alone: nothing is written.
    let env = env("invalid").await;
    let outcome = env.plan().await;
    assert!(!outcome.plan.errors.is_empty());
    env.state().reset_stats();
    env.pipeline
        .apply(&env.specs, &env.scope, outcome, &|_| {})
        .await
        .unwrap();
    assert_eq!(
        env.state().stats().writes() + env.state().stats().deletes(),
        0
    );

    // A spec that becomes invalid keeps what it owns; the others are still planned.
    let mut env = env_fresh_seed().await;
    env.converge().await;
    let nsg = id("Microsoft.Network/networkSecurityGroups/ase-two-nsg");
    let before = names(&env.state().get_resource(nsg.as_str()).unwrap());
    let mut specs = env.specs.clone();
    for s in &mut specs {
        if s.metadata.name.as_deref() == Some("ase-two") {
            s.spec.inbound[0].from[0] =
                serde_json::from_value(json!({"cidr": "10.0.0.300/24"})).unwrap();
        }
    }
    env.set_specs(specs);
    let outcome = env.plan().await;
    assert!(outcome
        .plan
        .errors
        .iter()
        .any(|e| e.spec == SpecKey::new("network", "ase-two")));
    assert!(outcome.plan.resource(&nsg).is_none_or(|r| !r.has_changes()));
    env.pipeline
        .apply(&env.specs, &env.scope, outcome, &|_| {})
        .await
        .unwrap();
    assert_eq!(
        names(&env.state().get_resource(nsg.as_str()).unwrap()),
        before
    );
}

async fn env_fresh_seed() -> Env {
    env("seed").await
}

#[tokio::test]
async fn removing_a_spec_deletes_only_what_it_owns_and_what_asenet_created_for_it() {
    let env = env("seed").await;
    env.converge().await;
    let two = SpecKey::new("network", "ase-two");
    let scope = Scope::new(env.scope.specs.iter().cloned(), [two.clone()]);
    let outcome = env.pipeline.plan(&env.specs, &scope).await.unwrap();
    let report = env
        .pipeline
        .apply(&env.specs, &scope, outcome, &|_| {})
        .await
        .unwrap();
    let nsg = id("Microsoft.Network/networkSecurityGroups/ase-two-nsg");
    let rt = id("Microsoft.Network/routeTables/ase-two-rt");
    assert!(
        env.state().get_resource(nsg.as_str()).is_none(),
        "{report:#?}"
    );
    assert!(env.state().get_resource(rt.as_str()).is_none());
    let subnet = env
        .state()
        .get_resource(id("Microsoft.Network/virtualNetworks/vnet/subnets/ase-two").as_str())
        .unwrap();
    assert!(
        subnet["properties"].get("networkSecurityGroup").is_none(),
        "{subnet}"
    );
    assert!(subnet["properties"].get("routeTable").is_none(), "{subnet}");
    // ase-one and the foreign rule are untouched.
    let sql = env
        .state()
        .get_resource(id("Microsoft.Network/networkSecurityGroups/sql-nsg").as_str())
        .unwrap();
    assert!(names(&sql).iter().any(|n| n == "corp-rdp"));
    assert!(names(&sql).iter().any(|n| n.starts_with("asenet-ase-one")));
    assert!(env
        .state()
        .get_resource(id("Microsoft.Network/networkSecurityGroups/ase-one-nsg").as_str())
        .is_some());
    // Orphan leaves Azure alone.
    let env = env_fresh_seed().await;
    env.converge().await;
    let mut specs = env.specs.clone();
    for s in &mut specs {
        s.spec.deletion_policy = asenet::api::DeletionPolicy::Orphan;
    }
    let scope = Scope::new(env.scope.specs.iter().cloned(), [two]);
    env.state().reset_stats();
    let outcome = env.pipeline.plan(&specs, &scope).await.unwrap();
    assert!(!outcome.plan.has_changes(), "{:#?}", outcome.plan);
    env.pipeline
        .apply(&specs, &scope, outcome, &|_| {})
        .await
        .unwrap();
    assert_eq!(
        env.state().stats().writes() + env.state().stats().deletes(),
        0
    );
}

#[tokio::test]
async fn removing_a_spec_dissociates_its_nsg_and_route_table_in_one_subnet_put() {
    // One PUT per changed parent holds on delete too: the subnet loses both associations in
    // one write (a second write would also change every subnet etag of the VNet again).
    let env = env("seed").await;
    env.converge().await;
    let two = SpecKey::new("network", "ase-two");
    let scope = Scope::new(env.scope.specs.iter().cloned(), [two]);
    let outcome = env.pipeline.plan(&env.specs, &scope).await.unwrap();
    env.state().reset_stats();
    let report = env
        .pipeline
        .apply(&env.specs, &scope, outcome, &|_| {})
        .await
        .unwrap();
    let stats = env.state().stats();
    let subnet_puts: u64 = stats
        .by_request
        .iter()
        .filter(|(k, _)| k.starts_with("PUT subnets "))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(subnet_puts, 1, "{:?}", stats.by_request);
    let subnet = id("Microsoft.Network/virtualNetworks/vnet/subnets/ase-two");
    let dissociations: Vec<_> = report
        .written
        .iter()
        .filter(|w| w.action == asenet::apply::WriteAction::Dissociate)
        .collect();
    assert_eq!(dissociations.len(), 1, "{report:#?}");
    assert_eq!(dissociations[0].id, subnet);
    // Both associations are counted as destroyed, in that one write.
    assert_eq!(dissociations[0].counts, (0, 0, 2));
    let body = env.state().get_resource(subnet.as_str()).unwrap();
    assert!(body["properties"].get("networkSecurityGroup").is_none());
    assert!(body["properties"].get("routeTable").is_none());
    // The two parents asenet created are deleted: one DELETE each.
    assert_eq!(stats.deletes(), 2, "{:?}", stats.by_request);
}

#[test]
fn the_committed_mock_seed_is_the_one_generated_from_the_seed_snapshot() {
    let snapshot = asenet::load::load_snapshot(&azure("seed").join("snapshot.yaml")).unwrap();
    let (valid, _) = asenet::validate::validate_all(&specs_of(&example("seed")));
    let generated = asenet::fixture::mock_seed::seed_value(&snapshot, &valid);
    let path = azure("seed").join("mock-seed.yaml");
    if std::env::var_os("ASENET_REGENERATE").is_some() {
        let header = "# The mock ARM seed of `asenet demo`: the topology of snapshot.yaml in this folder, in\n\
                      # mock-server's seed format (mock-server/README.md). Generated by asenet::fixture::mock_seed;\n\
                      # regenerate with: ASENET_REGENERATE=1 cargo test --test it pipeline::the_committed_mock_seed\n";
        std::fs::write(
            &path,
            format!("{header}{}", serde_yaml::to_string(&generated).unwrap()),
        )
        .unwrap();
    }
    let committed: Value = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        committed, generated,
        "examples/azure/seed/mock-seed.yaml is stale: ASENET_REGENERATE=1 cargo test --test it pipeline::the_committed_mock_seed"
    );
}

#[test]
fn asenet_demo_runs_from_a_directory_without_the_source_tree() {
    // An installed binary or the container image has no examples/ folder next to it: the
    // demo's specs and topology are compiled in. The binary is copied out of the target
    // directory and run from an empty directory; where unprivileged mount namespaces work
    // (`unshare`), the source tree is also hidden under an empty tmpfs, so that no path
    // compiled into the binary (CARGO_MANIFEST_DIR) can be read either.
    let bin_dir = tempfile::tempdir().unwrap();
    let bin = bin_dir.path().join("asenet");
    std::fs::copy(env!("CARGO_BIN_EXE_asenet"), &bin).unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let source_tree = env!("CARGO_MANIFEST_DIR");
    let hidden = std::process::Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "true"])
        .output()
        .is_ok_and(|o| o.status.success());
    let mut cmd = if hidden {
        let mut c = std::process::Command::new("unshare");
        c.args(["--user", "--map-root-user", "--mount", "sh", "-c"])
            .arg(r#"mount -t tmpfs none "$1" && test ! -e "$1/examples" && exec "$2" demo"#)
            .args(["sh", source_tree])
            .arg(&bin);
        c
    } else {
        eprintln!("unshare unavailable: the source tree stays visible to the demo");
        let mut c = std::process::Command::new(&bin);
        c.arg("demo");
        c
    };
    let out = cmd
        .current_dir(cwd.path())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("Demo complete: every step behaved as expected."),
        "{stdout}"
    );
    assert!(!stdout.contains("FAILED"), "{stdout}");
    // Nothing was written to the working directory.
    assert_eq!(std::fs::read_dir(cwd.path()).unwrap().count(), 0);
}

#[test]
fn controller_text_logs_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    // A pipe (a container runtime, a log collector) must get plain text. The API server is
    // a closed loopback port: the controller logs its start-up and the failing requests.
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
             clusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:{port}'}}}}]\n\
             users: [{{name: u, user: {{token: t}}}}]\n\
             contexts: [{{name: c, context: {{cluster: c, user: u, namespace: default}}}}]\n"
        ),
    )
    .unwrap();
    let log = dir.path().join("stderr");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_asenet"))
        .args([
            "controller",
            "--log-format",
            "text",
            "--leader-election=false",
        ])
        .args([
            "--metrics-addr",
            "127.0.0.1:0",
            "--credential",
            "static",
            "--token",
            "t",
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "debug")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let exited = child.try_wait().unwrap().is_some();
        if text.contains("INFO") || exited || std::time::Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(text.contains("INFO"), "no log line seen: {text}");
    assert!(!text.contains('\x1b'), "ANSI escape codes in: {text:?}");
}

#[tokio::test]
async fn the_cli_plan_exits_2_then_0_after_apply() {
    let env = env("seed").await;
    let bin = env!("CARGO_BIN_EXE_asenet");
    let url = env.mock.base_url.clone();
    let dir = example("seed");
    let run = |args: &[&str]| {
        let url = url.clone();
        let dir = dir.clone();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        async move {
            tokio::task::spawn_blocking(move || {
                std::process::Command::new(bin)
                    .args(&args)
                    .arg("-f")
                    .arg(&dir)
                    .args(["--endpoint", &url, "--credential", "static", "--token", "t"])
                    .arg("--service-tags")
                    .arg(azure("seed").join("snapshot.yaml"))
                    .stdin(std::process::Stdio::null())
                    .output()
                    .unwrap()
            })
            .await
            .unwrap()
        }
    };
    let plan = run(&["plan"]).await;
    let stdout = String::from_utf8_lossy(&plan.stdout);
    assert_eq!(
        plan.status.code(),
        Some(2),
        "{stdout}\n{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    assert!(stdout.contains("Plan: "), "{stdout}");
    // Without a terminal, apply refuses to prompt.
    let refused = run(&["apply"]).await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--auto-approve"));
    let apply = run(&["apply", "--auto-approve"]).await;
    let stdout = String::from_utf8_lossy(&apply.stdout);
    assert_eq!(
        apply.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&apply.stderr)
    );
    assert!(stdout.contains("Apply complete! Resources: "), "{stdout}");
    let again = run(&["plan"]).await;
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    let verify = run(&["verify"]).await;
    assert_eq!(
        verify.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}

#[tokio::test]
async fn the_cli_apply_never_writes_a_resource_a_plan_mode_spec_contributes_to() {
    let env = env("seed").await;
    let bin = env!("CARGO_BIN_EXE_asenet");
    // The seed's specs, with ase-two switched to mode Plan.
    let dir = tempfile::tempdir().unwrap();
    for name in ["ase-one.yaml", "ase-two.yaml"] {
        let text = std::fs::read_to_string(example("seed").join(name)).unwrap();
        let text = if name == "ase-two.yaml" {
            text.replace("spec:\n", "spec:\n  mode: Plan\n")
        } else {
            text
        };
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let url = env.mock.base_url.clone();
    let tags = azure("seed").join("snapshot.yaml");
    let specs_dir = dir.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin)
            .args(["apply", "--auto-approve", "-f"])
            .arg(&specs_dir)
            .args(["--endpoint", &url, "--credential", "static", "--token", "t"])
            .arg("--service-tags")
            .arg(&tags)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("Not applying"), "{stdout}");
    let nsg = |name: &str| {
        env.mock.state.get_resource(&format!(
            "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/network/providers/Microsoft.Network/networkSecurityGroups/{name}"
        ))
    };
    assert!(
        nsg("ase-two-nsg").is_none(),
        "ase-two is in mode Plan: its NSG must not be created"
    );
    assert!(
        nsg("ase-one-nsg").is_some(),
        "ase-one is in mode Apply: its NSG is created"
    );
}

#[test]
fn pipeline_futures_are_send() {
    fn is_send<T: Send>(_: &T) {}
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let arm = ArmClient::new(
            "http://127.0.0.1:9",
            Arc::new(StaticToken::new("t")),
            Arc::new(asenet::azure::http_client(None, Duration::from_secs(1)).unwrap()),
            fast_options(),
        )
        .unwrap();
        let p = Pipeline::new(arm, PipelineOptions::default());
        let specs: Vec<AseConnectivity> = vec![];
        let scope = Scope::default();
        is_send(&p.plan(&specs, &scope));
        let outcome = pipeline::PlanOutcome {
            snapshot: Default::default(),
            desired: Default::default(),
            plan: Default::default(),
        };
        is_send(&p.apply(&specs, &scope, outcome, &|_| {}));
        is_send(&p.verify(&specs));
    });
}

#[tokio::test]
async fn the_observer_counts_every_arm_request_by_verb_and_status() {
    #[derive(Default)]
    struct Count(std::sync::Mutex<BTreeMap<String, u64>>);
    impl asenet::azure::ArmObserver for Count {
        fn on_response(&self, method: &str, resource_type: &str, status: u16) {
            *self
                .0
                .lock()
                .unwrap()
                .entry(format!("{method} {resource_type} {status}"))
                .or_default() += 1;
        }
    }
    let env = env("seed").await;
    let count = Arc::new(Count::default());
    let pipeline = Pipeline::new(
        env.pipeline.arm().clone().with_observer(count.clone()),
        env.pipeline.options().clone(),
    );
    env.state().reset_stats();
    pipeline.plan(&env.specs, &env.scope).await.unwrap();
    let seen = count.0.lock().unwrap().clone();
    let stats = env.state().stats();
    assert_eq!(
        seen.values().sum::<u64>(),
        stats.total,
        "{seen:?} vs {stats:?}"
    );
    assert_eq!(
        seen.get("GET networkSecurityGroups 200"),
        Some(&1),
        "{seen:?}"
    );
    assert_eq!(
        seen.get("GET networkSecurityGroups 404"),
        Some(&2),
        "{seen:?}"
    );
}

/// Records `(started?, id)` of every write, in order.
#[derive(Default)]
struct WriteLog(std::sync::Mutex<Vec<(bool, ResourceId)>>);

impl WriteLog {
    fn on(&self, e: ApplyEvent) {
        let mark = match e {
            ApplyEvent::Started { id, .. } => (true, id),
            ApplyEvent::Done { id, .. } => (false, id),
            _ => return,
        };
        self.0.lock().unwrap().push(mark);
    }
    fn position(&self, started: bool, id: &ResourceId) -> Option<usize> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .position(|(s, i)| *s == started && i == id)
    }
}

#[tokio::test]
async fn a_write_ends_on_its_operation_status_without_reading_the_resource_again() {
    // Four ASE subnets in one VNet, four NSGs to create: subnet writes are serialised per
    // VNet and each one's If-Match is the etag the previous subnet PUT answered.
    let env = env("layered").await;
    let first = env.plan().await;
    let subnets = first
        .plan
        .changed()
        .filter(|r| r.kind == asenet::diff::ResourceKind::Subnet)
        .count();
    assert!(subnets >= 2, "{:#?}", first.plan);
    env.state().reset_stats();
    let report = env
        .pipeline
        .apply(&env.specs, &env.scope, first, &|_| {})
        .await
        .unwrap();
    let stats = env.state().stats();
    assert_eq!(report.replans, 0, "no 412: every etag used was current");
    assert!(stats.reads() > 0);
    assert_eq!(
        stats.reads(),
        stats.count("GET", "operations", 200),
        "the only reads of an apply are operation polls: {stats:?}"
    );
    assert_eq!(stats.writes(), report.writes() as u64);
    // The next plan reads what the apply wrote: nothing left to do.
    let again = env.plan().await;
    assert!(!again.plan.has_changes(), "{:#?}", again.plan);

    // What `put` returns is what a GET returns once the operation succeeded.
    let nsg = id("Microsoft.Network/networkSecurityGroups/fe1ase-nsg");
    let arm = env.pipeline.arm();
    let mut body = asenet::apply::writable(&arm.read_raw(&nsg).await.unwrap());
    body["tags"] = json!({"team": "web"});
    let returned = arm.put(&nsg, body.clone(), None, &|_| {}).await.unwrap();
    let read = arm.read_raw(&nsg).await.unwrap();
    assert_eq!(
        returned["properties"]["provisioningState"],
        json!("Succeeded")
    );
    assert_eq!(returned, read);
}

#[tokio::test]
async fn a_subnet_is_written_after_its_nsg_and_not_at_all_when_that_write_failed() {
    let first = env("layered").await;
    let log = WriteLog::default();
    first
        .pipeline
        .apply(&first.specs, &first.scope, first.plan().await, &|e| {
            log.on(e)
        })
        .await
        .unwrap();
    for ase in ["fe1ase", "fe2ase", "fe3ase", "apiase"] {
        let nsg = id(&format!(
            "Microsoft.Network/networkSecurityGroups/{ase}-nsg"
        ));
        let subnet = id(&format!(
            "Microsoft.Network/virtualNetworks/layered-vnet/subnets/{ase}"
        ));
        let nsg_done = log.position(false, &nsg).expect("NSG written");
        let subnet_started = log.position(true, &subnet).expect("subnet written");
        assert!(nsg_done < subnet_started, "{ase}: {:?}", log.0.lock());
    }

    // The creation of one NSG fails: its subnet is not associated, the others are.
    let env = env("layered").await;
    let err = apply_with_failed_nsg(&env, "fe2ase-nsg").await;
    assert!(format!("{err}").contains("SecurityRuleConflict"), "{err}");
    let subnet = |name: &str| {
        env.state()
            .history(&format!(
                "{SUB}/Microsoft.Network/virtualNetworks/layered-vnet"
            ))
            .last()
            .and_then(|v| {
                v.pointer("/properties/subnets")?
                    .as_array()?
                    .iter()
                    .find(|s| s["name"] == json!(name))
                    .cloned()
            })
            .unwrap()
    };
    assert!(
        subnet("fe2ase")
            .pointer("/properties/networkSecurityGroup")
            .is_none(),
        "{}",
        subnet("fe2ase")
    );
    assert!(subnet("fe1ase")
        .pointer("/properties/networkSecurityGroup/id")
        .is_some());
    env.converge().await;
}

#[tokio::test]
async fn four_or_more_nsgs_in_a_resource_group_are_read_with_one_list() {
    let env = env("layered").await;
    env.converge().await;
    let names = ["fe1ase", "fe2ase", "fe3ase", "apiase"];
    let mut targets = Targets::default();
    for n in names {
        targets.network_security_groups.insert(id(&format!(
            "Microsoft.Network/networkSecurityGroups/{n}-nsg"
        )));
    }
    // One more in the same group that does not exist: absent from the list = absent.
    let missing = id("Microsoft.Network/networkSecurityGroups/nobody-nsg");
    targets.network_security_groups.insert(missing.clone());
    env.state().reset_stats();
    let snap = asenet::observe::observe(env.pipeline.arm(), &targets, &ServiceTags::default(), 8)
        .await
        .unwrap();
    let stats = env.state().stats();
    assert_eq!(
        stats.count("GET", "networkSecurityGroups", 200),
        1,
        "one list: {stats:?}"
    );
    assert_eq!(stats.reads(), 1, "{stats:?}");
    assert!(!snap.network_security_groups.contains_key(&missing));
    for n in names {
        let nsg = id(&format!("Microsoft.Network/networkSecurityGroups/{n}-nsg"));
        let listed = snap.network_security_groups.get(&nsg).expect("listed");
        let got = env.pipeline.arm().get_nsg(&nsg).await.unwrap().unwrap();
        assert_eq!(listed.etag, got.etag, "{n}");
        // Kept as a GET of it would be kept.
        let got = asenet::azure::wire::nsg_state(&nsg, got).unwrap();
        assert_eq!(listed.raw, got.raw, "{n}");
        assert_eq!(listed.raw_rules, got.raw_rules, "{n}");
        // The rules asenet wrote come back exactly as ARM answers its rendering: reproduced
        // from the model when carried, not held as text (issue 14's memory).
        let owned: Vec<_> = listed
            .rules
            .iter()
            .filter(|r| r.name.starts_with(asenet::resolver::OWNED_PREFIX))
            .collect();
        assert!(!owned.is_empty(), "{n}");
        for r in owned {
            assert_eq!(
                listed.raw_rules.get(&r.name.to_ascii_lowercase()),
                Some(&asenet::snapshot::RawChild::AsRendered),
                "{n}: {}",
                r.name
            );
        }
        assert!(!listed.rules.is_empty(), "{n}");
    }
}
