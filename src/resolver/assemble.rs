//! Phase 2 of resolving: merge the specs' contributions per Azure resource, allocate
//! priorities, compute routes within the table's budget, enforce Azure's limits.
//!
//! A spec that cannot be placed (its band is full, a limit would be exceeded, its subnet is
//! claimed by another spec) fails alone: it is withdrawn and the merge runs again, so its
//! rules already in Azure (which the diff leaves as they are) keep their priorities and no
//! other spec's rule takes them.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::{SpecError, SpecErrorKind};
use crate::model::{Direction, NextHopType, Route, RouteDestination, SecurityRule, SpecKey};
use crate::snapshot::Snapshot;
use crate::validate::ValidSpec;

use super::build::{build, RouteNeed, SpecBuild};
use super::names::{is_owned_name, owned_name, owner_from_description, stem};
use super::routes::tunnel_prefixes;
use super::{
    Desired, DesiredNsg, DesiredRouteTable, DesiredSubnet, OwnedRoute, OwnedRule, Resolution,
    SpecOutcome, OWNED_PREFIX,
};

/// Security rules per NSG (docs/domain.md 2.7).
pub const MAX_RULES: usize = 1000;
/// Addresses and ranges in sources, and separately in destinations, across one NSG (2.7).
pub const MAX_PREFIXES_PER_NSG: usize = 4000;
/// Routes per route table (docs/domain.md 3.6).
pub const MAX_ROUTES: usize = 400;
/// Routes with a service tag as address prefix per table (docs/domain.md 3.3).
pub const MAX_TAG_ROUTES: usize = 25;

type Failures = BTreeMap<SpecKey, Vec<SpecError>>;

pub(crate) fn resolve(specs: &[ValidSpec], snapshot: &Snapshot) -> Desired {
    let mut by_key: BTreeMap<SpecKey, &ValidSpec> = BTreeMap::new();
    for s in specs {
        by_key.entry(s.key.clone()).or_insert(s);
    }
    let colliding = colliding_names(&by_key, snapshot);

    let mut failed: Failures = BTreeMap::new();
    let mut builds: Vec<SpecBuild> = Vec::new();
    for (key, spec) in &by_key {
        let st = stem(key, colliding.contains(&key.name));
        match build(spec, &by_key, snapshot, st) {
            Ok(b) => builds.push(b),
            Err(e) => {
                failed.insert(key.clone(), e);
            }
        }
    }

    // Each round either succeeds or fails at least one more spec, so this ends.
    loop {
        let active: Vec<&SpecBuild> = builds
            .iter()
            .filter(|b| !failed.contains_key(&b.key))
            .collect();
        match merge(&active, snapshot) {
            Ok(mut desired) => {
                for (k, e) in failed {
                    desired.specs.insert(k, SpecOutcome::Failed { errors: e });
                }
                return desired;
            }
            Err(more) => {
                for (k, mut e) in more {
                    failed.entry(k).or_default().append(&mut e);
                }
            }
        }
    }
}

/// Spec names used by more than one namespace, in the input or in the owners recorded in
/// observed rule descriptions: their rule names get a hash of `namespace/name`.
fn colliding_names(specs: &BTreeMap<SpecKey, &ValidSpec>, snapshot: &Snapshot) -> BTreeSet<String> {
    let mut namespaces: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for k in specs.keys() {
        namespaces
            .entry(&k.name)
            .or_default()
            .insert(k.namespace.clone());
    }
    for nsg in snapshot.network_security_groups.values() {
        for r in &nsg.rules {
            let Some(owner) = r.description.as_deref().and_then(owner_from_description) else {
                continue;
            };
            if let Some(set) = namespaces.get_mut(owner.name.as_str()) {
                let plain = format!("{OWNED_PREFIX}{}-", owner.name);
                if r.name.to_ascii_lowercase().starts_with(&plain) {
                    set.insert(owner.namespace.clone());
                }
            }
        }
    }
    namespaces
        .into_iter()
        .filter(|(_, ns)| ns.len() > 1)
        .map(|(n, _)| n.to_string())
        .collect()
}

fn fail(
    f: &mut Failures,
    key: &SpecKey,
    kind: SpecErrorKind,
    field: &str,
    value: String,
    message: String,
) {
    f.entry(key.clone())
        .or_default()
        .push(SpecError::new(key, kind, field, value, message));
}

