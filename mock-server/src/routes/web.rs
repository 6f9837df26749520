//! Microsoft.Web/hostingEnvironments address endpoints (domain.md 1.5).
//!
//! The ASE body itself is served by the generic item/list handlers; this module answers
//! `capacities/virtualip` (`AddressResponse`) and `inboundNetworkDependenciesEndpoints`
//! (`InboundEnvironmentEndpointCollection`) from the addresses given in the seed.

use http::StatusCode;
use serde_json::{json, Value};

use super::{Ctx, Reply};
use crate::error::ArmError;
use crate::model::Kind;
use crate::store::{key, Entry};

/// Management addresses used when the seed gives none (examples from domain.md 1.3.5).
pub(crate) const DEFAULT_MANAGEMENT_ADDRESSES: &[&str] = &[
    "13.66.140.0/32",
    "13.67.8.128/32",
    "13.69.64.128/32",
    "191.236.154.88/32",
];

fn ase(cx: &Ctx, sub: &str, rg: &str, name: &str) -> Result<Entry, ArmError> {
    let store = cx.state.store();
    store
        .resource_group(sub, rg)
        .ok_or_else(|| ArmError::resource_group_not_found(rg))?;
    store
        .get(&key(&Kind::HostingEnvironment.id(sub, rg, name)))
        .cloned()
        .ok_or_else(|| ArmError::resource_not_found(Kind::HostingEnvironment.type_name(), name, rg))
}

pub(super) fn vip(cx: &Ctx, sub: &str, rg: &str, name: &str) -> Result<Reply, ArmError> {
    let entry = ase(cx, sub, rg, name)?;
    let aux = entry.aux.clone().unwrap_or(Value::Null);
    Ok(Reply::json(
        StatusCode::OK,
        json!({
            "id": format!("{}/capacities/virtualip", entry.id()),
            "name": entry.name(),
            "type": "Microsoft.Web/hostingEnvironments/capacities",
            "properties": {
                "serviceIpAddress": aux["serviceIpAddress"],
                "internalIpAddress": aux["internalIpAddress"],
                "outboundIpAddresses": aux["outboundIpAddresses"].as_array().cloned().unwrap_or_default(),
                "vipMappings": aux["vipMappings"].as_array().cloned().unwrap_or_default(),
            }
        }),
    ))
}

pub(super) fn inbound(cx: &Ctx, sub: &str, rg: &str, name: &str) -> Result<Reply, ArmError> {
    let entry = ase(cx, sub, rg, name)?;
    let aux = entry.aux.clone().unwrap_or(Value::Null);
    let management: Vec<Value> = match aux["managementAddresses"].as_array() {
        Some(list) => list.clone(),
        None => DEFAULT_MANAGEMENT_ADDRESSES
            .iter()
            .map(|a| json!(a))
            .collect(),
    };
    let mut value = vec![json!({
        "description": "App Service management",
        "endpoints": management,
        "ports": ["454", "455"],
    })];
    let vip = aux["serviceIpAddress"]
        .as_str()
        .or_else(|| aux["internalIpAddress"].as_str());
    if let Some(vip) = vip {
        value.push(json!({
            "description": "App Service Environment VIP",
            "endpoints": [format!("{vip}/32")],
            "ports": ["454", "455", "16001"],
        }));
    }
    if let Some(subnet) = aux["subnetPrefix"].as_str() {
        value.push(json!({
            "description": "App Service Environment subnet",
            "endpoints": [subnet],
            "ports": ["All"],
        }));
    }
    Ok(Reply::json(StatusCode::OK, json!({ "value": value })))
}
