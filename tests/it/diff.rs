//! The diff and the plan reports on hand-built desired states and snapshots, plus a smoke
//! test of the benchmark's spec generator (so the benchmark never rots).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use asenet::diff::{apply_to_snapshot, diff, ConflictKind, ParentAction, Plan, Scope};
use asenet::error::{SpecError, SpecErrorKind};
use asenet::model::{
    Access, AddressSet, Direction, NextHopType, PortSet, Priority, PriorityBand, Protocol,
    ResourceId, Route, RouteDestination, SecurityRule, SpecKey,
};
use asenet::report::{render_json, render_markdown, render_text};
use asenet::resolver::{
    Desired, DesiredNsg, DesiredRouteTable, DesiredSubnet, OwnedRoute, OwnedRule, SpecOutcome,
};
use asenet::snapshot::{NsgState, RawChild, RouteTableState, Snapshot, SubnetState, VnetState};

#[path = "../../benches/support/specgen.rs"]
#[allow(dead_code)]
pub(crate) mod specgen;

// ---------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------

fn nsg_id(name: &str) -> ResourceId {
    ResourceId::network("sub", "network", &[("networkSecurityGroups", name)])
}
fn rt_id(name: &str) -> ResourceId {
    ResourceId::network("sub", "network", &[("routeTables", name)])
}
fn subnet_id(name: &str) -> ResourceId {
    ResourceId::network(
        "sub",
        "network",
        &[("virtualNetworks", "vnet"), ("subnets", name)],
    )
}
fn one() -> SpecKey {
    SpecKey::new("network", "ase-one")
}
fn two() -> SpecKey {
    SpecKey::new("network", "ase-two")
}
fn band(from: i64, to: i64) -> PriorityBand {
    PriorityBand {
        from: Priority::new(from).unwrap(),
        to: Priority::new(to).unwrap(),
    }
}

fn rule(name: &str, priority: u32, access: Access, source: &str, ports: &[&str]) -> SecurityRule {
    SecurityRule {
        name: name.to_string(),
        priority,
        direction: Direction::Inbound,
        access,
        protocol: Protocol::Tcp,
        source: AddressSet::parse_one(source).unwrap(),
        source_ports: PortSet::any(),
        destination: AddressSet::Any,
        destination_ports: PortSet::parse_all(ports.iter().copied()).unwrap(),
        description: None,
    }
}

fn owned(
    owner: &SpecKey,
    name: &str,
    priority: u32,
    source: &str,
    ports: &[&str],
    reason: &str,
) -> OwnedRule {
    let mut r = rule(name, priority, Access::Allow, source, ports);
    r.description = Some(format!("asenet:{owner}:{reason}"));
    OwnedRule {
        rule: r.into(),
        owner: owner.clone(),
        reason: reason.into(),
        required: reason.contains("required"),
    }
}

fn route(name: &str, prefix: &str, hop: NextHopType) -> Route {
    Route {
        name: name.to_string(),
        address_prefix: RouteDestination::parse(prefix).unwrap(),
        next_hop_type: hop,
        next_hop_ip_address: None,
    }
}

fn nsg_state(name: &str, rules: Vec<SecurityRule>) -> NsgState {
    NsgState {
        id: nsg_id(name),
        location: Some("westeurope".into()),
        etag: Some("W/\"1\"".into()),
        rules: rules.into_iter().map(Arc::new).collect(),
        raw_rules: Default::default(),
        raw: None,
    }
}

fn resolved() -> SpecOutcome {
    SpecOutcome::Resolved(asenet::resolver::Resolution {
        internet_addresses: vec![],
        virtual_network_range: "10.0.1.0/26".parse().unwrap(),
        touches: BTreeSet::new(),
    })
}

/// ASE Two's NSG: a required management rule and ASE One's VIP on 80/443.
fn ase_two_rules() -> Vec<OwnedRule> {
    vec![
        owned(
            &two(),
            "asenet-ase-two-req-mgmt-in",
            100,
            "AppServiceManagement",
            &["454-455"],
            "management ports (ASE V1, required)",
        ),
        owned(
            &two(),
            "asenet-ase-two-in-web",
            110,
            "192.23.1.2",
            &["80", "443"],
            "web (Http, Https) from network/ase-one",
        ),
    ]
}

fn desired_two() -> Desired {
    let mut d = Desired::default();
    d.network_security_groups.insert(
        nsg_id("ase-two-nsg"),
        DesiredNsg {
            id: nsg_id("ase-two-nsg"),
            location: Some("westeurope".into()),
            rules: ase_two_rules(),
            bands: BTreeMap::from([(two(), band(100, 1999))]),
        },
    );
    d.route_tables.insert(
        rt_id("ase-two-rt"),
        DesiredRouteTable {
            id: rt_id("ase-two-rt"),
            location: Some("westeurope".into()),
            routes: vec![OwnedRoute {
                route: route(
                    "asenet-ase-two-internet",
                    "0.0.0.0/0",
                    NextHopType::Internet,
                )
                .into(),
                owner: two(),
                reason: "forced tunneling: 0.0.0.0/0 advertised, Internet directly".into(),
            }],
            service_tags: Default::default(),
        },
    );
    d.subnets.insert(
        subnet_id("ase-two"),
        DesiredSubnet {
            id: subnet_id("ase-two"),
            network_security_group: nsg_id("ase-two-nsg"),
            route_table: Some(rt_id("ase-two-rt")),
            owner: two(),
        },
    );
    d.specs.insert(two(), resolved());
    d
}

fn base_snapshot() -> Snapshot {
    let mut s = Snapshot::default();
    s.insert_vnet(VnetState {
        id: ResourceId::network("sub", "network", &[("virtualNetworks", "vnet")]),
        location: Some("westeurope".into()),
        address_prefixes: vec!["10.0.0.0/16".parse().unwrap()],
    });
    s.insert_subnet(SubnetState {
        id: subnet_id("ase-two"),
        address_prefix: "10.0.1.64/26".parse().unwrap(),
        network_security_group: None,
        route_table: None,
        etag: Some("W/\"s\"".into()),
        raw: None,
    });
    s
}

