//! The whole `controller::run` stream (watch → store → readiness → leader election →
//! reconcile → ARM), not only `reconcile()`: issue 10's defects are what this level shows.
//!
//! The API server is a fake tower service ([`FakeApi`]) behind a real `kube::Client`: it
//! serves the spec list (the watch that follows stays open without events), the Lease, status
//! and finalizer patches and events, records what it received, and can be made unreachable
//! as a whole or for Lease requests only (a replica partitioned from the API server). ARM
//! is the in-process mock seeded with `examples/seed`, the engine the real pipeline.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use asenet::api::AseConnectivity;
use asenet::azure::credential::StaticToken;
use asenet::azure::{ArmClient, ArmClientOptions, RetryConfig};
use asenet::controller::{
    self, Engine, Leadership, LeaseSettings, Metrics, RunOptions, Settings, FINALIZER,
};
use asenet::observe::ServiceTags;
use asenet::pipeline::{Pipeline, PipelineOptions};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;
use kube::client::Body;
use kube::{Client, ResourceExt};
use serde_json::{json, Value};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type FakeBody = BoxBody<Bytes, BoxError>;

const SEED: &str = "examples/seed";
pub const LEASE_NAME: &str = "asenet-controller";
pub const LEASE_NS: &str = "asenet-system";

fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The seed's specs as the API server would hold them: uid, generation, resourceVersion,
/// and the finalizer already there (an earlier leader added it; the watch of this fake never
/// delivers the event a finalizer patch would cause).
pub fn seed_specs() -> Vec<AseConnectivity> {
    asenet::load::load_specs(&[root().join(SEED)])
        .unwrap()
        .into_iter()
        .map(|l| {
            let mut spec = l.spec;
            spec.metadata.uid = Some(format!("uid-{}", spec.name_any()));
            spec.metadata.generation = Some(1);
            spec.metadata.resource_version = Some("1".into());
            spec.metadata.finalizers = Some(vec![FINALIZER.to_string()]);
            spec
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// The fake API server
// ---------------------------------------------------------------------------------------

/// What the fake API server received, and switches to make it fail.
#[derive(Default)]
pub struct FakeState {
    specs: Mutex<Vec<AseConnectivity>>,
    lease: Mutex<Option<Value>>,
    lease_version: Mutex<u64>,
    /// Every request is answered with a transport error (the API server is unreachable).
    pub down: AtomicBool,
    /// Lease requests only fail (a partition that the lease sees first; the rest keeps
    /// answering, so the replica keeps reconciling unless it stops by itself).
    pub lease_down: AtomicBool,
    /// Lease requests never get an answer (a black-holed API server).
    pub lease_hangs: AtomicBool,
    /// Lease writes that succeeded: when, and the Lease as stored.
    pub lease_writes: Mutex<Vec<(std::time::Instant, Value)>>,
    /// Event requests: method and body.
    pub events: Mutex<Vec<(Method, Value)>>,
    pub status_patches: Mutex<u64>,
    pub requests: Mutex<u64>,
}

#[derive(Clone)]
pub struct FakeApi(pub Arc<FakeState>);

impl FakeApi {
    pub fn new(specs: Vec<AseConnectivity>) -> Self {
        let state = FakeState::default();
        *state.specs.lock().unwrap() = specs;
        FakeApi(Arc::new(state))
    }

    pub fn client(&self) -> Client {
        let api = self.clone();
        let service = tower::service_fn(move |req: Request<Body>| {
            let api = api.clone();
            async move { api.serve(req).await }
        });
        Client::new(service, "default")
    }

    pub fn lease(&self) -> Option<Value> {
        self.0.lease.lock().unwrap().clone()
    }

    pub fn holder(&self) -> Option<String> {
        self.lease()
            .and_then(|l| l.pointer("/spec/holderIdentity").cloned())
            .and_then(|h| h.as_str().map(str::to_owned))
            .filter(|h| !h.is_empty())
    }

    pub fn events(&self) -> Vec<(Method, Value)> {
        self.0.events.lock().unwrap().clone()
    }

    async fn serve(&self, req: Request<Body>) -> Result<Response<FakeBody>, BoxError> {
        *self.0.requests.lock().unwrap() += 1;
        if self.0.down.load(Ordering::SeqCst) {
            return Err("connection refused (the fake API server is down)".into());
        }
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or_default().to_string();
        let body = req.into_body().collect_bytes().await?;
        let body: Value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).unwrap_or(Value::Null)
        };
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        if path.starts_with("/apis/coordination.k8s.io/") {
            if self.0.lease_hangs.load(Ordering::SeqCst) {
                futures::future::pending::<()>().await;
            }
            if self.0.lease_down.load(Ordering::SeqCst) {
                return Err("connection reset (the Lease is partitioned away)".into());
            }
            return Ok(self.lease_request(&method, &segments, body));
        }
        if path.starts_with("/apis/events.k8s.io/") {
            self.0.events.lock().unwrap().push((method, body.clone()));
            return Ok(json_response(StatusCode::CREATED, &body));
        }
        if path.starts_with("/apis/asenet.io/") {
            return Ok(self.spec_request(&method, &segments, &query, body));
        }
        Ok(json_response(
            StatusCode::NOT_FOUND,
            &status_body(404, "NotFound", &format!("no route {method} {path}")),
        ))
    }

    fn spec_request(
        &self,
        method: &Method,
        segments: &[&str],
        query: &str,
        body: Value,
    ) -> Response<FakeBody> {
        // /apis/asenet.io/v1alpha1[/namespaces/{ns}]/aseconnectivities[/{name}[/status]]
        let at = segments
            .iter()
            .position(|s| *s == "aseconnectivities")
            .unwrap_or(segments.len());
        let name = segments.get(at + 1).copied();
        let status = segments.get(at + 2) == Some(&"status");
        let specs = self.0.specs.lock().unwrap().clone();
        match (method.clone(), name) {
            (Method::GET, None) if query.contains("watch=true") => {
                // An open watch without events: nothing changes in this fake cluster.
                let stream =
                    futures::stream::pending::<Result<hyper::body::Frame<Bytes>, BoxError>>();
                Response::builder()
                    .status(StatusCode::OK)
                    .body(http_body_util::StreamBody::new(stream).boxed())
                    .unwrap()
            }
            (_, None) => {
                let items: Vec<Value> = specs
                    .iter()
                    .map(|s| serde_json::to_value(s).unwrap())
                    .collect();
                json_response(
                    StatusCode::OK,
                    &json!({
                        "apiVersion": "asenet.io/v1alpha1",
                        "kind": "AseConnectivityList",
                        "metadata": {"resourceVersion": "1"},
                        "items": items,
                    }),
                )
            }
            (_, Some(name)) => {
                let Some(spec) = specs.into_iter().find(|s| s.name_any() == name) else {
                    return json_response(
                        StatusCode::NOT_FOUND,
                        &status_body(
                            404,
                            "NotFound",
                            &format!("aseconnectivities {name} not found"),
                        ),
                    );
                };
                let mut obj = serde_json::to_value(&spec).unwrap();
                if status && *method == Method::PATCH {
                    *self.0.status_patches.lock().unwrap() += 1;
                    if let Some(s) = body.get("status") {
                        obj["status"] = s.clone();
                    }
                }
                json_response(StatusCode::OK, &obj)
            }
        }
    }

    fn lease_request(&self, method: &Method, segments: &[&str], body: Value) -> Response<FakeBody> {
        let mut lease = self.0.lease.lock().unwrap();
        let mut version = self.0.lease_version.lock().unwrap();
        let not_found = || {
            json_response(
                StatusCode::NOT_FOUND,
                &status_body(404, "NotFound", "leases.coordination.k8s.io not found"),
            )
        };
        let conflict = || {
            json_response(
                StatusCode::CONFLICT,
                &status_body(409, "Conflict", "the object has been modified"),
            )
        };
        let named = segments.last() != Some(&"leases");
        let mut store = |mut new: Value, lease: &mut Option<Value>| {
            *version += 1;
            new["apiVersion"] = json!("coordination.k8s.io/v1");
            new["kind"] = json!("Lease");
            new["metadata"]["name"] = json!(LEASE_NAME);
            new["metadata"]["namespace"] = json!(LEASE_NS);
            new["metadata"]["resourceVersion"] = json!(version.to_string());
            self.0
                .lease_writes
                .lock()
                .unwrap()
                .push((std::time::Instant::now(), new.clone()));
            *lease = Some(new.clone());
            json_response(StatusCode::OK, &new)
        };
        match (method.clone(), named) {
            (Method::GET, true) => match lease.as_ref() {
                Some(l) => json_response(StatusCode::OK, l),
                None => not_found(),
            },
            (Method::POST, false) => {
                if lease.is_some() {
                    return json_response(
                        StatusCode::CONFLICT,
                        &status_body(409, "AlreadyExists", "the lease exists"),
                    );
                }
                store(body, &mut lease)
            }
            (Method::PUT, true) => {
                let Some(current) = lease.as_ref() else {
                    return not_found();
                };
                if body.pointer("/metadata/resourceVersion")
                    != current.pointer("/metadata/resourceVersion")
                {
                    return conflict();
                }
                store(body, &mut lease)
            }
            (Method::PATCH, true) => {
                // Strategic merge and server-side apply alike: merge the patch's fields.
                let mut merged = lease.clone().unwrap_or_else(|| json!({}));
                merge(&mut merged, &body);
                store(merged, &mut lease)
            }
            (Method::DELETE, true) => {
                *lease = None;
                json_response(StatusCode::OK, &status_body(200, "Success", "deleted"))
            }
            _ => not_found(),
        }
    }
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": if code < 300 { "Success" } else { "Failure" },
        "message": message, "reason": reason, "code": code,
    })
}

