//! A Kubernetes API server over real HTTP, for benches that run the `asenet controller`
//! binary as a child process (benches/controller_rss.rs). fleet_kube.rs answers an
//! in-process `kube::Client`; a separate process needs a socket and a kubeconfig, and the
//! watch as the API server streams it.
//!
//! What the controller (tenancy off, leader election off) sends and what this answers:
//! - `GET /apis/asenet.io/v1alpha1[/namespaces/{ns}]/aseconnectivities?limit=500&...`: the
//!   list, paginated with `continue` tokens as kube-runtime's watcher asks (page size 500);
//!   every page carries the resourceVersion of the first, so the watch that follows replays
//!   whatever changed while the pages were read;
//! - the same with `watch=true&resourceVersion=R`: a chunked stream of JSON lines
//!   (`{"type":"MODIFIED","object":...}`), starting with the logged events after `R`, kept
//!   open (a `BOOKMARK` every 30 s when `allowWatchBookmarks=true`, so the client's idle
//!   timeout never fires); `410 Expired` when `R` is older than the log;
//! - `GET .../aseconnectivities/{name}[/status]`: the object (the controller reads the full
//!   status when its store dropped `status.rules`);
//! - `PATCH .../aseconnectivities/{name}/status` (server-side apply): the status replaced,
//!   a new resourceVersion, a `MODIFIED` event on every watch, as the API server does;
//! - `POST`/`PATCH /apis/events.k8s.io/v1/namespaces/{ns}/events[/{name}]`: echoed (201/200);
//! - anything else: 404, and the first requests of that kind are printed on stderr, so a
//!   new request of the binary shows up at once.
//!
//! Objects carry the controller's finalizer from the start (fleet_world.rs), so the
//! controller never patches the object itself.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use asenet::api::AseConnectivity;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::Response;
use futures::channel::mpsc;
use futures::SinkExt;
use serde_json::{json, Value};
use tokio::sync::broadcast;

const GROUP: &str = "/apis/asenet.io/v1alpha1";
const API_VERSION: &str = "asenet.io/v1alpha1";
/// Watch events kept for watches that resume from an older resourceVersion (a watch cut by
/// a lagging stream); older ones get `410 Expired` and relist, as from a real API server.
const LOG_LIMIT: usize = 50_000;
/// Below kube-runtime's idle timeout (290 s + margin) by far.
const BOOKMARK_EVERY: Duration = Duration::from_secs(30);
/// Unknown requests printed on stderr (the rest are only counted).
const UNKNOWN_PRINTED: u64 = 20;

type Key = (String, String);

/// Requests answered, by kind.
#[derive(Debug, Default)]
pub struct Counters {
    pub lists: AtomicU64,
    pub watches: AtomicU64,
    pub gets: AtomicU64,
    pub status_patches: AtomicU64,
    pub events: AtomicU64,
    pub unknown: AtomicU64,
}

/// How far the specs got, from the statuses the controller wrote.
#[derive(Debug, Clone, Copy)]
pub struct Readiness {
    pub specs: usize,
    /// Specs with a status written by the controller.
    pub with_status: usize,
    /// Specs whose `Ready` condition is `True`.
    pub ready: usize,
}

/// One watch event, serialised once and shared by every stream.
#[derive(Clone)]
struct Line {
    rv: u64,
    namespace: Arc<str>,
    bytes: Bytes,
}

struct Stored {
    object: Value,
    /// `None` until the controller writes a status; then whether `Ready` is `True`.
    ready: Option<bool>,
}

struct Inner {
    objects: BTreeMap<Key, Stored>,
    rv: u64,
    log: VecDeque<Line>,
    /// Every event after this resourceVersion is in `log`.
    floor: u64,
    with_status: usize,
    ready: usize,
}

struct Shared {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Line>,
    counters: Counters,
}