fn merge(active: &[&SpecBuild], snapshot: &Snapshot) -> Result<Desired, Failures> {
    let mut failures: Failures = BTreeMap::new();
    let active_keys: BTreeSet<&SpecKey> = active.iter().map(|b| &b.key).collect();
    let mut desired = Desired::default();

    // ---- Subnet associations: one spec per subnet (an ASE has a dedicated subnet,
    // domain.md 1.2.6).
    for b in active {
        if let Some(prev) = desired.subnets.get(&b.subnet) {
            fail(&mut failures, &b.key, SpecErrorKind::InvalidField, "spec.subnet.resourceId", b.subnet.to_string(),
                format!("subnet `{}` is already the subnet of spec {}; an ASE needs a dedicated subnet (domain.md 1.2.6)", b.subnet, prev.owner));
            continue;
        }
        desired.subnets.insert(
            b.subnet.clone(),
            DesiredSubnet {
                id: b.subnet.clone(),
                network_security_group: b.nsg.clone(),
                route_table: b.route_table.clone(),
                owner: b.key.clone(),
            },
        );
    }

    // ---- NSGs.
    let mut by_nsg: BTreeMap<_, Vec<(&SpecBuild, usize)>> = BTreeMap::new();
    for b in active {
        for (i, r) in b.rules.iter().enumerate() {
            by_nsg.entry(r.nsg.clone()).or_default().push((*b, i));
        }
    }
    for (nsg_id, contribs) in by_nsg {
        let observed = snapshot.network_security_groups.get(&nsg_id);
        let desired_names: BTreeSet<String> = contribs
            .iter()
            .map(|(b, i)| b.rules[*i].rule.name.to_ascii_lowercase())
            .collect();
        // Observed rules that stay as they are: foreign rules, and owned rules of specs
        // not resolved in this run (failed, or not in the input).
        let replaceable = |r: &SecurityRule| {
            is_owned_name(&r.name)
                && match r.description.as_deref().and_then(owner_from_description) {
                    Some(o) => active_keys.contains(&o),
                    None => desired_names.contains(&r.name.to_ascii_lowercase()),
                }
        };
        let observed_rules: &[SecurityRule] = observed.map(|n| n.rules.as_slice()).unwrap_or(&[]);
        let reserved: Vec<&SecurityRule> =
            observed_rules.iter().filter(|r| !replaceable(r)).collect();
        let previous: BTreeMap<String, &SecurityRule> = observed_rules
            .iter()
            .filter(|r| replaceable(r))
            .map(|r| (r.name.to_ascii_lowercase(), r))
            .collect();

        // Limits (domain.md 2.7), spec by spec in key order.
        let mut rules = reserved.len();
        let mut src: usize = reserved.iter().map(|r| r.source.count()).sum();
        let mut dst: usize = reserved.iter().map(|r| r.destination.count()).sum();
        let mut over: BTreeSet<SpecKey> = BTreeSet::new();
        let mut by_spec: BTreeMap<&SpecKey, Vec<usize>> = BTreeMap::new();
        for (n, (b, _)) in contribs.iter().enumerate() {
            by_spec.entry(&b.key).or_default().push(n);
        }
        for (key, idx) in &by_spec {
            let r = idx.len();
            let s: usize = idx
                .iter()
                .map(|n| {
                    let (b, i) = contribs[*n];
                    b.rules[i].rule.source.count()
                })
                .sum();
            let d: usize = idx
                .iter()
                .map(|n| {
                    let (b, i) = contribs[*n];
                    b.rules[i].rule.destination.count()
                })
                .sum();
            let problem = if rules + r > MAX_RULES {
                Some(format!("NSG `{nsg_id}` would hold {} rules, more than Azure's {MAX_RULES} (domain.md 2.7)", rules + r))
            } else if src + s > MAX_PREFIXES_PER_NSG {
                Some(format!("NSG `{nsg_id}` would hold {} source prefixes, more than Azure's {MAX_PREFIXES_PER_NSG} (domain.md 2.7)", src + s))
            } else if dst + d > MAX_PREFIXES_PER_NSG {
                Some(format!("NSG `{nsg_id}` would hold {} destination prefixes, more than Azure's {MAX_PREFIXES_PER_NSG} (domain.md 2.7)", dst + d))
            } else {
                None
            };
            if let Some(message) = problem {
                let (b, i) = contribs[idx[0]];
                fail(
                    &mut failures,
                    key,
                    SpecErrorKind::LimitExceeded,
                    &b.rules[i].field,
                    nsg_id.to_string(),
                    message,
                );
                over.insert((*key).clone());
                continue;
            }
            rules += r;
            src += s;
            dst += d;
        }

        // Priorities, per direction: first every rule that keeps its observed priority
        // (stable when other rules come or go), then new rules take the lowest free one.
        let mut priority: Vec<Option<u32>> = vec![None; contribs.len()];
        for dir in [Direction::Inbound, Direction::Outbound] {
            let mut taken: BTreeSet<u32> = reserved
                .iter()
                .filter(|r| r.direction == dir)
                .map(|r| r.priority)
                .collect();
            let mine: Vec<usize> = (0..contribs.len())
                .filter(|n| {
                    let (b, i) = contribs[*n];
                    b.rules[i].rule.direction == dir && !over.contains(&b.key)
                })
                .collect();
            for &n in &mine {
                let (b, i) = contribs[n];
                let pr = &b.rules[i];
                if let Some(o) = previous.get(&pr.rule.name.to_ascii_lowercase()) {
                    if o.direction == dir
                        && pr.band.contains(o.priority)
                        && taken.insert(o.priority)
                    {
                        priority[n] = Some(o.priority);
                    }
                }
            }
            for &n in &mine {
                if priority[n].is_some() {
                    continue;
                }
                let (b, i) = contribs[n];
                let pr = &b.rules[i];
                match pr.band.iter().map(u32::from).find(|p| !taken.contains(p)) {
                    Some(p) => {
                        taken.insert(p);
                        priority[n] = Some(p);
                    }
                    None => {
                        let band = format!("{}-{}", pr.band.from.get(), pr.band.to.get());
                        if !failures
                            .get(&b.key)
                            .is_some_and(|e| e.iter().any(|e| e.kind == SpecErrorKind::BandFull))
                        {
                            fail(&mut failures, &b.key, SpecErrorKind::BandFull, &format!("{}.priorities", pr.field), band.clone(),
                                format!("no free {dir:?} priority left in band {band} of NSG `{nsg_id}` for rule `{}` (other rules hold the rest)", pr.rule.name));
                        }
                    }
                }
            }
        }

        let location = observed
            .and_then(|o| o.location.clone())
            .or_else(|| {
                contribs
                    .iter()
                    .find(|(b, _)| b.nsg == nsg_id)
                    .and_then(|(b, _)| b.location.clone())
            })
            .or_else(|| contribs.iter().find_map(|(b, _)| b.location.clone()));
        let mut out: Vec<OwnedRule> = Vec::new();
        for (n, (b, i)) in contribs.iter().enumerate() {
            let Some(p) = priority[n] else { continue };
            let pr = &b.rules[*i];
            let mut rule = pr.rule.clone();
            rule.priority = p;
            out.push(OwnedRule {
                rule,
                owner: b.key.clone(),
                reason: pr.reason.clone(),
                required: pr.required,
            });
        }
        out.sort_by(|a, b| {
            (a.rule.direction, a.rule.priority).cmp(&(b.rule.direction, b.rule.priority))
        });
        let mut bands = BTreeMap::new();
        for (b, i) in &contribs {
            if !over.contains(&b.key) {
                bands.entry(b.key.clone()).or_insert(b.rules[*i].band);
            }
        }
        desired.network_security_groups.insert(
            nsg_id.clone(),
            DesiredNsg {
                id: nsg_id,
                location,
                rules: out,
                bands,
            },
        );
    }

    // ---- Route tables.
    let mut by_rt: BTreeMap<_, Vec<&SpecBuild>> = BTreeMap::new();
    for b in active {
        if let Some(rt) = &b.route_table {
            by_rt.entry(rt.clone()).or_default().push(*b);
        }
    }
    for (rt_id, bs) in by_rt {
        let observed = snapshot.route_tables.get(&rt_id);
        let foreign: Vec<&Route> = observed
            .map(|o| {
                o.routes
                    .iter()
                    .filter(|r| !is_owned_name(&r.name))
                    .collect()
            })
            .unwrap_or_default();
        let foreign_tags = foreign
            .iter()
            .filter(|r| matches!(r.address_prefix, RouteDestination::Tag(_)))
            .count();
        let mut routes: Vec<OwnedRoute> = Vec::new();
        let field = "spec.outbound.forcedTunneling";
        for b in bs.iter().copied() {
            let mut mine: Vec<(RouteDestination, String)> = Vec::new();
            match &b.route_need {
                None => {}
                Some(RouteNeed::Default) => mine.push((
                    RouteDestination::Prefix(ipnet::Ipv4Net::default()),
                    "forced tunneling advertises 0.0.0.0/0: default route next hop Internet (domain.md 1.2.7, 1.3.5)".into(),
                )),
                Some(RouteNeed::Tags(tags)) => {
                    for t in tags {
                        mine.push((RouteDestination::Tag(t.clone()),
                            format!("service tag {t} next hop Internet under forced tunneling (domain.md 1.3.5, 3.3)")));
                    }
                }
                Some(RouteNeed::Prefixes { required, advertised, tags }) => {
                    let budget = MAX_ROUTES.saturating_sub(foreign.len() + routes.len());
                    match tunnel_prefixes(required, advertised, budget) {
                        Ok((v, summarised)) => {
                            let how = if summarised { "summarised to fit the table" } else { "aggregated" };
                            for p in v {
                                mine.push((RouteDestination::Prefix(p),
                                    format!("{} prefixes, {how}, at least as specific as the advertised routes, next hop Internet (domain.md 1.2.7, 1.3.5, 3.4)", tags.join(","))));
                            }
                        }
                        Err(n) => {
                            fail(&mut failures, &b.key, SpecErrorKind::LimitExceeded, field, tags.join(","),
                                format!("the required prefixes of {} need at least {n} routes in route table `{rt_id}` but only {budget} fit (400 minus {} foreign and {} other routes; domain.md 3.6)", tags.join(","), foreign.len(), routes.len()));
                            continue;
                        }
                    }
                }
            }
            let new_tags = mine
                .iter()
                .filter(|(d, _)| matches!(d, RouteDestination::Tag(_)))
                .count();
            let existing_tags = routes
                .iter()
                .filter(|r| matches!(r.route.address_prefix, RouteDestination::Tag(_)))
                .count();
            if foreign_tags + existing_tags + new_tags > MAX_TAG_ROUTES {
                fail(&mut failures, &b.key, SpecErrorKind::LimitExceeded, field, rt_id.to_string(),
                    format!("route table `{rt_id}` would hold more than {MAX_TAG_ROUTES} service-tag routes (domain.md 3.3)"));
                continue;
            }
            if foreign.len() + routes.len() + mine.len() > MAX_ROUTES {
                fail(&mut failures, &b.key, SpecErrorKind::LimitExceeded, field, rt_id.to_string(),
                    format!("route table `{rt_id}` would hold more than {MAX_ROUTES} routes (domain.md 3.6)"));
                continue;
            }
            for (dest, reason) in mine {
                // Another spec sharing the table already routes this destination the same way.
                if routes.iter().any(|r| {
                    r.route.address_prefix == dest && r.route.next_hop_type == NextHopType::Internet
                }) {
                    continue;
                }
                let what = match &dest {
                    RouteDestination::Prefix(p) if p.prefix_len() == 0 => {
                        "internet-default".to_string()
                    }
                    RouteDestination::Prefix(p) => format!("{}-{}", p.addr(), p.prefix_len()),
                    RouteDestination::Tag(t) => format!("tag-{t}"),
                };
                routes.push(OwnedRoute {
                    route: Route {
                        name: owned_name(&b.stem, &what),
                        address_prefix: dest,
                        next_hop_type: NextHopType::Internet,
                        next_hop_ip_address: None,
                    },
                    owner: b.key.clone(),
                    reason,
                });
            }
        }
        routes.sort_by(|a, b| a.route.name.cmp(&b.route.name));
        let location = observed
            .and_then(|o| o.location.clone())
            .or_else(|| bs.iter().find_map(|b| b.location.clone()));
        desired.route_tables.insert(
            rt_id.clone(),
            DesiredRouteTable {
                id: rt_id,
                location,
                routes,
            },
        );
    }

    if !failures.is_empty() {
        return Err(failures);
    }

    // ---- Per-spec outcomes.
    for b in active {
        let mut touches: BTreeSet<_> = BTreeSet::new();
        touches.insert(b.subnet.clone());
        touches.insert(b.nsg.clone());
        if let Some(rt) = &b.route_table {
            touches.insert(rt.clone());
        }
        let mut flows = Vec::new();
        for r in &b.rules {
            touches.insert(r.nsg.clone());
            flows.extend(r.flows.iter().cloned());
        }
        flows.sort();
        flows.dedup();
        desired.specs.insert(
            b.key.clone(),
            SpecOutcome::Resolved(Resolution {
                internet_addresses: b.internet_addresses.clone(),
                virtual_network_range: b.subnet_range,
                touches,
                required_flows: flows,
            }),
        );
    }
    Ok(desired)
}
