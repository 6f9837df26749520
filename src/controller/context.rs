//! The one `Context` every reconcile shares (the kube-rs/controller-rs shape): the kube
//! client, the reflector stores of all specs, the engine (the pipeline), the event
//! recorder, metrics, leadership and settings.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::runtime::events::Reporter;
use kube::runtime::reflector::Store;
use kube::Client;

use super::decide::{Parts, Withheld};
use super::engine::{Engine, Planned};
use super::events::EventRecorder;
use super::index::{key_of, ComponentView, Key};
use super::leader::Leadership;
use super::metrics::Metrics;
use super::tenancy::TenancyStores;
use crate::api::{AseConnectivity, Mode};
use crate::diff::{ResourcePlan, Scope};
use crate::error::SpecError;
use crate::model::{ResourceId, SpecKey};
use crate::pipeline;
use crate::pipeline::SnapshotDigest;
use crate::tenancy::TenancyMode;

/// The field manager of every write the controller makes (status, finalizer).
pub const FIELD_MANAGER: &str = "asenet";

/// The reflector stores of every watched namespace (one store when watching the cluster),
/// and those of the tenancy objects when tenancy is enforced.
#[derive(Clone, Default)]
pub struct Stores(
    Vec<Store<AseConnectivity>>,
    Option<TenancyStores>,
    Option<Arc<Versions>>,
);

/// How many applied events [`Versions`] remembers the key of.
const CHANGES_KEPT: usize = 1024;

/// The stores' version (the number of watch events applied) and the keys the last 1,024
/// events (`CHANGES_KEPT`) changed.
#[derive(Default)]
pub struct Versions {
    version: std::sync::atomic::AtomicU64,
    log: Mutex<ChangeLog>,
}

#[derive(Default)]
struct ChangeLog {
    /// The version the first entry of `keys` made.
    first: u64,
    /// Per applied event, the key of the object it stored (`Apply`), or `None` for any
    /// other event (a deletion, a relist): a change the log cannot describe by key.
    keys: std::collections::VecDeque<Option<Key>>,
}

impl Stores {
    pub fn new(stores: Vec<Store<AseConnectivity>>) -> Self {
        Stores(stores, None, None)
    }

    /// These stores with a version that the wiring of their reflectors bumps after every
    /// event it applied ([`Stores::applied_event`]): a reconcile of an unchanged store then finds
    /// its component without listing the store ([`Stores::version`]). Without it, every
    /// reconcile lists the store (O(specs) per reconcile, O(specs²) per resync).
    pub fn versioned(mut self) -> Self {
        self.2 = Some(Arc::default());
        self
    }

    /// Called by the wiring after its reflector applied `event` to a store: the version
    /// moves on, and the key of an `Apply` event is remembered for
    /// [`Stores::changed_between`].
    pub fn applied_event(&self, event: &kube::runtime::watcher::Event<AseConnectivity>) {
        match event {
            kube::runtime::watcher::Event::Apply(obj) => self.applied_change(Some(key_of(obj))),
            _ => self.applied_change(None),
        }
    }

    fn applied_change(&self, key: Option<Key>) {
        let Some(v) = &self.2 else {
            return;
        };
        let mut log = v.log.lock().unwrap_or_else(|e| e.into_inner());
        // Under the log's lock, so an entry and its version are seen together.
        let version = v.version.fetch_add(1, std::sync::atomic::Ordering::AcqRel) + 1;
        if log.keys.is_empty() {
            log.first = version;
        }
        log.keys.push_back(key);
        if log.keys.len() > CHANGES_KEPT {
            log.keys.pop_front();
            log.first += 1;
        }
    }

    /// The keys the events after version `from` up to `to` stored, each once, when every
    /// one of those events was an `Apply` still in the log; `None` otherwise.
    pub fn changed_between(&self, from: u64, to: u64) -> Option<Vec<Key>> {
        let v = self.2.as_ref()?;
        let log = v.log.lock().unwrap_or_else(|e| e.into_inner());
        if from >= to || from + 1 < log.first {
            return None;
        }
        let start = usize::try_from(from + 1 - log.first).ok()?;
        let end = usize::try_from(to + 1 - log.first).ok()?;
        if end > log.keys.len() {
            return None;
        }
        let mut keys: Vec<Key> = Vec::with_capacity(end - start);
        for key in log.keys.range(start..end) {
            keys.push(key.clone()?);
        }
        keys.sort_unstable();
        keys.dedup();
        Some(keys)
    }

