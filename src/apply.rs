//! apply: executes a `Plan` against ARM (docs/design.md section 3). It decides nothing the
//! plan did not say, except how to survive ARM: races, throttling, failed operations.
//!
//! Per changed parent resource exactly one PUT, in three phases (1 and 2 overlap: a subnet
//! write waits only for the NSG and route-table writes it depends on):
//! 1. NSGs and route tables (concurrent, bounded): the complete rule/route list, foreign
//!    entries carried from the raw JSON observed (minus the read-only `etag` and
//!    `provisioningState` ARM re-stamps on every parent write), owned entries rendered from
//!    the model, every other property of the resource carried from the raw JSON. A missing
//!    NSG or route table is created in the subnet's VNet location, tagged
//!    `asenet.io/created-by: <namespace/name>`, before any subnet points at it, and never
//!    without its rules (an ASE subnet must not lose its management rules, domain.md 1.3.4).
//! 2. Subnet associations: the subnet as read, every property kept, plus the association
//!    (domain.md 4.4: a subnet PUT must carry everything). Writes in one VNet are serialised
//!    (a tokio mutex per VNet): NRP answers 409 `AnotherOperationInProgress` to a subnet
//!    write while another runs on the VNet, and one subnet write changes the etag of every
//!    subnet of the VNet, so the next write in that VNet uses the etag the previous one
//!    left (a 412 falls back to re-reading, so this never risks a lost update).
//!    A dissociation the plan lists (a subnet losing the NSG or route table the plan
//!    deletes) is such a subnet write too; a subnet losing both loses them in one PUT.
//! 3. Deletions: the NSGs and route tables the plan marks `ParentAction::Delete` (the diff
//!    decides which, `diff::removal`), once every PUT is done.
//!
//! What is written is exactly [`Plan::writes`]: apply decides nothing about whether to
//! write. It only reacts to ARM's answers (below): after a 412 it writes what the re-plan
//! says, and a subnet write waiting on a re-planned resource is re-planned too.
//!
//! Every write carries `If-Match` with the observed etag (`If-None-Match: *` on create,
//! domain.md 4.6). On 412, or an operation that failed for a transient reason, the resource
//! is re-read, the plan recomputed by the caller's `Replanner`, and the write retried (at
//! most `max_replans` times); a concurrent foreign write is thus kept, never overwritten.
//! 429/5xx/connection errors and 409 `AnotherOperationInProgress` are retried inside the
//! ARM client (Retry-After honoured). Writes are idempotent: a run interrupted anywhere
//! converges when run again.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use crate::azure::pacing::{Reservation, Slot, WritePacer};
use crate::azure::{ArmClient, ArmError, ErrorCategory, LroProgress, Precondition};
// The ARM JSON of bodies lives in the ARM layer's wire module; re-exported for callers of
// `apply::writable` and friends.
pub use crate::azure::wire::{
    build_body, carried_child, render_route, render_rule, writable, Unwritable,
};
pub use crate::diff::CREATED_BY_TAG;
use crate::diff::{ParentAction, Plan, ResourceKind, ResourcePlan, WriteVerb};
use crate::model::ResourceId;
use crate::observe::{self, ObserveError};
use crate::snapshot::Snapshot;

/// Recomputes the plan from a snapshot (resolve + diff: pure). The pipeline implements it.
pub trait Replanner: Send + Sync {
    fn replan(&self, snapshot: &Snapshot) -> Plan;
}

impl<F: Fn(&Snapshot) -> Plan + Send + Sync> Replanner for F {
    fn replan(&self, snapshot: &Snapshot) -> Plan {
        self(snapshot)
    }
}

