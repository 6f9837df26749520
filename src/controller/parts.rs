//! A component planned in parts (issue 14's memory: a component of 10,000 specs planned
//! whole holds its ~200,000 rules, their plan and the snapshot they are diffed against at
//! once, ~260 MiB).
//!
//! A part is closed under sharing: the specs linked by an NSG, a route table or a subnet
//! they contribute to, or by a parent their status says they still own entries in
//! ([`super::index::linked_resources`]), are always in one part. Then nothing a spec of
//! another part does changes a part's resources, and resolving the part with the specs it
//! names in `environmentRef`s as references gives what resolving the whole component gives
//! for them (`resolver::Part`; tests/it/parts.rs checks it).
//!
//! Parts are planned and written one after the other. Each VNet's subnets are written one
//! at a time (NRP serialises the operations of one VNet, docs/domain.md 4.5), which is the
//! longest chain of writes of a large fleet: a part holding all the subnets of some VNets
//! would make each part wait for whole chains. So the groups of linked specs are ranked
//! within their VNet (the first group of each VNet, then the second...) and parts are cut
//! in that order: each part carries a share of every VNet's chain, and the chains of all
//! the parts add up to the chain of the whole.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use super::index::{key_ref, linked_resources, reference_refs};
use crate::api::AseConnectivity;
use crate::diff::{PartOf, Scope};
use crate::error::SpecError;
use crate::model::SpecKey;

/// The parts of a component (`specs` sorted by key, as `ComponentView::specs`): positions
/// in `specs`, each part sorted, every position in exactly one part. One part when the
/// component has at most `max` specs or `max` is 0. A part grows past `max` only when
/// one group of linked specs is larger.
pub fn parts(specs: &[Arc<AseConnectivity>], max: usize) -> Vec<Vec<usize>> {
    if max == 0 || specs.len() <= max {
        return vec![(0..specs.len()).collect()];
    }
    // Union-find over the positions, by the parents they link to.
    let mut up: Vec<usize> = (0..specs.len()).collect();
    fn root(up: &mut [usize], mut i: usize) -> usize {
        while up[i] != i {
            up[i] = up[up[i]];
            i = up[i];
        }
        i
    }
    let mut first_of: HashMap<String, usize> = HashMap::new();
    for (i, s) in specs.iter().enumerate() {
        for id in linked_resources(s) {
            match first_of.get(&id) {
                Some(&j) => {
                    let (a, b) = (root(&mut up, i), root(&mut up, j));
                    up[a.max(b)] = a.min(b);
                }
                None => {
                    first_of.insert(id, i);
                }
            }
        }
    }
    drop(first_of);
    // The groups, in the order of their first member.
    let mut group_of: HashMap<usize, usize> = HashMap::new();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for i in 0..specs.len() {
        let r = root(&mut up, i);
        let g = *group_of.entry(r).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push(i);
    }
    // Each group's rank within the VNet of its first member's subnet.
    let mut seen_in_vnet: HashMap<String, usize> = HashMap::new();
    let mut ranked: Vec<(usize, usize)> = groups
        .iter()
        .enumerate()
        .map(|(g, members)| {
            let vnet = vnet_of(&specs[members[0]].spec.subnet.resource_id);
            let rank = seen_in_vnet.entry(vnet).or_default();
            *rank += 1;
            (*rank, g)
        })
        .collect();
    ranked.sort_unstable();
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    for (_, g) in ranked {
        let members = std::mem::take(&mut groups[g]);
        if !current.is_empty() && current.len() + members.len() > max {
            out.push(std::mem::take(&mut current));
        }
        current.extend(members);
    }
    if !current.is_empty() {
        out.push(current);
    }
    for p in &mut out {
        p.sort_unstable();
    }
    out
}

/// The VNet of a subnet id (normalised): the id up to `/subnets/`; the whole id when it
/// names no subnet.
fn vnet_of(subnet: &str) -> String {
    let id = subnet.trim().trim_end_matches('/').to_ascii_lowercase();
    match id.find("/subnets/") {
        Some(at) => id[..at].to_string(),
        None => id,
    }
}

/// `part` and the members its specs name in `environmentRef`s (the references a part is
/// resolved with): positions in `specs`, sorted.
pub fn with_references(specs: &[Arc<AseConnectivity>], part: &[usize]) -> Vec<usize> {
    let position: HashMap<(&str, &str), usize> = (specs.iter().enumerate())
        .map(|(i, s)| (key_ref(s), i))
        .collect();
    let mut out: Vec<usize> = part.to_vec();
    for &i in part {
        out.extend(reference_refs(&specs[i]).filter_map(|k| position.get(&k).copied()));
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// What each part is planned with: its specs and the members they reference, and `scope`
/// (the whole component's, which says whose entries are whose) narrowed to the part for
/// what is read and resolved (`Scope::part`).
pub fn inputs(
    specs: &[Arc<AseConnectivity>],
    scope: &Scope,
    parts: &[Vec<usize>],
) -> Vec<(Vec<Arc<AseConnectivity>>, Scope)> {
    let names = Arc::new(valid_keys(specs, &scope.refused));
    let environments = crate::diff::ReadEnvironments::default();
    (parts.iter())
        .map(|part| {
            let given = (with_references(specs, part).into_iter())
                .map(|i| specs[i].clone())
                .collect();
            let build = part.iter().map(|&i| specs[i].spec_key()).collect();
            let of = PartOf {
                build,
                names: Arc::clone(&names),
                environments: environments.clone(),
            };
            (given, scope.clone().with_part(Arc::new(of)))
        })
        .collect()
}

/// The keys of the members that validate and are not refused: the specs a whole plan of
/// the component resolves, whose names every part needs (`resolver::Part::names`).
/// Validated a slice at a time, so the validated specs of the whole component are never
/// held at once; the keys of a component are unique, which is all `validate_all` checks
/// across specs.
fn valid_keys(
    specs: &[Arc<AseConnectivity>],
    refused: &BTreeMap<SpecKey, Vec<SpecError>>,
) -> BTreeSet<SpecKey> {
    const SLICE: usize = 1000;
    let mut out = BTreeSet::new();
    for slice in specs.chunks(SLICE) {
        let (valid, _) = crate::validate::validate_all(slice);
        out.extend(
            valid
                .into_iter()
                .map(|v| v.key)
                .filter(|k| !refused.contains_key(k)),
        );
    }
    out
}
