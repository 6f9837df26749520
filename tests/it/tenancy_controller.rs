//! Tenancy in the operator: `reconcile` with `--tenancy enforce` against the tower-test
//! API server of `controller.rs` and the in-process mock ARM seeded with examples/seed. The
//! tenancy objects are examples/tenancy: namespace `network` (ase-one) may write its own
//! resources; the SQL VM's NSG, which ase-one's `orders-sql` back end adds a rule to,
//! belongs to namespace `data`, which grants it to `network` in grant.yaml.

use std::sync::Arc;

use asenet::api::AseConnectivity;
use asenet::controller::tenancy::{Decisions, TenancyStores};
use asenet::controller::{error_policy, reconcile, Context, Leadership, Metrics, Settings, Stores};
use asenet::tenancy::{AseBackendGrant, AseTenancyPolicy, PolicySet, TenancyMode};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::core::{PartialObjectMeta, PartialObjectMetaExt};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::Value;

use crate::controller::{
    condition, deleting, run, seed_spec, with_finalizer, ApiServer, Arm, NSG_ONE,
};

const SQL_NSG: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/network/providers/Microsoft.Network/networkSecurityGroups/sql-nsg";

fn tenancy_objects(file: &str) -> (Vec<AseTenancyPolicy>, Vec<AseBackendGrant>) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/tenancy")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    asenet::load::parse_policy(&path, &text).unwrap()
}

fn the_grant() -> AseBackendGrant {
    tenancy_objects("grant.yaml").1.remove(0)
}

/// The writers of the tenancy stores a test context reads (a grant given or revoked).
struct TenancyWriters {
    grants: Writer<AseBackendGrant>,
    _policies: Writer<AseTenancyPolicy>,
}

impl TenancyWriters {
    fn revoke(&mut self, grant: &AseBackendGrant) {
        self.grants
            .apply_watcher_event(&watcher::Event::Delete(grant.clone()));
    }
}

/// A Context with tenancy enforced over examples/tenancy's policies, with or without its
/// grant, and `store` as the spec reflector's content.
fn context(
    arm: &Arm,
    store: &[AseConnectivity],
    with_grant: bool,
) -> (Arc<Context>, ApiServer, TenancyWriters) {
    let grants = if with_grant {
        vec![the_grant()]
    } else {
        vec![]
    };
    context_with(
        arm,
        store,
        tenancy_objects("policy.yaml").0,
        grants,
        ready_namespaces(&[]),
    )
}