fn scope(specs: &[SpecKey]) -> Scope {
    Scope::new(specs.iter().cloned(), [])
}

/// Plans, applies the plan to the snapshot, and returns the converged snapshot.
fn converge(d: &Desired, s: &Snapshot, sc: &Scope) -> Snapshot {
    apply_to_snapshot(&diff(d, s, sc), s)
}

// ---------------------------------------------------------------------------------------
// The diff
// ---------------------------------------------------------------------------------------

#[test]
fn an_empty_subscription_gets_everything_created_and_replanning_after_apply_is_empty() {
    let d = desired_two();
    let s = base_snapshot();
    let plan = diff(&d, &s, &scope(&[two()]));
    let nsg = plan.resource(&nsg_id("ase-two-nsg")).unwrap();
    assert_eq!(nsg.action, ParentAction::Create);
    assert_eq!(nsg.location.as_deref(), Some("westeurope"));
    assert_eq!(nsg.rules.create.len(), 2);
    let rt = plan.resource(&rt_id("ase-two-rt")).unwrap();
    assert_eq!(rt.action, ParentAction::Create);
    let sub = plan.resource(&subnet_id("ase-two")).unwrap();
    assert_eq!(sub.action, ParentAction::Update);
    // two rules, one route, two associations
    assert_eq!(plan.summary(), (5, 0, 0));

    let after = apply_to_snapshot(&plan, &s);
    let again = diff(&d, &after, &scope(&[two()]));
    assert!(!again.has_changes(), "{}", render_text(&again, false));
    assert_eq!(again.summary(), (0, 0, 0));
    assert!(again
        .resources
        .iter()
        .all(|r| r.action == ParentAction::NoChange));
    assert_eq!(
        render_text(&again, false).trim_end(),
        "No changes. Azure matches the specs."
    );
}

#[test]
fn canonical_forms_compare_equal_so_nothing_changes() {
    let d = desired_two();
    let mut s = converge(&d, &base_snapshot(), &scope(&[two()]));
    // Rewrite what Azure holds with equivalent spellings: `0-65535` for `*`, plural vs
    // singular, host bits, upper-case names.
    let nsg = s
        .network_security_groups
        .get_mut(&nsg_id("ase-two-nsg"))
        .unwrap();
    for r in &mut nsg.rules {
        let r = Arc::make_mut(r);
        r.name = r.name.to_ascii_uppercase();
        r.source_ports = PortSet::parse_all(["0-65535"]).unwrap();
        r.destination = AddressSet::parse_arm(None, &["0.0.0.0/0".to_string()]).unwrap();
        if r.source != AddressSet::tag("AppServiceManagement") {
            r.source = AddressSet::parse_arm(Some(""), &["192.23.1.2/32".to_string()]).unwrap();
        } else {
            r.source = AddressSet::parse_one("appservicemanagement").unwrap();
        }
    }
    let plan = diff(&d, &s, &scope(&[two()]));
    assert!(!plan.has_changes(), "{}", render_text(&plan, false));
    // A kept entry is the entry as Azure holds it (upper-case name, its spellings), not
    // the desired one.
    let kept = &plan.resource(&nsg_id("ase-two-nsg")).unwrap().rules.keep;
    assert_eq!(kept.len(), 2);
    assert!(kept
        .iter()
        .all(|k| k.entry.name == k.entry.name.to_ascii_uppercase()));
}

#[test]
fn a_converged_plan_shares_the_desired_entries_it_keeps_instead_of_copying_them() {
    let d = desired_two();
    let s = converge(&d, &base_snapshot(), &scope(&[two()]));
    let plan = diff(&d, &s, &scope(&[two()]));
    assert!(!plan.has_changes(), "{}", render_text(&plan, false));
    let want = &d.network_security_groups[&nsg_id("ase-two-nsg")].rules;
    let kept = &plan.resource(&nsg_id("ase-two-nsg")).unwrap().rules.keep;
    assert_eq!(kept.len(), want.len());
    for (k, w) in kept.iter().zip(want) {
        assert!(std::sync::Arc::ptr_eq(&k.entry, &w.rule), "{}", w.rule.name);
        assert!(std::sync::Arc::ptr_eq(&k.reason, &w.reason));
    }
    let want = &d.route_tables[&rt_id("ase-two-rt")].routes;
    let kept = &plan.resource(&rt_id("ase-two-rt")).unwrap().routes.keep;
    assert_eq!(kept.len(), want.len());
    assert!(std::sync::Arc::ptr_eq(&kept[0].entry, &want[0].route));
}

#[test]
fn one_changed_port_gives_exactly_one_update_listing_destination_ports() {
    let d = desired_two();
    let mut s = converge(&d, &base_snapshot(), &scope(&[two()]));
    let nsg = s
        .network_security_groups
        .get_mut(&nsg_id("ase-two-nsg"))
        .unwrap();
    let web = nsg
        .rules
        .iter_mut()
        .find(|r| r.name == "asenet-ase-two-in-web")
        .unwrap();
    Arc::make_mut(web).destination_ports = PortSet::parse_all(["80", "8443"]).unwrap();

    let plan = diff(&d, &s, &scope(&[two()]));
    assert_eq!(plan.summary(), (0, 1, 0));
    let r = plan.resource(&nsg_id("ase-two-nsg")).unwrap();
    assert_eq!(r.action, ParentAction::Update);
    assert_eq!(
        r.etag,
        s.network_security_groups[&nsg_id("ase-two-nsg")].etag
    );
    assert_eq!(r.rules.update.len(), 1);
    assert_eq!(
        r.rules.update[0].fields,
        vec!["destinationPorts".to_string()]
    );
    assert_eq!(r.rules.update[0].owner, two());
    assert_eq!(r.rules.keep.len(), 1);
    assert_eq!(plan.changed().count(), 1, "only the NSG is written");
}

