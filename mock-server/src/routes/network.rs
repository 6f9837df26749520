//! Handlers for resource groups and the Microsoft.Network resources (domain.md 4.1-4.6).
//!
//! Every write follows the same steps under the store lock: resolve the parent (404s of
//! domain.md 4.7), check preconditions (4.6), validate and canonicalise the body
//! (`validate`), stamp a new etag, store it with a history entry and start its long-running
//! operation (4.5). Back-references are derived, so association changes need no bookkeeping.

use std::time::Duration;

use http::{HeaderName, StatusCode};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use super::{page, page_of, retry_after_headers, Ctx, Reply};
use crate::error::ArmError;
use crate::lro::{self, OpKind, OpState, Operation};
use crate::model::{ChildKind, Kind};
use crate::store::{key, new_etag, stamp_etag, Entry, Store};
use crate::validate;

type Result<T> = std::result::Result<T, ArmError>;

// ---------------------------------------------------------------------------------------------
// Shared steps

fn require_group<'a>(store: &'a Store, sub: &str, rg: &str) -> Result<&'a Entry> {
    store
        .resource_group(sub, rg)
        .ok_or_else(|| ArmError::resource_group_not_found(rg))
}

fn strip_etag(value: &str) -> &str {
    let value = value.trim();
    let value = value.strip_prefix("W/").unwrap_or(value);
    value.trim_matches('"')
}

fn etag_matches(header: &str, current: &str) -> bool {
    header.split(',').any(|candidate| {
        let candidate = candidate.trim();
        candidate == "*" || strip_etag(candidate) == strip_etag(current)
    })
}

/// The RPC precondition table (domain.md 4.6). `current` is the etag of the existing
/// resource (`None` when absent).
fn preconditions(cx: &Ctx, current: Option<&str>) -> Result<()> {
    let if_match = cx
        .if_match
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty() && *v != "\"\"");
    let if_none_match = cx
        .if_none_match
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty());
    if let Some(expected) = if_match {
        match current {
            None => {
                return Err(ArmError::precondition_failed(format!(
                    "The condition If-Match: {expected} is not met: the resource does not exist."
                )))
            }
            Some(etag) if !etag_matches(expected, etag) => {
                return Err(ArmError::precondition_failed(format!(
                    "The condition If-Match: {expected} is not met: the current etag is {etag}."
                )))
            }
            Some(_) => {}
        }
    }
    if let (Some(unexpected), Some(etag)) = (if_none_match, current) {
        if etag_matches(unexpected, etag) {
            return Err(ArmError::precondition_failed(format!(
                "The condition If-None-Match: {unexpected} is not met: the resource exists with etag {etag}."
            )));
        }
    }
    Ok(())
}

/// 409 `AnotherOperationInProgress` (domain.md 4.4, 4.7).
fn another_operation(cx: &Ctx, op: &Operation, sub: &str) -> ArmError {
    let url = lro::status_url(&cx.base, sub, &op.location, &op.id, &cx.api_version);
    ArmError::new(
        StatusCode::CONFLICT,
        "AnotherOperationInProgress",
        format!(
            "Another operation on this or dependent resource is in progress. To retrieve status of the \
             operation use uri: {url}."
        ),
    )
    .nrp()
}

