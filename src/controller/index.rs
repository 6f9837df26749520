//! Which specs depend on which: the mapper that turns a change of one spec into reconciles
//! of the others it affects.
//!
//! A spec S depends on a spec X when S names X in an `environmentRef` (S's rules admit X's
//! addresses, docs/design.md section 1.3), or when S and X contribute to the same NSG or
//! route table (a merged resource is planned whole, so X's change can move S's rules and
//! changes S's status). The relation is computed from the raw spec fields, before
//! validation, so that an invalid spec still wakes up the specs it would affect. Resource
//! ids compare case-insensitively, as ARM compares them (docs/domain.md 2.2).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Weak};

use kube::runtime::reflector::ObjectRef;
use kube::ResourceExt;

use super::context::MemberPrint;
use crate::api::AseConnectivity;

/// The key a spec is known by: `(namespace, name)`.
pub type Key = (String, String);

pub fn key_of(spec: &AseConnectivity) -> Key {
    (
        spec.namespace().unwrap_or_else(|| "default".to_string()),
        spec.name_any(),
    )
}

pub(crate) fn normalise_id(id: &str) -> String {
    id.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// [`normalise_id`] into a reused buffer (no allocation once it is large enough).
fn normalise_into<'b>(id: &str, buf: &'b mut String) -> &'b str {
    buf.clear();
    buf.push_str(id.trim().trim_end_matches('/'));
    buf.make_ascii_lowercase();
    buf
}

/// `(namespace, name)` borrowed from the object (the namespace defaulted as [`key_of`]):
/// compares as [`key_of`] does, without allocating.
pub fn key_ref(spec: &AseConnectivity) -> (&str, &str) {
    (
        spec.metadata.namespace.as_deref().unwrap_or("default"),
        spec.metadata.name.as_deref().unwrap_or_default(),
    )
}

/// The raw ids of the NSGs and route tables a spec contributes to (not normalised).
fn shared_ids(spec: &AseConnectivity) -> impl Iterator<Item = &str> {
    let s = &spec.spec;
    std::iter::once(s.network_security_group.resource_id.as_str())
        .chain(s.route_table.iter().map(|r| r.resource_id.as_str()))
        .chain(
            s.backends
                .iter()
                .map(|b| b.network_security_group.resource_id.as_str()),
        )
}

/// The raw ids of [`linked_resources`] (not normalised, possibly repeated or empty).
fn linked_ids(spec: &AseConnectivity) -> impl Iterator<Item = &str> {
    shared_ids(spec)
        .chain(std::iter::once(spec.spec.subnet.resource_id.as_str()))
        .chain(super::store::rule_parents(spec))
}

/// The `(namespace, name)` of the specs a spec names in `environmentRef`s, borrowed.
pub(crate) fn reference_refs(spec: &AseConnectivity) -> impl Iterator<Item = (&str, &str)> {
    let (ns, _) = key_ref(spec);
    spec.spec
        .inbound
        .iter()
        .flat_map(|i| i.from.iter())
        .filter_map(|src| src.environment_ref.as_ref())
        .map(move |r| (r.namespace.as_deref().unwrap_or(ns), r.name.as_str()))
}

/// The NSGs and route tables a spec contributes to (normalised ids).
pub fn shared_resources(spec: &AseConnectivity) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = shared_ids(spec).map(normalise_id).collect();
    out.remove("");
    out
}

/// The specs a spec names in `environmentRef`s (namespace defaulted to its own).
pub fn references(spec: &AseConnectivity) -> BTreeSet<Key> {
    let (ns, _) = key_of(spec);
    spec.spec
        .inbound
        .iter()
        .flat_map(|i| i.from.iter())
        .filter_map(|src| src.environment_ref.as_ref())
        .map(|r| {
            (
                r.namespace.clone().unwrap_or_else(|| ns.clone()),
                r.name.clone(),
            )
        })
        .collect()
}