    /// The stored object of `key`, from whichever store holds it.
    pub fn get(&self, (namespace, name): &Key) -> Option<Arc<AseConnectivity>> {
        let reference = kube::runtime::reflector::ObjectRef::new(name).within(namespace);
        self.0.iter().find_map(|s| s.get(&reference))
    }

    /// The stores' version, when they are versioned: equal versions, read before the
    /// objects, mean no applied event in between.
    pub fn version(&self) -> Option<u64> {
        self.2
            .as_ref()
            .map(|v| v.version.load(std::sync::atomic::Ordering::Acquire))
    }

    /// These stores with the tenancy objects' stores (`--tenancy enforce`).
    pub fn with_tenancy(mut self, tenancy: TenancyStores) -> Self {
        self.1 = Some(tenancy);
        self
    }

    pub fn tenancy(&self) -> Option<&TenancyStores> {
        self.1.as_ref()
    }

    /// Every spec in every store, sorted by namespace/name (deterministic plans). Only the
    /// `Arc`s are copied, never the objects.
    pub fn all(&self) -> Vec<Arc<AseConnectivity>> {
        let mut all = self.objects();
        all.sort_by(|a, b| super::index::key_ref(a).cmp(&super::index::key_ref(b)));
        all
    }

    /// Every spec in every store, in no particular order (no sort: for a caller that
    /// does not need one).
    pub fn objects(&self) -> Vec<Arc<AseConnectivity>> {
        match self.0.as_slice() {
            // One store (watching the cluster): its listing as it is, not copied again.
            [one] => one.state(),
            many => many.iter().flat_map(|s| s.state()).collect(),
        }
    }

    /// Resolves once every store has seen its initial list. Each store's readiness is a
    /// one-shot that wakes a single waiter, and kube-runtime's `Controller` waits on it: do
    /// not wait here while a `Controller` runs on the same store (`controller::run` watches
    /// its streams for `InitDone` instead).
    pub async fn wait_until_ready(&self) -> bool {
        for s in &self.0 {
            if s.wait_until_ready().await.is_err() {
                return false;
            }
        }
        match &self.1 {
            Some(t) => t.wait_until_ready().await,
            None => true,
        }
    }
}

/// Controller settings (from `asenet controller` flags).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Requeue interval of a spec whose reconcile succeeded: re-observes Azure, catches
    /// drift and VIP changes, writes nothing when in sync.
    pub resync: Duration,
    /// Whether specs may write only what the tenancy objects allow their namespace
    /// (`controller::tenancy`). Default `off`, as the `--tenancy` flag's; the chart
    /// installs with `enforce` (docs/operator.md, "Tenancy").
    pub tenancy: TenancyMode,
    /// A component of more specs than this is planned and written in parts of about this
    /// many (`controller::index::parts`), one after the other, so the whole component's
    /// rules are never in memory at once (issue 14's memory; 0: always whole, the
    /// default: [`DEFAULT_PLAN_PART_SPECS`]).
    pub plan_part_specs: usize,
}

/// [`Settings::plan_part_specs`] by default: 0, every component planned whole. Parts hold
/// less memory (10,000 specs in one component in parts of 2,000: a high-water mark of
/// ~315 MiB against ~400) but each part lists the resource groups it reads again and a
/// change plans every part: at 10,000 specs a re-plan of the component takes ~1.7× the CPU
/// per spec of one of 1,000 (issue 14's limit is 1.5×; docs/benchmarks.md, "Eighteenth
/// session"). Operators short of memory set it (the chart's `controller.planPartSpecs`).
pub const DEFAULT_PLAN_PART_SPECS: usize = 0;

impl Default for Settings {
    fn default() -> Self {
        Settings {
            resync: Duration::from_secs(600),
            tenancy: TenancyMode::Off,
            plan_part_specs: DEFAULT_PLAN_PART_SPECS,
        }
    }
}

pub struct Context {
    pub client: Client,
    pub stores: Stores,
    pub engine: Arc<dyn Engine>,
    pub recorder: EventRecorder,
    pub metrics: Arc<Metrics>,
    pub leadership: Leadership,
    pub settings: Settings,
    /// Consecutive transient failures per spec, for the backoff of `error_policy`.
    pub(crate) failures: Mutex<HashMap<Key, u32>>,
    /// Single flight per Azure parent: a reconcile holds the locks of every parent its
    /// component links to across plan and apply.
    pub locks: ParentLocks,
    /// The last successful outcome of each connected component: one plan per component,
    /// shared by all its specs until an input changes or the resync interval passes.
    pub outcomes: OutcomeCache,
    /// What every reconcile's component computation over the whole store can reuse from
    /// the last one (interned ids, per-object links).
    pub(crate) components: Mutex<super::index::ComponentIndex>,
}

