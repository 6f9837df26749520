//! observe: the snapshot of Azure the resolver and the diff need, read with the fewest ARM
//! calls (docs/design.md section 3).
//!
//! Reads, all concurrent but bounded (`max_concurrency`), each resource at most once per
//! run however many specs name it:
//! - one GET per NSG (its rules come inline) and per route table (routes inline);
//! - one GET per virtual network: its address space and, inline, every subnet with all of
//!   its properties, so a subnet costs no read of its own (the subnet GET of ARM returns
//!   the same object; `refresh` uses it after a 412);
//! - one `capacities/virtualip` GET per ASE (docs/domain.md 1.5), skipped when the spec
//!   writes the public VIP itself;
//! - service tags (the `AppServiceManagement`/`Sql` prefixes forced tunneling needs): one
//!   `ServiceTags_List` read per location whose specs need them (domain.md 5.1), cached
//!   for `max_age` (the operator's resync) and re-parsed only when the `changeNumber`
//!   moves. `--service-tags FILE` overrides ARM (air-gapped use). The embedded fixture is a
//!   fallback for a loopback endpoint (the mock) only: `service_tag_sources` decides.
//!
//! 404 means absent (to be created). ARM JSON becomes the canonical model here; the raw
//! JSON is kept beside it so apply writes back what asenet does not manage byte for byte.
//! Foreign rules asenet cannot express (application security groups, odd values) become
//! `AddressSet::Other` and are never rewritten.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use azure_mgmt_network::models;
use futures::stream::{self, StreamExt, TryStreamExt};
use ipnet::Ipv4Net;
use serde_json::Value;

// The parsing of ARM JSON lives in the wire module (in and out in one place); re-exported
// for the callers of `observe::nsg_state` and friends.
pub use crate::azure::wire::{
    environment_state, nsg_state, route, route_table_state, security_rule, subnet_state,
    vnet_state, Malformed,
};
use crate::azure::{ArmClient, ArmError, Fetched};
use crate::model::ResourceId;
use crate::snapshot::{
    EnvironmentState, NsgState, RouteTableState, ServiceTagState, Snapshot, SubnetState, VnetState,
};
use crate::validate::ValidSpec;

/// The embedded service-tag fixture (Azure's download format, trimmed): the one the mock
/// ARM server serves, used only against a loopback endpoint (`service_tag_sources`).
pub const EMBEDDED_SERVICE_TAGS: &str = mock_arm::SERVICE_TAGS_FIXTURE;

#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error("reading {id}: {source}")]
    Arm {
        id: String,
        #[source]
        source: Box<ArmError>,
    },
    #[error("`{id}`: {message}")]
    Malformed { id: String, message: String },
    #[error("service tags file `{path}`: {message}")]
    ServiceTags { path: String, message: String },
    #[error("service tags of location `{location}` from ARM: {message}")]
    ArmServiceTags { location: String, message: String },
}

impl From<Malformed> for ObserveError {
    fn from(m: Malformed) -> Self {
        ObserveError::Malformed {
            id: m.id,
            message: m.message,
        }
    }
}

impl ObserveError {
    pub fn category(&self) -> crate::azure::ErrorCategory {
        match self {
            ObserveError::Arm { source, .. } => source.category(),
            _ => crate::azure::ErrorCategory::Permanent,
        }
    }
}

/// What to read: every Azure resource the specs name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Targets {
    pub network_security_groups: BTreeSet<ResourceId>,
    pub route_tables: BTreeSet<ResourceId>,
    pub subnets: BTreeSet<ResourceId>,
    /// ASEs whose addresses must be looked up.
    pub environments: BTreeSet<ResourceId>,
    /// Subnets of specs whose forced tunneling needs service tags: their VNets' locations
    /// are the ones whose tags are read.
    pub tag_subnets: BTreeSet<ResourceId>,
}