fn json_response(status: StatusCode, body: &Value) -> Response<FakeBody> {
    let bytes = Bytes::from(serde_json::to_vec(body).unwrap());
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(
            http_body_util::Full::new(bytes)
                .map_err(|never| match never {})
                .boxed(),
        )
        .unwrap()
}

// ---------------------------------------------------------------------------------------
// ARM and the operator
// ---------------------------------------------------------------------------------------

/// The in-process mock ARM seeded with examples/seed: the controller tests' fixture (its
/// pipeline is unused here; each operator builds its own, fenced by its leadership).
use crate::controller::Arm;

/// A pipeline writing to `endpoint` with quick retries (a unit of the tests' time scale).
pub fn arm_client(endpoint: &str, retry: RetryConfig) -> ArmClient {
    let http: Arc<dyn azure_core::HttpClient> =
        Arc::new(asenet::azure::http_client(None, Duration::from_secs(10)).unwrap());
    let options = ArmClientOptions {
        retry,
        lro_default_poll: Duration::from_millis(10),
        lro_max_poll: Duration::from_millis(50),
        lro_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(10),
    };
    ArmClient::new(endpoint, Arc::new(StaticToken::new("test")), http, options).unwrap()
}

pub fn quick_retries() -> RetryConfig {
    RetryConfig {
        max_attempts: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        max_retry_after: Duration::from_millis(100),
    }
}

pub fn pipeline(arm: ArmClient) -> Arc<dyn Engine> {
    let tags = ServiceTags::load(&root().join("examples/azure/seed/snapshot.yaml"))
        .unwrap_or_else(|_| ServiceTags::embedded());
    Arc::new(Pipeline::new(
        arm,
        PipelineOptions {
            service_tags: tags,
            ..PipelineOptions::default()
        },
    ))
}

/// A free loopback address for the probes (bound, read, released).
pub fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

pub fn lease_settings(identity: &str) -> LeaseSettings {
    LeaseSettings {
        name: LEASE_NAME.into(),
        namespace: LEASE_NS.into(),
        identity: identity.into(),
        // client-go's 15 s / 10 s / 2 s, scaled down.
        duration: Duration::from_millis(2000),
        renew_deadline: Duration::from_millis(1000),
        retry_period: Duration::from_millis(200),
    }
}