#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Concurrent ARM reads of this run (re-reads after 412).
    pub max_concurrency: usize,
    /// Concurrent writes per subscription. ARM refills a subscription's write bucket at
    /// 10/s and a write takes a PUT, the operation's `Retry-After` and a poll, so reaching
    /// the refill rate needs refill × write latency writes in flight (domain.md 4.8).
    pub max_write_concurrency: usize,
    /// Re-reads and re-plans of one resource after 412 or a transient operation failure.
    pub max_replans: u32,
    /// NRP's per-subscription write window (domain.md 4.8), shared by every apply of the
    /// process: subnet writes hold reserved slots so that their VNet's chain never waits
    /// for the window behind writes nothing waits on (see `azure::pacing`).
    pub pacer: WritePacer,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            max_concurrency: 4,
            max_write_concurrency: 4,
            max_replans: 5,
            pacer: WritePacer::nrp(),
        }
    }
}

/// What was done (or is being done) to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum WriteAction {
    Create,
    Update,
    Associate,
    Dissociate,
    Delete,
}

impl WriteAction {
    pub fn verb(self) -> &'static str {
        match self {
            WriteAction::Create => "Creating",
            WriteAction::Update => "Modifying",
            WriteAction::Associate => "Associating",
            WriteAction::Dissociate => "Dissociating",
            WriteAction::Delete => "Destroying",
        }
    }
    pub fn done(self) -> &'static str {
        match self {
            WriteAction::Create => "Creation complete",
            WriteAction::Update => "Modifications complete",
            WriteAction::Associate => "Association complete",
            WriteAction::Dissociate => "Dissociation complete",
            WriteAction::Delete => "Destruction complete",
        }
    }
}

/// Progress of an apply, for people (CLI) and events (operator).
#[derive(Debug, Clone)]
pub enum ApplyEvent {
    Started {
        id: ResourceId,
        action: WriteAction,
    },
    Polling {
        id: ResourceId,
        status: String,
        polls: u32,
        elapsed: std::time::Duration,
    },
    /// A 412 or a transient operation failure: re-reading and re-planning.
    Replanning {
        id: ResourceId,
        attempt: u32,
        reason: String,
    },
    /// After re-planning, nothing is left to write.
    Unchanged {
        id: ResourceId,
    },
    Done {
        id: ResourceId,
        action: WriteAction,
        elapsed: std::time::Duration,
    },
}

/// One write that happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Written {
    pub id: ResourceId,
    pub kind: ResourceKind,
    pub action: WriteAction,
    /// `(added, changed, destroyed)` entries (rules, routes, associations) of this write.
    pub counts: (usize, usize, usize),
}

/// What an apply did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyReport {
    pub written: Vec<Written>,
    /// Re-reads after 412 / transient operation failures.
    pub replans: u32,
}

impl ApplyReport {
    /// `(added, changed, destroyed)`, counted like `Plan::summary` (entries and
    /// associations), plus one destroyed per deleted resource.
    pub fn totals(&self) -> (usize, usize, usize) {
        self.written.iter().fold((0, 0, 0), |(a, c, d), w| {
            (a + w.counts.0, c + w.counts.1, d + w.counts.2)
        })
    }

    /// PUTs and DELETEs sent for parent resources (one per written resource).
    pub fn writes(&self) -> usize {
        self.written.len()
    }

    /// `Apply complete! Resources: 2 added, 1 changed, 0 destroyed.`
    pub fn summary_line(&self) -> String {
        let (a, c, d) = self.totals();
        format!("Apply complete! Resources: {a} added, {c} changed, {d} destroyed.")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("writing {id}: {source}")]
    Arm {
        id: String,
        #[source]
        source: Box<ArmError>,
    },
    #[error(transparent)]
    Observe(#[from] ObserveError),
    #[error(
        "{id}: still conflicting after {attempts} re-reads (someone keeps writing it); try again"
    )]
    Conflict { id: String, attempts: u32 },
    #[error("{id}: cannot write it: {message}")]
    Invalid { id: String, message: String },
}

impl From<Unwritable> for ApplyError {
    fn from(u: Unwritable) -> Self {
        ApplyError::Invalid {
            id: u.id,
            message: u.message,
        }
    }
}

