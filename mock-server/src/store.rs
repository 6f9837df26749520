//! The resource store: bodies, etags, write history, back-references and operations.
//!
//! Resources are kept by lower-case id (names match case-insensitively while ids keep the
//! create-time casing, domain.md 2.2 and 4.10). Child resources (rules, routes, subnets) live
//! inline in their parent's body, so one etag is stamped on the parent and every child per
//! write (domain.md 4.6). Back-references (`properties.subnets` of NSGs and route tables,
//! domain.md 2.9 and 3.5) are added when a body is rendered, from an index of the subnets'
//! references that [`Store::put`] and [`Store::remove`] keep, the only two ways a stored
//! body changes: they can never go stale, and a GET of one NSG costs its own subnets, not a
//! pass over every subnet of the store (ARM's latency does not grow with the subscription;
//! the mock's did, and a scaled clock multiplied it).
//! Operations are settled lazily: every access first completes the operations whose
//! deadline has passed (domain.md 4.5).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::lro::{OpKind, OpState, Operation};
use crate::model::{ChildKind, Kind};
use crate::validate::References;

/// Finished operations kept for status queries.
const FINISHED_OPS_KEPT: usize = 50_000;

/// A stored top-level resource.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub kind: Kind,
    /// Subscription id as first written.
    pub sub: String,
    /// Resource-group name with its create-time casing (the group's own name for groups).
    pub rg: String,
    /// Canonical body (what GET returns, minus derived fields and transient states).
    pub body: Value,
    /// Extra data that is not part of the body (ASE addresses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aux: Option<Value>,
    /// The operation currently running on this resource.
    #[serde(skip)]
    pub pending: Option<String>,
}

impl Entry {
    pub fn id(&self) -> &str {
        self.body["id"].as_str().unwrap_or_default()
    }

    pub fn name(&self) -> &str {
        self.body["name"].as_str().unwrap_or_default()
    }

    pub fn location(&self) -> &str {
        self.body["location"].as_str().unwrap_or_default()
    }

    pub fn etag(&self) -> Option<&str> {
        self.body["etag"].as_str()
    }

    /// The child array of `child` kind (empty if absent).
    pub fn children(&self, child: ChildKind) -> &[Value] {
        self.body["properties"][child.segment()]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

/// The references of a VNet's subnets to NSGs and route tables: lower-case target id ->
/// subnet ids, in the VNet's order. Other kinds hold none.
fn subnet_refs(entry: &Entry) -> HashMap<String, Vec<String>> {
    let mut found: HashMap<String, Vec<String>> = HashMap::new();
    if entry.kind != Kind::VirtualNetwork {
        return found;
    }
    for subnet in entry.children(ChildKind::Subnet) {
        for field in ["networkSecurityGroup", "routeTable"] {
            if let (Some(target), Some(subnet_id)) = (
                subnet["properties"][field]["id"].as_str(),
                subnet["id"].as_str(),
            ) {
                found
                    .entry(key(target))
                    .or_default()
                    .push(subnet_id.to_owned());
            }
        }
    }
    found
}

/// Key of a resource: its id in lower case.
pub fn key(id: &str) -> String {
    id.to_ascii_lowercase()
}

/// Set `etag` on the resource and on every child (domain.md 4.6).
pub fn stamp_etag(body: &mut Value, etag: &str) {
    body["etag"] = json!(etag);
    if let Some(props) = body.get_mut("properties").and_then(Value::as_object_mut) {
        for (_, value) in props.iter_mut() {
            if let Some(items) = value.as_array_mut() {
                for item in items
                    .iter_mut()
                    .filter(|i| i.get("id").is_some() && i.get("properties").is_some())
                {
                    item["etag"] = json!(etag);
                    if let Some(delegations) = item["properties"]
                        .get_mut("delegations")
                        .and_then(Value::as_array_mut)
                    {
                        for d in delegations {
                            d["etag"] = json!(etag);
                        }
                    }
                }
            }
        }
    }
}

/// A new weak etag `W/"<guid>"`.
pub fn new_etag() -> String {
    format!("W/\"{}\"", uuid::Uuid::new_v4())
}

/// Everything the mock knows.
#[derive(Debug, Default)]
pub struct Store {
    /// Private: every change goes through `put` and `remove`, which keep `references`.
    resources: BTreeMap<String, Entry>,
    /// The subnets referencing each NSG / route table: lower-case target id -> VNet key ->
    /// subnet ids in the VNet's order (the order a pass over `resources` finds them in).
    references: HashMap<String, BTreeMap<String, Vec<String>>>,
    history: HashMap<String, VecDeque<Value>>,
    history_limit: usize,
    ops: HashMap<String, Operation>,
    due: BTreeSet<(Instant, String)>,
    finished: VecDeque<String>,
    /// Incremented on every write; persistence writes only newer snapshots.
    pub version: u64,
}

/// What is persisted in the state file.
#[derive(Debug, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u64,
    pub resources: Vec<Entry>,
}

impl Store {
    pub fn new(history_limit: usize) -> Self {
        Self {
            history_limit: history_limit.max(1),
            ..Self::default()
        }
    }

    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.resources.get(key)
    }

