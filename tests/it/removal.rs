//! Removal in the plan (issue 15): which NSGs and route tables the diff deletes and which
//! subnet associations it takes away, on hand-built snapshots, and how the three reports
//! show it.

use std::sync::Arc;

use asenet::diff::{diff, ParentAction, Plan, ResourceKind, Scope, WriteVerb, CREATED_BY_TAG};
use asenet::model::{
    Access, AddressSet, Direction, NextHopType, PortSet, Protocol, ResourceId, Route,
    RouteDestination, SecurityRule, SpecKey,
};
use asenet::report::{render_json, render_markdown, render_text};
use asenet::resolver::Desired;
use asenet::snapshot::{NsgState, RouteTableState, Snapshot, SubnetState};
use serde_json::json;

fn id(segments: &[(&str, &str)]) -> ResourceId {
    ResourceId::network("sub", "network", segments)
}
fn nsg() -> ResourceId {
    id(&[("networkSecurityGroups", "ase-two-nsg")])
}
fn rt() -> ResourceId {
    id(&[("routeTables", "ase-two-rt")])
}
fn subnet(name: &str) -> ResourceId {
    id(&[("virtualNetworks", "vnet"), ("subnets", name)])
}
fn two() -> SpecKey {
    SpecKey::new("network", "ase-two")
}

fn rule(name: &str, description: &str) -> SecurityRule {
    SecurityRule {
        name: name.into(),
        priority: 100,
        direction: Direction::Inbound,
        access: Access::Allow,
        protocol: Protocol::Tcp,
        source: AddressSet::parse_one("AppServiceManagement").unwrap(),
        source_ports: PortSet::any(),
        destination: AddressSet::Any,
        destination_ports: PortSet::parse_all(["454-455"]).unwrap(),
        description: Some(description.into()),
    }
}

/// ase-two's subnet uses an NSG and a route table asenet created for ase-two, each holding
/// one entry of ase-two; `tweak` changes the snapshot before the diff.
fn removal_plan(tweak: impl FnOnce(&mut Snapshot)) -> Plan {
    let tags = json!({ "tags": { CREATED_BY_TAG: "network/ase-two" } });
    let mut s = Snapshot::default();
    s.insert_nsg(NsgState {
        id: nsg(),
        location: Some("westeurope".into()),
        etag: Some("W/\"1\"".into()),
        rules: vec![Arc::new(rule(
            "asenet-ase-two-req-mgmt-in",
            "asenet:network/ase-two:management ports (ASE V2, required)",
        ))],
        raw_rules: Default::default(),
        raw: Some(tags.clone().into()),
    });
    s.insert_route_table(RouteTableState {
        id: rt(),
        location: Some("westeurope".into()),
        etag: Some("W/\"2\"".into()),
        disable_bgp_route_propagation: false,
        routes: vec![Route {
            name: "asenet-ase-two-internet-default".into(),
            address_prefix: RouteDestination::parse("0.0.0.0/0").unwrap(),
            next_hop_type: NextHopType::Internet,
            next_hop_ip_address: None,
        }],
        recorded_service_tags: Default::default(),
        raw_routes: Default::default(),
        raw: Some(tags.into()),
    });
    s.insert_subnet(SubnetState {
        id: subnet("ase-two"),
        address_prefix: "10.0.2.0/26".parse().unwrap(),
        network_security_group: Some(nsg()),
        route_table: Some(rt()),
        etag: Some("W/\"3\"".into()),
        raw: None,
    });
    tweak(&mut s);
    let mut scope = Scope::new([], [two()]);
    scope.route_tables.insert(rt(), [two()].into());
    diff(&Desired::default(), &s, &scope)
}

fn verbs(plan: &Plan, id: &ResourceId) -> Vec<WriteVerb> {
    plan.resource(id).map(|r| r.writes()).unwrap_or_default()
}