impl ApplyError {
    fn arm(id: &ResourceId, e: ArmError) -> Self {
        ApplyError::Arm {
            id: id.to_string(),
            source: Box::new(e),
        }
    }

    pub fn category(&self) -> ErrorCategory {
        match self {
            ApplyError::Arm { source, .. } => source.category(),
            ApplyError::Observe(e) => e.category(),
            ApplyError::Conflict { .. } => ErrorCategory::Transient,
            ApplyError::Invalid { .. } => ErrorCategory::Permanent,
        }
    }
}

type Progress<'a> = &'a (dyn Fn(ApplyEvent) + Send + Sync);

/// Shared state of one apply run.
struct Run<'a> {
    arm: &'a ArmClient,
    replanner: &'a dyn Replanner,
    options: &'a ApplyOptions,
    progress: Progress<'a>,
    /// The snapshot the plan came from; copied on the first re-read (a 412), so the
    /// caller's copy is never changed and an apply without re-reads copies nothing.
    snapshot: tokio::sync::Mutex<Cow<'a, Snapshot>>,
    /// Per VNet: serialises subnet writes and remembers the etag the last one left.
    vnets: std::sync::Mutex<BTreeMap<ResourceId, Arc<tokio::sync::Mutex<Option<String>>>>>,
    /// The etag each written resource was left with (for the `If-Match` of a deletion in
    /// phase 3); only the etag: a run of 10,000 specs would otherwise hold every body it
    /// wrote until it ends.
    etags: std::sync::Mutex<BTreeMap<ResourceId, Option<String>>>,
    /// The latest plan of every resource re-planned during the run (`None`: nothing left
    /// to write).
    replanned: std::sync::Mutex<BTreeMap<ResourceId, Option<ResourcePlan>>>,
    replans: std::sync::atomic::AtomicU32,
}

/// Executes `plan` (computed from `snapshot`: borrowed, or owned when the caller has no
/// further use for it).
pub async fn execute(
    arm: &ArmClient,
    snapshot: Cow<'_, Snapshot>,
    plan: &Plan,
    replanner: &dyn Replanner,
    options: &ApplyOptions,
    progress: Progress<'_>,
) -> Result<ApplyReport, ApplyError> {
    let run = Run {
        arm,
        replanner,
        options,
        progress,
        snapshot: tokio::sync::Mutex::new(snapshot),
        vnets: Default::default(),
        etags: Default::default(),
        replanned: Default::default(),
        replans: Default::default(),
    };
    let mut report = ApplyReport::default();

    // Phases 1 and 2 together: every subnet write waits for the NSG and route-table writes
    // it depends on, not for all of them.
    // Borrowed: each write copies its plan when it starts, so the plan of a whole component
    // (10,000 ASEs) is not held twice while the writes queue.
    let puts: Vec<&ResourcePlan> = plan
        .resources
        .iter()
        .filter(|r| r.writes().contains(&WriteVerb::Put))
        .collect();
    let results = run.write_all(puts).await;
    collect(&mut report, results)?;

    // Phase 3: the deletions, as last planned.
    for rp in plan
        .resources
        .iter()
        .filter(|r| r.action == ParentAction::Delete)
    {
        let Some(rp) = run.latest(rp) else { continue };
        if rp.action != ParentAction::Delete {
            continue;
        }
        if let Some(w) = run.delete(&rp).await? {
            report.written.push(w);
        }
    }

    report.replans = run.replans.load(std::sync::atomic::Ordering::Relaxed);
    // Stable order for reports and tests.
    report
        .written
        .sort_by(|a, b| (a.kind, &a.id, a.action).cmp(&(b.kind, &b.id, b.action)));
    Ok(report)
}