/// What a component's plan depends on, per member: the fields a change of which makes the
/// cached outcome stale. The status is not part of it (the controller writes it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberPrint {
    pub key: Key,
    pub generation: Option<i64>,
    pub deleting: bool,
    pub mode: Mode,
    /// A hash of the spec, only for objects without a generation (fakes).
    pub spec_hash: Option<u64>,
    /// The member's tenancy refusals ([`fingerprint_in`]): a grant given or revoked makes
    /// the outcome stale.
    pub refused: Vec<SpecError>,
}

impl MemberPrint {
    pub fn of(spec: &AseConnectivity) -> Self {
        use std::hash::{Hash, Hasher};
        let generation = spec.metadata.generation;
        let spec_hash = generation.is_none().then(|| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            serde_json::to_string(&spec.spec)
                .unwrap_or_default()
                .hash(&mut h);
            h.finish()
        });
        MemberPrint {
            key: key_of(spec),
            generation,
            deleting: spec.metadata.deletion_timestamp.is_some(),
            mode: spec.spec.mode,
            spec_hash,
            refused: Vec::new(),
        }
    }
}

/// The fingerprint of a component: its members' prints, sorted by key.
pub fn fingerprint<S: std::borrow::Borrow<AseConnectivity>>(specs: &[S]) -> Vec<MemberPrint> {
    let mut print: Vec<MemberPrint> = specs.iter().map(|s| MemberPrint::of(s.borrow())).collect();
    print.sort_by(|a, b| a.key.cmp(&b.key));
    print
}

/// The fingerprint of a component planned in `scope`: [`fingerprint`] with each member's
/// tenancy refusals (`scope.refused`).
pub fn fingerprint_in<S: std::borrow::Borrow<AseConnectivity>>(
    specs: &[S],
    scope: &Scope,
) -> Vec<MemberPrint> {
    let mut print = fingerprint(specs);
    if !scope.refused.is_empty() {
        for p in &mut print {
            let key = SpecKey::new(p.key.0.clone(), p.key.1.clone());
            if let Some(errors) = scope.refused.get(&key) {
                p.refused = errors.clone();
            }
        }
    }
    print
}

/// The resources of `plan` that a spec in `read_only` withholds ([`pipeline::withheld_by`]).
pub(crate) fn withheld<'a>(
    plan: &[ResourcePlan],
    specs: impl IntoIterator<Item = &'a AseConnectivity>,
) -> Withheld {
    let read_only = pipeline::read_only_specs(specs);
    plan.iter()
        .map(|r| (r.id.clone(), pipeline::withheld_by(r, &read_only)))
        .filter(|(_, by)| !by.is_empty())
        .collect()
}

/// A component's outcome as every member's report reads it: the plan after the writes, the
/// resources a contributor not in mode `Apply` withholds, and the plan indexed by spec.
/// Computed once per planned outcome, so a member's report costs its own part.
pub struct Shared {
    /// What reports read of the planned outcome ([`Shared::new`]): no snapshot, no desired
    /// parents (their owned entries are in `parts`), no kept or foreign entries in the plan.
    pub planned: Planned,
    pub withheld: Withheld,
    pub parts: Parts,
}

impl Shared {
    /// `planned` of the component `specs`, without what no report reads: it is held for
    /// the resync interval, and a component of 10,000 specs holds ~200,000 rules in each of
    /// the snapshot, the desired parents and the plan's kept entries (issue 14's memory).
    ///
    /// Reports ([`decide::decide`](super::decide::decide)) read, of a member's resources,
    /// the changes still pending, who withholds them, and the conflicts, and of the desired
    /// state the per-spec outcomes. So the plan keeps only the resources with a change or a
    /// conflict (a converged component keeps none of its ~31,000), without their kept and
    /// foreign entries, and `withheld` only those with a change.
    pub fn new(mut planned: Planned, specs: &[Arc<AseConnectivity>]) -> Self {
        // Released before the outcome is indexed; nothing writes from a cached outcome.
        planned.snapshot = Default::default();
        let resources = &mut planned.plan.resources;
        resources.retain(|r| r.has_changes() || !r.conflicts.is_empty());
        resources.shrink_to_fit();
        resources
            .iter_mut()
            .for_each(ResourcePlan::drop_unwritten_entries);
        let mut withheld = withheld(resources, specs.iter().map(|s| &**s));
        let changed: std::collections::HashSet<&ResourceId> = (resources.iter())
            .filter(|r| r.has_changes())
            .map(|r| &r.id)
            .collect();
        withheld.retain(|id, _| changed.contains(id));
        let parts = Parts::taking(resources, &mut planned.desired);
        Shared {
            planned,
            withheld,
            parts,
        }
    }

