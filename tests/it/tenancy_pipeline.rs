//! Tenancy through the pipeline (the CLI's path) against the in-process mock ARM seeded
//! with examples/seed: namespace `network` holds both ASE specs, and namespace `data` owns
//! the SQL VM's NSG that ase-one's `orders-sql` back end adds a rule to
//! (examples/tenancy/policy.yaml). Without the grant (examples/tenancy/grant.yaml) ase-one
//! is refused and nothing it contributes is written; with it, it is; revoking it stops the
//! writes and leaves what ase-one owns as it is.

use std::path::PathBuf;

use asenet::error::SpecErrorKind;
use asenet::model::SpecKey;
use asenet::pipeline;
use asenet::tenancy::PolicySet;
use serde_json::Value;

use crate::pipeline::{env, example, id, names, Env};

const SQL_NSG: &str = "Microsoft.Network/networkSecurityGroups/sql-nsg";
const ONE_NSG: &str = "Microsoft.Network/networkSecurityGroups/ase-one-nsg";
const ONE_RT: &str = "Microsoft.Network/routeTables/ase-one-rt";
const ONE_SUBNET: &str = "Microsoft.Network/virtualNetworks/vnet/subnets/ase-one";
const BACKEND_FIELD: &str = "spec.backends[0].networkSecurityGroup.resourceId";

fn policy_files(with_grant: bool) -> Vec<PathBuf> {
    let mut files = vec![example("tenancy").join("policy.yaml")];
    if with_grant {
        files.push(example("tenancy").join("grant.yaml"));
    }
    files
}

fn policy(with_grant: bool) -> PolicySet {
    asenet::load::load_policy(&policy_files(with_grant)).unwrap()
}

/// Re-plans `env`'s specs under `policy`.
fn enforce(env: &mut Env, policy: &PolicySet) {
    env.scope = pipeline::scope_under(&env.specs, policy);
}

/// The JSON of a resource in the mock, etag included: an unchanged etag means no write.
fn resource(env: &Env, path: &str) -> Value {
    env.state()
        .get_resource(id(path).as_str())
        .unwrap_or(Value::Null)
}

fn ase_one_resources(env: &Env) -> Vec<Value> {
    [SQL_NSG, ONE_NSG, ONE_RT, ONE_SUBNET]
        .iter()
        .map(|p| resource(env, p))
        .collect()
}

fn writes(env: &Env) -> u64 {
    env.state().stats().writes() + env.state().stats().deletes()
}

#[tokio::test]
async fn a_spec_naming_another_teams_backend_nsg_without_a_grant_is_refused_and_writes_nothing() {
    let mut env = env("seed").await;
    enforce(&mut env, &policy(false));
    let before = ase_one_resources(&env);
    let outcome = env.plan().await;
    let refused: Vec<_> = outcome
        .plan
        .errors
        .iter()
        .filter(|e| e.kind == SpecErrorKind::NotPermitted)
        .collect();
    assert_eq!(refused.len(), 1, "{:#?}", outcome.plan.errors);
    let e = refused[0];
    assert_eq!(e.spec, SpecKey::new("network", "ase-one"));
    assert_eq!(e.field, BACKEND_FIELD);
    assert_eq!(e.value, id(SQL_NSG).as_str());
    assert!(e.message.contains("AseBackendGrant"), "{}", e.message);
    // Nothing of ase-one is planned; ase-two refers to it (environmentRef) and is not
    // resolved either, as with an invalid spec: the plan changes nothing at all.
    assert!(!outcome.plan.has_changes(), "{:#?}", outcome.plan.resources);

    env.state().reset_stats();
    env.pipeline
        .apply(&env.specs, &env.scope, outcome, &|_| {})
        .await
        .unwrap();
    assert_eq!(writes(&env), 0);
    assert_eq!(ase_one_resources(&env), before);
}