impl Targets {
    pub fn of<'a>(specs: impl IntoIterator<Item = &'a ValidSpec>) -> Self {
        let mut t = Targets::default();
        for s in specs {
            t.network_security_groups
                .insert(s.network_security_group.clone());
            t.network_security_groups
                .extend(s.backends.iter().map(|b| b.network_security_group.clone()));
            t.route_tables.extend(s.route_table.iter().cloned());
            t.subnets.insert(s.subnet.clone());
            if s.forced_tunneling
                .as_ref()
                .is_some_and(|f| !f.required_tags.is_empty())
            {
                t.tag_subnets.insert(s.subnet.clone());
            }
            if let Some(env) = &s.environment_id {
                if s.addresses.public_vip.is_none() {
                    t.environments.insert(env.clone());
                }
            }
        }
        t
    }

    /// Adds what `other` reads.
    pub fn extend(&mut self, other: Targets) {
        let Targets {
            network_security_groups,
            route_tables,
            subnets,
            environments,
            tag_subnets,
        } = other;
        self.network_security_groups.extend(network_security_groups);
        self.route_tables.extend(route_tables);
        self.subnets.extend(subnets);
        self.environments.extend(environments);
        self.tag_subnets.extend(tag_subnets);
    }

    /// The VNets holding the subnets.
    pub fn virtual_networks(&self) -> BTreeSet<ResourceId> {
        self.subnets.iter().filter_map(ResourceId::parent).collect()
    }
}

/// Service tags (IPv4 only), loaded once per process.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceTags(pub Vec<ServiceTagState>);

impl ServiceTags {
    /// The embedded fixture.
    pub fn embedded() -> Self {
        // The fixture is part of the source tree and covered by a unit test below, so a
        // parse failure is a build-time bug; fall back to no tags rather than panic.
        Self::parse(EMBEDDED_SERVICE_TAGS).unwrap_or_default()
    }

    /// Reads Azure's `ServiceTags_Public_*.json`, or a snapshot file (its `serviceTags`).
    pub fn load(path: &Path) -> Result<Self, ObserveError> {
        let err = |message: String| ObserveError::ServiceTags {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        Self::parse(&text).map_err(err)
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        Ok(Self::parse_versioned(text)?.0)
    }

    /// Like `parse`, with each tag's `changeNumber` (download format and ARM's API; none
    /// from a snapshot file).
    pub fn parse_versioned(text: &str) -> Result<(Self, BTreeMap<String, String>), String> {
        let v: Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        Self::from_value(&v)
    }

    /// Azure's download format or `ServiceTags_List`'s answer (the same `values[]` shape,
    /// change numbers as integers or strings, domain.md 5.1), or a snapshot.
    pub fn from_value(v: &Value) -> Result<(Self, BTreeMap<String, String>), String> {
        let mut versions = BTreeMap::new();
        if let Some(values) = v.get("values").and_then(Value::as_array) {
            for item in values {
                let n = item.pointer("/properties/changeNumber");
                let n = match n {
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(Value::Number(n)) => Some(n.to_string()),
                    _ => None,
                };
                if let (Some(name), Some(n)) = (item.get("name").and_then(Value::as_str), n) {
                    versions.insert(name.to_string(), n);
                }
            }
        }
        let tags = Self::from_value_only(v)?;
        Ok((tags, versions))
    }

    fn from_value_only(v: &Value) -> Result<Self, String> {
        if let Some(values) = v.get("values").and_then(Value::as_array) {
            // Azure's download format (domain.md 5.1).
            let mut out = Vec::new();
            for item in values {
                let name = item
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or("a `values[]` entry has no name")?;
                let props = item.get("properties").cloned().unwrap_or(Value::Null);
                let strings = |k: &str| -> Vec<String> {
                    props
                        .get(k)
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .filter_map(Value::as_str)
                                .map(str::to_owned)
                                .collect()
                        })
                        .unwrap_or_default()
                };
                out.push(ServiceTagState {
                    name: name.to_string(),
                    // IPv6 prefixes are skipped: asenet writes IPv4 rules only.
                    address_prefixes: strings("addressPrefixes")
                        .iter()
                        .filter_map(|p| p.parse::<Ipv4Net>().ok())
                        .map(|n| n.trunc())
                        .collect(),
                    network_features: strings("networkFeatures"),
                });
            }
            return Ok(ServiceTags(out));
        }
        if v.get("serviceTags").is_some() {
            let snap: Snapshot = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
            return Ok(ServiceTags(snap.service_tags.into_values().collect()));
        }
        Err("neither Azure's service tags JSON (`values`) nor a snapshot (`serviceTags`)".into())
    }
}