    /// Adds the outcome of another part of the component (`controller::parts`): its
    /// resources after these, its specs' outcomes beside these.
    pub fn absorb(&mut self, other: Shared) {
        let Shared {
            planned,
            mut withheld,
            parts,
        } = other;
        let Planned {
            snapshot: _,
            desired,
            plan,
        } = planned;
        let offset = self.planned.plan.resources.len();
        self.parts.absorb(parts, offset);
        let mine = &mut self.planned;
        mine.plan.resources.extend(plan.resources);
        mine.plan.errors.extend(plan.errors);
        mine.desired.specs.extend(desired.specs);
        self.withheld.append(&mut withheld);
    }
}

struct CachedOutcome {
    /// The component's members, sorted.
    members: Vec<Key>,
    fingerprint: Vec<MemberPrint>,
    /// The lineage of the view the outcome was planned from, when no member had a tenancy
    /// refusal: a member reconciling with a view of that lineage has the same members with
    /// the same fingerprint ([`ComponentView::lineage`]), so [`OutcomeCache::get_view`]
    /// needs no fingerprint.
    lineage: Option<u64>,
    /// The digest of the snapshot the outcome is the plan of, when it is one: planned with
    /// nothing written. A member planning the same members and fingerprint after the
    /// resync interval that observes a snapshot of this digest keeps the outcome
    /// ([`OutcomeCache::renew`]): resolving and diffing again would give it back.
    observed: Option<SnapshotDigest>,
    at: tokio::time::Instant,
    outcome: Arc<Shared>,
}

/// The last successful outcome per component (keyed by its first member, holding all its
/// members), *after* its writable changes were applied: a member reconciling while the
/// fingerprint is equal and the entry younger than the resync interval uses it without
/// reading or writing Azure. Only successful plans are stored; failures, deletions and
/// cleanups remove entries.
#[derive(Default)]
pub struct OutcomeCache {
    entries: Mutex<HashMap<Key, CachedOutcome>>,
}

impl OutcomeCache {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<Key, CachedOutcome>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached outcome of `members` when its fingerprint is `print` and it is younger
    /// than `max_age`.
    pub fn get(
        &self,
        members: &[Key],
        print: &[MemberPrint],
        max_age: Duration,
    ) -> Option<Arc<Shared>> {
        let entries = self.entries();
        let entry = entries.get(members.first()?)?;
        (entry.members == members && entry.fingerprint == print && entry.at.elapsed() < max_age)
            .then(|| entry.outcome.clone())
    }

    /// The cached outcome planned from a view of `view`'s lineage (without tenancy
    /// refusals), when it is younger than `max_age`: [`OutcomeCache::get`] without
    /// comparing the members and their prints, for a caller with no refusals.
    pub fn get_view(&self, view: &ComponentView, max_age: Duration) -> Option<Arc<Shared>> {
        let entries = self.entries();
        let entry = entries.get(view.keys.first()?)?;
        (entry.lineage == Some(view.lineage) && entry.at.elapsed() < max_age)
            .then(|| entry.outcome.clone())
    }

    /// The digest of the snapshot the outcome of `members` with fingerprint `print` was
    /// planned from, whatever its age, when that outcome is the plan of that snapshot.
    pub fn observed(&self, members: &[Key], print: &[MemberPrint]) -> Option<SnapshotDigest> {
        let entries = self.entries();
        let entry = entries.get(members.first()?)?;
        (entry.members == members && entry.fingerprint == print)
            .then_some(entry.observed)
            .flatten()
    }

    /// The outcome of `members` with fingerprint `print` planned from a snapshot of digest
    /// `observed`, made young again: Azure was observed anew and holds what it held.
    pub fn renew(
        &self,
        members: &[Key],
        print: &[MemberPrint],
        observed: SnapshotDigest,
    ) -> Option<Arc<Shared>> {
        let mut entries = self.entries();
        let entry = entries.get_mut(members.first()?)?;
        let same = entry.members == members
            && entry.fingerprint == print
            && entry.observed == Some(observed);
        same.then(|| {
            entry.at = tokio::time::Instant::now();
            entry.outcome.clone()
        })
    }

