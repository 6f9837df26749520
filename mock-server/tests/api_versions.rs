//! The `api-version` values Microsoft's current Network SDKs send are accepted, with the same
//! bodies, and versions no SDK sends are still refused (issue 11 item 3; domain.md 4.1).

mod common;

use common::*;
use serde_json::{json, Value};

/// Each SDK's default network api-version, read from the published package (not from the
/// mock's own list, so that this test fails if the mock drops one):
/// azure_mgmt_network 0.21.0 `src/package_2024_03/mod.rs`; azure-mgmt-network 33.1.0
/// `operations/_operations.py`; @azure/arm-network 39.0.0 `dist/*/api/*/operations.js`.
const SDK_VERSIONS: &[(&str, &str)] = &[
    ("Rust azure_mgmt_network 0.21.0", "2024-03-01"),
    ("Python azure-mgmt-network 33.1.0", "2026-03-01"),
    ("JavaScript @azure/arm-network 39.0.0", "2026-01-01"),
];

fn at(arm: &Arm, path: &str, version: &str) -> String {
    format!("{}{path}?api-version={version}", arm.base)
}

async fn put(arm: &Arm, path: &str, version: &str, body: &Value) -> Answer {
    arm.send(arm.http.put(at(arm, path, version)).json(body))
        .await
}

async fn get(arm: &Arm, path: &str, version: &str) -> Answer {
    arm.send(arm.http.get(at(arm, path, version))).await
}

/// Poll the operation of `answer` to its end, checking that its URL kept `version`.
async fn finish(arm: &Arm, answer: &Answer, version: &str, what: &str) {
    let url = answer
        .header("azure-asyncoperation")
        .unwrap_or_else(|| panic!("{what}: no Azure-AsyncOperation header ({})", answer.status));
    assert!(
        url.ends_with(&format!("?api-version={version}")),
        "{what}: operation URL {url} does not repeat the api-version"
    );
    assert_eq!(arm.wait(answer).await["status"], "Succeeded", "{what}");
}

#[tokio::test]
async fn every_sdk_api_version_round_trips_nsgs_route_tables_and_subnets() {
    let mock = mock().await;
    let arm = Arm::new(&mock);
    for (index, (sdk, version)) in SDK_VERSIONS.iter().enumerate() {
        let nsg = nsg_path(&format!("nsg-{index}"));
        let rt = rt_path(&format!("rt-{index}"));
        let subnet = format!("{}/subnets/sdk-{index}", vnet_path("vnet"));

        // The shapes all three SDKs serialise: nested `properties`, children as {name, properties}.
        let created = put(
            &arm,
            &nsg,
            version,
            &json!({"location": "westeurope", "properties": {"securityRules": [rule("AllowManagement", 100, "454-455")]}}),
        )
        .await;
        assert_eq!(created.status, 201, "{sdk} {version}: {}", created.body);
        finish(&arm, &created, version, sdk).await;
        let got = get(&arm, &nsg, version).await;
        assert_eq!(got.status, 200, "{sdk}");
        let rule0 = &got.body["properties"]["securityRules"][0];
        assert_eq!(
            (&rule0["name"], &rule0["properties"]["destinationPortRange"]),
            (&json!("AllowManagement"), &json!("454-455")),
            "{sdk}"
        );

        let table = put(
            &arm,
            &rt,
            version,
            &json!({"location": "westeurope", "properties": {"disableBgpRoutePropagation": true, "routes": [
                {"name": "default", "properties": {"addressPrefix": "0.0.0.0/0", "nextHopType": "Internet"}},
                {"name": "nva", "properties": {"addressPrefix": "10.50.0.0/16", "nextHopType": "VirtualAppliance", "nextHopIpAddress": "10.0.9.4"}}
            ]}}),
        )
        .await;
        assert_eq!(table.status, 201, "{sdk} {version}: {}", table.body);
        finish(&arm, &table, version, sdk).await;
        let routes = get(&arm, &format!("{rt}/routes"), version).await;
        assert_eq!(routes.status, 200, "{sdk}");
        assert_eq!(
            routes.body["value"].as_array().map(Vec::len),
            Some(2),
            "{sdk}"
        );

        let associated = put(
            &arm,
            &subnet,
            version,
            &json!({"properties": {"addressPrefix": format!("10.0.{}.0/24", 10 + index),
                "networkSecurityGroup": {"id": nsg}, "routeTable": {"id": rt}}}),
        )
        .await;
        assert_eq!(
            associated.status, 201,
            "{sdk} {version}: {}",
            associated.body
        );
        finish(&arm, &associated, version, sdk).await;
        let stored = get(&arm, &subnet, version).await;
        assert_eq!(
            (
                &stored.body["properties"]["networkSecurityGroup"]["id"],
                &stored.body["properties"]["routeTable"]["id"]
            ),
            (&json!(nsg), &json!(rt)),
            "{sdk}"
        );
        let listed = get(&arm, &format!("/subscriptions/{SUB}/resourceGroups/network/providers/Microsoft.Network/networkSecurityGroups"), version).await;
        assert_eq!(listed.status, 200, "{sdk}");

        // Delete through the same version: 202, then the operation ends Succeeded.
        for path in [&subnet, &nsg, &rt] {
            let deleted = arm.send(arm.http.delete(at(&arm, path, version))).await;
            assert_eq!(
                deleted.status, 202,
                "{sdk}: DELETE {path}: {}",
                deleted.body
            );
            finish(&arm, &deleted, version, sdk).await;
            assert_eq!(get(&arm, path, version).await.status, 404, "{sdk}: {path}");
        }
    }
}

#[tokio::test]
async fn an_api_version_no_sdk_sends_is_refused_naming_it_and_writes_nothing() {
    let mock = mock().await;
    let arm = Arm::new(&mock);
    for unknown in [
        "2026-01-02",
        "2099-01-01",
        "2026-01-01-preview",
        "2026-1-1",
        "latest",
    ] {
        let refused = put(
            &arm,
            &nsg_path("never"),
            unknown,
            &json!({"location": "westeurope"}),
        )
        .await;
        assert_eq!(
            (refused.status, refused.code()),
            (400, "InvalidApiVersionParameter"),
            "{unknown}"
        );
        let message = refused.body["error"]["message"]
            .as_str()
            .unwrap_or_default();
        assert!(
            message.contains(&format!("'{unknown}'")) && message.contains("2026-01-01"),
            "{unknown}: {message}"
        );
        let read = get(&arm, &nsg_path("sql-nsg"), unknown).await;
        assert_eq!(read.code(), "InvalidApiVersionParameter", "{unknown}");
    }
    assert_eq!(arm.get(&nsg_path("never")).await.status, 404);
}