#[test]
fn foreign_rules_are_untouched_and_listed() {
    let d = desired_two();
    let mut s = converge(&d, &base_snapshot(), &scope(&[two()]));
    let foreign = SecurityRule {
        description: Some("ops: bastion".into()),
        ..rule("AllowBastion", 3000, Access::Allow, "10.0.9.0/24", &["22"])
    };
    let nsg = s
        .network_security_groups
        .get_mut(&nsg_id("ase-two-nsg"))
        .unwrap();
    nsg.rules.push(foreign.clone().into());
    nsg.raw_rules.insert(
        "allowbastion".into(),
        serde_json::json!({"name": "AllowBastion"}).into(),
    );

    let plan = diff(&d, &s, &scope(&[two()]));
    assert!(!plan.has_changes());
    let r = plan.resource(&nsg_id("ase-two-nsg")).unwrap();
    assert_eq!(r.rules.foreign, vec![foreign.clone()]);
    assert!(r.conflicts.is_empty(), "{:?}", r.conflicts);

    // The next write still carries it unchanged.
    let mut s2 = s.clone();
    s2.network_security_groups
        .get_mut(&nsg_id("ase-two-nsg"))
        .unwrap()
        .rules
        .retain(|r| r.name != "asenet-ase-two-in-web");
    let plan = diff(&d, &s2, &scope(&[two()]));
    let r = plan.resource(&nsg_id("ase-two-nsg")).unwrap();
    assert_eq!(r.rules.create.len(), 1);
    assert!(r.target_rules().contains(&foreign));
    assert_eq!(Plan::target_rules(r).len(), 3);
    let after = apply_to_snapshot(&plan, &s2);
    let nsg = &after.network_security_groups[&nsg_id("ase-two-nsg")];
    assert!(
        matches!(nsg.raw_rules.get("allowbastion"), Some(RawChild::Json(_))),
        "foreign raw JSON kept"
    );
}

/// A shared back-end NSG holding rules of ASE One and ASE Two.
fn shared_backend() -> (Desired, Snapshot) {
    let sql = nsg_id("sql-nsg");
    let mut d = Desired::default();
    let r1 = owned(
        &one(),
        "asenet-ase-one-be-sql",
        200,
        "10.0.1.0/26",
        &["1433"],
        "backend sql for network/ase-one",
    );
    let r2 = owned(
        &two(),
        "asenet-ase-two-be-sql",
        300,
        "10.0.1.64/26",
        &["1433"],
        "backend sql for network/ase-two",
    );
    d.network_security_groups.insert(
        sql.clone(),
        DesiredNsg {
            id: sql.clone(),
            location: None,
            rules: vec![r1.clone(), r2.clone()],
            bands: BTreeMap::from([(one(), band(200, 299)), (two(), band(300, 399))]),
        },
    );
    d.specs.insert(one(), resolved());
    d.specs.insert(two(), resolved());
    let mut s = base_snapshot();
    s.insert_nsg(nsg_state(
        "sql-nsg",
        vec![(*r1.rule).clone(), (*r2.rule).clone()],
    ));
    (d, s)
}

#[test]
fn removing_a_spec_deletes_only_its_owned_rules() {
    let (mut d, s) = shared_backend();
    // ase-one is being deleted: it is no longer in the desired state.
    let nsg = d
        .network_security_groups
        .get_mut(&nsg_id("sql-nsg"))
        .unwrap();
    nsg.rules.retain(|r| r.owner != one());
    nsg.bands.remove(&one());
    d.specs.remove(&one());
    let sc = Scope::new([two()], [one()]);
    let plan = diff(&d, &s, &sc);
    let r = plan.resource(&nsg_id("sql-nsg")).unwrap();
    assert_eq!(plan.summary(), (0, 0, 1));
    assert_eq!(r.rules.delete[0].entry.name, "asenet-ase-one-be-sql");
    assert_eq!(r.rules.delete[0].owner, Some(one()));
    assert!(r.rules.delete[0].reason.contains("being removed"));
    assert_eq!(r.rules.keep[0].entry.name, "asenet-ase-two-be-sql");

    // Even with nothing desired, an NSG holding owned rules of a removed spec is visited.
    let only_removal = diff(&Desired::default(), &s, &Scope::new([], [one()]));
    let r = only_removal.resource(&nsg_id("sql-nsg")).unwrap();
    assert_eq!(r.rules.delete.len(), 1);
    assert_eq!(
        r.rules.foreign.len(),
        1,
        "ase-two is out of scope: left alone"
    );
}

#[test]
fn a_failed_specs_rules_are_kept_and_its_errors_reported() {
    let (mut d, s) = shared_backend();
    let nsg = d
        .network_security_groups
        .get_mut(&nsg_id("sql-nsg"))
        .unwrap();
    nsg.rules.retain(|r| r.owner != one());
    let err = SpecError::new(
        &one(),
        SpecErrorKind::UnresolvedReference,
        "spec.inbound[0].from[0].environmentRef",
        "ase-nine",
        "no spec network/ase-nine",
    );
    d.specs.insert(
        one(),
        SpecOutcome::Failed {
            errors: vec![err.clone()],
        },
    );
    let plan = diff(&d, &s, &scope(&[one(), two()]));
    assert!(!plan.has_changes());
    let r = plan.resource(&nsg_id("sql-nsg")).unwrap();
    assert!(r.rules.delete.is_empty());
    assert_eq!(r.rules.keep.len(), 2);
    assert!(r
        .rules
        .keep
        .iter()
        .any(|k| k.owner == Some(one()) && k.reason.contains("failed to resolve")));
    assert_eq!(plan.errors, vec![err]);
    assert!(render_text(&plan, false).contains("Error: spec network/ase-one"));
}

