//! A component planned in parts (`controller::parts`, issue 14's memory) is planned as it
//! is whole: the same desired state, the same plan, every resource read by one part only.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use asenet::api::AseConnectivity;
use asenet::controller::parts;
use asenet::diff::{Plan, ResourcePlan, Scope};
use asenet::model::SpecKey;
use asenet::observe::ServiceTags;
use asenet::pipeline::{PipelineOptions, PlanOutcome};
use asenet::resolver::{Desired, SpecOutcome};

use crate::diff::specgen;

/// The generator's world of `n` specs with what makes parts interesting: a spec others
/// reference that fails validation, one name in two namespaces (hashed rule names, the
/// two specs in different parts), two specs of one back-end NSG with one band (one is
/// withdrawn when merged), and a spec whose subnet is missing.
fn world(n: usize) -> (Vec<Arc<AseConnectivity>>, asenet::snapshot::Snapshot) {
    let specgen::World {
        mut specs,
        snapshot,
    } = specgen::generate(n);
    specs[7].spec.network_security_group.resource_id = "not-an-id".into();
    // team-0/ase-00041 (in the fifth part) beside team-1/ase-00041 (in the third).
    specs[280].metadata.name = specs[41].metadata.name.clone();
    let band = specs[25].spec.backends[0].network_security_group.priorities;
    specs[26].spec.backends[0].network_security_group.priorities = band;
    specs[233].spec.subnet.resource_id = specs[233]
        .spec
        .subnet
        .resource_id
        .replace("/subnets/", "/subnets/missing-");
    let mut specs: Vec<Arc<AseConnectivity>> = specs.into_iter().map(Arc::new).collect();
    // As the controller's component view holds them.
    specs.sort_by_key(|s| s.spec_key());
    (specs, snapshot)
}

async fn pipeline(
    snapshot: &asenet::snapshot::Snapshot,
    specs: &[Arc<AseConnectivity>],
) -> (mock_arm::RunningMock, asenet::pipeline::Pipeline) {
    let (valid, _) = asenet::validate::validate_all(specs);
    let seed = asenet::fixture::mock_seed::seed(snapshot, &valid).unwrap();
    let config = mock_arm::Config {
        lro_delay: Duration::from_millis(1),
        lro_retry_after: Duration::from_millis(1),
        ..mock_arm::Config::default()
    };
    let asenet::fixture::harness::MockPipeline { mock, pipeline } =
        asenet::fixture::harness::start(
            seed,
            config,
            asenet::azure::ArmClientOptions {
                lro_default_poll: Duration::from_millis(5),
                ..Default::default()
            },
            PipelineOptions {
                service_tags: ServiceTags(snapshot.service_tags.values().cloned().collect()),
                ..PipelineOptions::default()
            },
        )
        .await
        .unwrap();
    (mock, pipeline)
}

/// The union of the parts' plans, as the whole plan orders it.
fn joined(outcomes: &[PlanOutcome]) -> (Desired, Plan) {
    let mut desired = Desired::default();
    let mut plan = Plan::default();
    for o in outcomes {
        let d = o.desired.clone();
        for (k, v) in d.network_security_groups {
            assert!(
                desired.network_security_groups.insert(k, v).is_none(),
                "an NSG in two parts"
            );
        }
        for (k, v) in d.route_tables {
            assert!(
                desired.route_tables.insert(k, v).is_none(),
                "a route table in two parts"
            );
        }
        for (k, v) in d.subnets {
            assert!(
                desired.subnets.insert(k, v).is_none(),
                "a subnet in two parts"
            );
        }
        for (k, v) in d.specs {
            assert!(desired.specs.insert(k, v).is_none(), "a spec in two parts");
        }
        plan.resources.extend(o.plan.resources.iter().cloned());
        plan.errors.extend(o.plan.errors.iter().cloned());
    }
    let order = |r: &ResourcePlan| (r.kind, r.id.clone());
    plan.resources.sort_by_key(order);
    plan.errors
        .sort_by_key(|e| (e.spec.clone(), e.field.clone()));
    (desired, plan)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_planned_in_parts_is_planned_as_it_is_whole() {
    let (specs, snapshot) = world(300);
    let (mock, pipeline) = pipeline(&snapshot, &specs).await;
    // The ASEs read (found): their addresses, `capacities/virtualip`.
    let environment_reads = || -> u64 {
        (mock.state.stats().by_request.iter())
            .filter(|(k, _)| k.starts_with("GET ") && k.ends_with(" 200"))
            .filter(|(k, _)| k.contains("hostingEnvironments") || k.contains("capacities"))
            .map(|(_, n)| n)
            .sum()
    };
    let scope = Scope::new(specs.iter().map(|s| s.spec_key()), []);
    let before = environment_reads();
    let whole = pipeline.plan(&specs, &scope).await.unwrap();
    let whole_environment_reads = environment_reads() - before;

    let cut = parts::parts(&specs, 60);
    assert!(cut.len() >= 5, "{} parts", cut.len());
    // Every member in one part.
    let mut seen: Vec<usize> = cut.iter().flatten().copied().collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..specs.len()).collect::<Vec<_>>());
    let inputs = parts::inputs(&specs, &scope, &cut);
    let mut outcomes = Vec::new();
    let before = environment_reads();
    for (given, part_scope) in &inputs {
        outcomes.push(pipeline.plan(given, part_scope).await.unwrap());
    }
    // An ASE several parts reference is read once, as the whole plan reads it.
    assert!(whole_environment_reads > 0);
    assert_eq!(environment_reads() - before, whole_environment_reads);
    // Each part read only its own: no NSG, route table or subnet read twice, and nothing
    // read that the whole plan did not read.
    let read: usize = (outcomes.iter())
        .map(|o| o.snapshot.network_security_groups.len() + o.snapshot.route_tables.len())
        .sum();
    assert_eq!(
        read,
        whole.snapshot.network_security_groups.len() + whole.snapshot.route_tables.len()
    );

    let (desired, mut plan) = joined(&outcomes);
    let mut expected = whole.plan.clone();
    expected.resources.sort_by_key(|r| (r.kind, r.id.clone()));
    expected
        .errors
        .sort_by_key(|e| (e.spec.clone(), e.field.clone()));
    assert_eq!(desired, whole.desired);
    assert_eq!(plan.errors, expected.errors);
    assert_eq!(plan.resources.len(), expected.resources.len());
    for (a, b) in plan.resources.iter().zip(&expected.resources) {
        assert_eq!(a, b, "{}", b.id);
    }
    plan.resources.clear();

    // The cases were there: failures of each kind, hashed names, and writes.
    let failed: BTreeMap<&SpecKey, usize> = (whole.desired.specs.iter())
        .filter_map(|(k, o)| match o {
            SpecOutcome::Failed { errors } => Some((k, errors.len())),
            SpecOutcome::Resolved(_) => None,
        })
        .collect();
    assert!(failed.len() >= 4, "{failed:?}");
    assert!(whole.plan.has_changes());
    let hashed: Vec<&SpecKey> = (whole.desired.network_security_groups.values())
        .flat_map(|n| &n.rules)
        .filter(|r| {
            let stem = asenet::resolver::names::stem(&r.owner, true);
            &*r.owner.name == "ase-00041" && r.rule.name.starts_with(&format!("asenet-{stem}-"))
        })
        .map(|r| &r.owner)
        .collect();
    assert!(!hashed.is_empty());
}
