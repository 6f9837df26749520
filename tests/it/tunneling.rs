//! Forced tunneling judged by effective routes (docs/domain.md 1.2.7, 1.3.5, 3.2-3.4): the
//! resolver's routes, put in a route table together with the advertised BGP routes and the
//! system routes, must send every destination the strategy promises to the Internet.

use std::collections::BTreeMap;

use asenet::api::AseConnectivity;
use asenet::evaluate::routes::{forced_tunneling_requirements, RoutingTable};
use asenet::model::{NextHopType, ResourceId, Route, SpecKey};
use asenet::resolver::{resolve, Desired, SpecOutcome};
use asenet::snapshot::Snapshot;
use asenet::validate::validate_all;
use ipnet::Ipv4Net;
use proptest::prelude::*;

const SUB: &str =
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/network/providers";

/// The 12 management prefixes of the scenario fixture (a subset of `AppServiceManagement`).
const MANAGEMENT: [&str; 12] = [
    "13.66.140.0/26",
    "13.67.8.128/26",
    "13.69.64.128/26",
    "13.70.73.128/26",
    "13.75.34.64/26",
    "23.100.226.236/32",
    "40.112.242.192/26",
    "52.151.25.45/32",
    "65.52.14.230/32",
    "70.37.57.58/32",
    "104.43.242.137/32",
    "191.236.154.88/32",
];