/// Reads the snapshot of `targets`.
pub async fn observe(
    arm: &ArmClient,
    targets: &Targets,
    tags: &ServiceTags,
    max_concurrency: usize,
) -> Result<Snapshot, ObserveError> {
    let mut snap = Snapshot::default();
    for t in &tags.0 {
        snap.insert_service_tag(t.clone());
    }
    gather(arm, targets, &mut snap, max_concurrency).await?;
    Ok(snap)
}

/// Where [`observe_into`] puts what it reads: a [`Snapshot`], or what keeps less of it
/// (a digest of a component's resources, without the resources:
/// `pipeline::digest::DigestGather`). Each resource is given as it arrives.
pub trait Gather: Send {
    fn nsg(&mut self, nsg: NsgState);
    fn route_table(&mut self, rt: RouteTableState);
    /// A VNet and those of its subnets that are targets.
    fn vnet(&mut self, vnet: VnetState, subnets: Vec<SubnetState>);
    fn environment(&mut self, env: EnvironmentState);
    /// The location of the VNet of `subnet`, when it was read.
    fn vnet_location(&self, subnet: &ResourceId) -> Option<String>;
    /// True when a tag of that name was given already (the first source wins).
    fn has_service_tag(&self, name: &str) -> bool;
    fn add_service_tag(&mut self, tag: ServiceTagState, version: Option<String>);
}

impl Gather for Snapshot {
    fn nsg(&mut self, nsg: NsgState) {
        self.insert_nsg(nsg);
    }
    fn route_table(&mut self, rt: RouteTableState) {
        self.insert_route_table(rt);
    }
    fn vnet(&mut self, vnet: VnetState, subnets: Vec<SubnetState>) {
        self.insert_vnet(vnet);
        subnets.into_iter().for_each(|s| self.insert_subnet(s));
    }
    fn environment(&mut self, env: EnvironmentState) {
        self.insert_environment(env);
    }
    fn vnet_location(&self, subnet: &ResourceId) -> Option<String> {
        self.vnet_of(subnet).and_then(|v| v.location.clone())
    }
    fn has_service_tag(&self, name: &str) -> bool {
        self.service_tag(name).is_some()
    }
    fn add_service_tag(&mut self, tag: ServiceTagState, version: Option<String>) {
        if let Some(v) = version {
            self.service_tag_versions.insert(tag.name.clone(), v);
        }
        self.insert_service_tag(tag);
    }
}

