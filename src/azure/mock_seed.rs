//! A mock ARM seed (`mock_arm::Seed`, mock-server/README.md) built from a `Snapshot`, so
//! every example's `examples/azure/<example>/snapshot.yaml` can seed the mock without a
//! second hand-written file:
//! VNets with their subnets and associations, NSGs with their rules (rendered to ARM JSON
//! like apply renders them), route tables with their routes, and ASEs with their addresses.
//!
//! Used by `asenet demo --seed DIR` (when DIR has no `mock-seed.yaml`), by the integration
//! tests, and to generate `examples/azure/seed/mock-seed.yaml`.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::model::ResourceId;
use crate::snapshot::Snapshot;
use crate::validate::ValidSpec;

/// Location used for a resource group when nothing in it says.
const DEFAULT_LOCATION: &str = "westeurope";

/// The seed as JSON (the shape `mock_arm::Seed` deserialises; also written as YAML).
/// `specs` tell which subnet each ASE lives in when the snapshot does not.
pub fn seed_value(snapshot: &Snapshot, specs: &[ValidSpec]) -> Value {
    // subscription -> resource group -> kind -> items
    #[derive(Default)]
    struct Group {
        location: Option<String>,
        vnets: Vec<Value>,
        nsgs: Vec<Value>,
        route_tables: Vec<Value>,
        ases: Vec<Value>,
    }
    let mut subs: BTreeMap<String, BTreeMap<String, Group>> = BTreeMap::new();
    fn group<'a>(
        subs: &'a mut BTreeMap<String, BTreeMap<String, Group>>,
        id: &ResourceId,
    ) -> &'a mut Group {
        subs.entry(id.subscription().to_string())
            .or_default()
            .entry(id.resource_group().to_string())
            .or_default()
    }

    for vnet in snapshot.virtual_networks.values() {
        let subnets: Vec<Value> = snapshot
            .subnets
            .values()
            .filter(|s| s.id.parent().as_ref() == Some(&vnet.id))
            .map(|s| {
                let mut v =
                    json!({ "name": s.id.name(), "addressPrefix": s.address_prefix.to_string() });
                if let Some(n) = &s.network_security_group {
                    v["networkSecurityGroup"] = json!(n.as_str());
                }
                if let Some(r) = &s.route_table {
                    v["routeTable"] = json!(r.as_str());
                }
                v
            })
            .collect();
        let g = group(&mut subs, &vnet.id);
        if g.location.is_none() {
            g.location = vnet.location.clone();
        }
        let mut v = json!({
            "name": vnet.id.name(),
            "addressPrefixes": vnet.address_prefixes.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            "subnets": subnets,
        });
        if let Some(l) = &vnet.location {
            v["location"] = json!(l);
        }
        g.vnets.push(v);
    }
    for nsg in snapshot.network_security_groups.values() {
        let rules: Vec<Value> = nsg
            .rules
            .iter()
            .map(|r| {
                nsg.raw_rules
                    .get(&r.name.to_ascii_lowercase())
                    .map(crate::apply::carried_child)
                    .unwrap_or_else(|| crate::apply::render_rule(r))
            })
            .collect();
        let g = group(&mut subs, &nsg.id);
        let mut v = json!({ "name": nsg.id.name(), "securityRules": rules });
        if let Some(l) = &nsg.location {
            v["location"] = json!(l);
        }
        g.nsgs.push(v);
    }
    for rt in snapshot.route_tables.values() {
        let routes: Vec<Value> = rt
            .routes
            .iter()
            .map(|r| {
                rt.raw_routes
                    .get(&r.name.to_ascii_lowercase())
                    .map(crate::apply::carried_child)
                    .unwrap_or_else(|| crate::apply::render_route(r))
            })
            .collect();
        let g = group(&mut subs, &rt.id);
        let mut v = json!({
            "name": rt.id.name(),
            "disableBgpRoutePropagation": rt.disable_bgp_route_propagation,
            "routes": routes,
        });
        if let Some(l) = &rt.location {
            v["location"] = json!(l);
        }
        g.route_tables.push(v);
    }
    for env in snapshot.environments.values() {
        let spec = specs
            .iter()
            .find(|s| s.environment_id.as_ref() == Some(&env.id));
        let Some(subnet) = env
            .subnet
            .clone()
            .or_else(|| spec.map(|s| s.subnet.clone()))
        else {
            continue;
        };
        let kind = match spec.map(|s| s.version) {
            Some(crate::api::AseVersion::V3) => "ASEV3",
            _ => "ASEV2",
        };
        let mut v = json!({ "name": env.id.name(), "kind": kind, "subnet": subnet.as_str() });
        if let Some(ip) = env.public_vip {
            v["serviceIpAddress"] = json!(ip.to_string());
        }
        if !env.outbound.is_empty() {
            v["outboundIpAddresses"] = json!(env
                .outbound
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>());
        }
        if let Some(ip) = env.internal_ip {
            v["internalIpAddress"] = json!(ip.to_string());
        }
        group(&mut subs, &env.id).ases.push(v);
    }

    let subscriptions: Vec<Value> = subs
        .into_iter()
        .map(|(sub, groups)| {
            let groups: Vec<Value> = groups
                .into_iter()
                .map(|(name, g)| {
                    json!({
                        "name": name,
                        "location": g.location.unwrap_or_else(|| DEFAULT_LOCATION.to_string()),
                        "virtualNetworks": g.vnets,
                        "networkSecurityGroups": g.nsgs,
                        "routeTables": g.route_tables,
                        "hostingEnvironments": g.ases,
                    })
                })
                .collect();
            json!({ "id": sub, "resourceGroups": groups })
        })
        .collect();
    json!({ "subscriptions": subscriptions })
}

/// The seed, ready for `mock_arm::MockState::new`.
pub fn seed(snapshot: &Snapshot, specs: &[ValidSpec]) -> Result<mock_arm::Seed, String> {
    serde_json::from_value(seed_value(snapshot, specs)).map_err(|e| e.to_string())
}