/// Start the long-running operation of a write and return its LRO headers (domain.md 4.5).
fn start_operation(
    cx: &Ctx,
    store: &mut Store,
    resource_key: &str,
    kind: OpKind,
    removes_entry: bool,
) -> (Operation, Vec<(HeaderName, String)>) {
    let config = cx.state.config();
    let entry = store.get(resource_key);
    let location = entry
        .map(|e| e.location().to_owned())
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| "westeurope".to_owned());
    let sub = entry.map(|e| e.sub.clone()).unwrap_or_default();
    let op = Operation {
        id: uuid::Uuid::new_v4().to_string(),
        location: location.clone(),
        resource_key: resource_key.to_owned(),
        kind,
        removes_entry,
        started: OffsetDateTime::now_utc(),
        deadline: {
            let now = std::time::Instant::now();
            // A configured delay too large for the clock means "never" in practice.
            now.checked_add(config.real(config.lro_delay))
                .unwrap_or(now + Duration::from_secs(86_400 * 365))
        },
        failure: cx.lro_failure.clone(),
        state: OpState::InProgress,
    };
    store.start_op(op.clone());
    let mut headers = vec![
        (
            HeaderName::from_static("azure-asyncoperation"),
            lro::status_url(&cx.base, &sub, &location, &op.id, &cx.api_version),
        ),
        (HeaderName::from_static("x-ms-request-id"), op.id.clone()),
    ];
    if kind == OpKind::Delete {
        headers.push((
            http::header::LOCATION,
            lro::result_url(&cx.base, &sub, &location, &op.id, &cx.api_version),
        ));
    }
    headers.extend(retry_after_headers(config.real(config.lro_retry_after)));
    (op, headers)
}

fn not_found(kind: Kind, name: &str, rg: &str) -> ArmError {
    ArmError::resource_not_found(kind.type_name(), name, rg)
}

fn with_etag(reply: Reply, body: &Value) -> Reply {
    match body["etag"].as_str() {
        Some(etag) => {
            let etag = etag.to_owned();
            reply.header(http::header::ETAG, etag)
        }
        None => reply,
    }
}

// ---------------------------------------------------------------------------------------------
// Resource groups (Microsoft.Resources; synchronous)

pub(super) fn list_groups(cx: &Ctx, sub: &str) -> Result<Reply> {
    let store = cx.state.store();
    let prefix = key(&format!("/subscriptions/{sub}/resourceGroups/"));
    let items = store
        .resources()
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .filter(|(_, e)| e.kind == Kind::ResourceGroup)
        .map(|(_, e)| e.body.clone())
        .collect();
    page(cx, items)
}

pub(super) fn get_group(cx: &Ctx, sub: &str, rg: &str) -> Result<Reply> {
    let store = cx.state.store();
    let group = require_group(&store, sub, rg)?;
    Ok(Reply::json(StatusCode::OK, group.body.clone()))
}

pub(super) fn put_group(cx: &Ctx, sub: &str, rg: &str, body: &Map<String, Value>) -> Result<Reply> {
    validate::resource_group_name(rg)?;
    let mut store = cx.state.store();
    let existing = store.resource_group(sub, rg).cloned();
    let (sub_c, name) = existing
        .as_ref()
        .map(|e| (e.sub.clone(), e.rg.clone()))
        .unwrap_or_else(|| (sub.to_owned(), rg.to_owned()));
    let id = Kind::ResourceGroup.id(&sub_c, &name, &name);
    let canonical =
        validate::resource_group(&id, &name, body, existing.as_ref().map(Entry::location))?;
    store.put(
        key(&id),
        Entry {
            kind: Kind::ResourceGroup,
            sub: sub_c,
            rg: name,
            body: canonical.clone(),
            aux: None,
            pending: None,
        },
    );
    let status = if existing.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(Reply::json(status, canonical))
}

/// Deleting a group deletes everything in it (synchronously, unlike ARM's 202).
pub(super) fn delete_group(cx: &Ctx, sub: &str, rg: &str) -> Result<Reply> {
    let mut store = cx.state.store();
    let Some(group) = store.resource_group(sub, rg).cloned() else {
        return Ok(Reply::empty(StatusCode::NO_CONTENT));
    };
    let group_key = key(group.id());
    let prefix = format!("{group_key}/");
    let doomed: Vec<String> = store
        .resources()
        .keys()
        .filter(|k| k.starts_with(&prefix) || **k == group_key)
        .cloned()
        .collect();
    for k in doomed {
        store.remove(&k);
    }
    Ok(Reply::empty(StatusCode::OK))
}

// ---------------------------------------------------------------------------------------------
// Top-level resources

