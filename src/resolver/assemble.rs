//! Phase 2 of resolving: merge the specs' contributions per Azure resource, allocate
//! priorities, compute routes within the table's budget, enforce Azure's limits.
//!
//! A spec that cannot be placed (its band is full, a limit would be exceeded, its subnet is
//! claimed by another spec) fails alone: it is withdrawn and the merge runs again, so its
//! rules already in Azure (which the diff leaves as they are) keep their priorities and no
//! other spec's rule takes them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use rayon::prelude::*;

use crate::error::{SpecError, SpecErrorKind};
use crate::model::{
    Caseless, Direction, Fnv, NextHopType, ResourceId, Route, RouteDestination, SecurityRule,
    SpecKey,
};
use crate::snapshot::Snapshot;
use crate::validate::ValidSpec;

use super::build::{
    build, spec_index, vnets_by_key, Known, KnownSpecs, PendingRule, RouteNeed, SpecBuild,
};
use super::names::{is_owned_name, owned_name, owner_parts, stem, RouteOwners};
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

/// The fewest specs one parallel task builds: a spec takes a few microseconds, so smaller
/// inputs (a CLI run, a small component) stay on the calling thread.
const BUILDS_PER_TASK: usize = 64;
/// The fewest NSGs one parallel task lays out.
const NSGS_PER_TASK: usize = 32;