#[test]
fn unknown_owner_rules_are_never_deleted_and_reported_only_when_they_collide() {
    let d = desired_two();
    let mut s = converge(&d, &base_snapshot(), &scope(&[two()]));
    let nsg = s
        .network_security_groups
        .get_mut(&nsg_id("ase-two-nsg"))
        .unwrap();
    // Owner in another namespace (another team's directory): outside the band.
    nsg.rules.push(Arc::new(SecurityRule {
        description: Some("asenet:other/ase-nine:web".into()),
        ..rule(
            "asenet-ase-nine-in-web",
            2500,
            Access::Allow,
            "1.2.3.4",
            &["80"],
        )
    }));
    // No parsable owner, inside ase-two's band.
    nsg.rules.push(Arc::new(SecurityRule {
        description: Some("hand-made".into()),
        ..rule("asenet-mystery", 150, Access::Allow, "1.2.3.5", &["80"])
    }));
    let plan = diff(&d, &s, &scope(&[two()]));
    assert!(!plan.has_changes());
    let r = plan.resource(&nsg_id("ase-two-nsg")).unwrap();
    assert_eq!(r.rules.foreign.len(), 2);
    assert_eq!(r.conflicts.len(), 1, "{:?}", r.conflicts);
    assert_eq!(r.conflicts[0].kind, ConflictKind::UnknownOwner);
    assert_eq!(r.conflicts[0].foreign, "asenet-mystery");
}

#[test]
fn a_foreign_rule_in_the_band_and_a_shadowing_deny_are_reported_not_fixed() {
    let d = desired_two();
    let mut s = converge(&d, &base_snapshot(), &scope(&[two()]));
    let nsg = s
        .network_security_groups
        .get_mut(&nsg_id("ase-two-nsg"))
        .unwrap();
    nsg.rules.push(Arc::new(rule(
        "DenyInternet",
        105,
        Access::Deny,
        "Internet",
        &["*"],
    )));
    let plan = diff(&d, &s, &scope(&[two()]));
    assert!(!plan.has_changes());
    let r = plan.resource(&nsg_id("ase-two-nsg")).unwrap();
    let kinds: Vec<(ConflictKind, Option<&str>)> = r
        .conflicts
        .iter()
        .map(|c| (c.kind, c.owned.as_deref()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (ConflictKind::PriorityInBand, None),
            (
                ConflictKind::ShadowsRequiredAllow,
                Some("asenet-ase-two-in-web")
            ),
        ],
        "{:#?}",
        r.conflicts
    );
    assert!(r.conflicts[1].message.contains("192") || r.conflicts[1].message.contains("web"));
    // the required management allow sits at 100, before the deny: not shadowed
    assert!(!r
        .conflicts
        .iter()
        .any(|c| c.owned.as_deref() == Some("asenet-ase-two-req-mgmt-in")));
}

#[test]
fn routes_of_a_removed_spec_go_and_foreign_routes_with_the_same_destination_are_reported() {
    let d = desired_two();
    let mut s = converge(&d, &base_snapshot(), &scope(&[two()]));
    let rt = s.route_tables.get_mut(&rt_id("ase-two-rt")).unwrap();
    rt.routes.push(route(
        "to-firewall",
        "0.0.0.0/0",
        NextHopType::VirtualAppliance,
    ));
    // A route asenet named for ase-two (the owner is read from the name) that is no longer
    // wanted; and an asenet-looking name asenet never gives a route, which nobody in the
    // input owns, so it is carried unchanged.
    rt.routes.push(route(
        "asenet-ase-two-13.64.0.0-16",
        "13.64.0.0/16",
        NextHopType::Internet,
    ));
    rt.routes.push(route(
        "asenet-ase-two-stale",
        "13.65.0.0/16",
        NextHopType::Internet,
    ));
    let plan = diff(&d, &s, &scope(&[two()]));
    let r = plan.resource(&rt_id("ase-two-rt")).unwrap();
    assert_eq!(r.routes.delete.len(), 1);
    assert_eq!(r.routes.delete[0].entry.name, "asenet-ase-two-13.64.0.0-16");
    assert_eq!(r.routes.foreign.len(), 2);
    assert_eq!(r.conflicts.len(), 1);
    assert_eq!(r.conflicts[0].kind, ConflictKind::SameDestination);

    // Removing the spec: the caller names its route table in the scope.
    let mut sc = Scope::new([], [two()]);
    sc.route_tables
        .insert(rt_id("ase-two-rt"), BTreeSet::from([two()]));
    let plan = diff(&Desired::default(), &s, &sc);
    let r = plan.resource(&rt_id("ase-two-rt")).unwrap();
    // The route asenet named for ase-two goes. The fixture's `asenet-ase-two-internet`
    // (hand-built, not a name asenet gives a route) names no spec, like the stale one, so
    // both stay with the foreign route.
    assert_eq!(r.routes.delete.len(), 1);
    assert_eq!(r.routes.delete[0].entry.name, "asenet-ase-two-13.64.0.0-16");
    assert_eq!(
        &*r.routes.delete[0].reason,
        "spec network/ase-two is being removed"
    );
    assert_eq!(r.target_routes().len(), 3);
    // Without that hint the diff does not visit the table: nothing is deleted.
    let plan = diff(&Desired::default(), &s, &Scope::new([], [two()]));
    assert!(plan.resource(&rt_id("ase-two-rt")).is_none());
}

#[test]
fn subnet_associations_are_set_or_changed_but_never_removed() {
    let d = desired_two();
    let mut s = base_snapshot();
    let sub = s.subnets.get_mut(&subnet_id("ase-two")).unwrap();
    sub.network_security_group = Some(nsg_id("old-nsg"));
    let plan = diff(&d, &s, &scope(&[two()]));
    let r = plan.resource(&subnet_id("ase-two")).unwrap();
    let a = r.association.as_ref().unwrap();
    let nsg = a.network_security_group.as_ref().unwrap();
    assert_eq!(nsg.from, Some(nsg_id("old-nsg")));
    assert_eq!(nsg.to, Some(nsg_id("ase-two-nsg")));
    assert_eq!(a.route_table.as_ref().unwrap().from, None);
    // (2 rules + 1 route + 1 new association) added, 1 association changed
    assert_eq!(plan.summary(), (4, 1, 0));

    // A spec without a route table leaves an existing association alone.
    let mut d2 = d.clone();
    d2.subnets
        .get_mut(&subnet_id("ase-two"))
        .unwrap()
        .route_table = None;
    let mut s2 = converge(&d, &s, &scope(&[two()]));
    s2.subnets
        .get_mut(&subnet_id("ase-two"))
        .unwrap()
        .route_table = Some(rt_id("someone-elses"));
    let plan = diff(&d2, &s2, &scope(&[two()]));
    assert!(plan
        .resource(&subnet_id("ase-two"))
        .unwrap()
        .association
        .is_none());
}