    /// Stores the outcome of `members` (sorted), planned from `view` when no member had a
    /// tenancy refusal, and from a snapshot of digest `observed` when it is that
    /// snapshot's plan (nothing written); drops entries of other components sharing a
    /// member (a spec is in one component at a time) and entries older than `max_age`.
    pub fn put(
        &self,
        members: Vec<Key>,
        print: Vec<MemberPrint>,
        view: Option<&ComponentView>,
        observed: Option<SnapshotDigest>,
        outcome: Arc<Shared>,
        max_age: Duration,
    ) {
        let Some(first) = members.first().cloned() else {
            return;
        };
        let mut entries = self.entries();
        // An outcome with a digest stays a second interval: its component's resync keeps
        // it when Azure is unchanged.
        entries.retain(|_, e| {
            let kept = if e.observed.is_some() {
                2 * max_age
            } else {
                max_age
            };
            e.at.elapsed() < kept && !e.members.iter().any(|m| members.binary_search(m).is_ok())
        });
        entries.insert(
            first,
            CachedOutcome {
                members,
                fingerprint: print,
                lineage: view.map(|v| v.lineage),
                observed,
                at: tokio::time::Instant::now(),
                outcome,
            },
        );
    }

    /// Forgets the outcome of `members`.
    pub fn invalidate(&self, members: &[Key]) {
        let mut entries = self.entries();
        if let Some(first) = members.first() {
            if entries.get(first).is_some_and(|e| e.members == members) {
                entries.remove(first);
            }
        }
    }

    /// Forgets every outcome, so that every component is planned afresh: what a resync
    /// does to an outcome older than two intervals, or when Azure changed (the fleet
    /// benchmark measures that full re-plan; a resync that finds Azure unchanged keeps
    /// the outcome by its digest instead).
    pub fn clear(&self) {
        self.entries().clear();
    }

    /// Forgets every outcome of a component `spec` is a member of.
    pub fn forget_spec(&self, spec: &Key) {
        self.entries().retain(|_, e| !e.members.contains(spec));
    }

    pub fn len(&self) -> usize {
        self.entries().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Keyed async locks, one per Azure parent (normalised resource id). A reconcile takes the
/// locks of all parents it may plan and write, in sorted order (so two reconciles never wait
/// on each other in a cycle), and holds them until it has applied: two reconciles never
/// plan one NSG from the same etag and race to write it (the loser's PUT would get 412).
/// Entries nobody holds or waits for are dropped on the next acquisition.
#[derive(Default)]
pub struct ParentLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// The locks one reconcile holds; released on drop.
pub struct ParentGuards(#[allow(dead_code)] Vec<tokio::sync::OwnedMutexGuard<()>>);

impl ParentLocks {
    /// Acquires the lock of every id in `ids` (a `BTreeSet`: sorted, no duplicates).
    pub async fn acquire(&self, ids: &BTreeSet<String>) -> ParentGuards {
        let mutexes: Vec<Arc<tokio::sync::Mutex<()>>> = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            // Only this map holds an unused entry: forget it.
            locks.retain(|_, m| Arc::strong_count(m) > 1);
            ids.iter()
                .map(|id| locks.entry(id.clone()).or_default().clone())
                .collect()
        };
        let mut guards = Vec::with_capacity(mutexes.len());
        for m in mutexes {
            guards.push(m.lock_owned().await);
        }
        ParentGuards(guards)
    }

    /// How many parents have a lock entry (held, awaited or not yet pruned).
    pub fn len(&self) -> usize {
        self.locks.lock().map(|l| l.len()).unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Context {
    pub fn new(
        client: Client,
        stores: Stores,
        engine: Arc<dyn Engine>,
        metrics: Arc<Metrics>,
        leadership: Leadership,
        settings: Settings,
        instance: Option<String>,
    ) -> Arc<Self> {
        let reporter = Reporter {
            controller: "asenet".into(),
            instance,
        };
        Arc::new(Context {
            recorder: EventRecorder::new(client.clone(), reporter),
            client,
            stores,
            engine,
            metrics,
            leadership,
            settings,
            failures: Mutex::default(),
            locks: ParentLocks::default(),
            outcomes: OutcomeCache::default(),
            components: Mutex::default(),
        })
    }
}