#[test]
fn a_removed_specs_created_parents_are_emptied_dissociated_and_deleted() {
    let plan = removal_plan(|_| {});
    assert_eq!(verbs(&plan, &nsg()), [WriteVerb::Put, WriteVerb::Delete]);
    assert_eq!(verbs(&plan, &rt()), [WriteVerb::Put, WriteVerb::Delete]);
    let s = plan.resource(&subnet("ase-two")).unwrap();
    assert_eq!(s.writes(), [WriteVerb::Put]);
    assert!(s.only_dissociates(), "{s:#?}");
    // 2 entries, 2 associations, 2 parents.
    assert_eq!(plan.summary(), (0, 0, 6));
    // Simulated, the next plan is empty.
    let after = asenet::diff::apply_to_snapshot(&plan, &removal_plan_snapshot());
    assert!(after.network_security_groups.is_empty() && after.route_tables.is_empty());
}

/// The snapshot `removal_plan` diffs (for `apply_to_snapshot`).
fn removal_plan_snapshot() -> Snapshot {
    let mut out = Snapshot::default();
    removal_plan(|s| out = s.clone());
    out
}

#[test]
fn a_foreign_entry_an_unknown_user_or_another_creator_keeps_the_parent() {
    // A foreign rule remains: the NSG stays, and so does the subnet's association with it.
    let plan = removal_plan(|s| {
        let n = s.network_security_groups.get_mut(&nsg()).unwrap();
        n.rules.push(Arc::new(rule("corp-rdp", "corp")));
    });
    assert_eq!(verbs(&plan, &nsg()), [WriteVerb::Put]);
    assert_eq!(verbs(&plan, &rt()), [WriteVerb::Put, WriteVerb::Delete]);
    let a = plan.resource(&subnet("ase-two")).unwrap();
    let a = a.association.as_ref().unwrap();
    assert!(a.network_security_group.is_none() && a.route_table.is_some());

    // A subnet the snapshot did not read uses it (ARM's back-reference): it stays.
    let plan = removal_plan(|s| {
        let n = s.network_security_groups.get_mut(&nsg()).unwrap();
        let mut raw = n.raw.as_ref().unwrap().value();
        raw["properties"] = json!({ "subnets": [{ "id": subnet("other").as_str() }] });
        n.raw = Some(raw.into());
    });
    assert_eq!(verbs(&plan, &nsg()), [WriteVerb::Put]);

    // Created for another spec, or not by asenet: it stays.
    for tags in [json!({ CREATED_BY_TAG: "network/ase-one" }), json!({})] {
        let plan = removal_plan(|s| {
            for n in s.network_security_groups.values_mut() {
                let mut raw = n.raw.as_ref().unwrap().value();
                raw["tags"] = tags.clone();
                n.raw = Some(raw.into());
            }
        });
        assert_eq!(
            plan.resource(&nsg()).unwrap().action,
            ParentAction::Update,
            "{tags}"
        );
    }
}

#[test]
fn nothing_is_deleted_when_no_spec_is_being_removed() {
    let plan = removal_plan(|_| {});
    assert!(plan
        .resources
        .iter()
        .any(|r| r.action == ParentAction::Delete));
    let mut s = removal_plan_snapshot();
    s.subnets.clear();
    let plan = diff(&Desired::default(), &s, &Scope::new([two()], []));
    assert!(plan
        .resources
        .iter()
        .all(|r| r.action != ParentAction::Delete));
    assert!(plan
        .resources
        .iter()
        .all(|r| r.kind != ResourceKind::Subnet));
}

#[test]
fn the_reports_show_deletions_and_dissociations() {
    let plan = removal_plan(|_| {});
    let text = render_text(&plan, false);
    assert!(
        text.contains("ase-two-nsg (network) will be destroyed"),
        "{text}"
    );
    assert!(
        text.contains("Plan: 0 to add, 0 to change, 6 to destroy."),
        "{text}"
    );
    insta::assert_snapshot!("removal_plan_text", text);
    let json = render_json(&plan);
    assert!(json.contains("\"action\": \"delete\""), "{json}");
    insta::assert_snapshot!("removal_plan_json", json);
    insta::assert_snapshot!("removal_plan_markdown", render_markdown(&plan));
}
