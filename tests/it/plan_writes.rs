//! The plan carries every write (issue 15): executing a plan against the mock ARM server
//! sends exactly the PUTs and DELETEs `Plan::writes` lists, no more and no fewer, for
//! generated spec sets that are applied, then changed and partly removed
//! (`deletionPolicy: Delete`: owned entries deleted, created parents dissociated and
//! deleted).
//!
//! Reuses the topology and spec generator of `ownership` (a VNet with four ASE subnets,
//! NSGs and route tables some of which exist with foreign entries).

use std::collections::BTreeMap;

use asenet::api::AseConnectivity;
use asenet::diff::{ParentAction, Plan, ResourceKind, Scope, WriteVerb};
use asenet::model::SpecKey;
use asenet::pipeline;
use proptest::prelude::*;

use super::ownership::{apply, block_on, gen, net, spec, start, Gen};

/// `(verb, collection)` → how many, as the plan lists them.
fn planned_counts(plan: &Plan) -> BTreeMap<(String, String), u64> {
    let mut out = BTreeMap::new();
    for w in plan.writes() {
        let verb = match w.verb {
            WriteVerb::Put => "PUT",
            WriteVerb::Delete => "DELETE",
        };
        let collection = asenet::report::kind_collection(w.kind);
        *out.entry((verb.to_string(), collection.to_string()))
            .or_default() += 1;
    }
    out
}

