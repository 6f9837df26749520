//! Service tags read from ARM (`ServiceTags_List`, docs/domain.md 5.1) through the pipeline
//! against the in-process mock, the rule that decides where tags may come from, and
//! `verify` judging routes with the effective-route evaluator (domain.md 3.4).

use std::time::Duration;

use asenet::api::AseConnectivity;
use asenet::azure::{ArmClientOptions, RetryConfig};
use asenet::diff::Scope;
use asenet::observe::{service_tag_sources, ServiceTags, TagSource};
use asenet::pipeline::{self, Pipeline, PipelineOptions};
use asenet::resolver::{resolve, SpecOutcome};
use asenet::snapshot::Snapshot;
use mock_arm::{PublishTag, RunningMock};
use serde_json::json;

const SUB: &str =
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/network/providers";
const RT: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/network/providers/Microsoft.Network/routeTables/ase-rt";

/// The topology: one VNet in westeurope with the ASE's subnet. No service tags: they come
/// from the mock's `ServiceTags_List`.
fn topology() -> Snapshot {
    let y = format!(
        r#"
virtualNetworks:
  - {{id: {SUB}/Microsoft.Network/virtualNetworks/vnet, location: westeurope, addressPrefixes: [10.0.0.0/16]}}
subnets:
  - {{id: {SUB}/Microsoft.Network/virtualNetworks/vnet/subnets/ase, addressPrefix: 10.0.1.0/26}}
"#
    );
    serde_yaml::from_str(&y).unwrap()
}

/// A V2 ASE behind ExpressRoute advertising 0.0.0.0/0 and 13.64.0.0/11.
fn spec() -> AseConnectivity {
    let y = format!(
        "apiVersion: asenet.io/v1alpha1\nkind: AseConnectivity\nmetadata: {{name: ase, namespace: t}}\nspec:\n  environment: {{version: V2, addresses: {{publicVip: 52.1.1.1}}}}\n  subnet: {{resourceId: {SUB}/Microsoft.Network/virtualNetworks/vnet/subnets/ase}}\n  networkSecurityGroup: {{resourceId: {SUB}/Microsoft.Network/networkSecurityGroups/ase-nsg}}\n  routeTable: {{resourceId: {RT}}}\n  outbound:\n    forcedTunneling: {{advertisedPrefixes: [0.0.0.0/0, 13.64.0.0/11], strategy: DirectInternet}}\n"
    );
    serde_yaml::from_str(&y).unwrap_or_else(|e| panic!("{e}\n{y}"))
}

struct Env {
    mock: RunningMock,
    pipeline: Pipeline,
    specs: Vec<AseConnectivity>,
    scope: Scope,
}

async fn env(options: PipelineOptions) -> Env {
    let specs = vec![spec()];
    let (valid, errors) = asenet::validate::validate_all(&specs);
    assert!(errors.is_empty(), "{errors:#?}");
    let seed = asenet::fixture::mock_seed::seed_value(&topology(), &valid);
    let seed: mock_arm::Seed = serde_json::from_value(seed).unwrap();
    let config = mock_arm::Config {
        clock_scale: 20.0,
        lro_delay: Duration::from_millis(200),
        lro_retry_after: Duration::from_millis(100),
        ..mock_arm::Config::default()
    };
    let arm = ArmClientOptions {
        retry: RetryConfig {
            max_attempts: 10,
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
            max_retry_after: Duration::from_secs(2),
        },
        lro_default_poll: Duration::from_millis(30),
        lro_max_poll: Duration::from_millis(300),
        lro_timeout: Duration::from_secs(20),
        request_timeout: Duration::from_secs(10),
    };
    let started = asenet::fixture::harness::start(seed, config, arm, options)
        .await
        .unwrap();
    let scope = pipeline::scope_of(&specs);
    Env {
        mock: started.mock,
        pipeline: started.pipeline,
        specs,
        scope,
    }
}

impl Env {
    async fn plan(&self) -> pipeline::PlanOutcome {
        self.pipeline.plan(&self.specs, &self.scope).await.unwrap()
    }
    async fn apply(&self) {
        let outcome = self.plan().await;
        self.pipeline
            .apply(&self.specs, &self.scope, outcome, &|_| {})
            .await
            .unwrap();
    }
    fn service_tag_reads(&self) -> u64 {
        self.mock
            .state
            .stats()
            .by_resource_type
            .get("serviceTags")
            .copied()
            .unwrap_or(0)
    }
}

/// The 12 IPv4 prefixes of the mock's fixture, with `13.66.140.0/26` replaced by
/// `13.80.1.0/26` (both inside the advertised 13.64.0.0/11).
fn moved_prefixes() -> Vec<String> {
    let doc = mock_arm::ServiceTagsDoc::fixture();
    let asm = doc.document()["values"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "AppServiceManagement")
        .unwrap()
        .clone();
    asm["properties"]["addressPrefixes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .map(|p| {
            if p == "13.66.140.0/26" {
                "13.80.1.0/26".to_string()
            } else {
                p
            }
        })
        .collect()
}

