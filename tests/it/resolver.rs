//! Resolver tests: validate + resolve on hand-written specs and snapshots, the examples
//! (snapshot-tested), the invalid examples, `asenet resolve` itself, and property tests
//! (determinism, priorities, ARM validity, re-planning after apply, required flows).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use asenet::api::AseConnectivity;
use asenet::error::SpecErrorKind;
use asenet::model::{
    check_azure_name, AddressSet, Direction, NextHopType, Protocol, ResourceId, RouteDestination,
    SecurityRule, SpecKey,
};
use asenet::report::desired::render_json;
use asenet::resolver::{owner_from_description, resolve, Desired, OwnedRule, SpecOutcome};
use asenet::snapshot::{NsgState, RouteTableState, ServiceTagState, Snapshot};
use asenet::validate::{validate, validate_all, ValidSpec};
use proptest::prelude::*;

const SUB: &str =
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/network/providers";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn net_id(path: &str) -> ResourceId {
    ResourceId::parse(&format!("{SUB}/Microsoft.Network/{path}")).unwrap()
}
fn nsg_id(name: &str) -> ResourceId {
    net_id(&format!("networkSecurityGroups/{name}"))
}
fn rt_id(name: &str) -> ResourceId {
    net_id(&format!("routeTables/{name}"))
}

/// A spec named `name` in namespace `t` on subnet `vnet/<name>` with NSG `<name>-nsg`.
/// `env` is the `environment:` value, `rest` more lines under `spec:` (2-space indent).
fn spec_in(ns: &str, name: &str, env: &str, rest: &str) -> AseConnectivity {
    let y = format!(
        "apiVersion: asenet.io/v1alpha1\nkind: AseConnectivity\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  environment: {env}\n  subnet: {{resourceId: {SUB}/Microsoft.Network/virtualNetworks/vnet/subnets/{name}}}\n{rest}"
    );
    let mut y = y;
    if !rest.contains("networkSecurityGroup:\n") && !rest.contains("  networkSecurityGroup: {") {
        y.push_str(&format!(
            "  networkSecurityGroup: {{resourceId: {SUB}/Microsoft.Network/networkSecurityGroups/{name}-nsg}}\n"
        ));
    }
    serde_yaml::from_str(&y).unwrap_or_else(|e| panic!("{e}\n{y}"))
}
fn spec(name: &str, env: &str, rest: &str) -> AseConnectivity {
    spec_in("t", name, env, rest)
}

fn valid(specs: &[AseConnectivity]) -> Vec<ValidSpec> {
    let (v, e) = validate_all(specs);
    assert!(e.is_empty(), "{e:#?}");
    v
}

/// VNet 10.0.0.0/16 with subnets ase-a/b/c (/26 each in 10.0.1.0/24), sql 10.0.2.0/24,
/// and the AppServiceManagement and Sql tags.
fn snapshot() -> Snapshot {
    let y = format!(
        r#"
virtualNetworks:
  - {{id: {SUB}/Microsoft.Network/virtualNetworks/vnet, location: westeurope, addressPrefixes: [10.0.0.0/16]}}
subnets:
  - {{id: {SUB}/Microsoft.Network/virtualNetworks/vnet/subnets/ase-a, addressPrefix: 10.0.1.0/26}}
  - {{id: {SUB}/Microsoft.Network/virtualNetworks/vnet/subnets/ase-b, addressPrefix: 10.0.1.64/26}}
  - {{id: {SUB}/Microsoft.Network/virtualNetworks/vnet/subnets/ase-c, addressPrefix: 10.0.1.128/26}}
  - {{id: {SUB}/Microsoft.Network/virtualNetworks/vnet/subnets/sql, addressPrefix: 10.0.2.0/24}}
serviceTags:
  - name: AppServiceManagement
    addressPrefixes: [13.66.140.0/26, 13.67.8.128/26, 13.69.64.128/26, 40.112.242.192/26, 70.37.57.58/32, 191.236.154.88/32]
    networkFeatures: [API, NSG, UDR, FW]
  - name: AppServiceManagement.WestEurope
    addressPrefixes: [13.69.64.128/26]
    networkFeatures: [NSG]
  - name: Sql
    addressPrefixes: [13.69.105.0/24]
    networkFeatures: [API, NSG, UDR, FW, VSE]
"#
    );
    serde_yaml::from_str(&y).unwrap()
}

fn resolved(d: &Desired, key: &str) {
    let k: SpecKey = key.parse().unwrap();
    match d.specs.get(&k) {
        Some(SpecOutcome::Resolved(_)) => {}
        other => panic!("{key} did not resolve: {other:#?}"),
    }
}

fn rules_of<'a>(d: &'a Desired, nsg: &str) -> &'a [OwnedRule] {
    &d.network_security_groups
        .get(&nsg_id(nsg))
        .unwrap_or_else(|| panic!("no desired NSG {nsg}"))
        .rules
}

fn rule<'a>(d: &'a Desired, nsg: &str, name: &str) -> &'a SecurityRule {
    &rules_of(d, nsg)
        .iter()
        .find(|r| r.rule.name == name)
        .unwrap_or_else(|| panic!("no rule {name} in {nsg}: {:#?}", rules_of(d, nsg)))
        .rule
}

/// One line per rule without priority or description: `In Tcp AppServiceManagement 454-455 * name`.
fn summary(rules: &[OwnedRule]) -> Vec<String> {
    let mut v: Vec<String> = rules
        .iter()
        .map(|o| {
            let r = &o.rule;
            format!(
                "{:?} {} {} {} {} {}",
                r.direction, r.protocol, r.source, r.destination_ports, r.destination, r.name
            )
        })
        .collect();
    v.sort();
    v
}