pub fn options(addr: SocketAddr, lease: Option<LeaseSettings>) -> RunOptions {
    RunOptions {
        namespaces: vec![],
        label_selector: None,
        settings: Settings {
            resync: Duration::from_secs(600),
            ..Settings::default()
        },
        metrics_addr: addr,
        probe_addr: None,
        lease,
        instance: Some("replica-a".into()),
        max_concurrent_reconciles: 4,
        leadership: Leadership::follower(),
        shutdown_timeout: Duration::from_secs(5),
    }
}

/// The pipeline to `endpoint`, its writes fenced on the operator's leadership (as
/// `asenet controller` builds it).
pub fn fenced_pipeline(
    endpoint: &str,
    retry: RetryConfig,
    options: &RunOptions,
) -> Arc<dyn Engine> {
    pipeline(arm_client(endpoint, retry).with_write_fence(Arc::new(options.leadership.clone())))
}

/// A running `controller::run_until`, stopped by [`Operator::stop`].
pub struct Operator {
    pub addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Operator {
    pub fn start(client: Client, engine: Arc<dyn Engine>, options: RunOptions) -> Operator {
        let metrics = Metrics::new();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let addr = options.metrics_addr;
        let task = tokio::spawn(controller::run_until(
            client,
            engine,
            metrics.clone(),
            options,
            async move {
                let _ = stopped.await;
            },
        ));
        Operator {
            addr,
            metrics,
            stop: Some(stop),
            task,
        }
    }

    /// [`Operator::start`] writing to the mock `arm`, fenced by its leadership.
    pub fn on_arm(api: &FakeApi, arm: &Arm, options: RunOptions) -> Operator {
        let engine = fenced_pipeline(&arm.mock.base_url, quick_retries(), &options);
        Operator::start(api.client(), engine, options)
    }

    /// Whether `path` answers 200 within `within`.
    pub async fn answers(&self, path: &str, within: Duration) -> bool {
        eventually(within, || async { self.probe(path).await == 200 }).await
    }

    /// What `/healthz` or `/readyz` answers: the status code, or 0 when nothing answers.
    pub async fn probe(&self, path: &str) -> u16 {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        match client
            .get(format!("http://{}{path}", self.addr))
            .send()
            .await
        {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    }

    pub fn leader(&self) -> i64 {
        self.metrics.leader.get()
    }

    /// Sends the shutdown trigger (what SIGTERM does) and waits for `run` to return.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.unwrap()
    }
}

/// Polls `check` every 50 ms until it holds or `within` passed; returns whether it held.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Captures what the operator logs (the tests run on one thread: every task logs here).
pub struct Logs {
    buf: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    pub fn capture() -> Logs {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || LogWriter(writer.clone()))
            .finish();
        Logs {
            buf,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().unwrap()).into_owned()
    }
}

// ---------------------------------------------------------------------------------------
// Defect 2: readiness
// ---------------------------------------------------------------------------------------

async fn readiness_after_the_initial_lists(namespaces: Vec<String>) {
    let logs = Logs::capture();
    let arm = Arm::start().await;
    let api = FakeApi::new(seed_specs());
    let mut options = options(free_addr(), None);
    options.namespaces = namespaces;
    let op = Operator::on_arm(&api, &arm, options);
    assert!(
        op.answers("/readyz", Duration::from_secs(20)).await,
        "/readyz turns 200 once every watch delivered its initial list"
    );
    assert!(
        logs.text().contains("spec stores synced"),
        "{}",
        logs.text()
    );
    // The same stream reconciles: the seed's changes reach ARM, the statuses the API server.
    assert!(
        eventually(Duration::from_secs(30), || async {
            arm.writes() > 0 && *api.0.status_patches.lock().unwrap() > 0
        })
        .await,
        "the controller reconciled from the store"
    );
    assert_eq!(op.probe("/readyz").await, 200);
    op.stop().await.unwrap();
}

#[tokio::test]
async fn readyz_turns_200_after_the_initial_list_while_the_controller_waits_on_the_same_store() {
    readiness_after_the_initial_lists(vec![]).await;
}

#[tokio::test]
async fn readyz_turns_200_once_each_of_two_watched_namespaces_has_its_initial_list() {
    readiness_after_the_initial_lists(vec!["network".into(), "other".into()]).await;
}