/// The running server; dropping it stops accepting connections.
pub struct FakeApiServer {
    shared: Arc<Shared>,
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeApiServer {
    /// Serves `specs` on 127.0.0.1 (a free port), each with its own resourceVersion.
    pub async fn start(specs: &[AseConnectivity]) -> anyhow::Result<Self> {
        let mut objects = BTreeMap::new();
        let mut rv = 0;
        for spec in specs {
            rv += 1;
            let mut object = serde_json::to_value(spec)?;
            object["metadata"]["resourceVersion"] = json!(rv.to_string());
            let key = (
                spec.metadata.namespace.clone().unwrap_or_default(),
                spec.metadata.name.clone().unwrap_or_default(),
            );
            objects.insert(
                key,
                Stored {
                    object,
                    ready: None,
                },
            );
        }
        let (tx, _) = broadcast::channel(4096);
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                objects,
                rv,
                log: VecDeque::new(),
                floor: rv,
                with_status: 0,
                ready: 0,
            }),
            tx,
            counters: Counters::default(),
        });
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("fake-apiserver: stopped: {e}");
            }
        });
        Ok(FakeApiServer { shared, url, task })
    }

    /// A kubeconfig pointing at this server, without authentication.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\nusers:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\ncurrent-context: fake\n",
            self.url
        )
    }

    pub fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    pub fn readiness(&self) -> Readiness {
        let inner = self.shared.lock();
        Readiness {
            specs: inner.objects.len(),
            with_status: inner.with_status,
            ready: inner.ready,
        }
    }

    /// The reason of the `Ready` condition of every spec not Ready, counted (`no status`
    /// when the controller wrote none): what a run cut by its budget was waiting for.
    pub fn not_ready_reasons(&self) -> BTreeMap<String, usize> {
        let inner = self.shared.lock();
        let mut out = BTreeMap::new();
        for stored in inner.objects.values() {
            if stored.ready == Some(true) {
                continue;
            }
            let reason = ready_condition(&stored.object["status"])
                .and_then(|c| c.get("reason"))
                .and_then(Value::as_str)
                .unwrap_or("no status")
                .to_string();
            *out.entry(reason).or_default() += 1;
        }
        out
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn ready_condition(status: &Value) -> Option<&Value> {
    status
        .get("conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
}

fn is_ready(status: &Value) -> bool {
    ready_condition(status)
        .and_then(|c| c.get("status"))
        .and_then(Value::as_str)
        == Some("True")
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

fn status_response(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    json_response(code, serde_json::to_vec(&body).unwrap_or_default())
}

/// What a path under the asenet.io group names.
enum Target {
    Collection { namespace: Option<String> },
    Object { key: Key, status: bool },
}

fn target(path: &str) -> Option<Target> {
    let rest = path.strip_prefix(GROUP)?;
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let (namespace, rest) = match segments.as_slice() {
        ["namespaces", ns, rest @ ..] => (Some(ns.to_string()), rest),
        rest => (None, rest),
    };
    match (rest, namespace) {
        (["aseconnectivities"], namespace) => Some(Target::Collection { namespace }),
        (["aseconnectivities", name], Some(ns)) => Some(Target::Object {
            key: (ns, name.to_string()),
            status: false,
        }),
        (["aseconnectivities", name, "status"], Some(ns)) => Some(Target::Object {
            key: (ns, name.to_string()),
            status: true,
        }),
        _ => None,
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let query: BTreeMap<String, String> =
        url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    match (target(uri.path()), &method) {
        (Some(Target::Collection { namespace }), &Method::GET) => {
            if query.get("watch").map(String::as_str) == Some("true") {
                shared.counters.watches.fetch_add(1, Ordering::Relaxed);
                return watch(shared, namespace, &query);
            }
            shared.counters.lists.fetch_add(1, Ordering::Relaxed);
            return list(&shared, namespace.as_deref(), &query);
        }
        (Some(Target::Object { key, .. }), &Method::GET) => {
            shared.counters.gets.fetch_add(1, Ordering::Relaxed);
            let inner = shared.lock();
            return match inner.objects.get(&key) {
                Some(s) => json_response(
                    StatusCode::OK,
                    serde_json::to_vec(&s.object).unwrap_or_default(),
                ),
                None => status_response(StatusCode::NOT_FOUND, "NotFound", "no such object"),
            };
        }
        (Some(Target::Object { key, status: true }), &Method::PATCH) => {
            shared
                .counters
                .status_patches
                .fetch_add(1, Ordering::Relaxed);
            return patch_status(&shared, &key, &body);
        }
        _ => {}
    }
    if uri.path().starts_with("/apis/events.k8s.io/v1/namespaces/") {
        shared.counters.events.fetch_add(1, Ordering::Relaxed);
        let code = match method {
            Method::POST => StatusCode::CREATED,
            _ => StatusCode::OK,
        };
        return json_response(code, body.to_vec());
    }
    let n = shared.counters.unknown.fetch_add(1, Ordering::Relaxed);
    if n < UNKNOWN_PRINTED {
        eprintln!("fake-apiserver: no answer for {method} {uri}");
    }
    status_response(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("the fake API server does not serve {method} {}", uri.path()),
    )
}

/// One page of the list. The continue token is `{list rv}/{ns}/{name}` of the last item.
fn list(shared: &Shared, namespace: Option<&str>, query: &BTreeMap<String, String>) -> Response {
    let limit = query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let inner = shared.lock();
    let (list_rv, after) = match query
        .get("continue")
        .map(|t| t.splitn(3, '/').collect::<Vec<_>>())
    {
        Some(parts) if parts.len() == 3 => (
            parts[0].parse().unwrap_or(inner.rv),
            Some((parts[1].to_string(), parts[2].to_string())),
        ),
        _ => (inner.rv, None),
    };
    let in_scope = |k: &Key| namespace.is_none_or(|ns| ns == k.0);
    let mut page = inner
        .objects
        .iter()
        .filter(|(k, _)| after.as_ref().is_none_or(|a| *k > a) && in_scope(k));
    let items: Vec<(&Key, &Stored)> = page.by_ref().take(limit).collect();
    let more = page.next().is_some();
    let mut metadata = json!({ "resourceVersion": list_rv.to_string() });
    if let (true, Some((k, _))) = (more, items.last()) {
        metadata["continue"] = json!(format!("{list_rv}/{}/{}", k.0, k.1));
    }
    let items: Vec<&Value> = items.iter().map(|(_, s)| &s.object).collect();
    let body = json!({
        "apiVersion": API_VERSION, "kind": "AseConnectivityList",
        "metadata": metadata, "items": items,
    });
    json_response(
        StatusCode::OK,
        serde_json::to_vec(&body).unwrap_or_default(),
    )
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut bytes =
        serde_json::to_vec(&json!({ "type": kind, "object": object })).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

/// Replaces the status (the controller applies the whole status with `force`), bumps the
/// resourceVersion and sends `MODIFIED` to the watches.
fn patch_status(shared: &Shared, key: &Key, body: &[u8]) -> Response {
    let status = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|mut p| p.get_mut("status").map(Value::take))
        .unwrap_or(Value::Null);
    let ready = is_ready(&status);
    let mut guard = shared.lock();
    let inner = &mut *guard;
    let Some(stored) = inner.objects.get_mut(key) else {
        return status_response(StatusCode::NOT_FOUND, "NotFound", "no such object");
    };
    inner.rv += 1;
    let rv = inner.rv;
    if std::env::var_os("ASENET_BENCH_PRINT_REPATCH").is_some()
        && !stored.object["status"].is_null()
    {
        let without_rules = |s: &Value| {
            let mut s = s.clone();
            if let Some(o) = s.as_object_mut() {
                o.remove("rules");
            }
            s
        };
        eprintln!(
            "fake-apiserver: status of {}/{} patched again:\n  was {}\n  now {}",
            key.0,
            key.1,
            without_rules(&stored.object["status"]),
            without_rules(&status)
        );
    }
    stored.object["status"] = status;
    stored.object["metadata"]["resourceVersion"] = json!(rv.to_string());
    match stored.ready.replace(ready) {
        None => inner.with_status += 1,
        Some(true) => inner.ready -= 1,
        Some(false) => {}
    }
    if ready {
        inner.ready += 1;
    }
    let answer = serde_json::to_vec(&stored.object).unwrap_or_default();
    let line = Line {
        rv,
        namespace: Arc::from(key.0.as_str()),
        bytes: event_line("MODIFIED", &stored.object),
    };
    inner.log.push_back(line.clone());
    if inner.log.len() > LOG_LIMIT {
        if let Some(old) = inner.log.pop_front() {
            inner.floor = old.rv;
        }
    }
    // Under the lock: the streams see events in resourceVersion order.
    let _ = shared.tx.send(line);
    json_response(StatusCode::OK, answer)
}

/// A watch from `resourceVersion` (0 or none: every object as `ADDED` first).
fn watch(
    shared: Arc<Shared>,
    namespace: Option<String>,
    query: &BTreeMap<String, String>,
) -> Response {
    let from: u64 = query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let bookmarks = query.get("allowWatchBookmarks").map(String::as_str) == Some("true");
    let in_scope = |ns: &str| namespace.as_deref().is_none_or(|n| n == ns);
    let (replay, rx, seen) = {
        let inner = shared.lock();
        if from != 0 && from < inner.floor {
            let expired = json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("too old resource version: {from} ({})", inner.floor),
                "reason": "Expired", "code": 410,
            });
            return json_response(StatusCode::OK, event_line("ERROR", &expired).to_vec());
        }
        let replay: Vec<Bytes> = if from == 0 {
            inner
                .objects
                .iter()
                .filter(|(k, _)| in_scope(&k.0))
                .map(|(_, s)| event_line("ADDED", &s.object))
                .collect()
        } else {
            inner
                .log
                .iter()
                .filter(|l| l.rv > from && in_scope(&l.namespace))
                .map(|l| l.bytes.clone())
                .collect()
        };
        (replay, shared.tx.subscribe(), inner.rv.max(from))
    };
    let (out, body) = mpsc::channel::<Result<Bytes, Infallible>>(64);
    tokio::spawn(pump(out, replay, rx, namespace, seen, bookmarks));
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

/// Feeds one watch stream until the client goes away. A stream that falls behind the
/// broadcast is closed: the client watches again from its last resourceVersion and gets the
/// rest from the log.
async fn pump(
    mut out: mpsc::Sender<Result<Bytes, Infallible>>,
    replay: Vec<Bytes>,
    mut rx: broadcast::Receiver<Line>,
    namespace: Option<String>,
    mut seen: u64,
    bookmarks: bool,
) {
    for line in replay {
        if out.send(Ok(line)).await.is_err() {
            return;
        }
    }
    let mut tick = tokio::time::interval(BOOKMARK_EVERY);
    tick.tick().await;
    loop {
        let line = tokio::select! {
            event = rx.recv() => match event {
                Ok(line) if line.rv <= seen => continue,
                Ok(line) => {
                    seen = line.rv;
                    if namespace.as_deref().is_some_and(|ns| ns != &*line.namespace) {
                        continue;
                    }
                    line.bytes
                }
                Err(_) => return,
            },
            _ = tick.tick() => {
                if !bookmarks {
                    continue;
                }
                event_line("BOOKMARK", &json!({
                    "apiVersion": API_VERSION, "kind": "AseConnectivity",
                    "metadata": { "resourceVersion": seen.to_string() },
                }))
            }
        };
        if out.send(Ok(line)).await.is_err() {
            return;
        }
    }
}
