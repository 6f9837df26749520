//! Exact ownership (issue 12, defect 1): applying a subset of the specs never deletes or
//! changes an entry owned by a spec outside the subset, in a shared route table as in a
//! shared NSG, and never touches a foreign entry; and after any sequence of subset
//! applies, the plan of the full set targets exactly what it targets from scratch.
//!
//! Everything here runs the real pipeline against the in-process mock ARM server. The
//! specs and the topology are built in this file, so nothing depends on the example
//! folders.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use asenet::api::AseConnectivity;
use asenet::azure::{ArmClientOptions, RetryConfig};
use asenet::diff::{Plan, ResourceKind};
use asenet::model::SpecKey;
use asenet::pipeline::{self, Pipeline, PipelineOptions};
use asenet::snapshot::Snapshot;
use mock_arm::RunningMock;
use proptest::prelude::*;
use serde_json::Value;

const SUB: &str = "00000000-0000-0000-0000-000000000001";

pub(super) fn net(path: &str) -> String {
    format!("/subscriptions/{SUB}/resourceGroups/network/providers/Microsoft.Network/{path}")
}

/// The NSGs and route tables the generated specs may share.
fn parents() -> Vec<String> {
    vec![
        net("networkSecurityGroups/nsg-0"),
        net("networkSecurityGroups/nsg-1"),
        net("networkSecurityGroups/sql-nsg"),
        net("routeTables/rt-0"),
        net("routeTables/rt-1"),
    ]
}

/// A VNet with four ASE subnets and a SQL subnet; nsg-0 and sql-nsg exist with a foreign
/// rule each, rt-0 exists with a foreign route.
fn snapshot() -> Snapshot {
    let subnets: String = (0..4)
        .map(|i| {
            format!(
                "  - {{id: {}, addressPrefix: 10.0.{i}.0/26}}\n",
                net(&format!("virtualNetworks/vnet/subnets/ase-{i}"))
            )
        })
        .collect();
    let rule = |name: &str, priority: u32| {
        format!("      - {{name: {name}, priority: {priority}, direction: Inbound, access: Allow, protocol: Tcp, source: 172.16.0.0/12, sourcePorts: '*', destination: '*', destinationPorts: '3389', description: corp}}\n")
    };
    let yaml = format!(
        "virtualNetworks:\n  - {{id: {vnet}, location: westeurope, addressPrefixes: [10.0.0.0/16]}}\nsubnets:\n{subnets}  - {{id: {sql}, addressPrefix: 10.0.9.0/24}}\nnetworkSecurityGroups:\n  - id: {nsg0}\n    location: westeurope\n    rules:\n{r0}  - id: {sqlnsg}\n    location: westeurope\n    rules:\n{r1}routeTables:\n  - id: {rt0}\n    location: westeurope\n    routes:\n      - {{name: corp-onprem, addressPrefix: 172.16.0.0/12, nextHopType: VirtualNetworkGateway}}\n",
        vnet = net("virtualNetworks/vnet"),
        sql = net("virtualNetworks/vnet/subnets/sql"),
        nsg0 = net("networkSecurityGroups/nsg-0"),
        sqlnsg = net("networkSecurityGroups/sql-nsg"),
        rt0 = net("routeTables/rt-0"),
        r0 = rule("corp-rdp", 4000),
        r1 = rule("corp-sql-admin", 4001),
    );
    serde_yaml::from_str(&yaml).unwrap()
}

/// One generated spec.
#[derive(Debug, Clone)]
pub(super) struct Gen {
    pub nsg: usize,
    /// Route table, and whether the tunnel is handled by a service-tag route.
    pub route: Option<(usize, bool)>,
    /// Third octets of /24 sources of an inbound `Https` entry.
    pub sources: Vec<u8>,
    /// Calls the SQL back end (in sql-nsg, a band of its own).
    pub backend: bool,
    /// Admits `ase-<n>` too (which may be outside the subset, or not exist at all: the
    /// spec then fails to resolve and keeps what it owns).
    pub peer: Option<u8>,
}

pub(super) fn gen() -> impl Strategy<Value = Gen> {
    (
        0..2usize,
        proptest::option::of((0..2usize, any::<bool>())),
        proptest::collection::vec(0..8u8, 1..3),
        any::<bool>(),
        proptest::option::weighted(0.3, 0..4u8),
    )
        .prop_map(|(nsg, route, sources, backend, peer)| Gen {
            nsg,
            route,
            sources,
            backend,
            peer,
        })
}