// ---------------------------------------------------------------------------------------
// Defect 3: event notes
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn events_with_another_note_are_new_events_and_only_the_same_note_counts_into_a_series() {
    use asenet::controller::events::EventRecorder;
    use kube::runtime::events::{Event, EventType, Reporter};
    use kube::Resource;

    let api = FakeApi::new(vec![]);
    let recorder = EventRecorder::new(
        api.client(),
        Reporter {
            controller: "asenet".into(),
            instance: Some("replica-a".into()),
        },
    );
    let spec = seed_specs().remove(0);
    let applied = |note: &str| Event {
        type_: EventType::Normal,
        reason: "Applied".into(),
        note: Some(note.into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    // The writes the issue saw: 2 to ase-two-nsg, 1 to ase-one-nsg, 1 to ase-two-nsg again.
    for note in [
        "applied 2 change(s) to ase-two-nsg",
        "applied 1 change(s) to ase-one-nsg",
        "applied 1 change(s) to ase-two-nsg",
        "applied 1 change(s) to ase-two-nsg",
    ] {
        recorder
            .publish(&applied(note), &spec.object_ref(&()))
            .await
            .unwrap();
    }

    let requests = api.events();
    let summary: Vec<(String, String, i64)> = requests
        .iter()
        .map(|(method, body)| {
            (
                method.to_string(),
                body["note"].as_str().unwrap_or_default().to_string(),
                body.pointer("/series/count")
                    .and_then(Value::as_i64)
                    .unwrap_or(1),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "POST".into(),
                "applied 2 change(s) to ase-two-nsg".into(),
                1
            ),
            (
                "POST".into(),
                "applied 1 change(s) to ase-one-nsg".into(),
                1
            ),
            (
                "POST".into(),
                "applied 1 change(s) to ase-two-nsg".into(),
                1
            ),
            (
                "PATCH".into(),
                "applied 1 change(s) to ase-two-nsg".into(),
                2
            ),
        ],
        "each distinct note is its own event; only a repeated note grows a series"
    );
    // What `kubectl describe` shows: the last version of each Event object, by name.
    let mut shown: BTreeMap<String, String> = BTreeMap::new();
    for (_, body) in &requests {
        shown.insert(
            body.pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap()
                .to_string(),
            body["note"].as_str().unwrap().to_string(),
        );
    }
    let mut notes: Vec<&String> = shown.values().collect();
    notes.sort();
    assert_eq!(
        notes,
        vec![
            "applied 1 change(s) to ase-one-nsg",
            "applied 1 change(s) to ase-two-nsg",
            "applied 2 change(s) to ase-two-nsg",
        ]
    );
}

// ---------------------------------------------------------------------------------------
// Defect 4: start-up with the API server unreachable
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn an_operator_started_while_the_api_server_is_unreachable_waits_unready_and_then_leads() {
    let arm = Arm::start().await;
    let api = FakeApi::new(seed_specs());
    api.0.down.store(true, Ordering::SeqCst);
    let options = options(free_addr(), Some(lease_settings("replica-a")));
    let op = Operator::on_arm(&api, &arm, options);

    // Alive but not ready, and not the leader, for as long as the API server is away.
    assert!(
        op.answers("/healthz", Duration::from_secs(10)).await,
        "/healthz answers while the API server is unreachable"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !op.task.is_finished(),
        "the operator does not exit when the API server is unreachable at start"
    );
    assert_eq!(op.probe("/healthz").await, 200);
    assert_eq!(
        op.probe("/readyz").await,
        503,
        "not ready without the initial list"
    );
    assert_eq!(op.leader(), 0);
    assert_eq!(arm.writes(), 0);
    assert!(*api.0.requests.lock().unwrap() >= 2, "it kept trying");

    // The API server comes back: the operator takes the Lease and converges the seed.
    api.0.down.store(false, Ordering::SeqCst);
    assert!(
        eventually(Duration::from_secs(30), || async { op.leader() == 1 }).await,
        "the operator acquires the Lease once the API server answers"
    );
    assert!(
        eventually(Duration::from_secs(30), || async { arm.writes() > 0 }).await,
        "and reconciles: the seed's changes are written"
    );
    assert_eq!(api.holder().as_deref(), Some("replica-a"));
    op.stop().await.unwrap();
}

// ---------------------------------------------------------------------------------------
// Defect 1: leadership that cannot split
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_lease_renewals_fail_stops_writing_at_the_renew_deadline_and_leads_again_only_after_a_fresh_acquire(
) {
    let arm = Arc::new(Arm::start().await);
    let api = FakeApi::new(seed_specs());
    let mut options = options(free_addr(), Some(lease_settings("replica-a")));
    // Reconciles come round often, so a replica that believes it leads writes often.
    options.settings.resync = Duration::from_millis(200);
    let leadership = options.leadership.clone();
    let lease = lease_settings("replica-a");
    let op = Operator::on_arm(&api, &arm, options);
    assert!(eventually(Duration::from_secs(20), || async { op.leader() == 1 }).await);
    assert!(eventually(Duration::from_secs(30), || async { arm.writes() > 0 }).await);

    // Someone keeps deleting an owned rule: the leader keeps repairing it.
    let drift = {
        let arm = arm.clone();
        tokio::spawn(async move {
            loop {
                arm.remove_an_owned_rule();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let before = arm.writes();
    assert!(
        eventually(Duration::from_secs(10), || async {
            arm.writes() > before + 2
        })
        .await,
        "the leader repairs the drift"
    );

    // The partition: every Lease request fails from now on.
    api.0.lease_down.store(true, Ordering::SeqCst);
    let partitioned = std::time::Instant::now();
    // Every renewal that succeeded was sent before the partition, so the deadline is at most
    // the renew deadline after it; a write sent just before it may still be on the wire for
    // a few milliseconds.
    let deadline = partitioned + lease.renew_deadline;
    tokio::time::sleep(
        (deadline + Duration::from_millis(300))
            .saturating_duration_since(std::time::Instant::now()),
    )
    .await;
    assert!(
        !leadership.is_leader(),
        "leadership ends at the renew deadline"
    );
    assert_eq!(op.leader(), 0, "asenet_leader drops to 0");
    let at_deadline = arm.writes();
    // Well past the Lease duration, with the drift still being made and reconciles due.
    tokio::time::sleep(lease.duration + Duration::from_secs(1)).await;
    assert_eq!(
        arm.writes(),
        at_deadline,
        "no ARM write after the renew deadline while the Lease cannot be renewed"
    );
    assert_eq!(op.leader(), 0, "still not the leader: it never renewed");
    assert!(!leadership.is_leader());

    // The partition heals: leadership comes back only through a successful Lease write.
    let lease_writes_before = api.0.lease_writes.lock().unwrap().len();
    let healed = std::time::Instant::now();
    api.0.lease_down.store(false, Ordering::SeqCst);
    assert!(eventually(Duration::from_secs(10), || async { op.leader() == 1 }).await);
    let writes = api.0.lease_writes.lock().unwrap().clone();
    assert!(
        writes.len() > lease_writes_before,
        "a fresh acquire wrote the Lease"
    );
    assert!(writes[lease_writes_before].0 >= healed);
    assert_eq!(api.holder().as_deref(), Some("replica-a"));
    assert!(
        eventually(Duration::from_secs(10), || async {
            arm.writes() > at_deadline
        })
        .await,
        "the new term repairs the drift again"
    );
    drift.abort();
    op.stop().await.unwrap();
}

/// A fence that lets `allowed` writes through, then closes.
struct Countdown(std::sync::atomic::AtomicU32);

impl asenet::azure::WriteFence for Countdown {
    fn may_write(&self) -> bool {
        self.0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

#[tokio::test]
async fn the_write_fence_is_checked_before_every_attempt_so_a_retry_after_the_fence_closed_is_never_sent(
) {
    use asenet::azure::{ArmError, WriteFence};
    use asenet::model::ResourceId;
    let arm = Arm::start().await;
    // An NSG of the seed (the seed's foreign-rule NSG; ase-one-nsg exists only once applied).
    let body = arm
        .mock
        .state
        .all_resources()
        .into_iter()
        .find(|r| r["type"] == "Microsoft.Network/networkSecurityGroups")
        .unwrap();
    let id = ResourceId::parse(body["id"].as_str().unwrap()).unwrap();
    arm.mock.state.inject_fault(mock_arm::FaultSpec {
        method: Some("PUT".into()),
        path: Some("networkSecurityGroups".into()),
        count: 1,
        action: mock_arm::FaultAction::Error {
            status: 500,
            code: None,
            message: None,
            retry_after: None,
        },
    });
    arm.mock.state.reset_stats();
    // One attempt allowed: the first PUT goes out, gets a 500; its retry is fenced.
    let fence: Arc<dyn WriteFence> = Arc::new(Countdown(1.into()));
    let client = arm_client(&arm.mock.base_url, quick_retries()).with_write_fence(fence);
    let err = client
        .put(&id, body.clone(), None, &|_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, ArmError::Fenced { .. }), "{err}");
    assert!(
        err.to_string().contains("no longer holds the leader Lease"),
        "{err}"
    );
    assert_eq!(arm.mock.state.stats().writes(), 1, "the retry was not sent");

    // Reads are never fenced; a closed fence sends no write at all.
    let closed = arm_client(&arm.mock.base_url, quick_retries())
        .with_write_fence(Arc::new(Countdown(0.into())));
    assert!(closed.get_nsg(&id).await.unwrap().is_some());
    let err = closed.delete(&id, None, &|_| {}).await.unwrap_err();
    assert!(matches!(err, ArmError::Fenced { .. }), "{err}");
    assert_eq!(
        arm.mock.state.stats().writes() + arm.mock.state.stats().deletes(),
        1
    );
}

// ---------------------------------------------------------------------------------------
// Defect 5: shutdown within its budget
// ---------------------------------------------------------------------------------------

/// ARM that never answers: every plan waits for ever (counted when it starts).
struct HangingArm(std::sync::atomic::AtomicU32);

impl Engine for HangingArm {
    fn plan<'a>(
        &'a self,
        _specs: &'a [Arc<AseConnectivity>],
        _scope: &'a asenet::diff::Scope,
    ) -> futures::future::BoxFuture<'a, Result<controller::Planned, asenet::pipeline::PipelineError>>
    {
        self.0.fetch_add(1, Ordering::SeqCst);
        Box::pin(futures::future::pending())
    }

    fn apply<'a>(
        &'a self,
        _specs: &'a [Arc<AseConnectivity>],
        _scope: &'a asenet::diff::Scope,
        _snapshot: &'a asenet::snapshot::Snapshot,
        _plan: &'a asenet::diff::Plan,
    ) -> futures::future::BoxFuture<
        'a,
        Result<asenet::pipeline::ApplyReport, asenet::pipeline::PipelineError>,
    > {
        Box::pin(futures::future::pending())
    }
}

/// An operator with a 20 s shutdown budget over [`HangingArm`], once it leads.
async fn hanging_leader() -> (FakeApi, Arc<HangingArm>, Operator) {
    let api = FakeApi::new(seed_specs());
    let engine = Arc::new(HangingArm(0.into()));
    let mut options = options(free_addr(), Some(lease_settings("replica-a")));
    options.shutdown_timeout = Duration::from_secs(20);
    let op = Operator::start(api.client(), engine.clone(), options);
    assert!(eventually(Duration::from_secs(60), || async { op.leader() == 1 }).await);
    (api, engine, op)
}

#[tokio::test(start_paused = true)]
async fn sigterm_while_arm_hangs_cancels_the_reconciles_releases_the_lease_and_returns_within_the_budget(
) {
    let (api, engine, op) = hanging_leader().await;
    // Leader, with reconciles stuck in ARM (virtual time: the clock is paused).
    assert!(
        eventually(Duration::from_secs(60), || async {
            engine.0.load(Ordering::SeqCst) > 0
        })
        .await
    );
    assert_eq!(api.holder().as_deref(), Some("replica-a"));

    let signalled = tokio::time::Instant::now();
    let stopped = tokio::time::timeout(Duration::from_secs(120), op.stop()).await;
    let took = signalled.elapsed();
    assert!(
        stopped.is_ok(),
        "run returned after SIGTERM although ARM never answered"
    );
    stopped.unwrap().unwrap();
    assert!(
        took < Duration::from_secs(1),
        "in-flight reconciles are cancelled at once, not waited for: {took:?}"
    );
    assert_eq!(api.holder(), None, "the Lease was released");
    assert_eq!(
        api.lease().unwrap().pointer("/spec/leaseDurationSeconds"),
        Some(&json!(1))
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_gives_up_on_an_unreachable_api_server_when_its_budget_is_spent() {
    // The Lease cannot be released (the API server went away with the signal): run returns
    // at the budget anyway, so the kubelet's SIGKILL never comes first.
    let (api, _engine, op) = hanging_leader().await;
    // Releasing needs the API server, which no longer answers at all.
    api.0.lease_hangs.store(true, Ordering::SeqCst);
    let signalled = tokio::time::Instant::now();
    let stopped = tokio::time::timeout(Duration::from_secs(120), op.stop()).await;
    assert!(stopped.is_ok(), "run returned within the budget");
    let took = signalled.elapsed();
    assert!(
        took >= Duration::from_secs(20) && took <= Duration::from_secs(21),
        "the budget, not the hanging release, ended the shutdown: {took:?}"
    );
    assert_eq!(
        api.holder().as_deref(),
        Some("replica-a"),
        "the release never reached the API server"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_arm_is_unreachable_stops_long_before_the_arm_retries_would_end() {
    // ARM refuses connections; the default retry policy would go on for ~50 s (the issue's
    // measurement). Nothing is written, so nothing needs waiting for.
    let closed = free_addr();
    let api = FakeApi::new(seed_specs());
    let mut options = options(free_addr(), None);
    options.shutdown_timeout = Duration::from_secs(20);
    let metrics_addr = options.metrics_addr;
    let engine = fenced_pipeline(
        &format!("http://{closed}"),
        RetryConfig::default(),
        &options,
    );
    let op = Operator::start(api.client(), engine, options);
    assert!(op.answers("/readyz", Duration::from_secs(20)).await);
    // Reconciles are in ARM retries now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let signalled = std::time::Instant::now();
    let stopped = tokio::time::timeout(Duration::from_secs(45), op.stop()).await;
    assert!(stopped.is_ok(), "run returned after SIGTERM");
    // Generous: the point is seconds, not the ~50 s the ARM retries would take.
    assert!(
        signalled.elapsed() < Duration::from_secs(15),
        "{:?}",
        signalled.elapsed()
    );
    assert!(
        std::net::TcpStream::connect(metrics_addr).is_err(),
        "the probes stopped"
    );
}

#[test]
fn asenet_controller_refuses_lease_timings_that_could_split_the_leadership() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_asenet"))
        .args([
            "controller",
            "--lease-duration-seconds",
            "10",
            "--lease-renew-deadline-seconds",
            "12",
        ])
        .env("KUBECONFIG", "/nonexistent")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--lease-duration-seconds `10s` must be longer than --lease-renew-deadline-seconds `12s`"),
        "{stderr}"
    );
}

#[tokio::test(start_paused = true)]
async fn sigterm_before_the_api_server_ever_answered_returns_at_once() {
    // Nothing was listed, nothing reconciled, no Lease held: nothing to wait for.
    let api = FakeApi::new(seed_specs());
    api.0.down.store(true, Ordering::SeqCst);
    let engine = Arc::new(HangingArm(0.into()));
    let mut options = options(free_addr(), Some(lease_settings("replica-a")));
    options.shutdown_timeout = Duration::from_secs(20);
    let op = Operator::start(api.client(), engine.clone(), options);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!op.task.is_finished());
    let signalled = tokio::time::Instant::now();
    let stopped = tokio::time::timeout(Duration::from_secs(120), op.stop()).await;
    assert!(stopped.is_ok());
    let took = signalled.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "not the whole budget: {took:?}"
    );
    assert_eq!(engine.0.load(Ordering::SeqCst), 0);
}