/// The specs (other than `changed` itself) to reconcile again because `changed` changed,
/// appeared or went away. Sorted and without duplicates.
///
/// Called for every spec change with the whole store: linear in it, and allocating only for
/// the specs it returns.
pub fn dependents(changed: &AseConnectivity, all: &[Arc<AseConnectivity>]) -> Vec<Key> {
    let me = key_ref(changed);
    let mine = shared_resources(changed);
    let mut buf = String::new();
    let mut out = BTreeSet::new();
    for other in all {
        let key = key_ref(other);
        if key == me {
            continue;
        }
        let refers_to_me = reference_refs(other).any(|r| r == me);
        let shares =
            refers_to_me || shared_ids(other).any(|id| mine.contains(normalise_into(id, &mut buf)));
        if shares {
            out.insert((key.0.to_string(), key.1.to_string()));
        }
    }
    out.into_iter().collect()
}

/// [`dependents`] as object references for `Controller::reconcile_on`.
pub fn dependent_refs(
    changed: &AseConnectivity,
    all: &[Arc<AseConnectivity>],
) -> Vec<ObjectRef<AseConnectivity>> {
    dependents(changed, all)
        .into_iter()
        .map(|(ns, name)| ObjectRef::new(&name).within(&ns))
        .collect()
}

/// The Azure parents a spec links to for planning: [`shared_resources`], its subnet, and
/// the parents its status says it still owns entries in (a spec that moved to another NSG
/// keeps owned rules in the old one until a plan that covers it deletes them). Normalised
/// ids.
pub fn linked_resources(spec: &AseConnectivity) -> BTreeSet<String> {
    let mut out = shared_resources(spec);
    out.insert(normalise_id(&spec.spec.subnet.resource_id));
    // From `status.rules`, or what the reflector store keeps of them (`store::for_store`).
    for parent in super::store::rule_parents(spec) {
        out.insert(normalise_id(parent));
    }
    out.remove("");
    out
}

/// The connected component of `root` in `all`: the specs linked to it, transitively, by a
/// shared NSG, route table or subnet ([`linked_resources`]) or by an `environmentRef` in
/// either direction. `root` itself is always in it (in the version given, which replaces
/// the one in `all`). Every contributor of every NSG or route table the component touches
/// is in it, so merged resources are planned whole. Sorted by key, without duplicates.
///
/// Linear in `all` (plus the component's edges); only `Arc`s are copied.
pub fn component(
    root: &Arc<AseConnectivity>,
    all: &[Arc<AseConnectivity>],
) -> Vec<Arc<AseConnectivity>> {
    component_with_resources(root, all).0
}

/// [`component`] and the Azure parents its members link to ([`component_resources`] of
/// it), from one pass over `all`.
pub fn component_with_resources(
    root: &Arc<AseConnectivity>,
    all: &[Arc<AseConnectivity>],
) -> (Vec<Arc<AseConnectivity>>, BTreeSet<String>) {
    ComponentIndex::default().component_with_resources(root, all)
}

/// Texts numbered in the order first seen.
#[derive(Default)]
struct Interner {
    ids: HashMap<String, u32>,
    texts: Vec<String>,
}

impl Interner {
    fn intern(&mut self, text: &str) -> u32 {
        if let Some(&id) = self.ids.get(text) {
            return id;
        }
        let id = u32::try_from(self.texts.len()).unwrap_or(u32::MAX);
        self.ids.insert(text.to_string(), id);
        self.texts.push(text.to_string());
        id
    }
}

/// What [`component`] needs of one object: its key, the parents it links to and the specs
/// it references, as interned ids.
struct ObjectLinks {
    key: u32,
    resources: Vec<u32>,
    references: Vec<u32>,
}

