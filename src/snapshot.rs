//! What `observe` read from Azure, in the canonical model: the input of the resolver and
//! of the diff besides the specs.
//!
//! A snapshot is plain data. It is produced by `observe` from ARM (one GET per NSG, route
//! table and subnet, docs/design.md section 3) or loaded from a YAML/JSON file for
//! `asenet resolve --snapshot` and tests. A resource that is absent from the snapshot does
//! not exist in Azure (observe turns 404 into absence), so the plan creates it.
//!
//! `raw` fields keep the ARM JSON as read, so that `apply` writes back every property
//! asenet does not manage (foreign rules byte for byte, subnet delegations, tags...). They
//! are not part of the serialised snapshot. They are held as compact JSON text
//! ([`RawJson`]), not as `serde_json::Value` trees, and a parent's raw JSON leaves out what
//! is held elsewhere or never written back (its child list, read-only properties): a
//! snapshot of 10,000 ASEs is held by the controller for every component it plans
//! (issue 14's process memory target).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::model::{ResourceId, Route, SecurityRule};

/// Everything the resolver and the diff may know about Azure.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    #[serde(default, with = "by_id")]
    pub virtual_networks: BTreeMap<ResourceId, VnetState>,
    #[serde(default, with = "by_id")]
    pub subnets: BTreeMap<ResourceId, SubnetState>,
    #[serde(default, with = "by_id")]
    pub network_security_groups: BTreeMap<ResourceId, NsgState>,
    #[serde(default, with = "by_id")]
    pub route_tables: BTreeMap<ResourceId, RouteTableState>,
    #[serde(default, with = "by_id")]
    pub environments: BTreeMap<ResourceId, EnvironmentState>,
    /// Service tags by name (`AppServiceManagement`, `Sql.WestUS`), IPv4 prefixes only.
    #[serde(default, with = "by_name")]
    pub service_tags: BTreeMap<String, ServiceTagState>,
    /// The `changeNumber` of each service tag as its source published it (docs/domain.md
    /// 5.1), by tag name; empty when the source gives none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub service_tag_versions: BTreeMap<String, String>,
}

impl Snapshot {
    /// The VNet a subnet belongs to.
    pub fn vnet_of(&self, subnet: &ResourceId) -> Option<&VnetState> {
        subnet.parent().and_then(|v| self.virtual_networks.get(&v))
    }