pub(super) fn list(cx: &Ctx, sub: &str, rg: Option<&str>, kind: Kind) -> Result<Reply> {
    let store = cx.state.store();
    let prefix = match rg {
        Some(rg) => {
            let group = require_group(&store, sub, rg)?;
            format!("{}/", key(group.id()))
        }
        None => key(&format!("/subscriptions/{sub}/")),
    };
    let items: Vec<&Entry> = store
        .resources()
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .filter(|(_, e)| e.kind == kind)
        .map(|(_, e)| e)
        .collect();
    let refs = store.subnet_references();
    page_of(cx, items, |e| store.render(e, &refs))
}

fn item_key(store: &Store, sub: &str, rg: &str, kind: Kind, name: &str) -> Result<(String, Entry)> {
    let group = require_group(store, sub, rg)?;
    let k = key(&kind.id(sub, rg, name));
    Ok((k, group.clone()))
}

pub(super) fn get_item(cx: &Ctx, sub: &str, rg: &str, kind: Kind, name: &str) -> Result<Reply> {
    let store = cx.state.store();
    let (k, _) = item_key(&store, sub, rg, kind, name)?;
    let body = store
        .render_key(&k)
        .ok_or_else(|| not_found(kind, name, rg))?;
    if kind == Kind::HostingEnvironment {
        return Ok(Reply::json(StatusCode::OK, body));
    }
    Ok(with_etag(Reply::json(StatusCode::OK, body.clone()), &body))
}

/// Validate and canonicalise a top-level body.
fn canonical_top(
    store: &Store,
    kind: Kind,
    id: &str,
    name: &str,
    body: &Map<String, Value>,
    existing: Option<&Entry>,
) -> Result<Value> {
    let location = existing.map(Entry::location);
    let guid = existing
        .and_then(|e| e.body["properties"]["resourceGuid"].as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    match kind {
        Kind::NetworkSecurityGroup => {
            validate::network_security_group(id, name, body, location, &guid)
        }
        Kind::RouteTable => validate::route_table(id, name, body, location, &guid),
        Kind::VirtualNetwork => validate::virtual_network(id, name, body, location, &guid, store),
        Kind::ResourceGroup | Kind::HostingEnvironment => Err(ArmError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!(
                "Writes to {} are not supported by the mock.",
                kind.type_name()
            ),
        )),
    }
}

/// Subnets used by an App Service Environment cannot be deleted.
fn subnet_in_use_by_ase(store: &Store, subnet_id: &str) -> Option<String> {
    let subnet_key = key(subnet_id);
    store
        .resources()
        .values()
        .filter(|e| e.kind == Kind::HostingEnvironment)
        .find(|e| {
            e.body["properties"]["virtualNetwork"]["id"]
                .as_str()
                .is_some_and(|id| key(id) == subnet_key)
        })
        .map(|e| e.id().to_owned())
}

fn subnet_in_use_error(subnet_id: &str, user: &str) -> ArmError {
    ArmError::bad_request(
        "InUseSubnetCannotBeDeleted",
        format!("Subnet {subnet_id} is in use by {user} and cannot be deleted. In order to delete the subnet, delete all the resources within the subnet."),
    )
}