/// Reads `targets` into `into`, each resource as it arrives (NSGs of a listed resource
/// group item by item).
async fn gather<G: Gather>(
    arm: &ArmClient,
    targets: &Targets,
    into: &mut G,
    max_concurrency: usize,
) -> Result<(), ObserveError> {
    let into = std::sync::Mutex::new(into);
    let put = |read: Read| {
        let mut g = into.lock().unwrap_or_else(|e| e.into_inner());
        match read {
            Read::Nsg(nsg) => g.nsg(nsg),
            Read::RouteTable(rt) => g.route_table(rt),
            Read::Vnet(vnet, subnets) => g.vnet(vnet, subnets),
            Read::Env(env) => g.environment(env),
        }
    };
    // Round-robin over subscriptions: each has its own read bucket (domain.md 4.8).
    let mut ordered: Vec<ReadJob<'_>> = Vec::new();
    for (_, job) in interleave_subscriptions(read_jobs(arm, targets, &put), |(sub, _)| sub.as_str())
    {
        ordered.push(job);
    }
    stream::iter(ordered)
        .buffer_unordered(max_concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// One resource read by `observe`, converted to its snapshot state as it arrives: the
/// JSON and typed models of thousands of reads are never held together (a VNet of 100
/// subnets is ~0.5 MiB of them; issue 14's memory). Absent ones (404) are not reported.
enum Read {
    Nsg(NsgState),
    RouteTable(RouteTableState),
    /// A VNet and those of its subnets that are targets.
    Vnet(VnetState, Vec<SubnetState>),
    Env(EnvironmentState),
}

type ReadJob<'a> = futures::future::BoxFuture<'a, Result<(), ObserveError>>;

/// Where a read job puts each resource it read.
type Put<'a> = &'a (dyn Fn(Read) + Sync);

/// The reads of `targets`, each with its subscription, each resource read given to `put`.
fn read_jobs<'a>(
    arm: &'a ArmClient,
    targets: &'a Targets,
    put: Put<'a>,
) -> Vec<(String, ReadJob<'a>)> {
    let mut jobs: Vec<(String, ReadJob<'a>)> = Vec::new();
    let wrap = |id: &ResourceId| {
        let id = id.to_string();
        move |source| ObserveError::Arm {
            id,
            source: Box::new(source),
        }
    };
    // NSGs and route tables: a GET each when a resource group holds a few targets, else
    // one list of the resource group (paged; the items are the bodies GET returns).
    for group in by_resource_group(&targets.network_security_groups) {
        jobs.push(group_job::<models::NetworkSecurityGroup>(arm, group, put));
    }
    for group in by_resource_group(&targets.route_tables) {
        jobs.push(group_job::<models::RouteTable>(arm, group, put));
    }
    for id in targets.virtual_networks() {
        let e = wrap(&id);
        jobs.push((
            id.subscription().to_owned(),
            Box::pin(async move {
                let Some(f) = Box::pin(arm.get_vnet(&id)).await.map_err(e)? else {
                    return Ok(());
                };
                let (vnet, mut subnets) = vnet_state(&id, f)?;
                subnets.retain(|s| targets.subnets.contains(&s.id));
                put(Read::Vnet(vnet, subnets));
                Ok(())
            }),
        ));
    }
    for id in &targets.environments {
        let e = wrap(id);
        jobs.push((
            id.subscription().to_owned(),
            // The request's state is boxed when the read starts, not when the job is
            // made: a component of 10,000 specs makes 10,000 of these jobs at once.
            Box::pin(async move {
                let found = Box::pin(arm.get_ase_addresses(id)).await.map_err(e)?;
                if let Some(v) = found {
                    put(Read::Env(environment_state(id, &v)));
                }
                Ok(())
            }),
        ));
    }
    jobs
}

/// An NSG or a route table as ARM returns it: how to read one, its snapshot state, and
/// which [`Read`] it is.
trait ParentRead: serde::de::DeserializeOwned + Send + 'static {
    /// The ARM collection (`networkSecurityGroups`, `routeTables`).
    const COLLECTION: &'static str;
    type State: Send;
    fn get<'a>(arm: &'a ArmClient, id: &'a ResourceId) -> GetOne<'a, Self>;
    fn state(id: &ResourceId, fetched: Fetched<Self>) -> Result<Self::State, Malformed>;
    fn read(state: Self::State) -> Read;
}

impl ParentRead for models::NetworkSecurityGroup {
    const COLLECTION: &'static str = "networkSecurityGroups";
    type State = NsgState;
    fn get<'a>(arm: &'a ArmClient, id: &'a ResourceId) -> GetOne<'a, Self> {
        Box::pin(arm.get_nsg(id))
    }
    fn state(id: &ResourceId, fetched: Fetched<Self>) -> Result<NsgState, Malformed> {
        nsg_state(id, fetched)
    }
    fn read(state: NsgState) -> Read {
        Read::Nsg(state)
    }
}

impl ParentRead for models::RouteTable {
    const COLLECTION: &'static str = "routeTables";
    type State = RouteTableState;
    fn get<'a>(arm: &'a ArmClient, id: &'a ResourceId) -> GetOne<'a, Self> {
        Box::pin(arm.get_route_table(id))
    }
    fn state(id: &ResourceId, fetched: Fetched<Self>) -> Result<RouteTableState, Malformed> {
        route_table_state(id, fetched)
    }
    fn read(state: RouteTableState) -> Read {
        Read::RouteTable(state)
    }
}

/// The read of one resource group's NSGs or route tables: a GET each when it holds a few
/// targets, else one list of the resource group (paged; the items are the bodies GET
/// returns).
fn group_job<'a, T: ParentRead>(
    arm: &'a ArmClient,
    group: Vec<ResourceId>,
    put: Put<'a>,
) -> (String, ReadJob<'a>) {
    let sub = group[0].subscription().to_owned();
    let job: ReadJob<'a> =
        Box::pin(async move { fetch_group::<T>(arm, &group, &mut |s| put(T::read(s))).await });
    (sub, job)
}