pub(crate) fn resolve(
    specs: &[ValidSpec],
    snapshot: &Snapshot,
    removing: &BTreeSet<SpecKey>,
    part: Option<&super::Part>,
) -> Desired {
    let mut by_key: KnownSpecs = BTreeMap::new();
    for s in specs {
        by_key
            .entry(s.key.clone())
            .or_insert_with(|| Known::new(s, snapshot));
    }
    let names = part.map(|p| p.names);
    let colliding = colliding_names(by_key.keys().chain(names.into_iter().flatten()), snapshot);
    let vnets = vnets_by_key(snapshot);
    let index = spec_index(&by_key);

    let mut failed: Failures = BTreeMap::new();
    // In key order (so `active` below is sorted by key, which `merge` relies on). Each
    // spec's build reads only its own input, the other specs and the snapshot: they run on
    // every core (issue 14: "use both cores"; half of resolving a 10,000-spec component is
    // building), and `collect` keeps the key order.
    // Of a part, only its own specs are built; the others given are references
    // (`super::Part`).
    let known: Vec<(&SpecKey, &Known)> = (by_key.iter())
        .filter(|(k, _)| part.is_none_or(|p| p.build.contains(*k)))
        .collect();
    let built: Vec<Result<SpecBuild, Vec<SpecError>>> = known
        .par_iter()
        .with_min_len(BUILDS_PER_TASK)
        .map(|(key, spec)| {
            let st = stem(key, colliding.contains(&*key.name));
            build(spec, &index, snapshot, &vnets, st)
        })
        .collect();
    let mut builds: Vec<SpecBuild> = Vec::with_capacity(built.len());
    for ((key, _), b) in known.iter().zip(built) {
        match b {
            Ok(b) => builds.push(b),
            Err(e) => {
                failed.insert((*key).clone(), e);
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
fn colliding_names<'k>(
    keys: impl Iterator<Item = &'k SpecKey>,
    snapshot: &Snapshot,
) -> BTreeSet<String> {
    let mut namespaces: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for k in keys {
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

/// One merge round over the active builds: the failures it finds, spec by spec.
struct Merge<'a> {
    builds: &'a [SpecBuild],
    /// Indices into `builds`, in key order.
    active: &'a [usize],
    snapshot: &'a Snapshot,
    failures: Failures,
}

/// The observed owned rules a round replaces, by name (Azure compares names ignoring
/// case). Only looked up, never iterated: hashed with the fixed FNV-1a hasher.
type Previous<'a> = std::collections::HashMap<Caseless<'a>, &'a SecurityRule, Fnv>;

/// A contribution: `(build, rule)` indices.
type Contribution = (usize, usize);

/// What a route table keeps as it is: routes asenet does not rewrite in this plan.
struct KeptRoutes<'a> {
    foreign: Vec<&'a Route>,
    /// Destinations already sent to the Internet by owned routes of specs outside the input.
    internet: Vec<&'a RouteDestination>,
    /// Service-tag routes among `foreign`.
    tags: usize,
}

const TUNNEL_FIELD: &str = "spec.outbound.forcedTunneling";

fn merge(
    builds: &[SpecBuild],
    active: &[usize],
    snapshot: &Snapshot,
    removing: &BTreeSet<SpecKey>,
) -> Result<Layout, Failures> {
    let mut m = Merge::new(builds, active, snapshot);
    let subnets = m.subnets();
    // Each NSG is laid out on its own, on every core; the failures are then gathered in NSG
    // order, as one pass over the NSGs records them. The one failure a pass reads back is a
    // full band (a spec fails for it once, in the first NSG where it happens): gathered
    // with the same rule.
    let by_nsg: Vec<_> = m.contributions_by_nsg().into_iter().collect();
    let laid_out: Vec<(NsgLayout, Failures)> = by_nsg
        .par_iter()
        .with_min_len(NSGS_PER_TASK)
        .map(|(nsg_id, contribs)| {
            let mut one = Merge::new(builds, active, snapshot);
            let layout = one.nsg(nsg_id, contribs);
            (layout, one.failures)
        })
        .collect();
    let mut nsgs = Vec::with_capacity(laid_out.len());
    for (layout, failures) in laid_out {
        nsgs.push(layout);
        for (key, errors) in failures {
            let gathered = m.failures.entry(key).or_default();
            for e in errors {
                let band_full = |e: &SpecError| e.kind == SpecErrorKind::BandFull;
                if !(band_full(&e) && gathered.iter().any(band_full)) {
                    gathered.push(e);
                }
            }
        }
    }
    let route_tables = m.route_tables(removing);
    if !m.failures.is_empty() {
        return Err(m.failures);
    }
    let desired = Desired {
        subnets,
        route_tables,
        ..Desired::default()
    };
    Ok(Layout { desired, nsgs })
}

impl<'a> Merge<'a> {
    fn new(builds: &'a [SpecBuild], active: &'a [usize], snapshot: &'a Snapshot) -> Self {
        Merge {
            builds,
            active,
            snapshot,
            failures: BTreeMap::new(),
        }
    }

    fn active_builds(&self) -> impl Iterator<Item = &'a SpecBuild> + 'a {
        let builds = self.builds;
        self.active.iter().map(move |n| &builds[*n])
    }

    /// Whether the spec `namespace/name` (an owner found in an observed description) is
    /// resolved in this round.
    fn is_active(&self, namespace: &str, name: &str) -> bool {
        self.active
            .binary_search_by(|n| {
                let k = &self.builds[*n].key;
                (&*k.namespace, &*k.name).cmp(&(namespace, name))
            })
            .is_ok()
    }

    fn pending(&self, (n, i): Contribution) -> (&'a SpecBuild, &'a PendingRule) {
        (&self.builds[n], &self.builds[n].rules[i])
    }

    /// Subnet associations: one spec per subnet (an ASE has a dedicated subnet,
    /// domain.md 1.2.6).
    fn subnets(&mut self) -> BTreeMap<ResourceId, DesiredSubnet> {
        let mut subnets: BTreeMap<ResourceId, DesiredSubnet> = BTreeMap::new();
        for b in self.active_builds() {
            if let Some(prev) = subnets.get(&b.subnet) {
                fail(&mut self.failures, &b.key, SpecErrorKind::InvalidField, "spec.subnet.resourceId", b.subnet.to_string(),
                    format!("subnet `{}` is already the subnet of spec {}; an ASE needs a dedicated subnet (domain.md 1.2.6)", b.subnet, prev.owner));
                continue;
            }
            subnets.insert(
                b.subnet.clone(),
                DesiredSubnet {
                    id: b.subnet.clone(),
                    network_security_group: b.nsg.clone(),
                    route_table: b.route_table.clone(),
                    owner: b.key.clone(),
                },
            );
        }
        subnets
    }

    /// The rules contributed to each NSG, in `active` order, then rule order: the rules of
    /// one spec are contiguous and the specs come in key order.
    fn contributions_by_nsg(&self) -> BTreeMap<&'a ResourceId, Vec<Contribution>> {
        let mut by_nsg: BTreeMap<&'a ResourceId, Vec<Contribution>> = BTreeMap::new();
        // Runs of rules of one spec land in one NSG: gathered, then added with one lookup
        // (comparing ids, long texts sharing a long prefix, is most of the cost).
        let mut run: Option<(&'a ResourceId, Vec<Contribution>)> = None;
        for &n in self.active {
            for (i, r) in self.builds[n].rules.iter().enumerate() {
                match &mut run {
                    Some((id, v)) if *id == &r.nsg => v.push((n, i)),
                    _ => {
                        if let Some((id, v)) = run.replace((&r.nsg, vec![(n, i)])) {
                            by_nsg.entry(id).or_default().extend(v);
                        }
                    }
                }
            }
        }
        if let Some((id, v)) = run {
            by_nsg.entry(id).or_default().extend(v);
        }
        by_nsg
    }

    /// One NSG: which observed rules stay, which specs fit Azure's limits, and the
    /// priority of every rule of the specs that fit.
    fn nsg(&mut self, nsg_id: &'a ResourceId, contribs: &[Contribution]) -> NsgLayout {
        let observed = self.snapshot.network_security_groups.get(nsg_id);
        let observed_rules: &[Arc<SecurityRule>] =
            observed.map(|n| n.rules.as_slice()).unwrap_or(&[]);
        let (reserved, previous) = self.split_observed(observed_rules, contribs);
        let over = self.check_nsg_limits(nsg_id, contribs, &reserved);
        let mut priority: Vec<Option<u32>> = vec![None; contribs.len()];
        for dir in [Direction::Inbound, Direction::Outbound] {
            let mine: Vec<usize> = (0..contribs.len())
                .filter(|n| {
                    let (b, pr) = self.pending(contribs[*n]);
                    pr.rule.direction == dir && !over.contains(&b.key)
                })
                .collect();
            let mut taken = Taken::new();
            for r in reserved.iter().filter(|r| r.direction == dir) {
                taken.insert(r.priority);
            }
            self.keep_observed_priorities(contribs, &mine, &previous, &mut taken, &mut priority);
            self.take_free_priorities(nsg_id, dir, contribs, &mine, &mut taken, &mut priority);
        }
        let location = observed
            .and_then(|o| o.location.clone())
            .or_else(|| {
                contribs
                    .iter()
                    .map(|c| self.pending(*c).0)
                    .find(|b| b.nsg == *nsg_id)
                    .and_then(|b| b.location.clone())
            })
            .or_else(|| {
                contribs
                    .iter()
                    .find_map(|c| self.pending(*c).0.location.clone())
            });
        let placed: Vec<(usize, usize, u32)> = contribs
            .iter()
            .zip(&priority)
            .filter_map(|((n, i), p)| p.map(|p| (*n, *i, p)))
            .collect();
        let mut bands = BTreeMap::new();
        for run in contribs.chunk_by(|a, b| a.0 == b.0) {
            let (b, pr) = self.pending(run[0]);
            if !over.contains(&b.key) {
                bands.entry(b.key.clone()).or_insert(pr.band);
            }
        }
        NsgLayout {
            nsg: DesiredNsg {
                id: nsg_id.clone(),
                location,
                rules: Vec::new(),
                bands,
            },
            placed,
        }
    }

    /// The observed rules of an NSG that stay as they are (foreign rules, and owned rules
    /// of specs not resolved in this run: failed, or not in the input), and the owned
    /// rules this round replaces, by name.
    fn split_observed(
        &self,
        observed_rules: &'a [Arc<SecurityRule>],
        contribs: &[Contribution],
    ) -> (Vec<&'a SecurityRule>, Previous<'a>) {
        // Names of the desired rules, built only if an observed owned rule carries no owner.
        let mut desired_names: Option<BTreeSet<Caseless>> = None;
        // The rules of one owner come together: its answer is kept for the next rule.
        let mut last: Option<((&str, &str), bool)> = None;
        let mut replaceable = |r: &'a SecurityRule| {
            is_owned_name(&r.name)
                && match r.description.as_deref().and_then(owner_parts) {
                    Some(owner) => match last {
                        Some((o, active)) if o == owner => active,
                        _ => {
                            let active = self.is_active(owner.0, owner.1);
                            last = Some((owner, active));
                            active
                        }
                    },
                    None => desired_names
                        .get_or_insert_with(|| {
                            contribs
                                .iter()
                                .map(|c| Caseless(self.pending(*c).1.rule.name.as_str()))
                                .collect()
                        })
                        .contains(&Caseless(&r.name)),
                }
        };
        let mut reserved: Vec<&SecurityRule> = Vec::new();
        let mut previous = Previous::default();
        for r in observed_rules {
            if replaceable(r) {
                previous.insert(Caseless(&r.name), r);
            } else {
                reserved.push(r);
            }
        }
        (reserved, previous)
    }

    /// Azure's limits on one NSG (domain.md 2.7), spec by spec in key order: the specs
    /// whose rules would exceed one fail, and their rules are left out.
    fn check_nsg_limits(
        &mut self,
        nsg_id: &ResourceId,
        contribs: &[Contribution],
        reserved: &[&SecurityRule],
    ) -> BTreeSet<&'a SpecKey> {
        let mut rules = reserved.len();
        let mut src: usize = reserved.iter().map(|r| r.source.count()).sum();
        let mut dst: usize = reserved.iter().map(|r| r.destination.count()).sum();
        let mut over: BTreeSet<&SpecKey> = BTreeSet::new();
        for run in contribs.chunk_by(|a, b| a.0 == b.0) {
            let key = &self.builds[run[0].0].key;
            let r = run.len();
            let s: usize = run
                .iter()
                .map(|c| self.pending(*c).1.rule.source.count())
                .sum();
            let d: usize = run
                .iter()
                .map(|c| self.pending(*c).1.rule.destination.count())
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
                let (_, pr) = self.pending(run[0]);
                fail(
                    &mut self.failures,
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
        over
    }

    /// First every rule that keeps its observed priority (stable when other rules come or
    /// go) ...
    fn keep_observed_priorities(
        &self,
        contribs: &[Contribution],
        mine: &[usize],
        previous: &Previous,
        taken: &mut Taken,
        priority: &mut [Option<u32>],
    ) {
        if previous.is_empty() {
            return;
        }
        for &n in mine {
            let (_, pr) = self.pending(contribs[n]);
            if let Some(o) = previous.get(&Caseless(&pr.rule.name)) {
                if o.direction == pr.rule.direction
                    && pr.band.contains(o.priority)
                    && taken.insert(o.priority)
                {
                    priority[n] = Some(o.priority);
                }
            }
        }
    }

    /// ... then each new rule takes the lowest free priority of its band; a spec whose
    /// band is full fails (once).
    fn take_free_priorities(
        &mut self,
        nsg_id: &ResourceId,
        dir: Direction,
        contribs: &[Contribution],
        mine: &[usize],
        taken: &mut Taken,
        priority: &mut [Option<u32>],
    ) {
        for &n in mine {
            if priority[n].is_some() {
                continue;
            }
            let (b, pr) = self.pending(contribs[n]);
            if let Some(p) = taken.first_free(pr.band.from.get().into(), pr.band.to.get().into()) {
                taken.insert(p);
                priority[n] = Some(p);
                continue;
            }
            let band = format!("{}-{}", pr.band.from.get(), pr.band.to.get());
            if !self
                .failures
                .get(&b.key)
                .is_some_and(|e| e.iter().any(|e| e.kind == SpecErrorKind::BandFull))
            {
                fail(&mut self.failures, &b.key, SpecErrorKind::BandFull, &format!("{}.priorities", pr.field), band.clone(),
                    format!("no free {dir:?} priority left in band {band} of NSG `{nsg_id}` for rule `{}` (other rules hold the rest)", pr.rule.name));
            }
        }
    }

    /// The route tables of the active specs.
    fn route_tables(
        &mut self,
        removing: &BTreeSet<SpecKey>,
    ) -> BTreeMap<ResourceId, DesiredRouteTable> {
        let mut by_rt: BTreeMap<_, Vec<&SpecBuild>> = BTreeMap::new();
        for b in self.active_builds() {
            if let Some(rt) = &b.route_table {
                by_rt.entry(rt.clone()).or_default().push(b);
            }
        }
        // The specs whose owned routes this plan rewrites: the active ones (their routes are
        // wanted or deleted) and the ones being removed. Any other owned route (of a spec
        // outside the input, or of one that failed) stays as it is, so it counts like a
        // foreign route against the table's limit and may already give a route that an
        // active spec needs (issue 12: never take over or duplicate another spec's route).
        let replanned = RouteOwners::new(self.active_builds().map(|b| &b.key).chain(removing));
        let mut out = BTreeMap::new();
        for (rt_id, bs) in by_rt {
            let table = self.route_table(rt_id.clone(), &bs, &replanned);
            out.insert(rt_id, table);
        }
        out
    }

    /// One route table: the routes of each spec sharing it, in key order, each spec
    /// checked against the table's limits with the routes before it.
    fn route_table(
        &mut self,
        rt_id: ResourceId,
        bs: &[&SpecBuild],
        replanned: &RouteOwners,
    ) -> DesiredRouteTable {
        let observed = self.snapshot.route_tables.get(&rt_id);
        let kept = kept_routes(observed.map(|o| o.routes.as_slice()), replanned);
        let mut routes: Vec<OwnedRoute> = Vec::new();
        let mut service_tags: BTreeMap<String, String> = BTreeMap::new();
        for b in bs.iter().copied() {
            let Some(mine) = self.wanted_routes(b, &rt_id, &kept, routes.len(), &mut service_tags)
            else {
                continue;
            };
            if self.check_route_limits(b, &rt_id, &kept, &routes, &mine) {
                add_routes(&mut routes, b, mine, &kept);
            }
        }
        routes.sort_by(|a, b| a.route.name.cmp(&b.route.name));
        let location = observed
            .and_then(|o| o.location.clone())
            .or_else(|| bs.iter().find_map(|b| b.location.clone()));
        DesiredRouteTable {
            id: rt_id,
            location,
            routes,
            service_tags,
        }
    }

    /// The routes one spec needs under forced tunneling (destination, reason), or `None`
    /// when its prefixes cannot fit the table (the spec fails). Records the change numbers
    /// of the service tags whose prefixes it routes.
    fn wanted_routes(
        &mut self,
        b: &SpecBuild,
        rt_id: &ResourceId,
        kept: &KeptRoutes,
        others: usize,
        service_tags: &mut BTreeMap<String, String>,
    ) -> Option<Vec<(RouteDestination, String)>> {
        let snapshot = self.snapshot;
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
                let foreign = kept.foreign.len();
                let budget = MAX_ROUTES.saturating_sub(foreign + others + mine.len());
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
                        fail(&mut self.failures, &b.key, SpecErrorKind::LimitExceeded, TUNNEL_FIELD, tags.join(","),
                            format!("the required prefixes of {} need at least {n} routes in route table `{rt_id}` but only {budget} fit (400 minus {foreign} foreign and {} other routes; domain.md 3.6)", tags.join(","), others + mine.len()));
                        return None;
                    }
                }
            }
        }
        Some(mine)
    }

    /// Whether one spec's routes fit the table beside the kept routes and those of the
    /// specs before it (domain.md 3.3, 3.6); if not, the spec fails.
    fn check_route_limits(
        &mut self,
        b: &SpecBuild,
        rt_id: &ResourceId,
        kept: &KeptRoutes,
        routes: &[OwnedRoute],
        mine: &[(RouteDestination, String)],
    ) -> bool {
        let new_tags = mine
            .iter()
            .filter(|(d, _)| matches!(d, RouteDestination::Tag(_)))
            .count();
        let existing_tags = routes
            .iter()
            .filter(|r| matches!(r.route.address_prefix, RouteDestination::Tag(_)))
            .count();
        if kept.tags + existing_tags + new_tags > MAX_TAG_ROUTES {
            fail(&mut self.failures, &b.key, SpecErrorKind::LimitExceeded, TUNNEL_FIELD, rt_id.to_string(),
                format!("route table `{rt_id}` would hold more than {MAX_TAG_ROUTES} service-tag routes (domain.md 3.3)"));
            return false;
        }
        if kept.foreign.len() + routes.len() + mine.len() > MAX_ROUTES {
            fail(&mut self.failures, &b.key, SpecErrorKind::LimitExceeded, TUNNEL_FIELD, rt_id.to_string(),
                format!("route table `{rt_id}` would hold more than {MAX_ROUTES} routes (domain.md 3.6)"));
            return false;
        }
        true
    }
}