#[tokio::test]
async fn a_service_tag_change_in_the_mock_becomes_a_route_change_naming_both_change_numbers() {
    let env = env(PipelineOptions::default()).await;
    env.apply().await;
    let converged = env.plan().await;
    assert!(!converged.plan.has_changes(), "{:#?}", converged.plan);
    // The routes came from ARM's tags: all 5 management prefixes inside 13.64.0.0/11.
    let table = &converged.desired.route_tables[&asenet::model::ResourceId::parse(RT).unwrap()];
    let reason = &table
        .routes
        .iter()
        .find(|r| r.route.address_prefix.to_string() == "13.70.73.128/26")
        .expect("a route for a management prefix only ARM's tag holds")
        .reason;
    assert!(
        reason.contains("AppServiceManagement (changeNumber 69)"),
        "{reason}"
    );

    let n = env
        .mock
        .state
        .publish_service_tag(&PublishTag {
            name: "AppServiceManagement".into(),
            address_prefixes: moved_prefixes(),
            network_features: None,
        })
        .unwrap();
    assert_eq!(n, 376);

    let changed = env.plan().await;
    let rt = changed
        .plan
        .resources
        .iter()
        .find(|r| r.id.as_str().eq_ignore_ascii_case(RT))
        .expect("the route table is planned");
    let created: Vec<(String, String)> = rt
        .routes
        .create
        .iter()
        .map(|p| (p.entry.address_prefix.to_string(), p.reason.to_string()))
        .collect();
    let deleted: Vec<(String, String)> = rt
        .routes
        .delete
        .iter()
        .map(|p| (p.entry.address_prefix.to_string(), p.reason.to_string()))
        .collect();
    assert_eq!(created.len(), 1, "{created:?}");
    assert_eq!(created[0].0, "13.80.1.0/26");
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    assert_eq!(deleted[0].0, "13.66.140.0/26");
    for (_, reason) in created.iter().chain(&deleted) {
        assert!(
            reason.contains("AppServiceManagement changed: changeNumber 69 -> 70"),
            "{reason}"
        );
    }

    // Applied, the table records the new number and the next plan is empty.
    env.apply().await;
    let again = env.plan().await;
    assert!(!again.plan.has_changes(), "{:#?}", again.plan);
    let table = env.mock.state.get_resource(RT).unwrap();
    assert_eq!(
        table["tags"]["asenet-service-tags"],
        json!("AppServiceManagement=70")
    );
}

#[tokio::test]
async fn service_tags_are_read_once_per_location_per_run_and_reused_for_the_resync() {
    // CLI: max age zero, one read per plan.
    let env1 = env(PipelineOptions::default()).await;
    env1.plan().await;
    assert_eq!(env1.service_tag_reads(), 1);
    env1.plan().await;
    assert_eq!(env1.service_tag_reads(), 2);

    // Operator: reused within the resync interval.
    let env2 = env(PipelineOptions {
        service_tag_max_age: Duration::from_secs(3600),
        ..PipelineOptions::default()
    })
    .await;
    env2.plan().await;
    env2.plan().await;
    env2.plan().await;
    assert_eq!(env2.service_tag_reads(), 1);
}

#[tokio::test]
async fn an_explicit_service_tags_file_overrides_arm() {
    let file = ServiceTags::parse(
        r#"{"values": [{"name": "AppServiceManagement", "properties": {"changeNumber": 5, "addressPrefixes": ["13.66.140.0/26"], "networkFeatures": ["UDR"]}}]}"#,
    )
    .unwrap();
    let env = env(PipelineOptions {
        service_tags: file,
        ..PipelineOptions::default()
    })
    .await;
    let outcome = env.plan().await;
    assert_eq!(env.service_tag_reads(), 0);
    let prefixes: Vec<String> = outcome
        .snapshot
        .service_tag("AppServiceManagement")
        .unwrap()
        .address_prefixes
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert_eq!(prefixes, vec!["13.66.140.0/26"]);
}

#[test]
fn the_embedded_fixture_is_never_a_source_against_a_non_loopback_endpoint() {
    let url = |s: &str| azure_core::Url::parse(s).unwrap();
    for remote in [
        "https://management.azure.com",
        "https://management.usgovcloudapi.net/",
        "https://10.0.0.1:8443",
        "https://127.0.0.1.example.com",
        "https://[2001:db8::1]",
    ] {
        assert_eq!(
            service_tag_sources(&url(remote), false),
            vec![TagSource::Arm],
            "{remote}"
        );
        assert_eq!(
            service_tag_sources(&url(remote), true),
            vec![TagSource::File],
            "{remote}"
        );
    }
    for local in [
        "http://127.0.0.1:8443",
        "https://localhost:9",
        "http://[::1]:1",
    ] {
        assert_eq!(
            service_tag_sources(&url(local), false),
            vec![TagSource::Arm, TagSource::Embedded],
            "{local}"
        );
        assert_eq!(
            service_tag_sources(&url(local), true),
            vec![TagSource::File]
        );
    }
}