/// Where the service tags of a run may come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TagSource {
    /// `--service-tags FILE` (or tags a caller passes): the only source when given.
    File,
    /// ARM's Service Tags API (`ServiceTags_List`), per location.
    Arm,
    /// The fixture built into the binary, for tags ARM did not provide.
    Embedded,
}

/// The sources of service tags a run against `endpoint` may use, in order: an explicit
/// file overrides everything; otherwise ARM, and the embedded fixture only when the
/// endpoint is a loopback address (the mock ARM server). Against any other endpoint a tag
/// that ARM does not provide is missing, and the spec needing it fails with the tag and
/// the location named (resolver), rather than routing with stale, partial prefixes.
pub fn service_tag_sources(endpoint: &azure_core::Url, file_given: bool) -> Vec<TagSource> {
    if file_given {
        vec![TagSource::File]
    } else if crate::azure::is_loopback(endpoint) {
        vec![TagSource::Arm, TagSource::Embedded]
    } else {
        vec![TagSource::Arm]
    }
}

/// Service tags read from ARM, by location, shared by the runs of one process (the
/// operator's reconciles): an entry younger than `max_age` is used without a read; an
/// older one is read again and re-parsed only when ARM's `changeNumber` moved.
#[derive(Debug, Clone, Default)]
pub struct ServiceTagCache {
    inner: Arc<Mutex<BTreeMap<String, CachedTags>>>,
}

#[derive(Debug, Clone)]
struct CachedTags {
    read_at: Instant,
    change_number: Option<String>,
    tags: ServiceTags,
    versions: BTreeMap<String, String>,
}

impl ServiceTagCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, CachedTags>> {
        // A panic elsewhere while holding the lock leaves a consistent map (entries are
        // replaced whole), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The tags of `location`, read through `subscription` unless a fresh entry exists.
    async fn get(
        &self,
        arm: &ArmClient,
        subscription: &str,
        location: &str,
        max_age: Duration,
    ) -> Result<(ServiceTags, BTreeMap<String, String>), ObserveError> {
        let key = location.to_ascii_lowercase();
        if let Some(c) = self.lock().get(&key) {
            if c.read_at.elapsed() < max_age {
                return Ok((c.tags.clone(), c.versions.clone()));
            }
        }
        let err = |message: String| ObserveError::ArmServiceTags {
            location: location.to_string(),
            message,
        };
        let read = arm
            .list_service_tags(subscription, location)
            .await
            .map_err(|source| ObserveError::Arm {
                id: format!("/subscriptions/{subscription}/providers/Microsoft.Network/locations/{location}/serviceTags"),
                source: Box::new(source),
            })?;
        let Some(doc) = read else {
            return Ok((ServiceTags::default(), BTreeMap::new()));
        };
        let change_number = doc.get("changeNumber").map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
        let mut cache = self.lock();
        if let Some(c) = cache.get_mut(&key) {
            if change_number.is_some() && c.change_number == change_number {
                c.read_at = Instant::now();
                return Ok((c.tags.clone(), c.versions.clone()));
            }
        }
        let (tags, versions) = ServiceTags::from_value(&doc).map_err(err)?;
        cache.insert(
            key,
            CachedTags {
                read_at: Instant::now(),
                change_number,
                tags: tags.clone(),
                versions: versions.clone(),
            },
        );
        Ok((tags, versions))
    }
}