#[tokio::test]
async fn a_spec_naming_another_teams_nsg_as_its_own_is_refused_while_the_others_are_planned() {
    let mut env = env("seed").await;
    let mut specs = env.specs.clone();
    for s in &mut specs {
        if s.metadata.name.as_deref() == Some("ase-two") {
            s.spec.network_security_group.resource_id = id(SQL_NSG).to_string();
        }
    }
    env.specs = specs;
    enforce(&mut env, &policy(true));
    let sql_before = resource(&env, SQL_NSG);
    let outcome = env.plan().await;
    assert_eq!(
        outcome
            .plan
            .errors
            .iter()
            .map(|e| (e.spec.to_string(), e.kind, e.field.as_str()))
            .collect::<Vec<_>>(),
        [(
            "network/ase-two".to_string(),
            SpecErrorKind::NotPermitted,
            "spec.networkSecurityGroup.resourceId"
        )]
    );
    // ase-one (granted) is still planned and written.
    env.pipeline
        .apply(&env.specs, &env.scope, outcome, &|_| {})
        .await
        .unwrap();
    let sql = resource(&env, SQL_NSG);
    assert!(
        names(&sql).iter().any(|n| n.starts_with("asenet-ase-one")),
        "{:?}",
        names(&sql)
    );
    assert!(
        !names(&sql).iter().any(|n| n.starts_with("asenet-ase-two")),
        "{:?}",
        names(&sql)
    );
    assert_ne!(sql, sql_before);
}

#[tokio::test]
async fn with_the_owners_grant_the_backend_rule_is_written_and_revoking_it_stops_further_writes() {
    let mut env = env("seed").await;
    // Granted: everything converges, ase-one's rule is in the SQL VM's NSG.
    enforce(&mut env, &policy(true));
    let first = env.plan().await;
    assert!(first.plan.errors.is_empty(), "{:#?}", first.plan.errors);
    env.converge().await;
    let sql = resource(&env, SQL_NSG);
    let owned: Vec<String> = names(&sql)
        .into_iter()
        .filter(|n| n.starts_with("asenet-"))
        .collect();
    assert!(
        owned.iter().any(|n| n.starts_with("asenet-ase-one")),
        "{owned:?}"
    );
    assert!(names(&sql).contains(&"corp-rdp".to_string()));

    // The spec changes its back end's port, then the grant is revoked: ase-one is refused,
    // nothing is written, and the rule it owns stays exactly as it was.
    let mut specs = env.specs.clone();
    for s in &mut specs {
        if s.metadata.name.as_deref() == Some("ase-one") {
            s.spec.backends[0].ports = vec![
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("1434".into()),
            ];
        }
    }
    env.specs = specs;
    enforce(&mut env, &policy(false));
    let before = ase_one_resources(&env);
    env.state().reset_stats();
    let outcome = env.plan().await;
    assert!(outcome
        .plan
        .errors
        .iter()
        .any(|e| e.kind == SpecErrorKind::NotPermitted && e.field == BACKEND_FIELD));
    env.pipeline
        .apply(&env.specs, &env.scope, outcome, &|_| {})
        .await
        .unwrap();
    assert_eq!(writes(&env), 0);
    assert_eq!(ase_one_resources(&env), before);

    // Restored: the pending change is written.
    enforce(&mut env, &policy(true));
    let outcome = env.plan().await;
    assert!(outcome.plan.errors.is_empty(), "{:#?}", outcome.plan.errors);
    let sql_plan = outcome.plan.resource(&id(SQL_NSG)).unwrap();
    assert!(sql_plan.has_changes());
    env.converge().await;
    assert_ne!(resource(&env, SQL_NSG), before[0]);
}