fn errors_of(d: &Desired, key: &str) -> Vec<asenet::error::SpecError> {
    match d.specs.get(&key.parse::<SpecKey>().unwrap()) {
        Some(SpecOutcome::Failed { errors }) => errors.clone(),
        other => panic!("{key} did not fail: {other:#?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Required rules and services per version
// ---------------------------------------------------------------------------------------

#[test]
fn every_version_gets_its_required_rules_and_nothing_else_when_the_spec_asks_for_nothing() {
    let cases: [(&str, &[&str]); 3] = [
        (
            "V1",
            &["Inbound Tcp AppServiceManagement 454-455 * asenet-ase-a-req-mgmt-in"],
        ),
        (
            "V2",
            &[
                "Inbound * 10.0.1.0/26 * 10.0.1.0/26 asenet-ase-a-req-intra-in",
                "Inbound Tcp AppServiceManagement 454-455 * asenet-ase-a-req-mgmt-in",
                "Inbound Tcp AzureLoadBalancer 16001 * asenet-ase-a-req-lb-in",
                "Outbound * * * 10.0.1.0/26 asenet-ase-a-req-intra-out",
                "Outbound Tcp * 12000 * asenet-ase-a-req-monitor-out",
                "Outbound Tcp * 1433 Sql asenet-ase-a-req-sql-out",
                "Outbound Tcp * 80,443 * asenet-ase-a-req-web-out",
                "Outbound Udp * 123 * asenet-ase-a-req-ntp-out",
                "Outbound Udp * 53 * asenet-ase-a-req-dns-out",
            ],
        ),
        (
            "V3",
            &["Inbound Tcp AzureLoadBalancer 80 10.0.1.0/26 asenet-ase-a-req-lb-in"],
        ),
    ];
    for (version, expected) in cases {
        let d = resolve(
            &valid(&[spec("ase-a", &format!("{{version: {version}}}"), "")]),
            &snapshot(),
        );
        resolved(&d, "t/ase-a");
        assert_eq!(summary(rules_of(&d, "ase-a-nsg")), expected, "{version}");
        assert!(rules_of(&d, "ase-a-nsg").iter().all(|r| r.required));
    }
}

#[test]
fn v3_adds_the_ftp_health_probe_only_when_ftp_is_used() {
    let ftp = "  inbound:\n    - {name: ftp, service: Ftp, from: [{cidr: 192.0.2.0/24}]}\n";
    let d = resolve(&valid(&[spec("ase-a", "{version: V3}", ftp)]), &snapshot());
    let probe = rule(&d, "ase-a-nsg", "asenet-ase-a-req-lb-ftp-in");
    assert_eq!(probe.source, AddressSet::tag("AzureLoadBalancer"));
    assert_eq!(probe.destination_ports.to_strings(), vec!["21"]);
    let d = resolve(&valid(&[spec("ase-a", "{version: V3}", "")]), &snapshot());
    assert!(rules_of(&d, "ase-a-nsg")
        .iter()
        .all(|r| !r.rule.name.contains("ftp")));
}

#[test]
fn services_expand_to_their_ports_per_version() {
    let cases = [
        ("V1", "RemoteDebugging", vec!["4016", "4018", "4020"]),
        ("V2", "RemoteDebugging", vec!["4020", "4022", "4024"]),
        ("V3", "RemoteDebugging", vec!["4022", "4024", "4026"]),
        ("V2", "Http", vec!["80"]),
        ("V3", "https", vec!["443"]),
        ("V1", "Ftp", vec!["21", "990", "10001-10020"]),
        ("V2", "WebDeploy", vec!["8172"]),
    ];
    for (version, service, ports) in cases {
        let rest = format!(
            "  inbound:\n    - {{name: app, service: {service}, from: [{{cidr: 192.0.2.0/24}}]}}\n"
        );
        let d = resolve(
            &valid(&[spec("ase-a", &format!("{{version: {version}}}"), &rest)]),
            &snapshot(),
        );
        let r = rule(&d, "ase-a-nsg", "asenet-ase-a-in-app");
        assert_eq!(
            r.destination_ports.to_strings(),
            ports,
            "{version} {service}"
        );
        assert_eq!(r.protocol, Protocol::Tcp);
        assert_eq!(
            r.destination.to_string(),
            "10.0.1.0/26",
            "app rules target the subnet"
        );
    }
}

#[test]
fn raw_ports_keep_their_protocol_and_cidrs_are_packed_into_one_rule() {
    let rest = "  inbound:\n    - {name: dns, ports: [\"53\", 5300-5310], protocol: Udp, from: [{cidr: 192.0.2.0/24}, {cidr: 198.51.100.7}]}\n";
    let d = resolve(&valid(&[spec("ase-a", "{version: V3}", rest)]), &snapshot());
    let r = rule(&d, "ase-a-nsg", "asenet-ase-a-in-dns");
    assert_eq!(r.protocol, Protocol::Udp);
    assert_eq!(r.destination_ports.to_strings(), vec!["53", "5300-5310"]);
    assert_eq!(r.source.to_string(), "192.0.2.0/24,198.51.100.7");
}

#[test]
fn tag_sources_get_one_rule_each_never_several_tags_in_one_rule() {
    let rest = "  inbound:\n    - {name: web, service: Https, from: [{serviceTag: VirtualNetwork}, {serviceTag: AzureFrontDoor.Backend}, {cidr: 192.0.2.0/24}]}\n";
    let d = resolve(&valid(&[spec("ase-a", "{version: V3}", rest)]), &snapshot());
    assert_eq!(
        rule(&d, "ase-a-nsg", "asenet-ase-a-in-web.VirtualNetwork").source,
        AddressSet::tag("VirtualNetwork")
    );
    assert_eq!(
        rule(
            &d,
            "ase-a-nsg",
            "asenet-ase-a-in-web.AzureFrontDoor.Backend"
        )
        .source,
        AddressSet::tag("AzureFrontDoor.Backend")
    );
    assert_eq!(
        rule(&d, "ase-a-nsg", "asenet-ase-a-in-web")
            .source
            .to_string(),
        "192.0.2.0/24"
    );
}

// ---------------------------------------------------------------------------------------
// Source addresses by topology
// ---------------------------------------------------------------------------------------

fn backend(name: &str, address: &str) -> String {
    format!(
        "  backends:\n    - {{name: {name}, address: {address}, ports: [\"1433\"], networkSecurityGroup: {{resourceId: {SUB}/Microsoft.Network/networkSecurityGroups/sql-nsg}}}}\n"
    )
}

#[test]
fn a_backend_inside_the_vnet_admits_the_whole_caller_subnet() {
    let d = resolve(
        &valid(&[spec(
            "ase-a",
            "{version: V2, addresses: {publicVip: 192.23.1.2}}",
            &backend("db", "10.0.2.4"),
        )]),
        &snapshot(),
    );
    let r = rule(&d, "sql-nsg", "asenet-ase-a-be-db");
    assert_eq!(r.source.to_string(), "10.0.1.0/26");
    assert_eq!(r.destination.to_string(), "10.0.2.4");
    assert_eq!(r.destination_ports.to_strings(), vec!["1433"]);
}

#[test]
fn a_backend_outside_the_topology_admits_the_caller_outbound_addresses() {
    let d = resolve(
        &valid(&[spec(
            "ase-a",
            "{version: V2, addresses: {publicVip: 192.23.1.2, outbound: [192.23.1.5, 192.23.1.4]}}",
            &backend("db", "52.1.2.3"),
        )]),
        &snapshot(),
    );
    assert_eq!(
        rule(&d, "sql-nsg", "asenet-ase-a-be-db").source.to_string(),
        "192.23.1.4,192.23.1.5"
    );
}

#[test]
fn extra_topology_prefixes_count_as_inside() {
    let rest = format!(
        "  topology: {{extraPrefixes: [172.16.0.0/12]}}\n{}",
        backend("onprem", "172.20.1.1")
    );
    let d = resolve(
        &valid(&[spec(
            "ase-a",
            "{version: V2, addresses: {publicVip: 192.23.1.2}}",
            &rest,
        )]),
        &snapshot(),
    );
    assert_eq!(
        rule(&d, "sql-nsg", "asenet-ase-a-be-onprem")
            .source
            .to_string(),
        "10.0.1.0/26"
    );
}

#[test]
fn an_environment_ref_resolves_to_the_vip_even_in_the_same_vnet_and_from_the_snapshot() {
    let mut snap = snapshot();
    snap.insert_environment(asenet::snapshot::EnvironmentState {
        id: ResourceId::parse(&format!("{SUB}/Microsoft.Web/hostingEnvironments/ase-a")).unwrap(),
        public_vip: Some("192.23.1.2".parse().unwrap()),
        outbound: vec![],
        internal_ip: None,
        subnet: None,
    });
    let a = spec(
        "ase-a",
        &format!("{{version: V2, resourceId: {SUB}/Microsoft.Web/hostingEnvironments/ase-a}}"),
        "",
    );
    let b = spec(
        "ase-b",
        "{version: V2, addresses: {publicVip: 192.23.1.3}}",
        "  inbound:\n    - {name: api, service: Https, from: [{environmentRef: {name: ase-a}}, {environmentRef: {name: ase-b}}]}\n",
    );
    let d = resolve(&valid(&[a, b]), &snap);
    let r = rule(&d, "ase-b-nsg", "asenet-ase-b-in-api");
    assert_eq!(
        r.source.to_string(),
        "192.23.1.2,192.23.1.3",
        "caller VIP and own VIP, not a subnet"
    );
}

#[test]
fn a_dangling_reference_fails_only_that_spec() {
    let bad = spec(
        "ase-b",
        "{version: V2}",
        "  inbound:\n    - {name: api, service: Https, from: [{environmentRef: {name: nobody}}]}\n",
    );
    let good = spec("ase-a", "{version: V2}", "");
    let d = resolve(&valid(&[bad, good]), &snapshot());
    resolved(&d, "t/ase-a");
    let e = errors_of(&d, "t/ase-b");
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].kind, SpecErrorKind::UnresolvedReference);
    assert_eq!(e[0].field, "spec.inbound[0].from[0].environmentRef");
    assert_eq!(e[0].value, "t/nobody");
    assert!(!d.network_security_groups.contains_key(&nsg_id("ase-b-nsg")));
}

// ---------------------------------------------------------------------------------------
// Merging, naming, descriptions
// ---------------------------------------------------------------------------------------

#[test]
fn several_specs_merge_into_one_backend_nsg_each_rule_keeping_owner_and_reason() {
    let specs = [
        spec("ase-a", "{version: V2}", &backend("db", "10.0.2.4")),
        spec("ase-b", "{version: V2}", &backend("db", "10.0.2.4")),
    ];
    let d = resolve(&valid(&specs), &snapshot());
    let rules = rules_of(&d, "sql-nsg");
    assert_eq!(rules.len(), 2);
    let owners: BTreeSet<String> = rules.iter().map(|r| r.owner.to_string()).collect();
    assert_eq!(
        owners,
        BTreeSet::from(["t/ase-a".to_string(), "t/ase-b".to_string()])
    );
    for r in rules {
        let desc = r.rule.description.as_deref().unwrap();
        assert_eq!(owner_from_description(desc), Some(r.owner.clone()));
        assert!(r.reason.contains("back end `db`"), "{}", r.reason);
        assert!(!r.required);
    }
    let priorities: BTreeSet<u32> = rules.iter().map(|r| r.rule.priority).collect();
    assert_eq!(priorities, BTreeSet::from([100, 101]));
}

#[test]
fn rule_names_do_not_change_when_content_changes() {
    let one = spec(
        "ase-a",
        "{version: V3}",
        "  inbound:\n    - {name: web, service: Http, from: [{cidr: 192.0.2.0/24}]}\n",
    );
    let two = spec("ase-a", "{version: V3}", "  inbound:\n    - {name: web, ports: [\"8080\"], from: [{cidr: 198.51.100.0/24}, {cidr: 192.0.2.1}]}\n");
    let names = |s: AseConnectivity| -> Vec<String> {
        let d = resolve(&valid(&[s]), &snapshot());
        rules_of(&d, "ase-a-nsg")
            .iter()
            .map(|r| r.rule.name.clone())
            .collect()
    };
    assert_eq!(names(one), names(two));
}

#[test]
fn the_same_spec_name_in_two_namespaces_gets_distinct_valid_rule_names() {
    let specs = [
        spec_in(
            "team-a",
            "ase-a",
            "{version: V2}",
            &backend("db", "10.0.2.4"),
        ),
        spec_in(
            "team-b",
            "ase-b",
            "{version: V2}",
            &backend("db", "10.0.2.4"),
        ),
        // same name as team-a's spec, other namespace, other subnet
        spec_in(
            "team-b",
            "ase-a",
            "{version: V2}",
            &backend("db", "10.0.2.4"),
        )
        .tap_subnet("ase-c"),
    ];
    let d = resolve(&valid(&specs), &snapshot());
    let names: Vec<&str> = rules_of(&d, "sql-nsg")
        .iter()
        .map(|r| r.rule.name.as_str())
        .collect();
    let unique: BTreeSet<String> = names.iter().map(|n| n.to_ascii_lowercase()).collect();
    assert_eq!(unique.len(), 3, "{names:?}");
    assert!(names.contains(&"asenet-ase-b-be-db"), "{names:?}");
    for n in names {
        assert!(n.starts_with("asenet-"));
        check_azure_name(n).unwrap();
    }
}

trait TapSubnet {
    fn tap_subnet(self, subnet: &str) -> Self;
}
impl TapSubnet for AseConnectivity {
    fn tap_subnet(mut self, subnet: &str) -> Self {
        self.spec.subnet.resource_id =
            format!("{SUB}/Microsoft.Network/virtualNetworks/vnet/subnets/{subnet}");
        self.spec.network_security_group.resource_id =
            format!("{SUB}/Microsoft.Network/networkSecurityGroups/{subnet}-nsg");
        self
    }
}

// ---------------------------------------------------------------------------------------
// Priorities
// ---------------------------------------------------------------------------------------

fn observed_rule(name: &str, priority: u32, owner: Option<&str>) -> SecurityRule {
    SecurityRule {
        name: name.into(),
        priority,
        direction: Direction::Inbound,
        access: asenet::model::Access::Allow,
        protocol: Protocol::Tcp,
        source: AddressSet::parse_one("172.16.0.0/12").unwrap(),
        source_ports: asenet::model::PortSet::any(),
        destination: AddressSet::Any,
        destination_ports: asenet::model::PortSet::parse_all(["3389"]).unwrap(),
        description: owner.map(|o| format!("asenet:{o}:old")),
    }
}

fn with_nsg(mut snap: Snapshot, name: &str, rules: Vec<SecurityRule>) -> Snapshot {
    snap.insert_nsg(NsgState {
        id: nsg_id(name),
        location: Some("westeurope".into()),
        etag: None,
        rules: rules.into_iter().map(std::sync::Arc::new).collect(),
        raw_rules: Default::default(),
        raw: None,
    });
    snap
}

#[test]
fn an_unchanged_rule_keeps_its_observed_priority_and_new_rules_take_the_lowest_free_one() {
    let snap = with_nsg(
        snapshot(),
        "ase-a-nsg",
        vec![
            observed_rule("asenet-ase-a-in-web", 500, Some("t/ase-a")),
            observed_rule("corp-rdp", 100, None),
            observed_rule("asenet-ase-a-in-gone", 101, Some("t/ase-a")),
        ],
    );
    let rest = "  inbound:\n    - {name: new, service: Http, from: [{cidr: 192.0.2.0/24}]}\n    - {name: web, service: Https, from: [{cidr: 192.0.2.0/24}]}\n";
    let d = resolve(&valid(&[spec("ase-a", "{version: V3}", rest)]), &snap);
    assert_eq!(rule(&d, "ase-a-nsg", "asenet-ase-a-in-web").priority, 500);
    // 100 is foreign; 101 held a rule that is going away, so it is free again.
    assert_eq!(
        rule(&d, "ase-a-nsg", "asenet-ase-a-req-lb-in").priority,
        101
    );
    assert_eq!(rule(&d, "ase-a-nsg", "asenet-ase-a-in-new").priority, 102);
}

/// Issue 14's memory: in a converged NSG the desired state holds the snapshot's rules, not
/// a second copy of each; a rule whose priority must move is copied, and the snapshot's
/// rule keeps the priority Azure holds.
#[test]
fn a_converged_rule_is_the_observed_rule_itself_and_a_moved_one_is_a_copy() {
    use std::sync::Arc;
    let rest = "  inbound:\n    - {name: web, service: Https, from: [{cidr: 192.0.2.0/24}]}\n";
    let specs = valid(&[spec("ase-a", "{version: V3}", rest)]);
    let first = resolve(&specs, &snapshot());
    resolved(&first, "t/ase-a");
    // Azure holds the desired rules, read back as rules of their own (not the same `Arc`s),
    // and a foreign rule on the priority of the first inbound one.
    let mut observed: Vec<SecurityRule> = rules_of(&first, "ase-a-nsg")
        .iter()
        .map(|o| (*o.rule).clone())
        .collect();
    let moved = observed
        .iter()
        .find(|r| r.direction == Direction::Inbound)
        .cloned()
        .unwrap();
    observed.push(SecurityRule {
        name: "corp-rdp".into(),
        description: None,
        ..moved.clone()
    });
    let snap = with_nsg(snapshot(), "ase-a-nsg", observed);
    let held = &snap.network_security_groups[&nsg_id("ase-a-nsg")].rules;

    let again = resolve(&specs, &snap);
    assert_eq!(
        summary(rules_of(&again, "ase-a-nsg")),
        summary(rules_of(&first, "ase-a-nsg"))
    );
    for o in rules_of(&again, "ase-a-nsg") {
        let shared = held.iter().any(|h| Arc::ptr_eq(h, &o.rule));
        assert_eq!(shared, o.rule.name != moved.name, "{}", o.rule.name);
    }
    let now = rule(&again, "ase-a-nsg", &moved.name);
    assert_ne!(now.priority, moved.priority);
    let before = held.iter().find(|h| h.name == moved.name).unwrap();
    assert_eq!(
        **before, moved,
        "the snapshot's rule is not changed through the desired one"
    );
}

#[test]
fn priorities_of_foreign_rules_and_of_failed_specs_are_never_reused() {
    let snap = with_nsg(
        snapshot(),
        "sql-nsg",
        vec![
            observed_rule("corp-rdp", 100, None),
            observed_rule("asenet-ase-b-be-db", 101, Some("t/ase-b")),
        ],
    );
    let a = spec("ase-a", "{version: V2}", &backend("db", "10.0.2.4"));
    let b = spec(
        "ase-b",
        "{version: V2}",
        &format!("{}  inbound:\n    - {{name: x, service: Http, from: [{{environmentRef: {{name: nobody}}}}]}}\n", backend("db", "10.0.2.4")),
    );
    let d = resolve(&valid(&[a, b]), &snap);
    errors_of(&d, "t/ase-b");
    assert_eq!(rule(&d, "sql-nsg", "asenet-ase-a-be-db").priority, 102);
}

#[test]
fn a_full_band_fails_that_spec_only_with_a_band_full_error() {
    let tight = format!(
        "  networkSecurityGroup:\n    resourceId: {SUB}/Microsoft.Network/networkSecurityGroups/ase-a-nsg\n    priorities: {{from: 100, to: 102}}\n"
    );
    // V2 needs 3 inbound rules; one more inbound entry does not fit in 100-102.
    let rest = format!(
        "{tight}  inbound:\n    - {{name: web, service: Http, from: [{{cidr: 192.0.2.0/24}}]}}\n"
    );
    let d = resolve(
        &valid(&[
            spec("ase-a", "{version: V2}", &rest),
            spec("ase-b", "{version: V2}", ""),
        ]),
        &snapshot(),
    );
    resolved(&d, "t/ase-b");
    let e = errors_of(&d, "t/ase-a");
    assert_eq!(e.len(), 1, "{e:#?}");
    assert_eq!(e[0].kind, SpecErrorKind::BandFull);
    assert_eq!(e[0].field, "spec.networkSecurityGroup.priorities");
    assert_eq!(e[0].value, "100-102");
    assert!(!d.network_security_groups.contains_key(&nsg_id("ase-a-nsg")));
}

#[test]
fn more_than_4000_source_prefixes_in_one_nsg_is_limit_exceeded() {
    let cidrs: Vec<String> = (0..4001u32)
        .map(|i| format!("{{cidr: 100.{}.{}.0/24}}", 64 + i / 256, i % 256))
        .collect();
    let rest = format!(
        "  inbound:\n    - {{name: many, service: Http, from: [{}]}}\n",
        cidrs.join(", ")
    );
    let d = resolve(
        &valid(&[spec("ase-a", "{version: V3}", &rest)]),
        &snapshot(),
    );
    let e = errors_of(&d, "t/ase-a");
    assert_eq!(e[0].kind, SpecErrorKind::LimitExceeded);
    assert!(e[0].message.contains("4000"), "{}", e[0].message);
}

// ---------------------------------------------------------------------------------------
// Forced tunneling
// ---------------------------------------------------------------------------------------

fn tunnel(name: &str, advertised: &str, extra: &str) -> String {
    format!(
        "  routeTable: {{resourceId: {SUB}/Microsoft.Network/routeTables/{name}-rt}}\n  outbound:\n    forcedTunneling: {{advertisedPrefixes: [{advertised}]{extra}}}\n"
    )
}

fn routes(d: &Desired, rt: &str) -> Vec<String> {
    d.route_tables[&rt_id(rt)]
        .routes
        .iter()
        .map(|r| {
            format!(
                "{} {:?} {}",
                r.route.address_prefix, r.route.next_hop_type, r.route.name
            )
        })
        .collect()
}

#[test]
fn a_default_route_advertisement_gets_0_0_0_0_next_hop_internet_for_every_version() {
    for v in ["V1", "V2", "V3"] {
        let d = resolve(
            &valid(&[spec(
                "ase-a",
                &format!("{{version: {v}}}"),
                &tunnel("ase-a", "0.0.0.0/0", ""),
            )]),
            &snapshot(),
        );
        assert_eq!(
            routes(&d, "ase-a-rt"),
            vec!["0.0.0.0/0 Internet asenet-ase-a-internet-default"],
            "{v}"
        );
        let sub = &d.subnets[&net_id("virtualNetworks/vnet/subnets/ase-a")];
        assert_eq!(sub.route_table, Some(rt_id("ase-a-rt")));
        assert_eq!(sub.network_security_group, nsg_id("ase-a-nsg"));
    }
}

#[test]
fn more_specific_advertisements_split_the_management_prefixes_and_aggregation_respects_them() {
    let mut snap = snapshot();
    snap.insert_service_tag(ServiceTagState {
        name: "AppServiceManagement".into(),
        address_prefixes: vec![
            "13.64.0.0/14".parse().unwrap(),
            "40.112.242.192/26".parse().unwrap(),
            "40.112.242.0/26".parse().unwrap(),
        ],
        network_features: vec!["UDR".into()],
    });
    let d = resolve(
        &valid(&[spec(
            "ase-a",
            "{version: V2}",
            &tunnel("ase-a", "13.66.0.0/16, 40.0.0.0/8, 10.0.0.0/8", ""),
        )]),
        &snap,
    );
    let got: Vec<String> = d.route_tables[&rt_id("ase-a-rt")]
        .routes
        .iter()
        .map(|r| r.route.address_prefix.to_string())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(
        got,
        vec![
            "13.64.0.0/15",
            "13.66.0.0/16",
            "13.67.0.0/16",
            "40.112.242.0/26",
            "40.112.242.192/26"
        ]
    );
    assert!(d.route_tables[&rt_id("ase-a-rt")]
        .routes
        .iter()
        .all(|r| r.route.next_hop_type == NextHopType::Internet));
}

#[test]
fn the_route_budget_counts_foreign_routes_and_overflow_is_an_error_never_a_dropped_prefix() {
    let mut snap = snapshot();
    // 300 non-adjacent /24s, each advertised itself: nothing may be merged.
    let prefixes: Vec<ipnet::Ipv4Net> = (0..300u32)
        .map(|i| {
            format!("20.{}.{}.0/24", i / 100, (i % 100) * 2)
                .parse()
                .unwrap()
        })
        .collect();
    snap.insert_service_tag(ServiceTagState {
        name: "Big".into(),
        address_prefixes: prefixes.clone(),
        network_features: vec![],
    });
    let foreign: Vec<asenet::model::Route> = (0..150)
        .map(|i| asenet::model::Route {
            name: format!("onprem-{i}"),
            address_prefix: RouteDestination::Prefix(format!("10.{i}.0.0/16").parse().unwrap()),
            next_hop_type: NextHopType::VirtualNetworkGateway,
            next_hop_ip_address: None,
        })
        .collect();
    snap.insert_route_table(RouteTableState {
        id: rt_id("ase-a-rt"),
        location: None,
        etag: None,
        disable_bgp_route_propagation: false,
        routes: foreign,
        recorded_service_tags: Default::default(),
        raw_routes: Default::default(),
        raw: None,
    });
    let adv: Vec<String> = prefixes.iter().map(|p| p.to_string()).collect();
    let rest = tunnel("ase-a", &adv.join(", "), ", requiredTags: [Big]");
    let d = resolve(&valid(&[spec("ase-a", "{version: V2}", &rest)]), &snap);
    let e = errors_of(&d, "t/ase-a");
    assert_eq!(e[0].kind, SpecErrorKind::LimitExceeded);
    assert!(e[0].message.contains("only 250 fit"), "{}", e[0].message);

    // Without the foreign routes the same 300 routes fit.
    snap.route_tables.clear();
    let d = resolve(&valid(&[spec("ase-a", "{version: V2}", &rest)]), &snap);
    resolved(&d, "t/ase-a");
    assert_eq!(d.route_tables[&rt_id("ase-a-rt")].routes.len(), 300);
}

#[test]
fn the_service_tag_strategy_needs_a_tag_usable_in_routes() {
    let ok = tunnel("ase-a", "13.0.0.0/8", ", strategy: ServiceTag");
    let d = resolve(&valid(&[spec("ase-a", "{version: V2}", &ok)]), &snapshot());
    assert_eq!(
        routes(&d, "ase-a-rt"),
        vec!["AppServiceManagement Internet asenet-ase-a-tag-AppServiceManagement"]
    );

    let regional = tunnel(
        "ase-a",
        "13.0.0.0/8",
        ", strategy: ServiceTag, requiredTags: [AppServiceManagement.WestEurope]",
    );
    let d = resolve(
        &valid(&[spec("ase-a", "{version: V2}", &regional)]),
        &snapshot(),
    );
    let e = errors_of(&d, "t/ase-a");
    assert_eq!(e[0].value, "AppServiceManagement.WestEurope");
    assert!(e[0].message.contains("UDR"), "{}", e[0].message);
}

#[test]
fn a_required_tag_missing_from_the_snapshot_is_a_clear_error() {
    let rest = tunnel("ase-a", "13.0.0.0/8", ", requiredTags: [Storage]");
    let d = resolve(
        &valid(&[spec("ase-a", "{version: V2}", &rest)]),
        &snapshot(),
    );
    let e = errors_of(&d, "t/ase-a");
    assert_eq!(e[0].field, "spec.outbound.forcedTunneling.requiredTags");
    assert!(e[0]
        .to_string()
        .contains("service tag `Storage` is not in the snapshot"));
}

#[test]
fn forced_tunneling_without_a_route_table_is_invalid() {
    let rest = "  outbound:\n    forcedTunneling: {advertisedPrefixes: [0.0.0.0/0]}\n";
    let e = validate(&spec("ase-a", "{version: V2}", rest)).unwrap_err();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].field, "spec.routeTable");
}