/// The graph of [`component`]: per resource, the specs linking to it, and per spec, its
/// reference edges (both directions), as adjacency lists over the specs' positions.
fn graph<'l>(
    links: impl ExactSizeIterator<Item = &'l ObjectLinks>,
    spec_of_key: &[usize],
    resources: usize,
) -> (Vec<Vec<usize>>, Vec<Vec<usize>>) {
    let mut by_resource: Vec<Vec<usize>> = vec![Vec::new(); resources];
    let mut edges: Vec<Vec<usize>> = vec![Vec::new(); links.len()];
    for (i, l) in links.enumerate() {
        for &r in &l.resources {
            by_resource[r as usize].push(i);
        }
        for &target in &l.references {
            if let Some(&j) = spec_of_key.get(target as usize) {
                if j != usize::MAX {
                    edges[i].push(j);
                    edges[j].push(i);
                }
            }
        }
    }
    (by_resource, edges)
}

/// [`component_with_resources`] for a caller that asks again and again over a store whose
/// objects mostly stay the same `Arc`s (the controller: every reconcile, over the whole
/// store). Resource ids and keys are interned once, and each object's links are computed
/// once per object version (keyed by the `Arc`'s address; the `Weak` kept with them holds
/// the allocation, so the address is not reused while the entry lives). Same results as
/// the free function.
#[derive(Default)]
pub struct ComponentIndex {
    resources: Interner,
    keys: Interner,
    objects: HashMap<usize, (Weak<AseConnectivity>, Arc<ObjectLinks>)>,
    buf: String,
    /// Every component of the store as [`ComponentIndex::view`] last saw it.
    partition: Option<Partition>,
    /// The stores' version `partition` was computed at ([`super::context::Stores::version`]).
    version: Option<u64>,
}

/// One connected component ([`component`]) of the store, as one version of the store held
/// it: computed once, with every other component, when an object in the store changed, and
/// shared as an `Arc` by the reconciles of all its members until the next change. A resync
/// of a converged fleet changes nothing in the store (no status is written), so each of its
/// reconciles finds its component without building it (issue 14: the component's BFS over
/// the whole store was 41 % of a resync's CPU).
#[derive(Debug)]
pub struct ComponentView {
    /// Sorted by key.
    pub specs: Vec<Arc<AseConnectivity>>,
    /// The members' keys, in the order of `specs`.
    pub keys: Arc<Vec<Key>>,
    /// The Azure parents the members link to (normalised ids): the locks to hold.
    pub parents: Arc<BTreeSet<String>>,
    /// Views of one lineage have the same members with the same fingerprint
    /// (`context::MemberPrint`: generation, deletion, mode): a view that only took newer
    /// versions of objects whose status alone changed keeps its predecessor's lineage, so an
    /// outcome cached for one is valid for the other. A new lineage otherwise.
    pub lineage: u64,
}