/// Spec `ase-<i>`: its own band in whichever NSG it uses (bands of specs sharing an NSG
/// never overlap), so where its rules land depends on nothing but itself.
pub(super) fn spec(i: usize, g: &Gen) -> AseConnectivity {
    let from = g
        .sources
        .iter()
        .map(|o| format!("{{cidr: 198.51.{o}.0/24}}"))
        .chain(
            g.peer
                .map(|p| format!("{{environmentRef: {{name: ase-{p}}}}}")),
        )
        .collect::<Vec<_>>()
        .join(", ");
    let mut y = format!(
        "apiVersion: asenet.io/v1alpha1\nkind: AseConnectivity\nmetadata: {{name: ase-{i}, namespace: network}}\nspec:\n  environment: {{version: V2, addresses: {{publicVip: 52.0.0.{}}}}}\n  subnet: {{resourceId: {}}}\n  networkSecurityGroup:\n    resourceId: {}\n    priorities: {{from: {}, to: {}}}\n  inbound:\n    - {{name: web, service: Https, from: [{from}]}}\n",
        10 + i,
        net(&format!("virtualNetworks/vnet/subnets/ase-{i}")),
        net(&format!("networkSecurityGroups/nsg-{}", g.nsg)),
        100 + 400 * i,
        499 + 400 * i,
    );
    if g.backend {
        y.push_str(&format!(
            "  backends:\n    - {{name: sql, address: 10.0.9.4, ports: ['1433'], networkSecurityGroup: {{resourceId: {}, priorities: {{from: {}, to: {}}}}}}}\n",
            net("networkSecurityGroups/sql-nsg"),
            2000 + 100 * i,
            2099 + 100 * i
        ));
    }
    if let Some((rt, tag)) = g.route {
        let strategy = if tag { "ServiceTag" } else { "DirectInternet" };
        y.push_str(&format!(
            "  routeTable: {{resourceId: {}}}\n  outbound:\n    forcedTunneling: {{advertisedPrefixes: [0.0.0.0/0], strategy: {strategy}}}\n",
            net(&format!("routeTables/rt-{rt}"))
        ));
    }
    asenet::load::parse_specs(std::path::Path::new("generated.yaml"), &y)
        .unwrap()
        .remove(0)
        .spec
}

fn options() -> ArmClientOptions {
    ArmClientOptions {
        retry: RetryConfig {
            max_attempts: 10,
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
            max_retry_after: Duration::from_secs(2),
        },
        lro_default_poll: Duration::from_millis(20),
        lro_max_poll: Duration::from_millis(100),
        lro_timeout: Duration::from_secs(20),
        request_timeout: Duration::from_secs(10),
    }
}

/// A mock seeded with `snapshot()` and a pipeline against it.
pub(super) async fn start(specs: &[AseConnectivity]) -> (RunningMock, Pipeline) {
    let (valid, _) = asenet::validate::validate_all(specs);
    let seed = asenet::fixture::mock_seed::seed_value(&snapshot(), &valid);
    let seed: mock_arm::Seed = serde_json::from_value(seed).unwrap();
    let config = mock_arm::Config {
        clock_scale: 50.0,
        lro_delay: Duration::from_millis(100),
        lro_retry_after: Duration::from_millis(50),
        ..mock_arm::Config::default()
    };
    let started =
        asenet::fixture::harness::start(seed, config, options(), PipelineOptions::default())
            .await
            .unwrap();
    (started.mock, started.pipeline)
}

pub(super) async fn apply(p: &Pipeline, specs: &[AseConnectivity]) -> Plan {
    let scope = pipeline::scope_of(specs);
    let outcome = p.plan(specs, &scope).await.unwrap();
    let plan = outcome.plan.clone();
    p.apply(specs, &scope, outcome, &|_| {}).await.unwrap();
    plan
}

/// Every rule and route in Azure, keyed by parent and lower-cased name, without etags.
pub(super) fn entries(mock: &RunningMock) -> BTreeMap<(String, String), Value> {
    let mut out = BTreeMap::new();
    for id in parents() {
        let Some(parent) = mock.state.get_resource(&id) else {
            continue;
        };
        for list in ["securityRules", "routes"] {
            for e in parent["properties"][list].as_array().into_iter().flatten() {
                let mut e = e.clone();
                if let Some(o) = e.as_object_mut() {
                    o.remove("etag");
                }
                let name = e["name"].as_str().unwrap_or_default().to_ascii_lowercase();
                out.insert((id.clone(), name), e);
            }
        }
    }
    out
}

/// The owner of an entry: a rule's from its description, a route's from its name (among
/// `all`); `None` for a foreign entry.
fn owner(entry: &Value, all: &[SpecKey]) -> Option<SpecKey> {
    let name = entry["name"].as_str().unwrap_or_default();
    if !asenet::resolver::is_owned_name(name) {
        return None;
    }
    match entry["properties"]["description"].as_str() {
        Some(d) => asenet::resolver::owner_from_description(d),
        None => asenet::resolver::route_owner(name, all).cloned(),
    }
}

/// What a plan leaves in each NSG and route table: its target rules and routes.
/// (Subnet entries of a plan list changes only; the associations are compared in Azure.)
fn targets(plan: &Plan) -> BTreeMap<String, String> {
    plan.resources
        .iter()
        .filter_map(|r| {
            let what = match r.kind {
                ResourceKind::NetworkSecurityGroup => format!("{:?}", r.target_rules()),
                ResourceKind::RouteTable => format!("{:?}", r.target_routes()),
                ResourceKind::Subnet => return None,
            };
            Some((r.id.to_string(), what))
        })
        .collect()
}

