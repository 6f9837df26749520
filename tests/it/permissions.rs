//! docs/azure-permissions.md against the code's table of ARM operations (issue 13, defect 7).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use asenet::azure::credential::StaticToken;
use asenet::azure::operations::{self, OPERATIONS};
use asenet::azure::{ArmClient, ArmObserver};
use asenet::pipeline::{self, Pipeline, PipelineOptions};

const BEGIN: &str = "<!-- BEGIN generated from src/azure/operations.rs -->\n";
const END: &str = "<!-- END generated from src/azure/operations.rs -->";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_permissions_doc_lists_exactly_the_codes_arm_operations() {
    let path = root().join("docs/azure-permissions.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let start = doc.find(BEGIN).expect("the doc has the BEGIN marker") + BEGIN.len();
    let end = doc.find(END).expect("the doc has the END marker");
    let generated = operations::markdown();
    if std::env::var_os("ASENET_REGENERATE").is_some() {
        let updated = format!("{}{generated}{}", &doc[..start], &doc[end..]);
        std::fs::write(&path, updated).unwrap();
        return;
    }
    assert_eq!(
        &doc[start..end],
        generated,
        "docs/azure-permissions.md is stale; regenerate: ASENET_REGENERATE=1 cargo test --test it permissions::"
    );
    // The actions the issue found wrong are gone for good.
    for never in [
        "securityRules/write",
        "securityRules/delete",
        "routes/write",
        "routes/delete",
    ] {
        assert!(
            !doc.contains(never),
            "{never} is not an action asenet needs"
        );
    }
}

#[derive(Default)]
struct Seen(Mutex<BTreeSet<(String, String)>>);

impl ArmObserver for Seen {
    fn on_response(&self, method: &str, resource_type: &str, _status: u16) {
        self.0
            .lock()
            .unwrap()
            .insert((method.to_string(), resource_type.to_string()));
    }
}

/// Plans and applies an example against a fresh mock; every request it made.
async fn requests_of(example: &str) -> BTreeSet<(String, String)> {
    let dir = root().join("examples").join(example);
    let specs: Vec<_> = asenet::load::load_specs(std::slice::from_ref(&dir))
        .unwrap()
        .into_iter()
        .map(|l| l.spec)
        .collect();
    // What Azure holds for the example, apart from its specs (examples/azure/<example>).
    let azure = root().join("examples/azure").join(example);
    let snapshot = asenet::load::load_snapshot(&azure.join("snapshot.yaml")).unwrap();
    let (valid, _) = asenet::validate::validate_all(&specs);
    let seed: mock_arm::Seed =
        serde_json::from_value(asenet::azure::mock_seed::seed_value(&snapshot, &valid)).unwrap();
    let config = mock_arm::Config {
        clock_scale: 20.0,
        lro_delay: Duration::from_secs(1),
        ..mock_arm::Config::default()
    };
    let mock = mock_arm::start(
        mock_arm::MockState::new(config, seed).unwrap(),
        mock_arm::ServeOptions::default(),
    )
    .await
    .unwrap();
    let seen = Arc::new(Seen::default());
    let http: Arc<dyn azure_core::HttpClient> =
        Arc::new(asenet::azure::http_client(None, Duration::from_secs(10)).unwrap());
    let arm = ArmClient::new(
        &mock.base_url,
        Arc::new(StaticToken::new("t")),
        http,
        asenet::azure::ArmClientOptions {
            lro_default_poll: Duration::from_millis(30),
            ..Default::default()
        },
    )
    .unwrap()
    .with_observer(seen.clone());
    let tags = asenet::observe::ServiceTags::load(&azure.join("snapshot.yaml"))
        .unwrap_or_else(|_| asenet::observe::ServiceTags::embedded());
    let pipeline = Pipeline::new(
        arm,
        PipelineOptions {
            service_tags: tags,
            ..PipelineOptions::default()
        },
    );
    let scope = pipeline::scope_of(&specs);
    let outcome = pipeline.plan(&specs, &scope).await.unwrap();
    pipeline
        .apply(&specs, &scope, outcome, &|_| {})
        .await
        .unwrap();
    let out = seen.0.lock().unwrap().clone();
    out
}

#[tokio::test]
async fn every_request_of_a_plan_and_apply_has_an_entry_in_the_table() {
    let mut all = BTreeSet::new();
    for example in ["seed", "layered", "v3"] {
        all.extend(requests_of(example).await);
    }
    for (method, resource_type) in &all {
        assert!(
            operations::find(method, resource_type).is_some(),
            "{method} {resource_type} is not in src/azure/operations.rs (nor in docs/azure-permissions.md)"
        );
    }
    // And the walk was not trivial: reads, writes and polls of each kind happened.
    for (method, resource_type) in [
        ("GET", "networkSecurityGroups"),
        ("GET", "routeTables"),
        ("GET", "virtualNetworks"),
        ("GET", "capacities"),
        ("GET", "operations"),
        ("PUT", "networkSecurityGroups"),
        ("PUT", "routeTables"),
        ("PUT", "subnets"),
    ] {
        assert!(
            all.contains(&(method.to_string(), resource_type.to_string())),
            "no {method} {resource_type} in {all:?}"
        );
    }
    assert!(OPERATIONS.len() >= all.len());
}