/// The source of new lineages (unique within the process).
static LINEAGES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn new_lineage() -> u64 {
    LINEAGES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl ComponentView {
    fn new(specs: Vec<Arc<AseConnectivity>>, parents: BTreeSet<String>) -> Self {
        let keys = Arc::new(specs.iter().map(|s| key_of(s)).collect());
        ComponentView {
            specs,
            keys,
            parents: Arc::new(parents),
            lineage: new_lineage(),
        }
    }
}

/// Every component of one version of the store.
struct Partition {
    /// The addresses of the objects it was computed from, sorted: the version of the store.
    /// The views hold the objects, so no address is reused while this lives.
    addresses: Vec<usize>,
    /// The same addresses in the order the store listed them. A status write replaces an
    /// object in place, so the next listing differs at that position only: comparing in
    /// this order finds the replaced objects without sorting the store (issue 14: the sort
    /// was most of a status-only reconcile's CPU at 5,000 specs).
    order: Vec<usize>,
    views: Vec<Arc<ComponentView>>,
    /// Object address → its component in `views` and its position in the view's `specs`.
    component_of: HashMap<usize, (usize, usize)>,
    /// Interned key → the address of its object, when every key was listed once (`None`
    /// otherwise: two watches listing one spec; [`ComponentIndex::view_after`] then
    /// declines).
    by_key: Option<HashMap<u32, usize>>,
}

impl ComponentIndex {
    fn key_id(&mut self, (namespace, name): (&str, &str)) -> u32 {
        self.buf.clear();
        self.buf.push_str(namespace);
        self.buf.push('/');
        self.buf.push_str(name);
        let text = std::mem::take(&mut self.buf);
        let id = self.keys.intern(&text);
        self.buf = text;
        id
    }

    fn links(&mut self, spec: &Arc<AseConnectivity>) -> Arc<ObjectLinks> {
        let address = Arc::as_ptr(spec) as usize;
        if let Some((weak, links)) = self.objects.get(&address) {
            if std::ptr::eq(weak.as_ptr(), Arc::as_ptr(spec)) && weak.strong_count() > 0 {
                return Arc::clone(links);
            }
        }
        let key = self.key_id(key_ref(spec));
        let mut resources = Vec::new();
        let mut buf = String::new();
        for id in linked_ids(spec) {
            let id = normalise_into(id, &mut buf);
            if !id.is_empty() {
                resources.push(self.resources.intern(id));
            }
        }
        resources.sort_unstable();
        resources.dedup();
        let references = reference_refs(spec)
            .map(|target| self.key_id(target))
            .collect();
        let links = Arc::new(ObjectLinks {
            key,
            resources,
            references,
        });
        self.objects
            .insert(address, (Arc::downgrade(spec), Arc::clone(&links)));
        links
    }

    /// [`component_with_resources`], remembering what it computed for the next call.
    pub fn component_with_resources(
        &mut self,
        root: &Arc<AseConnectivity>,
        all: &[Arc<AseConnectivity>],
    ) -> (Vec<Arc<AseConnectivity>>, BTreeSet<String>) {
        self.forget_dead(all.len());
        // The specs by index, `root` in place of its stored version (it comes last).
        let mut specs: Vec<(&Arc<AseConnectivity>, Arc<ObjectLinks>)> =
            Vec::with_capacity(all.len() + 1);
        let mut spec_of_key: Vec<usize> = Vec::new();
        for spec in all.iter().chain(std::iter::once(root)) {
            let links = self.links(spec);
            let k = links.key as usize;
            if spec_of_key.len() <= k {
                spec_of_key.resize(self.keys.texts.len().max(k + 1), usize::MAX);
            }
            match spec_of_key[k] {
                usize::MAX => {
                    spec_of_key[k] = specs.len();
                    specs.push((spec, links));
                }
                i => specs[i] = (spec, links),
            }
        }
        spec_of_key.resize(self.keys.texts.len(), usize::MAX);
        let start = spec_of_key[self.links(root).key as usize];

        let (by_resource, edges) = graph(
            specs.iter().map(|(_, l)| &**l),
            &spec_of_key,
            self.resources.texts.len(),
        );

        let mut seen = vec![false; specs.len()];
        let mut queue = std::collections::VecDeque::from([start]);
        seen[start] = true;
        let mut member = Vec::new();
        let mut parents = vec![false; by_resource.len()];
        while let Some(i) = queue.pop_front() {
            member.push(i);
            let links = &specs[i].1;
            for &r in &links.resources {
                parents[r as usize] = true;
            }
            let linked = links
                .resources
                .iter()
                .flat_map(|r| by_resource[*r as usize].iter());
            for &j in edges[i].iter().chain(linked) {
                if !seen[j] {
                    seen[j] = true;
                    queue.push_back(j);
                }
            }
        }
        let parents: BTreeSet<String> = parents
            .iter()
            .enumerate()
            .filter(|(_, linked)| **linked)
            .map(|(r, _)| self.resources.texts[r].clone())
            .collect();
        member.sort_by_key(|i| key_ref(specs[*i].0));
        let members = member.into_iter().map(|i| Arc::clone(specs[i].0)).collect();
        (members, parents)
    }

    /// The component of `root` among the live objects of `stored` (every object of the
    /// store, in any order; those being deleted are left out, `root` replaces its stored
    /// version): [`component_with_resources`] of them, as a shared view.
    ///
    /// When `root` is the stored version and not being deleted (every reconcile of an
    /// unchanged spec), the view comes from the partition of the store into components,
    /// recomputed only when the set of stored objects changed since the last call: the
    /// per-call cost is then one pass over the store's addresses, not a BFS over it.
    /// Otherwise (a newer version handed over, a deleted spec's cleanup) the component is
    /// computed for this call alone.
    /// The view of `root` when the partition was computed at the stores' `version` (no
    /// event applied since) and holds `root` itself: the store is not listed. A resync of a
    /// converged fleet changes nothing in the store, so its reconciles cost O(1) each here,
    /// not a pass over the store's objects (issue 14: "component membership maintained
    /// from watch events, not recomputed per reconcile"). `None`: call
    /// [`ComponentIndex::view`].
    pub fn view_of_version(
        &self,
        root: &Arc<AseConnectivity>,
        version: u64,
    ) -> Option<Arc<ComponentView>> {
        if self.version != Some(version) || root.metadata.deletion_timestamp.is_some() {
            return None;
        }
        let partition = self.partition.as_ref()?;
        let &(at, _) = partition.component_of.get(&(Arc::as_ptr(root) as usize))?;
        Some(Arc::clone(&partition.views[at]))
    }

    /// Records the stores' version the last [`ComponentIndex::view`] listed (read before
    /// listing them); `None` (stores not versioned) disables [`Self::view_of_version`].
    pub fn seen_version(&mut self, version: Option<u64>) {
        self.version = version;
    }

    /// How many objects' links the index remembers (live ones, and dead ones not yet
    /// forgotten).
    pub fn remembered(&self) -> usize {
        self.objects.len()
    }

    /// The stores' version the partition is at ([`Self::seen_version`]), if any.
    pub fn version(&self) -> Option<u64> {
        self.partition.as_ref().and(self.version)
    }

    /// `root`'s view at the stores' `version`, which differs from [`Self::version`] only
    /// by the objects `changed` (the stored object of every key an event changed in
    /// between, [`super::context::Stores::changed_between`]), without listing the store:
    /// the partition brought up to date as [`Self::view`] would when a listing shows those
    /// objects replaced in place (issue 14: at 5,000 specs, listing the store after each
    /// status write was a third of the controller's CPU between its last ARM write and the
    /// last status). `None` when that does not apply (an object new to the partition, one
    /// being deleted, its links changed, `root` not the stored version): the caller then
    /// lists the store ([`Self::view`]).
    pub fn view_after(
        &mut self,
        root: &Arc<AseConnectivity>,
        version: u64,
        changed: &[Arc<AseConnectivity>],
    ) -> Option<Arc<ComponentView>> {
        self.version?;
        if changed
            .iter()
            .any(|s| s.metadata.deletion_timestamp.is_some())
        {
            return None;
        }
        let keys: Vec<u32> = changed.iter().map(|s| self.key_id(key_ref(s))).collect();
        let partition = self.partition.as_ref()?;
        let by_key = partition.by_key.as_ref()?;
        let mut gone = Vec::new();
        let mut new = Vec::new();
        for (object, key) in changed.iter().zip(keys) {
            let &was = by_key.get(&key)?;
            if was != Arc::as_ptr(object) as usize {
                gone.push(was);
                new.push(object);
            }
        }
        let mut addresses = partition.addresses.clone();
        let mut order = partition.order.clone();
        for (&was, now) in gone.iter().zip(&new) {
            let now = Arc::as_ptr(now) as usize;
            let at = addresses.binary_search(&was).ok()?;
            addresses.remove(at);
            let at = addresses.binary_search(&now).err()?;
            addresses.insert(at, now);
            let at = order.iter().position(|&a| a == was)?;
            order[at] = now;
        }
        let old = self.partition.take()?;
        let partition = if gone.is_empty() {
            Some(old)
        } else {
            self.updated(old, &gone, new, addresses, order)
        };
        // Every refusal above kept the partition; here it is gone only when `updated`
        // found the components changed, which the listing then recomputes anyway.
        self.partition = partition;
        self.partition.as_ref()?;
        self.version = Some(version);
        self.view_of_version(root, version)
    }

    pub fn view(
        &mut self,
        root: &Arc<AseConnectivity>,
        stored: &[Arc<AseConnectivity>],
    ) -> Arc<ComponentView> {
        let live = |s: &&Arc<AseConnectivity>| s.metadata.deletion_timestamp.is_none();
        let root_address = Arc::as_ptr(root) as usize;
        let objects: Vec<&Arc<AseConnectivity>> = stored.iter().filter(live).collect();
        let order: Vec<usize> = objects.iter().map(|s| Arc::as_ptr(s) as usize).collect();
        let stored_root = live(&root) && order.contains(&root_address);
        if stored_root {
            let fresh = self.partition.as_ref().is_some_and(|p| p.order == order);
            if !fresh {
                self.partition = Some(match self.partition.take() {
                    Some(old) => self.brought_up_to_date(old, &objects, order),
                    None => {
                        let mut addresses = order.clone();
                        addresses.sort_unstable();
                        self.partition_of(&objects, addresses, order)
                    }
                });
            }
            let partition = self.partition.as_ref().expect("set above");
            // Absent: a second object of the same key (two watches that both list it),
            // which the partition left out as the one-by-one computation does.
            if let Some(&(at, _)) = partition.component_of.get(&root_address) {
                return Arc::clone(&partition.views[at]);
            }
        }
        let skip = key_ref(root);
        let candidates: Vec<Arc<AseConnectivity>> = stored
            .iter()
            .filter(live)
            .filter(|s| key_ref(s) != skip)
            .cloned()
            .collect();
        let (specs, parents) = self.component_with_resources(root, &candidates);
        Arc::new(ComponentView::new(specs, parents))
    }

    /// `old` brought to the store version `live` (the live objects, in the store's order
    /// `order`): [`Self::updated`] when only some objects were replaced, else computed anew.
    fn brought_up_to_date(
        &mut self,
        old: Partition,
        live: &[&Arc<AseConnectivity>],
        order: Vec<usize>,
    ) -> Partition {
        let (gone, new, addresses) = match replaced_in_place(&old, &order) {
            Some((positions, addresses)) => (
                positions.iter().map(|&i| old.order[i]).collect(),
                positions.iter().map(|&i| live[i]).collect(),
                addresses,
            ),
            None => {
                let mut addresses = order.clone();
                addresses.sort_unstable();
                let gone: Vec<usize> = old
                    .addresses
                    .iter()
                    .filter(|a| addresses.binary_search(a).is_err())
                    .copied()
                    .collect();
                let new: Vec<&Arc<AseConnectivity>> = live
                    .iter()
                    .filter(|s| {
                        old.addresses
                            .binary_search(&(Arc::as_ptr(s) as usize))
                            .is_err()
                    })
                    .copied()
                    .collect();
                (gone, new, addresses)
            }
        };
        if gone.len() > addresses.len() / 4 + 1 || new.len() != gone.len() {
            return self.partition_of(live, addresses, order);
        }
        match self.updated(old, &gone, new, addresses.clone(), order.clone()) {
            Some(p) => p,
            None => self.partition_of(live, addresses, order),
        }
    }

    /// `old` brought to the store version `addresses` (sorted; `order` in the store's
    /// order) when that version differs from `old`'s only by newer versions (`new`) of the
    /// objects at `gone` whose links ([`linked_resources`] and references) are unchanged,
    /// as after a status write: the same components, each view that holds a replaced object
    /// rebuilt with the new versions (same keys and parents, and the same lineage when no
    /// member's fingerprint changed). `None` when the components may have changed (an
    /// object added, removed or relinked): then the partition is recomputed.
    fn updated(
        &mut self,
        old: Partition,
        gone: &[usize],
        new: Vec<&Arc<AseConnectivity>>,
        addresses: Vec<usize>,
        order: Vec<usize>,
    ) -> Option<Partition> {
        // The replaced versions by key, with where they sit.
        let mut replaced: HashMap<u32, (usize, Arc<AseConnectivity>)> = HashMap::new();
        for address in gone {
            let &(c, at) = old.component_of.get(address)?;
            let object = Arc::clone(&old.views[c].specs[at]);
            let links = self.links(&object);
            replaced.insert(links.key, (*address, object));
        }
        let mut component_of = old.component_of;
        let mut by_key = old.by_key;
        let mut rebuilt: HashMap<usize, (Vec<Arc<AseConnectivity>>, bool)> = HashMap::new();
        for object in new {
            let links = self.links(object);
            let (address, before) = replaced.remove(&links.key)?;
            let previous = self.links(&before);
            if previous.resources != links.resources || previous.references != links.references {
                return None;
            }
            let (c, at) = component_of.remove(&address)?;
            component_of.insert(Arc::as_ptr(object) as usize, (c, at));
            if let Some(by_key) = by_key.as_mut() {
                by_key.insert(links.key, Arc::as_ptr(object) as usize);
            }
            let (specs, same_print) = rebuilt
                .entry(c)
                .or_insert_with(|| (old.views[c].specs.clone(), true));
            specs[at] = Arc::clone(object);
            *same_print &= MemberPrint::of(&before) == MemberPrint::of(object);
        }
        let mut views = old.views;
        for (c, (specs, same_print)) in rebuilt {
            let was = &views[c];
            views[c] = Arc::new(ComponentView {
                specs,
                keys: Arc::clone(&was.keys),
                parents: Arc::clone(&was.parents),
                lineage: if same_print {
                    was.lineage
                } else {
                    new_lineage()
                },
            });
        }
        self.forget_dead(addresses.len());
        Some(Partition {
            addresses,
            order,
            views,
            component_of,
            by_key,
        })
    }

    /// Forgets the links of objects no longer alive anywhere, once there are an eighth
    /// more entries than the `live` objects of the store (amortised: a pass per `live / 8`
    /// new entries). The `Weak` of a forgotten entry held its object's allocation (832
    /// bytes each): with the old 2× bound, a fleet whose every status was written once
    /// held a dead copy of every object's shell (issue 14: ~8 MiB of 10,000 specs).
    fn forget_dead(&mut self, live: usize) {
        if self.objects.len() > live + live / 8 + 64 {
            self.objects.retain(|_, (weak, _)| weak.strong_count() > 0);
        }
    }

    /// Every component of `live` in one pass (the graph of [`component_with_resources`]).
    fn partition_of(
        &mut self,
        live: &[&Arc<AseConnectivity>],
        addresses: Vec<usize>,
        order: Vec<usize>,
    ) -> Partition {
        self.forget_dead(live.len());
        let mut links: Vec<Arc<ObjectLinks>> = live.iter().map(|s| self.links(s)).collect();
        // One object per key, the last one seen (as [`component_with_resources`] keeps it).
        let mut spec_of_key = vec![usize::MAX; self.keys.texts.len()];
        for (i, l) in links.iter().enumerate() {
            spec_of_key[l.key as usize] = i;
        }
        let unique = links
            .iter()
            .enumerate()
            .all(|(i, l)| spec_of_key[l.key as usize] == i);
        let live: Vec<&Arc<AseConnectivity>> = if unique {
            live.to_vec()
        } else {
            let kept: Vec<usize> = (0..live.len())
                .filter(|&i| spec_of_key[links[i].key as usize] == i)
                .collect();
            for (to, &from) in kept.iter().enumerate() {
                spec_of_key[links[from].key as usize] = to;
            }
            links = kept.iter().map(|&i| Arc::clone(&links[i])).collect();
            kept.iter().map(|&i| live[i]).collect()
        };
        let (by_resource, edges) = graph(
            links.iter().map(|l| &**l),
            &spec_of_key,
            self.resources.texts.len(),
        );
        let mut component = vec![usize::MAX; live.len()];
        let mut views = Vec::new();
        let mut component_of = HashMap::with_capacity(live.len());
        let mut queue = std::collections::VecDeque::new();
        let mut linked = vec![false; by_resource.len()];
        for start in 0..live.len() {
            if component[start] != usize::MAX {
                continue;
            }
            let c = views.len();
            component[start] = c;
            queue.push_back(start);
            let mut member = Vec::new();
            let mut touched = Vec::new();
            while let Some(i) = queue.pop_front() {
                member.push(i);
                for &r in &links[i].resources {
                    if !linked[r as usize] {
                        linked[r as usize] = true;
                        touched.push(r);
                    }
                }
                let shared = links[i]
                    .resources
                    .iter()
                    .flat_map(|r| by_resource[*r as usize].iter());
                for &j in edges[i].iter().chain(shared) {
                    if component[j] == usize::MAX {
                        component[j] = c;
                        queue.push_back(j);
                    }
                }
            }
            member.sort_by_key(|i| key_ref(live[*i]));
            for (at, &i) in member.iter().enumerate() {
                component_of.insert(Arc::as_ptr(live[i]) as usize, (c, at));
            }
            let parents = touched
                .iter()
                .map(|r| self.resources.texts[*r as usize].clone())
                .collect();
            let specs = member.into_iter().map(|i| Arc::clone(live[i])).collect();
            views.push(Arc::new(ComponentView::new(specs, parents)));
        }
        let by_key = unique.then(|| {
            links
                .iter()
                .zip(live.iter())
                .map(|(l, s)| (l.key, Arc::as_ptr(s) as usize))
                .collect()
        });
        Partition {
            addresses,
            order,
            views,
            component_of,
            by_key,
        }
    }
}

/// The positions (in `order`, the store's listing now) whose object replaced the one
/// `old` listed there, and the sorted addresses of `order`, when the listing kept its
/// order (same length, every other position unchanged) and no object new at a changed
/// position was in `old` (one that merely moved). `None` otherwise, or when a quarter of
/// the listing changed: then the sets are compared sorted.
fn replaced_in_place(old: &Partition, order: &[usize]) -> Option<(Vec<usize>, Vec<usize>)> {
    if old.order.len() != order.len() {
        return None;
    }
    let positions: Vec<usize> = (0..order.len())
        .filter(|&i| old.order[i] != order[i])
        .collect();
    if positions.len() > order.len() / 4 + 1 {
        return None;
    }
    // Addresses of one listing are distinct, so with every new address absent from `old`,
    // the objects gone are exactly those `old` listed at these positions.
    if positions
        .iter()
        .any(|&i| old.addresses.binary_search(&order[i]).is_ok())
    {
        return None;
    }
    let mut addresses = old.addresses.clone();
    for &i in &positions {
        let at = addresses.binary_search(&old.order[i]).ok()?;
        addresses.remove(at);
    }
    for &i in &positions {
        let at = addresses.binary_search(&order[i]).unwrap_or_else(|at| at);
        addresses.insert(at, order[i]);
    }
    Some((positions, addresses))
}

/// The Azure parents (normalised ids) a set of specs links to: the keys of the per-parent
/// locks a reconcile holds across plan and apply.
pub fn component_resources<'a>(
    specs: impl IntoIterator<Item = &'a Arc<AseConnectivity>>,
) -> BTreeSet<String> {
    specs
        .into_iter()
        .flat_map(|s| linked_resources(s))
        .collect()
}

/// What the controller reacts to in a spec's own watch events: its generation (the spec
/// changed), whether it is being deleted, and whether it carries the asenet finalizer (the
/// finalizer is added by a metadata patch, after which the next reconcile does the work).
/// A change of `status` alone, or of labels/annotations, gives the same value, so the
/// controller's own status writes neither re-reconcile the spec nor wake its dependents.
///
/// A predicate for `WatchStreamExt::predicate_filter`.
pub fn spec_change(spec: &AseConnectivity) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let meta = &spec.metadata;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    meta.generation.hash(&mut h);
    meta.deletion_timestamp.is_some().hash(&mut h);
    meta.finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|f| f == super::FINALIZER))
        .hash(&mut h);
    // Objects without a generation (no API server sets none, but fakes may) compare by
    // their resource version, as `predicates::generation` would let every event through.
    if meta.generation.is_none() {
        meta.resource_version.hash(&mut h);
    }
    Some(h.finish())
}
