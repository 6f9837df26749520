//! The ARM wire format, in and out, in one place: the JSON bodies of owned rules and routes
//! asenet writes (through `azure_mgmt_network`'s generated models), what is carried back
//! from a resource as read (read-only properties dropped, every other byte kept;
//! docs/domain.md 4.4), and the parsing of what ARM returns into the model (`nsg_state`,
//! `security_rule`, ...). Used by `observe` (reads), `apply` (bodies of PUTs) and the mock
//! seed fixture, so the mock holds exactly what apply would have written.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use azure_mgmt_network::models;
use ipnet::Ipv4Net;
use serde::Deserialize as _;
use serde_json::{json, Map, Value};

use crate::azure::{Fetched, Precondition};
use crate::diff::{EntryChanges, ParentAction, ResourceKind, ResourcePlan, CREATED_BY_TAG};
use crate::model::{
    Access, AddressSet, Direction, NextHopType, PortSet, Protocol, ResourceId, Route,
    RouteDestination, SecurityRule,
};
use crate::snapshot::{
    EnvironmentState, NsgState, RawChild, RawChildren, RawJson, RouteTableState, Snapshot,
    SubnetState, VnetState,
};

/// Read-only properties ARM computes; they are dropped from bodies sent back (the Azure
/// SDKs' serialisers do the same). Everything else is carried.
const READ_ONLY_PROPERTIES: &[&str] = &[
    "provisioningState",
    "resourceGuid",
    "defaultSecurityRules",
    "subnets",
    "networkInterfaces",
    "flowLogs",
    "ipConfigurations",
    "ipConfigurationProfiles",
    "privateEndpoints",
    "resourceNavigationLinks",
    "serviceAssociationLinks",
    "purpose",
];

/// A resource as read, minus what ARM computes (top-level `etag`, `type`, read-only
/// properties).
pub fn writable(raw: &Value) -> Value {
    let mut v = raw.clone();
    strip_computed(&mut v);
    v
}

/// Drops from `v` what [`writable`] drops.
fn strip_computed(v: &mut Value) {
    if let Some(o) = v.as_object_mut() {
        o.remove("etag");
        o.remove("type");
        if let Some(p) = o.get_mut("properties").and_then(Value::as_object_mut) {
            for k in READ_ONLY_PROPERTIES {
                p.remove(*k);
            }
        }
    }
}

/// A child entry (foreign rule or route) as read, minus the two values ARM re-stamps on
/// every write of the parent (`etag`, `provisioningState`); every other byte is carried.
pub fn carried_child(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("etag");
        if let Some(p) = o.get_mut("properties").and_then(Value::as_object_mut) {
            p.remove("provisioningState");
        }
    }
    v
}