    /// The `changeNumber` of a service tag, matched case-insensitively.
    pub fn service_tag_version(&self, name: &str) -> Option<&str> {
        self.service_tag_versions
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// A service tag, matched case-insensitively.
    pub fn service_tag(&self, name: &str) -> Option<&ServiceTagState> {
        self.service_tags.get(name).or_else(|| {
            self.service_tags
                .values()
                .find(|t| t.name.eq_ignore_ascii_case(name))
        })
    }

    pub fn insert_vnet(&mut self, v: VnetState) {
        self.virtual_networks.insert(v.id.clone(), v);
    }
    pub fn insert_subnet(&mut self, s: SubnetState) {
        self.subnets.insert(s.id.clone(), s);
    }
    pub fn insert_nsg(&mut self, n: NsgState) {
        self.network_security_groups.insert(n.id.clone(), n);
    }
    pub fn insert_route_table(&mut self, r: RouteTableState) {
        self.route_tables.insert(r.id.clone(), r);
    }
    pub fn insert_environment(&mut self, e: EnvironmentState) {
        self.environments.insert(e.id.clone(), e);
    }
    pub fn insert_service_tag(&mut self, t: ServiceTagState) {
        self.service_tags.insert(t.name.clone(), t);
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VnetState {
    pub id: ResourceId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    pub address_prefixes: Vec<Ipv4Net>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubnetState {
    pub id: ResourceId,
    pub address_prefix: Ipv4Net,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_security_group: Option<ResourceId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_table: Option<ResourceId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// The subnet as ARM returned it, without read-only properties (carried unchanged on
    /// write, docs/domain.md 4.4).
    #[serde(skip)]
    pub raw: Option<RawJson>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NsgState {
    pub id: ResourceId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Custom rules (owned and foreign), not the six default rules.
    /// Shared: the resolver's desired rule is this very rule when it wants it unchanged,
    /// and a write's simulation (`diff::apply_in_place`) puts the desired rules here
    /// without copying them (issue 14's memory: a component of 10,000 specs holds ~200,000).
    #[serde(default)]
    pub rules: Vec<Arc<SecurityRule>>,
    /// ARM JSON of each custom rule as read, keyed by lower-cased rule name.
    #[serde(skip)]
    pub raw_rules: RawChildren,
    /// The NSG as ARM returned it, without its rules (in `raw_rules`) and read-only
    /// properties ([`crate::azure::wire::writable`]).
    #[serde(skip)]
    pub raw: Option<RawJson>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteTableState {
    pub id: ResourceId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default)]
    pub disable_bgp_route_propagation: bool,
    #[serde(default)]
    pub routes: Vec<Route>,
    /// The service-tag change numbers recorded on the table (its ARM tag
    /// [`crate::resolver::SERVICE_TAGS_TAG`], tag name -> change number; domain.md 5.1):
    /// what its owned routes were computed from when asenet last wrote it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub recorded_service_tags: BTreeMap<String, String>,
    /// ARM JSON of each route as read, keyed by lower-cased route name.
    #[serde(skip)]
    pub raw_routes: RawChildren,
    /// The route table as ARM returned it, without its routes (in `raw_routes`) and
    /// read-only properties.
    #[serde(skip)]
    pub raw: Option<RawJson>,
}

/// A JSON document as ARM returned it, held as its compact text: a fraction of the memory of
/// a `serde_json::Value` tree (no node per key and value). `serde_json` writes object keys
/// in sorted order (no `preserve_order` feature), so two texts are equal exactly when the
/// documents are.
#[derive(Clone, PartialEq, Eq)]
pub struct RawJson(Box<str>);

impl RawJson {
    pub fn new(value: &serde_json::Value) -> Self {
        RawJson(value.to_string().into_boxed_str())
    }

    /// The document as a `Value` (parsed anew on each call).
    pub fn value(&self) -> serde_json::Value {
        // The text was written by serde_json from a `Value`, so it parses.
        serde_json::from_str(&self.0).unwrap_or(serde_json::Value::Null)
    }

    /// The string at JSON pointer `pointer`, if the document has one there.
    pub fn string_at(&self, pointer: &str) -> Option<String> {
        match self
            .value()
            .pointer_mut(pointer)
            .map(serde_json::Value::take)
        {
            Some(serde_json::Value::String(s)) => Some(s),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<serde_json::Value> for RawJson {
    fn from(value: serde_json::Value) -> Self {
        RawJson::new(&value)
    }
}

impl std::fmt::Debug for RawJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A child entry (security rule or route) as read, without what a write re-stamps
/// ([`crate::azure::wire::carried_child`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawChild {
    /// Its JSON, when it holds anything the model does not reproduce.
    Json(RawJson),
    /// Exactly what ARM answers for the entry as asenet renders it (its id, type, and the
    /// empty lists and defaults ARM fills in): reproduced from the model when carried
    /// (`wire::as_arm_answers`), byte for byte, so its text is not held. Most owned
    /// entries, and foreign ones written in the same canonical form.
    AsRendered,
}

impl From<serde_json::Value> for RawChild {
    fn from(value: serde_json::Value) -> Self {
        RawChild::Json(RawJson::new(&value))
    }
}

/// The child entries of a parent as read ([`RawChild`] by lower-cased name), holding
/// nothing for the entries read as [`RawChild::AsRendered`]: a parent read from ARM
/// (`read`) answers `AsRendered` for every name it holds no JSON for. Most entries are
/// asenet's own, read back exactly as rendered; a component of 10,000 specs has ~200,000
/// of them, which no longer cost a name each (issue 14's memory).
///
/// A parent not read (created by a plan, or from a snapshot file) answers `None`: its
/// entries are rendered from the model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawChildren {
    /// Only [`RawChild::Json`] entries.
    json: BTreeMap<String, RawChild>,
    read: bool,
}

/// What [`RawChildren::get`] answers for an entry without JSON in a parent read from ARM.
static AS_RENDERED: RawChild = RawChild::AsRendered;

impl RawChildren {
    /// The children of a parent read from ARM: `AsRendered` unless [`RawChildren::insert`]
    /// gives JSON.
    pub fn read() -> Self {
        RawChildren {
            json: BTreeMap::new(),
            read: true,
        }
    }

    /// Records the entry `key` (lower-cased name) as read. `AsRendered` is recorded by
    /// holding nothing, in a parent read from ARM.
    pub fn insert(&mut self, key: String, child: RawChild) {
        match child {
            RawChild::Json(_) => {
                self.json.insert(key, child);
            }
            RawChild::AsRendered => {
                debug_assert!(
                    self.read,
                    "AsRendered is only known of a parent read from ARM"
                );
                self.json.remove(&key);
            }
        }
    }

    /// The entry `key` (lower-cased name) as read; `None` for a parent not read.
    pub fn get(&self, key: &str) -> Option<&RawChild> {
        self.json
            .get(key)
            .or_else(|| self.read.then_some(&AS_RENDERED))
    }

    /// Drops the JSON of every entry but those `keep` names: the entries written by asenet
    /// are then what ARM answers for its rendering.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.json.retain(|k, _| keep(k));
    }

    /// How many entries are held as JSON.
    pub fn json_len(&self) -> usize {
        self.json.len()
    }
}

/// An NSG or a route table as read: the parent of rules or of routes. Lets the code that
/// treats both alike (the diff's simulation of a write) be written once.
pub trait ParentState {
    /// `SecurityRule` or `Route`.
    type Entry;
    /// A resource that does not exist yet, as a create leaves it: no entries, no etag.
    fn empty(id: ResourceId, location: Option<String>) -> Self;
    fn entries_mut(&mut self) -> &mut Vec<Self::Entry>;
    /// ARM JSON of each entry as read, keyed by lower-cased name.
    fn raw_entries_mut(&mut self) -> &mut RawChildren;
}

impl ParentState for NsgState {
    type Entry = Arc<SecurityRule>;
    fn empty(id: ResourceId, location: Option<String>) -> Self {
        NsgState {
            id,
            location,
            etag: None,
            rules: vec![],
            raw_rules: RawChildren::default(),
            raw: None,
        }
    }
    fn entries_mut(&mut self) -> &mut Vec<Arc<SecurityRule>> {
        &mut self.rules
    }
    fn raw_entries_mut(&mut self) -> &mut RawChildren {
        &mut self.raw_rules
    }
}

impl ParentState for RouteTableState {
    type Entry = Route;
    fn empty(id: ResourceId, location: Option<String>) -> Self {
        RouteTableState {
            id,
            location,
            etag: None,
            disable_bgp_route_propagation: false,
            routes: vec![],
            recorded_service_tags: BTreeMap::new(),
            raw_routes: RawChildren::default(),
            raw: None,
        }
    }
    fn entries_mut(&mut self) -> &mut Vec<Route> {
        &mut self.routes
    }
    fn raw_entries_mut(&mut self) -> &mut RawChildren {
        &mut self.raw_routes
    }
}

/// Addresses of an App Service Environment (docs/domain.md 1.5: `capacities/virtualip`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentState {
    /// The `Microsoft.Web/hostingEnvironments` id.
    pub id: ResourceId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_vip: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbound: Vec<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_ip: Option<Ipv4Addr>,
    /// The ASE's subnet, when Azure reports it (`properties.virtualNetwork.id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<ResourceId>,
}

/// A service tag's IPv4 prefixes and where it may be used (docs/domain.md 5.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceTagState {
    pub name: String,
    #[serde(default)]
    pub address_prefixes: Vec<Ipv4Net>,
    /// Subset of `API`, `NSG`, `UDR`, `FW`, `VSE`.
    #[serde(default)]
    pub network_features: Vec<String>,
}

impl ServiceTagState {
    /// True when the tag may be a route's address prefix (docs/domain.md 3.3): its
    /// `networkFeatures` list `UDR`. ARM's Service Tags API gives no `networkFeatures`
    /// (domain.md 5.1); for a tag without them the derived rule of 3.3 applies: only global
    /// tags (no `.region` suffix) are usable in routes.
    pub fn usable_in_routes(&self) -> bool {
        if self.network_features.is_empty() {
            return !self.name.contains('.');
        }
        self.network_features
            .iter()
            .any(|f| f.eq_ignore_ascii_case("UDR"))
    }
}

/// Serialises a map keyed by resource id as a list of its values, and back.
mod by_id {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub trait HasId {
        fn id(&self) -> &ResourceId;
    }
    macro_rules! has_id {
        ($($t:ty),*) => {$(impl HasId for $t { fn id(&self) -> &ResourceId { &self.id } })*};
    }
    has_id!(
        VnetState,
        SubnetState,
        NsgState,
        RouteTableState,
        EnvironmentState
    );

    pub fn serialize<S: Serializer, T: Serialize>(
        map: &BTreeMap<ResourceId, T>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.values())
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de> + HasId>(
        d: D,
    ) -> Result<BTreeMap<ResourceId, T>, D::Error> {
        let list = Vec::<T>::deserialize(d)?;
        let mut map = BTreeMap::new();
        for item in list {
            let id = item.id().clone();
            if map.insert(id.clone(), item).is_some() {
                return Err(serde::de::Error::custom(format!(
                    "resource `{id}` is listed twice"
                )));
            }
        }
        Ok(map)
    }
}

mod by_name {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        map: &BTreeMap<String, ServiceTagState>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.values())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, ServiceTagState>, D::Error> {
        let list = Vec::<ServiceTagState>::deserialize(d)?;
        Ok(list.into_iter().map(|t| (t.name.clone(), t)).collect())
    }
}