/// How `observe_with_tags` gets service tags.
#[derive(Debug, Clone, Copy)]
pub struct TagOptions<'a> {
    /// Tags from `--service-tags FILE`; empty when none was given.
    pub explicit: &'a ServiceTags,
    pub cache: &'a ServiceTagCache,
    /// How long tags read from ARM are reused (zero: read once per run).
    pub max_age: Duration,
}

/// `observe`, with the service tags from the sources `service_tag_sources` allows: one
/// `ServiceTags_List` read per location that a spec needing tags lives in.
pub async fn observe_with_tags(
    arm: &ArmClient,
    targets: &Targets,
    tags: &TagOptions<'_>,
    max_concurrency: usize,
) -> Result<Snapshot, ObserveError> {
    let mut snap = Snapshot::default();
    observe_into(arm, targets, tags, &mut snap, max_concurrency).await?;
    Ok(snap)
}

/// [`observe_with_tags`] into any [`Gather`].
pub async fn observe_into<G: Gather>(
    arm: &ArmClient,
    targets: &Targets,
    tags: &TagOptions<'_>,
    into: &mut G,
    max_concurrency: usize,
) -> Result<(), ObserveError> {
    let sources = service_tag_sources(arm.endpoint(), !tags.explicit.0.is_empty());
    if sources.contains(&TagSource::File) {
        for t in &tags.explicit.0 {
            into.add_service_tag(t.clone(), None);
        }
    }
    gather(arm, targets, into, max_concurrency).await?;
    let add = |into: &mut G, found: ServiceTags, versions: BTreeMap<String, String>| {
        for t in found.0 {
            if !into.has_service_tag(&t.name) {
                let version = versions.get(&t.name).cloned();
                into.add_service_tag(t, version);
            }
        }
    };
    if sources.contains(&TagSource::Arm) {
        // location -> the first subscription (in id order) that has a spec there.
        let mut locations: BTreeMap<String, String> = BTreeMap::new();
        for s in &targets.tag_subnets {
            if let Some(loc) = into.vnet_location(s) {
                locations
                    .entry(loc.to_ascii_lowercase())
                    .or_insert_with(|| s.subscription().to_string());
            }
        }
        for (location, subscription) in locations {
            let (found, versions) = tags
                .cache
                .get(arm, &subscription, &location, tags.max_age)
                .await?;
            add(into, found, versions);
        }
    }
    if sources.contains(&TagSource::Embedded) {
        let (found, versions) =
            ServiceTags::parse_versioned(EMBEDDED_SERVICE_TAGS).unwrap_or_default();
        add(into, found, versions);
    }
    Ok(())
}

/// `items` reordered round-robin over their subscriptions (each keeps its own order), so
/// work spreads over every subscription's buckets instead of draining one at a time.
pub fn interleave_subscriptions<T>(items: Vec<T>, subscription: impl Fn(&T) -> &str) -> Vec<T> {
    let mut queues: BTreeMap<String, std::collections::VecDeque<T>> = BTreeMap::new();
    for item in items {
        queues
            .entry(subscription(&item).to_ascii_lowercase())
            .or_default()
            .push_back(item);
    }
    let mut out = Vec::new();
    while !queues.is_empty() {
        queues.retain(|_, q| {
            if let Some(item) = q.pop_front() {
                out.push(item);
            }
            !q.is_empty()
        });
    }
    out
}

/// `ids` grouped by subscription and resource group (case-insensitively).
fn by_resource_group(ids: &BTreeSet<ResourceId>) -> Vec<Vec<ResourceId>> {
    let mut groups: BTreeMap<(String, String), Vec<ResourceId>> = BTreeMap::new();
    for id in ids {
        groups
            .entry((
                id.subscription().to_ascii_lowercase(),
                id.resource_group().to_ascii_lowercase(),
            ))
            .or_default()
            .push(id.clone());
    }
    groups.into_values().collect()
}