/// A kind of child entry, and what ARM fills in when it stores one (the mock does the
/// same, mock-server/src/validate.rs).
#[derive(Debug, Clone, Copy)]
pub struct ChildKind {
    /// The path segment under the parent (`securityRules`, `routes`).
    pub collection: &'static str,
    pub type_name: &'static str,
    /// Properties ARM answers with when the body left them out.
    defaults: fn() -> Vec<(&'static str, Value)>,
}

pub const SECURITY_RULE: ChildKind = ChildKind {
    collection: "securityRules",
    type_name: "Microsoft.Network/networkSecurityGroups/securityRules",
    defaults: || {
        [
            "sourcePortRanges",
            "destinationPortRanges",
            "sourceAddressPrefixes",
            "destinationAddressPrefixes",
        ]
        .into_iter()
        .map(|k| (k, json!([])))
        .collect()
    },
};

pub const ROUTE: ChildKind = ChildKind {
    collection: "routes",
    type_name: "Microsoft.Network/routeTables/routes",
    defaults: || vec![("hasBgpOverride", json!(false))],
};

/// What ARM answers for the child `rendered` of the parent `parent_id` (as asenet renders
/// it), as [`carried_child`] keeps it: with its id and type, and ARM's defaults for what
/// the rendering left out. A child read that is exactly this is held as
/// [`RawChild::AsRendered`] and reproduced by this function when carried.
pub fn as_arm_answers(kind: ChildKind, parent_id: &str, mut rendered: Value) -> Value {
    if let Some(o) = rendered.as_object_mut() {
        let name = o.get("name").and_then(Value::as_str).unwrap_or_default();
        let id = format!("{parent_id}/{}/{name}", kind.collection);
        o.insert("id".into(), Value::String(id));
        o.insert("type".into(), Value::String(kind.type_name.into()));
        if let Some(p) = o.get_mut("properties").and_then(Value::as_object_mut) {
            for (k, v) in (kind.defaults)() {
                p.entry(k).or_insert(v);
            }
        }
    }
    rendered
}

/// A child to carry unchanged in a parent's body: as read, or reproduced from the model
/// when it was read exactly as ARM answers asenet's rendering; rendered when not read.
pub fn carried_body<T>(
    kind: ChildKind,
    parent_id: &str,
    raw: Option<&RawChild>,
    entry: &T,
    render: impl Fn(&T) -> Value,
) -> Value {
    match raw {
        Some(RawChild::Json(raw)) => carried_child(raw.value()),
        Some(RawChild::AsRendered) => as_arm_answers(kind, parent_id, render(entry)),
        None => render(entry),
    }
}

/// An owned rule as ARM JSON, through the generated model (singular field for one value,
/// plural for several, domain.md 2.1).
pub fn render_rule(r: &SecurityRule) -> Value {
    use models::security_rule_properties_format::Protocol as P;
    let protocol = match r.protocol {
        Protocol::Tcp => P::Tcp,
        Protocol::Udp => P::Udp,
        Protocol::Icmp => P::Icmp,
        Protocol::Esp => P::Esp,
        Protocol::Ah => P::Ah,
        Protocol::Any => P::U2a,
    };
    let access = match r.access {
        Access::Allow => models::SecurityRuleAccess::Allow,
        Access::Deny => models::SecurityRuleAccess::Deny,
    };
    let direction = match r.direction {
        Direction::Inbound => models::SecurityRuleDirection::Inbound,
        Direction::Outbound => models::SecurityRuleDirection::Outbound,
    };
    let mut p = models::SecurityRulePropertiesFormat::new(
        protocol,
        access,
        i32::try_from(r.priority).unwrap_or(i32::MAX),
        direction,
    );
    p.description = r.description.clone();
    (p.source_address_prefix, p.source_address_prefixes) = r.source.to_arm();
    (p.destination_address_prefix, p.destination_address_prefixes) = r.destination.to_arm();
    (p.source_port_range, p.source_port_ranges) = ports(&r.source_ports);
    (p.destination_port_range, p.destination_port_ranges) = ports(&r.destination_ports);
    let rule = models::SecurityRule {
        name: Some(r.name.clone()),
        properties: Some(p),
        ..Default::default()
    };
    serde_json::to_value(rule).unwrap_or(Value::Null)
}

fn ports(p: &PortSet) -> (Option<String>, Vec<String>) {
    let mut v = p.to_strings();
    if v.len() == 1 {
        (v.pop(), vec![])
    } else {
        (None, v)
    }
}

/// An owned route as ARM JSON, through the generated model.
pub fn render_route(r: &Route) -> Value {
    let hop = match r.next_hop_type {
        NextHopType::Internet => models::RouteNextHopType::Internet,
        NextHopType::VirtualAppliance => models::RouteNextHopType::VirtualAppliance,
        NextHopType::VirtualNetworkGateway => models::RouteNextHopType::VirtualNetworkGateway,
        NextHopType::VnetLocal => models::RouteNextHopType::VnetLocal,
        NextHopType::None => models::RouteNextHopType::None,
    };
    let mut p = models::RoutePropertiesFormat::new(hop);
    p.address_prefix = Some(r.address_prefix.to_string());
    p.next_hop_ip_address = r.next_hop_ip_address.map(|a| a.to_string());
    let route = models::Route {
        name: Some(r.name.clone()),
        properties: Some(p),
        ..Default::default()
    };
    serde_json::to_value(route).unwrap_or(Value::Null)
}

// ---------------------------------------------------------------------------------------
// Bodies
// ---------------------------------------------------------------------------------------

/// The body and precondition of the one write `rp` needs.
pub fn build_body(
    rp: &ResourcePlan,
    snapshot: &Snapshot,
) -> Result<(Value, Option<Precondition>), Unwritable> {
    let precondition = match (rp.action, &rp.etag) {
        (ParentAction::Create, _) => Some(Precondition::IfNoneMatch),
        (_, Some(etag)) => Some(Precondition::IfMatch(etag.clone())),
        (_, None) => None,
    };
    let body = match rp.kind {
        ResourceKind::NetworkSecurityGroup => {
            let state = snapshot.network_security_groups.get(&rp.id);
            let rules = child_bodies(
                (
                    SECURITY_RULE,
                    state.map_or(rp.id.as_str(), |s| s.id.as_str()),
                ),
                &rp.rules,
                &rp.target_rules(),
                (
                    state.map_or(&[][..], |s| s.rules.as_slice()),
                    state.map(|s| &s.raw_rules),
                ),
                |r| &r.name,
                render_rule,
            );
            parent_body(
                rp,
                state.and_then(|s| s.raw.as_ref()),
                "securityRules",
                rules,
            )?
        }
        ResourceKind::RouteTable => {
            let state = snapshot.route_tables.get(&rp.id);
            let routes = child_bodies(
                (ROUTE, state.map_or(rp.id.as_str(), |s| s.id.as_str())),
                &rp.routes,
                &rp.target_routes(),
                (
                    state.map_or(&[][..], |s| s.routes.as_slice()),
                    state.map(|s| &s.raw_routes),
                ),
                |r| &r.name,
                render_route,
            );
            let mut body = parent_body(rp, state.and_then(|s| s.raw.as_ref()), "routes", routes)?;
            // Record the service-tag versions the owned routes come from (diff names the old
            // and new change numbers when they move); other tags are kept as they were.
            if let Some(versions) = &rp.service_tags {
                if !body.get("tags").is_some_and(Value::is_object) {
                    body["tags"] = json!({});
                }
                body["tags"][crate::resolver::SERVICE_TAGS_TAG] = Value::String(versions.clone());
            }
            body
        }
        ResourceKind::Subnet => {
            let raw = snapshot
                .subnets
                .get(&rp.id)
                .and_then(|s| s.raw.as_ref())
                .map(RawJson::value)
                .ok_or_else(|| Unwritable {
                    id: rp.id.to_string(),
                    message:
                        "the subnet was not read (it must exist; asenet never creates subnets)"
                            .into(),
                })?;
            let mut body = raw;
            strip_computed(&mut body);
            if !body.get("properties").is_some_and(Value::is_object) {
                body["properties"] = json!({});
            }
            if let Some(a) = &rp.association {
                let props = body["properties"].as_object_mut();
                if let Some(props) = props {
                    for (field, change) in [
                        ("networkSecurityGroup", &a.network_security_group),
                        ("routeTable", &a.route_table),
                    ] {
                        if let Some(c) = change {
                            match &c.to {
                                Some(to) => {
                                    props.insert(field.into(), json!({ "id": to.as_str() }));
                                }
                                None => {
                                    props.remove(field);
                                }
                            }
                        }
                    }
                }
            }
            body
        }
    };
    Ok((body, precondition))
}

/// The body of an NSG or route table PUT: the resource as read (or new) with its complete
/// child list in `properties.<field>`.
fn parent_body(
    rp: &ResourcePlan,
    raw: Option<&RawJson>,
    field: &str,
    children: Vec<Value>,
) -> Result<Value, Unwritable> {
    let mut body = base_body(rp, raw)?;
    body["properties"][field] = Value::Array(children);
    Ok(body)
}

/// The parent body: as read (minus read-only), or a new resource in `rp.location` tagged
/// with its creator.
fn base_body(rp: &ResourcePlan, raw: Option<&RawJson>) -> Result<Value, Unwritable> {
    if rp.action != ParentAction::Create {
        if let Some(raw) = raw {
            let mut body = raw.value();
            strip_computed(&mut body);
            if !body.get("properties").is_some_and(Value::is_object) {
                body["properties"] = json!({});
            }
            return Ok(body);
        }
    }
    let location = rp.location.clone().ok_or_else(|| Unwritable {
        id: rp.id.to_string(),
        message: "no location known (the subnet's virtual network was not found)".into(),
    })?;
    let mut tags = Map::new();
    if let Some(owner) = rp.owners.iter().next() {
        tags.insert(CREATED_BY_TAG.into(), Value::String(owner.to_string()));
    }
    Ok(json!({ "location": location, "tags": tags, "properties": {} }))
}

/// The child list of a parent PUT (rules of an NSG, routes of a route table): entries
/// carried unchanged (foreign, and owned ones kept) are written back from the JSON Azure
/// returned, byte for byte; created and updated ones are rendered from the model.
///
/// A carried entry read exactly as ARM answers asenet's rendering
/// ([`RawChild::AsRendered`]) is reproduced from the entry as read (`observed`, in the
/// parent `parent_id` as read), not from the target entry, which may differ from it in
/// what the diff deems equal (the casing of a name).
fn child_bodies<T, O: std::borrow::Borrow<T>>(
    (kind, parent_id): (ChildKind, &str),
    changes: &EntryChanges<T>,
    targets: &[T],
    (observed, raw): (&[O], Option<&RawChildren>),
    name: impl Fn(&T) -> &str,
    render: impl Fn(&T) -> Value,
) -> Vec<Value> {
    let carried: BTreeSet<String> = changes
        .foreign
        .iter()
        .chain(changes.keep.iter().map(|p| &*p.entry))
        .map(|e| name(e).to_ascii_lowercase())
        .collect();
    let as_read: BTreeMap<String, &T> = observed
        .iter()
        .map(|e| (name(e.borrow()).to_ascii_lowercase(), e.borrow()))
        .collect();
    targets
        .iter()
        .map(|e| {
            let key = name(e).to_ascii_lowercase();
            if carried.contains(&key) {
                let entry = as_read.get(&key).copied().unwrap_or(e);
                carried_body(
                    kind,
                    parent_id,
                    raw.and_then(|m| m.get(&key)),
                    entry,
                    &render,
                )
            } else {
                render(e)
            }
        })
        .collect()
}

/// A write whose body cannot be built (a subnet not read, a create without a location).
#[derive(Debug, thiserror::Error)]
#[error("{id}: cannot write it: {message}")]
pub struct Unwritable {
    pub id: String,
    pub message: String,
}

/// A resource read from ARM that asenet cannot parse.
#[derive(Debug, thiserror::Error)]
#[error("`{id}`: {message}")]
pub struct Malformed {
    pub id: String,
    pub message: String,
}

// ---------------------------------------------------------------------------------------
// ARM JSON -> model
// ---------------------------------------------------------------------------------------

fn resource_id(requested: &ResourceId, raw: &Value) -> ResourceId {
    // Keep ARM's create-time casing when it sends one (domain.md 4.10); ids compare
    // case-insensitively either way. The same text is the requested id itself, shared
    // rather than parsed again (issue 14's memory).
    match raw.get("id").and_then(Value::as_str) {
        Some(s) if s == requested.as_str() => requested.clone(),
        Some(s) => ResourceId::parse(s)
            .ok()
            .filter(|p| p == requested)
            .unwrap_or_else(|| requested.clone()),
        None => requested.clone(),
    }
}

pub fn nsg_state(
    id: &ResourceId,
    f: Fetched<models::NetworkSecurityGroup>,
) -> Result<NsgState, Malformed> {
    let rules_typed = f
        .typed
        .properties
        .as_ref()
        .map(|p| p.security_rules.as_slice())
        .unwrap_or_default();
    let mut raw = f.raw;
    let (rules, raw_rules) = children(
        id,
        &mut raw,
        SECURITY_RULE,
        rules_typed,
        // Shared from here on (`NsgState::rules`).
        (
            |r: &models::SecurityRule| security_rule(r).map(Arc::new),
            |r: &Arc<SecurityRule>| render_rule(r),
        ),
        |r| &r.name,
        "security rule without name or properties",
    )?;
    Ok(NsgState {
        id: resource_id(id, &raw),
        location: f.typed.resource.location.clone(),
        etag: f.etag,
        rules,
        raw_rules,
        raw: Some(stored_parent(raw)),
    })
}

/// A parent as the snapshot keeps it: its child list taken out (by [`children`]) and what
/// a write drops anyway (read-only properties such as `defaultSecurityRules`), except
/// `properties.subnets`, ARM's back-references the removal of a parent reads
/// (`diff::removal`).
fn stored_parent(mut raw: Value) -> RawJson {
    let users = raw.pointer_mut("/properties/subnets").map(Value::take);
    strip_computed(&mut raw);
    if let (Some(users), Some(p)) = (users, raw.pointer_mut("/properties")) {
        p["subnets"] = users;
    }
    RawJson::new(&raw)
}

/// The child entries of an NSG or route table (`properties.<collection>`, taken out of
/// `raw`), each parsed from its typed form and kept as read (keyed by lower-cased name,
/// without what a write re-stamps) for carrying back unchanged; as
/// [`RawChild::AsRendered`] when that is exactly what ARM answers for the entry as asenet
/// renders it.
fn children<M, T>(
    id: &ResourceId,
    raw: &mut Value,
    kind: ChildKind,
    typed: &[M],
    (parse, render): (impl Fn(&M) -> Option<T>, impl Fn(&T) -> Value),
    name: impl Fn(&T) -> &str,
    malformed: &str,
) -> Result<(Vec<T>, RawChildren), Malformed> {
    let parent_id = resource_id(id, raw);
    let raw_list = match raw
        .pointer_mut("/properties")
        .and_then(Value::as_object_mut)
        .and_then(|p| p.remove(kind.collection))
    {
        Some(Value::Array(list)) => list,
        _ => vec![],
    };
    let mut entries = Vec::with_capacity(typed.len());
    let mut raw_entries = RawChildren::read();
    for (typed, raw) in typed.iter().zip(raw_list) {
        let Some(entry) = parse(typed) else {
            return Err(Malformed {
                id: id.to_string(),
                message: format!("{malformed}: {raw}"),
            });
        };
        let carried = carried_child(raw);
        let kept = if carried == as_arm_answers(kind, parent_id.as_str(), render(&entry)) {
            RawChild::AsRendered
        } else {
            RawChild::Json(RawJson::new(&carried))
        };
        raw_entries.insert(name(&entry).to_ascii_lowercase(), kept);
        entries.push(entry);
    }
    Ok((entries, raw_entries))
}

/// One ARM security rule in canonical form.
pub fn security_rule(r: &models::SecurityRule) -> Option<SecurityRule> {
    let name = r.name.clone()?;
    let p = r.properties.as_ref()?;
    let protocol = match &p.protocol {
        models::security_rule_properties_format::Protocol::Tcp => Protocol::Tcp,
        models::security_rule_properties_format::Protocol::Udp => Protocol::Udp,
        models::security_rule_properties_format::Protocol::Icmp => Protocol::Icmp,
        models::security_rule_properties_format::Protocol::Esp => Protocol::Esp,
        models::security_rule_properties_format::Protocol::Ah => Protocol::Ah,
        models::security_rule_properties_format::Protocol::U2a => Protocol::Any,
        models::security_rule_properties_format::Protocol::UnknownValue(s) => {
            s.parse().unwrap_or(Protocol::Any)
        }
    };
    let access = match &p.access {
        models::SecurityRuleAccess::Allow => Access::Allow,
        models::SecurityRuleAccess::Deny => Access::Deny,
        models::SecurityRuleAccess::UnknownValue(s) if s.eq_ignore_ascii_case("allow") => {
            Access::Allow
        }
        models::SecurityRuleAccess::UnknownValue(_) => Access::Deny,
    };
    let direction = match &p.direction {
        models::SecurityRuleDirection::Inbound => Direction::Inbound,
        models::SecurityRuleDirection::Outbound => Direction::Outbound,
        models::SecurityRuleDirection::UnknownValue(s) if s.eq_ignore_ascii_case("outbound") => {
            Direction::Outbound
        }
        models::SecurityRuleDirection::UnknownValue(_) => Direction::Inbound,
    };
    let addresses = |single: &Option<String>, plural: &[String], asgs: usize| {
        if asgs > 0 {
            return AddressSet::Other(format!("applicationSecurityGroups({asgs})"));
        }
        AddressSet::parse_arm(single.as_deref(), plural).unwrap_or_else(|_| {
            AddressSet::Other(single.clone().unwrap_or_else(|| plural.join(",")))
        })
    };
    let ports = |single: &Option<String>, plural: &[String]| {
        let values: Vec<&str> = single
            .iter()
            .map(String::as_str)
            .chain(plural.iter().map(String::as_str))
            .filter(|s| !s.is_empty())
            .collect();
        if values.is_empty() {
            return PortSet::any();
        }
        PortSet::parse_all(values).unwrap_or_else(|_| PortSet::any())
    };
    Some(SecurityRule {
        name,
        priority: u32::try_from(p.priority).unwrap_or(0),
        direction,
        access,
        protocol,
        source: addresses(
            &p.source_address_prefix,
            &p.source_address_prefixes,
            p.source_application_security_groups.len(),
        ),
        source_ports: ports(&p.source_port_range, &p.source_port_ranges),
        destination: addresses(
            &p.destination_address_prefix,
            &p.destination_address_prefixes,
            p.destination_application_security_groups.len(),
        ),
        destination_ports: ports(&p.destination_port_range, &p.destination_port_ranges),
        description: p.description.clone(),
    })
}

pub fn route_table_state(
    id: &ResourceId,
    f: Fetched<models::RouteTable>,
) -> Result<RouteTableState, Malformed> {
    let props = f.typed.properties.unwrap_or_default();
    let mut raw = f.raw;
    let (routes, raw_routes) = children(
        id,
        &mut raw,
        ROUTE,
        &props.routes,
        (route, render_route),
        |r| &r.name,
        "route without name, prefix or next hop",
    )?;
    let recorded_service_tags = raw
        .pointer(&format!("/tags/{}", crate::resolver::SERVICE_TAGS_TAG))
        .and_then(Value::as_str)
        .map(crate::resolver::decode_tag_versions)
        .unwrap_or_default();
    Ok(RouteTableState {
        id: resource_id(id, &raw),
        location: f.typed.resource.location,
        etag: f.etag,
        disable_bgp_route_propagation: props.disable_bgp_route_propagation.unwrap_or(false),
        routes,
        recorded_service_tags,
        raw_routes,
        raw: Some(stored_parent(raw)),
    })
}

/// One ARM route in canonical form. A destination asenet cannot parse keeps its text as a
/// tag, so the route is still carried unchanged.
pub fn route(r: &models::Route) -> Option<Route> {
    let name = r.name.clone()?;
    let p = r.properties.as_ref()?;
    let prefix = p.address_prefix.clone()?;
    let address_prefix =
        RouteDestination::parse(&prefix).unwrap_or(RouteDestination::Tag(prefix.clone()));
    let hop = serde_json::to_value(&p.next_hop_type)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    Some(Route {
        name,
        address_prefix,
        next_hop_type: hop.parse().unwrap_or(NextHopType::None),
        next_hop_ip_address: p
            .next_hop_ip_address
            .as_deref()
            .and_then(|s| s.parse().ok()),
    })
}

pub fn vnet_state(
    id: &ResourceId,
    f: Fetched<models::VirtualNetwork>,
) -> Result<(VnetState, Vec<SubnetState>), Malformed> {
    let space: Vec<Ipv4Net> = f
        .typed
        .properties
        .as_ref()
        .and_then(|p| p.address_space.as_ref())
        .map(|a| {
            a.address_prefixes
                .iter()
                .filter_map(|p| p.parse::<Ipv4Net>().ok())
                .map(|n| n.trunc())
                .collect()
        })
        .unwrap_or_default();
    let vnet_etag = f.etag;
    let vnet_id = resource_id(id, &f.raw);
    let mut raw = f.raw;
    let listed = match raw.pointer_mut("/properties/subnets").map(Value::take) {
        Some(Value::Array(list)) => list,
        _ => vec![],
    };
    let mut subnets = Vec::with_capacity(listed.len());
    for mut raw in listed {
        let Some(sid) = raw
            .get("id")
            .and_then(Value::as_str)
            .and_then(|s| ResourceId::parse(s).ok())
        else {
            continue;
        };
        // Inline subnets carry their own etag in ARM; fall back to the VNet's.
        if raw.get("etag").is_none() {
            if let Some(e) = &vnet_etag {
                raw["etag"] = Value::String(e.clone());
            }
        }
        subnets.push(subnet_state(&sid, raw)?);
    }
    Ok((
        VnetState {
            id: vnet_id,
            location: f.typed.resource.location.clone(),
            address_prefixes: space,
        },
        subnets,
    ))
}

pub fn subnet_state(id: &ResourceId, mut raw: Value) -> Result<SubnetState, Malformed> {
    let typed = models::Subnet::deserialize(&raw).map_err(|e| Malformed {
        id: id.to_string(),
        message: e.to_string(),
    })?;
    let props = typed.properties.unwrap_or_default();
    let prefix = props
        .address_prefix
        .clone()
        .or_else(|| props.address_prefixes.first().cloned())
        .and_then(|p| p.parse::<Ipv4Net>().ok())
        .map(|n| n.trunc())
        .ok_or_else(|| Malformed {
            id: id.to_string(),
            message: "subnet has no IPv4 addressPrefix".into(),
        })?;
    let reference = |v: Option<String>| v.and_then(|s| ResourceId::parse(&s).ok());
    let etag = raw.get("etag").and_then(Value::as_str).map(str::to_owned);
    let id = resource_id(id, &raw);
    strip_computed(&mut raw);
    Ok(SubnetState {
        id,
        address_prefix: prefix,
        network_security_group: reference(props.network_security_group.and_then(|n| n.resource.id)),
        route_table: reference(props.route_table.and_then(|r| r.resource.id)),
        etag,
        raw: Some(RawJson::new(&raw)),
    })
}

/// `AddressResponse` (domain.md 1.5) -> addresses.
pub fn environment_state(id: &ResourceId, v: &Value) -> EnvironmentState {
    let ip = |p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<Ipv4Addr>().ok())
    };
    let outbound = v
        .pointer("/properties/outboundIpAddresses")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .filter_map(|s| s.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    EnvironmentState {
        id: id.clone(),
        public_vip: ip("/properties/serviceIpAddress"),
        outbound,
        internal_ip: ip("/properties/internalIpAddress"),
        subnet: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetched_nsg(raw: Value) -> Fetched<models::NetworkSecurityGroup> {
        Fetched {
            typed: serde_json::from_value(raw.clone()).unwrap(),
            etag: raw.get("etag").and_then(Value::as_str).map(str::to_owned),
            raw,
        }
    }

    /// The snapshot keeps an NSG as compact text without its rule list and read-only
    /// properties (issue 14's memory), and the body of its next PUT is what it was when the
    /// whole JSON was kept: every foreign byte carried, ARM's computed values dropped.
    #[test]
    fn a_stored_nsg_drops_only_what_is_kept_elsewhere_or_never_written() {
        let id = ResourceId::parse(
            "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/networkSecurityGroups/n",
        )
        .unwrap();
        let foreign = json!({
            "id": format!("{id}/securityRules/Theirs"),
            "name": "Theirs",
            "etag": "W/\"1\"",
            "type": "Microsoft.Network/networkSecurityGroups/securityRules",
            "properties": {
                "provisioningState": "Succeeded",
                "priority": 4000, "direction": "Inbound", "access": "Deny", "protocol": "*",
                "sourceAddressPrefix": "*", "destinationAddressPrefix": "*",
                "sourcePortRange": "*", "destinationPortRange": "*",
                "sourceApplicationSecurityGroups": [], "description": "kept as is",
                "futureField": {"x": [1, 2]}
            }
        });
        // A rule exactly as ARM answers asenet's rendering of it: not held as text.
        let canonical = SecurityRule {
            name: "asenet-in-100".into(),
            priority: 100,
            direction: Direction::Inbound,
            access: Access::Allow,
            protocol: Protocol::Tcp,
            source: AddressSet::parse_arm(Some("AppServiceManagement"), &[]).unwrap(),
            source_ports: PortSet::any(),
            destination: AddressSet::parse_arm(Some("10.0.0.0/24"), &[]).unwrap(),
            destination_ports: PortSet::parse_all(["454-455"]).unwrap(),
            description: Some("management".into()),
        };
        let mut answered = as_arm_answers(SECURITY_RULE, id.as_str(), render_rule(&canonical));
        answered["etag"] = json!("W/\"1\"");
        answered["properties"]["provisioningState"] = json!("Succeeded");
        let raw = json!({
            "id": id.as_str(), "name": "n", "location": "westeurope", "etag": "W/\"1\"",
            "type": "Microsoft.Network/networkSecurityGroups",
            "tags": {"team": "net"},
            "properties": {
                "provisioningState": "Succeeded",
                "resourceGuid": "g",
                "flushConnection": true,
                "securityRules": [foreign.clone(), answered.clone()],
                "defaultSecurityRules": [{"name": "DenyAllInBound", "properties": {
                    "priority": 65500, "direction": "Inbound", "access": "Deny",
                    "protocol": "*"
                }}],
                "subnets": [{"id": "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/virtualNetworks/v/subnets/a"}]
            }
        });
        let state = nsg_state(&id, fetched_nsg(raw.clone())).unwrap();
        let stored = state.raw.as_ref().unwrap().value();
        assert_eq!(
            stored,
            json!({
                "id": id.as_str(), "name": "n", "location": "westeurope",
                "tags": {"team": "net"},
                "properties": {
                    "flushConnection": true,
                    "subnets": [{"id": "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/virtualNetworks/v/subnets/a"}]
                }
            })
        );
        assert_eq!(state.etag.as_deref(), Some("W/\"1\""));
        assert_eq!(state.rules.len(), 2);
        assert_eq!(*state.rules[1], canonical);
        let theirs = RawChild::Json(RawJson::new(&carried_child(foreign.clone())));
        assert_eq!(state.raw_rules.get("theirs"), Some(&theirs));
        let ours = state.raw_rules.get("asenet-in-100");
        assert_eq!(ours, Some(&RawChild::AsRendered));
        assert_eq!(state.raw_rules.json_len(), 1, "only the foreign JSON");

        // The body of an update carrying the foreign rule: as from the whole JSON.
        let mut snapshot = Snapshot::default();
        snapshot.insert_nsg(state.clone());
        let rp = ResourcePlan {
            id: id.clone(),
            kind: ResourceKind::NetworkSecurityGroup,
            action: ParentAction::Update,
            location: None,
            etag: state.etag.clone(),
            owners: Default::default(),
            rules: EntryChanges {
                foreign: state.rules.iter().map(|r| (**r).clone()).collect(),
                ..Default::default()
            },
            routes: Default::default(),
            association: None,
            conflicts: vec![],
            service_tags: None,
        };
        let (body, precondition) = build_body(&rp, &snapshot).unwrap();
        let mut expected = writable(&raw);
        expected["properties"]["securityRules"] = json!([
            carried_child(answered.clone()),
            carried_child(foreign.clone())
        ]);
        assert_eq!(body, expected);
        assert!(matches!(precondition, Some(Precondition::IfMatch(e)) if e == "W/\"1\""));

        // Kept as an owned entry whose desired name differs in casing only: the entry is
        // reproduced as it was read, not from the desired name.
        let mut shouting = canonical.clone();
        shouting.name = canonical.name.to_ascii_uppercase();
        let rp = ResourcePlan {
            rules: EntryChanges {
                keep: vec![crate::diff::Planned {
                    entry: shouting.into(),
                    owner: None,
                    reason: "kept".into(),
                }],
                foreign: vec![(*state.rules[0]).clone()],
                ..Default::default()
            },
            ..rp
        };
        let (body, _) = build_body(&rp, &snapshot).unwrap();
        assert_eq!(body, expected);
    }

    #[test]
    fn raw_json_text_is_canonical_and_reads_strings() {
        let a = RawJson::new(&json!({"b": 1, "a": {"tags": {"x/y": "v"}}}));
        let b = RawJson::new(&json!({"a": {"tags": {"x/y": "v"}}, "b": 1}));
        assert_eq!(a, b);
        assert_eq!(a.as_str(), r#"{"a":{"tags":{"x/y":"v"}},"b":1}"#);
        assert_eq!(a.string_at("/a/tags/x~1y").as_deref(), Some("v"));
        assert_eq!(a.string_at("/b"), None);
        assert_eq!(a.string_at("/missing"), None);
    }
}