// ---------------------------------------------------------------------------------------
// Examples: snapshot tests of the resolved JSON, invalid examples
// ---------------------------------------------------------------------------------------

fn load_example(dir: &str) -> (Vec<AseConnectivity>, Snapshot) {
    let path = root().join("examples").join(dir);
    let specs = asenet::load::load_specs(std::slice::from_ref(&path)).unwrap();
    let snap = asenet::load::load_snapshot(
        &root()
            .join("examples/azure")
            .join(dir)
            .join("snapshot.yaml"),
    )
    .unwrap();
    (specs.into_iter().map(|l| l.spec).collect(), snap)
}

fn example_desired(dir: &str) -> Desired {
    let (specs, snap) = load_example(dir);
    let d = resolve(&valid(&specs), &snap);
    assert!(d.failed_specs().is_empty(), "{:#?}", d.errors());
    d
}

#[test]
fn the_seed_example_resolves_to_the_committed_json() {
    let d = example_desired("seed");
    let two = rules_of(&d, "ase-two-nsg");
    for port in ["80", "443"] {
        assert!(two.iter().any(|r| r.rule.source.to_string() == "192.23.1.2"
            && r.rule.destination_ports.to_strings() == [port]));
    }
    let sql = rule(&d, "sql-nsg", "asenet-ase-one-be-orders-sql");
    assert_eq!(
        (sql.source.to_string().as_str(), sql.priority),
        ("10.0.1.0/26", 1000)
    );
    for (nsg, stem) in [("ase-one-nsg", "ase-one"), ("ase-two-nsg", "ase-two")] {
        let m = rule(&d, nsg, &format!("asenet-{stem}-req-mgmt-in"));
        assert_eq!(m.destination_ports.to_strings(), vec!["454-455"]);
    }
    for rt in ["ase-one-rt", "ase-two-rt"] {
        assert_eq!(
            d.route_tables[&rt_id(rt)].routes[0]
                .route
                .address_prefix
                .to_string(),
            "0.0.0.0/0"
        );
    }
    insta::assert_snapshot!("seed", render_json(&d).unwrap());
}