    /// Every entry by key (lower-case id), for listings.
    pub fn resources(&self) -> &BTreeMap<String, Entry> {
        &self.resources
    }

    pub fn resource_group(&self, sub: &str, rg: &str) -> Option<&Entry> {
        self.resources
            .get(&key(&Kind::ResourceGroup.id(sub, rg, rg)))
    }

    /// Insert or replace an entry and record the new version in the history.
    pub fn put(&mut self, key: String, entry: Entry) {
        self.record(&key, &entry.body);
        if let Some(old) = self.resources.remove(&key) {
            self.unindex(&key, &old);
        }
        for (target, subnets) in subnet_refs(&entry) {
            self.references
                .entry(target)
                .or_default()
                .insert(key.clone(), subnets);
        }
        self.resources.insert(key, entry);
        self.version += 1;
    }

    /// Drops the references of a VNet's subnets from the index (other kinds hold none).
    fn unindex(&mut self, vnet_key: &str, old: &Entry) {
        for target in subnet_refs(old).into_keys() {
            if let Some(by_vnet) = self.references.get_mut(&target) {
                by_vnet.remove(vnet_key);
                if by_vnet.is_empty() {
                    self.references.remove(&target);
                }
            }
        }
    }

    fn record(&mut self, key: &str, body: &Value) {
        let versions = self.history.entry(key.to_owned()).or_default();
        versions.push_back(body.clone());
        while versions.len() > self.history_limit {
            versions.pop_front();
        }
    }

    /// Remove an entry (the history is kept).
    pub fn remove(&mut self, key: &str) -> Option<Entry> {
        self.version += 1;
        let removed = self.resources.remove(key)?;
        self.unindex(key, &removed);
        Some(removed)
    }

    /// Every stored version of a resource. For a child id, the child as it was in each
    /// version of its parent that contained it.
    pub fn history(&self, id: &str) -> Vec<Value> {
        let id_key = key(id.trim_end_matches('/'));
        if let Some(versions) = self.history.get(&id_key) {
            return versions.iter().cloned().collect();
        }
        // A child: `<parent id>/<segment>/<name>`.
        let mut parts = id_key.rsplitn(3, '/');
        let (Some(child_name), Some(_segment), Some(parent)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Vec::new();
        };
        let Some(versions) = self.history.get(parent) else {
            return Vec::new();
        };
        versions
            .iter()
            .filter_map(|parent_body| {
                parent_body["properties"]
                    .as_object()?
                    .values()
                    .filter_map(Value::as_array)
                    .flatten()
                    .find(|child| {
                        child["id"].as_str().is_some_and(|cid| key(cid) == id_key)
                            && child["name"]
                                .as_str()
                                .is_some_and(|n| n.eq_ignore_ascii_case(child_name))
                    })
                    .cloned()
            })
            .collect()
    }

    // -----------------------------------------------------------------------------------------
    // Operations

    pub fn op(&self, id: &str) -> Option<&Operation> {
        self.ops.get(id)
    }

    /// Register an operation and mark its resource as busy.
    pub fn start_op(&mut self, op: Operation) {
        if let Some(entry) = self.resources.get_mut(&op.resource_key) {
            entry.pending = Some(op.id.clone());
        }
        self.due.insert((op.deadline, op.id.clone()));
        self.ops.insert(op.id.clone(), op);
    }

    /// Whether a running (not yet settled) operation holds this resource.
    pub fn busy(&self, key: &str) -> Option<&Operation> {
        let entry = self.resources.get(key)?;
        let op = self.ops.get(entry.pending.as_deref()?)?;
        op.in_progress().then_some(op)
    }

    /// Complete every operation whose deadline is at or before `now`.
    pub fn settle(&mut self, now: Instant) {
        while let Some(first) = self.due.first().cloned() {
            if first.0 > now {
                break;
            }
            self.due.remove(&first);
            self.complete(&first.1);
        }
    }

