//! Phase 2 of resolving: merge the specs' contributions per Azure resource, allocate
//! priorities, compute routes within the table's budget, enforce Azure's limits.
//!
//! A spec that cannot be placed (its band is full, a limit would be exceeded, its subnet is
//! claimed by another spec) fails alone: it is withdrawn and the merge runs again, so its
//! rules already in Azure (which the diff leaves as they are) keep their priorities and no
//! other spec's rule takes them.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::{SpecError, SpecErrorKind};
use crate::model::{
    Caseless, Direction, NextHopType, ResourceId, Route, RouteDestination, SecurityRule, SpecKey,
};
use crate::snapshot::Snapshot;
use crate::validate::ValidSpec;

use super::build::{build, RouteNeed, SpecBuild};
use super::names::{is_owned_name, owned_name, owner_parts, route_owner, stem};
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

pub(crate) fn resolve(
    specs: &[ValidSpec],
    snapshot: &Snapshot,
    removing: &BTreeSet<SpecKey>,
) -> Desired {
    let mut by_key: BTreeMap<SpecKey, &ValidSpec> = BTreeMap::new();
    for s in specs {
        by_key.entry(s.key.clone()).or_insert(s);
    }
    let colliding = colliding_names(&by_key, snapshot);

    let mut failed: Failures = BTreeMap::new();
    // In key order (so `active` below is sorted by key, which `merge` relies on).
    let mut builds: Vec<SpecBuild> = Vec::new();
    for (key, spec) in &by_key {
        let st = stem(key, colliding.contains(&*key.name));
        match build(spec, &by_key, snapshot, st) {
            Ok(b) => builds.push(b),
            Err(e) => {
                failed.insert(key.clone(), e);
            }
        }
    }

    // Each round either succeeds or fails at least one more spec, so this ends.
    loop {
        let active: Vec<usize> = (0..builds.len())
            .filter(|n| !failed.contains_key(&builds[*n].key))
            .collect();
        match merge(&builds, &active, snapshot, removing) {
            Ok(layout) => {
                let mut desired = finish(layout, builds, &active);
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
            .insert(k.namespace.to_string());
    }
    for nsg in snapshot.network_security_groups.values() {
        for r in &nsg.rules {
            let Some((namespace, name)) = r.description.as_deref().and_then(owner_parts) else {
                continue;
            };
            if let Some(set) = namespaces.get_mut(name) {
                // The rule name, lower-cased, starts with `asenet-<name>-`.
                let plain = OWNED_PREFIX.bytes().chain(name.bytes()).chain([b'-']);
                let plain_len = OWNED_PREFIX.len() + name.len() + 1;
                if r.name.len() >= plain_len
                    && r.name
                        .bytes()
                        .zip(plain)
                        .all(|(a, b)| a.to_ascii_lowercase() == b)
                    && !set.contains(namespace)
                {
                    set.insert(namespace.to_string());
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

/// Which priority each contributed rule gets in one NSG, and the NSG without its rules.
struct NsgLayout {
    nsg: DesiredNsg,
    /// `(build, rule, priority)`, in contribution order.
    placed: Vec<(usize, usize, u32)>,
}

/// A successful merge: everything but the owned rules, which [`finish`] moves out of the
/// builds (a merge may be run again after a failure, so it only borrows them).
struct Layout {
    desired: Desired,
    nsgs: Vec<NsgLayout>,
}

/// Priorities 0..=4096 in use in one direction of an NSG. Priorities above `Priority::MAX`
/// (observed default-like rules) never fall inside a band, so they need no bit.
struct Taken([u64; Taken::WORDS]);

impl Taken {
    const WORDS: usize = (crate::model::Priority::MAX as usize) / 64 + 1;
    fn new() -> Self {
        Taken([0; Self::WORDS])
    }
    /// Marks `p`; false when it was already taken (like `BTreeSet::insert`).
    fn insert(&mut self, p: u32) -> bool {
        let Some(word) = self.0.get_mut(p as usize / 64) else {
            return true;
        };
        let bit = 1u64 << (p % 64);
        let fresh = *word & bit == 0;
        *word |= bit;
        fresh
    }
    /// The lowest free priority in `from..=to`.
    fn first_free(&self, from: u32, to: u32) -> Option<u32> {
        let mut p = from;
        while p <= to {
            let word = self.0.get(p as usize / 64)?;
            let free = !word >> (p % 64);
            if free != 0 {
                let q = p + free.trailing_zeros();
                return (q <= to).then_some(q);
            }
            p = (p / 64 + 1) * 64;
        }
        None
    }
}

fn merge(
    builds: &[SpecBuild],
    active: &[usize],
    snapshot: &Snapshot,
    removing: &BTreeSet<SpecKey>,
) -> Result<Layout, Failures> {
    let mut failures: Failures = BTreeMap::new();
    // `active` is in key order: owners found in observed descriptions are looked up in it.
    let is_active = |namespace: &str, name: &str| {
        active
            .binary_search_by(|n| {
                let k = &builds[*n].key;
                (&*k.namespace, &*k.name).cmp(&(namespace, name))
            })
            .is_ok()
    };
    let mut desired = Desired::default();

    // ---- Subnet associations: one spec per subnet (an ASE has a dedicated subnet,
    // domain.md 1.2.6).
    for b in active.iter().map(|n| &builds[*n]) {
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

    // ---- NSGs. Contributions are in `active` order, then rule order: the rules of one
    // spec are contiguous and the specs come in key order.
    let mut by_nsg: BTreeMap<&ResourceId, Vec<(usize, usize)>> = BTreeMap::new();
    for &n in active {
        for (i, r) in builds[n].rules.iter().enumerate() {
            by_nsg.entry(&r.nsg).or_default().push((n, i));
        }
    }
    let mut nsgs = Vec::with_capacity(by_nsg.len());
    for (nsg_id, contribs) in by_nsg {
        let pending = |(n, i): (usize, usize)| (&builds[n], &builds[n].rules[i]);
        let observed = snapshot.network_security_groups.get(nsg_id);
        let observed_rules: &[SecurityRule] = observed.map(|n| n.rules.as_slice()).unwrap_or(&[]);
        // Names of the desired rules, built only if an observed owned rule carries no owner.
        let mut desired_names: Option<BTreeSet<Caseless>> = None;
        // Observed rules that stay as they are: foreign rules, and owned rules of specs
        // not resolved in this run (failed, or not in the input).
        let mut replaceable = |r: &SecurityRule| {
            is_owned_name(&r.name)
                && match r.description.as_deref().and_then(owner_parts) {
                    Some((namespace, name)) => is_active(namespace, name),
                    None => desired_names
                        .get_or_insert_with(|| {
                            contribs
                                .iter()
                                .map(|c| Caseless(pending(*c).1.rule.name.as_str()))
                                .collect()
                        })
                        .contains(&Caseless(&r.name)),
                }
        };
        let mut reserved: Vec<&SecurityRule> = Vec::new();
        let mut previous: BTreeMap<Caseless, &SecurityRule> = BTreeMap::new();
        for r in observed_rules {
            if replaceable(r) {
                previous.insert(Caseless(&r.name), r);
            } else {
                reserved.push(r);
            }
        }

        // Limits (domain.md 2.7), spec by spec in key order.
        let mut rules = reserved.len();
        let mut src: usize = reserved.iter().map(|r| r.source.count()).sum();
        let mut dst: usize = reserved.iter().map(|r| r.destination.count()).sum();
        let mut over: BTreeSet<&SpecKey> = BTreeSet::new();
        for run in contribs.chunk_by(|a, b| a.0 == b.0) {
            let key = &builds[run[0].0].key;
            let r = run.len();
            let s: usize = run.iter().map(|c| pending(*c).1.rule.source.count()).sum();
            let d: usize = run
                .iter()
                .map(|c| pending(*c).1.rule.destination.count())
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
                let (_, pr) = pending(run[0]);
                fail(
                    &mut failures,
                    key,
                    SpecErrorKind::LimitExceeded,
                    &pr.field,
                    nsg_id.to_string(),
                    message,
                );
                over.insert(key);
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
            let mut taken = Taken::new();
            for r in reserved.iter().filter(|r| r.direction == dir) {
                taken.insert(r.priority);
            }
            let mine = || {
                (0..contribs.len()).filter(|n| {
                    let (b, pr) = pending(contribs[*n]);
                    pr.rule.direction == dir && !over.contains(&b.key)
                })
            };
            if !previous.is_empty() {
                for n in mine() {
                    let (_, pr) = pending(contribs[n]);
                    if let Some(o) = previous.get(&Caseless(&pr.rule.name)) {
                        if o.direction == dir
                            && pr.band.contains(o.priority)
                            && taken.insert(o.priority)
                        {
                            priority[n] = Some(o.priority);
                        }
                    }
                }
            }
            for n in mine() {
                if priority[n].is_some() {
                    continue;
                }
                let (b, pr) = pending(contribs[n]);
                match taken.first_free(pr.band.from.get().into(), pr.band.to.get().into()) {
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
                    .map(|c| pending(*c).0)
                    .find(|b| b.nsg == *nsg_id)
                    .and_then(|b| b.location.clone())
            })
            .or_else(|| contribs.iter().find_map(|c| pending(*c).0.location.clone()));
        let placed: Vec<(usize, usize, u32)> = contribs
            .iter()
            .zip(&priority)
            .filter_map(|((n, i), p)| p.map(|p| (*n, *i, p)))
            .collect();
        let mut bands = BTreeMap::new();
        for run in contribs.chunk_by(|a, b| a.0 == b.0) {
            let (b, pr) = pending(run[0]);
            if !over.contains(&b.key) {
                bands.entry(b.key.clone()).or_insert(pr.band);
            }
        }
        nsgs.push(NsgLayout {
            nsg: DesiredNsg {
                id: nsg_id.clone(),
                location,
                rules: Vec::new(),
                bands,
            },
            placed,
        });
    }

    // ---- Route tables.
    let mut by_rt: BTreeMap<_, Vec<&SpecBuild>> = BTreeMap::new();
    for b in active.iter().map(|n| &builds[*n]) {
        if let Some(rt) = &b.route_table {
            by_rt.entry(rt.clone()).or_default().push(b);
        }
    }
    // The specs whose owned routes this plan rewrites: the active ones (their routes are
    // wanted or deleted) and the ones being removed. Any other owned route (of a spec
    // outside the input, or of one that failed) stays as it is, so it counts like a
    // foreign route against the table's limit and may already give a route that an
    // active spec needs (issue 12: never take over or duplicate another spec's route).
    let replanned: BTreeSet<&SpecKey> = active
        .iter()
        .map(|n| &builds[*n].key)
        .chain(removing)
        .collect();
    for (rt_id, bs) in by_rt {
        let observed = snapshot.route_tables.get(&rt_id);
        let foreign: Vec<&Route> = observed
            .map(|o| {
                o.routes
                    .iter()
                    .filter(|r| {
                        !is_owned_name(&r.name)
                            || route_owner(&r.name, replanned.iter().copied()).is_none()
                    })
                    .collect()
            })
            .unwrap_or_default();
        // Routes of specs outside the input that already send a destination to the Internet.
        let kept_internet: Vec<&RouteDestination> = foreign
            .iter()
            .filter(|r| is_owned_name(&r.name) && r.next_hop_type == NextHopType::Internet)
            .map(|r| &r.address_prefix)
            .collect();
        let foreign_tags = foreign
            .iter()
            .filter(|r| matches!(r.address_prefix, RouteDestination::Tag(_)))
            .count();
        let mut routes: Vec<OwnedRoute> = Vec::new();
        let mut service_tags: BTreeMap<String, String> = BTreeMap::new();
        let field = "spec.outbound.forcedTunneling";
        for b in bs.iter().copied() {
            let mut mine: Vec<(RouteDestination, String)> = Vec::new();
            let versions = |t: &str| {
                snapshot
                    .service_tag_version(t)
                    .map(|n| format!(" (changeNumber {n})"))
                    .unwrap_or_default()
            };
            let default_route = || {
                (
                    RouteDestination::Prefix(ipnet::Ipv4Net::default()),
                    "forced tunneling advertises 0.0.0.0/0: default route next hop Internet (domain.md 1.2.7, 1.3.5)".to_string(),
                )
            };
            match &b.route_need {
                None => {}
                Some(RouteNeed::Default) => mine.push(default_route()),
                Some(RouteNeed::Tags { tags, default }) => {
                    if *default {
                        mine.push(default_route());
                    }
                    for t in tags {
                        mine.push((RouteDestination::Tag(t.clone()),
                            format!("service tag {t}{} next hop Internet under forced tunneling (domain.md 1.3.5, 3.3)", versions(t))));
                    }
                }
                Some(RouteNeed::Prefixes {
                    required,
                    advertised,
                    tags,
                    default,
                }) => {
                    if *default {
                        mine.push(default_route());
                    }
                    for t in tags {
                        if let Some(n) = snapshot.service_tag_version(t) {
                            service_tags.insert(t.clone(), n.to_string());
                        }
                    }
                    let with_versions: Vec<String> =
                        tags.iter().map(|t| format!("{t}{}", versions(t))).collect();
                    let budget =
                        MAX_ROUTES.saturating_sub(foreign.len() + routes.len() + mine.len());
                    match tunnel_prefixes(required, advertised, budget) {
                        Ok((v, summarised)) => {
                            let how = if summarised {
                                "summarised to fit the table"
                            } else {
                                "aggregated"
                            };
                            for p in v {
                                mine.push((RouteDestination::Prefix(p),
                                    format!("{} prefixes, {how}, at least as specific as the advertised routes, next hop Internet (domain.md 1.2.7, 1.3.5, 3.4)", with_versions.join(","))));
                            }
                        }
                        Err(n) => {
                            fail(&mut failures, &b.key, SpecErrorKind::LimitExceeded, field, tags.join(","),
                                format!("the required prefixes of {} need at least {n} routes in route table `{rt_id}` but only {budget} fit (400 minus {} foreign and {} other routes; domain.md 3.6)", tags.join(","), foreign.len(), routes.len() + mine.len()));
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
                // Another spec sharing the table already routes this destination the same way
                // (in the input, or outside it with a route that stays).
                if kept_internet.contains(&&dest)
                    || routes.iter().any(|r| {
                        r.route.address_prefix == dest
                            && r.route.next_hop_type == NextHopType::Internet
                    })
                {
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
                service_tags,
            },
        );
    }

    if !failures.is_empty() {
        return Err(failures);
    }
    Ok(Layout { desired, nsgs })
}

/// Moves the owned rules out of the builds of a successful merge.
fn finish(layout: Layout, mut builds: Vec<SpecBuild>, active: &[usize]) -> Desired {
    let Layout { mut desired, nsgs } = layout;

    // ---- Per-spec outcomes.
    for &n in active {
        let b = &mut builds[n];
        let mut touches: BTreeSet<_> = BTreeSet::new();
        touches.insert(b.subnet.clone());
        touches.insert(b.nsg.clone());
        if let Some(rt) = &b.route_table {
            touches.insert(rt.clone());
        }
        for r in &b.rules {
            touches.insert(r.nsg.clone());
        }
        desired.specs.insert(
            b.key.clone(),
            SpecOutcome::Resolved(Resolution {
                internet_addresses: std::mem::take(&mut b.internet_addresses),
                virtual_network_range: b.subnet_range,
                touches,
            }),
        );
    }

    // ---- Owned rules, sorted by direction, then priority.
    for NsgLayout { mut nsg, placed } in nsgs {
        let mut out: Vec<OwnedRule> = Vec::with_capacity(placed.len());
        for (n, i, p) in placed {
            let b = &mut builds[n];
            let pr = &mut b.rules[i];
            let mut rule = std::mem::replace(&mut pr.rule, placeholder_rule());
            rule.priority = p;
            out.push(OwnedRule {
                rule,
                owner: b.key.clone(),
                reason: std::mem::take(&mut pr.reason),
                required: pr.required,
            });
        }
        out.sort_by(|a, b| {
            (a.rule.direction, a.rule.priority).cmp(&(b.rule.direction, b.rule.priority))
        });
        nsg.rules = out;
        desired.network_security_groups.insert(nsg.id.clone(), nsg);
    }
    desired
}

/// What is left in a build once its rule has been moved out (allocates nothing).
fn placeholder_rule() -> SecurityRule {
    SecurityRule {
        name: String::new(),
        priority: 0,
        direction: Direction::Inbound,
        access: crate::model::Access::Allow,
        protocol: crate::model::Protocol::Any,
        source: crate::model::AddressSet::Any,
        source_ports: crate::model::PortSet::any(),
        destination: crate::model::AddressSet::Any,
        destination_ports: crate::model::PortSet::any(),
        description: None,
    }
}