#[test]
fn the_layered_example_admits_every_front_end_and_the_api_ase_itself() {
    let d = example_desired("layered");
    let http = rule(&d, "apiase-nsg", "asenet-apiase-in-http");
    assert_eq!(
        http.source.to_string(),
        "20.50.1.10,20.50.1.11,20.50.1.12,20.50.1.13,20.50.1.20"
    );
    assert_eq!(
        rule(&d, "apiase-nsg", "asenet-apiase-req-mgmt-in").priority,
        100
    );
    insta::assert_snapshot!("layered", render_json(&d).unwrap());
}

#[test]
fn the_v3_example_keeps_the_observed_priority_and_avoids_the_foreign_deny() {
    let d = example_desired("v3");
    assert_eq!(rule(&d, "ase3-nsg", "asenet-ase3-in-https").priority, 150);
    assert!(rules_of(&d, "ase3-nsg")
        .iter()
        .any(|r| r.rule.name == "asenet-ase3-req-lb-ftp-in"));
    insta::assert_snapshot!("v3", render_json(&d).unwrap());
}

#[test]
fn each_invalid_example_gives_one_error_naming_the_spec_field_and_value() {
    let cases = [
        (
            "bad-cidr.yaml",
            "spec.inbound[0].from[1].cidr",
            "10.0.0.300/24",
        ),
        ("bad-port.yaml", "spec.inbound[0].ports[1]", "70000"),
        (
            "bad-band.yaml",
            "spec.networkSecurityGroup.priorities",
            "50-5000",
        ),
        ("unknown-service.yaml", "spec.inbound[0].service", "Gopher"),
        (
            "dangling-ref.yaml",
            "spec.inbound[0].from[0].environmentRef",
            "invalid/no-such-ase",
        ),
    ];
    let dir = root().join("examples/invalid");
    let snap =
        asenet::load::load_snapshot(&root().join("examples/azure/invalid/snapshot.yaml")).unwrap();
    for (file, field, value) in cases {
        let specs: Vec<_> = asenet::load::load_specs(&[dir.join(file)])
            .unwrap()
            .into_iter()
            .map(|l| l.spec)
            .collect();
        let (ok, mut errors) = validate_all(&specs);
        errors.extend(resolve(&ok, &snap).errors());
        assert_eq!(errors.len(), 1, "{file}: {errors:#?}");
        let line = errors[0].to_string();
        assert_eq!(errors[0].field, field, "{file}");
        assert_eq!(errors[0].value, value, "{file}");
        assert!(!line.contains('\n'), "{line}");
        assert!(
            line.contains(field) && line.contains(value) && line.starts_with("spec invalid/"),
            "{line}"
        );
    }
}

