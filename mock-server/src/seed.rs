//! The seed topology (`--seed FILE`, YAML), documented in mock-server/README.md.
//!
//! Each seeded resource is turned into the request body a client would PUT and goes through
//! the same validation (`validate`), so a bad seed fails with the error code and the name of
//! the resource. Back-references (`subnets[]` on NSGs and route tables) are derived from the
//! subnets' associations like for any PUT (domain.md 2.9, 3.5).

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::model::Kind;
use crate::routes::web::DEFAULT_MANAGEMENT_ADDRESSES;
use crate::store::{key, Entry, Store};
use crate::validate;

/// The whole seed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Seed {
    #[serde(default)]
    pub subscriptions: Vec<SeedSubscription>,
    /// The service tags `ServiceTags_List` serves, in the JSON schema of Azure's download
    /// (docs/domain.md 5.1); the built-in fixture when absent.
    #[serde(default)]
    pub service_tags: Option<Value>,
}

impl Seed {
    /// Parse a YAML seed document.
    pub fn from_yaml(text: &str) -> Result<Self, serde_yaml::Error> {
        serde_yaml::from_str(text)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedSubscription {
    pub id: String,
    #[serde(default)]
    pub resource_groups: Vec<SeedResourceGroup>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedResourceGroup {
    pub name: String,
    pub location: String,
    #[serde(default)]
    pub tags: Option<Map<String, Value>>,
    #[serde(default)]
    pub virtual_networks: Vec<SeedVirtualNetwork>,
    #[serde(default)]
    pub network_security_groups: Vec<SeedNetworkSecurityGroup>,
    #[serde(default)]
    pub route_tables: Vec<SeedRouteTable>,
    #[serde(default)]
    pub hosting_environments: Vec<SeedHostingEnvironment>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedVirtualNetwork {
    pub name: String,
    /// Defaults to the resource group's location.
    #[serde(default)]
    pub location: Option<String>,
    #[serde(default)]
    pub tags: Option<Map<String, Value>>,
    pub address_prefixes: Vec<String>,
    #[serde(default)]
    pub subnets: Vec<SeedSubnet>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedSubnet {
    pub name: String,
    #[serde(default)]
    pub address_prefix: Option<String>,
    #[serde(default)]
    pub address_prefixes: Vec<String>,
    /// NSG name in the same resource group, or a full id.
    #[serde(default)]
    pub network_security_group: Option<String>,
    /// Route table name in the same resource group, or a full id.
    #[serde(default)]
    pub route_table: Option<String>,
    /// Service names to delegate to (e.g. `Microsoft.Web/hostingEnvironments`).
    #[serde(default)]
    pub delegations: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedNetworkSecurityGroup {
    pub name: String,
    #[serde(default)]
    pub location: Option<String>,
    #[serde(default)]
    pub tags: Option<Map<String, Value>>,
    /// ARM-shaped rules: `{name, properties: {...}}`.
    #[serde(default)]
    pub security_rules: Vec<Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedRouteTable {
    pub name: String,
    #[serde(default)]
    pub location: Option<String>,
    #[serde(default)]
    pub tags: Option<Map<String, Value>>,
    #[serde(default)]
    pub disable_bgp_route_propagation: bool,
    /// ARM-shaped routes: `{name, properties: {addressPrefix, nextHopType, ...}}`.
    #[serde(default)]
    pub routes: Vec<Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedHostingEnvironment {
    pub name: String,
    #[serde(default)]
    pub location: Option<String>,
    /// `ASEV2` (default) or `ASEV3`.
    #[serde(default = "default_ase_kind")]
    pub kind: String,
    /// `vnet/subnet` in the same resource group, or a full subnet id.
    pub subnet: String,
    #[serde(default)]
    pub service_ip_address: Option<String>,
    #[serde(default)]
    pub internal_ip_address: Option<String>,
    #[serde(default)]
    pub outbound_ip_addresses: Vec<String>,
    #[serde(default = "default_ilb_mode")]
    pub internal_load_balancing_mode: String,
    #[serde(default)]
    pub vip_mappings: Vec<Value>,
    /// Management source prefixes for `inboundNetworkDependenciesEndpoints`.
    #[serde(default)]
    pub management_addresses: Option<Vec<String>>,
    #[serde(default)]
    pub user_whitelisted_ip_ranges: Vec<String>,
}

fn default_ase_kind() -> String {
    "ASEV2".to_owned()
}

fn default_ilb_mode() -> String {
    "None".to_owned()
}

/// A seed error naming the resource.
#[derive(Debug, thiserror::Error)]
#[error("invalid seed: {resource}: {source}")]
pub struct SeedError {
    pub resource: String,
    #[source]
    pub source: crate::error::ArmError,
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// Resolve a same-group name or a full id to a full id.
fn reference(sub: &str, rg: &str, kind: Kind, name_or_id: &str) -> String {
    if name_or_id.starts_with('/') {
        name_or_id.to_owned()
    } else {
        kind.id(sub, rg, name_or_id)
    }
}

/// Store every resource of the seed, validated like PUTs.
pub fn apply(store: &mut Store, seed: &Seed) -> Result<(), SeedError> {
    // Groups, NSGs and route tables first, so that subnets can reference them.
    for subscription in &seed.subscriptions {
        let sub = &subscription.id;
        for group in &subscription.resource_groups {
            seed_group(store, sub, group)?;
        }
    }
    for subscription in &seed.subscriptions {
        let sub = &subscription.id;
        for group in &subscription.resource_groups {
            for vnet in &group.virtual_networks {
                seed_vnet(store, sub, group, vnet)?;
            }
        }
    }
    for subscription in &seed.subscriptions {
        let sub = &subscription.id;
        for group in &subscription.resource_groups {
            for ase in &group.hosting_environments {
                seed_ase(store, sub, group, ase)?;
            }
        }
    }
    Ok(())
}

fn seed_group(store: &mut Store, sub: &str, group: &SeedResourceGroup) -> Result<(), SeedError> {
    let rg = &group.name;
    let fail = |what: String| {
        move |source| SeedError {
            resource: what,
            source,
        }
    };
    validate::resource_group_name(rg).map_err(fail(format!("resourceGroup {rg}")))?;
    let id = Kind::ResourceGroup.id(sub, rg, rg);
    let body = object(json!({ "location": group.location, "tags": group.tags }));
    let canonical = validate::resource_group(&id, rg, &body, None)
        .map_err(fail(format!("resourceGroup {rg}")))?;
    store.put(
        key(&id),
        Entry {
            kind: Kind::ResourceGroup,
            sub: sub.to_owned(),
            rg: rg.clone(),
            body: canonical,
            aux: None,
            pending: None,
        },
    );
    let location = |own: &Option<String>| own.clone().unwrap_or_else(|| group.location.clone());
    for nsg in &group.network_security_groups {
        let what = format!("networkSecurityGroup {rg}/{}", nsg.name);
        validate::name(&nsg.name, false).map_err(fail(what.clone()))?;
        let id = Kind::NetworkSecurityGroup.id(sub, rg, &nsg.name);
        let body = object(json!({
            "location": location(&nsg.location),
            "tags": nsg.tags,
            "properties": { "securityRules": nsg.security_rules },
        }));
        let guid = uuid::Uuid::new_v4().to_string();
        let canonical = validate::network_security_group(&id, &nsg.name, &body, None, &guid)
            .map_err(fail(what))?;
        crate::routes::network::seed_entry(
            store,
            Kind::NetworkSecurityGroup,
            sub,
            rg,
            canonical,
            None,
        );
    }
    for table in &group.route_tables {
        let what = format!("routeTable {rg}/{}", table.name);
        validate::name(&table.name, false).map_err(fail(what.clone()))?;
        let id = Kind::RouteTable.id(sub, rg, &table.name);
        let body = object(json!({
            "location": location(&table.location),
            "tags": table.tags,
            "properties": {
                "disableBgpRoutePropagation": table.disable_bgp_route_propagation,
                "routes": table.routes,
            },
        }));
        let guid = uuid::Uuid::new_v4().to_string();
        let canonical =
            validate::route_table(&id, &table.name, &body, None, &guid).map_err(fail(what))?;
        crate::routes::network::seed_entry(store, Kind::RouteTable, sub, rg, canonical, None);
    }
    Ok(())
}

fn seed_vnet(
    store: &mut Store,
    sub: &str,
    group: &SeedResourceGroup,
    vnet: &SeedVirtualNetwork,
) -> Result<(), SeedError> {
    let rg = &group.name;
    let what = format!("virtualNetwork {rg}/{}", vnet.name);
    let fail = |source| SeedError {
        resource: what.clone(),
        source,
    };
    validate::name(&vnet.name, true).map_err(fail)?;
    let subnets: Vec<Value> = vnet
        .subnets
        .iter()
        .map(|subnet| {
            let mut props = Map::new();
            if let Some(prefix) = &subnet.address_prefix {
                props.insert("addressPrefix".into(), json!(prefix));
            }
            if !subnet.address_prefixes.is_empty() {
                props.insert("addressPrefixes".into(), json!(subnet.address_prefixes));
            }
            if let Some(nsg) = &subnet.network_security_group {
                props.insert(
                    "networkSecurityGroup".into(),
                    json!({ "id": reference(sub, rg, Kind::NetworkSecurityGroup, nsg) }),
                );
            }
            if let Some(table) = &subnet.route_table {
                props.insert("routeTable".into(), json!({ "id": reference(sub, rg, Kind::RouteTable, table) }));
            }
            let delegations: Vec<Value> = subnet
                .delegations
                .iter()
                .enumerate()
                .map(|(i, service)| json!({ "name": format!("delegation{i}"), "properties": { "serviceName": service } }))
                .collect();
            props.insert("delegations".into(), Value::Array(delegations));
            json!({ "name": subnet.name, "properties": props })
        })
        .collect();
    let id = Kind::VirtualNetwork.id(sub, rg, &vnet.name);
    let body = object(json!({
        "location": vnet.location.clone().unwrap_or_else(|| group.location.clone()),
        "tags": vnet.tags,
        "properties": {
            "addressSpace": { "addressPrefixes": vnet.address_prefixes },
            "subnets": subnets,
        },
    }));
    let guid = uuid::Uuid::new_v4().to_string();
    let canonical =
        validate::virtual_network(&id, &vnet.name, &body, None, &guid, &*store).map_err(fail)?;
    crate::routes::network::seed_entry(store, Kind::VirtualNetwork, sub, rg, canonical, None);
    Ok(())
}

fn seed_ase(
    store: &mut Store,
    sub: &str,
    group: &SeedResourceGroup,
    ase: &SeedHostingEnvironment,
) -> Result<(), SeedError> {
    let rg = &group.name;
    let what = format!("hostingEnvironment {rg}/{}", ase.name);
    let fail = |source| SeedError {
        resource: what.clone(),
        source,
    };
    validate::name(&ase.name, false).map_err(fail)?;
    let subnet_id = if ase.subnet.starts_with('/') {
        ase.subnet.clone()
    } else {
        let (vnet, subnet) = ase
            .subnet
            .split_once('/')
            .unwrap_or((ase.subnet.as_str(), ""));
        format!(
            "{}/subnets/{subnet}",
            Kind::VirtualNetwork.id(sub, rg, vnet)
        )
    };
    // The subnet must exist: find it in its VNet.
    let (vnet_id, subnet_name) = subnet_id
        .rsplit_once("/subnets/")
        .unwrap_or((subnet_id.as_str(), ""));
    let subnet = store.get(&key(vnet_id)).and_then(|vnet| {
        vnet.children(crate::model::ChildKind::Subnet)
            .iter()
            .find(|s| {
                s["name"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(subnet_name))
            })
            .cloned()
    });
    let Some(subnet) = subnet else {
        return Err(fail(crate::error::ArmError::bad_request(
            "InvalidResourceReference",
            format!(
                "Subnet {subnet_id} referenced by hosting environment {} was not found.",
                ase.name
            ),
        )));
    };
    let subnet_prefix = validate::subnet_networks(&subnet)
        .first()
        .map(ToString::to_string);
    let id = Kind::HostingEnvironment.id(sub, rg, &ase.name);
    let location = validate::normalize_location(ase.location.as_deref().unwrap_or(&group.location));
    let body = json!({
        "id": id,
        "name": ase.name,
        "type": Kind::HostingEnvironment.type_name(),
        "kind": ase.kind,
        "location": location,
        "tags": {},
        "properties": {
            "provisioningState": "Succeeded",
            "status": "Ready",
            "virtualNetwork": {
                "id": subnet["id"],
                "name": subnet["name"],
                "type": "Microsoft.Network/virtualNetworks/subnets",
                "subnet": subnet["name"],
            },
            "internalLoadBalancingMode": ase.internal_load_balancing_mode,
            "dnsSuffix": format!("{}.p.azurewebsites.net", ase.name.to_ascii_lowercase()),
            "ipsslAddressCount": 0,
            "userWhitelistedIpRanges": ase.user_whitelisted_ip_ranges,
            "hasLinuxWorkers": false,
            "suspended": false,
        },
    });
    let aux = json!({
        "serviceIpAddress": ase.service_ip_address,
        "internalIpAddress": ase.internal_ip_address,
        "outboundIpAddresses": ase.outbound_ip_addresses,
        "vipMappings": ase.vip_mappings,
        "managementAddresses": ase.management_addresses.clone().unwrap_or_else(|| DEFAULT_MANAGEMENT_ADDRESSES.iter().map(|s| (*s).to_owned()).collect()),
        "subnetPrefix": subnet_prefix,
    });
    store.put(
        key(&id),
        Entry {
            kind: Kind::HostingEnvironment,
            sub: sub.to_owned(),
            rg: rg.clone(),
            body,
            aux: Some(aux),
            pending: None,
        },
    );
    Ok(())
}