    fn complete(&mut self, op_id: &str) {
        let Some(op) = self.ops.get(op_id).cloned() else {
            return;
        };
        let owns_entry = self
            .resources
            .get(&op.resource_key)
            .is_some_and(|e| e.pending.as_deref() == Some(op_id));
        let state = match (&op.failure, owns_entry) {
            (None, true) => {
                if op.removes_entry {
                    self.remove(&op.resource_key);
                } else if let Some(entry) = self.resources.get_mut(&op.resource_key) {
                    entry.pending = None;
                }
                OpState::Succeeded
            }
            (None, false) => OpState::Succeeded,
            (Some(failure), owns) => {
                if owns {
                    self.fail_entry(&op, failure.keep_write);
                }
                OpState::Failed {
                    code: failure.code.clone(),
                    message: failure.message.clone(),
                }
            }
        };
        if let Some(stored) = self.ops.get_mut(op_id) {
            stored.state = state;
        }
        self.finished.push_back(op_id.to_owned());
        while self.finished.len() > FINISHED_OPS_KEPT {
            if let Some(old) = self.finished.pop_front() {
                self.ops.remove(&old);
            }
        }
    }

    /// A failed write: roll back to the version before it (or drop a failed create), or
    /// keep it; either way the resource ends `Failed` (domain.md 4.5).
    fn fail_entry(&mut self, op: &Operation, keep_write: bool) {
        let key = op.resource_key.clone();
        if op.kind == OpKind::Delete {
            if let Some(entry) = self.resources.get_mut(&key) {
                entry.pending = None;
            }
            return;
        }
        let versions = self.history.get(&key);
        let previous = if keep_write {
            versions.and_then(|v| v.back().cloned())
        } else {
            versions.and_then(|v| v.len().checked_sub(2).and_then(|i| v.get(i).cloned()))
        };
        let Some(mut body) = previous else {
            self.remove(&key);
            return;
        };
        body["properties"]["provisioningState"] = json!("Failed");
        stamp_etag(&mut body, &new_etag());
        if let Some(entry) = self.resources.get(&key).cloned() {
            self.put(
                key,
                Entry {
                    body,
                    pending: None,
                    ..entry
                },
            );
        }
    }

    // -----------------------------------------------------------------------------------------
    // Rendering

    /// Subnet ids referencing each NSG / route table (lower-case target id -> subnet ids).
    pub fn subnet_references(&self) -> HashMap<String, Vec<String>> {
        self.references
            .iter()
            .map(|(target, by_vnet)| {
                (
                    target.clone(),
                    by_vnet.values().flatten().cloned().collect(),
                )
            })
            .collect()
    }

    /// The body of an entry as GET returns it: transient provisioning state and derived
    /// back-references included.
    pub fn render(&self, entry: &Entry, refs: &HashMap<String, Vec<String>>) -> Value {
        let mut body = entry.body.clone();
        if matches!(entry.kind, Kind::NetworkSecurityGroup | Kind::RouteTable) {
            if let Some(subnets) = refs.get(&key(entry.id())) {
                let list: Vec<Value> = subnets.iter().map(|id| json!({ "id": id })).collect();
                body["properties"]["subnets"] = Value::Array(list);
            }
        }
        let running = entry
            .pending
            .as_deref()
            .and_then(|id| self.ops.get(id))
            .filter(|op| op.in_progress());
        if let Some(op) = running {
            let state = match op.kind {
                OpKind::Delete if op.removes_entry => "Deleting",
                _ => "Updating",
            };
            set_provisioning_state(&mut body, state);
        }
        body
    }

    /// The subnets that reference `target` (an NSG or route table id), without building
    /// the whole map.
    pub fn subnet_references_to(&self, target: &str) -> Vec<String> {
        self.references
            .get(&key(target))
            .map(|by_vnet| by_vnet.values().flatten().cloned().collect())
            .unwrap_or_default()
    }

    /// Render one entry by key.
    pub fn render_key(&self, key: &str) -> Option<Value> {
        let entry = self.resources.get(key)?;
        let mut refs = HashMap::new();
        if matches!(entry.kind, Kind::NetworkSecurityGroup | Kind::RouteTable) {
            let users = self.subnet_references_to(entry.id());
            if !users.is_empty() {
                refs.insert(entry.id().to_ascii_lowercase(), users);
            }
        }
        Some(self.render(entry, &refs))
    }