fn collect(
    report: &mut ApplyReport,
    results: Vec<Result<Option<Written>, ApplyError>>,
) -> Result<(), ApplyError> {
    let mut first_error = None;
    for r in results {
        match r {
            Ok(Some(w)) => report.written.push(w),
            Ok(None) => {}
            Err(e) => {
                if first_error.is_none() {
                    first_error = Some(e);
                }
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

impl Run<'_> {
    /// Writes `plans` (phases 1 and 2) concurrently.
    ///
    /// NSG and route-table writes: subscriptions interleaved, at most
    /// `max_write_concurrency` in flight per subscription. A subnet write starts as soon as
    /// the writes of the NSGs and route tables it is associated with, before or after, have
    /// completed (a subnet never points at a resource before it exists with its rules, and
    /// NRP answers 409 to a subnet write while a dependent resource is being written,
    /// domain.md 4.4); one whose dependency failed is not written. Subnet writes are
    /// serialised per VNet, so the VNets' chains of subnet writes are the longest path of an
    /// apply: the NSGs and route tables are written in chain order (the first subnet of every
    /// VNet, then the second, ...) so that every chain starts early and never waits, and
    /// subnet writes have their own `max_write_concurrency` per subscription, so a chain's
    /// next write never queues behind NSG writes.
    ///
    /// Under NRP's write window (`ApplyOptions::pacer`), a subnet write holds a reserved
    /// slot from the moment the last NSG or route-table write it waits for is admitted (at
    /// once, when it waits for none), so the writes nothing waits on never take the slots
    /// a chain needs next.
    async fn write_all<'p>(
        &'p self,
        plans: Vec<&'p ResourcePlan>,
    ) -> Vec<Result<Option<Written>, ApplyError>> {
        type Job<'a> = futures::future::BoxFuture<'a, Result<Option<Written>, ApplyError>>;
        let per_sub = self.options.max_write_concurrency.max(1);
        let (parents, subnets): (Vec<&ResourcePlan>, Vec<&ResourcePlan>) = plans
            .into_iter()
            .partition(|r| r.kind != ResourceKind::Subnet);
        let parent_ids: BTreeSet<ResourceId> = parents.iter().map(|r| r.id.clone()).collect();
        let deps: Vec<BTreeSet<ResourceId>> = {
            let snap = self.snapshot.lock().await;
            subnets
                .iter()
                .map(|s| subnet_dependencies(s, &snap, &parent_ids))
                .collect()
        };
        let parents = chain_order(parents, &subnets, &deps);
        let parents = observe::interleave_subscriptions(parents, |r| r.id.subscription());
        let mut kept = self.reservation_cells(&parents, &subnets, &deps);

        let mut gates: BTreeMap<ResourceId, tokio::sync::watch::Receiver<Option<Gate>>> =
            BTreeMap::new();
        let mut parent_limits = Limits::new(per_sub);
        let mut jobs: Vec<Job<'p>> = Vec::with_capacity(parents.len() + subnets.len());
        for rp in parents {
            let (done, gate) = tokio::sync::watch::channel(None);
            gates.insert(rp.id.clone(), gate);
            let limit = parent_limits.of(&rp.id);
            let unlocks = kept.unlocked_by.remove(&rp.id).unwrap_or_default();
            jobs.push(Box::pin(async move {
                let permit = limit.acquire_owned().await;
                let id = rp.id.clone();
                let window = self.options.pacer.window(id.subscription());
                let (slot, reservations) = window.admit(unlocks.len()).await;
                for (cell, r) in unlocks.iter().zip(reservations) {
                    *cell
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(r);
                }
                drop(unlocks);
                // Boxed where it starts: a job's own state is then a few hundred bytes
                // while it waits, not the whole ARM request's (a component of 10,000 specs
                // creates ~20,000 jobs at once; ~50 MiB, issue 14's memory).
                let result = Box::pin(self.write(rp.clone(), None, slot)).await;
                drop(permit);
                let gate = match &result {
                    Err(_) => Gate::Failed,
                    Ok(_) if self.was_replanned(&id) => Gate::Replanned,
                    Ok(_) => Gate::Written,
                };
                // Nobody waiting is not an error.
                let _ = done.send(Some(gate));
                result
            }));
        }
        let mut subnet_limits = Limits::new(per_sub);
        for ((rp, deps), cell) in subnets.into_iter().zip(deps).zip(kept.cells) {
            let waits: Vec<tokio::sync::watch::Receiver<Option<Gate>>> =
                deps.iter().filter_map(|d| gates.get(d).cloned()).collect();
            let limit = subnet_limits.of(&rp.id);
            let vnet = self.vnet_lock(&rp.id);
            jobs.push(Box::pin(async move {
                // Dropped on every way out: an unused reservation goes back to the window.
                let cell = cell;
                let mut dependency_replanned = false;
                for mut gate in waits {
                    let state = gate
                        .wait_for(Option::is_some)
                        .await
                        .map_or(Some(Gate::Failed), |v| *v);
                    match state {
                        Some(Gate::Written) => {}
                        Some(Gate::Replanned) => dependency_replanned = true,
                        // The dependency's own error is what the apply reports.
                        _ => return Ok(None),
                    }
                }
                // What the subnet write was planned from changed: plan it again.
                let rp = if dependency_replanned {
                    match Box::pin(self.replan(&rp.id)).await {
                        Some(fresh) => Cow::Owned(fresh),
                        None => {
                            (self.progress)(ApplyEvent::Unchanged { id: rp.id.clone() });
                            return Ok(None);
                        }
                    }
                } else {
                    Cow::Borrowed(rp)
                };
                let guard = vnet.lock_owned().await;
                let permit = limit.acquire_owned().await;
                let window = self.options.pacer.window(rp.id.subscription());
                let reservation = cell
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take();
                // Without a reservation (its dependencies in another subscription) it
                // reserves now: a write holding its VNet's lock must never queue behind
                // writes that wait for the reservations of that VNet's next subnets.
                let reservation = reservation.unwrap_or_else(|| window.reserve());
                let slot = window.admit_reserved(reservation).await;
                let result = Box::pin(self.write(rp.into_owned(), Some(guard), slot)).await;
                drop(permit);
                result
            }));
        }
        futures::future::join_all(jobs).await
    }

    /// Where each subnet write's reservation in NRP's window is kept until it is written:
    /// one cell per subnet (in `subnets` order), and per NSG or route-table write the cells
    /// it fills when admitted: those of the subnets for which it is, in `parents` order
    /// (the order of admission), the last write waited for, in the same subscription. A
    /// subnet waiting for none is reserved now; one whose dependencies are in another
    /// subscription queues like any write.
    fn reservation_cells(
        &self,
        parents: &[&ResourcePlan],
        subnets: &[&ResourcePlan],
        deps: &[BTreeSet<ResourceId>],
    ) -> ReservationCells {
        let position: BTreeMap<&ResourceId, usize> = parents
            .iter()
            .enumerate()
            .map(|(i, p)| (&p.id, i))
            .collect();
        let mut cells = Vec::with_capacity(subnets.len());
        let mut unlocked_by: BTreeMap<ResourceId, Vec<ReservationCell>> = BTreeMap::new();
        for (s, d) in subnets.iter().zip(deps) {
            let cell = ReservationCell::default();
            let last = d.iter().filter_map(|id| position.get(id).copied()).max();
            match last.map(|i| &parents[i].id) {
                None => {
                    let window = self.options.pacer.window(s.id.subscription());
                    *cell
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) =
                        Some(window.reserve());
                }
                Some(p) if p.subscription().eq_ignore_ascii_case(s.id.subscription()) => {
                    unlocked_by.entry(p.clone()).or_default().push(cell.clone());
                }
                Some(_) => {}
            }
            cells.push(cell);
        }
        ReservationCells { cells, unlocked_by }
    }

    fn vnet_lock(&self, subnet: &ResourceId) -> Arc<tokio::sync::Mutex<Option<String>>> {
        let vnet = subnet.parent().unwrap_or_else(|| subnet.clone());
        self.vnets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(vnet)
            .or_default()
            .clone()
    }

    /// One resource: build the body, PUT it, re-read and re-plan on 412. A subnet is written
    /// holding its VNet's lock (`vnet_guard`).
    /// `slot` is the first PUT's place in NRP's window; a PUT after a re-plan queues for
    /// one of its own.
    async fn write(
        &self,
        mut rp: ResourcePlan,
        mut vnet_guard: Option<tokio::sync::OwnedMutexGuard<Option<String>>>,
        slot: Slot,
    ) -> Result<Option<Written>, ApplyError> {
        let mut attempt = 0;
        let mut slot = Some(slot);
        loop {
            let slot_now = match slot.take() {
                Some(s) => s,
                // A subnet's retry holds its VNet's lock: it takes a reservation rather than
                // queue (see `write_all`).
                None => {
                    let window = self.options.pacer.window(rp.id.subscription());
                    if vnet_guard.is_some() {
                        window.admit_reserved(window.reserve()).await
                    } else {
                        window.admit(0).await.0
                    }
                }
            };
            let action = match (rp.kind, rp.action) {
                (_, ParentAction::Create) => WriteAction::Create,
                (ResourceKind::Subnet, _) if rp.only_dissociates() => WriteAction::Dissociate,
                (ResourceKind::Subnet, _) => WriteAction::Associate,
                _ => WriteAction::Update,
            };
            let (body, mut precondition) = {
                let snap = self.snapshot.lock().await;
                build_body(&rp, &snap)?
            };
            // A previous subnet write in this VNet changed every subnet's etag.
            if let (Some(guard), Some(Precondition::IfMatch(_))) = (&vnet_guard, &precondition) {
                if let Some(etag) = guard.as_ref() {
                    precondition = Some(Precondition::IfMatch(etag.clone()));
                }
            }
            (self.progress)(ApplyEvent::Started {
                id: rp.id.clone(),
                action,
            });
            let started = std::time::Instant::now();
            let id = rp.id.clone();
            let on_poll = |p: &LroProgress| {
                if p.polls == 0 {
                    return slot_now.accepted();
                }
                (self.progress)(ApplyEvent::Polling {
                    id: id.clone(),
                    status: p.status.clone(),
                    polls: p.polls,
                    elapsed: p.elapsed,
                })
            };
            match self
                .arm
                .put(&rp.id, body, precondition.as_ref(), &on_poll)
                .await
            {
                Ok(final_body) => {
                    let etag = final_body
                        .get("etag")
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                    drop(final_body);
                    if let Some(guard) = vnet_guard.as_mut() {
                        **guard = etag.clone();
                    }
                    self.etags
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(rp.id.clone(), etag);
                    (self.progress)(ApplyEvent::Done {
                        id: rp.id.clone(),
                        action,
                        elapsed: started.elapsed(),
                    });
                    return Ok(Some(Written {
                        id: rp.id.clone(),
                        kind: rp.kind,
                        action,
                        counts: rp.put_counts(),
                    }));
                }
                Err(e) if e.needs_reobserve() => {
                    attempt += 1;
                    if attempt > self.options.max_replans {
                        return Err(ApplyError::Conflict {
                            id: rp.id.to_string(),
                            attempts: attempt - 1,
                        });
                    }
                    self.replans
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    (self.progress)(ApplyEvent::Replanning {
                        id: rp.id.clone(),
                        attempt,
                        reason: e.to_string(),
                    });
                    if let Some(guard) = vnet_guard.as_mut() {
                        **guard = None;
                    }
                    match self.reobserve(&rp.id).await? {
                        // A resource the re-plan deletes without entries to remove first
                        // needs no PUT: phase 3 deletes it.
                        Some(fresh) if !fresh.writes().contains(&WriteVerb::Put) => {
                            return Ok(None);
                        }
                        Some(fresh) => rp = fresh,
                        None => {
                            (self.progress)(ApplyEvent::Unchanged { id: rp.id.clone() });
                            return Ok(None);
                        }
                    }
                }
                Err(e) => return Err(ApplyError::arm(&rp.id, e)),
            }
        }
    }

    /// Re-reads `id`, re-plans, and returns its new plan if it still needs a write.
    async fn reobserve(&self, id: &ResourceId) -> Result<Option<ResourcePlan>, ApplyError> {
        // Only `id` is read and copied over: an empty snapshot holds all of it.
        let mut fresh = Snapshot::default();
        observe::refresh(self.arm, &mut fresh, id).await?;
        copy_resource(&fresh, self.snapshot.lock().await.to_mut(), id);
        Ok(self.replan(id).await)
    }

    /// Re-plans `id` from the snapshot as it is now, records the new plan (see
    /// [`Run::latest`]) and returns it if it still needs a write.
    async fn replan(&self, id: &ResourceId) -> Option<ResourcePlan> {
        let plan = self.replanner.replan(&*self.snapshot.lock().await);
        let fresh = plan.resource(id).filter(|r| r.has_changes()).cloned();
        self.replanned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id.clone(), fresh.clone());
        fresh
    }

    fn was_replanned(&self, id: &ResourceId) -> bool {
        self.replanned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains_key(id)
    }

    /// The plan of `rp`'s resource as last computed: `rp` itself unless it was re-planned
    /// during this run; `None` when the re-plan left nothing to write.
    fn latest(&self, rp: &ResourcePlan) -> Option<ResourcePlan> {
        match self
            .replanned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&rp.id)
        {
            Some(fresh) => fresh.clone(),
            None => Some(rp.clone()),
        }
    }

    /// Deletes an NSG or route table the plan deletes (its subnets already dissociated),
    /// with `If-Match` on the etag its PUT of this run left, else the one observed.
    async fn delete(&self, rp: &ResourcePlan) -> Result<Option<Written>, ApplyError> {
        let id = rp.id.clone();
        let written_etag = self
            .etags
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&id)
            .cloned()
            .flatten();
        (self.progress)(ApplyEvent::Started {
            id: id.clone(),
            action: WriteAction::Delete,
        });
        let slot = self
            .options
            .pacer
            .window(id.subscription())
            .admit(0)
            .await
            .0;
        let started = std::time::Instant::now();
        let precondition = written_etag
            .or_else(|| rp.etag.clone())
            .map(Precondition::IfMatch);
        let on_poll = |p: &LroProgress| {
            if p.polls == 0 {
                return slot.accepted();
            }
            (self.progress)(ApplyEvent::Polling {
                id: id.clone(),
                status: p.status.clone(),
                polls: p.polls,
                elapsed: p.elapsed,
            })
        };
        match self.arm.delete(&id, precondition.as_ref(), &on_poll).await {
            Ok(()) => {}
            // Someone wrote it since: it is no longer ours to delete; the next run decides.
            Err(e) if e.is_precondition_failed() => {
                (self.progress)(ApplyEvent::Unchanged { id: id.clone() });
                return Ok(None);
            }
            Err(e) => return Err(ApplyError::arm(&id, e)),
        }
        (self.progress)(ApplyEvent::Done {
            id: id.clone(),
            action: WriteAction::Delete,
            elapsed: started.elapsed(),
        });
        Ok(Some(Written {
            id,
            kind: rp.kind,
            action: WriteAction::Delete,
            counts: (0, 0, 1),
        }))
    }
}

