//! The real Rust client `azure_mgmt_network` 0.21 (api-version 2024-03-01) drives the mock:
//! create an NSG through its long-running operation, get it, list it page by page, PUT a
//! rule, associate the NSG with a subnet, and see its deletion refused while in use.

mod common;

use std::sync::Arc;
use std::time::Duration;

use azure_core::auth::{AccessToken, Secret, TokenCredential};
use common::*;
use futures::StreamExt;
use serde_json::json;

/// A credential that always returns the same token (the mock accepts any bearer token).
#[derive(Debug)]
struct StaticToken;

#[async_trait::async_trait]
impl TokenCredential for StaticToken {
    async fn get_token(&self, _scopes: &[&str]) -> azure_core::Result<AccessToken> {
        Ok(AccessToken::new(
            Secret::new("mock-token"),
            time::OffsetDateTime::now_utc() + time::Duration::hours(1),
        ))
    }

    async fn clear_cache(&self) -> azure_core::Result<()> {
        Ok(())
    }
}

fn model<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("valid model JSON")
}

#[tokio::test]
async fn the_rust_sdk_runs_the_nsg_scenario_against_the_mock() {
    let mut config = fast_config();
    config.page_size = 1;
    config.lro_delay = Duration::from_millis(200);
    let mock = mock_with(config).await;
    let endpoint = azure_core::Url::parse(&mock.base_url).unwrap();
    let client = azure_mgmt_network::Client::builder(Arc::new(StaticToken))
        .endpoint(endpoint)
        .build()
        .expect("client");
    let nsgs = client.network_security_groups_client();

    // Create through the LRO: the SDK polls Azure-AsyncOperation and then GETs the resource.
    let created = nsgs
        .create_or_update(
            "network",
            "sdk-nsg",
            model::<azure_mgmt_network::models::NetworkSecurityGroup>(
                json!({"location": "westeurope"}),
            ),
            SUB,
        )
        .await
        .expect("create succeeds");
    assert_eq!(created.resource.name.as_deref(), Some("sdk-nsg"));
    let props = created.properties.expect("properties");
    assert_eq!(props.default_security_rules.len(), 6);
    assert!(props.provisioning_state.is_some());

    let got = nsgs
        .get("network", "sdk-nsg", SUB)
        .await
        .expect("get succeeds");
    assert!(got.etag.unwrap().starts_with("W/"));

    // List with page size 1: three NSGs, three pages.
    let mut pages = nsgs.list("network", SUB).into_stream();
    let mut names = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.expect("page");
        assert!(page.value.len() <= 1);
        names.extend(page.value.into_iter().filter_map(|n| n.resource.name));
    }
    names.sort();
    assert_eq!(names, vec!["sdk-nsg", "spare-nsg", "sql-nsg"]);

    // PUT a rule.
    let rule: azure_mgmt_network::models::SecurityRule = model(json!({
        "properties": {"protocol": "Tcp", "sourcePortRange": "*", "destinationPortRange": "454-455",
            "sourceAddressPrefix": "AppServiceManagement", "destinationAddressPrefix": "*",
            "access": "Allow", "priority": 100, "direction": "Inbound"}
    }));
    let rule = client
        .security_rules_client()
        .create_or_update("network", "sdk-nsg", "ase-mgmt", rule, SUB)
        .await
        .expect("rule PUT succeeds");
    assert_eq!(rule.properties.unwrap().priority, 100);

    // Associate with a subnet (subnet PUT carries everything, domain.md 4.4).
    let nsg_id = got.resource.id.unwrap();
    let subnet: azure_mgmt_network::models::Subnet = model(json!({
        "properties": {"addressPrefix": "10.0.3.0/24", "networkSecurityGroup": {"id": nsg_id}}
    }));
    let subnet = client
        .subnets_client()
        .create_or_update("network", "vnet", "free", subnet, SUB)
        .await
        .expect("subnet PUT succeeds");
    assert!(subnet.properties.unwrap().network_security_group.is_some());

    // Deleting the NSG while in use is refused.
    let refused = nsgs.delete("network", "sdk-nsg", SUB).send().await;
    let err = refused.expect_err("delete must be refused");
    assert!(
        format!("{err:?}").contains("400")
            || err
                .as_http_error()
                .is_some_and(|e| e.status() == azure_core::StatusCode::BadRequest),
        "{err:?}"
    );
    assert_eq!(
        mock.state
            .stats()
            .count("DELETE", "networkSecurityGroups", 400),
        1
    );
    assert!(mock.state.stats().count("GET", "operations", 200) >= 3);
}

/// `ServiceTags_List` as the SDK sends it (its own api-version), before and after a new
/// version of a tag is published through the admin API (docs/domain.md 5.1).
#[tokio::test]
async fn the_rust_sdk_lists_service_tags_and_sees_a_published_change() {
    let mock = mock_with(fast_config()).await;
    let endpoint = azure_core::Url::parse(&mock.base_url).unwrap();
    let client = azure_mgmt_network::Client::builder(Arc::new(StaticToken))
        .endpoint(endpoint)
        .build()
        .expect("client");
    let tags = client.service_tags_client();
    let before = tags
        .list("westeurope", SUB)
        .await
        .expect("ServiceTags_List");
    let asm = |r: &azure_mgmt_network::models::ServiceTagsListResult| {
        r.values
            .iter()
            .find(|v| v.name.as_deref() == Some("AppServiceManagement"))
            .and_then(|v| v.properties.clone())
            .expect("AppServiceManagement")
    };
    assert_eq!(asm(&before).change_number.as_deref(), Some("69"));
    let v4 = asm(&before)
        .address_prefixes
        .iter()
        .filter(|p| !p.contains(':'))
        .count();
    assert_eq!(v4, 12);

    let published = reqwest::Client::new()
        .post(format!("{}/_admin/service-tags", mock.base_url))
        .header("content-type", "application/json")
        .header(mock_arm::ADMIN_TOKEN_HEADER, mock.state.admin_token())
        .body(r#"{"name": "AppServiceManagement", "addressPrefixes": ["13.66.140.0/26", "20.1.2.0/26"]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(published.status().as_u16(), 201);
    let after = tags
        .list("westeurope", SUB)
        .await
        .expect("ServiceTags_List");
    assert_eq!(asm(&after).change_number.as_deref(), Some("70"));
    assert_eq!(
        asm(&after).address_prefixes,
        vec!["13.66.140.0/26".to_string(), "20.1.2.0/26".to_string()]
    );
    assert_ne!(before.change_number, after.change_number);
}