fn n(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn management() -> Vec<Ipv4Net> {
    MANAGEMENT.iter().map(|p| n(p)).collect()
}

fn snapshot() -> Snapshot {
    let prefixes: Vec<String> = MANAGEMENT.iter().map(|p| p.to_string()).collect();
    let y = format!(
        r#"
virtualNetworks:
  - {{id: {SUB}/Microsoft.Network/virtualNetworks/vnet, location: westeurope, addressPrefixes: [10.0.0.0/16]}}
subnets:
  - {{id: {SUB}/Microsoft.Network/virtualNetworks/vnet/subnets/ase, addressPrefix: 10.0.1.0/26}}
serviceTags:
  - name: AppServiceManagement
    addressPrefixes: [{}]
    networkFeatures: [API, NSG, UDR, FW]
"#,
        prefixes.join(", ")
    );
    serde_yaml::from_str(&y).unwrap()
}

fn spec(version: &str, advertised: &[Ipv4Net], strategy: &str) -> AseConnectivity {
    let adv: Vec<String> = advertised.iter().map(|p| p.to_string()).collect();
    let y = format!(
        "apiVersion: asenet.io/v1alpha1\nkind: AseConnectivity\nmetadata: {{name: ase, namespace: t}}\nspec:\n  environment: {{version: {version}}}\n  subnet: {{resourceId: {SUB}/Microsoft.Network/virtualNetworks/vnet/subnets/ase}}\n  networkSecurityGroup: {{resourceId: {SUB}/Microsoft.Network/networkSecurityGroups/ase-nsg}}\n  routeTable: {{resourceId: {SUB}/Microsoft.Network/routeTables/ase-rt}}\n  outbound:\n    forcedTunneling: {{advertisedPrefixes: [{}], strategy: {strategy}}}\n",
        adv.join(", ")
    );
    serde_yaml::from_str(&y).unwrap_or_else(|e| panic!("{e}\n{y}"))
}

fn resolve_one(version: &str, advertised: &[Ipv4Net], strategy: &str) -> Desired {
    let (valid, errors) = validate_all(&[spec(version, advertised, strategy)]);
    assert!(errors.is_empty(), "{errors:#?}");
    resolve(&valid, &snapshot())
}

fn routes(d: &Desired) -> Vec<Route> {
    let rt = ResourceId::parse(&format!("{SUB}/Microsoft.Network/routeTables/ase-rt")).unwrap();
    d.route_tables
        .get(&rt)
        .map(|t| t.routes.iter().map(|r| (*r.route).clone()).collect())
        .unwrap_or_default()
}

fn tags() -> BTreeMap<String, Vec<Ipv4Net>> {
    BTreeMap::from([("AppServiceManagement".to_string(), management())])
}

/// Every requirement's failures, as `destination: address via route`.
fn wrong_next_hops(routes: &[Route], advertised: &[Ipv4Net], required: bool) -> Vec<String> {
    let vnet = [n("10.0.0.0/16")];
    let table = RoutingTable::new(routes, &tags(), advertised, false, &vnet);
    let required = if required { tags() } else { BTreeMap::new() };
    forced_tunneling_requirements(&required, advertised, &vnet)
        .iter()
        .map(|req| table.check(req))
        .filter(|c| !c.ok)
        .map(|c| format!("{}: {:?} via {:?}", c.destination, c.address, c.route))
        .collect()
}

#[test]
fn mixed_advertisements_get_the_default_route_plus_more_specific_management_routes() {
    let advertised = [n("0.0.0.0/0"), n("13.64.0.0/11")];
    let d = resolve_one("V2", &advertised, "DirectInternet");
    let routes = routes(&d);
    let prefixes: Vec<String> = routes
        .iter()
        .map(|r| r.address_prefix.to_string())
        .collect();
    assert!(prefixes.contains(&"0.0.0.0/0".to_string()), "{prefixes:?}");
    // The management prefixes inside 13.64.0.0/11 get routes of their own (more specific
    // than the advertisement), the others ride on the default route or their own.
    for p in [
        "13.66.140.0/26",
        "13.67.8.128/26",
        "13.69.64.128/26",
        "13.70.73.128/26",
        "13.75.34.64/26",
    ] {
        assert!(
            prefixes.contains(&p.to_string()),
            "{p} missing from {prefixes:?}"
        );
    }
    assert!(routes
        .iter()
        .all(|r| r.next_hop_type == NextHopType::Internet));
    assert_eq!(
        wrong_next_hops(&routes, &advertised, true),
        Vec::<String>::new()
    );
}

#[test]
fn without_the_default_route_mixed_advertisements_send_internet_egress_on_premises() {
    // The evaluator catches what the old resolver wrote: only the management routes.
    let advertised = [n("0.0.0.0/0"), n("13.64.0.0/11")];
    let routes: Vec<Route> = routes(&resolve_one("V2", &advertised, "DirectInternet"))
        .into_iter()
        .filter(|r| r.address_prefix.to_string() != "0.0.0.0/0")
        .collect();
    let wrong = wrong_next_hops(&routes, &advertised, true);
    assert_eq!(wrong.len(), 1, "{wrong:?}");
    assert!(wrong[0].starts_with("Internet"), "{wrong:?}");
}

#[test]
fn the_service_tag_strategy_adds_the_default_route_when_0_0_0_0_is_advertised() {
    let advertised = [n("0.0.0.0/0"), n("13.0.0.0/8")];
    let routes = routes(&resolve_one("V2", &advertised, "ServiceTag"));
    let prefixes: Vec<String> = routes
        .iter()
        .map(|r| r.address_prefix.to_string())
        .collect();
    assert_eq!(prefixes, vec!["0.0.0.0/0", "AppServiceManagement"]);
    assert_eq!(
        wrong_next_hops(&routes, &advertised, true),
        Vec::<String>::new()
    );
}

#[test]
fn the_service_tag_strategy_refuses_an_advertisement_inside_a_tag_prefix() {
    let d = resolve_one("V2", &[n("13.66.140.0/28")], "ServiceTag");
    let key: SpecKey = "t/ase".parse().unwrap();
    match d.specs.get(&key) {
        Some(SpecOutcome::Failed { errors }) => {
            assert!(
                errors[0].message.contains("13.66.140.0/28"),
                "{}",
                errors[0].message
            );
            assert!(
                errors[0].message.contains("DirectInternet"),
                "{}",
                errors[0].message
            );
        }
        other => panic!("expected an error: {other:#?}"),
    }
}

/// An advertised prefix: often one that holds (or sits inside) a management prefix, so
/// that splitting is exercised, else any public prefix.
fn advertisement() -> impl Strategy<Value = Ipv4Net> {
    prop_oneof![
        (0..MANAGEMENT.len(), 1u8..=32).prop_map(|(i, len)| {
            let m = n(MANAGEMENT[i]);
            Ipv4Net::new(m.network(), len).unwrap().trunc()
        }),
        (any::<u32>(), 1u8..=24).prop_map(|(a, len)| {
            Ipv4Net::new(std::net::Ipv4Addr::from(a), len)
                .unwrap()
                .trunc()
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// For every advertised set and strategy, every required destination's effective next
    /// hop is the one the strategy promises: the management prefixes and every other
    /// Internet-bound address (outside the more specific advertisements) go to the Internet.
    #[test]
    fn every_required_destination_takes_the_promised_next_hop(
        default in any::<bool>(),
        specific in proptest::collection::vec(advertisement(), 0..5),
        version in prop_oneof![Just("V2"), Just("V3")],
        strategy in prop_oneof![Just("DirectInternet"), Just("ServiceTag")],
    ) {
        let mut advertised = specific;
        if default || advertised.is_empty() {
            advertised.push(Ipv4Net::default());
        }
        let d = resolve_one(version, &advertised, strategy);
        let key: SpecKey = "t/ase".parse().unwrap();
        match d.specs.get(&key) {
            Some(SpecOutcome::Resolved(_)) => {}
            Some(SpecOutcome::Failed { errors }) => {
                // The one documented refusal: a tag route cannot beat an advertisement
                // inside one of the tag's prefixes.
                prop_assert_eq!(strategy, "ServiceTag", "{:#?}", errors);
                prop_assert!(errors.iter().all(|e| e.message.contains("use strategy DirectInternet")), "{:#?}", errors);
                return Ok(());
            }
            other => prop_assert!(false, "{other:#?}"),
        }
        let routes = routes(&d);
        let wrong = wrong_next_hops(&routes, &advertised, version == "V2");
        prop_assert!(wrong.is_empty(), "advertised {:?}, routes {:?}: {:?}", advertised, routes, wrong);
    }
}