type GetOne<'a, T> =
    futures::future::BoxFuture<'a, Result<Option<Fetched<T>>, crate::azure::ArmError>>;

/// From this many targets in one resource group on, observe lists the group instead of
/// reading each target: below it, GETs cost as little and name every absent one (404).
const LIST_MIN_TARGETS: usize = 4;

/// The resources `ids` (one resource group), each given to `put` as its snapshot state as
/// it arrives: a GET each for a few, else a list of the group's collection that stops
/// paging once every id was seen, each item converted as it arrives and the others
/// dropped. Absent ones are not given.
async fn fetch_group<T: ParentRead>(
    arm: &ArmClient,
    ids: &[ResourceId],
    put: &mut (dyn FnMut(T::State) + Send),
) -> Result<(), ObserveError> {
    let err = |id: &ResourceId| {
        let id = id.to_string();
        move |source| ObserveError::Arm {
            id,
            source: Box::new(source),
        }
    };
    if ids.len() < LIST_MIN_TARGETS {
        for id in ids {
            if let Some(f) = T::get(arm, id).await.map_err(err(id))? {
                put(T::state(id, f)?);
            }
        }
        return Ok(());
    }
    let key = |id: &str| id.to_ascii_lowercase();
    let wanted: BTreeMap<String, &ResourceId> =
        ids.iter().map(|id| (key(id.as_str()), id)).collect();
    let mut found: BTreeSet<&str> = BTreeSet::new();
    let mut malformed: Option<Malformed> = None;
    let mut each = |f: Fetched<T>| {
        let Some((k, id)) = f
            .raw
            .get("id")
            .and_then(Value::as_str)
            .and_then(|s| wanted.get_key_value(&key(s)))
        else {
            return found.len() == wanted.len();
        };
        match T::state(id, f) {
            Ok(state) => {
                // Once per id: a page repeated by ARM gives nothing twice.
                if found.insert(k.as_str()) {
                    put(state);
                }
            }
            Err(e) => {
                malformed.get_or_insert(e);
                return true;
            }
        }
        found.len() == wanted.len()
    };
    let want = |id: &str| wanted.contains_key(&key(id));
    arm.list_in_group::<T>(
        ids[0].subscription(),
        ids[0].resource_group(),
        T::COLLECTION,
        &want,
        &mut each,
    )
    .await
    .map_err(err(&ids[0]))?;
    match malformed {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// Re-reads one NSG, route table or subnet into `snapshot` (after a 412): present ->
/// replaced, 404 -> removed.
pub async fn refresh(
    arm: &ArmClient,
    snapshot: &mut Snapshot,
    id: &ResourceId,
) -> Result<(), ObserveError> {
    let e = |source| ObserveError::Arm {
        id: id.to_string(),
        source: Box::new(source),
    };
    if id.is_type("Microsoft.Network/networkSecurityGroups") {
        match arm.get_nsg(id).await.map_err(e)? {
            Some(f) => snapshot.insert_nsg(nsg_state(id, f)?),
            None => {
                snapshot.network_security_groups.remove(id);
            }
        }
    } else if id.is_type("Microsoft.Network/routeTables") {
        match arm.get_route_table(id).await.map_err(e)? {
            Some(f) => snapshot.insert_route_table(route_table_state(id, f)?),
            None => {
                snapshot.route_tables.remove(id);
            }
        }
    } else if id.is_type("Microsoft.Network/virtualNetworks/subnets") {
        match arm.get_subnet(id).await.map_err(e)? {
            Some(f) => snapshot.insert_subnet(subnet_state(id, f.raw)?),
            None => {
                snapshot.subnets.remove(id);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_service_tags_parse() {
        let tags = ServiceTags::parse(EMBEDDED_SERVICE_TAGS).unwrap();
        assert!(tags
            .0
            .iter()
            .any(|t| t.name == "AppServiceManagement" && !t.address_prefixes.is_empty()));
    }
}