/// A Context with tenancy enforced over these objects and namespace labels.
fn context_with(
    arm: &Arm,
    store: &[AseConnectivity],
    policy_objects: Vec<AseTenancyPolicy>,
    grant_objects: Vec<AseBackendGrant>,
    namespaces: NamespaceStore,
) -> (Arc<Context>, ApiServer, TenancyWriters) {
    let (service, handle) = tower_test::mock::pair();
    let client = Client::new(service, "default");
    let (reader, mut writer) = reflector::store::<AseConnectivity>();
    writer.apply_watcher_event(&watcher::Event::Init);
    for spec in store {
        writer.apply_watcher_event(&watcher::Event::InitApply(spec.clone()));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    let (policies, mut policy_writer) = reflector::store::<AseTenancyPolicy>();
    policy_writer.apply_watcher_event(&watcher::Event::Init);
    for p in policy_objects {
        policy_writer.apply_watcher_event(&watcher::Event::InitApply(p));
    }
    policy_writer.apply_watcher_event(&watcher::Event::InitDone);
    let (grants, mut grant_writer) = reflector::store::<AseBackendGrant>();
    grant_writer.apply_watcher_event(&watcher::Event::Init);
    for g in grant_objects {
        grant_writer.apply_watcher_event(&watcher::Event::InitApply(g));
    }
    grant_writer.apply_watcher_event(&watcher::Event::InitDone);
    let ctx = Context::new(
        client,
        Stores::new(vec![reader]).with_tenancy(TenancyStores {
            policies,
            grants,
            namespaces,
        }),
        arm.pipeline.clone(),
        Metrics::new(),
        Leadership::always(),
        Settings {
            tenancy: TenancyMode::Enforce,
            ..Settings::default()
        },
        Some("test".into()),
    );
    (
        ctx,
        ApiServer(handle),
        TenancyWriters {
            grants: grant_writer,
            _policies: policy_writer,
        },
    )
}

type NamespaceStore = kube::runtime::reflector::Store<PartialObjectMeta<Namespace>>;

/// A namespace store that has its initial list: these namespaces with these labels.
fn ready_namespaces(namespaces: &[(&str, &[(&str, &str)])]) -> NamespaceStore {
    let (store, mut writer) = reflector::store();
    writer.apply_watcher_event(&watcher::Event::Init);
    for (name, labels) in namespaces {
        let meta = kube::api::ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        };
        writer.apply_watcher_event(&watcher::Event::InitApply(
            meta.into_response_partial::<Namespace>(),
        ));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    store
}

fn sql_rules(arm: &Arm) -> Vec<(String, Value)> {
    arm.rules(SQL_NSG)
}

/// Asserts a NotPermitted status and returns the Ready condition's message.
fn not_permitted(status: &Value) -> String {
    let ready = condition(status, "Ready");
    assert_eq!(ready["status"], "False", "{status}");
    assert_eq!(ready["reason"], "NotPermitted", "{status}");
    assert_eq!(condition(status, "Degraded")["reason"], "NotPermitted");
    ready["message"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_naming_another_teams_backend_without_a_grant_is_not_permitted_and_writes_nothing() {
    let arm = Arm::start().await;
    let spec = with_finalizer(seed_spec("ase-one"));
    let (ctx, server, _writers) = context(&arm, std::slice::from_ref(&spec), false);
    let s = spec.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let result = run(spec.clone(), ctx, server, |mut api| async move {
        let status = api.status_applied(&s).await;
        let note = api.event(&s, "Warning", "NotPermitted").await;
        let _ = tx.send((status, note));
        api
    })
    .await;
    let (status, note) = rx.await.unwrap();
    let message = not_permitted(&status);
    for text in [&message, &note] {
        assert!(
            text.contains("spec.backends[0].networkSecurityGroup.resourceId"),
            "{text}"
        );
        assert!(text.contains(SQL_NSG), "{text}");
        assert!(
            text.contains("AseBackendGrant for namespace `network`"),
            "{text}"
        );
    }
    let error = result.unwrap_err();
    assert_eq!(error.category(), "NotPermitted");
    let (ctx, _server, _writers) = context(&arm, &[], false);
    assert_eq!(
        error_policy(Arc::new(spec), &error, ctx),
        Action::await_change(),
        "a refusal waits for a change of the spec or of the tenancy objects"
    );
    assert_eq!(arm.mock.state.stats().total, 0, "no ARM call at all");
    assert!(arm.owned_rules(SQL_NSG).is_empty());
    assert!(arm.owned_rules(NSG_ONE).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_owners_grant_the_backend_rule_is_written_and_ready_is_true() {
    let arm = Arm::start().await;
    let spec = with_finalizer(seed_spec("ase-one"));
    let (ctx, server, _writers) = context(&arm, std::slice::from_ref(&spec), true);
    let s = spec.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    run(spec.clone(), ctx, server, |mut api| async move {
        let status = api.status_applied(&s).await;
        let note = api.event(&s, "Normal", "Applied").await;
        let _ = tx.send((status, note));
        api
    })
    .await
    .unwrap();
    let (status, note) = rx.await.unwrap();
    assert_eq!(condition(&status, "Ready")["status"], "True", "{status}");
    assert!(note.contains("sql-nsg"), "{note}");
    let owned = arm.owned_rules(SQL_NSG);
    assert!(
        owned.iter().any(|n| n.starts_with("asenet-ase-one")),
        "{owned:?}"
    );
    assert!(sql_rules(&arm).iter().any(|(n, _)| n == "corp-rdp"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_the_grant_stops_further_writes_and_keeps_the_owned_rule_as_it_is() {
    let arm = Arm::start().await;
    let spec = with_finalizer(seed_spec("ase-one"));
    arm.converge(std::slice::from_ref(&spec)).await;
    let owned_before = sql_rules(&arm);
    assert!(owned_before
        .iter()
        .any(|(n, _)| n.starts_with("asenet-ase-one")));
    let (ctx, server, mut writers) = context(&arm, std::slice::from_ref(&spec), true);
    // The spec changes its back end's port after the grant is revoked (generation 2).
    let mut changed = spec.clone();
    changed.metadata.generation = Some(2);
    changed.spec.backends[0].ports = vec![IntOrString::String("1434".into())];

    let (s, c) = (spec.clone(), changed.clone());
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut api = server;
        let granted = api.status_applied(&s).await;
        let revoked = api.status_applied(&s).await;
        let note = api.event(&s, "Warning", "NotPermitted").await;
        api.status_applied(&c).await;
        // The same event again: kube's recorder updates the first one's series.
        let (method, path, _, body, send) = api.next().await;
        assert_eq!(method, http::Method::PATCH);
        assert!(
            path.starts_with("/apis/events.k8s.io/v1/namespaces/network/events/"),
            "{path}"
        );
        ApiServer::respond(send, &body);
        let _ = tx.send((granted, revoked, note));
        api
    });

    // Granted and converged: Ready, nothing written; the component's outcome is cached.
    let action = reconcile(Arc::new(spec.clone()), ctx.clone())
        .await
        .unwrap();
    assert_eq!(action, Action::requeue(Settings::default().resync));
    assert_eq!(arm.writes(), 0);
    assert_eq!(ctx.outcomes.len(), 1);

    // Revoked, the same object: the cached outcome was computed with the grant and must
    // not be reused; the spec is refused now.
    writers.revoke(&the_grant());
    let error = reconcile(Arc::new(spec.clone()), ctx.clone())
        .await
        .unwrap_err();
    assert_eq!(error.category(), "NotPermitted");

    // Changed while refused: still refused, no write.
    let error = reconcile(Arc::new(changed), ctx.clone()).await.unwrap_err();
    assert_eq!(error.category(), "NotPermitted");
    drop(ctx);
    let server = tokio::time::timeout(std::time::Duration::from_secs(60), task)
        .await
        .expect("scenario timed out")
        .expect("scenario failed");
    server.done().await;

    let (granted, revoked, note) = rx.await.unwrap();
    assert_eq!(condition(&granted, "Ready")["status"], "True", "{granted}");
    not_permitted(&revoked);
    assert!(note.contains(SQL_NSG), "{note}");
    assert_eq!(arm.writes(), 0, "no write after the grant was revoked");
    assert_eq!(
        sql_rules(&arm),
        owned_before,
        "the rule ase-one owns in the SQL VM's NSG stays exactly as it was"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_refused_spec_removes_only_what_it_may_write_and_says_what_it_left() {
    let arm = Arm::start().await;
    let spec = with_finalizer(seed_spec("ase-one"));
    arm.converge(std::slice::from_ref(&spec)).await;
    let sql_before = sql_rules(&arm);
    assert!(!arm.owned_rules(NSG_ONE).is_empty());
    let spec = deleting(spec);
    let (ctx, server, _writers) = context(&arm, std::slice::from_ref(&spec), false);
    let s = spec.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    run(spec.clone(), ctx, server, |mut api| async move {
        let note = api.event(&s, "Warning", "NotPermitted").await;
        api.event(&s, "Normal", "CleanedUp").await;
        api.finalizer_removed(&s).await;
        let _ = tx.send(note);
        api
    })
    .await
    .unwrap();
    let note = rx.await.unwrap();
    assert!(note.contains(SQL_NSG), "{note}");
    assert_eq!(
        sql_rules(&arm),
        sql_before,
        "the SQL VM's NSG is not written"
    );
    assert!(
        arm.owned_rules(NSG_ONE).is_empty(),
        "its own NSG is cleaned up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_the_tenancy_objects_are_read_a_reconcile_backs_off_without_any_call() {
    let arm = Arm::start().await;
    let spec = with_finalizer(seed_spec("ase-one"));
    let (service, handle) = tower_test::mock::pair();
    let client = Client::new(service, "default");
    let (reader, mut writer) = reflector::store::<AseConnectivity>();
    writer.apply_watcher_event(&watcher::Event::Init);
    writer.apply_watcher_event(&watcher::Event::InitApply(spec.clone()));
    writer.apply_watcher_event(&watcher::Event::InitDone);
    // Stores that never saw their initial list.
    let (policies, _pw) = reflector::store::<AseTenancyPolicy>();
    let (grants, _gw) = reflector::store::<AseBackendGrant>();
    let ctx = Context::new(
        client,
        Stores::new(vec![reader]).with_tenancy(TenancyStores {
            policies,
            grants,
            namespaces: ready_namespaces(&[]),
        }),
        arm.pipeline.clone(),
        Metrics::new(),
        Leadership::always(),
        Settings {
            tenancy: TenancyMode::Enforce,
            ..Settings::default()
        },
        Some("test".into()),
    );
    let error = reconcile(Arc::new(spec.clone()), ctx.clone())
        .await
        .unwrap_err();
    assert_eq!(error.category(), "TenancyNotReady");
    assert_eq!(
        error_policy(Arc::new(spec), &error, ctx),
        Action::requeue(std::time::Duration::from_secs(5)),
        "transient: backs off"
    );
    ApiServer(handle).done().await;
    assert_eq!(arm.mock.state.stats().total, 0);
}

#[test]
fn a_grant_given_or_revoked_wakes_exactly_the_specs_it_decides_differently() {
    let specs: Vec<Arc<AseConnectivity>> = ["ase-one", "ase-two"]
        .iter()
        .map(|n| Arc::new(seed_spec(n)))
        .collect();
    let (policies, grants) = tenancy_objects("policy.yaml");
    assert!(grants.is_empty());
    let grant = the_grant();
    let granted = PolicySet::enforce(&policies, [&grant]).0;
    let revoked = PolicySet::enforce(&policies, []).0;
    let names = |refs: Vec<kube::runtime::reflector::ObjectRef<AseConnectivity>>| {
        refs.into_iter().map(|r| r.name).collect::<Vec<_>>()
    };
    let mut decisions = Decisions::default();
    assert_eq!(
        names(decisions.changed(&granted, &specs)),
        ["ase-one", "ase-two"],
        "first judged: every spec"
    );
    assert!(decisions.changed(&granted, &specs).is_empty(), "no change");
    assert_eq!(names(decisions.changed(&revoked, &specs)), ["ase-one"]);
    assert_eq!(names(decisions.changed(&granted, &specs)), ["ase-one"]);
    // A spec edited since (ase-one drops its back end) is judged as it is now: the grant
    // no longer matters to it, so revoking it wakes nobody.
    let mut edited = (*specs[0]).clone();
    edited.spec.backends.clear();
    let specs = vec![Arc::new(edited), specs[1].clone()];
    assert!(decisions.changed(&revoked, &specs).is_empty());
    assert!(specs
        .iter()
        .all(|s| s.namespace().as_deref() == Some("network")));
}

#[test]
fn asenet_crd_prints_the_committed_tenancy_crds() {
    // Regenerate with: cargo run -q -- crd --kind AseTenancyPolicy > crds/asetenancypolicies.asenet.io.yaml
    //                  cargo run -q -- crd --kind AseBackendGrant > crds/asebackendgrants.asenet.io.yaml
    //                  cp crds/asetenancypolicies.asenet.io.yaml crds/asebackendgrants.asenet.io.yaml charts/asenet/crds/
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for (kind, file, scope) in [
        (
            "AseTenancyPolicy",
            "asetenancypolicies.asenet.io.yaml",
            "Cluster",
        ),
        (
            "AseBackendGrant",
            "asebackendgrants.asenet.io.yaml",
            "Namespaced",
        ),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_asenet"))
            .args(["crd", "--kind", kind])
            .output()
            .unwrap();
        assert!(out.status.success());
        let printed = String::from_utf8(out.stdout).unwrap();
        for committed in [format!("crds/{file}"), format!("charts/asenet/crds/{file}")] {
            let text = std::fs::read_to_string(root.join(&committed)).unwrap();
            assert!(
                text == printed,
                "{committed} differs from `asenet crd --kind {kind}`; regenerate it (see this test's comment)"
            );
        }
        let crd: Value = serde_yaml::from_str(&printed).unwrap();
        assert_eq!(crd["spec"]["names"]["kind"], kind);
        assert_eq!(crd["spec"]["scope"], scope);
    }
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_asenet"))
        .args(["crd", "--kind", "Secret"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
}

#[test]
fn the_tenancy_flag_defaults_to_off_and_accepts_only_enforce_or_off() {
    use asenet::cli::{Cli, Command};
    use clap::Parser;
    let mode = |args: &[&str]| -> Result<TenancyMode, String> {
        let mut argv = vec!["asenet", "controller"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv) {
            Ok(Cli {
                command: Command::Controller(a),
            }) => Ok(a.tenancy),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.to_string()),
        }
    };
    assert_eq!(mode(&[]), Ok(TenancyMode::Off));
    assert_eq!(mode(&["--tenancy", "enforce"]), Ok(TenancyMode::Enforce));
    assert_eq!(mode(&["--tenancy=off"]), Ok(TenancyMode::Off));
    let e = mode(&["--tenancy", "Enforce"]).unwrap_err();
    assert!(e.contains("`Enforce` is not a tenancy mode"), "{e}");
}

#[tokio::test]
async fn the_waker_wakes_every_spec_once_the_stores_are_read_then_only_those_a_change_affects() {
    let specs: Vec<AseConnectivity> = ["ase-one", "ase-two"]
        .iter()
        .map(|n| seed_spec(n))
        .collect();
    let (reader, mut writer) = reflector::store::<AseConnectivity>();
    writer.apply_watcher_event(&watcher::Event::Init);
    for s in &specs {
        writer.apply_watcher_event(&watcher::Event::InitApply(s.clone()));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    let (policies, mut policy_writer) = reflector::store::<AseTenancyPolicy>();
    let (grants, mut grant_writer) = reflector::store::<AseBackendGrant>();
    let (tick, ticks) = futures::channel::mpsc::unbounded::<()>();
    let (woken_tx, mut woken) = futures::channel::mpsc::unbounded::<String>();
    let task = tokio::spawn(asenet::controller::tenancy::wake_changed(
        ticks,
        TenancyStores {
            policies,
            grants,
            namespaces: ready_namespaces(&[]),
        },
        Stores::new(vec![reader]),
        move |r| {
            let _ = woken_tx.unbounded_send(r.name);
        },
    ));
    let next = |woken: &mut futures::channel::mpsc::UnboundedReceiver<String>| {
        let mut names = Vec::new();
        while let Ok(n) = woken.try_recv() {
            names.push(n);
        }
        names
    };
    let settle = || tokio::time::sleep(std::time::Duration::from_millis(50));

    // A change before both stores have their initial list wakes nobody.
    tick.unbounded_send(()).unwrap();
    settle().await;
    assert!(next(&mut woken).is_empty());

    // Both lists read (policies, and the grant): every spec is judged and woken once.
    policy_writer.apply_watcher_event(&watcher::Event::Init);
    for p in tenancy_objects("policy.yaml").0 {
        policy_writer.apply_watcher_event(&watcher::Event::InitApply(p));
    }
    policy_writer.apply_watcher_event(&watcher::Event::InitDone);
    grant_writer.apply_watcher_event(&watcher::Event::Init);
    grant_writer.apply_watcher_event(&watcher::Event::InitApply(the_grant()));
    grant_writer.apply_watcher_event(&watcher::Event::InitDone);
    tick.unbounded_send(()).unwrap();
    settle().await;
    assert_eq!(next(&mut woken), ["ase-one", "ase-two"]);

    // The grant is revoked: only ase-one, whose back end it opened, is woken.
    grant_writer.apply_watcher_event(&watcher::Event::Delete(the_grant()));
    tick.unbounded_send(()).unwrap();
    settle().await;
    assert_eq!(next(&mut woken), ["ase-one"]);

    drop(tick);
    tokio::time::timeout(std::time::Duration::from_secs(5), task)
        .await
        .expect("the waker ends with its change stream")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_selecting_the_namespace_by_its_labels_lets_its_spec_write() {
    let arm = Arm::start().await;
    let spec = with_finalizer(seed_spec("ase-one"));
    // examples/tenancy's `network` policy, selecting by label instead of by name.
    let mut policies = tenancy_objects("policy.yaml").0;
    policies[0].spec.namespaces.clear();
    policies[0].spec.namespace_selector =
        Some(serde_yaml::from_str("matchLabels: {asenet.io/team: ase}").unwrap());

    // Labelled otherwise: refused, nothing written.
    let (ctx, server, _w) = context_with(
        &arm,
        std::slice::from_ref(&spec),
        policies.clone(),
        vec![the_grant()],
        ready_namespaces(&[("network", &[("asenet.io/team", "data")])]),
    );
    let s = spec.clone();
    let result = run(spec.clone(), ctx, server, |mut api| async move {
        let status = api.status_applied(&s).await;
        not_permitted(&status);
        api.event(&s, "Warning", "NotPermitted").await;
        api
    })
    .await;
    assert_eq!(result.unwrap_err().category(), "NotPermitted");
    assert_eq!(arm.writes(), 0);

    // Labelled as selected: written.
    let (ctx, server, _w) = context_with(
        &arm,
        std::slice::from_ref(&spec),
        policies,
        vec![the_grant()],
        ready_namespaces(&[("network", &[("asenet.io/team", "ase")])]),
    );
    let s = spec.clone();
    run(spec.clone(), ctx, server, |mut api| async move {
        let status = api.status_applied(&s).await;
        assert_eq!(condition(&status, "Ready")["status"], "True", "{status}");
        api.event(&s, "Normal", "Applied").await;
        api
    })
    .await
    .unwrap();
    assert!(arm
        .owned_rules(SQL_NSG)
        .iter()
        .any(|n| n.starts_with("asenet-ase-one")));
}