/// `(verb, collection)` → how many successful PUTs and DELETEs the mock answered.
fn sent_counts(mock: &mock_arm::RunningMock) -> BTreeMap<(String, String), u64> {
    let mut out = BTreeMap::new();
    for (key, n) in mock.state.stats().by_request {
        let mut parts = key.split(' ');
        let (Some(verb), Some(kind), Some(status)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if (verb == "PUT" || verb == "DELETE") && status.starts_with('2') {
            *out.entry((verb.to_string(), kind.to_string())).or_default() += n;
        }
    }
    out
}

/// The association of a subnet with a resource of `kind`, in the mock.
fn associated(mock: &mock_arm::RunningMock, subnet: &str, kind: ResourceKind) -> Option<String> {
    let field = match kind {
        ResourceKind::NetworkSecurityGroup => "networkSecurityGroup",
        _ => "routeTable",
    };
    mock.state.get_resource(subnet)?["properties"][field]["id"]
        .as_str()
        .map(str::to_ascii_lowercase)
}

/// Converges `gens`, then plans the specs changed to `changed` (where given) with those
/// `removed` being removed, executes that plan and compares what the mock received with
/// the plan's write list. Returns the plan.
async fn check(gens: &[Gen], changed: &[Option<Gen>], removed: &[bool]) -> Plan {
    let full: Vec<AseConnectivity> = gens.iter().enumerate().map(|(i, g)| spec(i, g)).collect();
    let (mock, p) = start(&full).await;
    apply(&p, &full).await;

    let gone = |i: usize| removed.get(i).copied().unwrap_or(false);
    let specs: Vec<AseConnectivity> = gens
        .iter()
        .enumerate()
        .map(|(i, g)| match changed.get(i).and_then(Option::as_ref) {
            Some(c) if !gone(i) => spec(i, c),
            _ => spec(i, g),
        })
        .collect();
    let keys: Vec<SpecKey> = specs.iter().map(pipeline::spec_key).collect();
    let scope = Scope::new(
        keys.iter()
            .enumerate()
            .filter(|(i, _)| !gone(*i))
            .map(|(_, k)| k.clone()),
        keys.iter()
            .enumerate()
            .filter(|(i, _)| gone(*i))
            .map(|(_, k)| k.clone()),
    );
    let outcome = p.plan(&specs, &scope).await.unwrap();
    let plan = outcome.plan.clone();
    let parents: Vec<_> = plan
        .resources
        .iter()
        .filter(|r| r.kind != ResourceKind::Subnet)
        .map(|r| (r.clone(), mock.state.history(r.id.as_str()).len()))
        .collect();
    let subnets: Vec<String> = (0..4)
        .map(|i| net(&format!("virtualNetworks/vnet/subnets/ase-{i}")))
        .collect();
    let kinds = [ResourceKind::NetworkSecurityGroup, ResourceKind::RouteTable];
    let before: Vec<Vec<Option<String>>> = subnets
        .iter()
        .map(|s| kinds.iter().map(|k| associated(&mock, s, *k)).collect())
        .collect();
    mock.state.reset_stats();
    let report = p.apply(&specs, &scope, outcome, &|_| {}).await.unwrap();
    assert_eq!(report.replans, 0, "no 412 is expected against a quiet mock");

    // By verb and collection: exactly the requests listed.
    assert_eq!(sent_counts(&mock), planned_counts(&plan), "{plan:#?}");
    // Per NSG and route table: one new version per listed PUT, gone when deleted.
    for (r, versions) in &parents {
        let puts = r.writes().iter().filter(|v| **v == WriteVerb::Put).count();
        assert_eq!(
            mock.state.history(r.id.as_str()).len(),
            versions + puts,
            "{}: {:?}",
            r.id,
            r.writes()
        );
        let exists = mock.state.get_resource(r.id.as_str()).is_some();
        assert_eq!(exists, r.action != ParentAction::Delete, "{}", r.id);
    }
    // Per subnet: the associations the plan changes are what it says, the others as before.
    for (subnet, before) in subnets.iter().zip(&before) {
        let planned = plan
            .resources
            .iter()
            .find(|r| r.id.as_str().eq_ignore_ascii_case(subnet))
            .and_then(|r| r.association.clone());
        for (kind, was) in kinds.iter().zip(before) {
            let change = planned.as_ref().and_then(|a| match kind {
                ResourceKind::NetworkSecurityGroup => a.network_security_group.clone(),
                _ => a.route_table.clone(),
            });
            let want = match change {
                Some(c) => c.to.map(|t| t.as_str().to_ascii_lowercase()),
                None => was.clone(),
            };
            assert_eq!(associated(&mock, subnet, *kind), want, "{subnet} {kind:?}");
        }
    }
    // Executing converged: nothing is left to write.
    let again = p.plan(&specs, &scope).await.unwrap().plan;
    assert!(again.writes().is_empty(), "{again:#?}");
    plan
}

/// The case the issue names: a spec alone in an NSG and a route table asenet created for it
/// is removed; the plan lists the emptying PUTs, the one subnet PUT taking both
/// associations away, and the two DELETEs, and executing it sends exactly those.
#[tokio::test]
async fn removing_the_only_spec_of_created_parents_sends_exactly_the_planned_deletes() {
    let g = |nsg| Gen {
        nsg,
        route: Some((nsg, false)),
        sources: vec![1],
        backend: false,
        peer: None,
    };
    let plan = check(&[g(0), g(1)], &[], &[false, true]).await;
    let writes = plan.writes();
    let count = |verb, kind| {
        writes
            .iter()
            .filter(|w| w.verb == verb && w.kind == kind)
            .count()
    };
    assert_eq!(
        count(WriteVerb::Delete, ResourceKind::NetworkSecurityGroup),
        1,
        "{plan:#?}"
    );
    assert_eq!(
        count(WriteVerb::Delete, ResourceKind::RouteTable),
        1,
        "{plan:#?}"
    );
    assert_eq!(count(WriteVerb::Put, ResourceKind::Subnet), 1, "{plan:#?}");
    let subnet = plan
        .resources
        .iter()
        .find(|r| r.kind == ResourceKind::Subnet && r.has_changes())
        .unwrap();
    assert!(subnet.only_dissociates(), "{subnet:#?}");
    assert!(subnet.id.as_str().ends_with("ase-1"));
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 16,
        max_shrink_iters: 10,
        ..ProptestConfig::default()
    })]

    /// Any spec set, then any changes and removals: see `check`.
    #[test]
    fn executing_a_plan_sends_exactly_the_writes_it_lists(
        gens in proptest::collection::vec(gen(), 1..=4),
        changed in proptest::collection::vec(proptest::option::weighted(0.4, gen()), 4),
        removed in proptest::collection::vec(proptest::bool::weighted(0.4), 4),
    ) {
        block_on(check(&gens, &changed, &removed));
    }
}