#[test]
fn the_same_input_gives_byte_identical_json() {
    let (d, s) = hand_built();
    let a = render_json(&diff(&d, &s, &scope(&[one(), two()])));
    let b = render_json(&diff(&d.clone(), &s.clone(), &scope(&[two(), one()])));
    assert_eq!(a, b);
    let v: serde_json::Value = serde_json::from_str(&a).unwrap();
    assert_eq!(v["formatVersion"], 1);
}

// ---------------------------------------------------------------------------------------
// Reports
// ---------------------------------------------------------------------------------------

/// A plan with every kind of line: creates, an update, a delete, a foreign rule in the band
/// and a shadowing deny, a route, an association and a failed spec.
fn hand_built() -> (Desired, Snapshot) {
    let mut d = desired_two();
    let mut s = base_snapshot();
    let mut existing: Vec<SecurityRule> = ase_two_rules()
        .into_iter()
        .filter(|r| r.rule.name.contains("mgmt"))
        .map(|r| (*r.rule).clone())
        .collect();
    existing[0].priority = 120;
    existing.push(SecurityRule {
        description: Some("asenet:network/ase-two:ftp from 203.0.113.0/24".into()),
        ..rule(
            "asenet-ase-two-in-ftp",
            130,
            Access::Allow,
            "203.0.113.0/24",
            &["21", "990", "10001-10020"],
        )
    });
    existing.push(rule(
        "DenyInternet",
        105,
        Access::Deny,
        "Internet",
        &["443"],
    ));
    existing.push(rule(
        "AllowBastion",
        3000,
        Access::Allow,
        "10.0.9.0/24",
        &["22"],
    ));
    s.insert_nsg(nsg_state("ase-two-nsg", existing));
    s.insert_route_table(RouteTableState {
        id: rt_id("ase-two-rt"),
        location: Some("westeurope".into()),
        etag: Some("W/\"r\"".into()),
        disable_bgp_route_propagation: false,
        routes: vec![route(
            "to-firewall",
            "10.0.0.0/8",
            NextHopType::VirtualAppliance,
        )],
        recorded_service_tags: Default::default(),
        raw_routes: Default::default(),
        raw: None,
    });
    d.specs.insert(
        one(),
        SpecOutcome::Failed {
            errors: vec![SpecError::new(
                &one(),
                SpecErrorKind::InvalidField,
                "spec.inbound[1].ports[0]",
                "70000",
                "`70000` is not a valid port or port range",
            )],
        },
    );
    (d, s)
}

fn hand_built_plan() -> Plan {
    let (d, s) = hand_built();
    diff(&d, &s, &scope(&[one(), two()]))
}

#[test]
fn the_text_report_reads_like_terraform_plan() {
    let plan = hand_built_plan();
    assert_eq!(plan.summary(), (4, 1, 1));
    let text = render_text(&plan, false);
    assert!(!text.contains('\x1b'));
    assert!(text.contains("Plan: 4 to add, 1 to change, 1 to destroy."));
    assert!(text.contains("~ priority: 120 -> 100"));
    insta::assert_snapshot!("plan_text", text);
}

#[test]
fn the_text_report_is_coloured_only_when_asked() {
    let plan = hand_built_plan();
    let coloured = render_text(&plan, true);
    assert!(coloured.contains("\x1b[32m+\x1b[0m"));
    assert!(coloured.contains("\x1b[31m-\x1b[0m"));
}

#[test]
fn the_json_report_follows_the_documented_schema() {
    let json = render_json(&hand_built_plan());
    insta::assert_snapshot!("plan_json", json);
}

#[test]
fn the_markdown_report_has_a_table_per_resource_and_details() {
    let md = render_markdown(&hand_built_plan());
    assert!(md.contains("<details>"));
    insta::assert_snapshot!("plan_markdown", md);
}

#[test]
fn a_converged_plan_renders_no_changes_everywhere() {
    let d = desired_two();
    let s = converge(&d, &base_snapshot(), &scope(&[two()]));
    let plan = diff(&d, &s, &scope(&[two()]));
    assert_eq!(
        render_text(&plan, false),
        "No changes. Azure matches the specs.\n"
    );
    assert!(render_markdown(&plan).contains("**No changes. Azure matches the specs.**"));
    let v: serde_json::Value = serde_json::from_str(&render_json(&plan)).unwrap();
    assert_eq!(v["summary"]["hasChanges"], false);
}

// ---------------------------------------------------------------------------------------
// The benchmark's generator (benches/support/specgen.rs)
// ---------------------------------------------------------------------------------------

#[test]
fn the_benchmark_generator_produces_specs_that_validate_resolve_and_converge() {
    let world = specgen::generate(120);
    let yaml = specgen::to_yaml(&world.specs);
    let parsed = specgen::parse_yaml(&yaml);
    assert_eq!(parsed.len(), 120);
    let (valid, errors) = asenet::validate::validate_all(&parsed);
    assert!(errors.is_empty(), "{errors:#?}");
    let desired = asenet::resolver::resolve(&valid, &world.snapshot);
    let failed = desired.errors();
    assert!(failed.is_empty(), "{failed:#?}");
    let sc = Scope::new(valid.iter().map(|v| v.key.clone()), []);
    let plan = diff(&desired, &world.snapshot, &sc);
    assert!(plan.has_changes());
    let after = apply_to_snapshot(&plan, &world.snapshot);
    let again = diff(&asenet::resolver::resolve(&valid, &after), &after, &sc);
    assert!(!again.has_changes(), "{}", render_text(&again, false));
}