pub(super) fn put_item(
    cx: &Ctx,
    sub: &str,
    rg: &str,
    kind: Kind,
    name: &str,
    body: &Map<String, Value>,
) -> Result<Reply> {
    validate::name(name, kind == Kind::VirtualNetwork)?;
    let mut store = cx.state.store();
    let (k, group) = item_key(&store, sub, rg, kind, name)?;
    let existing = store.get(&k).cloned();
    preconditions(cx, existing.as_ref().and_then(Entry::etag))?;
    let id = existing
        .as_ref()
        .map(|e| e.id().to_owned())
        .unwrap_or_else(|| kind.id(&group.sub, &group.rg, name));
    let stored_name = existing.as_ref().map_or(name, Entry::name).to_owned();
    let mut canonical = canonical_top(&store, kind, &id, &stored_name, body, existing.as_ref())?;
    if kind == Kind::VirtualNetwork {
        if let Some(op) = store.busy(&k) {
            return Err(another_operation(cx, op, sub));
        }
        // A VNet PUT replaces the subnet list (domain.md 4.4): removed subnets must be free.
        if let Some(old) = &existing {
            for subnet in old.children(ChildKind::Subnet) {
                let subnet_id = subnet["id"].as_str().unwrap_or_default();
                let kept = canonical["properties"]["subnets"]
                    .as_array()
                    .is_some_and(|list| {
                        list.iter()
                            .any(|s| s["id"].as_str().is_some_and(|id| key(id) == key(subnet_id)))
                    });
                if !kept {
                    if let Some(user) = subnet_in_use_by_ase(&store, subnet_id) {
                        return Err(subnet_in_use_error(subnet_id, &user));
                    }
                }
            }
        }
    }
    stamp_etag(&mut canonical, &new_etag());
    store.put(
        k.clone(),
        Entry {
            kind,
            sub: group.sub.clone(),
            rg: group.rg.clone(),
            body: canonical,
            aux: None,
            pending: None,
        },
    );
    let (_, headers) = start_operation(cx, &mut store, &k, OpKind::Put, false);
    let body = store.render_key(&k).unwrap_or(Value::Null);
    let status = if existing.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let mut reply = with_etag(Reply::json(status, body.clone()), &body);
    reply.headers.extend(headers);
    Ok(reply)
}

/// PATCH on NRP resources updates tags only (domain.md 4.4); synchronous 200.
pub(super) fn patch_item(
    cx: &Ctx,
    sub: &str,
    rg: &str,
    kind: Kind,
    name: &str,
    body: &Map<String, Value>,
) -> Result<Reply> {
    let mut store = cx.state.store();
    let (k, _) = item_key(&store, sub, rg, kind, name)?;
    let mut entry = store
        .get(&k)
        .cloned()
        .ok_or_else(|| not_found(kind, name, rg))?;
    preconditions(cx, entry.etag())?;
    match body.get("tags") {
        None | Some(Value::Null) => {}
        Some(Value::Object(tags)) if tags.values().all(Value::is_string) => {
            entry.body["tags"] = Value::Object(tags.clone());
        }
        Some(_) => {
            return Err(ArmError::invalid_request_format(
                "'tags' must be an object of strings.",
            ))
        }
    }
    stamp_etag(&mut entry.body, &new_etag());
    store.put(k.clone(), entry);
    let body = store.render_key(&k).unwrap_or(Value::Null);
    Ok(with_etag(Reply::json(StatusCode::OK, body.clone()), &body))
}

pub(super) fn delete_item(cx: &Ctx, sub: &str, rg: &str, kind: Kind, name: &str) -> Result<Reply> {
    let mut store = cx.state.store();
    let (k, _) = item_key(&store, sub, rg, kind, name)?;
    let Some(entry) = store.get(&k).cloned() else {
        return Ok(Reply::empty(StatusCode::NO_CONTENT));
    };
    preconditions(cx, entry.etag())?;
    match kind {
        Kind::NetworkSecurityGroup | Kind::RouteTable => {
            let users = store.subnet_references().remove(&k).unwrap_or_default();
            if !users.is_empty() {
                let id = entry.id();
                let users = users.join(", ");
                return Err(if kind == Kind::NetworkSecurityGroup {
                    ArmError::bad_request(
                        "InUseNetworkSecurityGroupCannotBeDeleted",
                        format!(
                            "Network security group {id} cannot be deleted because it is in use by the following \
                             resources: {users}. In order to delete the Network security group, remove the \
                             association with the resource(s). To learn how to do this, see aka.ms/deletensg."
                        ),
                    )
                } else {
                    ArmError::bad_request(
                        "InUseRouteTableCannotBeDeleted",
                        format!("Route table {id} is in use by {users} and cannot be deleted."),
                    )
                });
            }
        }
        Kind::VirtualNetwork => {
            if let Some(op) = store.busy(&k) {
                return Err(another_operation(cx, op, sub));
            }
            for subnet in entry.children(ChildKind::Subnet) {
                let subnet_id = subnet["id"].as_str().unwrap_or_default();
                if let Some(user) = subnet_in_use_by_ase(&store, subnet_id) {
                    return Err(subnet_in_use_error(subnet_id, &user));
                }
            }
        }
        _ => {}
    }
    let (_, headers) = start_operation(cx, &mut store, &k, OpKind::Delete, true);
    let mut reply = Reply::empty(StatusCode::ACCEPTED);
    reply.headers.extend(headers);
    Ok(reply)
}

