//! The fleet of the fleet benchmark (benches/fleet.rs): the specs and snapshot of
//! `specgen::generate` (ASEs in VNets of 100, back-end NSGs shared by 20 specs,
//! `environmentRef`s, V1/V2/V3, forced tunneling, foreign rules), spread over several
//! subscriptions, plus the 5 % change the benchmark converges a second time.
//!
//! The spreading rewrites resource ids after generation (VNet `v` and everything in it go to
//! subscription `v % subscriptions`), so specgen.rs and the resolve benchmark stay untouched
//! and a given `n` still gives the same fleet. ARM throttles per subscription (docs/domain.md
//! 4.8), so the subscription of each parent decides which write bucket pays for it.

use std::collections::BTreeMap;

use asenet::api::{AseConnectivity, InboundSpec, SourceSpec};
use asenet::snapshot::Snapshot;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use super::specgen;

/// The subscription specgen puts everything in.
const GENERATED_SUB: &str = "00000000-0000-0000-0000-00000000be4c";

/// Subscription number `k` of the fleet.
pub fn subscription(k: usize) -> String {
    format!("00000000-0000-0000-0000-0000f1ee{k:04x}")
}

/// The VNet index of a generated resource, from its name (see specgen.rs: `vnet-{v}`,
/// subnets and ASEs `ase-{i:05}` in VNet `i / 100`, NSGs `ase-{i}-nsg`, route tables
/// `ase-{i}-rt`, back-end NSGs `be-{group:04}-{k}` for specs `20 * group ..`).
fn vnet_of(id: &str) -> Option<usize> {
    let lower = id.to_ascii_lowercase();
    let number = |s: &str| -> Option<usize> {
        let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    if let Some(rest) = lower.split("/virtualnetworks/vnet-").nth(1) {
        return number(rest);
    }
    if let Some(rest) = lower.split("/be-").nth(1) {
        return number(rest).map(|group| group * 20 / 100);
    }
    if let Some(rest) = lower.split("/ase-").nth(1) {
        return number(rest).map(|i| i / 100);
    }
    None
}

fn respread(id: &str, subscriptions: usize) -> String {
    match (id.find(GENERATED_SUB), vnet_of(id)) {
        (Some(_), Some(v)) => id.replace(GENERATED_SUB, &subscription(v % subscriptions.max(1))),
        _ => id.to_string(),
    }
}

/// Rewrites every resource id (string values and map keys) in a JSON document.
fn rewrite(value: &mut Value, subscriptions: usize) {
    match value {
        Value::String(s) if s.contains(GENERATED_SUB) => *s = respread(s, subscriptions),
        Value::Array(items) => items.iter_mut().for_each(|v| rewrite(v, subscriptions)),
        Value::Object(map) => {
            let entries: Vec<(String, Value)> = std::mem::take(map).into_iter().collect();
            for (k, mut v) in entries {
                rewrite(&mut v, subscriptions);
                map.insert(respread(&k, subscriptions), v);
            }
        }
        _ => {}
    }
}

/// The fleet: specs, the snapshot the mock is seeded with, how many subscriptions.
pub struct Fleet {
    pub specs: Vec<AseConnectivity>,
    pub snapshot: Snapshot,
    pub subscriptions: usize,
}

/// `n` ASEs over `ceil(n / 100)` VNets, spread over at most `max_subscriptions`.
pub fn fleet(n: usize, max_subscriptions: usize) -> Result<Fleet, String> {
    let world = specgen::generate(n);
    let vnets = n.div_ceil(100).max(1);
    let subscriptions = max_subscriptions.clamp(1, vnets);
    let mut specs = Vec::with_capacity(world.specs.len());
    for s in &world.specs {
        let mut v = serde_json::to_value(s).map_err(|e| e.to_string())?;
        rewrite(&mut v, subscriptions);
        let mut spec: AseConnectivity = serde_json::from_value(v).map_err(|e| e.to_string())?;
        // Present from the start, as the controller's first reconcile would have added it:
        // the benchmark measures ARM traffic, not the finalizer round trip.
        spec.metadata.finalizers = Some(vec![asenet::controller::FINALIZER.to_string()]);
        spec.metadata.generation = Some(1);
        spec.metadata.resource_version = Some("1".into());
        spec.metadata.uid = Some(format!(
            "uid-{}",
            spec.metadata.name.clone().unwrap_or_default()
        ));
        specs.push(spec);
    }
    let mut snap = serde_json::to_value(&world.snapshot).map_err(|e| e.to_string())?;
    rewrite(&mut snap, subscriptions);
    let snapshot: Snapshot = serde_json::from_value(snap).map_err(|e| e.to_string())?;
    Ok(Fleet {
        specs,
        snapshot,
        subscriptions,
    })
}

/// The 5 % change: every 20th spec (at least one). Even picks open a new inbound port on
/// their own NSG; odd picks change the ports of their shared `db` back end, so several
/// changed specs can land on one back-end NSG (changed parents < changed specs).
pub fn change_five_percent(specs: &[AseConnectivity]) -> (Vec<AseConnectivity>, usize) {
    let mut out = specs.to_vec();
    let mut changed = 0;
    for (k, i) in (0..out.len()).step_by(20).enumerate() {
        let s = &mut out[i];
        if k % 2 == 0 {
            s.spec.inbound.push(InboundSpec {
                name: "fleet-change".into(),
                service: None,
                ports: vec![IntOrString::String("8081".into())],
                protocol: None,
                from: vec![SourceSpec {
                    cidr: Some("192.0.2.0/24".into()),
                    ..Default::default()
                }],
            });
        } else if let Some(b) = s.spec.backends.first_mut() {
            b.ports = vec![IntOrString::String("1433-1434".into())];
        }
        let g = s.metadata.generation.unwrap_or(1) + 1;
        s.metadata.generation = Some(g);
        s.metadata.resource_version = Some(format!("{g}"));
        changed += 1;
    }
    (out, changed)
}

/// Parents (NSGs, route tables, VNets holding written subnets) by subscription, for the
/// per-subscription write floor.
pub fn subscription_of(id: &str) -> String {
    id.split('/')
        .nth(2)
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// Every parent id of the snapshot and of the specs (NSGs, route tables, VNets), lower-case
/// keys to their ids, for reading the mock's write history.
pub fn parents(fleet: &Fleet) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut add = |id: &str| {
        out.insert(id.to_ascii_lowercase(), id.to_string());
    };
    for id in fleet.snapshot.virtual_networks.keys() {
        add(id.as_str());
    }
    for s in &fleet.specs {
        add(&s.spec.network_security_group.resource_id);
        for b in &s.spec.backends {
            add(&b.network_security_group.resource_id);
        }
        if let Some(rt) = &s.spec.route_table {
            add(&rt.resource_id);
        }
    }
    out
}