/// Validation, resolving and the diff split a large input over the cores (rayon). The
/// result must not depend on how it is split: one thread and four give the same valid specs,
/// errors, desired state and plan, failures included (each kind is gathered from another
/// stage: validation, the subnet claims, an NSG's priority band).
#[test]
fn a_large_input_plans_the_same_on_one_thread_as_on_four() {
    use asenet::api::PriorityBandSpec;
    let world = specgen::generate(1500);
    let mut specs = world.specs.clone();
    // Validation: a spec given twice, and a bad prefix.
    specs.push(specs[7].clone());
    specs[40].spec.topology.extra_prefixes = vec!["10.0.0.0/33".into()];
    // Merge: a subnet claimed twice, and a spec whose bands in both its back-end NSGs hold
    // only the priority another spec's rule takes (errors from two NSGs, in NSG order).
    specs[900].spec.subnet = specs[901].spec.subnet.clone();
    for be in &mut specs[1201].spec.backends {
        be.network_security_group.priorities = Some(PriorityBandSpec { from: 100, to: 100 });
    }
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a thread pool");
        pool.install(|| {
            let (valid, errors) = asenet::validate::validate_all(&specs);
            let desired = asenet::resolver::resolve(&valid, &world.snapshot);
            let sc = Scope::new(valid.iter().map(|v| v.key.clone()), []);
            let plan = diff(&desired, &world.snapshot, &sc);
            let keys: Vec<SpecKey> = valid.iter().map(|v| v.key.clone()).collect();
            (keys, errors, desired, plan)
        })
    };
    let (keys1, errors1, desired1, plan1) = run(1);
    let (keys4, errors4, desired4, plan4) = run(4);
    assert_eq!(keys1, keys4);
    assert_eq!(errors1, errors4);
    assert_eq!(desired1, desired4);
    assert_eq!(plan1, plan4);
    // Every kind of failure happened, so the gathering of each was compared.
    let fields: BTreeSet<String> = errors1.iter().map(|e| e.field.to_string()).collect();
    assert!(fields.contains("metadata.name"), "{fields:?}");
    assert!(
        fields.iter().any(|f| f.contains("extraPrefixes")),
        "{fields:?}"
    );
    let failed = desired1.errors();
    let failed_fields: BTreeSet<&str> = failed.iter().map(|e| e.field.as_str()).collect();
    assert!(
        failed_fields.contains("spec.subnet.resourceId"),
        "{failed_fields:?}"
    );
    let spec = &specs[1201];
    let banded: Vec<&str> = (failed.iter())
        .filter(|e| e.spec.name.as_ref() == spec.metadata.name.as_deref().unwrap_or_default())
        .map(|e| e.field.as_str())
        .collect();
    // A spec whose band is full fails for it once, in the first NSG where it is full.
    assert_eq!(banded.len(), 1, "{banded:?}");
    assert!(banded[0].contains("backends[0]"), "{banded:?}");
    assert!(plan1.has_changes());
}

#[test]
fn the_per_spec_index_of_a_plan_gives_each_spec_what_a_pass_over_the_whole_plan_gives() {
    use asenet::controller::decide::Parts;
    use asenet::controller::status::owned_rules;
    use asenet::resolver::SpecOutcome;
    let world = specgen::generate(120);
    let (valid, _) = asenet::validate::validate_all(&world.specs);
    let desired = asenet::resolver::resolve(&valid, &world.snapshot);
    let sc = Scope::new(valid.iter().map(|v| v.key.clone()), []);
    let plan = diff(&desired, &world.snapshot, &sc);
    let parts = Parts::of(&plan.resources, &desired);
    let mut shared = 0;
    for v in &valid {
        let Some(SpecOutcome::Resolved(r)) = desired.specs.get(&v.key) else {
            panic!("{} did not resolve", v.key);
        };
        let scan: Vec<_> = plan
            .resources
            .iter()
            .filter(|p| p.owners.contains(&v.key) || r.touches.contains(&p.id))
            .collect();
        let indexed = parts.mine(&v.key, &r.touches, &plan.resources);
        assert_eq!(indexed.len(), scan.len(), "{}", v.key);
        assert!(indexed.iter().zip(&scan).all(|(a, b)| std::ptr::eq(*a, *b)));
        shared += scan.iter().filter(|p| p.owners.len() > 1).count();
        let rules = owned_rules(&desired, &v.key);
        assert!(!rules.is_empty(), "{} owns rules", v.key);
        assert_eq!(parts.rules(&v.key), rules.as_slice(), "{}", v.key);
    }
    assert!(shared > 0, "the fleet has resources several specs share");
    let nobody = asenet::model::SpecKey::new("nowhere", "nobody");
    assert!(parts.rules(&nobody).is_empty());
    assert!(parts
        .mine(&nobody, &BTreeSet::new(), &plan.resources)
        .is_empty());
}