/// The observed routes of a table that this plan does not rewrite: foreign routes, and
/// owned routes of specs outside `replanned`.
fn kept_routes<'a>(observed: Option<&'a [Route]>, replanned: &RouteOwners) -> KeptRoutes<'a> {
    let foreign: Vec<&Route> = observed
        .unwrap_or_default()
        .iter()
        .filter(|r| !is_owned_name(&r.name) || replanned.owner(&r.name).is_none())
        .collect();
    let internet = foreign
        .iter()
        .filter(|r| is_owned_name(&r.name) && r.next_hop_type == NextHopType::Internet)
        .map(|r| &r.address_prefix)
        .collect();
    let tags = foreign
        .iter()
        .filter(|r| matches!(r.address_prefix, RouteDestination::Tag(_)))
        .count();
    KeptRoutes {
        foreign,
        internet,
        tags,
    }
}

/// Adds one spec's routes, named after the spec, except those another spec sharing the
/// table already routes the same way (in the input, or outside it with a route that stays).
fn add_routes(
    routes: &mut Vec<OwnedRoute>,
    b: &SpecBuild,
    mine: Vec<(RouteDestination, String)>,
    kept: &KeptRoutes,
) {
    for (dest, reason) in mine {
        if kept.internet.contains(&&dest)
            || routes.iter().any(|r| {
                r.route.address_prefix == dest && r.route.next_hop_type == NextHopType::Internet
            })
        {
            continue;
        }
        let what = match &dest {
            RouteDestination::Prefix(p) if p.prefix_len() == 0 => "internet-default".to_string(),
            RouteDestination::Prefix(p) => format!("{}-{}", p.addr(), p.prefix_len()),
            RouteDestination::Tag(t) => format!("tag-{t}"),
        };
        routes.push(OwnedRoute {
            route: Arc::new(Route {
                name: owned_name(&b.stem, &what),
                address_prefix: dest,
                next_hop_type: NextHopType::Internet,
                next_hop_ip_address: None,
            }),
            owner: b.key.clone(),
            reason: reason.into(),
        });
    }
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
        // A spec's rules come in runs per NSG: each run's NSG inserted once.
        let mut last: Option<&ResourceId> = None;
        for r in &b.rules {
            if last != Some(&r.nsg) {
                touches.insert(r.nsg.clone());
                last = Some(&r.nsg);
            }
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
    let placeholder = Arc::new(placeholder_rule());
    for NsgLayout { mut nsg, placed } in nsgs {
        let mut out: Vec<OwnedRule> = Vec::with_capacity(placed.len());
        for (n, i, p) in placed {
            let b = &mut builds[n];
            let pr = &mut b.rules[i];
            let mut rule = std::mem::replace(&mut pr.rule, Arc::clone(&placeholder));
            // A rule shared with the snapshot (`Builder::shared_with_observed`) is copied
            // only when its priority changes; a new one is the build's only `Arc`, so
            // `make_mut` sets its priority in place.
            if rule.priority != p {
                Arc::make_mut(&mut rule).priority = p;
            }
            out.push(OwnedRule {
                rule,
                owner: b.key.clone(),
                reason: Arc::clone(&pr.reason),
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

/// What is left in a build once its rule has been moved out (one, shared by all).
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
