//! The flows a resolved spec requires, derived from its owned rules on demand.
//!
//! Every owned rule of a spec stands for concrete flows that must be allowed once the plan
//! is applied: one per sampled source and sampled port, to the first sampled destination.
//! `asenet verify` and the tests evaluate them against the NSGs (crate::evaluate). They are
//! computed when asked for rather than stored with every resolution: a controller resolving
//! thousands of specs on every plan never reads them (docs/benchmarks.md, resolve bench).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::model::{AddressSet, Direction, PortRange, PortSet, Protocol, ResourceId, SpecKey};

use super::{Desired, OwnedRule, RequiredFlow, SpecOutcome};

/// A public address used as the sample for `*` sources and destinations (TEST-NET-2,
/// RFC 5737): it is not in any VNet or service tag.
pub(crate) const SAMPLE_INTERNET: &str = "198.51.100.10";
/// The sample port for rules open on every port.
const SAMPLE_ANY_PORT: u16 = 8080;

/// The sample host of a prefix: its first usable address (the address itself for /31, /32).
pub(crate) fn sample_addr(p: &Ipv4Net) -> String {
    if p.prefix_len() >= 31 {
        p.addr().to_string()
    } else {
        Ipv4Addr::from(u32::from(p.network()) + 1).to_string()
    }
}

/// Sample addresses of a rule's source or destination.
fn samples(set: &AddressSet) -> Vec<String> {
    match set {
        AddressSet::Any => vec![SAMPLE_INTERNET.to_string()],
        AddressSet::Tag(t) | AddressSet::Other(t) => vec![t.clone()],
        AddressSet::Prefixes(p) => p.iter().map(sample_addr).collect(),
    }
}

/// `samples(set).first()`, or an empty text when there is none.
fn first_sample(set: &AddressSet) -> String {
    match set {
        AddressSet::Any => SAMPLE_INTERNET.to_string(),
        AddressSet::Tag(t) | AddressSet::Other(t) => t.clone(),
        AddressSet::Prefixes(p) => p.iter().next().map(sample_addr).unwrap_or_default(),
    }
}

fn sample_ports(ports: &PortSet) -> Vec<u16> {
    ports
        .ranges()
        .iter()
        .map(|r| {
            if *r == PortRange::ALL {
                SAMPLE_ANY_PORT
            } else {
                r.lo
            }
        })
        .collect()
}

/// The flows one owned rule in `nsg` must allow. `ase_host` samples `*` on the ASE side of
/// the flow (the owning spec's subnet, [`sample_addr`]).
fn rule_flows(nsg: &ResourceId, owned: &OwnedRule, ase_host: &str, out: &mut Vec<RequiredFlow>) {
    let rule = &owned.rule;
    let src_samples = if rule.direction == Direction::Outbound && rule.source == AddressSet::Any {
        vec![ase_host.to_string()]
    } else {
        samples(&rule.source)
    };
    // Flows go to the first destination sample only.
    let dst_sample = if rule.direction == Direction::Inbound && rule.destination == AddressSet::Any
    {
        ase_host.to_string()
    } else {
        first_sample(&rule.destination)
    };
    let protocol = if rule.protocol == Protocol::Any {
        Protocol::Tcp
    } else {
        rule.protocol
    };
    let ports = sample_ports(&rule.destination_ports);
    for s in &src_samples {
        for &port in &ports {
            out.push(RequiredFlow {
                network_security_group: nsg.clone(),
                direction: rule.direction,
                protocol,
                source: s.clone(),
                destination: dst_sample.clone(),
                port,
                reason: owned.reason.clone(),
            });
        }
    }
}

impl Desired {
    /// The flows spec `key` requires, sorted, without duplicates; empty when the spec did
    /// not resolve. Derived from the spec's owned rules in the NSGs it touches.
    pub fn required_flows(&self, key: &SpecKey) -> Vec<RequiredFlow> {
        let Some(SpecOutcome::Resolved(resolution)) = self.specs.get(key) else {
            return vec![];
        };
        let ase_host = sample_addr(&resolution.virtual_network_range);
        let mut flows = Vec::new();
        for id in &resolution.touches {
            let Some(nsg) = self.network_security_groups.get(id) else {
                continue;
            };
            for owned in nsg.rules.iter().filter(|r| r.owner == *key) {
                rule_flows(id, owned, &ase_host, &mut flows);
            }
        }
        flows.sort();
        flows.dedup();
        flows
    }
}