/// The NSG and route table of each ASE subnet in Azure.
fn associations(mock: &RunningMock) -> Vec<(Value, Value)> {
    (0..4)
        .map(|i| {
            let s = mock
                .state
                .get_resource(&net(&format!("virtualNetworks/vnet/subnets/ase-{i}")))
                .unwrap_or_default();
            (
                s["properties"]["networkSecurityGroup"]["id"].clone(),
                s["properties"]["routeTable"]["id"].clone(),
            )
        })
        .collect()
}

/// Applies `subsets` one after the other, checking after each that no entry owned by a spec
/// outside it, and no foreign entry, changed; then compares the full set's plan with the
/// plan from scratch.
async fn check(gens: Vec<Gen>, subsets: Vec<Vec<usize>>) {
    let full: Vec<AseConnectivity> = gens.iter().enumerate().map(|(i, g)| spec(i, g)).collect();
    let keys: Vec<SpecKey> = full.iter().map(pipeline::spec_key).collect();
    let (mock, p) = start(&full).await;
    for subset in &subsets {
        let specs: Vec<AseConnectivity> = subset.iter().map(|i| full[*i].clone()).collect();
        let inside: BTreeSet<SpecKey> = specs.iter().map(pipeline::spec_key).collect();
        let before = entries(&mock);
        apply(&p, &specs).await;
        let after = entries(&mock);
        for (k, v) in &before {
            let o = owner(v, &keys);
            if o.as_ref().is_some_and(|o| inside.contains(o)) {
                continue;
            }
            assert_eq!(
                after.get(k),
                Some(v),
                "applying {inside:?} changed {k:?}, owned by {o:?}"
            );
        }
    }
    let scope = pipeline::scope_of(&full);
    let after_subsets = p.plan(&full, &scope).await.unwrap().plan;
    let (fresh, q) = start(&full).await;
    let from_scratch = q.plan(&full, &scope).await.unwrap().plan;
    assert_eq!(after_subsets.errors, from_scratch.errors);
    assert_eq!(targets(&after_subsets), targets(&from_scratch));
    // And once applied, Azure holds the same entries either way.
    apply(&p, &full).await;
    apply(&q, &full).await;
    assert_eq!(entries(&mock), entries(&fresh));
    assert_eq!(associations(&mock), associations(&fresh));
    assert!(!p.plan(&full, &scope).await.unwrap().plan.has_changes());
}

pub(super) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// The reported case: two specs share a route table and both need `0.0.0.0/0 -> Internet`.
/// Applying ase-1 alone after both used to delete ase-0's route ("no longer wanted by spec
/// network/ase-1"), because the route was attributed to whichever input spec named the
/// table.
#[tokio::test]
async fn applying_one_spec_of_two_sharing_a_route_table_keeps_the_other_specs_route() {
    let g = |nsg| Gen {
        nsg,
        route: Some((0, false)),
        sources: vec![1],
        backend: true,
        peer: None,
    };
    let full = vec![spec(0, &g(0)), spec(1, &g(1))];
    let (mock, p) = start(&full).await;
    apply(&p, &full).await;
    let rt = net("routeTables/rt-0");
    let key = (rt.clone(), "asenet-ase-0-internet-default".to_string());
    let before = entries(&mock);
    assert!(before.contains_key(&key), "{:?}", before.keys());

    let plan = apply(&p, &full[1..]).await;
    let r = plan.resources.iter().find(|r| r.id.as_str() == rt).unwrap();
    assert!(r.routes.delete.is_empty(), "{:?}", r.routes.delete);
    assert!(!plan.has_changes(), "{plan:#?}");
    assert_eq!(entries(&mock), before);

    // ase-0 alone, then ase-1 alone: still nothing of the other is touched.
    apply(&p, &full[..1]).await;
    apply(&p, &full[1..]).await;
    assert_eq!(entries(&mock), before);
}

/// The same for rules: ase-1 alone never deletes ase-0's rules in a shared NSG or in the
/// back end's NSG.
#[tokio::test]
async fn applying_one_spec_of_two_sharing_nsgs_keeps_the_other_specs_rules() {
    let g = Gen {
        nsg: 0,
        route: None,
        sources: vec![1, 2],
        backend: true,
        peer: None,
    };
    check(vec![g.clone(), g], vec![vec![0, 1], vec![1], vec![0]]).await;
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 32,
        max_shrink_iters: 20,
        ..ProptestConfig::default()
    })]

    /// Any subset, in any order, after any other: see `check`.
    #[test]
    fn subset_applies_never_touch_entries_of_specs_outside_the_subset(
        gens in proptest::collection::vec(gen(), 2..=4),
        picks in proptest::collection::vec(proptest::collection::vec(any::<prop::sample::Index>(), 1..=3), 1..=3),
    ) {
        let n = gens.len();
        let subsets: Vec<Vec<usize>> = picks
            .iter()
            .map(|p| {
                let mut s: Vec<usize> = Vec::new();
                for i in p.iter().map(|i| i.index(n)) {
                    if !s.contains(&i) {
                        s.push(i);
                    }
                }
                s
            })
            .collect();
        block_on(check(gens, subsets));
    }
}
