//! Rendering for people and machines: a [`Plan`] as a terminal diff in
//! the style of `terraform plan` ([`render_text`]), as JSON with a documented, stable schema
//! ([`render_json`], docs/plan-json.md) and as Markdown for pull-request comments
//! ([`render_markdown`]). The desired state (`asenet resolve`) is rendered by [`desired`].
//!
//! Rendering is pure: the plan comes from `diff`, the strings go to the CLI, the controller
//! (events, status) or a PR bot. The small helpers below ([`describe_rule`],
//! [`describe_route`], [`resource_title`]...) are the building blocks the apply report
//! reuses, so that a rule reads the same everywhere.

pub mod desired;
pub mod escape;
mod json;
mod markdown;
mod text;
pub mod verify;

pub use json::{render_json, FORMAT_VERSION};
pub use markdown::render_markdown;
pub use text::render_text;

use crate::diff::{ParentAction, Plan, ResourceKind, ResourcePlan};
use crate::model::{Direction, ResourceId, Route, SecurityRule};

/// The ARM collection name of a resource kind (`networkSecurityGroups`, `routeTables`,
/// `subnets`).
pub fn kind_collection(kind: ResourceKind) -> &'static str {
    match kind {
        ResourceKind::NetworkSecurityGroup => "networkSecurityGroups",
        ResourceKind::RouteTable => "routeTables",
        ResourceKind::Subnet => "subnets",
    }
}

/// `networkSecurityGroups/ase-two-nsg (network)`: the type path after the provider and the
/// resource group in parentheses (`virtualNetworks/vnet/subnets/ase-two (network)` for a
/// subnet).
pub fn resource_title(id: &ResourceId) -> String {
    let path = id
        .segments()
        .map(|(t, n)| format!("{t}/{n}"))
        .collect::<Vec<_>>()
        .join("/");
    format!("{path} ({})", id.resource_group())
}

/// "will be created", "will be updated in-place", "has no changes", "will be destroyed".
pub fn action_phrase(action: ParentAction) -> &'static str {
    match action {
        ParentAction::Create => "will be created",
        ParentAction::Update => "will be updated in-place",
        ParentAction::NoChange => "has no changes",
        ParentAction::Delete => "will be destroyed",
    }
}

/// One line describing a rule: `Inbound 110 Allow Tcp from 192.23.1.2 to * ports 80,443`.
/// Source ports are shown only when they are not `*`.
pub fn describe_rule(rule: &SecurityRule) -> String {
    let dir = match rule.direction {
        Direction::Inbound => "Inbound",
        Direction::Outbound => "Outbound",
    };
    let sport = if rule.source_ports.is_any() {
        String::new()
    } else {
        format!(" source ports {}", rule.source_ports)
    };
    format!(
        "{dir} {} {:?} {} from {}{sport} to {} ports {}",
        rule.priority,
        rule.access,
        rule.protocol,
        rule.source,
        rule.destination,
        rule.destination_ports
    )
}

/// One line describing a route: `0.0.0.0/0 -> Internet`,
/// `10.0.0.0/8 -> VirtualAppliance 10.0.100.4`.
pub fn describe_route(route: &Route) -> String {
    match route.next_hop_ip_address {
        Some(ip) => format!("{} -> {:?} {ip}", route.address_prefix, route.next_hop_type),
        None => format!("{} -> {:?}", route.address_prefix, route.next_hop_type),
    }
}

/// The value of one named field of a rule as the diff names it (`priority`, `source`,
/// `destinationPorts`...), for `~ priority: 110 -> 120` lines.
pub fn rule_field(rule: &SecurityRule, field: &str) -> String {
    match field {
        "priority" => rule.priority.to_string(),
        "direction" => format!("{:?}", rule.direction),
        "access" => format!("{:?}", rule.access),
        "protocol" => rule.protocol.to_string(),
        "source" => rule.source.to_string(),
        "sourcePorts" => rule.source_ports.to_string(),
        "destination" => rule.destination.to_string(),
        "destinationPorts" => rule.destination_ports.to_string(),
        "description" => rule.description.clone().unwrap_or_default(),
        "name" => rule.name.clone(),
        _ => String::new(),
    }
}

/// The value of one named field of a route (`addressPrefix`, `nextHopType`,
/// `nextHopIpAddress`).
pub fn route_field(route: &Route, field: &str) -> String {
    match field {
        "addressPrefix" => route.address_prefix.to_string(),
        "nextHopType" => format!("{:?}", route.next_hop_type),
        "nextHopIpAddress" => route
            .next_hop_ip_address
            .map(|i| i.to_string())
            .unwrap_or_default(),
        "name" => route.name.clone(),
        _ => String::new(),
    }
}

/// `Plan: 3 to add, 1 to change, 0 to destroy.` or `No changes. Azure matches the specs.`
pub fn summary_line(plan: &Plan) -> String {
    if !plan.has_changes() {
        return "No changes. Azure matches the specs.".to_string();
    }
    let (c, u, d) = plan.summary();
    format!("Plan: {c} to add, {u} to change, {d} to destroy.")
}

/// An association target for display: the resource name, or `(none)`.
pub fn association_target(id: Option<&ResourceId>) -> String {
    id.map(|i| i.name().to_string())
        .unwrap_or_else(|| "(none)".to_string())
}

/// Why a subnet association changes: `ASE subnet of spec network/ase-two`, or, for a
/// subnet only losing associations, that what it points at is deleted.
pub fn association_reason(r: &ResourcePlan) -> String {
    let owners = r
        .owners
        .iter()
        .map(|o| o.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if r.only_dissociates() {
        return format!("dissociated: what it points at is deleted with spec {owners}");
    }
    format!("ASE subnet of spec {owners}")
}

/// Counts of owned entries left as they are and of foreign entries carried unchanged.
fn unchanged_counts(r: &ResourcePlan) -> (usize, usize) {
    (
        r.rules.keep.len() + r.routes.keep.len(),
        r.rules.foreign.len() + r.routes.foreign.len(),
    )
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// What the entries of a resource are called.
fn entry_words(kind: ResourceKind) -> (&'static str, &'static str) {
    match kind {
        ResourceKind::RouteTable => ("route", "routes"),
        _ => ("rule", "rules"),
    }
}