#[tokio::test]
async fn the_cli_honours_the_policy_files_in_resolve_plan_and_verify() {
    let env = env("seed").await;
    let bin = env!("CARGO_BIN_EXE_asenet");
    let url = env.mock.base_url.clone();
    let dir = example("seed");
    let seed_azure = example("azure").join("seed");
    let run = |args: Vec<String>, azure: bool| {
        let url = url.clone();
        let dir = dir.clone();
        let seed_azure = seed_azure.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let mut cmd = std::process::Command::new(bin);
                cmd.args(&args).arg("-f").arg(&dir);
                if azure {
                    cmd.args(["--endpoint", &url, "--credential", "static", "--token", "t"])
                        .arg("--service-tags")
                        .arg(seed_azure.join("snapshot.yaml"));
                } else {
                    cmd.arg("--snapshot").arg(seed_azure.join("snapshot.yaml"));
                }
                cmd.stdin(std::process::Stdio::null()).output().unwrap()
            })
            .await
            .unwrap()
        }
    };
    let with = |cmd: &str, grant: bool| -> Vec<String> {
        let mut args = vec![cmd.to_string()];
        for f in policy_files(grant) {
            args.push("--policy".into());
            args.push(f.display().to_string());
        }
        args
    };
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };

    let plan = run(with("plan", false), true).await;
    assert_eq!(plan.status.code(), Some(1), "{}", text(&plan));
    assert!(text(&plan).contains(BACKEND_FIELD), "{}", text(&plan));
    assert!(text(&plan).contains("may not write"), "{}", text(&plan));
    let resolve = run(with("resolve", false), false).await;
    assert_eq!(resolve.status.code(), Some(1), "{}", text(&resolve));
    assert!(text(&resolve).contains(BACKEND_FIELD), "{}", text(&resolve));
    let verify = run(with("verify", false), true).await;
    assert_eq!(verify.status.code(), Some(1), "{}", text(&verify));
    assert!(text(&verify).contains(BACKEND_FIELD), "{}", text(&verify));
    assert_eq!(writes(&env), 0);

    let plan = run(with("plan", true), true).await;
    assert_eq!(plan.status.code(), Some(2), "{}", text(&plan));
    let resolve = run(with("resolve", true), false).await;
    assert_eq!(resolve.status.code(), Some(0), "{}", text(&resolve));

    // A policy file the CLI cannot read whole is an error naming the object, field and value.
    let bad = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        bad.path(),
        "apiVersion: asenet.io/v1alpha1\nkind: AseTenancyPolicy\nmetadata: {name: p}\nspec:\n  namespaces: [network]\n  scopes: [{resourceGroup: /subscriptions/s/groups/network}]\n",
    )
    .unwrap();
    let out = run(
        vec![
            "plan".into(),
            "--policy".into(),
            bad.path().display().to_string(),
        ],
        true,
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(
            "AseTenancyPolicy/p: spec.scopes[0].resourceGroup: `/subscriptions/s/groups/network`"
        ),
        "{}",
        text(&out)
    );
    assert_eq!(writes(&env), 0);
}

#[tokio::test]
async fn a_policy_file_selects_namespaces_by_the_labels_of_its_namespace_documents() {
    // examples/tenancy's policies with `network` selected by label, plus the grant.
    let policy = std::fs::read_to_string(example("tenancy").join("policy.yaml"))
        .unwrap()
        .replacen(
            "  namespaces: [network]",
            "  namespaceSelector: {matchLabels: {asenet.io/team: ase}}",
            1,
        );
    let grant = std::fs::read_to_string(example("tenancy").join("grant.yaml")).unwrap();
    let file = |namespace_doc: &str| {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            f.path(),
            format!("{policy}\n---\n{grant}\n---\n{namespace_doc}"),
        )
        .unwrap();
        f
    };
    let labelled = file("apiVersion: v1\nkind: Namespace\nmetadata: {name: network, labels: {asenet.io/team: ase}}\n");
    let other = file("apiVersion: v1\nkind: Namespace\nmetadata: {name: network, labels: {asenet.io/team: data}}\n");

    let mut env = env("seed").await;
    enforce(
        &mut env,
        &asenet::load::load_policy(&[other.path().to_path_buf()]).unwrap(),
    );
    let refused = env.plan().await;
    assert!(
        refused
            .plan
            .errors
            .iter()
            .any(|e| e.kind == SpecErrorKind::NotPermitted
                && e.field == "spec.networkSecurityGroup.resourceId"),
        "{:#?}",
        refused.plan.errors
    );
    enforce(
        &mut env,
        &asenet::load::load_policy(&[labelled.path().to_path_buf()]).unwrap(),
    );
    let allowed = env.plan().await;
    assert!(allowed.plan.errors.is_empty(), "{:#?}", allowed.plan.errors);
}