    // -----------------------------------------------------------------------------------------
    // Persistence

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            version: self.version,
            resources: self.resources.values().cloned().collect(),
        }
    }

    pub fn restore(&mut self, snapshot: Snapshot) {
        for entry in snapshot.resources {
            let k = key(entry.id());
            self.put(k, entry);
        }
        self.version = snapshot.version.max(self.version);
    }
}

/// Set `provisioningState` on a body and all of its children.
pub fn set_provisioning_state(body: &mut Value, state: &str) {
    let Some(props) = body.get_mut("properties").and_then(Value::as_object_mut) else {
        return;
    };
    props.insert("provisioningState".into(), json!(state));
    for (_, value) in props.iter_mut() {
        if let Some(items) = value.as_array_mut() {
            for item in items {
                if let Some(child_props) = item.get_mut("properties").and_then(Value::as_object_mut)
                {
                    if child_props.contains_key("provisioningState") {
                        child_props.insert("provisioningState".into(), json!(state));
                    }
                }
            }
        }
    }
}

impl References for Store {
    fn resolve(&self, kind: Kind, id: &str) -> Option<String> {
        self.resources
            .get(&key(id.trim_end_matches('/')))
            .filter(|entry| entry.kind == kind)
            .map(|entry| entry.id().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NSG_A: &str =
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/networkSecurityGroups/a";
    const NSG_B: &str =
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/networkSecurityGroups/b";
    const RT: &str =
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/routeTables/rt";

    fn vnet(name: &str, subnets: &[(&str, Option<&str>, Option<&str>)]) -> (String, Entry) {
        let id = format!(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/{name}"
        );
        let subnets: Vec<Value> = subnets
            .iter()
            .map(|(s, nsg, rt)| {
                let mut props = json!({"addressPrefix": "10.0.0.0/24"});
                if let Some(n) = nsg {
                    props["networkSecurityGroup"] = json!({ "id": n });
                }
                if let Some(r) = rt {
                    props["routeTable"] = json!({ "id": r });
                }
                json!({"id": format!("{id}/subnets/{s}"), "name": s, "properties": props})
            })
            .collect();
        let entry = Entry {
            kind: Kind::VirtualNetwork,
            sub: "s".into(),
            rg: "rg".into(),
            body: json!({"id": id, "name": name, "properties": {"subnets": subnets}}),
            aux: None,
            pending: None,
        };
        (key(&id), entry)
    }

    /// What the index must say: a pass over every subnet of the store.
    fn scanned(store: &Store, target: &str) -> Vec<String> {
        let mut out = Vec::new();
        for entry in store.resources().values() {
            for (t, subnets) in subnet_refs(entry) {
                if t == key(target) {
                    out.extend(subnets);
                }
            }
        }
        out
    }

    fn assert_index_is_the_scan(store: &Store) {
        for target in [NSG_A, NSG_B, RT, &NSG_A.to_uppercase()] {
            assert_eq!(
                store.subnet_references_to(target),
                scanned(store, target),
                "{target}"
            );
        }
        let all = store.subnet_references();
        assert!(
            all.values().all(|v| !v.is_empty()),
            "no empty entries: {all:?}"
        );
        for (target, subnets) in &all {
            assert_eq!(subnets, &scanned(store, target));
        }
    }

    #[test]
    fn the_reference_index_follows_every_put_and_remove() {
        let mut store = Store::new(4);
        let (v1, e1) = vnet(
            "v1",
            &[("s1", Some(NSG_A), Some(RT)), ("s2", Some(NSG_B), None)],
        );
        let (v2, e2) = vnet("v2", &[("s3", Some(&NSG_A.to_uppercase()), None)]);
        store.put(v1.clone(), e1);
        store.put(v2.clone(), e2);
        assert_index_is_the_scan(&store);
        assert_eq!(
            store.subnet_references_to(NSG_A).len(),
            2,
            "both VNets, either casing"
        );
        assert_eq!(store.subnet_references_to(RT).len(), 1);

        // A VNet written again: s1 leaves NSG a and the route table, s2 joins NSG a.
        let (_, e1) = vnet(
            "v1",
            &[("s1", Some(NSG_B), None), ("s2", Some(NSG_A), None)],
        );
        store.put(v1.clone(), e1);
        assert_index_is_the_scan(&store);
        assert!(store.subnet_references_to(RT).is_empty());
        assert!(!store.subnet_references().contains_key(&key(RT)));

        store.remove(&v2);
        assert_index_is_the_scan(&store);
        assert_eq!(store.subnet_references_to(NSG_A).len(), 1);
        store.remove(&v1);
        assert!(store.subnet_references().is_empty());
    }
}