/// How a parent write ended, for the subnet writes waiting on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    Written,
    /// Written (or found needing no write) after a re-read and re-plan.
    Replanned,
    Failed,
}

/// A subnet write's reservation in NRP's window, filled when the last write it waits for
/// is admitted (see `Run::reservation_cells`).
type ReservationCell = Arc<std::sync::Mutex<Option<Reservation>>>;

struct ReservationCells {
    /// Per subnet write, in the order of the plan's subnets.
    cells: Vec<ReservationCell>,
    /// Per NSG or route-table write: the cells its admission fills.
    unlocked_by: BTreeMap<ResourceId, Vec<ReservationCell>>,
}

/// A semaphore per subscription, created on first use.
struct Limits {
    per_sub: usize,
    by_sub: BTreeMap<String, Arc<tokio::sync::Semaphore>>,
}

impl Limits {
    fn new(per_sub: usize) -> Self {
        Limits {
            per_sub,
            by_sub: BTreeMap::new(),
        }
    }

    fn of(&mut self, id: &ResourceId) -> Arc<tokio::sync::Semaphore> {
        self.by_sub
            .entry(id.subscription().to_ascii_lowercase())
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(self.per_sub)))
            .clone()
    }
}

/// The NSG and route-table writes of this apply (`written`) that the write of subnet `rp`
/// must wait for: those it is associated with now (as read) and those it will be
/// associated with.
fn subnet_dependencies(
    rp: &ResourcePlan,
    snapshot: &Snapshot,
    written: &BTreeSet<ResourceId>,
) -> BTreeSet<ResourceId> {
    let mut related: Vec<&ResourceId> = Vec::new();
    if let Some(s) = snapshot.subnets.get(&rp.id) {
        related.extend(s.network_security_group.iter());
        related.extend(s.route_table.iter());
    }
    if let Some(a) = &rp.association {
        for c in [&a.network_security_group, &a.route_table]
            .into_iter()
            .flatten()
        {
            related.extend(c.from.iter());
            related.extend(c.to.iter());
        }
    }
    related
        .into_iter()
        .filter(|id| written.contains(*id))
        .cloned()
        .collect()
}

