//! Controller tests: `reconcile` called directly (as kube-rs/controller-rs does) with a
//! `Context` whose kube client talks to a tower-test mock API server and whose pipeline is
//! the real one, writing to the in-process mock ARM server seeded with `examples/seed`.
//!
//! Each test runs a scenario task that plays the API server: it asserts the exact sequence
//! of kube requests (method, path, key body parts) and answers them. After the reconcile,
//! every client is dropped and the scenario checks that no request is left.

use std::sync::Arc;
use std::time::Duration;

use asenet::api::{AseConnectivity, Mode};
use asenet::azure::{ArmClientOptions, RetryConfig};
use asenet::controller::{
    self, error_policy, index, reconcile, Context, Leadership, Metrics, Settings, Stores, FINALIZER,
};
use asenet::observe::ServiceTags;
use asenet::pipeline::{Pipeline, PipelineOptions};
use http::{Method, Request, Response};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::reflector;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{json, Value};

pub(crate) type ApiServerHandle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

pub(crate) const SEED: &str = "examples/seed";
/// What Azure holds for the seed example (its snapshot).
pub(crate) const SEED_AZURE: &str = "examples/azure/seed";
pub(crate) const NSG_ONE: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/network/providers/Microsoft.Network/networkSecurityGroups/ase-one-nsg";
const NSG_TWO: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/network/providers/Microsoft.Network/networkSecurityGroups/ase-two-nsg";

// ---------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------

fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub(crate) fn load(path: &str) -> Vec<AseConnectivity> {
    asenet::load::load_specs(&[root().join(path)])
        .unwrap()
        .into_iter()
        .map(|l| l.spec)
        .collect()
}

pub(crate) fn seed_spec(name: &str) -> AseConnectivity {
    let mut spec = load(SEED)
        .into_iter()
        .find(|s| s.name_any() == name)
        .unwrap();
    spec.metadata.uid = Some(format!("uid-{name}"));
    spec.metadata.generation = Some(1);
    spec.metadata.resource_version = Some("1".into());
    spec
}

pub(crate) fn with_finalizer(mut spec: AseConnectivity) -> AseConnectivity {
    spec.metadata.finalizers = Some(vec![FINALIZER.to_string()]);
    spec
}

pub(crate) fn deleting(mut spec: AseConnectivity) -> AseConnectivity {
    spec.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
    spec
}

/// The in-process mock ARM, seeded with the topology of examples/seed.
pub(crate) struct Arm {
    pub(crate) mock: mock_arm::RunningMock,
    pub(crate) pipeline: Arc<Pipeline>,
}

impl Arm {
    pub(crate) async fn start() -> Arm {
        let dir = root().join(SEED_AZURE);
        let specs = load(SEED);
        let snapshot = asenet::load::load_snapshot(&dir.join("snapshot.yaml")).unwrap();
        let (valid, _) = asenet::validate::validate_all(&specs);
        let seed = asenet::fixture::mock_seed::seed(&snapshot, &valid).unwrap();
        let config = mock_arm::Config {
            lro_delay: Duration::from_millis(20),
            lro_retry_after: Duration::from_millis(10),
            ..mock_arm::Config::default()
        };
        let options = ArmClientOptions {
            retry: RetryConfig {
                max_attempts: 3,
                base_delay: Duration::from_millis(10),
                max_delay: Duration::from_millis(50),
                max_retry_after: Duration::from_millis(100),
            },
            lro_default_poll: Duration::from_millis(10),
            lro_max_poll: Duration::from_millis(50),
            lro_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
        };
        let tags = ServiceTags::load(&dir.join("snapshot.yaml"))
            .unwrap_or_else(|_| ServiceTags::embedded());
        let asenet::fixture::harness::MockPipeline { mock, pipeline } =
            asenet::fixture::harness::start(
                seed,
                config,
                options,
                PipelineOptions {
                    service_tags: tags,
                    ..PipelineOptions::default()
                },
            )
            .await
            .unwrap();
        mock.state.reset_stats();
        Arm {
            mock,
            pipeline: Arc::new(pipeline),
        }
    }

    pub(crate) fn writes(&self) -> u64 {
        self.mock.state.stats().writes() + self.mock.state.stats().deletes()
    }

    /// Names of the rules of an NSG in the mock, with their source prefixes.
    pub(crate) fn rules(&self, nsg: &str) -> Vec<(String, Value)> {
        let body = self.mock.state.get_resource(nsg).unwrap_or(Value::Null);
        body.pointer("/properties/securityRules")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|r| {
                let name = r["name"].as_str().unwrap_or_default().to_string();
                (name, r["properties"].clone())
            })
            .collect()
    }

    /// A foreign edit: deletes one rule asenet owns in ase-one-nsg (drift a reconcile
    /// repairs). False when there was none to delete.
    pub(crate) fn remove_an_owned_rule(&self) -> bool {
        let Some(mut body) = self.mock.state.get_resource(NSG_ONE) else {
            return false;
        };
        let Some(rules) = body
            .pointer_mut("/properties/securityRules")
            .and_then(Value::as_array_mut)
        else {
            return false;
        };
        let Some(i) = rules
            .iter()
            .position(|r| r["name"].as_str().is_some_and(|n| n.starts_with("asenet-")))
        else {
            return false;
        };
        rules.remove(i);
        self.mock.state.put_raw(NSG_ONE, body).is_ok()
    }

    pub(crate) fn owned_rules(&self, nsg: &str) -> Vec<String> {
        self.rules(nsg)
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| n.starts_with("asenet-"))
            .collect()
    }

    /// Applies `specs` with the pipeline directly (the state a previous leader left).
    pub(crate) async fn converge(&self, specs: &[AseConnectivity]) {
        let scope = asenet::pipeline::scope_of(specs);
        let outcome = self.pipeline.plan(specs, &scope).await.unwrap();
        self.pipeline
            .apply(specs, &scope, outcome, &|_| {})
            .await
            .unwrap();
        self.mock.state.reset_stats();
    }
}

/// A Context over a mocked API server, with `store` as the reflector's content.
fn context(
    arm: &Arm,
    store: &[AseConnectivity],
    leadership: Leadership,
) -> (Arc<Context>, ApiServer) {
    context_with(arm, store, leadership, Settings::default())
}

/// [`context`] with `settings`.
fn context_with(
    arm: &Arm,
    store: &[AseConnectivity],
    leadership: Leadership,
    settings: Settings,
) -> (Arc<Context>, ApiServer) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let (reader, mut writer) = reflector::store::<AseConnectivity>();
    writer.apply_watcher_event(&watcher::Event::Init);
    for spec in store {
        writer.apply_watcher_event(&watcher::Event::InitApply(spec.clone()));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    let ctx = Context::new(
        client,
        Stores::new(vec![reader]),
        arm.pipeline.clone(),
        Metrics::new(),
        leadership,
        settings,
        Some("test".into()),
    );
    (ctx, ApiServer(handle))
}

/// [`context`] whose store holds `spec` alone, on the leader.
fn context_of(arm: &Arm, spec: &AseConnectivity) -> (Arc<Context>, ApiServer) {
    context(arm, std::slice::from_ref(spec), Leadership::always())
}

// ---------------------------------------------------------------------------------------
// The API server side of a scenario
// ---------------------------------------------------------------------------------------

pub(crate) struct ApiServer(pub(crate) ApiServerHandle);

const SPECS: &str = "/apis/asenet.io/v1alpha1/namespaces";

impl ApiServer {
    pub(crate) async fn next(
        &mut self,
    ) -> (
        Method,
        String,
        String,
        Value,
        tower_test::mock::SendResponse<Response<Body>>,
    ) {
        let (request, send) = tokio::time::timeout(Duration::from_secs(30), self.0.next_request())
            .await
            .expect("the controller sent no request in time")
            .expect("the client was dropped before the expected request");
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let query = request.uri().query().unwrap_or_default().to_string();
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        (method, path, query, body, send)
    }

    pub(crate) fn respond(send: tower_test::mock::SendResponse<Response<Body>>, body: &Value) {
        send.send_response(
            Response::builder()
                .body(Body::from(serde_json::to_vec(body).unwrap()))
                .unwrap(),
        );
    }

    /// A JSON PATCH of `spec` with exactly `expected` as body, answered with `after`.
    async fn spec_patched(
        &mut self,
        spec: &AseConnectivity,
        expected: Value,
        after: AseConnectivity,
    ) {
        let (method, path, _, body, send) = self.next().await;
        assert_eq!(method, Method::PATCH);
        assert_eq!(
            path,
            format!(
                "{SPECS}/{}/aseconnectivities/{}",
                spec.namespace().unwrap(),
                spec.name_any()
            )
        );
        assert_eq!(body, expected);
        Self::respond(send, &serde_json::to_value(after).unwrap());
    }

