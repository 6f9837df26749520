//! The ARM wire format of what asenet writes: the JSON bodies of owned rules and routes
//! (through `azure_mgmt_network`'s generated models), and what is carried back from a
//! resource as read (read-only properties dropped, every other byte kept; docs/domain.md
//! 4.4). One place, used by `apply` (bodies of PUTs) and by the mock seed fixture, so the
//! mock holds exactly what apply would have written.

use azure_mgmt_network::models;
use serde_json::Value;

use crate::model::{Access, Direction, NextHopType, PortSet, Protocol, Route, SecurityRule};

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
    if let Some(o) = v.as_object_mut() {
        o.remove("etag");
        o.remove("type");
        if let Some(p) = o.get_mut("properties").and_then(Value::as_object_mut) {
            for k in READ_ONLY_PROPERTIES {
                p.remove(*k);
            }
        }
    }
    v
}

/// A child entry (foreign rule or route) as read, minus the two values ARM re-stamps on
/// every write of the parent (`etag`, `provisioningState`); every other byte is carried.
pub fn carried_child(raw: &Value) -> Value {
    let mut v = raw.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("etag");
        if let Some(p) = o.get_mut("properties").and_then(Value::as_object_mut) {
            p.remove("provisioningState");
        }
    }
    v
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