// ---------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// One drift Azure may show relative to the converged state.
    #[derive(Debug, Clone)]
    enum Drift {
        /// An owned rule's destination ports changed by hand.
        Ports(usize, u16),
        /// An owned rule deleted by hand.
        DeleteOwned(usize),
        /// An owned rule moved to another priority.
        Priority(usize, u32),
        /// A foreign rule added.
        Foreign(u32, bool),
        /// A stale owned rule of the spec in scope.
        Stale(u32),
        /// The owned route deleted.
        DeleteRoute,
        /// The subnet's NSG association pointed elsewhere.
        Reassociate,
    }

    fn drift() -> impl Strategy<Value = Drift> {
        prop_oneof![
            (0usize..2, 1u16..65535).prop_map(|(i, p)| Drift::Ports(i, p)),
            (0usize..2).prop_map(Drift::DeleteOwned),
            (0usize..2, 2000u32..4000).prop_map(|(i, p)| Drift::Priority(i, p)),
            (2000u32..4096, any::<bool>()).prop_map(|(p, deny)| Drift::Foreign(p, deny)),
            (2000u32..4096).prop_map(Drift::Stale),
            Just(Drift::DeleteRoute),
            Just(Drift::Reassociate),
        ]
    }

    fn apply_drift(s: &mut Snapshot, drifts: &[Drift]) {
        for (n, d) in drifts.iter().enumerate() {
            let nsg = s
                .network_security_groups
                .get_mut(&nsg_id("ase-two-nsg"))
                .unwrap();
            let owned: Vec<usize> = (0..nsg.rules.len())
                .filter(|i| nsg.rules[*i].name.starts_with("asenet-ase-two"))
                .collect();
            let free = |nsg: &NsgState, p: u32| !nsg.rules.iter().any(|r| r.priority == p);
            match d {
                Drift::Ports(i, p) => {
                    if let Some(&i) = owned.get(*i) {
                        Arc::make_mut(&mut nsg.rules[i]).destination_ports =
                            PortSet::parse_all([p.to_string().as_str()]).unwrap();
                    }
                }
                Drift::DeleteOwned(i) => {
                    if let Some(&i) = owned.get(*i) {
                        nsg.rules.remove(i);
                    }
                }
                Drift::Priority(i, p) => {
                    if let Some(&i) = owned.get(*i) {
                        if free(nsg, *p) {
                            Arc::make_mut(&mut nsg.rules[i]).priority = *p;
                        }
                    }
                }
                Drift::Foreign(p, deny) => {
                    if free(nsg, *p) {
                        let access = if *deny { Access::Deny } else { Access::Allow };
                        nsg.rules.push(Arc::new(rule(
                            &format!("foreign-{n}"),
                            *p,
                            access,
                            "Internet",
                            &["22"],
                        )));
                    }
                }
                Drift::Stale(p) => {
                    if free(nsg, *p) {
                        nsg.rules.push(Arc::new(SecurityRule {
                            description: Some("asenet:network/ase-two:old entry".into()),
                            ..rule(
                                &format!("asenet-ase-two-old-{n}"),
                                *p,
                                Access::Allow,
                                "1.2.3.4",
                                &["81"],
                            )
                        }));
                    }
                }
                Drift::DeleteRoute => {
                    if let Some(rt) = s.route_tables.get_mut(&rt_id("ase-two-rt")) {
                        rt.routes.retain(|r| !r.name.starts_with("asenet-"));
                    }
                }
                Drift::Reassociate => {
                    s.subnets
                        .get_mut(&subnet_id("ase-two"))
                        .unwrap()
                        .network_security_group = Some(nsg_id("elsewhere"));
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn replanning_after_applying_any_plan_is_empty(drifts in proptest::collection::vec(drift(), 0..8)) {
            let d = desired_two();
            let sc = scope(&[two()]);
            let mut s = converge(&d, &base_snapshot(), &sc);
            apply_drift(&mut s, &drifts);
            let foreign_before: Vec<SecurityRule> = s.network_security_groups[&nsg_id("ase-two-nsg")]
                .rules.iter().filter(|r| !r.name.starts_with("asenet-")).map(|r| (**r).clone()).collect();

            let plan = diff(&d, &s, &sc);
            // deterministic: the same input gives the same bytes
            prop_assert_eq!(render_json(&plan), render_json(&diff(&d, &s, &sc)));
            let after = apply_to_snapshot(&plan, &s);
            let again = diff(&d, &after, &sc);
            prop_assert!(!again.has_changes(), "{}", render_text(&again, false));
            // foreign rules survive unchanged
            let foreign_after: Vec<SecurityRule> = after.network_security_groups[&nsg_id("ase-two-nsg")]
                .rules.iter().filter(|r| !r.name.starts_with("asenet-")).map(|r| (**r).clone()).collect();
            let mut a = foreign_before.clone();
            a.sort();
            let mut b = foreign_after;
            b.sort();
            prop_assert_eq!(a, b);
        }
    }
}

/// The controller's plans ([`asenet::diff::Detail::Writes`]) are the full plan, without
/// the resources with nothing to write and no conflict, and without the kept and foreign
/// entries of the resources kept but not written: every resource the plan writes keeps
/// its whole list (a PUT carries it), and every change, owner and conflict is there. A
/// plan that removes a spec is always full (the removal reads what remains in each
/// resource).
#[test]
fn a_plan_for_writes_is_the_full_plan_without_what_it_does_not_write_or_report() {
    use asenet::diff::{diff_with, Detail};
    let world = specgen::generate(300);
    let HalfApplied {
        valid,
        desired,
        sc,
        snapshot,
        ..
    } = half_applied(&world.specs, &world.snapshot);
    let full = diff(&desired, &snapshot, &sc);
    let lean = diff_with(&desired, &snapshot, &sc, Detail::Writes);
    assert_eq!(full.errors, lean.errors);
    let expected: Vec<_> = (full.resources.iter())
        .filter(|r| r.has_changes() || !r.conflicts.is_empty())
        .cloned()
        .map(|mut r| {
            if !r.has_changes() {
                r.drop_unwritten_entries();
            }
            r
        })
        .collect();
    assert_eq!(expected, lean.resources);
    // Each case happened: written resources with foreign entries, resources dropped, and
    // resources kept for a conflict alone.
    let written = lean.resources.iter().filter(|r| r.has_changes()).count();
    assert!(written > 100 && lean.resources.len() < full.resources.len() - 100);
    assert!(lean
        .resources
        .iter()
        .any(|r| r.has_changes() && !r.rules.foreign.is_empty()));
    assert!(lean.resources.iter().any(|r| !r.has_changes()));

    let removing = valid[0].key.clone();
    let rest: Vec<_> = valid[1..].to_vec();
    let desired = asenet::resolver::resolve_removing(&rest, &snapshot, &[removing.clone()].into());
    let sc = Scope::new(rest.iter().map(|v| v.key.clone()), [removing]);
    assert_eq!(
        diff(&desired, &snapshot, &sc),
        diff_with(&desired, &snapshot, &sc, Detail::Writes)
    );
}

/// The controller caches a component's outcome as [`asenet::controller::context::Shared`]:
/// only the resources with a change or a conflict, and what withholds a change. Every
/// member's decision (status, events, counters) from it is the one from the whole plan.
#[test]
fn a_cached_outcome_decides_every_member_as_the_whole_plan_does() {
    use asenet::api::Mode;
    use asenet::controller::context::Shared;
    use asenet::controller::decide::{
        decide, Component, Outcome, Parts, Subject, Withheld, WrittenResource,
    };
    use asenet::diff::{diff_with, Detail};
    use asenet::pipeline::{read_only_specs, withheld_by, PlanOutcome};
    use asenet::resolver::SpecOutcome;
    let world = specgen::generate(300);
    let mut specs = world.specs.clone();
    // Specs in mode Plan withhold the resources they share with others.
    for s in specs.iter_mut().step_by(37) {
        s.spec.mode = Mode::Plan;
    }
    let HalfApplied {
        valid,
        desired,
        sc,
        half,
        snapshot,
        in_band: id,
    } = half_applied(&specs, &world.snapshot);
    // The controller's plan, and the whole plan to compare with.
    let plan = diff_with(&desired, &snapshot, &sc, Detail::Writes);
    let whole_plan = diff(&desired, &snapshot, &sc);
    let in_band = whole_plan.resource(&id).expect("planned");
    assert!(!in_band.has_changes() && !in_band.conflicts.is_empty());
    let read_only = read_only_specs(specs.iter());
    let withheld: Withheld = (whole_plan.resources.iter())
        .map(|r| (r.id.clone(), withheld_by(r, &read_only)))
        .filter(|(_, by)| !by.is_empty())
        .collect();
    let parts = Parts::of(&whole_plan.resources, &desired);
    let arcs: Vec<Arc<asenet::api::AseConnectivity>> =
        specs.iter().cloned().map(Arc::new).collect();
    let shared = Shared::new(
        PlanOutcome {
            snapshot,
            desired: desired.clone(),
            plan: plan.clone(),
        },
        &arcs,
    );
    let kept = shared.planned.plan.resources.len();
    assert!(kept > 0 && kept < whole_plan.resources.len() / 2, "{kept}");
    assert!(!shared.withheld.is_empty());
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
    );
    let written: Vec<WrittenResource> = half.resources[..3].iter().map(Into::into).collect();
    let (mut pending, mut blocked) = (0, 0);
    for (spec, v) in specs.iter().zip(&valid) {
        let Some(SpecOutcome::Resolved(resolution)) = desired.specs.get(&v.key) else {
            continue;
        };
        let subject = Subject {
            key: &v.key,
            generation: Some(1),
            mode: spec.spec.mode,
            prev: None,
        };
        let whole = decide(
            &subject,
            &Outcome::Planned(Component {
                resolution,
                plan: &whole_plan.resources,
                parts: &parts,
                written: &written,
                withheld: &withheld,
            }),
            &now,
        );
        let cached = decide(
            &subject,
            &Outcome::Planned(Component {
                resolution,
                plan: &shared.planned.plan.resources,
                parts: &shared.parts,
                written: &written,
                withheld: &shared.withheld,
            }),
            &now,
        );
        assert_eq!(whole, cached, "{}", v.key);
        let p = whole.status.as_ref().and_then(|s| s.plan.as_ref());
        pending += usize::from(p.is_some_and(|p| p.total > 0));
        blocked += usize::from(
            whole
                .events
                .iter()
                .any(|e| e.reason == "SharedResourceNotApplied"),
        );
    }
    // Specs with changes pending, with changes withheld and with a conflict in a resource
    // with nothing to write were compared.
    assert!(pending > 10 && blocked > 0, "{pending} {blocked}");
    assert!(shared.planned.plan.resource(&id).is_some());
}

/// `specs` planned over `snapshot` with every other resource of the first plan applied
/// (the rest still has changes), and a foreign rule inside a spec's band in one applied
/// NSG: a conflict in a resource with nothing to write.
struct HalfApplied {
    valid: Vec<asenet::validate::ValidSpec>,
    desired: Desired,
    sc: Scope,
    /// The part of the first plan applied.
    half: Plan,
    snapshot: Snapshot,
    /// The NSG with the foreign rule in a band.
    in_band: ResourceId,
}

fn half_applied(specs: &[asenet::api::AseConnectivity], snapshot: &Snapshot) -> HalfApplied {
    let (valid, _) = asenet::validate::validate_all(specs);
    let desired = asenet::resolver::resolve(&valid, snapshot);
    let sc = Scope::new(valid.iter().map(|v| v.key.clone()), []);
    let first = diff(&desired, snapshot, &sc);
    let half = Plan {
        resources: first.resources.iter().step_by(2).cloned().collect(),
        errors: vec![],
    };
    let mut snapshot = apply_to_snapshot(&half, snapshot);
    let in_band = foreign_rule_in_band(&desired, &half, &mut snapshot);
    HalfApplied {
        valid,
        desired,
        sc,
        half,
        snapshot,
        in_band,
    }
}

/// Adds a foreign rule inside a spec's band to an NSG of `written` (converged in
/// `snapshot`): a conflict in a resource with nothing to write. Returns the NSG.
fn foreign_rule_in_band(desired: &Desired, written: &Plan, snapshot: &mut Snapshot) -> ResourceId {
    let (id, band) = (written.resources.iter())
        .filter_map(|r| desired.network_security_groups.get(&r.id))
        .find_map(|n| n.bands.values().next().map(|b| (n.id.clone(), *b)))
        .expect("a written NSG with a band");
    let nsg = snapshot
        .network_security_groups
        .get_mut(&id)
        .expect("written");
    let used: BTreeSet<u32> = nsg.rules.iter().map(|r| r.priority).collect();
    let free = (u32::from(band.from.get())..=u32::from(band.to.get()))
        .rev()
        .find(|p| !used.contains(p))
        .expect("a free priority in the band");
    nsg.rules.push(Arc::new(rule(
        "corp-in-band",
        free,
        Access::Allow,
        "1.2.3.4",
        &["81"],
    )));
    id
}