#[test]
fn the_dangling_ref_example_reports_its_environment_ref_even_where_azure_lacks_its_subnet() {
    // In a cluster whose Azure holds only the seed topology, the example's subnet does not
    // exist; the error it exists to show must still be the first one reported (the status
    // message and the Degraded reason come from it).
    let specs: Vec<_> =
        asenet::load::load_specs(&[root().join("examples/invalid/dangling-ref.yaml")])
            .unwrap()
            .into_iter()
            .map(|l| l.spec)
            .collect();
    let snap =
        asenet::load::load_snapshot(&root().join("examples/azure/seed/snapshot.yaml")).unwrap();
    assert!(!snap.subnets.keys().any(|id| id.name() == "dangling-ref"));
    let (ok, errors) = validate_all(&specs);
    assert!(errors.is_empty(), "{errors:#?}");
    let errors = resolve(&ok, &snap).errors();
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert_eq!(errors[0].kind, SpecErrorKind::UnresolvedReference);
    assert_eq!(errors[0].field, "spec.inbound[0].from[0].environmentRef");
    assert_eq!(errors[0].value, "invalid/no-such-ase");
    assert!(errors[0]
        .to_string()
        .contains("names no AseConnectivity spec"));
    // The missing subnet is reported too, after it.
    assert_eq!(errors[1].field, "spec.subnet.resourceId");
}