// ---------------------------------------------------------------------------------------------
// Child resources (rules, routes, subnets)

fn parent(store: &Store, sub: &str, rg: &str, kind: Kind, name: &str) -> Result<(String, Entry)> {
    let (k, _) = item_key(store, sub, rg, kind, name)?;
    let entry = store
        .get(&k)
        .cloned()
        .ok_or_else(|| not_found(kind, name, rg))?;
    Ok((k, entry))
}

fn find_child<'a>(children: &'a [Value], name: &str) -> Option<(usize, &'a Value)> {
    children.iter().enumerate().find(|(_, c)| {
        c["name"]
            .as_str()
            .is_some_and(|n| n.eq_ignore_ascii_case(name))
    })
}

pub(super) fn list_children(
    cx: &Ctx,
    sub: &str,
    rg: &str,
    kind: Kind,
    name: &str,
    child: ChildKind,
) -> Result<Reply> {
    let store = cx.state.store();
    let (k, _) = parent(&store, sub, rg, kind, name)?;
    let body = store.render_key(&k).unwrap_or(Value::Null);
    let items = body["properties"][child.segment()]
        .as_array()
        .cloned()
        .unwrap_or_default();
    page(cx, items)
}

#[allow(clippy::too_many_arguments)]
pub(super) fn get_child(
    cx: &Ctx,
    sub: &str,
    rg: &str,
    kind: Kind,
    name: &str,
    child: ChildKind,
    child_name: &str,
) -> Result<Reply> {
    let store = cx.state.store();
    let (k, entry) = parent(&store, sub, rg, kind, name)?;
    let body = store.render_key(&k).unwrap_or(Value::Null);
    let children = body["properties"][child.segment()]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let (_, found) = find_child(children, child_name).ok_or_else(|| {
        ArmError::child_not_found(&format!("{}/{}/{child_name}", entry.id(), child.segment()))
    })?;
    Ok(with_etag(Reply::json(StatusCode::OK, found.clone()), found))
}