#[test]
fn a_spec_whose_tag_no_source_provides_fails_naming_the_tag_and_the_location() {
    let (valid, _) = asenet::validate::validate_all(&[spec()]);
    let d = resolve(&valid, &topology());
    let key = "t/ase".parse().unwrap();
    match d.specs.get(&key) {
        Some(SpecOutcome::Failed { errors }) => {
            let m = errors[0].to_string();
            assert!(m.contains("`AppServiceManagement`"), "{m}");
            assert!(m.contains("`westeurope`"), "{m}");
        }
        other => panic!("expected an error: {other:#?}"),
    }
    // Nothing it contributes is planned: no route table at all.
    assert!(d.route_tables.is_empty(), "{:#?}", d.route_tables);
}

#[tokio::test]
async fn verify_reports_every_required_destination_and_fails_when_the_default_route_is_gone() {
    let env = env(PipelineOptions::default()).await;
    env.apply().await;
    let report = env.pipeline.verify(&env.specs).await.unwrap();
    assert!(report.passed(), "{report:#?}");
    // 12 management prefixes + every other Internet address.
    assert_eq!(report.routes.len(), 13, "{:#?}", report.routes);
    assert!(report.routes.iter().all(|r| r.check.ok));

    // A foreign edit removes the default route: Internet egress goes on-premises.
    let mut table = env.mock.state.get_resource(RT).unwrap();
    let routes = table["properties"]["routes"].as_array_mut().unwrap();
    routes.retain(|r| r["properties"]["addressPrefix"] != "0.0.0.0/0");
    env.mock.state.put_raw(RT, table).unwrap();
    let report = env.pipeline.verify(&env.specs).await.unwrap();
    assert!(!report.passed());
    let wrong: Vec<_> = report.misrouted().collect();
    assert_eq!(wrong.len(), 1, "{wrong:#?}");
    assert!(wrong[0].check.destination.starts_with("Internet"));
    assert_eq!(
        wrong[0].check.route.as_ref().unwrap().next_hop,
        asenet::model::NextHopType::VirtualNetworkGateway
    );
}

#[tokio::test]
async fn the_operator_sees_a_published_tag_change_once_its_cached_tags_expire() {
    // The operator keeps ARM's tags for half its resync interval (cli/controller.rs); a
    // change published meanwhile is planned, with both numbers, once the entry expires.
    let max_age = Duration::from_secs(1);
    let env = env(PipelineOptions {
        service_tag_max_age: max_age,
        ..PipelineOptions::default()
    })
    .await;
    env.apply().await;
    // Start from a fresh read, so that the plan right after the publication is well within
    // `max_age` however long the apply took.
    tokio::time::sleep(max_age).await;
    assert!(!env.plan().await.plan.has_changes());
    env.mock
        .state
        .publish_service_tag(&PublishTag {
            name: "AppServiceManagement".into(),
            address_prefixes: moved_prefixes(),
            network_features: None,
        })
        .unwrap();
    let cached = env.plan().await;
    assert!(!cached.plan.has_changes(), "{:#?}", cached.plan);
    tokio::time::sleep(max_age + Duration::from_millis(100)).await;
    let resync = env.plan().await;
    let reasons: Vec<&str> = resync
        .plan
        .changed()
        .flat_map(|r| r.routes.create.iter().chain(&r.routes.delete))
        .map(|p| &*p.reason)
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons.iter().all(|r| r.contains("changeNumber 69 -> 70")));
    env.apply().await;
    assert!(!env.plan().await.plan.has_changes());
}

#[test]
fn tags_from_arms_api_carry_change_numbers_and_only_global_ones_are_usable_in_routes() {
    // ARM's answer has no `networkFeatures` (domain.md 5.1); the derived rule of 3.3 holds.
    let answer = mock_arm::ServiceTagsDoc::fixture().render("s");
    assert!(answer
        .pointer("/values/0/properties/networkFeatures")
        .is_none());
    let (tags, versions) = ServiceTags::from_value(&answer).unwrap();
    let tag = |n: &str| tags.0.iter().find(|t| t.name == n).unwrap();
    assert!(tag("AppServiceManagement").usable_in_routes());
    assert!(!tag("AppServiceManagement.WestUS").usable_in_routes());
    assert_eq!(tag("AppServiceManagement").address_prefixes.len(), 12);
    assert_eq!(versions["AppServiceManagement"], "69");
}