// ---------------------------------------------------------------------------------------
// `asenet resolve`
// ---------------------------------------------------------------------------------------

fn asenet(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_asenet"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap()
}

#[test]
fn asenet_resolve_prints_the_seed_as_json_and_exits_0() {
    let out = asenet(&[
        "resolve",
        "-f",
        "examples/seed",
        "--snapshot",
        "examples/azure/seed/snapshot.yaml",
        "--output",
        "json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let nsgs = v["networkSecurityGroups"].as_object().unwrap();
    let two = nsgs
        .iter()
        .find(|(k, _)| k.ends_with("/ase-two-nsg"))
        .unwrap()
        .1;
    let text = two.to_string();
    assert!(text.contains("\"source\":\"192.23.1.2\""), "{text}");
    let text = asenet(&[
        "resolve",
        "-f",
        "examples/seed",
        "--snapshot",
        "examples/azure/seed/snapshot.yaml",
    ])
    .stdout;
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("asenet-ase-one-be-orders-sql"), "{text}");
    assert!(text.contains("0.0.0.0/0"), "{text}");
}

#[test]
fn asenet_resolve_exits_1_with_one_error_line_per_problem_and_still_prints_the_rest() {
    let out = asenet(&[
        "resolve",
        "-f",
        "examples/invalid",
        "--snapshot",
        "examples/azure/invalid/snapshot.yaml",
        "-o",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 8, "{err}");
    assert!(
        err.lines().all(|l| l.starts_with("error: spec invalid/")),
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["specs"]["invalid/bad-port"]["outcome"], "failed");
}

// ---------------------------------------------------------------------------------------
// Property tests
// ---------------------------------------------------------------------------------------

/// A generated world: up to five specs on subnets ase-0..ase-4 of one VNet, mixed
/// versions, inbound entries from CIDRs, tags and references, back ends inside and outside
/// the VNet on a shared NSG, and an observed NSG with foreign and stale owned rules.
#[derive(Debug, Clone)]
struct World {
    specs: Vec<AseConnectivity>,
    snapshot: Snapshot,
}

fn world() -> impl Strategy<Value = World> {
    let entry = (
        0usize..5,                                               // service or raw
        prop::collection::vec((0u8..3, 0u8..200, 0u8..5), 1..4), // sources
    );
    let one_spec = (
        0usize..3,                                                 // version
        prop::collection::vec(entry, 0..4),                        // inbound
        prop::collection::vec((any::<bool>(), 1u16..60000), 0..3), // backends: inside?, port
        0usize..3,                                                 // tunneling: none, /0, specific
        100u16..1500,                                              // band start
    );
    (
        prop::collection::vec(one_spec, 1..5),
        prop::collection::vec((100u32..400, any::<bool>()), 0..6), // observed rules in shared NSG
    )
        .prop_map(|(specs, observed)| {
            let n = specs.len();
            let mut out = Vec::new();
            for (i, (version, inbound, backends, tunneling, band)) in specs.into_iter().enumerate() {
                let version = ["V1", "V2", "V3"][version];
                let mut rest = format!(
                    "  networkSecurityGroup:\n    resourceId: {SUB}/Microsoft.Network/networkSecurityGroups/ase-{i}-nsg\n    priorities: {{from: {band}, to: {}}}\n",
                    band + 400
                );
                if !inbound.is_empty() {
                    rest.push_str("  inbound:\n");
                }
                for (j, (kind, sources)) in inbound.iter().enumerate() {
                    let what = match kind {
                        0 => "service: Http".to_string(),
                        1 => "service: Https".to_string(),
                        2 => "service: Ftp".to_string(),
                        3 => "service: RemoteDebugging".to_string(),
                        _ => "ports: [\"8000-8010\", \"9443\"], protocol: Tcp".to_string(),
                    };
                    let from: Vec<String> = sources
                        .iter()
                        .map(|(k, a, r)| match k {
                            0 => format!("{{cidr: 100.64.{a}.0/24}}"),
                            1 => ["{serviceTag: VirtualNetwork}", "{serviceTag: AppServiceManagement}", "{serviceTag: AzureFrontDoor.Backend}"][*a as usize % 3].to_string(),
                            _ => format!("{{environmentRef: {{name: ase-{}}}}}", *r as usize % n),
                        })
                        .collect();
                    rest.push_str(&format!("    - {{name: e{j}, {what}, from: [{}]}}\n", from.join(", ")));
                }
                if !backends.is_empty() {
                    rest.push_str("  backends:\n");
                }
                for (j, (inside, port)) in backends.iter().enumerate() {
                    let addr = if *inside { format!("10.0.9.{j}") } else { format!("52.0.0.{j}") };
                    rest.push_str(&format!(
                        "    - {{name: b{j}, address: {addr}, ports: [\"{port}\"], networkSecurityGroup: {{resourceId: {SUB}/Microsoft.Network/networkSecurityGroups/shared-nsg, priorities: {{from: 100, to: 4096}}}}}}\n"
                    ));
                }
                match tunneling {
                    1 => rest.push_str(&tunnel(&format!("ase-{i}"), "0.0.0.0/0", "")),
                    2 => rest.push_str(&tunnel(&format!("ase-{i}"), "13.64.0.0/11, 40.112.0.0/16", "")),
                    _ => {}
                }
                let env = format!("{{version: {version}, addresses: {{publicVip: 192.23.1.{i}}}}}");
                out.push(spec(&format!("ase-{i}"), &env, &rest));
            }
            let mut snap = snapshot();
            for i in 0..n {
                snap.insert_subnet(asenet::snapshot::SubnetState {
                    id: net_id(&format!("virtualNetworks/vnet/subnets/ase-{i}")),
                    address_prefix: format!("10.0.{}.0/26", 20 + i).parse().unwrap(),
                    network_security_group: None,
                    route_table: None,
                    etag: None,
                    raw: None,
                });
            }
            let observed: Vec<SecurityRule> = observed
                .into_iter()
                .enumerate()
                .map(|(k, (p, owned))| {
                    if owned {
                        observed_rule(&format!("asenet-ase-{}-be-b0", k % n), p, Some(&format!("t/ase-{}", k % n)))
                    } else {
                        observed_rule(&format!("foreign-{k}"), p, None)
                    }
                })
                .collect();
            // Priorities must be unique per direction in a real NSG.
            let mut seen = BTreeSet::new();
            let observed = observed.into_iter().filter(|r| seen.insert(r.priority)).collect();
            let snap = with_nsg(snap, "shared-nsg", observed);
            World { specs: out, snapshot: snap }
        })
}

fn resolve_world(w: &World) -> Desired {
    resolve(&valid(&w.specs), &w.snapshot)
}

/// ARM's validation rules for a rule (docs/domain.md 2.1, 2.2, 2.8).
fn arm_valid(r: &SecurityRule) -> Result<(), String> {
    if !(100..=4096).contains(&r.priority) {
        return Err(format!("priority {}", r.priority));
    }
    check_azure_name(&r.name).map_err(|e| e.to_string())?;
    if !r.name.starts_with("asenet-") {
        return Err(format!("name {}", r.name));
    }
    let d = r.description.as_deref().unwrap_or_default();
    if d.chars().count() > 140 || owner_from_description(d).is_none() {
        return Err(format!("description {d}"));
    }
    for set in [&r.source, &r.destination] {
        let (single, plural) = set.to_arm();
        // Exactly one of the singular and the plural field is set.
        if single.is_some() != plural.is_empty() {
            return Err(format!("address fields {single:?} {plural:?}"));
        }
        for p in &plural {
            asenet::model::parse_prefix(p)
                .map_err(|e| format!("tag or bad prefix in plural list: {e}"))?;
        }
        if let Some(s) = single {
            AddressSet::parse_one(&s).map_err(|e| e.to_string())?;
        }
    }
    for p in r
        .destination_ports
        .to_strings()
        .iter()
        .chain(r.source_ports.to_strings().iter())
    {
        p.parse::<asenet::model::PortRange>()
            .map_err(|e| e.to_string())?;
    }
    if r.destination_ports.is_empty() {
        return Err("no destination ports".into());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn resolving_is_deterministic_whatever_the_spec_order(w in world(), seed in any::<u64>()) {
        let a = render_json(&resolve_world(&w)).unwrap();
        let b = render_json(&resolve_world(&w)).unwrap();
        prop_assert_eq!(&a, &b);
        let mut shuffled = w.clone();
        // A deterministic shuffle from the seed.
        let len = shuffled.specs.len();
        for i in (1..len).rev() {
            let j = (seed.wrapping_mul(6364136223846793005).wrapping_add(i as u64) >> 33) as usize % (i + 1);
            shuffled.specs.swap(i, j);
        }
        prop_assert_eq!(a, render_json(&resolve_world(&shuffled)).unwrap());
    }

    #[test]
    fn priorities_never_collide_and_stay_in_their_band(w in world()) {
        let d = resolve_world(&w);
        let valid = valid(&w.specs);
        for nsg in d.network_security_groups.values() {
            let observed = w.snapshot.network_security_groups.get(&nsg.id);
            let mut used: BTreeSet<(Direction, u32)> = BTreeSet::new();
            for r in &nsg.rules {
                prop_assert!(used.insert((r.rule.direction, r.rule.priority)), "{} collides", r.rule.name);
                let band = nsg.bands.get(&r.owner).copied();
                let spec = valid.iter().find(|s| s.key == r.owner).unwrap();
                let allowed: Vec<_> = std::iter::once(spec.band).chain(spec.backends.iter().map(|b| b.band)).collect();
                prop_assert!(allowed.iter().any(|b| b.contains(r.rule.priority)), "{} outside {:?}", r.rule.name, band);
            }
            // Rules that stay (foreign, failed or unknown owners) keep their priority to themselves.
            for o in observed.map(|o| o.rules.as_slice()).unwrap_or(&[]) {
                let stays = !o.name.starts_with("asenet-")
                    || o.description.as_deref().and_then(owner_from_description).is_none_or(|k| d.failed_specs().contains(&k));
                if stays {
                    prop_assert!(!used.contains(&(o.direction, o.priority)), "{} reused", o.name);
                }
            }
        }
    }

    #[test]
    fn every_emitted_rule_and_route_passes_arm_validation(w in world()) {
        let d = resolve_world(&w);
        for nsg in d.network_security_groups.values() {
            prop_assert!(nsg.rules.len() <= 1000);
            for r in &nsg.rules {
                if let Err(e) = arm_valid(&r.rule) {
                    prop_assert!(false, "{}: {}", r.rule.name, e);
                }
            }
        }
        for rt in d.route_tables.values() {
            prop_assert!(rt.routes.len() <= 400);
            for r in &rt.routes {
                prop_assert!(check_azure_name(&r.route.name).is_ok(), "{}", r.route.name);
                prop_assert!(r.route.next_hop_ip_address.is_none());
            }
        }
    }

    #[test]
    fn replanning_after_applying_the_plan_is_empty(w in world()) {
        let d = resolve_world(&w);
        let keys: Vec<SpecKey> = d.specs.keys().cloned().collect();
        let scope = asenet::diff::Scope::new(keys, []);
        let plan = asenet::diff::diff(&d, &w.snapshot, &scope);
        let after = asenet::diff::apply_to_snapshot(&plan, &w.snapshot);
        let d2 = resolve(&valid(&w.specs), &after);
        let again = asenet::diff::diff(&d2, &after, &scope);
        prop_assert!(!again.has_changes(), "{:#?}", again);
    }

    #[test]
    fn every_required_flow_is_allowed_and_an_unlisted_source_is_denied(w in world()) {
        let d = resolve_world(&w);
        let keys: Vec<SpecKey> = d.specs.keys().cloned().collect();
        let scope = asenet::diff::Scope::new(keys, []);
        let plan = asenet::diff::diff(&d, &w.snapshot, &scope);
        let after = asenet::diff::apply_to_snapshot(&plan, &w.snapshot);
        let ctx = asenet::evaluate::TagContext::from_snapshot(&after, &[]);
        for (key, outcome) in &d.specs {
            let SpecOutcome::Resolved(r) = outcome else { continue };
            for f in &d.required_flows(key) {
                let rules = &after.network_security_groups[&f.network_security_group].rules;
                let v = asenet::evaluate::evaluate_required(f, rules, &ctx);
                prop_assert_eq!(v.access, asenet::model::Access::Allow, "{} {:?} decided by {}", key, f, v.rule);
            }
            // An address no spec lists, to an app port of the ASE subnet.
            let nsg = w.specs.iter().find(|s| s.metadata.name.as_deref() == Some(&*key.name))
                .map(|s| s.spec.network_security_group.resource_id.clone()).unwrap();
            let rules = &after.network_security_groups[&ResourceId::parse(&nsg).unwrap()].rules;
            for port in [80u16, 443, 21, 8005] {
                let flow = asenet::evaluate::Flow {
                    protocol: Protocol::Tcp,
                    source: "203.0.113.77".parse().unwrap(),
                    source_port: 50000,
                    destination: r.virtual_network_range.network(),
                    destination_port: port,
                };
                let v = asenet::evaluate::evaluate(rules, Direction::Inbound, &flow, &ctx);
                prop_assert_eq!(v.access, asenet::model::Access::Deny, "{} port {} allowed by {}", key, port, v.rule);
            }
        }
    }
}

#[test]
fn examples_are_valid_azure_rules_and_their_required_flows_hold_after_apply() {
    for dir in ["seed", "layered", "v3"] {
        let (specs, snap) = load_example(dir);
        let w = World {
            specs,
            snapshot: snap,
        };
        let d = resolve_world(&w);
        for nsg in d.network_security_groups.values() {
            for r in &nsg.rules {
                arm_valid(&r.rule).unwrap_or_else(|e| panic!("{dir} {}: {e}", r.rule.name));
            }
        }
        let scope = asenet::diff::Scope::new(d.specs.keys().cloned(), []);
        let plan = asenet::diff::diff(&d, &w.snapshot, &scope);
        let after = asenet::diff::apply_to_snapshot(&plan, &w.snapshot);
        let again = asenet::diff::diff(&resolve(&valid(&w.specs), &after), &after, &scope);
        assert!(!again.has_changes(), "{dir}: {again:#?}");
        let ctx = asenet::evaluate::TagContext::from_snapshot(&after, &[]);
        for (key, o) in &d.specs {
            let SpecOutcome::Resolved(_) = o else {
                unreachable!()
            };
            for f in &d.required_flows(key) {
                let v = asenet::evaluate::evaluate_required(
                    f,
                    &after.network_security_groups[&f.network_security_group].rules,
                    &ctx,
                );
                assert_eq!(
                    v.access,
                    asenet::model::Access::Allow,
                    "{dir} {f:?} decided by {}",
                    v.rule
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Verify (evaluate::verify, pure: no mock needed)
// ---------------------------------------------------------------------------------------

#[test]
fn verify_denies_every_flow_of_a_missing_nsg_and_passes_once_the_desired_rules_are_in_it() {
    use asenet::evaluate::verify::verify;
    let specs = valid(&[spec(
        "ase-a",
        "{version: V2, addresses: {publicVip: 1.2.3.4}}",
        "  inbound:\n    - {name: web, service: Https, from: [{cidr: 203.0.113.0/24}]}\n",
    )]);
    let mut snap = snapshot();
    let desired = resolve(&specs, &snap);
    resolved(&desired, "t/ase-a");

    let before = verify(&specs, [], &desired, &snap);
    assert!(!before.flows.is_empty());
    assert!(before.errors.is_empty(), "{:#?}", before.errors);
    assert!(before.flows.iter().all(|f| !f.nsg_exists
        && f.verdict.access == asenet::model::Access::Deny
        && f.verdict.rule == "(network security group missing)"));
    assert_eq!(before.denied().count(), before.flows.len());
    assert!(!before.passed());

    let id = nsg_id("ase-a-nsg");
    let rules = rules_of(&desired, "ase-a-nsg")
        .iter()
        .map(|o| std::sync::Arc::clone(&o.rule))
        .collect();
    snap.network_security_groups.insert(
        id.clone(),
        NsgState {
            id,
            location: None,
            etag: None,
            rules,
            raw_rules: Default::default(),
            raw: None,
        },
    );
    let after = verify(&specs, [], &desired, &snap);
    assert_eq!(after.flows.len(), before.flows.len());
    assert!(after.flows.iter().all(|f| f.nsg_exists));
    assert!(after.passed(), "{:#?}", after.denied().collect::<Vec<_>>());
}