/// Parent-level constraints after a child changed (domain.md 2.7, 2.8, 3.6).
fn check_parent(child: ChildKind, children: &[Value]) -> Result<()> {
    match child {
        ChildKind::SecurityRule => validate::rule_conflicts(children),
        ChildKind::Route => validate::route_limit(children),
        ChildKind::Subnet => validate::subnet_overlaps(children),
        ChildKind::DefaultSecurityRule => Ok(()),
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn put_child(
    cx: &Ctx,
    sub: &str,
    rg: &str,
    kind: Kind,
    name: &str,
    child: ChildKind,
    child_name: &str,
    body: &Map<String, Value>,
) -> Result<Reply> {
    validate::name(child_name, false)?;
    let mut store = cx.state.store();
    let (k, mut entry) = parent(&store, sub, rg, kind, name)?;
    let children = entry.children(child).to_vec();
    let existing = find_child(&children, child_name).map(|(i, c)| (i, c.clone()));
    preconditions(cx, existing.as_ref().and_then(|(_, c)| c["etag"].as_str()))?;
    let child_id = existing
        .as_ref()
        .and_then(|(_, c)| c["id"].as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{}/{}/{child_name}", entry.id(), child.segment()));
    let stored_name = existing
        .as_ref()
        .and_then(|(_, c)| c["name"].as_str().map(str::to_owned))
        .unwrap_or_else(|| child_name.to_owned());
    let props = validate::child_body_properties(body)?;
    let canonical = match child {
        ChildKind::SecurityRule => validate::security_rule(&child_id, &stored_name, &props)?,
        ChildKind::Route => validate::route(&child_id, &stored_name, &props)?,
        ChildKind::Subnet => {
            // Subnet writes conflict with a running operation on the VNet (domain.md 4.4).
            if let Some(op) = store.busy(&k) {
                return Err(another_operation(cx, op, sub));
            }
            let space: Vec<ipnet::IpNet> = entry.body["properties"]["addressSpace"]
                ["addressPrefixes"]
                .as_array()
                .map(|list| {
                    list.iter()
                        .filter_map(Value::as_str)
                        .filter_map(|p| validate::parse_network(p).ok())
                        .collect()
                })
                .unwrap_or_default();
            validate::subnet(&child_id, &stored_name, &props, &space, &*store)?
        }
        ChildKind::DefaultSecurityRule => unreachable_default()?,
    };
    let mut updated = children;
    match &existing {
        Some((index, _)) => updated[*index] = canonical,
        None => updated.push(canonical),
    }
    check_parent(child, &updated)?;
    entry.body["properties"][child.segment()] = Value::Array(updated);
    stamp_etag(&mut entry.body, &new_etag());
    entry.pending = None;
    store.put(k.clone(), entry);
    let (_, headers) = start_operation(cx, &mut store, &k, OpKind::Put, false);
    let rendered = store.render_key(&k).unwrap_or(Value::Null);
    let children = rendered["properties"][child.segment()]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let body = find_child(children, child_name)
        .map(|(_, c)| c.clone())
        .unwrap_or(Value::Null);
    let status = if existing.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let mut reply = with_etag(Reply::json(status, body.clone()), &body);
    reply.headers.extend(headers);
    Ok(reply)
}

fn unreachable_default() -> Result<Value> {
    Err(ArmError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        "Default security rules are read-only (domain.md 2.4).",
    ))
}

pub(super) fn delete_child(
    cx: &Ctx,
    sub: &str,
    rg: &str,
    kind: Kind,
    name: &str,
    child: ChildKind,
    child_name: &str,
) -> Result<Reply> {
    let mut store = cx.state.store();
    let (k, _) = item_key(&store, sub, rg, kind, name)?;
    let Some(mut entry) = store.get(&k).cloned() else {
        return Ok(Reply::empty(StatusCode::NO_CONTENT));
    };
    let mut children = entry.children(child).to_vec();
    let Some((index, existing)) = find_child(&children, child_name).map(|(i, c)| (i, c.clone()))
    else {
        return Ok(Reply::empty(StatusCode::NO_CONTENT));
    };
    preconditions(cx, existing["etag"].as_str())?;
    if child == ChildKind::Subnet {
        if let Some(op) = store.busy(&k) {
            return Err(another_operation(cx, op, sub));
        }
        let subnet_id = existing["id"].as_str().unwrap_or_default();
        if let Some(user) = subnet_in_use_by_ase(&store, subnet_id) {
            return Err(subnet_in_use_error(subnet_id, &user));
        }
    }
    children.remove(index);
    entry.body["properties"][child.segment()] = Value::Array(children);
    stamp_etag(&mut entry.body, &new_etag());
    entry.pending = None;
    store.put(k.clone(), entry);
    let (_, headers) = start_operation(cx, &mut store, &k, OpKind::Delete, false);
    let mut reply = Reply::empty(StatusCode::ACCEPTED);
    reply.headers.extend(headers);
    Ok(reply)
}

/// Used by the seed: store a canonical top-level body as already provisioned.
pub(crate) fn seed_entry(
    store: &mut Store,
    kind: Kind,
    sub: &str,
    rg: &str,
    mut body: Value,
    aux: Option<Value>,
) {
    stamp_etag(&mut body, &new_etag());
    let k = key(body["id"].as_str().unwrap_or_default());
    store.put(
        k,
        Entry {
            kind,
            sub: sub.to_owned(),
            rg: rg.to_owned(),
            body,
            aux,
            pending: None,
        },
    );
}