/// `parents` in the order the subnet chains need them: the dependencies of the first
/// subnet of every VNet, then of the second, and so on; parents no subnet waits for keep
/// their order after those.
fn chain_order<'p>(
    parents: Vec<&'p ResourcePlan>,
    subnets: &[&ResourcePlan],
    deps: &[BTreeSet<ResourceId>],
) -> Vec<&'p ResourcePlan> {
    let mut chains: BTreeMap<ResourceId, Vec<&BTreeSet<ResourceId>>> = BTreeMap::new();
    for (s, d) in subnets.iter().zip(deps) {
        let vnet = s.id.parent().unwrap_or_else(|| s.id.clone());
        chains.entry(vnet).or_default().push(d);
    }
    let mut rank: BTreeMap<&ResourceId, usize> = BTreeMap::new();
    let longest = chains.values().map(Vec::len).max().unwrap_or(0);
    for step in 0..longest {
        for chain in chains.values() {
            for id in chain.get(step).into_iter().copied().flatten() {
                let next = rank.len();
                rank.entry(id).or_insert(next);
            }
        }
    }
    let mut keyed: Vec<(usize, usize, &ResourcePlan)> = parents
        .into_iter()
        .enumerate()
        .map(|(i, rp)| (rank.get(&rp.id).copied().unwrap_or(usize::MAX), i, rp))
        .collect();
    keyed.sort_by_key(|(r, i, _)| (*r, *i));
    keyed.into_iter().map(|(_, _, rp)| rp).collect()
}

/// Copies one resource's state from `from` into `to` (present or absent).
fn copy_resource(from: &Snapshot, to: &mut Snapshot, id: &ResourceId) {
    match from.network_security_groups.get(id) {
        Some(n) => {
            to.network_security_groups.insert(id.clone(), n.clone());
        }
        None => {
            to.network_security_groups.remove(id);
        }
    }
    match from.route_tables.get(id) {
        Some(r) => {
            to.route_tables.insert(id.clone(), r.clone());
        }
        None => {
            to.route_tables.remove(id);
        }
    }
    match from.subnets.get(id) {
        Some(s) => {
            to.subnets.insert(id.clone(), s.clone());
        }
        None => {
            to.subnets.remove(id);
        }
    }
}