    /// PATCH of the spec adding the finalizer (JSON patch with a `test` guard).
    async fn finalizer_added(&mut self, spec: &AseConnectivity) {
        let expected = json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
        ]);
        self.spec_patched(spec, expected, with_finalizer(spec.clone()))
            .await;
    }

    /// PATCH of the spec removing the finalizer.
    pub(crate) async fn finalizer_removed(&mut self, spec: &AseConnectivity) {
        let expected = json!([
            {"op": "test", "path": "/metadata/finalizers/0", "value": FINALIZER},
            {"op": "remove", "path": "/metadata/finalizers/0"},
        ]);
        let mut released = spec.clone();
        released.metadata.finalizers = None;
        self.spec_patched(spec, expected, released).await;
    }

    /// Server-side apply of the status under the field manager `asenet`; returns the status.
    pub(crate) async fn status_applied(&mut self, spec: &AseConnectivity) -> Value {
        let (method, path, query, body, send) = self.next().await;
        assert_eq!(method, Method::PATCH);
        assert_eq!(
            path,
            format!(
                "{SPECS}/{}/aseconnectivities/{}/status",
                spec.namespace().unwrap(),
                spec.name_any()
            )
        );
        assert!(query.contains("fieldManager=asenet"), "{query}");
        assert!(query.contains("force=true"), "{query}");
        assert_eq!(body["apiVersion"], "asenet.io/v1alpha1");
        assert_eq!(body["kind"], "AseConnectivity");
        let status = body["status"].clone();
        let mut answer = serde_json::to_value(spec).unwrap();
        answer["status"] = status.clone();
        Self::respond(send, &answer);
        status
    }

    /// GET of the spec's status (the full object, as the API server has it).
    async fn status_read(&mut self, full: &AseConnectivity) {
        let (method, path, _, _, send) = self.next().await;
        assert_eq!(method, Method::GET);
        assert_eq!(
            path,
            format!(
                "{SPECS}/{}/aseconnectivities/{}/status",
                full.namespace().unwrap(),
                full.name_any()
            )
        );
        Self::respond(send, &serde_json::to_value(full).unwrap());
    }

    /// An events.k8s.io/v1 Event about the spec; returns its note.
    pub(crate) async fn event(
        &mut self,
        spec: &AseConnectivity,
        type_: &str,
        reason: &str,
    ) -> String {
        let (method, path, _, body, send) = self.next().await;
        assert_eq!(method, Method::POST);
        assert_eq!(
            path,
            format!(
                "/apis/events.k8s.io/v1/namespaces/{}/events",
                spec.namespace().unwrap()
            )
        );
        assert_eq!(body["reason"], reason, "{body}");
        assert_eq!(body["type"], type_);
        assert_eq!(body["regarding"]["name"], spec.name_any());
        assert_eq!(body["regarding"]["kind"], "AseConnectivity");
        assert_eq!(body["reportingController"], "asenet");
        Self::respond(send, &body);
        body["note"].as_str().unwrap_or_default().to_string()
    }

    /// After every client is dropped: no request is left.
    pub(crate) async fn done(mut self) {
        let left = tokio::time::timeout(Duration::from_secs(5), self.0.next_request())
            .await
            .expect("the client is still alive");
        if let Some((request, _)) = left {
            panic!("unexpected request {} {}", request.method(), request.uri());
        }
    }
}

pub(crate) fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

/// Plays `scenario` (the API server's side, which returns what it saw) while `work` runs
/// (reconciles, which drop their clients when they end); returns what both returned once
/// both ended and no request is left.
async fn with_scenario<F, T, R>(
    server: ApiServer,
    scenario: impl FnOnce(ApiServer) -> F,
    work: impl std::future::Future<Output = R>,
) -> (R, T)
where
    F: std::future::Future<Output = (ApiServer, T)> + Send + 'static,
    T: Send + 'static,
{
    let task = tokio::spawn(scenario(server));
    let out = work.await;
    let (server, seen) = tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("scenario timed out")
        .expect("scenario failed");
    server.done().await;
    (out, seen)
}

/// Runs a reconcile against a scenario and returns its result once both ended.
pub(crate) async fn run<F>(
    obj: AseConnectivity,
    ctx: Arc<Context>,
    server: ApiServer,
    scenario: impl FnOnce(ApiServer) -> F,
) -> Result<Action, controller::Error>
where
    F: std::future::Future<Output = ApiServer> + Send + 'static,
{
    let scenario = |api| {
        let played = scenario(api);
        async move { (played.await, ()) }
    };
    run_seeing(obj, ctx, server, scenario).await.0
}

/// Reconciles `spec` alone on the leader against an API server that expects one status
/// write; returns the result and the status.
async fn reconcile_status(
    arm: &Arm,
    spec: &AseConnectivity,
) -> (Result<Action, controller::Error>, Value) {
    let (ctx, server) = context_of(arm, spec);
    let s = spec.clone();
    run_seeing(spec.clone(), ctx, server, |mut api| async move {
        let status = api.status_applied(&s).await;
        (api, status)
    })
    .await
}

/// [`reconcile_status`] expecting an event of `type_` and `reason` after the status write;
/// returns the event's note too.
async fn reconcile_status_event(
    arm: &Arm,
    spec: &AseConnectivity,
    type_: &'static str,
    reason: &'static str,
) -> (Result<Action, controller::Error>, Value, String) {
    let (ctx, server) = context_of(arm, spec);
    let s = spec.clone();
    let (result, (status, note)) = run_seeing(spec.clone(), ctx, server, |mut api| async move {
        let status = api.status_applied(&s).await;
        let note = api.event(&s, type_, reason).await;
        (api, (status, note))
    })
    .await;
    (result, status, note)
}

/// [`run`] against an API server that expects no request at all.
async fn run_silent(
    obj: AseConnectivity,
    ctx: Arc<Context>,
    server: ApiServer,
) -> Result<Action, controller::Error> {
    run(obj, ctx, server, |api| async move { api }).await
}

/// [`run`] with a scenario that also returns what it saw (a status, an event's note).
pub(crate) async fn run_seeing<F, T>(
    obj: AseConnectivity,
    ctx: Arc<Context>,
    server: ApiServer,
    scenario: impl FnOnce(ApiServer) -> F,
) -> (Result<Action, controller::Error>, T)
where
    F: std::future::Future<Output = (ApiServer, T)> + Send + 'static,
    T: Send + 'static,
{
    with_scenario(server, scenario, reconcile(Arc::new(obj), ctx)).await
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_spec_gets_the_finalizer_then_azure_is_written_and_ready_is_true() {
    let arm = Arm::start().await;
    let spec = seed_spec("ase-one");

    // First reconcile: only the finalizer, nothing in Azure yet.
    let (ctx, server) = context_of(&arm, &spec);
    let s = spec.clone();
    let action = run(spec.clone(), ctx, server, |mut api| async move {
        api.finalizer_added(&s).await;
        api
    })
    .await
    .unwrap();
    assert_eq!(action, Action::await_change());
    assert_eq!(
        arm.mock.state.stats().total,
        0,
        "no ARM call before the finalizer is set"
    );

    // Second reconcile (the patch triggered it): plan, apply, status, event.
    let spec = with_finalizer(spec);
    let (result, status, note) = reconcile_status_event(&arm, &spec, "Normal", "Applied").await;
    let action = result.unwrap();
    assert_eq!(action, Action::requeue(Settings::default().resync));

    assert!(arm.writes() > 0, "ARM was written");
    assert!(
        !arm.owned_rules(NSG_ONE).is_empty(),
        "ase-one-nsg has asenet rules"
    );
    assert!(note.contains("ase-one-nsg"), "{note}");
    assert_eq!(condition(&status, "Ready")["status"], "True");
    assert_eq!(condition(&status, "Ready")["reason"], "Converged");
    assert_eq!(condition(&status, "InSync")["status"], "True");
    assert_eq!(condition(&status, "InSync")["reason"], "Applied");
    assert_eq!(condition(&status, "Resolved")["status"], "True");
    assert_eq!(condition(&status, "Degraded")["status"], "False");
    assert_eq!(condition(&status, "Ready")["observedGeneration"], 1);
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(status["plan"]["total"], 0, "nothing left to change");
    assert_eq!(status["addresses"]["virtualNetwork"], "10.0.1.0/26");
    assert!(status["rules"].as_array().is_some_and(|r| !r.is_empty()));
    assert!(status["rules"][0]["reason"]
        .as_str()
        .is_some_and(|r| !r.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_converged_spec_resyncs_without_any_write() {
    let arm = Arm::start().await;
    let spec = with_finalizer(seed_spec("ase-one"));
    arm.converge(std::slice::from_ref(&spec)).await;

    // First pass writes the status (it had none); the second finds it equal and writes nothing.
    let (result, status) = reconcile_status(&arm, &spec).await;
    result.unwrap();
    assert_eq!(condition(&status, "InSync")["reason"], "NoChanges");

    let mut spec = spec;
    spec.status = Some(serde_json::from_value(status).unwrap());
    let (ctx, server) = context_of(&arm, &spec);
    run_silent(spec, ctx, server).await.unwrap();
    assert_eq!(arm.writes(), 0, "a resync in sync writes nothing to Azure");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mode_plan_writes_nothing_to_azure_and_puts_the_plan_in_status() {
    let arm = Arm::start().await;
    let mut spec = with_finalizer(seed_spec("ase-one"));
    spec.spec.mode = Mode::Plan;
    let (result, status, note) =
        reconcile_status_event(&arm, &spec, "Normal", "ChangesPlanned").await;
    result.unwrap();

    let stats = arm.mock.state.stats();
    assert!(stats.reads() > 0, "Azure was observed");
    assert_eq!(
        stats.writes() + stats.deletes(),
        0,
        "mode Plan never writes"
    );
    assert!(status["plan"]["total"].as_u64().unwrap() > 0, "{status}");
    assert!(status["plan"]["create"].as_u64().unwrap() > 0, "{status}");
    assert_eq!(condition(&status, "InSync")["status"], "False");
    assert_eq!(condition(&status, "InSync")["reason"], "ChangesPlanned");
    assert_eq!(condition(&status, "Ready")["status"], "True");
    assert_eq!(condition(&status, "Ready")["reason"], "Planned");
    assert!(note.contains("planned"), "{note}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_spec_removes_its_owned_rules_and_then_the_finalizer() {
    let arm = Arm::start().await;
    let spec = with_finalizer(seed_spec("ase-one"));
    arm.converge(std::slice::from_ref(&spec)).await;
    assert!(!arm.owned_rules(NSG_ONE).is_empty());

    let spec = deleting(spec);
    let (ctx, server) = context_of(&arm, &spec);
    let s = spec.clone();
    let action = run(spec.clone(), ctx, server, |mut api| async move {
        let note = api.event(&s, "Normal", "CleanedUp").await;
        assert!(note.contains("ase-one-nsg"), "{note}");
        api.finalizer_removed(&s).await;
        api
    })
    .await
    .unwrap();
    assert_eq!(action, Action::await_change());
    assert!(arm.writes() > 0);
    assert!(
        arm.owned_rules(NSG_ONE).is_empty(),
        "ase-one's rules are gone: {:?}",
        arm.owned_rules(NSG_ONE)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_with_orphan_policy_leaves_azure_alone() {
    let arm = Arm::start().await;
    let mut spec = with_finalizer(seed_spec("ase-one"));
    spec.spec.deletion_policy = asenet::api::DeletionPolicy::Orphan;
    arm.converge(std::slice::from_ref(&spec)).await;
    let before = arm.owned_rules(NSG_ONE);

    let spec = deleting(spec);
    let (ctx, server) = context_of(&arm, &spec);
    let s = spec.clone();
    run(spec.clone(), ctx, server, |mut api| async move {
        api.event(&s, "Normal", "Orphaned").await;
        api.finalizer_removed(&s).await;
        api
    })
    .await
    .unwrap();
    assert_eq!(arm.mock.state.stats().total, 0, "no ARM call at all");
    assert_eq!(arm.owned_rules(NSG_ONE), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_spec_is_degraded_with_the_field_in_the_message_and_never_reaches_azure() {
    let arm = Arm::start().await;
    let mut spec = with_finalizer(load("examples/invalid/bad-cidr.yaml").remove(0));
    spec.metadata.generation = Some(4);
    let (result, status, note) =
        reconcile_status_event(&arm, &spec, "Warning", "InvalidField").await;

    assert_eq!(
        arm.mock.state.stats().total,
        0,
        "an invalid spec causes no ARM call"
    );
    let degraded = condition(&status, "Degraded");
    assert_eq!(degraded["status"], "True");
    assert_eq!(degraded["reason"], "InvalidField");
    let message = degraded["message"].as_str().unwrap();
    assert!(
        message.contains("spec.inbound[0].from[1].cidr"),
        "{message}"
    );
    assert!(message.contains("10.0.0.300/24"), "{message}");
    assert!(note.contains("spec.inbound[0].from[1].cidr"), "{note}");
    assert_eq!(condition(&status, "Resolved")["status"], "False");
    assert_eq!(condition(&status, "Ready")["status"], "False");
    assert_eq!(condition(&status, "InSync")["status"], "Unknown");
    assert_eq!(status["observedGeneration"], 4);

    // The error waits for a change of the spec: no retry loop.
    let error = result.unwrap_err();
    assert_eq!(error.category(), "InvalidField");
    let (ctx, _server) = context(&arm, &[], Leadership::always());
    assert_eq!(
        error_policy(Arc::new(spec), &error, ctx),
        Action::await_change()
    );
}

#[test]
fn a_change_of_a_spec_wakes_the_specs_that_reference_it_or_share_a_resource() {
    let one = seed_spec("ase-one");
    let two = seed_spec("ase-two");
    // A third spec whose back end shares ase-one's sql-nsg.
    let mut three = seed_spec("ase-two");
    three.metadata.name = Some("reporting".into());
    three.spec.inbound.clear();
    three.spec.network_security_group.resource_id = NSG_TWO.replace("ase-two-nsg", "reporting-nsg");
    three.spec.route_table = None;
    three.spec.backends = one.spec.backends.clone();
    let all: Vec<Arc<AseConnectivity>> = [&one, &two, &three].map(|s| Arc::new(s.clone())).to_vec();

    let key = |n: &str| ("network".to_string(), n.to_string());
    // ase-two names ase-one in an environmentRef; reporting shares sql-nsg with ase-one.
    assert_eq!(
        index::dependents(&one, &all),
        vec![key("ase-two"), key("reporting")]
    );
    // Nobody references ase-two, and it shares nothing.
    assert_eq!(index::dependents(&two, &all), Vec::<index::Key>::new());
    assert_eq!(index::dependents(&three, &all), vec![key("ase-one")]);
    // Ids compare case-insensitively, as ARM compares them.
    let mut shouting = three.clone();
    shouting.spec.backends[0].network_security_group.resource_id = shouting.spec.backends[0]
        .network_security_group
        .resource_id
        .to_uppercase();
    assert_eq!(index::dependents(&shouting, &all), vec![key("ase-one")]);
    let refs = index::dependent_refs(&one, &all);
    assert_eq!(refs[0].name, "ase-two");
    assert_eq!(refs[0].namespace.as_deref(), Some("network"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_vip_of_a_referenced_spec_reaches_its_dependent_on_the_next_reconcile() {
    let arm = Arm::start().await;
    let one = with_finalizer(seed_spec("ase-one"));
    let two = with_finalizer(seed_spec("ase-two"));
    arm.converge(&[one.clone(), two.clone()]).await;
    let admits = |vip: &str| {
        arm.rules(NSG_TWO)
            .iter()
            .any(|(name, p)| name.starts_with("asenet-") && p.to_string().contains(vip))
    };
    let old_vip = "192.23.1.2";
    assert!(
        admits(old_vip),
        "ase-two admits ase-one's VIP: {:?}",
        arm.rules(NSG_TWO)
    );

    // ase-one changes (its VIP, given explicitly now); the index wakes ase-two.
    let new_vip = "192.23.1.99";
    let mut one = one;
    one.spec.environment.addresses = Some(asenet::api::AddressesSpec {
        public_vip: Some(new_vip.into()),
        ..Default::default()
    });
    let store = [one.clone(), two.clone()];
    let woken = index::dependents(&one, &store.clone().map(Arc::new));
    assert_eq!(woken, vec![("network".to_string(), "ase-two".to_string())]);

    let (ctx, server) = context(&arm, &store, Leadership::always());
    let s = two.clone();
    let (result, status) = run_seeing(two.clone(), ctx, server, |mut api| async move {
        let status = api.status_applied(&s).await;
        let note = api.event(&s, "Normal", "Applied").await;
        assert!(note.contains("ase-two-nsg"), "{note}");
        (api, status)
    })
    .await;
    result.unwrap();
    assert!(
        admits(new_vip),
        "ase-two now admits the new VIP: {:?}",
        arm.rules(NSG_TWO)
    );
    assert!(!admits(old_vip), "and no longer the old one");
    assert_eq!(condition(&status, "InSync")["reason"], "Applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_is_not_the_leader_never_writes() {
    let arm = Arm::start().await;
    let spec = with_finalizer(seed_spec("ase-one"));
    let leadership = Leadership::follower();
    let (ctx, server) = context(&arm, std::slice::from_ref(&spec), leadership.clone());
    let action = run_silent(spec.clone(), ctx, server).await.unwrap();
    assert_eq!(action, Action::await_change());
    assert_eq!(arm.writes(), 0, "no ARM write");
    assert_eq!(arm.mock.state.stats().total, 0, "not even a read");

    // Not even the finalizer of a new spec.
    let fresh = seed_spec("ase-one");
    let (ctx, server) = context(&arm, std::slice::from_ref(&fresh), leadership);
    run_silent(fresh, ctx, server).await.unwrap();
    assert_eq!(arm.mock.state.stats().total, 0);
}

#[test]
fn transient_errors_back_off_and_permanent_ones_wait() {
    assert_eq!(controller::reconcile::backoff(1), Duration::from_secs(5));
    assert_eq!(controller::reconcile::backoff(2), Duration::from_secs(10));
    assert_eq!(controller::reconcile::backoff(30), Duration::from_secs(300));
    let transient = controller::Error::Plan(asenet::pipeline::PipelineError::Arm(
        asenet::azure::ArmError::Http {
            method: "GET".into(),
            resource: "nsg".into(),
            status: 429,
            code: "TooManyRequests".into(),
            message: "429".into(),
        },
    ));
    assert_eq!(transient.policy(), controller::reconcile::Policy::Backoff);
    assert_eq!(transient.category(), "Transient");
}

#[test]
fn an_error_category_is_spelled_alike_in_metrics_conditions_events_and_json() {
    use asenet::error::{SpecError, SpecErrorKind};
    use asenet::model::SpecKey;
    let spec = SpecKey {
        namespace: "network".into(),
        name: "ase-one".into(),
    };
    for kind in [
        SpecErrorKind::InvalidField,
        SpecErrorKind::UnresolvedReference,
        SpecErrorKind::BandFull,
        SpecErrorKind::LimitExceeded,
        SpecErrorKind::NotPermitted,
    ] {
        // The metric label (`error_policy` counts `category()`) ...
        let error = controller::Error::Spec {
            spec: spec.clone(),
            kind,
            message: "m".into(),
        };
        // ... is the condition and event reason (`kind.as_str()`) and the plan JSON's
        // `errors[].kind` ...
        assert_eq!(error.category(), kind.as_str());
        // ... and the resolve JSON's `kind`.
        let json = serde_json::to_value(SpecError::new(&spec, kind, "f", "v", "m")).unwrap();
        assert_eq!(json["kind"], kind.as_str());
    }
    for (status, category) in [
        (503, asenet::azure::ErrorCategory::Transient),
        (403, asenet::azure::ErrorCategory::Permanent),
    ] {
        let arm = asenet::azure::ArmError::Http {
            method: "PUT".into(),
            resource: "nsg".into(),
            status,
            code: "Code".into(),
            message: "m".into(),
        };
        for error in [
            controller::Error::Plan(asenet::pipeline::PipelineError::Arm(arm.clone())),
            controller::Error::Apply(asenet::pipeline::PipelineError::Arm(arm)),
        ] {
            assert_eq!(error.category(), category.as_str());
        }
    }
}

#[test]
fn asenet_crd_prints_the_committed_crd() {
    // Regenerate with: cargo run -q -- crd > crds/aseconnectivities.asenet.io.yaml
    //                  cp crds/aseconnectivities.asenet.io.yaml charts/asenet/crds/
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_asenet"))
        .arg("crd")
        .output()
        .unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    for committed in [
        "crds/aseconnectivities.asenet.io.yaml",
        "charts/asenet/crds/aseconnectivities.asenet.io.yaml",
    ] {
        let text = std::fs::read_to_string(root().join(committed)).unwrap();
        assert!(
            text == printed,
            "{committed} differs from `asenet crd`; regenerate it (see this test's comment)"
        );
    }
    let crd: Value = serde_yaml::from_str(&printed).unwrap();
    let version = &crd["spec"]["versions"][0];
    assert_eq!(crd["spec"]["names"]["shortNames"], json!(["asec"]));
    assert_eq!(version["subresources"]["status"], json!({}));
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["Mode", "Ready", "InSync", "Changes", "Age"]);
    let text = printed.as_str();
    assert!(text.contains("rule: self.from < self.to"));
    assert!(text.contains("Microsoft[.]Network/networkSecurityGroups"));
    assert!(text.contains("Microsoft[.]Network/virtualNetworks/[^/]+/subnets"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_nsg_is_not_written_while_a_contributing_spec_is_in_mode_plan() {
    let arm = Arm::start().await;
    let one = with_finalizer(seed_spec("ase-one"));
    // ase-two, in mode Plan, also opens sql-nsg (in its own band).
    let mut two = with_finalizer(seed_spec("ase-two"));
    two.spec.mode = Mode::Plan;
    let mut backend = one.spec.backends[0].clone();
    backend.name = "orders-sql-two".into();
    backend.network_security_group.priorities = Some(asenet::api::PriorityBandSpec {
        from: 2000,
        to: 2999,
    });
    two.spec.backends = vec![backend];
    let sql_nsg = one.spec.backends[0]
        .network_security_group
        .resource_id
        .clone();

    let (ctx, server) = context(&arm, &[one.clone(), two.clone()], Leadership::always());
    let metrics = ctx.metrics.clone();
    arm.pipeline
        .arm()
        .clone()
        .with_observer(metrics.clone() as Arc<dyn asenet::azure::ArmObserver>);
    let s = one.clone();
    let (result, (status, note)) = run_seeing(one.clone(), ctx, server, |mut api| async move {
        let status = api.status_applied(&s).await;
        api.event(&s, "Normal", "Applied").await;
        let note = api.event(&s, "Warning", "SharedResourceNotApplied").await;
        (api, (status, note))
    })
    .await;
    result.unwrap();

    assert!(
        !arm.owned_rules(NSG_ONE).is_empty(),
        "ase-one's own NSG is written"
    );
    assert!(
        arm.owned_rules(&sql_nsg).is_empty(),
        "the shared sql-nsg is not"
    );
    assert!(note.contains("sql-nsg"), "{note}");
    let in_sync = condition(&status, "InSync");
    assert_eq!(in_sync["status"], "False");
    assert_eq!(in_sync["reason"], "SharedResourceNotApplied");
    assert!(
        in_sync["message"]
            .as_str()
            .unwrap()
            .contains("network/ase-two"),
        "{in_sync}"
    );
    assert_eq!(condition(&status, "Ready")["status"], "False");
    assert!(status["plan"]["total"].as_u64().unwrap() > 0);

    // Metrics: one reconcile in mode apply, ARM requests by verb and status, changes.
    let text = metrics.encode().unwrap();
    assert!(
        text.contains("asenet_reconciles_total{mode=\"apply\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("asenet_arm_requests_total{verb=\"PUT\",status=\"200\"}")
            || text.contains("asenet_arm_requests_total{verb=\"PUT\",status=\"201\"}"),
        "{text}"
    );
    assert!(
        text.contains("asenet_applied_changes_total{action=\"create\"}"),
        "{text}"
    );
    assert!(
        text.contains("asenet_reconcile_duration_seconds_count 1"),
        "{text}"
    );
}

/// ase-two with its `environmentRef`s replaced by ase-one's own (Internet) sources: it then
/// shares nothing with ase-one and references nobody.
fn unrelated_spec() -> AseConnectivity {
    let one = seed_spec("ase-one");
    let mut spec = seed_spec("ase-two");
    for rule in &mut spec.spec.inbound {
        rule.from = one.spec.inbound[0].from.clone();
    }
    spec
}

#[test]
fn the_component_of_a_spec_is_what_shares_a_parent_or_a_reference_with_it_transitively() {
    let one = seed_spec("ase-one");
    let two = seed_spec("ase-two");
    // Shares ase-one's sql-nsg (a back end), nothing else.
    let mut reporting = seed_spec("ase-two");
    reporting.metadata.name = Some("reporting".into());
    reporting.spec.inbound.clear();
    reporting.spec.network_security_group.resource_id =
        NSG_TWO.replace("ase-two-nsg", "reporting-nsg");
    reporting.spec.subnet.resource_id = reporting
        .spec
        .subnet
        .resource_id
        .replace("ase-two", "reporting");
    reporting.spec.route_table = None;
    reporting.spec.backends = one.spec.backends.clone();
    // Shares only a subnet with reporting.
    let mut neighbour = unrelated_spec();
    neighbour.metadata.name = Some("neighbour".into());
    neighbour.spec.network_security_group.resource_id =
        NSG_TWO.replace("ase-two-nsg", "neighbour-nsg");
    neighbour.spec.route_table = None;
    neighbour.spec.subnet.resource_id = reporting.spec.subnet.resource_id.to_uppercase();
    let mut alone = unrelated_spec();
    alone.metadata.name = Some("alone".into());
    alone.spec.network_security_group.resource_id = NSG_TWO.replace("ase-two-nsg", "alone-nsg");
    alone.spec.subnet.resource_id = alone.spec.subnet.resource_id.replace("ase-two", "alone");
    alone.spec.route_table = None;

    let all: Vec<Arc<AseConnectivity>> = [&one, &two, &reporting, &neighbour, &alone]
        .map(|s| Arc::new(s.clone()))
        .to_vec();
    let names = |c: Vec<Arc<AseConnectivity>>| c.iter().map(|s| s.name_any()).collect::<Vec<_>>();
    let everyone_but_alone = vec!["ase-one", "ase-two", "neighbour", "reporting"];
    // ase-two references ase-one; reporting shares sql-nsg with ase-one; neighbour shares
    // reporting's subnet (ids compare case-insensitively). Each reaches the others.
    for root in [&one, &two, &reporting, &neighbour] {
        assert_eq!(
            names(index::component(&Arc::new(root.clone()), &all)),
            everyone_but_alone,
            "component of {}",
            root.name_any()
        );
    }
    assert_eq!(
        names(index::component(&Arc::new(alone.clone()), &all)),
        vec!["alone"]
    );

    // The root is planned in the version given, even when the store holds another or none.
    let mut newer = alone.clone();
    newer.metadata.generation = Some(2);
    let component = index::component(&Arc::new(newer), &all[..4]);
    assert_eq!(component.len(), 1);
    assert_eq!(component[0].metadata.generation, Some(2));

    // Without reporting, ase-one no longer reaches neighbour.
    let without: Vec<_> = all
        .iter()
        .filter(|s| s.name_any() != "reporting")
        .cloned()
        .collect();
    assert_eq!(
        names(index::component(&Arc::new(one.clone()), &without)),
        vec!["ase-one", "ase-two"]
    );

    // A spec whose status says it still owns rules in sql-nsg (it moved away) is planned
    // with sql-nsg's contributors, so its stale rules can go.
    let mut moved = alone.clone();
    moved.metadata.name = Some("moved".into());
    moved.spec.network_security_group.resource_id = NSG_TWO.replace("ase-two-nsg", "moved-nsg");
    moved.spec.subnet.resource_id = moved.spec.subnet.resource_id.replace("alone", "moved");
    moved.status = Some(asenet::api::AseConnectivityStatus {
        rules: vec![asenet::api::OwnedRuleStatus {
            parent: one.spec.backends[0]
                .network_security_group
                .resource_id
                .clone(),
            name: "asenet-moved-old".into(),
            priority: Some(300),
            reason: "was here".into(),
        }],
        ..Default::default()
    });
    let mut with_moved = all.clone();
    with_moved.push(Arc::new(moved));
    assert!(
        names(index::component(&Arc::new(one.clone()), &with_moved)).contains(&"moved".to_string())
    );

    // The parents whose locks a reconcile holds: every NSG, route table and subnet linked.
    let parents = index::component_resources(&index::component(&Arc::new(two.clone()), &without));
    assert!(parents.contains(&NSG_ONE.to_ascii_lowercase()));
    assert!(parents.contains(&NSG_TWO.to_ascii_lowercase()));
    assert!(parents.iter().any(|p| p.ends_with("/sql-nsg")));
    assert!(parents.iter().any(|p| p.ends_with("/subnets/ase-one")));
    // The one-pass version the reconciles use gives the same members and parents, with the
    // moved spec's old NSG (from its status) among the parents.
    for (root, all) in [(&two, &without), (&one, &with_moved), (&alone, &all)] {
        let root = Arc::new(root.clone());
        let (members, linked) = index::component_with_resources(&root, all);
        assert_eq!(names(members.clone()), names(index::component(&root, all)));
        assert_eq!(linked, index::component_resources(&members));
    }

    // One index kept across calls, as the controller keeps it, gives the fresh results while
    // the store changes under it: here `alone` is replaced by a version that joins sql-nsg.
    let mut joined = alone.clone();
    joined.spec.backends = one.spec.backends.clone();
    let mut changed = all.clone();
    changed[4] = Arc::new(joined);
    let mut kept = index::ComponentIndex::default();
    for (root, all) in [
        (&one, &all),
        (&two, &without),
        (&one, &with_moved),
        (&one, &changed),
        (&alone, &all),
        (&one, &all),
    ] {
        let root = Arc::new(root.clone());
        let (members, linked) = kept.component_with_resources(&root, all);
        let (fresh, fresh_linked) = index::component_with_resources(&root, all);
        assert_eq!(names(members), names(fresh));
        assert_eq!(linked, fresh_linked);
    }
    assert!(
        names(index::component(&Arc::new(one.clone()), &changed)).contains(&"alone".to_string())
    );

    // The views of the partition (what a reconcile of a stored, unchanged spec uses): for
    // every stored object of every store version, the same members and parents as the
    // fresh computation; the same `Arc` again while the store is unchanged, a new one once
    // it changed.
    let mut deleting = (*all[3]).clone();
    deleting.metadata.deletion_timestamp = Some(asenet_time());
    let mut with_deleting = all.clone();
    with_deleting[3] = Arc::new(deleting);
    // New versions of ase-two: its status alone changed (a status write), then its spec
    // (a new generation) with the same parents and references.
    let mut status_only = (*all[1]).clone();
    status_only.status = Some(asenet::api::AseConnectivityStatus {
        observed_generation: Some(3),
        ..Default::default()
    });
    let mut written = all.clone();
    written[1] = Arc::new(status_only);
    let mut edited = (*written[1]).clone();
    edited.metadata.generation = Some(9);
    let mut edited_store = written.clone();
    edited_store[1] = Arc::new(edited);
    let mut kept = index::ComponentIndex::default();
    let v0 = kept.view(&all[0], &all);
    let v1 = kept.view(&written[0], &written);
    assert!(
        !Arc::ptr_eq(&v0, &v1),
        "a view holds the versions of its store"
    );
    assert!(v1.specs.iter().any(|s| Arc::ptr_eq(s, &written[1])));
    assert_eq!(v0.lineage, v1.lineage, "a status write keeps the lineage");
    // The same objects listed in another order (a store's hash map may reorder): the same
    // component and lineage; the next version then differs from this listing by more than
    // the replaced object (the in-place comparison declines, the sorted one decides).
    let mut reordered = written.clone();
    reordered.swap(0, 2);
    let v1b = kept.view(&written[0], &reordered);
    assert_eq!(v1b.lineage, v1.lineage);
    assert_eq!(names(v1b.specs.clone()), names(v1.specs.clone()));
    let v2 = kept.view(&edited_store[0], &edited_store);
    assert_ne!(
        v1.lineage, v2.lineage,
        "a new generation starts a new lineage"
    );
    assert_eq!(
        kept.view(&all[4], &all).lineage,
        kept.view(&edited_store[4], &edited_store).lineage,
        "a component without the changed spec keeps its view"
    );
    let mut before: Option<Arc<index::ComponentView>> = None;
    for store in [
        &all,
        &written,
        &edited_store,
        &without,
        &with_moved,
        &changed,
        &with_deleting,
        &all,
    ] {
        // The store's own order is not sorted (a reflector's state is a hash map's).
        let mut shuffled = store.clone();
        shuffled.reverse();
        for root in store {
            let view = kept.view(root, &shuffled);
            let candidates: Vec<_> = store
                .iter()
                .filter(|s| s.name_any() != root.name_any())
                .filter(|s| s.metadata.deletion_timestamp.is_none())
                .cloned()
                .collect();
            let (fresh, fresh_linked) = index::component_with_resources(root, &candidates);
            assert_eq!(
                names(view.specs.clone()),
                names(fresh),
                "{}",
                root.name_any()
            );
            assert_eq!(*view.parents, fresh_linked, "{}", root.name_any());
            let keys: Vec<_> = view.specs.iter().map(|s| index::key_of(s)).collect();
            assert_eq!(*view.keys, keys);
            let again = kept.view(root, &shuffled);
            assert!(Arc::ptr_eq(&view, &again) || root.metadata.deletion_timestamp.is_some());
        }
        let view = kept.view(&store[0], &shuffled);
        if let Some(before) = &before {
            assert!(
                !Arc::ptr_eq(before, &view),
                "a new store version, a new view"
            );
        }
        before = Some(view);
    }
    // A root that is not the stored version (a newer one handed over) is planned in that
    // version, outside the partition.
    let mut newer = (*all[0]).clone();
    newer.metadata.generation = Some(7);
    let view = kept.view(&Arc::new(newer), &all);
    let root = view
        .specs
        .iter()
        .find(|s| s.name_any() == all[0].name_any())
        .unwrap();
    assert_eq!(root.metadata.generation, Some(7));
    assert_eq!(names(view.specs.clone()), everyone_but_alone);
    // Two objects of one key (two watches listing the same spec): each, as the root, is
    // planned in its own version, once, as the one-by-one computation does.
    let mut twice = all.clone();
    let mut copy = (*all[0]).clone();
    copy.metadata.generation = Some(8);
    twice.push(Arc::new(copy));
    for root in [&twice[0], &twice[5]] {
        let view = kept.view(root, &twice);
        let same: Vec<_> = view
            .specs
            .iter()
            .filter(|s| s.name_any() == root.name_any())
            .collect();
        assert_eq!(same.len(), 1);
        assert!(Arc::ptr_eq(same[0], root));
        assert_eq!(names(view.specs.clone()), everyone_but_alone);
    }
}

/// With versioned stores, a reconcile of an unchanged store takes its component from the
/// partition without listing the store, and any applied event makes the next one list it
/// again and see the change.
#[test]
fn an_unchanged_store_version_gives_the_view_without_listing_the_store() {
    let one = Arc::new(seed_spec("ase-one"));
    let two = Arc::new(unrelated_spec());
    let stores = Stores::new(vec![]).versioned();
    let v0 = stores.version().expect("versioned");
    let mut kept = index::ComponentIndex::default();
    assert!(
        kept.view_of_version(&one, v0).is_none(),
        "nothing listed yet"
    );
    let all = vec![one.clone(), two.clone()];
    let listed = kept.view(&one, &all);
    kept.seen_version(Some(v0));
    let again = kept.view_of_version(&one, v0).expect("same version");
    assert!(Arc::ptr_eq(&listed, &again));
    let names: Vec<String> = again.specs.iter().map(|s| s.name_any()).collect();
    assert_eq!(names, vec!["ase-one".to_string()]);
    // Another object than the stored one (a newer version handed over) is not answered.
    assert!(kept
        .view_of_version(&Arc::new((*one).clone()), v0)
        .is_none());
    // An applied event: the version moves on, the store is listed again, the change seen.
    let mut joined = (*two).clone();
    joined.spec.network_security_group = one.spec.network_security_group.clone();
    stores.applied_event(&watcher::Event::Apply(joined.clone()));
    let v1 = stores.version().unwrap();
    assert_ne!(v0, v1);
    assert!(kept.view_of_version(&one, v1).is_none());
    let all = vec![one.clone(), Arc::new(joined)];
    let listed = kept.view(&one, &all);
    kept.seen_version(Some(v1));
    assert_eq!(
        listed.specs.len(),
        2,
        "the changed spec joined the component"
    );
    assert!(Arc::ptr_eq(
        &listed,
        &kept.view_of_version(&all[1], v1).unwrap()
    ));
    // Stores not versioned: never answered from the version.
    kept.seen_version(Stores::new(vec![]).version());
    assert!(kept.view_of_version(&one, v1).is_none());
}

/// The index forgets the links of objects replaced by a status write once nothing holds
/// them: each entry's `Weak` keeps its object's allocation, so remembering every replaced
/// object (the bound was twice the store) held a dead shell of every spec after the
/// convergence's status writes (issue 14).
#[test]
fn the_index_forgets_the_objects_status_writes_replaced() {
    const N: usize = 200;
    let (reader, mut writer) = reflector::store::<AseConnectivity>();
    let stores = Stores::new(vec![reader.clone()]).versioned();
    let mut apply = |event: watcher::Event<AseConnectivity>| {
        writer.apply_watcher_event(&event);
        stores.applied_event(&event);
    };
    let specs: Vec<AseConnectivity> = (0..N)
        .map(|i| {
            let mut s = unrelated_spec();
            s.metadata.name = Some(format!("spec-{i:03}"));
            s
        })
        .collect();
    for s in &specs {
        apply(watcher::Event::Apply(s.clone()));
    }
    let mut kept = index::ComponentIndex::default();
    let v0 = stores.version().unwrap();
    let first = stores.get(&index::key_of(&specs[0])).expect("stored");
    let view = kept.view(&first, &stores.objects());
    kept.seen_version(Some(v0));
    assert_eq!(view.specs.len(), N, "one component");
    assert_eq!(kept.remembered(), N);
    drop((view, first));
    for s in &specs {
        let mut written = s.clone();
        written.status = Some(asenet::api::AseConnectivityStatus {
            observed_generation: Some(1),
            ..Default::default()
        });
        apply(watcher::Event::Apply(written));
    }
    let v1 = stores.version().unwrap();
    let changed: Vec<_> = (stores.changed_between(v0, v1).expect("Apply events only"))
        .iter()
        .map(|k| stores.get(k).expect("stored"))
        .collect();
    let after = kept
        .view_after(&changed[0], v1, &changed)
        .expect("only replaced objects");
    assert!(
        after.specs.iter().all(|s| s.status.is_some()),
        "the new versions"
    );
    assert!(
        kept.remembered() <= N + N / 8 + 64,
        "{} objects remembered for {N} in the store",
        kept.remembered()
    );
}

/// Versioned stores remember the keys their events stored: after status writes (objects
/// the partition holds, replaced, their links unchanged) a reconcile's view is brought up
/// to date from those keys alone (`ComponentIndex::view_after`), and is the view listing
/// the store gives; a change the keys cannot describe (a deletion, an object new to the
/// store, a relinked object, a spec being deleted) makes it decline, and listing decides.
#[test]
fn status_writes_bring_the_view_up_to_date_from_the_changed_keys_alone() {
    let (reader, mut writer) = reflector::store::<AseConnectivity>();
    let stores = Stores::new(vec![reader.clone()]).versioned();
    let mut apply = |event: watcher::Event<AseConnectivity>| {
        writer.apply_watcher_event(&event);
        stores.applied_event(&event);
    };
    let key = |s: &AseConnectivity| index::key_of(s);
    let mut alone = unrelated_spec();
    alone.metadata.name = Some("alone".into());
    alone.spec.network_security_group.resource_id = NSG_TWO.replace("ase-two-nsg", "alone-nsg");
    alone.spec.subnet.resource_id = alone.spec.subnet.resource_id.replace("ase-two", "alone");
    alone.spec.route_table = None;
    let specs = [seed_spec("ase-one"), seed_spec("ase-two"), alone];
    for s in &specs {
        apply(watcher::Event::Apply(s.clone()));
    }
    let stored = |k: &index::Key| stores.get(k).expect("stored");
    // The stored objects of the keys changed between two versions (each an `Apply`).
    let changed_objects = |from: u64, to: u64| -> Vec<Arc<AseConnectivity>> {
        let keys = stores.changed_between(from, to).expect("Apply events only");
        keys.iter().map(stored).collect()
    };
    let names = |v: &index::ComponentView| v.specs.iter().map(|s| s.name_any()).collect::<Vec<_>>();
    let status = |generation: i64| asenet::api::AseConnectivityStatus {
        observed_generation: Some(generation),
        ..Default::default()
    };

    let mut kept = index::ComponentIndex::default();
    let v0 = stores.version().unwrap();
    let one = stored(&key(&specs[0]));
    let first = kept.view(&one, &stores.objects());
    kept.seen_version(Some(v0));
    assert_eq!(kept.version(), Some(v0));
    assert_eq!(names(&first), ["ase-one", "ase-two"]);

    // Two status writes (ase-two twice, alone once): three events, two keys.
    for (s, generation) in [(&specs[1], 1), (&specs[1], 2), (&specs[2], 1)] {
        let mut written = s.clone();
        written.status = Some(status(generation));
        apply(watcher::Event::Apply(written));
    }
    let v1 = stores.version().unwrap();
    assert_eq!(v1, v0 + 3);
    let changed_keys = stores.changed_between(v0, v1).expect("three Apply events");
    assert_eq!(
        changed_keys,
        vec![key(&specs[2]), key(&specs[1])],
        "sorted, each once"
    );
    assert_eq!(stores.changed_between(v0 + 1, v1).unwrap().len(), 2);
    assert_eq!(stores.changed_between(v1, v1), None, "nothing between");
    let changed: Vec<_> = changed_keys.iter().map(stored).collect();
    let two = stored(&key(&specs[1]));
    let after = kept
        .view_after(&two, v1, &changed)
        .expect("only replaced objects");
    assert_eq!(kept.version(), Some(v1));
    assert!(
        after.specs.iter().any(|s| Arc::ptr_eq(s, &two)),
        "the new version"
    );
    assert_eq!(
        after.lineage, first.lineage,
        "a status write keeps the lineage"
    );
    // The same view a listing gives (and the listing finds the partition current).
    let listed = index::ComponentIndex::default().view(&two, &stores.objects());
    assert_eq!(names(&after), names(&listed));
    assert_eq!(after.parents, listed.parents);
    assert!(Arc::ptr_eq(&after, &kept.view(&two, &stores.objects())));
    let lone = kept.view_of_version(&stored(&key(&specs[2])), v1).unwrap();
    assert_eq!(names(&lone), ["alone"]);
    assert_eq!(
        kept.view_after(&two, v1, &changed).map(|v| v.lineage),
        Some(after.lineage),
        "objects already current change nothing"
    );

    // alone relinked to ase-one's NSG: the components change, the keys cannot say how.
    let mut relinked = specs[2].clone();
    relinked.spec.network_security_group = specs[0].spec.network_security_group.clone();
    apply(watcher::Event::Apply(relinked));
    let v2 = stores.version().unwrap();
    let changed = changed_objects(v1, v2);
    assert!(kept.view_after(&one, v2, &changed).is_none());
    let joined = kept.view(&stored(&key(&specs[0])), &stores.objects());
    kept.seen_version(Some(v2));
    assert_eq!(names(&joined), ["alone", "ase-one", "ase-two"]);

    // A spec being deleted, an object new to the store: declined.
    let mut deleting = (*stored(&key(&specs[1]))).clone();
    deleting.metadata.deletion_timestamp = Some(asenet_time());
    apply(watcher::Event::Apply(deleting));
    let v3 = stores.version().unwrap();
    let changed = changed_objects(v2, v3);
    assert!(kept.view_after(&one, v3, &changed).is_none());
    let mut newcomer = seed_spec("ase-one");
    newcomer.metadata.name = Some("newcomer".into());
    let newcomer = Arc::new(newcomer);
    assert!(kept.view_after(&one, v3, &[newcomer]).is_none());

    // Events the log does not describe by key: none given.
    apply(watcher::Event::Delete(specs[2].clone()));
    let v4 = stores.version().unwrap();
    assert_eq!(stores.changed_between(v3, v4), None, "a deletion");
    assert_eq!(
        stores.changed_between(v2, v4),
        None,
        "a deletion among them"
    );
    apply(watcher::Event::Init);
    assert_eq!(stores.changed_between(v4, v4 + 1), None, "a relist");
    // A version older than the log keeps (it keeps the last 1,024 events): none given.
    for generation in 0..1100 {
        let mut written = specs[0].clone();
        written.status = Some(status(generation));
        apply(watcher::Event::Apply(written));
    }
    let v5 = stores.version().unwrap();
    assert_eq!(
        stores.changed_between(v5 - 1000, v5),
        Some(vec![key(&specs[0])])
    );
    assert_eq!(stores.changed_between(v5 - 1100, v5), None);
}

fn asenet_time() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::from_second(1_000).unwrap(),
    )
}

#[test]
fn a_status_only_change_triggers_no_reconcile_but_a_spec_change_does() {
    let spec = with_finalizer(seed_spec("ase-one"));
    let mut with_status = spec.clone();
    with_status.metadata.resource_version = Some("2".into());
    with_status.status = Some(asenet::api::AseConnectivityStatus {
        observed_generation: Some(1),
        ..Default::default()
    });
    let mut relabelled = with_status.clone();
    relabelled.metadata.resource_version = Some("3".into());
    relabelled
        .metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert("team".into(), "network".into());
    let mut edited = relabelled.clone();
    edited.metadata.resource_version = Some("4".into());
    edited.metadata.generation = Some(2);
    edited.spec.mode = Mode::Plan;
    let mut deleted = edited.clone();
    deleted.metadata.resource_version = Some("5".into());
    deleted.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
    let fresh = seed_spec("ase-one");

    // The predicate: status, labels and resource version do not count.
    assert_eq!(index::spec_change(&spec), index::spec_change(&with_status));
    assert_eq!(index::spec_change(&spec), index::spec_change(&relabelled));
    assert_ne!(index::spec_change(&spec), index::spec_change(&edited));
    assert_ne!(index::spec_change(&edited), index::spec_change(&deleted));
    // The finalizer patch must trigger the reconcile that does the work.
    assert_ne!(index::spec_change(&fresh), index::spec_change(&spec));

    // The trigger stream of `controller::run`: what reaches the controller and the
    // dependency mapper.
    let events: Vec<Result<AseConnectivity, watcher::Error>> = vec![
        Ok(fresh.clone()),
        Ok(spec.clone()),
        Ok(with_status.clone()),
        Ok(relabelled.clone()),
        Ok(edited.clone()),
        Ok(edited.clone()),
        Ok(deleted.clone()),
    ];
    let passed: Vec<String> = futures::executor::block_on(futures::StreamExt::collect::<Vec<_>>(
        controller::spec_changes(futures::stream::iter(events)),
    ))
    .into_iter()
    .map(|r| r.unwrap().metadata.resource_version.unwrap_or_default())
    .collect();
    // fresh (rv 1), with finalizer (rv 1), edited (rv 4), deleted (rv 5).
    assert_eq!(passed, vec!["1", "1", "4", "5"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconcile_reads_only_the_azure_resources_of_its_component() {
    let arm = Arm::start().await;
    let one = with_finalizer(seed_spec("ase-one"));
    let unrelated = with_finalizer(unrelated_spec());
    let store = [one.clone(), unrelated.clone()];
    arm.converge(&store).await;
    assert_eq!(
        index::component(&Arc::new(one.clone()), &store.clone().map(Arc::new)).len(),
        1,
        "ase-one and the other spec share nothing"
    );

    // Count every GET of the unrelated spec's NSG (a zero-latency fault matching its path).
    let armed = 1000;
    arm.mock.state.inject_fault(mock_arm::FaultSpec {
        method: Some("GET".into()),
        path: Some("networkSecurityGroups/ase-two-nsg".into()),
        count: armed,
        action: mock_arm::FaultAction::Latency { ms: 0 },
    });
    let reads_of_unrelated = || {
        armed
            - arm
                .mock
                .state
                .pending_faults()
                .iter()
                .map(|f| f.remaining)
                .sum::<u32>()
    };

    let (ctx, server) = context(&arm, &store, Leadership::always());
    let s = one.clone();
    run(one.clone(), ctx, server, |mut api| async move {
        api.status_applied(&s).await;
        api
    })
    .await
    .unwrap();
    assert!(
        arm.mock.state.stats().reads() > 0,
        "ase-one's resources were read"
    );
    assert_eq!(
        reads_of_unrelated(),
        0,
        "not one read of the unrelated spec's NSG"
    );
    assert_eq!(arm.writes(), 0);

    // The counter does count: reconciling the other spec reads its NSG.
    let (ctx, server) = context(&arm, &store, Leadership::always());
    let s = unrelated.clone();
    run(unrelated.clone(), ctx, server, |mut api| async move {
        api.status_applied(&s).await;
        api
    })
    .await
    .unwrap();
    assert!(reads_of_unrelated() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parent_locks_let_one_reconcile_at_a_time_hold_a_parent() {
    let ctx_locks = asenet::controller::context::ParentLocks::default();
    let ids: std::collections::BTreeSet<String> = ["a".to_string(), "b".to_string()].into();
    let other: std::collections::BTreeSet<String> = ["b".to_string(), "c".to_string()].into();
    let held = ctx_locks.acquire(&ids).await;
    // A reconcile touching b waits while the first holds it...
    let waiting = tokio::time::timeout(Duration::from_millis(100), ctx_locks.acquire(&other)).await;
    assert!(waiting.is_err(), "b is held");
    // ...one touching neither does not.
    let free: std::collections::BTreeSet<String> = ["d".to_string()].into();
    let _d = tokio::time::timeout(Duration::from_millis(100), ctx_locks.acquire(&free))
        .await
        .expect("d is free");
    drop(held);
    let _second = tokio::time::timeout(Duration::from_secs(1), ctx_locks.acquire(&other))
        .await
        .expect("b is released");
}

/// Runs `reconciles` one after the other on one `Context` against one scenario; returns
/// the ARM stats (reads, writes) measured after each, and what the scenario saw.
async fn run_on_one_context<F, T>(
    arm: &Arm,
    ctx: Arc<Context>,
    server: ApiServer,
    reconciles: Vec<AseConnectivity>,
    scenario: impl FnOnce(ApiServer) -> F,
) -> (Vec<(u64, u64)>, T)
where
    F: std::future::Future<Output = (ApiServer, T)> + Send + 'static,
    T: Send + 'static,
{
    let work = async move {
        let mut stats = Vec::new();
        for obj in reconciles {
            arm.mock.state.reset_stats();
            reconcile(Arc::new(obj), ctx.clone()).await.unwrap();
            stats.push((arm.mock.state.stats().reads(), arm.writes()));
        }
        stats
    };
    with_scenario(server, scenario, work).await
}

/// Reconciles `one` (which applies, publishing an `Applied` event) and then `two` on one
/// context whose store holds both. Returns the ARM `(reads, writes)` of each reconcile,
/// `one`'s status, the event's note and `two`'s status.
async fn reconcile_one_then_two(
    arm: &Arm,
    one: &AseConnectivity,
    two: &AseConnectivity,
) -> (Vec<(u64, u64)>, Value, String, Value) {
    let (ctx, server) = context(arm, &[one.clone(), two.clone()], Leadership::always());
    let (s1, s2) = (one.clone(), two.clone());
    let (stats, (first, note, second)) = run_on_one_context(
        arm,
        ctx,
        server,
        vec![one.clone(), two.clone()],
        |mut api| async move {
            let first = api.status_applied(&s1).await;
            let note = api.event(&s1, "Normal", "Applied").await;
            let second = api.status_applied(&s2).await;
            (api, (first, note, second))
        },
    )
    .await;
    (stats, first, note, second)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_plan_per_component_the_next_member_reuses_it_without_reading_or_writing_azure() {
    let arm = Arm::start().await;
    let one = with_finalizer(seed_spec("ase-one"));
    let two = with_finalizer(seed_spec("ase-two"));
    let store = [one.clone(), two.clone()];
    assert_eq!(
        index::component(&Arc::new(one.clone()), &store.clone().map(Arc::new)).len(),
        2,
        "ase-two references ase-one"
    );
    assert!(arm.owned_rules(NSG_TWO).is_empty());

    let (stats, first, note, second) = reconcile_one_then_two(&arm, &one, &two).await;

    // ase-one's reconcile wrote everything the component needs, ase-two's NSG included.
    assert!(stats[0].0 > 0 && stats[0].1 > 0, "{stats:?}");
    assert!(!arm.owned_rules(NSG_ONE).is_empty());
    assert!(
        !arm.owned_rules(NSG_TWO).is_empty(),
        "ase-two's NSG is written by ase-one's reconcile"
    );
    assert!(note.contains("ase-two-nsg"), "{note}");
    assert_eq!(condition(&first, "Ready")["status"], "True");
    // ase-two's reconcile: zero ARM requests, only its status.
    assert_eq!(stats[1], (0, 0), "no ARM read and no write");
    assert_eq!(condition(&second, "Ready")["status"], "True");
    assert_eq!(condition(&second, "InSync")["status"], "True");
    assert_eq!(second["plan"]["total"], 0);
    assert_eq!(second["addresses"]["virtualNetwork"], "10.0.1.64/26");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_re_planned_during_apply_is_not_cached_so_the_next_member_plans_again() {
    let arm = Arm::start().await;
    let one = with_finalizer(seed_spec("ase-one"));
    let two = with_finalizer(seed_spec("ase-two"));
    // The first PUT of ase-one's NSG is refused as if the NSG changed since it was read:
    // apply re-reads it and writes from a fresh plan of that resource.
    arm.mock.state.inject_fault(mock_arm::faults::FaultSpec {
        method: Some("PUT".into()),
        path: Some("networkSecurityGroups/ase-one-nsg".into()),
        count: 1,
        action: mock_arm::faults::FaultAction::Error {
            status: 412,
            code: None,
            message: None,
            retry_after: None,
        },
    });

    let (stats, first, _, second) = reconcile_one_then_two(&arm, &one, &two).await;

    assert!(
        arm.mock.state.pending_faults().is_empty(),
        "the 412 was served"
    );
    assert!(
        !arm.owned_rules(NSG_ONE).is_empty(),
        "written after the re-plan"
    );
    assert_eq!(condition(&first, "Ready")["status"], "True");
    // The cached outcome would not hold what the re-plan wrote: ase-two plans afresh (reads
    // Azure) and finds the component converged (no write).
    assert!(stats[1].0 > 0, "ase-two re-reads Azure: {stats:?}");
    assert_eq!(stats[1].1, 0, "converged: nothing to write: {stats:?}");
    assert_eq!(condition(&second, "InSync")["status"], "True");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_change_of_a_member_makes_the_next_reconcile_plan_again() {
    let arm = Arm::start().await;
    let one = with_finalizer(seed_spec("ase-one"));
    let two = with_finalizer(seed_spec("ase-two"));
    let store = [one.clone(), two.clone()];
    arm.converge(&store).await;

    let mut edited = two.clone();
    edited.metadata.generation = Some(2);
    let (ctx, server) = context(&arm, &store, Leadership::always());
    let (s1, s2, s3) = (one.clone(), two.clone(), edited.clone());
    let (stats, edited_status) = run_on_one_context(
        &arm,
        ctx,
        server,
        vec![one.clone(), two.clone(), edited.clone()],
        |mut api| async move {
            api.status_applied(&s1).await;
            api.status_applied(&s2).await;
            let edited = api.status_applied(&s3).await;
            (api, edited)
        },
    )
    .await;

    assert!(stats[0].0 > 0, "the first reconcile reads: {stats:?}");
    assert_eq!(
        stats[1],
        (0, 0),
        "the unchanged member uses the cached outcome"
    );
    assert!(
        stats[2].0 > 0,
        "a generation bump invalidates it: {stats:?}"
    );
    assert_eq!(stats[2].1, 0, "converged: nothing to write");
    assert_eq!(edited_status["observedGeneration"], 2);
}

/// `(planned, unchanged)`: the components `ctx` planned and kept, from its metrics.
fn component_plans(ctx: &Context) -> (u64, u64) {
    let text = ctx.metrics.encode().unwrap();
    let count = |outcome: &str| {
        let prefix = format!("asenet_component_plans_total{{outcome=\"{outcome}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map_or(0, |n| n.trim().parse().unwrap())
    };
    (count("planned"), count("unchanged"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resync_keeps_the_outcome_while_azure_holds_what_it_left_and_plans_again_on_drift() {
    let arm = Arm::start().await;
    let one = with_finalizer(seed_spec("ase-one"));
    // Every outcome has aged past the resync interval by the next reconcile.
    let settings = Settings {
        resync: Duration::ZERO,
        ..Settings::default()
    };
    let (ctx, server) = context_with(
        &arm,
        std::slice::from_ref(&one),
        Leadership::always(),
        settings,
    );
    let s = one.clone();
    let scenario = |mut api: ApiServer| async move {
        api.status_applied(&s).await;
        api.event(&s, "Normal", "Applied").await;
        api.status_applied(&s).await;
        api.status_applied(&s).await;
        let note = api.event(&s, "Normal", "Applied").await;
        (api, note)
    };
    let (arm_ref, one_ref) = (&arm, &one);
    // Owns the context: the client is dropped when the reconciles are done.
    let work = async move {
        let (arm, one) = (arm_ref, one_ref);
        let mut seen = Vec::new();
        for step in 0..3 {
            if step == 2 {
                assert!(arm.remove_an_owned_rule(), "an owned rule to remove");
            }
            arm.mock.state.reset_stats();
            reconcile(Arc::new(one.clone()), ctx.clone()).await.unwrap();
            let stats = arm.mock.state.stats();
            let owned = arm.owned_rules(NSG_ONE);
            seen.push((stats.reads(), arm.writes(), component_plans(&ctx), owned));
        }
        seen
    };
    let (seen, note) = with_scenario(server, scenario, work).await;

    // 1: a fresh plan, written; its outcome keeps the digest of what the writes leave.
    assert!(seen[0].1 > 0, "{seen:?}");
    assert_eq!(seen[0].2, (1, 0), "{seen:?}");
    // 2: the outcome aged; Azure is read again, holds exactly that, and the outcome is
    // kept without resolving.
    assert!(seen[1].0 > 0, "the resync reads Azure: {seen:?}");
    assert_eq!(seen[1].1, 0, "{seen:?}");
    assert_eq!(seen[1].2, (1, 1), "kept, not planned: {seen:?}");
    // 3: a foreign edit removed an owned rule: planned again, and repaired.
    assert_eq!(seen[2].2, (2, 1), "drift is planned: {seen:?}");
    assert!(seen[2].1 > 0, "the rule is written back: {seen:?}");
    assert!(note.contains("ase-one-nsg"), "{note}");
    assert_eq!(seen[2].3, seen[0].3, "every owned rule is back");
}

/// `obj` as the API server sends it after `kubectl apply` (managed fields, the last-applied
/// manifest) and then as the controller's reflector store keeps it.
fn as_stored(obj: &AseConnectivity) -> AseConnectivity {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
    let mut stored = obj.clone();
    stored.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
        manager: Some("kubectl-client-side-apply".into()),
        operation: Some("Update".into()),
        ..Default::default()
    }]);
    stored
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(
            controller::store::LAST_APPLIED.into(),
            serde_json::to_string(&obj.spec).unwrap(),
        );
    controller::store::for_store(&mut stored);
    assert_eq!(stored.metadata.managed_fields, None);
    stored
}

/// ase-one converged, with the status the controller wrote for it (rules included).
async fn converged_with_status(arm: &Arm) -> AseConnectivity {
    let spec = with_finalizer(seed_spec("ase-one"));
    arm.converge(std::slice::from_ref(&spec)).await;
    let (result, status) = reconcile_status(arm, &spec).await;
    result.unwrap();
    let mut spec = spec;
    spec.status = Some(serde_json::from_value(status).unwrap());
    assert!(!spec.status.as_ref().unwrap().rules.is_empty());
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_status_is_not_patched_again_though_the_store_dropped_its_rules() {
    let arm = Arm::start().await;
    let full = converged_with_status(&arm).await;
    let stored = as_stored(&full);
    assert!(stored.status.as_ref().unwrap().rules.is_empty());
    assert!(controller::store::rules_dropped(&stored));

    // The controller hands the reconcile the stored object: no request at all.
    let (ctx, server) = context_of(&arm, &stored);
    run_silent(stored, ctx, server).await.unwrap();
    assert_eq!(arm.writes(), 0, "a resync in sync writes nothing to Azure");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_rule_is_patched_in_full_though_the_store_dropped_the_rules() {
    let arm = Arm::start().await;
    let full = converged_with_status(&arm).await;
    // The status carries an older reason for one rule: the computed status differs only in
    // the rules the store does not hold.
    let mut older = full.clone();
    older.status.as_mut().unwrap().rules[0].reason = "an older reason".into();
    let stored = as_stored(&older);

    let (result, status) = reconcile_status(&arm, &stored).await;
    result.unwrap();
    let written: asenet::api::AseConnectivityStatus = serde_json::from_value(status).unwrap();
    assert_eq!(
        &written,
        full.status.as_ref().unwrap(),
        "every rule, in full"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_reconcile_keeps_the_rules_the_store_dropped_by_reading_the_status() {
    let arm = Arm::start().await;
    let full = converged_with_status(&arm).await;
    let rules = full.status.as_ref().unwrap().rules.clone();
    // The spec is edited into an invalid one (generation 2); its status still lists the
    // rules it owns in Azure.
    let mut invalid = full.clone();
    invalid.metadata.generation = Some(2);
    invalid.spec.inbound[0].from =
        serde_json::from_value(json!([{"cidr": "10.0.0.300/24"}])).unwrap();
    let stored = as_stored(&invalid);

    let (ctx, server) = context_of(&arm, &stored);
    let s = stored.clone();
    let (result, status) = run_seeing(stored, ctx, server, |mut api| async move {
        api.status_read(&invalid).await;
        let status = api.status_applied(&s).await;
        api.event(&s, "Warning", "InvalidField").await;
        (api, status)
    })
    .await;
    assert_eq!(result.unwrap_err().category(), "InvalidField");
    let written: asenet::api::AseConnectivityStatus = serde_json::from_value(status).unwrap();
    assert_eq!(
        written.rules, rules,
        "the rules the spec still owns stay in status"
    );
    assert_eq!(written.observed_generation, Some(2));
    let degraded = written
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .unwrap();
    assert_eq!(degraded.status, "True");
}

/// A component planned in parts (`Settings::plan_part_specs`; here one spec per part, and
/// ase-two's part reads ase-one as a reference) writes what the component planned whole
/// writes, and a resync that finds Azure as the parts left it keeps the outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_planned_in_parts_writes_what_it_does_whole_and_keeps_its_outcome() {
    let one = with_finalizer(seed_spec("ase-one"));
    let two = with_finalizer(seed_spec("ase-two"));
    let members = [Arc::new(one.clone()), Arc::new(two.clone())];
    assert_eq!(controller::parts::parts(&members, 1).len(), 2);
    assert_eq!(controller::parts::parts(&members, 0).len(), 1);
    let mut written = Vec::new();
    for plan_part_specs in [0, 1] {
        let arm = Arm::start().await;
        let settings = Settings {
            resync: Duration::ZERO,
            plan_part_specs,
            ..Settings::default()
        };
        let store = [one.clone(), two.clone()];
        let (ctx, server) = context_with(&arm, &store, Leadership::always(), settings);
        let s = two.clone();
        let scenario = |mut api: ApiServer| async move {
            api.status_applied(&s).await;
            api.event(&s, "Normal", "Applied").await;
            api.status_applied(&s).await;
            api.status_applied(&s).await;
            let note = api.event(&s, "Normal", "Applied").await;
            (api, note)
        };
        let (arm_ref, two_ref) = (&arm, &two);
        let work = async move {
            let (arm, two) = (arm_ref, two_ref);
            let mut seen = Vec::new();
            for step in 0..3 {
                if step == 2 {
                    assert!(arm.remove_an_owned_rule(), "an owned rule to remove");
                }
                arm.mock.state.reset_stats();
                reconcile(Arc::new(two.clone()), ctx.clone()).await.unwrap();
                let rules = (arm.rules(NSG_ONE), arm.rules(NSG_TWO));
                seen.push((arm.writes(), component_plans(&ctx), rules));
            }
            seen
        };
        let (seen, note) = with_scenario(server, scenario, work).await;
        assert!(seen[0].0 > 0, "{plan_part_specs}: {seen:?}");
        assert_eq!(seen[0].1, (1, 0), "{plan_part_specs}: {seen:?}");
        assert_eq!(seen[1].0, 0, "{plan_part_specs}: {seen:?}");
        assert_eq!(seen[1].1, (1, 1), "kept ({plan_part_specs}): {seen:?}");
        assert_eq!(
            seen[2].1,
            (2, 1),
            "drift is planned ({plan_part_specs}): {seen:?}"
        );
        assert!(seen[2].0 > 0, "written back ({plan_part_specs}): {seen:?}");
        assert_eq!(
            seen[2].2, seen[0].2,
            "every owned rule is back ({plan_part_specs})"
        );
        assert!(note.contains("ase-one-nsg"), "{note}");
        written.push(seen[0].2.clone());
    }
    assert_eq!(written[0], written[1], "parts write what the whole writes");
}
